//! Audit mode end to end (SPEC 10.2): the real `sg` binary on a veth end
//! between two namespaces and real TCP clients. In audit mode a connection
//! no rule allows succeeds, shows in `sg watch --json` as `would_drop` and
//! counts apart in `sg stats`; `sg apply` to enforce cuts new connections.

use std::net::IpAddr;

mod support;

use support::{Pair, Sg, TempFile, pair};

/// Group `g` allows http only, in `group_mode`; the interface in
/// `iface_mode` (each: `None` writes no `mode`).
fn config(p: &Pair, group_mode: Option<&str>, iface_mode: Option<&str>) -> String {
    let line = |m: Option<&str>| m.map_or(String::new(), |m| format!("mode = \"{m}\"\n"));
    format!(
        "[groups.g]\n{}ingress = [{{ type = \"http\", from = \"anywhere\" }}]\n\n\
         [interfaces.{}]\ngroups = [\"g\"]\n{}",
        line(group_mode),
        p.s.ifname,
        line(iface_mode)
    )
}

/// `sg stats --json`'s counter for the server's ingress `no_rule`.
fn no_rule(stats: &serde_json::Value, iface: &str, audit: bool) -> u64 {
    stats["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["iface"] == iface
                && d["direction"] == "ingress"
                && d["reason"] == "no_rule"
                && d["audit"] == audit
        })
        .map(|d| d["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn audit_lets_unallowed_connections_through_and_apply_to_enforce_cuts_them() {
    let p = pair();
    let (client, server) = (&p.client, &p.server);
    let _l = [80, 8080].map(|port| server.tcp_listen(port));
    let (s4, s6) = (IpAddr::V4(p.s.v4), IpAddr::V6(p.s.v6));
    let iface = p.s.ifname.as_str();
    let file = TempFile::new("toml", &config(&p, Some("audit"), None));
    let sg = Sg::new(server);
    sg.ok(&["attach", iface, "-c", file.path()]);

    let status = sg.json(&["status", "--json"]);
    assert_eq!(status["interfaces"][0]["mode"], "audit", "{status}");
    assert!(sg.ok(&["status"]).contains("mode audit"));

    // No rule allows 8080: audit mode lets it through, and reports it.
    let events = sg.watch_json(|| {
        assert!(client.tcp_connects(s4, 8080), "audit lets it pass");
        assert!(client.tcp_connects(s6, 8080), "IPv6 too");
        assert!(client.tcp_connects(s4, 80), "allowed, as ever");
    });
    let would = events
        .iter()
        .find(|e| e["dst_port"] == 8080 && e["direction"] == "ingress")
        .unwrap_or_else(|| panic!("no event for 8080: {events:?}"));
    assert_eq!(would["action"], "would_drop", "{would}");
    assert_eq!(would["reason"], "no_rule", "{would}");
    assert!(
        events.iter().all(|e| e["dst_port"] != 80),
        "an allowed flow makes no event: {events:?}"
    );
    let stats = sg.stats();
    assert!(no_rule(&stats, iface, true) >= 2, "{stats}");
    assert_eq!(no_rule(&stats, iface, false), 0, "{stats}");
    assert!(stats["audit_by_reason"]["no_rule"].as_u64().unwrap() >= 2);
    assert_eq!(stats["drops_by_reason"]["no_rule"], 0, "{stats}");
    assert!(sg.ok(&["stats"]).contains("AUDIT (would-be drops"));

    // Enforce: the same rules now cut 8080; http still connects.
    std::fs::write(file.path(), config(&p, Some("enforce"), None)).unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert_eq!(
        sg.json(&["status", "--json"])["interfaces"][0]["mode"],
        "enforce"
    );
    let events = sg.watch_json(|| {
        assert!(!client.tcp_connects(s4, 8080), "enforced now");
        assert!(client.tcp_connects(s4, 80));
    });
    assert!(
        events
            .iter()
            .any(|e| e["dst_port"] == 8080 && e["action"] == "drop"),
        "{events:?}"
    );
    assert!(no_rule(&sg.stats(), iface, false) >= 1);

    // The interface's own mode audits as well.
    std::fs::write(file.path(), config(&p, None, Some("audit"))).unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert!(client.tcp_connects(s4, 8080), "audited by the interface");
    sg.ok(&["detach", "--all"]);
}
