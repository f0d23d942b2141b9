//! A blind attacker's spoofed RSTs and FINs end to end (SPEC 1.6): the real
//! `sg` binary on a veth in a namespace, a real TCP connection whose
//! replies only conntrack lets out, and scapy injecting segments with the
//! connection's tuple but a wrong sequence number. Needs root.

use std::{net::IpAddr, time::Duration};

mod support;

use sg_lab::Host;
use support::{Held, Sg, TempFile, pair};

/// Replies need conntrack (`egress = []`); a RST-state entry dies in 2 s.
const CONFIG: &str = r#"
[groups.g]
egress = []
ingress = [{ proto = "tcp", ports = "7000", from = "anywhere" }]
[conntrack]
tcp_rst = "2s"
tcp_fin = "2s"
"#;

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
