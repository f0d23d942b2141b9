//! Attach keeps what is already connected (SPEC 4): before an interface
//! switches to a policy, the namespace's established TCP connections and
//! connected UDP sockets that the policy allows in their opening direction
//! become tracked entries, so their replies pass from the first packet.
//! Without this, a restricted direction cuts them: a packet that is not a
//! SYN never opens an entry (SPEC 1.6).
//!
//! `sockets` reads them (sock_diag), `select` picks an interface's and
//! builds the entries, and [`adopt`] writes them into `CONNTRACK`.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context as _, Result};
use sg_common::{CtKey, RuntimeConfig};

use crate::{
    compile::{Compiled, KernelTables},
    datapath::{Datapath, deleted},
    ifaces,
    state::State,
};

pub mod select;
pub mod sockets;

/// Which interfaces adopt in an attach or apply.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub ifaces: Vec<String>,
}

/// What one interface adopted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub adopted: u32,
    /// Allowed connections left untracked: the table had no room.
    pub no_room: u32,
}

/// What an adoption wrote: the keys (to take back if the switch fails)
/// and the counts per interface.
#[derive(Debug, Default)]
pub struct Adopted {
    pub keys: Vec<CtKey>,
    pub per_iface: BTreeMap<String, Count>,
}

/// "3 established connections adopted", and how many found no room.
pub fn describe(count: &Count) -> String {
    let noun = if count.adopted == 1 {
        "connection"
    } else {
        "connections"
    };
    let mut text = format!("{} established {noun} adopted", count.adopted);
    if count.no_room > 0 {
        text += &format!(
            ", {} not adopted: the conntrack table is full ([conntrack] max_entries)",
            count.no_room
        );
    }
    text
}

/// `BPF_ANY`: replaces a dead entry left for the sweeper.
const BPF_ANY: u64 = 0;

/// Reads the namespace's connections and inserts, for each interface of
/// `req`, the ones `compiled` (rules renumbered to slots) allows. An entry
/// already live stays as the datapath keeps it. A full table refuses
/// nothing: what does not fit is counted, not adopted.
pub fn adopt(
    dp: &mut Datapath,
    state: &State,
    compiled: &Compiled,
    runtime: &RuntimeConfig,
    req: &Request,
) -> Result<Adopted> {
    let mut out = Adopted::default();
    let targets: Vec<_> = req
        .ifaces
        .iter()
        .filter_map(|name| {
            let iface = state.interfaces.get(name)?;
            let binding = *compiled.ifaces.get(name)?;
            Some((name, iface.ifindex, binding))
        })
        .collect();
    if targets.is_empty() {
        return Ok(out);
    }
    let conns = sockets::connections().context("reading established connections (sock_diag)")?;
    if conns.is_empty() {
        // Nothing to adopt: the search tables of the whole set (~2 ms at
        // 10,000 rules) are not built.
        for (name, _, _) in targets {
            out.per_iface.entry(name.clone()).or_default();
        }
        return Ok(out);
    }
    let rules = select::Rules::new(&KernelTables::of(compiled));
    let now = crate::conntrack::now_ns()?;
    let mut ct = dp.conntrack()?;
    let mut seen = HashSet::new();
    for (name, ifindex, binding) in targets {
        let addrs = ifaces::addresses(name)?;
        let target = select::Target {
            ifindex,
            addrs: &addrs,
            binding,
        };
        let count = out.per_iface.entry(name.clone()).or_default();
        for (key, value) in select::entries(&conns, &target, &rules, &runtime.timeouts_ns, now) {
            if !seen.insert(key) {
                continue;
            }
            if ct.get(&key, 0).is_ok_and(|v| v.expires_ns >= now) {
                continue;
            }
            match ct.insert(&key, &value, BPF_ANY) {
                Ok(()) => {
                    count.adopted += 1;
                    out.keys.push(key);
                }
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    count.no_room += 1;
                }
                Err(e) => {
                    let err = anyhow::Error::new(e).context("adopting into CONNTRACK");
                    undo(dp, &out.keys);
                    return Err(err);
                }
            }
        }
    }
    Ok(out)
}

/// Takes adopted entries back (the switch they were for failed).
pub fn undo(dp: &mut Datapath, keys: &[CtKey]) {
    let Ok(mut ct) = dp.conntrack() else {
        return;
    };
    for key in keys {
        if let Err(e) = deleted(ct.remove(key)) {
            eprintln!("warning: an adopted connection stays tracked: {e}");
        }
    }
}
