//! Network ACLs (SPEC 2), read plainly: the rules of one direction in
//! number order, the first whose protocol, ports (ICMP type and code) and
//! one peer (a CIDR, or a CIDR of its prefix list) match decides; none
//! matching is the implicit `*` deny.

use sg::config::{Config, Direction, NaclAction, Peer, PortMatch, Proto};
use sg_common::NACL_RULE_IMPLICIT;

use super::*;

/// The NACL verdict on `pkt` in `direction`: the deciding rule's number
/// (`NACL_RULE_IMPLICIT` for `*`) and whether it allows.
pub fn nacl_decision(
    config: &Config,
    nacl: &str,
    pkt: &PacketSpec,
    direction: Direction,
) -> (u16, bool) {
    let remote = match direction {
        Direction::Ingress => pkt.src,
        Direction::Egress => pkt.dst,
    };
    let proto = pkt.proto();
    let mut rules: Vec<_> = config.nacls[nacl].rules(direction).iter().collect();
    rules.sort_by_key(|r| r.number);
    for r in rules {
        let proto_ok = match r.proto {
            Proto::All => true,
            Proto::Number(n) => n == proto,
        };
        let l4_ok = match (r.ports, pkt.l4) {
            (PortMatch::All, _) => true,
            (PortMatch::Range { from, to }, L4::Tcp { dport, .. } | L4::Udp { dport, .. }) => {
                from <= dport && dport <= to
            }
            (
                PortMatch::Icmp {
                    icmp_type,
                    icmp_code,
                },
                L4::Icmp {
                    icmp_type: t,
                    code: c,
                    ..
                },
            ) => icmp_type.is_none_or(|w| w == t) && icmp_code.is_none_or(|w| w == c),
            _ => false,
        };
        let peer_ok = r.peers.iter().any(|peer| match peer {
            Peer::Cidr(net) => net.contains(&remote),
            Peer::PrefixList(l) => config
                .prefix_lists
                .get(l)
                .is_some_and(|l| l.entries.iter().any(|e| e.cidr.contains(&remote))),
            Peer::Group(_) => false, // refused by the config parser
        });
        if proto_ok && l4_ok && peer_ok {
            return (r.number, r.action == NaclAction::Allow);
        }
    }
    (NACL_RULE_IMPLICIT, false)
}
