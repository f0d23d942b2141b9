//! Network ACLs end to end (SPEC 2): the real `sg` binary on a veth end
//! between two namespaces, real TCP clients and ping, IPv4 and IPv6.

use std::{
    net::IpAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

mod support;

use support::{Pair, Sg, TempFile, pair};

/// The server's config: group `g` on its end of the link with NACL `edge`
/// made of `ingress` and `egress` (TOML lines; `None` leaves a direction
/// out, which denies it).
fn config(p: &Pair, sg_ingress: &str, ingress: Option<&str>, egress: Option<&str>) -> String {
    let mut out = format!(
        "[groups.g]\ningress = [\n{sg_ingress}\n]\n\n[interfaces.{}]\ngroups = [\"g\"]\nnacl = \"edge\"\n\n[nacls.edge]\n",
        p.s.ifname
    );
    if let Some(i) = ingress {
        out += &format!("ingress = [\n{i}\n]\n");
    }
    if let Some(e) = egress {
        out += &format!("egress = [\n{e}\n]\n");
    }
    out
}

const SG_WEB: &str = r#"  { type = "http", from = "anywhere" },
  { type = "ssh", from = "anywhere" },
  { type = "https", from = "anywhere" },
  { proto = "icmp", from = "anywhere" },
  { proto = "icmpv6", icmp_type = 128, from = "anywhere" },"#;

/// The classic ephemeral-port rule: replies to clients leave from the
/// server's port to the client's ephemeral port.
const EPHEMERAL_OUT: &str =
    r#"  { rule = 100, action = "allow", proto = "tcp", ports = "1024-65535", to = "anywhere" },"#;

#[test]
fn ordering_return_traffic_and_both_layers_v4_and_v6() {
    let p = pair();
    let (client, server) = (&p.client, &p.server);
    let _l = [80, 22, 443, 8080].map(|port| server.tcp_listen(port));
    let (s4, s6) = (IpAddr::V4(p.s.v4), IpAddr::V6(p.s.v6));
    let c4 = p.c.v4;
    let ingress = format!(
        r#"  {{ rule = 100, action = "allow", type = "http", from = "anywhere" }},
  {{ rule = 105, action = "deny", proto = "tcp", ports = "22", from = "{c4}/32" }},
  {{ rule = 110, action = "allow", proto = "tcp", ports = "22", from = "anywhere" }},
  {{ rule = 40, action = "allow", proto = "tcp", ports = "443", from = "{c4}" }},
  {{ rule = 45, action = "deny", proto = "tcp", ports = "443", from = "anywhere" }},
  {{ rule = 50, action = "allow", proto = "tcp", ports = "8080", from = "anywhere" }},"#
    );
    let file = TempFile::new(
        "toml",
        &config(&p, SG_WEB, Some(&ingress), Some(EPHEMERAL_OUT)),
    );
    let sg = Sg::new(server);
    sg.ok(&["attach", &p.s.ifname, "-c", file.path()]);

    // Both families reach http (IPv6 neighbour discovery is always allowed).
    assert!(client.tcp_connects(s4, 80));
    assert!(client.tcp_connects(s6, 80));
    // Deny before allow: 105 stops SSH from the client's IPv4 address, 110
    // still lets its IPv6 address in.
    assert!(!client.tcp_connects(s4, 22), "105 comes before 110");
    assert!(client.tcp_connects(s6, 22));
    // Allow before deny: 40 lets the client's IPv4 address in, 45 denies
    // the rest (its IPv6 address).
    assert!(client.tcp_connects(s4, 443), "40 comes before 45");
    assert!(!client.tcp_connects(s6, 443));
    // Both layers: the NACL allows 8080, no security group rule does.
    assert!(!client.tcp_connects(s4, 8080));
    // Implicit deny: the SG allows echo, no NACL rule does.
    assert_eq!(client.ping(s4, 2), 0, "* denies ICMP");

    let status = sg.json(&["status", "--json"]);
    let nacl = &status["interfaces"][0]["nacl"];
    assert_eq!(nacl["name"], "edge", "{status}");
    assert_eq!(nacl["ingress_rules"], 6, "{status}");
    assert_eq!(nacl["egress_rules"], 1, "{status}");
    let text = sg.ok(&["status"]);
    assert!(
        text.contains("nacl edge: 6 ingress, 1 egress rules"),
        "{text}"
    );

    // Stateless: without the ephemeral rule on egress, the SG tracks the
    // connection but the NACL drops the server's replies.
    let narrow = EPHEMERAL_OUT.replace("1024-65535", "1-1023");
    std::fs::write(
        file.path(),
        config(&p, SG_WEB, Some(&ingress), Some(&narrow)),
    )
    .unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert!(!client.tcp_connects(s4, 80), "replies need their own rule");
    std::fs::write(
        file.path(),
        config(&p, SG_WEB, Some(&ingress), Some(EPHEMERAL_OUT)),
    )
    .unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert!(client.tcp_connects(s4, 80));

    // Counters: deny rules count denials, `*` too, by NACL and number.
    let stats = sg.stats();
    let rules = stats["nacl_rules"].as_array().expect("nacl_rules");
    let find = |dir: &str, rule: &str| {
        rules
            .iter()
            .find(|r| r["nacl"] == "edge" && r["direction"] == dir && r["rule"] == rule)
            .unwrap_or_else(|| panic!("no {dir} rule {rule} in {stats}"))
    };
    assert!(find("ingress", "105")["denied_packets"].as_u64().unwrap() >= 1);
    assert_eq!(find("ingress", "105")["allowed_packets"], 0);
    assert!(find("ingress", "40")["allowed_packets"].as_u64().unwrap() >= 1);
    assert!(find("ingress", "*")["denied_packets"].as_u64().unwrap() >= 2);
    assert!(find("ingress", "100")["allowed_packets"].as_u64().unwrap() >= 4);
    assert!(stats["drops_by_reason"]["nacl_deny"].as_u64().unwrap() >= 4);
    // SG rules and NACL rules are listed apart.
    assert!(
        stats["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["group"] != "edge"),
        "{stats}"
    );
    sg.ok(&["detach", "--all"]);
}

#[test]
fn egress_nacl_judges_what_the_server_sends() {
    let p = pair();
    let (client, server) = (&p.client, &p.server);
    let _l = [9000, 9001].map(|port| client.tcp_listen(port));
    let c4 = IpAddr::V4(p.c.v4);
    let egress = r#"  { rule = 10, action = "deny", proto = "tcp", ports = "9001", to = "anywhere" },
  { rule = 20, action = "allow", proto = "tcp", ports = "9000-9001", to = "anywhere" },"#;
    // Replies to the server's connections come in to its ephemeral port.
    let ingress = r#"  { rule = 100, action = "allow", proto = "tcp", ports = "1024-65535", from = "anywhere" },"#;
    let file = TempFile::new("toml", &config(&p, "", Some(ingress), Some(egress)));
    let sg = Sg::new(server);
    sg.ok(&["attach", &p.s.ifname, "-c", file.path()]);
    assert!(server.tcp_connects(c4, 9000));
    assert!(!server.tcp_connects(c4, 9001), "10 denies before 20 allows");
    // Without the ephemeral rule, the replies of an allowed connection die.
    std::fs::write(file.path(), config(&p, "", None, Some(egress))).unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert!(
        !server.tcp_connects(c4, 9000),
        "a missing ingress denies all"
    );
    // A bad NACL is refused with its position, exit 1, and changes nothing.
    let dup = egress.replace("rule = 20", "rule = 10");
    std::fs::write(file.path(), config(&p, "", Some(ingress), Some(&dup))).unwrap();
    let out = sg.run(&["apply", "-c", file.path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:", file.path())) && err.contains("duplicate rule number 10"),
        "{err}"
    );
    assert!(!server.tcp_connects(c4, 9000), "the old NACL stays");
    sg.ok(&["detach", "--all"]);
}

#[test]
fn live_applies_change_nacl_and_sgs_together_without_losing_allowed_flows() {
    let p = pair();
    let (client, server) = (&p.client, &p.server);
    let _l = [80, 81].map(|port| server.tcp_listen(port));
    let s4 = IpAddr::V4(p.s.v4);
    let c4 = p.c.v4;
    // Always allowed by both layers: http and echo from the client.
    let base_in = format!(
        r#"  {{ rule = 100, action = "allow", type = "http", from = "anywhere" }},
  {{ rule = 101, action = "allow", proto = "icmp", icmp_type = 8, from = "{c4}" }},"#
    );
    let base_out = format!(
        r#"{EPHEMERAL_OUT}
  {{ rule = 101, action = "allow", proto = "icmp", icmp_type = 0, to = "{c4}" }},"#
    );
    let variant = |n: u32| {
        // Each apply changes NACL rules (numbers, actions, CIDRs that never
        // cover the client) and the SG rules at once.
        let mut ingress = base_in.clone();
        let mut sg_in = "  { type = \"http\", from = \"anywhere\" },\n  { proto = \"icmp\", from = \"anywhere\" },\n".to_string();
        for k in 0..(n % 7) {
            let action = if (n + k).is_multiple_of(2) {
                "deny"
            } else {
                "allow"
            };
            ingress += &format!(
                "\n  {{ rule = {}, action = \"{action}\", proto = \"tcp\", ports = \"{}\", from = \"198.19.{}.0/24\" }},",
                10 + k * 3 + n % 3,
                1000 + n,
                k
            );
            sg_in += &format!(
                "  {{ proto = \"udp\", ports = \"{}\", from = \"198.19.{k}.0/24\" }},\n",
                2000 + n + k
            );
        }
        config(&p, &sg_in, Some(&ingress), Some(&base_out))
    };
    let file = TempFile::new("toml", &variant(0));
    let sg = Sg::new(server);
    sg.ok(&["attach", &p.s.ifname, "-c", file.path()]);
    assert!(client.tcp_connects(s4, 80));

    let target = p.s.v4.to_string();
    let pinger = client
        .cmd("ping")
        .args(["-n", "-q", "-i", "0.01", "-w", "600", &target])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let handle = {
        let (c, stop, ok, failed) = (
            client.clone(),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if c.tcp_connects(s4, 80) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for n in 1..=60 {
        std::fs::write(file.path(), variant(n)).unwrap();
        sg.ok(&["apply", "-c", file.path()]);
    }
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pinger.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .expect("ping summary");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    println!(
        "60 applies: {} connections ok, {} failed; ping: {line}",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "an allowed flow was refused"
    );
    assert!(ok.load(Ordering::Relaxed) > 5);
    assert!(nums[0] > 50, "{line}");
    assert_eq!(nums[0], nums[1], "pings lost during applies: {line}");

    // A NACL deny shows in `sg watch --json` with its NACL and rule; an
    // SG drop with nulls.
    let deny_80 = base_in.replace(
        "{ rule = 100, action = \"allow\", type = \"http\", from = \"anywhere\" }",
        "{ rule = 7, action = \"deny\", type = \"http\", from = \"anywhere\" }",
    );
    std::fs::write(
        file.path(),
        config(&p, SG_WEB, Some(&format!("{deny_80}\n  {{ rule = 200, action = \"allow\", proto = \"tcp\", ports = \"81\", from = \"anywhere\" }},")), Some(&base_out)),
    )
    .unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    let events = sg.watch_json(|| {
        assert!(!client.tcp_connects(s4, 80), "rule 7 denies http now");
        assert!(!client.tcp_connects(s4, 81), "no SG rule for 81");
    });
    let nacl_drop = events
        .iter()
        .find(|e| e["reason"] == "nacl_deny" && e["dst_port"] == 80)
        .unwrap_or_else(|| panic!("no nacl_deny event: {events:?}"));
    assert_eq!(nacl_drop["nacl"], "edge", "{nacl_drop}");
    assert_eq!(nacl_drop["nacl_rule"], "7", "{nacl_drop}");
    let sg_drop = events
        .iter()
        .find(|e| e["reason"] == "no_rule" && e["dst_port"] == 81)
        .unwrap_or_else(|| panic!("no no_rule event: {events:?}"));
    assert!(
        sg_drop["nacl"].is_null() && sg_drop["nacl_rule"].is_null(),
        "{sg_drop}"
    );
    sg.ok(&["detach", "--all"]);
}

/// SPEC 9.1: `pl:NAME` in a NACL rule; changing the list at apply changes
/// what the NACL denies.
#[test]
fn a_prefix_list_in_a_nacl_rule_follows_the_list_at_apply() {
    let p = pair();
    let (client, server) = (&p.client, &p.server);
    let _l = server.tcp_listen(80);
    let s4 = IpAddr::V4(p.s.v4);
    let ingress = r#"  { rule = 5, action = "deny", type = "http", from = "pl:blocked" },
  { rule = 100, action = "allow", type = "http", from = "anywhere" },"#;
    let with_list = |entry: &str| {
        format!(
            "{}\n[prefix_lists.blocked]\nentries = [\"{entry}\"]\n",
            config(&p, SG_WEB, Some(ingress), Some(EPHEMERAL_OUT))
        )
    };
    let file = TempFile::new("toml", &with_list(&format!("{}/32", p.c.v4)));
    let sg = Sg::new(server);
    sg.ok(&["attach", &p.s.ifname, "-c", file.path()]);
    assert!(
        !client.tcp_connects(s4, 80),
        "rule 5 denies the listed client"
    );
    std::fs::write(file.path(), with_list("198.19.77.0/24")).unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert!(client.tcp_connects(s4, 80), "the client left the list");
    std::fs::write(file.path(), with_list(&format!("{}/24", p.c.v4))).unwrap();
    sg.ok(&["apply", "-c", file.path()]);
    assert!(!client.tcp_connects(s4, 80), "listed again");
    let stats = sg.stats();
    let five = stats["nacl_rules"]
        .as_array()
        .expect("nacl_rules")
        .iter()
        .find(|r| r["nacl"] == "edge" && r["direction"] == "ingress" && r["rule"] == "5")
        .unwrap_or_else(|| panic!("no rule 5 in {stats}"))
        .clone();
    assert!(five["denied_packets"].as_u64().unwrap() >= 1, "{five}");
    sg.ok(&["detach", "--all"]);
}
