//! Policy maps: which policies an interface enforces, peer → class,
//! (class, protocol, port) → rule.

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
    /// The interface's NACL (SPEC 2) per direction, as policy IDs in the
    /// same tables; 0: no NACL. In the same entry as the SG policies, so
    /// one map update switches both layers.
    pub ingress_nacl: u32,
    pub egress_nacl: u32,
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
/// Audit mode (SPEC 10.2): the policy verdicts ([`crate::Reason::is_audited`])
/// count and report as drops with the audit flag, and the packet passes.
/// In the same entry as the policies, so one update switches between
/// audit and enforce.
pub const IFACE_F_AUDIT: u32 = 32;
/// The ingress policy names IPv4 peers only as hosts: it has no prefix
/// search (`PEER_LENGTHS` entry), so the datapath skips that probe. The
/// same for IPv6 and for egress below. Absent, the datapath probes.
pub const IFACE_F_INGRESS_HOSTS_ONLY_V4: u32 = 64;
pub const IFACE_F_INGRESS_HOSTS_ONLY_V6: u32 = 128;
pub const IFACE_F_EGRESS_HOSTS_ONLY_V4: u32 = 256;
pub const IFACE_F_EGRESS_HOSTS_ONLY_V6: u32 = 512;

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
/// `RuleRef::flags` in a NACL's intervals: the lowest-numbered matching
/// NACL rule denies (without it, it allows).
pub const RULE_F_NACL_DENY: u32 = 2;

/// Highest rule number a NACL rule may have (SPEC 2.1).
pub const NACL_RULE_MAX: u16 = 32766;
/// Number of the implicit final rule `*`, which denies everything: the
/// compiler adds it to every NACL direction as a real rule, so a packet
/// always matches one rule and `*` has its own counter.
pub const NACL_RULE_IMPLICIT: u16 = 32767;
