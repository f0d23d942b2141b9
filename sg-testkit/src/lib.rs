//! The harness of sg's tests and benchmarks, kept out of the product
//! crate: the real programs run on crafted frames ([`testrun`]), frame
//! builders ([`packet`]), the reference evaluator the differential test
//! compares the kernel with ([`reference`]), and the benchmarks behind
//! `cargo xtask bench` ([`bench`], [`bench_e2e`], the `sg-bench` binary), and the
//! tests' one random number generator ([`rng`]).
//! The namespace lab is the `sg-lab` crate, which `sg demo` uses too.

pub mod bench;
pub mod bench_apply;
pub mod bench_e2e;
pub mod bench_fleet;
pub mod bench_peer;
pub mod packet;
pub mod reference;
pub use sg_lab::rng;
pub mod testrun;
