//! What sg remembers between invocations.
//!
//! Pins live in the state dir on bpffs, which holds nothing but pins and
//! directories; the rest (attached interfaces, the rule table) is JSON in a
//! sibling directory under /run, which lives exactly as long as bpffs pins:
//! until reboot.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Default root of the metadata directories.
const RUN_DIR: &str = "/run/sg";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// Network namespace the state belongs to: ifindexes mean nothing elsewhere.
    pub netns: u64,
    /// First policy/class ID not yet used. Every compile takes fresh IDs;
    /// `reuse` gives unchanged classes and policies their installed ones.
    pub next_id: u32,
    /// Conntrack capacity the maps were created with.
    pub ct_max_entries: u32,
    /// The config file last applied.
    pub config_path: Option<PathBuf>,
    pub interfaces: BTreeMap<String, AttachedIface>,
    /// Content digests of the installed classes and policies, so the next
    /// apply rewrites only what changed.
    #[serde(default)]
    pub installed: crate::reuse::Installed,
    /// Map entries the last attach or apply wrote.
    #[serde(default)]
    pub last_written: usize,
    /// Every rule in force; `RuleRecord::slot` is the `RuleRef` value the
    /// rule intervals hold for it.
    pub rules: Vec<RuleRecord>,
    /// First rule slot never handed out. Slots are never reused, so a hit
    /// counter (or a tracked connection's rule) always names one rule.
    #[serde(default)]
    pub next_rule_slot: u32,
    /// Interface -> the NACL it enforces (SPEC 2), for those that have one.
    #[serde(default)]
    pub iface_nacls: BTreeMap<String, String>,
    /// The token of the keys record (`datapath/record.rs`) that describes
    /// the policy hashes, as read from the file. Never written by
    /// [`StateDir::save`]: only the commit save of an apply that goes with
    /// a record writes one ([`StateDir::save_recorded`]), so any other save
    /// (detach, an older `sg`) leaves the record untrusted.
    #[serde(default, skip_serializing)]
    pub keys_token: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttachedIface {
    pub ifindex: u32,
    pub groups: Vec<String>,
    /// Groups came from `--groups`, not from `[interfaces.NAME]`.
    pub groups_from_cli: bool,
    /// How ingress is hooked: "native" or "generic" XDP, or "tc"
    /// (`AttachMode::Tc`). Egress is always TC.
    pub xdp_mode: String,
    pub ingress_policy: u32,
    pub egress_policy: u32,
    /// Link kind found at attach (SPEC 1.12), e.g. "ethernet" or "none
    /// (tun, WireGuard)"; empty in state written before it was recorded.
    #[serde(default)]
    pub link: String,
    /// The interface has no link header: the datapath parses from the IP
    /// header (`IFACE_F_L3`).
    #[serde(default)]
    pub l3: bool,
    /// Established connections adopted as tracked (SPEC 4), at attach and
    /// at the applies since.
    #[serde(default)]
    pub adopted: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleRecord {
    pub id: String,
    pub group: String,
    /// Serialized as "ingress" or "egress", as before it was typed.
    pub direction: sg_common::Direction,
    pub index: usize,
    /// Left out of the file when there is none (most rules): 10,000s of
    /// `"description":null` were a tenth of a big state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The `RuleRef` value of this rule in the maps, stable across applies
    /// for as long as the rule ID stays. `None` in state written before
    /// slots existed: the rule's position in `rules` then.
    #[serde(default)]
    pub slot: Option<u32>,
    /// A NACL rule: `group` is its NACL, `index` its number (32767: `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nacl_action: Option<String>,
}

impl RuleRecord {
    /// Is this a NACL rule (not a security-group rule)?
    pub fn is_nacl(&self) -> bool {
        self.nacl_action.is_some()
    }
}

impl State {
    /// The error for `name` when it is not an attached interface, naming
    /// those that are.
    pub fn not_attached(&self, name: &str) -> anyhow::Error {
        let attached: Vec<&str> = self.interfaces.keys().map(String::as_str).collect();
        anyhow::anyhow!("{name} is not attached; attached: {}", attached.join(", "))
    }

    /// Rule records by their slot (the `RuleRef` value in the maps).
    pub fn rules_by_slot(&self) -> std::collections::HashMap<u32, &RuleRecord> {
        self.rules
            .iter()
            .enumerate()
            .map(|(i, r)| (r.slot.unwrap_or(i as u32), r))
            .collect()
    }
}

/// IDs and rule slots handed out to an apply before it writes entries
/// with them (`reserved.json`, beside the state): a few bytes to save,
/// where the state of a 10,000-rule config is ~2 MB.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Reserved {
    next_id: u32,
    next_rule_slot: u32,
}

/// The state dir records another network namespace than the caller's.
#[derive(Debug, thiserror::Error)]
#[error("state dir {dir} belongs to another network namespace; {hint}")]
pub struct ForeignNetns {
    pub dir: String,
    /// The recorded namespace (inode number of its `ns/net`).
    pub netns: u64,
    pub hint: &'static str,
}

/// The metadata directory's name for a state dir: the path with `/` as
/// `_`, one-to-one (`%` and `_` are escaped first), so two state dirs never
/// share metadata. Paths without `%` or `_` keep the names they always had.
fn meta_dir_name(pins: &Path) -> String {
    pins.to_string_lossy()
        .trim_matches('/')
        .replace('%', "%25")
        .replace('_', "%5f")
        .replace('/', "_")
}

/// The state dir (pins) and its metadata dir (JSON, lock).
#[derive(Clone, Debug)]
pub struct StateDir {
    pub pins: PathBuf,
    pub meta: PathBuf,
}

impl StateDir {
    pub fn new(pins: &Path) -> StateDir {
        let run_dir = std::env::var_os("SG_RUN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(RUN_DIR));
        StateDir {
            pins: pins.to_path_buf(),
            meta: run_dir.join(meta_dir_name(pins)),
        }
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.pins.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.pins.join("links")
    }

    /// bpffs refuses names with a dot (reserved for its own files), and
    /// interface names may have one (eth0.100): escape it.
    pub fn link_pin(&self, iface: &str, hook: &str) -> PathBuf {
        let escaped = iface.replace('%', "%25").replace('.', "%2e");
        self.links_dir().join(format!("{escaped}-{hook}"))
    }

    fn state_file(&self) -> PathBuf {
        self.meta.join("state.json")
    }

    /// Takes the state lock; concurrent `sg` commands on one state dir queue.
    pub fn lock(&self) -> Result<Flock<File>> {
        fs::create_dir_all(&self.meta)
            .with_context(|| format!("cannot create {}", self.meta.display()))?;
        let file = File::create(self.meta.join("lock"))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .context("cannot lock the state dir")
    }

    /// The saved state, or `None` if nothing is attached. A state of
    /// another network namespace is an error ([`ForeignNetns`]).
    pub fn load(&self) -> Result<Option<State>> {
        let Some(state) = self.load_any_netns()? else {
            return Ok(None);
        };
        if state.netns != crate::netns::current_id()? {
            let hint = if crate::netns::exists(state.netns) {
                "use --netns or a separate --state-dir"
            } else {
                "that namespace is gone: `sg detach --all` removes what it left"
            };
            return Err(ForeignNetns {
                dir: self.pins.display().to_string(),
                netns: state.netns,
                hint,
            }
            .into());
        }
        Ok(Some(state))
    }

    /// The saved state, whichever network namespace it belongs to.
    pub fn load_any_netns(&self) -> Result<Option<State>> {
        let path = self.state_file();
        let mut state: State = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("corrupt state file {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        // IDs an apply reserved and did not record (killed, or failed)
        // stay taken: their entries may still be in the maps.
        let reserved = self.reserved()?;
        state.next_id = state.next_id.max(reserved.next_id);
        state.next_rule_slot = state.next_rule_slot.max(reserved.next_rule_slot);
        Ok(Some(state))
    }

    fn reserved_file(&self) -> PathBuf {
        self.meta.join("reserved.json")
    }

    /// Whether a state file is saved (attached, or an attach under way).
    pub fn has_state(&self) -> bool {
        self.state_file().exists()
    }

    /// The IDs and rule slots reserved so far (zero if none were).
    fn reserved(&self) -> Result<Reserved> {
        let path = self.reserved_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("corrupt reservation file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Reserved::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Records that IDs below `next_id` and rule slots below
    /// `next_rule_slot` are taken (surviving a killed apply), without rewriting the state:
    /// [`StateDir::load`] reads them back as the state's counters. Counts
    /// as one state write for `SG_FAILPOINT`. Never lowers a counter.
    pub fn reserve(&self, next_id: u32, next_rule_slot: u32) -> Result<()> {
        crate::failpoint::write("the state file")?;
        let before = self.reserved()?;
        let reserved = Reserved {
            next_id: before.next_id.max(next_id),
            next_rule_slot: before.next_rule_slot.max(next_rule_slot),
        };
        fs::create_dir_all(&self.meta)?;
        let tmp = self.meta.join("reserved.json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(&reserved)?)?;
        // No fsync, as in `save`.
        fs::rename(&tmp, self.reserved_file())?;
        Ok(())
    }

    /// Writes the state atomically (temp file, then rename), without a
    /// keys token (`State::keys_token`). Not synced to disk: the state
    /// describes pins, which a reboot or power loss takes too, so only a
    /// killed process matters, and a rename of a complete file is atomic
    /// for that (an fsync cost 3-4 ms an apply where /run is not tmpfs).
    pub fn save(&self, state: &State) -> Result<()> {
        self.save_json(&serde_json::to_vec(state)?)
    }

    /// [`StateDir::save`] with `token`, the keys record's the caller will
    /// write once the policy hashes hold what it records.
    pub fn save_recorded(&self, state: &State, token: &str) -> Result<()> {
        #[derive(Serialize)]
        struct Recorded<'a> {
            #[serde(flatten)]
            state: &'a State,
            keys_token: &'a str,
        }
        self.save_json(&serde_json::to_vec(&Recorded {
            state,
            keys_token: token,
        })?)
    }

    fn save_json(&self, json: &[u8]) -> Result<()> {
        crate::failpoint::write("the state file")?;
        fs::create_dir_all(&self.meta)?;
        let tmp = self.meta.join("state.json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(json)?;
        fs::rename(&tmp, self.state_file())?;
        Ok(())
    }

    /// Forgets everything: pins (unpinning a link detaches it) and
    /// metadata. A state dir that is itself a bpffs mount point stays, empty.
    pub fn remove_all(&self) -> Result<()> {
        for dir in [&self.pins, &self.meta] {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
            };
            for entry in entries {
                let path = entry?.path();
                if is_bpffs_preload_file(&path) {
                    continue;
                }
                let removed = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.with_context(|| format!("cannot remove {}", path.display()))?;
            }
            if let Err(e) = fs::remove_dir(dir)
                && e.raw_os_error() != Some(libc::EBUSY)
            {
                return Err(e).with_context(|| format!("cannot remove {}", dir.display()));
            }
        }
        Ok(())
    }
}

/// `maps.debug` and `progs.debug`: the kernel's own files at the root of
/// every bpffs mount (bpf_preload), which no one may remove. A state dir
/// that is its own mount point holds them.
fn is_bpffs_preload_file(path: &Path) -> bool {
    let kernel_file = path
        .file_name()
        .is_some_and(|n| n == "maps.debug" || n == "progs.debug");
    kernel_file
        && path.parent().is_some_and(|dir| {
            fs::metadata(dir).is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == 1)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_state_dirs_never_share_metadata() {
        let meta = |p: &str| StateDir::new(Path::new(p)).meta;
        assert_ne!(meta("/x/a_b"), meta("/x_a/b"));
        assert_ne!(meta("/x/a%5fb"), meta("/x/a_b"));
        assert_ne!(meta("/x/a%25"), meta("/x/a%"));
        // The default keeps its name across upgrades.
        assert!(meta("/sys/fs/bpf/sg").ends_with("sys_fs_bpf_sg"));
    }

    #[test]
    fn reserved_ids_are_read_back_as_the_state_counters() {
        let root = std::env::temp_dir().join(format!("sg-reserve-{}", std::process::id()));
        let dir = StateDir {
            pins: root.join("pins"),
            meta: root.join("meta"),
        };
        assert!(!dir.has_state());
        let state = State {
            netns: crate::netns::current_id().unwrap(),
            next_id: 5,
            next_rule_slot: 3,
            ..State::default()
        };
        dir.save(&state).unwrap();
        assert!(dir.has_state());
        let counters = |d: &StateDir| {
            let s = d.load().unwrap().unwrap();
            (s.next_id, s.next_rule_slot)
        };
        assert_eq!(counters(&dir), (5, 3));
        dir.reserve(9, 2).unwrap();
        assert_eq!(counters(&dir), (9, 3), "the reservation, where higher");
        dir.reserve(4, 7).unwrap();
        assert_eq!(counters(&dir), (9, 7), "a reservation never lowers one");
        // A later save with lower counters (it cannot happen: the state
        // saved takes the reserved counters) still does not lower them.
        dir.save(&state).unwrap();
        assert_eq!(counters(&dir), (9, 7));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn only_a_recorded_save_keeps_the_keys_token() {
        let root = std::env::temp_dir().join(format!("sg-token-{}", std::process::id()));
        let dir = StateDir {
            pins: root.join("pins"),
            meta: root.join("meta"),
        };
        let state = State {
            netns: crate::netns::current_id().unwrap(),
            next_id: 5,
            ..State::default()
        };
        dir.save_recorded(&state, "t1").unwrap();
        let loaded = dir.load().unwrap().unwrap();
        assert_eq!(loaded.keys_token.as_deref(), Some("t1"));
        assert_eq!(loaded.next_id, 5);
        // A command that loads the state and saves it again drops it.
        dir.save(&loaded).unwrap();
        assert_eq!(dir.load().unwrap().unwrap().keys_token, None);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn rule_records_keep_their_json() {
        // As written while `direction` was a string.
        let old = r#"{"id":"sgr-0","group":"g","direction":"egress","index":1,"description":null,"slot":7}"#;
        let r: RuleRecord = serde_json::from_str(old).unwrap();
        assert_eq!(r.direction, sg_common::Direction::Egress);
        assert_eq!(r.description, None);
        // Written without the absent description, read back the same.
        let new = serde_json::to_string(&r).unwrap();
        assert_eq!(new, old.replace(r#""description":null,"#, ""));
        let back: RuleRecord = serde_json::from_str(&new).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), new);
        let described = old.replace("null", r#""ssh in""#);
        let r: RuleRecord = serde_json::from_str(&described).unwrap();
        assert_eq!(r.description.as_deref(), Some("ssh in"));
        assert_eq!(serde_json::to_string(&r).unwrap(), described);
        let bad = old.replace("egress", "Egress");
        assert!(serde_json::from_str::<RuleRecord>(&bad).is_err());
    }
}
