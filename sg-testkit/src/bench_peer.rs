//! sg side by side with its nearest peer, xdp-tools' `xdp-filter` (SPEC 6),
//! and sg's per-packet cost broken down by step: every program judges the
//! same frames with BPF_PROG_TEST_RUN, in the same interleaved rounds.
//!
//! xdp-filter is loaded without the libxdp dispatcher
//! (`LIBXDP_SKIP_DISPATCHER=1`, so that the test run reaches its program
//! directly) on a veth inside a lab namespace, never on a host interface,
//! and opened by its program id.

use std::{
    borrow::Cow,
    net::IpAddr,
    path::Path,
    process::{Command, Output},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{Xdp, loaded_programs};
use aya_obj::programs::XdpAttachType;
use serde::Serialize;
use sg::datapath::Datapath;
use sg_common::{
    BENCH_STOP_AFTER_CLASSIFY, BENCH_STOP_AFTER_CONNTRACK, BENCH_STOP_AFTER_IFACE,
    BENCH_STOP_AFTER_PARSE, BENCH_STOP_NO_ACCOUNTING,
};
use sg_lab::{Host, Lab};

use crate::{
    bench::{Family, Workload, median, prepare},
    packet::{self, SYN},
    testrun::{XDP_DROP, XDP_PASS, run_program},
};

/// Runs per measurement and rounds, as in [`crate::bench`].
const REPEAT: u32 = 200_000;
const ROUNDS: usize = 11;

/// Where xdp-filter pins its maps (one set for every interface).
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";

/// Sources no bench rule names: the denied SYNs come from them, and
/// xdp-filter is told to drop them (`xdp-filter ip ADDR --mode src`).
pub fn denied_source(family: Family) -> IpAddr {
    match family {
        Family::V4 => "198.19.250.1".parse().expect("v4"),
        Family::V6 => "2001:db8:fffe::9".parse().expect("v6"),
    }
}

/// Port of the denied SYNs: below every bench rule's ports but ssh.
const DENIED_PORT: u16 = 9;

/// xdp-filter, loaded on a veth of its own lab.
pub struct XdpFilter {
    host: Host,
    iface: String,
    /// Opened once loaded (None only while loading).
    prog: Option<Xdp>,
    // Dropped last: deleting the namespace also unloads what is left.
    _lab: Lab,
}

impl XdpFilter {
    /// Loads xdp-filter (every feature, default allow) in skb mode on a
    /// fresh veth, dropping packets from each of `deny_src`.
    pub fn load(deny_src: &[IpAddr]) -> Result<XdpFilter> {
        ensure!(
            !Path::new(XDP_FILTER_PINS).exists(),
            "{XDP_FILTER_PINS} exists: another xdp-filter is loaded; unload it first"
        );
        let mut lab = Lab::new();
        let host = lab.host("xf");
        let other = lab.host("xfpeer");
        let (link, _) = lab.link(&host, &other, 1);
        let iface = link.ifname.clone();
        let mut filter = XdpFilter {
            host,
            iface,
            prog: None,
            _lab: lab,
        };
        filter.xdp_filter(&["load", &filter.iface.clone(), "--mode", "skb"], true)?;
        for src in deny_src {
            filter.xdp_filter(&["ip", &src.to_string(), "--mode", "src"], false)?;
        }
        let id = filter.program_id()?;
        let info = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .with_context(|| format!("xdp-filter's program {id} is not loaded"))?;
        filter.prog = Some(Xdp::from_program_info(
            info,
            Cow::Borrowed("xdp-filter"),
            XdpAttachType::Interface,
        )?);
        Ok(filter)
    }

    /// `xdp-filter ARGS` in the lab namespace only (nsenter keeps the
    /// mount namespace, so its pins land where `unload` finds them).
    fn xdp_filter(&self, args: &[&str], skip_dispatcher: bool) -> Result<Output> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host.ns))
            .arg("xdp-filter")
            .args(args);
        if skip_dispatcher {
            cmd.env("LIBXDP_SKIP_DISPATCHER", "1");
        }
        let out = cmd.output().context("cannot run xdp-filter (xdp-tools)")?;
        if !out.status.success() {
            bail!(
                "xdp-filter {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }

    /// The id of the XDP program on the lab veth (`ip -j link`).
    fn program_id(&self) -> Result<u32> {
        let out = Command::new("ip")
            .args(["-n", &self.host.ns, "-j", "link", "show", &self.iface])
            .output()?;
        let links: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        links[0]["xdp"]["prog"]["id"]
            .as_u64()
            .map(|id| id as u32)
            .context("no XDP program on the xdp-filter veth")
    }

    /// BPF_PROG_TEST_RUN of xdp-filter's program.
    pub fn run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, std::time::Duration)> {
        let prog = self.prog.as_mut().context("xdp-filter is not loaded")?;
        run_program(prog, frame, repeat).context("xdp-filter test run")
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let iface = self.iface.clone();
        if let Err(e) = self.xdp_filter(&["unload", &iface], false) {
            eprintln!("bench: {e:#}");
        }
    }
}

/// The steps the breakdown stops after, with their labels.
pub const STEPS: [(u32, &str); 5] = [
    (BENCH_STOP_AFTER_IFACE, "interface lookup"),
    (BENCH_STOP_AFTER_PARSE, "+ clock, parse"),
    (BENCH_STOP_AFTER_CONNTRACK, "+ conntrack lookup"),
    (BENCH_STOP_AFTER_CLASSIFY, "+ classification"),
    (
        BENCH_STOP_NO_ACCOUNTING,
        "+ conntrack open (all but accounting)",
    ),
];

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub workload: Workload,
    pub rules: usize,
    pub baseline_ns: f64,
    /// sg's tracked-connection hit, and xdp-filter passing the same frame.
    pub sg_hit_ns: f64,
    pub xdp_filter_pass_ns: f64,
    pub hit_ratio: f64,
    /// A SYN from a source no rule names: sg drops it (no rule),
    /// xdp-filter drops it by its source.
    pub sg_denied_ns: f64,
    pub xdp_filter_drop_ns: f64,
    pub denied_ratio: f64,
    /// The same denied SYN with the options Linux sends (MSS, SACK
    /// permitted, timestamps, window scale), as a real client's is.
    pub sg_denied_opts_ns: f64,
    pub xdp_filter_drop_opts_ns: f64,
    pub denied_opts_ratio: f64,
    /// Per step (see [`STEPS`]): (hit ns, denied ns) of the variant that
    /// stops after it.
    pub steps: Vec<(String, f64, f64)>,
}

/// Measures sg (whole and per step) and xdp-filter on the same frames of
/// `workload` at `n` rules, in interleaved rounds.
pub fn compare(workload: Workload, n: usize, xf: &mut XdpFilter) -> Result<PeerRow> {
    let family = match workload {
        Workload::Hosts(f) | Workload::Mixed(f) | Workload::MixedCidr(f) | Workload::Nacl(f) => f,
    };
    let mut case = prepare(workload, n)?;
    let local = match family {
        Family::V4 => "198.19.255.254".parse()?,
        Family::V6 => "2001:db8:ffff::1".parse()?,
    };
    let denied = packet::tcp(denied_source(family), local, 40003, DENIED_PORT, SYN);
    let with_options = packet::TcpSeg {
        wscale: Some(7),
        payload: 0,
        ..packet::TcpSeg::default()
    };
    let denied_opts = packet::tcp_seg(
        denied_source(family),
        local,
        40003,
        DENIED_PORT,
        SYN,
        &with_options,
    );
    let hit = case.hit.clone();
    for frame in [&denied, &denied_opts] {
        ensure!(
            case.bed.ingress(frame)? == crate::testrun::Verdict::Drop,
            "sg must drop the denied SYN"
        );
        ensure!(
            xf.run(frame, 1)?.0 == XDP_DROP,
            "xdp-filter must drop the denied SYN"
        );
    }
    ensure!(
        xf.run(&hit, 1)?.0 == XDP_PASS,
        "xdp-filter must pass the hit"
    );
    let mut variants: Vec<Datapath> = STEPS
        .iter()
        .map(|(stop, _)| case.bed.bench_variant(*stop))
        .collect::<Result<_>>()?;
    let ns = |d: std::time::Duration| d.as_nanos() as f64;
    // Per round: baseline, sg hit, xf pass, sg denied, xf drop, the same
    // two with SYN options, then (hit, denied) per step.
    let mut rounds: Vec<Vec<f64>> = Vec::new();
    for _ in 0..ROUNDS {
        let before = ns(case.bed.run_baseline(&hit, REPEAT)?.1);
        let mut r = vec![
            0.0,
            ns(case.bed.run_xdp(&hit, REPEAT)?.1),
            ns(xf.run(&hit, REPEAT)?.1),
            ns(case.bed.run_xdp(&denied, REPEAT)?.1),
            ns(xf.run(&denied, REPEAT)?.1),
            ns(case.bed.run_xdp(&denied_opts, REPEAT)?.1),
            ns(xf.run(&denied_opts, REPEAT)?.1),
        ];
        for v in &mut variants {
            r.push(ns(run_program(v.xdp()?, &hit, REPEAT)?.1));
            r.push(ns(run_program(v.xdp()?, &denied, REPEAT)?.1));
        }
        let after = ns(case.bed.run_baseline(&hit, REPEAT)?.1);
        r[0] = (before + after) / 2.0;
        rounds.push(r);
    }
    let col = |c: usize| median(rounds.iter().map(|r| r[c]).collect());
    let ratio = |a: usize, b: usize| median(rounds.iter().map(|r| r[a] / r[b].max(1.0)).collect());
    Ok(PeerRow {
        workload,
        rules: case.rules,
        baseline_ns: col(0),
        sg_hit_ns: col(1),
        xdp_filter_pass_ns: col(2),
        hit_ratio: ratio(1, 2),
        sg_denied_ns: col(3),
        xdp_filter_drop_ns: col(4),
        denied_ratio: ratio(3, 4),
        sg_denied_opts_ns: col(5),
        xdp_filter_drop_opts_ns: col(6),
        denied_opts_ratio: ratio(5, 6),
        steps: STEPS
            .iter()
            .enumerate()
            .map(|(i, (_, label))| (label.to_string(), col(7 + 2 * i), col(8 + 2 * i)))
            .collect(),
    })
}
