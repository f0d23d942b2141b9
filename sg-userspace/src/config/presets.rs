//! The `type` presets of rules (SPEC 1.3).

use super::{ICMP, ICMPV6, PortMatch, Proto, TCP, UDP};

pub(super) const fn port(p: u16) -> PortMatch {
    PortMatch::Range { from: p, to: p }
}

pub(super) const ICMP_ALL: PortMatch = PortMatch::Icmp {
    icmp_type: None,
    icmp_code: None,
};

/// The `type` presets of SPEC 1.3: name, protocol, ports.
pub const PRESETS: &[(&str, Proto, PortMatch)] = &[
    ("ssh", TCP, port(22)),
    ("rdp", TCP, port(3389)),
    ("http", TCP, port(80)),
    ("https", TCP, port(443)),
    ("smtp", TCP, port(25)),
    ("smtps", TCP, port(465)),
    ("dns-udp", UDP, port(53)),
    ("dns-tcp", TCP, port(53)),
    ("mysql", TCP, port(3306)),
    ("postgresql", TCP, port(5432)),
    ("mssql", TCP, port(1433)),
    ("oracle", TCP, port(1521)),
    ("redis", TCP, port(6379)),
    ("nfs", TCP, port(2049)),
    ("ldap", TCP, port(389)),
    ("imap", TCP, port(143)),
    ("imaps", TCP, port(993)),
    ("pop3", TCP, port(110)),
    ("pop3s", TCP, port(995)),
    ("all-tcp", TCP, PortMatch::All),
    ("all-udp", UDP, PortMatch::All),
    ("all-icmp", ICMP, ICMP_ALL),
    ("all-icmpv6", ICMPV6, ICMP_ALL),
    ("all-traffic", Proto::All, PortMatch::All),
];

pub fn preset(name: &str) -> Option<(Proto, PortMatch)> {
    PRESETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, p, m)| (p, m))
}
