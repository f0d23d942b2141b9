//! Which rules allow a packet (SPEC 1.3-1.6).

use std::net::IpAddr;

use sg::config::{Config, Direction, Peer, PortMatch, Proto, Rule};

use super::*;

pub(super) fn is_echo_request(pkt: &PacketSpec) -> bool {
    matches!(
        (pkt.src.is_ipv4(), pkt.l4),
        (true, L4::Icmp { icmp_type: 8, .. }) | (false, L4::Icmp { icmp_type: 128, .. })
    )
}

pub(super) fn is_echo(pkt: &PacketSpec) -> bool {
    is_echo_request(pkt)
        || matches!(
            (pkt.src.is_ipv4(), pkt.l4),
            (true, L4::Icmp { icmp_type: 0, .. }) | (false, L4::Icmp { icmp_type: 129, .. })
        )
}

/// Does `addr` belong to the members of group `name` (SPEC 1.5)?
pub(super) fn is_member(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    name: &str,
    addr: IpAddr,
) -> bool {
    let listed = config
        .groups
        .get(name)
        .is_some_and(|g| g.members.iter().any(|net| net.contains(&addr)));
    let local = groups.iter().any(|g| g == name) && local_addrs.contains(&addr);
    listed || local
}

/// The rules of the attached `groups` that allow `pkt` in `direction`.
pub(super) fn allowing_rules<'c>(
    config: &'c Config,
    groups: &'c [String],
    local_addrs: &'c [IpAddr],
    pkt: &'c PacketSpec,
    direction: Direction,
) -> impl Iterator<Item = &'c Rule> + 'c {
    let remote = match direction {
        Direction::Ingress => pkt.src,
        Direction::Egress => pkt.dst,
    };
    groups
        .iter()
        .filter_map(|name| config.groups.get(name))
        .flat_map(move |group| group.rules(direction))
        .filter(move |rule| {
            proto_and_ports_match(rule.proto, rule.ports, pkt)
                && rule.peers.iter().any(|peer| match peer {
                    Peer::Group(g) => is_member(config, groups, local_addrs, g, remote),
                    _ => static_peer_holds(config, peer, remote),
                })
        })
}

/// Does a rule of protocol `proto` and `ports` (ICMP type and code) match
/// `pkt`? The same reading for security-group and NACL rules.
pub(super) fn proto_and_ports_match(proto: Proto, ports: PortMatch, pkt: &PacketSpec) -> bool {
    let proto_ok = match proto {
        Proto::All => true,
        Proto::Number(n) => n == pkt.proto(),
    };
    let l4_ok = match (ports, pkt.l4) {
        (PortMatch::All, _) => true,
        (PortMatch::Range { from, to }, L4::Tcp { dport, .. } | L4::Udp { dport, .. }) => {
            from <= dport && dport <= to
        }
        (PortMatch::Range { .. }, _) => false,
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
        ) => icmp_type.is_none_or(|want| want == t) && icmp_code.is_none_or(|want| want == c),
        (PortMatch::Icmp { .. }, _) => false,
    };
    proto_ok && l4_ok
}

/// Is `remote` in `peer`, a CIDR or a prefix list? A group peer holds
/// nothing here: its members depend on the attachments.
pub(super) fn static_peer_holds(config: &Config, peer: &Peer, remote: IpAddr) -> bool {
    match peer {
        Peer::Cidr(net) => net.contains(&remote),
        Peer::PrefixList(l) => config
            .prefix_lists
            .get(l)
            .is_some_and(|l| l.entries.iter().any(|e| e.cidr.contains(&remote))),
        Peer::Group(_) => false,
    }
}

/// Does any rule of the attached `groups` allow `pkt` in `direction`?
/// Answers with the allowing rule's ID.
pub fn allowing_rule<'c>(
    config: &'c Config,
    groups: &'c [String],
    local_addrs: &'c [IpAddr],
    pkt: &'c PacketSpec,
    direction: Direction,
) -> Option<&'c str> {
    allowing_rules(config, groups, local_addrs, pkt, direction)
        .next()
        .map(|r| r.id.as_str())
}

/// Does `rule` name the whole address space of `v4`'s family as a peer
/// (directly, or through a group listing a /0 member)?
pub(super) fn peer_is_everywhere(config: &Config, rule: &Rule, v4: bool) -> bool {
    let everywhere = |net: &ipnet::IpNet| net.prefix_len() == 0 && net.addr().is_ipv4() == v4;
    rule.peers.iter().any(|peer| match peer {
        Peer::Cidr(net) => everywhere(net),
        Peer::PrefixList(l) => config
            .prefix_lists
            .get(l)
            .is_some_and(|l| l.entries.iter().any(|e| everywhere(&e.cidr))),
        Peer::Group(g) => config
            .groups
            .get(g)
            .is_some_and(|g| g.members.iter().any(everywhere)),
    })
}

/// SPEC 1.8, AWS's untracked flows: TCP or UDP allowed by a rule whose peer
/// is everywhere, on an interface whose other direction allows every
/// protocol to everywhere, is not tracked (so removing the rule cuts it).
pub(super) fn untracked(
    config: &Config,
    groups: &[String],
    local_addrs: &[IpAddr],
    pkt: &PacketSpec,
    direction: Direction,
) -> bool {
    if !matches!(pkt.l4, L4::Tcp { .. } | L4::Udp { .. }) {
        return false;
    }
    let v4 = pkt.src.is_ipv4();
    let by_anywhere_rule = allowing_rules(config, groups, local_addrs, pkt, direction)
        .any(|rule| peer_is_everywhere(config, rule, v4));
    let other = match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    };
    let other_allows_all = groups
        .iter()
        .filter_map(|name| config.groups.get(name))
        .flat_map(|group| group.rules(other))
        .any(|rule| rule.proto == Proto::All && peer_is_everywhere(config, rule, v4));
    by_anywhere_rule && other_allows_all
}
