//! Policy entries: written under fresh IDs, switched to with one map
//! update per interface, removed once nothing points at them. Every write
//! goes through `failpoint::write`, so the tests can fail any one of them.

use sg_common::{
    MAP_CONFIG, MAP_IFACE_POLICY, MAP_PEER_HOSTS_V4, MAP_PEER_HOSTS_V6, MAP_PEER_LENGTHS,
    MAP_PEER_NETS_V4, MAP_PEER_NETS_V6, MAP_RULE_INTERVALS, MAP_RULE_SETS,
};
use std::collections::{BTreeMap, HashSet};

use anyhow::{Result, anyhow};
use aya::{
    Pod,
    maps::{Array, HashMap, MapData},
};
use sg_common::{
    IfacePolicy, PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4,
    PeerNetKeyV6, RULE_INTERVAL_CAPACITY, RuleInterval, RuleSetKey, RuleSpan, RuntimeConfig,
};

use super::{Datapath, MapUsage, deleted};
use crate::compile::{Compiled, KernelTables};

type RuleMapHandles<'a> = (
    HashMap<&'a mut MapData, RuleSetKey, RuleSpan>,
    Array<&'a mut MapData, RuleInterval>,
);

impl Datapath {
    /// Writes `tables`, whose policy and class IDs are the `fresh` ones
    /// (plus installed IDs it only refers to), so nothing a packet can
    /// reach changes until the interfaces are switched to them. Every
    /// table's room is checked before anything is written. On failure the
    /// entries of `fresh` IDs are removed again, and only those: a reused
    /// ID is live policy.
    pub fn write_policies(&mut self, tables: &KernelTables, fresh: &HashSet<u32>) -> Result<()> {
        let t = crate::phase::start("room check");
        let firsts = self.check_room(tables)?;
        drop(t);
        let _t = crate::phase::start("write");
        let result = self.try_write_policies(tables, &firsts);
        if result.is_err() {
            let _ = self.remove_entries(|id| fresh.contains(&id));
        }
        result
    }

    /// Reads what the room check of the next write needs (every policy
    /// hash's keys and the rule sets' spans), both halves at once. `sg
    /// apply` calls it on a second core while the config still compiles;
    /// the write then checks against it instead of reading again. Right
    /// only while nothing else writes these maps: the state lock holds
    /// other `sg` runs off, and the datapath never writes them.
    pub fn read_room(&mut self) -> Result<()> {
        let (mut peers, mut rules) = self.split_policy_maps()?;
        let (seen, sets) = super::split::both(|| peers.read_keys(), || rules.read());
        self.prefetched = Some(super::seen::Prefetched {
            seen: seen?,
            rule_sets: sets?,
        });
        Ok(())
    }

    /// Whether the next room check has its keys already
    /// ([`Datapath::read_room`], [`Datapath::use_record`]).
    pub fn has_prefetched(&self) -> bool {
        self.prefetched.is_some()
    }

    /// Fails, naming the table, unless every table has room for `tables`
    /// beside what it holds. Returns where the rule sets' intervals go.
    /// Each hash it reads is read once (or not at all, after
    /// [`Datapath::read_room`]), and its keys kept for the removal after
    /// the commit ([`Datapath::remove_stale`]).
    pub fn check_room(&mut self, tables: &KernelTables) -> Result<Vec<u32>> {
        self.seen = None;
        let pre = self.prefetched.take();
        let (mut seen, sets) = match pre {
            Some(pre) => (pre.seen, pre.rule_sets),
            None => (
                super::seen::Seen::default(),
                self.hash_entries::<RuleSetKey, RuleSpan>(MAP_RULE_SETS)?,
            ),
        };
        let p = &tables.peers;
        // Counting a hash walks it: only where this change writes.
        seen.hosts_v4 =
            self.room::<PeerKeyV4, u32>(MAP_PEER_HOSTS_V4, p.hosts_v4.len(), seen.hosts_v4.take())?;
        seen.hosts_v6 =
            self.room::<PeerKeyV6, u32>(MAP_PEER_HOSTS_V6, p.hosts_v6.len(), seen.hosts_v6.take())?;
        seen.nets_v4 = self.room::<PeerNetKeyV4, PeerNet>(
            MAP_PEER_NETS_V4,
            p.nets_v4.len(),
            seen.nets_v4.take(),
        )?;
        seen.nets_v6 = self.room::<PeerNetKeyV6, PeerNet>(
            MAP_PEER_NETS_V6,
            p.nets_v6.len(),
            seen.nets_v6.take(),
        )?;
        seen.lengths = self.room::<PeerLengthsKey, PeerLengths>(
            MAP_PEER_LENGTHS,
            p.lengths.len(),
            seen.lengths.take(),
        )?;
        // The rule sets are read whatever this change writes: their spans
        // say where the intervals in use are.
        if !tables.rule_sets.is_empty() {
            MapUsage {
                map: MAP_RULE_SETS,
                entries: sets.len() as u64,
                capacity: self.hash_capacity(MAP_RULE_SETS)?,
            }
            .check(tables.rule_sets.len() as u64)?;
        }
        let in_use: Vec<RuleSpan> = sets.iter().map(|(_, span)| *span).collect();
        seen.rule_sets = Some(sets);
        let sizes: Vec<u32> = tables
            .rule_sets
            .iter()
            .map(|s| s.intervals.len() as u32)
            .collect();
        let firsts = crate::rule_store::place(&in_use, &sizes, RULE_INTERVAL_CAPACITY).map_err(
            |full| {
                anyhow!(
                    "{MAP_RULE_INTERVALS} has room for {} entries; {} are in use and this change needs {} \
                 more (in runs of one rule set each)",
                    full.capacity,
                    full.in_use,
                    full.needed
                )
            },
        )?;
        seen.firsts = firsts.clone();
        self.seen = Some(seen);
        Ok(firsts)
    }

    /// The room check of one peer hash that gets `need` entries: its keys
    /// (`known` if read already), or `None` if it gets none and was not
    /// read.
    fn room<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
        need: usize,
        known: Option<Vec<K>>,
    ) -> Result<Option<Vec<K>>> {
        if need == 0 {
            return Ok(known);
        }
        let keys = match known {
            Some(keys) => keys,
            None => self.hash_keys::<K, V>(name)?,
        };
        MapUsage {
            map: name,
            entries: keys.len() as u64,
            capacity: self.hash_capacity(name)?,
        }
        .check(need as u64)?;
        Ok(Some(keys))
    }

    /// The peer hashes on one core, the rule sets on the other.
    fn try_write_policies(&mut self, tables: &KernelTables, firsts: &[u32]) -> Result<()> {
        let (mut peers, mut rules) = self.split_policy_maps()?;
        let (peers_written, rules_written) = super::split::both(
            || peers.write(&tables.peers),
            || rules.write(&tables.rule_sets, firsts),
        );
        peers_written.and(rules_written)
    }

    pub(super) fn rule_maps(&mut self) -> Result<RuleMapHandles<'_>> {
        let [spans, intervals] = self
            .ebpf
            .maps_disjoint_mut([MAP_RULE_SETS, MAP_RULE_INTERVALS]);
        let spans = spans.ok_or_else(|| anyhow!("map {MAP_RULE_SETS} missing"))?;
        let intervals = intervals.ok_or_else(|| anyhow!("map {MAP_RULE_INTERVALS} missing"))?;
        Ok((HashMap::try_from(spans)?, Array::try_from(intervals)?))
    }

    /// The write and switch steps of [`crate::install::install`]: write
    /// `tables`, the
    /// kernel's entries of `compiled` under its `fresh` IDs, then switch
    /// its interfaces. All or nothing: on failure every interface is
    /// switched back and the fresh entries go. Removing what is no longer
    /// in force is left to the caller, which can still undo the switch
    /// with the returned [`Undo`].
    pub fn write_and_switch(
        &mut self,
        compiled: &Compiled,
        tables: &KernelTables,
        fresh: &HashSet<u32>,
        runtime: &RuntimeConfig,
        ifindex_of: impl Fn(&str) -> Result<u32>,
    ) -> Result<Undo> {
        let switches: Vec<(u32, IfacePolicy)> = compiled
            .ifaces
            .iter()
            .map(|(name, b)| Ok((ifindex_of(name)?, b.kernel_value())))
            .collect::<Result<_>>()?;
        self.write_policies(tables, fresh)?;
        let mut undo = Undo {
            runtime: None,
            ifaces: Vec::new(),
            fresh: fresh.clone(),
        };
        let switched = (|| -> Result<()> {
            undo.runtime = Some(self.runtime_config()?);
            self.set_runtime_config(runtime)?;
            for (ifindex, value) in &switches {
                let before = match self.iface_policy()?.get(ifindex, 0) {
                    Ok(v) => Some(v),
                    Err(aya::maps::MapError::KeyNotFound) => None,
                    Err(e) => return Err(e.into()),
                };
                undo.ifaces.push((*ifindex, before));
                self.put_iface(*ifindex, value)?;
            }
            Ok(())
        })();
        if let Err(e) = switched {
            if let Err(undo_err) = self.undo(&undo) {
                eprintln!("warning: could not undo a failed switch: {undo_err:#}");
            }
            return Err(e);
        }
        Ok(undo)
    }

    /// Puts back what [`Datapath::write_and_switch`] changed: interfaces
    /// first (each one map update), then the runtime config, then the
    /// fresh entries, which no packet can reach any more.
    pub fn undo(&mut self, undo: &Undo) -> Result<()> {
        let mut first_err = None;
        for (ifindex, before) in undo.ifaces.iter().rev() {
            let r = match before {
                Some(v) => self.put_iface(*ifindex, v),
                None => self.forget_iface(*ifindex),
            };
            first_err = first_err.or(r.err());
        }
        if let Some(runtime) = &undo.runtime {
            first_err = first_err.or(self.set_runtime_config(runtime).err());
        }
        let fresh = &undo.fresh;
        first_err = first_err.or(self.remove_entries(|id| fresh.contains(&id)).err());
        first_err.map_or(Ok(()), Err)
    }

    /// Points an interface at its policies: one map update, so a packet sees
    /// either the old policy or the new one.
    pub fn switch_iface(
        &mut self,
        ifindex: u32,
        ingress: u32,
        egress: u32,
        flags: u32,
    ) -> Result<()> {
        let value = IfacePolicy {
            ingress_policy: ingress,
            egress_policy: egress,
            flags,
            _pad: 0,
            ingress_nacl: 0,
            egress_nacl: 0,
        };
        self.put_iface(ifindex, &value)
    }

    fn put_iface(&mut self, ifindex: u32, value: &IfacePolicy) -> Result<()> {
        crate::failpoint::write(MAP_IFACE_POLICY)?;
        self.iface_policy()?.insert(&ifindex, value, 0)?;
        // The copy packets read first; the hash stays the record.
        self.put_fast(ifindex, Some(value))
    }

    pub fn forget_iface(&mut self, ifindex: u32) -> Result<()> {
        self.put_fast(ifindex, None)?;
        crate::failpoint::write(MAP_IFACE_POLICY)?;
        deleted(self.iface_policy()?.remove(&ifindex))?;
        Ok(())
    }

    /// Deletes every policy (peer maps) and class (rule sets) entry whose
    /// ID `doomed` picks. Returns how many entries went.
    /// Their intervals stay in the array, unreachable, until the room is
    /// needed again.
    pub fn remove_entries(&mut self, doomed: impl Fn(u32) -> bool + Sync) -> Result<usize> {
        let (gone, _) = self.remove_among(doomed, super::seen::Seen::default(), None)?;
        Ok(gone)
    }

    /// [`Datapath::remove_entries`] after a commit: of the hashes the room
    /// check of this write read, only the keys it saw are candidates (see
    /// `seen`); the others are read. Only right once the write it checked
    /// is switched to and nothing else was written since.
    ///
    /// Returns every key the hashes hold once it is done (the keys record,
    /// `record.rs`): of a hash known before the write, its keys less those
    /// removed plus those `written` (all of `tables`, under fresh IDs that
    /// no key known before can have); of a hash read now, what is left of
    /// that read.
    pub fn remove_stale(
        &mut self,
        doomed: impl Fn(u32) -> bool + Sync,
        written: &KernelTables,
    ) -> Result<super::record::Keys> {
        let seen = self.seen.take().unwrap_or_default();
        let (_, kept) = self.remove_among(doomed, seen, Some(written))?;
        Ok(kept)
    }

    /// The peer hashes on one core, the rule sets on the other.
    fn remove_among(
        &mut self,
        doomed: impl Fn(u32) -> bool + Sync,
        mut seen: super::seen::Seen,
        written: Option<&KernelTables>,
    ) -> Result<(usize, super::record::Keys)> {
        self.seen = None;
        self.prefetched = None;
        let known_sets = seen.rule_sets.take();
        let written_sets: Vec<(RuleSetKey, RuleSpan)> = written
            .map(|t| {
                t.rule_sets
                    .iter()
                    .zip(&seen.firsts)
                    .map(|(set, &first)| {
                        let len = set.intervals.len() as u32;
                        (set.key, RuleSpan { first, len })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (mut peers, mut rules) = self.split_policy_maps()?;
        let (peers_gone, sets_gone) = super::split::both(
            || peers.remove(&doomed, seen, written.map(|t| &t.peers)),
            || rules.remove(&doomed, known_sets, &written_sets),
        );
        let (peers_gone, mut kept) = peers_gone?;
        let (sets_gone, kept_sets) = sets_gone?;
        kept.rule_sets = kept_sets;
        Ok((peers_gone + sets_gone, kept))
    }

    /// Every entry a packet's verdict can depend on, as sorted text: the
    /// interfaces' policies, the peer and rule-set entries with the
    /// intervals each set points at, and the runtime config. Equal dumps
    /// mean equal enforcement; the all-or-nothing tests compare them.
    pub fn dump_policy(&mut self) -> Result<BTreeMap<&'static str, Vec<String>>> {
        fn entries<K: Pod + std::fmt::Debug, V: Pod + std::fmt::Debug>(
            dp: &mut Datapath,
            name: &str,
        ) -> Result<Vec<String>> {
            let map: HashMap<&mut MapData, K, V> = dp.map(name)?;
            let mut out: Vec<String> = map
                .iter()
                .map(|item| item.map(|(k, v)| format!("{k:?} => {v:?}")))
                .collect::<Result<_, _>>()?;
            out.sort();
            Ok(out)
        }
        let mut out = BTreeMap::new();
        out.insert(
            MAP_IFACE_POLICY,
            entries::<u32, IfacePolicy>(self, MAP_IFACE_POLICY)?,
        );
        out.insert(
            MAP_PEER_HOSTS_V4,
            entries::<PeerKeyV4, u32>(self, MAP_PEER_HOSTS_V4)?,
        );
        out.insert(
            MAP_PEER_HOSTS_V6,
            entries::<PeerKeyV6, u32>(self, MAP_PEER_HOSTS_V6)?,
        );
        out.insert(
            MAP_PEER_NETS_V4,
            entries::<PeerNetKeyV4, PeerNet>(self, MAP_PEER_NETS_V4)?,
        );
        out.insert(
            MAP_PEER_NETS_V6,
            entries::<PeerNetKeyV6, PeerNet>(self, MAP_PEER_NETS_V6)?,
        );
        out.insert(
            MAP_PEER_LENGTHS,
            entries::<PeerLengthsKey, PeerLengths>(self, MAP_PEER_LENGTHS)?,
        );
        let (spans, intervals) = self.rule_maps()?;
        let mut sets = Vec::new();
        for item in spans.iter() {
            let (key, span) = item?;
            let run: Vec<RuleInterval> = (span.first..span.first + span.len)
                .map(|i| intervals.get(&i, 0))
                .collect::<Result<_, _>>()?;
            sets.push(format!("{key:?} => {span:?} {run:?}"));
        }
        sets.sort();
        out.insert(MAP_RULE_SETS, sets);
        out.insert(MAP_CONFIG, vec![format!("{:?}", self.runtime_config()?)]);
        Ok(out)
    }
}

/// What [`Datapath::write_and_switch`] changed, to put back with
/// [`Datapath::undo`] when the change cannot be committed.
#[derive(Debug, Clone)]
pub struct Undo {
    runtime: Option<RuntimeConfig>,
    /// Interfaces switched, with their entry before (`None`: none).
    ifaces: Vec<(u32, Option<IfacePolicy>)>,
    fresh: HashSet<u32>,
}

/// The failure points of writing `n` entries of `name`, one per entry as
/// when each had its own syscall: how many to write before the injected
/// failure, and that failure.
pub(super) fn failpoints(name: &str, n: usize) -> (usize, Option<anyhow::Error>) {
    for i in 0..n {
        if let Err(e) = crate::failpoint::write(name) {
            return (i, Some(e));
        }
    }
    (n, None)
}
