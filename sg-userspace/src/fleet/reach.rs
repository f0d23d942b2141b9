//! Does the policy let the agent reach etcd? (SPEC 8.4: the agent warns at
//! every apply when it would not; it never adds hidden rules.)

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::config::{Config, Direction, Peer, Proto, TCP};

/// The local address the kernel would use towards `dst` (no packet sent).
fn local_address_towards(dst: SocketAddr) -> Option<IpAddr> {
    let bind: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(dst).ok()?;
    Some(sock.local_addr().ok()?.ip())
}

/// Warnings for every etcd endpoint whose connections the enforced
/// interface they leave by would drop: an opening TCP segment to etcd needs
/// an egress rule of one of that interface's groups (replies then follow
/// the tracked connection).
pub fn etcd_blocked(config: &Config, endpoints: &[SocketAddr]) -> Vec<String> {
    let mut warnings = Vec::new();
    for &etcd in endpoints {
        let Some(local) = local_address_towards(etcd) else {
            continue;
        };
        for (iface, section) in &config.interfaces {
            let owns = crate::ifaces::addresses(iface)
                .map(|a| a.contains(&local))
                .unwrap_or(false);
            if !owns {
                continue;
            }
            if !egress_allows(config, &section.groups, etcd) {
                warnings.push(format!(
                    "the policy blocks this agent's connection to etcd at {etcd}: no egress rule of {} ({}) allows tcp to it; add one, or the agent loses etcd once its current connection ends",
                    iface,
                    section.groups.join(",")
                ));
            }
        }
    }
    warnings
}

/// Does an egress rule of `groups` allow a TCP connection to `dst`?
pub fn egress_allows(config: &Config, groups: &[String], dst: SocketAddr) -> bool {
    groups
        .iter()
        .filter_map(|g| config.groups.get(g))
        .flat_map(|g| g.rules(Direction::Egress))
        .any(|rule| {
            (rule.proto == Proto::All || rule.proto == TCP)
                && rule.ports.matches_port(dst.port())
                && rule.peers.iter().any(|peer| match peer {
                    Peer::Cidr(_) | Peer::PrefixList(_) => config
                        .static_peer_cidrs(peer)
                        .is_some_and(|nets| nets.iter().any(|n| n.contains(&dst.ip()))),
                    Peer::Group(g) => config
                        .groups
                        .get(g)
                        .is_some_and(|g| g.members.iter().any(|m| m.contains(&dst.ip()))),
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, "t").unwrap().config
    }

    #[test]
    fn egress_to_etcd_is_found_or_missed() {
        let etcd: SocketAddr = "198.18.1.1:2379".parse().unwrap();
        let open = config("[groups.a]\n");
        assert!(egress_allows(&open, &["a".into()], etcd), "default egress");
        let closed = config(
            "[groups.a]\negress = [{ proto = \"udp\", ports = \"53\", to = \"0.0.0.0/0\" }]\n",
        );
        assert!(!egress_allows(&closed, &["a".into()], etcd));
        let via_group = config(
            "[groups.a]\negress = [{ proto = \"tcp\", ports = \"2379\", to = \"sg:etcd\" }]\n[groups.etcd]\nmembers = [\"198.18.1.1\"]\n",
        );
        assert!(egress_allows(&via_group, &["a".into()], etcd));
        let other_port: SocketAddr = "198.18.1.1:2380".parse().unwrap();
        assert!(!egress_allows(&via_group, &["a".into()], other_port));
    }
}
