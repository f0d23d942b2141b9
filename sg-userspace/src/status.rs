//! `sg status` and `sg stats`: what is enforced, and what it dropped.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use sg_common::{DIR_INGRESS, Reason};

use crate::{
    datapath::Datapath,
    state::{State, StateDir},
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub state_dir: String,
    pub interfaces: Vec<IfaceStatus>,
    pub conntrack_entries: usize,
    pub conntrack_capacity: u32,
}

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: String,
    pub groups: Vec<String>,
    pub ingress_rules: usize,
    pub egress_rules: usize,
}

fn rule_count(state: &State, groups: &[String], direction: &str) -> usize {
    state
        .rules
        .iter()
        .filter(|r| r.direction == direction && groups.contains(&r.group))
        .count()
}

pub fn status(dir: &StateDir) -> Result<Status> {
    let Some(state) = dir.load()? else {
        return Ok(Status {
            state_dir: dir.pins.display().to_string(),
            interfaces: Vec::new(),
            conntrack_entries: 0,
            conntrack_capacity: 0,
        });
    };
    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    let conntrack_entries = dp.conntrack()?.keys().filter(Result::is_ok).count();
    Ok(Status {
        state_dir: dir.pins.display().to_string(),
        interfaces: state
            .interfaces
            .iter()
            .map(|(name, i)| IfaceStatus {
                iface: name.clone(),
                ifindex: i.ifindex,
                xdp_mode: i.xdp_mode.clone(),
                groups: i.groups.clone(),
                ingress_rules: rule_count(&state, &i.groups, "ingress"),
                egress_rules: rule_count(&state, &i.groups, "egress"),
            })
            .collect(),
        conntrack_entries,
        conntrack_capacity: state.ct_max_entries,
    })
}

pub fn print_status(s: &Status) {
    if s.interfaces.is_empty() {
        println!("nothing attached (state dir {})", s.state_dir);
        return;
    }
    println!(
        "{:<16} {:<8} {:>7} {:>7}  GROUPS",
        "INTERFACE", "XDP", "INGRESS", "EGRESS"
    );
    for i in &s.interfaces {
        println!(
            "{:<16} {:<8} {:>7} {:>7}  {}",
            i.iface,
            i.xdp_mode,
            i.ingress_rules,
            i.egress_rules,
            i.groups.join(",")
        );
    }
    println!(
        "conntrack: {} of {} entries",
        s.conntrack_entries, s.conntrack_capacity
    );
}

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// reason -> total drops, over every interface and direction.
    pub drops_by_reason: BTreeMap<String, u64>,
    pub drops: Vec<DropCounter>,
}

#[derive(Debug, Serialize)]
pub struct DropCounter {
    pub iface: String,
    pub direction: &'static str,
    pub reason: &'static str,
    pub packets: u64,
}

pub fn stats(dir: &StateDir) -> Result<Stats> {
    let Some(state) = dir.load()? else {
        anyhow::bail!("nothing is attached under {}", dir.pins.display());
    };
    let names: BTreeMap<u32, &String> = state
        .interfaces
        .iter()
        .map(|(n, i)| (i.ifindex, n))
        .collect();
    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    let mut out = Stats::default();
    for reason in Reason::ALL {
        out.drops_by_reason.insert(reason.name().to_string(), 0);
    }
    for item in dp.drops()?.iter() {
        let (key, per_cpu) = item?;
        let packets: u64 = per_cpu.iter().sum();
        let reason = Reason::from_code(key.reason).map_or("unknown", Reason::name);
        *out.drops_by_reason.entry(reason.to_string()).or_default() += packets;
        out.drops.push(DropCounter {
            iface: names
                .get(&key.ifindex)
                .map_or_else(|| format!("if{}", key.ifindex), |n| n.to_string()),
            direction: if key.direction == DIR_INGRESS {
                "ingress"
            } else {
                "egress"
            },
            reason,
            packets,
        });
    }
    out.drops
        .sort_by(|a, b| (&a.iface, a.direction, a.reason).cmp(&(&b.iface, b.direction, b.reason)));
    Ok(out)
}

pub fn print_stats(s: &Stats) {
    println!(
        "{:<16} {:<8} {:<15} {:>12}",
        "INTERFACE", "DIR", "REASON", "PACKETS"
    );
    for d in &s.drops {
        println!(
            "{:<16} {:<8} {:<15} {:>12}",
            d.iface, d.direction, d.reason, d.packets
        );
    }
    println!();
    for (reason, packets) in &s.drops_by_reason {
        println!("{reason:<15} {packets:>12}");
    }
}
