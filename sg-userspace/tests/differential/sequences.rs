//! Packet sequences: flows that open, answer and close, and strays.

use super::*;

#[derive(Clone, Debug)]
pub(super) enum Step {
    Packet(Direction, PacketSpec),
    /// Apply the case's second config, keeping conntrack (SPEC 1.8).
    Switch,
}

#[derive(Clone, Debug)]
pub(super) struct Case {
    pub(super) configs: Vec<GenConfig>,
    pub(super) steps: Vec<Step>,
    /// Per interface: no link header (an L3 interface such as tun).
    pub(super) l3: Vec<bool>,
}

#[derive(Clone, Copy)]
pub(super) enum FlowKind {
    Tcp,
    Udp,
    Echo(u16),
    Other(u8),
}

#[derive(Clone, Copy)]
pub(super) struct FlowGen {
    /// Direction of the opener's packets.
    pub(super) dir: Direction,
    pub(super) opener: (IpAddr, u16),
    pub(super) responder: (IpAddr, u16),
    pub(super) kind: FlowKind,
    /// The interface the flow runs on.
    pub(super) iface: usize,
}

pub(super) fn reverse(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

pub(super) fn port(rng: &mut Rng) -> u16 {
    if rng.chance(80) {
        rng.pick(PORTS)
    } else {
        rng.next_u64() as u16
    }
}

pub(super) fn framing(rng: &mut Rng, v6: bool, l3: bool) -> Framing {
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

pub(super) fn tcp_flags_any(rng: &mut Rng) -> u8 {
    let random = rng.next_u64() as u8;
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
pub(super) struct SeqSides {
    pub(super) next: [u32; 2],
    pub(super) win: [u16; 2],
    pub(super) wscale: [Option<u8>; 2],
}

impl SeqSides {
    pub(super) fn new(rng: &mut Rng) -> SeqSides {
        let mut s = SeqSides {
            next: [rng.next_u64() as u32, rng.next_u64() as u32],
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
    pub(super) fn segment(&mut self, rng: &mut Rng, x: usize, flags: u8) -> TcpSeg {
        let other = 1 - x;
        let syn = flags & SYN != 0;
        if syn && (flags & ACK == 0 || rng.chance(30)) {
            // A new (or reused) connection: a fresh ISN and options.
            self.next[x] = rng.next_u64() as u32;
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
                    .wrapping_add(rng.next_u64() as u32 % 1000),
                7 => next.wrapping_sub(1 << 20),
                _ => rng.next_u64() as u32,
            }
        } else {
            next
        };
        let ack = if rng.chance(90) {
            self.next[other]
        } else {
            let random = rng.next_u64() as u32;
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

pub(super) struct SeqGen<'u> {
    pub(super) u: &'u Universe,
    /// Per interface: L3 framing.
    pub(super) l3: Vec<bool>,
    pub(super) flows: Vec<FlowGen>,
    /// Each flow's TCP sequence state, by index in `flows`.
    pub(super) seqs: Vec<SeqSides>,
    pub(super) first_frags: Vec<(Direction, PacketSpec)>,
    pub(super) steps: Vec<Step>,
}

impl SeqGen<'_> {
    pub(super) fn local(v6: bool) -> IpAddr {
        if v6 { LOCAL6.into() } else { LOCAL4.into() }
    }

    pub(super) fn push(
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
    pub(super) fn push_seg(
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
    pub(super) fn push_spec(&mut self, rng: &mut Rng, dir: Direction, mut pkt: PacketSpec) {
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
                u32::from(rng.next_u64() as u16)
            } else {
                rng.next_u64() as u32
            };
            pkt.frag = Frag::First { id };
            self.first_frags.push((dir, pkt.clone()));
        }
        self.steps.push(Step::Packet(dir, pkt));
    }

    /// A random direction and the packet's source and destination: a
    /// remote address and this interface's, v6 `v6_percent` of the time,
    /// inbound `ingress_percent` of the time.
    pub(super) fn endpoints(
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

    pub(super) fn new_flow(&mut self, rng: &mut Rng) {
        let (v6, dir, src, dst) = self.endpoints(rng, 45, 55);
        let kind = match rng.below(20) {
            0..=7 => FlowKind::Tcp,
            8..=13 => FlowKind::Udp,
            14..=17 => FlowKind::Echo(rng.next_u64() as u16),
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
    pub(super) fn send(
        &mut self,
        rng: &mut Rng,
        fi: usize,
        forward: bool,
        flags: u8,
        request: bool,
    ) {
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
    pub(super) fn l4_of(
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
    pub(super) fn icmp_error(&mut self, rng: &mut Rng, flow: FlowGen) {
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
        let id = rng.next_u64() as u16 as u32;
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
            id: rng.next_u64() as u16,
        };
        let mut err = PacketSpec::new(src, dst, l4);
        err.quote = Some(Box::new(q));
        err.iface = flow.iface;
        self.push_spec(rng, dir, err);
    }

    pub(super) fn step(&mut self, rng: &mut Rng) {
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
                    id: rng.next_u64() as u16,
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
                        id: rng.next_u64() as u16 as u32,
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
pub(super) const MAX_IFACES: usize = 3;

pub(super) fn gen_case(rng: &mut Rng, packets: usize) -> Case {
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
