//! End to end: the real `sg` binary enforcing on a veth inside a network
//! namespace, with real clients (ping, socat, nmap) on the other side.
//! Needs root; without it every test fails loudly.

use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

mod support;

use sg_lab::{Background, Host, ScanKind};
use support::{Sg, TempFile, pair};

const WEB: &str = r#"
[groups.web]
description = "web tier"
ingress = [
  { type = "http", from = "anywhere" },
  { type = "ssh", from = "sg:admins" },
]
egress = []

[groups.admins]
members = ["198.19.0.10", "2001:db8:ff::10"]
"#;

fn attach(sg: &Sg, iface: &str, cfg: &str, groups: &str) {
    let out = sg.ok(&["attach", iface, "-c", cfg, "--groups", groups]);
    assert!(out.contains("attached to"), "{out}");
}

fn listeners(host: &Host, ports: &[u16]) -> Vec<Background> {
    ports.iter().map(|p| host.tcp_listen(*p)).collect()
}

#[test]
fn attach_persists_after_exit_and_detach_restores_the_interface() {
    let p = pair();
    let _l = listeners(&p.server, &[22, 80]);
    let _c = p.client.tcp_listen(7000);
    let server4 = IpAddr::V4(p.s.v4);
    let server6 = IpAddr::V6(p.s.v6);
    let client4 = IpAddr::V4(p.c.v4);
    assert!(p.client.tcp_connects(server4, 22), "no filter yet");
    assert!(p.server.tcp_connects(client4, 7000), "no filter yet");
    let before = p.server.run_ok(&["ip", "-d", "link", "show", &p.s.ifname]);
    assert!(!before.contains("xdp"), "{before}");

    let cfg = TempFile::new("toml", WEB);
    let sg = Sg::new(&p.server);
    // XDP explicitly: `--mode auto` would pick TC on veth.
    let out = sg.ok(&[
        "attach",
        &p.s.ifname,
        "-c",
        cfg.path(),
        "--groups",
        "web",
        "--mode",
        "generic",
    ]);
    assert!(out.contains("attached to"), "{out}");
    // The attach process has exited; enforcement holds.
    let link = p.server.run_ok(&["ip", "-d", "link", "show", &p.s.ifname]);
    assert!(link.contains("xdp"), "XDP must be attached: {link}");
    for server in [server4, server6] {
        assert!(
            p.client.tcp_connects(server, 80),
            "http from anywhere: {server}"
        );
        assert!(
            !p.client.tcp_connects(server, 22),
            "ssh only from admins: {server}"
        );
        assert_eq!(p.client.ping(server, 2), 0, "no ICMP rule: {server}");
    }
    assert!(
        !p.server.tcp_connects(client4, 7000),
        "egress = []: TC drops"
    );

    let out = sg.ok(&["detach", &p.s.ifname]);
    assert!(out.contains("detached"), "{out}");
    let after = p.server.run_ok(&["ip", "-d", "link", "show", &p.s.ifname]);
    assert!(!after.contains("xdp"), "detach must remove XDP: {after}");
    assert!(
        p.server.tcp_connects(client4, 7000),
        "detach must remove TC egress"
    );
    assert!(p.client.tcp_connects(server4, 22));
    assert_eq!(p.client.ping(server6, 1), 1);
    assert!(!sg.state_dir.exists(), "pinned state must go");
}

#[test]
fn nmap_syn_and_ack_scans_see_exactly_the_allowed_ports() {
    let p = pair();
    let _l = listeners(&p.server, &[22, 80, 443, 8080]);
    // Default egress, as in most groups: the RST that answers an ACK to an
    // allowed port gets out, the ACKs to other ports never get in.
    let cfg = TempFile::new("toml", &WEB.replace("egress = []", ""));
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, cfg.path(), "web");
    let ports = "21-23,79-81,443,8080";
    for server in [IpAddr::V4(p.s.v4), IpAddr::V6(p.s.v6)] {
        let syn = p.client.nmap(server, ports, ScanKind::Syn);
        let open: Vec<u16> = syn
            .iter()
            .filter(|(_, s)| *s == "open")
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(open, vec![80], "SYN scan of {server}: {syn:?}");
        assert!(
            syn.iter().all(|(p, s)| *p == 80 || s == "filtered"),
            "{syn:?}"
        );
        let ack = p.client.nmap(server, ports, ScanKind::Ack);
        let unfiltered: Vec<u16> = ack
            .iter()
            .filter(|(_, s)| *s == "unfiltered")
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(unfiltered, vec![80], "ACK scan of {server}: {ack:?}");
    }
}

#[test]
fn replies_pass_without_rules_for_them_tcp_udp_icmp_v4_v6() {
    let p = pair();
    // The server may open connections out (egress rules), but accepts no
    // inbound connection at all: replies come back through conntrack.
    let cfg = TempFile::new(
        "toml",
        r#"
[groups.client_only]
egress = [
  { proto = "tcp", ports = "7000", to = ["198.18.1.0/24", "2001:db8:1::/64"] },
  { proto = "udp", ports = "7001", to = "anywhere" },
  { proto = "icmp", icmp_type = 8, to = "anywhere-ipv4" },
  { proto = "icmpv6", icmp_type = 128, to = "anywhere-ipv6" },
]
"#,
    );
    let _tcp = p.client.tcp_listen(7000);
    let _tcp2 = p.client.tcp_listen(7002);
    let _udp = p.client.udp_echo(7001);
    let _srv = p.server.tcp_listen(7000);
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, cfg.path(), "client_only");
    for client in [IpAddr::V4(p.c.v4), IpAddr::V6(p.c.v6)] {
        assert!(
            p.server.tcp_connects(client, 7000),
            "tcp out and back: {client}"
        );
        assert!(
            !p.server.tcp_connects(client, 7002),
            "no egress rule for 7002: {client}"
        );
        assert!(
            p.server.udp_exchange(client, 7001),
            "udp out and back: {client}"
        );
        assert_eq!(p.server.ping(client, 2), 2, "ping out and back: {client}");
        let server = match client {
            IpAddr::V4(_) => IpAddr::V4(p.s.v4),
            IpAddr::V6(_) => IpAddr::V6(p.s.v6),
        };
        assert_eq!(
            p.client.ping(server, 1),
            0,
            "no ingress: ping in is dropped"
        );
    }
    assert!(
        !p.client.tcp_connects(IpAddr::V4(p.s.v4), 7000),
        "no ingress rule"
    );
}

#[test]
fn arp_and_neighbour_discovery_pass_under_deny_all() {
    let p = pair();
    let cfg = TempFile::new("toml", "[groups.closed]\negress = []\n");
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, cfg.path(), "closed");
    p.client
        .run_ok(&["ip", "neigh", "flush", "dev", &p.c.ifname]);
    p.server
        .run_ok(&["ip", "neigh", "flush", "dev", &p.s.ifname]);
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 0, "ping is dropped");
    assert_eq!(p.client.ping(IpAddr::V6(p.s.v6), 1), 0, "ping6 is dropped");
    let neigh = p
        .client
        .run_ok(&["ip", "neigh", "show", "dev", &p.c.ifname]);
    for addr in [p.s.v4.to_string(), p.s.v6.to_string()] {
        let line = neigh
            .lines()
            .find(|l| l.starts_with(&format!("{addr} ")))
            .unwrap_or("");
        assert!(
            line.contains("lladdr"),
            "{addr} must resolve through ARP/ND: {neigh}"
        );
    }
}

#[test]
fn apply_is_live_keeps_allowed_flows_and_stops_denied_ones() {
    let p = pair();
    let _l = listeners(&p.server, &[22, 80]);
    let v1 = r#"
[groups.g]
ingress = [
  { proto = "icmp", from = "198.18.1.0/24" },
  { type = "ssh", from = "198.18.1.0/24" },
  { type = "http", from = "anywhere" },
]
"#;
    let v2 = r#"
[groups.g]
ingress = [
  { proto = "icmp", from = "198.18.0.0/16" },
  { type = "http", from = "anywhere" },
  { type = "https", from = "anywhere" },
]
"#;
    let (c1, c2) = (TempFile::new("toml", v1), TempFile::new("toml", v2));
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, c1.path(), "g");
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 22));
    // A steady ping runs through ten applies that all keep ICMP allowed.
    let server = p.s.v4.to_string();
    let mut ping = p.client.cmd("ping");
    ping.args(["-n", "-q", "-i", "0.01", "-c", "400", "-W", "1", &server])
        .stdout(Stdio::piped());
    let pinger = ping.spawn().unwrap();
    let started = Instant::now();
    for i in 0..10 {
        let cfg = if i % 2 == 0 { &c2 } else { &c1 };
        sg.ok(&["apply", "-c", cfg.path()]);
    }
    let applies = started.elapsed();
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("400 packets transmitted, 400 received"),
        "lost pings during {applies:?} of applies: {text}"
    );
    // The last apply was v1 again; now switch to v2 and check ssh is gone.
    sg.ok(&["apply", "-c", c2.path()]);
    assert!(
        !p.client.tcp_connects(IpAddr::V4(p.s.v4), 22),
        "ssh removed by apply"
    );
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 80));
    // Applying what is in force rewrites nothing.
    let same: serde_json::Value =
        serde_json::from_str(&sg.ok(&["apply", "-c", c2.path(), "--json"])).unwrap();
    assert_eq!(same["entries_written"], 0, "{same}");
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 80));
    let dry = sg.ok(&["apply", "-c", c1.path(), "--dry-run"]);
    assert!(
        dry.contains("would change: 2 rules added, 2 removed"),
        "{dry}"
    );
    assert!(
        !p.client.tcp_connects(IpAddr::V4(p.s.v4), 22),
        "dry run changes nothing"
    );
}

#[test]
fn a_broken_config_is_rejected_with_its_position_and_changes_nothing() {
    let p = pair();
    let _l = listeners(&p.server, &[22, 80]);
    let good = TempFile::new("toml", WEB);
    let bad = TempFile::new(
        "toml",
        "[groups.web]\ningress = [\n  { proto = \"tcp\", ports = \"80-70\", from = \"anywhere\" },\n]\n",
    );
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, good.path(), "web");
    let out = sg.run(&["apply", "-c", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3:", bad.path())),
        "error must name file and line: {err}"
    );
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 80));
    assert!(!p.client.tcp_connects(IpAddr::V4(p.s.v4), 22));
    // Attaching a second interface with a broken file fails the same way.
    let out = sg.run(&["attach", &p.s.ifname, "-c", bad.path(), "--groups", "web"]);
    assert_eq!(out.status.code(), Some(1));
    // Usage errors exit 2.
    assert_eq!(sg.run(&["attach"]).status.code(), Some(2));
    assert_eq!(sg.run(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn status_and_watch_report_what_is_enforced_and_dropped() {
    let p = pair();
    let _l = listeners(&p.server, &[22, 80]);
    let cfg = TempFile::new("toml", WEB);
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, cfg.path(), "web");
    let status: serde_json::Value = serde_json::from_str(&sg.ok(&["status", "--json"])).unwrap();
    let iface = &status["interfaces"][0];
    assert_eq!(iface["iface"], p.s.ifname.as_str());
    assert_eq!(iface["groups"][0], "web");
    assert_eq!(iface["ingress_rules"], 2);
    assert_eq!(iface["egress_rules"], 0);
    // What the policy takes in the kernel. Ingress peers: anywhere (a
    // prefix per family) and the admins (a host per family). Classes:
    // anywhere (http: one interval) and admins (http + ssh: two); the v4
    // and v6 classes hold the same rules, so they share one rule set.
    let usage: std::collections::BTreeMap<String, (u64, u64)> = status["policy_maps"]
        .as_array()
        .expect("policy_maps")
        .iter()
        .map(|m| {
            let n = |k: &str| m[k].as_u64().expect("a count");
            (
                m["map"].as_str().unwrap().to_string(),
                (n("entries"), n("capacity")),
            )
        })
        .collect();
    let entries = |map: &str| usage[map].0;
    assert_eq!(entries("PEER_HOSTS_V4"), 1, "{usage:?}");
    assert_eq!(entries("PEER_HOSTS_V6"), 1, "{usage:?}");
    assert_eq!(entries("PEER_NETS_V4"), 1, "{usage:?}");
    assert_eq!(entries("PEER_NETS_V6"), 1, "{usage:?}");
    assert_eq!(entries("PEER_LENGTHS"), 2, "{usage:?}");
    assert_eq!(entries("RULE_SETS"), 2, "{usage:?}");
    assert_eq!(entries("RULE_INTERVALS"), 3, "{usage:?}");
    assert_eq!(usage["RULE_INTERVALS"].1, 1 << 21, "{usage:?}");
    let text = sg.ok(&["status"]);
    assert!(
        text.lines().any(|l| l
            .split_whitespace()
            .eq(["RULE_INTERVALS", "3", "of", "2097152"])),
        "{text}"
    );

    let mut watch = sg.cmd(&[]);
    watch
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = watch.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.contains("watching"), "{banner}");
    assert!(!p.client.tcp_connects(IpAddr::V4(p.s.v4), 22));
    // Other drops (IPv6 multicast listener reports, say) may come first:
    // take the first TCP one, and never wait forever.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut ev = serde_json::Value::Null;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(
            parsed["reason"].is_string() && parsed["proto"].is_u64(),
            "{line}"
        );
        if parsed["proto"] == 6 {
            ev = parsed;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!ev.is_null(), "no TCP drop event arrived");
    assert_eq!(ev["iface"], p.s.ifname.as_str());
    assert_eq!(ev["direction"], "ingress");
    assert_eq!(ev["reason"], "no_rule");
    assert_eq!(ev["proto"], 6);
    assert_eq!(ev["src"], p.c.v4.to_string());
    assert_eq!(ev["dst"], p.s.v4.to_string());
    assert_eq!(ev["dst_port"], 22);
    assert!(ev["src_port"].is_u64());
    assert!(ev["icmp_type"].is_null() && ev["icmp_code"].is_null());
    assert!(ev["len"].as_u64().unwrap() >= 54);
    assert!(ev["time"].as_str().unwrap().contains('T'));

    let stats: serde_json::Value = serde_json::from_str(&sg.ok(&["stats", "--json"])).unwrap();
    assert!(
        stats["drops_by_reason"]["no_rule"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}

#[test]
fn validate_needs_no_root_and_reports_counts() {
    let cfg = TempFile::new("toml", WEB);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_sg"),
            "validate",
            "-c",
            cfg.path(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // web: http and ssh in; admins: the default egress rule.
    let count = |field: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.trim().to_string())
    };
    assert_eq!(count("groups:").as_deref(), Some("2"), "{text}");
    assert_eq!(count("rules:").as_deref(), Some("3"), "{text}");
    // No [interfaces]: nothing to enforce, no map entries.
    assert_eq!(count("rule sets:").as_deref(), Some("0"), "{text}");
    // With web on an interface: what the kernel maps will hold. Peers of
    // web's ingress: anywhere (a /0 per family, one length tree each) and
    // sg:admins (a host per family); per family a class {http} and a class
    // {http, ssh}, each one TCP rule set, of one and two intervals.
    let with_iface = TempFile::new(
        "toml",
        &format!("{WEB}[interfaces.eth0]\ngroups = [\"web\"]\n"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sg"))
        .args(["validate", "-c", with_iface.path()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let count = |field: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.trim().to_string())
    };
    for (field, want) in [
        ("peer hosts v4:", "1"),
        ("peer hosts v6:", "1"),
        ("peer prefixes v4:", "1"),
        ("peer prefixes v6:", "1"),
        ("length trees:", "2"),
        ("rule sets:", "4"),
        ("rule intervals:", "6"),
    ] {
        assert_eq!(count(field).as_deref(), Some(want), "{field}\n{text}");
    }
    assert!(!text.contains("entries"), "no format a map holds: {text}");
    let bad = TempFile::new(
        "toml",
        "[groups.x]\ningress = [{ proto = \"tcp\", ports = \"22\", from = \"sg:nope\" }]\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sg"))
        .args(["validate", "-c", bad.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", bad.path())) && err.contains("nope"),
        "{err}"
    );
}

#[test]
fn tc_mode_enforces_ingress_without_xdp() {
    tc_ingress_enforces(&["--mode", "tc"]);
}

/// `--mode auto`, the default, picks TC ingress on veth (SPEC 6): XDP
/// there copies every GRO packet.
#[test]
fn auto_mode_picks_tc_ingress_on_veth() {
    tc_ingress_enforces(&[]);
}

fn tc_ingress_enforces(mode: &[&str]) {
    let p = pair();
    let _l = listeners(&p.server, &[22, 80]);
    let _c = p.client.tcp_listen(7000);
    let cfg = TempFile::new("toml", WEB);
    let sg = Sg::new(&p.server);
    let mut args = vec!["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "web"];
    args.extend_from_slice(mode);
    let out = sg.ok(&args);
    assert!(out.contains("(TC ingress)"), "{mode:?}: {out}");
    let link = p.server.run_ok(&["ip", "-d", "link", "show", &p.s.ifname]);
    assert!(
        !link.contains("xdp"),
        "{mode:?}: TC attaches no XDP: {link}"
    );
    // bpftool here predates tcx, so the hooks are checked by their effect.
    for server in [IpAddr::V4(p.s.v4), IpAddr::V6(p.s.v6)] {
        assert!(
            p.client.tcp_connects(server, 80),
            "http from anywhere: {server}"
        );
        assert!(
            !p.client.tcp_connects(server, 22),
            "ssh only from admins: {server}"
        );
    }
    let status: serde_json::Value = serde_json::from_str(&sg.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["interfaces"][0]["xdp_mode"], "tc");
    let client4 = IpAddr::V4(p.c.v4);
    assert!(
        !p.server.tcp_connects(client4, 7000),
        "egress = []: TC drops"
    );
    sg.ok(&["detach", &p.s.ifname]);
    assert!(
        p.client.tcp_connects(IpAddr::V4(p.s.v4), 22),
        "ingress hook gone"
    );
    assert!(p.server.tcp_connects(client4, 7000), "egress hook gone");
}

/// Pins lost under `sg` (bpffs unmounted, or mounted in a private mount
/// namespace that went away) leave a state file naming maps that are now
/// empty: `detach --all` must still clean up, not fail on entries that are
/// already gone.
#[test]
fn detach_cleans_up_after_the_pins_were_lost() {
    let p = pair();
    let cfg = TempFile::new("toml", WEB);
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, cfg.path(), "web");
    // Unpinning maps and links is what losing the bpffs instance does.
    let removed = std::fs::remove_dir_all(&sg.state_dir);
    assert!(removed.is_ok(), "{removed:?}");
    let out = sg.ok(&["detach", "--all"]);
    assert!(out.contains("detached"), "{out}");
    let status = sg.ok(&["status"]);
    assert!(!status.contains(&p.s.ifname), "{status}");
    let link = p.server.run_ok(&["ip", "-d", "link", "show", &p.s.ifname]);
    assert!(!link.contains("xdp"), "{link}");
}

/// A namespace deleted before `sg detach` (a container removed, say)
/// takes its interfaces and their links with it; `detach --all` from
/// outside must then clear the pins and state left behind. While the
/// namespace exists, the state dir stays refused elsewhere.
#[test]
fn detach_all_cleans_up_after_the_namespace_is_gone() {
    let p = pair();
    let cfg = TempFile::new("toml", WEB);
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, cfg.path(), "web");
    let from_host = |args: &[&str]| {
        Command::new(&sg.exe)
            .arg("--state-dir")
            .arg(&sg.state_dir)
            .args(args)
            .output()
            .expect("sg runs")
    };
    let refused = from_host(&["detach", "--all"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("another network namespace"), "{err}");
    assert!(
        sg.state_dir.join("maps").exists(),
        "a refusal changes nothing"
    );

    let deleted = Command::new("ip")
        .args(["netns", "delete", &p.server.ns])
        .status()
        .expect("ip runs");
    assert!(deleted.success());
    let status = from_host(&["status"]);
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(
        err.contains("that namespace is gone: `sg detach --all`"),
        "{err}"
    );
    let out = from_host(&["detach", "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("detached {}", p.s.ifname)),
        "{stdout}"
    );
    assert!(!sg.state_dir.join("maps").exists(), "pins removed");
    let status = from_host(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("nothing attached"), "{text}");
}

/// Issue 14: an attach compiles and records only what the attached
/// interface enforces, however many rules the config holds for others.
#[test]
fn attach_compiles_only_the_attached_groups() {
    let p = pair();
    let _l = listeners(&p.server, &[22]);
    let g = r#"
[groups.g]
ingress = [{ type = "ssh", from = "198.18.1.0/24" }]
"#;
    let mut big = g.to_string();
    big.push_str("[groups.other]\ningress = [\n");
    for i in 0..3000 {
        big.push_str(&format!(
            "  {{ proto = \"tcp\", ports = \"{}\", from = \"198.19.{}.{}\" }},\n",
            1024 + i,
            i / 250,
            i % 250 + 1
        ));
    }
    big.push_str("]\n[interfaces.elsewhere]\ngroups = [\"other\"]\nnacl = \"n\"\n");
    big.push_str("[nacls.n]\ningress = [{ rule = 1, action = \"deny\", proto = \"all\", from = \"anywhere\" }]\n");
    let (small, big) = (TempFile::new("toml", g), TempFile::new("toml", &big));
    let sg = Sg::new(&p.server);
    attach(&sg, &p.s.ifname, big.path(), "g");
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 22));
    // In force: g's ssh rule and its default egress rule, nothing of `other`.
    let same: serde_json::Value =
        serde_json::from_str(&sg.ok(&["apply", "-c", big.path(), "--json"])).unwrap();
    assert_eq!(same["rule_count"], 2, "{same}");
    assert_eq!(same["entries_written"], 0, "{same}");
    // Dropping `other` from the config removes no rule and writes nothing:
    // none of it was ever compiled, written or recorded.
    let cut: serde_json::Value =
        serde_json::from_str(&sg.ok(&["apply", "-c", small.path(), "--json"])).unwrap();
    assert_eq!(cut["rules_removed"], serde_json::json!([]), "{cut}");
    assert_eq!(cut["entries_written"], 0, "{cut}");
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 22));
}
