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

use crate::{
    compile::{Attachment, compile},
    config::Config,
    datapath::Datapath,
    enforcer::runtime_config,
    ifaces,
    state::StateDir,
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
    next_id: u32,
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
        let pins =
            std::path::PathBuf::from(format!("/sys/fs/bpf/sg-testrun-{}-{n}", std::process::id()));
        let dir = StateDir::new(&pins);
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
        let mut bed = TestBed {
            dp,
            dir,
            next_id: 1,
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
        let attachment = Attachment {
            iface: TEST_RUN_IFACE.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            addrs: Vec::new(),
        };
        let compiled = compile(config, &[attachment], self.next_id)?;
        self.next_id = compiled.next_id;
        let lo = ifaces::index(TEST_RUN_IFACE)?;
        self.dp
            .install(&compiled, &runtime_config(config), |_| Ok(lo))
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
        let key = DropKey {
            ifindex: self.ifindex()?,
            direction,
            reason: reason as u8,
            _pad: 0,
        };
        match self.dp.drops()?.get(&key, 0) {
            Ok(values) => Ok(values.iter().sum()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(0),
            Err(e) => Err(e.into()),
        }
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
    /// Sizes of the XDP ingress and TC egress programs.
    pub fn program_sizes(&mut self) -> Result<Vec<ProgramSize>> {
        let size = |name: &'static str, info: aya::programs::ProgramInfo| ProgramSize {
            name,
            instructions: info.size_translated().unwrap_or(0) / 8,
            verified: info.verified_instruction_count().unwrap_or(0),
        };
        Ok(vec![
            size(crate::datapath::XDP_PROGRAM, self.dp.xdp()?.info()?),
            size(crate::datapath::TC_PROGRAM, self.dp.tc()?.info()?),
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
fn run_program<P>(prog: &mut P, frame: &[u8], repeat: u32) -> Result<(u32, Duration)>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
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
