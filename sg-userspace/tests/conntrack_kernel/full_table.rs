//! A full table, and the sweep timer that empties it.

use super::*;

#[test]
fn a_full_table_refuses_new_flows_keeps_old_ones_and_recovers_from_expiry() {
    let toml = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "1000-2000", from = "anywhere" },
]
[conntrack]
max_entries = 8
udp = "3s"
"#;
    let mut b = bed(toml);
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    for port in 1000..1007 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, port)).unwrap(),
            Pass
        );
    }
    assert_eq!(b.conntrack_entries().unwrap().len(), 8);
    // Full: new flows are refused and counted.
    let flood: Vec<Verdict> = (1007..1020)
        .map(|port| b.ingress(&packet::udp(remote, local, 5000, port)).unwrap())
        .collect();
    assert!(flood.iter().all(|v| *v == Drop), "{flood:?}");
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40001, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(drops(&mut b, Reason::ConntrackFull), 14);
    // Tracked flows go on, both ways.
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 22, 40000, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::udp(local, remote, 1003, 5000)).unwrap(),
        Pass
    );
    // Once the UDP entries expire, the sweep timer deletes them with no
    // packet and nothing in userspace. The established connection is never
    // evicted, at any point of the wait.
    let remaining = wait_for_sweep(&mut b, 1, Duration::from_secs(10));
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40001, 22, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 22, ACK))
            .unwrap(),
        Pass
    );
    let entries = b.conntrack_entries().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

/// Polls the table until at most `left` entries remain (the sweep timer's
/// work) or `deadline` passes; asserts on every poll that the established
/// connection on port 40000 is still there. Returns the last table seen.
fn wait_for_sweep(b: &mut TestBed, left: usize, deadline: Duration) -> Vec<(CtKey, CtValue)> {
    let start = std::time::Instant::now();
    loop {
        let entries = b.conntrack_entries().unwrap();
        assert!(
            entries
                .iter()
                .any(|(k, v)| ct_state_name(v.state) == "established"
                    && k.port_a.max(k.port_b) == 40000),
            "the sweep evicted a live connection: {entries:?}"
        );
        if entries.len() <= left || start.elapsed() > deadline {
            return entries;
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_packet_path_never_sweeps_and_the_timer_outlives_its_loader() {
    // SPEC 1.13: with the sweep timer not started, a table full of expired
    // entries stays full: a packet refuses the new flow and walks nothing.
    let toml = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "1000-2000", from = "anywhere" },
]
[conntrack]
max_entries = 8
udp = "1s"
"#;
    let mut b = TestBed::without_sweeper(&cfg(toml), &["g"]).unwrap();
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    for port in 1000..1007 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, port)).unwrap(),
            Pass
        );
    }
    let full = b.conntrack_entries().unwrap();
    assert_eq!(full.len(), 8);
    // Wait for the UDP entries to expire (their timeout, not a speed test).
    sleep(Duration::from_millis(1500));
    let now = now_ns().unwrap();
    assert_eq!(
        full.iter().filter(|(_, v)| v.expires_ns < now).count(),
        7,
        "{full:?}"
    );
    for port in 1007..1010 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, port)).unwrap(),
            Drop
        );
    }
    assert_eq!(drops(&mut b, Reason::ConntrackFull), 3);
    let mut after = b.conntrack_entries().unwrap();
    let mut before = full.clone();
    after.sort_by_key(|(k, _)| (k.port_a, k.port_b, k.proto));
    before.sort_by_key(|(k, _)| (k.port_a, k.port_b, k.proto));
    let keys = |t: &[(CtKey, CtValue)]| t.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(keys(&after), keys(&before), "a packet changed the table");

    // Started, then its loader gone (as `sg attach` exits): the timer keeps
    // its program and sweeps the expired entries; the live one stays.
    b.dp.start_sweeper().unwrap();
    b.reopen_datapath().unwrap();
    let remaining = wait_for_sweep(&mut b, 1, Duration::from_secs(10));
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(
        b.ingress(&packet::udp(remote, local, 5000, 1007)).unwrap(),
        Pass
    );
}

#[test]
fn removing_the_pins_stops_the_timer_and_frees_its_program_and_maps() {
    // The timer holds its program, which holds CONNTRACK: once the pins go
    // (`sg detach`), the kernel must cancel it, or the table leaks.
    let b = bed("[groups.g]\ningress = []\n");
    let ids: Vec<u32> = ["SWEEPER", "CONNTRACK"]
        .iter()
        .map(|m| {
            aya::maps::MapInfo::from_pin(b.maps_dir().join(m))
                .unwrap()
                .id()
        })
        .collect();
    assert!(
        ids.iter()
            .all(|id| aya::maps::MapInfo::from_id(*id).is_ok())
    );
    drop(b);
    let start = std::time::Instant::now();
    while ids
        .iter()
        .any(|id| aya::maps::MapInfo::from_id(*id).is_ok())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "maps {ids:?} outlived their pins: the sweep timer still holds them"
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn userspace_gc_removes_expired_entries_only() {
    let toml = "[groups.g]\negress = []\ningress = [\n { proto = \"tcp\", ports = \"22\", from = \"anywhere\" },\n { proto = \"udp\", ports = \"53\", from = \"anywhere\" },\n]\n[conntrack]\nudp = \"1s\"\n";
    // Without the sweep timer, which would race the userspace sweep.
    let mut b = TestBed::without_sweeper(&cfg(toml), &["g"]).unwrap();
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    for sport in 5000..5010 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, sport, 53)).unwrap(),
            Pass
        );
    }
    let sweep = sg::conntrack::sweep_expired(&mut b.dp).unwrap();
    assert_eq!((sweep.scanned, sweep.removed), (11, 0));
    sleep(Duration::from_millis(1200));
    let sweep = sg::conntrack::sweep_expired(&mut b.dp).unwrap();
    assert_eq!((sweep.scanned, sweep.removed), (11, 10));
    let entries = b.conntrack_entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(ct_state_name(entries[0].1.state), "established");
}
