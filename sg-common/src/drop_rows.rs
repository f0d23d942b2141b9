//! Drop counters by index (`DROPS_FAST`), in front of the `DROPS` hash.
//!
//! A flood of denied packets is what a host firewall must absorb, and a
//! per-CPU hash probe was a seventh of a drop's cost. So each CPU keeps a
//! row of counters per interface in an array, found by the low bits of the
//! ifindex and tagged with the whole ifindex: the first interface to drop
//! a packet on a CPU claims the row there; another interface whose index
//! lands on a row already claimed counts in the hash, as before. Readers
//! add both (`DropRow::counts_by_key`), so the totals stay exact.

use crate::DropKey;

/// Rows per CPU (a power of two: the row is `ifindex & (DROP_ROWS - 1)`).
pub const DROP_ROWS: u32 = 256;
/// Counters in a row: direction (1 bit), audit (1 bit), reason (3 bits).
pub const DROP_ROW_CELLS: usize = 32;

const _: () = assert!(crate::REASON_MAX as usize <= 8);
const _: () = assert!(DROP_ROWS.is_power_of_two());

/// One CPU's drop counters of one interface. `ifindex` 0 (no interface
/// has it) marks a row no interface has claimed yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropRow {
    pub ifindex: u32,
    pub _pad: u32,
    pub counts: [u64; DROP_ROW_CELLS],
}

impl Default for DropRow {
    fn default() -> Self {
        DropRow {
            ifindex: 0,
            _pad: 0,
            counts: [0; DROP_ROW_CELLS],
        }
    }
}

impl DropRow {
    /// The row an interface's drops go to.
    #[inline(always)]
    pub const fn row_of(ifindex: u32) -> u32 {
        ifindex & (DROP_ROWS - 1)
    }

    /// The counter of a direction code, audit bit and reason code.
    #[inline(always)]
    pub const fn cell(direction: u8, audit: u8, reason: u8) -> usize {
        ((direction as usize & 1) << 4) | ((audit as usize & 1) << 3) | (reason as usize & 7)
    }

    /// The non-zero counters of this row, as the hash would key them.
    pub fn counts_by_key(&self) -> impl Iterator<Item = (DropKey, u64)> + '_ {
        let ifindex = self.ifindex;
        self.counts
            .iter()
            .enumerate()
            .filter(move |&(_, &n)| n != 0 && ifindex != 0)
            .map(move |(cell, &n)| {
                let key = DropKey {
                    ifindex,
                    direction: (cell >> 4) as u8,
                    reason: (cell & 7) as u8,
                    audit: ((cell >> 3) & 1) as u8,
                    _pad: 0,
                };
                (key, n)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cell_reads_back_as_the_key_it_counts() {
        for direction in 0..2u8 {
            for audit in 0..2u8 {
                for reason in 1..crate::REASON_MAX {
                    let mut row = DropRow {
                        ifindex: 7,
                        ..DropRow::default()
                    };
                    row.counts[DropRow::cell(direction, audit, reason)] = 3;
                    let mut got = row.counts_by_key();
                    let want = DropKey {
                        ifindex: 7,
                        direction,
                        reason,
                        audit,
                        _pad: 0,
                    };
                    assert_eq!(got.next(), Some((want, 3)));
                    assert_eq!(got.next(), None);
                }
            }
        }
        assert_eq!(DropRow::default().counts_by_key().count(), 0);
        assert_eq!(DropRow::row_of(256 + 5), 5);
    }
}
