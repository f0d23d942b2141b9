//! Which connections an interface adopts, and the tracked entries they
//! become: those whose local end is on the interface and whose opening
//! packet the new policy allows in its direction, found with the same
//! classification search the datapath runs (`sg_common::search`) over
//! the compiled tables.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use sg_common::{
    CT_F_ADOPTED, CT_F_OPENED_BY_B, CT_F_OPENED_EGRESS, CT_F_REPLIED, CT_SIDE_OPENER,
    CT_SIDE_RESPONDER, CT_TCP_ESTABLISHED, CT_TCP_FIN, CT_UDP_STREAM, CtKey, CtValue, Direction,
    FAMILY_V4, FAMILY_V6, IFACE_F_EGRESS_ALL_V4, IFACE_F_EGRESS_ALL_V6, IFACE_F_INGRESS_ALL_V4,
    IFACE_F_INGRESS_ALL_V6, PROTO_TCP, PROTO_UDP, PeerKeyV4, PeerKeyV6, PeerLengths,
    PeerLengthsKey, PeerNet, PeerNetKeyV4, PeerNetKeyV6, RULE_F_ANYWHERE, RuleInterval, RuleRef,
    RuleSetKey, RuleSpan, TCP_WSCALE_UNKNOWN, TO_TCP_ESTABLISHED, TO_TCP_FIN, TO_UDP_STREAM,
    search::{interval_rule, longest_prefix_class},
};

use super::sockets::Conn;
use crate::compile::{IfaceBinding, KernelTables};

/// The compiled tables, indexed as the kernel's hash maps are.
pub struct Rules {
    hosts_v4: HashMap<PeerKeyV4, u32>,
    hosts_v6: HashMap<PeerKeyV6, u32>,
    nets_v4: HashMap<PeerNetKeyV4, PeerNet>,
    nets_v6: HashMap<PeerNetKeyV6, PeerNet>,
    lengths: HashMap<PeerLengthsKey, PeerLengths>,
    sets: HashMap<RuleSetKey, Vec<RuleInterval>>,
}

impl Rules {
    pub fn new(t: &KernelTables) -> Rules {
        Rules {
            hosts_v4: t.peers.hosts_v4.iter().copied().collect(),
            hosts_v6: t.peers.hosts_v6.iter().copied().collect(),
            nets_v4: t.peers.nets_v4.iter().copied().collect(),
            nets_v6: t.peers.nets_v6.iter().copied().collect(),
            lengths: t.peers.lengths.iter().copied().collect(),
            sets: t
                .rule_sets
                .iter()
                .map(|s| (s.key, s.intervals.clone()))
                .collect(),
        }
    }

    /// The rule of `policy` that allows a `proto` packet to port `port`
    /// whose remote end is `peer`: the datapath's `allowing_rule`.
    pub fn allowing(&self, policy: u32, proto: u8, peer: IpAddr, port: u16) -> Option<RuleRef> {
        let class = self.class(policy, peer)?;
        let key = RuleSetKey {
            class,
            proto,
            any: 0,
            _pad: [0; 2],
        };
        let any = RuleSetKey {
            proto: 0,
            any: 1,
            ..key
        };
        let set = self.sets.get(&key).or_else(|| self.sets.get(&any))?;
        let span = RuleSpan {
            first: 0,
            len: set.len() as u32,
        };
        interval_rule(span, port, |i| set.get(i as usize))
    }

    fn class(&self, policy: u32, peer: IpAddr) -> Option<u32> {
        let pid = policy.to_be_bytes();
        let (family, host) = match peer {
            IpAddr::V4(a) => (
                FAMILY_V4,
                self.hosts_v4.get(&PeerKeyV4 {
                    policy: pid,
                    addr: a.octets(),
                }),
            ),
            IpAddr::V6(a) => (
                FAMILY_V6,
                self.hosts_v6.get(&PeerKeyV6 {
                    policy: pid,
                    addr: a.octets(),
                }),
            ),
        };
        if let Some(&class) = host {
            return Some(class);
        }
        let lengths = self.lengths.get(&PeerLengthsKey {
            policy,
            family,
            _pad: [0; 3],
        })?;
        let best = longest_prefix_class(lengths, |len| match peer {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                self.nets_v4.get(&PeerNetKeyV4 {
                    policy: pid,
                    len,
                    _pad: [0; 3],
                    addr: (u32::from(a) & mask).to_be_bytes(),
                })
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                self.nets_v6.get(&PeerNetKeyV6 {
                    policy: pid,
                    len,
                    _pad: [0; 3],
                    addr: (u128::from(a) & mask).to_be_bytes(),
                })
            }
        });
        (best != 0).then_some(best)
    }
}

/// The interface a set of connections is adopted on.
pub struct Target<'a> {
    pub ifindex: u32,
    /// Its addresses: a connection is adopted only if its local end is one.
    pub addrs: &'a [IpAddr],
    pub binding: IfaceBinding,
}

fn raw(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(a) => {
            let mut raw = [0; 16];
            raw[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, raw)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

/// The canonical key of a flow between `x` and `y` (the kernel's
/// `flow_of`: the endpoint that sorts lower is `a`), and whether `x` is
/// `a`.
pub fn ct_key(ifindex: u32, proto: u8, x: SocketAddr, y: SocketAddr) -> (CtKey, bool) {
    let (family, ax) = raw(x.ip());
    let (_, ay) = raw(y.ip());
    let x_is_a = (ax, x.port()) <= (ay, y.port());
    let ((addr_a, port_a), (addr_b, port_b)) = if x_is_a {
        ((ax, x.port()), (ay, y.port()))
    } else {
        ((ay, y.port()), (ax, x.port()))
    };
    let key = CtKey {
        addr_a,
        addr_b,
        port_a,
        port_b,
        ifindex,
        proto,
        family,
        _pad: [0; 2],
    };
    (key, x_is_a)
}

/// Would the datapath leave this flow untracked (SPEC 1.8)? Then there is
/// nothing to adopt: its packets pass by the rules both ways.
fn untracked(rule: &RuleRef, flags: u32, direction: Direction, v4: bool) -> bool {
    let other_all = match (direction, v4) {
        (Direction::Ingress, true) => IFACE_F_EGRESS_ALL_V4,
        (Direction::Ingress, false) => IFACE_F_EGRESS_ALL_V6,
        (Direction::Egress, true) => IFACE_F_INGRESS_ALL_V4,
        (Direction::Egress, false) => IFACE_F_INGRESS_ALL_V6,
    };
    rule.flags & RULE_F_ANYWHERE != 0 && flags & other_all != 0
}

/// The entries `target` adopts from `conns`, `now` being the kernel's
/// clock and `timeouts_ns` the configured timeouts.
pub fn entries(
    conns: &[Conn],
    target: &Target,
    rules: &Rules,
    timeouts_ns: &[u64],
    now: u64,
) -> Vec<(CtKey, CtValue)> {
    let mut out: Vec<(CtKey, CtValue)> = Vec::new();
    for c in conns {
        if c.proto != PROTO_TCP && c.proto != PROTO_UDP {
            continue;
        }
        // Traffic between two local addresses never crosses the interface.
        if !target.addrs.contains(&c.local.ip()) || target.addrs.contains(&c.remote.ip()) {
            continue;
        }
        let (direction, responder) = if c.inbound {
            (Direction::Ingress, c.local)
        } else {
            (Direction::Egress, c.remote)
        };
        let Some(rule) = rules.allowing(
            target.binding.policy(direction),
            c.proto,
            c.remote.ip(),
            responder.port(),
        ) else {
            continue;
        };
        if untracked(&rule, target.binding.flags, direction, c.local.is_ipv4()) {
            continue;
        }
        out.push(entry(c, target.ifindex, rule.rule, timeouts_ns, now));
    }
    out
}

/// The tracked entry of an adopted connection `c` on `ifindex`, allowed
/// by rule slot `rule`: established (a UDP stream), opened from the side
/// and in the direction it was, expiring after its state's timeout.
pub fn entry(c: &Conn, ifindex: u32, rule: u32, timeouts_ns: &[u64], now: u64) -> (CtKey, CtValue) {
    let (direction, opener, responder) = if c.inbound {
        (Direction::Ingress, c.remote, c.local)
    } else {
        (Direction::Egress, c.local, c.remote)
    };
    let (key, opener_is_a) = ct_key(ifindex, c.proto, opener, responder);
    let mut flags = CT_F_ADOPTED | CT_F_REPLIED;
    if !opener_is_a {
        flags |= CT_F_OPENED_BY_B;
    }
    if direction == Direction::Egress {
        flags |= CT_F_OPENED_EGRESS;
    }
    let (state, timeout) = if c.proto == PROTO_TCP && c.closing {
        (CT_TCP_FIN, timeouts_ns[TO_TCP_FIN])
    } else if c.proto == PROTO_TCP {
        (CT_TCP_ESTABLISHED, timeouts_ns[TO_TCP_ESTABLISHED])
    } else {
        (CT_UDP_STREAM, timeouts_ns[TO_UDP_STREAM])
    };
    let mut value = CtValue {
        expires_ns: now.saturating_add(timeout),
        state,
        flags,
        // More than one reply: a UDP stream stays one.
        replies: 2,
        rule,
        ..CtValue::default()
    };
    // No sequence numbers: each side's window is learnt from its first
    // packet (`maxwin == 0`), scaled as the handshake agreed.
    let (host, peer) = c.wscale.unwrap_or((TCP_WSCALE_UNKNOWN, TCP_WSCALE_UNKNOWN));
    let (opener_ws, responder_ws) = if c.inbound {
        (peer, host)
    } else {
        (host, peer)
    };
    value.tcp[CT_SIDE_OPENER].wscale = opener_ws;
    value.tcp[CT_SIDE_RESPONDER].wscale = responder_ws;
    (key, value)
}

#[cfg(test)]
mod tests {
    use sg_common::{CT_F_ADOPTED, CT_F_OPENED_BY_B, CT_F_OPENED_EGRESS};

    use super::*;
    use crate::compile::{Attachment, compile};

    const TIMEOUTS: [u64; 8] = [100, 1, 1, 1, 1, 50, 1, 1];

    fn conn(proto: u8, local: &str, remote: &str, inbound: bool) -> Conn {
        Conn {
            proto,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inbound,
            wscale: Some((7, 9)),
            closing: false,
        }
    }

    /// The entries `eth0` (198.18.0.1, 2001:db8::1) adopts under `toml`.
    fn adopted(toml: &str, conns: &[Conn]) -> Vec<(CtKey, CtValue)> {
        let config = crate::config::parse(toml, "t.toml").unwrap().config;
        let addrs: Vec<IpAddr> = vec![
            "198.18.0.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ];
        let att = Attachment {
            iface: "eth0".into(),
            groups: vec!["g".into()],
            addrs: addrs.clone(),
        };
        let compiled = compile(&config, &[att], 1).unwrap();
        let target = Target {
            ifindex: 7,
            addrs: &addrs,
            binding: compiled.ifaces["eth0"],
        };
        let rules = Rules::new(&KernelTables::of(&compiled));
        entries(conns, &target, &rules, &TIMEOUTS, 1000)
    }

    const SSH_IN: &str = "[groups.g]\negress = []\ningress = [{ proto = \"tcp\", ports = \"22\", from = [\"198.18.1.0/24\", \"2001:db8:1::/48\"] }]\n";

    #[test]
    fn only_what_the_policy_allows_in_its_opening_direction_on_the_interface() {
        let conns = [
            conn(PROTO_TCP, "198.18.0.1:22", "198.18.1.5:4000", true),
            conn(PROTO_TCP, "[2001:db8::1]:22", "[2001:db8:1::5]:4000", true),
            // Peer outside the rule, port outside it, opened outbound.
            conn(PROTO_TCP, "198.18.0.1:22", "198.18.2.5:4000", true),
            conn(PROTO_TCP, "198.18.0.1:23", "198.18.1.5:4000", true),
            conn(PROTO_TCP, "198.18.0.1:4000", "198.18.1.5:22", false),
            // Not this interface's address; a local peer (loopback path).
            conn(PROTO_TCP, "198.18.9.9:22", "198.18.1.5:4000", true),
            conn(PROTO_TCP, "198.18.0.1:22", "198.18.0.1:4000", true),
        ];
        let got = adopted(SSH_IN, &conns);
        assert_eq!(got.len(), 2, "{got:?}");
        let (key, value) = got[0];
        // 198.18.0.1:22 sorts first: the opener (the client) is `b`.
        assert_eq!(&key.addr_a[..4], &[198, 18, 0, 1]);
        assert_eq!((key.port_a, key.port_b, key.ifindex), (22, 4000, 7));
        assert_eq!(
            value.flags & (CT_F_ADOPTED | CT_F_OPENED_BY_B | CT_F_OPENED_EGRESS),
            CT_F_ADOPTED | CT_F_OPENED_BY_B
        );
        assert_eq!((value.state, value.expires_ns), (CT_TCP_ESTABLISHED, 1100));
        // The client (opener) announced 9, the host 7.
        assert_eq!(value.tcp[CT_SIDE_OPENER].wscale, 9);
        assert_eq!(value.tcp[CT_SIDE_RESPONDER].wscale, 7);
        assert_eq!(value.tcp[CT_SIDE_OPENER].maxwin, 0, "window not seen yet");
        assert_eq!(got[1].0.family, sg_common::FAMILY_V6);
    }

    #[test]
    fn flows_the_datapath_leaves_untracked_are_not_adopted() {
        let open = "[groups.g]\ningress = [{ proto = \"all\", from = \"anywhere\" }]\n";
        let conns = [
            conn(PROTO_TCP, "198.18.0.1:22", "198.18.1.5:4000", true),
            conn(PROTO_UDP, "198.18.0.1:5000", "198.18.1.5:53", false),
        ];
        assert_eq!(adopted(open, &conns), Vec::new());
    }

    #[test]
    fn outbound_udp_is_a_stream_opened_on_egress() {
        let dns =
            "[groups.g]\negress = [{ proto = \"udp\", ports = \"53\", to = \"198.18.1.0/24\" }]\n";
        let conns = [conn(PROTO_UDP, "198.18.0.1:5000", "198.18.1.5:53", false)];
        let got = adopted(dns, &conns);
        assert_eq!(got.len(), 1);
        let (key, value) = got[0];
        assert_eq!((key.port_a, key.port_b), (5000, 53));
        assert_eq!(
            value.flags & CT_F_OPENED_BY_B,
            0,
            "the host is `a` and opened it"
        );
        assert_ne!(value.flags & CT_F_OPENED_EGRESS, 0);
        assert_eq!((value.state, value.expires_ns), (CT_UDP_STREAM, 1050));
    }
}
