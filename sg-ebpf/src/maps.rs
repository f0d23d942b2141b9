//! Every map the programs use. All are pinned by name under the state dir,
//! so that later `sg` invocations (and the other program) share them.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use sg_common::{
    CtKey, CtValue, DEFAULT_CT_CAPACITY, DROP_COUNTER_CAPACITY, DROP_ROWS, DropKey, DropRow,
    EVENT_RING_BYTES, EVSTAT_COUNT, FRAG_MAP_CAPACITY, FragKey, IFACE_FAST_SLOTS,
    IFACE_MAP_CAPACITY, IfaceFast, IfacePolicy, PEER_HOST_CAPACITY, PEER_LENGTHS_CAPACITY,
    PEER_NET_CAPACITY, PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4,
    PeerNetKeyV6, RULE_HITS_CAPACITY, RULE_INTERVAL_CAPACITY, RULE_SET_CAPACITY, RuleHits,
    RuleInterval, RuleSetKey, RuleSpan, RuntimeConfig, TokenBucket,
};

/// ifindex -> the interface's current ingress/egress policy IDs.
#[map]
pub(crate) static IFACE_POLICY: HashMap<u32, IfacePolicy> = HashMap::pinned(IFACE_MAP_CAPACITY, 0);

/// ifindex -> the same, by index, for ifindexes below `IFACE_FAST_SLOTS`
/// (see `sg_common::IfaceFast`). Looked up first.
#[map]
pub(crate) static IFACE_FAST: Array<IfaceFast> = Array::pinned(IFACE_FAST_SLOTS, 0);

/// (policy, host address) -> peer class: hosts cost one lookup.
#[map]
pub(crate) static PEER_HOSTS_V4: HashMap<PeerKeyV4, u32> =
    HashMap::pinned(PEER_HOST_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(crate) static PEER_HOSTS_V6: HashMap<PeerKeyV6, u32> =
    HashMap::pinned(PEER_HOST_CAPACITY, BPF_F_NO_PREALLOC);

/// (policy, prefix length, masked address) -> peer class, for prefixes
/// shorter than a host, plus markers that steer a binary search over the
/// policy's prefix lengths (`PEER_LENGTHS`). A longest-prefix match in at
/// most 8 hash lookups, however many prefixes there are (an LPM trie
/// grows deeper with every prefix).
#[map]
pub(crate) static PEER_NETS_V4: HashMap<PeerNetKeyV4, PeerNet> =
    HashMap::pinned(PEER_NET_CAPACITY, BPF_F_NO_PREALLOC);
#[map]
pub(crate) static PEER_NETS_V6: HashMap<PeerNetKeyV6, PeerNet> =
    HashMap::pinned(PEER_NET_CAPACITY, BPF_F_NO_PREALLOC);

/// (policy, family) -> the prefix lengths to search, as a tree.
#[map]
pub(crate) static PEER_LENGTHS: HashMap<PeerLengthsKey, PeerLengths> =
    HashMap::pinned(PEER_LENGTHS_CAPACITY, BPF_F_NO_PREALLOC);

/// (class, protocol) -> its sorted, disjoint port intervals in
/// `RULE_INTERVALS`. A hash and a bounded binary search: the cost depends
/// on the rules of one class, not on the rules of every class (an LPM trie
/// over all classes grows deeper with every rule).
#[map]
pub(crate) static RULE_SETS: HashMap<RuleSetKey, RuleSpan> =
    HashMap::pinned(RULE_SET_CAPACITY, BPF_F_NO_PREALLOC);
/// An array, so the verifier inlines each probe of the search.
#[map]
pub(crate) static RULE_INTERVALS: Array<RuleInterval> = Array::pinned(RULE_INTERVAL_CAPACITY, 0);

/// Timeouts and switches; index 0 only.
#[map]
pub(crate) static CONFIG: Array<RuntimeConfig> = Array::pinned(1, 0);

/// Tracked connections. A plain hash (not LRU): a full table refuses new
/// flows instead of evicting established ones (SPEC 1.9). The loader sets
/// the capacity from `[conntrack] max_entries`.
#[map]
pub(crate) static CONNTRACK: HashMap<CtKey, CtValue> = HashMap::pinned(DEFAULT_CT_CAPACITY, 0);

/// First fragments that passed -> expiry; later fragments follow them.
/// LRU, so a full table makes room on insert without a walk.
#[map]
pub(crate) static FRAGMENTS: LruHashMap<FragKey, u64> = LruHashMap::pinned(FRAG_MAP_CAPACITY, 0);

/// Exact drop counters by interface, direction and reason.
#[map]
pub(crate) static DROPS: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::pinned(DROP_COUNTER_CAPACITY, 0);

/// The same counters by index, per CPU, in front of `DROPS`
/// (`sg_common::DropRow`).
#[map]
pub(crate) static DROPS_FAST: PerCpuArray<DropRow> = PerCpuArray::pinned(DROP_ROWS, 0);

/// Exact allowed packets and bytes by rule slot (`RuleRef.rule`). Entries
/// are allocated on a rule's first hit, so the bound costs nothing unused.
#[map]
pub(crate) static RULE_HITS: PerCpuHashMap<u32, RuleHits> =
    PerCpuHashMap::pinned(RULE_HITS_CAPACITY, aya_ebpf::bindings::BPF_F_NO_PREALLOC);

/// The token bucket in front of `EVENTS`, one per CPU.
#[map]
pub(crate) static EVENT_BUCKET: PerCpuArray<TokenBucket> = PerCpuArray::pinned(1, 0);

/// Events not emitted, by cause (`EVSTAT_*`), exact per CPU.
#[map]
pub(crate) static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::pinned(EVSTAT_COUNT, 0);

/// Drop events for `sg watch`.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::pinned(EVENT_RING_BYTES, 0);

/// Per-CPU scratch space: keeps the parsed packet and the map keys off the
/// 512-byte BPF stack.
#[map]
pub(crate) static SCRATCH: PerCpuArray<crate::verdict::Scratch> =
    PerCpuArray::with_max_entries(1, 0);

/// Working space of the TCP option walk (`parse::tcp_wscale`): a SYN's
/// options and the walk's cursor. `bytes` is 64 long so that any index
/// below 64 is in bounds for the verifier.
pub(crate) struct TcpOptions {
    pub bytes: [u8; 64],
    pub cursor: u8,
    pub wscale: u8,
}

#[map]
pub(crate) static TCP_OPTIONS: PerCpuArray<TcpOptions> = PerCpuArray::with_max_entries(1, 0);
