//! End-to-end benchmarks over veth between namespaces (SPEC 6): sg against
//! nftables given the same rules in its idiomatic form, under the same
//! offered load, and the latency of a 10,000-rule live update.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use sg_lab::{Host, Lab, Link, SgCli, unique_name};

use crate::bench::{Family, rule_set};

/// Packets of each flood: a few seconds at the rates reached here.
const FLOOD_PACKETS: u64 = 1_500_000;
const IPERF_SECS: &str = "4";
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Default, Serialize)]
pub struct Filter {
    pub name: &'static str,
    /// iperf3 TCP throughput, client to server.
    pub tcp_gbps: f64,
    /// Packets of a SYN flood to a denied port the filter dropped, per second.
    pub drops_per_sec: f64,
    /// Packets the flooder sent per second: the offered load, which on
    /// veth is as much as sender and filter together can handle.
    pub offered_pps: f64,
}

#[derive(Debug, Serialize)]
pub struct E2eReport {
    pub rules: usize,
    pub filters: Vec<Filter>,
    /// Wall time of `sg apply` replacing a 10,000-rule policy by another.
    pub update_ms: u128,
    /// iperf3 with no filter and through sg as `--mode auto` attaches it
    /// (TC ingress on veth), in alternating rounds: `(none, sg)` Gbit/s.
    pub auto_rounds: Vec<(f64, f64)>,
    /// Pings of a flow allowed throughout, sent and received during updates.
    pub pings_sent: u64,
    pub pings_received: u64,
}

/// The SG rules, then what the benchmark itself needs (iperf3).
fn sg_config(rules: usize) -> String {
    let mut text = rule_set(Family::V4, rules);
    text.push_str(&format!(
        "[groups.bench]\negress = []\ningress = [\n  {{ proto = \"tcp\", ports = \"{IPERF_PORT}\", from = \"198.18.1.0/24\" }},\n  {{ proto = \"icmp\", from = \"198.18.1.0/24\" }},\n]\n"
    ));
    text
}

/// `--groups` for [`sg_config`]: `rule_set`'s groups of 1000 rules, then
/// the benchmark's own.
fn sg_groups(rules: usize) -> String {
    let mut groups: Vec<String> = (0..rules.div_ceil(1000)).map(|g| format!("g{g}")).collect();
    groups.push("bench".to_string());
    groups.join(",")
}

/// The same rules as nftables writes them: established/related first, then
/// one set element per security-group rule, then drop.
fn nft_ruleset(rules: usize) -> String {
    let mut elements = Vec::with_capacity(rules);
    for i in 0..rules {
        let peer = crate::bench::peer(Family::V4, i);
        elements.push(format!("{peer} . {}", crate::bench::rule_port(i)));
    }
    format!(
        "table inet sgbench {{
  set sg_rules {{ type ipv4_addr . inet_service; elements = {{ {} }} }}
  chain input {{
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname \"lo\" accept
    icmpv6 type {{ nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect }} accept
    ip saddr . tcp dport @sg_rules accept
    ip saddr 198.18.1.0/24 tcp dport {IPERF_PORT} accept
    ip saddr 198.18.1.0/24 icmp type echo-request accept
    counter name dropped drop
  }}
  counter dropped {{ }}
}}
",
        elements.join(", ")
    )
}

fn iperf(client: &Host, server: &Host, dst: IpAddr) -> Result<f64> {
    let _srv = server.spawn(&["iperf3", "-s", "-1", "-p", &IPERF_PORT.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    let out = client.run(&[
        "iperf3",
        "-c",
        &dst.to_string(),
        "-p",
        &IPERF_PORT.to_string(),
        "-t",
        IPERF_SECS,
        "-J",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 failed: {}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(bps / 1e9)
}

/// A SYN flood to a port no rule allows: trafgen on one CPU, sending
/// FLOOD_PACKETS as fast as it can. On veth the receiver's work (and so
/// the filter's) runs in the sender's context, so the rate reached is set
/// by the whole per-packet cost: a cheaper filter lets the flood go
/// faster. Returns the seconds it took.
fn flood(client: &Host, from: &Link, to_mac: &str, dst: Ipv4Addr) -> Result<f64> {
    let from_mac = client.run_ok(&["cat", &format!("/sys/class/net/{}/address", from.ifname)]);
    let conf = std::env::temp_dir().join(format!("{}.trafgen", unique_name("sgbench")));
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={to_mac}, sa={}), ipv4(saddr={}, daddr={dst}, ttl=64), tcp(sp=drnd(), dp=9, syn) }}\n",
            from_mac.trim(),
            from.v4
        ),
    )?;
    let started = Instant::now();
    let out = client
        .cmd("trafgen")
        .args(["--dev", &from.ifname, "--conf"])
        .arg(&conf)
        .args(["--num", &FLOOD_PACKETS.to_string(), "--cpus", "1"])
        // The sysctls it would tune are not the namespace's to change.
        .arg("--no-sock-mem")
        .output();
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&conf);
    let out = out.context("cannot run trafgen")?;
    anyhow::ensure!(
        out.status.success(),
        "trafgen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(secs)
}

/// Starts the loss probe: a quiet ping from `from` to `to` for at most
/// `secs`, read back with [`stop_ping`]. Every 10 ms: iputils ping waits
/// in whole milliseconds, so below that it spins a core (`-i 0.002` took
/// one of the machine's two and slowed every `sg apply` it watched by
/// ~30%).
pub(crate) fn start_ping(from: &Host, to: IpAddr, secs: u32) -> Result<std::process::Child> {
    Ok(from
        .cmd("ping")
        .args([
            "-n",
            "-q",
            "-i",
            "0.01",
            "-w",
            &secs.to_string(),
            &to.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()?)
}

/// Stops a running `ping -q` (SIGINT, as at a terminal) and reads its
/// summary: `(sent, received)`.
pub(crate) fn stop_ping(pinger: std::process::Child) -> Result<(u64, u64)> {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pinger.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let out = pinger.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .context("ping summary")?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    match nums[..] {
        [sent, received, ..] => Ok((sent, received)),
        _ => anyhow::bail!("ping summary without counts: {line}"),
    }
}

/// Rounds of the throughput comparison with `--mode auto`.
const AUTO_ROUNDS: usize = 5;

/// iperf3 with no filter, then through sg attached as `--mode auto` picks
/// (TC ingress on veth), round after round: the machine's drift hits both
/// alike, and the median of the per-round ratios is the figure.
fn auto_rounds(
    sg: &SgCli,
    client: &Host,
    server: &Host,
    s: &Link,
    cfg: &str,
    rules: usize,
    dst: IpAddr,
) -> Result<Vec<(f64, f64)>> {
    let mut rounds = Vec::with_capacity(AUTO_ROUNDS);
    for _ in 0..AUTO_ROUNDS {
        let none = iperf(client, server, dst)?;
        sg.run(&[
            "attach",
            &s.ifname,
            "-c",
            cfg,
            "--groups",
            &sg_groups(rules),
        ])?;
        let through = iperf(client, server, dst);
        sg.run(&["detach", "--all"])?;
        rounds.push((none, through?));
    }
    Ok(rounds)
}

/// The median of the per-round ratios sg / none.
pub fn median_ratio(rounds: &[(f64, f64)]) -> f64 {
    let mut ratios: Vec<f64> = rounds.iter().map(|(n, s)| s / n.max(1e-9)).collect();
    ratios.sort_by(f64::total_cmp);
    ratios.get(ratios.len() / 2).copied().unwrap_or(0.0)
}

fn sg_drops(sg: &SgCli) -> Result<u64> {
    let stats: serde_json::Value = serde_json::from_str(&sg.run(&["stats", "--json"])?)?;
    Ok(stats["drops_by_reason"]["no_rule"].as_u64().unwrap_or(0))
}

fn nft_drops(server: &Host) -> Result<u64> {
    let out = server.run_ok(&["nft", "-j", "list", "counter", "inet", "sgbench", "dropped"]);
    let json: serde_json::Value = serde_json::from_str(&out)?;
    json["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["counter"]["packets"].as_u64()))
        .context("nft counter")
}

pub fn run(rules: usize) -> Result<E2eReport> {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let server = lab.host("server");
    let (c, s): (Link, Link) = lab.link(&client, &server, 1);
    let dst = IpAddr::V4(s.v4);
    let server_mac = server.run_ok(&["cat", &format!("/sys/class/net/{}/address", s.ifname)]);
    let server_mac = server_mac.trim();
    let mut filters = Vec::new();

    let tcp = iperf(&client, &server, dst)?;
    filters.push(Filter {
        name: "none",
        tcp_gbps: tcp,
        ..Filter::default()
    });

    // nftables
    let nft_file = std::env::temp_dir().join(format!("{}.nft", unique_name("sgbench")));
    std::fs::write(&nft_file, nft_ruleset(rules))?;
    server.run_ok(&["nft", "-f", nft_file.to_str().context("utf-8 path")?]);
    let tcp = iperf(&client, &server, dst)?;
    let before = nft_drops(&server)?;
    let secs = flood(&client, &c, server_mac, s.v4)?;
    let dropped = nft_drops(&server)? - before;
    filters.push(Filter {
        name: "nftables",
        tcp_gbps: tcp,
        drops_per_sec: dropped as f64 / secs,
        offered_pps: FLOOD_PACKETS as f64 / secs,
    });
    server.run_ok(&["nft", "delete", "table", "inet", "sgbench"]);
    let _ = std::fs::remove_file(&nft_file);

    // sg
    // The bench binary sits beside `sg` in target/release.
    let exe = std::env::current_exe()?
        .parent()
        .context("bench binary has a directory")?
        .join("sg");
    let sg = SgCli::new(exe, &server, "sgbench");
    let cfg = std::env::temp_dir().join(format!("{}.toml", unique_name("sgbench")));
    std::fs::write(&cfg, sg_config(rules))?;
    let cfg_s = cfg.to_str().context("utf-8 path")?.to_string();
    let result = (|| -> Result<E2eReport> {
        // Ingress on XDP (native on veth), then on TC.
        for (name, mode) in [("sg (XDP)", "native"), ("sg (TC ingress)", "tc")] {
            sg.run(&[
                "attach",
                &s.ifname,
                "-c",
                &cfg_s,
                "--groups",
                &sg_groups(rules),
                "--mode",
                mode,
            ])?;
            let tcp = iperf(&client, &server, dst)?;
            let before = sg_drops(&sg)?;
            let secs = flood(&client, &c, server_mac, s.v4)?;
            let dropped = sg_drops(&sg)? - before;
            filters.push(Filter {
                name,
                tcp_gbps: tcp,
                drops_per_sec: dropped as f64 / secs,
                offered_pps: FLOOD_PACKETS as f64 / secs,
            });
            sg.run(&["detach", "--all"])?;
        }
        let auto_rounds = auto_rounds(&sg, &client, &server, &s, &cfg_s, rules, dst)?;
        // Live update of 10,000 rules while a ping runs through.
        let big_a = sg_config(10_000);
        let big_b = big_a.replace("ports = \"1", "ports = \"2");
        std::fs::write(&cfg, &big_a)?;
        sg.run(&[
            "attach",
            &s.ifname,
            "-c",
            &cfg_s,
            "--groups",
            &sg_groups(10_000),
        ])?;
        let pinger = start_ping(&client, IpAddr::V4(s.v4), 60)?;
        std::thread::sleep(Duration::from_millis(200));
        let mut total = Duration::ZERO;
        for i in 0..4 {
            std::fs::write(&cfg, if i % 2 == 0 { &big_b } else { &big_a })?;
            let started = Instant::now();
            sg.run(&["apply", "-c", &cfg_s])?;
            total += started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(200));
        let (pings_sent, pings_received) = stop_ping(pinger)?;
        Ok(E2eReport {
            rules,
            filters: std::mem::take(&mut filters),
            update_ms: (total / 4).as_millis(),
            auto_rounds,
            pings_sent,
            pings_received,
        })
    })();
    // `sg` detaches when dropped.
    let _ = std::fs::remove_file(&cfg);
    result
}
