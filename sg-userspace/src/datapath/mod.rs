//! The loaded eBPF object: its pinned maps and its programs.
//!
//! - this module: opening the object with its maps pinned, and access to
//!   the maps other modules read (conntrack, counters, events, config);
//! - [`policy`]: writing and removing policy entries, switching
//!   interfaces, all or nothing;
//! - [`links`]: loading the programs and attaching them to interfaces;
//! - [`usage`]: how full the policy maps are.

use sg_common::{
    MAP_CONFIG, MAP_CONNTRACK, MAP_DROPS, MAP_DROPS_FAST, MAP_EVENT_STATS, MAP_EVENTS,
    MAP_FRAGMENTS, MAP_IFACE_POLICY, MAP_RULE_HITS,
};
use std::collections::HashSet;

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use sg_common::{
    CtKey, CtValue, DROP_ROWS, DropKey, DropRow, EVSTAT_RING_FULL, EVSTAT_SUPPRESSED, FragKey,
    IfacePolicy, RuleHits, RuntimeConfig,
};

use crate::{compile::Compiled, state::StateDir};

mod batch;
mod iface_fast;
mod links;
mod policy;
mod record;
mod seen;
mod split;
mod usage;

pub use links::{
    AttachMode, BASELINE_PROGRAM, SWEEP_ARM_PROGRAM, TC_INGRESS_PROGRAM, TC_PROGRAM, XDP_PROGRAM,
    detach_links, unpin_link,
};
pub use policy::Undo;
pub use record::{Keys, forget as forget_record, new_token as new_record_token};
pub use usage::MapUsage;

pub struct Datapath {
    ebpf: Ebpf,
    /// What the last room check read, for the removal after the commit
    /// (`seen`); taken by it, cleared by every write.
    seen: Option<seen::Seen>,
    /// What [`Datapath::read_room`] read ahead for the next room check.
    prefetched: Option<seen::Prefetched>,
}

impl Datapath {
    /// Opens the object with its maps pinned under the state dir: existing
    /// pins are reused, missing ones are created. Programs are not loaded.
    pub fn open(state: &StateDir, ct_max_entries: u32) -> Result<Datapath> {
        crate::bpffs::ensure_state_dir(&state.pins)?;
        let maps_dir = state.maps_dir();
        std::fs::create_dir_all(&maps_dir)
            .with_context(|| format!("cannot create {}", maps_dir.display()))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(MAP_CONNTRACK, ct_max_entries)
            .load(crate::EBPF_OBJ)
            .map_err(|e| foreign_pins_hint(e, &state.pins))?;
        Ok(Datapath {
            ebpf,
            seen: None,
            prefetched: None,
        })
    }

    /// [`Datapath::open`] for the benchmark's per-step breakdown: the same
    /// pinned maps, programs that stop after step `stop`
    /// (`sg_common::BENCH_STOP_*`). `sg` itself never loads these.
    pub fn open_bench_variant(
        state: &StateDir,
        ct_max_entries: u32,
        stop: u32,
    ) -> Result<Datapath> {
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(state.maps_dir())
            .map_max_entries(MAP_CONNTRACK, ct_max_entries)
            .override_global(sg_common::BENCH_STOP_GLOBAL, &stop, true)
            .load(crate::EBPF_OBJ)
            .context("cannot load the sg eBPF object")?;
        Ok(Datapath {
            ebpf,
            seen: None,
            prefetched: None,
        })
    }

    fn map<'a, T>(&'a mut self, name: &str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    pub fn iface_policy(&mut self) -> Result<HashMap<&mut MapData, u32, IfacePolicy>> {
        self.map(MAP_IFACE_POLICY)
    }

    pub fn conntrack(&mut self) -> Result<HashMap<&mut MapData, CtKey, CtValue>> {
        self.map(MAP_CONNTRACK)
    }

    pub fn fragments(&mut self) -> Result<HashMap<&mut MapData, FragKey, u64>> {
        self.map(MAP_FRAGMENTS)
    }

    pub fn drops(&mut self) -> Result<PerCpuHashMap<&mut MapData, DropKey, u64>> {
        self.map(MAP_DROPS)
    }

    /// Exact drop counters summed over CPUs, by interface, direction,
    /// reason and audit: the rows of `DROPS_FAST` and the `DROPS` hash
    /// behind them (`sg_common::DropRow`).
    pub fn drop_totals(&mut self) -> Result<std::collections::BTreeMap<DropKey, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.drops()?.iter() {
            let (key, per_cpu) = item?;
            *out.entry(key).or_default() += per_cpu.iter().sum::<u64>();
        }
        let rows: PerCpuArray<&mut MapData, DropRow> = self.map(MAP_DROPS_FAST)?;
        for index in 0..DROP_ROWS {
            for row in rows.get(&index, 0)?.iter() {
                for (key, n) in row.counts_by_key() {
                    *out.entry(key).or_default() += n;
                }
            }
        }
        Ok(out)
    }

    /// One exact drop counter summed over CPUs: its interface's row of
    /// `DROPS_FAST` (on the CPUs where that interface holds the row) and
    /// its `DROPS` entry.
    pub fn drop_count(&mut self, key: &DropKey) -> Result<u64> {
        let mut total = match self.drops()?.get(key, 0) {
            Ok(per_cpu) => per_cpu.iter().sum(),
            Err(aya::maps::MapError::KeyNotFound) => 0,
            Err(e) => return Err(e.into()),
        };
        let rows: PerCpuArray<&mut MapData, DropRow> = self.map(MAP_DROPS_FAST)?;
        let cell = DropRow::cell(key.direction, key.audit, key.reason);
        for row in rows.get(&DropRow::row_of(key.ifindex), 0)?.iter() {
            if row.ifindex == key.ifindex {
                total += row.counts[cell];
            }
        }
        Ok(total)
    }

    pub fn rule_hits(&mut self) -> Result<PerCpuHashMap<&mut MapData, u32, RuleHits>> {
        self.map(MAP_RULE_HITS)
    }

    /// Hit counters summed over CPUs, by rule slot.
    pub fn rule_hit_totals(&mut self) -> Result<std::collections::BTreeMap<u32, RuleHits>> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.rule_hits()?.iter() {
            let (slot, per_cpu) = item?;
            let total: &mut RuleHits = out.entry(slot).or_default();
            for h in per_cpu.iter() {
                total.packets += h.packets;
                total.bytes += h.bytes;
            }
        }
        Ok(out)
    }

    /// Deletes the hit counters of the slots `doomed` picks.
    pub fn remove_rule_hits(&mut self, doomed: impl Fn(u32) -> bool) -> Result<usize> {
        let mut hits = self.rule_hits()?;
        let stale: Vec<u32> = hits
            .keys()
            .filter_map(Result::ok)
            .filter(|s| doomed(*s))
            .collect();
        // One syscall, not one per slot (a whole config replaced drops
        // the counters of every rule that had hits).
        batch::delete(&mut hits, &stale, |m, slot| {
            deleted(m.remove(slot))?;
            Ok(())
        })?;
        Ok(stale.len())
    }

    /// Events the kernel did not emit, summed over CPUs:
    /// `(suppressed by the rate limit, lost to a full ring buffer)`.
    pub fn event_stats(&mut self) -> Result<(u64, u64)> {
        let stats: PerCpuArray<&mut MapData, u64> = self.map(MAP_EVENT_STATS)?;
        let sum = |i: u32| -> Result<u64> { Ok(stats.get(&i, 0)?.iter().sum()) };
        Ok((sum(EVSTAT_SUPPRESSED)?, sum(EVSTAT_RING_FULL)?))
    }

    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(MAP_EVENTS)
            .ok_or_else(|| anyhow!("EVENTS map missing"))?;
        Ok(aya::maps::RingBuf::try_from(map)?)
    }

    pub fn runtime_config(&mut self) -> Result<RuntimeConfig> {
        let array: Array<&mut MapData, RuntimeConfig> = self.map(MAP_CONFIG)?;
        Ok(array.get(&0, 0)?)
    }

    pub fn set_runtime_config(&mut self, cfg: &RuntimeConfig) -> Result<()> {
        crate::failpoint::write(MAP_CONFIG)?;
        let mut array: Array<&mut MapData, RuntimeConfig> = self.map(MAP_CONFIG)?;
        array.set(0, cfg, 0)?;
        Ok(())
    }
}

/// The result of deleting a map entry: `Ok(true)` if it was deleted,
/// `Ok(false)` if it was already gone (the datapath, another `sg`, or a
/// lost bpffs got there first), which is never an error for a delete.
/// (aya reports a missing key on delete as ENOENT, not `KeyNotFound`.)
pub fn deleted(result: Result<(), aya::maps::MapError>) -> Result<bool, aya::maps::MapError> {
    match result {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Every policy and class ID a compiled policy set uses.
pub fn ids_of(compiled: &Compiled) -> HashSet<u32> {
    let policies = compiled.policies.iter().map(|p| p.id);
    let classes = compiled
        .policies
        .iter()
        .flat_map(|p| p.peers.iter().map(|peer| peer.class));
    policies.chain(classes).collect()
}

/// The load error, with the way out when the pinned maps are another sg
/// version's (another layout, flags or capacity): aya refuses to reuse
/// them, and every command but `detach --all` needs them.
fn foreign_pins_hint(e: aya::EbpfError, pins: &std::path::Path) -> anyhow::Error {
    let message = format!("{e:#}");
    let err = anyhow::Error::new(e).context("cannot load the sg eBPF object");
    if message.contains("cannot reuse pinned map") {
        err.context(format!(
            "the maps pinned under {} were made by another version of sg; \
             `sg detach --all` (with the same --state-dir) removes them, then attach again",
            pins.display()
        ))
    } else {
        err
    }
}
