//! Time-driven differential test (issue 4): short `[conntrack]` timeouts,
//! random packet sequences with real pauses, the kernel's verdict (through
//! BPF_PROG_TEST_RUN) against the reference evaluator fed the same clock.
//!
//! The kernel stamps packets with `bpf_ktime_get_coarse_ns`,
//! CLOCK_MONOTONIC_COARSE. The
//! evaluator advances its state at the instant just before the test run,
//! and a verdict is compared only if the evaluator gives the same answer
//! MARGIN before and MARGIN after the run: a packet that lands within
//! MARGIN of an expiry is ambiguous, and the sequence starts over.

use std::{net::IpAddr, time::Duration};

use sg::config::{self, Direction};
use sg_testkit::{
    packet::{ACK, FIN, RST, SYN},
    reference::{ConntrackModel, L4, PacketSpec, verdict},
    rng::Rng,
    testrun::{TestBed, Verdict},
};

const MARGIN: Duration = Duration::from_millis(30);

const CONFIG: &str = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "1000-1999", from = "198.18.0.0/16" },
  { proto = "udp", ports = "all", from = "198.18.0.0/16" },
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/16" },
  { proto = 47, from = "198.18.0.0/16" },
]
egress = [
  { proto = "udp", ports = "53", to = "198.18.0.0/16" },
  { proto = "tcp", ports = "443", to = "198.18.0.0/16" },
]

[conntrack]
tcp_syn = "1s"
tcp_established = "2s"
tcp_fin = "1s"
tcp_rst = "1s"
udp = "1s"
udp_stream = "2s"
icmp = "1s"
other = "1s"
"#;

/// The kernel's clock (`bpf_ktime_get_coarse_ns`), for the evaluator.
fn now() -> Duration {
    Duration::from_nanos(sg_common::monotonic_ns().expect("CLOCK_MONOTONIC"))
}

/// One random packet of one of a few flows between the local host and a
/// peer, in either direction.
fn packet(rng: &mut Rng) -> (Direction, PacketSpec) {
    let local: IpAddr = "198.19.0.1".parse().unwrap();
    let peer: IpAddr = "198.18.5.5".parse().unwrap();
    let inbound = rng.below(2) == 0;
    let flags = [SYN, SYN | ACK, ACK, FIN | ACK, RST, ACK][rng.below(6)];
    // Flows (seen from the peer): a connection to a local port, one from a
    // remote port, UDP both ways (a stream once answered twice), ping, GRE.
    // Either direction may carry any of them: replies and strays both occur.
    let l4 = match rng.below(6) {
        0 => L4::Tcp {
            sport: 40000,
            dport: 1500,
            flags,
        },
        1 => L4::Tcp {
            sport: 443,
            dport: 40001,
            flags,
        },
        2 => L4::Udp {
            sport: 5000,
            dport: 7000,
        },
        3 => L4::Udp {
            sport: 53,
            dport: 5001,
        },
        4 => L4::Icmp {
            icmp_type: if inbound { 8 } else { 0 },
            code: 0,
            id: 9,
        },
        _ => L4::Other { proto: 47 },
    };
    let (dir, src, dst, l4) = if inbound {
        (Direction::Ingress, peer, local, l4)
    } else {
        let swapped = match l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => L4::Tcp {
                sport: dport,
                dport: sport,
                flags,
            },
            L4::Udp { sport, dport } => L4::Udp {
                sport: dport,
                dport: sport,
            },
            other => other,
        };
        (Direction::Egress, local, peer, swapped)
    };
    (dir, PacketSpec::new(src, dst, l4))
}

#[test]
fn kernel_and_evaluator_agree_as_time_passes() {
    let seed = std::env::var("SG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now().as_nanos() as u64 | 1);
    println!("differential_time: seed {seed} (replay with SG_SEED={seed})");
    let mut rng = Rng(seed);
    let loaded = config::parse(CONFIG, "time.toml").unwrap();
    let cfg = loaded.config;
    let groups = vec!["g".to_string()];
    let mut bed = TestBed::new(&cfg, &["g"]).unwrap();
    let mut model = ConntrackModel::new(cfg.conntrack.clone());
    // Pauses around the timeouts (1 s, 2 s) and between them.
    let pauses_ms = [0, 0, 0, 100, 400, 700, 1100, 1600, 2300];
    let (mut compared, mut ambiguous) = (0u32, 0u32);
    let mut history: Vec<String> = Vec::new();
    let deadline = now() + Duration::from_secs(20);
    while now() < deadline {
        let pause = pauses_ms[rng.below(pauses_ms.len())];
        std::thread::sleep(Duration::from_millis(pause));
        // A burst after each pause: state builds up, then ages.
        for _ in 0..1 + rng.below(8) {
            let (dir, pkt) = packet(&mut rng);
            let t0 = now();
            let (mut lo, mut hi) = (model.clone(), model.clone());
            let early = verdict(
                &cfg,
                &groups,
                &[],
                &mut lo,
                &pkt,
                dir,
                t0.saturating_sub(MARGIN),
            );
            let kernel = match dir {
                Direction::Ingress => bed.ingress(&pkt.frame()).unwrap(),
                Direction::Egress => bed.egress(&pkt.frame()).unwrap(),
            };
            let t1 = now();
            let late = verdict(&cfg, &groups, &[], &mut hi, &pkt, dir, t1 + MARGIN);
            let want = verdict(&cfg, &groups, &[], &mut model, &pkt, dir, t0);
            history.push(format!(
                "+{pause}ms {dir:?} {pkt:?}: kernel {kernel:?}, evaluator {want:?}"
            ));
            if early != late {
                // Within MARGIN of an expiry: start again from empty tables.
                ambiguous += 1;
                model.clear();
                bed.flush_conntrack().unwrap();
                history.clear();
                continue;
            }
            assert_eq!(
                kernel == Verdict::Pass,
                want.allowed,
                "seed {seed}: mismatch; sequence since the last reset:\n{}",
                history.join("\n")
            );
            compared += 1;
        }
    }
    println!(
        "differential_time: {compared} verdicts agree over 20 s of short timeouts ({ambiguous} ambiguous near an expiry, skipped)"
    );
    assert!(compared > 80, "too few verdicts compared: {compared}");

    // And one expiry for certain: a SYN out to :443, whose SYN-ACK comes
    // back after the 1 s `tcp_syn` timeout, when only conntrack could have
    // let it in. Both must drop it, and both let a timely one in.
    for (pause, want) in [
        (Duration::ZERO, Verdict::Pass),
        (Duration::from_millis(1300), Verdict::Drop),
    ] {
        model.clear();
        bed.flush_conntrack().unwrap();
        let local: IpAddr = "198.19.0.1".parse().unwrap();
        let peer: IpAddr = "198.18.5.5".parse().unwrap();
        let syn = PacketSpec::new(
            local,
            peer,
            L4::Tcp {
                sport: 40002,
                dport: 443,
                flags: SYN,
            },
        );
        let syn_ack = PacketSpec::new(
            peer,
            local,
            L4::Tcp {
                sport: 443,
                dport: 40002,
                flags: SYN | ACK,
            },
        );
        assert_eq!(bed.egress(&syn.frame()).unwrap(), Verdict::Pass);
        assert!(
            verdict(
                &cfg,
                &groups,
                &[],
                &mut model,
                &syn,
                Direction::Egress,
                now()
            )
            .allowed
        );
        std::thread::sleep(pause);
        let kernel = bed.ingress(&syn_ack.frame()).unwrap();
        let evaluator = verdict(
            &cfg,
            &groups,
            &[],
            &mut model,
            &syn_ack,
            Direction::Ingress,
            now(),
        );
        assert_eq!(kernel, want, "kernel, after {pause:?}");
        assert_eq!(
            evaluator.allowed,
            want == Verdict::Pass,
            "evaluator, after {pause:?}"
        );
    }
}
