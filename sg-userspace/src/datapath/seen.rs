//! The keys of the policy hashes as the room check read them, before an
//! apply writes anything. After its commit, everything no longer in force
//! is among them: what the apply wrote since is all in force, and no other
//! writer runs under the state lock (the datapath never writes these
//! maps). So the removal filters these keys instead of reading each hash
//! again; a hash the room check did not read is read then, as before.

use sg_common::{
    PeerKeyV4, PeerKeyV6, PeerLengthsKey, PeerNetKeyV4, PeerNetKeyV6, RuleSetKey, RuleSpan,
};

/// Keys per hash; `None`: not read, the removal reads it.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) hosts_v4: Option<Vec<PeerKeyV4>>,
    pub(super) hosts_v6: Option<Vec<PeerKeyV6>>,
    pub(super) nets_v4: Option<Vec<PeerNetKeyV4>>,
    pub(super) nets_v6: Option<Vec<PeerNetKeyV6>>,
    pub(super) lengths: Option<Vec<PeerLengthsKey>>,
    /// With their spans: the record after the removal keeps them.
    pub(super) rule_sets: Option<Vec<(RuleSetKey, RuleSpan)>>,
    /// Where the room check placed the written rule sets' intervals
    /// (`tables.rule_sets` order): their spans, for the record.
    pub(super) firsts: Vec<u32>,
}

/// What [`Datapath::read_room`] read ahead of a write: every hash's keys,
/// and the rule sets with their spans (where the intervals in use are).
pub(super) struct Prefetched {
    pub(super) seen: Seen,
    pub(super) rule_sets: Vec<(RuleSetKey, RuleSpan)>,
}
