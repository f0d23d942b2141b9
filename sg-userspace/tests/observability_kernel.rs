//! Counters and the event rate limit, judged in the kernel through
//! BPF_PROG_TEST_RUN: exact drop counts, rule hits for new flows and for the
//! packets of the connections they open, and the per-CPU token bucket in
//! front of the ring buffer. Needs root and BPF; never skipped.

use std::{net::IpAddr, time::Instant};

use sg::{
    compile::{Attachment, compile},
    config,
};
use sg_common::{DIR_INGRESS, Reason};
use sg_testkit::{
    packet,
    testrun::{TestBed, Verdict::Pass, XDP_DROP},
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(per_second: u32) -> config::Config {
    let toml = format!(
        r#"
[groups.app]
ingress = [
  {{ proto = "tcp", ports = "80", from = "anywhere", description = "web" }},
  {{ proto = "udp", ports = "5000", from = "198.18.0.0/15", description = "app" }},
]
egress = []

[events]
per_second = {per_second}
"#
    );
    config::parse(&toml, "test.toml").expect("valid").config
}

/// The slot (RuleRef) a fresh TestBed gives the rule described
/// `description`: slots follow compile order until an apply moves rules.
fn slot_of(config: &config::Config, description: &str) -> u32 {
    let attachment = Attachment {
        iface: "lo".into(),
        groups: vec!["app".into()],
        addrs: Vec::new(),
    };
    let compiled = compile(config, &[attachment], 1).unwrap();
    compiled
        .rules
        .iter()
        .position(|r| r.description.as_deref() == Some(description))
        .expect("rule exists") as u32
}

fn no_rule_drops(b: &mut TestBed) -> u64 {
    let lo = sg::ifaces::index("lo").unwrap();
    b.dp.drop_totals()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| {
            k.ifindex == lo && k.direction == DIR_INGRESS && k.reason == Reason::NoRule as u8
        })
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn rule_hits_count_new_flows_and_their_tracked_packets() {
    let config = cfg(1000);
    let mut b = TestBed::new(&config, &["app"]).unwrap();
    let peer = ip("198.18.7.7");
    let local = ip("198.18.0.1");
    let request = packet::udp(peer, local, 40000, 5000);
    let reply = packet::udp(local, peer, 5000, 40000);
    assert_eq!(b.ingress(&request).unwrap(), Pass);
    // The reply leaves through the connection: egress has no rules at all.
    assert_eq!(b.egress(&reply).unwrap(), Pass);
    let (ret, _) = b.run_xdp(&request, 100).unwrap();
    assert_eq!(ret, sg_testkit::testrun::XDP_PASS);
    let hits = b.dp.rule_hit_totals().unwrap();
    let app = slot_of(&config, "app");
    assert_eq!(hits.len(), 1, "only the app rule was hit: {hits:?}");
    let h = hits[&app];
    assert_eq!(h.packets, 102);
    assert_eq!(
        h.bytes,
        101 * request.len() as u64 + reply.len() as u64,
        "{h:?}"
    );
    // Denied packets hit no rule.
    assert_eq!(
        b.ingress(&packet::udp(peer, local, 40000, 5001)).unwrap(),
        sg_testkit::testrun::Verdict::Drop
    );
    assert_eq!(b.dp.rule_hit_totals().unwrap()[&app].packets, 102);
}

#[test]
fn drops_are_exact_and_events_pass_a_token_bucket() {
    const RATE: u32 = 10;
    const N: u32 = 5000;
    let mut b = TestBed::new(&cfg(RATE), &["app"]).unwrap();
    let denied = packet::tcp(ip("198.18.7.7"), ip("198.18.0.1"), 1234, 9, packet::SYN);
    let start = Instant::now();
    let (ret, _) = b.run_xdp(&denied, N).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(ret, XDP_DROP);
    assert_eq!(no_rule_drops(&mut b), N as u64, "exact drop counter");
    let (suppressed, lost) = b.dp.event_stats().unwrap();
    let mut ring = b.dp.take_events().unwrap();
    let mut events = 0u64;
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<sg_common::DropEvent>());
        events += 1;
    }
    assert_eq!(lost, 0);
    assert_eq!(events + suppressed, N as u64, "{events} + {suppressed}");
    // A test run stays on one CPU: one bucket, full (RATE) at the start,
    // refilled at RATE per second.
    assert!(events >= RATE as u64, "the burst passes: {events}");
    let bound = RATE as f64 * (1.0 + elapsed) + 1.0;
    assert!(
        events as f64 <= bound,
        "{events} events in {elapsed}s at {RATE}/s"
    );
}

#[test]
fn a_rate_of_zero_turns_events_off_but_not_counters() {
    let mut b = TestBed::new(&cfg(0), &["app"]).unwrap();
    let denied = packet::udp(ip("198.19.9.9"), ip("198.18.0.1"), 1, 5001);
    let (ret, _) = b.run_xdp(&denied, 300).unwrap();
    assert_eq!(ret, XDP_DROP);
    assert_eq!(no_rule_drops(&mut b), 300);
    assert_eq!(b.dp.event_stats().unwrap(), (300, 0));
    let mut ring = b.dp.take_events().unwrap();
    assert!(ring.next().is_none(), "no event at rate 0");
}

/// The bed installs through `sg apply`'s pipeline: a rule keeps its slot,
/// and so its hit counter, when an apply puts another rule before it; the
/// new rule gets a slot never used before.
#[test]
fn a_rule_keeps_its_slot_across_an_apply_that_moves_it() {
    let before = cfg(1000);
    let mut b = TestBed::new(&before, &["app"]).unwrap();
    let web = slot_of(&before, "web");
    let peer = ip("198.18.7.7");
    let local = ip("198.18.0.1");
    let syn = |sport| packet::tcp(peer, local, sport, 80, packet::SYN);
    assert_eq!(b.ingress(&syn(40000)).unwrap(), Pass);
    let toml = r#"
[groups.app]
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere", description = "ssh" },
  { proto = "tcp", ports = "80", from = "anywhere", description = "web" },
  { proto = "udp", ports = "5000", from = "198.18.0.0/15", description = "app" },
]
"#;
    let after = config::parse(toml, "test.toml").expect("valid").config;
    assert_ne!(
        slot_of(&after, "web"),
        web,
        "the rule moved in compile order"
    );
    b.apply(&after, &["app"]).unwrap();
    assert_eq!(b.ingress(&syn(40001)).unwrap(), Pass);
    assert_eq!(
        b.ingress(&packet::tcp(peer, local, 40002, 22, packet::SYN))
            .unwrap(),
        Pass
    );
    let hits = b.dp.rule_hit_totals().unwrap();
    assert_eq!(
        hits[&web].packets, 2,
        "both SYNs to 80 count as web: {hits:?}"
    );
    // Slots 0 and 1 are web and app; ssh is new.
    assert_eq!(hits[&2].packets, 1, "ssh has a fresh slot: {hits:?}");
    assert_eq!(hits.len(), 2, "{hits:?}");
}
