use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;

use super::presets::{ICMP_ALL, port};
use super::*;

mod fast_parse;
mod files;
mod modes;
mod nacls;
mod peers;
mod prefix_lists;
mod rule_ids;
mod rules;
mod settings;
pub(crate) mod tree_diff;

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
pub(crate) const SPEC_EXAMPLE: &str = include_str!("../../../../examples/sg.toml");
