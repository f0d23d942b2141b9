//! `sg conntrack list | flush | gc`: the tracked connections in the pinned
//! CONNTRACK map.
//!
//! Expiry: an entry carries the `CLOCK_MONOTONIC_COARSE` time (what
//! `bpf_ktime_get_coarse_ns` reads) after which it is dead. The datapath treats a
//! dead entry as absent and overwrites it when its tuple comes back, and
//! never walks the table; a BPF timer deletes dead entries every
//! `SWEEP_PERIOD_NS` (see `Datapath::start_sweeper`). `sg conntrack gc` and
//! every `sg attach` / `sg apply` sweep from userspace too, so `sg status`
//! counts live entries more closely. Each sweep costs one pass over the table.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sg_common::{
    CT_F_ADOPTED, CT_F_OPENED_BY_B, CT_F_OPENED_EGRESS, CT_F_REPLIED, CtKey, CtValue, Direction,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ct_state_name, ip_addr,
};

use crate::{
    datapath::{Datapath, deleted},
    state::{RuleRecord, State, StateDir},
};

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of
/// `bpf_ktime_get_coarse_ns`.
pub fn now_ns() -> Result<u64> {
    sg_common::monotonic_ns().context("cannot read CLOCK_MONOTONIC_COARSE")
}

/// One tracked connection, as `sg conntrack list` shows it: from the
/// endpoint that opened it to the one that answered.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    pub iface: String,
    /// "ingress" or "egress": the direction of the packet that opened it.
    pub direction: &'static str,
    pub proto: u8,
    pub proto_name: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TCP/UDP ports; null for other protocols.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// ICMP echo identifier; null for other protocols.
    pub icmp_id: Option<u16>,
    pub state: &'static str,
    /// Milliseconds until the entry expires (0: expired, awaiting collection).
    pub expires_in_ms: u64,
    pub replied: bool,
    /// Rule that allowed the opening packet, if it is still known.
    pub rule: Option<String>,
    /// Adopted at attach or apply, already established (SPEC 4).
    pub adopted: bool,
}

fn proto_name(proto: u8) -> String {
    sg_common::proto_name(proto).map_or_else(|| proto.to_string(), String::from)
}

/// Turns a raw map entry into what `list` shows.
pub fn describe(
    key: &CtKey,
    value: &CtValue,
    now: u64,
    iface_names: &BTreeMap<u32, String>,
    rules: &HashMap<u32, &RuleRecord>,
) -> Entry {
    let by_b = value.flags & CT_F_OPENED_BY_B != 0;
    let (src, dst, sport, dport) = if by_b {
        (&key.addr_b, &key.addr_a, key.port_b, key.port_a)
    } else {
        (&key.addr_a, &key.addr_b, key.port_a, key.port_b)
    };
    let icmp = key.proto == PROTO_ICMP || key.proto == PROTO_ICMPV6;
    let ports = key.proto == PROTO_TCP || key.proto == PROTO_UDP;
    Entry {
        iface: iface_names
            .get(&key.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", key.ifindex)),
        direction: if value.flags & CT_F_OPENED_EGRESS != 0 {
            Direction::Egress.name()
        } else {
            Direction::Ingress.name()
        },
        proto: key.proto,
        proto_name: proto_name(key.proto),
        src: ip_addr(key.family, src),
        dst: ip_addr(key.family, dst),
        src_port: ports.then_some(sport),
        dst_port: ports.then_some(dport),
        icmp_id: icmp.then_some(sport),
        state: ct_state_name(value.state),
        expires_in_ms: value.expires_ns.saturating_sub(now) / 1_000_000,
        replied: value.flags & CT_F_REPLIED != 0,
        // `value.rule` is a rule slot, which outlives reorderings of the
        // rule list: look it up by slot, never by position.
        rule: rules.get(&value.rule).map(|r| r.id.clone()),
        adopted: value.flags & CT_F_ADOPTED != 0,
    }
}

fn open(dir: &StateDir) -> Result<(State, Datapath)> {
    let Some(state) = dir.load()? else {
        bail!(
            "nothing is attached under {}; run `sg attach IFACE -c FILE` first",
            dir.pins.display()
        );
    };
    let dp = Datapath::open(dir, state.ct_max_entries)?;
    Ok((state, dp))
}

fn entries(dp: &mut Datapath) -> Result<Vec<(CtKey, CtValue)>> {
    let ct = dp.conntrack()?;
    let mut out = Vec::new();
    for item in ct.iter() {
        match item {
            Ok(kv) => out.push(kv),
            // Deleted by the datapath while we walked: skip it.
            Err(aya::maps::MapError::KeyNotFound) => continue,
            Err(e) => return Err(e).context("reading CONNTRACK"),
        }
    }
    Ok(out)
}

/// `sg conntrack list`: live entries, sorted by interface then opener.
pub fn list(dir: &StateDir) -> Result<Vec<Entry>> {
    let (state, mut dp) = open(dir)?;
    let names: BTreeMap<u32, String> = state
        .interfaces
        .iter()
        .map(|(n, i)| (i.ifindex, n.clone()))
        .collect();
    let rules = state.rules_by_slot();
    let now = now_ns()?;
    let mut out: Vec<Entry> = entries(&mut dp)?
        .iter()
        .filter(|(_, v)| v.expires_ns >= now)
        .map(|(k, v)| describe(k, v, now, &names, &rules))
        .collect();
    out.sort_by(|a, b| {
        (&a.iface, a.src, a.src_port, a.dst, a.dst_port, a.proto)
            .cmp(&(&b.iface, b.src, b.src_port, b.dst, b.dst_port, b.proto))
    });
    Ok(out)
}

pub fn print_list(entries: &[Entry]) {
    println!(
        "{:<12} {:<7} {:<6} {:<44} {:<44} {:<11} {:>10}",
        "INTERFACE", "DIR", "PROTO", "SOURCE", "DESTINATION", "STATE", "EXPIRES"
    );
    for e in entries {
        let end = |a: IpAddr, port: Option<u16>| match (port, e.icmp_id) {
            (Some(p), _) if a.is_ipv6() => format!("[{a}]:{p}"),
            (Some(p), _) => format!("{a}:{p}"),
            (None, Some(id)) => format!("{a} id={id}"),
            (None, None) => a.to_string(),
        };
        println!(
            "{:<12} {:<7} {:<6} {:<44} {:<44} {:<11} {:>9}s",
            e.iface,
            e.direction,
            e.proto_name,
            end(e.src, e.src_port),
            end(e.dst, e.dst_port),
            e.state,
            e.expires_in_ms / 1000
        );
    }
    println!("{} connections", entries.len());
}

/// `sg conntrack flush`: deletes every entry. Returns how many went.
pub fn flush(dir: &StateDir) -> Result<usize> {
    let _lock = dir.lock()?;
    let (_state, mut dp) = open(dir)?;
    let mut ct = dp.conntrack()?;
    let keys: Vec<CtKey> = ct.keys().filter_map(Result::ok).collect();
    let mut removed = 0;
    for key in keys {
        if deleted(ct.remove(&key)).context("deleting from CONNTRACK")? {
            removed += 1;
        }
    }
    Ok(removed)
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Sweep {
    pub scanned: usize,
    pub removed: usize,
}

/// Deletes the expired entries. Each is read again just before it goes, so
/// an entry that a packet revived meanwhile stays.
pub fn sweep_expired(dp: &mut Datapath) -> Result<Sweep> {
    let now = now_ns()?;
    let all = entries(dp)?;
    let mut ct = dp.conntrack()?;
    let mut sweep = Sweep {
        scanned: all.len(),
        removed: 0,
    };
    for (key, value) in all {
        if value.expires_ns >= now {
            continue;
        }
        match ct.get(&key, 0) {
            Ok(v) if v.expires_ns < now => {}
            _ => continue,
        }
        if deleted(ct.remove(&key)).context("deleting from CONNTRACK")? {
            sweep.removed += 1;
        }
    }
    Ok(sweep)
}

/// `sg conntrack gc`.
pub fn gc(dir: &StateDir) -> Result<Sweep> {
    let _lock = dir.lock()?;
    let (_state, mut dp) = open(dir)?;
    sweep_expired(&mut dp)
}
