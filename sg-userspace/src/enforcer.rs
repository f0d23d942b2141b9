//! The operations behind `sg attach`, `apply` and `detach`: config in,
//! kernel state out, all or nothing.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use sg_common::{IFACE_F_L3, RuntimeConfig};

use crate::{
    compile::{Attachment, Compiled, compile},
    config::{self, Config, Loaded},
    datapath::{AttachMode, Datapath, detach_links, ids_of},
    ifaces, netns,
    state::{AttachedIface, RuleRecord, State, StateDir},
};

/// Reads and checks a config file, printing its warnings.
pub fn load_config(path: &Path) -> Result<Config> {
    let Loaded { config, warnings } = config::load(path)?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    Ok(config)
}

pub fn runtime_config(config: &Config) -> RuntimeConfig {
    config.runtime_config()
}

/// Groups of an attached interface under `config`: `[interfaces.NAME]`
/// wins; otherwise the `--groups` given at attach time stay.
fn groups_for(config: &Config, name: &str, iface: &AttachedIface) -> Result<(Vec<String>, bool)> {
    if let Some(section) = config.interfaces.get(name) {
        return Ok((section.groups.clone(), false));
    }
    if iface.groups_from_cli {
        return Ok((iface.groups.clone(), true));
    }
    bail!(
        "interface {name} is attached but the config has no [interfaces.{name}]; add it, or `sg detach {name}`"
    )
}

fn attachments(interfaces: &BTreeMap<String, AttachedIface>) -> Result<Vec<Attachment>> {
    interfaces
        .iter()
        .map(|(name, iface)| {
            Ok(Attachment {
                iface: name.clone(),
                groups: iface.groups.clone(),
                addrs: ifaces::addresses(name)?,
            })
        })
        .collect()
}

/// Records on disk that IDs below `next_id` are taken, before any entry
/// with them is written: an apply killed after writing (or even switching)
/// must never see its IDs handed out again, or the next apply would
/// overwrite entries that packets are using.
fn reserve_ids(dir: &StateDir, state: &State, next_id: u32, slots: &[u32]) -> Result<()> {
    let mut on_disk = dir.load()?.unwrap_or_else(|| State {
        interfaces: Default::default(),
        rules: Vec::new(),
        ..state.clone()
    });
    on_disk.next_id = on_disk.next_id.max(next_id);
    // Rule slots too: a reused slot would add one rule's hits to another's.
    let next_slot = slots.iter().map(|s| s + 1).max().unwrap_or(0);
    on_disk.next_rule_slot = on_disk.next_rule_slot.max(next_slot);
    dir.save(&on_disk)
}

/// Gives every rule of `compiled` its slot: the slot it had before if its
/// ID was in force, else a fresh one. Makes the intervals name slots instead
/// of compile positions, so hit counters and the rules recorded in
/// tracked connections keep naming the same rule across applies.
fn assign_slots(state: &State, compiled: &Compiled) -> (Compiled, Vec<u32>) {
    let old: BTreeMap<&str, u32> = state
        .rules_by_slot()
        .into_iter()
        .map(|(slot, r)| (r.id.as_str(), slot))
        .collect();
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
/// collects what it leaves.
fn install(
    dir: &StateDir,
    dp: &mut Datapath,
    state: &mut State,
    compiled: &Compiled,
    config: &Config,
) -> Result<()> {
    let (compiled, slots) = assign_slots(state, compiled);
    let compiled = &compiled;
    reserve_ids(dir, state, compiled.next_id, &slots)?;
    let ifindexes: BTreeMap<String, u32> = state
        .interfaces
        .iter()
        .map(|(n, i)| (n.clone(), i.ifindex))
        .collect();
    let mut plan = crate::reuse::plan(compiled, &state.installed);
    for (name, binding) in plan.write.ifaces.iter_mut() {
        if state.interfaces.get(name).is_some_and(|i| i.l3) {
            binding.flags |= IFACE_F_L3;
        }
    }
    // Reused IDs are live policy: a failed write must never remove them.
    let in_force: HashSet<u32> = state
        .installed
        .classes
        .values()
        .chain(state.installed.policies.values())
        .copied()
        .collect();
    let fresh: HashSet<u32> = ids_of(&plan.write).difference(&in_force).copied().collect();
    let undo = dp.write_and_switch(
        &plan.write,
        &plan.tables,
        &fresh,
        &runtime_config(config),
        |name| {
            ifindexes
                .get(name)
                .copied()
                .with_context(|| format!("compiled an interface that is not attached: {name}"))
        },
    )?;
    let mut next = state.clone();
    next.installed = plan.installed.clone();
    next.last_written = plan.entries_written();
    for (name, binding) in &plan.write.ifaces {
        if let Some(iface) = next.interfaces.get_mut(name) {
            iface.ingress_policy = binding.ingress_policy;
            iface.egress_policy = binding.egress_policy;
        }
    }
    next.next_id = next.next_id.max(compiled.next_id);
    next.next_rule_slot = slots
        .iter()
        .map(|s| s + 1)
        .max()
        .unwrap_or(0)
        .max(state.next_rule_slot);
    next.rules = compiled
        .rules
        .iter()
        .zip(&slots)
        .map(|(r, slot)| RuleRecord {
            slot: Some(*slot),
            id: r.id.clone(),
            group: r.group.clone(),
            direction: r.direction,
            index: r.index,
            description: r.description.clone(),
        })
        .collect();
    // The commit: recorded before anything old is removed, so an apply
    // killed after the removal never leaves a state naming deleted IDs.
    if let Err(e) = dir.save(&next) {
        if let Err(undo_err) = dp.undo(&undo) {
            eprintln!("warning: could not undo the switch: {undo_err:#}");
        }
        return Err(e);
    }
    *state = next;
    if let Err(e) = dp.remove_entries(|id| !plan.live.contains(&id)) {
        eprintln!("warning: old policy entries stay until the next apply: {e:#}");
    }
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
    Ok(())
}

pub struct AttachRequest<'a> {
    pub iface: &'a str,
    pub config_path: &'a Path,
    pub groups: Option<Vec<String>>,
    pub mode: AttachMode,
}

/// `sg attach`: enforce groups on an interface. Returns the XDP mode.
pub fn attach(dir: &StateDir, req: &AttachRequest) -> Result<String> {
    let config = load_config(req.config_path)?;
    let (groups, from_cli) = match (&req.groups, config.interfaces.get(req.iface)) {
        (Some(groups), _) => (groups.clone(), true),
        (None, Some(section)) => (section.groups.clone(), false),
        (None, None) => bail!(
            "no groups for {}: pass --groups a,b or add [interfaces.{}] to {}",
            req.iface,
            req.iface,
            req.config_path.display()
        ),
    };
    for group in &groups {
        if !config.groups.contains_key(group) {
            bail!(
                "unknown group {group:?} for {}; defined groups: {}",
                req.iface,
                group_list(&config)
            );
        }
    }
    let ifindex = ifaces::index(req.iface)?;
    // Before anything is written: a kind sg cannot parse is refused.
    let link = ifaces::link_kind(req.iface)?;
    let _lock = dir.lock()?;
    let mut state = match dir.load()? {
        Some(state) => state,
        None => State {
            netns: netns::current_id()?,
            next_id: 1,
            ct_max_entries: config.conntrack.max_entries,
            ..State::default()
        },
    };
    let newly_attached = !state.interfaces.contains_key(req.iface);
    let previous = state.interfaces.get(req.iface).cloned();
    state.interfaces.insert(
        req.iface.to_string(),
        AttachedIface {
            ifindex,
            groups,
            groups_from_cli: from_cli,
            xdp_mode: previous
                .as_ref()
                .map(|p| p.xdp_mode.clone())
                .unwrap_or_default(),
            ingress_policy: 0,
            egress_policy: 0,
            link: link.name.to_string(),
            l3: link.l3,
        },
    );
    refresh_groups(&config, &mut state, req.iface)?;
    state.config_path = Some(absolute(req.config_path));
    let compiled = compile(&config, &attachments(&state.interfaces)?, state.next_id)?;

    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    if newly_attached {
        // Until `install` switches it, an interface without a policy entry
        // passes everything, exactly as it did before.
        let mode = dp.attach(dir, req.iface, ifindex, req.mode)?;
        state
            .interfaces
            .get_mut(req.iface)
            .expect("inserted above")
            .xdp_mode = mode.to_string();
    }
    if let Err(e) = install(dir, &mut dp, &mut state, &compiled, &config) {
        if newly_attached {
            let _ = detach_links(dir, req.iface);
            let _ = dp.forget_iface(ifindex);
        }
        return Err(e);
    }
    Ok(state.interfaces[req.iface].xdp_mode.clone())
}

/// Re-reads every attached interface's groups from `config`, except `keep`.
fn refresh_groups(config: &Config, state: &mut State, keep: &str) -> Result<()> {
    let names: Vec<String> = state.interfaces.keys().cloned().collect();
    for name in names {
        if name == keep {
            continue;
        }
        let iface = &state.interfaces[&name];
        let (groups, from_cli) = groups_for(config, &name, iface)?;
        let iface = state.interfaces.get_mut(&name).expect("listed above");
        iface.groups = groups;
        iface.groups_from_cli = from_cli;
    }
    Ok(())
}

fn group_list(config: &Config) -> String {
    config.groups.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// What `apply` changed or, with `--dry-run`, would change.
#[derive(Debug, Default, serde::Serialize)]
pub struct ApplyReport {
    pub interfaces: Vec<IfaceChange>,
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
    pub rule_count: usize,
    /// Map entries written (not with `--dry-run`): only what changed.
    pub entries_written: Option<usize>,
}

#[derive(Debug, serde::Serialize)]
pub struct IfaceChange {
    pub iface: String,
    pub groups_before: Vec<String>,
    pub groups_after: Vec<String>,
}

/// `sg apply`: move every attached interface to `config_path`, atomically
/// per interface, with no packet judged by a mix of old and new rules.
pub fn apply(dir: &StateDir, config_path: &Path, dry_run: bool) -> Result<ApplyReport> {
    let config = load_config(config_path)?;
    let _lock = dir.lock()?;
    let Some(mut state) = dir.load()? else {
        bail!(
            "nothing is attached under {}; run `sg attach IFACE -c FILE` first",
            dir.pins.display()
        );
    };
    let before = state.clone();
    refresh_groups(&config, &mut state, "")?;
    for (name, iface) in state.interfaces.iter_mut() {
        iface.ifindex = ifaces::index(name)?;
        // A name may now be another device, of another kind.
        let link = ifaces::link_kind(name)?;
        iface.link = link.name.to_string();
        iface.l3 = link.l3;
    }
    let compiled = compile(&config, &attachments(&state.interfaces)?, state.next_id)?;
    let report = diff(&before, &state, &compiled);
    if dry_run {
        return Ok(report);
    }
    if config.conntrack.max_entries != state.ct_max_entries {
        eprintln!(
            "warning: [conntrack] max_entries changes take effect after `sg detach --all` and a new attach (now {})",
            state.ct_max_entries
        );
    }
    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    state.config_path = Some(absolute(config_path));
    install(dir, &mut dp, &mut state, &compiled, &config)?;
    Ok(ApplyReport {
        entries_written: Some(state.last_written),
        ..report
    })
}

fn diff(before: &State, after: &State, compiled: &Compiled) -> ApplyReport {
    use std::collections::BTreeSet;
    let old: BTreeSet<&str> = before.rules.iter().map(|r| r.id.as_str()).collect();
    let new: BTreeSet<&str> = compiled.rules.iter().map(|r| r.id.as_str()).collect();
    ApplyReport {
        interfaces: after
            .interfaces
            .iter()
            .map(|(name, iface)| IfaceChange {
                iface: name.clone(),
                groups_before: before
                    .interfaces
                    .get(name)
                    .map(|i| i.groups.clone())
                    .unwrap_or_default(),
                groups_after: iface.groups.clone(),
            })
            .collect(),
        rules_added: new.difference(&old).map(|s| s.to_string()).collect(),
        rules_removed: old.difference(&new).map(|s| s.to_string()).collect(),
        rule_count: compiled.rules.len(),
        entries_written: None,
    }
}

/// `sg detach`: stop enforcing on `iface`, or on every interface.
pub fn detach(dir: &StateDir, iface: Option<&str>) -> Result<Vec<String>> {
    let _lock = dir.lock()?;
    let loaded = match dir.load() {
        Err(e) if iface.is_none() => match e.downcast_ref::<crate::state::ForeignNetns>() {
            // Its namespace is gone, and its interfaces with it (their
            // links went when they did): only pins and state are left.
            Some(foreign) if !crate::netns::exists(foreign.netns) => {
                let state = dir.load_any_netns()?.unwrap_or_default();
                dir.remove_all()?;
                return Ok(state.interfaces.into_keys().collect());
            }
            _ => return Err(e),
        },
        other => other?,
    };
    let Some(mut state) = loaded else {
        if iface.is_none() {
            // Nothing recorded; still clear stray pins of a crashed attach.
            dir.remove_all()?;
            return Ok(Vec::new());
        }
        bail!("nothing is attached under {}", dir.pins.display());
    };
    let names: Vec<String> = match iface {
        Some(name) if state.interfaces.contains_key(name) => vec![name.to_string()],
        Some(name) => bail!(
            "{name} is not attached; attached: {}",
            state
                .interfaces
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => state.interfaces.keys().cloned().collect(),
    };
    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    for name in &names {
        detach_links(dir, name)?;
        let iface = state.interfaces.remove(name).expect("checked above");
        dp.forget_iface(iface.ifindex)?;
    }
    if state.interfaces.is_empty() {
        drop(dp);
        dir.remove_all()?;
        return Ok(names);
    }
    // The detached interfaces' addresses leave their groups' membership.
    if let Some(path) = state.config_path.clone() {
        match load_config(&path).and_then(|config| {
            refresh_groups(&config, &mut state, "")?;
            let compiled = compile(&config, &attachments(&state.interfaces)?, state.next_id)?;
            install(dir, &mut dp, &mut state, &compiled, &config)
        }) {
            Ok(()) => {}
            Err(e) => eprintln!(
                "warning: kept the previous rules on the other interfaces: {} no longer applies: {e:#}",
                path.display()
            ),
        }
    }
    dir.save(&state)?;
    Ok(names)
}
