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

/// The IP addresses assigned to `name`; they make it a member of the
/// groups attached to it (SPEC 1.5).
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
    out.sort();
    out.dedup();
    Ok(out)
}
