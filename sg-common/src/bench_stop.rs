//! Where the benchmark's program variants stop (SPEC 6's per-step cost
//! breakdown). The bench loads the programs with the global
//! `SG_BENCH_STOP` set to one of these; `sg` never sets it (0: the whole
//! verdict). The global is read-only data, so the verifier knows its
//! value and prunes the steps a variant never reaches.

/// The name of the global in the eBPF object.
pub const BENCH_STOP_GLOBAL: &str = "SG_BENCH_STOP";
/// The whole verdict, as sg runs it.
pub const BENCH_STOP_NONE: u32 = 0;
/// Pass right after the interface lookup.
pub const BENCH_STOP_AFTER_IFACE: u32 = 1;
/// Pass right after the clock read and the parse.
pub const BENCH_STOP_AFTER_PARSE: u32 = 2;
/// After the conntrack lookup: a tracked packet passes (not counted), an
/// untracked one passes unclassified.
pub const BENCH_STOP_AFTER_CONNTRACK: u32 = 3;
/// After classification: the verdict, without opening an entry and
/// without counters or events.
pub const BENCH_STOP_AFTER_CLASSIFY: u32 = 4;
/// The whole verdict (entries opened) without counters or events.
pub const BENCH_STOP_NO_ACCOUNTING: u32 = 5;
