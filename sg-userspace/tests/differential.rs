//! Differential test: random configs and random packet sequences, every
//! verdict of the real XDP (ingress) and TC (egress) programs, run through
//! BPF_PROG_TEST_RUN, compared with the reference evaluator
//! (`sg_testkit::reference`, written straight from SPEC 1 and 2).
//!
//! - `SG_SEED=N` replays a run; otherwise the seed is random. It is printed.
//! - `SG_VERDICTS=N` sets how many verdicts a run compares (default 500,000).
//! - `SG_FUZZ_MINUTES=N` (`cargo xtask fuzz --minutes N`) keeps going until
//!   N minutes are up instead.
//!
//! A quarter of the cases run on a small table (`max_entries` 4-16, a test
//! bed of its own), so new flows meet `conntrack_full` while tracked ones go
//! on; 30% re-apply a second config mid-sequence (often the first with
//! rules taken away), with or without `revoke_established`. 45% of the
//! configs have NACLs (SPEC 2) on some of their interfaces: overlapping
//! CIDRs of both families, deny and allow in any order, port ranges, ICMP,
//! a direction left out; re-applies drop their rules, flip actions and move
//! them between interfaces.
//!
//! A mismatch prints the seed, then a shrunk config and packet sequence
//! that still disagree, then fails. Drop reasons are compared too: after
//! every sequence, the kernel's per-reason drop counters must have risen by
//! exactly what the evaluator predicted.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sg::config::{self, Config, Direction};
use sg_common::{DIR_EGRESS, DIR_INGRESS, Reason};
use sg_testkit::{
    packet::{self, ACK, Ext, FIN, PSH, RST, SYN, TcpSeg},
    reference::{self, ConntrackModel, Frag, Framing, L4, Outcome, PacketSpec},
    rng::Rng,
    testrun::{BedIface, TestBed, Verdict},
};

const URG: u8 = 0x20;
const ECE: u8 = 0x40;

// A test crate root finds modules beside it, so the paths are spelled out.
#[path = "differential/configs.rs"]
mod configs;
#[path = "differential/sequences.rs"]
mod sequences;

use configs::*;
use sequences::*;

// ---------------------------------------------------------------------------
// Running a case on the kernel and on the evaluator.
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Mismatch {
    what: String,
}

const REASONS: [Reason; 4] = [
    Reason::NoRule,
    Reason::Fragment,
    Reason::Malformed,
    Reason::TcpOutOfWindow,
];

/// Table sizes of the small-table cases. The table's size is fixed when
/// the maps are created, so each size has a test bed of its own.
const TABLE_SIZES: &[u32] = &[4, 8, 16];

/// One test bed per table size, loaded on first use; and how many drops of
/// each reason the cases that agreed predicted.
#[derive(Default)]
struct Beds {
    beds: BTreeMap<u32, TestBed>,
    drops: BTreeMap<u8, u64>,
}

impl Beds {
    fn for_case(&mut self, case: &Case) -> &mut TestBed {
        // Into the test's own network namespace before a bed looks up `lo`.
        test_ifaces();
        let size = case.configs[0]
            .max_entries
            .unwrap_or(sg_common::DEFAULT_CT_CAPACITY);
        self.beds.entry(size).or_insert_with(|| {
            let toml = format!("[groups.g0]\ningress = []\n[conntrack]\nmax_entries = {size}\n");
            let placeholder = config::parse(&toml, "x.toml").unwrap().config;
            TestBed::new(&placeholder, &["g0"]).expect("programs load")
        })
    }
}

/// Drop counters by (interface, direction, reason).
fn drop_counts(bed: &mut TestBed, ifindexes: &[u32]) -> BTreeMap<(usize, u8, u8), u64> {
    let mut out = BTreeMap::new();
    for (i, &ifindex) in ifindexes.iter().enumerate() {
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for r in Reason::ALL {
                let n = bed.drop_count_on(ifindex, dir, r).expect("drop counters");
                out.insert((i, dir, r as u8), n);
            }
        }
    }
    out
}

/// The test's interfaces: `lo`, then veth ends. Made once, in a network
/// namespace of the test thread's own, which goes when the thread does.
fn test_ifaces() -> Vec<(String, u32)> {
    use std::sync::OnceLock;
    static MADE: OnceLock<Vec<(String, u32)>> = OnceLock::new();
    MADE.get_or_init(|| {
        // SAFETY: unshare of this thread's network namespace only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let mut out = vec![("lo".to_string(), 1)];
        for i in 1..MAX_IFACES {
            let name = format!("sgdiff{i}");
            let peer = format!("sgdiff{i}p");
            // Indexes 1 + 256 i: every interface shares lo's row of the
            // drop counters by index (`sg_common::DropRow`), so the exact
            // counts checked below come from the rows and from the hash
            // behind them.
            let index = (1 + 256 * i).to_string();
            let st = std::process::Command::new("ip")
                .args(["link", "add", &name, "index", &index, "type", "veth"])
                .args(["peer", "name", &peer])
                .status()
                .expect("ip runs");
            assert!(st.success(), "ip link add {name}");
            let index = nix::net::if_::if_nametoindex(name.as_str()).expect("ifindex");
            out.push((name, index));
        }
        out
    })
    .clone()
}

fn bed_ifaces(case: &Case, c: &GenConfig) -> Vec<BedIface> {
    let ifaces = test_ifaces();
    std::iter::once(&c.attached)
        .chain(&c.others)
        .zip(&case.l3)
        .enumerate()
        .map(|(i, (groups, &l3))| BedIface {
            name: ifaces[i].0.clone(),
            groups: groups.clone(),
            l3,
        })
        .collect()
}

/// Runs `case`; returns how many verdicts were compared, or the first
/// disagreement. `None` when a config does not parse (shrinking may make
/// one invalid).
fn run_case(beds: &mut Beds, case: &Case) -> Option<Result<(usize, usize), Mismatch>> {
    let bed = beds.for_case(case);
    let configs: Vec<Config> = case
        .configs
        .iter()
        .map(GenConfig::parse)
        .collect::<Option<_>>()?;
    let mut current = 0;
    let ifindexes: Vec<u32> = test_ifaces()[..case.l3.len()]
        .iter()
        .map(|(_, i)| *i)
        .collect();
    bed.apply_ifaces(&configs[0], &bed_ifaces(case, &case.configs[0]))
        .ok()?;
    bed.flush_conntrack().expect("flush conntrack");
    bed.flush_fragments().expect("flush fragments");
    let before = drop_counts(bed, &ifindexes);
    // One table, keyed by interface as the kernel's, and sized for all.
    let mut model = ConntrackModel::new(configs[0].conntrack.clone());
    let mut expected: BTreeMap<(usize, u8, u8), u64> = BTreeMap::new();
    let mut now = Duration::ZERO;
    let mut verdicts = 0;
    let mut passed = 0;
    for (i, step) in case.steps.iter().enumerate() {
        let (dir, pkt) = match step {
            Step::Switch => {
                if case.configs.len() > 1 {
                    current = 1;
                    bed.apply_ifaces(&configs[1], &bed_ifaces(case, &case.configs[1]))
                        .ok()?;
                }
                continue;
            }
            Step::Packet(dir, pkt) => (*dir, pkt),
        };
        now += Duration::from_millis(1);
        let frame = pkt.frame();
        let ifindex = ifindexes[pkt.iface];
        let kernel = match dir {
            Direction::Ingress => bed.ingress_on(ifindex, &frame),
            Direction::Egress => bed.egress_on(ifindex, &frame),
        }
        .unwrap_or_else(|e| {
            panic!(
                "test run of {dir} {pkt:?} ({} bytes) on {ifindex}: {e:#}",
                frame.len()
            )
        });
        let c = &case.configs[current];
        let groups = if pkt.iface == 0 {
            &c.attached
        } else {
            &c.others[pkt.iface - 1]
        };
        let nacl = c.iface_nacls[pkt.iface].map(|n| c.nacls[n].name.as_str());
        let want: Outcome = reference::verdict_with_nacl(
            &configs[current],
            groups,
            nacl,
            &[],
            &mut model,
            pkt,
            dir,
            now,
        );
        verdicts += 1;
        passed += usize::from(want.allowed);
        if (kernel == Verdict::Pass) != want.allowed {
            return Some(Err(Mismatch {
                what: format!("step {i}: {dir} {pkt:?}: kernel {kernel:?}, evaluator {want:?}"),
            }));
        }
        if let Some(r) = want.reason {
            *expected
                .entry((pkt.iface, dir.code(), r as u8))
                .or_default() += 1;
        }
    }
    let after = drop_counts(bed, &ifindexes);
    for (key, value) in &after {
        let got = value - before[key];
        let want = expected.get(key).copied().unwrap_or(0);
        if got != want {
            let reason = Reason::from_code(key.2).map_or("?", Reason::name);
            return Some(Err(Mismatch {
                what: format!(
                    "interface {} direction {} reason {reason}: kernel counted {got} drops, \
                     evaluator {want}",
                    key.0,
                    if key.1 == DIR_INGRESS {
                        "ingress"
                    } else {
                        "egress"
                    }
                ),
            }));
        }
    }
    let _ = REASONS;
    for ((_, _, code), n) in expected {
        *beds.drops.entry(code).or_default() += n;
    }
    Some(Ok((verdicts, passed)))
}

fn fails(beds: &mut Beds, case: &Case) -> bool {
    matches!(run_case(beds, case), Some(Err(_)))
}

/// Greedy shrinking: drop chunks of steps, then groups, rules, peers and
/// members, while the case still fails.
fn shrink(bed: &mut Beds, mut case: Case) -> Case {
    let mut budget = 3000;
    let mut progress = true;
    while progress && budget > 0 {
        progress = false;
        // Steps, in halving chunks.
        let mut chunk = case.steps.len().max(1);
        while chunk >= 1 && budget > 0 {
            let mut start = 0;
            while start < case.steps.len() && budget > 0 {
                let mut c = case.clone();
                let end = (start + chunk).min(c.steps.len());
                c.steps.drain(start..end);
                budget -= 1;
                if fails(bed, &c) {
                    case = c;
                    progress = true;
                } else {
                    start += chunk;
                }
            }
            chunk /= 2;
        }
        // Config parts.
        let mut candidates: Vec<Case> = Vec::new();
        if case.configs.len() > 1 {
            let mut c = case.clone();
            c.configs.pop();
            c.steps.retain(|s| !matches!(s, Step::Switch));
            candidates.push(c);
        }
        if case.configs.len() > 1 {
            // Start with the second config, and never switch.
            let mut c = case.clone();
            c.configs.remove(0);
            c.steps.retain(|s| !matches!(s, Step::Switch));
            candidates.push(c);
        }
        // Plainer packets: no tags, options or extension headers; whole
        // rather than a first fragment.
        for (i, step) in case.steps.iter().enumerate() {
            if let Step::Packet(dir, pkt) = step {
                let plain = Framing {
                    l3: pkt.framing.l3,
                    ..Framing::default()
                };
                if pkt.framing != plain {
                    let mut c = case.clone();
                    let mut p = pkt.clone();
                    p.framing = plain;
                    c.steps[i] = Step::Packet(*dir, p);
                    candidates.push(c);
                }
                if pkt.quote.is_some() || pkt.cut.is_some() {
                    let mut c = case.clone();
                    let mut p = pkt.clone();
                    (p.quote, p.cut) = (None, None);
                    c.steps[i] = Step::Packet(*dir, p);
                    candidates.push(c);
                }
                if matches!(pkt.frag, Frag::First { .. }) {
                    let mut c = case.clone();
                    let mut p = pkt.clone();
                    p.frag = Frag::Whole;
                    c.steps[i] = Step::Packet(*dir, p);
                    candidates.push(c);
                }
            }
        }
        for ci in 0..case.configs.len() {
            let cfg = &case.configs[ci];
            if cfg.revoke {
                let mut c = case.clone();
                c.configs[ci].revoke = false;
                candidates.push(c);
            }
            for gi in 0..cfg.groups.len() {
                let mut c = case.clone();
                let name = c.configs[ci].groups.remove(gi).name;
                c.configs[ci].attached.retain(|a| *a != name);
                for o in &mut c.configs[ci].others {
                    o.retain(|a| *a != name);
                }
                if !c.configs[ci].attached.is_empty() {
                    candidates.push(c);
                }
                let g = &cfg.groups[gi];
                for mi in 0..g.members.len() {
                    let mut c = case.clone();
                    c.configs[ci].groups[gi].members.remove(mi);
                    candidates.push(c);
                }
                if g.egress.as_ref().is_some_and(|e| !e.is_empty()) {
                    let mut c = case.clone();
                    c.configs[ci].groups[gi].egress = Some(Vec::new());
                    candidates.push(c);
                }
                for egress in [false, true] {
                    let rules = if egress {
                        g.egress.clone().unwrap_or_default()
                    } else {
                        g.ingress.clone()
                    };
                    for ri in 0..rules.len() {
                        let edit = |f: &mut dyn FnMut(&mut Vec<GenRule>)| {
                            let mut c = case.clone();
                            let grp = &mut c.configs[ci].groups[gi];
                            let list = if egress {
                                grp.egress.as_mut().unwrap()
                            } else {
                                &mut grp.ingress
                            };
                            f(list);
                            c
                        };
                        candidates.push(edit(&mut |l| {
                            l.remove(ri);
                        }));
                        for pi in 0..rules[ri].peers.len() {
                            if rules[ri].peers.len() > 1 {
                                candidates.push(edit(&mut |l| {
                                    l[ri].peers.remove(pi);
                                }));
                            }
                        }
                    }
                }
            }
            // NACLs: off an interface, or one rule fewer.
            for ii in 0..cfg.iface_nacls.len() {
                if cfg.iface_nacls[ii].is_some() {
                    let mut c = case.clone();
                    c.configs[ci].iface_nacls[ii] = None;
                    candidates.push(c);
                }
            }
            for ni in 0..cfg.nacls.len() {
                for egress in [false, true] {
                    let n = &cfg.nacls[ni];
                    let len = if egress { &n.egress } else { &n.ingress }
                        .as_ref()
                        .map_or(0, Vec::len);
                    for ri in 0..len {
                        let mut c = case.clone();
                        let n = &mut c.configs[ci].nacls[ni];
                        let list = if egress {
                            &mut n.egress
                        } else {
                            &mut n.ingress
                        };
                        list.as_mut().unwrap().remove(ri);
                        candidates.push(c);
                    }
                }
            }
            if cfg.attached.len() > 1 {
                for ai in 0..cfg.attached.len() {
                    let mut c = case.clone();
                    c.configs[ci].attached.remove(ai);
                    candidates.push(c);
                }
            }
        }
        for c in candidates {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if fails(bed, &c) {
                case = c;
                progress = true;
                break; // candidates were built from the old case
            }
        }
    }
    case
}

fn report(bed: &mut Beds, seed: u64, case: &Case) -> String {
    let mut out = String::new();
    writeln!(out, "MISMATCH: replay with SG_SEED={seed}").unwrap();
    let detail = match run_case(bed, case) {
        Some(Err(m)) => m.what,
        other => format!("(shrunk case no longer fails: {other:?})"),
    };
    writeln!(out, "first disagreement: {detail}").unwrap();
    writeln!(out, "interfaces, L3 (no link header) or not: {:?}", case.l3).unwrap();
    for (i, c) in case.configs.iter().enumerate() {
        writeln!(
            out,
            "--- config {i} (groups attached: {:?}, other interfaces: {:?}, NACLs: {:?}) ---\n{}",
            c.attached,
            c.others,
            c.iface_nacls,
            c.toml()
        )
        .unwrap();
    }
    writeln!(out, "--- packets ---").unwrap();
    for (i, s) in case.steps.iter().enumerate() {
        match s {
            Step::Switch => writeln!(out, "{i:3}: apply config 1").unwrap(),
            Step::Packet(dir, p) => writeln!(out, "{i:3}: {dir:7} {p:?}").unwrap(),
        }
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::process::id()) ^ Instant::now().elapsed().as_nanos() as u64
}

#[test]
fn kernel_agrees_with_the_reference_evaluator() {
    let seed = env_u64("SG_SEED").unwrap_or_else(random_seed);
    let target = env_u64("SG_VERDICTS").unwrap_or(500_000);
    let deadline = env_u64("SG_FUZZ_MINUTES").map(|m| Instant::now() + Duration::from_secs(60 * m));
    println!("differential: seed {seed} (replay with SG_SEED={seed})");
    let mut rng = Rng(seed);
    // Into the test's own network namespace before anything looks up `lo`.
    test_ifaces();
    let mut bed = Beds::default();
    let started = Instant::now();
    let (mut verdicts, mut passes, mut cases, mut invalid) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let done = match deadline {
            Some(d) => Instant::now() >= d,
            None => verdicts >= target,
        };
        if done {
            break;
        }
        let packets = 150 + rng.below(200);
        let case = gen_case(&mut rng, packets);
        match run_case(&mut bed, &case) {
            None => {
                invalid += 1;
                if invalid <= 3 {
                    let err = case
                        .configs
                        .iter()
                        .find_map(|c| config::parse(&c.toml(), "x.toml").err());
                    println!("differential: generated config rejected: {err:?}");
                }
            }
            Some(Ok((n, p))) => {
                verdicts += n as u64;
                passes += p as u64;
                cases += 1;
            }
            Some(Err(m)) => {
                println!(
                    "differential: mismatch after {verdicts} verdicts: {}",
                    m.what
                );
                println!("differential: shrinking...");
                let small = shrink(&mut bed, case);
                let text = report(&mut bed, seed, &small);
                println!("{text}");
                panic!("kernel and evaluator disagree (seed {seed})\n{text}");
            }
        }
        if deadline.is_some() && cases % 500 == 0 {
            println!(
                "differential: {verdicts} verdicts, {cases} configs, {:?}",
                started.elapsed()
            );
        }
    }
    println!(
        "differential: {verdicts} verdicts agree ({passes} pass, {} drop) over {cases} configs \
         ({invalid} invalid configs skipped), seed {seed}, {:.1?}",
        verdicts - passes,
        started.elapsed()
    );
    let tally: Vec<String> = bed
        .drops
        .iter()
        .map(|(&r, n)| format!("{} {n}", Reason::from_code(r).map_or("?", Reason::name)))
        .collect();
    println!("differential: drops by reason: {}", tally.join(", "));
    assert!(
        invalid * 10 <= cases,
        "too many generated configs are invalid: {invalid}"
    );
    assert!(verdicts >= target.min(100_000) || deadline.is_some());
}
