//! Defaults, interfaces, conntrack and events.

use super::*;

// ---------------------------------------------------------------------------
// Defaults
// ---------------------------------------------------------------------------

#[test]
fn default_egress_and_empty_lists() {
    let c = cfg("[groups.a]\n[groups.b]\negress = []\n[groups.c]\ningress = []\n");
    let a = &c.groups["a"];
    assert!(a.ingress.is_empty());
    assert_eq!(a.egress.len(), 1);
    let d = &a.egress[0];
    assert_eq!(d.proto, Proto::All);
    assert_eq!(d.ports, PortMatch::All);
    assert_eq!(d.peers, vec![cidr("0.0.0.0/0"), cidr("::/0")]);
    assert_eq!(d.direction, Direction::Egress);
    assert_eq!(d.group, "a");
    assert_eq!(d.index, 0);
    assert!(c.groups["b"].egress.is_empty());
    assert!(c.groups["b"].ingress.is_empty());
    assert_eq!(c.groups["c"].egress.len(), 1);

    // The default rule and the same rule written out have the same ID.
    let w = cfg("[groups.a]\negress = [{ proto = \"all\", to = \"anywhere\" }]\n");
    assert_eq!(w.groups["a"].egress[0].id, d.id);
}

#[test]
fn conntrack_and_events_defaults() {
    let c = ConntrackConfig::default();
    assert_eq!(c.tcp_established, Duration::from_secs(432_000));
    assert_eq!(c.tcp_syn, Duration::from_secs(120));
    assert_eq!(c.tcp_fin, Duration::from_secs(120));
    assert_eq!(c.tcp_rst, Duration::from_secs(10));
    assert_eq!(c.udp, Duration::from_secs(30));
    assert_eq!(c.udp_stream, Duration::from_secs(180));
    assert_eq!(c.icmp, Duration::from_secs(30));
    assert_eq!(c.other, Duration::from_secs(600));
    assert_eq!(c.max_entries, 262_144);
    assert!(!c.revoke_established);
    let t = c.timeouts_ns();
    const S: u64 = 1_000_000_000;
    assert_eq!(t[sg_common::TO_TCP_ESTABLISHED], 432_000 * S);
    assert_eq!(t[sg_common::TO_TCP_SYN], 120 * S);
    assert_eq!(t[sg_common::TO_TCP_FIN], 120 * S);
    assert_eq!(t[sg_common::TO_TCP_RST], 10 * S);
    assert_eq!(t[sg_common::TO_UDP], 30 * S);
    assert_eq!(t[sg_common::TO_UDP_STREAM], 180 * S);
    assert_eq!(t[sg_common::TO_ICMP], 30 * S);
    assert_eq!(t[sg_common::TO_OTHER], 600 * S);
    assert_eq!(EventsConfig::default().per_second, 1000);
}

// ---------------------------------------------------------------------------
// Interfaces
// ---------------------------------------------------------------------------

#[test]
fn interfaces() {
    let l = ok(
        "[groups.a]\n[groups.b]\n[interfaces.veth-sg0]\ngroups = [\"b\", \"a\", \"b\"]\n[interfaces.\"eth0.100\"]\ngroups = \"a\"\n",
    );
    assert_eq!(l.config.interfaces["veth-sg0"].groups, vec!["b", "a"]);
    assert_eq!(l.config.interfaces["eth0.100"].groups, vec!["a"]);
    assert_eq!(l.warnings, vec!["t.toml:4:21: group `b` is listed twice"]);
}

#[test]
fn bad_interfaces() {
    fails(
        "[groups.a]\n[interfaces.eth0]\ngroups = [\"a\", \"zz\"]\n",
        3,
        16,
        "unknown group `zz`",
    );
    fails(
        "[groups.a]\n[interfaces.eth0]\ngroups = []\n",
        3,
        10,
        "needs at least one group",
    );
    fails(
        "[groups.a]\n[interfaces.eth0]\n",
        2,
        1,
        "interface `eth0` needs `groups",
    );
    fails(
        "[groups.a]\n[interfaces.abcdefghijklmnop]\ngroups = [\"a\"]\n",
        2,
        13,
        "longer than 15 bytes",
    );
    fails(
        "[groups.a]\n[interfaces.\"a/b\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "character '/'",
    );
    fails(
        "[groups.a]\n[interfaces.\"a b\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "character ' '",
    );
    fails(
        "[groups.a]\n[interfaces.\"..\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "not a valid interface name",
    );
    fails(
        "[groups.a]\n[interfaces.\"\"]\ngroups = [\"a\"]\n",
        2,
        13,
        "empty interface name",
    );
    // 15 bytes is the limit and fine.
    cfg("[groups.a]\n[interfaces.abcdefghijklmno]\ngroups = [\"a\"]\n");
}

// ---------------------------------------------------------------------------
// Conntrack and events
// ---------------------------------------------------------------------------

#[test]
fn conntrack_settings() {
    let c = cfg(r#"
[conntrack]
tcp_established = "1h"
tcp_syn = "90s"
tcp_fin = "2m"
tcp_rst = "500ms"
udp = "45s"
udp_stream = "1h30m"
icmp = "5s"
other = "5d"
max_entries = 1000
revoke_established = true
"#)
    .conntrack;
    assert_eq!(c.tcp_established, Duration::from_secs(3600));
    assert_eq!(c.tcp_syn, Duration::from_secs(90));
    assert_eq!(c.tcp_fin, Duration::from_secs(120));
    assert_eq!(c.tcp_rst, Duration::from_millis(500));
    assert_eq!(c.udp, Duration::from_secs(45));
    assert_eq!(c.udp_stream, Duration::from_secs(5400));
    assert_eq!(c.icmp, Duration::from_secs(5));
    assert_eq!(c.other, Duration::from_secs(5 * 86400));
    assert_eq!(c.max_entries, 1000);
    assert!(c.revoke_established);
    assert_eq!(c.timeouts_ns()[sg_common::TO_TCP_RST], 500_000_000);
}

#[test]
fn bad_conntrack_settings() {
    fails(
        "[conntrack]\nudp = \"0s\"\n",
        2,
        7,
        "must be greater than zero",
    );
    fails("[conntrack]\nudp = \"30\"\n", 2, 7, "invalid duration `30`");
    fails("[conntrack]\nudp = \"30 s\"\n", 2, 7, "invalid duration");
    fails("[conntrack]\nudp = \"1w\"\n", 2, 7, "invalid duration `1w`");
    fails("[conntrack]\nudp = \"\"\n", 2, 7, "invalid duration");
    fails(
        "[conntrack]\nudp = 30\n",
        2,
        7,
        "expected a duration string such as \"90s\" for `udp`",
    );
    fails(
        "[conntrack]\nother = \"99999999999999999999d\"\n",
        2,
        9,
        "too long",
    );
    fails(
        "[conntrack]\nmax_entries = 0\n",
        2,
        15,
        "max_entries 0 is out of range 1-4294967295",
    );
    fails(
        "[conntrack]\nmax_entries = 4294967296\n",
        2,
        15,
        "out of range",
    );
    fails(
        "[conntrack]\nmax_entries = \"10\"\n",
        2,
        15,
        "expected an integer for max_entries",
    );
    fails(
        "[conntrack]\nrevoke_established = \"yes\"\n",
        2,
        22,
        "expected a boolean",
    );
    fails("conntrack = 1\n", 1, 13, "expected a table for `conntrack`");
}

#[test]
fn events_settings() {
    assert_eq!(cfg("[events]\nper_second = 50\n").events.per_second, 50);
    assert_eq!(cfg("[events]\nper_second = 0\n").events.per_second, 0);
    fails(
        "[events]\nper_second = -5\n",
        2,
        14,
        "per_second -5 is out of range",
    );
    fails(
        "[events]\nper_second = 1.5\n",
        2,
        14,
        "expected an integer for per_second",
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(432_000)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    for bad in ["", "s", "10", "1x", "-1s", "1.5s", "0ms", "ms5"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
