//! The walk over `[groups]`: in file order, or on two threads when a large
//! file gave its tree in chunks (`parts` > 1), with the same result.
//!
//! Each thread walks a run of whole groups with its own warnings and rule
//! IDs; the halves are joined in file order. Anything that is not a clean
//! success (an error in a half, a rule ID in both halves) is walked again
//! in order, which yields the exact first error.

use std::collections::BTreeSet;

use toml::de::{DeTable, DeValue};

use super::Ctx;
use crate::config::{ConfigError, Group};

/// Fewer rules than this are walked on one thread (tests lower it).
pub(super) const MIN_PARALLEL_RULES: usize = 2000;

type Tables<'t, 'i> = [(String, &'t DeTable<'i>)];

impl Ctx<'_> {
    pub(super) fn groups(
        &mut self,
        tables: &Tables<'_, '_>,
        names: &BTreeSet<String>,
    ) -> Result<Vec<(String, Group)>, ConfigError> {
        if let Some(mid) = self.split(tables)
            && let Some(groups) = self.groups_in_parallel(tables, mid, names)
        {
            return Ok(groups);
        }
        self.groups_in_order(tables, names)
    }

    fn groups_in_order(
        &mut self,
        tables: &Tables<'_, '_>,
        names: &BTreeSet<String>,
    ) -> Result<Vec<(String, Group)>, ConfigError> {
        tables
            .iter()
            .map(|(name, t)| Ok((name.clone(), self.group(name, t, names)?)))
            .collect()
    }

    /// Where to cut `tables` into two runs of about as many rules, if it
    /// pays to.
    fn split(&self, tables: &Tables<'_, '_>) -> Option<usize> {
        if self.parts < 2 || tables.len() < 2 {
            return None;
        }
        let rules = |t: &DeTable<'_>| {
            ["ingress", "egress"]
                .iter()
                .filter_map(|k| match t.get(*k).map(|v| v.get_ref()) {
                    Some(DeValue::Array(a)) => Some(a.len()),
                    _ => None,
                })
                .sum::<usize>()
        };
        let counts: Vec<usize> = tables.iter().map(|(_, t)| rules(t)).collect();
        let total: usize = counts.iter().sum();
        if total < self.min_parallel_rules {
            return None;
        }
        let mut sum = 0;
        let mid = counts
            .iter()
            .position(|n| {
                sum += n;
                sum * 2 >= total
            })
            .map_or(1, |i| i + 1);
        (mid < tables.len()).then_some(mid)
    }

    /// The groups walked as two runs on two threads; `None` (and `self`
    /// untouched) if they did not both succeed with distinct rule IDs.
    fn groups_in_parallel(
        &mut self,
        tables: &Tables<'_, '_>,
        mid: usize,
        names: &BTreeSet<String>,
    ) -> Option<Vec<(String, Group)>> {
        let (first, second) = tables.split_at(mid);
        let (mut a, mut b) = (self.worker(), self.worker());
        let (ga, gb) = std::thread::scope(|s| {
            let gb = s.spawn(|| b.groups_in_order(second, names).ok());
            let ga = a.groups_in_order(first, names).ok();
            (ga, gb.join().ok().flatten())
        });
        let (mut groups, gb) = (ga?, gb?);
        let mut ids = self.rule_ids.clone();
        let mut lists = self.rule_lists;
        for half in [&mut a, &mut b] {
            for (id, mut seen) in half.rule_ids.drain() {
                seen.list += lists;
                if ids.insert(id, seen).is_some() {
                    return None;
                }
            }
            lists += half.rule_lists;
        }
        self.rule_ids = ids;
        self.rule_lists = lists;
        self.warnings.append(&mut a.warnings);
        self.warnings.append(&mut b.warnings);
        groups.extend(gb);
        Some(groups)
    }
}
