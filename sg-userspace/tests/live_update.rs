//! Live updates under traffic (SPEC 6, issue 5): hundreds of applies lose no
//! packet of a still-allowed flow, and an apply killed at any moment leaves
//! the old policy or the new one, never a mix.

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

use sg_lab::{Host, unique_name};
use sg_testkit::rng::Rng;
use support::{Sg, pair};

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
