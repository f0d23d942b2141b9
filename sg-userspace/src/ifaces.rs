//! Local interfaces: index, addresses and link kind.

use std::net::IpAddr;

use anyhow::{Context as _, Result, bail};

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

/// How packets on an interface are framed, from its link type (ARPHRD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkKind {
    /// ARPHRD value, as `ip link` and `/sys/class/net/X/type` show it.
    pub arphrd: u16,
    /// What an operator calls it.
    pub name: &'static str,
    /// No link header: packets start with the IP header.
    pub l3: bool,
}

/// The link kinds sg can parse: Ethernet-framed, or L3 (no link header).
/// Loopback is Ethernet-framed, and is what BPF_PROG_TEST_RUN uses.
const LINK_KINDS: &[(u16, &str, bool)] = &[
    (1, "ethernet", false),
    (772, "loopback", false),
    (65534, "none (tun, WireGuard)", true),
    (768, "ipip", true),
    (769, "ip6ip6", true),
    (778, "gre", true),
    (776, "sit", true),
    (512, "ppp", true),
];

/// Names of link types sg refuses, for the message.
const OTHER_KINDS: &[(u16, &str)] = &[
    (24, "IEEE 1394"),
    (32, "InfiniBand"),
    (280, "CAN"),
    (519, "rawip"),
    (774, "FDDI"),
    (783, "IrDA"),
    (801, "IEEE 802.11"),
    (802, "IEEE 802.11 prism"),
    (803, "IEEE 802.11 radiotap"),
    (804, "IEEE 802.15.4"),
    (820, "PhoNet"),
    (823, "ip6gre"),
    (824, "netlink"),
    (825, "6LoWPAN"),
    (826, "vsock monitor"),
];

/// Classifies link type `arphrd` of interface `iface`: a kind sg parses,
/// or the error that refuses the attach (SPEC 1.12).
pub fn classify_link(iface: &str, arphrd: u16) -> Result<LinkKind> {
    if let Some(&(_, name, l3)) = LINK_KINDS.iter().find(|(t, _, _)| *t == arphrd) {
        return Ok(LinkKind { arphrd, name, l3 });
    }
    let name = OTHER_KINDS
        .iter()
        .find(|(t, _)| *t == arphrd)
        .map_or("unknown", |(_, n)| n);
    bail!(
        "cannot enforce on {iface}: link type {arphrd} ({name}) is not supported; sg handles \
         Ethernet and L3 (tun, WireGuard, ipip, gre, sit, ppp) interfaces"
    )
}

/// The link kind of `name` in the current network namespace. Asks the
/// kernel (SIOCGIFHWADDR) rather than /sys, which may show another
/// namespace's interfaces after `--netns`.
pub fn link_kind(name: &str) -> Result<LinkKind> {
    classify_link(name, link_type(name)?)
}

fn link_type(name: &str) -> Result<u16> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        bail!("interface name {name:?} is too long");
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open a socket");
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `req` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read the link type of {name}"));
    }
    // SAFETY: SIOCGIFHWADDR fills the hardware address member.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
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

    #[test]
    fn link_kinds_sg_parses_and_refuses() {
        assert!(!classify_link("eth0", 1).unwrap().l3);
        assert!(!classify_link("lo", 772).unwrap().l3);
        for t in [65534, 768, 769, 778, 776, 512] {
            assert!(classify_link("x", t).unwrap().l3, "ARPHRD {t}");
        }
        let err = classify_link("wlan0", 801).unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot enforce on wlan0: link type 801 (IEEE 802.11) is not supported; sg handles \
             Ethernet and L3 (tun, WireGuard, ipip, gre, sit, ppp) interfaces"
        );
        let err = classify_link("x", 9999).unwrap_err().to_string();
        assert!(err.contains("link type 9999 (unknown)"), "{err}");
    }
}
