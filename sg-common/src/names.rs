//! Names of the pinned maps, as the programs declare them (`sg-ebpf`'s
//! `maps.rs` and `sweep.rs`) and as the loader opens them under
//! `STATE_DIR/maps`. Renaming a map means changing it here and there.

pub const MAP_IFACE_POLICY: &str = "IFACE_POLICY";
pub const MAP_IFACE_FAST: &str = "IFACE_FAST";
pub const MAP_PEER_HOSTS_V4: &str = "PEER_HOSTS_V4";
pub const MAP_PEER_HOSTS_V6: &str = "PEER_HOSTS_V6";
pub const MAP_PEER_NETS_V4: &str = "PEER_NETS_V4";
pub const MAP_PEER_NETS_V6: &str = "PEER_NETS_V6";
pub const MAP_PEER_LENGTHS: &str = "PEER_LENGTHS";
pub const MAP_RULE_SETS: &str = "RULE_SETS";
pub const MAP_RULE_INTERVALS: &str = "RULE_INTERVALS";
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_CONNTRACK: &str = "CONNTRACK";
pub const MAP_FRAGMENTS: &str = "FRAGMENTS";
pub const MAP_DROPS: &str = "DROPS";
pub const MAP_DROPS_FAST: &str = "DROPS_FAST";
pub const MAP_RULE_HITS: &str = "RULE_HITS";
pub const MAP_EVENT_BUCKET: &str = "EVENT_BUCKET";
pub const MAP_EVENT_STATS: &str = "EVENT_STATS";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_SWEEPER: &str = "SWEEPER";

/// The policy hashes: what an apply writes under fresh IDs and removes by
/// ID once they are no longer in force.
pub const POLICY_HASHES: [&str; 6] = [
    MAP_PEER_HOSTS_V4,
    MAP_PEER_HOSTS_V6,
    MAP_PEER_NETS_V4,
    MAP_PEER_NETS_V6,
    MAP_PEER_LENGTHS,
    MAP_RULE_SETS,
];

/// Every pinned map.
pub const PINNED_MAPS: [&str; 19] = [
    MAP_IFACE_POLICY,
    MAP_IFACE_FAST,
    MAP_PEER_HOSTS_V4,
    MAP_PEER_HOSTS_V6,
    MAP_PEER_NETS_V4,
    MAP_PEER_NETS_V6,
    MAP_PEER_LENGTHS,
    MAP_RULE_SETS,
    MAP_RULE_INTERVALS,
    MAP_CONFIG,
    MAP_CONNTRACK,
    MAP_FRAGMENTS,
    MAP_DROPS,
    MAP_DROPS_FAST,
    MAP_RULE_HITS,
    MAP_EVENT_BUCKET,
    MAP_EVENT_STATS,
    MAP_EVENTS,
    MAP_SWEEPER,
];
