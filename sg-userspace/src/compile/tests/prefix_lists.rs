//! `pl:` peers compile to their lists' entries, and a changed list changes
//! every rule that names it (SPEC 9.1).

use super::*;

fn src(office: &str) -> String {
    format!(
        r#"[prefix_lists.office]
entries = [{office}]

[groups.web]
ingress = [
  {{ type = "ssh", from = "pl:office" }},
  {{ type = "http", from = ["pl:office", "198.18.9.0/24"] }},
]
egress = [{{ proto = "udp", ports = "53", to = "pl:office" }}]
"#
    )
}

#[test]
fn prefix_list_peers_resolve_to_their_entries_in_every_rule() {
    let atts = [att("eth0", &["web"], &["198.18.0.1"])];
    let (cfg, c) = build(&src(r#""198.18.1.0/24", "2001:db8:1::/48""#), &atts);
    let ssh = rid(&cfg, "web", Direction::Ingress, 0);
    let http = rid(&cfg, "web", Direction::Ingress, 1);
    let dns = rid(&cfg, "web", Direction::Egress, 0);
    let v = |c: &Compiled, d, a: &str, proto, port| verdict(c, "eth0", d, &pkt(a, proto, port));
    assert_eq!(
        v(&c, Direction::Ingress, "198.18.1.9", 6, 22),
        Some(ssh.clone())
    );
    assert_eq!(
        v(&c, Direction::Ingress, "2001:db8:1::5", 6, 80),
        Some(http.clone())
    );
    assert_eq!(
        v(&c, Direction::Ingress, "198.18.9.1", 6, 80),
        Some(http.clone())
    );
    assert_eq!(v(&c, Direction::Ingress, "198.18.9.1", 6, 22), None);
    assert_eq!(
        v(&c, Direction::Egress, "2001:db8:1::5", 17, 53),
        Some(dns.clone())
    );
    assert_eq!(v(&c, Direction::Egress, "198.18.2.1", 17, 53), None);

    // A new list: every rule naming it follows, with the same rule IDs.
    let (cfg2, c2) = build(&src(r#""198.18.2.0/24""#), &atts);
    assert_eq!(rid(&cfg2, "web", Direction::Ingress, 0), ssh);
    assert_eq!(v(&c2, Direction::Ingress, "198.18.1.9", 6, 22), None);
    assert_eq!(v(&c2, Direction::Ingress, "198.18.2.9", 6, 22), Some(ssh));
    assert_eq!(v(&c2, Direction::Ingress, "198.18.2.9", 6, 80), Some(http));
    assert_eq!(v(&c2, Direction::Ingress, "2001:db8:1::5", 6, 80), None);
    assert_eq!(v(&c2, Direction::Egress, "198.18.2.1", 17, 53), Some(dns));

    // An empty list matches nothing.
    let (_, c3) = build(&src(""), &atts);
    assert_eq!(v(&c3, Direction::Ingress, "198.18.1.9", 6, 22), None);
}
