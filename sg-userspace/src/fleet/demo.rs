//! `sg demo --fleet`: the course example on three namespaced hosts with a
//! real etcd and a real agent each. db accepts 1433 from the app group; a
//! host joins app and gets in; its agent is killed and it is shut out once
//! its lease runs out; a policy change reaches every agent at once. It
//! fails if any verdict differs, and cleans up after itself.

use std::{
    net::IpAddr,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use sg_lab::{Etcd, Host, Lab, SgCli};

const POLICY: &str = include_str!("../../../examples/fleet.toml");
const LEASE_SECS: u64 = 3;

struct Node {
    name: &'static str,
    host: Host,
    ip: IpAddr,
    iface: String,
    sg: SgCli,
    agent: Option<Child>,
}

impl Node {
    fn start_agent(&mut self, etcd: &str, groups: &str) -> Result<()> {
        let iface = format!("{}={groups}", self.iface);
        let lease = format!("{LEASE_SECS}s");
        let child = self
            .sg
            .cmd(&[
                "agent", "--etcd", etcd, "--host", self.name, "--iface", &iface, "--lease", &lease,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start sg agent")?;
        self.agent = Some(child);
        println!(
            "  {}: sg agent --host {} --iface {iface}",
            self.name, self.name
        );
        Ok(())
    }

    fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn fleet(&self) -> serde_json::Value {
        self.sg
            .run(&["status", "--json"])
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .map(|v| v["fleet"].clone())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

fn wait(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for {what}")
}

fn check(from: &Node, to: &Node, port: u16, expected: bool, failures: &mut usize) {
    let allowed = from.host.tcp_connects(to.ip, port);
    let verdict = if allowed { "allowed" } else { "denied" };
    let mark = if allowed == expected { "ok " } else { "BAD" };
    if allowed != expected {
        *failures += 1;
    }
    println!("  [{mark}] {} -> {}:{port} {verdict}", from.name, to.name);
}

pub fn run() -> Result<()> {
    let exe = std::env::current_exe()?;
    println!("building the lab: a hub running etcd, hosts db-1, app-1, app-2");
    let mut lab = Lab::new();
    let hub = lab.router("hub");
    let mut nodes = Vec::new();
    for (i, name) in [(1u8, "db-1"), (2, "app-1"), (3, "app-2")] {
        let host = lab.host(&name.replace('-', "_"));
        let (_, end) = lab.link(&hub, &host, i);
        host.add_route("198.18.0.0/16", format!("198.18.{i}.1").parse()?);
        nodes.push(Node {
            name,
            ip: IpAddr::V4(end.v4),
            iface: end.ifname.clone(),
            sg: SgCli::new(exe.clone(), &host, "sgdemo"),
            host,
            agent: None,
        });
    }
    let etcd = Etcd::start(&hub, "198.18.1.1".parse()?);
    let url = etcd.url();
    let _server = nodes[0].host.tcp_listen(1433);
    let _server2 = nodes[0].host.tcp_listen(1434);

    let policy = std::env::temp_dir().join(sg_lab::unique_name("sgfleet"));
    std::fs::write(&policy, POLICY)?;
    let policy_path = policy.display().to_string();
    let out = nodes[0]
        .sg
        .run(&["fleet", "push", "-c", &policy_path, "--etcd", &url])?;
    print!("\n$ sg fleet push -c examples/fleet.toml\n{out}");
    let mut failures = 0;

    println!("\nstarting the agents of db-1 and app-1");
    nodes[0].start_agent(&url, "base,db")?;
    nodes[1].start_agent(&url, "base,app")?;
    wait("the agents to attach", Duration::from_secs(90), || {
        nodes.iter().take(2).all(|n| n.fleet()["connected"] == true)
            && nodes[0].fleet()["members"]["app"] == 2
    })?;
    check(&nodes[1], &nodes[0], 1433, true, &mut failures);
    check(&nodes[2], &nodes[0], 1433, false, &mut failures);

    println!("\napp-2 joins the app group");
    nodes[2].start_agent(&url, "base,app")?;
    let took = wait("app-2 to join", Duration::from_secs(90), || {
        nodes[0].fleet()["members"]["app"] == 4
    })?;
    println!("  db-1 sees app-2 after {took:.1?}");
    check(&nodes[2], &nodes[0], 1433, true, &mut failures);

    println!("\napp-2's agent is killed (SIGKILL); its lease ({LEASE_SECS}s) runs out");
    nodes[2].kill_agent();
    let took = wait(
        "app-2 to leave",
        Duration::from_secs(LEASE_SECS + 10),
        || nodes[0].fleet()["members"]["app"] == 2,
    )?;
    println!("  db-1 dropped app-2 after {took:.1?}");
    check(&nodes[2], &nodes[0], 1433, false, &mut failures);
    check(&nodes[1], &nodes[0], 1433, true, &mut failures);

    println!("\nthe policy changes: db also serves 1434 to app");
    std::fs::write(
        &policy,
        POLICY.replace("ports = \"1433\"", "ports = \"1433-1434\""),
    )?;
    let out = nodes[0]
        .sg
        .run(&["fleet", "push", "-c", &policy_path, "--etcd", &url])?;
    print!("$ sg fleet push -c examples/fleet.toml\n{out}");
    let revision: i64 = out
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|r| r.parse().ok())
        .context("no revision in the push output")?;
    let took = wait("every agent to apply it", Duration::from_secs(20), || {
        nodes
            .iter()
            .take(2)
            .all(|n| n.fleet()["revision"] == revision)
    })?;
    println!("  db-1 and app-1 enforce revision {revision} after {took:.1?}");
    check(&nodes[1], &nodes[0], 1434, true, &mut failures);

    let show = nodes[0].sg.run(&["fleet", "show", "--etcd", &url])?;
    print!("\n$ sg fleet show\n{show}");
    let status = nodes[0].sg.run(&["status"])?;
    print!("\n$ sg status   (on db-1)\n{status}");

    println!("\ncleaning up");
    for n in &mut nodes {
        n.kill_agent();
    }
    drop(nodes);
    drop(etcd);
    drop(lab);
    let _ = std::fs::remove_file(&policy);
    if failures > 0 {
        bail!("{failures} verdicts differ from the policy");
    }
    println!("every verdict matched the fleet policy");
    Ok(())
}
