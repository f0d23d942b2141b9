//! Audit mode (SPEC 10.2) in the real programs, through BPF_PROG_TEST_RUN:
//! an audited interface passes what its policy would drop, counts it
//! apart under its reason and reports it with `EV_F_AUDIT`; the reasons
//! that guard the enforcer stay enforced; `sg apply` switches the mode in
//! the interface's one policy update. Needs root and BPF; never skipped.

use std::net::IpAddr;

use sg::config;
use sg_common::{DIR_INGRESS, DropEvent, EV_F_AUDIT, IFACE_F_AUDIT, IfacePolicy, Reason};
use sg_testkit::{
    packet::{self, SYN},
    testrun::{
        TestBed,
        Verdict::{Drop, Pass},
    },
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const LOCAL4: &str = "198.18.0.1";

/// Web from the lab range (tracked: not `anywhere`, SPEC 1.8), SSH from
/// one host; `MODE` is replaced.
const WEB: &str = r#"
[groups.web]
mode = "MODE"
ingress = [
  { proto = "tcp", ports = "80", from = "198.18.0.0/15" },
  { proto = "tcp", ports = "22", from = "198.18.5.5" },
]
"#;

fn cfg(text: &str) -> config::Config {
    config::parse(text, "test.toml")
        .expect("valid config")
        .config
}

fn web(mode: &str) -> config::Config {
    cfg(&WEB.replace("MODE", mode))
}

/// The drop events in the ring: (reason, flags).
fn events(b: &mut TestBed) -> Vec<(u8, u8)> {
    let mut ring = b.dp.take_events().unwrap();
    let mut got = Vec::new();
    while let Some(item) = ring.next() {
        let ev: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
        got.push((ev.reason, ev.flags & EV_F_AUDIT));
    }
    got
}

fn iface_entry(b: &mut TestBed) -> IfacePolicy {
    let ifindex = b.ifindex().unwrap();
    b.dp.iface_policy().unwrap().get(&ifindex, 0).unwrap()
}

#[test]
fn an_audited_interface_passes_counts_and_reports_what_no_rule_allows() {
    let mut b = TestBed::new(&web("audit"), &["web"]).unwrap();
    let local = ip(LOCAL4);
    let stranger = ip("198.18.9.9");
    assert_eq!(
        b.ingress(&packet::tcp(stranger, local, 4000, 22, SYN))
            .unwrap(),
        Pass,
        "audit mode lets a would-be drop pass"
    );
    assert_eq!(b.audit_count(DIR_INGRESS, Reason::NoRule).unwrap(), 1);
    assert_eq!(
        b.drop_count(DIR_INGRESS, Reason::NoRule).unwrap(),
        0,
        "an audited packet is no real drop"
    );
    assert!(
        b.conntrack_entries().unwrap().is_empty(),
        "a would-be-dropped flow is not tracked"
    );
    // What the rules allow is judged as ever.
    assert_eq!(
        b.ingress(&packet::tcp(stranger, local, 4001, 80, SYN))
            .unwrap(),
        Pass
    );
    assert_eq!(b.conntrack_entries().unwrap().len(), 1);
    assert_eq!(events(&mut b), vec![(Reason::NoRule as u8, EV_F_AUDIT)]);
}

#[test]
fn an_interface_mode_audits_too_and_enforce_stays_the_default() {
    let text = format!(
        "{}\n[interfaces.lo]\ngroups = [\"web\"]\nmode = \"audit\"\n",
        WEB.replace("mode = \"MODE\"\n", "")
    );
    let mut b = TestBed::new(&cfg(&text), &["web"]).unwrap();
    let syn = packet::tcp(ip("198.18.9.9"), ip(LOCAL4), 4000, 22, SYN);
    assert_eq!(b.ingress(&syn).unwrap(), Pass);
    assert_eq!(b.audit_count(DIR_INGRESS, Reason::NoRule).unwrap(), 1);
    // Without any mode: enforced, a real drop, an event without the flag.
    let plain = WEB.replace("mode = \"MODE\"\n", "");
    let mut b = TestBed::new(&cfg(&plain), &["web"]).unwrap();
    assert_eq!(b.ingress(&syn).unwrap(), Drop);
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::NoRule).unwrap(), 1);
    assert_eq!(b.audit_count(DIR_INGRESS, Reason::NoRule).unwrap(), 0);
    assert_eq!(events(&mut b), vec![(Reason::NoRule as u8, 0)]);
}

#[test]
fn a_nacl_deny_is_audited_likewise() {
    let text = format!(
        "{}\n[interfaces.lo]\ngroups = [\"web\"]\nnacl = \"edge\"\n\n[nacls.edge]\n\
         ingress = [{{ rule = 10, action = \"deny\", proto = \"all\", from = \"198.18.7.0/24\" }},\n\
         {{ rule = 20, action = \"allow\", proto = \"all\", from = \"anywhere\" }}]\n",
        WEB.replace("MODE", "audit")
    );
    let mut b = TestBed::new(&cfg(&text), &["web"]).unwrap();
    // The NACL denies, the SG allows port 80: the packet passes and its
    // connection is tracked (the SG opened it).
    let denied = packet::tcp(ip("198.18.7.7"), ip(LOCAL4), 4000, 80, SYN);
    assert_eq!(b.ingress(&denied).unwrap(), Pass);
    assert_eq!(b.audit_count(DIR_INGRESS, Reason::NaclDeny).unwrap(), 1);
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::NaclDeny).unwrap(), 0);
    assert_eq!(b.conntrack_entries().unwrap().len(), 1);
    assert_eq!(events(&mut b), vec![(Reason::NaclDeny as u8, EV_F_AUDIT)]);
}

#[test]
fn malformed_packets_stay_dropped_in_audit_mode() {
    let mut b = TestBed::new(&web("audit"), &["web"]).unwrap();
    let good = packet::tcp(ip("198.18.9.9"), ip(LOCAL4), 1000, 80, SYN);
    assert_eq!(b.ingress(&good[..40]).unwrap(), Drop);
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::Malformed).unwrap(), 1);
    assert_eq!(b.audit_count(DIR_INGRESS, Reason::Malformed).unwrap(), 0);
    assert_eq!(events(&mut b), vec![(Reason::Malformed as u8, 0)]);
}

#[test]
fn apply_switches_audit_and_enforce_in_the_one_interface_update() {
    let mut b = TestBed::new(&web("audit"), &["web"]).unwrap();
    let before = iface_entry(&mut b);
    assert_ne!(before.flags & IFACE_F_AUDIT, 0);
    let syn = |port| packet::tcp(ip("198.18.9.9"), ip(LOCAL4), port, 22, SYN);
    assert_eq!(b.ingress(&syn(4000)).unwrap(), Pass);
    // Same rules, enforce: the policies are reused, only the flag changes,
    // in the same entry (one map update switches both).
    b.apply(&web("enforce"), &["web"]).unwrap();
    let after = iface_entry(&mut b);
    assert_eq!(after.flags & IFACE_F_AUDIT, 0);
    assert_eq!(after.ingress_policy, before.ingress_policy);
    assert_eq!(after.egress_policy, before.egress_policy);
    assert_eq!(
        after.flags | IFACE_F_AUDIT,
        before.flags,
        "nothing else changes"
    );
    assert_eq!(b.ingress(&syn(4001)).unwrap(), Drop);
    // And back, with a new rule: policies and mode in the one update.
    let text = WEB
        .replace("MODE", "audit")
        .replace("\"198.18.5.5\"", "\"198.18.9.9\"");
    b.apply(&cfg(&text), &["web"]).unwrap();
    let back = iface_entry(&mut b);
    assert_ne!(back.flags & IFACE_F_AUDIT, 0);
    assert_ne!(back.ingress_policy, after.ingress_policy);
    assert_eq!(b.ingress(&syn(4002)).unwrap(), Pass);
    assert_eq!(b.audit_count(DIR_INGRESS, Reason::NoRule).unwrap(), 1);
    assert_eq!(b.drop_count(DIR_INGRESS, Reason::NoRule).unwrap(), 1);
}
