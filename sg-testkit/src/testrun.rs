//! BPF_PROG_TEST_RUN harness: the real programs, loaded in the kernel, run
//! on crafted frames. No interface is attached; the kernel runs test runs
//! as if the frame arrived on (XDP) or left by (TC) the loopback device,
//! so the policy is bound to loopback's ifindex in the test's namespace.
//! Used by the kernel tests and by `cargo xtask bench`.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    TestRunResult,
    programs::{TestRun, TestRunOptions},
};
use sg_common::{CtKey, CtValue, DropKey, FragKey, Reason};

use sg::{
    compile::{Attachment, compile},
    config::Config,
    datapath::Datapath,
    ifaces,
    install::install,
    netns,
    state::{AttachedIface, State, StateDir},
};

/// The device test runs use.
const TEST_RUN_IFACE: &str = "lo";

/// XDP verdicts.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
/// TC verdicts: sg passes with TC_ACT_UNSPEC so later programs still run.
pub const TC_PASS: i32 = -1;
pub const TC_DROP: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
}

pub struct TestBed {
    pub dp: Datapath,
    dir: StateDir,
    /// What `sg` would record: the bed installs through the same pipeline.
    state: State,
    /// Frames on the test-run device have no link header (`IFACE_F_L3`).
    l3: bool,
}

/// An interface a test bed enforces on: its groups, and whether it has no
/// link header. Test runs on it go through [`TestBed::ingress_on`].
#[derive(Clone, Debug)]
pub struct BedIface {
    pub name: String,
    pub groups: Vec<String>,
    pub l3: bool,
}

static NEXT_BED: AtomicU32 = AtomicU32::new(0);

impl TestBed {
    /// Loads the programs with fresh maps, starts the sweep timer as
    /// `sg attach` does, and enforces `groups` of `config` on the test-run
    /// device.
    pub fn new(config: &Config, groups: &[&str]) -> Result<TestBed> {
        let mut bed = TestBed::without_sweeper(config, groups)?;
        bed.dp.start_sweeper()?;
        Ok(bed)
    }

    /// [`TestBed::new`] without the sweep timer: expired entries stay
    /// until something else removes them.
    pub fn without_sweeper(config: &Config, groups: &[&str]) -> Result<TestBed> {
        let n = NEXT_BED.fetch_add(1, Ordering::Relaxed);
        let name = format!("sg-testrun-{}-{n}", std::process::id());
        // Metadata on tmpfs: the pipeline syncs the state file on every
        // apply, and the differential test applies thousands of times.
        let dir = StateDir {
            pins: std::path::Path::new("/sys/fs/bpf").join(&name),
            meta: std::path::Path::new("/dev/shm").join(name),
        };
        dir.remove_all()?;
        let dp = match Datapath::open(&dir, config.conntrack.max_entries)
            .and_then(|mut dp| dp.load_programs().map(|()| dp))
        {
            Ok(dp) => dp,
            Err(e) => {
                // No TestBed yet, so no Drop: remove the pins here.
                let _ = dir.remove_all();
                return Err(e);
            }
        };
        let state = State {
            netns: netns::current_id()?,
            next_id: 1,
            ct_max_entries: config.conntrack.max_entries,
            ..State::default()
        };
        let mut bed = TestBed {
            dp,
            dir,
            state,
            l3: false,
        };
        bed.apply(config, groups)?;
        Ok(bed)
    }

    /// [`TestBed::new`] enforcing every group of `config`.
    pub fn with_every_group(config: &Config) -> Result<TestBed> {
        let groups: Vec<&str> = config.groups.keys().map(String::as_str).collect();
        TestBed::new(config, &groups)
    }

    /// Drops this bed's loaded object (its programs and map handles) and
    /// opens the pinned maps afresh, as a later `sg` invocation would.
    pub fn reopen_datapath(&mut self) -> Result<()> {
        let max =
            aya::maps::MapInfo::from_pin(self.dir.maps_dir().join("CONNTRACK"))?.max_entries();
        let mut dp = Datapath::open(&self.dir, max)?;
        dp.load_programs()?;
        self.dp = dp;
        Ok(())
    }

    /// Replaces the policy, as `sg apply` does.
    pub fn apply(&mut self, config: &Config, groups: &[&str]) -> Result<()> {
        let iface = BedIface {
            name: TEST_RUN_IFACE.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            l3: self.l3,
        };
        self.apply_ifaces(config, &[iface])
    }

    /// From the next [`TestBed::apply`] on, the test-run device is an L3
    /// interface: frames start with the IP header.
    pub fn set_l3(&mut self, l3: bool) {
        self.l3 = l3;
    }

    /// Replaces the policy with one enforcing on each of `ifaces` (devices
    /// of the caller's network namespace), through the pipeline `sg apply`
    /// runs (`sg::install`); any other interface bound before is forgotten,
    /// as `sg detach` does.
    pub fn apply_ifaces(&mut self, config: &Config, ifaces: &[BedIface]) -> Result<()> {
        let mut interfaces = std::collections::BTreeMap::new();
        for i in ifaces {
            let iface = AttachedIface {
                ifindex: ifaces::index(&i.name)?,
                groups: i.groups.clone(),
                groups_from_cli: true,
                xdp_mode: String::new(),
                ingress_policy: 0,
                egress_policy: 0,
                link: String::new(),
                l3: i.l3,
                adopted: 0,
            };
            interfaces.insert(i.name.clone(), iface);
        }
        // No member addresses: the bed's interfaces are not group members.
        let attachments: Vec<Attachment> = ifaces
            .iter()
            .map(|i| Attachment {
                iface: i.name.clone(),
                groups: i.groups.clone(),
                addrs: Vec::new(),
            })
            .collect();
        let compiled = compile(config, &attachments, self.state.next_id)?;
        let kept = |old: &AttachedIface| interfaces.values().any(|i| i.ifindex == old.ifindex);
        for old in self.state.interfaces.values() {
            if !kept(old) {
                self.dp.forget_iface(old.ifindex)?;
            }
        }
        let mut before = std::mem::replace(&mut self.state.interfaces, interfaces.clone());
        let installed = install(&self.dir, &mut self.dp, &mut self.state, &compiled, config);
        if installed.is_err() {
            // The previous policy stays on the interfaces still bound.
            before.retain(|_, old| kept(old));
            self.state.interfaces = before;
        }
        installed
    }

    /// [`TestBed::ingress`] as if the frame arrived on `ifindex`.
    pub fn ingress_on(&mut self, ifindex: u32, frame: &[u8]) -> Result<Verdict> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx = [0, frame.len() as u32, 0, ifindex, 0, 0];
        let ctx: Vec<u8> = ctx.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let (ret, _) =
            run_program_ctx(self.dp.xdp()?, frame, 1, Some(&ctx)).context("XDP test run")?;
        match ret {
            XDP_PASS => Ok(Verdict::Pass),
            XDP_DROP => Ok(Verdict::Drop),
            other => anyhow::bail!("XDP returned unexpected action {other}"),
        }
    }

    /// [`TestBed::egress`] as if the frame left by `ifindex`. The device
    /// needs a 14-byte hard header (veth, lo): the kernel strips and puts
    /// back that many bytes before the program runs.
    pub fn egress_on(&mut self, ifindex: u32, frame: &[u8]) -> Result<Verdict> {
        // struct __sk_buff up to `ifindex` (offset 40); the rest zero.
        let mut ctx = vec![0u8; SK_BUFF_CTX_LEN];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let (ret, _) =
            run_program_ctx(self.dp.tc()?, frame, 1, Some(&ctx)).context("TC test run")?;
        match ret as i32 {
            TC_PASS => Ok(Verdict::Pass),
            TC_DROP => Ok(Verdict::Drop),
            other => anyhow::bail!("TC returned unexpected action {other}"),
        }
    }

    pub fn ingress(&mut self, frame: &[u8]) -> Result<Verdict> {
        let (ret, _) = self.run_xdp(frame, 1)?;
        match ret {
            XDP_PASS => Ok(Verdict::Pass),
            XDP_DROP => Ok(Verdict::Drop),
            other => anyhow::bail!("XDP returned unexpected action {other}"),
        }
    }

    pub fn egress(&mut self, frame: &[u8]) -> Result<Verdict> {
        let (ret, _) = self.run_tc(frame, 1)?;
        match ret {
            TC_PASS => Ok(Verdict::Pass),
            TC_DROP => Ok(Verdict::Drop),
            other => anyhow::bail!("TC returned unexpected action {other}"),
        }
    }

    /// Runs XDP `repeat` times on `frame`; returns the action and the mean
    /// time per run as the kernel measured it.
    pub fn run_xdp(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        run_program(self.dp.xdp()?, frame, repeat).context("XDP test run")
    }

    /// Runs the do-nothing XDP program: the yardstick for benchmarks.
    pub fn run_baseline(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let prog = self.dp.baseline()?;
        if prog.fd().is_err() {
            prog.load().context("loading the baseline program")?;
        }
        run_program(prog, frame, repeat).context("baseline test run")
    }

    pub fn run_tc(&mut self, frame: &[u8], repeat: u32) -> Result<(i32, Duration)> {
        let (ret, took) = run_program(self.dp.tc()?, frame, repeat).context("TC test run")?;
        Ok((ret as i32, took))
    }

    pub fn conntrack_entries(&mut self) -> Result<Vec<(CtKey, CtValue)>> {
        Ok(self.dp.conntrack()?.iter().filter_map(Result::ok).collect())
    }

    pub fn flush_conntrack(&mut self) -> Result<()> {
        let mut ct = self.dp.conntrack()?;
        let keys: Vec<CtKey> = ct.keys().filter_map(Result::ok).collect();
        for key in keys {
            ct.remove(&key)?;
        }
        Ok(())
    }

    /// Forgets every first fragment seen, as if their timeouts had passed.
    pub fn flush_fragments(&mut self) -> Result<()> {
        let mut frags = self.dp.fragments()?;
        let keys: Vec<FragKey> = frags.keys().filter_map(Result::ok).collect();
        for key in keys {
            frags.remove(&key)?;
        }
        Ok(())
    }

    /// What the bed recorded at its last apply, as `sg` would.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Packets counted toward the rule with ID `id` (a NACL rule's is
    /// `sg::compile::nacl_rule_id`), summed over CPUs.
    pub fn rule_packets(&mut self, id: &str) -> Result<u64> {
        let slot = self
            .state
            .rules_by_slot()
            .into_iter()
            .find(|(_, r)| r.id == id)
            .map(|(slot, _)| slot)
            .with_context(|| format!("no rule {id} in force"))?;
        Ok(self
            .dp
            .rule_hit_totals()?
            .get(&slot)
            .map_or(0, |h| h.packets))
    }

    /// The programs again, over this bed's maps, stopping after step
    /// `stop` (`sg_common::BENCH_STOP_*`): the bench's per-step variants.
    pub fn bench_variant(&self, stop: u32) -> Result<Datapath> {
        let max =
            aya::maps::MapInfo::from_pin(self.dir.maps_dir().join("CONNTRACK"))?.max_entries();
        let mut dp = Datapath::open_bench_variant(&self.dir, max, stop)?;
        dp.load_programs()?;
        Ok(dp)
    }

    /// Where this bed's maps are pinned.
    pub fn maps_dir(&self) -> std::path::PathBuf {
        self.dir.maps_dir()
    }

    /// The ifindex test runs use.
    pub fn ifindex(&self) -> Result<u32> {
        ifaces::index(TEST_RUN_IFACE)
    }

    /// Drops counted for `direction` (`sg_common::DIR_*`) and `reason` on
    /// the test-run device, summed over CPUs.
    pub fn drop_count(&mut self, direction: u8, reason: Reason) -> Result<u64> {
        let ifindex = self.ifindex()?;
        self.drop_count_on(ifindex, direction, reason)
    }

    /// [`TestBed::drop_count`] on interface `ifindex`.
    pub fn drop_count_on(&mut self, ifindex: u32, direction: u8, reason: Reason) -> Result<u64> {
        self.drop_count_keyed(ifindex, direction, reason, false)
    }

    /// Would-be drops audit mode let pass (SPEC 10.2) on the test-run
    /// device, summed over CPUs.
    pub fn audit_count(&mut self, direction: u8, reason: Reason) -> Result<u64> {
        let ifindex = self.ifindex()?;
        self.drop_count_keyed(ifindex, direction, reason, true)
    }

    fn drop_count_keyed(
        &mut self,
        ifindex: u32,
        direction: u8,
        reason: Reason,
        audit: bool,
    ) -> Result<u64> {
        let key = DropKey {
            ifindex,
            direction,
            reason: reason as u8,
            audit: audit as u8,
            _pad: 0,
        };
        self.dp.drop_count(&key)
    }
}

/// What the kernel reports of a loaded program, for the hot-path profile.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProgramSize {
    pub name: &'static str,
    /// Instructions after verification and rewriting (xlated).
    pub instructions: u32,
    /// Instructions the verifier walked to prove the program safe.
    pub verified: u32,
}

impl TestBed {
    /// Sizes of the XDP ingress, TC egress and TC ingress programs.
    pub fn program_sizes(&mut self) -> Result<Vec<ProgramSize>> {
        let size = |name: &'static str, info: aya::programs::ProgramInfo| ProgramSize {
            name,
            instructions: info.size_translated().unwrap_or(0) / 8,
            verified: info.verified_instruction_count().unwrap_or(0),
        };
        Ok(vec![
            size(sg::datapath::XDP_PROGRAM, self.dp.xdp()?.info()?),
            size(sg::datapath::TC_PROGRAM, self.dp.tc()?.info()?),
            size(
                sg::datapath::TC_INGRESS_PROGRAM,
                self.dp.tc_ingress()?.info()?,
            ),
        ])
    }

    /// Kernel memory of the policy maps, from each map's `memlock` in
    /// /proc/self/fdinfo (actual usage on this kernel).
    pub fn policy_map_bytes(&self) -> Result<u64> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let mut total = 0;
        for name in [
            "PEER_HOSTS_V4",
            "PEER_HOSTS_V6",
            "PEER_NETS_V4",
            "PEER_NETS_V6",
            "PEER_LENGTHS",
            "RULE_SETS",
            "RULE_INTERVALS",
        ] {
            let info = aya::maps::MapInfo::from_pin(self.dir.maps_dir().join(name))?;
            let fd = info.fd()?;
            let fdinfo =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd()))?;
            total += fdinfo
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .context("no memlock in fdinfo")?;
        }
        Ok(total)
    }
}

/// BPF_PROG_TEST_RUN of `prog` on `frame`, `repeat` times: the return
/// value and the kernel's mean time per run.
pub(crate) fn run_program<P>(prog: &mut P, frame: &[u8], repeat: u32) -> Result<(u32, Duration)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    run_program_ctx(prog, frame, repeat, None)
}

/// `sizeof(struct __sk_buff)` on this kernel's ABI (6.x).
const SK_BUFF_CTX_LEN: usize = 192;

fn run_program_ctx<P>(
    prog: &mut P,
    frame: &[u8],
    repeat: u32,
    ctx: Option<&[u8]>,
) -> Result<(u32, Duration)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx,
        repeat,
        ..TestRunOptions::default()
    };
    let result = prog.test_run(opts)?;
    Ok((result.return_value, result.duration))
}

impl Drop for TestBed {
    fn drop(&mut self) {
        let _ = self.dir.remove_all();
    }
}
