//! [`Lab`]: namespaces joined by veth pairs, and their addressing.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::Host;
use crate::netns::{describe, destroy_netns, host_run, host_run_ok, netns_list};
use crate::{base36, next_seq};

/// A set of namespaces and the links between them. Dropping it kills every
/// process inside them and deletes them (errors are logged, never panicked).
pub struct Lab {
    prefix: String,
    ifprefix: String,
    namespaces: Vec<String>,
    links: u32,
    subnets: BTreeSet<u8>,
}

impl Lab {
    /// A new, empty lab with a prefix unique to this process and call.
    pub fn new() -> Lab {
        let pid = std::process::id();
        loop {
            let seq = next_seq();
            let prefix = format!("sg{pid}n{seq}");
            // A leftover from an earlier run with the same pid would collide:
            // skip to the next sequence number instead.
            let taken = format!("{prefix}-");
            if netns_list().iter().any(|n| n.starts_with(&taken)) {
                continue;
            }
            let ifprefix = format!("s{}_{}_", base36(pid as u64), base36(seq as u64));
            return Lab {
                prefix,
                ifprefix,
                namespaces: Vec::new(),
                links: 0,
                subnets: BTreeSet::new(),
            };
        }
    }

    /// The prefix of every namespace name of this lab (`sg<pid>n<seq>`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Names of the namespaces this lab created (and will delete).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Creates namespace `<prefix>-<name>`, brings `lo` up and makes IPv6
    /// usable immediately (no DAD, no RA/autoconf, no router solicitations),
    /// disables reverse-path filtering and ICMP rate limiting.
    pub fn host(&mut self, name: &str) -> Host {
        assert!(
            !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "lab: bad host name {name:?} (use [A-Za-z0-9_], at most 32 chars)"
        );
        let ns = format!("{}-{name}", self.prefix);
        assert!(
            !self.namespaces.contains(&ns),
            "lab: host {name:?} already exists"
        );
        // Several `ip netns add` racing on the very first mount of /run/netns
        // can fail transiently; retry a few times.
        let mut attempt = 0;
        loop {
            let out = host_run(&["ip", "netns", "add", &ns]);
            if out.status.success() {
                break;
            }
            attempt += 1;
            if netns_list().contains(&ns) {
                // It exists, but we did not create it: never adopt it.
                panic!(
                    "lab: namespace {ns} already exists: {}",
                    describe(&["ip", "netns", "add", &ns], &out)
                );
            }
            if attempt >= 5 {
                panic!("lab: {}", describe(&["ip", "netns", "add", &ns], &out));
            }
            std::thread::sleep(Duration::from_millis(50 * attempt));
        }
        self.namespaces.push(ns.clone());
        let host = Host { ns };
        host.run_ok(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.dad_transmits=0",
            "net.ipv6.conf.default.dad_transmits=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
            "net.ipv6.conf.all.autoconf=0",
            "net.ipv6.conf.default.autoconf=0",
            "net.ipv6.conf.all.router_solicitations=0",
            "net.ipv6.conf.default.router_solicitations=0",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv6.icmp.ratelimit=0",
        ]);
        host_run_ok(&["ip", "-n", &host.ns, "link", "set", "lo", "up"]);
        host
    }

    /// A host that forwards IPv4 and IPv6 (for multi-hop tests). Other hosts
    /// need routes through it: see [`Host::add_route`].
    pub fn router(&mut self, name: &str) -> Host {
        let h = self.host(name);
        h.run_ok(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv6.conf.default.forwarding=1",
        ]);
        h
    }

    /// Joins `a` and `b` with a veth pair whose ends are created directly in
    /// their namespaces. `a` gets 198.18.idx.1/24 + 2001:db8:idx::1/64, `b`
    /// gets .2 / ::2. Returns once both ends are up with usable addresses.
    /// Each `subnet_index` may be used once per lab.
    pub fn link(&mut self, a: &Host, b: &Host, subnet_index: u8) -> (Link, Link) {
        assert!(
            self.namespaces.contains(&a.ns),
            "lab: {} is not a host of this lab",
            a.ns
        );
        assert!(
            self.namespaces.contains(&b.ns),
            "lab: {} is not a host of this lab",
            b.ns
        );
        assert_ne!(a.ns, b.ns, "lab: cannot link a host to itself");
        assert!(
            self.subnets.insert(subnet_index),
            "lab: subnet index {subnet_index} already used in this lab"
        );
        let i = self.links;
        self.links += 1;
        let mut short = format!("{}{i}", self.ifprefix);
        if short.len() > 14 {
            // Cannot happen with pid_max <= 2^22 and < 46656 labs per process;
            // uniqueness inside the namespace is all that is really needed.
            short = format!("sgl{i}");
        }
        let (ia, ib) = (format!("{short}a"), format!("{short}b"));
        host_run_ok(&[
            "ip", "-n", &a.ns, "link", "add", &ia, "type", "veth", "peer", "name", &ib, "netns",
            &b.ns,
        ]);
        let ends = [(a, &ia, 1u8), (b, &ib, 2u8)];
        let mut links = Vec::new();
        for (h, ifname, last) in ends {
            let v4 = Ipv4Addr::new(198, 18, subnet_index, last);
            let v6 = Ipv6Addr::new(0x2001, 0xdb8, subnet_index as u16, 0, 0, 0, 0, last as u16);
            host_run_ok(&[
                "ip",
                "-n",
                &h.ns,
                "addr",
                "add",
                &format!("{v4}/24"),
                "dev",
                ifname,
            ]);
            host_run_ok(&[
                "ip",
                "-n",
                &h.ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            host_run_ok(&["ip", "-n", &h.ns, "link", "set", ifname, "up"]);
            links.push(Link {
                ifname: ifname.clone(),
                ns: h.ns.clone(),
                v4,
                v6,
            });
        }
        for l in &links {
            wait_link_ready(l);
        }
        let lb = links.pop().unwrap();
        let la = links.pop().unwrap();
        (la, lb)
    }
}

fn wait_link_ready(l: &Link) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let link = host_run_ok(&["ip", "-n", &l.ns, "-o", "link", "show", "dev", &l.ifname]);
        let tentative = host_run_ok(&[
            "ip",
            "-n",
            &l.ns,
            "-6",
            "-o",
            "addr",
            "show",
            "dev",
            &l.ifname,
            "tentative",
        ]);
        let v6 = host_run_ok(&[
            "ip", "-n", &l.ns, "-6", "-o", "addr", "show", "dev", &l.ifname,
        ]);
        let up = link.contains("LOWER_UP") && link.contains("state UP");
        if up
            && tentative.trim().is_empty()
            && v6.contains(&l.v6.to_string())
            && !v6.contains("dadfailed")
        {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "lab: {} in {} not ready after 10s:\n{link}\n{v6}",
                l.ifname, l.ns
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = destroy_netns(&self.namespaces) {
            eprintln!("lab: cleanup failed: {e}");
        }
    }
}

/// One end of a link.
#[derive(Clone, Debug)]
pub struct Link {
    pub ifname: String,
    pub ns: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}
