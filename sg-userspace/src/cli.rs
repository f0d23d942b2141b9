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
#[command(name = "sg", version, propagate_version = true)]
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
        after_help = "Example:\n  sg attach eth1 -c /etc/sg.toml\n  sg attach eth1 -c /etc/sg.toml --groups web,ssh"
    )]
    Attach {
        /// Interface to enforce on.
        iface: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Groups to enforce, overriding [interfaces.IFACE].
        #[arg(long, value_delimiter = ',', value_name = "A,B")]
        groups: Option<Vec<String>>,
        /// Ingress hook. auto: TC on virtual interfaces (veth, bridge,
        /// tunnels), native XDP on a NIC whose driver has it (else TC);
        /// native or generic: XDP only; tc: TC ingress.
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

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Security-group config file (TOML, see SPEC 3).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub path: PathBuf,
}
