//! Related ICMP: errors about tracked connections.

use super::*;

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
