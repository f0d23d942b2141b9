//! The policy maps in two halves that a write, a read or a removal works
//! on at once, one thread each: the peer hashes (a policy's members) and
//! the rule sets with their intervals (its classes' ports). A 10,000-rule
//! apply writes ~10,000 entries into each half and later deletes as many:
//! the kernel's hash updates take per-bucket locks, so two cores do the
//! two halves in about the time of one. Nothing orders one half against
//! the other: both are written under fresh IDs before any interface
//! switches, and removed only once nothing points at them.

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData},
};
use sg_common::{
    MAP_PEER_HOSTS_V4, MAP_PEER_HOSTS_V6, MAP_PEER_LENGTHS, MAP_PEER_NETS_V4, MAP_PEER_NETS_V6,
    MAP_RULE_INTERVALS, MAP_RULE_SETS, PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet,
    PeerNetKeyV4, PeerNetKeyV6, RuleInterval, RuleSetKey, RuleSpan,
};

use super::{Datapath, batch, deleted, record::Keys, seen::Seen};
use crate::compile::{PeerTables, RuleSet};

/// Runs `a` on a second thread and `b` on this one; both results.
pub(super) fn both<A: Send, B>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B) -> (A, B) {
    std::thread::scope(|s| {
        let a = s.spawn(a);
        let b = b();
        let a = a.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (a, b)
    })
}

pub(super) struct PeerMaps<'a> {
    hosts_v4: &'a mut Map,
    hosts_v6: &'a mut Map,
    nets_v4: &'a mut Map,
    nets_v6: &'a mut Map,
    lengths: &'a mut Map,
}

pub(super) struct RuleMaps<'a> {
    sets: &'a mut Map,
    intervals: &'a mut Map,
}

fn present<'a>(map: Option<&'a mut Map>, name: &str) -> Result<&'a mut Map> {
    map.ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

impl Datapath {
    /// The two halves of the policy maps, borrowed at once.
    pub(super) fn split_policy_maps(&mut self) -> Result<(PeerMaps<'_>, RuleMaps<'_>)> {
        let [
            hosts_v4,
            hosts_v6,
            nets_v4,
            nets_v6,
            lengths,
            sets,
            intervals,
        ] = self.ebpf.maps_disjoint_mut([
            MAP_PEER_HOSTS_V4,
            MAP_PEER_HOSTS_V6,
            MAP_PEER_NETS_V4,
            MAP_PEER_NETS_V6,
            MAP_PEER_LENGTHS,
            MAP_RULE_SETS,
            MAP_RULE_INTERVALS,
        ]);
        Ok((
            PeerMaps {
                hosts_v4: present(hosts_v4, MAP_PEER_HOSTS_V4)?,
                hosts_v6: present(hosts_v6, MAP_PEER_HOSTS_V6)?,
                nets_v4: present(nets_v4, MAP_PEER_NETS_V4)?,
                nets_v6: present(nets_v6, MAP_PEER_NETS_V6)?,
                lengths: present(lengths, MAP_PEER_LENGTHS)?,
            },
            RuleMaps {
                sets: present(sets, MAP_RULE_SETS)?,
                intervals: present(intervals, MAP_RULE_INTERVALS)?,
            },
        ))
    }
}

fn hash<'a, K: Pod, V: Pod>(
    map: &'a mut Map,
    name: &str,
) -> Result<HashMap<&'a mut MapData, K, V>> {
    HashMap::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// Every entry of hash `name`, in batches (`batch::entries`).
pub(super) fn entries<K: Pod, V: Pod>(map: &mut Map, name: &str) -> Result<Vec<(K, V)>> {
    let map: HashMap<&mut MapData, K, V> = hash(map, name)?;
    batch::entries(&map, |m| {
        m.iter()
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {name}"))
    })
    .with_context(|| format!("reading {name}"))
}

pub(super) fn keys<K: Pod, V: Pod>(map: &mut Map, name: &str) -> Result<Vec<K>> {
    Ok(entries::<K, V>(map, name)?
        .into_iter()
        .map(|(k, _)| k)
        .collect())
}

fn write_hash<K: Pod, V: Pod>(map: &mut Map, name: &str, entries: &[(K, V)]) -> Result<()> {
    let mut map: HashMap<&mut MapData, K, V> = hash(map, name)?;
    let (upto, injected) = super::policy::failpoints(name, entries.len());
    batch::update(&mut map, &entries[..upto], |m, k, v| Ok(m.insert(k, v, 0)?))
        .with_context(|| format!("writing {name} (map full?)"))?;
    injected.map_or(Ok(()), Err)
}

/// Removes the entries of hash `name` whose ID `doomed` picks, among
/// `known` items if given (`Seen`), else among all it holds (`read`).
/// Returns how many went and the items left: of `known` ones, those kept
/// plus `written` (what was written since they were known); of read
/// ones, those kept (the read saw the writes).
fn remove_hash<K: Pod, V: Pod, T: Copy>(
    map: &mut Map,
    name: &str,
    key_of: impl Fn(&T) -> (K, u32),
    doomed: &(impl Fn(u32) -> bool + Sync),
    known: Option<Vec<T>>,
    read: impl FnOnce(&mut Map) -> Result<Vec<T>>,
    written: &[T],
) -> Result<(usize, Vec<T>)> {
    let known_before = known.is_some();
    let items = match known {
        Some(items) => items,
        None => read(map)?,
    };
    let (stale, mut kept): (Vec<T>, Vec<T>) = items.into_iter().partition(|t| doomed(key_of(t).1));
    let stale: Vec<K> = stale.iter().map(|t| key_of(t).0).collect();
    let mut map: HashMap<&mut MapData, K, V> = hash(map, name)?;
    let (upto, injected) = super::policy::failpoints(name, stale.len());
    batch::delete(&mut map, &stale[..upto], |m, k| {
        deleted(m.remove(k))?;
        Ok(())
    })?;
    injected.map_or(Ok(()), Err)?;
    if known_before {
        kept.extend_from_slice(written);
    }
    Ok((stale.len(), kept))
}

/// [`remove_hash`] of a peer hash (its items are its keys).
fn remove_peers<K: Pod, V: Pod>(
    map: &mut Map,
    name: &str,
    id_of: impl Fn(&K) -> u32,
    doomed: &(impl Fn(u32) -> bool + Sync),
    known: Option<Vec<K>>,
    written: Option<&[(K, V)]>,
) -> Result<(usize, Vec<K>)> {
    let written: Vec<K> = written
        .unwrap_or_default()
        .iter()
        .map(|(k, _)| *k)
        .collect();
    remove_hash::<K, V, K>(
        map,
        name,
        |k| (*k, id_of(k)),
        doomed,
        known,
        |m| keys::<K, V>(m, name),
        &written,
    )
}

impl PeerMaps<'_> {
    pub(super) fn write(&mut self, peers: &PeerTables) -> Result<()> {
        write_hash(self.hosts_v4, MAP_PEER_HOSTS_V4, &peers.hosts_v4)?;
        write_hash(self.hosts_v6, MAP_PEER_HOSTS_V6, &peers.hosts_v6)?;
        write_hash(self.nets_v4, MAP_PEER_NETS_V4, &peers.nets_v4)?;
        write_hash(self.nets_v6, MAP_PEER_NETS_V6, &peers.nets_v6)?;
        // Last: a policy's lengths make its prefixes reachable.
        write_hash(self.lengths, MAP_PEER_LENGTHS, &peers.lengths)
    }

    /// The keys of every peer hash (the rule sets are the other half's).
    pub(super) fn read_keys(&mut self) -> Result<Seen> {
        Ok(Seen {
            hosts_v4: Some(keys::<PeerKeyV4, u32>(self.hosts_v4, MAP_PEER_HOSTS_V4)?),
            hosts_v6: Some(keys::<PeerKeyV6, u32>(self.hosts_v6, MAP_PEER_HOSTS_V6)?),
            nets_v4: Some(keys::<PeerNetKeyV4, PeerNet>(
                self.nets_v4,
                MAP_PEER_NETS_V4,
            )?),
            nets_v6: Some(keys::<PeerNetKeyV6, PeerNet>(
                self.nets_v6,
                MAP_PEER_NETS_V6,
            )?),
            lengths: Some(keys::<PeerLengthsKey, PeerLengths>(
                self.lengths,
                MAP_PEER_LENGTHS,
            )?),
            ..Seen::default()
        })
    }

    /// Removes the peer entries of the policies `doomed` picks; `seen`'s
    /// peer keys, where known, are the candidates. Returns how many went
    /// and the keys left ([`remove_hash`]; `written`: the peer tables
    /// written since `seen` was read).
    pub(super) fn remove(
        &mut self,
        doomed: &(impl Fn(u32) -> bool + Sync),
        seen: Seen,
        written: Option<&PeerTables>,
    ) -> Result<(usize, Keys)> {
        let id = u32::from_be_bytes;
        // Lengths first: a policy's prefixes become unreachable at once.
        let (a, lengths) = remove_peers::<PeerLengthsKey, PeerLengths>(
            self.lengths,
            MAP_PEER_LENGTHS,
            |k| k.policy,
            doomed,
            seen.lengths,
            written.map(|w| &w.lengths[..]),
        )?;
        let (b, hosts_v4) = remove_peers::<PeerKeyV4, u32>(
            self.hosts_v4,
            MAP_PEER_HOSTS_V4,
            |k| id(k.policy),
            doomed,
            seen.hosts_v4,
            written.map(|w| &w.hosts_v4[..]),
        )?;
        let (c, hosts_v6) = remove_peers::<PeerKeyV6, u32>(
            self.hosts_v6,
            MAP_PEER_HOSTS_V6,
            |k| id(k.policy),
            doomed,
            seen.hosts_v6,
            written.map(|w| &w.hosts_v6[..]),
        )?;
        let (d, nets_v4) = remove_peers::<PeerNetKeyV4, PeerNet>(
            self.nets_v4,
            MAP_PEER_NETS_V4,
            |k| id(k.policy),
            doomed,
            seen.nets_v4,
            written.map(|w| &w.nets_v4[..]),
        )?;
        let (e, nets_v6) = remove_peers::<PeerNetKeyV6, PeerNet>(
            self.nets_v6,
            MAP_PEER_NETS_V6,
            |k| id(k.policy),
            doomed,
            seen.nets_v6,
            written.map(|w| &w.nets_v6[..]),
        )?;
        let kept = Keys {
            hosts_v4,
            hosts_v6,
            nets_v4,
            nets_v6,
            lengths,
            rule_sets: Vec::new(),
        };
        Ok((a + b + c + d + e, kept))
    }
}

impl RuleMaps<'_> {
    /// Writes rule sets: their intervals into the free room `firsts` names
    /// (see [`Datapath::check_room`]), then the hash entries that point at
    /// them. Their classes are fresh, so no packet reaches them before the
    /// switch.
    pub(super) fn write(&mut self, sets: &[RuleSet], firsts: &[u32]) -> Result<()> {
        let mut intervals: Array<&mut MapData, RuleInterval> =
            Array::try_from(&mut *self.intervals)
                .with_context(|| format!("map {MAP_RULE_INTERVALS} has an unexpected type"))?;
        let placed: Vec<(u32, RuleInterval)> = sets
            .iter()
            .zip(firsts)
            .flat_map(|(set, &first)| (first..).zip(set.intervals.iter().copied()))
            .collect();
        let (upto, injected) = super::policy::failpoints(MAP_RULE_INTERVALS, placed.len());
        batch::update(&mut intervals, &placed[..upto], |m, i, v| {
            Ok(m.set(*i, v, 0)?)
        })
        .context("writing MAP_RULE_INTERVALS")?;
        injected.map_or(Ok(()), Err)?;
        let spans_of: Vec<(RuleSetKey, RuleSpan)> = sets
            .iter()
            .zip(firsts)
            .map(|(set, &first)| {
                let span = RuleSpan {
                    first,
                    len: set.intervals.len() as u32,
                };
                (set.key, span)
            })
            .collect();
        write_hash(self.sets, MAP_RULE_SETS, &spans_of)
    }

    /// Every rule set with the span of intervals it points at.
    pub(super) fn read(&mut self) -> Result<Vec<(RuleSetKey, RuleSpan)>> {
        entries(self.sets, MAP_RULE_SETS)
    }

    /// Removes the rule sets of the classes `doomed` picks; `known`: the
    /// sets with their spans, if known. Their intervals stay in the array,
    /// unreachable, until the room is needed again. Returns how many went
    /// and the sets left ([`remove_hash`]).
    pub(super) fn remove(
        &mut self,
        doomed: &(impl Fn(u32) -> bool + Sync),
        known: Option<Vec<(RuleSetKey, RuleSpan)>>,
        written: &[(RuleSetKey, RuleSpan)],
    ) -> Result<(usize, Vec<(RuleSetKey, RuleSpan)>)> {
        remove_hash::<RuleSetKey, RuleSpan, (RuleSetKey, RuleSpan)>(
            self.sets,
            MAP_RULE_SETS,
            |(k, _)| (*k, k.class),
            doomed,
            known,
            |m| entries(m, MAP_RULE_SETS),
            written,
        )
    }
}
