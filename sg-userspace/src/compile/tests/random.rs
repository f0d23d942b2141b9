//! The compiled tables against a direct reading of SPEC 1.3, on random
//! policies.

use super::*;
use ipnet::IpNet;

fn rand_v4(rng: &mut Rng) -> Ipv4Addr {
    let a = rng.pick(&[0u8, 1, 2, 128]);
    let b = rng.pick(&[0u8, 1, 128, 255]);
    let c = rng.pick(&[0u8, 1, 2, 255]);
    if rng.chance(10) {
        Ipv4Addr::from(rng.next() as u32)
    } else {
        Ipv4Addr::new(10, a, b, c)
    }
}

fn rand_v6(rng: &mut Rng) -> Ipv6Addr {
    let hi = rng.pick(&[0u16, 1, 0x8000]);
    let lo = rng.pick(&[0u16, 1, 2, 0xffff]);
    if rng.chance(10) {
        Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()))
    } else {
        Ipv6Addr::new(0x2001, 0xdb8, hi, 0, 0, 0, 0, lo)
    }
}

fn rand_addr(rng: &mut Rng) -> IpAddr {
    if rng.chance(60) {
        IpAddr::V4(rand_v4(rng))
    } else {
        IpAddr::V6(rand_v6(rng))
    }
}

fn rand_cidr(rng: &mut Rng) -> String {
    if rng.chance(60) {
        let len = rng.pick(&[0u8, 8, 9, 16, 23, 24, 25, 31, 32, 32]);
        format!("{}/{len}", rand_v4(rng))
    } else {
        let len = rng.pick(&[0u8, 32, 47, 48, 64, 112, 127, 128, 128]);
        format!("{}/{len}", rand_v6(rng))
    }
}

fn rand_peer(rng: &mut Rng, groups: usize) -> String {
    match rng.below(10) {
        0 => rng
            .pick(&["anywhere", "anywhere-ipv4", "anywhere-ipv6"])
            .to_string(),
        1 => format!("sg:g{}", rng.below(groups as u64)),
        // Both prefix lists are defined by `rand_config` (SPEC 9.1).
        2 if rng.chance(50) => format!("pl:p{}", rng.below(2)),
        2 => format!("sg:g{}", rng.below(groups as u64)),
        3 => rand_addr(rng).to_string(),
        _ => rand_cidr(rng),
    }
}

const EDGE_PORTS: [u16; 10] = [0, 1, 22, 53, 1023, 1024, 32768, 65534, 65535, 443];

fn rand_port(rng: &mut Rng) -> u16 {
    if rng.chance(50) {
        rng.pick(&EDGE_PORTS)
    } else {
        rng.below(65536) as u16
    }
}

fn rand_match(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => r#"proto = "all""#.to_string(),
        1 => format!("proto = {}", rng.pick(&[0u8, 47, 132, 255])),
        2 => format!(
            r#"type = "{}""#,
            rng.pick(&["ssh", "dns-udp", "all-tcp", "all-icmp", "https"])
        ),
        3 | 4 => {
            let t = rng.pick(&[0u8, 3, 8, 128, 255]);
            let proto = rng.pick(&["icmp", "icmpv6"]);
            match rng.below(3) {
                0 => format!(r#"proto = "{proto}""#),
                1 => format!(r#"proto = "{proto}", icmp_type = {t}"#),
                _ => format!(
                    r#"proto = "{proto}", icmp_type = {t}, icmp_code = {}"#,
                    rng.pick(&[0u8, 1, 4, 255])
                ),
            }
        }
        _ => {
            let proto = rng.pick(&["tcp", "udp"]);
            let ports = match rng.below(4) {
                0 => "all".to_string(),
                1 => rand_port(rng).to_string(),
                _ => {
                    let (a, b) = (rand_port(rng), rand_port(rng));
                    format!("{}-{}", a.min(b), a.max(b))
                }
            };
            format!(r#"proto = "{proto}", ports = "{ports}""#)
        }
    }
}

fn rand_rules(rng: &mut Rng, groups: usize, key: &str) -> String {
    let n = rng.below(7);
    let mut s = String::from("[\n");
    for _ in 0..n {
        let peers: Vec<String> = (0..1 + rng.below(3))
            .map(|_| format!("\"{}\"", rand_peer(rng, groups)))
            .collect();
        s.push_str(&format!(
            "  {{ {}, {key} = [{}] }},\n",
            rand_match(rng),
            peers.join(", ")
        ));
    }
    s.push(']');
    s
}

fn rand_config(rng: &mut Rng) -> String {
    let groups = 1 + rng.below(4) as usize;
    let mut s = String::new();
    for p in 0..2 {
        let entries: Vec<String> = (0..rng.below(4))
            .map(|_| format!("\"{}\"", rand_cidr(rng)))
            .collect();
        s.push_str(&format!(
            "[prefix_lists.p{p}]\nentries = [{}]\n",
            entries.join(", ")
        ));
    }
    for g in 0..groups {
        s.push_str(&format!("[groups.g{g}]\n"));
        if rng.chance(50) {
            let members: Vec<String> = (0..rng.below(4))
                .map(|_| {
                    if rng.chance(50) {
                        format!("\"{}\"", rand_addr(rng))
                    } else {
                        format!("\"{}\"", rand_cidr(rng))
                    }
                })
                .collect();
            s.push_str(&format!("members = [{}]\n", members.join(", ")));
        }
        if rng.chance(85) {
            s.push_str(&format!("ingress = {}\n", rand_rules(rng, groups, "from")));
        }
        if rng.chance(70) {
            s.push_str(&format!("egress = {}\n", rand_rules(rng, groups, "to")));
        }
    }
    s
}

fn rand_packet(rng: &mut Rng, cfg: &Config, atts: &[Attachment]) -> Packet {
    // Bias addresses towards the ones the config and attachments name.
    let addr = match rng.below(4) {
        0 => {
            let nets: Vec<IpNet> = cfg
                .all_rules()
                .flat_map(|r| r.peers.iter())
                .filter_map(|p| match p {
                    Peer::Cidr(n) => Some(*n),
                    Peer::Group(_) | Peer::PrefixList(_) => None,
                })
                .chain(cfg.groups.values().flat_map(|g| g.members.iter().copied()))
                .chain(
                    cfg.prefix_lists
                        .values()
                        .flat_map(|l| l.entries.iter().map(|e| e.cidr)),
                )
                .collect();
            if nets.is_empty() {
                rand_addr(rng)
            } else {
                let n = nets[rng.below(nets.len() as u64) as usize];
                // The network address, the last address, or one inside.
                match (n, rng.below(3)) {
                    (n, 0) => n.network(),
                    (n, 1) => n.broadcast(),
                    (IpNet::V4(n), _) => IpAddr::V4(Ipv4Addr::from(
                        u32::from(n.network()) | (rng.next() as u32 & !u32::from(n.netmask())),
                    )),
                    (IpNet::V6(n), _) => IpAddr::V6(Ipv6Addr::from(
                        u128::from(n.network())
                            | (u128::from(rng.next()) & !u128::from(n.netmask())),
                    )),
                }
            }
        }
        1 => {
            let addrs: Vec<IpAddr> = atts.iter().flat_map(|a| a.addrs.iter().copied()).collect();
            if addrs.is_empty() {
                rand_addr(rng)
            } else {
                addrs[rng.below(addrs.len() as u64) as usize]
            }
        }
        _ => rand_addr(rng),
    };
    let proto = rng.pick(&[6u8, 6, 17, 17, 1, 58, 47, 0, 132]);
    Packet {
        addr,
        proto,
        port: rand_port(rng),
        icmp_type: rng.pick(&[0u8, 3, 8, 128, 255, 9]),
        icmp_code: rng.pick(&[0u8, 1, 4, 255]),
    }
}

fn rand_attachments(rng: &mut Rng, cfg: &Config) -> Vec<Attachment> {
    let names: Vec<&String> = cfg.groups.keys().collect();
    (0..1 + rng.below(3))
        .map(|i| {
            let groups: Vec<String> = (0..1 + rng.below(3))
                .map(|_| names[rng.below(names.len() as u64) as usize].clone())
                .collect();
            let addrs: Vec<IpAddr> = (0..rng.below(3)).map(|_| rand_addr(rng)).collect();
            Attachment {
                iface: format!("veth{i}"),
                groups,
                addrs,
            }
        })
        .collect()
}

#[test]
fn compiled_maps_agree_with_the_reference_on_random_policies() {
    let mut configs = 0;
    let mut allowed = 0u64;
    let mut denied = 0u64;
    for seed in 0..400u64 {
        let mut rng = Rng::new(seed);
        let src = rand_config(&mut rng);
        let cfg = match config::parse(&src, "rand.toml") {
            Ok(l) => l.config,
            // A random config may repeat a rule; that is an error by design.
            Err(e) if e.message.contains("duplicate rule") => continue,
            Err(e) => panic!("seed {seed}: {e}\n{src}"),
        };
        configs += 1;
        let atts = rand_attachments(&mut rng, &cfg);
        let first = 1 + rng.below(1000) as u32;
        let c = compile(&cfg, &atts, first).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        check_invariants(&c, first);
        let tables = KernelTables::of(&c);
        for a in &atts {
            let mut groups = a.groups.clone();
            groups.sort();
            groups.dedup();
            for d in Direction::ALL {
                let policy = c.ifaces[&a.iface].policy(d);
                for _ in 0..150 {
                    let p = rand_packet(&mut rng, &cfg, &atts);
                    let want = reference(&cfg, &atts, &groups, d, &p);
                    let got = lookup_ref(&tables, policy, &p)
                        .map(|r| c.rules[r.rule as usize].id.clone());
                    match &got {
                        Some(id) => {
                            allowed += 1;
                            assert!(
                                want.contains(id),
                                "seed {seed}: {} {d} {p:?}: compiled allows by {id}, \
                                 reference allows by {want:?}\n{src}",
                                a.iface
                            );
                        }
                        None => {
                            denied += 1;
                            assert!(
                                want.is_empty(),
                                "seed {seed}: {} {d} {p:?}: compiled denies, reference \
                                 allows by {want:?}\n{src}",
                                a.iface
                            );
                        }
                    }
                }
            }
        }
    }
    assert!(configs > 300, "only {configs} usable configs");
    // Both verdicts are well represented.
    assert!(
        allowed > 10_000 && denied > 10_000,
        "allowed {allowed}, denied {denied}"
    );
}
