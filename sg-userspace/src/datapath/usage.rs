//! How full the policy maps are, for room checks and `sg status`.

use anyhow::{Context as _, Result};
use aya::Pod;
use sg_common::{
    MAP_PEER_HOSTS_V4, MAP_PEER_HOSTS_V6, MAP_PEER_LENGTHS, MAP_PEER_NETS_V4, MAP_PEER_NETS_V6,
    MAP_RULE_INTERVALS, MAP_RULE_SETS,
};
use sg_common::{
    PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4, PeerNetKeyV6,
    RuleSetKey, RuleSpan,
};

use super::Datapath;

impl Datapath {
    /// How full each policy map is. An apply needs room for the policy in
    /// force and the new one side by side (less what it reuses).
    pub fn policy_usage(&mut self) -> Result<Vec<MapUsage>> {
        let mut out = vec![
            self.hash_usage::<PeerKeyV4, u32>(MAP_PEER_HOSTS_V4)?,
            self.hash_usage::<PeerKeyV6, u32>(MAP_PEER_HOSTS_V6)?,
            self.hash_usage::<PeerNetKeyV4, PeerNet>(MAP_PEER_NETS_V4)?,
            self.hash_usage::<PeerNetKeyV6, PeerNet>(MAP_PEER_NETS_V6)?,
            self.hash_usage::<PeerLengthsKey, PeerLengths>(MAP_PEER_LENGTHS)?,
            self.hash_usage::<RuleSetKey, RuleSpan>(MAP_RULE_SETS)?,
        ];
        // The interval array is always full size: what counts is how much
        // of it the rule sets point at.
        let used = self
            .hash_entries::<RuleSetKey, RuleSpan>(MAP_RULE_SETS)?
            .iter()
            .map(|(_, span)| u64::from(span.len))
            .sum();
        let (_, intervals) = self.rule_maps()?;
        out.push(MapUsage {
            map: MAP_RULE_INTERVALS,
            entries: used,
            capacity: intervals.len(),
        });
        Ok(out)
    }

    pub(super) fn hash_usage<K: Pod, V: Pod>(&mut self, name: &'static str) -> Result<MapUsage> {
        let capacity = self.hash_capacity(name)?;
        let entries = self.hash_entries::<K, V>(name)?.len() as u64;
        Ok(MapUsage {
            map: name,
            entries,
            capacity,
        })
    }

    /// How many entries the hash `name` can hold.
    pub(super) fn hash_capacity(&mut self, name: &str) -> Result<u32> {
        match self.ebpf.map(name) {
            Some(aya::maps::Map::HashMap(data)) => Ok(data.info()?.max_entries()),
            _ => anyhow::bail!("map {name} missing or not a hash"),
        }
    }

    /// Every entry of the hash `name`, read in batches (`batch::entries`).
    pub(super) fn hash_entries<K: Pod, V: Pod>(&mut self, name: &str) -> Result<Vec<(K, V)>> {
        super::split::entries(self.raw_map(name)?, name)
    }

    /// Every key of the hash `name` (as [`Datapath::hash_entries`]).
    pub(super) fn hash_keys<K: Pod, V: Pod>(&mut self, name: &str) -> Result<Vec<K>> {
        super::split::keys::<K, V>(self.raw_map(name)?, name)
    }

    fn raw_map(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }
}

/// Entries in use in a policy map, and how many it can hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MapUsage {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

impl MapUsage {
    /// Fails, naming the map, unless `need` more entries fit.
    pub fn check(&self, need: u64) -> Result<()> {
        if self.entries + need > u64::from(self.capacity) {
            anyhow::bail!(
                "{} has room for {} entries; {} are in use and this change needs {} more",
                self.map,
                self.capacity,
                self.entries,
                need
            );
        }
        Ok(())
    }
}
