//! A strict parser of the Prometheus text exposition `sg metrics` serves.

use std::collections::BTreeMap;

use regex::Regex;

/// One sample of the exposition: name, labels, value.
pub(super) type Sample = (String, BTreeMap<String, String>, f64);

/// A strict enough parser of the Prometheus / OpenMetrics text format:
/// every line is a comment (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or a
/// sample `name{label="value",...} number`, and every sample belongs to a
/// family declared by `# TYPE` before it.
pub(super) fn parse_prometheus(text: &str) -> Vec<Sample> {
    let name_re = Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").unwrap();
    let sample_re =
        Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+]?[0-9.eE+-]+|NaN|[+-]Inf)$")
            .unwrap();
    let label_re = Regex::new(r#"^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"$"#).unwrap();
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "nothing may follow # EOF: {line}");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().expect("metadata names a family");
            assert!(name_re.is_match(name), "bad family name: {line}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("TYPE has a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "unknown",
                            "info"
                        ]
                        .contains(&t),
                        "bad type: {line}"
                    );
                    families.insert(name.to_string(), t.to_string());
                }
                "HELP" | "UNIT" => {}
                other => panic!("unknown metadata {other}: {line}"),
            }
            continue;
        }
        let caps = sample_re
            .captures(line)
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let name = caps[1].to_string();
        let family = families
            .keys()
            .find(|f| name == **f || name.strip_prefix(f.as_str()).is_some_and(|s| s == "_total"))
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE"));
        if families[family] == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter sample {name} must end in _total"
            );
        }
        let mut labels = BTreeMap::new();
        if let Some(body) = caps.get(3).map(|m| m.as_str()).filter(|b| !b.is_empty()) {
            for pair in body.split(',') {
                let l = label_re
                    .captures(pair)
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line}"));
                labels.insert(l[1].to_string(), l[2].to_string());
            }
        }
        let value: f64 = caps[4].parse().expect("a number");
        samples.push((name, labels, value));
    }
    samples
}

pub(super) fn sample(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}
