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
    b.dp.drop_totals()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.reason == reason as u8)
        .map(|(_, n)| n)
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

// A test crate root finds modules beside it, so the paths are spelled out.
#[path = "conntrack_kernel/full_table.rs"]
mod full_table;
#[path = "conntrack_kernel/related.rs"]
mod related;
#[path = "conntrack_kernel/rule_removal.rs"]
mod rule_removal;
