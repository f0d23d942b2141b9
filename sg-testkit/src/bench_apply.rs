//! `sg-bench --apply-only` (issue 14): the cost of one `sg apply` that
//! replaces 10,000 host rules by 10,000 others (every rule changed), on
//! one interface in a lab namespace, with a ping through the applies that
//! must lose nothing. Each apply's wall time and the CPU time of the `sg`
//! process (user and system, from `getrusage(RUSAGE_CHILDREN)` deltas).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde::Serialize;

use sg_lab::{Lab, SgCli, unique_name};

use crate::bench::{Family, peer, rule_port};

/// Rules of each config.
pub const RULES: usize = 10_000;
/// Applies alternating the two configs.
pub const APPLIES: usize = 8;
/// Applies of a one-rule change, for reference.
const SMALL_APPLIES: usize = 4;

/// Times of one `sg` run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Run {
    pub wall_ms: f64,
    pub user_ms: f64,
    pub sys_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct ApplyReport {
    pub rules: usize,
    /// Every rule changed, alternating two configs.
    pub full: Vec<Run>,
    /// One rule changed, on the same 10,000-rule config.
    pub one_rule: Vec<Run>,
    /// Pings of a flow allowed throughout (every 10 ms), over every apply.
    pub pings_sent: u64,
    pub pings_received: u64,
}

/// `RULES` TCP rules from host peers; `shift` moves every port (so every
/// rule ID changes), `one` changes the first rule's port only. Then the
/// bench's own rule: ICMP from the lab subnet, for the ping.
fn config(shift: u16, one: bool) -> String {
    let mut text = String::new();
    for g in 0..RULES.div_ceil(1000) {
        text.push_str(&format!("[groups.g{g}]\negress = []\ningress = [\n"));
        for i in g * 1000..((g + 1) * 1000).min(RULES) {
            let port = rule_port(i) + shift + u16::from(one && i == 0) * 40_000;
            text.push_str(&format!(
                "  {{ proto = \"tcp\", ports = \"{port}\", from = \"{}\" }},\n",
                peer(Family::V4, i)
            ));
        }
        text.push_str("]\n");
    }
    text.push_str(
        "[groups.bench]\negress = []\ningress = [\n  { proto = \"icmp\", from = \"198.18.1.0/24\" },\n]\n",
    );
    text
}

fn groups() -> String {
    let mut groups: Vec<String> = (0..RULES.div_ceil(1000)).map(|g| format!("g{g}")).collect();
    groups.push("bench".to_string());
    groups.join(",")
}

/// User and system CPU time of the waited-for children so far, in ms.
fn children_cpu() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    (ms(usage.ru_utime), ms(usage.ru_stime))
}

/// Runs `sg ARGS` once, timed.
fn timed(sg: &SgCli, args: &[&str]) -> Result<Run> {
    let (user, sys) = children_cpu();
    let started = Instant::now();
    let out = sg.cmd(args).stdout(Stdio::null()).output()?;
    let wall = started.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "sg {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let (user2, sys2) = children_cpu();
    Ok(Run {
        wall_ms: wall.as_secs_f64() * 1e3,
        user_ms: user2 - user,
        sys_ms: sys2 - sys,
    })
}

/// The bench: `sg` is the binary under test.
pub fn run(sg_exe: std::path::PathBuf) -> Result<ApplyReport> {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let server = lab.host("server");
    let (_c, s) = lab.link(&client, &server, 1);
    let sg = SgCli::new(sg_exe, &server, "sgapply");
    let cfg = std::env::temp_dir().join(format!("{}.toml", unique_name("sgapply")));
    let cfg_s = cfg.to_str().context("utf-8 path")?.to_string();
    let configs = [config(0, false), config(20_000, false)];
    let result = (|| -> Result<ApplyReport> {
        std::fs::write(&cfg, &configs[0])?;
        sg.run(&["attach", &s.ifname, "-c", &cfg_s, "--groups", &groups()])?;
        let pinger = crate::bench_e2e::start_ping(&client, std::net::IpAddr::V4(s.v4), 120)?;
        std::thread::sleep(Duration::from_millis(200));
        let mut full = Vec::new();
        for i in 1..=APPLIES {
            std::fs::write(&cfg, &configs[i % 2])?;
            full.push(timed(&sg, &["apply", "-c", &cfg_s])?);
        }
        // Back on config 0 (APPLIES is even), then one rule changed.
        let one = [config(0, true), config(0, false)];
        let mut one_rule = Vec::new();
        for i in 0..SMALL_APPLIES {
            std::fs::write(&cfg, &one[i % 2])?;
            one_rule.push(timed(&sg, &["apply", "-c", &cfg_s])?);
        }
        std::thread::sleep(Duration::from_millis(200));
        let (pings_sent, pings_received) = crate::bench_e2e::stop_ping(pinger)?;
        Ok(ApplyReport {
            rules: RULES,
            full,
            one_rule,
            pings_sent,
            pings_received,
        })
    })();
    // `sg` detaches when dropped.
    let _ = std::fs::remove_file(&cfg);
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn row(name: &str, runs: &[Run]) -> String {
    let col = |f: fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{:.0} | {:.0}", median(v), max)
    };
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        runs.len(),
        col(|r| r.wall_ms),
        col(|r| r.user_ms + r.sys_ms),
        col(|r| r.user_ms),
        col(|r| r.sys_ms),
    )
}

pub fn markdown(r: &ApplyReport) -> String {
    let mut out = String::from(
        "| change | applies | wall median (ms) | wall max | user+sys median (ms) | user+sys max | user median | user max | sys median | sys max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    out.push_str(&row(
        &format!("{} rules replaced by {} others", r.rules, r.rules),
        &r.full,
    ));
    out.push_str(&row(&format!("1 rule of {} changed", r.rules), &r.one_rule));
    out.push_str(&format!(
        "\nA ping every 10 ms through the applies: {} sent, {} received.\n",
        r.pings_sent, r.pings_received
    ));
    out
}
