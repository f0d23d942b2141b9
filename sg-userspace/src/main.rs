use anyhow::{Context as _, Result};
use clap::Parser as _;
use sg::{
    cli::{Cli, Command, ConntrackCommand, ExportCommand, ImportCommand},
    compile, confirm, conntrack, demo, enforcer,
    events::{self, Format},
    explain::{self, Flow},
    lockout, metrics, netns, packaging,
    state::StateDir,
    status,
};

/// mimalloc, not glibc's malloc: a 10,000-rule apply builds and drops
/// hundreds of thousands of small allocations (TOML tree, config, compiled
/// set, plan, state). With glibc they cost ~7,400 page faults and ~40% more
/// CPU (`perf stat sg validate` on the bench's config); mimalloc's
/// segments fault in a few hundred times.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Metrics { .. } | Command::Agent(_) | Command::Fleet { .. } | Command::Demo { .. }
    ) {
        // Output into a closed pipe (`sg conntrack list | head`) ends the
        // command quietly, as it does for any Unix filter, instead of a
        // panic in println!. Not for commands that talk over sockets (the
        // metrics server, etcd for the agent and `sg fleet`, the demo's
        // clients): a peer that closes its end (a scraper hanging up, etcd
        // refusing a TLS handshake) would kill them without a word; they
        // get EPIPE as an error instead.
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
    let total = sg::phase::start("command");
    let result = run(cli);
    drop(total);
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    exit_now(code)
}

/// Ends the process without its exit handlers: mimalloc's walks the whole
/// heap and hands it back to the kernel page by page (several ms after a
/// 10,000-rule apply), which the exit itself does at once. Everything
/// `sg` keeps is in files and pinned maps by now; output is flushed here.
fn exit_now(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(code) }
}

fn run(cli: Cli) -> Result<()> {
    // Before any thread exists: setns applies to the calling thread only.
    if let Some(name) = &cli.netns {
        netns::enter(name)?;
    }
    if !matches!(
        cli.command,
        Command::Validate { .. }
            | Command::Demo { .. }
            | Command::Fleet { .. }
            | Command::Import { .. }
            | Command::Export { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
    ) {
        sg::bpffs::ensure_pins_outlive_process(&cli.state_dir)?;
    }
    let dir = StateDir::new(&cli.state_dir);
    match cli.command {
        Command::Attach {
            iface: None,
            config,
            mode,
            ..
        } => {
            lockout::warn_for_attach(&dir, &config.path, None, None);
            for (iface, attached) in enforcer::attach_all(&dir, &config.path, mode)? {
                println!(
                    "attached to {iface} ({}); {}",
                    hook_name(&attached.mode),
                    sg::adopt::describe(&attached.adopted)
                );
            }
            println!("enforcement is pinned under {}", dir.pins.display());
        }
        Command::Attach {
            iface: Some(iface),
            config,
            groups,
            mode,
            ..
        } => {
            lockout::warn_for_attach(&dir, &config.path, Some(&iface), groups.as_deref());
            let req = enforcer::AttachRequest {
                iface: &iface,
                config_path: &config.path,
                groups,
                mode,
            };
            let attached = enforcer::attach(&dir, &req)?;
            println!(
                "attached to {iface} ({}); {}; enforcement is pinned under {}",
                hook_name(&attached.mode),
                sg::adopt::describe(&attached.adopted),
                dir.pins.display()
            );
        }
        Command::Apply {
            config,
            dry_run,
            json,
            confirm: within,
        } => {
            let (report, pending) = match within {
                Some(within) => {
                    let (report, pending) = confirm::apply_confirmed(&dir, &config.path, within)?;
                    (report, Some(pending))
                }
                None => {
                    if !dry_run {
                        confirm::refuse_if_pending(&dir)?;
                    }
                    let checked = enforcer::apply_checked(&dir, &config.path, dry_run, Some(false));
                    (checked?, None)
                }
            };
            if let Some(p) = &pending {
                eprintln!(
                    "run `sg confirm` by {} ({}s) to keep it; otherwise the policy in force before comes back then",
                    p.deadline_rfc3339(),
                    p.remaining().as_secs()
                );
            }
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
                    lines.extend(["+ ", id, "\n"]);
                }
                for id in &report.rules_removed {
                    lines.extend(["- ", id, "\n"]);
                }
                print!("{lines}");
                for (iface, count) in &report.adopted {
                    if count.adopted + count.no_room > 0 {
                        println!("{iface}: {}", sg::adopt::describe(count));
                    }
                }
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
            sg::reclaim::later(report);
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
            confirm::revive_watcher(&dir)?;
            let s = status::status(&dir)?;
            if json {
                let mut value = serde_json::to_value(&s)?;
                value["pending_confirmation"] = confirm::status_json(&dir)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                status::print_status(&s);
                if let Some(line) = confirm::status_line(&dir)? {
                    println!("{line}");
                }
            }
        }
        Command::Explain {
            iface,
            from,
            to,
            proto,
            icmp_type,
            icmp_code,
            direction,
            json,
        } => {
            let direction = if direction == "egress" {
                sg_common::Direction::Egress
            } else {
                sg_common::Direction::Ingress
            };
            let flow = Flow::parse(&iface, direction, &from, &to, &proto, icmp_type, icmp_code)?;
            let e = explain::explain(&dir, &flow)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                explain::print(&e);
            }
        }
        Command::Confirm => {
            let p = confirm::confirm(&dir)?;
            println!(
                "confirmed {}, {}s before its deadline {}: it stays in force and the rollback to {} is cancelled",
                p.config.display(),
                p.remaining().as_secs(),
                p.deadline_rfc3339(),
                p.previous_config
                    .as_deref()
                    .unwrap_or(&p.rollback_config)
                    .display()
            );
        }
        Command::ConfirmWatch { token } => confirm::watch(&dir, &token)?,
        Command::Completions { shell } => {
            packaging::completions(shell, &mut std::io::stdout());
        }
        Command::Man { out } => {
            for file in packaging::man_pages(&out)? {
                println!("{}", out.join(file).display());
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
                    "nacls": s.nacls,
                    "nacl_rules": s.nacl_rules,
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
            flow_log_version,
        } => {
            let format = if json {
                Format::Json
            } else if flow_log && flow_log_version == 5 {
                Format::FlowLogV5
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
        Command::Demo { fleet: false } => demo::run()?,
        Command::Demo { fleet: true } => sg::fleet::demo::run()?,
        Command::Fleet { command } => sg::fleet::cli::fleet(command)?,
        Command::Agent(args) => sg::fleet::cli::agent(&dir, args)?,
        Command::Import {
            command:
                ImportCommand::Aws {
                    file,
                    output,
                    rules,
                    nacls,
                    prefix_lists,
                },
        } => {
            let imported = sg::aws::import_files(&file, &rules, nacls.as_deref(), &prefix_lists)?;
            for w in &imported.warnings {
                eprintln!("warning: {w}");
            }
            match output {
                Some(path) => {
                    std::fs::write(&path, &imported.toml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote {}; check it with: sg validate -c {}",
                        path.display(),
                        path.display()
                    );
                }
                None => print!("{}", imported.toml),
            }
        }
        Command::Export {
            command: ExportCommand::Aws { config },
        } => {
            let cfg = enforcer::load_config(&config.path)?;
            let (doc, notes) = sg::aws::export_json(&cfg);
            for n in &notes {
                eprintln!("note: {n}");
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
    }
    Ok(())
}

/// How ingress is hooked, for messages: "XDP native", "TC ingress", ...
fn hook_name(mode: &str) -> String {
    if mode == "tc" {
        "TC ingress".to_string()
    } else {
        format!("XDP {mode}")
    }
}
