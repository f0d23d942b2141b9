//! Local interfaces: index and addresses.

use std::net::IpAddr;

use anyhow::{Result, bail};

/// The ifindex of `name` in the current network namespace.
pub fn index(name: &str) -> Result<u32> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(index) => Ok(index),
        Err(_) => bail!("no interface named {name:?} in this network namespace (see `ip link`)"),
    }
}

/// The IP addresses assigned to `name` that make it a member of the groups
/// attached to it (SPEC 1.5): link-local ones do not, as they name no host
/// beyond the link, and any neighbour on another link may hold the same.
pub fn addresses(name: &str) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs()? {
        if ifaddr.interface_name != name {
            continue;
        }
        let Some(addr) = ifaddr.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    out.retain(|a| !is_link_local(*a));
    out.sort();
    out.dedup();
    Ok(out)
}

/// 169.254.0.0/16 and fe80::/10.
pub fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_are_not_members() {
        for a in ["fe80::1", "febf::1", "169.254.1.2"] {
            assert!(is_link_local(a.parse().unwrap()), "{a}");
        }
        for a in ["2001:db8::1", "198.18.0.1", "fec0::1", "::ffff:169.254.1.2"] {
            assert!(!is_link_local(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn loopback_keeps_its_addresses_but_never_a_link_local_one() {
        let addrs = addresses("lo").unwrap();
        assert!(addrs.iter().all(|a| !is_link_local(*a)), "{addrs:?}");
    }
}
