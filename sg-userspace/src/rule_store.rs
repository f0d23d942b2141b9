//! Room for rule sets in `RULE_INTERVALS`. The array is shared by every
//! generation of rules: a new generation goes into space that no set in
//! force (or left by a killed apply) points at, so packets judged by the
//! old sets never see a half-written one.

use sg_common::RuleSpan;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no room for {needed} rule intervals ({in_use} of {capacity} in use): \
     the rule set is too large"
)]
pub struct Full {
    pub needed: u64,
    pub in_use: u64,
    pub capacity: u32,
}

/// The first index of each set of `sizes` intervals, each run inside free
/// space: outside every `used` span and below `capacity`. Runs are packed
/// in order, skipping gaps too small for the next run.
pub fn place(used: &[RuleSpan], sizes: &[u32], capacity: u32) -> Result<Vec<u32>, Full> {
    let mut spans: Vec<(u64, u64)> = used
        .iter()
        .map(|s| (u64::from(s.first), u64::from(s.first) + u64::from(s.len)))
        .collect();
    spans.sort_unstable();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut cursor = 0u64;
    for (start, end) in spans {
        if start > cursor {
            gaps.push((cursor, start.min(u64::from(capacity))));
        }
        cursor = cursor.max(end);
    }
    if cursor < u64::from(capacity) {
        gaps.push((cursor, u64::from(capacity)));
    }
    let full = || Full {
        needed: sizes.iter().map(|&s| u64::from(s)).sum(),
        in_use: used.iter().map(|s| u64::from(s.len)).sum(),
        capacity,
    };
    let mut out = Vec::with_capacity(sizes.len());
    let mut gap = 0;
    for &size in sizes {
        let size = u64::from(size);
        loop {
            let (start, end) = gaps.get_mut(gap).ok_or_else(full)?;
            if *end - *start >= size {
                out.push(*start as u32);
                *start += size;
                break;
            }
            gap += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first: u32, len: u32) -> RuleSpan {
        RuleSpan { first, len }
    }

    #[test]
    fn new_runs_avoid_every_span_in_use() {
        let used = [span(0, 4), span(10, 5), span(6, 2)];
        let placed = place(&used, &[2, 3, 1, 4], 30).unwrap();
        // Gaps: 4..6, 8..10, 15..30.
        assert_eq!(placed, vec![4, 15, 18, 19]);
        for (&first, &size) in placed.iter().zip(&[2u32, 3, 1, 4]) {
            for u in &used {
                let overlap = first < u.first + u.len && u.first < first + size;
                assert!(!overlap, "run {first}+{size} overlaps {u:?}");
            }
        }
    }

    #[test]
    fn a_full_array_is_an_error_not_an_overwrite() {
        let used = [span(0, 8)];
        let err = place(&used, &[1, 2], 10).unwrap_err();
        assert_eq!(
            err,
            Full {
                needed: 3,
                in_use: 8,
                capacity: 10
            }
        );
        assert!(
            err.to_string()
                .contains("no room for 3 rule intervals (8 of 10 in use)")
        );
        assert_eq!(place(&used, &[2], 10).unwrap(), vec![8]);
    }
}
