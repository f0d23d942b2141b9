//! Exact per-CPU counters: drops by interface, direction and reason, and
//! allowed packets and bytes by rule. Unlike the event ring, nothing here
//! is rate-limited or lost (but for a full map).

use aya_ebpf::bindings::BPF_NOEXIST;
use sg_common::{Direction, DropKey, DropRow, NO_RULE, Reason, RuleHits};

use crate::maps::{DROPS, DROPS_FAST, RULE_HITS};

/// Counts a packet (and its bytes) that `rule` allowed, exactly, per CPU.
#[inline(always)]
pub(crate) fn count_hit(rule: u32, len: u32) {
    if rule == NO_RULE {
        return;
    }
    match RULE_HITS.get_ptr_mut(&rule) {
        // Per-CPU value: no other CPU writes it.
        Some(hits) => unsafe {
            (*hits).packets += 1;
            (*hits).bytes += len as u64;
        },
        None => {
            let first = RuleHits {
                packets: 1,
                bytes: len as u64,
            };
            let _ = RULE_HITS.insert(&rule, &first, BPF_NOEXIST as u64);
        }
    }
}

/// `code` of [`count_drop`] and `emit_drop`: the reason, with this bit
/// for a would-be drop audit mode let pass (SPEC 10.2). One value rather
/// than two keeps the drop paths' live registers, and so the stack, lean.
pub(crate) const AUDITED: u8 = 0x80;

/// The `code` of an enforced drop for `reason`.
#[inline(always)]
pub(crate) const fn code(reason: Reason) -> u8 {
    reason as u8
}

/// Counts a dropped packet, exactly, per CPU, under `code` (the reason,
/// maybe with [`AUDITED`]: counted apart): in the interface's row of
/// `DROPS_FAST`, or in the `DROPS` hash when another interface holds it.
#[inline(always)]
pub(crate) fn count_drop(ifindex: u32, direction: Direction, code: u8) {
    let audit = code >> 7;
    let reason = code & !AUDITED;
    if let Some(row) = DROPS_FAST.get_ptr_mut(DropRow::row_of(ifindex)) {
        // Per-CPU row: no other CPU writes it, and it is this interface's
        // once claimed (ifindex 0: unclaimed).
        let row = unsafe { &mut *row };
        if row.ifindex == ifindex || row.ifindex == 0 {
            row.ifindex = ifindex;
            let cell = DropRow::cell(direction.code(), audit, reason);
            if let Some(count) = row.counts.get_mut(cell) {
                *count += 1;
                return;
            }
        }
    }
    let key = DropKey {
        ifindex,
        direction: direction.code(),
        reason,
        audit,
        _pad: 0,
    };
    match DROPS.get_ptr_mut(&key) {
        // Per-CPU value: no other CPU writes it.
        Some(counter) => unsafe { *counter += 1 },
        None => {
            // Lost race with another packet of this CPU is impossible; a
            // failure here (map full) only loses the counter, not the drop.
            let _ = DROPS.insert(&key, &1, BPF_NOEXIST as u64);
        }
    }
}
