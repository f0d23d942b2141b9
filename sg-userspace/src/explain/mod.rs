//! `sg explain` (SPEC 10.1): the verdict a new packet of a flow gets on an
//! interface, and why, in the manner of AWS Reachability Analyzer.
//!
//! The verdict is read from the *kernel's* installed maps ([`kernel`]) with
//! the classification the datapath runs ([`search`], over
//! `sg_common::search`). The config in force is compiled and asked the same
//! question: when the two answers differ, the kernel's maps have drifted
//! from the config (a hand edit, a bug, a partial write) and we say so.
//! The closest rules (same port from another peer, same peer on another
//! port) come from the config in force.
//!
//! NACLs (SPEC 2) judge every packet before the security groups on ingress
//! and after them on egress ([`nacl`]): a NACL deny drops the packet
//! whatever the SGs say (`reason` "nacl_deny"); on egress an SG drop comes
//! first and the NACL is not reached.

mod closest;
mod kernel;
mod nacl;
pub(crate) mod search;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use sg_common::{Direction, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::{
    compile::{Attachment, Compiled, compile},
    config::{self, Config},
    ifaces,
    state::{State, StateDir},
};
pub use closest::Closest;
pub use nacl::NaclStep;
use search::{Answer, CompiledTables, PolicyTables, classify};

/// One flow to explain, as given on the command line.
#[derive(Clone, Debug, Serialize)]
pub struct Flow {
    pub iface: String,
    pub direction: Direction,
    /// Protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub proto: u8,
    pub from: IpAddr,
    pub to: IpAddr,
    pub from_port: Option<u16>,
    pub to_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

impl Flow {
    /// Builds a flow from the command line's `ADDR[:PORT]` strings,
    /// checking that they make one packet.
    pub fn parse(
        iface: &str,
        direction: Direction,
        from: &str,
        to: &str,
        proto: &str,
        icmp_type: Option<u8>,
        icmp_code: Option<u8>,
    ) -> Result<Flow> {
        let (from, from_port) = parse_endpoint(from).context("--from")?;
        let (to, to_port) = parse_endpoint(to).context("--to")?;
        if from.is_ipv4() != to.is_ipv4() {
            bail!("--from {from} and --to {to} are of different address families");
        }
        let proto = parse_proto(proto, from.is_ipv6())?;
        let is_icmp = proto == PROTO_ICMP || proto == PROTO_ICMPV6;
        if is_icmp && (from_port.is_some() || to_port.is_some()) {
            bail!("ICMP has no ports: give --icmp-type (and --icmp-code) instead");
        }
        if !is_icmp && (icmp_type.is_some() || icmp_code.is_some()) {
            bail!("--icmp-type and --icmp-code go with --proto icmp or icmpv6");
        }
        if (proto == PROTO_TCP || proto == PROTO_UDP) && to_port.is_none() {
            bail!(
                "--to needs a port for {}: ADDR:PORT (or [ADDR]:PORT for IPv6)",
                proto_text(proto)
            );
        }
        // An echo request, unless told otherwise: what `ping` sends.
        let icmp_type = match (is_icmp, icmp_type) {
            (true, None) => Some(if proto == PROTO_ICMP { 8 } else { 128 }),
            (_, t) => t,
        };
        Ok(Flow {
            iface: iface.to_string(),
            direction,
            proto,
            from,
            to,
            from_port,
            to_port,
            icmp_type,
            icmp_code: if is_icmp {
                Some(icmp_code.unwrap_or(0))
            } else {
                None
            },
        })
    }

    /// The remote end: the source on ingress, the destination on egress.
    pub fn peer(&self) -> IpAddr {
        match self.direction {
            Direction::Ingress => self.from,
            Direction::Egress => self.to,
        }
    }

    /// What the datapath searches the rule intervals with: the destination
    /// port, or ICMP `type << 8 | code`, or 0.
    pub fn slot(&self) -> u16 {
        match (self.icmp_type, self.to_port) {
            (Some(t), _) => u16::from(t) << 8 | u16::from(self.icmp_code.unwrap_or(0)),
            (None, Some(p)) => p,
            (None, None) => 0,
        }
    }
}

fn parse_endpoint(text: &str) -> Result<(IpAddr, Option<u16>)> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        anyhow::anyhow!("{text:?} is not ADDR or ADDR:PORT (IPv6 with a port: [2001:db8::1]:443)")
    })
}

fn parse_proto(text: &str, v6: bool) -> Result<u8> {
    let n = match text.to_ascii_lowercase().as_str() {
        "tcp" => PROTO_TCP,
        "udp" => PROTO_UDP,
        "icmp" if v6 => PROTO_ICMPV6,
        "icmp" => PROTO_ICMP,
        "icmpv6" => PROTO_ICMPV6,
        other => other.parse::<u8>().map_err(|_| {
            anyhow::anyhow!("unknown protocol {other:?}: tcp, udp, icmp, icmpv6 or a number 0-255")
        })?,
    };
    Ok(n)
}

fn proto_text(proto: u8) -> String {
    sg_common::proto_name(proto)
        .map(str::to_string)
        .unwrap_or_else(|| proto.to_string())
}

/// A security-group rule, named as `sg status`/`stats` name them.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: String,
    pub group: String,
    pub direction: Direction,
    pub index: usize,
    pub description: Option<String>,
    /// From the config in force (absent when it no longer has the rule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

impl fmt::Display for RuleInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (group {}, {} rule {})",
            self.id,
            self.group,
            self.direction.as_str(),
            self.index
        )?;
        if let (Some(proto), Some(ports)) = (&self.proto, &self.ports) {
            write!(f, ": {proto} {ports}")?;
        }
        if !self.peers.is_empty() {
            let dir = match self.direction {
                Direction::Ingress => "from",
                Direction::Egress => "to",
            };
            write!(f, " {dir} {}", self.peers.join(", "))?;
        }
        if let Some(d) = &self.description {
            write!(f, " \"{d}\"")?;
        }
        Ok(())
    }
}

/// The answer of `sg explain`.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub flow: Flow,
    /// "allow" or "drop" for a new packet of the flow.
    pub verdict: &'static str,
    /// Why: "rule", "no_rule", "nacl_deny", "not_enforced",
    /// "always_allowed".
    pub reason: &'static str,
    /// The NACL step (SPEC 2) as the kernel's maps say; null when the
    /// interface has no NACL.
    pub nacl: Option<NaclStep>,
    /// The security-group rule that allows it, as the kernel's maps say.
    pub rule: Option<RuleInfo>,
    /// Rules that come closest, from the config in force.
    pub closest: Closest,
    /// The config in force the kernel was compared with.
    pub config: Option<PathBuf>,
    /// What the config in force says: the allowing rule's ID, or null.
    pub config_rule: Option<String>,
    pub config_verdict: &'static str,
    /// Set when the kernel and the config in force disagree.
    pub drift: Option<String>,
}

/// ICMPv6 neighbour discovery, router discovery and MLD always pass
/// (the datapath's `is_exempt_icmpv6`).
fn always_allowed(flow: &Flow) -> bool {
    flow.proto == PROTO_ICMPV6 && matches!(flow.icmp_type, Some(130..=137 | 143))
}

/// `sg explain`: the verdict of a new packet of `flow`, from the kernel's
/// maps, checked against the config in force.
pub fn explain(dir: &StateDir, flow: &Flow) -> Result<Explanation> {
    let Some(state) = dir.load()? else {
        bail!(
            "nothing is attached under {}; run `sg attach IFACE -c FILE` first",
            dir.pins.display()
        );
    };
    let Some(attached) = state.interfaces.get(&flow.iface) else {
        return Err(state.not_attached(&flow.iface));
    };
    let ifindex = ifaces::index(&flow.iface).unwrap_or(attached.ifindex);
    let kernel = kernel::KernelMaps::open(dir)?;
    let kernel_answer = answer(&kernel, ifindex, flow)?;

    let (config_path, config, compiled) = config_in_force(dir, &state)?;
    let tables = CompiledTables::new(&compiled);
    let config_answer = answer(&tables, ifindex, flow)?;

    let by_slot = state.rules_by_slot();
    let rule = kernel_answer
        .and_then(|a| a.rule)
        .map(|r| match by_slot.get(&r.rule) {
            Some(rec) => closest::describe(
                &config,
                &rec.id,
                &rec.group,
                rec.direction,
                rec.index,
                rec.description.clone(),
            ),
            None => RuleInfo {
                id: format!("slot {} (not in the state file)", r.rule),
                group: String::new(),
                direction: flow.direction,
                index: 0,
                description: None,
                proto: None,
                ports: None,
                peers: Vec::new(),
            },
        });
    let config_rule = config_answer
        .and_then(|a| a.rule)
        .and_then(|r| compiled.rules.get(r.rule as usize))
        .map(|r| r.id.clone());

    let exempt = always_allowed(flow);
    let (mut verdict, mut reason) = match (exempt, kernel_answer, &rule) {
        (_, None, _) => ("allow", "not_enforced"),
        (true, _, _) => ("allow", "always_allowed"),
        (false, Some(_), Some(_)) => ("allow", "rule"),
        (false, Some(_), None) => ("drop", "no_rule"),
    };
    let mut config_verdict = match (exempt, config_answer) {
        (true, _) | (false, None) => "allow",
        (false, Some(a)) if a.rule.is_some() => "allow",
        _ => "drop",
    };
    // The NACL layer: always-allowed frames pass it too.
    let kernel_nacl = nacl::lookup(&kernel, ifindex, flow)?;
    let config_nacl = nacl::lookup(&tables, ifindex, flow)?;
    let nacl_step = kernel_nacl.filter(|_| !exempt).map(|hit| {
        let mut step = nacl::describe_kernel(&state, flow, hit);
        step.reached = flow.direction == Direction::Ingress || verdict == "allow";
        step
    });
    if let Some(step) = &nacl_step
        && step.reached
        && step.denies()
    {
        (verdict, reason) = ("drop", "nacl_deny");
    }
    let config_nacl_id = config_nacl
        .filter(|_| !exempt)
        .map(|hit| nacl::config_rule_id(&compiled, &state, flow, hit));
    if let Some(hit) = config_nacl.filter(|_| !exempt)
        && (flow.direction == Direction::Ingress || config_verdict == "allow")
        && hit.is_none_or(|r| r.flags & sg_common::RULE_F_NACL_DENY != 0)
    {
        config_verdict = "drop";
    }
    let drift = drift(&kernel_answer, &rule, &config_answer, &config_rule).or_else(|| {
        let kernel_id = nacl_step.as_ref().map(|s| s.id.as_str());
        (kernel_id != config_nacl_id.as_deref()).then(|| {
            format!(
                "the kernel's NACL decides by {} but the config in force by {}: the installed \
                 maps differ from the config; `sg detach IFACE` and `sg attach` again rewrite them",
                kernel_id.unwrap_or("no NACL"),
                config_nacl_id.as_deref().unwrap_or("no NACL")
            )
        })
    });
    let closest = closest::closest(&config, &compiled, config_answer, flow);
    Ok(Explanation {
        flow: flow.clone(),
        verdict,
        reason,
        nacl: nacl_step,
        rule,
        closest,
        config: Some(config_path),
        config_rule,
        config_verdict,
        drift,
    })
}

/// `None`: the interface has no policy entry (not enforced); otherwise
/// the class and rule the tables give.
fn answer(t: &dyn PolicyTables, ifindex: u32, flow: &Flow) -> Result<Option<Answer>> {
    let Some(iface) = t.iface(ifindex, &flow.iface)? else {
        return Ok(None);
    };
    let policy = match flow.direction {
        Direction::Ingress => iface.ingress_policy,
        Direction::Egress => iface.egress_policy,
    };
    classify(t, policy, flow.peer(), flow.proto, flow.slot()).map(Some)
}

fn drift(
    kernel: &Option<Answer>,
    kernel_rule: &Option<RuleInfo>,
    config: &Option<Answer>,
    config_rule: &Option<String>,
) -> Option<String> {
    let k = kernel_rule.as_ref().map(|r| r.id.as_str());
    let c = config_rule.as_deref();
    match (kernel.is_some(), config.is_some()) {
        (false, true) => {
            return Some(
                "the kernel has no policy for this interface, but the config in force enforces one"
                    .into(),
            );
        }
        (true, false) => {
            return Some("the kernel enforces a policy on this interface that the config in force does not give it".into());
        }
        _ => {}
    }
    if k == c {
        return None;
    }
    Some(format!(
        "the kernel's maps {} but the config in force {}: the installed maps differ from the config (a hand edit or a lost write); `sg apply` keeps unchanged entries, so `sg detach IFACE` and `sg attach` again rewrite them",
        match k {
            Some(id) => format!("allow it by {id}"),
            None => "allow it by no rule".to_string(),
        },
        match c {
            Some(id) => format!("allows it by {id}"),
            None => "allows it by no rule".to_string(),
        }
    ))
}

/// The config in force, compiled for the attached interfaces as they are
/// now (their addresses are group members).
fn config_in_force(dir: &StateDir, state: &State) -> Result<(PathBuf, Config, Compiled)> {
    let Some(path) = crate::confirm::config_in_force(dir)? else {
        bail!(
            "no config is recorded as in force under {}",
            dir.meta.display()
        );
    };
    let config = config::load(&path)
        .with_context(|| format!("the config in force ({}) no longer loads", path.display()))?
        .config;
    let attachments: Vec<Attachment> = state
        .interfaces
        .iter()
        .map(|(name, i)| {
            Ok(Attachment {
                iface: name.clone(),
                groups: i.groups.clone(),
                addrs: ifaces::addresses(name)?,
            })
        })
        .collect::<Result<_>>()?;
    let compiled = compile(&config, &attachments, 1)?;
    Ok((path, config, compiled))
}

/// The text form of an explanation.
pub fn print(e: &Explanation) {
    let f = &e.flow;
    let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
    let what = match f.icmp_type {
        Some(t) => format!(
            "{} type {t} code {}",
            proto_text(f.proto),
            f.icmp_code.unwrap_or(0)
        ),
        None => proto_text(f.proto),
    };
    println!(
        "{} {} {}{} -> {}{} on {}",
        f.direction.as_str(),
        what,
        f.from,
        port(f.from_port),
        f.to,
        port(f.to_port),
        f.iface
    );
    if let Some(n) = &e.nacl {
        let place = match f.direction {
            Direction::Ingress => "ingress: the NACL before the security groups",
            Direction::Egress if n.reached => "egress: the NACL after the security groups",
            Direction::Egress => "egress: not reached, the security groups drop it first",
        };
        let verb = if n.denies() { "denies" } else { "allows" };
        let desc = n
            .description
            .as_deref()
            .map(|d| format!(" \"{d}\""))
            .unwrap_or_default();
        println!(
            "nacl {}: rule {} {verb} ({}){desc}; {place}",
            n.name, n.rule, n.id
        );
    }
    match (e.verdict, e.reason) {
        ("drop", "nacl_deny") => {
            let n = e.nacl.as_ref().expect("a NACL step");
            println!(
                "verdict: DROP (nacl_deny: NACL {} rule {} denies it)",
                n.name, n.rule
            );
            if let Some(r) = &e.rule {
                println!("  the security groups would allow it by {r}");
            }
        }
        (_, "not_enforced") => println!(
            "verdict: ALLOW (the kernel enforces nothing on {})",
            f.iface
        ),
        (_, "always_allowed") => {
            println!("verdict: ALLOW (ICMPv6 neighbour/router discovery and MLD always pass)")
        }
        ("allow", _) => println!(
            "verdict: ALLOW by {}",
            e.rule.as_ref().map(ToString::to_string).unwrap_or_default()
        ),
        _ => println!(
            "verdict: DROP (no_rule: no {} rule of {}'s groups allows it)",
            f.direction.as_str(),
            f.iface
        ),
    }
    println!("  read from the kernel's maps under the state dir");
    if !e.closest.same_port_other_peer.is_empty() {
        println!("closest: same port, another peer:");
        for r in &e.closest.same_port_other_peer {
            println!("  {r}");
        }
    }
    if !e.closest.same_peer_other_port.is_empty() {
        println!("closest: same peer, another port or protocol:");
        for r in &e.closest.same_peer_other_port {
            println!("  {r}");
        }
    }
    match &e.drift {
        Some(d) => println!("DRIFT: {d}"),
        None => println!(
            "config in force ({}) agrees",
            e.config
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
    }
}
