//! The keys record (`sg::datapath` `record.rs`) seen from outside: applies
//! that say whether they trusted it, entries planted under IDs no policy
//! uses, and a check that the policy hashes hold nothing else.

use std::{collections::HashSet, path::PathBuf};

use aya::{
    Pod,
    maps::{HashMap, Map, MapData},
};
use sg::state::StateDir;
use sg_common::{
    PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4, PeerNetKeyV6,
    RuleSetKey, RuleSpan,
};

use super::Sg;

/// Runs `sg ARGS` with the record's debug log; it must succeed without a
/// warning. Whether it trusted the keys record.
pub(crate) fn run_logged(sg: &Sg, args: &[&str]) -> bool {
    let out = sg
        .cmd(args)
        .env("RUST_LOG", "sg::keys=debug")
        .output()
        .expect("sg runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sg {args:?} failed: {stderr}");
    assert!(!stderr.contains("warning"), "sg {args:?}: {stderr}");
    let trusted = stderr.contains("the keys record is trusted");
    let untrusted = stderr.contains("the keys record is not used");
    assert!(trusted != untrusted, "sg {args:?}: {stderr}");
    trusted
}

pub(crate) fn record_path(sg: &Sg) -> PathBuf {
    StateDir::new(&sg.state_dir).meta.join("keys.bin")
}

fn hash<K: Pod, V: Pod>(sg: &Sg, name: &str) -> HashMap<MapData, K, V> {
    let dir = StateDir::new(&sg.state_dir);
    let data = MapData::from_pin(dir.maps_dir().join(name)).expect("a pinned map");
    HashMap::try_from(Map::HashMap(data)).expect("a hash")
}

fn ids<K: Pod, V: Pod>(sg: &Sg, name: &str, id: impl Fn(&K) -> u32) -> Vec<u32> {
    hash::<K, V>(sg, name)
        .keys()
        .map(|k| id(&k.expect("a key")))
        .collect()
}

/// Every (hash, ID) of the policy hashes whose ID no policy or class in
/// force has: what a removal missed.
pub(crate) fn stray_ids(sg: &Sg) -> Vec<(&'static str, u32)> {
    let state = StateDir::new(&sg.state_dir)
        .load_any_netns()
        .unwrap()
        .expect("a state");
    let live: HashSet<u32> = state.installed.ids().collect();
    let be = u32::from_be_bytes;
    let all = [
        (
            "PEER_HOSTS_V4",
            ids::<PeerKeyV4, u32>(sg, "PEER_HOSTS_V4", |k| be(k.policy)),
        ),
        (
            "PEER_HOSTS_V6",
            ids::<PeerKeyV6, u32>(sg, "PEER_HOSTS_V6", |k| be(k.policy)),
        ),
        (
            "PEER_NETS_V4",
            ids::<PeerNetKeyV4, PeerNet>(sg, "PEER_NETS_V4", |k| be(k.policy)),
        ),
        (
            "PEER_NETS_V6",
            ids::<PeerNetKeyV6, PeerNet>(sg, "PEER_NETS_V6", |k| be(k.policy)),
        ),
        (
            "PEER_LENGTHS",
            ids::<PeerLengthsKey, PeerLengths>(sg, "PEER_LENGTHS", |k| k.policy),
        ),
        (
            "RULE_SETS",
            ids::<RuleSetKey, RuleSpan>(sg, "RULE_SETS", |k| k.class),
        ),
    ];
    all.into_iter()
        .flat_map(|(name, ids)| ids.into_iter().map(move |id| (name, id)))
        .filter(|(_, id)| !live.contains(id))
        .collect()
}

fn leftover_key(id: u32) -> PeerKeyV4 {
    PeerKeyV4 {
        policy: id.to_be_bytes(),
        addr: [198, 18, 250, 250],
    }
}

/// Writes a `PEER_HOSTS_V4` entry under policy `id` behind sg's back, as
/// a killed apply or another writer would leave it.
pub(crate) fn plant_leftover(sg: &Sg, id: u32) {
    let mut map = hash::<PeerKeyV4, u32>(sg, "PEER_HOSTS_V4");
    map.insert(&leftover_key(id), &1, 0).expect("insert");
}

pub(crate) fn has_leftover(sg: &Sg, id: u32) -> bool {
    hash::<PeerKeyV4, u32>(sg, "PEER_HOSTS_V4")
        .get(&leftover_key(id), 0)
        .is_ok()
}

/// An ID handed out before and in force no more (policy and class IDs are
/// never handed out again): the lowest one not in force.
pub(crate) fn old_unused_id(sg: &Sg) -> u32 {
    let state = StateDir::new(&sg.state_dir)
        .load_any_netns()
        .unwrap()
        .expect("a state");
    let live: HashSet<u32> = state.installed.ids().collect();
    (1..state.next_id)
        .find(|id| !live.contains(id))
        .expect("an ID no longer in force")
}
