//! Generated configs, kept structured so that they can be shrunk.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct GenRule {
    /// `proto = ...` as TOML (a string or a number), or `type = ...`.
    pub(super) proto: String,
    pub(super) ports: Option<String>,
    pub(super) icmp_type: Option<u8>,
    pub(super) icmp_code: Option<u8>,
    pub(super) peers: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) struct GenGroup {
    pub(super) name: String,
    pub(super) members: Vec<String>,
    pub(super) ingress: Vec<GenRule>,
    /// `None`: no `egress` key, the default rule.
    pub(super) egress: Option<Vec<GenRule>>,
}

#[derive(Clone, Debug)]
pub(super) struct GenConfig {
    pub(super) groups: Vec<GenGroup>,
    pub(super) attached: Vec<String>,
    /// `[conntrack] revoke_established` (SPEC 1.8).
    pub(super) revoke: bool,
    /// `[conntrack] max_entries` (SPEC 1.9); `None`: the default. Both
    /// configs of a case share it: it is the test bed's table size.
    pub(super) max_entries: Option<u32>,
    /// Groups of the other interfaces (1, 2, ...); `attached` is
    /// interface 0's.
    pub(super) others: Vec<Vec<String>>,
    /// Network ACLs (SPEC 2), and each interface's (by index into
    /// `nacls`; `None`: no NACL), interface 0 first.
    pub(super) nacls: Vec<GenNacl>,
    pub(super) iface_nacls: Vec<Option<usize>>,
}

#[derive(Clone, Debug)]
pub(super) struct GenNaclRule {
    pub(super) number: u16,
    pub(super) allow: bool,
    /// Exactly one peer, never `sg:`.
    pub(super) rule: GenRule,
}

#[derive(Clone, Debug)]
pub(super) struct GenNacl {
    pub(super) name: String,
    /// `None`: the direction is not written, and denies everything.
    pub(super) ingress: Option<Vec<GenNaclRule>>,
    pub(super) egress: Option<Vec<GenNaclRule>>,
}

/// The name of the test's interface `i` (see `test_ifaces`).
pub(super) fn iface_name(i: usize) -> String {
    if i == 0 {
        "lo".to_string()
    } else {
        format!("sgdiff{i}")
    }
}

fn render_nacl_rule(out: &mut String, r: &GenNaclRule, peer_key: &str) {
    let mut body = String::new();
    render_rule(&mut body, &r.rule, peer_key);
    let action = if r.allow { "allow" } else { "deny" };
    out.push_str(&body.replacen(
        "  { ",
        &format!("  {{ rule = {}, action = \"{action}\", ", r.number),
        1,
    ));
}

pub(super) fn render_rule(out: &mut String, r: &GenRule, peer_key: &str) {
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
    pub(super) fn toml(&self) -> String {
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
        for n in &self.nacls {
            writeln!(out, "[nacls.{}]", n.name).unwrap();
            for (key, peer_key, rules) in
                [("ingress", "from", &n.ingress), ("egress", "to", &n.egress)]
            {
                if let Some(rules) = rules {
                    writeln!(out, "{key} = [").unwrap();
                    for r in rules {
                        render_nacl_rule(&mut out, r, peer_key);
                    }
                    out.push_str("]\n");
                }
            }
            out.push('\n');
        }
        for (i, nacl) in self.iface_nacls.iter().enumerate() {
            let Some(n) = nacl.and_then(|n| self.nacls.get(n)) else {
                continue;
            };
            let groups = if i == 0 {
                &self.attached
            } else {
                &self.others[i - 1]
            };
            let g: Vec<String> = groups.iter().map(|g| format!("\"{g}\"")).collect();
            writeln!(
                out,
                "[interfaces.{}]\ngroups = [{}]\nnacl = \"{}\"\n",
                iface_name(i),
                g.join(", "),
                n.name
            )
            .unwrap();
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

    pub(super) fn parse(&self) -> Option<Config> {
        config::parse(&self.toml(), "differential.toml")
            .ok()
            .map(|l| l.config)
    }
}

/// Addresses, ports and ICMP types that rules and packets draw from, so
/// that they meet often and at their edges.
pub(super) struct Universe {
    pub(super) v4: Vec<Ipv4Addr>,
    pub(super) v6: Vec<Ipv6Addr>,
}

pub(super) const LOCAL4: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 254);
pub(super) const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
pub(super) const PORTS: &[u16] = &[
    0, 1, 2, 21, 22, 23, 53, 80, 443, 1023, 1024, 1025, 8080, 32767, 32768, 65533, 65534, 65535,
];
pub(super) const ICMP4_TYPES: &[u8] = &[0, 3, 5, 8, 11, 13, 255];
pub(super) const ICMP6_TYPES: &[u8] = &[
    1, 2, 3, 4, 128, 129, 130, 131, 132, 133, 135, 137, 138, 142, 143, 144, 255,
];
pub(super) const ICMP_CODES: &[u8] = &[0, 1, 4, 255];
pub(super) const OTHER_PROTOS: &[u8] = &[47, 50, 103, 132, 253, 255];
pub(super) const V4_LENS: &[u8] = &[0, 1, 8, 15, 16, 17, 20, 24, 28, 30, 31, 32, 32];
pub(super) const V6_LENS: &[u8] = &[0, 1, 16, 32, 33, 48, 64, 96, 120, 127, 128, 128];

impl Universe {
    pub(super) fn new(rng: &mut Rng) -> Universe {
        // Addresses share prefixes of random lengths: a base and bit flips.
        let base4 = u32::from(Ipv4Addr::new(198, 18, 0, 0)) | (rng.next_u64() as u32 & 0x1_ffff);
        let base6 = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0))
            | (u128::from(rng.next_u64()) << 32 | u128::from(rng.next_u64() as u32))
                & ((1 << 96) - 1);
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

    pub(super) fn cidr(&self, rng: &mut Rng, v6: bool) -> String {
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
    pub(super) fn remote(&self, rng: &mut Rng, v6: bool) -> IpAddr {
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

pub(super) fn gen_ports(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => "all".into(),
        1 => rng.pick(PORTS).to_string(),
        _ => {
            let a = rng.pick(PORTS);
            let b = if rng.chance(30) {
                rng.next_u64() as u16
            } else {
                rng.pick(PORTS)
            };
            format!("{}-{}", a.min(b), a.max(b))
        }
    }
}

pub(super) fn gen_rule(rng: &mut Rng, u: &Universe, names: &[String]) -> GenRule {
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

pub(super) fn gen_config(rng: &mut Rng, u: &Universe, ifaces: usize) -> GenConfig {
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
    let (nacls, iface_nacls) = gen_nacls(rng, u, &names, ifaces);
    GenConfig {
        groups,
        attached,
        others,
        revoke: rng.chance(30),
        max_entries: None,
        nacls,
        iface_nacls,
    }
}

const NACL_NUMBERS: &[u16] = &[1, 2, 5, 10, 50, 90, 100, 110, 200, 1000, 32765];

/// A NACL rule: an SG rule's protocol and ports, one CIDR peer (overlapping
/// the others: they come from the same universe), allow or deny.
pub(super) fn gen_nacl_rule(
    rng: &mut Rng,
    u: &Universe,
    names: &[String],
    number: u16,
) -> GenNaclRule {
    let mut rule = gen_rule(rng, u, names);
    rule.peers = vec![match rng.below(10) {
        0..=1 => rng
            .pick(&[
                "anywhere",
                "anywhere-ipv4",
                "anywhere-ipv6",
                "0.0.0.0/0",
                "::/0",
            ])
            .to_string(),
        2..=5 => u.cidr(rng, false),
        _ => u.cidr(rng, true),
    }];
    GenNaclRule {
        number,
        allow: rng.chance(55),
        rule,
    }
}

fn gen_nacl_rules(rng: &mut Rng, u: &Universe, names: &[String]) -> Option<Vec<GenNaclRule>> {
    if rng.chance(8) {
        return None;
    }
    let mut numbers: Vec<u16> = Vec::new();
    for _ in 0..rng.below(7) {
        let n = rng.pick(NACL_NUMBERS);
        if !numbers.contains(&n) {
            numbers.push(n);
        }
    }
    let mut rules: Vec<GenNaclRule> = numbers
        .into_iter()
        .map(|n| gen_nacl_rule(rng, u, names, n))
        .collect();
    // Mostly a permissive tail, so that the SG layer still gets traffic;
    // without it the implicit `*` denies what no rule names.
    if rng.chance(65) {
        let mut tail = gen_nacl_rule(rng, u, names, 32766);
        tail.allow = true;
        tail.rule.proto = "proto = \"all\"".into();
        (tail.rule.ports, tail.rule.icmp_type, tail.rule.icmp_code) = (None, None, None);
        tail.rule.peers = vec!["anywhere".into()];
        rules.push(tail);
    }
    Some(rules)
}

/// Up to two NACLs (in 45% of configs), each interface with one of them
/// or none.
pub(super) fn gen_nacls(
    rng: &mut Rng,
    u: &Universe,
    names: &[String],
    ifaces: usize,
) -> (Vec<GenNacl>, Vec<Option<usize>>) {
    if !rng.chance(45) {
        return (Vec::new(), vec![None; ifaces]);
    }
    let nacls: Vec<GenNacl> = (0..1 + rng.below(2))
        .map(|i| GenNacl {
            name: format!("n{i}"),
            ingress: gen_nacl_rules(rng, u, names),
            egress: gen_nacl_rules(rng, u, names),
        })
        .collect();
    let iface_nacls = (0..ifaces)
        .map(|_| rng.chance(75).then(|| rng.below(nacls.len())))
        .collect();
    (nacls, iface_nacls)
}

/// The config applied mid-sequence: half the time a fresh one, half the
/// time the first with rules taken away (and a few added), so that some
/// tracked flows stay allowed and others lose their rule (SPEC 1.8).
pub(super) fn gen_second_config(rng: &mut Rng, u: &Universe, first: &GenConfig) -> GenConfig {
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
        // NACLs change too: rules go, actions flip, interfaces move.
        for n in &mut c.nacls {
            for rules in [&mut n.ingress, &mut n.egress].into_iter().flatten() {
                rules.retain(|_| rng.chance(75));
                for r in rules.iter_mut() {
                    if rng.chance(15) {
                        r.allow = !r.allow;
                    }
                }
            }
        }
        if !c.nacls.is_empty() {
            for n in &mut c.iface_nacls {
                if rng.chance(20) {
                    *n = rng.chance(50).then(|| rng.below(c.nacls.len()));
                }
            }
        }
        c
    };
    c.revoke = rng.chance(70);
    c.max_entries = first.max_entries;
    c
}
