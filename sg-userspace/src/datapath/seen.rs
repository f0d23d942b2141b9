//! The keys of the policy hashes as the room check read them, before an
//! apply writes anything. After its commit, everything no longer in force
//! is among them: what the apply wrote since is all in force, and no other
//! writer runs under the state lock (the datapath never writes these
//! maps). So the removal filters these keys instead of reading each hash
//! again; a hash the room check did not read is read then, as before.

use aya::Pod;
use sg_common::{PeerKeyV4, PeerKeyV6, PeerLengthsKey, PeerNetKeyV4, PeerNetKeyV6, RuleSetKey};

use super::{Datapath, usage::MapUsage};

/// Keys per hash; `None`: not read, the removal reads it.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) hosts_v4: Option<Vec<PeerKeyV4>>,
    pub(super) hosts_v6: Option<Vec<PeerKeyV6>>,
    pub(super) nets_v4: Option<Vec<PeerNetKeyV4>>,
    pub(super) nets_v6: Option<Vec<PeerNetKeyV6>>,
    pub(super) lengths: Option<Vec<PeerLengthsKey>>,
    pub(super) rule_sets: Option<Vec<RuleSetKey>>,
}

impl Datapath {
    /// Reads hash `name` once: fails, naming it, unless `need` more
    /// entries fit beside what it holds; else returns its keys.
    pub(super) fn keys_with_room<K: Pod, V: Pod>(
        &mut self,
        name: &'static str,
        need: usize,
    ) -> anyhow::Result<Vec<K>> {
        let capacity = self.hash_capacity(name)?;
        let keys: Vec<K> = self
            .hash_entries::<K, V>(name)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        MapUsage {
            map: name,
            entries: keys.len() as u64,
            capacity,
        }
        .check(need as u64)?;
        Ok(keys)
    }
}
