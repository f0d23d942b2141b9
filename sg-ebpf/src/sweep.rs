//! Expiry sweeps off the packet path (SPEC 1.13): a BPF timer walks
//! CONNTRACK and FRAGMENTS every `SWEEP_PERIOD_NS` and deletes dead
//! entries. No packet ever waits for a table walk.
//!
//! The timer lives in the pinned `SWEEPER` map and holds a reference to
//! its program, so it keeps firing after `sg` exits, for as long as the
//! pins exist. The loader arms it by running `sg_sweep_arm` once
//! (BPF_PROG_TEST_RUN); arming again only replaces the callback's program.

use aya_ebpf::{
    bindings::{bpf_timer, xdp_action},
    btf_maps::Array,
    cty::c_void,
    helpers::{
        bpf_for_each_map_elem, bpf_ktime_get_coarse_ns, bpf_map_delete_elem, bpf_timer_init,
        bpf_timer_set_callback, bpf_timer_start,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use sg_common::{CtKey, CtValue, FragKey, SWEEP_PERIOD_NS};

use crate::maps::{CONNTRACK, FRAGMENTS};

/// The timer's clock. Expiries are `CLOCK_MONOTONIC_COARSE`
/// (`bpf_ktime_get_coarse_ns`), the same clock at a tick's resolution.
const CLOCK_MONOTONIC: u64 = 1;

/// The value of `SWEEPER`. The kernel finds the timer through the map's
/// BTF: the field's type must be the C `struct bpf_timer`.
#[repr(C)]
pub(crate) struct Sweeper {
    timer: bpf_timer,
}

#[btf_map(pin_by_name)]
static SWEEPER: Array<Sweeper, 1> = Array::new();

/// What the per-entry callbacks see. Read only: a callback that changed it
/// would make the verifier walk the iterations one by one.
#[repr(C)]
struct SweepCtx {
    now: u64,
}

/// `bpf_for_each_map_elem` callback: deletes a connection that has expired.
#[inline(never)]
extern "C" fn expired_connection(
    map: *mut c_void,
    key: *const CtKey,
    value: *const CtValue,
    ctx: *const SweepCtx,
) -> i64 {
    unsafe {
        if (*value).expires_ns < (*ctx).now {
            bpf_map_delete_elem(map, key as *const c_void);
        }
    }
    0
}

/// `bpf_for_each_map_elem` callback: deletes a first fragment whose
/// followers may no longer come.
#[inline(never)]
extern "C" fn expired_fragment(
    map: *mut c_void,
    key: *const FragKey,
    expires: *const u64,
    ctx: *const SweepCtx,
) -> i64 {
    unsafe {
        if *expires < (*ctx).now {
            bpf_map_delete_elem(map, key as *const c_void);
        }
    }
    0
}

/// The timer's callback: one sweep, then re-arm. Runs in the timer's own
/// softirq, never inside a packet's verdict.
#[inline(never)]
extern "C" fn sweep(_map: *mut c_void, _key: *const u32, sweeper: *mut Sweeper) -> i32 {
    let ctx = SweepCtx {
        now: unsafe { bpf_ktime_get_coarse_ns() },
    };
    unsafe {
        bpf_for_each_map_elem(
            &CONNTRACK as *const _ as *mut c_void,
            expired_connection as *mut c_void,
            &ctx as *const SweepCtx as *mut c_void,
            0,
        );
        bpf_for_each_map_elem(
            &FRAGMENTS as *const _ as *mut c_void,
            expired_fragment as *mut c_void,
            &ctx as *const SweepCtx as *mut c_void,
            0,
        );
        bpf_timer_start(&mut (*sweeper).timer, SWEEP_PERIOD_NS, 0);
    }
    0
}

/// Arms the sweep timer; run once by the loader, never attached. Returns
/// `XDP_PASS` when the timer runs, `XDP_ABORTED` when a helper failed.
#[xdp]
pub(crate) fn sg_sweep_arm(_ctx: XdpContext) -> u32 {
    let Some(sweeper) = SWEEPER.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    unsafe {
        let timer = &mut (*sweeper).timer as *mut bpf_timer;
        // -EBUSY: armed by an earlier load; the timer is reused.
        let _ = bpf_timer_init(timer, &SWEEPER as *const _ as *mut c_void, CLOCK_MONOTONIC);
        if bpf_timer_set_callback(timer, sweep as *mut c_void) != 0 {
            return xdp_action::XDP_ABORTED;
        }
        if bpf_timer_start(timer, SWEEP_PERIOD_NS, 0) != 0 {
            return xdp_action::XDP_ABORTED;
        }
    }
    xdp_action::XDP_PASS
}
