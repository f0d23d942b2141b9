//! The etcd connection: endpoints, TLS and user/password auth (SPEC 8.6).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// How to reach etcd; filled from the command line (`cli::EtcdArgs`).
#[derive(Clone, Debug, Default)]
pub struct EtcdOptions {
    /// `http://ADDR:PORT` or `https://...`, one or more.
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

/// How long one request may take before the connection counts as down.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

impl EtcdOptions {
    fn connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            // HTTP/2 pings find a dead peer (etcd killed, cable cut) that a
            // quiet watch stream would otherwise wait on forever.
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => opts = opts.with_user(user, password),
            (Some(_), None) => bail!("--user needs --password (or SG_ETCD_PASSWORD)"),
            (None, Some(_)) => bail!("--password needs --user (or SG_ETCD_USER)"),
            (None, None) => {}
        }
        let tls_wanted = self.cacert.is_some() || self.cert.is_some() || self.key.is_some();
        if tls_wanted {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.cacert {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --cacert {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            match (&self.cert, &self.key) {
                (Some(cert), Some(key)) => {
                    let cert = std::fs::read(cert)
                        .with_context(|| format!("cannot read --cert {}", cert.display()))?;
                    let key = std::fs::read(key)
                        .with_context(|| format!("cannot read --key {}", key.display()))?;
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => bail!("--cert and --key go together (a client certificate and its key)"),
            }
            opts = opts.with_tls(tls);
        }
        Ok(opts)
    }

    /// Checks the endpoints: `http(s)://HOST:PORT`.
    pub fn check(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            bail!("--etcd needs at least one endpoint, e.g. --etcd http://198.18.0.1:2379");
        }
        for e in &self.endpoints {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            match rest {
                Some(hostport) if hostport.rsplit_once(':').is_some() => {}
                _ => bail!(
                    "invalid etcd endpoint {e:?}: expected http://HOST:PORT or https://HOST:PORT"
                ),
            }
        }
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls && self.cacert.is_none() {
            bail!("https endpoints need --cacert (the CA that signed etcd's certificate)");
        }
        Ok(())
    }

    /// Connects (and authenticates). Fails fast when etcd is unreachable.
    pub async fn connect(&self) -> Result<Client> {
        self.check()?;
        let opts = self.connect_options()?;
        let client = tokio::time::timeout(
            REQUEST_TIMEOUT * 2,
            Client::connect(&self.endpoints, Some(opts)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to etcd at {}", self.endpoints.join(",")))?;
        // The connection is lazy: a TLS handshake the server refuses (no
        // client certificate, another CA) shows only at the first request.
        // One cheap request here names the cause before any real work.
        let mut client = client;
        tokio::time::timeout(REQUEST_TIMEOUT * 2, client.status())
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .map_err(|e| {
                let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
                let hint = if tls {
                    " (TLS: --cacert must name the CA that signed etcd's certificate; \
                     an etcd with client-cert-auth also needs --cert and --key)"
                } else {
                    ""
                };
                e.context(format!(
                    "cannot reach etcd at {}{hint}",
                    self.endpoints.join(",")
                ))
            })?;
        Ok(client)
    }

    /// The (address, port) pairs of the endpoints that are IP literals:
    /// what the agent's own traffic goes to (SPEC 8.4).
    pub fn socket_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.endpoints
            .iter()
            .filter_map(|e| {
                let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r);
                let rest = rest.trim_end_matches('/');
                rest.parse::<std::net::SocketAddr>().ok()
            })
            .collect()
    }
}

/// A tokio runtime for one fleet command (the agent and the CLI are
/// single-threaded: `--netns` applies to the thread that entered it, and
/// every socket is made on it).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The etcd client crate, for tools built on these types (the bench).
pub use etcd_client;
