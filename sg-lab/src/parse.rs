//! Parsers of tool output (ping, nmap).

use std::collections::BTreeMap;

pub(crate) fn parse_ping_received(out: &str) -> Option<u32> {
    // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
    for line in out.lines() {
        if let Some(pos) = line.find(" received") {
            let head = &line[..pos];
            let num = head.rsplit(|c: char| !c.is_ascii_digit()).next()?;
            return num.parse().ok();
        }
    }
    None
}

/// Value of attribute `name` in the tag text `tag` (`<x a="1" b="2">`).
fn xml_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Parses nmap's XML (-oX) into port -> state for protocol `proto`.
pub fn parse_nmap_xml(xml: &str, proto: &str) -> BTreeMap<u16, String> {
    let mut map = BTreeMap::new();
    let mut rest = xml;
    // Explicit <port> elements.
    while let Some(i) = rest.find("<port ") {
        rest = &rest[i..];
        let end = rest.find("</port>").unwrap_or(rest.len());
        let elem = &rest[..end];
        let tag_end = elem.find('>').unwrap_or(elem.len());
        let tag = &elem[..tag_end];
        if xml_attr(tag, "protocol") == Some(proto)
            && let Some(port) = xml_attr(tag, "portid").and_then(|p| p.parse::<u16>().ok())
            && let Some(s) = elem.find("<state ")
        {
            let st = &elem[s..];
            let st = &st[..st.find('>').unwrap_or(st.len())];
            if let Some(state) = xml_attr(st, "state") {
                map.insert(port, state.to_owned());
            }
        }
        rest = &rest[end.max(1)..];
    }
    // <extraports state="closed" count="N"><extrareasons ... proto="tcp" ports="1-100,200"/></extraports>
    let mut rest = xml;
    while let Some(i) = rest.find("<extraports ") {
        rest = &rest[i..];
        let end = rest.find("</extraports>").unwrap_or(rest.len());
        let elem = &rest[..end];
        let tag = &elem[..elem.find('>').unwrap_or(elem.len())];
        if let Some(state) = xml_attr(tag, "state") {
            let mut r = elem;
            while let Some(j) = r.find("<extrareasons ") {
                r = &r[j..];
                let t = &r[..r.find('>').unwrap_or(r.len())];
                if xml_attr(t, "proto").is_none_or(|p| p == proto)
                    && let Some(ports) = xml_attr(t, "ports")
                {
                    for port in expand_ports(ports) {
                        map.entry(port).or_insert_with(|| state.to_owned());
                    }
                }
                r = &r[1..];
            }
        }
        rest = &rest[end.max(1)..];
    }
    map
}

/// "1-3,7" -> [1, 2, 3, 7]. Ignores anything it cannot parse.
fn expand_ports(spec: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                out.extend(a..=b);
            }
        } else if let Ok(p) = part.parse() {
            out.push(p);
        }
    }
    out
}
