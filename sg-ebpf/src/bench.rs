//! The benchmark's stop points (`sg_common::BENCH_STOP_*`): `sg` leaves the
//! global at 0, and the verifier, which sees read-only data, drops every
//! check below from the program it runs.

use sg_common::BENCH_STOP_NONE;

#[unsafe(no_mangle)]
static SG_BENCH_STOP: u32 = BENCH_STOP_NONE;

/// The step this variant of the program stops after.
#[inline(always)]
pub(crate) fn stop() -> u32 {
    // Volatile: the compiler must not fold the default value in.
    unsafe { core::ptr::read_volatile(&SG_BENCH_STOP) }
}
