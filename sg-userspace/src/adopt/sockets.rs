//! The namespace's own connections, read through sock_diag (what `ss`
//! reads): established TCP connections and connected UDP sockets, IPv4
//! and IPv6, each with the side that opened it.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context as _, Result, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_SOCK_DIAG};

/// `sk_state` values (include/net/tcp_states.h); a connected UDP socket
/// reports established, an unconnected one close.
const STATE_ESTABLISHED: u8 = 1;
const STATE_FIN_WAIT1: u8 = 4;
const STATE_FIN_WAIT2: u8 = 5;
const STATE_CLOSE: u8 = 7;
const STATE_CLOSE_WAIT: u8 = 8;
const STATE_LAST_ACK: u8 = 9;
const STATE_LISTEN: u8 = 10;
const STATE_CLOSING: u8 = 11;

/// TCP states of a connection one side has closed (a FIN sent or
/// received) while the other half may still carry data.
const HALF_CLOSED: [u8; 5] = [
    STATE_FIN_WAIT1,
    STATE_FIN_WAIT2,
    STATE_CLOSE_WAIT,
    STATE_LAST_ACK,
    STATE_CLOSING,
];
/// `tcp_info.tcpi_options`: window scaling was negotiated.
const TCPI_OPT_WSCALE: u8 = 4;

/// A connection of this namespace, from the host's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub proto: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The remote side opened it (an accepted TCP connection, or a UDP
    /// socket connected on a port that also has a bound server socket).
    pub inbound: bool,
    /// TCP window-scale shifts: the one the host announced and the one
    /// the remote announced; `None` when scaling is off or unknown.
    pub wscale: Option<(u8, u8)>,
    /// A TCP connection past its first FIN (half closed): tracked as
    /// closing, so its open half goes on for the FIN timeout.
    pub closing: bool,
}

/// A socket as sock_diag lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sock {
    pub proto: u8,
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub wscale: Option<(u8, u8)>,
}

/// Established and half-closed TCP connections and connected UDP sockets
/// of the current network namespace.
pub fn connections() -> Result<Vec<Conn>> {
    let mut socks = Vec::new();
    for proto in [IPPROTO_TCP, IPPROTO_UDP] {
        for family in [AF_INET, AF_INET6] {
            socks.extend(dump(family, proto)?);
        }
    }
    Ok(classify(&socks))
}

/// An IPv4 peer of a dual-stack IPv6 socket shows as `::ffff:a.b.c.d`:
/// on the wire it is IPv4.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Does a server socket bound to `bound` take packets sent to `local`?
fn serves(bound: SocketAddr, local: SocketAddr) -> bool {
    bound.port() == local.port() && (bound.ip().is_unspecified() || bound.ip() == local.ip())
}

/// Picks the connections out of `socks` and tells who opened each: a TCP
/// connection whose local port has a listener on its address was
/// accepted; a connected UDP socket sharing its port with an unconnected
/// bound one belongs to a server. Everything else was opened from here.
pub fn classify(socks: &[Sock]) -> Vec<Conn> {
    let servers: Vec<(u8, SocketAddr)> = socks
        .iter()
        .filter(|s| {
            (s.proto == IPPROTO_TCP && s.state == STATE_LISTEN)
                || (s.proto == IPPROTO_UDP && s.state == STATE_CLOSE && s.local.port() != 0)
        })
        .map(|s| (s.proto, s.local))
        .collect();
    socks
        .iter()
        .filter(|s| {
            let connected = s.state == STATE_ESTABLISHED
                || (s.proto == IPPROTO_TCP && HALF_CLOSED.contains(&s.state));
            connected && s.remote.port() != 0
        })
        .map(|s| {
            let local = unmapped(s.local);
            let inbound = servers
                .iter()
                .any(|&(p, bound)| p == s.proto && serves(unmapped(bound), local));
            Conn {
                proto: s.proto,
                local,
                remote: unmapped(s.remote),
                inbound,
                wscale: s.wscale,
                closing: s.proto == IPPROTO_TCP && s.state != STATE_ESTABLISHED,
            }
        })
        .collect()
}

/// One sock_diag dump of `family`/`proto` sockets.
fn dump(family: u8, proto: u8) -> Result<Vec<Sock>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).context("opening a sock_diag socket")?;
    socket.bind_auto().context("binding the sock_diag socket")?;
    socket
        .connect(&NlAddr::new(0, 0))
        .context("connecting the sock_diag socket")?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let states = if proto == IPPROTO_TCP {
        StateFlags::ESTABLISHED
            | StateFlags::LISTEN
            | StateFlags::FIN_WAIT1
            | StateFlags::FIN_WAIT2
            | StateFlags::CLOSE_WAIT
            | StateFlags::LAST_ACK
            | StateFlags::CLOSING
    } else {
        StateFlags::ESTABLISHED | StateFlags::CLOSE
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: proto,
            extensions: if proto == IPPROTO_TCP {
                ExtensionFlags::INFO
            } else {
                ExtensionFlags::empty()
            },
            states,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .context("sending a sock_diag request")?;
    let mut out = Vec::new();
    loop {
        let (data, _) = socket
            .recv_from_full()
            .context("reading the sock_diag answer")?;
        let mut offset = 0;
        while offset < data.len() {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&data[offset..])
                .context("decoding the sock_diag answer")?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    out.push(sock_of(proto, &r));
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => bail!("sock_diag refused the dump: {e}"),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn sock_of(proto: u8, r: &InetResponse) -> Sock {
    let id = &r.header.socket_id;
    let wscale = r.nlas.iter().find_map(|nla| match nla {
        Nla::TcpInfo(info) => tcp_wscale(info),
        _ => None,
    });
    Sock {
        proto,
        state: r.header.state,
        local: SocketAddr::new(id.source_address, id.source_port),
        remote: SocketAddr::new(id.destination_address, id.destination_port),
        wscale,
    }
}

/// `struct tcp_info`: byte 5 is `tcpi_options`, byte 6 holds
/// `tcpi_snd_wscale` (the shift the peer announced) in its low four bits
/// and `tcpi_rcv_wscale` (ours) in its high four. Returns (ours, peer's).
fn tcp_wscale(info: &[u8]) -> Option<(u8, u8)> {
    let (&options, &scales) = (info.get(5)?, info.get(6)?);
    (options & TCPI_OPT_WSCALE != 0).then_some((scales >> 4, scales & 0xf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(proto: u8, state: u8, local: &str, remote: &str) -> Sock {
        Sock {
            proto,
            state,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            wscale: None,
        }
    }

    #[test]
    fn accepted_tcp_is_inbound_and_mapped_addresses_are_ipv4() {
        let socks = [
            sock(IPPROTO_TCP, STATE_LISTEN, "[::]:22", "[::]:0"),
            sock(
                IPPROTO_TCP,
                STATE_ESTABLISHED,
                "[::ffff:198.18.1.2]:22",
                "[::ffff:198.18.1.1]:40000",
            ),
            sock(
                IPPROTO_TCP,
                STATE_ESTABLISHED,
                "198.18.1.2:40001",
                "198.18.1.1:22",
            ),
        ];
        let conns = classify(&socks);
        assert_eq!(conns.len(), 2);
        assert!(conns[0].inbound);
        assert_eq!(conns[0].local, "198.18.1.2:22".parse().unwrap());
        assert_eq!(conns[0].remote, "198.18.1.1:40000".parse().unwrap());
        assert!(
            !conns[1].inbound,
            "a connection to port 22 elsewhere is ours"
        );
    }

    #[test]
    fn half_closed_tcp_is_a_closing_connection_and_time_wait_is_none() {
        let socks = [
            sock(
                IPPROTO_TCP,
                STATE_FIN_WAIT2,
                "198.18.1.2:40001",
                "198.18.1.1:22",
            ),
            sock(
                IPPROTO_TCP,
                STATE_CLOSE_WAIT,
                "198.18.1.2:40002",
                "198.18.1.1:22",
            ),
            sock(
                IPPROTO_TCP,
                STATE_ESTABLISHED,
                "198.18.1.2:40003",
                "198.18.1.1:22",
            ),
            // TIME_WAIT (6): nothing flows any more.
            sock(IPPROTO_TCP, 6, "198.18.1.2:40004", "198.18.1.1:22"),
            // A UDP socket's state is never a TCP one.
            sock(
                IPPROTO_UDP,
                STATE_FIN_WAIT1,
                "198.18.1.2:40005",
                "198.18.1.1:53",
            ),
        ];
        let conns = classify(&socks);
        let closing: Vec<(u16, bool)> = conns.iter().map(|c| (c.local.port(), c.closing)).collect();
        assert_eq!(closing, [(40001, true), (40002, true), (40003, false)]);
    }

    #[test]
    fn a_listener_on_another_address_does_not_make_it_inbound() {
        let socks = [
            sock(IPPROTO_TCP, STATE_LISTEN, "198.18.9.9:80", "0.0.0.0:0"),
            sock(
                IPPROTO_TCP,
                STATE_ESTABLISHED,
                "198.18.1.2:80",
                "198.18.1.1:5000",
            ),
        ];
        assert!(!classify(&socks)[0].inbound);
    }

    #[test]
    fn connected_udp_on_a_server_port_is_inbound() {
        let socks = [
            sock(IPPROTO_UDP, STATE_CLOSE, "0.0.0.0:53", "0.0.0.0:0"),
            sock(
                IPPROTO_UDP,
                STATE_ESTABLISHED,
                "198.18.1.2:53",
                "198.18.1.1:999",
            ),
            sock(
                IPPROTO_UDP,
                STATE_ESTABLISHED,
                "198.18.1.2:999",
                "198.18.1.1:53",
            ),
            // Unconnected: not a connection.
            sock(IPPROTO_UDP, STATE_CLOSE, "0.0.0.0:5353", "0.0.0.0:0"),
        ];
        let conns = classify(&socks);
        assert_eq!(conns.len(), 2);
        assert!(conns[0].inbound);
        assert!(!conns[1].inbound);
    }

    #[test]
    fn window_scales_come_from_tcp_info() {
        assert_eq!(tcp_wscale(&[1, 0, 0, 0, 0, 4 | 1, 0x97]), Some((9, 7)));
        assert_eq!(tcp_wscale(&[1, 0, 0, 0, 0, 1, 0x97]), None);
        assert_eq!(tcp_wscale(&[1, 0]), None);
    }
}
