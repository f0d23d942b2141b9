//! Writing TOML by hand, one rule per line, with quoting done by `toml`.

use std::fmt::Write;

/// A TOML basic string, escaped.
pub(super) fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A table key: bare when TOML allows it, quoted otherwise.
pub(super) fn key(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

/// An inline table from (key, already-rendered value) pairs.
pub(super) fn inline(fields: &[(&str, String)]) -> String {
    let mut out = String::from("{ ");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{k} = {v}");
    }
    out.push_str(" }");
    out
}

/// `KEY = [ ... ]` with one item per line (`[]` when empty).
pub(super) fn list(out: &mut String, name: &str, items: &[String]) {
    if items.is_empty() {
        let _ = writeln!(out, "{name} = []");
        return;
    }
    let _ = writeln!(out, "{name} = [");
    for item in items {
        let _ = writeln!(out, "  {item},");
    }
    let _ = writeln!(out, "]");
}

/// A `#` comment; newlines in `text` are flattened.
pub(super) fn comment(out: &mut String, text: &str) {
    let _ = writeln!(out, "# {}", text.replace(['\n', '\r'], " "));
}
