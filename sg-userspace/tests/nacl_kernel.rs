//! Network ACLs (SPEC 2) in the real programs, through BPF_PROG_TEST_RUN:
//! ordering, statelessness, placement, always-allowed frames, fragments,
//! counters and events. Needs root and BPF; never skipped.

use std::net::IpAddr;

use sg::{compile::nacl_rule_id, config};
use sg_common::{DIR_EGRESS, DIR_INGRESS, Direction, DropEvent, NO_RULE, Reason};
use sg_testkit::{
    packet::{self, ACK, SYN},
    testrun::{
        TestBed,
        Verdict::{Drop, Pass},
    },
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bed(toml: &str) -> TestBed {
    let loaded = config::parse(toml, "test.toml").expect("valid config");
    TestBed::new(&loaded.config, &["web"]).expect("programs load and policy installs")
}

const LOCAL4: &str = "198.18.0.1";
const LOCAL6: &str = "2001:db8::1";

/// The SG allows web and SSH from anywhere and everything out; the NACL
/// decides the rest.
const SG: &str = r#"
[groups.web]
ingress = [
  { proto = "tcp", ports = "80", from = "anywhere" },
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "53", from = "anywhere" },
  { proto = "icmp", from = "anywhere" },
  { proto = "icmpv6", from = "anywhere" },
]

[interfaces.lo]
groups = ["web"]
nacl = "edge"
"#;

fn with_nacl(nacl: &str) -> String {
    format!("{SG}\n[nacls.edge]\n{nacl}")
}

fn nacl_drops(b: &mut TestBed, dir: u8) -> u64 {
    b.drop_count(dir, Reason::NaclDeny).unwrap()
}

#[test]
fn lowest_number_decides_deny_before_allow_and_allow_before_deny() {
    let mut b = bed(&with_nacl(
        r#"
ingress = [
  { rule = 100, action = "allow", proto = "tcp", ports = "80", from = "anywhere" },
  { rule = 90,  action = "deny",  proto = "all", from = "198.18.2.0/24" },
  { rule = 50,  action = "allow", proto = "tcp", ports = "22", from = "198.18.2.0/25" },
  { rule = 120, action = "allow", proto = "tcp", ports = "22", from = "198.18.0.0/15" },
]
egress = [{ rule = 100, action = "allow", proto = "all", to = "anywhere" }]
"#,
    ));
    let local = ip(LOCAL4);
    let quarantined = ip("198.18.2.200");
    let half = ip("198.18.2.7");
    let other = ip("198.18.3.3");
    // 90 (deny) comes before 100 (allow): the quarantine wins on port 80.
    assert_eq!(
        b.ingress(&packet::tcp(quarantined, local, 4000, 80, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(other, local, 4001, 80, SYN))
            .unwrap(),
        Pass
    );
    // 50 (allow) comes before 90 (deny): SSH from the first half passes,
    // though 90 covers the address too; port 80 from it does not.
    assert_eq!(
        b.ingress(&packet::tcp(half, local, 4002, 22, SYN)).unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(half, local, 4003, 80, SYN)).unwrap(),
        Drop
    );
    // 120 allows 22 from the /15 but 90 comes first for 198.18.2.200.
    assert_eq!(
        b.ingress(&packet::tcp(quarantined, local, 4004, 22, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(other, local, 4005, 22, SYN))
            .unwrap(),
        Pass
    );
    // Implicit deny: nothing matches UDP 53 from 198.19.x.
    assert_eq!(
        b.ingress(&packet::udp(ip("198.19.1.1"), local, 5353, 53))
            .unwrap(),
        Drop
    );
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 4);
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::NoRule).unwrap(), 0);
    // Per-rule counters: allows and denies by number, `*` too.
    let id = |n: u16| nacl_rule_id("edge", Direction::Ingress, n);
    assert_eq!(b.rule_packets(&id(90)).unwrap(), 3, "denied by 90");
    assert_eq!(b.rule_packets(&id(100)).unwrap(), 1, "allowed by 100");
    assert_eq!(b.rule_packets(&id(50)).unwrap(), 1, "allowed by 50");
    assert_eq!(b.rule_packets(&id(120)).unwrap(), 1, "allowed by 120");
    assert_eq!(b.rule_packets(&id(32767)).unwrap(), 1, "denied by *");
}

#[test]
fn return_traffic_needs_its_own_rule_though_tracked() {
    // Egress allowed by SG (default egress) and NACL; ingress NACL has no
    // ephemeral-port rule at first.
    let strict = with_nacl(
        r#"
ingress = [{ rule = 100, action = "allow", proto = "tcp", ports = "80", from = "anywhere" }]
egress = [{ rule = 100, action = "allow", proto = "all", to = "anywhere" }]
"#,
    );
    let local = ip(LOCAL4);
    let server = ip("198.18.9.9");
    let mut b = bed(&strict);
    assert_eq!(
        b.egress(&packet::tcp(local, server, 40000, 443, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(b.conntrack_entries().unwrap().len(), 1, "the SG tracks it");
    // The reply is tracked, so the SG passes it, but the NACL is stateless.
    let reply = packet::tcp(server, local, 443, 40000, SYN | ACK);
    assert_eq!(b.ingress(&reply).unwrap(), Drop);
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 1);
    // With the classic ephemeral-port rule, the reply passes.
    let open = with_nacl(
        r#"
ingress = [
  { rule = 100, action = "allow", proto = "tcp", ports = "80", from = "anywhere" },
  { rule = 110, action = "allow", proto = "tcp", ports = "1024-65535", from = "anywhere" },
]
egress = [{ rule = 100, action = "allow", proto = "all", to = "anywhere" }]
"#,
    );
    let cfg = config::parse(&open, "t.toml").unwrap().config;
    b.apply(&cfg, &["web"]).unwrap();
    assert_eq!(b.ingress(&reply).unwrap(), Pass);
    // Both layers: the NACL's 110 allows 1024-65535, but a new flow to an
    // unlisted port still needs an SG rule.
    assert_eq!(
        b.ingress(&packet::tcp(server, local, 5555, 8080, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::NoRule).unwrap(), 1);
}

#[test]
fn egress_nacl_judges_after_the_sgs() {
    let mut b = bed(&with_nacl(
        r#"
ingress = [{ rule = 1, action = "allow", proto = "all", from = "anywhere" }]
egress = [
  { rule = 10, action = "deny", proto = "tcp", ports = "25", to = "anywhere" },
  { rule = 20, action = "allow", proto = "all", to = "0.0.0.0/0" },
]
"#,
    ));
    let local = ip(LOCAL4);
    let remote = ip("198.18.9.9");
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 40000, 25, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 40001, 443, SYN))
            .unwrap(),
        Pass
    );
    // IPv6: 20 names IPv4 only, so `*` denies.
    assert_eq!(
        b.egress(&packet::tcp(
            ip(LOCAL6),
            ip("2001:db8:9::9"),
            40002,
            443,
            SYN
        ))
        .unwrap(),
        Drop
    );
    assert_eq!(nacl_drops(&mut b, DIR_EGRESS), 2);
    // Denied by both layers on egress: the SGs judge first, so `no_rule`;
    // the NACL never sees it.
    let sg_only = r#"
[groups.web]
ingress = []
egress = [{ proto = "tcp", ports = "443", to = "anywhere" }]
[interfaces.lo]
groups = ["web"]
nacl = "edge"
[nacls.edge]
egress = [
  { rule = 1, action = "deny", proto = "tcp", ports = "25", to = "anywhere" },
  { rule = 2, action = "allow", proto = "all", to = "anywhere" },
]
"#;
    let mut b = bed(sg_only);
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 40003, 25, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(b.drop_count(DIR_EGRESS, Reason::NoRule).unwrap(), 1);
    assert_eq!(nacl_drops(&mut b, DIR_EGRESS), 0);
    // The ingress side is missing: it denies everything, tracked replies too.
    assert_eq!(
        b.egress(&packet::tcp(local, remote, 40004, 443, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(remote, local, 443, 40004, SYN | ACK))
            .unwrap(),
        Drop
    );
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 1);
}

#[test]
fn ipv6_and_icmp_rules_order_like_ipv4() {
    let mut b = bed(&with_nacl(
        r#"
ingress = [
  { rule = 10, action = "deny", proto = "icmpv6", icmp_type = 128, from = "2001:db8:bad::/48" },
  { rule = 20, action = "allow", proto = "icmpv6", from = "::/0" },
  { rule = 30, action = "allow", proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
  { rule = 40, action = "allow", proto = "tcp", ports = "22", from = "2001:db8::/32" },
]
"#,
    ));
    let local6 = ip(LOCAL6);
    assert_eq!(
        b.ingress(&packet::echo(ip("2001:db8:bad::1"), local6, 7, true))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::echo(ip("2001:db8:900::1"), local6, 7, true))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("2001:db8:bad::1"), local6, 4000, 22, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("2001:db9::1"), local6, 4000, 22, SYN))
            .unwrap(),
        Drop,
        "outside 2001:db8::/32: the implicit deny"
    );
    let local4 = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::echo(ip("198.18.4.4"), local4, 7, true))
            .unwrap(),
        Pass
    );
    // Type 0 (echo reply) is not type 8.
    assert_eq!(
        b.ingress(&packet::echo(ip("198.18.4.4"), local4, 7, false))
            .unwrap(),
        Drop
    );
}

#[test]
fn always_allowed_frames_pass_a_deny_everything_nacl() {
    // No rules at all: `*` denies both directions.
    let mut b = bed(&with_nacl(""));
    assert_eq!(b.ingress(&packet::arp()).unwrap(), Pass);
    let ns = packet::icmp(ip("fe80::1"), ip("ff02::1:ff00:1"), 135, 0, [0; 4]);
    assert_eq!(b.ingress(&ns).unwrap(), Pass);
    assert_eq!(b.egress(&ns).unwrap(), Pass);
    let local = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.3.3"), local, 4000, 80, SYN))
            .unwrap(),
        Drop
    );
    // A related ICMP error gets no exemption from the NACL.
    let quoted = packet::tcp(local, ip("198.18.3.3"), 4000, 80, SYN);
    let err = packet::icmp_error(
        ip("198.18.3.3"),
        local,
        3,
        4,
        [0, 0, 5, 0xdc],
        &quoted[14..],
    );
    assert_eq!(b.ingress(&err).unwrap(), Drop);
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 2);
}

#[test]
fn an_interface_without_nacl_is_judged_by_its_sgs_only() {
    let toml = SG.replace("nacl = \"edge\"", "") + "\n[nacls.edge]\n";
    let mut b = bed(&toml);
    let local = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.3.3"), local, 4000, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.3.3"), local, 4000, 81, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 0);
}

#[test]
fn later_fragments_follow_a_first_fragment_that_passed_both_layers() {
    let mut b = bed(&with_nacl(
        r#"
ingress = [
  { rule = 10, action = "deny", proto = "tcp", ports = "22", from = "anywhere" },
  { rule = 20, action = "allow", proto = "all", from = "anywhere" },
]
"#,
    ));
    let src = [198, 18, 5, 5];
    let dst = [198, 18, 0, 1];
    let frag = |dport: Option<u16>, id: u16| {
        let (field, payload) = match dport {
            Some(p) => (packet::IP_MF, packet::tcp_header(4000, p, SYN)),
            None => (3, vec![0x5a; 24]),
        };
        packet::ethernet(
            packet::ETH_P_IP,
            &[],
            &packet::ipv4(src, dst, 6, id, field, &[], &payload),
        )
    };
    // Passed both layers: the rest follows.
    assert_eq!(b.ingress(&frag(Some(80), 1)).unwrap(), Pass);
    assert_eq!(b.ingress(&frag(None, 1)).unwrap(), Pass);
    // Denied by the NACL: the rest is a stray fragment.
    assert_eq!(b.ingress(&frag(Some(22), 2)).unwrap(), Drop);
    assert_eq!(b.ingress(&frag(None, 2)).unwrap(), Drop);
    // Passed the NACL, denied by the SG (443 has no SG rule).
    assert_eq!(b.ingress(&frag(Some(443), 3)).unwrap(), Drop);
    assert_eq!(b.ingress(&frag(None, 3)).unwrap(), Drop);
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 1);
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::Fragment).unwrap(), 2);
}

#[test]
fn a_nacl_drop_event_names_its_rule_and_an_sg_drop_names_none() {
    let mut b = bed(&with_nacl(
        r#"
ingress = [
  { rule = 7, action = "deny", proto = "tcp", ports = "80", from = "198.18.2.0/24" },
  { rule = 8, action = "allow", proto = "all", from = "anywhere" },
]
"#,
    ));
    let local = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.2.2"), local, 4000, 80, SYN))
            .unwrap(),
        Drop
    );
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.3.3"), local, 4000, 81, SYN))
            .unwrap(),
        Drop
    );
    let slot = b
        .state()
        .rules_by_slot()
        .into_iter()
        .find(|(_, r)| r.id == nacl_rule_id("edge", Direction::Ingress, 7))
        .map(|(s, _)| s)
        .expect("rule 7 in force");
    let mut ring = b.dp.take_events().unwrap();
    let mut got = Vec::new();
    while let Some(item) = ring.next() {
        let ev: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        got.push((ev.reason, ev.rule));
    }
    assert_eq!(
        got,
        vec![
            (Reason::NaclDeny as u8, slot),
            (Reason::NoRule as u8, NO_RULE)
        ]
    );
}

#[test]
fn a_deny_everything_nacl_costs_no_state() {
    // Denied at the NACL before the SG on ingress: no tracked connection.
    let mut b = bed(&with_nacl(""));
    let local = ip(LOCAL4);
    assert_eq!(
        b.ingress(&packet::tcp(ip("198.18.3.3"), local, 4000, 80, SYN))
            .unwrap(),
        Drop
    );
    assert!(b.conntrack_entries().unwrap().is_empty());
}

#[test]
fn every_program_stays_well_inside_the_verifier_budget() {
    let mut b = bed(&with_nacl(""));
    for p in b.program_sizes().unwrap() {
        eprintln!(
            "{}: {} instructions, {} verified",
            p.name, p.instructions, p.verified
        );
        assert!(p.verified < 800_000, "{}: {} verified", p.name, p.verified);
    }
}

/// A NACL at its limit, 32,766 numbered rules (SPEC 2.1), compiles, fits
/// the tables and decides in the kernel like a small one: the lowest
/// number wins at either end of the range, and `*` takes the rest.
#[test]
fn a_nacl_of_32766_rules_decides_at_both_ends_of_its_numbers() {
    // Rule n: host 198.19.(n / 256).(n % 256) to port 10000 + n % 20000,
    // allow for odd n, deny for even; rule 32766 allows 198.19.200.0/24
    // to port 80. The SG allows every TCP port: the NACL decides.
    let mut toml = String::from(
        "[groups.web]\ningress = [{ proto = \"tcp\", ports = \"1-65535\", from = \"anywhere\" }]\n\n\
         [interfaces.lo]\ngroups = [\"web\"]\nnacl = \"edge\"\n\n[nacls.edge]\ningress = [\n",
    );
    for n in 1..32766u32 {
        let action = if n % 2 == 1 { "allow" } else { "deny" };
        toml.push_str(&format!(
            "  {{ rule = {n}, action = \"{action}\", proto = \"tcp\", ports = \"{}\", from = \"198.19.{}.{}\" }},\n",
            10000 + n % 20000,
            n / 256,
            n % 256
        ));
    }
    toml.push_str(
        "  { rule = 32766, action = \"allow\", proto = \"tcp\", ports = \"80\", from = \"198.19.200.0/24\" },\n]\n\
         egress = [{ rule = 100, action = \"allow\", proto = \"all\", to = \"anywhere\" }]\n",
    );
    let mut b = bed(&toml);
    let local = ip(LOCAL4);
    let host = |n: u32| ip(&format!("198.19.{}.{}", n / 256, n % 256));
    let syn = |from: IpAddr, port: u16| packet::tcp(from, local, 4000, port, SYN);
    for (n, want) in [(1, Pass), (2, Drop), (32765, Pass), (32764, Drop)] {
        let port = (10000 + n % 20000) as u16;
        assert_eq!(b.ingress(&syn(host(n), port)).unwrap(), want, "rule {n}");
        // No rule names this host's port 80 (rule 32766 holds only
        // 198.19.200.0/24, above every rule's host): `*` denies.
        assert_eq!(
            b.ingress(&syn(host(n), 80)).unwrap(),
            Drop,
            "rule {n}, port 80"
        );
    }
    assert_eq!(b.ingress(&syn(ip("198.19.200.1"), 80)).unwrap(), Pass);
    assert_eq!(b.ingress(&syn(ip("198.19.201.1"), 80)).unwrap(), Drop);
    // Rules 2 and 32764, four port-80 SYNs to `*`, and 198.19.201.1.
    assert_eq!(nacl_drops(&mut b, DIR_INGRESS), 7);
}
