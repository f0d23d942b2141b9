//! Counters and drop events.

/// Key of the per-CPU drop counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DropKey {
    pub ifindex: u32,
    pub direction: u8,
    pub reason: u8,
    /// 1: a would-be drop that an interface in audit mode let pass
    /// (SPEC 10.2); counted apart from the real drops.
    pub audit: u8,
    pub _pad: u8,
}

/// `DropEvent::flags`: ports are meaningful.
pub const EV_F_PORTS: u8 = 1;
/// `DropEvent::flags`: ICMP type and code are meaningful.
pub const EV_F_ICMP: u8 = 2;
/// `DropEvent::flags`: a would-be drop that audit mode let pass (SPEC 10.2).
pub const EV_F_AUDIT: u8 = 4;

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
    /// The TCP header's flags byte (FIN 0x01 ... CWR 0x80) when `proto` is
    /// TCP and the header was read; 0 otherwise (flow logs v5 `tcp-flags`).
    pub tcp_flags: u8,
    /// With reason `nacl_deny`: the rule slot of the NACL rule that denied
    /// (userspace names its NACL and number); else [`crate::NO_RULE`].
    pub rule: u32,
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
