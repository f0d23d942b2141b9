//! Drop events: decoding the ring buffer records and printing them.

use std::{
    collections::HashMap,
    io::Write as _,
    net::IpAddr,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use serde::Serialize;
use sg_common::{
    Direction, DropEvent, EV_F_AUDIT, EV_F_ICMP, EV_F_PORTS, Reason, ip_addr, monotonic_ns,
};
use tokio::io::unix::AsyncFd;

use crate::{datapath::Datapath, state::StateDir};

/// Output format of `sg watch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    FlowLog,
    /// AWS VPC Flow Logs version 5 fields (SPEC 9.4).
    FlowLogV5,
}

/// One drop, decoded, in the field names of SPEC 5.
#[derive(Debug, Serialize)]
pub struct DropRecord {
    pub time: String,
    #[serde(skip)]
    pub unix_secs: u64,
    pub iface: String,
    pub direction: &'static str,
    /// `"drop"`, or `"would_drop"` on an interface in audit mode (SPEC
    /// 10.2): the policy would drop the packet, and it passed.
    pub action: &'static str,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub reason: &'static str,
    pub len: u32,
    /// The TCP flags byte, for TCP only.
    pub tcp_flags: Option<u8>,
    /// With reason `nacl_deny`: the NACL that denied, and its rule number
    /// (`"*"` for the implicit rule); null for every other drop.
    pub nacl: Option<String>,
    pub nacl_rule: Option<String>,
}

/// NACL rules by rule slot: `(NACL, rule number as shown)`, for naming
/// the rule of a `nacl_deny` event.
pub type NaclNames = HashMap<u32, (String, String)>;

pub fn nacl_names(state: &crate::state::State) -> NaclNames {
    state
        .rules_by_slot()
        .into_iter()
        .filter(|(_, r)| r.is_nacl())
        .map(|(slot, r)| {
            let number = u16::try_from(r.index).unwrap_or(sg_common::NACL_RULE_IMPLICIT);
            (
                slot,
                (r.group.clone(), crate::config::nacl_rule_label(number)),
            )
        })
        .collect()
}

/// Fills in the NACL and rule number of a `nacl_deny` record.
pub fn name_nacl_rule(record: &mut DropRecord, ev: &DropEvent, nacls: &NaclNames) {
    if ev.reason != Reason::NaclDeny as u8 {
        return;
    }
    match nacls.get(&ev.rule) {
        Some((nacl, rule)) => {
            record.nacl = Some(nacl.clone());
            record.nacl_rule = Some(rule.clone());
        }
        // A rule removed since: its NACL is no longer known.
        None => record.nacl_rule = Some(format!("slot {}", ev.rule)),
    }
}

/// Converts the kernel's monotonic timestamps to wall-clock time.
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Result<Clock> {
        let mono_ns = monotonic_ns()? as i128;
        let wall_ns = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos() as i128;
        Ok(Clock {
            offset_ns: wall_ns - mono_ns,
        })
    }

    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)
    }
}

/// `DropRecord::action` of a real drop.
pub const ACTION_DROP: &str = "drop";
/// `DropRecord::action` of a would-be drop that audit mode let pass.
pub const ACTION_WOULD_DROP: &str = "would_drop";

pub fn decode(ev: &DropEvent, clock: &Clock, names: &HashMap<u32, String>) -> DropRecord {
    let wall = clock.wall(ev.ts_ns);
    let time = time::OffsetDateTime::from(wall)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let ports = ev.flags & EV_F_PORTS != 0;
    let icmp = ev.flags & EV_F_ICMP != 0;
    DropRecord {
        time,
        unix_secs: wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        iface: names
            .get(&ev.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("if{}", ev.ifindex)),
        direction: Direction::from_code(ev.direction).name(),
        action: if ev.flags & EV_F_AUDIT != 0 {
            ACTION_WOULD_DROP
        } else {
            ACTION_DROP
        },
        proto: ev.proto,
        src: ip_addr(ev.family, &ev.src),
        dst: ip_addr(ev.family, &ev.dst),
        src_port: ports.then_some(ev.src_port),
        dst_port: ports.then_some(ev.dst_port),
        icmp_type: icmp.then_some(ev.icmp_type),
        icmp_code: icmp.then_some(ev.icmp_code),
        reason: Reason::from_code(ev.reason).map_or("unknown", Reason::name),
        len: ev.len,
        tcp_flags: (ports && ev.proto == sg_common::PROTO_TCP).then_some(ev.tcp_flags),
        nacl: None,
        nacl_rule: None,
    }
}

fn proto_name(proto: u8) -> String {
    sg_common::proto_name(proto).map_or_else(|| format!("proto{proto}"), String::from)
}

fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Ethernet header, taken off the frame length for flow logs, whose
/// `bytes` count IP packets as AWS does.
const ETH_HEADER: u32 = 14;

/// ANSI colors for the text format on a terminal.
mod ansi {
    pub(super) const DIM: &str = "\x1b[2m";
    pub(super) const RED_BOLD: &str = "\x1b[1;31m";
    pub(super) const YELLOW: &str = "\x1b[33m";
    pub(super) const CYAN: &str = "\x1b[36m";
    pub(super) const MAGENTA: &str = "\x1b[35m";
    pub(super) const RESET: &str = "\x1b[0m";
}

/// Pads `text` to `width` first, then colors it, so columns stay aligned.
fn paint(text: &str, width: usize, color: Option<&str>) -> String {
    let padded = format!("{text:<width$}");
    match color {
        Some(c) => format!("{c}{padded}{}", ansi::RESET),
        None => padded,
    }
}

pub fn format_record(r: &DropRecord, format: Format) -> String {
    format_record_styled(r, format, false)
}

/// Formats a record; `color` adds ANSI colors to the text format.
pub fn format_record_styled(r: &DropRecord, format: Format, color: bool) -> String {
    match format {
        Format::Json => serde_json::to_string(r).expect("records serialize"),
        Format::FlowLog => flow_log_fields(2, r),
        Format::FlowLogV5 => flow_log_v5(r),
        Format::Text => {
            let c = |code: &'static str| color.then_some(code);
            let icmp = match (r.icmp_type, r.icmp_code) {
                (Some(t), Some(c)) => format!(" type={t} code={c}"),
                _ => String::new(),
            };
            // Time to the millisecond is plenty on a terminal.
            let time = r.time.get(..23).map_or(r.time.clone(), |t| format!("{t}Z"));
            let nacl = match (&r.nacl, &r.nacl_rule) {
                (Some(n), Some(rule)) => format!(" nacl={n} rule={rule}"),
                (None, Some(rule)) => format!(" nacl_rule={rule}"),
                _ => String::new(),
            };
            format!(
                "{} {} {} {} {} {} {} -> {}{} len={}{nacl}",
                paint(&time, 24, c(ansi::DIM)),
                paint(&r.iface, 12, c(ansi::CYAN)),
                paint(r.direction, 7, None),
                paint(
                    if r.action == ACTION_WOULD_DROP {
                        "WOULD_DROP"
                    } else {
                        "DROP"
                    },
                    4,
                    c(ansi::RED_BOLD)
                ),
                paint(r.reason, 14, c(ansi::YELLOW)),
                paint(&proto_name(r.proto), 6, c(ansi::MAGENTA)),
                paint(&endpoint(r.src, r.src_port), 21, None),
                endpoint(r.dst, r.dst_port),
                icmp,
                r.len
            )
        }
    }
}

/// AWS's `tcp-flags` value: the bitmask of FIN 1, SYN 2 and RST 4, and
/// 18 for SYN-ACK; AWS reports no other flag.
pub fn aws_tcp_flags(flags: u8) -> u8 {
    const FIN_SYN_RST: u8 = 0x07;
    const SYN_ACK: u8 = 0x12;
    let mut v = flags & FIN_SYN_RST;
    if flags & SYN_ACK == SYN_ACK {
        v |= SYN_ACK;
    }
    v
}

/// AWS VPC Flow Logs version 5 (SPEC 9.4): the 14 fields of version 2
/// (with version 5), then `tcp-flags type pkt-srcaddr pkt-dstaddr
/// flow-direction traffic-path`. `tcp-flags` is `-` for protocols other
/// than TCP; `traffic-path` (which gateway egress traffic leaves through)
/// has no meaning on a host and is always `-`.
fn flow_log_v5(r: &DropRecord) -> String {
    let tcp_flags = r
        .tcp_flags
        .map_or_else(|| "-".to_string(), |f| aws_tcp_flags(f).to_string());
    let kind = if r.src.is_ipv4() { "IPv4" } else { "IPv6" };
    format!(
        "{} {tcp_flags} {kind} {} {} {} -",
        flow_log_fields(5, r),
        r.src,
        r.dst,
        r.direction,
    )
}

/// The 14 fields of AWS VPC Flow Logs version 2, with `version`: version
/// account-id interface-id srcaddr dstaddr srcport dstport protocol
/// packets bytes start end action log-status. Ports are 0 for protocols
/// without ports, as AWS writes them for ICMP.
fn flow_log_fields(version: u8, r: &DropRecord) -> String {
    format!(
        "{version} - {} {} {} {} {} {} 1 {} {} {} REJECT OK",
        r.iface,
        r.src,
        r.dst,
        r.src_port.unwrap_or(0),
        r.dst_port.unwrap_or(0),
        r.proto,
        r.len.saturating_sub(ETH_HEADER),
        r.unix_secs,
        r.unix_secs,
    )
}

/// How `sg watch` runs.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Only events of this interface.
    pub iface: Option<String>,
    pub format: Format,
    /// ANSI colors (text format only).
    pub color: bool,
    /// How often to report events the kernel suppressed.
    pub report_every: Duration,
}

impl WatchOptions {
    /// Colors when stdout is a terminal and `NO_COLOR` is not set.
    pub fn new(iface: Option<String>, format: Format) -> WatchOptions {
        use std::io::IsTerminal as _;
        WatchOptions {
            iface,
            format,
            color: format == Format::Text
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none(),
            report_every: Duration::from_secs(1),
        }
    }
}

/// Counts of one watch, for its reports.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    shown: u64,
    suppressed: u64,
    lost: u64,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Where decoded events go.
struct Sink<'a, W: std::io::Write> {
    out: W,
    opts: &'a WatchOptions,
    clock: &'a Clock,
    names: &'a HashMap<u32, String>,
    /// NACL rules by slot; read again from `dir` when a slot is unknown
    /// (a NACL applied after the watch started).
    nacls: NaclNames,
    dir: &'a StateDir,
    start_ns: u64,
}

impl<W: std::io::Write> Sink<'_, W> {
    /// Writes out every record in the ring. `Ok(false)` once stdout is gone.
    fn drain(
        &mut self,
        rb: &mut aya::maps::RingBuf<aya::maps::MapData>,
        tally: &mut Tally,
    ) -> Result<bool> {
        while let Some(item) = rb.next() {
            if item.len() < size_of::<DropEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a whole DropEvent; read it unaligned.
            let ev: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            if ev.ts_ns < self.start_ns {
                continue; // from before this watch
            }
            let mut record = decode(&ev, self.clock, self.names);
            if ev.reason == Reason::NaclDeny as u8
                && !self.nacls.contains_key(&ev.rule)
                && let Ok(Some(state)) = self.dir.load()
            {
                self.nacls = nacl_names(&state);
            }
            name_nacl_rule(&mut record, &ev, &self.nacls);
            if self
                .opts
                .iface
                .as_ref()
                .is_some_and(|name| *name != record.iface)
            {
                continue;
            }
            tally.shown += 1;
            let line = format_record_styled(&record, self.opts.format, self.opts.color);
            if writeln!(self.out, "{line}").is_err() {
                return Ok(false);
            }
        }
        Ok(self.out.flush().is_ok())
    }
}

/// Streams drop events until Ctrl-C (or SIGTERM).
///
/// Only drops from the moment it starts are shown (older events still in
/// the ring buffer are skipped). Every `report_every` in which the kernel
/// suppressed events (rate limit) or lost them (ring buffer full), it says
/// how many: on stderr for text and flow logs, as a JSON object
/// `{"time", "suppressed", "lost", "interval_secs"}` on stdout with
/// `--json`. On exit it prints a summary the same way (JSON:
/// `{"time", "final": true, "events", "suppressed", "lost", "seconds"}`).
/// The suppressed and lost counts are global (the limit is per CPU, not
/// per interface). Memory stays bounded: each event is written as soon as
/// it is read, and a reader that falls behind loses events in the kernel
/// (counted) rather than buffering them.
pub async fn watch(dir: &StateDir, opts: &WatchOptions) -> Result<()> {
    let state = dir.load()?.with_context(|| {
        format!(
            "nothing is attached under {}; nothing to watch",
            dir.pins.display()
        )
    })?;
    if let Some(name) = &opts.iface
        && !state.interfaces.contains_key(name)
    {
        anyhow::bail!("{name} is not attached");
    }
    let names: HashMap<u32, String> = state
        .interfaces
        .iter()
        .map(|(name, i)| (i.ifindex, name.clone()))
        .collect();
    let mut dp = Datapath::open(dir, state.ct_max_entries)?;
    let ring = dp.take_events()?;
    // SAFETY: the ring buffer owns its fd, and the AsyncFd owns the ring
    // buffer, so the fd stays open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("cannot poll the event ring buffer: {e}"))?;
    let clock = Clock::new()?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let started = std::time::Instant::now();
    let start_ns = monotonic_ns()?;
    let (base_suppressed, base_lost) = dp.event_stats()?;
    let per_second = dp.runtime_config()?.events_per_sec;
    let mut reported = Tally::default();
    let mut tally = Tally::default();
    let mut ticker = tokio::time::interval(opts.report_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    let mut last_report = std::time::Instant::now();
    eprintln!(
        "watching drops on {} (rate limit {per_second} events/s per CPU; Ctrl-C to stop)",
        opts.iface.as_deref().unwrap_or("all interfaces")
    );
    let mut sink = Sink {
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        opts,
        clock: &clock,
        names: &names,
        nacls: nacl_names(&state),
        dir,
        start_ns,
    };
    let json = opts.format == Format::Json;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = sigterm.recv() => break,
            _ = ticker.tick() => {
                // Also a safety net for a missed wakeup.
                if !sink.drain(ring.get_mut(), &mut tally)? {
                    return Ok(());
                }
                let (s, l) = dp.event_stats()?;
                tally.suppressed = s.saturating_sub(base_suppressed);
                tally.lost = l.saturating_sub(base_lost);
                let ds = tally.suppressed - reported.suppressed;
                let dl = tally.lost - reported.lost;
                if ds > 0 || dl > 0 {
                    let secs = last_report.elapsed().as_secs_f64();
                    if json {
                        let v = serde_json::json!({
                            "time": now_rfc3339(),
                            "suppressed": ds,
                            "lost": dl,
                            "interval_secs": (secs * 1000.0).round() / 1000.0,
                        });
                        let out = &mut sink.out;
                        if writeln!(out, "{v}").and_then(|()| out.flush()).is_err() {
                            return Ok(());
                        }
                    } else {
                        eprintln!(
                            "-- {ds} events suppressed by the rate limit, {dl} lost (ring buffer full) in the last {secs:.1}s; counters stay exact: sg stats"
                        );
                    }
                    reported = tally;
                    last_report = std::time::Instant::now();
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                if !sink.drain(guard.get_inner_mut(), &mut tally)? {
                    return Ok(()); // reader went away
                }
                // A record submitted between the drain and here woke us
                // before the clear: drain once more so it is not stranded.
                guard.clear_ready();
                if !sink.drain(guard.get_inner_mut(), &mut tally)? {
                    return Ok(());
                }
            }
        }
    }
    // Whatever arrived before the signal is still shown.
    sink.drain(ring.get_mut(), &mut tally)?;
    let out = &mut sink.out;
    let (s, l) = dp.event_stats()?;
    tally.suppressed = s.saturating_sub(base_suppressed);
    tally.lost = l.saturating_sub(base_lost);
    let secs = started.elapsed().as_secs_f64();
    if json {
        let v = serde_json::json!({
            "time": now_rfc3339(),
            "final": true,
            "events": tally.shown,
            "suppressed": tally.suppressed,
            "lost": tally.lost,
            "seconds": (secs * 1000.0).round() / 1000.0,
        });
        let _ = writeln!(out, "{v}").and_then(|()| out.flush());
    } else {
        let _ = out.flush();
        eprintln!(
            "watched {secs:.1}s: {} events shown, {} suppressed by the rate limit, {} lost",
            tally.shown, tally.suppressed, tally.lost
        );
    }
    Ok(())
}

#[cfg(test)]
mod flow_log_tests {
    use super::*;

    fn record(proto: u8, tcp_flags: Option<u8>, src: &str, dst: &str) -> DropRecord {
        DropRecord {
            time: String::new(),
            unix_secs: 1_700_000_000,
            iface: "eth1".into(),
            direction: "egress",
            action: ACTION_DROP,
            proto,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: tcp_flags.map(|_| 40000),
            dst_port: tcp_flags.map(|_| 22),
            icmp_type: None,
            icmp_code: None,
            reason: "no_rule",
            len: 74,
            tcp_flags,
            nacl: None,
            nacl_rule: None,
        }
    }

    #[test]
    fn audit_events_are_would_drops_in_json_and_text() {
        let clock = Clock::new().unwrap();
        let mut ev = DropEvent {
            ifindex: 7,
            family: sg_common::FAMILY_V4,
            reason: Reason::NoRule as u8,
            ..DropEvent::default()
        };
        let names = HashMap::new();
        let real = decode(&ev, &clock, &names);
        assert_eq!(real.action, "drop");
        ev.flags |= EV_F_AUDIT;
        let audited = decode(&ev, &clock, &names);
        let json: serde_json::Value =
            serde_json::from_str(&format_record(&audited, Format::Json)).unwrap();
        assert_eq!(json["action"], "would_drop");
        assert_eq!(json["reason"], "no_rule");
        let text = format_record(&audited, Format::Text);
        assert!(text.contains(" WOULD_DROP "), "{text}");
        assert!(!format_record(&real, Format::Text).contains("WOULD"));
    }

    #[test]
    fn aws_tcp_flags_report_fin_syn_rst_and_syn_ack_only() {
        assert_eq!(aws_tcp_flags(0x02), 2); // SYN
        assert_eq!(aws_tcp_flags(0x12), 18); // SYN-ACK
        assert_eq!(aws_tcp_flags(0x11), 1); // FIN-ACK: FIN
        assert_eq!(aws_tcp_flags(0x04), 4); // RST
        assert_eq!(aws_tcp_flags(0x18), 0); // PSH-ACK: nothing AWS reports
    }

    #[test]
    fn flow_log_v5_lines() {
        let tcp = record(6, Some(0x12), "198.18.0.1", "198.18.0.2");
        assert_eq!(
            format_record(&tcp, Format::FlowLogV5),
            "5 - eth1 198.18.0.1 198.18.0.2 40000 22 6 1 60 1700000000 1700000000 REJECT OK \
             18 IPv4 198.18.0.1 198.18.0.2 egress -"
        );
        let icmp6 = record(58, None, "2001:db8::1", "2001:db8::2");
        assert_eq!(
            format_record(&icmp6, Format::FlowLogV5),
            "5 - eth1 2001:db8::1 2001:db8::2 0 0 58 1 60 1700000000 1700000000 REJECT OK \
             - IPv6 2001:db8::1 2001:db8::2 egress -"
        );
        // Version 2 is unchanged.
        assert!(format_record(&tcp, Format::FlowLog).ends_with("REJECT OK"));
    }
}
