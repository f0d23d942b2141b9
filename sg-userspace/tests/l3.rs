//! Interfaces without a link header (SPEC 1.12): tun, WireGuard, ipip, gre,
//! sit, ppp. Packets start with the IP header; sg must judge them, never
//! pass them as "not IP".
//!
//! - Kernel: BPF_PROG_TEST_RUN of L3-framed packets with `IFACE_F_L3`.
//! - End to end: a real tun device in a lab namespace, IP datagrams written
//!   into (ingress) and read from (egress) `/dev/net/tun`, XDP generic and
//!   `--mode tc`; a tun device given a link type sg cannot parse is refused.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _},
    time::{Duration, Instant},
};

mod support;

use sg::config;
use sg_common::{DIR_INGRESS, Reason};
use sg_lab::{Host, Lab};
use sg_testkit::{
    packet::{self, SYN},
    testrun::{
        TestBed,
        Verdict::{self, Drop, Pass},
    },
};
use support::{Sg, TempFile};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The IP datagram of an Ethernet frame built by `sg_testkit::packet`.
fn l3(frame: Vec<u8>) -> Vec<u8> {
    frame[14..].to_vec()
}

const TUNNEL: &str = r#"
[groups.tunnel]
ingress = [
  { proto = "udp", ports = "5001", from = "198.18.7.0/24" },
  { proto = "udp", ports = "5001", from = "2001:db8:7::/64" },
  { proto = "tcp", ports = "22", from = "198.18.7.0/24" },
]
egress = [
  { proto = "udp", ports = "6001", to = "198.18.7.0/24" },
  { proto = "udp", ports = "6001", to = "2001:db8:7::/64" },
]
"#;

fn l3_bed() -> TestBed {
    let cfg = config::parse(TUNNEL, "t.toml").unwrap().config;
    let mut bed = TestBed::new(&cfg, &["tunnel"]).unwrap();
    bed.set_l3(true);
    bed.apply(&cfg, &["tunnel"]).unwrap();
    bed
}

#[test]
fn kernel_judges_l3_packets_by_the_rules_on_both_hooks() {
    let mut bed = l3_bed();
    let (peer4, local4, far4) = (ip("198.18.7.2"), ip("198.18.7.1"), ip("198.19.1.1"));
    let (peer6, local6) = (ip("2001:db8:7::2"), ip("2001:db8:7::1"));
    let cases: [(&str, Vec<u8>, Verdict); 6] = [
        (
            "udp 5001 in",
            l3(packet::udp(peer4, local4, 999, 5001)),
            Pass,
        ),
        (
            "udp 5002 in",
            l3(packet::udp(peer4, local4, 999, 5002)),
            Drop,
        ),
        (
            "udp 5001 from afar",
            l3(packet::udp(far4, local4, 9, 5001)),
            Drop,
        ),
        (
            "tcp 22 in",
            l3(packet::tcp(peer4, local4, 999, 22, SYN)),
            Pass,
        ),
        (
            "v6 udp 5001 in",
            l3(packet::udp(peer6, local6, 9, 5001)),
            Pass,
        ),
        (
            "v6 udp 5002 in",
            l3(packet::udp(peer6, local6, 9, 5002)),
            Drop,
        ),
    ];
    for (what, frame, want) in &cases {
        assert_eq!(bed.ingress(frame).unwrap(), *want, "XDP: {what}");
    }
    let out: [(&str, Vec<u8>, Verdict); 4] = [
        (
            "udp 6001 out",
            l3(packet::udp(local4, peer4, 9, 6001)),
            Pass,
        ),
        (
            "udp 6002 out",
            l3(packet::udp(local4, peer4, 9, 6002)),
            Drop,
        ),
        (
            "v6 udp 6001 out",
            l3(packet::udp(local6, peer6, 9, 6001)),
            Pass,
        ),
        (
            "v6 udp 6002 out",
            l3(packet::udp(local6, peer6, 9, 6002)),
            Drop,
        ),
    ];
    for (what, frame, want) in &out {
        assert_eq!(bed.egress(frame).unwrap(), *want, "TC: {what}");
    }
}

#[test]
fn kernel_drops_what_is_not_ip_on_an_l3_interface_as_malformed() {
    let mut bed = l3_bed();
    let before = bed.drop_count(DIR_INGRESS, Reason::Malformed).unwrap();
    // An Ethernet frame (an L3 interface never carries one), an ARP
    // request, a version nibble of 5, and an IPv4 header cut short.
    let udp = packet::udp(ip("198.18.7.2"), ip("198.18.7.1"), 9, 5001);
    let mut v5 = l3(udp.clone());
    v5[0] = 0x55;
    let cut = l3(udp.clone())[..18].to_vec();
    for (what, frame) in [
        ("ethernet frame", udp),
        ("arp", packet::arp()),
        ("version 5", v5),
        ("cut header", cut),
    ] {
        assert_eq!(bed.ingress(&frame).unwrap(), Drop, "{what}");
    }
    let after = bed.drop_count(DIR_INGRESS, Reason::Malformed).unwrap();
    assert_eq!(after - before, 4);
}

#[test]
fn kernel_keeps_ethernet_framing_without_the_flag() {
    // The same bed as an Ethernet interface: frames parse from the
    // Ethernet header, and ARP passes (SPEC 1.10).
    let cfg = config::parse(TUNNEL, "t.toml").unwrap().config;
    let mut bed = TestBed::new(&cfg, &["tunnel"]).unwrap();
    let (peer4, local4) = (ip("198.18.7.2"), ip("198.18.7.1"));
    assert_eq!(bed.ingress(&packet::arp()).unwrap(), Pass);
    assert_eq!(
        bed.ingress(&packet::udp(peer4, local4, 9, 5001)).unwrap(),
        Pass
    );
    assert_eq!(
        bed.ingress(&packet::udp(peer4, local4, 9, 5002)).unwrap(),
        Drop
    );
}

// ---------------------------------------------------------------------------
// End to end on a tun device.
// ---------------------------------------------------------------------------

const TUN_NAME: &str = "sgtun0";
const LOCAL4: &str = "198.18.7.1";
const PEER4: &str = "198.18.7.2";
const LOCAL6: &str = "2001:db8:7::1";
const PEER6: &str = "2001:db8:7::2";

/// A persistent tun device in `host`, addressed and up.
fn tun_host(lab: &mut Lab) -> Host {
    let host = lab.host("tun");
    host.run_ok(&["ip", "tuntap", "add", "mode", "tun", "name", TUN_NAME]);
    host.run_ok(&["ip", "addr", "add", "198.18.7.1/24", "dev", TUN_NAME]);
    host.run_ok(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:7::1/64",
        "dev",
        TUN_NAME,
        "nodad",
    ]);
    host.run_ok(&["ip", "link", "set", TUN_NAME, "up"]);
    host
}

/// The tun device's fd, held open for the whole test: the device has a
/// carrier (and a real qdisc) only while one is attached, and that comes
/// up asynchronously.
struct Tun {
    host: Host,
    file: File,
}

impl Tun {
    fn open(host: &Host) -> Tun {
        let file = host.in_ns(|| open_tun(TUN_NAME, None));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = host.run_ok(&["ip", "link", "show", TUN_NAME]);
            if out.contains("LOWER_UP") && out.contains("state UP") {
                break;
            }
            assert!(Instant::now() < deadline, "tun never came up: {out}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Tun {
            host: host.clone(),
            file,
        }
    }
}

/// Opens the tun device `name` of the calling thread's namespace
/// (TUNSETIFF, IFF_TUN | IFF_NO_PI): raw IP datagrams in and out.
fn open_tun(name: &str, link_type: Option<u16>) -> File {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETLINK: libc::c_ulong = 0x4004_54cd;
    const IFF_TUN: libc::c_short = 0x0001;
    const IFF_NO_PI: libc::c_short = 0x1000;
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    let file = unsafe { File::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    if let Some(t) = link_type {
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETLINK, libc::c_ulong::from(t)) };
        assert_eq!(rc, 0, "TUNSETLINK: {}", std::io::Error::last_os_error());
    }
    file
}

/// Writes `datagram` into the tun device (the kernel receives it on
/// `TUN_NAME`) and reports whether a UDP socket bound to `dst` got it.
fn inject(tun: &Tun, datagram: Vec<u8>, dst: SocketAddr) -> bool {
    let mut tun_fd = tun.file.try_clone().unwrap();
    tun.host.in_ns(move || {
        let sock = UdpSocket::bind(dst).expect("bind the receiver");
        sock.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        tun_fd.write_all(&datagram).expect("write into tun");
        let mut buf = [0u8; 2048];
        matches!(sock.recv(&mut buf), Ok(n) if &buf[..n] == b"sg-test")
    })
}

/// Sends a UDP datagram from `src` to `dst` through the tun device and
/// reports whether it came out of the device's fd.
fn emit(tun: &Tun, src: SocketAddr, dst: SocketAddr) -> bool {
    let mut fd = tun.file.try_clone().unwrap();
    tun.host.in_ns(move || {
        let sock = UdpSocket::bind(src).expect("bind the sender");
        sock.send_to(b"sg-egress", dst).expect("send");
        let deadline = Instant::now() + Duration::from_millis(700);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            match fd.read(&mut buf) {
                Ok(n) if buf[..n].ends_with(b"sg-egress") => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("read tun: {e}"),
            }
        }
        false
    })
}

fn sa(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(addr), port)
}

/// Every verdict the tun tests check: (what, passed).
fn probe(host: &Tun) -> Vec<(&'static str, bool)> {
    let (l4, p4, l6, p6) = (ip(LOCAL4), ip(PEER4), ip(LOCAL6), ip(PEER6));
    vec![
        (
            "ingress v4 udp 5001",
            inject(host, l3(packet::udp(p4, l4, 999, 5001)), sa(LOCAL4, 5001)),
        ),
        (
            "ingress v4 udp 5002",
            inject(host, l3(packet::udp(p4, l4, 999, 5002)), sa(LOCAL4, 5002)),
        ),
        (
            "ingress v6 udp 5001",
            inject(host, l3(packet::udp(p6, l6, 999, 5001)), sa(LOCAL6, 5001)),
        ),
        (
            "ingress v6 udp 5002",
            inject(host, l3(packet::udp(p6, l6, 999, 5002)), sa(LOCAL6, 5002)),
        ),
        (
            "egress v4 udp 6001",
            emit(host, sa(LOCAL4, 0), sa(PEER4, 6001)),
        ),
        (
            "egress v4 udp 6002",
            emit(host, sa(LOCAL4, 0), sa(PEER4, 6002)),
        ),
        (
            "egress v6 udp 6001",
            emit(host, sa(LOCAL6, 0), sa(PEER6, 6001)),
        ),
        (
            "egress v6 udp 6002",
            emit(host, sa(LOCAL6, 0), sa(PEER6, 6002)),
        ),
    ]
}

fn tun_enforces(mode: &str) {
    let mut lab = Lab::new();
    let host = tun_host(&mut lab);
    let tun = Tun::open(&host);
    // Without sg everything gets through: the probes can tell.
    for (what, passed) in probe(&tun) {
        assert!(passed, "without sg, {what} must get through");
    }
    let cfg = TempFile::new("toml", TUNNEL);
    let sg = Sg::new(&host);
    sg.ok(&[
        "attach",
        TUN_NAME,
        "-c",
        cfg.path(),
        "--groups",
        "tunnel",
        "--mode",
        mode,
    ]);
    let got = probe(&tun);
    let want = [true, false, true, false, true, false, true, false];
    for ((what, passed), want) in got.iter().zip(want) {
        assert_eq!(*passed, want, "{mode}: {what}");
    }
    let status = sg.json(&["status", "--json"]);
    let iface = &status["interfaces"][0];
    assert_eq!(iface["link"], "none (tun, WireGuard)", "{status}");
    assert_eq!(iface["l3"], true);
    let text = sg.ok(&["status"]);
    assert!(text.contains("none (tun, WireGuard)"), "{text}");
    // An apply keeps the interface's framing.
    sg.ok(&["apply", "-c", cfg.path()]);
    let again = probe(&tun);
    assert_eq!(again, got, "{mode}: after apply");
}

#[test]
fn tun_is_enforced_with_xdp_generic() {
    tun_enforces("generic");
}

#[test]
fn tun_is_enforced_with_tc_ingress() {
    tun_enforces("tc");
}

#[test]
fn tun_with_an_ipip_link_type_is_enforced_as_l3() {
    // ARPHRD_TUNNEL (768, ipip) set on a tun device: the modules for real
    // ipip/gre/sit devices are missing here, the classification is not.
    let mut lab = Lab::new();
    let host = tun_host(&mut lab);
    host.run_ok(&["ip", "link", "set", TUN_NAME, "down"]);
    host.in_ns(|| drop(open_tun(TUN_NAME, Some(768))));
    host.run_ok(&["ip", "link", "set", TUN_NAME, "up"]);
    let tun = Tun::open(&host);
    let cfg = TempFile::new("toml", TUNNEL);
    let sg = Sg::new(&host);
    sg.ok(&["attach", TUN_NAME, "-c", cfg.path(), "--groups", "tunnel"]);
    assert_eq!(
        sg.json(&["status", "--json"])["interfaces"][0]["link"],
        "ipip"
    );
    let (l4, p4) = (ip(LOCAL4), ip(PEER4));
    assert!(inject(
        &tun,
        l3(packet::udp(p4, l4, 9, 5001)),
        sa(LOCAL4, 5001)
    ));
    assert!(!inject(
        &tun,
        l3(packet::udp(p4, l4, 9, 5002)),
        sa(LOCAL4, 5002)
    ));
}

#[test]
fn a_link_type_sg_cannot_parse_is_refused_at_attach() {
    let mut lab = Lab::new();
    let host = tun_host(&mut lab);
    host.run_ok(&["ip", "link", "set", TUN_NAME, "down"]);
    // ARPHRD_IEEE80211 (801).
    host.in_ns(|| drop(open_tun(TUN_NAME, Some(801))));
    let cfg = TempFile::new("toml", TUNNEL);
    let sg = Sg::new(&host);
    let out = sg.run(&["attach", TUN_NAME, "-c", cfg.path(), "--groups", "tunnel"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "cannot enforce on sgtun0: link type 801 (IEEE 802.11) is not supported; sg handles \
             Ethernet and L3 (tun, WireGuard, ipip, gre, sit, ppp) interfaces"
        ),
        "{stderr}"
    );
    // Nothing was attached: no state, no program on the device.
    let status = sg.json(&["status", "--json"]);
    assert_eq!(
        status["interfaces"].as_array().unwrap().len(),
        0,
        "{status}"
    );
    let links = host.run_ok(&["ip", "link", "show", TUN_NAME]);
    assert!(!links.contains("xdp"), "{links}");
}
