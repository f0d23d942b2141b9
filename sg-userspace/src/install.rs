//! The apply pipeline, one for `sg attach`/`apply`/`detach` and for the
//! test bed (sg-testkit): a compiled policy set goes into the kernel as
//! rule slots assigned -> IDs reserved on disk -> `reuse::plan` (only what
//! changed is written) -> write + switch (undone on failure) -> state
//! recorded (the commit point) -> what is no longer in force removed.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context as _, Result};
use foldhash::{HashMap, HashMapExt as _};
use sg_common::IFACE_F_L3;

use crate::{
    adopt,
    compile::Compiled,
    config::Config,
    datapath::{Datapath, ids_of},
    state::{RuleRecord, State, StateDir},
};

/// Records on disk that IDs below `next_id` are taken, before any entry
/// with them is written: an apply killed after writing (or even switching)
/// must never see its IDs handed out again, or the next apply would
/// overwrite entries that packets are using. Once a state exists this is
/// a few bytes beside it (`StateDir::reserve`), not a second save of the
/// whole state; the first attach saves a state with no interface yet.
fn reserve_ids(dir: &StateDir, state: &State, next_id: u32, slots: &[u32]) -> Result<()> {
    // Rule slots too: a reused slot would add one rule's hits to another's.
    let next_slot = slots.iter().map(|s| s + 1).max().unwrap_or(0);
    if dir.has_state() {
        return dir.reserve(next_id, next_slot);
    }
    dir.save(&State {
        netns: state.netns,
        next_id: state.next_id.max(next_id),
        ct_max_entries: state.ct_max_entries,
        config_path: state.config_path.clone(),
        next_rule_slot: state.next_rule_slot.max(next_slot),
        ..State::default()
    })
}

/// Gives every rule of `compiled` its slot: the slot it had before if its
/// ID was in force, else a fresh one. Rewrites the match blocks' values from
/// compile positions to slots, so hit counters and the rules recorded in
/// tracked connections keep naming the same rule across applies.
fn assign_slots(state: &State, compiled: &Compiled) -> (Compiled, Vec<u32>) {
    // Rule ID -> its slot in force (a record of before slots: its position).
    let mut old: HashMap<&str, u32> = HashMap::with_capacity(state.rules.len());
    old.extend(
        state
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.as_str(), r.slot.unwrap_or(i as u32))),
    );
    let mut next = old
        .values()
        .map(|s| s + 1)
        .max()
        .unwrap_or(0)
        .max(state.next_rule_slot);
    let slots: Vec<u32> = compiled
        .rules
        .iter()
        .map(|r| {
            old.get(r.id.as_str()).copied().unwrap_or_else(|| {
                next += 1;
                next - 1
            })
        })
        .collect();
    let mut remapped = compiled.clone();
    remapped.renumber_rules(|rule| slots[rule as usize]);
    (remapped, slots)
}

/// Installs `compiled` and records it in `state`, all or nothing: the
/// state file saved with everything in it is the commit point. Any failure
/// before it (no room in a table, a map write, a switch, the save) puts
/// back every interface's policy and removes what this call wrote, and
/// only that. Clean-up after the commit only warns: the next apply
/// collects what it leaves. `compiled` binds interfaces of
/// `state.interfaces` (their ifindex and link kind come from there).
pub fn install(
    dir: &StateDir,
    dp: &mut Datapath,
    state: &mut State,
    compiled: &Compiled,
    config: &Config,
) -> Result<()> {
    install_adopting(dir, dp, state, compiled, config, &adopt::Request::default()).map(|_| ())
}

/// [`install`], and before the switch the interfaces of `adopt` adopt the
/// established connections the new policy allows (SPEC 4, `adopt`). The
/// adopted entries go if the switch fails; their counts are added to the
/// interfaces' state and returned.
pub fn install_adopting(
    dir: &StateDir,
    dp: &mut Datapath,
    state: &mut State,
    compiled: &Compiled,
    config: &Config,
    adopt: &adopt::Request,
) -> Result<BTreeMap<String, adopt::Count>> {
    let t = crate::phase::start("slots and reserve");
    let (compiled, slots) = assign_slots(state, compiled);
    reserve_ids(dir, state, compiled.next_id, &slots)?;
    drop(t);
    let t = crate::phase::start("plan");
    let ifindexes: BTreeMap<String, u32> = state
        .interfaces
        .iter()
        .map(|(n, i)| (n.clone(), i.ifindex))
        .collect();
    // The remapped copy is the plan's to map to installed IDs: no copy.
    let mut plan = crate::reuse::plan_owned(compiled, &state.installed);
    for (name, binding) in plan.write.ifaces.iter_mut() {
        if state.interfaces.get(name).is_some_and(|i| i.l3) {
            binding.flags |= IFACE_F_L3;
        }
    }
    // Reused IDs are live policy: a failed write must never remove them.
    let in_force: foldhash::HashSet<u32> = state.installed.ids().collect();
    let mut fresh = ids_of(&plan.write);
    fresh.retain(|id| !in_force.contains(id));
    drop(t);
    let t = crate::phase::start("adopt");
    let adopted = adopt::adopt(dp, state, &plan.write, &config.runtime_config(), adopt)?;
    drop(t);
    // No record of the hashes may outlive this apply's first write to
    // them: a failed or killed apply leaves none (`datapath/record.rs`).
    // Without one read ahead, the room check reads it if it is trusted.
    if !dp.has_prefetched() {
        dp.use_record(dir, state.keys_token.as_deref());
    }
    crate::datapath::forget_record(dir)?;
    let token = crate::datapath::new_record_token();
    let t = crate::phase::start("write and switch");
    let switched = dp.write_and_switch(
        &plan.write,
        &plan.tables,
        &fresh,
        &config.runtime_config(),
        |name| {
            ifindexes
                .get(name)
                .copied()
                .with_context(|| format!("compiled an interface that is not attached: {name}"))
        },
    );
    if switched.is_err() {
        adopt::undo(dp, &adopted.keys);
    }
    let undo = switched?;
    drop(t);
    let t = crate::phase::start("record");
    // `next` starts as `state` without its two big parts (the rule records
    // and the digests), which it replaces: cloning them costs more than
    // the rest of the record step.
    let rules = std::mem::take(&mut state.rules);
    let installed = std::mem::take(&mut state.installed);
    let mut next = state.clone();
    state.rules = rules;
    state.installed = installed;
    for (name, count) in &adopted.per_iface {
        if let Some(iface) = next.interfaces.get_mut(name) {
            iface.adopted += count.adopted;
        }
    }
    next.installed = std::mem::take(&mut plan.installed);
    next.last_written = plan.entries_written();
    for (name, binding) in &plan.write.ifaces {
        if let Some(iface) = next.interfaces.get_mut(name) {
            iface.ingress_policy = binding.ingress_policy;
            iface.egress_policy = binding.egress_policy;
        }
    }
    next.next_id = next.next_id.max(plan.write.next_id);
    next.next_rule_slot = slots
        .iter()
        .map(|s| s + 1)
        .max()
        .unwrap_or(0)
        .max(state.next_rule_slot);
    // The compiled rules are not needed past this point: moved, not copied.
    next.rules = std::mem::take(&mut plan.write.rules)
        .into_iter()
        .zip(&slots)
        .map(|(r, slot)| RuleRecord {
            slot: Some(*slot),
            id: r.id,
            group: r.group,
            direction: r.direction,
            index: r.index,
            description: r.description,
            nacl_action: r.nacl.map(|n| n.action.name().to_string()),
        })
        .collect();
    next.iface_nacls = plan
        .write
        .ifaces
        .iter()
        .filter_map(|(name, b)| {
            let p = plan
                .write
                .policies
                .iter()
                .find(|p| p.id == b.ingress_nacl)?;
            Some((name.clone(), p.nacl.clone()?))
        })
        .collect();
    // The commit: recorded before anything old is removed, so an apply
    // killed after the removal never leaves a state naming deleted IDs.
    drop(t);
    let t = crate::phase::start("state save");
    next.keys_token = Some(token.clone());
    if let Err(e) = dir.save_recorded(&next, &token) {
        if let Err(undo_err) = dp.undo(&undo) {
            eprintln!("warning: could not undo the switch: {undo_err:#}");
        }
        adopt::undo(dp, &adopted.keys);
        return Err(e);
    }
    crate::reclaim::later(std::mem::replace(state, next));
    drop(t);
    let t = crate::phase::start("remove stale");
    let removed = dp.remove_stale(|id| !plan.live.contains(&id), &plan.tables);
    drop(t);
    match removed {
        // What the hashes hold now: the next apply need not read them.
        Ok(kept) => {
            let _t = crate::phase::start("keys record");
            if let Err(e) = dp.save_record(dir, &token, &kept) {
                eprintln!("warning: the next apply reads the policy maps: {e:#}");
            }
        }
        Err(e) => {
            eprintln!("warning: old policy entries stay until the next apply: {e:#}")
        }
    }
    let t = crate::phase::start("sweep and hits");
    // The sweep timer collects expired entries every second; sweeping here
    // too makes the counts of a following `sg status` exact.
    if let Err(e) = crate::conntrack::sweep_expired(dp) {
        eprintln!("warning: conntrack garbage collection failed: {e:#}");
    }
    // Counters of rules that went: a connection they opened may still
    // count, and `sg stats` then shows its slot without a rule ID.
    let live: HashSet<u32> = slots.iter().copied().collect();
    if let Err(e) = dp.remove_rule_hits(|slot| !live.contains(&slot)) {
        eprintln!("warning: cannot clear hit counters of removed rules: {e:#}");
    }
    drop(t);
    crate::reclaim::later(plan);
    Ok(adopted.per_iface)
}
