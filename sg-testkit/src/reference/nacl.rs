//! Network ACLs (SPEC 2), read plainly: the rules of one direction in
//! number order, the first whose protocol, ports (ICMP type and code) and
//! one peer (a CIDR, or a CIDR of its prefix list) match decides; none
//! matching is the implicit `*` deny.

use sg::config::{Config, Direction, NaclAction};
use sg_common::NACL_RULE_IMPLICIT;

use super::{
    rules::{proto_and_ports_match, static_peer_holds},
    *,
};

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
    let mut rules: Vec<_> = config.nacls[nacl].rules(direction).iter().collect();
    rules.sort_by_key(|r| r.number);
    for r in rules {
        // Group peers are refused by the config parser.
        if proto_and_ports_match(r.proto, r.ports, pkt)
            && r.peers
                .iter()
                .any(|peer| static_peer_holds(config, peer, remote))
        {
            return (r.number, r.action == NaclAction::Allow);
        }
    }
    (NACL_RULE_IMPLICIT, false)
}
