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
    tls: Option<EtcdTls>,
}

/// A throwaway CA and the certificates of a TLS etcd (for the server's
/// address) and of one client, made with `openssl`, in a temp dir that
/// goes with it.
pub struct EtcdTls {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl EtcdTls {
    /// A CA named `ca_name`, a server certificate for `addr` and a client
    /// certificate, all signed by it.
    pub fn new(addr: IpAddr, ca_name: &str) -> EtcdTls {
        let dir = std::env::temp_dir().join(unique_name("sgtls"));
        std::fs::create_dir_all(&dir).expect("tls dir");
        let path = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let subj = format!("/CN={ca_name}");
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", &subj,
        ]);
        openssl(&ca);
        for (name, usage, san) in [
            (
                "server",
                "serverAuth",
                format!("subjectAltName=IP:{addr}\n"),
            ),
            ("client", "clientAuth", String::new()),
        ] {
            let ext = format!("{san}extendedKeyUsage={usage}\n");
            std::fs::write(path(&format!("{name}.ext")), ext).expect("ext file");
            let (key, csr, pem, extf) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let cn = format!("/CN=sg-{name}");
            let mut req = vec!["req"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &cn]);
            openssl(&req);
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "1",
                "-extfile",
                &extf,
            ]);
        }
        EtcdTls {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            dir,
        }
    }
}

impl Drop for EtcdTls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
            tls: None,
        };
        etcd.resume();
        etcd
    }

    /// [`Etcd::start`] serving TLS only, and only to clients with a
    /// certificate `tls`'s CA signed (`--client-cert-auth`).
    pub fn start_tls(host: &Host, addr: IpAddr, tls: EtcdTls) -> Etcd {
        assert_test_addr(addr);
        let mut etcd = Etcd {
            host: host.clone(),
            addr,
            data_dir: std::env::temp_dir().join(unique_name("sgetcd")),
            server: None,
            tls: Some(tls),
        };
        etcd.resume();
        etcd
    }

    /// The certificates of a TLS etcd.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    /// `http://ADDR:2379`, or `https://` for a TLS etcd.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.addr {
            IpAddr::V4(a) => format!("{scheme}://{a}:{ETCD_PORT}"),
            IpAddr::V6(a) => format!("{scheme}://[{a}]:{ETCD_PORT}"),
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
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(t) = &self.tls {
            for (flag, file) in [
                ("--cert-file", &t.server_cert),
                ("--key-file", &t.server_key),
                ("--trusted-ca-file", &t.ca),
            ] {
                tls_args.push(flag.to_string());
                tls_args.push(file.display().to_string());
            }
            tls_args.push("--client-cert-auth".to_string());
        }
        let mut args = vec![
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
        ];
        args.extend(tls_args.iter().map(String::as_str));
        let server = self.host.spawn(&args);
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
        let tls: Vec<String> = self
            .tls
            .iter()
            .flat_map(|t| {
                [
                    format!("--cacert={}", t.ca.display()),
                    format!("--cert={}", t.client_cert.display()),
                    format!("--key={}", t.client_key.display()),
                ]
            })
            .collect();
        full.extend(tls.iter().map(String::as_str));
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
