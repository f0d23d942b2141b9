use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;
use sg::{
    cli::{Cli, Command, ConntrackCommand},
    compile, conntrack, demo, enforcer,
    events::{self, Format},
    metrics, netns,
    state::StateDir,
    status,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Metrics { .. }) {
        // Output into a closed pipe (`sg conntrack list | head`) ends the
        // command quietly, as it does for any Unix filter, instead of a
        // panic in println!. Not for the metrics server: a scraper that
        // hangs up must not end it.
        // SAFETY: called before any other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // Before any thread exists: setns applies to the calling thread only.
    if let Some(name) = &cli.netns {
        netns::enter(name)?;
    }
    if !matches!(cli.command, Command::Validate { .. } | Command::Demo) {
        sg::bpffs::ensure_pins_outlive_process(&cli.state_dir)?;
    }
    let dir = StateDir::new(&cli.state_dir);
    match cli.command {
        Command::Attach {
            iface,
            config,
            groups,
            mode,
        } => {
            let req = enforcer::AttachRequest {
                iface: &iface,
                config_path: &config.path,
                groups,
                mode,
            };
            let mode = enforcer::attach(&dir, &req)?;
            let hook = if mode == "tc" {
                "TC ingress".to_string()
            } else {
                format!("XDP {mode}")
            };
            println!(
                "attached to {iface} ({hook}); enforcement is pinned under {}",
                dir.pins.display()
            );
        }
        Command::Apply {
            config,
            dry_run,
            json,
        } => {
            let report = enforcer::apply(&dir, &config.path, dry_run)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let verb = if dry_run { "would change" } else { "applied" };
                for i in &report.interfaces {
                    if i.groups_before != i.groups_after {
                        println!(
                            "{}: groups {} -> {}",
                            i.iface,
                            i.groups_before.join(","),
                            i.groups_after.join(",")
                        );
                    }
                }
                // One write for the lot: 10,000 lines through a line-buffered
                // stdout cost 10,000 syscalls.
                let mut lines = String::new();
                for id in &report.rules_added {
                    lines.push_str(&format!("+ {id}\n"));
                }
                for id in &report.rules_removed {
                    lines.push_str(&format!("- {id}\n"));
                }
                print!("{lines}");
                println!(
                    "{verb}: {} rules added, {} removed, {} in force on {} interfaces",
                    report.rules_added.len(),
                    report.rules_removed.len(),
                    report.rule_count,
                    report.interfaces.len()
                );
                if let Some(n) = report.entries_written {
                    println!("{n} map entries written (only what changed)");
                }
            }
        }
        Command::Detach { iface, all } => {
            let detached = enforcer::detach(&dir, if all { None } else { iface.as_deref() })?;
            if detached.is_empty() {
                println!("nothing was attached");
            } else {
                println!("detached {}", detached.join(", "));
            }
        }
        Command::Status { json } => {
            let s = status::status(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                status::print_status(&s);
            }
        }
        Command::Stats { json } => {
            let s = status::stats(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                status::print_stats(&s);
            }
        }
        Command::Validate { config, json } => {
            let cfg = enforcer::load_config(&config.path)?;
            let compiled = compile::compile(&cfg, &compile::attachments_from_config(&cfg), 1)?;
            let s = compiled.summary();
            if json {
                let value = serde_json::json!({
                    "file": config.path,
                    "groups": s.groups,
                    "rules": s.rules,
                    "interfaces": s.interfaces,
                    "policies": s.policies,
                    "classes": s.classes,
                    "peer_hosts_v4": s.peer_hosts_v4,
                    "peer_hosts_v6": s.peer_hosts_v6,
                    "peer_prefixes_v4": s.peer_prefixes_v4,
                    "peer_prefixes_v6": s.peer_prefixes_v6,
                    "length_trees": s.length_trees,
                    "rule_sets": s.rule_sets,
                    "rule_intervals": s.rule_intervals,
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                println!("{}: ok", config.path.display());
                println!("{s}");
            }
        }
        Command::Watch {
            iface,
            json,
            flow_log,
        } => {
            let format = if json {
                Format::Json
            } else if flow_log {
                Format::FlowLog
            } else {
                Format::Text
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(events::watch(
                &dir,
                &events::WatchOptions::new(iface, format),
            ))?;
        }
        Command::Metrics { listen } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(metrics::serve(&dir, listen))?;
        }
        Command::Conntrack { command } => match command {
            ConntrackCommand::List { json } => {
                let entries = conntrack::list(&dir)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&entries)?);
                } else {
                    conntrack::print_list(&entries);
                }
            }
            ConntrackCommand::Flush => {
                let n = conntrack::flush(&dir)?;
                println!("flushed {n} tracked connections");
            }
            ConntrackCommand::Gc { json } => {
                let sweep = conntrack::gc(&dir)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&sweep)?);
                } else {
                    println!(
                        "removed {} expired of {} entries",
                        sweep.removed, sweep.scanned
                    );
                }
            }
        },
        Command::Demo => demo::run()?,
    }
    Ok(())
}
