//! Classification of one flow over any copy of the policy tables: the
//! steps of `sg-ebpf/src/policy.rs`, with the same searches
//! (`sg_common::search`), over the kernel's pinned maps ([`super::kernel`])
//! or a compiled config's tables ([`CompiledTables`]).

use std::{collections::BTreeMap, net::IpAddr};

use sg_common::{
    FAMILY_V4, FAMILY_V6, IfacePolicy, PeerKeyV4, PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet,
    PeerNetKeyV4, PeerNetKeyV6, RuleInterval, RuleRef, RuleSetKey, RuleSpan,
    search::{interval_rule, longest_prefix_class},
};

use crate::compile::{Compiled, KernelTables};

/// Read access to one copy of the policy maps. Lookups return copies; the
/// searches then run over what was read.
pub(crate) trait PolicyTables {
    fn iface(&self, ifindex: u32, name: &str) -> anyhow::Result<Option<IfacePolicy>>;
    fn host_v4(&self, key: &PeerKeyV4) -> anyhow::Result<Option<u32>>;
    fn host_v6(&self, key: &PeerKeyV6) -> anyhow::Result<Option<u32>>;
    fn net_v4(&self, key: &PeerNetKeyV4) -> anyhow::Result<Option<PeerNet>>;
    fn net_v6(&self, key: &PeerNetKeyV6) -> anyhow::Result<Option<PeerNet>>;
    fn lengths(&self, key: &PeerLengthsKey) -> anyhow::Result<Option<PeerLengths>>;
    fn rule_set(&self, key: &RuleSetKey) -> anyhow::Result<Option<RuleSpan>>;
    fn interval(&self, index: u32) -> anyhow::Result<Option<RuleInterval>>;
}

/// What one copy of the tables says about a new packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The peer's class under the policy (0: no rule's peer covers it).
    pub class: u32,
    /// The rule that allows the packet (its slot in the kernel, its index
    /// in `Compiled::rules` for compiled tables).
    pub rule: Option<RuleRef>,
}

/// The rule of `policy` that allows a packet of protocol `proto` to `slot`
/// (its destination port, or ICMP `type << 8 | code`) whose remote end is
/// `peer`: the kernel's `allowing_rule`.
pub(crate) fn classify(
    t: &dyn PolicyTables,
    policy: u32,
    peer: IpAddr,
    proto: u8,
    slot: u16,
) -> anyhow::Result<Answer> {
    let class = peer_class(t, policy, peer)?;
    if class == 0 {
        return Ok(Answer { class, rule: None });
    }
    let mut key = RuleSetKey {
        class,
        proto,
        any: 0,
        _pad: [0; 2],
    };
    let span = match t.rule_set(&key)? {
        Some(span) => span,
        None => {
            key.proto = 0;
            key.any = 1;
            match t.rule_set(&key)? {
                Some(span) => span,
                None => return Ok(Answer { class, rule: None }),
            }
        }
    };
    // The search probes only inside the span: read it, then search it.
    let run: Vec<Option<RuleInterval>> = (0..span.len)
        .map(|i| t.interval(span.first.wrapping_add(i)))
        .collect::<anyhow::Result<_>>()?;
    let rule = interval_rule(span, slot, |i| {
        run.get(i.wrapping_sub(span.first) as usize)
            .and_then(Option::as_ref)
    });
    Ok(Answer { class, rule })
}

/// The kernel's `peer_class`: the host hash, then the binary search on the
/// policy's prefix lengths.
fn peer_class(t: &dyn PolicyTables, policy: u32, peer: IpAddr) -> anyhow::Result<u32> {
    let pid = policy.to_be_bytes();
    let (family, host) = match peer {
        IpAddr::V4(a) => (
            FAMILY_V4,
            t.host_v4(&PeerKeyV4 {
                policy: pid,
                addr: a.octets(),
            })?,
        ),
        IpAddr::V6(a) => (
            FAMILY_V6,
            t.host_v6(&PeerKeyV6 {
                policy: pid,
                addr: a.octets(),
            })?,
        ),
    };
    if let Some(class) = host {
        return Ok(class);
    }
    let Some(lengths) = t.lengths(&PeerLengthsKey {
        policy,
        family,
        _pad: [0; 3],
    })?
    else {
        return Ok(0);
    };
    // Every length the search may probe, read first.
    let mut nets: BTreeMap<u8, Option<PeerNet>> = BTreeMap::new();
    let count = (lengths.count as usize).min(lengths.lens.len());
    for &len in &lengths.lens[..count] {
        let net = match peer {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                t.net_v4(&PeerNetKeyV4 {
                    policy: pid,
                    len,
                    _pad: [0; 3],
                    addr: (u32::from(a) & mask).to_be_bytes(),
                })?
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                t.net_v6(&PeerNetKeyV6 {
                    policy: pid,
                    len,
                    _pad: [0; 3],
                    addr: (u128::from(a) & mask).to_be_bytes(),
                })?
            }
        };
        nets.insert(len, net);
    }
    Ok(longest_prefix_class(&lengths, |len| {
        nets.get(&len).and_then(Option::as_ref)
    }))
}

/// A compiled config's tables, laid out as the kernel would hold them.
pub(crate) struct CompiledTables {
    tables: KernelTables,
    ifaces: BTreeMap<String, IfacePolicy>,
    spans: BTreeMap<RuleSetKey, RuleSpan>,
    intervals: Vec<RuleInterval>,
}

impl CompiledTables {
    pub(crate) fn new(compiled: &Compiled) -> CompiledTables {
        let tables = KernelTables::of(compiled);
        let mut spans = BTreeMap::new();
        let mut intervals = Vec::new();
        for set in &tables.rule_sets {
            spans.insert(
                set.key,
                RuleSpan {
                    first: intervals.len() as u32,
                    len: set.intervals.len() as u32,
                },
            );
            intervals.extend(&set.intervals);
        }
        let ifaces = compiled
            .ifaces
            .iter()
            .map(|(name, b)| (name.clone(), b.kernel_value()))
            .collect();
        CompiledTables {
            tables,
            ifaces,
            spans,
            intervals,
        }
    }
}

fn find<K: PartialEq, V: Copy>(entries: &[(K, V)], key: &K) -> Option<V> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

impl PolicyTables for CompiledTables {
    fn iface(&self, _ifindex: u32, name: &str) -> anyhow::Result<Option<IfacePolicy>> {
        Ok(self.ifaces.get(name).copied())
    }
    fn host_v4(&self, key: &PeerKeyV4) -> anyhow::Result<Option<u32>> {
        Ok(find(&self.tables.peers.hosts_v4, key))
    }
    fn host_v6(&self, key: &PeerKeyV6) -> anyhow::Result<Option<u32>> {
        Ok(find(&self.tables.peers.hosts_v6, key))
    }
    fn net_v4(&self, key: &PeerNetKeyV4) -> anyhow::Result<Option<PeerNet>> {
        Ok(find(&self.tables.peers.nets_v4, key))
    }
    fn net_v6(&self, key: &PeerNetKeyV6) -> anyhow::Result<Option<PeerNet>> {
        Ok(find(&self.tables.peers.nets_v6, key))
    }
    fn lengths(&self, key: &PeerLengthsKey) -> anyhow::Result<Option<PeerLengths>> {
        Ok(find(&self.tables.peers.lengths, key))
    }
    fn rule_set(&self, key: &RuleSetKey) -> anyhow::Result<Option<RuleSpan>> {
        Ok(self.spans.get(key).copied())
    }
    fn interval(&self, index: u32) -> anyhow::Result<Option<RuleInterval>> {
        Ok(self.intervals.get(index as usize).copied())
    }
}
