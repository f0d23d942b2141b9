//! End to end with crafted packets: scapy in a client namespace sends IPv4
//! with options, tiny fragments and IPv6 extension headers through a real
//! attached `sg` towards allowed and denied ports. What passed is observed
//! on the server side (its TCP stack answering, a UDP listener receiving
//! the reassembled datagram) and in `sg stats --json` drop counters.
//! Needs root and python3-scapy (scripts/setup.sh); fails loudly without.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

mod support;

use sg_lab::{Background, Host, Lab};
use support::{Sg, TempFile};

/// scapy lives in the system Python (python3-scapy), not in a pyenv one.
const PYTHON: &str = "/usr/bin/python3";

/// (malformed, fragment, no_rule) from `sg stats --json`.
fn drops(sg: &Sg) -> [u64; 3] {
    let by = sg.stats()["drops_by_reason"].clone();
    ["malformed", "fragment", "no_rule"].map(|r| {
        by[r]
            .as_u64()
            .unwrap_or_else(|| panic!("stats --json has no drops_by_reason.{r}: {by}"))
    })
}

/// ICMP and ICMPv6 are open so that background traffic (MLD reports and
/// the like) never touches the `no_rule` counter the test reads.
const CONFIG: &str = r#"
[groups.srv]
ingress = [
  { proto = "tcp", ports = "22", from = "anywhere" },
  { proto = "udp", ports = "53", from = "anywhere" },
  { type = "all-icmp", from = "anywhere" },
  { type = "all-icmpv6", from = "anywhere" },
]
"#;

/// Client side: one crafted case per run; prints one JSON line.
const CLIENT: &str = r#"
import json, random, sys
from scapy.all import (IP, IPv6, TCP, UDP, Raw, IPOption_Router_Alert, IPOption_NOP,
                       IPv6ExtHdrHopByHop, IPv6ExtHdrDestOpt, IPv6ExtHdrRouting,
                       IPv6ExtHdrFragment, fragment, fragment6, send, conf, AsyncSniffer)
conf.verb = 0
case, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sport = random.randint(20000, 60000)
out = {}

def answer(pkt):
    # Sniff for the server's answer rather than trust scapy's matching of
    # replies to packets with extension headers.
    iface = (conf.route6.route(dst)[0] if ":" in dst else conf.route.route(dst)[0])
    sn = AsyncSniffer(iface=iface, filter="tcp and src port %d and dst port %d" % (port, sport), count=1, timeout=2)
    sn.start()
    import time; time.sleep(0.3)
    send(pkt)
    sn.join()
    got = sn.results
    return str(got[0][TCP].flags) if got else None

if case == "v4-options":
    opts = [IPOption_Router_Alert(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_NOP()]
    pkt = IP(dst=dst, options=opts) / TCP(sport=sport, dport=port, flags="S")
    out["ihl"] = IP(bytes(pkt)).ihl
    out["answer"] = answer(pkt)
elif case == "v4-tiny-udp":
    pkt = IP(dst=dst, id=random.randint(1, 65535)) / UDP(sport=sport, dport=port) / Raw(b"u" * 40)
    frags = fragment(pkt, fragsize=8)
    send(frags)
    out["fragments"] = len(frags)
elif case == "v4-tiny-tcp":
    pkt = IP(dst=dst, id=random.randint(1, 65535)) / TCP(sport=sport, dport=port, flags="S") / Raw(b"t" * 16)
    frags = fragment(pkt, fragsize=8)
    send(frags)
    out["fragments"] = len(frags)
elif case == "v6-ext":
    pkt = (IPv6(dst=dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
           / TCP(sport=sport, dport=port, flags="S"))
    out["answer"] = answer(pkt)
elif case == "v6-long-chain":
    pkt = IPv6(dst=dst) / IPv6ExtHdrHopByHop()
    for _ in range(6):
        pkt = pkt / IPv6ExtHdrDestOpt()
    pkt = pkt / TCP(sport=sport, dport=port, flags="S")
    out["answer"] = answer(pkt)
elif case == "v6-frag-udp":
    pkt = (IPv6(dst=dst) / IPv6ExtHdrFragment(id=random.randint(1, 2**32 - 1))
           / UDP(sport=sport, dport=port) / Raw(b"v" * 100))
    frags = fragment6(pkt, 96)
    send(frags)
    out["fragments"] = len(frags)
else:
    raise SystemExit("unknown case " + case)
print(json.dumps(out), flush=True)
"#;

/// Server side: prints "port length" for every datagram received.
const LISTENER: &str = r#"
import select, socket, sys
socks = []
for p in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", p))
    socks.append(s)
print("ready", flush=True)
while True:
    readable, _, _ = select.select(socks, [], [])
    for s in readable:
        data, addr = s.recvfrom(65535)
        print(s.getsockname()[1], len(data), flush=True)
"#;

/// Fields drop in order: `sg` detaches (inside the server namespace)
/// before the lab removes the namespaces.
struct Bench {
    sg: Sg,
    client: Host,
    server: Host,
    server4: IpAddr,
    server6: IpAddr,
    _cfg: TempFile,
    client_py: TempFile,
    _lab: Lab,
}

fn bench() -> Bench {
    let mut lab = Lab::new();
    let client = lab.host("client");
    let server = lab.host("server");
    let (_c, s) = lab.link(&client, &server, 1);
    let cfg = TempFile::new("toml", CONFIG);
    let sg = Sg::new(&server);
    let out = sg.ok(&["attach", &s.ifname, "-c", cfg.path(), "--groups", "srv"]);
    assert!(out.contains("attached to"), "{out}");
    Bench {
        _lab: lab,
        client,
        server,
        server4: IpAddr::V4(s.v4),
        server6: IpAddr::V6(s.v6),
        sg,
        _cfg: cfg,
        client_py: TempFile::new("py", CLIENT),
    }
}

impl Bench {
    fn craft(&self, case: &str, dst: IpAddr, port: u16) -> serde_json::Value {
        let (d, p) = (dst.to_string(), port.to_string());
        let out = self
            .client
            .run_ok(&[PYTHON, self.client_py.path(), case, &d, &p]);
        let line = out.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{case}: bad output {out:?}: {e}"))
    }

    /// Runs a case and returns what it printed and how the drop counters
    /// (malformed, fragment, no_rule) rose.
    fn case(&self, case: &str, dst: IpAddr, port: u16) -> (serde_json::Value, [u64; 3]) {
        let before = drops(&self.sg);
        let out = self.craft(case, dst, port);
        let after = drops(&self.sg);
        let rose = [0, 1, 2].map(|i| after[i] - before[i]);
        (out, rose)
    }
}

fn listener(server: &Host, file: &TempFile, ports: &[u16]) -> Background {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut args = vec![PYTHON, "-u", file.path()];
    args.extend(ports.iter().map(String::as_str));
    let mut bg = server.spawn(&args);
    let start = Instant::now();
    while !bg.log().contains("ready") {
        assert!(bg.try_wait().is_none(), "listener died: {}", bg.log());
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "listener not ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    bg
}

/// Datagrams the listener received, as (port, length), after waiting for
/// `want` of them (or a short while, when none are expected).
fn received(bg: &Background, want: usize) -> Vec<(u16, usize)> {
    let start = Instant::now();
    loop {
        let got: Vec<(u16, usize)> = bg
            .log()
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
            })
            .collect();
        if got.len() >= want.max(1) || start.elapsed() > Duration::from_secs(2) {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ipv4_options_are_classified_on_the_real_ports() {
    let b = bench();
    let _ssh = b.server.tcp_listen(22);
    let (out, rose) = b.case("v4-options", b.server4, 22);
    assert_eq!(out["ihl"], 7, "the SYN carries 8 bytes of options: {out}");
    assert_eq!(out["answer"], "SA", "allowed port answers: {out}");
    assert_eq!(rose, [0, 0, 0]);
    let (out, rose) = b.case("v4-options", b.server4, 23);
    // Without sg, port 23 would answer RST: nothing at all means dropped.
    assert_eq!(out["answer"], serde_json::Value::Null, "{out}");
    assert_eq!(rose, [0, 0, 1], "one SYN dropped as no_rule");
}

#[test]
fn tiny_ipv4_fragments_follow_their_first_fragment() {
    let b = bench();
    let py = TempFile::new("py", LISTENER);
    let l = listener(&b.server, &py, &[53, 54]);
    // UDP: an 8-byte first fragment holds the whole UDP header.
    let (out, rose) = b.case("v4-tiny-udp", b.server4, 53);
    let n = out["fragments"].as_u64().unwrap();
    assert_eq!(n, 6, "{out}");
    assert_eq!(rose, [0, 0, 0]);
    assert_eq!(received(&l, 1), vec![(53, 40)], "reassembled on the server");
    let (out, rose) = b.case("v4-tiny-udp", b.server4, 54);
    let n = out["fragments"].as_u64().unwrap();
    assert_eq!(rose, [0, n - 1, 1], "first: no_rule, the rest: fragment");
    assert_eq!(received(&l, 2), vec![(53, 40)], "nothing reached port 54");
    // TCP: an 8-byte first fragment cuts the TCP header; never guessed.
    let _ssh = b.server.tcp_listen(22);
    let (out, rose) = b.case("v4-tiny-tcp", b.server4, 22);
    let n = out["fragments"].as_u64().unwrap();
    assert!(n >= 4, "{out}");
    assert_eq!(rose, [1, n - 1, 0], "first: malformed, the rest: fragment");
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let b = bench();
    let _ssh = b.server.tcp_listen(22);
    let (out, rose) = b.case("v6-ext", b.server6, 22);
    assert_eq!(
        out["answer"], "SA",
        "hop-by-hop, dest-opts to 22: {out} {rose:?}"
    );
    assert_eq!(rose, [0, 0, 0]);
    let (out, rose) = b.case("v6-ext", b.server6, 23);
    assert_eq!(out["answer"], serde_json::Value::Null, "{out}");
    assert_eq!(rose, [0, 0, 1]);
    // Seven extension headers: more than the walk handles, dropped even
    // towards the allowed port.
    let (out, rose) = b.case("v6-long-chain", b.server6, 22);
    assert_eq!(out["answer"], serde_json::Value::Null, "{out}");
    assert_eq!(rose, [1, 0, 0]);
}

#[test]
fn ipv6_fragments_follow_their_first_fragment() {
    let b = bench();
    let py = TempFile::new("py", LISTENER);
    let l = listener(&b.server, &py, &[53, 54]);
    let (out, rose) = b.case("v6-frag-udp", b.server6, 53);
    let n = out["fragments"].as_u64().unwrap();
    assert!(n >= 2, "{out}");
    assert_eq!(rose, [0, 0, 0]);
    assert_eq!(received(&l, 1), vec![(53, 100)]);
    let (out, rose) = b.case("v6-frag-udp", b.server6, 54);
    let n = out["fragments"].as_u64().unwrap();
    assert_eq!(rose, [0, n - 1, 1]);
    assert_eq!(received(&l, 2), vec![(53, 100)], "nothing reached port 54");
}
