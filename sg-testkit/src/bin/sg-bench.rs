//! `cargo xtask bench`: per-packet cost at several rule counts
//! (BPF_PROG_TEST_RUN) and end-to-end figures against nftables. Writes
//! target/bench/report.json, and Markdown on stdout.
//!
//! Usage: sg-bench [--no-e2e] [--no-fleet] [--peer-only] [--e2e-only] [--only TEXT] [RULE_COUNT...]
//!        sg-bench --fleet-only   (fleet convergence alone: target/bench/fleet.json)
//!        sg-bench --apply-only   (10,000-rule `sg apply` alone: target/bench/apply.json)
//! (`--peer-only`: only the xdp-filter comparison and the per-step table;
//! `--e2e-only`: only the end-to-end runs over veth)
//! (`--only` keeps the workloads whose label contains TEXT, e.g. "V4 mixed")

use anyhow::Result;
use sg_testkit::{
    bench::{Family, Workload, measure, program_sizes},
    bench_apply, bench_e2e, bench_fleet,
    bench_peer::{self, XdpFilter},
};

/// Simulated hosts of the fleet convergence bench (SPEC 8.5).
const FLEET_HOSTS: usize = 1_000;

/// The fleet convergence bench, on its own or as part of the whole run.
fn fleet() -> Result<bench_fleet::FleetReport> {
    bench_fleet::run(sg_beside_bench()?, FLEET_HOSTS)
}

/// The `sg` under test: the one built beside this bench.
fn sg_beside_bench() -> Result<std::path::PathBuf> {
    std::env::current_exe()?
        .parent()
        .map(|d| d.join("sg"))
        .ok_or_else(|| anyhow::anyhow!("the bench binary has no directory"))
}

/// Rules given to both sg and nftables in the end-to-end comparison.
const E2E_RULES: usize = 1_000;

fn main() -> Result<()> {
    let mut e2e = true;
    let mut with_fleet = true;
    let mut scaling = true;
    let mut peer = true;
    let mut only: Option<String> = None;
    let mut sizes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--no-e2e" {
            e2e = false;
        } else if arg == "--no-fleet" {
            with_fleet = false;
        } else if arg == "--fleet-only" {
            let report = fleet()?;
            std::fs::create_dir_all("target/bench")?;
            std::fs::write(
                "target/bench/fleet.json",
                serde_json::to_string_pretty(&report)?,
            )?;
            print!("{}", bench_fleet::markdown(&report));
            return Ok(());
        } else if arg == "--e2e-only" {
            with_fleet = false;
            scaling = false;
            peer = false;
        } else if arg == "--apply-only" {
            let report = bench_apply::run(sg_beside_bench()?)?;
            std::fs::create_dir_all("target/bench")?;
            std::fs::write(
                "target/bench/apply.json",
                serde_json::to_string_pretty(&report)?,
            )?;
            print!("{}", bench_apply::markdown(&report));
            return Ok(());
        } else if arg == "--peer-only" {
            with_fleet = false;
            e2e = false;
            scaling = false;
        } else if arg == "--only" {
            only = Some(anyhow::Context::context(args.next(), "--only needs TEXT")?);
        } else {
            sizes.push(anyhow::Context::with_context(arg.parse::<usize>(), || {
                format!("not a rule count: {arg}")
            })?);
        }
    }
    if sizes.is_empty() {
        sizes = vec![10, 1_000, 10_000, 100_000];
    }
    let mut rows = Vec::new();
    let workloads = [
        Workload::Hosts(Family::V4),
        Workload::Hosts(Family::V6),
        Workload::Mixed(Family::V4),
        Workload::Mixed(Family::V6),
        Workload::MixedCidr(Family::V4),
        Workload::MixedCidr(Family::V6),
        Workload::Nacl(Family::V4),
        Workload::Nacl(Family::V6),
    ];
    let selected = workloads
        .into_iter()
        .filter(|w| scaling && only.as_ref().is_none_or(|t| w.label().contains(t.as_str())));
    // A NACL holds at most 32,766 rules: its own sizes (SPEC 2.5).
    let sizes_of = |w: Workload| -> Vec<usize> {
        match w {
            Workload::Nacl(_) if sizes == [10, 1_000, 10_000, 100_000] => {
                sg_testkit::bench::NACL_SIZES.to_vec()
            }
            Workload::Nacl(_) => sizes.iter().copied().filter(|&n| n <= 32_766).collect(),
            _ => sizes.clone(),
        }
    };
    for workload in selected {
        for row in measure(workload, &sizes_of(workload))? {
            eprintln!("{row:?}");
            rows.push(row);
        }
    }
    // Side by side with xdp-filter, and sg's cost per step, at the
    // smallest and largest rule counts.
    let mut peer_rows = Vec::new();
    if peer {
        let families = [Family::V4, Family::V6];
        let deny: Vec<_> = families
            .iter()
            .map(|f| bench_peer::denied_source(*f))
            .collect();
        let mut xf = XdpFilter::load(&deny)?;
        let mut counts = vec![sizes[0]];
        counts.extend(sizes.last().filter(|&&n| n != sizes[0]));
        for family in families {
            let workload = Workload::Hosts(family);
            if only
                .as_ref()
                .is_some_and(|t| !workload.label().contains(t.as_str()))
            {
                continue;
            }
            for &n in &counts {
                let row = bench_peer::compare(workload, n, &mut xf)?;
                eprintln!("{row:?}");
                peer_rows.push(row);
            }
        }
    }
    let e2e = if e2e {
        Some(bench_e2e::run(E2E_RULES)?)
    } else {
        None
    };
    eprintln!("{e2e:?}");
    let fleet = if with_fleet { Some(fleet()?) } else { None };
    std::fs::create_dir_all("target/bench")?;
    let programs = program_sizes()?;
    let report = serde_json::json!({
        "test_run": rows,
        "peer": peer_rows,
        "e2e": e2e,
        "programs": programs,
        "fleet": fleet,
    });
    std::fs::write(
        "target/bench/report.json",
        serde_json::to_string_pretty(&report)?,
    )?;

    println!("## Per-packet cost (BPF_PROG_TEST_RUN, XDP ingress)\n");
    println!("Each figure is the time per packet divided by the time of a do-nothing XDP");
    println!("program (`sg_baseline`) run just before and after it, 200,000 runs per");
    println!("measurement, median of 11 rounds, all rules on one interface. Every rule count");
    println!("of a workload is installed at once and measured in the same rounds, so the");
    println!("growth figures below compare costs side by side.\n");
    println!("- *hosts*: TCP rules from distinct host peers to distinct ports, 1,000 per group;");
    println!("- *mixed*: v4 and v6 rules, four per nested block (a /28 or /64 to ports 1000-1999,");
    println!("  a /30 or /126 inside it to 20000-20063, two hosts: one port, 5000-5099 udp), 250");
    println!("  blocks per group, plus http from anywhere, ssh from both test ranges, icmp;");
    println!("  the packet is to a port inside a range, from a host a rule names (*mixed*)");
    println!("  or from another address of a /30 or /126 (*mixed, CIDR peer*);");
    println!("- *NACL*: a NACL of N numbered rules (allow and deny alternating, each from its");
    println!("  own host to its own 10 ports, then an ephemeral-port allow) before one SG rule;");
    println!("  the packets are decided by rules in the middle (every packet, tracked or not,");
    println!("  is judged by the NACL): its target is at most 1.3x from 10 to 10,000 rules;");
    println!("- *conntrack hit*: an ACK of a tracked connection;");
    println!("- *new flow allowed*: an ACK a rule allows, with no entry (classified every time);");
    println!("- *new flow denied*: an ACK no rule allows (classification, drop counter, event);");
    println!("- *policy maps*: kernel memory of the peer and rule maps (fdinfo memlock).\n");
    println!(
        "| workload | rules | conntrack hit | new flow allowed | new flow denied | baseline ns | load+install ms | policy maps MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.2}x | {:.2}x | {:.2}x | {:.0} | {} | {:.1} |",
            r.workload.label(),
            r.rules,
            r.conntrack_hit,
            r.new_flow_allowed,
            r.new_flow_denied,
            r.baseline_ns,
            r.install_ms,
            r.policy_map_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    println!();
    for workload in workloads {
        let of = |n: usize| rows.iter().find(|r| r.workload == workload && r.rules == n);
        let sizes = sizes_of(workload);
        let (Some(&first), Some(&last)) = (sizes.first(), sizes.last()) else {
            continue;
        };
        if let (Some(small), Some(big)) = (of(first), of(last)) {
            println!(
                "- {}: new-flow cost at {} rules / at {} rules = {:.2} (allowed), {:.2} (denied).",
                workload.label(),
                big.rules,
                small.rules,
                big.allowed_growth,
                big.denied_growth
            );
        }
    }
    println!("\n## Side by side with xdp-filter (BPF_PROG_TEST_RUN, XDP ingress)\n");
    println!("xdp-tools' `xdp-filter` (every feature, default allow, `LIBXDP_SKIP_DISPATCHER=1`,");
    println!(
        "skb mode on a veth in a lab namespace, one `ip --mode src` rule) and sg judge the same"
    );
    println!("frames in the same rounds (200,000 runs per measurement, median of 11 rounds).");
    println!(
        "*Denied*: a TCP SYN from a source no sg rule names (sg: no rule; xdp-filter: dropped"
    );
    println!(
        "by its source). *Tracked hit*: an ACK of a connection sg tracks (xdp-filter passes it"
    );
    println!("after every lookup). Figures in ns per packet; ratios are taken round by round.\n");
    println!(
        "| workload | rules | sg denied | xdp-filter drop | ratio | sg tracked hit | xdp-filter pass | ratio | baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &peer_rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.2}x | {:.0} |",
            r.workload.label(),
            r.rules,
            r.sg_denied_ns,
            r.xdp_filter_drop_ns,
            r.denied_ratio,
            r.sg_hit_ns,
            r.xdp_filter_pass_ns,
            r.hit_ratio,
            r.baseline_ns
        );
    }
    println!("\nThe denied SYN again, with the options a Linux client sends (MSS, SACK");
    println!("permitted, timestamps, window scale: 20 option bytes), same rounds:\n");
    println!("| workload | rules | sg denied | xdp-filter drop | ratio |");
    println!("|---|---:|---:|---:|---:|");
    for r in &peer_rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2}x |",
            r.workload.label(),
            r.rules,
            r.sg_denied_opts_ns,
            r.xdp_filter_drop_opts_ns,
            r.denied_opts_ratio
        );
    }
    println!("\n### sg's cost per step\n");
    println!("Program variants that stop after each step (`SG_BENCH_STOP`, read-only data the");
    println!(
        "verifier prunes by), measured in the same rounds as the table above; ns per packet.\n"
    );
    println!(
        "| workload | rules | packet | {} | whole verdict |",
        bench_peer::STEPS.map(|(_, l)| l).join(" | ")
    );
    println!(
        "|---|---:|---|{}---:|",
        "---:|".repeat(bench_peer::STEPS.len())
    );
    for r in &peer_rows {
        for (packet, pick, whole) in [
            ("tracked hit", 0, r.sg_hit_ns),
            ("denied SYN", 1, r.sg_denied_ns),
        ] {
            let cells: Vec<String> = r
                .steps
                .iter()
                .map(|s| format!("{:.0}", if pick == 0 { s.1 } else { s.2 }))
                .collect();
            println!(
                "| {} | {} | {} | {} | {:.0} |",
                r.workload.label(),
                r.rules,
                packet,
                cells.join(" | "),
                whole
            );
        }
    }
    println!("\n## Hot path\n");
    println!("| program | instructions (xlated) | instructions the verifier walked |");
    println!("|---|---:|---:|");
    for p in &programs {
        println!("| {} | {} | {} |", p.name, p.instructions, p.verified);
    }
    println!();
    println!("Map operations per packet (keys in bytes):");
    println!("- every packet: `IFACE_FAST` (array by ifindex, inlined; the `IFACE_POLICY` hash");
    println!("  only for ifindexes beyond it), `SCRATCH` and `CONFIG` (arrays, inlined), the");
    println!("  coarse clock (`bpf_ktime_get_coarse_ns`);");
    println!("- conntrack hit: `CONNTRACK` (hash, 44) and the rule-hit counter `RULE_HITS`");
    println!("  (per-CPU hash, 4); no classification at all;");
    println!("- new flow: `PEER_HOSTS_V4/V6` (hash, 8/20); for a peer that is not a host,");
    println!("  `PEER_LENGTHS` (hash, 8; skipped when the policy names only hosts of the family)");
    println!("  and one `PEER_NETS_V4/V6` probe (hash, 12/24) per level of the length tree, at");
    println!("  most 6 (v4) or 8 (v6); `RULE_SETS` (hash, 8; a second one for a protocol only");
    println!("  `all` rules name); at most 16 `RULE_INTERVALS` probes (array, inlined); the");
    println!("  conntrack insert;");
    println!("- drop: the interface's row of `DROPS_FAST` (per-CPU array, inlined; the `DROPS`");
    println!("  hash when another interface holds the row), the event token bucket (per-CPU");
    println!("  array).");
    if let Some(e) = &e2e {
        println!(
            "\n## End to end over veth (namespaces), {} rules\n",
            e.rules
        );
        println!(
            "nftables gets the same rules in its idiomatic form: `ct state established,related accept`,"
        );
        println!("then one set element per security-group rule, then a counted drop. The flood is");
        println!(
            "1,500,000 TCP SYNs to a denied port from `trafgen` on one CPU, as fast as it can"
        );
        println!(
            "send: on veth the receiver's work runs in the sender's context, so the rate reached"
        );
        println!("is set by the whole per-packet cost, filter included. Throughput is iperf3, one");
        println!("TCP stream.\n");
        println!("| filter | TCP Gbit/s | drops/s under flood | offered pps |");
        println!("|---|---:|---:|---:|");
        for f in &e.filters {
            println!(
                "| {} | {:.2} | {:.0} | {:.0} |",
                f.name, f.tcp_gbps, f.drops_per_sec, f.offered_pps
            );
        }
        let find = |n: &str| e.filters.iter().find(|f| f.name == n);
        for sg in ["sg (XDP)", "sg (TC ingress)"] {
            if let (Some(sg), Some(nft)) = (find(sg), find("nftables")) {
                println!(
                    "\n{} / nftables: drops/s {:.2}, TCP throughput {:.2}.",
                    sg.name,
                    sg.drops_per_sec / nft.drops_per_sec.max(1.0),
                    sg.tcp_gbps / nft.tcp_gbps.max(1e-9)
                );
            }
        }
        println!(
            "\nThroughput through `--mode auto` (TC ingress on veth) against no filter, {} alternating",
            e.auto_rounds.len()
        );
        println!("rounds of one iperf3 stream each (Gbit/s):\n");
        println!("| round | none | sg (auto) | ratio |");
        println!("|---:|---:|---:|---:|");
        for (i, (none, sg)) in e.auto_rounds.iter().enumerate() {
            println!(
                "| {} | {none:.2} | {sg:.2} | {:.3} |",
                i + 1,
                sg / none.max(1e-9)
            );
        }
        println!(
            "\nMedian ratio: {:.3} (target: at least 0.95).",
            bench_e2e::median_ratio(&e.auto_rounds)
        );
        println!(
            "\nLive update: `sg apply` replacing 10,000 rules with 10,000 others takes {} ms (mean of 4);",
            e.update_ms
        );
        println!(
            "a ping every 2 ms through the updates: {} sent, {} received.",
            e.pings_sent, e.pings_received
        );
    }
    if let Some(f) = &fleet {
        println!("\n{}", bench_fleet::markdown(f));
    }
    Ok(())
}
