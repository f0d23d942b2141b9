//! sg: cloud-style security groups enforced by XDP (ingress) and TC (egress).
//!
//! `config` parses the TOML file, `compile` turns it into map entries (pure,
//! no kernel), `datapath` owns the eBPF object and its pinned maps,
//! `enforcer` runs attach/apply/detach on top of them. The test and bench
//! harness lives in the `sg-testkit` and `sg-lab` crates.
pub mod adopt;
pub mod aws;
pub mod bpffs;
pub mod cli;
pub mod compile;
pub mod config;
pub mod confirm;
pub mod conntrack;
pub mod datapath;
pub mod demo;
pub mod enforcer;
pub mod events;
pub mod explain;
pub mod failpoint;
pub mod fleet;
pub mod hook;
pub mod ifaces;
pub mod install;
pub mod lockout;
pub mod metrics;
pub mod netns;
pub mod packaging;
pub mod phase;
pub mod reclaim;
pub mod reuse;
pub mod rule_store;
pub mod state;
pub mod status;

/// The eBPF object built by `build.rs` from `sg-ebpf`.
pub static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg"));
