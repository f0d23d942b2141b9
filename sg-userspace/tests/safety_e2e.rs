//! Operator safety (SPEC 10): commit confirmed, the SSH lockout warning and
//! `sg explain`, with the real `sg` binary on veths in network namespaces.
//! Needs root; without it every test fails loudly.

use std::{
    net::IpAddr,
    os::unix::process::CommandExt as _,
    time::{Duration, Instant},
};

mod support;

use support::{Sg, TempFile, pair, wait_until};

const ALLOW_7000: &str = r#"
[groups.g]
ingress = [{ proto = "tcp", ports = "7000", from = "198.18.0.0/15" }]
egress = []
"#;

const ALLOW_7001: &str = r#"
[groups.g]
ingress = [{ proto = "tcp", ports = "7001", from = "198.18.0.0/15" }]
egress = []
"#;

/// `sg apply --confirm` run in a process group of its own, which is then
/// killed whole (SIGKILL): the rollback must come from a process that
/// outlives the applying one and its group.
#[test]
fn unconfirmed_apply_rolls_back_after_the_applying_sg_is_killed() {
    let p = pair();
    let _srv = p.server.tcp_listen(7000);
    let server = IpAddr::V4(p.s.v4);
    let allow = TempFile::new("toml", ALLOW_7000);
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", allow.path(), "--groups", "g"]);
    assert!(p.client.tcp_connects(server, 7000));

    // The operator edits the file in force in place: the rollback point is
    // the policy in force, not what the file says now.
    std::fs::write(allow.path(), "[groups.g]\ningress = []\negress = []\n").unwrap();
    let mut child = sg
        .cmd(&["apply", "-c", allow.path(), "--confirm", "6s"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id() as i32;
    let st = child.wait().unwrap();
    assert!(st.success(), "apply --confirm failed: {st}");
    // SAFETY: signals our own child's process group only.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };

    let status = sg.json(&["status", "--json"]);
    let pending = &status["pending_confirmation"];
    assert!(
        pending["deadline"]
            .as_str()
            .is_some_and(|d| d.contains('T'))
            && pending["config"].as_str() == Some(allow.path()),
        "{status}"
    );
    let text = sg.ok(&["status"]);
    assert!(
        text.contains("pending confirmation") && text.contains("sg confirm"),
        "{text}"
    );
    assert!(
        !p.client.tcp_connects(server, 7000),
        "the lockout was not applied"
    );
    assert!(
        wait_until(
            || p.client.tcp_connects(server, 7000),
            Duration::from_secs(20)
        ),
        "traffic never came back: {}",
        std::fs::read_to_string(
            sg::state::StateDir::new(&sg.state_dir)
                .meta
                .join("confirm.log")
        )
        .unwrap_or_default()
    );
    let status = sg.json(&["status", "--json"]);
    assert!(status["pending_confirmation"].is_null(), "{status}");
    let out = sg.run(&["confirm"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no confirmation is pending") && stderr.contains("rolled back"),
        "{stderr}"
    );
}

#[test]
fn confirmed_apply_keeps_the_new_policy() {
    let p = pair();
    let _a = p.server.tcp_listen(7000);
    let _b = p.server.tcp_listen(7001);
    let server = IpAddr::V4(p.s.v4);
    let a = TempFile::new("toml", ALLOW_7000);
    let b = TempFile::new("toml", ALLOW_7001);
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", a.path(), "--groups", "g"]);
    let start = Instant::now();
    let out = sg.run(&["apply", "-c", b.path(), "--confirm", "4s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sg confirm"), "{stderr}");

    // A second apply while one is pending is refused, and changes nothing.
    for args in [
        &["apply", "-c", a.path()][..],
        &["apply", "-c", a.path(), "--confirm", "1m"],
    ] {
        let out = sg.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "sg {args:?}: {stderr}");
        assert!(
            stderr.contains("confirmation is pending") && stderr.contains("sg confirm"),
            "{stderr}"
        );
    }
    let confirmed = sg.ok(&["confirm"]);
    assert!(
        confirmed.contains("confirmed") && confirmed.contains(b.path()),
        "{confirmed}"
    );
    assert!(sg.json(&["status", "--json"])["pending_confirmation"].is_null());
    // Past the deadline, the confirmed policy is still the one in force.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(start.elapsed()));
    assert!(p.client.tcp_connects(server, 7001));
    assert!(!p.client.tcp_connects(server, 7000));
    assert!(sg.json(&["status", "--json"])["pending_confirmation"].is_null());
}

// ---------------------------------------------------------------------------
// SSH lockout warning
// ---------------------------------------------------------------------------

fn with_ssh(sg: &Sg, ssh: &str, args: &[&str]) -> (bool, String) {
    let out = sg.cmd(args).env("SSH_CONNECTION", ssh).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn apply_and_attach_warn_before_dropping_this_ssh_session() {
    let p = pair();
    let _srv = p.server.tcp_listen(7000);
    let server = IpAddr::V4(p.s.v4);
    let allow_ssh = TempFile::new(
        "toml",
        r#"
[groups.g]
ingress = [{ proto = "tcp", ports = "22", from = "198.18.0.0/15" },
           { proto = "tcp", ports = "7000", from = "198.18.0.0/15" }]
egress = []
"#,
    );
    let no_ssh = TempFile::new("toml", ALLOW_7001);
    let revoking = TempFile::new(
        "toml",
        &format!("{ALLOW_7001}\n[conntrack]\nrevoke_established = true\n"),
    );
    let sg = Sg::new(&p.server);
    let ssh = format!("{} 50022 {} 22", p.c.v4, p.s.v4);

    // Attach: a policy without port 22 warns, and suggests --confirm.
    let (ok, stderr) = with_ssh(
        &sg,
        &ssh,
        &["attach", &p.s.ifname, "-c", no_ssh.path(), "--groups", "g"],
    );
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("drops new SSH connections")
            && stderr.contains(&p.s.ifname)
            && stderr.contains("--confirm"),
        "{stderr}"
    );
    // One that allows it is silent.
    let (ok, stderr) = with_ssh(&sg, &ssh, &["apply", "-c", allow_ssh.path()]);
    assert!(ok && !stderr.contains("SSH"), "{stderr}");
    // An address on no enforced interface is none of sg's business.
    let elsewhere = format!("{} 50022 198.19.255.1 22", p.c.v4);
    let (ok, stderr) = with_ssh(
        &sg,
        &elsewhere,
        &["apply", "-c", no_ssh.path(), "--dry-run"],
    );
    assert!(ok && !stderr.contains("SSH"), "{stderr}");
    // Dry run warns too, and revoke_established means this session is cut.
    let (ok, stderr) = with_ssh(&sg, &ssh, &["apply", "-c", revoking.path(), "--dry-run"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("drops new SSH connections") && stderr.contains("cuts this session"),
        "{stderr}"
    );
    // The check judges the apply's own parse and compile: over SSH an
    // apply still parses its config once (the phase log counts).
    let out = sg
        .cmd(&["apply", "-c", revoking.path(), "--dry-run"])
        .env("SSH_CONNECTION", &ssh)
        .env("RUST_LOG", "sg::phase=debug")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("drops new SSH connections"), "{stderr}");
    assert_eq!(
        stderr.matches("\"toml tree\"").count(),
        1,
        "parsed more than once: {stderr}"
    );
    assert_eq!(stderr.matches("\"compile\"").count(), 1, "{stderr}");

    // A tracked session (here on port 7000) survives a policy that refuses
    // new ones, and the warning says so.
    let held = support::Held::open(&p.client, server, 7000);
    assert!(held.exchange());
    let session = format!("{} {} {} 7000", p.c.v4, held.local_port, p.s.v4);
    let (ok, stderr) = with_ssh(&sg, &session, &["apply", "-c", no_ssh.path()]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("port 7000") && stderr.contains("survives while it stays tracked"),
        "{stderr}"
    );
    assert!(held.exchange(), "the tracked session was cut");
    assert!(!p.client.tcp_connects(server, 7000));
    // With --confirm, the warning says the rollback protects it.
    let (ok, stderr) = with_ssh(
        &sg,
        &ssh,
        &["apply", "-c", revoking.path(), "--confirm", "1m"],
    );
    assert!(ok, "{stderr}");
    assert!(stderr.contains("--confirm will roll it back"), "{stderr}");
    sg.ok(&["confirm"]);
}

// ---------------------------------------------------------------------------
// sg explain
// ---------------------------------------------------------------------------

fn explain_config(p: &support::Pair) -> String {
    format!(
        r#"
[groups.srv]
ingress = [
  {{ proto = "tcp", ports = "7000", from = "{c4}/32", description = "client web" }},
  {{ proto = "tcp", ports = "7001", from = "198.19.0.0/16", description = "other peer" }},
  {{ proto = "udp", ports = "7002", from = "2001:db8::/32", description = "udp v6" }},
  {{ proto = "tcp", ports = "7003", from = "{c6}/128", description = "client v6" }},
  {{ proto = "icmp", icmp_type = 8, from = "{c4}/32", description = "ping" }},
]
egress = [{{ proto = "tcp", ports = "8000", to = "198.18.0.0/15", description = "out 8000" }}]
"#,
        c4 = p.c.v4,
        c6 = p.c.v6
    )
}

/// What `sg explain --json` says for one flow.
fn explain(sg: &Sg, iface: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["explain", "--iface", iface, "--json"];
    all.extend_from_slice(args);
    sg.json(&all)
}

#[test]
fn explain_agrees_with_real_connections() {
    let p = pair();
    let _t = [7000, 7001, 7003].map(|port| p.server.tcp_listen(port));
    let _u = p.server.udp_echo(7002);
    let _out = [8000, 8001].map(|port| p.client.tcp_listen(port));
    let cfg = TempFile::new("toml", &explain_config(&p));
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "srv"]);
    let (c4, s4) = (IpAddr::V4(p.c.v4), IpAddr::V4(p.s.v4));
    let (c6, s6) = (IpAddr::V6(p.c.v6), IpAddr::V6(p.s.v6));
    let ep = |ip: IpAddr, port: u16| std::net::SocketAddr::new(ip, port).to_string();

    struct Case {
        what: &'static str,
        args: Vec<String>,
        real: bool,
        /// The allowing rule's index in group srv (ingress unless egress).
        rule: Option<usize>,
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases = vec![
        Case {
            what: "tcp v4 7000 from the client",
            args: s(&["--from", &c4.to_string(), "--to", &ep(s4, 7000)]),
            real: p.client.tcp_connects(s4, 7000),
            rule: Some(0),
        },
        Case {
            what: "tcp v4 7001 (another peer's port)",
            args: s(&["--from", &ep(c4, 40000), "--to", &ep(s4, 7001)]),
            real: p.client.tcp_connects(s4, 7001),
            rule: None,
        },
        Case {
            what: "udp v4 7002 (a v6-only rule)",
            args: s(&[
                "--from",
                &c4.to_string(),
                "--to",
                &ep(s4, 7002),
                "--proto",
                "udp",
            ]),
            real: p.client.udp_exchange(s4, 7002),
            rule: None,
        },
        Case {
            what: "udp v6 7002",
            args: s(&[
                "--from",
                &c6.to_string(),
                "--to",
                &ep(s6, 7002),
                "--proto",
                "udp",
            ]),
            real: p.client.udp_exchange(s6, 7002),
            rule: Some(2),
        },
        Case {
            what: "tcp v6 7003",
            args: s(&["--from", &c6.to_string(), "--to", &ep(s6, 7003)]),
            real: p.client.tcp_connects(s6, 7003),
            rule: Some(3),
        },
        Case {
            what: "tcp v6 7000 (a v4-only rule)",
            args: s(&["--from", &c6.to_string(), "--to", &ep(s6, 7000)]),
            real: p.client.tcp_connects(s6, 7000),
            rule: None,
        },
        Case {
            what: "icmp echo v4",
            args: s(&[
                "--from",
                &c4.to_string(),
                "--to",
                &s4.to_string(),
                "--proto",
                "icmp",
            ]),
            real: p.client.ping(s4, 1) == 1,
            rule: Some(4),
        },
        Case {
            what: "icmpv6 echo",
            args: s(&[
                "--from",
                &c6.to_string(),
                "--to",
                &s6.to_string(),
                "--proto",
                "icmpv6",
                "--icmp-type",
                "128",
            ]),
            real: p.client.ping(s6, 1) == 1,
            rule: None,
        },
        Case {
            what: "egress tcp 8000",
            args: s(&[
                "--from",
                &s4.to_string(),
                "--to",
                &ep(c4, 8000),
                "--direction",
                "egress",
            ]),
            real: p.server.tcp_connects(c4, 8000),
            rule: Some(0),
        },
        Case {
            what: "egress tcp 8001",
            args: s(&[
                "--from",
                &s4.to_string(),
                "--to",
                &ep(c4, 8001),
                "--direction",
                "egress",
            ]),
            real: p.server.tcp_connects(c4, 8001),
            rule: None,
        },
    ];
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let e = explain(&sg, &p.s.ifname, &args);
        let allowed = e["verdict"] == "allow";
        assert_eq!(allowed, case.real, "{}: explain {e:#}", case.what);
        assert_eq!(allowed, case.rule.is_some(), "{}: {e:#}", case.what);
        assert!(e["drift"].is_null(), "{}: {e:#}", case.what);
        match case.rule {
            Some(index) => {
                assert_eq!(e["reason"], "rule", "{}: {e:#}", case.what);
                assert_eq!(e["rule"]["group"], "srv", "{}", case.what);
                assert_eq!(e["rule"]["index"], index, "{}: {e:#}", case.what);
                assert!(
                    e["rule"]["id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("sgr-")),
                    "{e:#}"
                );
                assert!(e["rule"]["description"].is_string(), "{e:#}");
            }
            None => {
                assert_eq!(e["reason"], "no_rule", "{}: {e:#}", case.what);
                assert!(e["rule"].is_null(), "{e:#}");
            }
        }
    }

    // The closest rules to a dropped flow, and the text form.
    let e = explain(
        &sg,
        &p.s.ifname,
        &["--from", &c4.to_string(), "--to", &ep(s4, 7001)],
    );
    let indexes = |key: &str| -> Vec<u64> {
        e["closest"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["index"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(indexes("same_port_other_peer"), vec![1], "{e:#}");
    assert_eq!(indexes("same_peer_other_port"), vec![0, 4], "{e:#}");
    let text = sg.ok(&[
        "explain",
        "--iface",
        &p.s.ifname,
        "--from",
        &c4.to_string(),
        "--to",
        &ep(s4, 7001),
    ]);
    assert!(
        text.contains("DROP") && text.contains("other peer") && text.contains("agrees"),
        "{text}"
    );
    let text = sg.ok(&[
        "explain",
        "--iface",
        &p.s.ifname,
        "--from",
        &c4.to_string(),
        "--to",
        &ep(s4, 7000),
    ]);
    assert!(
        text.contains("ALLOW by sgr-") && text.contains("client web"),
        "{text}"
    );

    // Bad input: a clear error, exit 1 or 2.
    let out = sg.run(&[
        "explain",
        "--iface",
        &p.s.ifname,
        "--from",
        "nonsense",
        "--to",
        &ep(s4, 1),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from"));
    let out = sg.run(&[
        "explain",
        "--iface",
        &p.s.ifname,
        "--from",
        &c4.to_string(),
        "--to",
        &ep(s6, 1),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("address families"));
}

/// SPEC 10.1 with a NACL (SPEC 2.3): the NACL rule that decided, ingress
/// before the SGs, egress after them (not reached when the SGs drop), each
/// answer compared with a real connection.
#[test]
fn explain_reports_the_nacl_step_as_real_connections_see_it() {
    let p = pair();
    let _t = [7000, 7001].map(|port| p.server.tcp_listen(port));
    let _out = [8000, 8001, 8002].map(|port| p.client.tcp_listen(port));
    let (c4, s4) = (IpAddr::V4(p.c.v4), IpAddr::V4(p.s.v4));
    let config = format!(
        r#"
[groups.srv]
ingress = [
  {{ proto = "tcp", ports = "7000-7001", from = "{c4}/32", description = "client" }},
  {{ proto = "icmp", icmp_type = 8, from = "{c4}/32", description = "ping" }},
]
egress = [
  {{ proto = "tcp", ports = "8000", to = "198.18.0.0/15" }},
  {{ proto = "tcp", ports = "8002", to = "198.18.0.0/15" }},
]

[interfaces.{iface}]
groups = ["srv"]
nacl = "edge"

[nacls.edge]
ingress = [
  {{ rule = 10, action = "deny", proto = "tcp", ports = "7001", from = "{c4}/32", description = "no 7001" }},
  {{ rule = 100, action = "allow", proto = "tcp", ports = "1024-65535", from = "anywhere" }},
]
egress = [
  {{ rule = 100, action = "allow", proto = "tcp", ports = "1024-7999", to = "anywhere" }},
  {{ rule = 110, action = "allow", proto = "tcp", ports = "8000-8001", to = "anywhere" }},
  {{ rule = 120, action = "deny", proto = "tcp", ports = "8002", to = "anywhere" }},
  {{ rule = 130, action = "allow", proto = "tcp", ports = "8003-65535", to = "anywhere" }},
]
"#,
        iface = p.s.ifname
    );
    let cfg = TempFile::new("toml", &config);
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path()]);
    let ep = |ip: IpAddr, port: u16| std::net::SocketAddr::new(ip, port).to_string();
    let (c4s, s4s) = (c4.to_string(), s4.to_string());
    let egress = |port: u16| {
        vec![
            "--from".to_string(),
            s4s.clone(),
            "--to".into(),
            ep(c4, port),
            "--direction".into(),
            "egress".into(),
        ]
    };
    let ingress = |port: u16| {
        vec![
            "--from".to_string(),
            c4s.clone(),
            "--to".into(),
            ep(s4, port),
        ]
    };
    /// (what, args, real, verdict reason, NACL rule, reached, SG allows)
    type NaclCase = (
        &'static str,
        Vec<String>,
        bool,
        &'static str,
        &'static str,
        bool,
        bool,
    );
    let cases: Vec<NaclCase> = vec![
        (
            "ingress 7000: NACL 100, then the SGs",
            ingress(7000),
            p.client.tcp_connects(s4, 7000),
            "rule",
            "100",
            true,
            true,
        ),
        (
            "ingress 7001: NACL 10 denies what the SGs allow",
            ingress(7001),
            p.client.tcp_connects(s4, 7001),
            "nacl_deny",
            "10",
            true,
            true,
        ),
        (
            "ingress ping: the implicit deny",
            vec![
                "--from".into(),
                c4s.clone(),
                "--to".into(),
                s4s.clone(),
                "--proto".into(),
                "icmp".into(),
            ],
            p.client.ping(s4, 1) == 1,
            "nacl_deny",
            "*",
            true,
            true,
        ),
        (
            "egress 8000: the SGs, then NACL 110",
            egress(8000),
            p.server.tcp_connects(c4, 8000),
            "rule",
            "110",
            true,
            true,
        ),
        (
            "egress 8002: NACL 120 denies after the SGs",
            egress(8002),
            p.server.tcp_connects(c4, 8002),
            "nacl_deny",
            "120",
            true,
            true,
        ),
        (
            "egress 8001: the SGs drop it first",
            egress(8001),
            p.server.tcp_connects(c4, 8001),
            "no_rule",
            "110",
            false,
            false,
        ),
    ];
    for (what, args, real, reason, rule, reached, sg_allows) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = explain(&sg, &p.s.ifname, &args);
        assert_eq!(e["verdict"] == "allow", *real, "{what}: explain {e:#}");
        assert_eq!(e["reason"], *reason, "{what}: {e:#}");
        assert!(e["drift"].is_null(), "{what}: {e:#}");
        let n = &e["nacl"];
        assert_eq!(n["name"], "edge", "{what}: {e:#}");
        assert_eq!(n["rule"], *rule, "{what}: {e:#}");
        assert_eq!(n["reached"], *reached, "{what}: {e:#}");
        let dir = if args.contains(&"egress") {
            "egress"
        } else {
            "ingress"
        };
        assert_eq!(n["id"], format!("nacl:edge:{dir}:{rule}"), "{what}: {e:#}");
        assert_eq!(e["rule"].is_object(), *sg_allows, "{what}: {e:#}");
    }
    let text = sg.ok(&[
        &["explain", "--iface", &p.s.ifname][..],
        &["--from", &c4s, "--to", &ep(s4, 7001)],
    ]
    .concat());
    assert!(
        text.contains("nacl edge: rule 10 denies")
            && text.contains("\"no 7001\"")
            && text.contains("DROP (nacl_deny: NACL edge rule 10 denies it)")
            && text.contains("the security groups would allow it by sgr-"),
        "{text}"
    );
    // Without a NACL on the interface, no NACL step.
    let no_nacl = config.replace("nacl = \"edge\"\n", "");
    std::fs::write(cfg.path(), no_nacl).unwrap();
    sg.ok(&["apply", "-c", cfg.path()]);
    let e = explain(
        &sg,
        &p.s.ifname,
        &ingress(7001).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(e["nacl"].is_null(), "{e:#}");
    assert_eq!(e["reason"], "rule", "{e:#}");
    assert!(p.client.tcp_connects(s4, 7001));
}

#[test]
fn explain_reports_drift_from_a_hand_edited_map() {
    let p = pair();
    let _t = p.server.tcp_listen(7000);
    let cfg = TempFile::new("toml", &explain_config(&p));
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "srv"]);
    let (c4, s4) = (IpAddr::V4(p.c.v4), IpAddr::V4(p.s.v4));
    let args = ["--from", &c4.to_string(), "--to", &format!("{s4}:7000")].map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = explain(&sg, &p.s.ifname, &args);
    assert_eq!(before["verdict"], "allow", "{before:#}");
    assert!(before["drift"].is_null(), "{before:#}");

    // The client's /32 is a host entry: delete it by hand through the pin.
    let pin = sg.state_dir.join("maps").join(sg_common::MAP_PEER_HOSTS_V4);
    let data = aya::maps::MapData::from_pin(&pin).unwrap();
    let mut hosts: aya::maps::HashMap<_, sg_common::PeerKeyV4, u32> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
    let doomed: Vec<sg_common::PeerKeyV4> = hosts
        .keys()
        .map(Result::unwrap)
        .filter(|k| k.addr == p.c.v4.octets())
        .collect();
    assert!(!doomed.is_empty(), "no host entry for the client");
    for k in &doomed {
        hosts.remove(k).unwrap();
    }
    assert!(!p.client.tcp_connects(s4, 7000), "the edit changed nothing");

    let after = explain(&sg, &p.s.ifname, &args);
    assert_eq!(after["verdict"], "drop", "{after:#}");
    assert_eq!(after["config_verdict"], "allow", "{after:#}");
    assert_eq!(after["config_rule"], before["rule"]["id"], "{after:#}");
    assert!(
        after["drift"]
            .as_str()
            .is_some_and(|d| d.contains("differ")),
        "{after:#}"
    );
    let text = sg.ok(&[&["explain", "--iface", &p.s.ifname][..], &args].concat());
    assert!(text.contains("DRIFT"), "{text}");
    // Attaching again rewrites the maps: no drift.
    sg.ok(&["detach", &p.s.ifname]);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "srv"]);
    let fixed = explain(&sg, &p.s.ifname, &args);
    assert!(
        fixed["drift"].is_null() && fixed["verdict"] == "allow",
        "{fixed:#}"
    );
}

// ---------------------------------------------------------------------------
// attach --all (what sg-apply.service runs at boot)
// ---------------------------------------------------------------------------

#[test]
fn attach_all_enforces_every_interface_of_the_file() {
    let mut lab = sg_lab::Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    let server = lab.host("server");
    let (_a, sa) = lab.link(&a, &server, 1);
    let (_b, sb) = lab.link(&b, &server, 2);
    let _srv = server.tcp_listen(7000);
    let cfg = TempFile::new(
        "toml",
        &format!(
            r#"
[groups.open]
ingress = [{{ proto = "tcp", ports = "7000", from = "198.18.0.0/15" }}]
[groups.shut]
ingress = []

[interfaces.{}]
groups = ["open"]
[interfaces.{}]
groups = ["shut"]
"#,
            sa.ifname, sb.ifname
        ),
    );
    let sg = Sg::new(&server);
    let out = sg.ok(&["attach", "--all", "-c", cfg.path()]);
    assert!(
        out.contains(&format!("attached to {}", sa.ifname))
            && out.contains(&format!("attached to {}", sb.ifname)),
        "{out}"
    );
    let status = sg.json(&["status", "--json"]);
    let groups: Vec<(String, String)> = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["iface"].as_str().unwrap().to_string(),
                i["groups"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(groups.len(), 2, "{status}");
    assert!(
        groups.contains(&(sa.ifname.clone(), "open".into())),
        "{status}"
    );
    assert!(
        groups.contains(&(sb.ifname.clone(), "shut".into())),
        "{status}"
    );
    assert!(a.tcp_connects(IpAddr::V4(sa.v4), 7000));
    assert!(!b.tcp_connects(IpAddr::V4(sb.v4), 7000));

    // A file that names no interface: a clear error, nothing attached.
    let none = TempFile::new("toml", ALLOW_7000);
    let other = Sg::new(&server);
    let out = other.run(&["attach", "--all", "-c", none.path()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("names no interface"), "{stderr}");
    // --all and an interface, or --all and --groups: usage errors.
    let out = other.run(&["attach", &sa.ifname, "--all", "-c", cfg.path()]);
    assert_eq!(out.status.code(), Some(2));
}

/// The rollback watcher killed (SIGKILL) leaves nothing to roll back; the
/// next `sg status` starts it again and, the deadline passed, the rollback
/// comes at once.
#[test]
fn a_killed_rollback_watcher_is_revived_and_the_rollback_still_comes() {
    let p = pair();
    let _srv = p.server.tcp_listen(7000);
    let server = IpAddr::V4(p.s.v4);
    let allow = TempFile::new("toml", ALLOW_7000);
    let deny = TempFile::new("toml", "[groups.g]\ningress = []\negress = []\n");
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", allow.path(), "--groups", "g"]);
    sg.ok(&["apply", "-c", deny.path(), "--confirm", "2s"]);
    let pid = sg.json(&["status", "--json"])["pending_confirmation"]["watcher_pid"]
        .as_u64()
        .expect("a watcher pid") as i32;
    // SAFETY: kill(2) of the watcher sg started for this test.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !p.client.tcp_connects(server, 7000),
        "nothing rolled back with the watcher gone"
    );
    let out = sg.run(&["status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was gone: started it again") && stderr.contains("rolls back now"),
        "{stderr}"
    );
    assert!(
        wait_until(
            || p.client.tcp_connects(server, 7000),
            Duration::from_secs(20)
        ),
        "the revived watcher never rolled back"
    );
    assert!(sg.json(&["status", "--json"])["pending_confirmation"].is_null());
}
