//! [`Host`]: commands and traffic inside one lab namespace.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{describe, host_run_ok};
use crate::parse::{parse_nmap_xml, parse_ping_received};
use crate::{Background, assert_test_addr, unique_name};

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
