//! The kernel's policy maps, read through their pins under the state dir:
//! what the datapath actually judges by, whatever the config says.

use anyhow::{Context as _, Result};
use aya::{
    Pod,
    maps::{Array, HashMap, Map, MapData, MapError},
};
use sg_common::{
    IfacePolicy, MAP_IFACE_POLICY, MAP_PEER_HOSTS_V4, MAP_PEER_HOSTS_V6, MAP_PEER_LENGTHS,
    MAP_PEER_NETS_V4, MAP_PEER_NETS_V6, MAP_RULE_INTERVALS, MAP_RULE_SETS, PeerKeyV4, PeerKeyV6,
    PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4, PeerNetKeyV6, RuleInterval, RuleSetKey,
    RuleSpan,
};

use super::search::PolicyTables;
use crate::state::StateDir;

pub(crate) struct KernelMaps {
    iface: HashMap<MapData, u32, IfacePolicy>,
    hosts_v4: HashMap<MapData, PeerKeyV4, u32>,
    hosts_v6: HashMap<MapData, PeerKeyV6, u32>,
    nets_v4: HashMap<MapData, PeerNetKeyV4, PeerNet>,
    nets_v6: HashMap<MapData, PeerNetKeyV6, PeerNet>,
    lengths: HashMap<MapData, PeerLengthsKey, PeerLengths>,
    rule_sets: HashMap<MapData, RuleSetKey, RuleSpan>,
    intervals: Array<MapData, RuleInterval>,
}

fn pinned(dir: &StateDir, name: &str) -> Result<MapData> {
    let path = dir.maps_dir().join(name);
    MapData::from_pin(&path)
        .with_context(|| format!("cannot open the pinned map {}", path.display()))
}

fn hash<K: Pod, V: Pod>(dir: &StateDir, name: &str) -> Result<HashMap<MapData, K, V>> {
    HashMap::try_from(Map::HashMap(pinned(dir, name)?))
        .with_context(|| format!("map {name} has an unexpected type"))
}

/// A missing key is `None`; any other error is one.
fn found<V>(r: Result<V, MapError>) -> Result<Option<V>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl KernelMaps {
    pub(crate) fn open(dir: &StateDir) -> Result<KernelMaps> {
        Ok(KernelMaps {
            iface: hash(dir, MAP_IFACE_POLICY)?,
            hosts_v4: hash(dir, MAP_PEER_HOSTS_V4)?,
            hosts_v6: hash(dir, MAP_PEER_HOSTS_V6)?,
            nets_v4: hash(dir, MAP_PEER_NETS_V4)?,
            nets_v6: hash(dir, MAP_PEER_NETS_V6)?,
            lengths: hash(dir, MAP_PEER_LENGTHS)?,
            rule_sets: hash(dir, MAP_RULE_SETS)?,
            intervals: Array::try_from(Map::Array(pinned(dir, MAP_RULE_INTERVALS)?))
                .context("map RULE_INTERVALS has an unexpected type")?,
        })
    }
}

impl PolicyTables for KernelMaps {
    fn iface(&self, ifindex: u32, _name: &str) -> Result<Option<IfacePolicy>> {
        found(self.iface.get(&ifindex, 0))
    }
    fn host_v4(&self, key: &PeerKeyV4) -> Result<Option<u32>> {
        found(self.hosts_v4.get(key, 0))
    }
    fn host_v6(&self, key: &PeerKeyV6) -> Result<Option<u32>> {
        found(self.hosts_v6.get(key, 0))
    }
    fn net_v4(&self, key: &PeerNetKeyV4) -> Result<Option<PeerNet>> {
        found(self.nets_v4.get(key, 0))
    }
    fn net_v6(&self, key: &PeerNetKeyV6) -> Result<Option<PeerNet>> {
        found(self.nets_v6.get(key, 0))
    }
    fn lengths(&self, key: &PeerLengthsKey) -> Result<Option<PeerLengths>> {
        found(self.lengths.get(key, 0))
    }
    fn rule_set(&self, key: &RuleSetKey) -> Result<Option<RuleSpan>> {
        found(self.rule_sets.get(key, 0))
    }
    fn interval(&self, index: u32) -> Result<Option<RuleInterval>> {
        match self.intervals.get(&index, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::OutOfBounds { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
