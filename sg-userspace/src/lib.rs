//! sg: cloud-style security groups enforced by XDP and TC.
pub mod compile;
pub mod config;

/// The eBPF object built by `build.rs` from `sg-ebpf`.
pub static EBPF_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sg"));
