//! A blind attacker's spoofed RSTs and FINs end to end (SPEC 1.6): the real
//! `sg` binary on a veth in a namespace, a real TCP connection whose
//! replies only conntrack lets out, and scapy injecting segments with the
//! connection's tuple but a wrong sequence number. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

mod support;

use sg_lab::Host;
use support::{Sg, TempFile, pair};

/// Replies need conntrack (`egress = []`); a RST-state entry dies in 2 s.
const CONFIG: &str = r#"
[groups.g]
egress = []
ingress = [{ proto = "tcp", ports = "7000", from = "anywhere" }]
[conntrack]
tcp_rst = "2s"
tcp_fin = "2s"
"#;

/// A connection held open from inside a namespace by a thread that does
/// one echo round trip per request.
struct Held {
    tx: std::sync::mpsc::Sender<()>,
    rx: std::sync::mpsc::Receiver<bool>,
    local_port: u16,
}

impl Held {
    fn open(host: &Host, dst: IpAddr, port: u16) -> Held {
        let (req_tx, req_rx) = std::sync::mpsc::channel::<()>();
        let (res_tx, res_rx) = std::sync::mpsc::channel::<bool>();
        let (port_tx, port_rx) = std::sync::mpsc::channel::<u16>();
        let path = format!("/run/netns/{}", host.ns);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd as _;
            let f = std::fs::File::open(&path).unwrap();
            // SAFETY: joins the namespace on this thread only.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(3))
                    .expect("connects");
            port_tx.send(s.local_addr().unwrap().port()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            while req_rx.recv().is_ok() {
                let msg = [0x5au8; 64];
                let mut got = [0u8; 64];
                let ok = s.write_all(&msg).is_ok() && s.read_exact(&mut got).is_ok() && got == msg;
                if res_tx.send(ok).is_err() {
                    break;
                }
            }
        });
        let local_port = port_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("connected");
        Held {
            tx: req_tx,
            rx: res_rx,
            local_port,
        }
    }

    fn exchange(&self) -> bool {
        self.tx.send(()).unwrap();
        self.rx.recv().unwrap_or(false)
    }
}

/// From `attacker`'s namespace, sends segments claiming to come from
/// `src:sport` to `dst:dport`, with sequence numbers a blind attacker picks
/// (none near the connection's): RSTs, a RST|ACK and a FIN|ACK.
fn spoof(attacker: &Host, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) {
    let ip = if src.is_ipv4() { "IP" } else { "IPv6" };
    let script = format!(
        "from scapy.all import *\n\
         conf.verb = 0\n\
         for seq, flags in [(1, 'R'), (0x40000000, 'R'), (0x80000001, 'R'), \
         (0xdeadbeef, 'RA'), (0x12345678, 'FA')]:\n\
         \x20   send({ip}(src='{src}', dst='{dst}') / TCP(sport={sport}, dport={dport}, \
         flags=flags, seq=seq, ack=1))\n"
    );
    // The distribution's interpreter, which has python3-scapy.
    attacker.run_ok(&["/usr/bin/python3", "-c", &script]);
}

#[test]
fn spoofed_out_of_window_rsts_do_not_cut_a_tracked_connection() {
    let p = pair();
    let _listener = p.server.tcp_listen(7000);
    let config = TempFile::new("toml", CONFIG);
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", config.path(), "--groups", "g"]);
    for (server, client) in [
        (IpAddr::V4(p.s.v4), IpAddr::V4(p.c.v4)),
        (IpAddr::V6(p.s.v6), IpAddr::V6(p.c.v6)),
    ] {
        let held = Held::open(&p.client, server, 7000);
        assert!(held.exchange(), "{server}: the connection works");
        let before = sg.stats()["drops_by_reason"]["tcp_out_of_window"]
            .as_u64()
            .unwrap();
        // The attacker sits beside the client and knows the tuple.
        spoof(&p.client, client, held.local_port, server, 7000);
        let dropped = sg.stats()["drops_by_reason"]["tcp_out_of_window"]
            .as_u64()
            .unwrap()
            - before;
        assert_eq!(dropped, 5, "{server}: every spoofed segment dropped");
        let entries = sg.json(&["conntrack", "list", "--json"]);
        let states: Vec<&str> = entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["src_port"].as_u64() == Some(u64::from(held.local_port)))
            .filter_map(|e| e["state"].as_str())
            .collect();
        assert_eq!(states, ["established"], "{server}");
        // Longer than the RST timeout, idle: the entry would have expired,
        // and the server's replies with it.
        std::thread::sleep(Duration::from_secs(3));
        assert!(
            held.exchange(),
            "{server}: still works after the RST timeout"
        );
    }
    assert_eq!(
        sg.stats()["drops_by_reason"]["no_rule"].as_u64().unwrap(),
        0,
        "no reply was refused"
    );
}
