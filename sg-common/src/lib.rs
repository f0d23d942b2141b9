//! Types shared by the eBPF programs and the userspace loader.
//!
//! Every map key, map value and event record is `#[repr(C)]` with explicit
//! padding, so that both sides agree on the layout byte for byte. Addresses
//! are raw network-order bytes; an IPv4 address fills the first 4 bytes of a
//! 16-byte field and the rest stays zero.
#![no_std]

pub mod search;

#[cfg(feature = "user")]
extern crate std;

mod names;
pub use names::*;

/// Packet direction relative to the enforced interface. The datapath keys
/// and events carry it as its code ([`Direction::code`]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

/// [`Direction::Ingress`] as the datapath writes it in keys and events.
pub const DIR_INGRESS: u8 = Direction::Ingress.code();
/// [`Direction::Egress`] as the datapath writes it in keys and events.
pub const DIR_EGRESS: u8 = Direction::Egress.code();

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// The code in `DropKey`, `FragKey` and `DropEvent`.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The direction of a code; any code but ingress's is egress, as the
    /// datapath writes only these two.
    pub const fn from_code(code: u8) -> Direction {
        if code == DIR_INGRESS {
            Direction::Ingress
        } else {
            Direction::Egress
        }
    }

    /// The name in the config file, the CLI and every output.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// Same as [`Direction::name`].
    pub const fn as_str(self) -> &'static str {
        self.name()
    }

    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }

    /// The config key naming a rule's peers: `from` for ingress, `to` for
    /// egress.
    pub const fn peer_key(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

impl core::fmt::Display for Direction {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// The name of a protocol sg has a name for (config, output), or `None`.
pub const fn proto_name(proto: u8) -> Option<&'static str> {
    match proto {
        PROTO_ICMP => Some("icmp"),
        PROTO_TCP => Some("tcp"),
        PROTO_UDP => Some("udp"),
        PROTO_ICMPV6 => Some("icmpv6"),
        _ => None,
    }
}

/// An address from a kernel record's 16-byte field (see the crate docs).
pub fn ip_addr(family: u8, raw: &[u8; 16]) -> core::net::IpAddr {
    if family == FAMILY_V4 {
        core::net::IpAddr::from([raw[0], raw[1], raw[2], raw[3]])
    } else {
        core::net::IpAddr::from(*raw)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// stamps conntrack expiries and events.
#[cfg(feature = "user")]
pub fn monotonic_ns() -> std::io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Why a packet was dropped. The names are stable: operators alert on them.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    NoRule = 1,
    ConntrackFull = 2,
    Malformed = 3,
    Fragment = 4,
    NaclDeny = 5,
    Revoked = 6,
    /// A RST or FIN outside its direction's sequence window (SPEC 1.6).
    TcpOutOfWindow = 7,
}

/// One past the largest reason code, for sizing per-reason tables.
pub const REASON_MAX: u8 = 8;

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::NoRule,
        Reason::ConntrackFull,
        Reason::Malformed,
        Reason::Fragment,
        Reason::NaclDeny,
        Reason::Revoked,
        Reason::TcpOutOfWindow,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::NoRule => "no_rule",
            Reason::ConntrackFull => "conntrack_full",
            Reason::Malformed => "malformed",
            Reason::Fragment => "fragment",
            Reason::NaclDeny => "nacl_deny",
            Reason::Revoked => "revoked",
            Reason::TcpOutOfWindow => "tcp_out_of_window",
        }
    }

    pub const fn from_code(code: u8) -> Option<Reason> {
        match code {
            1 => Some(Reason::NoRule),
            2 => Some(Reason::ConntrackFull),
            3 => Some(Reason::Malformed),
            4 => Some(Reason::Fragment),
            5 => Some(Reason::NaclDeny),
            6 => Some(Reason::Revoked),
            7 => Some(Reason::TcpOutOfWindow),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Policy maps
// ---------------------------------------------------------------------------

/// Value of `IFACE_POLICY`, keyed by ifindex. Switching both policy IDs with
/// one map update is what makes `sg apply` atomic for a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfacePolicy {
    pub ingress_policy: u32,
    pub egress_policy: u32,
    /// `IFACE_F_*` bits.
    pub flags: u32,
    pub _pad: u32,
}

/// Bits reserved for per-interface behaviour (untracked flows, NACLs).
pub const IFACE_F_NONE: u32 = 0;
/// The interface's ingress policy allows all traffic from `0.0.0.0/0`.
pub const IFACE_F_INGRESS_ALL_V4: u32 = 1;
/// The interface's ingress policy allows all traffic from `::/0`.
pub const IFACE_F_INGRESS_ALL_V6: u32 = 2;
/// The interface's egress policy allows all traffic to `0.0.0.0/0`.
pub const IFACE_F_EGRESS_ALL_V4: u32 = 4;
/// The interface's egress policy allows all traffic to `::/0`.
pub const IFACE_F_EGRESS_ALL_V6: u32 = 8;
/// The interface has no link header (tun, WireGuard, ipip, gre, sit, ppp):
/// packets start with the IP header, whose version nibble tells v4 from v6.
pub const IFACE_F_L3: u32 = 16;

/// Key of `PEER_HOSTS_V4`: policy ID (big endian), then a host address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKeyV4 {
    pub policy: [u8; 4],
    pub addr: [u8; 4],
}

/// Key of `PEER_HOSTS_V6`; see [`PeerKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKeyV6 {
    pub policy: [u8; 4],
    pub addr: [u8; 16],
}

/// Key of `PEER_NETS_V4`: a peer prefix of a policy shorter than a host,
/// or a marker on the way to one. `addr` is masked to `len` bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerNetKeyV4 {
    pub policy: [u8; 4],
    pub len: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 4],
}

/// Key of `PEER_NETS_V6`; see [`PeerNetKeyV4`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerNetKeyV6 {
    pub policy: [u8; 4],
    pub len: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

/// Value of `PEER_NETS_*`: the class of the longest peer prefix that holds
/// the key's addresses (0: none), and whether a longer one may hold the
/// packet's address ([`PEER_F_LONGER`]: search on among longer lengths).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerNet {
    pub class: u32,
    pub flags: u32,
}

pub const PEER_F_LONGER: u32 = 1;

/// Key of `PEER_LENGTHS`: a policy and an address family (`FAMILY_*`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerLengthsKey {
    pub policy: u32,
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Most prefix lengths a family can have below a host (IPv6: 0-127).
pub const PEER_MAX_LENGTHS: usize = 128;

/// Value of `PEER_LENGTHS`: the distinct prefix lengths of a policy's
/// peers (hosts excluded), as a binary search tree in an array: node `i`
/// (1-based) is `lens[i - 1]`, its children `2i` (shorter) and `2i + 1`
/// (longer). A search probes one length per level (binary search on
/// prefix lengths, Waldvogel et al.), at most [`PEER_SEARCH_STEPS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLengths {
    pub count: u32,
    pub lens: [u8; PEER_MAX_LENGTHS],
}

impl Default for PeerLengths {
    fn default() -> Self {
        PeerLengths {
            count: 0,
            lens: [0; PEER_MAX_LENGTHS],
        }
    }
}

/// Levels of a tree of up to 255 nodes.
pub const PEER_SEARCH_STEPS: u32 = 8;

/// Key of `RULE_SETS`: a class and a protocol, or the class's fallback
/// for every protocol without a set of its own (`any = 1`, `proto = 0`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleSetKey {
    pub class: u32,
    pub proto: u8,
    pub any: u8,
    pub _pad: [u8; 2],
}

/// Value of `RULE_SETS`: where the set's intervals sit in `RULE_INTERVALS`.
/// `len` is at least 1 and at most 65,536 (the intervals are disjoint).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleSpan {
    pub first: u32,
    pub len: u32,
}

/// One entry of `RULE_INTERVALS`: the ports (for ICMP `type << 8 | code`)
/// `lo..=hi` are allowed by `rule`. The intervals of a set are sorted and
/// disjoint, so a binary search finds a port's rule in at most
/// [`RULE_SEARCH_STEPS`] probes, whatever the number of rules.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleInterval {
    pub lo: u16,
    pub hi: u16,
    pub rule: RuleRef,
}

/// Halvings that take a set of up to 65,536 intervals down to one.
pub const RULE_SEARCH_STEPS: u32 = 16;

/// Rule slot of a packet that passed without a rule of its own (a related
/// ICMP error): it counts toward no rule.
pub const NO_RULE: u32 = u32::MAX;

/// The rule that allows a packet: its index of the rule that allows the packet, for
/// hit counters and for naming the rule in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleRef {
    pub rule: u32,
    /// `RULE_F_*` bits.
    pub flags: u32,
}

/// `RuleRef::flags`: a rule whose peer is `0.0.0.0/0` (or `::/0`, for the
/// family of the class) allows this protocol and port. With the opposite
/// direction allowing everything, such TCP/UDP flows are not tracked
/// (SPEC 1.8, the AWS rule).
pub const RULE_F_ANYWHERE: u32 = 1;

// ---------------------------------------------------------------------------
// Runtime configuration
// ---------------------------------------------------------------------------

/// Indexes into [`RuntimeConfig::timeouts_ns`].
pub const TO_TCP_ESTABLISHED: usize = 0;
pub const TO_TCP_SYN: usize = 1;
pub const TO_TCP_FIN: usize = 2;
pub const TO_TCP_RST: usize = 3;
pub const TO_UDP: usize = 4;
pub const TO_UDP_STREAM: usize = 5;
pub const TO_ICMP: usize = 6;
pub const TO_OTHER: usize = 7;
pub const TIMEOUT_COUNT: usize = 8;

/// Single entry of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub timeouts_ns: [u64; TIMEOUT_COUNT],
    /// Drop events per second per CPU that reach the ring buffer.
    pub events_per_sec: u32,
    /// `CFG_F_*` bits.
    pub flags: u32,
}

pub const CFG_F_REVOKE_ESTABLISHED: u32 = 1;

// ---------------------------------------------------------------------------
// Connection tracking
// ---------------------------------------------------------------------------

/// Conntrack key. Both directions of a flow map to the same key: the
/// (address, port) endpoint that sorts lower is `a`. The interface is part
/// of the key because every interface tracks its own flows, like an ENI.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub addr_a: [u8; 16],
    pub addr_b: [u8; 16],
    pub port_a: u16,
    pub port_b: u16,
    pub ifindex: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Conntrack states.
pub const CT_TCP_SYN_SENT: u8 = 1;
pub const CT_TCP_SYN_RECV: u8 = 2;
pub const CT_TCP_ESTABLISHED: u8 = 3;
pub const CT_TCP_FIN: u8 = 4;
pub const CT_TCP_RST: u8 = 5;
pub const CT_UDP: u8 = 6;
pub const CT_UDP_STREAM: u8 = 7;
pub const CT_ICMP: u8 = 8;
pub const CT_OTHER: u8 = 9;

pub const fn ct_state_name(state: u8) -> &'static str {
    match state {
        CT_TCP_SYN_SENT => "syn_sent",
        CT_TCP_SYN_RECV => "syn_recv",
        CT_TCP_ESTABLISHED => "established",
        CT_TCP_FIN => "fin_wait",
        CT_TCP_RST => "rst",
        CT_UDP => "udp",
        CT_UDP_STREAM => "udp_stream",
        CT_ICMP => "icmp",
        CT_OTHER => "other",
        _ => "unknown",
    }
}

/// `CtValue::flags`: the connection was opened by endpoint `b` (else `a`).
pub const CT_F_OPENED_BY_B: u8 = 1;
/// `CtValue::flags`: the connection was opened by an egress packet.
pub const CT_F_OPENED_EGRESS: u8 = 2;
/// `CtValue::flags`: at least one reply has been seen.
pub const CT_F_REPLIED: u8 = 4;

/// Conntrack value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) after which the entry is dead.
    pub expires_ns: u64,
    pub state: u8,
    /// `CT_F_*` bits.
    pub flags: u8,
    /// TCP flags seen from the opener and from the responder.
    pub tcp_flags_opener: u8,
    pub tcp_flags_responder: u8,
    /// Replies seen, saturating; tells a UDP stream from a single exchange.
    pub replies: u16,
    pub _pad: u16,
    /// Rule that allowed the opening packet.
    pub rule: u32,
    pub _pad2: u32,
    /// TCP sequence windows: `[CT_SIDE_OPENER]` and `[CT_SIDE_RESPONDER]`.
    pub tcp: [TcpWindow; 2],
}

pub const CT_SIDE_OPENER: usize = 0;
pub const CT_SIDE_RESPONDER: usize = 1;

/// `TcpWindow::wscale` when the side's SYN carried no window-scale option
/// (or the side was first seen mid-stream).
pub const TCP_WSCALE_UNKNOWN: u8 = 0xf;
/// RFC 7323: larger shifts are treated as 14.
pub const TCP_WSCALE_MAX: u8 = 14;

/// What one side of a TCP connection has sent and may send, as netfilter's
/// `ip_ct_tcp_state` (simplified): RST/FIN are checked against it.
/// `maxwin == 0` means the side has not been seen yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpWindow {
    /// Highest `seq + len` this side sent (SYN and FIN count one).
    pub end: u32,
    /// Highest `ack + window` the other side advertised: how far this side
    /// may send.
    pub maxend: u32,
    /// Largest (scaled) window this side advertised.
    pub maxwin: u32,
    /// Window-scale shift from this side's SYN, or [`TCP_WSCALE_UNKNOWN`].
    pub wscale: u8,
    pub _pad: [u8; 3],
}

/// How often the sweep timer deletes expired conntrack and fragment entries
/// (SPEC 1.13): a full table of dead entries blocks new flows for at most
/// this long. The packet path never walks a table.
pub const SWEEP_PERIOD_NS: u64 = 1_000_000_000;

/// Key of `FRAGMENTS`: a first fragment that passed lets its followers pass.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub id: u32,
    pub ifindex: u32,
    pub proto: u8,
    pub family: u8,
    pub direction: u8,
    pub _pad: u8,
}

/// Fragments of one datagram must arrive within this time of the first.
pub const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;

// ---------------------------------------------------------------------------
// Counters and events
// ---------------------------------------------------------------------------

/// Key of the per-CPU drop counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub ifindex: u32,
    pub direction: u8,
    pub reason: u8,
    pub _pad: u16,
}

/// `DropEvent::flags`: ports are meaningful.
pub const EV_F_PORTS: u8 = 1;
/// `DropEvent::flags`: ICMP type and code are meaningful.
pub const EV_F_ICMP: u8 = 2;

/// A drop, as written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Length of the whole frame.
    pub len: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub family: u8,
    pub proto: u8,
    pub direction: u8,
    pub reason: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// `EV_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 5],
}

/// Value of the per-CPU `RULE_HITS` counters, keyed by rule slot (the
/// `RuleRef.rule` value): packets and bytes (whole frames) a rule allowed.
/// New-flow packets count toward the rule that allowed them, and packets of
/// a tracked connection toward the rule that opened it (`CtValue.rule`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleHits {
    pub packets: u64,
    pub bytes: u64,
}

/// Per-CPU token bucket in front of the event ring buffer. `tokens` is in
/// billionths of an event, so refilling needs no division:
/// `elapsed_ns * events_per_sec` units per refill, `1e9` units per event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    pub tokens: u64,
    pub last_ns: u64,
}

/// One event costs this many bucket units; the bucket holds at most
/// `events_per_sec` events (one second of burst).
pub const TOKEN_UNITS_PER_EVENT: u64 = 1_000_000_000;

/// Indexes of the per-CPU `EVENT_STATS` array.
/// Events the token bucket held back.
pub const EVSTAT_SUPPRESSED: u32 = 0;
/// Events lost because the ring buffer was full (the reader fell behind).
pub const EVSTAT_RING_FULL: u32 = 1;
pub const EVSTAT_COUNT: u32 = 2;

/// The policy hashes. Entries are allocated on demand
/// (`BPF_F_NO_PREALLOC`), but a hash allocates its bucket array (16 bytes
/// a bucket) up front, so these are sized for real rule sets.
pub const PEER_HOST_CAPACITY: u32 = 1 << 18;
pub const PEER_NET_CAPACITY: u32 = 1 << 19;
pub const PEER_LENGTHS_CAPACITY: u32 = 8192;
pub const RULE_SET_CAPACITY: u32 = 1 << 20;
/// `RULE_INTERVALS`, an array (12 bytes an entry, allocated up front):
/// room for the live rule sets and a whole new generation beside them.
pub const RULE_INTERVAL_CAPACITY: u32 = 1 << 21;
pub const IFACE_MAP_CAPACITY: u32 = 4096;
pub const DEFAULT_CT_CAPACITY: u32 = 262_144;
pub const FRAG_MAP_CAPACITY: u32 = 16_384;
pub const DROP_COUNTER_CAPACITY: u32 = 16_384;
pub const EVENT_RING_BYTES: u32 = 1 << 20;
/// Live rule slots with hit counters (allocated on first hit).
pub const RULE_HITS_CAPACITY: u32 = 1 << 20;

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: every type here is `#[repr(C)]`, `Copy`, and has no implicit
    // padding (padding is spelled out as `_pad` fields).
    unsafe impl aya::Pod for IfacePolicy {}
    unsafe impl aya::Pod for PeerKeyV4 {}
    unsafe impl aya::Pod for PeerKeyV6 {}
    unsafe impl aya::Pod for PeerNetKeyV4 {}
    unsafe impl aya::Pod for PeerNetKeyV6 {}
    unsafe impl aya::Pod for PeerNet {}
    unsafe impl aya::Pod for PeerLengthsKey {}
    unsafe impl aya::Pod for PeerLengths {}
    unsafe impl aya::Pod for RuleSetKey {}
    unsafe impl aya::Pod for RuleSpan {}
    unsafe impl aya::Pod for RuleInterval {}
    unsafe impl aya::Pod for RuleRef {}
    unsafe impl aya::Pod for RuntimeConfig {}
    unsafe impl aya::Pod for CtKey {}
    unsafe impl aya::Pod for CtValue {}
    unsafe impl aya::Pod for TcpWindow {}
    unsafe impl aya::Pod for FragKey {}
    unsafe impl aya::Pod for DropKey {}
    unsafe impl aya::Pod for DropEvent {}
    unsafe impl aya::Pod for RuleHits {}
    unsafe impl aya::Pod for TokenBucket {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<IfacePolicy>(), 16);
        assert_eq!(size_of::<PeerKeyV4>(), 8);
        assert_eq!(size_of::<PeerKeyV6>(), 20);
        assert_eq!(size_of::<PeerNetKeyV4>(), 12);
        assert_eq!(size_of::<PeerNetKeyV6>(), 24);
        assert_eq!(size_of::<PeerNet>(), 8);
        assert_eq!(size_of::<PeerLengthsKey>(), 8);
        assert_eq!(size_of::<PeerLengths>(), 132);
        assert_eq!(size_of::<RuleSetKey>(), 8);
        assert_eq!(size_of::<RuleSpan>(), 8);
        assert_eq!(size_of::<RuleInterval>(), 12);
        assert_eq!(size_of::<RuleRef>(), 8);
        assert_eq!(size_of::<CtKey>(), 44);
        assert_eq!(size_of::<TcpWindow>(), 16);
        assert_eq!(size_of::<CtValue>(), 56);
        assert_eq!(size_of::<FragKey>(), 44);
        assert_eq!(size_of::<DropKey>(), 8);
        assert_eq!(size_of::<DropEvent>(), 64);
        assert_eq!(size_of::<RuntimeConfig>(), 72);
        assert_eq!(size_of::<RuleHits>(), 16);
        assert_eq!(size_of::<TokenBucket>(), 16);
    }

    #[test]
    fn direction_codes_and_names() {
        assert_eq!((DIR_INGRESS, DIR_EGRESS), (0, 1));
        for d in Direction::ALL {
            assert_eq!(Direction::from_code(d.code()), d);
            assert_eq!(d.opposite().opposite(), d);
            assert_ne!(d.opposite(), d);
        }
        assert_eq!(Direction::Ingress.name(), "ingress");
        assert_eq!(Direction::Egress.name(), "egress");
        assert_eq!(Direction::Egress.peer_key(), "to");
    }

    #[test]
    fn proto_names_and_addresses() {
        assert_eq!(proto_name(PROTO_ICMPV6), Some("icmpv6"));
        assert_eq!(proto_name(47), None);
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[198, 18, 0, 1]);
        assert_eq!(
            ip_addr(FAMILY_V4, &raw),
            core::net::IpAddr::from([198, 18, 0, 1])
        );
        assert_eq!(ip_addr(FAMILY_V6, &raw), core::net::IpAddr::from(raw));
    }

    #[test]
    fn reason_codes_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r as u8), Some(r));
        }
        assert_eq!(Reason::TcpOutOfWindow as u8, 7);
        assert_eq!(Reason::TcpOutOfWindow.name(), "tcp_out_of_window");
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(Reason::from_code(REASON_MAX), None);
    }
}
