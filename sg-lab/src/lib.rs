//! Test networks for end-to-end tests (SPEC.md section 7).
//!
//! A [`Lab`] owns a set of network namespaces ("hosts") joined by veth pairs.
//! Everything it creates is removed when it is dropped, including while a test
//! is unwinding from a panic.
//!
//! Rules enforced here:
//! - namespace names are `sg<pid>n<seq>-<host>`, unique per process and per Lab;
//!   interface names are unique too (`s<pid36>_<seq36>_<i>a|b`, at most 15
//!   characters), so they can never match an interface of the machine's own
//!   namespace;
//! - both ends of every veth are created inside namespaces (`ip -n A link add ..
//!   peer .. netns B`): nothing ever exists in, or is changed in, the machine's
//!   own namespace;
//! - addresses come only from 198.18.0.0/15 and 2001:db8::/32, and every helper
//!   that sends traffic (`ping`, `tcp_connects`, `udp_exchange`, `nmap`,
//!   `add_route`) panics *before sending anything* if asked to use another
//!   destination. Namespaces have no default route, so nothing can leave anyway.
//!
//! Addressing of `lab.link(a, b, idx)`: `a` gets 198.18.idx.1/24 and
//! 2001:db8:idx::1/64, `b` gets 198.18.idx.2/24 and 2001:db8:idx::2/64.
//!
//! Processes: [`Background`] puts its child in its own process group and kills
//! the whole group on drop (so `socat ... fork` children die too). Lab's drop
//! additionally kills every process still inside its namespaces before
//! deleting them, so the order in which a test drops things does not matter.
//!
//! Not covered: a test process killed with SIGKILL (or Ctrl-C) cannot run its
//! destructors; [`sweep_stale_namespaces`] removes what such runs left behind.

mod background;
mod etcd;
mod host;
mod lab;
mod netns;
mod parse;
pub mod rng;
mod sg_cli;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

pub use background::Background;
pub use etcd::{ETCD_PORT, Etcd, EtcdTls};
pub use host::{Host, ScanKind};
pub use lab::{Lab, Link};
pub use netns::{netns_list, sweep_stale_namespaces};
pub use parse::parse_nmap_xml;
pub use sg_cli::SgCli;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// A name unique to this process and call, for per-test resources (state
/// directories, pin paths, ...): `<tag>-<pid>-<seq>`.
pub fn unique_name(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), next_seq())
}

/// True if `ip` is in 198.18.0.0/15 or 2001:db8::/32, the only ranges tests
/// may use.
pub fn is_test_addr(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

/// Panics unless `ip` is a test address (see [`is_test_addr`]).
pub fn assert_test_addr(ip: IpAddr) {
    assert!(
        is_test_addr(ip),
        "lab: refusing to use {ip}: tests may only use 198.18.0.0/15 and 2001:db8::/32"
    );
}

/// IPv4 subnet of `lab.link(.., idx)`, e.g. "198.18.3.0/24".
pub fn subnet_v4(idx: u8) -> String {
    format!("198.18.{idx}.0/24")
}

/// IPv6 subnet of `lab.link(.., idx)`, e.g. "2001:db8:3::/64".
pub fn subnet_v6(idx: u8) -> String {
    format!("2001:db8:{idx:x}::/64")
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}
