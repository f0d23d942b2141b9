//! `sg metrics`: the counters of `sg stats` as Prometheus text on
//! `/metrics`, served by a minimal HTTP/1.1 responder on tokio.
//!
//! Every scrape reads the maps afresh, so the values are exactly those
//! `sg stats --json` prints at the same moment.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    state::StateDir,
    status::{Stats, stats},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    iface: String,
    direction: String,
    reason: String,
    /// "true": would-be drops that audit mode let pass (SPEC 10.2).
    audit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    group: String,
    /// The rule ID; `slot-N` for a removed rule still counting.
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NaclRuleLabels {
    nacl: String,
    direction: String,
    /// The rule number, or `*`.
    rule: String,
    action: String,
}

/// The content type of the OpenMetrics text that `prometheus-client`
/// writes (Prometheus scrapes it natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders `stats` as OpenMetrics/Prometheus text.
pub fn render(s: &Stats) -> Result<String> {
    let mut registry = Registry::default();
    let drops = Family::<DropLabels, Counter>::default();
    for d in &s.drops {
        drops
            .get_or_create(&DropLabels {
                iface: d.iface.clone(),
                direction: d.direction.to_string(),
                reason: d.reason.to_string(),
                audit: d.audit.to_string(),
            })
            .inc_by(d.packets);
    }
    registry.register(
        "sg_drops",
        "Packets dropped, by interface, direction and reason; audit=\"true\": \
         would-be drops that audit mode let pass",
        drops,
    );
    let hits = Family::<RuleLabels, Counter>::default();
    let bytes = Family::<RuleLabels, Counter>::default();
    for r in &s.rules {
        let labels = RuleLabels {
            group: r.group.clone().unwrap_or_default(),
            rule: r.rule.clone().unwrap_or_else(|| format!("slot-{}", r.slot)),
        };
        hits.get_or_create(&labels).inc_by(r.packets);
        bytes.get_or_create(&labels).inc_by(r.bytes);
    }
    registry.register(
        "sg_rule_hits",
        "Packets allowed by a rule (packets of the connections it opened included)",
        hits,
    );
    registry.register(
        "sg_rule_hit_bytes",
        "Bytes (whole frames) allowed by a rule (connections it opened included)",
        bytes,
    );
    let nacl_hits = Family::<NaclRuleLabels, Counter>::default();
    for n in &s.nacl_rules {
        nacl_hits
            .get_or_create(&NaclRuleLabels {
                nacl: n.nacl.clone(),
                direction: n.direction.name().to_string(),
                rule: n.rule.clone(),
                action: n.action.clone(),
            })
            .inc_by(n.allowed_packets + n.denied_packets);
    }
    registry.register(
        "sg_nacl_rule_hits",
        "Packets a NACL rule decided (allowed or denied, as its action says)",
        nacl_hits,
    );
    let suppressed = Counter::<u64>::default();
    suppressed.inc_by(s.events_suppressed);
    registry.register(
        "sg_events_suppressed",
        "Drop events held back by the per-CPU rate limit (the drops are still counted)",
        suppressed,
    );
    let lost = Counter::<u64>::default();
    lost.inc_by(s.events_lost);
    registry.register(
        "sg_events_lost",
        "Drop events lost because the ring buffer was full",
        lost,
    );
    let entries = Gauge::<i64>::default();
    entries.set(s.conntrack_entries as i64);
    registry.register("sg_conntrack_entries", "Tracked connections", entries);
    let capacity = Gauge::<i64>::default();
    capacity.set(i64::from(s.conntrack_capacity));
    registry.register(
        "sg_conntrack_capacity",
        "Capacity of the conntrack table",
        capacity,
    );
    let mut out = String::new();
    encode(&mut out, &registry).context("cannot encode metrics")?;
    Ok(out)
}

/// Serves `/metrics` on `addr` until Ctrl-C or SIGTERM.
pub async fn serve(dir: &StateDir, addr: SocketAddr) -> Result<()> {
    // Fail early, and clearly, if there is nothing to serve.
    stats(dir)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    eprintln!("serving metrics on http://{local}/metrics (Ctrl-C to stop)");
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = sigterm.recv() => break,
            conn = listener.accept() => {
                let (stream, peer) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                // One scrape at a time: reading the maps is quick, and a
                // firewall's metrics endpoint should not be a way to load it.
                let served = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    handle(dir, stream),
                )
                .await;
                match served {
                    Ok(Err(e)) => tracing::info!("request from {peer}: {e:#}"),
                    Err(_) => tracing::info!("request from {peer} timed out"),
                    Ok(Ok(())) => {}
                }
            }
        }
    }
    Ok(())
}

/// Largest request head read; anything longer is refused.
const MAX_HEAD: usize = 8192;

async fn handle(dir: &StateDir, mut stream: TcpStream) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            )
            .await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match stats(dir).and_then(|s| render(&s)) {
            Ok(body) => respond(&mut stream, "200 OK", CONTENT_TYPE, body.as_bytes()).await,
            Err(e) => {
                let msg = format!("cannot read the counters: {e:#}\n");
                respond(
                    &mut stream,
                    "500 Internal Server Error",
                    "text/plain",
                    msg.as_bytes(),
                )
                .await
            }
        },
        ("GET", "/") => {
            let body = b"sg metrics: see /metrics\n";
            respond(&mut stream, "200 OK", "text/plain; charset=utf-8", body).await
        }
        ("GET", _) => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n").await,
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await?;
    Ok(())
}
