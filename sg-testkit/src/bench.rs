//! Per-packet cost through BPF_PROG_TEST_RUN (SPEC 6), as ratios to a
//! do-nothing XDP program measured in the same run: the machine is shared
//! and noisy, so only ratios measured side by side mean anything.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::Result;
use serde::Serialize;

use sg::config;

use crate::{
    packet::{self, ACK, SYN},
    testrun::TestBed,
};

/// Runs per measurement; the kernel reports the mean time per run.
const REPEAT: u32 = 200_000;
/// Rounds of measurements; each case is bracketed by two baseline runs,
/// and the median over rounds counts.
const ROUNDS: usize = 11;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The rule sets measured.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Workload {
    /// TCP rules from distinct host peers to distinct ports: the host
    /// hash, one interval per class.
    Hosts(Family),
    /// v4 and v6 rules in nested CIDR blocks with port ranges, plus broad
    /// rules from everywhere: classes overlap and ports fall in ranges.
    /// The packet measured is of `Family`, from a host that a rule names.
    Mixed(Family),
    /// The mixed rule set, with the packet from an address inside a /30
    /// (/126) that no host rule names: the prefix search runs too.
    MixedCidr(Family),
    /// A NACL of `n` numbered rules (SPEC 2) in front of one broad SG rule:
    /// allow and deny rules alternate, each from its own host to its own
    /// ports, then an ephemeral-port allow from everywhere. The packets
    /// measured are decided by a rule in the middle.
    Nacl(Family),
}

/// NACL rule counts: a NACL holds at most 32,766 numbered rules.
pub const NACL_SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

impl Workload {
    pub fn label(self) -> String {
        match self {
            Workload::Hosts(f) => format!("{f:?} hosts"),
            Workload::Mixed(f) => format!("{f:?} mixed"),
            Workload::MixedCidr(f) => format!("{f:?} mixed, CIDR peer"),
            Workload::Nacl(f) => format!("{f:?} NACL"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub workload: Workload,
    pub rules: usize,
    pub baseline_ns: f64,
    /// Packet of an established, tracked connection.
    pub conntrack_hit: f64,
    /// First packet of a flow a rule allows (classification, no entry yet).
    pub new_flow_allowed: f64,
    /// Packet no rule allows (classification, drop counter, event).
    pub new_flow_denied: f64,
    /// `new_flow_allowed` / the same at the smallest rule count measured,
    /// taken round by round (SPEC 6's target: at most 1.3 at 100k / 10).
    pub allowed_growth: f64,
    pub denied_growth: f64,
    pub install_ms: u128,
    /// Kernel memory of the policy maps (peer and rule hashes, interval
    /// array).
    pub policy_map_bytes: u64,
}

/// Host peer `i` of the generated rule set.
pub fn peer(family: Family, i: usize) -> IpAddr {
    let i = i as u32;
    match family {
        // 198.18.0.0/15 holds 131072 hosts.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        )),
    }
}

pub fn rule_port(i: usize) -> u16 {
    1024 + (i % 50_000) as u16
}

/// `n` TCP rules, each from its own host peer to its own port, in groups of
/// 1000 rules attached together: many groups, one interface.
pub fn rule_set(family: Family, n: usize) -> String {
    let mut text = String::new();
    for (g, chunk) in (0..n).collect::<Vec<_>>().chunks(1000).enumerate() {
        text.push_str(&format!("[groups.g{g}]\negress = []\ningress = [\n"));
        for &i in chunk {
            text.push_str(&format!(
                "  {{ proto = \"tcp\", ports = \"{}\", from = \"{}\" }},\n",
                rule_port(i),
                peer(family, i)
            ));
        }
        text.push_str("]\n");
    }
    text
}

/// Rules per nested block of the mixed rule set.
const RULES_PER_BLOCK: usize = 4;

/// Block `b` of the mixed rule set: a /28 (v4) or /64 (v6), alternating
/// families while 198.18.0.0/15 has room, then v6 only.
fn mixed_block(b: usize) -> (Family, IpAddr) {
    if b.is_multiple_of(2) && b / 2 < 8192 {
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (b as u32 / 2) * 16;
        (Family::V4, IpAddr::V4(Ipv4Addr::from(base)))
    } else {
        let b = b as u32;
        (
            Family::V6,
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                (b >> 16) as u16,
                b as u16,
                0,
                0,
                0,
                0,
            )),
        )
    }
}

fn offset(addr: IpAddr, by: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) + by as u32)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) + by as u128)),
    }
}

/// `n` rules in nested blocks (block CIDR, a /30 or /126 inside it, two
/// hosts), ranges of several widths, plus three broad rules.
pub fn mixed_rule_set(n: usize) -> String {
    let mut text = String::from(
        "[groups.broad]\negress = []\ningress = [\n  { type = \"http\", from = \"anywhere\" },\n  { type = \"ssh\", from = [\"198.18.0.0/15\", \"2001:db8::/32\"] },\n  { proto = \"icmp\", from = \"anywhere-ipv4\" },\n]\n",
    );
    let blocks = n.div_ceil(RULES_PER_BLOCK);
    for (g, chunk) in (0..blocks).collect::<Vec<_>>().chunks(250).enumerate() {
        text.push_str(&format!("[groups.m{g}]\negress = []\ningress = [\n"));
        for &b in chunk {
            let (family, base) = mixed_block(b);
            let (block_len, sub_len) = if family == Family::V4 {
                (28, 30)
            } else {
                (64, 126)
            };
            text.push_str(&format!(
                "  {{ proto = \"tcp\", ports = \"1000-1999\", from = \"{base}/{block_len}\" }},\n  {{ proto = \"tcp\", ports = \"{}\", from = \"{}\" }},\n  {{ proto = \"udp\", ports = \"5000-5099\", from = \"{}\" }},\n  {{ proto = \"tcp\", ports = \"20000-20063\", from = \"{base}/{sub_len}\" }},\n",
                2000 + b % 1000,
                offset(base, 1),
                offset(base, 2),
            ));
        }
        text.push_str("]\n");
    }
    text
}

/// The NACL workload's config: `n` NACL rules (`n` at most 32,766) on
/// `lo`, the test-run device, in front of group `sg` (all TCP). Rule
/// `i + 1` names host `peer(family, i)` and ports `rule_port(i)` and 9
/// more; it allows for even `i`, denies for odd.
pub fn nacl_rule_set(family: Family, n: usize) -> String {
    let mut text = String::from(
        "[groups.sg]\negress = []\ningress = [{ proto = \"tcp\", ports = \"all\", from = \"anywhere\" }]\n\n[interfaces.lo]\ngroups = [\"sg\"]\nnacl = \"bench\"\n\n[nacls.bench]\ningress = [\n",
    );
    for i in 0..n.saturating_sub(1) {
        let action = if i.is_multiple_of(2) { "allow" } else { "deny" };
        let port = rule_port(i);
        text.push_str(&format!(
            "  {{ rule = {}, action = \"{action}\", proto = \"tcp\", ports = \"{port}-{}\", from = \"{}\" }},\n",
            i + 1,
            port.saturating_add(9),
            peer(family, i)
        ));
    }
    text.push_str(&format!(
        "  {{ rule = {}, action = \"allow\", proto = \"tcp\", ports = \"1024-65535\", from = \"anywhere\" }},\n]\n",
        n.max(1)
    ));
    text
}

/// Sizes of the loaded programs, as the kernel reports them.
pub fn program_sizes() -> Result<Vec<crate::testrun::ProgramSize>> {
    let loaded = config::parse(&mixed_rule_set(10), "bench.toml")?;
    TestBed::with_every_group(&loaded.config)?.program_sizes()
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One rule count of a workload, installed and ready to measure.
pub(crate) struct Case {
    pub(crate) rules: usize,
    pub(crate) bed: TestBed,
    install_ms: u128,
    pub(crate) hit: Vec<u8>,
    allowed: Vec<u8>,
    denied: Vec<u8>,
}

/// Measures `workload` at every rule count of `sizes`, all installed at
/// once and measured round by round, so that the costs at different rule
/// counts are compared side by side rather than minutes apart.
pub fn measure(workload: Workload, sizes: &[usize]) -> Result<Vec<Row>> {
    let mut cases = sizes
        .iter()
        .map(|&n| prepare(workload, n))
        .collect::<Result<Vec<_>>>()?;
    // Per case and round: (baseline ns, hit, allowed, denied as ratios).
    let mut samples: Vec<Vec<[f64; 4]>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for (case, out) in cases.iter_mut().zip(&mut samples) {
            let ns = |d: std::time::Duration| d.as_nanos() as f64;
            let before = ns(case.bed.run_baseline(&case.hit, REPEAT)?.1);
            let h = ns(case.bed.run_xdp(&case.hit, REPEAT)?.1);
            let a = ns(case.bed.run_xdp(&case.allowed, REPEAT)?.1);
            let d = ns(case.bed.run_xdp(&case.denied, REPEAT)?.1);
            let after = ns(case.bed.run_baseline(&case.hit, REPEAT)?.1);
            // The yardstick measured on both sides of the case.
            let base = ((before + after) / 2.0).max(1.0);
            out.push([base, h / base, a / base, d / base]);
        }
    }
    let column = |i: usize, c: usize| median(samples[i].iter().map(|s| s[c]).collect());
    // Growth against the smallest rule count, round by round.
    let growth = |i: usize, c: usize| {
        median(
            samples[i]
                .iter()
                .zip(&samples[0])
                .map(|(s, first)| s[c] / first[c])
                .collect(),
        )
    };
    cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            Ok(Row {
                workload,
                rules: case.rules,
                baseline_ns: column(i, 0),
                conntrack_hit: column(i, 1),
                new_flow_allowed: column(i, 2),
                new_flow_denied: column(i, 3),
                allowed_growth: growth(i, 2),
                denied_growth: growth(i, 3),
                install_ms: case.install_ms,
                policy_map_bytes: case.bed.policy_map_bytes()?,
            })
        })
        .collect()
}

pub(crate) fn prepare(workload: Workload, n: usize) -> Result<Case> {
    let text = match workload {
        Workload::Hosts(family) => rule_set(family, n),
        Workload::Mixed(_) | Workload::MixedCidr(_) => mixed_rule_set(n),
        Workload::Nacl(family) => nacl_rule_set(family, n),
    };
    let loaded = config::parse(&text, "bench.toml")?;
    let started = Instant::now();
    let mut bed = TestBed::with_every_group(&loaded.config)?;
    let install_ms = started.elapsed().as_millis();
    let family = match workload {
        Workload::Hosts(f) | Workload::Mixed(f) | Workload::MixedCidr(f) | Workload::Nacl(f) => f,
    };
    let local = match family {
        Family::V4 => "198.19.255.254".parse()?,
        Family::V6 => "2001:db8:ffff::1".parse()?,
    };
    let (src, port) = match workload {
        Workload::Hosts(_) => (peer(family, n / 2), rule_port(n / 2)),
        // An allow rule (even index) in the middle of the NACL.
        Workload::Nacl(_) => {
            let i = (n / 2) & !1;
            (peer(family, i), rule_port(i) + 5)
        }
        Workload::Mixed(_) | Workload::MixedCidr(_) => {
            // In the middle block of its family, to a port inside the
            // block's 1000-1999 range (no single-port rule matches): from
            // a host a rule names, or from another address of the /30.
            let blocks = n.div_ceil(RULES_PER_BLOCK);
            let b = (blocks / 2..blocks)
                .chain(0..blocks / 2)
                .find(|&b| mixed_block(b).0 == family)
                .unwrap_or(0);
            let host = if matches!(workload, Workload::MixedCidr(_)) {
                3
            } else {
                1
            };
            (offset(mixed_block(b).1, host), 1500)
        }
    };
    // Opened once by a SYN; its ACKs then hit conntrack.
    let open = packet::tcp(src, local, 40000, port, SYN);
    let hit = packet::tcp(src, local, 40000, port, ACK);
    // An ACK of another flow: allowed by the rule, never creates an entry,
    // so every run classifies it afresh.
    let allowed = packet::tcp(src, local, 40001, port, ACK);
    let denied = match workload {
        Workload::Hosts(_) => packet::tcp(src, local, 40002, port.wrapping_add(1), ACK),
        // The next rule, a deny, from its own host.
        Workload::Nacl(_) => {
            let i = ((n / 2) & !1) + 1;
            packet::tcp(peer(family, i), local, 40002, rule_port(i) + 5, ACK)
        }
        Workload::Mixed(_) | Workload::MixedCidr(_) => packet::tcp(src, local, 40002, 3000, ACK),
    };
    anyhow::ensure!(
        bed.ingress(&open)? == crate::testrun::Verdict::Pass,
        "bench flow must open"
    );
    anyhow::ensure!(
        bed.ingress(&denied)? == crate::testrun::Verdict::Drop,
        "denied must drop"
    );
    Ok(Case {
        rules: n,
        bed,
        install_ms,
        hit,
        allowed,
        denied,
    })
}
