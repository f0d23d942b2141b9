use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;

use super::presets::{ICMP_ALL, port};
use super::*;

mod files;
mod peers;
mod rule_ids;
mod rules;
mod settings;

fn ok(src: &str) -> Loaded {
    parse(src, "t.toml").unwrap_or_else(|e| panic!("unexpected error: {e}\n---\n{src}"))
}

fn cfg(src: &str) -> Config {
    ok(src).config
}

/// Asserts that `src` fails at `line:col` with a message containing `needle`.
#[track_caller]
fn fails(src: &str, line: usize, col: usize, needle: &str) -> ConfigError {
    let e = match parse(src, "t.toml") {
        Ok(l) => panic!("expected an error containing {needle:?}, got {l:#?}"),
        Err(e) => e,
    };
    assert!(
        e.message.contains(needle),
        "message {:?} does not contain {needle:?}",
        e.message
    );
    assert_eq!(
        (e.line, e.column),
        (line, col),
        "wrong position for error: {e}"
    );
    assert_eq!(e.file, "t.toml");
    assert_eq!(e.to_string(), format!("t.toml:{line}:{col}: {}", e.message));
    e
}

/// A group `g` with one ingress rule written inline as `rule`.
fn one_rule(rule: &str) -> String {
    format!("[groups.g]\ningress = [\n  {rule},\n]\n")
}

/// The single ingress rule of group `g`.
fn rule_of(rule: &str) -> Rule {
    let c = cfg(&one_rule(rule));
    assert_eq!(c.groups["g"].ingress.len(), 1);
    c.groups["g"].ingress[0].clone()
}

/// Error in the one-rule config: the rule starts on line 3, column 3.
#[track_caller]
fn rule_fails(rule: &str, needle: &str, col_in_rule: usize) -> ConfigError {
    fails(&one_rule(rule), 3, 2 + col_in_rule, needle)
}

/// 1-based column of `needle` within `hay`.
fn col(hay: &str, needle: &str) -> usize {
    hay.find(needle).expect("needle in rule") + 1
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Peer {
    Peer::Cidr(net(s))
}

/// The config example of SPEC 2, with every optional section.
pub(crate) const SPEC_EXAMPLE: &str = r#"
[groups.web]
description = "web tier"
ingress = [
  { proto = "tcp", ports = "80", from = ["0.0.0.0/0", "::/0"], description = "http" },
  { proto = "tcp", ports = "22", from = "sg:bastion" },
  { proto = "icmp", icmp_type = 8, from = "198.18.0.0/15" },
]
# no `egress` key: the AWS default allow-all egress rule

[groups.bastion]
members = ["198.18.0.10"]
ingress = [{ proto = "tcp", ports = "22", from = "198.19.0.0/16" }]
egress = [{ proto = "tcp", ports = "all", to = "sg:web" }]

[interfaces.eth0]
groups = ["web"]

[conntrack]            # optional; every key has the default of 1.7 / 1.9
tcp_established = "5d" # also: tcp_syn, tcp_fin, tcp_rst, udp_stream, icmp, other
udp = "30s"            # durations: "90s", "2m", "1h", "5d"
max_entries = 262144
revoke_established = false

[events]               # optional
per_second = 1000      # drop events per second per CPU (SPEC 5); counters are never limited
"#;
