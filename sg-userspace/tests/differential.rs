//! Differential test: random configs and random packet sequences, every
//! verdict of the real XDP (ingress) and TC (egress) programs, run through
//! BPF_PROG_TEST_RUN, compared with the reference evaluator
//! (`sg_testkit::reference`, written straight from SPEC 1).
//!
//! - `SG_SEED=N` replays a run; otherwise the seed is random. It is printed.
//! - `SG_VERDICTS=N` sets how many verdicts a run compares (default 500,000).
//! - `SG_FUZZ_MINUTES=N` (`cargo xtask fuzz --minutes N`) keeps going until
//!   N minutes are up instead.
//!
//! A quarter of the cases run on a small table (`max_entries` 4-16, a test
//! bed of its own), so new flows meet `conntrack_full` while tracked ones go
//! on; 30% re-apply a second config mid-sequence (often the first with
//! rules taken away), with or without `revoke_established`.
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
    testrun::{BedIface, TestBed, Verdict},
};

const URG: u8 = 0x20;
const ECE: u8 = 0x40;

// ---------------------------------------------------------------------------
// Randomness: SplitMix64, so a seed replays exactly on any machine.
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------
// Generated configs, kept structured so that they can be shrunk.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct GenRule {
    /// `proto = ...` as TOML (a string or a number), or `type = ...`.
    proto: String,
    ports: Option<String>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    peers: Vec<String>,
}

#[derive(Clone, Debug)]
struct GenGroup {
    name: String,
    members: Vec<String>,
    ingress: Vec<GenRule>,
    /// `None`: no `egress` key, the default rule.
    egress: Option<Vec<GenRule>>,
}

#[derive(Clone, Debug)]
struct GenConfig {
    groups: Vec<GenGroup>,
    attached: Vec<String>,
    /// `[conntrack] revoke_established` (SPEC 1.8).
    revoke: bool,
    /// `[conntrack] max_entries` (SPEC 1.9); `None`: the default. Both
    /// configs of a case share it: it is the test bed's table size.
    max_entries: Option<u32>,
    /// Groups of the other interfaces (1, 2, ...); `attached` is
    /// interface 0's.
    others: Vec<Vec<String>>,
}

fn render_rule(out: &mut String, r: &GenRule, peer_key: &str) {
    out.push_str("  { ");
    out.push_str(&r.proto);
    if let Some(p) = &r.ports {
        write!(out, ", ports = \"{p}\"").unwrap();
    }
    if let Some(t) = r.icmp_type {
        write!(out, ", icmp_type = {t}").unwrap();
    }
    if let Some(c) = r.icmp_code {
        write!(out, ", icmp_code = {c}").unwrap();
    }
    let peers: Vec<String> = r.peers.iter().map(|p| format!("\"{p}\"")).collect();
    writeln!(out, ", {peer_key} = [{}] }},", peers.join(", ")).unwrap();
}

impl GenConfig {
    fn toml(&self) -> String {
        let mut out = String::new();
        for g in &self.groups {
            writeln!(out, "[groups.{}]", g.name).unwrap();
            if !g.members.is_empty() {
                let m: Vec<String> = g.members.iter().map(|p| format!("\"{p}\"")).collect();
                writeln!(out, "members = [{}]", m.join(", ")).unwrap();
            }
            out.push_str("ingress = [\n");
            for r in &g.ingress {
                render_rule(&mut out, r, "from");
            }
            out.push_str("]\n");
            if let Some(egress) = &g.egress {
                out.push_str("egress = [\n");
                for r in egress {
                    render_rule(&mut out, r, "to");
                }
                out.push_str("]\n");
            }
            out.push('\n');
        }
        if self.revoke || self.max_entries.is_some() {
            out.push_str("[conntrack]\n");
            if self.revoke {
                out.push_str("revoke_established = true\n");
            }
            if let Some(n) = self.max_entries {
                writeln!(out, "max_entries = {n}").unwrap();
            }
        }
        out
    }

    fn parse(&self) -> Option<Config> {
        config::parse(&self.toml(), "differential.toml")
            .ok()
            .map(|l| l.config)
    }
}

/// Addresses, ports and ICMP types that rules and packets draw from, so
/// that they meet often and at their edges.
struct Universe {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const PORTS: &[u16] = &[
    0, 1, 2, 21, 22, 23, 53, 80, 443, 1023, 1024, 1025, 8080, 32767, 32768, 65533, 65534, 65535,
];
const ICMP4_TYPES: &[u8] = &[0, 3, 5, 8, 11, 13, 255];
const ICMP6_TYPES: &[u8] = &[
    1, 2, 3, 4, 128, 129, 130, 131, 132, 133, 135, 137, 138, 142, 143, 144, 255,
];
const ICMP_CODES: &[u8] = &[0, 1, 4, 255];
const OTHER_PROTOS: &[u8] = &[47, 50, 103, 132, 253, 255];
const V4_LENS: &[u8] = &[0, 1, 8, 15, 16, 17, 20, 24, 28, 30, 31, 32, 32];
const V6_LENS: &[u8] = &[0, 1, 16, 32, 33, 48, 64, 96, 120, 127, 128, 128];

impl Universe {
    fn new(rng: &mut Rng) -> Universe {
        // Addresses share prefixes of random lengths: a base and bit flips.
        let base4 = u32::from(Ipv4Addr::new(198, 18, 0, 0)) | (rng.next() as u32 & 0x1_ffff);
        let base6 = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0))
            | (u128::from(rng.next()) << 32 | u128::from(rng.next() as u32)) & ((1 << 96) - 1);
        let mut v4 = vec![Ipv4Addr::from(base4)];
        let mut v6 = vec![Ipv6Addr::from(base6)];
        for _ in 0..5 {
            let a = u32::from(rng.pick(&v4)) ^ (1 << rng.below(17));
            if Ipv4Addr::from(a) != LOCAL4 {
                v4.push(Ipv4Addr::from(a));
            }
            let b = u128::from(rng.pick(&v6)) ^ (1 << rng.below(96));
            if Ipv6Addr::from(b) != LOCAL6 {
                v6.push(Ipv6Addr::from(b));
            }
        }
        // IPv4-mapped IPv6 addresses of IPv4 ones: IPv6 addresses that an
        // IPv4 peer must never cover.
        for _ in 0..rng.below(3) {
            let a = rng.pick(&v4).to_ipv6_mapped();
            if !v6.contains(&a) {
                v6.push(a);
            }
        }
        Universe { v4, v6 }
    }

    fn cidr(&self, rng: &mut Rng, v6: bool) -> String {
        let net = if v6 {
            IpNet::new(IpAddr::V6(rng.pick(&self.v6)), rng.pick(V6_LENS)).unwrap()
        } else {
            IpNet::new(IpAddr::V4(rng.pick(&self.v4)), rng.pick(V4_LENS)).unwrap()
        };
        let net = net.trunc();
        if net.prefix_len() == net.max_prefix_len() && rng.chance(50) {
            net.addr().to_string() // a bare address
        } else {
            net.to_string()
        }
    }

    /// A remote address: one of the universe, sometimes a neighbour of one.
    fn remote(&self, rng: &mut Rng, v6: bool) -> IpAddr {
        if v6 {
            let mut a = u128::from(rng.pick(&self.v6));
            if rng.chance(25) {
                a ^= 1 << rng.below(96);
            }
            let a = Ipv6Addr::from(a);
            IpAddr::V6(if a == LOCAL6 { self.v6[0] } else { a })
        } else {
            let mut a = u32::from(rng.pick(&self.v4));
            if rng.chance(25) {
                a ^= 1 << rng.below(17);
            }
            let a = Ipv4Addr::from(a);
            IpAddr::V4(if a == LOCAL4 { self.v4[0] } else { a })
        }
    }
}

fn gen_ports(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => "all".into(),
        1 => rng.pick(PORTS).to_string(),
        _ => {
            let a = rng.pick(PORTS);
            let b = if rng.chance(30) {
                rng.next() as u16
            } else {
                rng.pick(PORTS)
            };
            format!("{}-{}", a.min(b), a.max(b))
        }
    }
}

fn gen_rule(rng: &mut Rng, u: &Universe, names: &[String]) -> GenRule {
    let mut r = GenRule {
        proto: String::new(),
        ports: None,
        icmp_type: None,
        icmp_code: None,
        peers: Vec::new(),
    };
    match rng.below(16) {
        0..=2 => {
            r.proto = rng
                .pick(&["proto = \"tcp\"", "proto = 6", "proto = \"6\""])
                .into();
            r.ports = Some(gen_ports(rng));
        }
        3..=4 => {
            r.proto = rng.pick(&["proto = \"udp\"", "proto = 17"]).into();
            r.ports = Some(gen_ports(rng));
        }
        5..=7 => {
            let v6 = rng.chance(50);
            r.proto = if v6 {
                rng.pick(&["proto = \"icmpv6\"", "proto = 58"]).into()
            } else {
                rng.pick(&["proto = \"icmp\"", "proto = 1"]).into()
            };
            if rng.chance(70) {
                r.icmp_type = Some(rng.pick(if v6 { ICMP6_TYPES } else { ICMP4_TYPES }));
                if rng.chance(50) {
                    r.icmp_code = Some(rng.pick(ICMP_CODES));
                }
            }
        }
        8..=9 => r.proto = "proto = \"all\"".into(),
        10..=11 => r.proto = format!("proto = {}", rng.pick(OTHER_PROTOS)),
        12 => r.proto = rng.pick(&["proto = 0", "proto = \"255\""]).into(),
        _ => {
            r.proto = format!(
                "type = \"{}\"",
                rng.pick(&[
                    "ssh",
                    "http",
                    "https",
                    "dns-udp",
                    "all-tcp",
                    "all-udp",
                    "all-icmp",
                    "all-icmpv6",
                    "all-traffic",
                ])
            )
        }
    }
    for _ in 0..1 + rng.below(3) {
        let peer = match rng.below(12) {
            0 => rng
                .pick(&["anywhere", "anywhere-ipv4", "anywhere-ipv6"])
                .to_string(),
            1..=3 => format!("sg:{}", names[rng.below(names.len())]),
            4..=7 => u.cidr(rng, false),
            _ => u.cidr(rng, true),
        };
        r.peers.push(peer);
    }
    r
}

fn gen_config(rng: &mut Rng, u: &Universe, ifaces: usize) -> GenConfig {
    let n = 1 + rng.below(4);
    let names: Vec<String> = (0..n).map(|i| format!("g{i}")).collect();
    let groups = names
        .iter()
        .map(|name| GenGroup {
            name: name.clone(),
            members: (0..rng.below(4))
                .map(|_| {
                    let v6 = rng.chance(40);
                    u.cidr(rng, v6)
                })
                .collect(),
            ingress: (0..rng.below(7))
                .map(|_| gen_rule(rng, u, &names))
                .collect(),
            egress: match rng.below(4) {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(
                    (0..1 + rng.below(5))
                        .map(|_| gen_rule(rng, u, &names))
                        .collect(),
                ),
            },
        })
        .collect();
    let mut attached: Vec<String> = names.iter().filter(|_| rng.chance(60)).cloned().collect();
    if attached.is_empty() {
        attached.push(names[rng.below(n)].clone());
    }
    let others = (1..ifaces)
        .map(|_| vec![names[rng.below(n)].clone()])
        .collect();
    GenConfig {
        groups,
        attached,
        others,
        revoke: rng.chance(30),
        max_entries: None,
    }
}

/// The config applied mid-sequence: half the time a fresh one, half the
/// time the first with rules taken away (and a few added), so that some
/// tracked flows stay allowed and others lose their rule (SPEC 1.8).
fn gen_second_config(rng: &mut Rng, u: &Universe, first: &GenConfig) -> GenConfig {
    let mut c = if rng.chance(50) {
        gen_config(rng, u, first.others.len() + 1)
    } else {
        let mut c = first.clone();
        let names: Vec<String> = c.groups.iter().map(|g| g.name.clone()).collect();
        for g in &mut c.groups {
            g.ingress.retain(|_| rng.chance(60));
            if let Some(egress) = &mut g.egress {
                egress.retain(|_| rng.chance(60));
            }
            if rng.chance(20) {
                g.ingress.push(gen_rule(rng, u, &names));
            }
        }
        c
    };
    c.revoke = rng.chance(70);
    c.max_entries = first.max_entries;
    c
}

// ---------------------------------------------------------------------------
// Packet sequences: flows that open, answer and close, and strays.
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Packet(Direction, PacketSpec),
    /// Apply the case's second config, keeping conntrack (SPEC 1.8).
    Switch,
}

#[derive(Clone, Debug)]
struct Case {
    configs: Vec<GenConfig>,
    steps: Vec<Step>,
    /// Per interface: no link header (an L3 interface such as tun).
    l3: Vec<bool>,
}

#[derive(Clone, Copy)]
enum FlowKind {
    Tcp,
    Udp,
    Echo(u16),
    Other(u8),
}

#[derive(Clone, Copy)]
struct FlowGen {
    /// Direction of the opener's packets.
    dir: Direction,
    opener: (IpAddr, u16),
    responder: (IpAddr, u16),
    kind: FlowKind,
    /// The interface the flow runs on.
    iface: usize,
}

fn reverse(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(80) {
        rng.pick(PORTS)
    } else {
        rng.next() as u16
    }
}

fn framing(rng: &mut Rng, v6: bool, l3: bool) -> Framing {
    let mut f = Framing {
        l3,
        ..Framing::default()
    };
    if !l3 && rng.chance(10) {
        f.tags = match rng.below(3) {
            0 => vec![(packet::ETH_P_8021Q, 7)],
            1 => vec![(packet::ETH_P_8021AD, 100), (packet::ETH_P_8021Q, 7)],
            _ => vec![(packet::ETH_P_8021AD, 100)],
        };
    }
    if rng.chance(10) {
        if v6 {
            let n = 1 + rng.below(3);
            for i in 0..n {
                let units = rng.below(3) as u8;
                f.v6_exts.push(match (i, rng.below(3)) {
                    (0, 0) => Ext::HopByHop { units },
                    (_, 1) => Ext::Routing { units },
                    _ => Ext::DestOpts { units },
                });
            }
        } else {
            f.v4_option_words = 1 + rng.below(10) as u8;
        }
    }
    f
}

fn tcp_flags_any(rng: &mut Rng) -> u8 {
    let random = rng.next() as u8;
    rng.pick(&[
        0,                // null
        FIN | PSH | URG,  // xmas
        SYN | FIN,        // never opens
        SYN | RST,        // never opens
        SYN | ACK,        // stray SYN-ACK
        ACK,              // ACK scan
        ACK | PSH,        //
        FIN,              //
        RST,              //
        FIN | ACK,        //
        SYN | ECE | 0x80, // SYN with ECN bits: opens
        SYN | PSH,        // opens
        random,           // anything
    ])
}

/// What the generator believes each side of a TCP flow has sent, so that
/// segments carry realistic sequence numbers, acknowledgements and windows
/// (index 0: the opener). RST and FIN then land in and out of the window
/// of their direction (SPEC 1.6), near its edges, and where only window
/// scaling reaches.
struct SeqSides {
    next: [u32; 2],
    win: [u16; 2],
    wscale: [Option<u8>; 2],
}

impl SeqSides {
    fn new(rng: &mut Rng) -> SeqSides {
        let mut s = SeqSides {
            next: [rng.next() as u32, rng.next() as u32],
            win: [0; 2],
            wscale: [None; 2],
        };
        for side in 0..2 {
            s.win[side] = rng.pick(&[0, 1, 512, 1000, 8192, 29200, 65535]);
        }
        s
    }

    /// The segment side `x` sends with `flags`; advances its sequence when
    /// the segment is the next one in order.
    fn segment(&mut self, rng: &mut Rng, x: usize, flags: u8) -> TcpSeg {
        let other = 1 - x;
        let syn = flags & SYN != 0;
        if syn && (flags & ACK == 0 || rng.chance(30)) {
            // A new (or reused) connection: a fresh ISN and options.
            self.next[x] = rng.next() as u32;
            self.wscale[x] = rng
                .chance(60)
                .then(|| rng.pick(&[0, 1, 2, 7, 8, 14, 15, 200]));
        }
        let payload = if syn || flags & RST != 0 && rng.chance(80) {
            0
        } else {
            rng.pick(&[0, 0, 1, 7, 100, 1400])
        };
        if rng.chance(5) {
            self.win[x] = rng.pick(&[0, 1, 1000, 65535]);
        }
        let next = self.next[x];
        let reach = u32::from(self.win[other]) << self.wscale[other].unwrap_or(0).min(14);
        let closing = flags & (RST | FIN) != 0;
        let seq = if closing && rng.chance(50) || rng.chance(5) {
            match rng.below(9) {
                0 => next.wrapping_add(rng.below(1000) as u32),
                1 => next.wrapping_sub(rng.below(70_000) as u32),
                2 => next.wrapping_add(reach),
                3 => next.wrapping_add(reach).wrapping_add(1),
                4 => next
                    .wrapping_add(u32::from(self.win[other]))
                    .wrapping_add(1),
                5 => next.wrapping_add(reach / 2),
                6 => next
                    .wrapping_add(1 << 30)
                    .wrapping_add(rng.next() as u32 % 1000),
                7 => next.wrapping_sub(1 << 20),
                _ => rng.next() as u32,
            }
        } else {
            next
        };
        let ack = if rng.chance(90) {
            self.next[other]
        } else {
            let random = rng.next() as u32;
            rng.pick(&[
                self.next[other].wrapping_sub(1),
                self.next[other].wrapping_add(1),
                random,
                0,
            ])
        };
        if seq == next {
            let len = u32::from(payload) + u32::from(syn) + u32::from(flags & FIN != 0);
            self.next[x] = next.wrapping_add(len);
        }
        TcpSeg {
            seq,
            ack,
            win: self.win[x],
            payload,
            wscale: if syn { self.wscale[x] } else { None },
        }
    }
}

struct SeqGen<'u> {
    u: &'u Universe,
    /// Per interface: L3 framing.
    l3: Vec<bool>,
    flows: Vec<FlowGen>,
    /// Each flow's TCP sequence state, by index in `flows`.
    seqs: Vec<SeqSides>,
    first_frags: Vec<(Direction, PacketSpec)>,
    steps: Vec<Step>,
}

impl SeqGen<'_> {
    fn local(v6: bool) -> IpAddr {
        if v6 { LOCAL6.into() } else { LOCAL4.into() }
    }

    fn push(
        &mut self,
        rng: &mut Rng,
        iface: usize,
        dir: Direction,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        l4: L4,
    ) {
        self.push_seg(rng, iface, dir, src, dst, l4, TcpSeg::default());
    }

    #[allow(clippy::too_many_arguments)]
    fn push_seg(
        &mut self,
        rng: &mut Rng,
        iface: usize,
        dir: Direction,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        l4: L4,
        seg: TcpSeg,
    ) {
        let mut pkt = PacketSpec::new(src.0, dst.0, l4);
        pkt.iface = iface;
        pkt.seg = seg;
        self.push_spec(rng, dir, pkt);
    }

    /// Pushes `pkt` with random framing for its interface; sometimes a
    /// first fragment, sometimes truncated.
    fn push_spec(&mut self, rng: &mut Rng, dir: Direction, mut pkt: PacketSpec) {
        pkt.framing = framing(rng, pkt.src.is_ipv6(), self.l3[pkt.iface]);
        if rng.chance(2) {
            // Cut anywhere after the first 14 bytes: a test run needs 14
            // bytes at least, a TC one an untagged IP header's worth too.
            let len = pkt.frame().len();
            let fixed_ip = if pkt.src.is_ipv4() { 20 } else { 40 };
            let min = match dir {
                Direction::Egress if pkt.framing.tags.is_empty() => 14 + fixed_ip,
                _ => 14,
            };
            if len > min {
                pkt.cut = Some(min + rng.below(len - min));
            }
        }
        if rng.chance(6) {
            let id = if pkt.src.is_ipv4() {
                u32::from(rng.next() as u16)
            } else {
                rng.next() as u32
            };
            pkt.frag = Frag::First { id };
            self.first_frags.push((dir, pkt.clone()));
        }
        self.steps.push(Step::Packet(dir, pkt));
    }

    /// A random direction and the packet's source and destination: a
    /// remote address and this interface's, v6 `v6_percent` of the time,
    /// inbound `ingress_percent` of the time.
    fn endpoints(
        &self,
        rng: &mut Rng,
        v6_percent: usize,
        ingress_percent: usize,
    ) -> (bool, Direction, IpAddr, IpAddr) {
        let v6 = rng.chance(v6_percent);
        let dir = if rng.chance(ingress_percent) {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let remote = self.u.remote(rng, v6);
        let local = Self::local(v6);
        let (src, dst) = match dir {
            Direction::Ingress => (remote, local),
            Direction::Egress => (local, remote),
        };
        (v6, dir, src, dst)
    }

    fn new_flow(&mut self, rng: &mut Rng) {
        let (v6, dir, src, dst) = self.endpoints(rng, 45, 55);
        let kind = match rng.below(20) {
            0..=7 => FlowKind::Tcp,
            8..=13 => FlowKind::Udp,
            14..=17 => FlowKind::Echo(rng.next() as u16),
            // The other family's ICMP number: just another protocol here.
            18 => FlowKind::Other(if v6 { 1 } else { 58 }),
            _ => FlowKind::Other(rng.pick(OTHER_PROTOS)),
        };
        let (sport, dport) = match kind {
            FlowKind::Tcp | FlowKind::Udp => (port(rng), port(rng)),
            FlowKind::Echo(id) => (id, id),
            FlowKind::Other(_) => (0, 0),
        };
        let flow = FlowGen {
            dir,
            opener: (src, sport),
            responder: (dst, dport),
            kind,
            iface: rng.below(self.l3.len()),
        };
        self.flows.push(flow);
        self.seqs.push(SeqSides::new(rng));
        let flags = if rng.chance(85) {
            SYN
        } else {
            tcp_flags_any(rng)
        };
        self.send(rng, self.flows.len() - 1, true, flags, true);
    }

    /// A packet of flow `fi` from the opener (`forward`) or the responder.
    fn send(&mut self, rng: &mut Rng, fi: usize, forward: bool, flags: u8, request: bool) {
        let flow = self.flows[fi];
        let (dir, src, dst) = if forward {
            (flow.dir, flow.opener, flow.responder)
        } else {
            (reverse(flow.dir), flow.responder, flow.opener)
        };
        let l4 = Self::l4_of(flow, src, dst, flags, request);
        let seg = match flow.kind {
            FlowKind::Tcp => self.seqs[fi].segment(rng, usize::from(!forward), flags),
            _ => TcpSeg::default(),
        };
        self.push_seg(rng, flow.iface, dir, src, dst, l4, seg);
    }

    /// The L4 header of a packet of `flow` from `src` to `dst`.
    fn l4_of(
        flow: FlowGen,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        flags: u8,
        request: bool,
    ) -> L4 {
        match flow.kind {
            FlowKind::Tcp => L4::Tcp {
                sport: src.1,
                dport: dst.1,
                flags,
            },
            FlowKind::Udp => L4::Udp {
                sport: src.1,
                dport: dst.1,
            },
            FlowKind::Echo(id) => L4::Icmp {
                icmp_type: match (src.0.is_ipv4(), request) {
                    (true, true) => 8,
                    (true, false) => 0,
                    (false, true) => 128,
                    (false, false) => 129,
                },
                code: 0,
                id,
            },
            FlowKind::Other(proto) => L4::Other { proto },
        }
    }

    /// An ICMP error quoting a packet of `flow` (either side's), sent to
    /// the quoted packet's source the other way; sometimes not an error
    /// type, about another port, about a later fragment, or with a quote
    /// that its destination did not send.
    fn icmp_error(&mut self, rng: &mut Rng, flow: FlowGen) {
        let forward = rng.chance(50);
        let (qdir, qsrc, mut qdst) = if forward {
            (flow.dir, flow.opener, flow.responder)
        } else {
            (reverse(flow.dir), flow.responder, flow.opener)
        };
        if rng.chance(10) {
            qdst.1 = port(rng);
        }
        let l4 = Self::l4_of(flow, qsrc, qdst, rng.pick(&[SYN, ACK, ACK | PSH]), true);
        let v6 = qsrc.0.is_ipv6();
        let mut q = PacketSpec::new(qsrc.0, qdst.0, l4);
        q.framing = framing(rng, v6, false);
        q.framing.tags.clear();
        let id = rng.next() as u16 as u32;
        q.frag = match rng.below(20) {
            0..=1 => Frag::First { id },
            2 => Frag::Later { id },
            _ => Frag::Whole,
        };
        let dir = reverse(qdir);
        let (src, mut dst) = match (dir, rng.chance(50)) {
            // From the quote's destination, or a router on the way.
            (Direction::Ingress, true) => (qdst.0, qsrc.0),
            (Direction::Ingress, false) => (self.u.remote(rng, v6), qsrc.0),
            (Direction::Egress, _) => (Self::local(v6), qsrc.0),
        };
        if rng.chance(8) {
            // A quote that the error's destination did not send.
            match dir {
                Direction::Ingress => q.src = self.u.remote(rng, v6),
                Direction::Egress => dst = self.u.remote(rng, v6),
            }
        }
        let (icmp_type, code) = if v6 {
            rng.pick(&[(2, 0), (2, 0), (1, 4), (1, 0), (3, 0), (4, 0)])
        } else {
            rng.pick(&[(3, 4), (3, 4), (3, 3), (3, 1), (11, 0), (12, 0), (5, 0)])
        };
        let l4 = L4::Icmp {
            icmp_type,
            code,
            id: rng.next() as u16,
        };
        let mut err = PacketSpec::new(src, dst, l4);
        err.quote = Some(Box::new(q));
        err.iface = flow.iface;
        self.push_spec(rng, dir, err);
    }

    fn step(&mut self, rng: &mut Rng) {
        let roll = rng.below(100);
        if self.flows.is_empty() || roll < 25 {
            return self.new_flow(rng);
        }
        let fi = rng.below(self.flows.len());
        let flow = self.flows[fi];
        match roll {
            25..=54 => {
                // The responder answers.
                let flags = rng.pick(&[
                    SYN | ACK,
                    SYN | ACK,
                    ACK,
                    ACK | PSH,
                    FIN | ACK,
                    RST,
                    RST | ACK,
                ]);
                self.send(rng, fi, false, flags, false);
            }
            55..=74 => {
                // The opener goes on, closes, or reuses the tuple.
                let flags = rng.pick(&[ACK, ACK | PSH, FIN | ACK, RST, SYN, ACK]);
                self.send(rng, fi, true, flags, true);
            }
            75..=84 => {
                // Strays: odd TCP flags and echo replies nobody asked for,
                // in either direction of a known flow.
                let forward = rng.chance(50);
                let flags = tcp_flags_any(rng);
                let request = rng.chance(50);
                self.send(rng, fi, forward, flags, request);
            }
            85..=89 => self.icmp_error(rng, flow),
            90..=92 => {
                // ICMP other than echo: errors, ND, anything; rules only.
                let (v6, dir, src, dst) = self.endpoints(rng, 50, 50);
                let icmp_type = rng.pick(if v6 { ICMP6_TYPES } else { ICMP4_TYPES });
                let l4 = L4::Icmp {
                    icmp_type,
                    code: rng.pick(ICMP_CODES),
                    id: rng.next() as u16,
                };
                let iface = rng.below(self.l3.len());
                self.push(rng, iface, dir, (src, 0), (dst, 0), l4);
            }
            _ => {
                // A later fragment: of a first fragment seen, or a stray.
                let (dir, mut pkt) = if !self.first_frags.is_empty() && rng.chance(75) {
                    self.first_frags[rng.below(self.first_frags.len())].clone()
                } else {
                    let f = flow;
                    let (dir, src, dst) = (f.dir, f.opener.0, f.responder.0);
                    let mut p = PacketSpec::new(src, dst, L4::Udp { sport: 0, dport: 0 });
                    p.iface = f.iface;
                    p.framing.l3 = self.l3[f.iface];
                    p.frag = Frag::First {
                        id: rng.next() as u16 as u32,
                    };
                    (dir, p)
                };
                let Frag::First { id } = pkt.frag else {
                    unreachable!()
                };
                pkt.frag = Frag::Later { id };
                pkt.cut = None;
                self.steps.push(Step::Packet(dir, pkt));
            }
        }
    }
}

/// Interfaces a case enforces on: interface 0 is the test-run device,
/// the others veth ends made in the test's own network namespace.
const MAX_IFACES: usize = 3;

fn gen_case(rng: &mut Rng, packets: usize) -> Case {
    let u = Universe::new(rng);
    let ifaces = if rng.chance(70) {
        1
    } else {
        2 + rng.below(MAX_IFACES - 1)
    };
    let l3: Vec<bool> = (0..ifaces).map(|_| rng.chance(25)).collect();
    let mut first = gen_config(rng, &u, ifaces);
    if rng.chance(25) {
        // A small table, full within the sequence (SPEC 1.9).
        first.max_entries = Some(rng.pick(TABLE_SIZES));
    }
    let mut configs = vec![first];
    let switch_at = if rng.chance(30) {
        configs.push(gen_second_config(rng, &u, &configs[0]));
        Some(rng.below(packets))
    } else {
        None
    };
    let mut g = SeqGen {
        u: &u,
        l3: l3.clone(),
        flows: Vec::new(),
        seqs: Vec::new(),
        first_frags: Vec::new(),
        steps: Vec::new(),
    };
    while g.steps.len() < packets {
        if Some(g.steps.len()) == switch_at {
            g.steps.push(Step::Switch);
        }
        g.step(rng);
    }
    Case {
        configs,
        steps: g.steps,
        l3,
    }
}

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
            let st = std::process::Command::new("ip")
                .args(["link", "add", &name, "type", "veth", "peer", "name", &peer])
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
        let want: Outcome =
            reference::verdict(&configs[current], groups, &[], &mut model, pkt, dir, now);
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
            "--- config {i} (groups attached: {:?}, other interfaces: {:?}) ---\n{}",
            c.attached,
            c.others,
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
