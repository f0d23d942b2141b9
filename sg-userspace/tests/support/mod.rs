//! What the end-to-end test binaries share: the real `sg` binary bound to a
//! state dir of its own and one namespace, and temp files removed on drop.
// Each test binary uses a subset of this module.
#![allow(dead_code)]

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use sg_lab::{Background, Host, Lab, Link, SgCli, unique_name};

pub(crate) mod keys;

/// The `sg` binary built for these tests, as [`SgCli`], with answers a
/// test can assert on.
pub(crate) struct Sg(SgCli);

impl std::ops::Deref for Sg {
    type Target = SgCli;
    fn deref(&self) -> &SgCli {
        &self.0
    }
}

impl Sg {
    /// `sg watch --json` while `during` runs: its drop objects.
    pub(crate) fn watch_json(&self, during: impl FnOnce()) -> Vec<serde_json::Value> {
        let mut child = self
            .cmd(&["watch", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sg watch starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !line.contains("watching drops") {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let _ = child.kill();
                panic!("sg watch never became ready");
            }
        }
        during();
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success());
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("reason").is_some())
            .collect()
    }

    pub(crate) fn new(host: &Host) -> Sg {
        Sg(SgCli::new(
            PathBuf::from(env!("CARGO_BIN_EXE_sg")),
            host,
            "sgt",
        ))
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.0.cmd(args);
        c.env_remove("NO_COLOR");
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("sg runs")
    }

    /// Runs `sg ARGS`, which must succeed; returns its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "sg {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    pub(crate) fn stats(&self) -> serde_json::Value {
        self.json(&["stats", "--json"])
    }
}

/// A file under the temp dir, removed on drop.
pub(crate) struct TempFile(PathBuf);

impl TempFile {
    pub(crate) fn new(ext: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{}.{ext}", unique_name("sgtmp")));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A client and a server joined by one link; sg goes on the server's end.
pub(crate) struct Pair {
    _lab: Lab,
    pub client: Host,
    pub server: Host,
    pub c: Link,
    pub s: Link,
}

pub(crate) fn pair() -> Pair {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let server = lab.host("server");
    let (c, s) = lab.link(&client, &server, 1);
    Pair {
        _lab: lab,
        client,
        server,
        c,
        s,
    }
}

// ---------------------------------------------------------------------------
// Connections and servers in namespaces
// ---------------------------------------------------------------------------

/// A TCP connection held open from inside a namespace: a thread that owns
/// the socket and does one echo round trip per request.
pub(crate) struct Held {
    tx: std::sync::mpsc::Sender<()>,
    rx: std::sync::mpsc::Receiver<bool>,
    pub(crate) local_port: u16,
}

impl Held {
    pub(crate) fn open(host: &Host, dst: IpAddr, port: u16) -> Held {
        let (req_tx, req_rx) = std::sync::mpsc::channel::<()>();
        let (res_tx, res_rx) = std::sync::mpsc::channel::<bool>();
        let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
        let path = format!("/run/netns/{}", host.ns);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd as _;
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: joins the namespace on this thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(3))
                    .expect("connects");
            port_tx.send(s.local_addr().unwrap().port()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            while req_rx.recv().is_ok() {
                let ok = echo_once(&mut s);
                if res_tx.send(ok).is_err() {
                    break;
                }
            }
        });
        let local_port = port_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("connected");
        Held {
            tx: req_tx,
            rx: res_rx,
            local_port,
        }
    }

    pub(crate) fn exchange(&self) -> bool {
        self.tx.send(()).unwrap();
        self.rx.recv().unwrap_or(false)
    }
}

fn echo_once(s: &mut TcpStream) -> bool {
    let msg = [0x5au8; 64];
    if s.write_all(&msg).is_err() {
        return false;
    }
    let mut got = [0u8; 64];
    s.read_exact(&mut got).is_ok() && got == msg
}

/// Reads everything `dst:port` sends until EOF; returns the byte count.
pub(crate) fn download(host: &Host, dst: IpAddr, port: u16) -> std::io::Result<usize> {
    host.in_ns(move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    })
}

pub(crate) fn wait_listening(host: &Host, port: u16, bg: &mut Background) {
    let sport = format!(":{port}");
    let ok = wait_until(
        || {
            assert!(bg.try_wait().is_none(), "server exited: {}", bg.log());
            !host
                .run_ok(&["ss", "-Hltn", "sport", "=", &sport])
                .trim()
                .is_empty()
        },
        Duration::from_secs(10),
    );
    assert!(ok, "not listening: {}", bg.log());
}

/// server ==1500== router ==1280== client, routed both ways, IPv4 and
/// IPv6. The client's own end keeps 1500, so it advertises a 1460 MSS: the
/// server learns the path MTU only from the router's ICMP errors.
pub(crate) struct PmtuLab {
    /// Owns the namespaces: they go when it does, so bind it.
    pub(crate) lab: Lab,
    pub(crate) server: Host,
    pub(crate) client: Host,
    /// The server's link (to the router) and the client's.
    pub(crate) s: Link,
    pub(crate) c: Link,
}

pub(crate) fn pmtu_lab() -> PmtuLab {
    let mut lab = Lab::new();
    let server = lab.host("server");
    let router = lab.router("router");
    let client = lab.host("client");
    let (s, r1) = lab.link(&server, &router, 1);
    let (r2, c) = lab.link(&router, &client, 2);
    router.run_ok(&["ip", "link", "set", &r2.ifname, "mtu", "1280"]);
    server.add_route("198.18.2.0/24", IpAddr::V4(r1.v4));
    server.add_route("2001:db8:2::/64", IpAddr::V6(r1.v6));
    client.add_route("198.18.1.0/24", IpAddr::V4(r2.v4));
    client.add_route("2001:db8:1::/64", IpAddr::V6(r2.v6));
    PmtuLab {
        lab,
        server,
        client,
        s,
        c,
    }
}

/// Polls `f` every 100 ms until it holds or `timeout` passes.
pub(crate) fn wait_until(mut f: impl FnMut() -> bool, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Creates a BPF hash map and pins it at `path` (raw syscalls: aya makes
/// maps only from an object's definitions).
pub(crate) fn pin_hash_map(path: &std::path::Path, key: u32, value: u32, max: u32, flags: u32) {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_HASH: u32 = 1;
    let mut create = [0u32; 18];
    create[..5].copy_from_slice(&[BPF_MAP_TYPE_HASH, key, value, max, flags]);
    // SAFETY: a zeroed bpf_attr of the size passed, map fields first.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, create.as_mut_ptr(), 72) };
    assert!(fd >= 0, "map create: {}", std::io::Error::last_os_error());
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut pin = [0u64; 3];
    pin[0] = c_path.as_ptr() as u64;
    pin[1] = fd as u64;
    // SAFETY: pathname and bpf_fd as bpf_attr's obj fields; the path lives.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, pin.as_mut_ptr(), 24) };
    assert!(rc == 0, "pin: {}", std::io::Error::last_os_error());
    // SAFETY: our fd; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}
