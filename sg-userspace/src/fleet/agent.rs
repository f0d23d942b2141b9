//! `sg agent`: one host of the fleet (SPEC 8.2, 8.4). It registers this
//! host's addresses under a lease it keeps alive, watches the fleet prefix,
//! and applies every change through the enforcer's own attach and apply
//! (atomic, incremental, pinned): it composes a config file from the policy
//! and the members, and hands it to `enforcer` like an operator would.
//!
//! Failure is static: when etcd is gone enforcement stays as it is, the
//! agent retries with backoff, and resynchronizes from a fresh read.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use etcd_client::{
    Client, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep, sleep_until},
};

use super::{
    addrs::AddrWatch,
    keys::{HostRecord, Key, Prefix},
    reach,
    status_file::{self, FleetStatus, Refused, SavedLease},
    store::EtcdOptions,
    view::{Change, Policy, View, compose_host},
};
use crate::{datapath::AttachMode, enforcer, state::StateDir};

/// Bursts of changes (a thousand hosts joining) make one apply per window.
const COALESCE: Duration = Duration::from_millis(50);
/// Several address events come together (IPv4 and IPv6, a flush).
const ADDR_SETTLE: Duration = Duration::from_millis(20);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct AgentOptions {
    pub etcd: EtcdOptions,
    pub prefix: Prefix,
    pub host: String,
    /// Interface -> its groups, from `--iface IFACE=GROUP,...`.
    pub ifaces: BTreeMap<String, Vec<String>>,
    /// Interface -> its NACL, from `--nacl IFACE=NACL` (SPEC 8.2).
    pub nacls: BTreeMap<String, String>,
    /// Lease TTL in seconds.
    pub lease_ttl: i64,
    pub mode: AttachMode,
}

/// Why a session ended without an error.
enum Exit {
    /// SIGTERM or SIGINT: stop, leaving enforcement pinned.
    Signal,
    /// `sg fleet leave` removed this host.
    Left,
}

struct Agent<'a> {
    dir: &'a StateDir,
    opts: AgentOptions,
    endpoints: Vec<SocketAddr>,
    status: FleetStatus,
    view: View,
    /// The policy in force (the last that applied).
    good: Option<Policy>,
    /// The composed config in force.
    applied: Option<String>,
    lease: Option<i64>,
    addrs: AddrWatch,
    /// This host's registered addresses per interface.
    own: BTreeMap<String, Vec<IpAddr>>,
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
}

/// Runs the agent until SIGTERM/SIGINT or `sg fleet leave`.
pub fn run(dir: &StateDir, opts: AgentOptions) -> Result<()> {
    opts.etcd.check()?;
    super::keys::check_host(&opts.host)?;
    if opts.ifaces.is_empty() {
        bail!("the agent needs at least one --iface IFACE=GROUP[,GROUP...]");
    }
    for iface in opts.ifaces.keys() {
        crate::ifaces::index(iface)?;
    }
    super::store::runtime()?.block_on(async {
        let mut agent = Agent {
            dir,
            endpoints: opts.etcd.socket_addrs(),
            status: FleetStatus {
                host: opts.host.clone(),
                etcd: opts.etcd.endpoints.clone(),
                prefix: opts.prefix.to_string(),
                pid: std::process::id(),
                since: status_file::now(),
                ..FleetStatus::default()
            },
            view: View::default(),
            good: None,
            applied: None,
            lease: status_file::load_lease(dir)
                .filter(|l| l.host == opts.host && l.prefix == opts.prefix.to_string())
                .map(|l| l.id),
            addrs: AddrWatch::open()?,
            own: BTreeMap::new(),
            sigterm: signal(SignalKind::terminate())?,
            sigint: signal(SignalKind::interrupt())?,
            opts,
        };
        // What this state dir enforces now (a restarted agent) stays the
        // reference: an unchanged composition is not applied again.
        if let Some(previous) = status_file::load(dir)
            && previous.host == agent.opts.host
        {
            agent.status.revision = previous.revision;
        }
        agent.run().await
    })
}

impl Agent<'_> {
    async fn run(&mut self) -> Result<()> {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session().await {
                Ok(Exit::Signal) => {
                    eprintln!(
                        "sg agent: stopped; enforcement stays pinned under {}",
                        self.dir.pins.display()
                    );
                    self.status.connected = false;
                    self.status.since = status_file::now();
                    self.save();
                    return Ok(());
                }
                Ok(Exit::Left) => {
                    eprintln!(
                        "sg agent: host {} was removed from the fleet (sg fleet leave); exiting, enforcement stays pinned",
                        self.opts.host
                    );
                    self.status.connected = false;
                    self.status.since = status_file::now();
                    self.status.last_error = Some("removed by `sg fleet leave`".into());
                    self.save();
                    return Ok(());
                }
                Err(e) => {
                    let message = format!("{e:#}");
                    if self.status.connected || self.status.last_error.is_none() {
                        eprintln!(
                            "sg agent: etcd unreachable ({message}); enforcement stays as it is, retrying"
                        );
                    }
                    if self.status.connected {
                        self.status.connected = false;
                        self.status.since = status_file::now();
                    }
                    self.status.last_error = Some(message);
                    self.save();
                    if self.wait(backoff).await {
                        return Ok(());
                    }
                    if !self.status.connected {
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if self.status.connected {
                backoff = BACKOFF_MIN;
            }
        }
    }

    /// Sleeps `d`; true if a signal asked to stop meanwhile.
    async fn wait(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = sleep(d) => false,
            _ = self.sigterm.recv() => true,
            _ = self.sigint.recv() => true,
        }
    }

    fn save(&self) {
        if let Err(e) = status_file::save(self.dir, &self.status) {
            eprintln!("sg agent: cannot write the fleet status: {e:#}");
        }
    }

    /// One connection to etcd, from a fresh read to the first failure.
    async fn session(&mut self) -> Result<Exit> {
        let mut client = self.opts.etcd.connect().await?;
        let lease = self.take_lease(&mut client).await?;
        // Its own task: an attach (program load, verifier) may block the
        // agent's loop for longer than the TTL.
        let mut keepalive = Task(tokio::spawn(keep_alive(
            client.clone(),
            lease,
            self.opts.lease_ttl,
        )));
        let revision = self.read(&mut client).await?;
        self.register(&mut client, lease).await?;
        let mut watch = self.watch(&mut client, revision).await?;
        if !self.status.connected {
            eprintln!(
                "sg agent: connected to etcd at {} (revision {revision})",
                self.opts.etcd.endpoints.join(",")
            );
            self.status.connected = true;
            self.status.since = status_file::now();
        }
        self.status.last_error = None;
        self.reconcile().await;
        self.save();

        let mut due: Option<Instant> = None;
        let mut addr_due: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = self.sigterm.recv() => return Ok(Exit::Signal),
                _ = self.sigint.recv() => return Ok(Exit::Signal),
                ended = &mut keepalive.0 => {
                    let error = match ended {
                        Ok(Err(e)) => e,
                        Ok(Ok(())) => anyhow!("the lease keep-alive ended"),
                        Err(e) => anyhow!("the lease keep-alive task failed: {e}"),
                    };
                    if error.to_string().contains("expired") {
                        self.lease = None;
                    }
                    return Err(error);
                }
                msg = watch.message() => {
                    let resp = msg.context("watch")?
                        .ok_or_else(|| anyhow!("the watch stream ended"))?;
                    if resp.canceled() {
                        // Compacted past our revision, or refused: read afresh.
                        bail!("watch canceled (compacted at {}): {}", resp.compact_revision(), resp.cancel_reason());
                    }
                    if let Some(h) = resp.header() {
                        self.view.revision = self.view.revision.max(h.revision());
                    }
                    let mut changed = false;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let change = match ev.event_type() {
                            EventType::Put => Change::Put { key: kv.key(), value: kv.value(), mod_revision: kv.mod_revision() },
                            EventType::Delete => {
                                if self.opts.prefix.parse(kv.key()) == Key::Host(self.opts.host.clone()) {
                                    // Deleted while its lease lives: `sg fleet
                                    // leave`. Expired: register again.
                                    let ttl = client.lease_time_to_live(lease, None).await?;
                                    if ttl.ttl() > 0 {
                                        return Ok(Exit::Left);
                                    }
                                    self.lease = None;
                                    bail!("lease {lease:x} expired");
                                }
                                Change::Delete { key: kv.key() }
                            }
                        };
                        changed |= self.view.apply(&self.opts.prefix, change);
                        self.view.revision = self.view.revision.max(kv.mod_revision());
                    }
                    if changed && due.is_none() {
                        due = Some(Instant::now() + COALESCE);
                    }
                }
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    self.reconcile().await;
                    self.save();
                }
                alive = self.addrs.changed() => {
                    if !alive {
                        bail!("the rtnetlink socket closed");
                    }
                    addr_due.get_or_insert_with(|| Instant::now() + ADDR_SETTLE);
                }
                _ = sleep_until(addr_due.unwrap_or_else(Instant::now)), if addr_due.is_some() => {
                    addr_due = None;
                    self.register(&mut client, lease).await?;
                }
            }
        }
    }

    /// Takes over the saved lease while it lives; otherwise grants one.
    async fn take_lease(&mut self, client: &mut Client) -> Result<i64> {
        if let Some(id) = self.lease {
            let ttl = client.lease_time_to_live(id, None).await?;
            if ttl.ttl() > 0 {
                self.status.lease = Some(id);
                return Ok(id);
            }
        }
        let granted = client.lease_grant(self.opts.lease_ttl, None).await?;
        let id = granted.id();
        self.lease = Some(id);
        self.status.lease = Some(id);
        status_file::save_lease(
            self.dir,
            &SavedLease {
                id,
                host: self.opts.host.clone(),
                prefix: self.opts.prefix.to_string(),
            },
        )?;
        Ok(id)
    }

    /// A fresh read of the whole prefix; returns its revision.
    async fn read(&mut self, client: &mut Client) -> Result<i64> {
        let resp = client
            .get(
                self.opts.prefix.all(),
                Some(GetOptions::new().with_prefix()),
            )
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut view = View {
            revision,
            ..View::default()
        };
        for kv in resp.kvs() {
            view.apply(
                &self.opts.prefix,
                Change::Put {
                    key: kv.key(),
                    value: kv.value(),
                    mod_revision: kv.mod_revision(),
                },
            );
        }
        self.view = view;
        Ok(revision)
    }

    async fn watch(&mut self, client: &mut Client, revision: i64) -> Result<WatchStream> {
        let mut stream = client
            .watch(
                self.opts.prefix.all(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await?;
        // The first message confirms the watch exists.
        let created = stream
            .message()
            .await?
            .ok_or_else(|| anyhow!("the watch stream ended"))?;
        if created.canceled() {
            bail!("watch refused: {}", created.cancel_reason());
        }
        Ok(stream)
    }

    /// Writes this host's keys that differ from the view (one transaction):
    /// the host record and its addresses per group; removes groups it left.
    async fn register(&mut self, client: &mut Client, lease: i64) -> Result<()> {
        let mut own = BTreeMap::new();
        for iface in self.opts.ifaces.keys() {
            let index = crate::ifaces::index(iface)?;
            own.insert(iface.clone(), self.addrs.global_addresses(index).await?);
        }
        let mut by_group: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (iface, groups) in &self.opts.ifaces {
            for g in groups {
                by_group
                    .entry(g.clone())
                    .or_default()
                    .extend(own[iface].iter().copied());
            }
        }
        let host = &self.opts.host;
        let prefix = &self.opts.prefix;
        let mut ops = Vec::new();
        let record = HostRecord {
            ifaces: self.opts.ifaces.clone(),
            lease,
        };
        if self.view.hosts.get(host) != Some(&record) {
            ops.push(TxnOp::put(
                prefix.host(host),
                serde_json::to_vec(&record)?,
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        for (group, addrs) in &by_group {
            let addrs: Vec<IpAddr> = addrs.iter().copied().collect();
            let current = self.view.members.get(group).and_then(|h| h.get(host));
            if current != Some(&addrs) {
                ops.push(TxnOp::put(
                    prefix.member(group, host),
                    serde_json::to_vec(&addrs)?,
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
        }
        for (group, hosts) in &self.view.members {
            if hosts.contains_key(host) && !by_group.contains_key(group) {
                ops.push(TxnOp::delete(prefix.member(group, host), None));
            }
        }
        if !ops.is_empty() {
            client.txn(Txn::new().and_then(ops)).await?;
        }
        self.own = own;
        Ok(())
    }

    /// Applies the view: a new policy revision if it compiles (else it is
    /// refused and the last good one stays), and the current members.
    async fn reconcile(&mut self) {
        let members = self.view.group_members();
        self.status.members = self
            .view
            .members
            .iter()
            .map(|(g, hosts)| (g.clone(), hosts.values().map(Vec::len).sum()))
            .collect();
        let Some(policy) = self.view.policy.clone() else {
            self.status.last_error = Some("no fleet policy yet: run `sg fleet push`".into());
            return;
        };
        let refused = self.status.refused.as_ref().map(|r| r.revision);
        let is_new = self.good.as_ref().map(|g| g.revision) != Some(policy.revision);
        if is_new && refused != Some(policy.revision) {
            match self.apply(&policy.text, &members).await {
                Ok(()) => {
                    eprintln!("sg agent: policy revision {} in force", policy.revision);
                    self.good = Some(policy.clone());
                    self.status.revision = Some(policy.revision);
                    self.status.refused = None;
                    self.status.applied_at = Some(self.view.revision);
                    self.status.last_error = None;
                    return;
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    eprintln!(
                        "sg agent: refused policy revision {}: {error}; the last good policy stays",
                        policy.revision
                    );
                    self.status.refused = Some(Refused {
                        revision: policy.revision,
                        error,
                    });
                }
            }
        }
        // Members changed (or the new policy was refused): the policy in
        // force with the current members.
        let Some(good) = self.good.clone() else {
            return;
        };
        match self.apply(&good.text, &members).await {
            Ok(()) => {
                self.status.applied_at = Some(self.view.revision);
                self.status.last_error = None;
            }
            Err(e) => {
                let error = format!("{e:#}");
                eprintln!("sg agent: apply failed: {error}; enforcement stays as it was");
                self.status.last_error = Some(error);
            }
        }
    }

    /// Composes, then attaches the interfaces not attached yet and applies
    /// to the rest, through `enforcer` (all or nothing each).
    async fn apply(
        &mut self,
        policy: &str,
        members: &BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> Result<()> {
        let text = compose_host(policy, &self.opts.ifaces, &self.opts.nacls, members)?;
        let attached: BTreeSet<String> = self
            .dir
            .load()?
            .map(|s| s.interfaces.into_keys().collect())
            .unwrap_or_default();
        let all_attached = self.opts.ifaces.keys().all(|i| attached.contains(i));
        if self.applied.as_deref() == Some(text.as_str()) && all_attached {
            return Ok(());
        }
        // Checked before the file in force is replaced.
        let config = crate::config::parse(&text, "fleet policy")
            .map_err(|e| anyhow!("{e}"))?
            .config;
        let path = status_file::composed_config(self.dir);
        let previous = std::fs::read_to_string(&path).ok();
        std::fs::create_dir_all(&self.dir.meta)?;
        std::fs::write(&path, &text)?;
        // Off the agent's loop (program loads and the verifier take time);
        // the keep-alive task runs meanwhile.
        let (dir, ifaces, mode, target) = (
            self.dir.clone(),
            self.opts.ifaces.clone(),
            self.opts.mode,
            path.clone(),
        );
        let result =
            tokio::task::spawn_blocking(move || enforce(&dir, &target, &ifaces, mode, &attached))
                .await
                .map_err(|e| anyhow!("the apply task failed: {e}"))
                .and_then(|r| r);
        match (&result, previous) {
            (Err(_), Some(previous)) => {
                let _ = std::fs::write(&path, previous);
            }
            (Err(_), None) => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
        result?;
        self.applied = Some(text);
        self.status.warnings = reach::etcd_blocked(&config, &self.endpoints);
        for w in &self.status.warnings {
            eprintln!("sg agent: warning: {w}");
        }
        Ok(())
    }
}

/// Attaches the interfaces not attached yet, or applies to all of them.
fn enforce(
    dir: &StateDir,
    path: &std::path::Path,
    ifaces: &BTreeMap<String, Vec<String>>,
    mode: AttachMode,
    attached: &BTreeSet<String>,
) -> Result<()> {
    let missing: Vec<&String> = ifaces.keys().filter(|i| !attached.contains(*i)).collect();
    if missing.is_empty() {
        enforcer::apply(dir, path, false)?;
        return Ok(());
    }
    // Each attach installs the whole config on every attached interface.
    for iface in missing {
        let req = enforcer::AttachRequest {
            iface,
            config_path: path,
            groups: None,
            mode,
        };
        let attached = enforcer::attach(dir, &req)?;
        eprintln!(
            "sg agent: attached to {iface} ({}); {}",
            attached.mode,
            crate::adopt::describe(&attached.adopted)
        );
    }
    Ok(())
}

/// Keeps `lease` alive (every third of its TTL) until it expires or the
/// connection fails.
async fn keep_alive(mut client: Client, lease: i64, ttl: i64) -> Result<()> {
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(Duration::from_millis((ttl as u64 * 1000 / 3).max(500)));
    loop {
        tick.tick().await;
        keeper.keep_alive().await.context("lease keep-alive")?;
        let msg = tokio::time::timeout(super::store::REQUEST_TIMEOUT, stream.message())
            .await
            .map_err(|_| anyhow!("lease keep-alive: no answer"))?
            .context("lease keep-alive")?
            .ok_or_else(|| anyhow!("the lease keep-alive stream ended"))?;
        if msg.ttl() <= 0 {
            bail!("lease {lease:x} expired");
        }
    }
}

/// A task aborted when dropped (a session's helpers end with it).
struct Task<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
