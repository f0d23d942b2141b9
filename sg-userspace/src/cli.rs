//! Command-line interface (SPEC 4).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, builder::TypedValueParser as _};

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
    /// this command exits. Connections already established through IFACE
    /// (your SSH session) that the groups allow in their opening direction
    /// are adopted as tracked first, so they are not cut.
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
    /// connections are kept, and established ones the new rules allow but
    /// nothing tracks yet are adopted before the switch.
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
        /// AWS VPC Flow Logs lines (version 2 unless --flow-log-version).
        #[arg(long)]
        flow_log: bool,
        /// Flow log version: 2, or 5, which adds `tcp-flags type
        /// pkt-srcaddr pkt-dstaddr flow-direction traffic-path` after the
        /// 14 fields of version 2 (`-` where a field does not apply).
        #[arg(
            long,
            value_name = "2|5",
            default_value_t = 2,
            requires = "flow_log",
            value_parser = clap::builder::PossibleValuesParser::new(["2", "5"])
                .map(|s| s.parse::<u8>().expect("2 or 5"))
        )]
        flow_log_version: u8,
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
    Demo {
        /// The fleet demo instead: three namespaced hosts, a real etcd and
        /// an agent each (db accepts 1433 from the app group; a host joins
        /// app and gets in; its agent is killed and it is shut out).
        #[arg(long)]
        fleet: bool,
    },
    /// Fleet mode: the policy and group members on etcd (push, show, leave).
    #[command(
        after_help = "Example:\n  sg fleet push -c fleet.toml --etcd http://198.18.0.1:2379\n  sg fleet show --etcd http://198.18.0.1:2379\n  sg fleet leave --host app-3 --etcd http://198.18.0.1:2379"
    )]
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Run this host's fleet agent in the foreground (a systemd service).
    ///
    /// Attaches to each --iface with its groups under the fleet policy
    /// (pinned, as `sg attach`), registers the interfaces' global addresses
    /// as members of their groups under a lease it keeps alive, follows
    /// address changes (rtnetlink), and applies every change of the policy
    /// or of any group's members live and atomically (as `sg apply`). When
    /// etcd is unreachable it keeps enforcing what it applied and retries;
    /// `sg status` says since when. SIGTERM stops it; enforcement stays.
    #[command(
        after_help = "Example:\n  sg agent --etcd http://198.18.0.1:2379 --host db-1 --iface eth0=db\n  sg agent --etcd https://etcd:2379 --cacert ca.pem --cert db-1.pem --key db-1-key.pem \\\n           --host db-1 --iface eth0=db,ssh --lease 10s\n  sg agent --etcd http://198.18.0.1:2379 --host web-1 --iface eth0=web --nacl eth0=edge"
    )]
    Agent(AgentArgs),
    /// Convert another system's security groups into an sg config.
    Import {
        #[command(subcommand)]
        command: ImportCommand,
    },
    /// Write a config's security groups in another system's format.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// AWS security groups (and NACLs, prefix lists) as the AWS CLI prints
    /// them, into an sg config with the same meaning. Needs no root.
    ///
    /// FILE is the output of `aws ec2 describe-security-groups` (or of
    /// `describe-security-group-rules`, or both merged as `sg export aws`
    /// writes them). Each group keeps its name (made a valid key; a name
    /// two groups share gets the GroupId appended), description and rules;
    /// every AWS rule becomes one sg rule with its description, and keeps
    /// its SecurityGroupRuleId as `id` when the input has one. References
    /// to groups outside FILE, prefix lists without their entries,
    /// unsupported fields and malformed JSON are errors (exit 1) naming the
    /// group or field.
    #[command(after_help = "Migration from AWS:\n  \
        aws ec2 describe-security-groups > sgs.json\n  \
        aws ec2 describe-security-group-rules > rules.json\n  \
        aws ec2 get-managed-prefix-list-entries --prefix-list-id pl-0123456abcabcabc1 > pl.json\n  \
        aws ec2 describe-network-acls > nacls.json\n  \
        sg import aws sgs.json --rules rules.json --prefix-list pl-0123456abcabcabc1=pl.json \\\n      \
        --nacls nacls.json -o sg.toml\n  \
        sg validate -c sg.toml\n  \
        sg attach eth0 -c sg.toml --groups web")]
    Aws {
        /// `aws ec2 describe-security-groups` output (JSON).
        #[arg(value_name = "FILE.json")]
        file: PathBuf,
        /// Write the config here instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "OUT.toml")]
        output: Option<PathBuf>,
        /// `aws ec2 describe-security-group-rules` output: keeps the AWS
        /// rule IDs (repeatable).
        #[arg(long, value_name = "FILE")]
        rules: Vec<PathBuf>,
        /// `aws ec2 describe-network-acls` output: becomes [nacls.ID].
        #[arg(long, value_name = "FILE")]
        nacls: Option<PathBuf>,
        /// `aws ec2 get-managed-prefix-list-entries` output for prefix list
        /// ID, which rules name as `pl:ID` (repeatable).
        #[arg(long = "prefix-list", value_name = "ID=FILE", value_parser = parse_prefix_list_arg)]
        prefix_lists: Vec<(String, PathBuf)>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// The config's security groups as `aws ec2 describe-security-groups`
    /// JSON, on standard output. Needs no root.
    ///
    /// Permissions are merged the AWS way (one per protocol and port range,
    /// listing its peers); GroupIds are derived from the names, stably.
    /// Beside `SecurityGroups` the document holds `SecurityGroupRules` (the
    /// describe-security-group-rules view, with sg's rule IDs) and
    /// `ManagedPrefixLists` (the entries of the prefix lists), so that
    /// `sg import aws` gives back the same rules. Members and [interfaces]
    /// have no AWS equivalent and are left out, with a note on stderr.
    #[command(after_help = "Example:\n  sg export aws -c sg.toml > sgs.json")]
    Aws {
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn parse_prefix_list_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((id, file)) if !id.is_empty() && !file.is_empty() => {
            Ok((id.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "expected ID=FILE, such as pl-0123456abcabcabc1=pl.json, not `{s}`"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Validate FILE and store it as the fleet policy (one transaction);
    /// prints the new revision. [interfaces] is ignored (per host).
    Push {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// The policy revision, the hosts whose agents are alive, and the
    /// members of every group.
    Show {
        #[command(flatten)]
        etcd: EtcdArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove a host from every group now (all its keys). Its agent, if
    /// running, exits; its enforcement stays pinned.
    Leave {
        /// The host's name (its agent's --host).
        #[arg(long)]
        host: String,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
}

/// How to reach etcd (SPEC 8.6).
#[derive(Debug, Args, Clone)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated: http://HOST:PORT or https://HOST:PORT.
    #[arg(
        long,
        env = "SG_ETCD",
        value_delimiter = ',',
        value_name = "URLS",
        required = true
    )]
    pub etcd: Vec<String>,
    /// Key prefix of this fleet in etcd.
    #[arg(
        long,
        env = "SG_ETCD_PREFIX",
        default_value = "/sg",
        value_name = "PATH"
    )]
    pub prefix: String,
    /// CA certificate (PEM) that signed etcd's server certificate.
    #[arg(long, env = "SG_ETCD_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long, env = "SG_ETCD_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Client certificate's private key (PEM).
    #[arg(long, env = "SG_ETCD_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// etcd user (RBAC), with --password.
    #[arg(long, env = "SG_ETCD_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// etcd password; prefer the environment variable to the command line.
    #[arg(
        long,
        env = "SG_ETCD_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This host's name in the fleet (letters, digits, '.', '_', '-').
    #[arg(long, env = "SG_HOST", value_name = "NAME")]
    pub host: String,
    /// An interface to enforce and the groups it belongs to; repeat for
    /// more interfaces.
    #[arg(long = "iface", value_name = "IFACE=GROUP[,GROUP...]", required = true)]
    pub ifaces: Vec<String>,
    /// The network ACL (a `[nacls.NAME]` of the fleet policy) of one of
    /// the --iface interfaces; repeat for more. An interface without one
    /// has no NACL layer.
    #[arg(long = "nacl", value_name = "IFACE=NACL")]
    pub nacls: Vec<String>,
    /// TTL of the lease the host's membership lives on: a host whose agent
    /// dies leaves its groups this long after.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub lease: String,
    /// Ingress hook: XDP (auto tries native, then generic) or tc.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub mode: AttachMode,
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
