//! IPv4 BIG TCP end to end (issue 10, item 10): a GSO packet longer than
//! 64 KiB carries IPv4 total length 0, and sg's egress program must pass it
//! rather than count it as malformed. Real kernel, real veth, real TCP.
//! Needs root; without it the test fails loudly.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

mod support;

use sg_lab::{Background, Host};
use support::{Sg, TempFile, pair};

const PORT: u16 = 5201;
/// Bytes the server sends: a few hundred MB, so TCP reaches full-size GSO.
const TOTAL: usize = 256 << 20;
/// The BIG TCP limit set on both veth ends (the kernel allows up to 512 KiB).
const BIG: u32 = 185_000;

// rtnetlink constants (linux/rtnetlink.h, linux/if_link.h).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const IFLA_GSO_IPV4_MAX_SIZE: u16 = 63;
const IFLA_GRO_IPV4_MAX_SIZE: u16 = 64;
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;

/// One rtnetlink request about interface `index`: nlmsghdr, ifinfomsg and
/// u32 attributes.
fn link_msg(kind: u16, flags: u16, seq: u32, index: i32, attrs: &[(u16, u32)]) -> Vec<u8> {
    let len = NLMSG_HDR + IFINFOMSG + attrs.len() * 8;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // ifinfomsg: family, pad, type, index, flags, change.
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&[0; 8]);
    for (ty, v) in attrs {
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&v.to_ne_bytes());
    }
    m
}

fn nl_exchange(fd: &OwnedFd, msg: &[u8]) -> Vec<u8> {
    // SAFETY: send/recv on an open netlink socket with buffers we own.
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    assert_eq!(
        sent,
        msg.len() as isize,
        "netlink send: {}",
        std::io::Error::last_os_error()
    );
    let mut buf = vec![0u8; 65536];
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    assert!(
        n >= NLMSG_HDR as isize,
        "netlink recv: {}",
        std::io::Error::last_os_error()
    );
    buf.truncate(n as usize);
    buf
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}

/// Enables IPv4 BIG TCP on `ifname` in `host`'s namespace by setting
/// IFLA_GSO_IPV4_MAX_SIZE and IFLA_GRO_IPV4_MAX_SIZE to `size` (this
/// machine's iproute2 6.1 has no option for them), and returns both as an
/// RTM_GETLINK reads them back.
fn set_big_tcp_v4(host: &Host, ifname: &str, size: u32) -> (Option<u32>, Option<u32>) {
    let name = std::ffi::CString::new(ifname).unwrap();
    host.in_ns(move || {
        // SAFETY: plain libc calls; the fd is owned (closed) by OwnedFd.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(index > 0, "no interface {name:?}");
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        assert!(
            raw >= 0,
            "netlink socket: {}",
            std::io::Error::last_os_error()
        );
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let set = link_msg(
            RTM_NEWLINK,
            NLM_F_REQUEST | NLM_F_ACK,
            1,
            index,
            &[
                (IFLA_GSO_IPV4_MAX_SIZE, size),
                (IFLA_GRO_IPV4_MAX_SIZE, size),
            ],
        );
        let ack = nl_exchange(&fd, &set);
        assert_eq!(u16_at(&ack, 4), NLMSG_ERROR, "RTM_NEWLINK answer: {ack:?}");
        let errno = -(u32_at(&ack, NLMSG_HDR) as i32);
        assert_eq!(
            errno,
            0,
            "RTM_NEWLINK gso/gro_ipv4_max_size={size} on {name:?}: {}",
            std::io::Error::from_raw_os_error(errno)
        );

        let get = link_msg(RTM_GETLINK, NLM_F_REQUEST, 2, index, &[]);
        let link = nl_exchange(&fd, &get);
        assert_eq!(
            u16_at(&link, 4),
            RTM_NEWLINK,
            "RTM_GETLINK answer: {link:?}"
        );
        let end = (u32_at(&link, 0) as usize).min(link.len());
        let (mut gso, mut gro) = (None, None);
        let mut off = NLMSG_HDR + IFINFOMSG;
        while off + 4 <= end {
            let (len, ty) = (u16_at(&link, off) as usize, u16_at(&link, off + 2));
            if len < 4 {
                break;
            }
            if len == 8 && ty == IFLA_GSO_IPV4_MAX_SIZE {
                gso = Some(u32_at(&link, off + 4));
            } else if len == 8 && ty == IFLA_GRO_IPV4_MAX_SIZE {
                gro = Some(u32_at(&link, off + 4));
            }
            off += (len + 3) & !3;
        }
        (gso, gro)
    })
}

/// Starts tcpdump counting TCP frames longer than 64 KiB on `ifname`: on
/// the sender's veth it sees egress frames after sg's TC program passed them.
fn count_big_frames(host: &Host, ifname: &str) -> Background {
    let mut bg = host.spawn(&[
        "tcpdump",
        "-i",
        ifname,
        "-nn",
        "-s",
        "128",
        "--immediate-mode",
        "-w",
        "/dev/null",
        "tcp and greater 65536",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bg.log().contains("listening on") {
        assert!(bg.try_wait().is_none(), "tcpdump exited:\n{}", bg.log());
        assert!(
            Instant::now() < deadline,
            "tcpdump not ready:\n{}",
            bg.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    bg
}

/// The "N packets captured" count tcpdump prints when stopped.
fn captured(bg: &mut Background) -> u64 {
    bg.stop(Duration::from_secs(5));
    let log = bg.log();
    log.lines()
        .find_map(|l| l.strip_suffix(" packets captured")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no capture count from tcpdump:\n{log}"))
}

/// Receives the whole download; stops at EOF, an error, or a stall.
fn receive_all(mut s: TcpStream) -> (usize, Option<std::io::Error>) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got += n,
            Err(e) => return (got, Some(e)),
        }
    }
    (got, Some(std::io::ErrorKind::TimedOut.into()))
}

#[test]
fn ipv4_big_tcp_gso_passes_egress() {
    let p = pair();
    for (host, link) in [(&p.server, &p.s), (&p.client, &p.c)] {
        assert_eq!(
            set_big_tcp_v4(host, &link.ifname, BIG),
            (Some(BIG), Some(BIG)),
            "gso/gro_ipv4_max_size of {} not set (kernel without IPv4 BIG TCP?)",
            link.ifname
        );
    }
    let features = p.server.run_ok(&["ethtool", "-k", &p.s.ifname]);
    for f in [
        "tcp-segmentation-offload: on",
        "generic-segmentation-offload: on",
    ] {
        assert!(
            features.contains(f),
            "{} lacks {f}:\n{features}",
            p.s.ifname
        );
    }

    // The server sends the download: sg's TC egress program sees its GSO
    // packets. The default egress allows them (untracked).
    let cfg = TempFile::new(
        "toml",
        &format!(
            r#"
[groups.g]
ingress = [{{ proto = "tcp", ports = "{PORT}", from = "198.18.0.0/15" }}]
"#
        ),
    );
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);

    let addr = SocketAddr::new(IpAddr::V4(p.s.v4), PORT);
    let listener = p.server.in_ns(move || TcpListener::bind(addr).unwrap());
    let sender = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let block = vec![0x5au8; 1 << 20];
        for _ in 0..TOTAL / block.len() {
            if s.write_all(&block).is_err() {
                return;
            }
        }
    });
    let mut big = count_big_frames(&p.server, &p.s.ifname);
    let stream = p
        .client
        .in_ns(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap());
    let (got, err) = receive_all(stream);
    let big_frames = captured(&mut big);
    let stats = sg.stats();
    let malformed = stats["drops_by_reason"]["malformed"].as_u64().unwrap();
    eprintln!("received {got} bytes; {big_frames} frames > 64 KiB on egress; stats {stats}");

    assert!(
        err.is_none() && got == TOTAL,
        "download stalled at {got} of {TOTAL} bytes ({err:?}); malformed drops: {malformed}"
    );
    assert_eq!(malformed, 0, "BIG TCP frames counted malformed: {stats}");
    // sg judged the download: the rule that admitted the connection counts
    // its replies, big frames included.
    let judged = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["direction"] == "ingress")
        .and_then(|r| r["bytes"].as_u64())
        .unwrap();
    assert!(
        judged >= TOTAL as u64,
        "rule counted {judged} bytes: {stats}"
    );
    // Without such frames the test would prove nothing.
    assert!(
        big_frames >= 10,
        "only {big_frames} TCP frames > 64 KiB left {}: BIG TCP not in use",
        p.s.ifname
    );
    sender.join().unwrap();
}
