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

mod bench_stop;
mod conntrack;
mod drop_rows;
mod events;
mod iface_fast;
mod names;
mod policy;
pub use bench_stop::*;
pub use conntrack::*;
pub use drop_rows::*;
pub use events::*;
pub use iface_fast::*;
pub use names::*;
pub use policy::*;

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

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the clock of
/// `bpf_ktime_get_coarse_ns`, which
/// stamps conntrack expiries and events.
#[cfg(feature = "user")]
pub fn monotonic_ns() -> std::io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
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

    /// Does audit mode let this would-be drop pass? The policy verdicts
    /// do (no SG rule, a NACL deny, a revoked connection); the reasons that
    /// guard the enforcer itself (malformed, fragment, conntrack_full,
    /// tcp_out_of_window) stay enforced.
    pub const fn is_audited(self) -> bool {
        matches!(self, Reason::NoRule | Reason::NaclDeny | Reason::Revoked)
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
// Capacities
// ---------------------------------------------------------------------------

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
    unsafe impl aya::Pod for IfaceFast {}
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
    unsafe impl aya::Pod for DropRow {}
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
        assert_eq!(size_of::<IfacePolicy>(), 24);
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
