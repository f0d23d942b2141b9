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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`{}` -> {}\n--- stdout ---\n{}--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command in the machine's own namespace (only `ip netns ...` and
/// `ip -n <our ns> ...` are ever run this way). Panics on failure.
fn host_run_ok(args: &[&str]) -> String {
    let out = host_run(args);
    if !out.status.success() {
        panic!("lab: command failed: {}", describe(args, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("lab: cannot run `{}`: {e}", args.join(" ")))
}

/// Names listed by `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let out = host_run(&["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Opens a namespace file (`/run/netns/<ns>`) and returns it with its inode
/// number, which identifies the namespace. Holding the file keeps the
/// namespace (and so its inode number) alive even after its name is deleted:
/// inode numbers of freed namespaces are reused at once by new ones (of other
/// labs), so they must never be looked for without holding the file.
fn netns_handle(ns: &str) -> Option<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let f = File::open(format!("/run/netns/{ns}")).ok()?;
    let ino = f.metadata().ok()?.ino();
    Some((f, ino))
}

/// SIGKILLs every process (other than this one) whose network namespace is
/// one of `inodes`; returns how many it found.
fn kill_processes_in(inodes: &[u64]) -> usize {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut found = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // "net:[4026532345]"; unreadable for exited processes and zombies.
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(ino) = link.strip_prefix("net:[").and_then(|r| r.strip_suffix(']')) else {
            continue;
        };
        if inodes.iter().any(|i| i.to_string() == ino) {
            found += 1;
            // SAFETY: plain kill(2) of a process living in one of our namespaces.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    found
}

/// Kills until `rounds_quiet` consecutive scans (20 ms apart) find nothing,
/// for at most ~2 s.
fn kill_until_quiet(inodes: &[u64], rounds_quiet: u32) {
    if inodes.is_empty() {
        return;
    }
    let mut quiet = 0;
    for _ in 0..100 {
        if kill_processes_in(inodes) == 0 {
            quiet += 1;
            if quiet >= rounds_quiet {
                return;
            }
        } else {
            quiet = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn netns_del(ns: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        match Command::new("ip")
            .args(["netns", "del", ns])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => last = e.to_string(),
        }
        if !netns_list().iter().any(|n| n == ns) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("ip netns del {ns}: {last}"))
}

/// Kills every process in the namespaces and deletes them. Never panics;
/// returns the errors as text.
///
/// Processes are killed before the names are deleted, and again afterwards:
/// an `ip netns exec` that opened the namespace file just before the
/// deletion can still enter it, and would otherwise keep a nameless
/// namespace alive.
fn destroy_netns(names: &[String]) -> Result<(), String> {
    let handles: Vec<(File, u64)> = names.iter().filter_map(|n| netns_handle(n)).collect();
    let inodes: Vec<u64> = handles.iter().map(|h| h.1).collect();
    kill_until_quiet(&inodes, 1);
    let errors: Vec<String> = names.iter().filter_map(|n| netns_del(n).err()).collect();
    kill_until_quiet(&inodes, 3);
    // Only now may the namespaces be freed (and their inode numbers reused).
    drop(handles);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Deletes namespaces left behind by lab runs whose process no longer exists
/// (a test killed by SIGKILL/Ctrl-C cannot run its destructors). Only names
/// matching this module's pattern `sg<pid>n<seq>-...` with a dead `<pid>` are
/// touched. Not called automatically: it assumes all lab users share this
/// machine's pid namespace. Returns the names it removed.
pub fn sweep_stale_namespaces() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix("sg") else {
            continue;
        };
        let Some((pid, rest)) = rest.split_once('n') else {
            continue;
        };
        let Some((seq, _host)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), seq.parse::<u32>()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if destroy_netns(std::slice::from_ref(&ns)).is_ok() {
            removed.push(ns);
        }
    }
    removed
}

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

/// What `Host::nmap` scans with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanKind {
    /// `-sS`: "open", "closed", "filtered".
    Syn,
    /// `-sA`: "unfiltered", "filtered".
    Ack,
    /// `-sU`: "open", "closed", "open|filtered", "filtered". Note that the
    /// `udp_echo` server does not answer nmap's empty probes, so it shows as
    /// "open|filtered" unless nmap has a payload for the port.
    Udp,
}

/// A network namespace of a [`Lab`]. Cheap to clone; the Lab owns the namespace.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
}

impl Host {
    /// `ip netns exec <ns> <program>`; add arguments with `.arg(..)`.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c.env("LC_ALL", "C");
        c
    }

    /// Runs `args` in the namespace and returns its output, whatever the exit
    /// status. Panics only if `ip` itself cannot be started.
    pub fn run(&self, args: &[&str]) -> Output {
        assert!(!args.is_empty(), "lab: run needs a program");
        self.cmd(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("lab: cannot run `{}` in {}: {e}", args.join(" "), self.ns))
    }

    /// Like `run`, but panics (with stdout and stderr) unless the command
    /// succeeds; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            panic!(
                "lab: command failed in {}: {}",
                self.ns,
                describe(args, &out)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` in the namespace, in its own process group, with stdout
    /// and stderr going to a log file (see [`Background::log`]). The whole
    /// group is killed and reaped when the result is dropped.
    pub fn spawn(&self, args: &[&str]) -> Background {
        assert!(!args.is_empty(), "lab: spawn needs a program");
        let log_path = std::env::temp_dir().join(format!("{}.log", unique_name("sglab")));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("lab: create {}: {e}", log_path.display()));
        let log2 = log.try_clone().expect("lab: dup log fd");
        let child = self
            .cmd(args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("lab: cannot spawn `{}` in {}: {e}", args.join(" "), self.ns)
            });
        Background {
            child: Some(child),
            label: format!("{} in {}", args.join(" "), self.ns),
            log_path,
            status: None,
        }
    }

    /// Runs `f` on a fresh thread that has joined this namespace (setns), and
    /// returns its result. Sockets created inside `f` live in the namespace.
    /// A panic in `f` is propagated.
    pub fn in_ns<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.ns);
        let handle = std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("lab: open {path}: {e}"));
            // SAFETY: setns on a valid netns fd; affects only this thread,
            // which exits when `f` returns.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "lab: setns({path}): {}",
                std::io::Error::last_os_error()
            );
            f()
        });
        match handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Pings `dst` `count` times (`ping -c N -W 1 -i 0.2`, `-6` for IPv6) and
    /// returns the number of replies. Does not panic on loss or errors, only
    /// if `dst` is not a test address.
    pub fn ping(&self, dst: IpAddr, count: u32) -> u32 {
        assert_test_addr(dst);
        if count == 0 {
            return 0;
        }
        let fam = if dst.is_ipv6() { "-6" } else { "-4" };
        let (c, d) = (count.to_string(), dst.to_string());
        let Ok(out) = self
            .cmd("ping")
            .args([fam, "-n", "-q", "-c", &c, "-W", "1", "-i", "0.2", &d])
            .stdin(Stdio::null())
            .output()
        else {
            return 0;
        };
        parse_ping_received(&String::from_utf8_lossy(&out.stdout)).unwrap_or(0)
    }

    /// TCP echo server on `port`, IPv4 and IPv6 (`socat TCP6-LISTEN:port,
    /// fork,reuseaddr,ipv6only=0 PIPE`). Returns once the socket is listening.
    pub fn tcp_listen(&self, port: u16) -> Background {
        let addr = format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0");
        let mut bg = self.spawn(&["socat", &addr, "PIPE"]);
        self.wait_socket(&mut bg, "-Hltn", port);
        bg
    }

    /// UDP echo server on `port`, IPv4 and IPv6 (`socat UDP6-RECVFROM:port,
    /// fork,reuseaddr,ipv6only=0 PIPE`; each datagram is echoed back from the
    /// address the kernel chooses for the reply, so target the address of the
    /// link facing the client). Returns once the socket is bound.
    pub fn udp_echo(&self, port: u16) -> Background {
        let addr = format!("UDP6-RECVFROM:{port},fork,reuseaddr,ipv6only=0");
        let mut bg = self.spawn(&["socat", "-T", "3", &addr, "PIPE"]);
        self.wait_socket(&mut bg, "-Hlun", port);
        bg
    }

    fn wait_socket(&self, bg: &mut Background, ss_flags: &str, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let sport = format!(":{port}");
        loop {
            if let Some(st) = bg.try_wait() {
                panic!(
                    "lab: {} exited ({st}) before listening:\n{}",
                    bg.label,
                    bg.log()
                );
            }
            let out = self.run(&["ss", ss_flags, "sport", "=", &sport]);
            if out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("lab: {} not listening after 10s:\n{}", bg.label, bg.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects to `dst:port` (2 s timeout), sends "hello\n" and returns true
    /// only if exactly that came back within 2 s. Panics only if `dst` is not
    /// a test address (or the namespace cannot be entered).
    pub fn tcp_connects(&self, dst: IpAddr, port: u16) -> bool {
        assert_test_addr(dst);
        self.in_ns(move || {
            let timeout = Duration::from_secs(2);
            let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::new(dst, port), timeout) else {
                return false;
            };
            let msg = b"hello\n";
            if s.set_read_timeout(Some(timeout)).is_err()
                || s.set_write_timeout(Some(timeout)).is_err()
            {
                return false;
            }
            if s.write_all(msg).is_err() {
                return false;
            }
            let deadline = Instant::now() + timeout;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < msg.len() && Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            got == msg
        })
    }

    /// Sends a datagram with a unique token to `dst:port` (resent once after
    /// 1 s) and returns true only if the same token came back from `dst:port`
    /// within 2 s.
    pub fn udp_exchange(&self, dst: IpAddr, port: u16) -> bool {
        assert_test_addr(dst);
        let token = format!("sg-lab {}\n", unique_name("udp"));
        self.in_ns(move || {
            let bind: SocketAddr = if dst.is_ipv6() {
                "[::]:0".parse().unwrap()
            } else {
                "0.0.0.0:0".parse().unwrap()
            };
            let Ok(s) = UdpSocket::bind(bind) else {
                return false;
            };
            if s.connect(SocketAddr::new(dst, port)).is_err() {
                return false;
            }
            let total = Duration::from_secs(2);
            let resend_at = Duration::from_secs(1);
            let start = Instant::now();
            let mut buf = [0u8; 1500];
            // An error from send/recv is usually ECONNREFUSED (an ICMP port
            // unreachable came back): a definite "no".
            if s.send(token.as_bytes()).is_err() {
                return false;
            }
            let mut resent = false;
            loop {
                let el = start.elapsed();
                if el >= total {
                    return false;
                }
                if !resent && el >= resend_at {
                    if s.send(token.as_bytes()).is_err() {
                        return false;
                    }
                    resent = true;
                }
                let next = if resent { total } else { resend_at };
                let wait = next.saturating_sub(el).max(Duration::from_millis(10));
                if s.set_read_timeout(Some(wait)).is_err() {
                    return false;
                }
                match s.recv(&mut buf) {
                    Ok(n) if &buf[..n] == token.as_bytes() => return true,
                    Ok(_) => continue,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    Err(_) => return false,
                }
            }
        })
    }

    /// Scans `dst` with nmap (`-Pn -n --max-retries 1 --host-timeout 60s -oX -
    /// -p <ports>`, plus `-sS`/`-sA`/`-sU` and `-6` for IPv6) and returns
    /// port -> state ("open", "closed", "filtered", "unfiltered", ...).
    /// Ports nmap folds into `<extraports>` are expanded (nmap 7.93 lists them
    /// in `<extrareasons ports="..">`), so every scanned port is in the map
    /// unless the host timed out. Panics if nmap fails or `dst` is not a
    /// test address.
    pub fn nmap(&self, dst: IpAddr, ports: &str, scan: ScanKind) -> BTreeMap<u16, String> {
        assert_test_addr(dst);
        let kind = match scan {
            ScanKind::Syn => "-sS",
            ScanKind::Ack => "-sA",
            ScanKind::Udp => "-sU",
        };
        let d = dst.to_string();
        let mut args = vec![
            "nmap",
            "-Pn",
            "-n",
            "--max-retries",
            "1",
            "--host-timeout",
            "60s",
            "-oX",
            "-",
            kind,
            "-p",
            ports,
        ];
        if dst.is_ipv6() {
            args.push("-6");
        }
        args.push(&d);
        let out = self.run(&args);
        let xml = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !xml.contains("</nmaprun>") {
            panic!("lab: nmap failed in {}: {}", self.ns, describe(&args, &out));
        }
        let proto = if scan == ScanKind::Udp { "udp" } else { "tcp" };
        parse_nmap_xml(&xml, proto)
    }

    /// Adds a route in this namespace: `dst` is a prefix inside the test
    /// ranges (e.g. `subnet_v4(3)`), `via` a test address.
    pub fn add_route(&self, dst: &str, via: IpAddr) {
        assert_test_addr(via);
        let net: ipnet::IpNet = dst
            .parse()
            .unwrap_or_else(|e| panic!("lab: bad prefix {dst:?}: {e}"));
        let allowed: [ipnet::IpNet; 2] = [
            "198.18.0.0/15".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert!(
            allowed.iter().any(|a| a.contains(&net)),
            "lab: refusing route to {dst}: tests may only use 198.18.0.0/15 and 2001:db8::/32"
        );
        let fam = if via.is_ipv6() { "-6" } else { "-4" };
        host_run_ok(&[
            "ip",
            "-n",
            &self.ns,
            fam,
            "route",
            "add",
            dst,
            "via",
            &via.to_string(),
        ]);
    }
}

fn parse_ping_received(out: &str) -> Option<u32> {
    // "3 packets transmitted, 3 received, 0% packet loss, time 402ms"
    for line in out.lines() {
        if let Some(pos) = line.find(" received") {
            let head = &line[..pos];
            let num = head.rsplit(|c: char| !c.is_ascii_digit()).next()?;
            return num.parse().ok();
        }
    }
    None
}

/// Value of attribute `name` in the tag text `tag` (`<x a="1" b="2">`).
fn xml_attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let start = tag.find(&pat)? + pat.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// Parses nmap's XML (-oX) into port -> state for protocol `proto`.
pub fn parse_nmap_xml(xml: &str, proto: &str) -> BTreeMap<u16, String> {
    let mut map = BTreeMap::new();
    let mut rest = xml;
    // Explicit <port> elements.
    while let Some(i) = rest.find("<port ") {
        rest = &rest[i..];
        let end = rest.find("</port>").unwrap_or(rest.len());
        let elem = &rest[..end];
        let tag_end = elem.find('>').unwrap_or(elem.len());
        let tag = &elem[..tag_end];
        if xml_attr(tag, "protocol") == Some(proto)
            && let Some(port) = xml_attr(tag, "portid").and_then(|p| p.parse::<u16>().ok())
            && let Some(s) = elem.find("<state ")
        {
            let st = &elem[s..];
            let st = &st[..st.find('>').unwrap_or(st.len())];
            if let Some(state) = xml_attr(st, "state") {
                map.insert(port, state.to_owned());
            }
        }
        rest = &rest[end.max(1)..];
    }
    // <extraports state="closed" count="N"><extrareasons ... proto="tcp" ports="1-100,200"/></extraports>
    let mut rest = xml;
    while let Some(i) = rest.find("<extraports ") {
        rest = &rest[i..];
        let end = rest.find("</extraports>").unwrap_or(rest.len());
        let elem = &rest[..end];
        let tag = &elem[..elem.find('>').unwrap_or(elem.len())];
        if let Some(state) = xml_attr(tag, "state") {
            let mut r = elem;
            while let Some(j) = r.find("<extrareasons ") {
                r = &r[j..];
                let t = &r[..r.find('>').unwrap_or(r.len())];
                if xml_attr(t, "proto").is_none_or(|p| p == proto)
                    && let Some(ports) = xml_attr(t, "ports")
                {
                    for port in expand_ports(ports) {
                        map.entry(port).or_insert_with(|| state.to_owned());
                    }
                }
                r = &r[1..];
            }
        }
        rest = &rest[end.max(1)..];
    }
    map
}

/// "1-3,7" -> [1, 2, 3, 7]. Ignores anything it cannot parse.
fn expand_ports(spec: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if let Some((a, b)) = part.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
                out.extend(a..=b);
            }
        } else if let Ok(p) = part.parse() {
            out.push(p);
        }
    }
    out
}

/// A process started by [`Host::spawn`]. Dropping it kills its whole process
/// group and reaps it; its log file is printed if the thread is panicking,
/// then removed.
pub struct Background {
    child: Option<Child>,
    label: String,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Background {
    /// Pid of the child (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What was started, and where.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the log file (stdout and stderr).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// The exit status if the process has exited (reaps it), else None.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }

    /// Sends SIGTERM to the process group, waits up to `grace` for the child
    /// to exit, then SIGKILLs the group. Returns the child's exit status.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            self.kill_group(libc::SIGKILL);
            return st;
        }
        self.kill_group(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                self.kill_group(libc::SIGKILL);
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_group(libc::SIGKILL);
        let st = self
            .child
            .as_mut()
            .and_then(|c| c.wait().ok())
            .unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
        self.status = Some(st);
        st
    }

    fn kill_group(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: the child was started with process_group(0), so its pid
            // is its process-group id; the group holds only what it started.
            unsafe { libc::kill(-(c.id() as i32), sig) };
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "lab: log of `{}` ({}):\n{}",
                self.label,
                self.log_path.display(),
                tail
            );
        }
        self.kill_group(libc::SIGKILL);
        if self.status.is_none()
            && let Some(mut c) = self.child.take()
        {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// The `sg` binary acting inside one lab namespace (`--netns`), with a
/// `--state-dir` of its own. Drop detaches whatever it attached.
pub struct SgCli {
    pub exe: PathBuf,
    pub state_dir: PathBuf,
    pub netns: String,
}

impl SgCli {
    pub fn new(exe: PathBuf, host: &Host, tag: &str) -> SgCli {
        SgCli {
            exe,
            state_dir: PathBuf::from(format!("/sys/fs/bpf/{}", unique_name(tag))),
            netns: host.ns.clone(),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--netns")
            .arg(&self.netns)
            .args(args);
        c
    }

    /// Runs `sg ARGS`; its stdout, or an error carrying its stderr.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cmd(args).output()?;
        if !out.status.success() {
            anyhow::bail!(
                "sg {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for SgCli {
    fn drop(&mut self) {
        let _ = self.cmd(&["detach", "--all"]).output();
    }
}
