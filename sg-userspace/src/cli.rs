//! Command-line interface (SPEC 4).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::datapath::AttachMode;

/// Cloud-style security groups for Linux, enforced by XDP and TC.
///
/// Write security groups in a TOML file (allow-only, stateful rules whose
/// peers are CIDRs or other groups), check it with `sg validate`, enforce
/// it with `sg attach`, change it live with `sg apply`, and see what is
/// dropped with `sg watch`.
#[derive(Debug, Parser)]
#[command(name = "sg", version = crate::packaging::VERSION, propagate_version = true)]
pub struct Cli {
    /// Where enforcement is pinned (a bpffs directory; mounted if needed).
    #[arg(
        long,
        global = true,
        env = "SG_STATE_DIR",
        default_value = "/sys/fs/bpf/sg"
    )]
    pub state_dir: PathBuf,

    /// Run inside the named network namespace (as listed by `ip netns`).
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,

    /// More logging (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enforce security groups on an interface.
    ///
    /// Loads the programs, attaches XDP (ingress) and TC (egress) to IFACE
    /// and enforces the groups named by --groups or by [interfaces.IFACE]
    /// in FILE. Enforcement is pinned under --state-dir and stays after
    /// this command exits.
    #[command(
        after_help = "Example:\n  sg attach eth1 -c /etc/sg.toml\n  sg attach eth1 -c /etc/sg.toml --groups web,ssh\n  sg attach --all -c /etc/sg/sg.toml   # every [interfaces.NAME] (what sg-apply.service runs at boot)"
    )]
    Attach {
        /// Interface to enforce on.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        iface: Option<String>,
        /// Attach every interface the config names in [interfaces.NAME].
        #[arg(long, conflicts_with = "groups")]
        all: bool,
        #[command(flatten)]
        config: ConfigArg,
        /// Groups to enforce, overriding [interfaces.IFACE].
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        groups: Option<Vec<String>>,
        /// Ingress hook: XDP (auto tries native, then generic) or tc.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        mode: AttachMode,
    },
    /// Update every attached interface to FILE, live and atomically.
    ///
    /// New rules are written beside the old ones, each interface is switched
    /// to them with one map update, then the old rules are removed. Tracked
    /// connections are kept.
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the change as JSON.
        #[arg(long)]
        json: bool,
        /// Roll back to the policy in force before, atomically, unless
        /// `sg confirm` runs within DURATION (e.g. 90s, 2m). The rollback
        /// is done by a detached process, so it happens even if this one
        /// (or the SSH session running it) dies.
        #[arg(long, value_name = "DURATION", value_parser = parse_confirm_duration, conflicts_with = "dry_run")]
        confirm: Option<std::time::Duration>,
    },
    /// The verdict a new packet of a flow gets on an interface, and why.
    ///
    /// Reads the kernel's installed maps under the state dir and classifies
    /// the packet as the datapath does: the security-group rule that allows
    /// it (sgr- ID, group, index, description) or that none does, the rules
    /// that come closest (same port from another peer; same peer on another
    /// port), and whether the config in force agrees with the kernel
    /// (drift). For ingress the peer is --from; for egress, --to.
    #[command(
        after_help = "Examples:\n  sg explain --iface eth1 --from 198.18.0.7 --to 198.18.0.1:22\n  sg explain --iface eth1 --from '[2001:db8::7]:5353' --to '[2001:db8::1]:53' --proto udp\n  sg explain --iface eth1 --from 198.18.0.1 --to 198.18.0.7 --proto icmp --icmp-type 8 --direction egress --json"
    )]
    Explain {
        /// Interface the packet crosses.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        /// Source address (and port).
        #[arg(long, value_name = "ADDR[:PORT]")]
        from: String,
        /// Destination address and port (the port is what rules match).
        #[arg(long, value_name = "ADDR[:PORT]")]
        to: String,
        /// tcp, udp, icmp, icmpv6 or a protocol number.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// ICMP type (default: echo request).
        #[arg(long, value_name = "T")]
        icmp_type: Option<u8>,
        /// ICMP code (default 0).
        #[arg(long, value_name = "C")]
        icmp_code: Option<u8>,
        /// Which way the packet crosses the interface.
        #[arg(long, default_value = "ingress", value_parser = ["ingress", "egress"])]
        direction: String,
        #[arg(long)]
        json: bool,
    },
    /// Keep the policy of a pending `sg apply --confirm`: cancels its rollback.
    Confirm,
    /// Print shell completions for bash, zsh or fish.
    #[command(
        after_help = "Example:\n  sg completions bash > /etc/bash_completion.d/sg\n  sg completions zsh > /usr/share/zsh/vendor-completions/_sg\n  sg completions fish > /usr/share/fish/vendor_completions.d/sg.fish"
    )]
    Completions {
        /// Shell to write completions for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (sg.8, sg-attach.8, ...) into DIR.
    #[command(hide = true)]
    Man {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// The rollback of `sg apply --confirm`, run detached by it.
    #[command(hide = true)]
    ConfirmWatch {
        /// The pending confirmation this process serves.
        #[arg(long)]
        token: String,
    },
    /// Stop enforcing on an interface (or all) and remove its pinned state.
    Detach {
        /// Interface to detach.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        iface: Option<String>,
        /// Detach every interface and remove all pinned state.
        #[arg(long)]
        all: bool,
    },
    /// Attached interfaces, their groups, rule counts and conntrack use.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stream drop events until interrupted.
    ///
    /// Text by default (colored on a terminal), one JSON object per line
    /// with --json, or AWS VPC Flow Logs v2 lines with --flow-log. Events
    /// are rate-limited in the kernel ([events] per_second, per CPU); how
    /// many were suppressed is reported every second they were (stderr, or
    /// a {"suppressed": N, ...} object with --json) and in a summary at the
    /// end. Counters are never limited: see `sg stats`.
    Watch {
        /// Only events of this interface.
        #[arg(long, value_name = "IFACE")]
        iface: Option<String>,
        /// One JSON object per line.
        #[arg(long, conflicts_with = "flow_log")]
        json: bool,
        /// AWS VPC Flow Logs version 2 lines.
        #[arg(long)]
        flow_log: bool,
    },
    /// Exact counters: drops by interface, direction and reason; allowed
    /// packets and bytes by rule; suppressed events; conntrack entries.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Show, clear or collect tracked connections.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Serve the counters of `sg stats` as Prometheus text on /metrics
    /// until interrupted.
    #[command(after_help = "Example:\n  sg metrics --listen 127.0.0.1:9469")]
    Metrics {
        /// Address and port to listen on.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: std::net::SocketAddr,
    },
    /// Check a config file and print the compiled rule counts. Needs no root.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Build a lab of network namespaces, enforce an example config, send
    /// allowed and denied traffic, and show verdicts and live drops.
    Demo,
}

#[derive(Debug, Subcommand)]
pub enum ConntrackCommand {
    /// Tracked connections: protocol, opener and responder, state, time
    /// left, interface and the direction that opened them.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete every tracked connection. Flows then need a rule again: a
    /// reply that no rule allows is dropped.
    Flush,
    /// Delete the expired entries now (attach and apply also do this).
    Gc {
        #[arg(long)]
        json: bool,
    },
}

fn parse_confirm_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = crate::config::parse_duration(text)?;
    if d.is_zero() {
        return Err("the confirmation time must be more than zero".into());
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Security-group config file (TOML, see SPEC 3).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub path: PathBuf,
}
