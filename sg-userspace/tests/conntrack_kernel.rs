//! Connection tracking in the real programs, through BPF_PROG_TEST_RUN:
//! the TCP state machine and every timeout of SPEC 1.7, related ICMP
//! (SPEC 1.6), revocation and untracked flows (SPEC 1.8), a full table
//! (SPEC 1.9). Needs root and BPF; never skipped.

use std::{net::IpAddr, thread::sleep, time::Duration};

use sg::{config, conntrack::now_ns};
use sg_common::{CtKey, CtValue, Reason, ct_state_name};
use sg_testkit::{
    packet::{self, ACK, FIN, PSH, RST, SYN},
    testrun::{
        TestBed,
        Verdict::{self, Drop, Pass},
    },
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cfg(toml: &str) -> config::Config {
    config::parse(toml, "test.toml")
        .expect("valid config")
        .config
}

fn bed(toml: &str) -> TestBed {
    TestBed::new(&cfg(toml), &["g"]).expect("programs load and policy installs")
}

/// Distinct timeouts, so each state's expiry names its timeout.
const TIMEOUTS: &str = r#"
[conntrack]
tcp_established = "1h"
tcp_syn = "50s"
tcp_fin = "40s"
tcp_rst = "30s"
udp = "20s"
udp_stream = "100s"
icmp = "15s"
other = "70s"
"#;

const LOCAL4: &str = "198.18.0.1";
const LOCAL6: &str = "2001:db8::1";
const REMOTE4: &str = "198.19.1.1";
const REMOTE6: &str = "2001:db8:1::1";

/// The only entry of the table: (state name, seconds left).
fn only_entry(b: &mut TestBed) -> (&'static str, f64, CtKey, CtValue) {
    let entries = b.conntrack_entries().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let (k, v) = entries[0];
    let left = (v.expires_ns as f64 - now_ns().unwrap() as f64) / 1e9;
    (ct_state_name(v.state), left, k, v)
}

/// `left` came from a timeout of `secs` armed a moment ago.
fn armed(left: f64, secs: f64) -> bool {
    left <= secs && left > secs - 5.0
}

fn drops(b: &mut TestBed, reason: Reason) -> u64 {
    b.dp.drops()
        .unwrap()
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, _)| k.reason == reason as u8)
        .map(|(_, per_cpu)| per_cpu.iter().sum::<u64>())
        .sum()
}

#[test]
fn tcp_walks_syn_sent_syn_recv_established_fin_and_rst_with_their_timeouts() {
    let toml = format!(
        "[groups.g]\negress = []\ningress = [{{ proto = \"tcp\", ports = \"80\", from = \"anywhere\" }}]\n{TIMEOUTS}"
    );
    for (remote, local) in [(ip(REMOTE4), ip(LOCAL4)), (ip(REMOTE6), ip(LOCAL6))] {
        let mut b = bed(&toml);
        let c2s = |flags| packet::tcp(remote, local, 40000, 80, flags);
        let s2c = |flags| packet::tcp(local, remote, 80, 40000, flags);
        // Nothing goes out before the connection exists (egress = []).
        assert_eq!(b.egress(&s2c(SYN | ACK)).unwrap(), Drop);
        assert_eq!(b.ingress(&c2s(SYN)).unwrap(), Pass);
        let (state, left, _, v) = only_entry(&mut b);
        assert_eq!(state, "syn_sent");
        assert!(armed(left, 50.0), "tcp_syn: {left}");
        assert_eq!(v.tcp_flags_opener & SYN, SYN);
        assert_eq!(b.egress(&s2c(SYN | ACK)).unwrap(), Pass);
        let (state, left, _, _) = only_entry(&mut b);
        assert_eq!(state, "syn_recv");
        assert!(armed(left, 50.0), "tcp_syn: {left}");
        assert_eq!(b.ingress(&c2s(ACK)).unwrap(), Pass);
        let (state, left, _, v) = only_entry(&mut b);
        assert_eq!(state, "established");
        assert!(armed(left, 3600.0), "tcp_established: {left}");
        assert_eq!(v.tcp_flags_responder & (SYN | ACK), SYN | ACK);
        assert_eq!(b.egress(&s2c(ACK | PSH)).unwrap(), Pass);
        assert_eq!(b.egress(&s2c(FIN | ACK)).unwrap(), Pass);
        let (state, left, _, _) = only_entry(&mut b);
        assert_eq!(state, "fin_wait");
        assert!(armed(left, 40.0), "tcp_fin: {left}");
        // Closing: an ACK does not bring it back to established.
        assert_eq!(b.ingress(&c2s(ACK)).unwrap(), Pass);
        assert_eq!(only_entry(&mut b).0, "fin_wait");
        assert_eq!(b.ingress(&c2s(RST)).unwrap(), Pass);
        let (state, left, _, _) = only_entry(&mut b);
        assert_eq!(state, "rst");
        assert!(armed(left, 30.0), "tcp_rst: {left}");
        // A bare SYN on a closed tuple is a new connection: the rules
        // decide. From the server side no rule allows it.
        assert_eq!(
            b.egress(&packet::tcp(local, remote, 80, 40000, SYN))
                .unwrap(),
            Drop
        );
        // From the client side the rule does, and the entry starts over.
        assert_eq!(b.ingress(&c2s(SYN)).unwrap(), Pass);
        assert_eq!(only_entry(&mut b).0, "syn_sent");
    }
}

#[test]
fn a_syn_ack_from_the_opener_or_an_ack_before_the_syn_ack_does_not_establish() {
    let toml = format!(
        "[groups.g]\negress = []\ningress = [{{ proto = \"tcp\", ports = \"80\", from = \"anywhere\" }}]\n{TIMEOUTS}"
    );
    let mut b = bed(&toml);
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 80, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(only_entry(&mut b).0, "syn_sent");
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 80, SYN | ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(only_entry(&mut b).0, "syn_sent");
}

#[test]
fn embryonic_tcp_expires_after_tcp_syn() {
    let toml = "[groups.g]\negress = []\ningress = [{ proto = \"tcp\", ports = \"80\", from = \"anywhere\" }]\n[conntrack]\ntcp_syn = \"1s\"\n";
    let mut b = bed(toml);
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 80, SYN))
            .unwrap(),
        Pass
    );
    sleep(Duration::from_millis(1300));
    // The SYN-ACK finds a dead entry: untracked, and egress allows nothing.
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 80, 40000, SYN | ACK))
            .unwrap(),
        Drop
    );
}

#[test]
fn udp_one_way_then_stream_with_their_timeouts() {
    let toml = format!(
        "[groups.g]\negress = []\ningress = [{{ proto = \"udp\", ports = \"53\", from = \"anywhere\" }}]\n{TIMEOUTS}"
    );
    let mut b = bed(&toml);
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    assert_eq!(
        b.ingress(&packet::udp(remote, local, 5000, 53)).unwrap(),
        Pass
    );
    let (state, left, _, _) = only_entry(&mut b);
    assert_eq!(state, "udp");
    assert!(armed(left, 20.0), "udp: {left}");
    assert_eq!(
        b.egress(&packet::udp(local, remote, 53, 5000)).unwrap(),
        Pass
    );
    let (state, left, _, _) = only_entry(&mut b);
    assert_eq!(state, "udp", "a single exchange is not a stream");
    assert!(armed(left, 20.0), "udp: {left}");
    assert_eq!(
        b.egress(&packet::udp(local, remote, 53, 5000)).unwrap(),
        Pass
    );
    let (state, left, _, _) = only_entry(&mut b);
    assert_eq!(state, "udp_stream");
    assert!(armed(left, 100.0), "udp_stream: {left}");
    // Another port pair is another flow: no rule lets it out.
    assert_eq!(
        b.egress(&packet::udp(local, remote, 53, 5001)).unwrap(),
        Drop
    );
}

#[test]
fn icmp_echo_is_keyed_by_identifier_and_other_protocols_by_address_pair() {
    let toml = format!(
        "[groups.g]\negress = []\ningress = [\n {{ proto = \"icmp\", icmp_type = 8, from = \"anywhere\" }},\n {{ proto = \"icmpv6\", icmp_type = 128, from = \"anywhere\" }},\n {{ proto = \"47\", from = \"anywhere\" }},\n]\n{TIMEOUTS}"
    );
    for (remote, local) in [(ip(REMOTE4), ip(LOCAL4)), (ip(REMOTE6), ip(LOCAL6))] {
        let mut b = bed(&toml);
        assert_eq!(
            b.ingress(&packet::echo(remote, local, 7, true)).unwrap(),
            Pass
        );
        let (state, left, k, _) = only_entry(&mut b);
        assert_eq!(state, "icmp");
        assert!(armed(left, 15.0), "icmp: {left}");
        assert_eq!((k.port_a, k.port_b), (7, 7));
        assert_eq!(
            b.egress(&packet::echo(local, remote, 7, false)).unwrap(),
            Pass
        );
        assert_eq!(
            b.egress(&packet::echo(local, remote, 8, false)).unwrap(),
            Drop
        );
        b.flush_conntrack().unwrap();
        assert_eq!(
            b.ingress(&packet::ip_proto(remote, local, 47)).unwrap(),
            Pass
        );
        let (state, left, _, _) = only_entry(&mut b);
        assert_eq!(state, "other");
        assert!(armed(left, 70.0), "other: {left}");
        assert_eq!(
            b.egress(&packet::ip_proto(local, remote, 47)).unwrap(),
            Pass
        );
        assert_eq!(
            b.egress(&packet::ip_proto(local, remote, 50)).unwrap(),
            Drop
        );
    }
}

// ---------------------------------------------------------------------------
// Related ICMP
// ---------------------------------------------------------------------------

/// Egress to 443 only, no ingress at all, and no ICMP rule anywhere.
const CLIENT: &str = r#"
[groups.g]
egress = [
  { proto = "tcp", ports = "443", to = "anywhere" },
  { proto = "udp", ports = "53", to = "anywhere" },
  { proto = "icmp", icmp_type = 8, to = "anywhere" },
  { proto = "icmpv6", icmp_type = 128, to = "anywhere" },
]
"#;

fn quoted(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

#[test]
fn icmp_errors_about_tracked_connections_pass_v4() {
    let mut b = bed(CLIENT);
    let (local, remote, router) = (ip(LOCAL4), ip(REMOTE4), ip("198.19.0.254"));
    let syn = packet::tcp(local, remote, 40000, 443, SYN);
    let err = |t: u8, c: u8, inner: &[u8]| {
        packet::icmp_error(router, local, t, c, [0, 0, 0x05, 0x00], &quoted(inner))
    };
    // Before the connection exists, nothing is related.
    assert_eq!(b.ingress(&err(3, 4, &syn)).unwrap(), Drop);
    assert_eq!(b.egress(&syn).unwrap(), Pass);
    // Fragmentation needed, port unreachable, time exceeded: related.
    for (t, c) in [(3, 4), (3, 3), (3, 1), (11, 0)] {
        assert_eq!(
            b.ingress(&err(t, c, &syn)).unwrap(),
            Pass,
            "type {t} code {c}"
        );
    }
    // Quoting a later segment (any flags) of the same connection works too.
    let data = packet::tcp(local, remote, 40000, 443, ACK | PSH);
    assert_eq!(b.ingress(&err(3, 4, &data)).unwrap(), Pass);
    // Another port, another address: not tracked, dropped.
    let other_port = packet::tcp(local, remote, 40001, 443, SYN);
    assert_eq!(b.ingress(&err(3, 4, &other_port)).unwrap(), Drop);
    let other_host = packet::tcp(local, ip("198.19.1.2"), 40000, 443, SYN);
    assert_eq!(b.ingress(&err(3, 4, &other_host)).unwrap(), Drop);
    // The quoted packet must come from the error's destination.
    let spoofed = packet::icmp_error(router, ip("198.18.0.9"), 3, 4, [0; 4], &quoted(&syn));
    assert_eq!(b.ingress(&spoofed).unwrap(), Drop);
    // Errors that are not listed in SPEC 1.6 are never related.
    assert_eq!(b.ingress(&err(12, 0, &syn)).unwrap(), Drop);
    assert_eq!(b.ingress(&err(5, 0, &syn)).unwrap(), Drop);
    // A truncated quote is not related.
    let short = packet::icmp_error(router, local, 3, 4, [0; 4], &quoted(&syn)[..22]);
    assert_eq!(b.ingress(&short).unwrap(), Drop);
    // UDP and echo flows have related errors too.
    let dns = packet::udp(local, remote, 5353, 53);
    assert_eq!(b.ingress(&err(3, 3, &dns)).unwrap(), Drop);
    assert_eq!(b.egress(&dns).unwrap(), Pass);
    assert_eq!(b.ingress(&err(3, 3, &dns)).unwrap(), Pass);
    let ping = packet::echo(local, remote, 99, true);
    assert_eq!(b.ingress(&err(11, 0, &ping)).unwrap(), Drop);
    assert_eq!(b.egress(&ping).unwrap(), Pass);
    assert_eq!(b.ingress(&err(11, 0, &ping)).unwrap(), Pass);
    // An error about an error is never related.
    let nested = err(3, 4, &syn);
    assert_eq!(b.ingress(&err(11, 0, &nested)).unwrap(), Drop);
    // Once the connection is gone, so is its relation.
    b.flush_conntrack().unwrap();
    assert_eq!(b.ingress(&err(3, 4, &syn)).unwrap(), Drop);
    assert!(drops(&mut b, Reason::NoRule) >= 8);
}

#[test]
fn icmpv6_errors_about_tracked_connections_pass_v6() {
    let mut b = bed(CLIENT);
    let (local, remote, router) = (ip(LOCAL6), ip(REMOTE6), ip("2001:db8:ff::1"));
    let syn = packet::tcp(local, remote, 40000, 443, SYN);
    let err = |t: u8, c: u8, inner: &[u8]| {
        packet::icmp_error(router, local, t, c, [0, 0, 0x05, 0x00], &quoted(inner))
    };
    assert_eq!(b.ingress(&err(2, 0, &syn)).unwrap(), Drop);
    assert_eq!(b.egress(&syn).unwrap(), Pass);
    // Packet too big, destination unreachable, time exceeded.
    for (t, c) in [(2, 0), (1, 4), (1, 0), (3, 0)] {
        assert_eq!(
            b.ingress(&err(t, c, &syn)).unwrap(),
            Pass,
            "type {t} code {c}"
        );
    }
    assert_eq!(
        b.ingress(&err(4, 0, &syn)).unwrap(),
        Drop,
        "parameter problem"
    );
    let other = packet::tcp(local, remote, 40000, 444, SYN);
    assert_eq!(b.ingress(&err(2, 0, &other)).unwrap(), Drop);
    let ping = packet::echo(local, remote, 5, true);
    assert_eq!(b.egress(&ping).unwrap(), Pass);
    assert_eq!(b.ingress(&err(3, 0, &ping)).unwrap(), Pass);
    let other_id = packet::echo(local, remote, 6, true);
    assert_eq!(b.ingress(&err(3, 0, &other_id)).unwrap(), Drop);
}

#[test]
fn icmp_errors_about_inbound_connections_go_out() {
    // A server that answers an inbound connection's peer with an error (here
    // port unreachable for an allowed UDP flow) may send it: it is related.
    let toml = "[groups.g]\negress = []\ningress = [{ proto = \"udp\", ports = \"53\", from = \"anywhere\" }]\n";
    let mut b = bed(toml);
    let (local, remote) = (ip(LOCAL4), ip(REMOTE4));
    let q = packet::udp(remote, local, 5000, 53);
    let unreach = packet::icmp_error(local, remote, 3, 3, [0; 4], &quoted(&q));
    assert_eq!(b.egress(&unreach).unwrap(), Drop);
    assert_eq!(b.ingress(&q).unwrap(), Pass);
    assert_eq!(b.egress(&unreach).unwrap(), Pass);
}

// ---------------------------------------------------------------------------
// Rule removal
// ---------------------------------------------------------------------------

const SSH_AND_WEB: &str = r#"
[groups.g]
egress = [{ proto = "udp", ports = "53", to = "198.19.0.0/16" }]
ingress = [
  { proto = "tcp", ports = "22", from = "198.19.0.0/16" },
  { proto = "tcp", ports = "80", from = "198.19.0.0/16" },
]
"#;

const WEB_ONLY: &str = r#"
[groups.g]
egress = []
ingress = [{ proto = "tcp", ports = "80", from = "198.19.0.0/16" }]
"#;

fn open_tcp(b: &mut TestBed, remote: IpAddr, local: IpAddr, sport: u16, dport: u16) {
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, sport, dport, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::tcp(local, remote, dport, sport, SYN | ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, sport, dport, ACK))
            .unwrap(),
        Pass
    );
}

#[test]
fn removed_rules_keep_tracked_connections_by_default() {
    let mut b = bed(SSH_AND_WEB);
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    assert_eq!(
        b.egress(&packet::udp(local, remote, 5000, 53)).unwrap(),
        Pass
    );
    b.apply(&cfg(WEB_ONLY), &["g"]).unwrap();
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 22, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 22, 40000, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::udp(remote, local, 53, 5000)).unwrap(),
        Pass
    );
    // New connections follow the new rules.
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40001, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(b.conntrack_entries().unwrap().len(), 2);
}

#[test]
fn revoke_established_drops_the_next_packet_either_way_and_deletes_the_entry() {
    let revoke = "\n[conntrack]\nrevoke_established = true\n";
    let mut b = bed(&format!("{SSH_AND_WEB}{revoke}"));
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    open_tcp(&mut b, remote, local, 40001, 22);
    open_tcp(&mut b, remote, local, 40002, 80);
    assert_eq!(
        b.egress(&packet::udp(local, remote, 5000, 53)).unwrap(),
        Pass
    );
    // While the rules still allow them, tracked flows pass as before.
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 22, 40000, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(b.conntrack_entries().unwrap().len(), 4);
    b.apply(&cfg(&format!("{WEB_ONLY}{revoke}")), &["g"])
        .unwrap();
    // The original direction (client -> :22) and a reply (:22 -> client).
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 22, ACK))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 22, 40001, ACK))
            .unwrap(),
        Drop
    );
    // A flow opened on egress, replied to on ingress.
    assert_eq!(
        b.ingress(&packet::udp(remote, local, 53, 5000)).unwrap(),
        Drop
    );
    assert_eq!(drops(&mut b, Reason::Revoked), 3);
    // Their entries went; the web connection stays, both ways.
    let left = b.conntrack_entries().unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].0.port_a.max(left[0].0.port_b), 40002);
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 80, 40002, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40002, 80, ACK))
            .unwrap(),
        Pass
    );
    // The revoked flow's next packets meet the rules alone.
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 22, 40000, ACK))
            .unwrap(),
        Drop
    );
    assert_eq!(drops(&mut b, Reason::NoRule), 1);
}

#[test]
fn flows_from_anywhere_with_allow_all_egress_are_untracked_and_cut_at_once() {
    // The default egress rule allows all traffic everywhere: TCP/UDP flows
    // allowed by a rule from anywhere are not tracked (AWS).
    let open = r#"
[groups.g]
ingress = [
  { proto = "tcp", ports = "80", from = "anywhere" },
  { proto = "udp", ports = "53", from = "anywhere" },
  { proto = "tcp", ports = "22", from = "198.19.0.0/16" },
  { proto = "icmp", icmp_type = 8, from = "anywhere" },
  { proto = "icmpv6", icmp_type = 128, from = "anywhere" },
]
"#;
    let closed =
        "[groups.g]\ningress = [{ proto = \"tcp\", ports = \"22\", from = \"198.19.0.0/16\" }]\n";
    for (remote, local) in [(ip(REMOTE4), ip(LOCAL4)), (ip(REMOTE6), ip(LOCAL6))] {
        let mut b = bed(open);
        assert_eq!(
            b.ingress(&packet::tcp(remote, local, 40000, 80, SYN))
                .unwrap(),
            Pass
        );
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, 53)).unwrap(),
            Pass
        );
        assert!(b.conntrack_entries().unwrap().is_empty(), "untracked");
        // A narrower rule is tracked (v4 only: its peer is a v4 CIDR), and
        // so is ICMP whatever its peer.
        if remote.is_ipv4() {
            assert_eq!(
                b.ingress(&packet::tcp(remote, local, 40001, 22, SYN))
                    .unwrap(),
                Pass
            );
        }
        assert_eq!(
            b.ingress(&packet::echo(remote, local, 1, true)).unwrap(),
            Pass
        );
        let tracked = if remote.is_ipv4() { 2 } else { 1 };
        assert_eq!(b.conntrack_entries().unwrap().len(), tracked);
        // Replies go out under the allow-all egress rule.
        assert_eq!(
            b.egress(&packet::tcp(local, remote, 80, 40000, SYN | ACK))
                .unwrap(),
            Pass
        );
        b.apply(&cfg(closed), &["g"]).unwrap();
        assert_eq!(
            b.ingress(&packet::tcp(remote, local, 40000, 80, ACK))
                .unwrap(),
            Drop
        );
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, 53)).unwrap(),
            Drop
        );
        if remote.is_ipv4() {
            assert_eq!(
                b.ingress(&packet::tcp(remote, local, 40001, 22, ACK))
                    .unwrap(),
                Pass
            );
        }
    }
    // With a narrower egress, the same flows are tracked and go on.
    let narrow = "egress = [{ proto = \"tcp\", ports = \"all\", to = \"anywhere\" }]\n";
    let mut b = bed(&open.replace("[groups.g]\n", &format!("[groups.g]\n{narrow}")));
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(b.conntrack_entries().unwrap().len(), 1);
    b.apply(
        &cfg(&closed.replace("[groups.g]\n", &format!("[groups.g]\n{narrow}"))),
        &["g"],
    )
    .unwrap();
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 80, ACK))
            .unwrap(),
        Pass
    );
}

// ---------------------------------------------------------------------------
// A full table
// ---------------------------------------------------------------------------

#[test]
fn a_full_table_refuses_new_flows_keeps_old_ones_and_recovers_from_expiry() {
    let toml = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "1000-2000", from = "anywhere" },
]
[conntrack]
max_entries = 8
udp = "3s"
"#;
    let mut b = bed(toml);
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    for port in 1000..1007 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, port)).unwrap(),
            Pass
        );
    }
    assert_eq!(b.conntrack_entries().unwrap().len(), 8);
    // Full: new flows are refused and counted.
    let flood: Vec<Verdict> = (1007..1020)
        .map(|port| b.ingress(&packet::udp(remote, local, 5000, port)).unwrap())
        .collect();
    assert!(flood.iter().all(|v| *v == Drop), "{flood:?}");
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40001, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(drops(&mut b, Reason::ConntrackFull), 14);
    // Tracked flows go on, both ways.
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 22, 40000, ACK))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.egress(&packet::udp(local, remote, 1003, 5000)).unwrap(),
        Pass
    );
    // Once the UDP entries expire, the sweep timer deletes them with no
    // packet and nothing in userspace. The established connection is never
    // evicted, at any point of the wait.
    let remaining = wait_for_sweep(&mut b, 1, Duration::from_secs(10));
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40001, 22, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 40000, 22, ACK))
            .unwrap(),
        Pass
    );
    let entries = b.conntrack_entries().unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
}

/// Polls the table until at most `left` entries remain (the sweep timer's
/// work) or `deadline` passes; asserts on every poll that the established
/// connection on port 40000 is still there. Returns the last table seen.
fn wait_for_sweep(b: &mut TestBed, left: usize, deadline: Duration) -> Vec<(CtKey, CtValue)> {
    let start = std::time::Instant::now();
    loop {
        let entries = b.conntrack_entries().unwrap();
        assert!(
            entries
                .iter()
                .any(|(k, v)| ct_state_name(v.state) == "established"
                    && k.port_a.max(k.port_b) == 40000),
            "the sweep evicted a live connection: {entries:?}"
        );
        if entries.len() <= left || start.elapsed() > deadline {
            return entries;
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_packet_path_never_sweeps_and_the_timer_outlives_its_loader() {
    // SPEC 1.13: with the sweep timer not started, a table full of expired
    // entries stays full: a packet refuses the new flow and walks nothing.
    let toml = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "1000-2000", from = "anywhere" },
]
[conntrack]
max_entries = 8
udp = "1s"
"#;
    let mut b = TestBed::without_sweeper(&cfg(toml), &["g"]).unwrap();
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    for port in 1000..1007 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, port)).unwrap(),
            Pass
        );
    }
    let full = b.conntrack_entries().unwrap();
    assert_eq!(full.len(), 8);
    // Wait for the UDP entries to expire (their timeout, not a speed test).
    sleep(Duration::from_millis(1500));
    let now = now_ns().unwrap();
    assert_eq!(
        full.iter().filter(|(_, v)| v.expires_ns < now).count(),
        7,
        "{full:?}"
    );
    for port in 1007..1010 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, 5000, port)).unwrap(),
            Drop
        );
    }
    assert_eq!(drops(&mut b, Reason::ConntrackFull), 3);
    let mut after = b.conntrack_entries().unwrap();
    let mut before = full.clone();
    after.sort_by_key(|(k, _)| (k.port_a, k.port_b, k.proto));
    before.sort_by_key(|(k, _)| (k.port_a, k.port_b, k.proto));
    let keys = |t: &[(CtKey, CtValue)]| t.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(keys(&after), keys(&before), "a packet changed the table");

    // Started, then its loader gone (as `sg attach` exits): the timer keeps
    // its program and sweeps the expired entries; the live one stays.
    b.dp.start_sweeper().unwrap();
    b.reopen_datapath().unwrap();
    let remaining = wait_for_sweep(&mut b, 1, Duration::from_secs(10));
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(
        b.ingress(&packet::udp(remote, local, 5000, 1007)).unwrap(),
        Pass
    );
}

#[test]
fn removing_the_pins_stops_the_timer_and_frees_its_program_and_maps() {
    // The timer holds its program, which holds CONNTRACK: once the pins go
    // (`sg detach`), the kernel must cancel it, or the table leaks.
    let b = bed("[groups.g]\ningress = []\n");
    let ids: Vec<u32> = ["SWEEPER", "CONNTRACK"]
        .iter()
        .map(|m| {
            aya::maps::MapInfo::from_pin(b.maps_dir().join(m))
                .unwrap()
                .id()
        })
        .collect();
    assert!(
        ids.iter()
            .all(|id| aya::maps::MapInfo::from_id(*id).is_ok())
    );
    drop(b);
    let start = std::time::Instant::now();
    while ids
        .iter()
        .any(|id| aya::maps::MapInfo::from_id(*id).is_ok())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "maps {ids:?} outlived their pins: the sweep timer still holds them"
        );
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn userspace_gc_removes_expired_entries_only() {
    let toml = "[groups.g]\negress = []\ningress = [\n { proto = \"tcp\", ports = \"22\", from = \"anywhere\" },\n { proto = \"udp\", ports = \"53\", from = \"anywhere\" },\n]\n[conntrack]\nudp = \"1s\"\n";
    // Without the sweep timer, which would race the userspace sweep.
    let mut b = TestBed::without_sweeper(&cfg(toml), &["g"]).unwrap();
    let (remote, local) = (ip(REMOTE4), ip(LOCAL4));
    open_tcp(&mut b, remote, local, 40000, 22);
    for sport in 5000..5010 {
        assert_eq!(
            b.ingress(&packet::udp(remote, local, sport, 53)).unwrap(),
            Pass
        );
    }
    let sweep = sg::conntrack::sweep_expired(&mut b.dp).unwrap();
    assert_eq!((sweep.scanned, sweep.removed), (11, 0));
    sleep(Duration::from_millis(1200));
    let sweep = sg::conntrack::sweep_expired(&mut b.dp).unwrap();
    assert_eq!((sweep.scanned, sweep.removed), (11, 10));
    let entries = b.conntrack_entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(ct_state_name(entries[0].1.state), "established");
}
