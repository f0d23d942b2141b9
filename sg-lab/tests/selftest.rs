//! Self-test of the test-network harness (sg-lab).
//! Needs root, ip, ping, socat, ss and nmap.

use sg_lab::{Lab, ScanKind, netns_list, parse_nmap_xml};
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn assert_gone(names: &[String]) {
    assert!(!names.is_empty());
    let now = netns_list();
    for n in names {
        assert!(
            !now.contains(n),
            "namespace {n} still exists after drop: {now:?}"
        );
    }
}

fn pid_alive(pid: u32) -> bool {
    // Zombies count as dead: look at the state in /proc/<pid>/stat.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

#[test]
fn two_hosts_ping_tcp_udp_nmap() {
    let mut lab = Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    let (la, lb) = lab.link(&a, &b, 1);
    assert_eq!(la.v4.to_string(), "198.18.1.1");
    assert_eq!(lb.v6.to_string(), "2001:db8:1::2");
    assert!(la.ifname.len() <= 15 && lb.ifname.len() <= 15);
    // Each end lives in its own namespace and nowhere else.
    assert!(a.run_ok(&["ip", "-o", "link"]).contains(&la.ifname));
    assert!(b.run_ok(&["ip", "-o", "link"]).contains(&lb.ifname));
    let root = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let root = String::from_utf8_lossy(&root.stdout);
    assert!(
        !root.contains(&la.ifname) && !root.contains(&lb.ifname),
        "veth end in root namespace"
    );

    let (b4, b6) = (IpAddr::V4(lb.v4), IpAddr::V6(lb.v6));
    assert_eq!(a.ping(b4, 3), 3);
    assert_eq!(a.ping(b6, 3), 3);
    assert_eq!(b.ping(IpAddr::V6(la.v6), 2), 2);

    let tcp = b.tcp_listen(8080);
    let udp = b.udp_echo(5353);
    for dst in [b4, b6] {
        assert!(a.tcp_connects(dst, 8080), "tcp to {dst}:8080");
        assert!(a.tcp_connects(dst, 8080), "second tcp to {dst}:8080 (fork)");
        assert!(!a.tcp_connects(dst, 8081), "tcp to closed {dst}:8081");
        assert!(a.udp_exchange(dst, 5353), "udp to {dst}:5353");
        assert!(a.udp_exchange(dst, 5353), "second udp to {dst}:5353");
        assert!(!a.udp_exchange(dst, 5354), "udp to closed {dst}:5354");

        let syn = a.nmap(dst, "8080,8081", ScanKind::Syn);
        assert_eq!(
            syn.get(&8080).map(String::as_str),
            Some("open"),
            "{dst} syn {syn:?}"
        );
        assert_eq!(
            syn.get(&8081).map(String::as_str),
            Some("closed"),
            "{dst} syn {syn:?}"
        );
        let ack = a.nmap(dst, "8080,8081", ScanKind::Ack);
        assert_eq!(
            ack.get(&8080).map(String::as_str),
            Some("unfiltered"),
            "{dst} ack {ack:?}"
        );
        assert_eq!(
            ack.get(&8081).map(String::as_str),
            Some("unfiltered"),
            "{dst} ack {ack:?}"
        );
        // A range: closed ports are folded into <extraports> and expanded.
        let range = a.nmap(dst, "8000-8100", ScanKind::Syn);
        assert_eq!(range.len(), 101, "{dst} {range:?}");
        assert_eq!(range[&8080], "open");
        assert!(
            range.iter().all(|(p, s)| *p == 8080 || s == "closed"),
            "{range:?}"
        );
        let u = a.nmap(dst, "5353,5354", ScanKind::Udp);
        assert_eq!(
            u.get(&5354).map(String::as_str),
            Some("closed"),
            "{dst} udp {u:?}"
        );
        assert!(
            matches!(
                u.get(&5353).map(String::as_str),
                Some("open" | "open|filtered")
            ),
            "{dst} udp {u:?}"
        );
    }
    assert!(
        tcp.log().is_empty() || !tcp.log().contains("E "),
        "socat errors: {}",
        tcp.log()
    );

    // Drop the Lab while the servers are still running: it kills them itself.
    let names = lab.namespaces().to_vec();
    assert_eq!(names.len(), 2);
    let pids = [tcp.pid(), udp.pid()];
    drop(lab);
    assert_gone(&names);
    drop(tcp);
    drop(udp);
    for p in pids {
        assert!(!pid_alive(p), "server {p} survived");
    }
}

/// Waits up to 5 s for `child` to exit; panics if it is still running.
fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {} still running",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cleanup_after_panic() {
    type Seen = (Vec<String>, Vec<u32>, Vec<std::process::Child>);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen2 = seen.clone();
    let r = catch_unwind(AssertUnwindSafe(move || {
        let mut lab = Lab::new();
        let a = lab.host("x");
        let b = lab.host("y");
        let (_, lb) = lab.link(&a, &b, 7);
        let srv = b.tcp_listen(9000);
        assert!(a.tcp_connects(IpAddr::V4(lb.v4), 9000));
        assert!(netns_list().contains(&b.ns));
        let mut s = seen2.lock().unwrap();
        s.0 = lab.namespaces().to_vec();
        s.1 = vec![srv.pid()];
        // Stray processes started without Background, racing with the
        // cleanup: the Lab must kill them (or they fail to enter the
        // namespace), never leave them running.
        for _ in 0..5 {
            s.2.push(b.cmd("sleep").arg("300").spawn().unwrap());
        }
        drop(s);
        panic!("deliberate panic in the middle of a test");
    }));
    assert!(r.is_err());
    let mut s = seen.lock().unwrap();
    assert_gone(&s.0);
    for p in &s.1 {
        assert!(!pid_alive(*p), "process {p} survived the panic");
    }
    for c in s.2.iter_mut() {
        let st = wait_exit(c);
        assert!(!st.success(), "stray sleep ran to completion: {st}");
    }
}

#[test]
fn router_two_hops() {
    let mut lab = Lab::new();
    let a = lab.host("a");
    let r = lab.router("r");
    let b = lab.host("b");
    let (la, ra) = lab.link(&a, &r, 10);
    let (rb, lb) = lab.link(&r, &b, 11);
    // link(a, r, 10): a is 198.18.10.1, r is 198.18.10.2.
    a.add_route(&sg_lab::subnet_v4(11), IpAddr::V4(ra.v4));
    a.add_route(&sg_lab::subnet_v6(11), IpAddr::V6(ra.v6));
    b.add_route(&sg_lab::subnet_v4(10), IpAddr::V4(rb.v4));
    b.add_route(&sg_lab::subnet_v6(10), IpAddr::V6(rb.v6));
    assert_eq!(a.ping(IpAddr::V4(lb.v4), 2), 2);
    assert_eq!(a.ping(IpAddr::V6(lb.v6), 2), 2);
    let _srv = b.tcp_listen(22);
    assert!(a.tcp_connects(IpAddr::V4(lb.v4), 22));
    assert!(a.tcp_connects(IpAddr::V6(lb.v6), 22));
    assert!(!b.tcp_connects(IpAddr::V4(la.v4), 23));
}

#[test]
fn labs_in_parallel_are_independent() {
    // Same host names and same subnet in every lab, all at once.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let mut lab = Lab::new();
                let a = lab.host("a");
                let b = lab.host("b");
                let (_, lb) = lab.link(&a, &b, 1);
                let _srv = b.tcp_listen(7000);
                assert_eq!(a.ping(IpAddr::V4(lb.v4), 2), 2, "lab {i}");
                assert!(a.tcp_connects(IpAddr::V6(lb.v6), 7000), "lab {i}");
                std::thread::sleep(Duration::from_millis(200));
                lab.namespaces().to_vec()
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap());
    }
    let uniq: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(uniq.len(), 8);
    assert_gone(&all);
}

#[test]
fn refuses_addresses_outside_test_ranges() {
    let mut lab = Lab::new();
    let a = lab.host("a");
    // These panic before anything is sent.
    let outside: IpAddr = "203.0.113.9".parse().unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| a.ping(outside, 1))).is_err());
    assert!(catch_unwind(AssertUnwindSafe(|| a.tcp_connects(outside, 80))).is_err());
    assert!(
        catch_unwind(AssertUnwindSafe(
            || a.udp_exchange("2001:db9::1".parse().unwrap(), 53)
        ))
        .is_err()
    );
    assert!(catch_unwind(AssertUnwindSafe(|| a.nmap(outside, "80", ScanKind::Syn))).is_err());
    assert!(
        catch_unwind(AssertUnwindSafe(
            || a.add_route("0.0.0.0/0", "198.18.0.1".parse().unwrap())
        ))
        .is_err()
    );
    assert!(sg_lab::is_test_addr("198.19.255.255".parse().unwrap()));
    assert!(!sg_lab::is_test_addr("198.20.0.1".parse().unwrap()));
}

#[test]
fn nmap_xml_parsing() {
    let xml = r#"<nmaprun><host><ports><extraports state="closed" count="3">
<extrareasons reason="reset" count="3" proto="tcp" ports="1-2,5"/>
</extraports>
<port protocol="tcp" portid="8080"><state state="open" reason="syn-ack" reason_ttl="64"/></port>
<port protocol="udp" portid="53"><state state="open|filtered" reason="no-response"/></port>
</ports></host></nmaprun>"#;
    let m = parse_nmap_xml(xml, "tcp");
    let v: Vec<_> = m.iter().map(|(p, s)| format!("{p}={s}")).collect();
    assert_eq!(v, ["1=closed", "2=closed", "5=closed", "8080=open"]);
    let u = parse_nmap_xml(xml, "udp");
    assert_eq!(u.get(&53).map(String::as_str), Some("open|filtered"));
}

#[test]
fn unique_names_differ() {
    let a = sg_lab::unique_name("state");
    let b = sg_lab::unique_name("state");
    assert_ne!(a, b);
    assert!(a.starts_with("state-"));
}

#[test]
fn servers_survive_idle_time() {
    // socat runs with -T 3 for UDP (so per-datagram children exit): the
    // listening parent must not.
    let mut lab = Lab::new();
    let a = lab.host("a");
    let b = lab.host("b");
    let (_, lb) = lab.link(&a, &b, 2);
    let mut udp = b.udp_echo(4000);
    let mut tcp = b.tcp_listen(4001);
    assert!(a.udp_exchange(IpAddr::V4(lb.v4), 4000));
    std::thread::sleep(Duration::from_millis(3500));
    assert!(udp.try_wait().is_none(), "udp echo exited: {}", udp.log());
    assert!(tcp.try_wait().is_none(), "tcp echo exited: {}", tcp.log());
    assert!(a.udp_exchange(IpAddr::V6(lb.v6), 4000));
    assert!(a.tcp_connects(IpAddr::V4(lb.v4), 4001));
    // stop(): SIGTERM (socat exits on it), then the exit status.
    let st = tcp.stop(Duration::from_secs(2));
    assert_eq!(st.signal(), None, "socat needed SIGKILL: {st}");
    assert_eq!(tcp.try_wait(), Some(st));
    assert!(!a.tcp_connects(IpAddr::V4(lb.v4), 4001));
}
