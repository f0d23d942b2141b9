//! Prefix lists live (SPEC 9.1): rules name `pl:office`; changing the list
//! and applying changes every rule that names it at once, with real
//! traffic between network namespaces.

use std::net::IpAddr;

mod support;

use sg_lab::Lab;
use support::{Sg, TempFile};

/// Two rules (ssh and http) name the list.
fn config(office: &[String]) -> String {
    let entries: Vec<String> = office.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        r#"[prefix_lists.office]
entries = [{}]

[groups.srv]
ingress = [
  {{ type = "ssh", from = "pl:office" }},
  {{ type = "http", from = "pl:office", description = "web from the office" }},
]
"#,
        entries.join(", ")
    )
}

#[test]
fn changing_a_prefix_list_changes_every_rule_that_names_it_live() {
    let mut lab = Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    let server = lab.host("server");
    let (la, sa) = lab.link(&a, &server, 1);
    let (lb, sb) = lab.link(&b, &server, 2);
    let _ssh = server.tcp_listen(22);
    let _http = server.tcp_listen(80);

    let host = |v4: std::net::Ipv4Addr| format!("{v4}/32");
    let host6 = |v6: std::net::Ipv6Addr| format!("{v6}/128");
    let cfg = TempFile::new("toml", &config(&[host(la.v4), host6(la.v6)]));
    let sg = Sg::new(&server);
    for s in [&sa, &sb] {
        sg.ok(&["attach", &s.ifname, "-c", cfg.path(), "--groups", "srv"]);
    }
    let reach = |from: &sg_lab::Host, to: IpAddr| [22, 80].map(|port| from.tcp_connects(to, port));
    assert_eq!(
        reach(&a, IpAddr::V4(sa.v4)),
        [true, true],
        "a is in the list"
    );
    assert_eq!(reach(&a, IpAddr::V6(sa.v6)), [true, true], "a's IPv6 too");
    assert_eq!(reach(&b, IpAddr::V4(sb.v4)), [false, false], "b is not");

    // Swap the list's entries: both rules follow in one apply.
    std::fs::write(cfg.path(), config(&[host(lb.v4)])).unwrap();
    let out = sg.ok(&["apply", "-c", cfg.path()]);
    assert!(!out.is_empty());
    assert_eq!(
        reach(&b, IpAddr::V4(sb.v4)),
        [true, true],
        "b is in the list now"
    );
    assert_eq!(reach(&a, IpAddr::V4(sa.v4)), [false, false], "a is not");
    assert_eq!(reach(&a, IpAddr::V6(sa.v6)), [false, false], "nor a's IPv6");

    // An empty list: nothing matches.
    std::fs::write(cfg.path(), config(&[])).unwrap();
    sg.ok(&["apply", "-c", cfg.path()]);
    assert_eq!(reach(&b, IpAddr::V4(sb.v4)), [false, false]);

    // A config that names an unknown list is refused and changes nothing.
    std::fs::write(
        cfg.path(),
        config(&[host(lb.v4)]).replace("pl:office\" }", "pl:nope\" }"),
    )
    .unwrap();
    let o = sg.run(&["apply", "-c", cfg.path()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown prefix list `nope`"));
    assert_eq!(
        reach(&b, IpAddr::V4(sb.v4)),
        [false, false],
        "still the empty list"
    );
    sg.ok(&["detach", "--all"]);
}
