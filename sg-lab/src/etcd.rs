//! [`Etcd`]: a real etcd server (Debian `etcd-server`) inside a lab
//! namespace, listening on a lab address, its data in a temp dir. Dropping
//! it kills the server and removes the data.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Background, Host, assert_test_addr, unique_name};

pub struct Etcd {
    host: Host,
    addr: IpAddr,
    data_dir: PathBuf,
    server: Option<Background>,
}

/// etcd's client port.
pub const ETCD_PORT: u16 = 2379;

impl Etcd {
    /// Starts etcd in `host` on `addr`:2379 and waits until it answers.
    pub fn start(host: &Host, addr: IpAddr) -> Etcd {
        assert_test_addr(addr);
        let data_dir = std::env::temp_dir().join(unique_name("sgetcd"));
        let mut etcd = Etcd {
            host: host.clone(),
            addr,
            data_dir,
            server: None,
        };
        etcd.resume();
        etcd
    }

    /// `http://ADDR:2379`.
    pub fn url(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("http://{a}:{ETCD_PORT}"),
            IpAddr::V6(a) => format!("http://[{a}]:{ETCD_PORT}"),
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Stops the server (SIGTERM, then SIGKILL); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop(Duration::from_secs(5));
        }
    }

    /// Starts the server again on the same data (after [`Etcd::stop`]).
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "etcd: already running");
        let url = self.url();
        let data = self.data_dir.display().to_string();
        let server = self.host.spawn(&[
            "etcd",
            "--name",
            "sglab",
            "--data-dir",
            &data,
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            "http://127.0.0.1:0",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "sglab=http://127.0.0.1:2380",
            "--log-level",
            "error",
        ]);
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            if let Some(s) = self.server.as_mut()
                && let Some(st) = s.try_wait()
            {
                panic!("etcd: exited at start ({st}):\n{}", s.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd: not healthy after 20s:\n{}",
                    self.server.as_ref().map(|s| s.log()).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `etcdctl --endpoints URL ARGS` inside the namespace.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let url = self.url();
        let mut full = vec!["etcdctl", "--endpoints", &url, "--dial-timeout", "2s"];
        full.extend_from_slice(args);
        let mut cmd = self.host.cmd(full[0]);
        cmd.args(&full[1..]).env("ETCDCTL_API", "3");
        cmd.output().expect("etcdctl runs")
    }

    /// `etcdctl ARGS`, which must succeed; its stdout.
    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
