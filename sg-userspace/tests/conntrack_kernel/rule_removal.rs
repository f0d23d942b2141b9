//! Rule removal: tracked connections by default, `revoke_established`,
//! untracked flows.

use super::*;

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
