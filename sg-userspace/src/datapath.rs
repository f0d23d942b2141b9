//! The loaded eBPF object: its pinned maps and its two programs.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
    },
};
use sg_common::{
    CtKey, CtValue, DropKey, EVSTAT_RING_FULL, EVSTAT_SUPPRESSED, FragKey, IfacePolicy, PeerKeyV4,
    PeerKeyV6, PeerLengths, PeerLengthsKey, PeerNet, PeerNetKeyV4, PeerNetKeyV6,
    RULE_INTERVAL_CAPACITY, RuleHits, RuleInterval, RuleSetKey, RuleSpan, RuntimeConfig,
};

use crate::{
    compile::{Compiled, KernelTables, RuleSet},
    state::StateDir,
};

pub const XDP_PROGRAM: &str = "sg_ingress";
pub const TC_PROGRAM: &str = "sg_egress";
/// The same verdict on TC ingress, for `--mode tc`.
pub const TC_INGRESS_PROGRAM: &str = "sg_ingress_tc";
/// A do-nothing XDP program, the yardstick of `cargo xtask bench`.
pub const BASELINE_PROGRAM: &str = "sg_baseline";
/// Arms the expiry sweep timer when test-run once; never attached.
pub const SWEEP_ARM_PROGRAM: &str = "sg_sweep_arm";

/// How to attach XDP (`--mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native if the driver supports it, else generic.
    Auto,
    Native,
    Generic,
    /// Ingress on TC (clsact/tcx) instead of XDP. Faster for TCP on
    /// virtual interfaces (veth), where XDP copies every GRO packet.
    Tc,
}

const RULE_SETS: &str = "RULE_SETS";
const RULE_INTERVALS: &str = "RULE_INTERVALS";

type RuleMapHandles<'a> = (
    HashMap<&'a mut MapData, RuleSetKey, RuleSpan>,
    Array<&'a mut MapData, RuleInterval>,
);

pub struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Opens the object with its maps pinned under the state dir: existing
    /// pins are reused, missing ones are created. Programs are not loaded.
    pub fn open(state: &StateDir, ct_max_entries: u32) -> Result<Datapath> {
        crate::bpffs::ensure_state_dir(&state.pins)?;
        let maps_dir = state.maps_dir();
        std::fs::create_dir_all(&maps_dir)
            .with_context(|| format!("cannot create {}", maps_dir.display()))?;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries("CONNTRACK", ct_max_entries)
            .load(crate::EBPF_OBJ)
            .context("cannot load the sg eBPF object")?;
        Ok(Datapath { ebpf })
    }

    fn map<'a, T>(&'a mut self, name: &str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
        T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
    }

    pub fn iface_policy(&mut self) -> Result<HashMap<&mut MapData, u32, IfacePolicy>> {
        self.map("IFACE_POLICY")
    }

    pub fn conntrack(&mut self) -> Result<HashMap<&mut MapData, CtKey, CtValue>> {
        self.map("CONNTRACK")
    }

    pub fn fragments(&mut self) -> Result<HashMap<&mut MapData, FragKey, u64>> {
        self.map("FRAGMENTS")
    }

    pub fn drops(&mut self) -> Result<PerCpuHashMap<&mut MapData, DropKey, u64>> {
        self.map("DROPS")
    }

    pub fn rule_hits(&mut self) -> Result<PerCpuHashMap<&mut MapData, u32, RuleHits>> {
        self.map("RULE_HITS")
    }

    /// Hit counters summed over CPUs, by rule slot.
    pub fn rule_hit_totals(&mut self) -> Result<std::collections::BTreeMap<u32, RuleHits>> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.rule_hits()?.iter() {
            let (slot, per_cpu) = item?;
            let total: &mut RuleHits = out.entry(slot).or_default();
            for h in per_cpu.iter() {
                total.packets += h.packets;
                total.bytes += h.bytes;
            }
        }
        Ok(out)
    }

    /// Deletes the hit counters of the slots `doomed` picks.
    pub fn remove_rule_hits(&mut self, doomed: impl Fn(u32) -> bool) -> Result<usize> {
        let mut hits = self.rule_hits()?;
        let stale: Vec<u32> = hits
            .keys()
            .filter_map(Result::ok)
            .filter(|s| doomed(*s))
            .collect();
        for slot in &stale {
            deleted(hits.remove(slot))?;
        }
        Ok(stale.len())
    }

    /// Events the kernel did not emit, summed over CPUs:
    /// `(suppressed by the rate limit, lost to a full ring buffer)`.
    pub fn event_stats(&mut self) -> Result<(u64, u64)> {
        let stats: PerCpuArray<&mut MapData, u64> = self.map("EVENT_STATS")?;
        let sum = |i: u32| -> Result<u64> { Ok(stats.get(&i, 0)?.iter().sum()) };
        Ok((sum(EVSTAT_SUPPRESSED)?, sum(EVSTAT_RING_FULL)?))
    }

    pub fn take_events(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map("EVENTS")
            .ok_or_else(|| anyhow!("EVENTS map missing"))?;
        Ok(aya::maps::RingBuf::try_from(map)?)
    }

    pub fn runtime_config(&mut self) -> Result<RuntimeConfig> {
        let array: Array<&mut MapData, RuntimeConfig> = self.map("CONFIG")?;
        Ok(array.get(&0, 0)?)
    }

    pub fn set_runtime_config(&mut self, cfg: &RuntimeConfig) -> Result<()> {
        crate::failpoint::write("CONFIG")?;
        let mut array: Array<&mut MapData, RuntimeConfig> = self.map("CONFIG")?;
        array.set(0, cfg, 0)?;
        Ok(())
    }

    /// Writes `tables`, whose policy and class IDs are the `fresh` ones
    /// (plus installed IDs it only refers to), so nothing a packet can
    /// reach changes until the interfaces are switched to them. Every
    /// table's room is checked before anything is written. On failure the
    /// entries of `fresh` IDs are removed again, and only those: a reused
    /// ID is live policy.
    pub fn write_policies(&mut self, tables: &KernelTables, fresh: &HashSet<u32>) -> Result<()> {
        let firsts = self.check_room(tables)?;
        let result = self.try_write_policies(tables, &firsts);
        if result.is_err() {
            let _ = self.remove_entries(|id| fresh.contains(&id));
        }
        result
    }

    /// Fails, naming the table, unless every table has room for `tables`
    /// beside what it holds. Returns where the rule sets' intervals go.
    pub fn check_room(&mut self, tables: &KernelTables) -> Result<Vec<u32>> {
        let p = &tables.peers;
        let needs = [
            ("PEER_HOSTS_V4", p.hosts_v4.len()),
            ("PEER_HOSTS_V6", p.hosts_v6.len()),
            ("PEER_NETS_V4", p.nets_v4.len()),
            ("PEER_NETS_V6", p.nets_v6.len()),
            ("PEER_LENGTHS", p.lengths.len()),
            (RULE_SETS, tables.rule_sets.len()),
        ];
        for (name, need) in needs {
            // Counting a hash walks it: only where this change writes.
            if need == 0 {
                continue;
            }
            let usage = match name {
                "PEER_HOSTS_V4" => self.hash_usage::<PeerKeyV4, u32>("PEER_HOSTS_V4")?,
                "PEER_HOSTS_V6" => self.hash_usage::<PeerKeyV6, u32>("PEER_HOSTS_V6")?,
                "PEER_NETS_V4" => self.hash_usage::<PeerNetKeyV4, PeerNet>("PEER_NETS_V4")?,
                "PEER_NETS_V6" => self.hash_usage::<PeerNetKeyV6, PeerNet>("PEER_NETS_V6")?,
                "PEER_LENGTHS" => self.hash_usage::<PeerLengthsKey, PeerLengths>("PEER_LENGTHS")?,
                _ => self.hash_usage::<RuleSetKey, RuleSpan>(RULE_SETS)?,
            };
            usage.check(need as u64)?;
        }
        let (spans, _) = self.rule_maps()?;
        let in_use: Vec<RuleSpan> = spans
            .iter()
            .map(|item| item.map(|(_, span)| span))
            .collect::<Result<_, _>>()
            .context("reading RULE_SETS")?;
        let sizes: Vec<u32> = tables
            .rule_sets
            .iter()
            .map(|s| s.intervals.len() as u32)
            .collect();
        crate::rule_store::place(&in_use, &sizes, RULE_INTERVAL_CAPACITY).map_err(|full| {
            anyhow!(
                "{RULE_INTERVALS} has room for {} entries; {} are in use and this change needs {} \
                 more (in runs of one rule set each)",
                full.capacity,
                full.in_use,
                full.needed
            )
        })
    }

    fn try_write_policies(&mut self, tables: &KernelTables, firsts: &[u32]) -> Result<()> {
        let peers = &tables.peers;
        self.write_hash("PEER_HOSTS_V4", &peers.hosts_v4)?;
        self.write_hash("PEER_HOSTS_V6", &peers.hosts_v6)?;
        self.write_hash("PEER_NETS_V4", &peers.nets_v4)?;
        self.write_hash("PEER_NETS_V6", &peers.nets_v6)?;
        // Last: a policy's lengths make its prefixes reachable.
        self.write_hash("PEER_LENGTHS", &peers.lengths)?;
        self.write_rule_sets(&tables.rule_sets, firsts)
    }

    fn write_hash<K: Pod, V: Pod>(&mut self, name: &str, entries: &[(K, V)]) -> Result<()> {
        let mut map: HashMap<&mut MapData, K, V> = self.map(name)?;
        for (key, value) in entries {
            crate::failpoint::write(name)?;
            map.insert(key, value, 0)
                .with_context(|| format!("writing {name} (map full?)"))?;
        }
        Ok(())
    }

    /// Removes the entries of hash `name` whose ID `doomed` picks.
    fn remove_hash<K: Pod, V: Pod>(
        &mut self,
        name: &str,
        id_of: impl Fn(&K) -> u32,
        doomed: &impl Fn(u32) -> bool,
    ) -> Result<usize> {
        let mut map: HashMap<&mut MapData, K, V> = self.map(name)?;
        let stale: Vec<K> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| doomed(id_of(k)))
            .collect();
        for key in &stale {
            crate::failpoint::write(name)?;
            deleted(map.remove(key))?;
        }
        Ok(stale.len())
    }

    /// Writes rule sets: their intervals into the free room `firsts` names
    /// (see [`Datapath::check_room`]), then the hash entries that point at
    /// them. Their classes are fresh, so no packet reaches them before the
    /// switch.
    fn write_rule_sets(&mut self, sets: &[RuleSet], firsts: &[u32]) -> Result<()> {
        let (mut spans, mut intervals) = self.rule_maps()?;
        for (set, &first) in sets.iter().zip(firsts) {
            for (index, interval) in (first..).zip(&set.intervals) {
                crate::failpoint::write(RULE_INTERVALS)?;
                intervals
                    .set(index, interval, 0)
                    .context("writing RULE_INTERVALS")?;
            }
        }
        for (set, &first) in sets.iter().zip(firsts) {
            let span = RuleSpan {
                first,
                len: set.intervals.len() as u32,
            };
            crate::failpoint::write(RULE_SETS)?;
            spans
                .insert(&set.key, &span, 0)
                .context("writing RULE_SETS (map full?)")?;
        }
        Ok(())
    }

    fn rule_maps(&mut self) -> Result<RuleMapHandles<'_>> {
        let [spans, intervals] = self.ebpf.maps_disjoint_mut([RULE_SETS, RULE_INTERVALS]);
        let spans = spans.ok_or_else(|| anyhow!("map {RULE_SETS} missing"))?;
        let intervals = intervals.ok_or_else(|| anyhow!("map {RULE_INTERVALS} missing"))?;
        Ok((HashMap::try_from(spans)?, Array::try_from(intervals)?))
    }

    /// How full each policy map is. An apply needs room for the policy in
    /// force and the new one side by side (less what it reuses).
    pub fn policy_usage(&mut self) -> Result<Vec<MapUsage>> {
        let mut out = vec![
            self.hash_usage::<PeerKeyV4, u32>("PEER_HOSTS_V4")?,
            self.hash_usage::<PeerKeyV6, u32>("PEER_HOSTS_V6")?,
            self.hash_usage::<PeerNetKeyV4, PeerNet>("PEER_NETS_V4")?,
            self.hash_usage::<PeerNetKeyV6, PeerNet>("PEER_NETS_V6")?,
            self.hash_usage::<PeerLengthsKey, PeerLengths>("PEER_LENGTHS")?,
            self.hash_usage::<RuleSetKey, RuleSpan>(RULE_SETS)?,
        ];
        // The interval array is always full size: what counts is how much
        // of it the rule sets point at.
        let (spans, intervals) = self.rule_maps()?;
        let used = spans
            .iter()
            .filter_map(Result::ok)
            .map(|(_, span)| u64::from(span.len))
            .sum();
        out.push(MapUsage {
            map: RULE_INTERVALS,
            entries: used,
            capacity: intervals.len(),
        });
        Ok(out)
    }

    /// Every entry a packet's verdict can depend on, as sorted text: the
    /// interfaces' policies, the peer and rule-set entries with the
    /// intervals each set points at, and the runtime config. Equal dumps
    /// mean equal enforcement; the all-or-nothing tests compare them.
    pub fn dump_policy(&mut self) -> Result<BTreeMap<&'static str, Vec<String>>> {
        fn entries<K: Pod + std::fmt::Debug, V: Pod + std::fmt::Debug>(
            dp: &mut Datapath,
            name: &str,
        ) -> Result<Vec<String>> {
            let map: HashMap<&mut MapData, K, V> = dp.map(name)?;
            let mut out: Vec<String> = map
                .iter()
                .map(|item| item.map(|(k, v)| format!("{k:?} => {v:?}")))
                .collect::<Result<_, _>>()?;
            out.sort();
            Ok(out)
        }
        let mut out = BTreeMap::new();
        out.insert(
            "IFACE_POLICY",
            entries::<u32, IfacePolicy>(self, "IFACE_POLICY")?,
        );
        out.insert(
            "PEER_HOSTS_V4",
            entries::<PeerKeyV4, u32>(self, "PEER_HOSTS_V4")?,
        );
        out.insert(
            "PEER_HOSTS_V6",
            entries::<PeerKeyV6, u32>(self, "PEER_HOSTS_V6")?,
        );
        out.insert(
            "PEER_NETS_V4",
            entries::<PeerNetKeyV4, PeerNet>(self, "PEER_NETS_V4")?,
        );
        out.insert(
            "PEER_NETS_V6",
            entries::<PeerNetKeyV6, PeerNet>(self, "PEER_NETS_V6")?,
        );
        out.insert(
            "PEER_LENGTHS",
            entries::<PeerLengthsKey, PeerLengths>(self, "PEER_LENGTHS")?,
        );
        let (spans, intervals) = self.rule_maps()?;
        let mut sets = Vec::new();
        for item in spans.iter() {
            let (key, span) = item?;
            let run: Vec<RuleInterval> = (span.first..span.first + span.len)
                .map(|i| intervals.get(&i, 0))
                .collect::<Result<_, _>>()?;
            sets.push(format!("{key:?} => {span:?} {run:?}"));
        }
        sets.sort();
        out.insert(RULE_SETS, sets);
        out.insert("CONFIG", vec![format!("{:?}", self.runtime_config()?)]);
        Ok(out)
    }

    fn hash_usage<K: Pod, V: Pod>(&mut self, name: &'static str) -> Result<MapUsage> {
        let capacity = match self.ebpf.map(name) {
            Some(aya::maps::Map::HashMap(data)) => data.info()?.max_entries(),
            _ => anyhow::bail!("map {name} missing or not a hash"),
        };
        let map: HashMap<&mut MapData, K, V> = self.map(name)?;
        let entries = map.keys().filter(Result::is_ok).count() as u64;
        Ok(MapUsage {
            map: name,
            entries,
            capacity,
        })
    }

    /// The write and switch steps of [`crate::install::install`]: write `tables`, the
    /// kernel's entries of `compiled` under its `fresh` IDs, then switch
    /// its interfaces. All or nothing: on failure every interface is
    /// switched back and the fresh entries go. Removing what is no longer
    /// in force is left to the caller, which can still undo the switch
    /// with the returned [`Undo`].
    pub fn write_and_switch(
        &mut self,
        compiled: &Compiled,
        tables: &KernelTables,
        fresh: &HashSet<u32>,
        runtime: &RuntimeConfig,
        ifindex_of: impl Fn(&str) -> Result<u32>,
    ) -> Result<Undo> {
        let switches: Vec<(u32, IfacePolicy)> = compiled
            .ifaces
            .iter()
            .map(|(name, b)| {
                let value = IfacePolicy {
                    ingress_policy: b.ingress_policy,
                    egress_policy: b.egress_policy,
                    flags: b.flags,
                    _pad: 0,
                };
                Ok((ifindex_of(name)?, value))
            })
            .collect::<Result<_>>()?;
        self.write_policies(tables, fresh)?;
        let mut undo = Undo {
            runtime: None,
            ifaces: Vec::new(),
            fresh: fresh.clone(),
        };
        let switched = (|| -> Result<()> {
            undo.runtime = Some(self.runtime_config()?);
            self.set_runtime_config(runtime)?;
            for (ifindex, value) in &switches {
                let before = match self.iface_policy()?.get(ifindex, 0) {
                    Ok(v) => Some(v),
                    Err(aya::maps::MapError::KeyNotFound) => None,
                    Err(e) => return Err(e.into()),
                };
                undo.ifaces.push((*ifindex, before));
                self.put_iface(*ifindex, value)?;
            }
            Ok(())
        })();
        if let Err(e) = switched {
            if let Err(undo_err) = self.undo(&undo) {
                eprintln!("warning: could not undo a failed switch: {undo_err:#}");
            }
            return Err(e);
        }
        Ok(undo)
    }

    /// Puts back what [`Datapath::write_and_switch`] changed: interfaces
    /// first (each one map update), then the runtime config, then the
    /// fresh entries, which no packet can reach any more.
    pub fn undo(&mut self, undo: &Undo) -> Result<()> {
        let mut first_err = None;
        for (ifindex, before) in undo.ifaces.iter().rev() {
            let r = match before {
                Some(v) => self.put_iface(*ifindex, v),
                None => self.forget_iface(*ifindex),
            };
            first_err = first_err.or(r.err());
        }
        if let Some(runtime) = &undo.runtime {
            first_err = first_err.or(self.set_runtime_config(runtime).err());
        }
        let fresh = &undo.fresh;
        first_err = first_err.or(self.remove_entries(|id| fresh.contains(&id)).err());
        first_err.map_or(Ok(()), Err)
    }

    /// Loads both programs into the kernel (the verifier runs here).
    pub fn load_programs(&mut self) -> Result<()> {
        let xdp = self.xdp()?;
        if xdp.fd().is_err() {
            xdp.load().context("the kernel refused the XDP program")?;
        }
        for name in [TC_PROGRAM, TC_INGRESS_PROGRAM] {
            let tc = self.classifier(name)?;
            if tc.fd().is_err() {
                tc.load().context("the kernel refused the TC program")?;
            }
        }
        Ok(())
    }

    /// Starts the BPF timer that deletes expired conntrack and fragment
    /// entries every `SWEEP_PERIOD_NS`, off the packet path (SPEC 1.13).
    /// The timer lives in a pinned map and keeps firing after this process
    /// exits; starting it again only replaces its program.
    pub fn start_sweeper(&mut self) -> Result<()> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(SWEEP_ARM_PROGRAM)
            .ok_or_else(|| anyhow!("program {SWEEP_ARM_PROGRAM} missing"))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .context("the kernel refused the conntrack sweep timer program")?;
        }
        // XDP test runs need at least an Ethernet header's worth of data.
        let frame = [0u8; 64];
        let opts = aya::programs::TestRunOptions {
            data_in: Some(&frame),
            ..Default::default()
        };
        let result = aya::programs::TestRun::test_run(prog, opts)
            .context("running the conntrack sweep timer program")?;
        const XDP_PASS: u32 = 2;
        if result.return_value != XDP_PASS {
            anyhow::bail!(
                "cannot start the conntrack sweep timer (program returned {})",
                result.return_value
            );
        }
        Ok(())
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| anyhow!("program {XDP_PROGRAM} missing"))?
            .try_into()?)
    }

    pub fn baseline(&mut self) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(BASELINE_PROGRAM)
            .ok_or_else(|| anyhow!("program {BASELINE_PROGRAM} missing"))?
            .try_into()?)
    }

    pub fn tc(&mut self) -> Result<&mut SchedClassifier> {
        self.classifier(TC_PROGRAM)
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("program {name} missing"))?
            .try_into()?)
    }

    /// Points an interface at its policies: one map update, so a packet sees
    /// either the old policy or the new one.
    pub fn switch_iface(
        &mut self,
        ifindex: u32,
        ingress: u32,
        egress: u32,
        flags: u32,
    ) -> Result<()> {
        let value = IfacePolicy {
            ingress_policy: ingress,
            egress_policy: egress,
            flags,
            _pad: 0,
        };
        self.put_iface(ifindex, &value)
    }

    fn put_iface(&mut self, ifindex: u32, value: &IfacePolicy) -> Result<()> {
        crate::failpoint::write("IFACE_POLICY")?;
        self.iface_policy()?.insert(&ifindex, value, 0)?;
        Ok(())
    }

    pub fn forget_iface(&mut self, ifindex: u32) -> Result<()> {
        crate::failpoint::write("IFACE_POLICY")?;
        deleted(self.iface_policy()?.remove(&ifindex))?;
        Ok(())
    }

    /// Deletes every policy (peer maps) and class (rule sets) entry whose
    /// ID `doomed` picks. Returns how many entries went.
    /// Their intervals stay in the array, unreachable, until the room is
    /// needed again.
    pub fn remove_entries(&mut self, doomed: impl Fn(u32) -> bool) -> Result<usize> {
        let id = u32::from_be_bytes;
        Ok(
            // Lengths first: a policy's prefixes become unreachable at once.
            self.remove_hash::<PeerLengthsKey, PeerLengths>("PEER_LENGTHS", |k| k.policy, &doomed)?
                + self.remove_hash::<PeerKeyV4, u32>("PEER_HOSTS_V4", |k| id(k.policy), &doomed)?
                + self.remove_hash::<PeerKeyV6, u32>("PEER_HOSTS_V6", |k| id(k.policy), &doomed)?
                + self.remove_hash::<PeerNetKeyV4, PeerNet>(
                    "PEER_NETS_V4",
                    |k| id(k.policy),
                    &doomed,
                )?
                + self.remove_hash::<PeerNetKeyV6, PeerNet>(
                    "PEER_NETS_V6",
                    |k| id(k.policy),
                    &doomed,
                )?
                + self.remove_hash::<RuleSetKey, RuleSpan>(RULE_SETS, |k| k.class, &doomed)?,
        )
    }

    /// Attaches ingress (XDP, or TC with `--mode tc`) and egress (TC) to
    /// `iface` and pins both links, so enforcement outlives this process.
    /// Returns the ingress mode used: "native", "generic" or "tc".
    pub fn attach(
        &mut self,
        state: &StateDir,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
    ) -> Result<&'static str> {
        std::fs::create_dir_all(state.links_dir())?;
        let ingress_pin = state.link_pin(iface, "ingress");
        let egress_pin = state.link_pin(iface, "egress");
        self.load_programs()?;
        self.start_sweeper()?;
        let (link, mode_name) = self
            .attach_ingress(ifindex, mode)
            .with_context(|| format!("cannot attach ingress enforcement to {iface}"))?;
        link.pin(&ingress_pin)
            .with_context(|| format!("cannot pin {}", ingress_pin.display()))?;
        let egress = (|| -> Result<()> {
            let link = attach_tc(self.classifier(TC_PROGRAM)?, ifindex, TcAttachType::Egress)
                .with_context(|| format!("cannot attach TC egress to {iface}"))?;
            link.pin(&egress_pin)
                .with_context(|| format!("cannot pin {}", egress_pin.display()))?;
            Ok(())
        })();
        if let Err(e) = egress {
            let _ = unpin_link(&ingress_pin);
            return Err(e);
        }
        Ok(mode_name)
    }

    fn attach_ingress(&mut self, ifindex: u32, mode: AttachMode) -> Result<(FdLink, &'static str)> {
        let modes: &[(XdpMode, &'static str)] = match mode {
            AttachMode::Tc => {
                let prog = self.classifier(TC_INGRESS_PROGRAM)?;
                return Ok((attach_tc(prog, ifindex, TcAttachType::Ingress)?, "tc"));
            }
            AttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
            AttachMode::Native => &[(XdpMode::Driver, "native")],
            AttachMode::Generic => &[(XdpMode::Skb, "generic")],
        };
        let xdp = self.xdp()?;
        let mut last_err = None;
        for (xdp_mode, name) in modes {
            match xdp.attach(ifindex, *xdp_mode) {
                Ok(id) => return Ok((xdp.take_link(id)?.try_into()?, *name)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(anyhow!(last_err.expect("at least one mode was tried")))
    }
}

fn attach_tc(prog: &mut SchedClassifier, ifindex: u32, hook: TcAttachType) -> Result<FdLink> {
    let id = prog.attach(ifindex, hook)?;
    Ok(prog.take_link(id)?.try_into()?)
}

/// Entries in use in a policy map, and how many it can hold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MapUsage {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u32,
}

impl MapUsage {
    /// Fails, naming the map, unless `need` more entries fit.
    pub fn check(&self, need: u64) -> Result<()> {
        if self.entries + need > u64::from(self.capacity) {
            anyhow::bail!(
                "{} has room for {} entries; {} are in use and this change needs {} more",
                self.map,
                self.capacity,
                self.entries,
                need
            );
        }
        Ok(())
    }
}

/// What [`Datapath::write_and_switch`] changed, to put back with
/// [`Datapath::undo`] when the change cannot be committed.
#[derive(Debug, Clone)]
pub struct Undo {
    runtime: Option<RuntimeConfig>,
    /// Interfaces switched, with their entry before (`None`: none).
    ifaces: Vec<(u32, Option<IfacePolicy>)>,
    fresh: HashSet<u32>,
}

/// The result of deleting a map entry: `Ok(true)` if it was deleted,
/// `Ok(false)` if it was already gone (the datapath, another `sg`, or a
/// lost bpffs got there first), which is never an error for a delete.
/// (aya reports a missing key on delete as ENOENT, not `KeyNotFound`.)
pub fn deleted(result: Result<(), aya::maps::MapError>) -> Result<bool, aya::maps::MapError> {
    match result {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Detaches a pinned link by unpinning it; a missing pin is not an error.
pub fn unpin_link(path: &std::path::Path) -> Result<bool> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let fd_link = link
                .unpin()
                .with_context(|| format!("cannot unpin {}", path.display()))?;
            drop(fd_link);
            Ok(true)
        }
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => {
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("cannot open pinned link {}", path.display())),
    }
}

/// Detaches both of an interface's links.
pub fn detach_links(state: &StateDir, iface: &str) -> Result<()> {
    for hook in ["ingress", "egress"] {
        unpin_link(&state.link_pin(iface, hook))?;
    }
    Ok(())
}

/// Every policy and class ID a compiled policy set uses.
pub fn ids_of(compiled: &Compiled) -> HashSet<u32> {
    let policies = compiled.policies.iter().map(|p| p.id);
    let classes_v4 = compiled.peers_v4.iter().map(|(_, _, class)| *class);
    let classes_v6 = compiled.peers_v6.iter().map(|(_, _, class)| *class);
    policies.chain(classes_v4).chain(classes_v6).collect()
}
