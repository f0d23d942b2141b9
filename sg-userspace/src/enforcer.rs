//! The operations behind `sg attach`, `apply` and `detach`: config in,
//! kernel state out, all or nothing.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    adopt,
    compile::{Attachment, Compiled, compile_attached},
    config::{self, Config, Loaded},
    datapath::{AttachMode, Datapath, detach_links},
    ifaces,
    install::{install, install_adopting},
    netns,
    state::{AttachedIface, State, StateDir},
};

/// Reads and checks a config file, printing its warnings.
pub fn load_config(path: &Path) -> Result<Config> {
    let Loaded { config, warnings } = config::load(path)?;
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    Ok(config)
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

pub struct AttachRequest<'a> {
    pub iface: &'a str,
    pub config_path: &'a Path,
    pub groups: Option<Vec<String>>,
    pub mode: AttachMode,
}

/// What `sg attach` did.
#[derive(Debug)]
pub struct Attached {
    /// How ingress is hooked (`AttachedIface::xdp_mode`).
    pub mode: String,
    /// The established connections it adopted (SPEC 4).
    pub adopted: adopt::Count,
}

/// `sg attach`: enforce groups on an interface, adopting the connections
/// already established through it that the policy allows.
pub fn attach(dir: &StateDir, req: &AttachRequest) -> Result<Attached> {
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
            adopted: previous.as_ref().map_or(0, |p| p.adopted),
        },
    );
    refresh_groups(&config, &mut state, req.iface)?;
    state.config_path = Some(absolute(req.config_path));
    let compiled = compile_attached(&config, &attachments(&state.interfaces)?, state.next_id)?;

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
    let adopt = adopt::Request {
        ifaces: vec![req.iface.to_string()],
    };
    let adopted = match install_adopting(dir, &mut dp, &mut state, &compiled, &config, &adopt) {
        Ok(adopted) => adopted,
        Err(e) => {
            if newly_attached {
                let _ = detach_links(dir, req.iface);
                let _ = dp.forget_iface(ifindex);
            }
            return Err(e);
        }
    };
    crate::confirm::record_in_force(dir, req.config_path);
    Ok(Attached {
        mode: state.interfaces[req.iface].xdp_mode.clone(),
        adopted: adopted.get(req.iface).copied().unwrap_or_default(),
    })
}

/// `sg attach --all -c FILE`: every interface FILE names in
/// `[interfaces.NAME]`, in name order (what `sg-apply.service` runs at
/// boot, when bpffs is empty). Returns each interface with its hook and adoptions; stops
/// at the first failure, leaving those before it attached.
pub fn attach_all(
    dir: &StateDir,
    config_path: &Path,
    mode: AttachMode,
) -> Result<Vec<(String, Attached)>> {
    let Loaded { config, .. } = config::load(config_path)?;
    if config.interfaces.is_empty() {
        bail!(
            "{} names no interface: add [interfaces.NAME] sections, or `sg attach IFACE -c FILE --groups a,b`",
            config_path.display()
        );
    }
    let mut done = Vec::new();
    for name in config.interfaces.keys() {
        let req = AttachRequest {
            iface: name,
            config_path,
            groups: None,
            mode,
        };
        let hook = attach(dir, &req).with_context(|| {
            let attached: Vec<&str> = done
                .iter()
                .map(|(n, _): &(String, Attached)| n.as_str())
                .collect();
            format!(
                "cannot attach {name} (attached so far: {})",
                if attached.is_empty() {
                    "none".to_string()
                } else {
                    attached.join(", ")
                }
            )
        })?;
        done.push((name.clone(), hook));
    }
    Ok(done)
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
    /// Per interface, the established connections this apply adopted
    /// (SPEC 4): those the new policy allows that had no tracked entry.
    pub adopted: BTreeMap<String, adopt::Count>,
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
    apply_checked(dir, config_path, dry_run, None)
}

/// [`apply`] run by an operator: with `ssh_check` (whether `--confirm`
/// protects the change), it warns before changing anything if the new
/// policy drops the SSH session running it (SPEC 10.3), judged over the
/// apply's own parse and compile.
pub fn apply_checked(
    dir: &StateDir,
    config_path: &Path,
    dry_run: bool,
    ssh_check: Option<bool>,
) -> Result<ApplyReport> {
    let _lock = dir.lock()?;
    // A second thread reads what is in force while this one parses the
    // config (the longest step): the state, then, unless this is a dry
    // run, the pinned maps (BTF, one object load) and what the room check
    // of the write needs. All of it only reads: a bad config still changes
    // nothing (the open creates only pins that are missing, as any read
    // command does).
    let (config, in_force) = std::thread::scope(|s| {
        let in_force = s.spawn(|| -> Result<Option<(State, Option<Datapath>)>> {
            let state = {
                let _t = crate::phase::start("state load");
                dir.load()?
            };
            let Some(state) = state else {
                return Ok(None);
            };
            if dry_run {
                return Ok(Some((state, None)));
            }
            let mut dp = {
                let _t = crate::phase::start("maps open");
                Datapath::open(dir, state.ct_max_entries)?
            };
            let _t = crate::phase::start("room read");
            dp.read_room_recorded(dir, state.keys_token.as_deref())?;
            Ok(Some((state, Some(dp))))
        });
        let config = {
            let _t = crate::phase::start("config parse");
            load_config(config_path)
        };
        let in_force = in_force
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (config, in_force)
    });
    let config = config?;
    let Some((mut state, dp)) = in_force? else {
        bail!(
            "nothing is attached under {}; run `sg attach IFACE -c FILE` first",
            dir.pins.display()
        );
    };
    // What the report compares with: the groups before the refresh (the
    // rules in force stay in `state.rules` until `install`).
    let groups_before: BTreeMap<String, Vec<String>> = state
        .interfaces
        .iter()
        .map(|(name, iface)| (name.clone(), iface.groups.clone()))
        .collect();
    let compiled = {
        let _t = crate::phase::start("compile");
        refresh_and_compile(&config, &mut state)
    };
    let compiled = compiled?;
    if let Some(confirm) = ssh_check {
        crate::lockout::warn_compiled(dir, &config, &compiled, confirm);
    }
    let report = diff(&groups_before, &state, &compiled);
    let Some(mut dp) = dp else {
        return Ok(report);
    };
    if config.conntrack.max_entries != state.ct_max_entries {
        eprintln!(
            "warning: [conntrack] max_entries changes take effect after `sg detach --all` and a new attach (now {})",
            state.ct_max_entries
        );
    }
    state.config_path = Some(absolute(config_path));
    // Every interface adopts: a connection the old policy left untracked
    // (or never saw open) and the new one restricts would be cut.
    let adopt = adopt::Request {
        ifaces: state.interfaces.keys().cloned().collect(),
    };
    let adopted = install_adopting(dir, &mut dp, &mut state, &compiled, &config, &adopt)?;
    crate::confirm::record_in_force(dir, config_path);
    let entries_written = Some(state.last_written);
    crate::reclaim::later((config, state, compiled));
    Ok(ApplyReport {
        entries_written,
        adopted,
        ..report
    })
}

/// Refreshes each interface's groups, index and link kind under `config`,
/// then compiles what the interfaces enforce.
fn refresh_and_compile(config: &Config, state: &mut State) -> Result<Compiled> {
    refresh_groups(config, state, "")?;
    for (name, iface) in state.interfaces.iter_mut() {
        iface.ifindex = ifaces::index(name)?;
        // A name may now be another device, of another kind.
        let link = ifaces::link_kind(name)?;
        iface.link = link.name.to_string();
        iface.l3 = link.l3;
    }
    Ok(compile_attached(
        config,
        &attachments(&state.interfaces)?,
        state.next_id,
    )?)
}

/// `after` is the state with its groups refreshed and its rules still
/// those in force; `groups_before`, each interface's groups before.
fn diff(
    groups_before: &BTreeMap<String, Vec<String>>,
    after: &State,
    compiled: &Compiled,
) -> ApplyReport {
    use std::collections::BTreeSet;
    let old: BTreeSet<&str> = after.rules.iter().map(|r| r.id.as_str()).collect();
    let new: BTreeSet<&str> = compiled.rules.iter().map(|r| r.id.as_str()).collect();
    ApplyReport {
        interfaces: after
            .interfaces
            .iter()
            .map(|(name, iface)| IfaceChange {
                iface: name.clone(),
                groups_before: groups_before.get(name).cloned().unwrap_or_default(),
                groups_after: iface.groups.clone(),
            })
            .collect(),
        rules_added: new.difference(&old).map(|s| s.to_string()).collect(),
        rules_removed: old.difference(&new).map(|s| s.to_string()).collect(),
        rule_count: compiled.rules.len(),
        entries_written: None,
        adopted: BTreeMap::new(),
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
        Some(name) => return Err(state.not_attached(name)),
        None => {
            // Everything goes, maps too: no need to open them, which fails
            // when another sg version pinned them (and then this is the
            // way out).
            let names: Vec<String> = state.interfaces.into_keys().collect();
            for name in &names {
                detach_links(dir, name)?;
            }
            dir.remove_all()?;
            return Ok(names);
        }
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
            let compiled =
                compile_attached(&config, &attachments(&state.interfaces)?, state.next_id)?;
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
