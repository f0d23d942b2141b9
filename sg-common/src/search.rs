//! The two searches of classification, shared by the datapath and the
//! userspace tests that check the compiler's tables against them. Each
//! takes its map lookups as a closure, so the same code runs over BPF maps
//! in the kernel and over plain tables in a test.

use crate::{
    PEER_F_LONGER, PEER_SEARCH_STEPS, PeerLengths, PeerNet, RULE_SEARCH_STEPS, RuleInterval,
    RuleRef, RuleSpan,
};

/// Binary search on prefix lengths over `lengths` (see [`PeerLengths`]):
/// `probe(len)` looks up the address masked to `len` bits. A hit on a
/// marker (or a prefix with longer ones inside) goes on to longer lengths,
/// a miss to shorter ones; each hit carries the class of the longest real
/// prefix that holds it, so the last class seen is the answer (0: none).
#[inline(always)]
pub fn longest_prefix_class<'a>(
    lengths: &PeerLengths,
    mut probe: impl FnMut(u8) -> Option<&'a PeerNet>,
) -> u32 {
    let mut best = 0;
    let mut node = 1u32;
    for _ in 0..PEER_SEARCH_STEPS {
        if node > lengths.count {
            break;
        }
        let Some(&len) = lengths.lens.get((node - 1) as usize) else {
            break;
        };
        match probe(len) {
            Some(net) => {
                if net.class != 0 {
                    best = net.class;
                }
                if net.flags & PEER_F_LONGER == 0 {
                    break;
                }
                node = 2 * node + 1;
            }
            None => node *= 2,
        }
    }
    best
}

/// The rule of the interval of `span` that holds `port`; `interval(i)`
/// reads entry `i` of the interval array. Each step adds `half` or nothing
/// through a mask rather than a branch, so the verifier sees one path per
/// step, and the step count is bounded.
#[inline(always)]
pub fn interval_rule<'a>(
    span: RuleSpan,
    port: u16,
    mut interval: impl FnMut(u32) -> Option<&'a RuleInterval>,
) -> Option<RuleRef> {
    if span.len == 0 {
        return None;
    }
    let port = port as u32;
    let mut base = span.first;
    let mut n = span.len;
    for _ in 0..RULE_SEARCH_STEPS {
        if n <= 1 {
            break;
        }
        let half = n / 2;
        let probe = interval(base.wrapping_add(half))?;
        // All ones when the probe starts after `port` (both are 16-bit, so
        // the subtraction borrows exactly then).
        let after = ((port.wrapping_sub(probe.lo as u32)) as i32 >> 31) as u32;
        base = base.wrapping_add(half & !after);
        n -= half;
    }
    let found = interval(base)?;
    if found.lo as u32 <= port && port <= found.hi as u32 {
        Some(found.rule)
    } else {
        None
    }
}
