//! `sg status` and `sg stats`: what is enforced, and what it dropped.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use sg_common::{Direction, Reason};

use crate::{
    datapath::{Datapath, MapUsage},
    state::{State, StateDir},
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub state_dir: String,
    pub interfaces: Vec<IfaceStatus>,
    pub conntrack_entries: usize,
    pub conntrack_capacity: u32,
    /// Entries in use and capacity of each policy map.
    pub policy_maps: Vec<MapUsage>,
    /// The fleet agent's report, when one runs (or ran) on this state dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::status_file::FleetStatus>,
}

#[derive(Debug, Serialize)]
pub struct IfaceStatus {
    pub iface: String,
    pub ifindex: u32,
    pub xdp_mode: String,
    /// Link kind (SPEC 1.12): "ethernet", "none (tun, WireGuard)", "ipip", ...
    pub link: String,
    /// No link header: packets are parsed from the IP header.
    pub l3: bool,
    pub groups: Vec<String>,
    /// `"enforce"` or `"audit"` (SPEC 10.2), as the interface's entry in
    /// the kernel says (`IFACE_F_AUDIT`).
    pub mode: &'static str,
    pub ingress_rules: usize,
    pub egress_rules: usize,
    /// Established connections adopted as tracked at attach and at the
    /// applies since (SPEC 4).
    pub adopted: u32,
    /// The interface's network ACL (SPEC 2) and its numbered rules per
    /// direction (the implicit `*` deny aside); null without a NACL.
    pub nacl: Option<NaclStatus>,
}

#[derive(Debug, Serialize)]
pub struct NaclStatus {
    pub name: String,
    pub ingress_rules: usize,
    pub egress_rules: usize,
}

fn rule_count(state: &State, groups: &[String], direction: Direction) -> usize {
    state
        .rules
        .iter()
        .filter(|r| r.direction == direction && !r.is_nacl() && groups.contains(&r.group))
        .count()
}

/// Numbered rules of NACL `nacl` in `direction` (not the implicit `*`).
fn nacl_rule_count(state: &State, nacl: &str, direction: Direction) -> usize {
    state
        .rules
        .iter()
        .filter(|r| {
            r.is_nacl()
                && r.direction == direction
                && r.group == nacl
                && r.index != usize::from(sg_common::NACL_RULE_IMPLICIT)
        })
        .count()
}

/// The mode in force on `ifindex`: its `IFACE_POLICY` entry's audit flag.
fn iface_mode(dp: &mut Datapath, ifindex: u32) -> Result<&'static str> {
    let flags = match dp.iface_policy()?.get(&ifindex, 0) {
        Ok(p) => p.flags,
        Err(aya::maps::MapError::KeyNotFound) => 0,
        Err(e) => return Err(e.into()),
    };
    Ok(if flags & sg_common::IFACE_F_AUDIT != 0 {
        crate::config::Mode::Audit.name()
    } else {
        crate::config::Mode::Enforce.name()
    })
}

pub fn status(dir: &StateDir) -> Result<Status> {
    let Some(state) = dir.load()? else {
        return Ok(Status {
            state_dir: dir.pins.display().to_string(),
            interfaces: Vec::new(),
            conntrack_entries: 0,
            conntrack_capacity: 0,
            policy_maps: Vec::new(),
            fleet: crate::fleet::status_file::load(dir),
        });
    };
    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    let conntrack_entries = dp.conntrack()?.keys().filter(Result::is_ok).count();
    let mut modes = BTreeMap::new();
    for i in state.interfaces.values() {
        modes.insert(i.ifindex, iface_mode(&mut dp, i.ifindex)?);
    }
    Ok(Status {
        state_dir: dir.pins.display().to_string(),
        interfaces: state
            .interfaces
            .iter()
            .map(|(name, i)| IfaceStatus {
                iface: name.clone(),
                ifindex: i.ifindex,
                xdp_mode: i.xdp_mode.clone(),
                link: i.link.clone(),
                l3: i.l3,
                groups: i.groups.clone(),
                mode: modes[&i.ifindex],
                ingress_rules: rule_count(&state, &i.groups, Direction::Ingress),
                egress_rules: rule_count(&state, &i.groups, Direction::Egress),
                adopted: i.adopted,
                nacl: state.iface_nacls.get(name).map(|n| NaclStatus {
                    name: n.clone(),
                    ingress_rules: nacl_rule_count(&state, n, Direction::Ingress),
                    egress_rules: nacl_rule_count(&state, n, Direction::Egress),
                }),
            })
            .collect(),
        conntrack_entries,
        conntrack_capacity: state.ct_max_entries,
        policy_maps: dp.policy_usage()?,
        fleet: crate::fleet::status_file::load(dir),
    })
}

pub fn print_status(s: &Status) {
    if let Some(fleet) = &s.fleet {
        println!("{}", crate::fleet::status_file::summary(fleet));
    }
    if s.interfaces.is_empty() {
        println!("nothing attached (state dir {})", s.state_dir);
        return;
    }
    println!(
        "{:<16} {:<8} {:<22} {:>7} {:>7}  GROUPS",
        "INTERFACE", "MODE", "LINK", "INGRESS", "EGRESS"
    );
    for i in &s.interfaces {
        println!(
            "{:<16} {:<8} {:<22} {:>7} {:>7}  {}",
            i.iface,
            i.xdp_mode,
            i.link,
            i.ingress_rules,
            i.egress_rules,
            i.groups.join(",")
        );
        if i.mode != crate::config::Mode::Enforce.name() {
            println!(
                "{:<16} mode {}: would-be drops pass (see sg stats, sg watch)",
                "", i.mode
            );
        }
        if let Some(n) = &i.nacl {
            println!(
                "{:<16} nacl {}: {} ingress, {} egress rules (then * denies)",
                "", n.name, n.ingress_rules, n.egress_rules
            );
        }
    }
    println!(
        "conntrack: {} of {} entries",
        s.conntrack_entries, s.conntrack_capacity
    );
    println!("policy maps (an apply needs room for the old policy and the new one):");
    for m in &s.policy_maps {
        println!("  {:<16} {:>9} of {:>9}", m.map, m.entries, m.capacity);
    }
}

/// `sg stats`: every counter, exact (summed over CPUs).
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// reason -> total drops, over every interface and direction (real
    /// drops only: audit mode's would-be drops are in `audit_by_reason`).
    pub drops_by_reason: BTreeMap<String, u64>,
    /// reason -> would-be drops that audit mode let pass (SPEC 10.2).
    pub audit_by_reason: BTreeMap<String, u64>,
    /// Every drop counter, by interface, direction, reason and `audit`.
    pub drops: Vec<DropCounter>,
    /// Allowed packets and bytes by rule: every rule in force (zero if it
    /// never matched), then counters of removed rules whose tracked
    /// connections still pass (`rule` null).
    pub rules: Vec<RuleCounter>,
    /// Packets by NACL rule (SPEC 2.3), every NACL rule in force: an
    /// allow rule's packets are allowed, a deny rule's (and `*`'s) denied.
    pub nacl_rules: Vec<NaclRuleCounter>,
    /// Drop events held back by the kernel's per-CPU rate limit.
    pub events_suppressed: u64,
    /// Drop events lost because the ring buffer was full (no reader, or
    /// one that fell behind).
    pub events_lost: u64,
    /// The rate limit: events per second per CPU.
    pub events_per_second: u32,
    pub conntrack_entries: usize,
    pub conntrack_capacity: u32,
}

#[derive(Debug, Serialize)]
pub struct DropCounter {
    pub iface: String,
    pub direction: &'static str,
    pub reason: &'static str,
    /// A would-be drop that audit mode let pass (SPEC 10.2).
    pub audit: bool,
    pub packets: u64,
}

#[derive(Debug, Serialize)]
pub struct RuleCounter {
    /// Rule ID (`sgr-...`); null for a removed rule.
    pub rule: Option<String>,
    pub group: Option<String>,
    pub direction: Option<Direction>,
    /// Position of the rule in its group's ingress or egress list.
    pub index: Option<usize>,
    pub description: Option<String>,
    /// The rule's key in the maps.
    pub slot: u32,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct NaclRuleCounter {
    pub nacl: String,
    pub direction: Direction,
    /// The rule number, or `"*"` for the implicit final deny.
    pub rule: String,
    /// `"allow"` or `"deny"`.
    pub action: String,
    pub description: Option<String>,
    pub slot: u32,
    pub allowed_packets: u64,
    pub denied_packets: u64,
    pub bytes: u64,
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
    for (key, packets) in dp.drop_totals()? {
        let reason = Reason::from_code(key.reason).map_or("unknown", Reason::name);
        let audit = key.audit != 0;
        let by_reason = if audit {
            &mut out.audit_by_reason
        } else {
            &mut out.drops_by_reason
        };
        *by_reason.entry(reason.to_string()).or_default() += packets;
        out.drops.push(DropCounter {
            iface: names
                .get(&key.ifindex)
                .map_or_else(|| format!("if{}", key.ifindex), |n| n.to_string()),
            direction: Direction::from_code(key.direction).name(),
            reason,
            audit,
            packets,
        });
    }
    out.drops.sort_by(|a, b| {
        (a.audit, &a.iface, a.direction, a.reason).cmp(&(b.audit, &b.iface, b.direction, b.reason))
    });

    let mut hits = dp.rule_hit_totals()?;
    let by_slot = state.rules_by_slot();
    let mut in_force: Vec<(u32, &crate::state::RuleRecord)> = by_slot.into_iter().collect();
    in_force.sort_by(|a, b| {
        // By name, as when directions were strings: egress first.
        (&a.1.group, a.1.direction.name(), a.1.index).cmp(&(
            &b.1.group,
            b.1.direction.name(),
            b.1.index,
        ))
    });
    for (slot, r) in in_force {
        let h = hits.remove(&slot).unwrap_or_default();
        if let Some(action) = &r.nacl_action {
            let deny = action == "deny";
            let number = u16::try_from(r.index).unwrap_or(sg_common::NACL_RULE_IMPLICIT);
            out.nacl_rules.push(NaclRuleCounter {
                nacl: r.group.clone(),
                direction: r.direction,
                rule: crate::config::nacl_rule_label(number),
                action: action.clone(),
                description: r.description.clone(),
                slot,
                allowed_packets: if deny { 0 } else { h.packets },
                denied_packets: if deny { h.packets } else { 0 },
                bytes: h.bytes,
            });
            continue;
        }
        out.rules.push(RuleCounter {
            rule: Some(r.id.clone()),
            group: Some(r.group.clone()),
            direction: Some(r.direction),
            index: Some(r.index),
            description: r.description.clone(),
            slot,
            packets: h.packets,
            bytes: h.bytes,
        });
    }
    for (slot, h) in hits {
        out.rules.push(RuleCounter {
            rule: None,
            group: None,
            direction: None,
            index: None,
            description: None,
            slot,
            packets: h.packets,
            bytes: h.bytes,
        });
    }
    // NACLs in rule order: ingress first, then by number (`*` last).
    out.nacl_rules.sort_by_key(|n| {
        let number = n.rule.parse::<u16>().unwrap_or(u16::MAX);
        (n.nacl.clone(), n.direction, number)
    });
    (out.events_suppressed, out.events_lost) = dp.event_stats()?;
    out.events_per_second = dp.runtime_config()?.events_per_sec;
    out.conntrack_entries = dp.conntrack()?.keys().filter(Result::is_ok).count();
    out.conntrack_capacity = state.ct_max_entries;
    Ok(out)
}

/// The would-be drops of interfaces in audit mode, apart from the drops.
fn print_audit(s: &Stats) {
    if !s.drops.iter().any(|d| d.audit) {
        return;
    }
    println!();
    println!("AUDIT (would-be drops that audit mode let pass)");
    println!(
        "  {:<16} {:<8} {:<15} {:>12}",
        "INTERFACE", "DIR", "REASON", "PACKETS"
    );
    for d in s.drops.iter().filter(|d| d.audit) {
        println!(
            "  {:<16} {:<8} {:<15} {:>12}",
            d.iface, d.direction, d.reason, d.packets
        );
    }
}

pub fn print_stats(s: &Stats) {
    println!("DROPS");
    println!(
        "  {:<16} {:<8} {:<15} {:>12}",
        "INTERFACE", "DIR", "REASON", "PACKETS"
    );
    if s.drops.is_empty() {
        println!("  (none)");
    }
    for d in s.drops.iter().filter(|d| !d.audit) {
        println!(
            "  {:<16} {:<8} {:<15} {:>12}",
            d.iface, d.direction, d.reason, d.packets
        );
    }
    println!();
    println!("DROPS BY REASON");
    for (reason, packets) in &s.drops_by_reason {
        println!("  {reason:<17} {packets:>10}");
    }
    print_audit(s);
    println!();
    println!("RULE HITS (allowed packets, tracked connections included)");
    println!(
        "  {:<21} {:<12} {:<7} {:>3} {:>12} {:>14}  DESCRIPTION",
        "RULE", "GROUP", "DIR", "#", "PACKETS", "BYTES"
    );
    for r in &s.rules {
        println!(
            "  {:<21} {:<12} {:<7} {:>3} {:>12} {:>14}  {}",
            r.rule.as_deref().unwrap_or("(removed)"),
            r.group.as_deref().unwrap_or("-"),
            r.direction.map_or("-", Direction::name),
            r.index.map_or("-".to_string(), |i| i.to_string()),
            r.packets,
            r.bytes,
            r.description.as_deref().unwrap_or("")
        );
    }
    if !s.nacl_rules.is_empty() {
        println!();
        println!("NACL RULE HITS");
        println!(
            "  {:<16} {:<7} {:>5} {:<6} {:>12} {:>12} {:>14}  DESCRIPTION",
            "NACL", "DIR", "RULE", "ACTION", "ALLOWED", "DENIED", "BYTES"
        );
        for n in &s.nacl_rules {
            println!(
                "  {:<16} {:<7} {:>5} {:<6} {:>12} {:>12} {:>14}  {}",
                n.nacl,
                n.direction.name(),
                n.rule,
                n.action,
                n.allowed_packets,
                n.denied_packets,
                n.bytes,
                n.description.as_deref().unwrap_or("")
            );
        }
    }
    println!();
    println!(
        "events: {} suppressed by the rate limit ({}/s per CPU), {} lost (ring buffer full)",
        s.events_suppressed, s.events_per_second, s.events_lost
    );
    println!(
        "conntrack: {} of {} entries",
        s.conntrack_entries, s.conntrack_capacity
    );
}

#[cfg(test)]
mod tests {
    /// The map-name constants name maps the programs declare: each is a
    /// symbol, NUL-terminated in the object's string table.
    #[test]
    fn map_names_are_in_the_ebpf_object() {
        let obj = crate::EBPF_OBJ;
        for name in sg_common::PINNED_MAPS {
            let sym = [b"\0", name.as_bytes(), b"\0"].concat();
            assert!(
                obj.windows(sym.len()).any(|w| w == sym),
                "no map {name} in the eBPF object"
            );
        }
    }
}
