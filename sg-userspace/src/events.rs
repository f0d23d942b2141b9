//! Drop events: decoding the ring buffer records and printing them.

use std::{
    collections::HashMap,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use serde::Serialize;
use sg_common::{DIR_INGRESS, DropEvent, EV_F_ICMP, EV_F_PORTS, FAMILY_V4, Reason};
use tokio::io::unix::AsyncFd;

use crate::{datapath::Datapath, state::StateDir};

/// Output format of `sg watch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    FlowLog,
}

/// One drop, decoded, in the field names of SPEC 5.
#[derive(Debug, Serialize)]
pub struct DropRecord {
    pub time: String,
    #[serde(skip)]
    pub unix_secs: u64,
    pub iface: String,
    pub direction: &'static str,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub reason: &'static str,
    pub len: u32,
}

pub fn addr(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

/// Converts the kernel's monotonic timestamps to wall-clock time.
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Result<Clock> {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
        let mono_ns = mono.tv_sec() as i128 * 1_000_000_000 + mono.tv_nsec() as i128;
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
        direction: if ev.direction == DIR_INGRESS {
            "ingress"
        } else {
            "egress"
        },
        proto: ev.proto,
        src: addr(ev.family, &ev.src),
        dst: addr(ev.family, &ev.dst),
        src_port: ports.then_some(ev.src_port),
        dst_port: ports.then_some(ev.dst_port),
        icmp_type: icmp.then_some(ev.icmp_type),
        icmp_code: icmp.then_some(ev.icmp_code),
        reason: Reason::from_code(ev.reason).map_or("unknown", Reason::name),
        len: ev.len,
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => format!("proto{n}"),
    }
}

fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

pub fn format_record(r: &DropRecord, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string(r).expect("records serialize"),
        Format::FlowLog => format!(
            "2 - {} {} {} {} {} {} 1 {} {} {} REJECT OK",
            r.iface,
            r.src,
            r.dst,
            r.src_port.map_or("-".into(), |p| p.to_string()),
            r.dst_port.map_or("-".into(), |p| p.to_string()),
            r.proto,
            r.len,
            r.unix_secs,
            r.unix_secs,
        ),
        Format::Text => {
            let icmp = match (r.icmp_type, r.icmp_code) {
                (Some(t), Some(c)) => format!(" type={t} code={c}"),
                _ => String::new(),
            };
            format!(
                "{} {:<10} {:<7} DROP {:<14} {:<6} {} -> {}{} len={}",
                r.time,
                r.iface,
                r.direction,
                r.reason,
                proto_name(r.proto),
                endpoint(r.src, r.src_port),
                endpoint(r.dst, r.dst_port),
                icmp,
                r.len
            )
        }
    }
}

/// Streams drop events until Ctrl-C (or SIGTERM).
pub async fn watch(dir: &StateDir, iface: Option<&str>, format: Format) -> Result<()> {
    let state = dir.load()?.with_context(|| {
        format!(
            "nothing is attached under {}; nothing to watch",
            dir.pins.display()
        )
    })?;
    if let Some(name) = iface
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
    eprintln!("watching drops (Ctrl-C to stop)");
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    if item.len() < size_of::<DropEvent>() {
                        continue;
                    }
                    // SAFETY: the kernel wrote a whole DropEvent; read it unaligned.
                    let ev: DropEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    let record = decode(&ev, &clock, &names);
                    if iface.is_some_and(|name| name != record.iface) {
                        continue;
                    }
                    let line = format_record(&record, format);
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        return Ok(()); // reader went away
                    }
                }
                guard.clear_ready();
            }
        }
    }
    Ok(())
}
