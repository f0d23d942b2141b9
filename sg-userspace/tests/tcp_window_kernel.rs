//! TCP sequence windows in the real programs (SPEC 1.6), through
//! BPF_PROG_TEST_RUN: a RST or FIN changes a tracked connection only inside
//! the window of its direction; outside it is dropped as
//! `tcp_out_of_window` and changes nothing. Needs root and BPF.

use std::net::IpAddr;

use sg::config;
use sg_common::{CtValue, DIR_EGRESS, DIR_INGRESS, Reason, ct_state_name};
use sg_testkit::{
    packet::{self, ACK, FIN, PSH, RST, SYN, TcpSeg},
    testrun::{
        TestBed,
        Verdict::{Drop, Pass},
    },
};

/// Only conntrack lets the server's replies out (`egress = []`).
const SERVER: &str = "[groups.g]\negress = []\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"anywhere\" }]\n";

const CLIENT_ISN: u32 = 1_000_000;
/// Near the wrap, so that sequence arithmetic must wrap.
const SERVER_ISN: u32 = u32::MAX - 50_000;
const SPORT: u16 = 40000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn families() -> [(IpAddr, IpAddr); 2] {
    [
        (ip("198.19.1.1"), ip("198.18.0.1")),
        (ip("2001:db8:1::1"), ip("2001:db8::1")),
    ]
}

fn bed() -> TestBed {
    let cfg = config::parse(SERVER, "test.toml").unwrap().config;
    TestBed::new(&cfg, &["g"]).expect("programs load and policy installs")
}

fn seg(seq: u32, ack: u32, win: u16, payload: u16) -> TcpSeg {
    TcpSeg {
        seq,
        ack,
        win,
        payload,
        wscale: None,
    }
}

/// A client (remote) talking to the server (local) on port 80.
struct Conn {
    remote: IpAddr,
    local: IpAddr,
    /// Next sequence number of the client and of the server.
    c: u32,
    s: u32,
}

impl Conn {
    fn c2s(&self, flags: u8, seg: &TcpSeg) -> Vec<u8> {
        packet::tcp_seg(self.remote, self.local, SPORT, 80, flags, seg)
    }
    fn s2c(&self, flags: u8, seg: &TcpSeg) -> Vec<u8> {
        packet::tcp_seg(self.local, self.remote, 80, SPORT, flags, seg)
    }
}

/// Handshake and one request/response. Windows: `win` from both sides,
/// the SYNs offering `client_scale` and `server_scale`.
fn establish(
    b: &mut TestBed,
    remote: IpAddr,
    local: IpAddr,
    win: u16,
    client_scale: Option<u8>,
    server_scale: Option<u8>,
) -> Conn {
    let mut c = Conn {
        remote,
        local,
        c: CLIENT_ISN,
        s: SERVER_ISN,
    };
    let syn = TcpSeg {
        wscale: client_scale,
        ..seg(c.c, 0, win, 0)
    };
    assert_eq!(b.ingress(&c.c2s(SYN, &syn)).unwrap(), Pass);
    c.c += 1;
    let syn_ack = TcpSeg {
        wscale: server_scale,
        ..seg(c.s, c.c, win, 0)
    };
    assert_eq!(b.egress(&c.s2c(SYN | ACK, &syn_ack)).unwrap(), Pass);
    c.s = c.s.wrapping_add(1);
    assert_eq!(
        b.ingress(&c.c2s(ACK | PSH, &seg(c.c, c.s, win, 100)))
            .unwrap(),
        Pass
    );
    c.c += 100;
    assert_eq!(
        b.egress(&c.s2c(ACK | PSH, &seg(c.s, c.c, win, 500)))
            .unwrap(),
        Pass
    );
    c.s = c.s.wrapping_add(500);
    assert_eq!(only_entry(b).0, "established");
    c
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
fn spoofed_rst_and_fin_far_out_of_window_are_dropped_and_change_nothing() {
    for (remote, local) in families() {
        let mut b = bed();
        let c = establish(&mut b, remote, local, 64000, None, None);
        let (_, before) = only_entry(&mut b);
        let far = c.c.wrapping_add(1 << 30);
        // From the client's side (ingress) and the server's (as if the
        // attacker sat behind the local host): RST, RST|ACK, FIN|ACK.
        let spoofs = [
            (true, RST, far),
            (true, RST | ACK, far),
            (true, FIN | ACK, far),
            (true, RST, c.c.wrapping_sub(1 << 20)),
            (false, RST, c.s.wrapping_add(1 << 30)),
            (false, FIN | ACK, c.s.wrapping_sub(1 << 20)),
        ];
        for (i, (inbound, flags, seq)) in spoofs.into_iter().enumerate() {
            let verdict = if inbound {
                b.ingress(&c.c2s(flags, &seg(seq, c.s, 64000, 0)))
            } else {
                b.egress(&c.s2c(flags, &seg(seq, c.c, 64000, 0)))
            };
            assert_eq!(
                verdict.unwrap(),
                Drop,
                "spoof {i}: flags {flags:#x} seq {seq}"
            );
            assert_eq!(out_of_window(&mut b), i as u64 + 1);
            // No state change, no timeout re-armed, no flags recorded.
            let (state, after) = only_entry(&mut b);
            assert_eq!(state, "established");
            assert_eq!(after, before, "spoof {i} changed the entry");
        }
        assert_eq!(b.drop_count(DIR_INGRESS, Reason::NoRule).unwrap(), 0);
        // The connection goes on.
        assert_eq!(
            b.egress(&c.s2c(ACK | PSH, &seg(c.s, c.c, 64000, 10)))
                .unwrap(),
            Pass
        );
    }
}

#[test]
fn an_in_window_rst_closes_the_connection() {
    for (remote, local) in families() {
        let mut b = bed();
        let c = establish(&mut b, remote, local, 64000, None, None);
        // Somewhere inside the window, not at its edge.
        let rst = seg(c.c.wrapping_add(30_000), 0, 0, 0);
        assert_eq!(b.ingress(&c.c2s(RST, &rst)).unwrap(), Pass);
        let (state, v) = only_entry(&mut b);
        assert_eq!(state, "rst");
        assert_eq!(v.tcp_flags_opener & RST, RST);
        assert_eq!(out_of_window(&mut b), 0);
    }
}

#[test]
fn fin_in_window_closes_and_out_of_window_does_not() {
    for (remote, local) in families() {
        let mut b = bed();
        let c = establish(&mut b, remote, local, 64000, None, None);
        let far = seg(c.s.wrapping_add(64000 * 4), c.c, 64000, 0);
        assert_eq!(b.egress(&c.s2c(FIN | ACK, &far)).unwrap(), Drop);
        assert_eq!(only_entry(&mut b).0, "established");
        assert_eq!(b.drop_count(DIR_EGRESS, Reason::TcpOutOfWindow).unwrap(), 1);
        // A retransmitted FIN, a little behind the server's end, is fine.
        let fin = seg(c.s.wrapping_sub(200), c.c, 64000, 0);
        assert_eq!(b.egress(&c.s2c(FIN | ACK, &fin)).unwrap(), Pass);
        assert_eq!(only_entry(&mut b).0, "fin_wait");
        // Once closing, an out-of-window RST still changes nothing.
        let far_rst = seg(c.c.wrapping_add(1 << 31), 0, 0, 0);
        assert_eq!(b.ingress(&c.c2s(RST, &far_rst)).unwrap(), Drop);
        assert_eq!(only_entry(&mut b).0, "fin_wait");
    }
}

#[test]
fn window_scaling_widens_the_window_only_when_both_syns_offer_it() {
    // The client advertises 1000 << 7 = 128,000 bytes after the handshake:
    // the server may send up to its end + 128,000.
    for (remote, local) in families() {
        for (client_scale, server_scale, scaled) in [
            (Some(7), Some(2), true),
            (Some(7), None, false),
            (None, Some(7), false),
        ] {
            let mut b = bed();
            let c = establish(&mut b, remote, local, 1000, client_scale, server_scale);
            let ack = seg(c.c, c.s, 1000, 0);
            assert_eq!(b.ingress(&c.c2s(ACK, &ack)).unwrap(), Pass);
            let what = format!("client {client_scale:?}, server {server_scale:?}");
            // Reachable only with the scaled window.
            let rst = seg(c.s.wrapping_add(100_000), c.c, 0, 0);
            let want = if scaled { Pass } else { Drop };
            // Beyond even the scaled window: never.
            let beyond = seg(c.s.wrapping_add(200_000), c.c, 0, 0);
            assert_eq!(b.egress(&c.s2c(RST, &beyond)).unwrap(), Drop, "{what}");
            assert_eq!(only_entry(&mut b).0, "established", "{what}");
            assert_eq!(b.egress(&c.s2c(RST, &rst)).unwrap(), want, "{what}");
            let state = only_entry(&mut b).0;
            assert_eq!(state, if scaled { "rst" } else { "established" }, "{what}");
            assert_eq!(out_of_window(&mut b), if scaled { 1 } else { 2 }, "{what}");
        }
    }
}

#[test]
fn a_rst_in_syn_sent_must_acknowledge_the_syn() {
    for (remote, local) in families() {
        let c = Conn {
            remote,
            local,
            c: CLIENT_ISN,
            s: SERVER_ISN,
        };
        let open = |b: &mut TestBed| {
            let syn = seg(c.c, 0, 64000, 0);
            assert_eq!(b.ingress(&c.c2s(SYN, &syn)).unwrap(), Pass);
            assert_eq!(only_entry(b).0, "syn_sent");
        };
        let mut b = bed();
        open(&mut b);
        // The server's first segment: a RST. Without ACK, or acknowledging
        // anything but the SYN, it is a guess.
        for (flags, ack) in [(RST, c.c + 1), (RST | ACK, c.c), (RST | ACK, c.c + 2)] {
            let rst = seg(0, ack, 0, 0);
            assert_eq!(
                b.egress(&c.s2c(flags, &rst)).unwrap(),
                Drop,
                "{flags:#x} ack {ack}"
            );
            assert_eq!(only_entry(&mut b).0, "syn_sent");
        }
        assert_eq!(b.drop_count(DIR_EGRESS, Reason::TcpOutOfWindow).unwrap(), 3);
        // A FIN before any SYN-ACK likewise.
        let fin = seg(c.s, c.c + 1, 64000, 0);
        assert_eq!(b.egress(&c.s2c(FIN | ACK, &fin)).unwrap(), Drop);
        // Exactly the SYN acknowledged: the connection is refused.
        let rst = seg(0, c.c + 1, 0, 0);
        assert_eq!(b.egress(&c.s2c(RST | ACK, &rst)).unwrap(), Pass);
        assert_eq!(only_entry(&mut b).0, "rst");
    }
}

/// A SYN from `remote` to port 80 of `local` whose TCP options are `opts`
/// (a multiple of 4 bytes), followed by `payload`.
fn syn_with_options(remote: IpAddr, local: IpAddr, opts: &[u8], payload: &[u8]) -> Vec<u8> {
    assert_eq!(opts.len() % 4, 0);
    let mut l4 = packet::tcp_seg_header(SPORT, 80, SYN, &seg(CLIENT_ISN, 0, 64240, 0));
    l4.extend_from_slice(opts);
    l4[12] = ((l4.len() / 4) as u8) << 4;
    l4.extend_from_slice(payload);
    packet::ip_frame(remote, local, 6, &l4)
}

/// The window scale a SYN offers is read at fixed offsets when its options
/// are laid out as the common stacks write them, and by the full walk
/// otherwise: both must find what RFC 7323's parse finds, whatever the
/// layout, and nothing past the header.
#[test]
fn every_syn_option_layout_gives_the_window_scale_the_walk_finds() {
    const TS: [u8; 8] = [0, 0, 0, 1, 0, 0, 0, 0];
    let cat = |parts: &[&[u8]]| parts.concat();
    let unknown = sg_common::TCP_WSCALE_UNKNOWN;
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, u8)> = vec![
        // The fast paths.
        (
            "linux",
            cat(&[&[2, 4, 5, 180, 4, 2, 8, 10], &TS, &[1, 3, 3, 7]]),
            vec![],
            7,
        ),
        (
            "linux, no timestamps",
            vec![2, 4, 5, 180, 1, 1, 4, 2, 1, 3, 3, 9],
            vec![],
            9,
        ),
        (
            "windows and bsd",
            vec![2, 4, 5, 180, 1, 3, 3, 8, 1, 1, 4, 2],
            vec![],
            8,
        ),
        (
            "macos",
            cat(&[&[2, 4, 5, 180, 1, 3, 3, 6, 1, 1, 8, 10], &TS, &[4, 2, 0, 0]]),
            vec![],
            6,
        ),
        (
            "shift above 14",
            vec![2, 4, 5, 180, 1, 3, 3, 20],
            vec![],
            14,
        ),
        // The walk.
        (
            "window scale first",
            vec![3, 3, 5, 1, 2, 4, 5, 180],
            vec![],
            5,
        ),
        (
            "sack then nops",
            vec![2, 4, 5, 180, 4, 2, 1, 1, 3, 3, 12, 0],
            vec![],
            12,
        ),
        (
            "a kind 3 of length 2",
            vec![2, 4, 5, 180, 1, 3, 2, 1, 1, 3, 3, 4],
            vec![],
            4,
        ),
        (
            "no window scale",
            vec![2, 4, 5, 180, 4, 2, 1, 1],
            vec![],
            unknown,
        ),
        (
            "linux cut before its window scale",
            cat(&[&[2, 4, 5, 180, 4, 2, 8, 10], &TS]),
            vec![1, 3, 3, 7],
            unknown,
        ),
        ("an end of list first", vec![0, 3, 3, 7], vec![], unknown),
    ];
    let mut b = bed();
    for (remote, local) in families() {
        for (name, opts, payload, want) in &cases {
            b.flush_conntrack().unwrap();
            let syn = syn_with_options(remote, local, opts, payload);
            assert_eq!(b.ingress(&syn).unwrap(), Pass, "{name}");
            let (state, v) = only_entry(&mut b);
            assert_eq!(state, "syn_sent", "{name}");
            assert_eq!(
                v.tcp[sg_common::CT_SIDE_OPENER].wscale,
                *want,
                "{name} ({remote})"
            );
        }
    }
}
