//! Fleet convergence (SPEC 8.5): three real agents and 1,000 simulated
//! hosts (plain etcd writes, one lease each) registering, changing
//! addresses and leaving against one etcd in a lab namespace. For every
//! write: the time from its commit to the moment each agent reports a
//! completed apply at or past its revision (`applied_at` in the agent's
//! `fleet.json`, written after the maps are switched). Also: etcd writes per
//! change (revisions consumed over changes made: the agents add none).

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sg::fleet::store::{
    EtcdOptions,
    etcd_client::{Client, PutOptions},
    runtime,
};
use sg_lab::{Etcd, Lab, SgCli};

const POLICY: &str = r#"
[groups.base]
ingress = [{ proto = "tcp", ports = "1024-65535", from = "198.18.1.1/32" }]

[groups.svc]
ingress = [{ proto = "tcp", ports = "1433", from = "sg:app" }]

[groups.app]
"#;

const PREFIX: &str = "/sgbench";
/// Writes per second of the simulated hosts.
const RATE: u64 = 100;

#[derive(Debug, Serialize)]
pub struct Phase {
    pub phase: String,
    pub changes: usize,
    /// Over every (change, agent) pair, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// etcd revisions consumed per change (1.0: nobody else wrote).
    pub writes_per_change: f64,
    /// Applies per agent during the phase (changes coalesce).
    pub applies_per_agent: f64,
}

#[derive(Debug, Serialize)]
pub struct FleetReport {
    pub agents: usize,
    pub simulated_hosts: usize,
    pub writes_per_second: u64,
    pub phases: Vec<Phase>,
}

struct AgentProc {
    sg: SgCli,
    child: Child,
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every (time, applied_at) an agent reported, polled every millisecond.
struct Recorder {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<(Instant, i64)>>>,
}

fn applied_at(meta: &std::path::Path) -> Option<i64> {
    let bytes = std::fs::read(meta.join("fleet.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["applied_at"].as_i64()
}

impl Recorder {
    fn start(metas: Vec<PathBuf>) -> Recorder {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = metas
            .into_iter()
            .map(|meta| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut last = 0;
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(a) = applied_at(&meta)
                            && a > last
                        {
                            last = a;
                            seen.push((Instant::now(), a));
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    seen
                })
            })
            .collect();
        Recorder { stop, threads }
    }

    fn finish(self) -> Vec<Vec<(Instant, i64)>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn sim_addr(i: usize, generation: u8) -> IpAddr {
    // 198.19.G.0/24 blocks: 4 per generation, 1,024 hosts.
    let i = i as u32;
    IpAddr::V4(Ipv4Addr::new(
        198,
        19,
        generation * 4 + (i / 256) as u8,
        (i % 256) as u8,
    ))
}

/// Runs the bench with `simulated` hosts. `exe` is the `sg` binary.
pub fn run(exe: PathBuf, simulated: usize) -> Result<FleetReport> {
    assert!(simulated <= 1024, "sim_addr covers 1,024 hosts");
    let mut lab = Lab::new();
    let hub = lab.router("hub");
    let mut hosts = Vec::new();
    for i in 1..=3u8 {
        let h = lab.host(&format!("a{i}"));
        let (_, end) = lab.link(&hub, &h, i);
        h.add_route("198.18.0.0/16", format!("198.18.{i}.1").parse()?);
        hosts.push((h, end));
    }
    let etcd = Etcd::start(&hub, "198.18.1.1".parse()?);
    let url = etcd.url();
    let policy = std::env::temp_dir().join(sg_lab::unique_name("sgbenchfleet"));
    std::fs::write(&policy, POLICY)?;
    let mut agents = Vec::new();
    for (i, (h, end)) in hosts.iter().enumerate() {
        let sg = SgCli::new(exe.clone(), h, "sgbenchfleet");
        if i == 0 {
            sg.run(&[
                "fleet",
                "push",
                "-c",
                policy.to_str().context("utf-8")?,
                "--etcd",
                &url,
                "--prefix",
                PREFIX,
            ])?;
        }
        let iface = format!("{}=base,svc", end.ifname);
        let name = format!("agent-{i}");
        let child = sg
            .cmd(&[
                "agent", "--etcd", &url, "--prefix", PREFIX, "--host", &name, "--iface", &iface,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        agents.push(AgentProc { sg, child });
    }
    let _ = std::fs::remove_file(&policy);
    let metas: Vec<PathBuf> = agents
        .iter()
        .map(|a| sg::state::StateDir::new(&a.sg.state_dir).meta)
        .collect();
    let start = Instant::now();
    while !metas.iter().all(|m| applied_at(m).is_some()) {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("the agents did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The simulated hosts write from inside the hub (where etcd listens).
    let rt = runtime()?;
    let opts = EtcdOptions {
        endpoints: vec![url.clone()],
        ..EtcdOptions::default()
    };
    let result = hub.in_ns(move || -> Result<Vec<Phase>> {
        rt.block_on(async move {
            let mut client = opts.connect().await?;
            let mut leases = Vec::new();
            for _ in 0..simulated {
                leases.push(client.lease_grant(300, None).await?.id());
            }
            let mut phases = Vec::new();
            for phase in ["register", "change address", "leave"] {
                let recorder = Recorder::start(metas.clone());
                let before = revision(&mut client).await?;
                let mut writes = Vec::new();
                let period = Duration::from_micros(1_000_000 / RATE);
                let t0 = Instant::now();
                let count = if phase == "change address" {
                    simulated.min(300)
                } else {
                    simulated
                };
                for (i, &lease) in leases.iter().enumerate().take(count) {
                    tokio::time::sleep_until((t0 + period * i as u32).into()).await;
                    let key = format!("{PREFIX}/members/app/sim-{i}");
                    let rev = match phase {
                        "register" | "change address" => {
                            let generation = u8::from(phase != "register");
                            let value = serde_json::to_vec(&[sim_addr(i, generation)])?;
                            let resp = client
                                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                                .await?;
                            resp.header().map_or(0, |h| h.revision())
                        }
                        _ => {
                            let resp = client.lease_revoke(lease).await?;
                            resp.header().map_or(0, |h| h.revision())
                        }
                    };
                    writes.push((Instant::now(), rev));
                }
                // Let the last change land everywhere.
                let last = writes.last().map_or(0, |w| w.1);
                let settle = Instant::now();
                while !metas.iter().all(|m| applied_at(m).unwrap_or(0) >= last) {
                    if settle.elapsed() > Duration::from_secs(60) {
                        bail!("{phase}: the agents did not converge");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let after = revision(&mut client).await?;
                let seen = recorder.finish();
                let mut lat = Vec::new();
                for agent in &seen {
                    for &(t, rev) in &writes {
                        if let Some(&(when, _)) = agent.iter().find(|(_, a)| *a >= rev) {
                            lat.push(when.saturating_duration_since(t).as_secs_f64() * 1e3);
                        }
                    }
                }
                lat.sort_by(f64::total_cmp);
                phases.push(Phase {
                    phase: phase.to_string(),
                    changes: count,
                    p50_ms: percentile(&lat, 0.50),
                    p99_ms: percentile(&lat, 0.99),
                    max_ms: lat.last().copied().unwrap_or(f64::NAN),
                    writes_per_change: (after - before) as f64 / count as f64,
                    applies_per_agent: seen.iter().map(Vec::len).sum::<usize>() as f64
                        / seen.len() as f64,
                });
                eprintln!("{:?}", phases.last());
            }
            Ok(phases)
        })
    });
    drop(agents);
    drop(etcd);
    drop(lab);
    Ok(FleetReport {
        agents: 3,
        simulated_hosts: simulated,
        writes_per_second: RATE,
        phases: result?,
    })
}

async fn revision(client: &mut Client) -> Result<i64> {
    let resp = client.get("sgbench-probe", None).await?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

/// The Markdown section of BENCHMARKS.md.
pub fn markdown(r: &FleetReport) -> String {
    let mut out = String::from("## Fleet convergence (SPEC 8.5)\n\n");
    out.push_str(&format!(
        "{} real agents and {} simulated hosts (plain etcd writes, one lease each) against one\n\
         etcd in a lab namespace, {} writes/s. Latency: from a write's commit to each agent's\n\
         report of an apply at or past its revision (after the maps are switched), over every\n\
         (change, agent) pair. Writes per change: etcd revisions consumed per change made.\n\n",
        r.agents, r.simulated_hosts, r.writes_per_second
    ));
    out.push_str(
        "| phase | changes | p50 | p99 | max | etcd writes per change | applies per agent |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for p in &r.phases {
        out.push_str(&format!(
            "| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.2} | {:.0} |\n",
            p.phase,
            p.changes,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.writes_per_change,
            p.applies_per_agent
        ));
    }
    out
}
