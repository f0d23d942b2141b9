//! Per-packet cost through BPF_PROG_TEST_RUN (SPEC 6), as ratios to a
//! do-nothing XDP program measured in the same run: the machine is shared
//! and noisy, so only ratios measured side by side mean anything.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::Result;
use serde::Serialize;

use crate::{
    config,
    packet::{self, ACK, SYN},
    testrun::TestBed,
};

/// Runs per measurement; the kernel reports the mean time per run.
const REPEAT: u32 = 200_000;
/// Measurements per case, interleaved with the baseline; the median counts.
const ROUNDS: usize = 7;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub family: Family,
    pub rules: usize,
    pub baseline_ns: f64,
    /// Packet of an established, tracked connection.
    pub conntrack_hit: f64,
    /// First packet of a flow a rule allows (classification, no entry yet).
    pub new_flow_allowed: f64,
    /// Packet no rule allows (classification, drop counter, event).
    pub new_flow_denied: f64,
    pub install_ms: u128,
}

/// Host peer `i` of the generated rule set.
pub fn peer(family: Family, i: usize) -> IpAddr {
    let i = i as u32;
    match family {
        // 198.18.0.0/15 holds 131072 hosts.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)),
        Family::V6 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            (i >> 16) as u16,
            i as u16,
        )),
    }
}

pub fn rule_port(i: usize) -> u16 {
    1024 + (i % 50_000) as u16
}

/// `n` TCP rules, each from its own host peer to its own port, in groups of
/// 1000 rules attached together: many groups, one interface.
pub fn rule_set(family: Family, n: usize) -> String {
    let mut text = String::new();
    for (g, chunk) in (0..n).collect::<Vec<_>>().chunks(1000).enumerate() {
        text.push_str(&format!("[groups.g{g}]\negress = []\ningress = [\n"));
        for &i in chunk {
            text.push_str(&format!(
                "  {{ proto = \"tcp\", ports = \"{}\", from = \"{}\" }},\n",
                rule_port(i),
                peer(family, i)
            ));
        }
        text.push_str("]\n");
    }
    text
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn measure(family: Family, n: usize) -> Result<Row> {
    let text = rule_set(family, n);
    let loaded = config::parse(&text, "bench.toml")?;
    let groups: Vec<String> = loaded.config.groups.keys().cloned().collect();
    let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut bed = TestBed::new(&loaded.config, &group_refs)?;
    let install_ms = started.elapsed().as_millis();
    let local = match family {
        Family::V4 => "198.19.255.254".parse()?,
        Family::V6 => "2001:db8:ffff::1".parse()?,
    };
    let k = n / 2;
    let (src, port) = (peer(family, k), rule_port(k));
    // Opened once by a SYN; its ACKs then hit conntrack.
    let open = packet::tcp(src, local, 40000, port, SYN);
    let hit = packet::tcp(src, local, 40000, port, ACK);
    // An ACK of another flow: allowed by the rule, never creates an entry,
    // so every run classifies it afresh.
    let allowed = packet::tcp(src, local, 40001, port, ACK);
    let denied = packet::tcp(src, local, 40002, port.wrapping_add(1), ACK);
    anyhow::ensure!(
        bed.ingress(&open)? == crate::testrun::Verdict::Pass,
        "bench flow must open"
    );
    anyhow::ensure!(
        bed.ingress(&denied)? == crate::testrun::Verdict::Drop,
        "denied must drop"
    );
    let (mut base, mut h, mut a, mut d) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        base.push(bed.run_baseline(&hit, REPEAT)?.1.as_nanos() as f64);
        h.push(bed.run_xdp(&hit, REPEAT)?.1.as_nanos() as f64);
        a.push(bed.run_xdp(&allowed, REPEAT)?.1.as_nanos() as f64);
        d.push(bed.run_xdp(&denied, REPEAT)?.1.as_nanos() as f64);
    }
    let baseline_ns = median(base).max(1.0);
    Ok(Row {
        family,
        rules: n,
        baseline_ns,
        conntrack_hit: median(h) / baseline_ns,
        new_flow_allowed: median(a) / baseline_ns,
        new_flow_denied: median(d) / baseline_ns,
        install_ms,
    })
}
