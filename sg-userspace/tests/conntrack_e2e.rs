//! Connection tracking end to end (issue 4): the real `sg` binary on veths
//! in network namespaces, real TCP/UDP/ICMP traffic, short timeouts.
//! Needs root; without it every test fails loudly.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

mod support;

use sg_lab::Lab;
use support::{Held, PmtuLab, Sg, TempFile, download, pair, pmtu_lab, wait_listening, wait_until};

fn drops(sg: &Sg, reason: &str) -> u64 {
    sg.stats()["drops_by_reason"][reason].as_u64().unwrap()
}

fn tracked(sg: &Sg) -> Vec<serde_json::Value> {
    sg.json(&["conntrack", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

// ---------------------------------------------------------------------------
// 1 + 6: states, timeouts, list, flush
// ---------------------------------------------------------------------------

#[test]
fn list_shows_states_and_timeouts_and_flush_clears_them() {
    let p = pair();
    let _echo = p.server.tcp_listen(7000);
    let _udp = p.server.udp_echo(7001);
    let cfg = TempFile::new(
        "toml",
        r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "7000", from = "198.18.0.0/15" },
  { proto = "udp", ports = "7001", from = "198.18.0.0/15" },
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
]
[conntrack]
tcp_established = "1h"
udp = "3s"
icmp = "2s"
"#,
    );
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    let server = IpAddr::V4(p.s.v4);
    let held = Held::open(&p.client, server, 7000);
    assert!(held.exchange());
    assert!(p.client.udp_exchange(server, 7001));
    assert_eq!(p.client.ping(server, 1), 1);
    let entries = tracked(&sg);
    let find = |proto: &str| {
        entries
            .iter()
            .find(|e| e["proto_name"] == proto)
            .unwrap_or_else(|| panic!("no {proto} entry in {entries:?}"))
            .clone()
    };
    let tcp = find("tcp");
    assert_eq!(tcp["state"], "established");
    assert_eq!(tcp["iface"], p.s.ifname.as_str());
    assert_eq!(tcp["direction"], "ingress");
    assert_eq!(tcp["src"], p.c.v4.to_string());
    assert_eq!(tcp["dst"], p.s.v4.to_string());
    assert_eq!(tcp["src_port"], held.local_port);
    assert_eq!(tcp["dst_port"], 7000);
    let left = tcp["expires_in_ms"].as_u64().unwrap();
    assert!(
        left > 3_000_000 && left <= 3_600_000,
        "tcp_established: {left}"
    );
    assert!(tcp["rule"].as_str().unwrap().starts_with("sgr-"));
    let udp = find("udp");
    assert_eq!(udp["dst_port"], 7001);
    assert!(udp["expires_in_ms"].as_u64().unwrap() <= 3_000);
    let icmp = find("icmp");
    assert_eq!(icmp["state"], "icmp");
    assert!(icmp["icmp_id"].is_u64());
    assert!(icmp["expires_in_ms"].as_u64().unwrap() <= 2_000);
    let text = sg.ok(&["conntrack", "list"]);
    assert!(
        text.contains("established") && text.contains("3 connections"),
        "{text}"
    );

    // The short timeouts run out and the sweep timer, which outlived the
    // `sg attach` that started it, deletes those entries from the table
    // (status counts every entry, dead or alive); the established
    // connection stays. Userspace gc then has nothing left to do.
    let entries_in_table = || sg.json(&["status", "--json"])["conntrack_entries"].clone();
    assert!(
        wait_until(|| entries_in_table() == 1, Duration::from_secs(8)),
        "{:?}",
        entries_in_table()
    );
    assert_eq!(tracked(&sg).len(), 1);
    let gc = sg.json(&["conntrack", "gc", "--json"]);
    assert_eq!(gc["removed"], 0, "{gc}");
    assert_eq!(gc["scanned"], 1, "{gc}");
    assert!(held.exchange());

    // Flush: the server's replies need a rule now, and egress has none.
    assert!(sg.ok(&["conntrack", "flush"]).contains("flushed 1"));
    assert!(tracked(&sg).is_empty());
    assert!(
        !held.exchange(),
        "replies of a flushed connection are dropped"
    );
    assert!(drops(&sg, "no_rule") >= 1);
}

// ---------------------------------------------------------------------------
// 2: PMTU discovery through a router, no ICMP rule
// ---------------------------------------------------------------------------

#[test]
fn pmtu_discovery_works_through_a_smaller_link_with_no_icmp_rule() {
    // server ==1500== router ==1280== client. The client's own end keeps
    // 1500, so it advertises a 1460 MSS and the server must learn the path
    // MTU from the router's ICMP errors, which no rule allows.
    let PmtuLab {
        lab: _lab,
        server,
        client,
        s,
        c,
    } = pmtu_lab();
    const SIZE: usize = 4_000_000;
    let mut srv = server.spawn(&[
        "socat",
        "TCP6-LISTEN:8000,fork,reuseaddr,ipv6only=0",
        &format!("SYSTEM:head -c {SIZE} /dev/zero"),
    ]);
    wait_listening(&server, 8000, &mut srv);
    let cfg = TempFile::new(
        "toml",
        r#"
[groups.g]
egress = []
ingress = [{ proto = "tcp", ports = "8000", from = ["198.18.0.0/15", "2001:db8::/32"] }]
"#,
    );
    let sg = Sg::new(&server);
    sg.ok(&["attach", &s.ifname, "-c", cfg.path(), "--groups", "g"]);
    for dst in [IpAddr::V4(s.v4), IpAddr::V6(s.v6)] {
        let got = download(&client, dst, 8000);
        assert_eq!(
            got.as_ref().ok(),
            Some(&SIZE),
            "transfer from {dst} through the 1280 link: {got:?}"
        );
    }
    let mtu4 = server.run_ok(&["ip", "-4", "route", "get", &c.v4.to_string()]);
    let mtu6 = server.run_ok(&["ip", "-6", "route", "get", &c.v6.to_string()]);
    assert!(mtu4.contains("mtu 1280"), "learned path MTU v4: {mtu4}");
    assert!(mtu6.contains("mtu 1280"), "learned path MTU v6: {mtu6}");
}

// ---------------------------------------------------------------------------
// 3: a full table under a SYN flood
// ---------------------------------------------------------------------------

#[test]
fn a_syn_flood_into_a_small_table_never_interrupts_an_established_connection() {
    // server has two links: the client's and the attacker's; sg on both,
    // one shared table of 64 entries.
    let mut lab = Lab::new();
    let client = lab.host("client");
    let attacker = lab.host("attacker");
    let server = lab.host("server");
    let (_c, s1) = lab.link(&client, &server, 1);
    let (_a, s2) = lab.link(&attacker, &server, 2);
    let _echo = server.tcp_listen(7000);
    let cfg = TempFile::new(
        "toml",
        r#"
[groups.g]
egress = []
ingress = [{ proto = "tcp", ports = "7000", from = "198.18.0.0/15" }]
[conntrack]
max_entries = 64
tcp_syn = "2s"
tcp_rst = "2s"
"#,
    );
    let sg = Sg::new(&server);
    sg.ok(&["attach", &s1.ifname, "-c", cfg.path(), "--groups", "g"]);
    sg.ok(&["attach", &s2.ifname, "-c", cfg.path(), "--groups", "g"]);
    let held = Held::open(&client, IpAddr::V4(s1.v4), 7000);
    assert!(held.exchange());

    // 20000 SYNs from incrementing source ports, ~2 s, bounded.
    let target = s2.v4.to_string();
    let mut flood = attacker.spawn(&[
        "hping3", "-q", "-S", "-p", "7000", "-i", "u100", "-c", "20000", &target,
    ]);
    let started = Instant::now();
    let mut last_ok = Instant::now();
    let mut longest = Duration::ZERO;
    let mut exchanges = 0u32;
    let mut failed = 0u32;
    while flood.try_wait().is_none() || started.elapsed() < Duration::from_secs(3) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hping3 did not finish: {}",
            flood.log()
        );
        if held.exchange() {
            exchanges += 1;
            longest = longest.max(last_ok.elapsed());
            last_ok = Instant::now();
        } else {
            failed += 1;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let flood_status = flood.stop(Duration::from_secs(1));
    println!(
        "SYN flood: established connection made {exchanges} echo round trips during the flood; \
         longest gap in service {longest:?}; hping3 {flood_status}"
    );
    assert_eq!(failed, 0, "the established connection was interrupted");
    let full = drops(&sg, "conntrack_full");
    println!("SYN flood: conntrack_full drops {full}");
    assert!(full > 1000, "the table must have filled: {full}");
    let status = sg.json(&["status", "--json"]);
    assert_eq!(status["conntrack_capacity"], 64, "{status}");
    let established: Vec<_> = tracked(&sg)
        .into_iter()
        .filter(|e| e["state"] == "established")
        .collect();
    assert_eq!(established.len(), 1, "{established:?}");
    assert_eq!(established[0]["src_port"], held.local_port);

    // Embryonic entries time out (tcp_syn = 2s); the sweep timer, which
    // outlived the `sg attach` that started it, deletes them with no
    // userspace help and no packet walking the table: new connections work.
    assert!(
        wait_until(
            || client.tcp_connects(IpAddr::V4(s1.v4), 7000),
            Duration::from_secs(10)
        ),
        "new connections must work again once the flood's entries expire"
    );
    assert!(held.exchange());
}

// ---------------------------------------------------------------------------
// 5: rule removal
// ---------------------------------------------------------------------------

const BEFORE: &str = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "7000", from = "198.18.0.0/15" },
  { proto = "tcp", ports = "7001", from = "198.18.0.0/15" },
]
"#;

const AFTER: &str = r#"
[groups.g]
egress = []
ingress = [{ proto = "tcp", ports = "7001", from = "198.18.0.0/15" }]
"#;

#[test]
fn removing_a_rule_keeps_tracked_connections_unless_revoke_established() {
    for revoke in [false, true] {
        let p = pair();
        let _l0 = p.server.tcp_listen(7000);
        let _l1 = p.server.tcp_listen(7001);
        let tail = format!("[conntrack]\nrevoke_established = {revoke}\n");
        let (before, after) = (
            TempFile::new("toml", &format!("{BEFORE}{tail}")),
            TempFile::new("toml", &format!("{AFTER}{tail}")),
        );
        let sg = Sg::new(&p.server);
        sg.ok(&["attach", &p.s.ifname, "-c", before.path(), "--groups", "g"]);
        let server = IpAddr::V4(p.s.v4);
        let gone = Held::open(&p.client, server, 7000);
        let kept = Held::open(&p.client, server, 7001);
        assert!(gone.exchange() && kept.exchange());
        assert_eq!(tracked(&sg).len(), 2);
        sg.ok(&["apply", "-c", after.path()]);
        assert!(
            !p.client.tcp_connects(server, 7000),
            "new connections follow the rules"
        );
        assert!(kept.exchange(), "revoke = {revoke}");
        if revoke {
            assert!(!gone.exchange(), "revoked at once");
            assert!(drops(&sg, "revoked") >= 1);
            assert_eq!(tracked(&sg).len(), 1);
        } else {
            assert!(gone.exchange(), "kept until it times out");
            assert_eq!(drops(&sg, "revoked"), 0);
            assert_eq!(tracked(&sg).len(), 2);
        }
    }
}

#[test]
fn untracked_flows_are_cut_as_soon_as_their_rule_goes() {
    // Default egress (all traffic everywhere) and a rule from anywhere: the
    // AWS untracked case. No conntrack entry, so no grace after removal.
    let p = pair();
    let _l0 = p.server.tcp_listen(7000);
    let before = TempFile::new(
        "toml",
        "[groups.g]\ningress = [{ proto = \"tcp\", ports = \"7000\", from = \"anywhere\" }]\n",
    );
    let after = TempFile::new("toml", "[groups.g]\ningress = []\n");
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", before.path(), "--groups", "g"]);
    for server in [IpAddr::V4(p.s.v4), IpAddr::V6(p.s.v6)] {
        let held = Held::open(&p.client, server, 7000);
        assert!(held.exchange());
        assert!(tracked(&sg).is_empty(), "untracked: {:?}", tracked(&sg));
        sg.ok(&["apply", "-c", after.path()]);
        assert!(!held.exchange(), "cut at once: {server}");
        sg.ok(&["apply", "-c", before.path()]);
    }
    assert!(drops(&sg, "no_rule") >= 2);
}
