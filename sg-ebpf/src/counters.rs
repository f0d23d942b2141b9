//! Exact per-CPU counters: drops by interface, direction and reason, and
//! allowed packets and bytes by rule. Unlike the event ring, nothing here
//! is rate-limited or lost (but for a full map).

use aya_ebpf::bindings::BPF_NOEXIST;
use sg_common::{Direction, DropKey, NO_RULE, Reason, RuleHits};

use crate::maps::{DROPS, RULE_HITS};

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

/// Counts a dropped packet, exactly, per CPU; `audit` (0 or 1): a
/// would-be drop audit mode let pass, counted apart.
#[inline(always)]
pub(crate) fn count_drop(ifindex: u32, direction: Direction, reason: Reason, audit: u8) {
    let key = DropKey {
        ifindex,
        direction: direction.code(),
        reason: reason as u8,
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
