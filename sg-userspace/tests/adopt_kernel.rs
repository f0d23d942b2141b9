//! Adopted connections in the real programs (issue 17), through
//! BPF_PROG_TEST_RUN: an entry adopted mid-stream (no sequence numbers
//! known) learns each side's window from its first packet, with the window
//! scale the handshake agreed; after that, an out-of-window RST is dropped
//! as `tcp_out_of_window` and leaves it established. Needs root and BPF.

use std::net::{IpAddr, SocketAddr};

use sg::{
    adopt::{select, sockets::Conn},
    config,
};
use sg_common::{CtValue, DIR_EGRESS, DIR_INGRESS, PROTO_TCP, Reason, ct_state_name};
use sg_testkit::{
    packet::{self, ACK, FIN, PSH, RST, TcpSeg},
    testrun::{
        TestBed,
        Verdict::{Drop, Pass},
    },
};

/// Only conntrack lets the server's packets out (`egress = []`).
const SERVER: &str = "[groups.g]\negress = []\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"anywhere\" }]\n";
const SPORT: u16 = 40000;
/// Mid-stream sequence numbers, the server's near the wrap.
const C: u32 = 1_000_000;
const S: u32 = u32::MAX - 50_000;

fn seg(seq: u32, ack: u32, win: u16, payload: u16) -> TcpSeg {
    TcpSeg {
        seq,
        ack,
        win,
        payload,
        wscale: None,
    }
}

fn only_entry(b: &mut TestBed) -> (&'static str, CtValue) {
    let entries = b.conntrack_entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    (ct_state_name(entries[0].1.state), entries[0].1)
}

fn out_of_window(b: &mut TestBed) -> u64 {
    b.drop_count(DIR_INGRESS, Reason::TcpOutOfWindow).unwrap()
        + b.drop_count(DIR_EGRESS, Reason::TcpOutOfWindow).unwrap()
}

#[test]
fn an_adopted_connection_learns_its_windows_then_refuses_out_of_window_rsts() {
    let families: [(IpAddr, IpAddr); 2] = [
        ("198.19.1.1".parse().unwrap(), "198.18.0.1".parse().unwrap()),
        (
            "2001:db8:1::1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ),
    ];
    for (remote, local) in families {
        let cfg = config::parse(SERVER, "test.toml").unwrap().config;
        let mut b = TestBed::new(&cfg, &["g"]).expect("programs load");
        let c2s = |flags, s: &TcpSeg| packet::tcp_seg(remote, local, SPORT, 80, flags, s);
        let s2c = |flags, s: &TcpSeg| packet::tcp_seg(local, remote, 80, SPORT, flags, s);
        // Windows of 500 scaled by 2^7: 64000 bytes.
        let data = seg(S, C, 500, 100);
        assert_eq!(
            b.egress(&s2c(ACK | PSH, &data)).unwrap(),
            Drop,
            "untracked, the server's data has no rule"
        );
        let conn = Conn {
            proto: PROTO_TCP,
            local: SocketAddr::new(local, 80),
            remote: SocketAddr::new(remote, SPORT),
            inbound: true,
            wscale: Some((7, 7)),
            closing: false,
        };
        let now = sg_common::monotonic_ns().unwrap();
        let timeouts = cfg.runtime_config().timeouts_ns;
        let (key, value) = select::entry(&conn, b.ifindex().unwrap(), 0, &timeouts, now);
        b.dp.conntrack()
            .unwrap()
            .insert(&key, &value, 0)
            .expect("adopted entry goes in");

        assert_eq!(b.egress(&s2c(ACK | PSH, &data)).unwrap(), Pass);
        // The client's side is not seen yet: its RST cannot close.
        let early_rst = seg(C, 0, 0, 0);
        assert_eq!(b.ingress(&c2s(RST, &early_rst)).unwrap(), Drop);
        assert_eq!(out_of_window(&mut b), 1);
        assert_eq!(only_entry(&mut b).0, "established");
        let reply = seg(C, S.wrapping_add(100), 500, 100);
        assert_eq!(b.ingress(&c2s(ACK | PSH, &reply)).unwrap(), Pass);
        assert_eq!(
            b.egress(&s2c(ACK, &seg(S.wrapping_add(100), C + 100, 500, 0)))
                .unwrap(),
            Pass
        );
        // Both sides seen: a blind RST far ahead changes nothing.
        let (_, before) = only_entry(&mut b);
        let far = seg(C.wrapping_add(1 << 30), 0, 0, 0);
        assert_eq!(b.ingress(&c2s(RST, &far)).unwrap(), Drop);
        assert_eq!(out_of_window(&mut b), 2);
        let (state, after) = only_entry(&mut b);
        assert_eq!(state, "established");
        assert_eq!(after, before, "the refused RST changed the entry");
        // Inside the scaled window (30000 > 500 unscaled): it closes.
        let rst = seg(C + 30_000, 0, 0, 0);
        assert_eq!(b.ingress(&c2s(RST, &rst)).unwrap(), Pass);
        assert_eq!(only_entry(&mut b).0, "rst");
        assert_eq!(b.drop_count(DIR_EGRESS, Reason::NoRule).unwrap(), 1);
    }
}

/// An idle adopted connection may well be closed first: a FIN as a side's
/// first packet passes (a RST does not, see above).
#[test]
fn an_adopted_side_may_close_with_a_fin_as_its_first_packet() {
    let (remote, local): (IpAddr, IpAddr) =
        ("198.19.1.1".parse().unwrap(), "198.18.0.1".parse().unwrap());
    let cfg = config::parse(SERVER, "test.toml").unwrap().config;
    let mut b = TestBed::new(&cfg, &["g"]).expect("programs load");
    let conn = Conn {
        proto: PROTO_TCP,
        local: SocketAddr::new(local, 80),
        remote: SocketAddr::new(remote, SPORT),
        inbound: true,
        wscale: None,
        closing: false,
    };
    let now = sg_common::monotonic_ns().unwrap();
    let timeouts = cfg.runtime_config().timeouts_ns;
    let (key, value) = select::entry(&conn, b.ifindex().unwrap(), 0, &timeouts, now);
    b.dp.conntrack().unwrap().insert(&key, &value, 0).unwrap();
    let fin = packet::tcp_seg(local, remote, 80, SPORT, FIN | ACK, &seg(S, C, 500, 0));
    assert_eq!(b.egress(&fin).unwrap(), Pass);
    assert_eq!(only_entry(&mut b).0, "fin_wait");
    assert_eq!(out_of_window(&mut b), 0);
}
