//! Live updates under traffic (SPEC 6, issue 5): hundreds of applies lose no
//! packet of a still-allowed flow, and an apply killed at any moment leaves
//! the old policy or the new one, never a mix. The bookkeeping of an apply
//! (issue 14): after it, the maps hold exactly the policy in force, and IDs
//! a failed apply reserved are never handed out again.

use std::{
    net::IpAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

mod support;

use sg::state::StateDir;
use sg_lab::{Host, unique_name};
use sg_testkit::rng::Rng;
use support::{Sg, TempFile, keys, pair};

fn seed() -> u64 {
    std::env::var("SG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// A config that always allows http and ICMP from the client's subnet,
/// plus `extra` random rules, and ssh when `ssh` is set.
fn config(rng: &mut Rng, extra: usize, ssh: bool) -> String {
    let mut rules = vec![
        r#"{ type = "http", from = "anywhere" }"#.to_string(),
        r#"{ proto = "icmp", from = "198.18.1.0/24" }"#.to_string(),
    ];
    if ssh {
        rules.push(r#"{ type = "ssh", from = "198.18.1.0/24" }"#.to_string());
    }
    for _ in 0..extra {
        let lo = 1000 + rng.below(50_000) as u16;
        let hi = lo + rng.below(100) as u16;
        let peer = if rng.below(2) == 0 {
            format!(
                "198.{}.{}.0/{}",
                18 + rng.below(2),
                rng.below(256),
                16 + rng.below(17)
            )
        } else {
            format!("2001:db8:{:x}::/{}", rng.below(65536), 32 + rng.below(97))
        };
        let proto = if rng.below(2) == 0 { "tcp" } else { "udp" };
        rules.push(format!(
            r#"{{ proto = "{proto}", ports = "{lo}-{hi}", from = "{peer}" }}"#
        ));
    }
    format!("[groups.g]\ningress = [\n  {}\n]\n", rules.join(",\n  "))
}

/// New TCP connections to `dst:port` in a loop until stopped: each SYN is a
/// new flow judged by the rules in force at that instant.
fn connect_loop(
    client: &Host,
    dst: IpAddr,
    port: u16,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (c, o, f) = (client.clone(), Arc::clone(&ok), Arc::clone(&failed));
    let handle = std::thread::spawn(move || {
        c.in_ns(move || {
            while !stop.load(Ordering::Relaxed) {
                let addr = std::net::SocketAddr::new(dst, port);
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(_) => o.fetch_add(1, Ordering::Relaxed),
                    Err(_) => f.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    });
    (handle, ok, failed)
}

#[test]
fn two_hundred_live_changes_lose_no_packet_of_allowed_flows() {
    let seed = seed();
    println!("seed {seed} (set SG_SEED to replay)");
    let mut rng = Rng(seed);
    let p = pair();
    let (client, server, s) = (&p.client, &p.server, &p.s);
    let _http = server.tcp_listen(80);
    let _ssh = server.tcp_listen(22);
    let server4 = IpAddr::V4(s.v4);
    let path = std::env::temp_dir().join(format!("{}.toml", unique_name("sglu")));
    std::fs::write(&path, config(&mut rng, 20, true)).unwrap();
    let cfg = path.to_str().unwrap();
    let sg = Sg::new(server);
    sg.ok(&["attach", &s.ifname, "-c", cfg, "--groups", "g"]);
    assert!(client.tcp_connects(server4, 22));

    // Tracked flow: a steady ping. New flows: TCP connects in a loop.
    let target = s.v4.to_string();
    let pinger = client
        .cmd("ping")
        .args(["-n", "-q", "-i", "0.005", "-w", "600", &target])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, ok, failed) = connect_loop(client, server4, 80, Arc::clone(&stop));

    let started = Instant::now();
    for _ in 0..200 {
        let extra = rng.below(40);
        std::fs::write(&path, config(&mut rng, extra, true)).unwrap();
        sg.ok(&["apply", "-c", cfg]);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    // SIGINT makes ping print its summary.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pinger.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    println!(
        "200 applies in {elapsed:?} ({:?} each); {} new connections ok, {} failed; ping: {}",
        elapsed / 200,
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        summary.trim()
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "a new flow that every config allows was refused"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 10,
        "the connect loop must have run"
    );
    let line = summary
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .expect("ping summary");
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    assert!(nums[0] > 100, "{line}");
    assert_eq!(nums[0], nums[1], "pings lost during applies: {line}");

    // A change that denies ssh stops new ssh flows at once.
    std::fs::write(&path, config(&mut rng, 5, false)).unwrap();
    sg.ok(&["apply", "-c", cfg]);
    assert!(!client.tcp_connects(server4, 22), "ssh must stop");
    assert!(client.tcp_connects(server4, 80));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_killed_apply_leaves_the_old_or_the_new_policy_never_a_mix() {
    let seed = seed();
    println!("seed {seed} (set SG_SEED to replay)");
    let mut rng = Rng(seed);
    let p = pair();
    let (client, server, s) = (&p.client, &p.server, &p.s);
    let _l = [server.tcp_listen(80), server.tcp_listen(443)];
    let server4 = IpAddr::V4(s.v4);
    let a = "[groups.g]\ningress = [{ type = \"http\", from = \"anywhere\" }]\n";
    let b = "[groups.g]\ningress = [{ type = \"https\", from = \"anywhere\" }]\n";
    let (pa, pb) = (
        std::env::temp_dir().join(format!("{}.toml", unique_name("sgka"))),
        std::env::temp_dir().join(format!("{}.toml", unique_name("sgkb"))),
    );
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let sg = Sg::new(server);
    sg.ok(&[
        "attach",
        &s.ifname,
        "-c",
        pa.to_str().unwrap(),
        "--groups",
        "g",
    ]);
    let mut seen_a = 0;
    let mut seen_b = 0;
    for round in 0..12 {
        let path = if round % 2 == 0 { &pb } else { &pa };
        let mut child = sg
            .cmd(&["apply", "-c", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(60_000) as u64));
        let _ = child.kill();
        let _ = child.wait();
        let http = client.tcp_connects(server4, 80);
        let https = client.tcp_connects(server4, 443);
        assert!(
            http != https,
            "round {round}: http={http} https={https}: a mix, or nothing"
        );
        if http { seen_a += 1 } else { seen_b += 1 }
    }
    println!("after kills: old-or-new policy A {seen_a} times, B {seen_b} times");
    // The next apply completes the job.
    sg.ok(&["apply", "-c", pb.to_str().unwrap()]);
    assert!(!client.tcp_connects(server4, 80));
    assert!(client.tcp_connects(server4, 443));
    let _ = std::fs::remove_file(&pa);
    let _ = std::fs::remove_file(&pb);
}

/// Entries of each policy map, from `sg status --json`.
fn map_entries(sg: &Sg) -> std::collections::BTreeMap<String, u64> {
    sg.json(&["status", "--json"])["policy_maps"]
        .as_array()
        .expect("policy_maps")
        .iter()
        .map(|m| {
            (
                m["map"].as_str().unwrap().to_string(),
                m["entries"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// v4 and v6 hosts and prefixes: every policy hash holds entries. `port`
/// starts every rule's port, so two values differ in every rule.
fn four_rules(port: char) -> String {
    format!(
        "[groups.g]\ningress = [\n\
         {{ proto = \"tcp\", ports = \"{port}0\", from = \"198.18.7.1\" }},\n\
         {{ proto = \"tcp\", ports = \"{port}1\", from = \"2001:db8:7::1\" }},\n\
         {{ proto = \"tcp\", ports = \"{port}2\", from = \"198.18.8.0/24\" }},\n\
         {{ proto = \"tcp\", ports = \"{port}3\", from = \"2001:db8:8::/64\" }},\n]\n"
    )
}

/// A pair with `sg` attached to the server under config `a`, and `b`,
/// which changes every rule of `a`.
fn attached_with_two_configs() -> (support::Pair, Sg, TempFile, TempFile) {
    let p = pair();
    let (a, b) = (
        TempFile::new("toml", &four_rules('8')),
        TempFile::new("toml", &four_rules('9')),
    );
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", a.path(), "--groups", "g"]);
    (p, sg, a, b)
}

#[test]
fn applies_leave_exactly_the_entries_of_the_policy_in_force() {
    let (_p, sg, a, b) = attached_with_two_configs();
    let first = map_entries(&sg);
    for map in [
        "PEER_HOSTS_V4",
        "PEER_HOSTS_V6",
        "PEER_NETS_V4",
        "PEER_NETS_V6",
    ] {
        assert!(first[map] > 0, "{map} holds nothing: {first:?}");
    }
    // Every rule changes each time: every entry is replaced, and the
    // removal after each commit must leave none of the old ones. Each
    // apply knows the keys from the record the one before left.
    for f in [&b, &a, &b, &a] {
        let trusted = keys::run_logged(&sg, &["apply", "-c", f.path()]);
        assert!(trusted, "the keys record is not used");
    }
    assert_eq!(map_entries(&sg), first);
    assert_eq!(keys::stray_ids(&sg), vec![]);
}

/// A way to spoil a keys record, and its name.
type Spoil = (&'static str, fn(&Sg));

/// Ways a keys record stops being one to trust.
fn untrusted_records() -> Vec<Spoil> {
    fn state_json(sg: &Sg) -> std::path::PathBuf {
        StateDir::new(&sg.state_dir).meta.join("state.json")
    }
    vec![
        ("a token the state does not name", |sg| {
            let text = std::fs::read_to_string(state_json(sg)).unwrap();
            let at = text.find("\"keys_token\":\"").expect("a token") + 14;
            let other = format!("{}{}", &text[..at], "0".repeat(32)) + &text[at + 32..];
            std::fs::write(state_json(sg), other).unwrap();
        }),
        ("a truncated record", |sg| {
            let bytes = std::fs::read(keys::record_path(sg)).unwrap();
            std::fs::write(keys::record_path(sg), &bytes[..bytes.len() / 2]).unwrap();
        }),
        ("a corrupt record", |sg| {
            let mut bytes = std::fs::read(keys::record_path(sg)).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x10;
            std::fs::write(keys::record_path(sg), bytes).unwrap();
        }),
        ("an empty record", |sg| {
            std::fs::write(keys::record_path(sg), b"").unwrap()
        }),
        ("no record", |sg| {
            std::fs::remove_file(keys::record_path(sg)).unwrap()
        }),
        ("a state another command saved", |sg| {
            let dir = StateDir::new(&sg.state_dir);
            dir.save(&dir.load_any_netns().unwrap().unwrap()).unwrap();
        }),
    ]
}

#[test]
fn a_record_not_to_trust_falls_back_to_the_kernel_which_removes_what_it_missed() {
    let (_p, sg, a, b) = attached_with_two_configs();
    sg.ok(&["apply", "-c", b.path()]);
    sg.ok(&["apply", "-c", a.path()]);
    let first = map_entries(&sg);
    let old = keys::old_unused_id(&sg);
    // A trusted record does not know an entry written behind sg's back:
    // it stays, under an ID never handed out again (harmless, but room).
    keys::plant_leftover(&sg, old);
    assert!(keys::run_logged(&sg, &["apply", "-c", b.path()]));
    assert!(
        keys::has_leftover(&sg, old),
        "the record was not what it read"
    );
    let mut next = [&a, &b].into_iter().cycle();
    for (what, spoil) in untrusted_records() {
        keys::plant_leftover(&sg, old);
        spoil(&sg);
        let f = next.next().unwrap();
        // No error, no warning: the kernel is read instead.
        let trusted = keys::run_logged(&sg, &["apply", "-c", f.path()]);
        assert!(!trusted, "{what}: trusted");
        assert!(!keys::has_leftover(&sg, old), "{what}: the leftover stays");
        assert_eq!(keys::stray_ids(&sg), vec![], "{what}");
        assert_eq!(map_entries(&sg), first, "{what}");
        // That apply left a record again, which the next one trusts.
        let f = next.next().unwrap();
        assert!(keys::run_logged(&sg, &["apply", "-c", f.path()]), "{what}");
        assert_eq!(keys::stray_ids(&sg), vec![], "{what}");
    }
    assert_eq!(map_entries(&sg), first);
}

/// A record is of the maps it was made of: pins recreated behind sg's
/// back (same definition, so every command still loads) are other maps,
/// whose keys the record does not know.
#[test]
fn a_record_of_maps_since_recreated_is_not_trusted() {
    let (_p, sg, a, b) = attached_with_two_configs();
    sg.ok(&["apply", "-c", b.path()]);
    assert!(keys::run_logged(&sg, &["apply", "-c", a.path()]));
    let pin = sg.state_dir.join("maps").join(sg_common::MAP_PEER_HOSTS_V6);
    std::fs::remove_file(&pin).unwrap();
    let key = std::mem::size_of::<sg_common::PeerKeyV6>() as u32;
    let no_prealloc = 1;
    support::pin_hash_map(&pin, key, 4, sg_common::PEER_HOST_CAPACITY, no_prealloc);
    assert!(
        !keys::run_logged(&sg, &["apply", "-c", b.path()]),
        "a record of other maps was trusted"
    );
}

#[test]
fn ids_a_failed_apply_reserved_are_never_handed_out_again() {
    let (_p, sg, _a, b) = attached_with_two_configs();
    let dir = StateDir::new(&sg.state_dir);
    let next_id = || dir.load_any_netns().unwrap().expect("a state").next_id;
    let before = next_id();
    // Write 1 is the reservation; write 2, the first map entry, fails: the
    // apply is undone, but entries with its IDs may have been in the maps.
    let out = sg
        .cmd(&["apply", "-c", b.path()])
        .env("SG_FAILPOINT", "map-write:2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the apply must fail: {stderr}");
    assert!(stderr.contains("injected failure"), "{stderr}");
    let reserved = next_id();
    assert!(
        reserved > before,
        "the failed apply's IDs are free again: next_id {before} -> {reserved}"
    );
    sg.ok(&["apply", "-c", b.path()]);
    assert!(next_id() > reserved, "the next apply took reserved IDs");
}

#[test]
fn the_hit_counters_of_removed_rules_go_and_the_others_stay() {
    let p = pair();
    let icmp = |from: &str| {
        format!(
            "[groups.g]\ningress = [\n\
             {{ proto = \"icmp\", from = \"{from}\" }},\n\
             {{ proto = \"tcp\", ports = \"80\", from = \"198.18.7.1\" }},\n]\n"
        )
    };
    let (a, b) = (
        TempFile::new("toml", &icmp(&p.c.v4.to_string())),
        TempFile::new("toml", &icmp("198.18.0.0/15")),
    );
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", a.path(), "--groups", "g"]);
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 2), 2);
    let dir = StateDir::new(&sg.state_dir);
    let slots = || -> Vec<u32> {
        let mut dp = sg::datapath::Datapath::open(&dir, 262_144).expect("open the pinned maps");
        dp.rule_hit_totals().unwrap().into_keys().collect()
    };
    let hit = slots();
    assert_eq!(hit.len(), 1, "the ICMP rule counted: {hit:?}");
    // The ICMP rule is replaced (another peer, another ID): its counter
    // goes; the new rule's counts from its first packet.
    sg.ok(&["apply", "-c", b.path()]);
    assert_eq!(
        slots(),
        Vec::<u32>::new(),
        "the removed rule's counter stays"
    );
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 2), 2);
    let now = slots();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now, hit, "a new rule, a new slot");
    // Changing another rule keeps the ICMP rule's counter.
    let b2 = TempFile::new("toml", &icmp("198.18.0.0/15").replace("\"80\"", "\"81\""));
    sg.ok(&["apply", "-c", b2.path()]);
    assert_eq!(slots(), now);
}
