//! Connection tracking and fragment tracking: keys, values, states.

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
/// `CtValue::flags`: adopted at attach or apply from a connection that was
/// already established (SPEC 4); its TCP windows start unseen and are
/// learnt from each side's first packet.
pub const CT_F_ADOPTED: u8 = 8;

/// Conntrack value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_coarse_ns()` (CLOCK_MONOTONIC_COARSE) after which the
    /// entry is dead.
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
