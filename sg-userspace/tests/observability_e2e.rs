//! Observability end to end (SPEC 5): exact counters under a flood, the
//! kernel's rate limit on drop events and `sg watch`'s report of what it
//! suppressed, the JSON / flow-log / text formats, and `/metrics` against
//! `sg stats --json`. Real `sg` binary, real veth pairs in namespaces.
//! Needs root; without it every test fails loudly.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpStream},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use regex::Regex;
use serde_json::Value;
mod support;

use prometheus::{parse_prometheus, sample};
use sg_lab::{Host, Lab, Link};
use support::{Sg, TempFile};

// A test crate root finds modules beside it, so the path is spelled out.
#[path = "observability_e2e/prometheus.rs"]
mod prometheus;

/// Starts a long-running `sg` command (watch, metrics) with piped
/// output, and waits for its ready line on stderr.
fn start(sg: &Sg, args: &[&str], ready: &str) -> Running {
    let mut child = sg
        .cmd(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sg starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut signalled = false;
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            if !signalled {
                let _ = tx.send(line.clone());
            }
            if line.contains("watching drops") || line.contains("serving metrics") {
                signalled = true;
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(ready) => break,
            Ok(_) => continue,
            Err(_) => {
                let _ = child.kill();
                panic!("sg {args:?} never became ready");
            }
        }
    }
    Running {
        child,
        stderr: Some(reader),
    }
}

/// A running `sg watch` or `sg metrics`.
struct Running {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// SIGTERM, then its whole stdout and stderr and whether it exited 0.
    fn stop(mut self) -> (String, String, bool) {
        // SAFETY: plain kill(2) on our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "signal sg");
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        let status = self.child.wait().expect("wait for sg");
        let stderr = self.stderr.take().expect("once").join().expect("reader");
        (stdout, stderr, status.success())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Allowed: http, IPv4 echo requests, and MLD (so the peer's multicast
/// listener reports, sent on their own, are not counted as drops).
/// Everything else inbound is dropped with reason no_rule.
fn config(per_second: u32) -> String {
    format!(
        r#"
[groups.srv]
description = "observed server"
ingress = [
  {{ type = "http", from = "anywhere", description = "web" }},
  {{ proto = "icmp", icmp_type = 8, from = "anywhere-ipv4", description = "ping" }},
  {{ proto = "icmpv6", icmp_type = 143, from = "anywhere-ipv6", description = "mldv2" }},
]

[events]
per_second = {per_second}
"#
    )
}

struct Net {
    _lab: Lab,
    client: Host,
    server: Host,
    c: Link,
    s: Link,
}

fn net() -> Net {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let server = lab.host("server");
    let (c, s) = lab.link(&client, &server, 1);
    Net {
        _lab: lab,
        client,
        server,
        c,
        s,
    }
}

fn attach(sg: &Sg, iface: &str, cfg: &TempFile) {
    let out = sg.ok(&["attach", iface, "-c", cfg.path(), "--groups", "srv"]);
    assert!(out.contains("attached to"), "{out}");
}

/// Sends exactly `count` TCP SYNs to `dst:port` with hping3, paced at one
/// per `interval_us` so the veth ring never overflows (every packet reaches
/// XDP). Bounded by a timeout. Returns the time it took.
fn syn_flood(from: &Host, dst: Ipv4Addr, port: u16, count: u32, interval_us: u32) -> Duration {
    let start = Instant::now();
    let out = from.run(&[
        "timeout",
        "60",
        "hping3",
        "-q",
        "-S",
        "-p",
        &port.to_string(),
        "-c",
        &count.to_string(),
        "-i",
        &format!("u{interval_us}"),
        &dst.to_string(),
    ]);
    let took = start.elapsed();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!("{count} packets transmitted")),
        "hping3 must send all {count}: {text}"
    );
    took
}

/// Sum of the drop counters of `iface`, ingress, no_rule in `sg stats --json`.
fn no_rule_drops(stats: &Value, iface: &str) -> u64 {
    stats["drops"]
        .as_array()
        .expect("drops is an array")
        .iter()
        .filter(|d| d["iface"] == iface && d["direction"] == "ingress" && d["reason"] == "no_rule")
        .map(|d| d["packets"].as_u64().expect("packets is a number"))
        .sum()
}

fn all_drops(stats: &Value) -> u64 {
    stats["drops_by_reason"]
        .as_object()
        .expect("drops_by_reason is an object")
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

fn rule<'a>(stats: &'a Value, description: &str) -> &'a Value {
    stats["rules"]
        .as_array()
        .expect("rules is an array")
        .iter()
        .find(|r| r["description"] == description)
        .unwrap_or_else(|| panic!("no rule {description} in {stats}"))
}

/// `GET /metrics` from inside the namespace the server listens in.
fn scrape(host: &Host, port: u16) -> (String, String) {
    host.in_ns(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to sg metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read response");
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head and body");
        (head.to_string(), body.to_string())
    })
}

#[test]
fn denied_flood_counts_exactly_and_metrics_match_stats() {
    let n = net();
    let cfg = TempFile::new("toml", &config(1000));
    let sg = Sg::new(&n.server);
    attach(&sg, &n.s.ifname, &cfg);
    let iface = n.s.ifname.as_str();
    let before = sg.stats();
    assert_eq!(rule(&before, "ping")["packets"], 0, "{before}");

    // N denied SYNs: the counter rises by exactly N.
    const N: u64 = 10_000;
    syn_flood(&n.client, n.s.v4, 9, N as u32, 100);
    let after = sg.stats();
    assert_eq!(
        no_rule_drops(&after, iface) - no_rule_drops(&before, iface),
        N,
        "exact drop counter: before {before}\nafter {after}"
    );
    assert_eq!(
        after["drops_by_reason"]["no_rule"].as_u64().unwrap()
            - before["drops_by_reason"]["no_rule"].as_u64().unwrap(),
        N
    );

    // 5 echo requests in, 5 replies out: all 10 count toward the ping rule
    // (the replies through the connection it opened), 98-byte frames.
    assert_eq!(n.client.ping(IpAddr::V4(n.s.v4), 5), 5);
    let stats = sg.stats();
    let ping = rule(&stats, "ping");
    assert_eq!(ping["packets"], 10, "{ping}");
    assert_eq!(ping["bytes"], 980, "{ping}");
    assert_eq!(ping["group"], "srv");
    assert_eq!(ping["direction"], "ingress");
    assert_eq!(ping["index"], 1);
    assert!(
        Regex::new(r"^sgr-[0-9a-f]{17}$")
            .unwrap()
            .is_match(ping["rule"].as_str().unwrap()),
        "{ping}"
    );
    assert_eq!(rule(&stats, "web")["packets"], 0);
    // The stats JSON: every field, with its type.
    assert!(stats["events_suppressed"].is_u64());
    assert!(stats["events_lost"].is_u64());
    assert_eq!(stats["events_per_second"], 1000);
    assert!(
        stats["conntrack_entries"].as_u64().unwrap() >= 1,
        "the ping flow"
    );
    assert!(stats["conntrack_capacity"].as_u64().unwrap() > 0);
    // 10,000 drops against 1000 events/s per CPU: most were suppressed,
    // and events + suppressed + lost is every drop.
    assert!(stats["events_suppressed"].as_u64().unwrap() > 0, "{stats}");

    // The readable table names the rule and its counts.
    let table = sg.ok(&["stats"]);
    let ping_id = ping["rule"].as_str().unwrap();
    let row = table
        .lines()
        .find(|l| l.contains(ping_id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("srv") && row.contains(" 10 ") && row.contains("980"),
        "{row}"
    );
    assert!(table.contains("no_rule"), "{table}");

    // /metrics: parses as Prometheus text and matches `sg stats --json`.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let metrics = start(&sg, &["metrics", "--listen", &listen], "serving metrics");
    let (head, body) = scrape(&n.server, port);
    let json = sg.stats();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    let samples = parse_prometheus(&body);
    for d in json["drops"].as_array().unwrap() {
        let got = sample(
            &samples,
            "sg_drops_total",
            &[
                ("iface", d["iface"].as_str().unwrap()),
                ("direction", d["direction"].as_str().unwrap()),
                ("reason", d["reason"].as_str().unwrap()),
            ],
        );
        assert_eq!(
            got,
            Some(d["packets"].as_u64().unwrap() as f64),
            "{d}\n{body}"
        );
    }
    for r in json["rules"].as_array().unwrap() {
        let labels = [
            ("group", r["group"].as_str().unwrap()),
            ("rule", r["rule"].as_str().unwrap()),
        ];
        assert_eq!(
            sample(&samples, "sg_rule_hits_total", &labels),
            Some(r["packets"].as_u64().unwrap() as f64),
            "{r}\n{body}"
        );
        assert_eq!(
            sample(&samples, "sg_rule_hit_bytes_total", &labels),
            Some(r["bytes"].as_u64().unwrap() as f64),
            "{r}\n{body}"
        );
    }
    assert_eq!(
        sample(&samples, "sg_events_suppressed_total", &[]),
        Some(json["events_suppressed"].as_u64().unwrap() as f64)
    );
    assert_eq!(
        sample(&samples, "sg_conntrack_entries", &[]),
        Some(json["conntrack_entries"].as_u64().unwrap() as f64)
    );
    assert_eq!(
        sample(
            &samples,
            "sg_drops_total",
            &[("iface", iface), ("reason", "no_rule")]
        ),
        Some(no_rule_drops(&json, iface) as f64)
    );
    let (_, stderr, ok) = metrics.stop();
    assert!(ok, "sg metrics stops cleanly on SIGTERM: {stderr}");
}

/// Every drop object of `sg watch --json`: each field of SPEC 5, typed.
fn check_drop_object(v: &Value, iface: &str, src: Ipv4Addr, dst: Ipv4Addr) {
    let rfc3339 =
        Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$").unwrap();
    assert!(rfc3339.is_match(v["time"].as_str().expect("time")), "{v}");
    assert_eq!(v["iface"], iface, "{v}");
    assert_eq!(v["direction"], "ingress", "{v}");
    assert_eq!(v["proto"], 6, "{v}");
    assert_eq!(v["src"], src.to_string(), "{v}");
    assert_eq!(v["dst"], dst.to_string(), "{v}");
    assert!(v["src_port"].is_u64(), "{v}");
    assert_eq!(v["dst_port"], 9, "{v}");
    assert!(v["icmp_type"].is_null() && v["icmp_code"].is_null(), "{v}");
    assert_eq!(v["reason"], "no_rule", "{v}");
    // Ethernet + IPv4 + TCP, at least.
    assert!(v["len"].as_u64().expect("len") >= 54, "{v}");
}

#[test]
fn watch_json_stays_within_the_rate_limit_and_reports_suppressed() {
    let n = net();
    const RATE: u64 = 50;
    let cfg = TempFile::new("toml", &config(RATE as u32));
    let sg = Sg::new(&n.server);
    attach(&sg, &n.s.ifname, &cfg);
    let iface = n.s.ifname.clone();
    let before = sg.stats();

    let watch = start(&sg, &["watch", "--json"], "watching drops");
    let watch_started = Instant::now();
    const N: u64 = 5_000;
    syn_flood(&n.client, n.s.v4, 9, N as u32, 200);
    let flood_end = watch_started.elapsed();
    // Let the periodic report (every second) see the end of the flood.
    std::thread::sleep(Duration::from_millis(1500));
    let (stdout, stderr, ok) = watch.stop();
    assert!(ok, "watch stops cleanly on SIGTERM: {stderr}");
    let after = sg.stats();
    let dropped = all_drops(&after) - all_drops(&before);
    assert_eq!(
        no_rule_drops(&after, &iface) - no_rule_drops(&before, &iface),
        N
    );

    let mut events = 0u64;
    let mut periodic_suppressed = 0u64;
    let mut reports = 0;
    let mut last = None;
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v.get("reason").is_some() {
            check_drop_object(&v, &iface, n.c.v4, n.s.v4);
            events += 1;
        } else if v.get("final") == Some(&Value::Bool(true)) {
            last = Some(v);
        } else {
            assert!(v["suppressed"].is_u64() && v["lost"].is_u64(), "{v}");
            assert!(
                v["interval_secs"].is_f64() || v["interval_secs"].is_u64(),
                "{v}"
            );
            periodic_suppressed += v["suppressed"].as_u64().unwrap();
            reports += 1;
        }
    }
    let last = last.unwrap_or_else(|| panic!("no final summary: {stdout}"));
    assert!(reports >= 1, "a periodic suppressed report: {stdout}");
    assert_eq!(last["events"], events, "{last}");
    let suppressed = last["suppressed"].as_u64().unwrap();
    let lost = last["lost"].as_u64().unwrap();
    assert!(periodic_suppressed <= suppressed);
    // Every drop is an event shown, or counted as suppressed or lost.
    assert_eq!(events + suppressed + lost, dropped, "{last}");
    assert_eq!(lost, 0, "50/s cannot fill the ring buffer");
    // The bucket holds one second (RATE events) and refills at RATE/s, on
    // each CPU the flood's packets were handled on.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let bound = cpus * (RATE as f64 * flood_end.as_secs_f64() + RATE as f64);
    assert!(
        (events as f64) <= bound,
        "{events} events in {flood_end:?} exceed {bound} (rate {RATE}/s per CPU)"
    );
    assert!(events >= 1 && suppressed >= N - bound as u64, "{last}");
}

#[test]
fn watch_flow_log_text_and_iface_filter() {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let other = lab.host("other");
    let server = lab.host("server");
    let (c, s) = lab.link(&client, &server, 1);
    let (_o, s2) = lab.link(&other, &server, 2);
    let cfg = TempFile::new("toml", &config(1000));
    let sg = Sg::new(&server);
    attach(&sg, &s.ifname, &cfg);
    attach(&sg, &s2.ifname, &cfg);

    let flow = start(
        &sg,
        &["watch", "--flow-log", "--iface", &s.ifname],
        "watching drops",
    );
    let text = start(&sg, &["watch"], "watching drops");
    syn_flood(&client, s.v4, 9, 5, 1000);
    // Denied on the other interface: the flow log (filtered) leaves it out.
    syn_flood(&other, s2.v4, 9, 3, 1000);
    // An ICMPv6 echo: no ports, so "0 0" as AWS writes ICMP.
    assert_eq!(client.ping(IpAddr::V6(s.v6), 1), 0);
    std::thread::sleep(Duration::from_millis(500));
    let (flow_out, flow_err, ok) = flow.stop();
    assert!(ok, "{flow_err}");
    let (text_out, text_err, ok) = text.stop();
    assert!(ok, "{text_err}");

    // version account-id interface-id srcaddr dstaddr srcport dstport
    // protocol packets bytes start end action log-status
    let re = Regex::new(
        r"^2 - (\S+) (\S+) (\S+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d{10}) (\d{10}) REJECT OK$",
    )
    .unwrap();
    let lines: Vec<&str> = flow_out.lines().collect();
    assert_eq!(
        lines.len(),
        6,
        "5 SYNs and 1 echo on {}: {flow_out}",
        s.ifname
    );
    let mut tcp = 0;
    for line in &lines {
        let f = re
            .captures(line)
            .unwrap_or_else(|| panic!("not a flow log v2 line: {line}"));
        assert_eq!(&f[1], s.ifname, "{line}");
        assert_eq!(&f[7], "1", "one packet per record: {line}");
        assert!(f[9] <= f[10], "{line}");
        match &f[6] {
            "6" => {
                tcp += 1;
                assert_eq!(&f[2], c.v4.to_string());
                assert_eq!(&f[3], s.v4.to_string());
                assert_eq!(&f[5], "9");
                assert_eq!(f[8].parse::<u32>().unwrap(), 40, "IPv4 + TCP bytes: {line}");
            }
            "58" => {
                assert_eq!(&f[2], c.v6.to_string());
                assert_eq!((&f[4], &f[5]), ("0", "0"), "{line}");
            }
            other => panic!("unexpected protocol {other}: {line}"),
        }
    }
    assert_eq!(tcp, 5);
    assert!(flow_err.contains("watched"), "final summary: {flow_err}");

    // Text, piped: no color codes, aligned columns, both interfaces.
    assert!(
        !text_out.contains('\x1b'),
        "no color when piped: {text_out:?}"
    );
    let rows: Vec<&str> = text_out.lines().collect();
    assert_eq!(rows.len(), 9, "{text_out}");
    for row in &rows {
        assert!(row.contains(" DROP ") && row.contains("no_rule"), "{row}");
    }
    let col = |row: &str| row.find(" DROP ").unwrap();
    assert!(
        rows.iter().all(|r| col(r) == col(rows[0])),
        "aligned: {text_out}"
    );
    assert_eq!(rows.iter().filter(|r| r.contains(&s2.ifname)).count(), 3);
    assert!(
        text_err.contains("watched") && text_err.contains("9 events shown"),
        "{text_err}"
    );

    // An interface that is not attached is refused.
    let out = sg.run(&["watch", "--iface", "nosuch0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not attached"));
}

/// SPEC 9.4: `--flow-log-version 5` adds tcp-flags, type, pkt-srcaddr,
/// pkt-dstaddr, flow-direction and traffic-path to real drops.
#[test]
fn watch_flow_log_version_5_fields() {
    let n = net();
    let cfg = TempFile::new("toml", &config(1000));
    let sg = Sg::new(&n.server);
    attach(&sg, &n.s.ifname, &cfg);
    let flow = start(
        &sg,
        &["watch", "--flow-log", "--flow-log-version", "5"],
        "watching drops",
    );
    syn_flood(&n.client, n.s.v4, 9, 2, 1000);
    // A SYN-ACK to a closed port: AWS writes 18 for SYN-ACK.
    let out = n.client.run(&[
        "timeout",
        "60",
        "hping3",
        "-q",
        "-S",
        "-A",
        "-p",
        "9",
        "-c",
        "1",
        &n.s.v4.to_string(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 packets transmitted"));
    assert_eq!(n.client.ping(IpAddr::V6(n.s.v6), 1), 0);
    std::thread::sleep(Duration::from_millis(500));
    let (out, err, ok) = flow.stop();
    assert!(ok, "{err}");

    // The 14 fields of v2 (version 5), then tcp-flags type pkt-srcaddr
    // pkt-dstaddr flow-direction traffic-path.
    let re = Regex::new(
        r"^5 - (\S+) (\S+) (\S+) (\d+) (\d+) (\d+) 1 (\d+) (\d{10}) (\d{10}) REJECT OK (\S+) (IPv4|IPv6) (\S+) (\S+) (ingress|egress) -$",
    )
    .unwrap();
    let mut flags = Vec::new();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "2 SYNs, 1 SYN-ACK, 1 echo: {out}");
    for line in lines {
        let f = re
            .captures(line)
            .unwrap_or_else(|| panic!("not a flow log v5 line: {line}"));
        assert_eq!(&f[1], n.s.ifname, "{line}");
        assert_eq!((&f[12], &f[13]), (&f[2], &f[3]), "pkt-addrs: {line}");
        assert_eq!(&f[14], "ingress", "{line}");
        match &f[6] {
            "6" => {
                assert_eq!(&f[11], "IPv4", "{line}");
                assert_eq!(&f[2], n.c.v4.to_string());
                flags.push(f[10].to_string());
            }
            "58" => {
                assert_eq!(&f[11], "IPv6", "{line}");
                assert_eq!(&f[10], "-", "no tcp-flags for ICMPv6: {line}");
            }
            other => panic!("unexpected protocol {other}: {line}"),
        }
    }
    flags.sort();
    assert_eq!(flags, ["18", "2", "2"]);
}
