//! Attach keeps what is already connected (issue 17, SPEC 4): connections
//! established before `sg attach` (or an `sg apply` that restricts) are
//! adopted as tracked when the policy allows their opening direction, so
//! they go on where only conntrack can carry their replies; those it does
//! not allow stop. Real clients in network namespaces, `sg --netns`.
//! Needs root; without it every test fails loudly.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

mod support;

use sg_lab::Host;
use support::{Held, Sg, TempFile, pair};

fn tracked(sg: &Sg) -> Vec<serde_json::Value> {
    sg.json(&["conntrack", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn adopted_in_status(sg: &Sg) -> u64 {
    sg.json(&["status", "--json"])["interfaces"][0]["adopted"]
        .as_u64()
        .expect("status names the adopted count")
}

/// The server allows tcp/`port` (and udp/`port`) from the client, both
/// families, and sends nothing of its own: its replies pass only as
/// tracked traffic.
fn inbound_only(c: &sg_lab::Link, port: u16, extra: &str) -> TempFile {
    TempFile::new(
        "toml",
        &format!(
            r#"
[groups.g]
egress = []
ingress = [
  {{ proto = "tcp", ports = "{port}", from = ["{}", "{}"] }},
  {{ proto = "udp", ports = "{port}", from = ["{}", "{}"] }},
]
{extra}
"#,
            c.v4, c.v6, c.v4, c.v6
        ),
    )
}

fn attach(sg: &Sg, iface: &str, cfg: &TempFile) -> String {
    sg.ok(&["attach", iface, "-c", cfg.path(), "--groups", "g"])
}

#[test]
fn inbound_tcp_established_before_attach_keeps_working_ipv4_and_ipv6() {
    let p = pair();
    let _echo = p.server.tcp_listen(7100);
    let v4 = Held::open(&p.client, IpAddr::V4(p.s.v4), 7100);
    let v6 = Held::open(&p.client, IpAddr::V6(p.s.v6), 7100);
    assert!(v4.exchange() && v6.exchange(), "works before attach");
    let cfg = inbound_only(&p.c, 7100, "");
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &cfg);
    assert!(
        out.contains("; 2 established connections adopted;"),
        "attach reports the adoption: {out}"
    );
    assert!(v4.exchange(), "the IPv4 connection survives attach");
    assert!(v6.exchange(), "the IPv6 connection survives attach");
    assert!(v4.exchange() && v6.exchange(), "and keeps working");

    let entries = tracked(&sg);
    let adopted: Vec<_> = entries.iter().filter(|e| e["adopted"] == true).collect();
    assert_eq!(adopted.len(), 2, "{entries:#?}");
    for e in &adopted {
        assert_eq!(e["direction"], "ingress", "{e}");
        assert_eq!(e["state"], "established", "{e}");
        assert_eq!(e["dst_port"], 7100, "{e}");
        assert!(
            e["rule"].as_str().is_some_and(|r| r.starts_with("sgr-")),
            "an adopted connection names its rule: {e}"
        );
    }
    let srcs: Vec<&str> = adopted.iter().map(|e| e["src"].as_str().unwrap()).collect();
    assert!(srcs.contains(&p.c.v4.to_string().as_str()), "{srcs:?}");
    assert!(srcs.contains(&p.c.v6.to_string().as_str()), "{srcs:?}");
    assert_eq!(adopted_in_status(&sg), 2);
}

#[test]
fn outbound_tcp_established_before_attach_keeps_working() {
    let p = pair();
    let _echo = p.client.tcp_listen(7110);
    // The attached host opened this one.
    let held = Held::open(&p.server, IpAddr::V4(p.c.v4), 7110);
    assert!(held.exchange());
    let cfg = TempFile::new(
        "toml",
        &format!(
            "[groups.g]\negress = [{{ proto = \"tcp\", ports = \"7110\", to = \"{}\" }}]\n",
            p.c.v4
        ),
    );
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &cfg);
    assert!(out.contains("1 established connection adopted"), "{out}");
    assert!(held.exchange(), "replies come in as tracked traffic");
    let e = tracked(&sg)
        .into_iter()
        .find(|e| e["adopted"] == true)
        .expect("adopted");
    assert_eq!(e["direction"], "egress", "{e}");
    assert_eq!(e["src"], p.s.v4.to_string(), "{e}");
}

#[test]
fn a_connection_the_policy_does_not_allow_is_not_adopted_and_stops() {
    let p = pair();
    let _allowed = p.server.tcp_listen(7120);
    let _other = p.server.tcp_listen(7121);
    let allowed = Held::open(&p.client, IpAddr::V4(p.s.v4), 7120);
    let other = Held::open(&p.client, IpAddr::V4(p.s.v4), 7121);
    assert!(allowed.exchange() && other.exchange());
    let cfg = inbound_only(&p.c, 7120, "");
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &cfg);
    assert!(out.contains("; 1 established connection adopted;"), "{out}");
    assert!(allowed.exchange(), "the allowed one goes on");
    assert!(!other.exchange(), "the one no rule allows no longer flows");
    assert!(
        tracked(&sg).iter().all(|e| e["dst_port"] != 7121),
        "nothing tracked for it"
    );
}

/// A UDP socket bound to `local` (sharing the port with others:
/// SO_REUSEADDR) in `host`'s namespace, connected to `remote` if given.
fn udp_socket(host: &Host, local: SocketAddr, remote: Option<SocketAddr>) -> UdpSocket {
    host.in_ns(move || {
        use nix::sys::socket::{
            AddressFamily, SockFlag, SockType, SockaddrStorage, bind, setsockopt, socket,
            sockopt::ReuseAddr,
        };
        let family = if local.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        let fd = socket(family, SockType::Datagram, SockFlag::empty(), None).unwrap();
        setsockopt(&fd, ReuseAddr, &true).unwrap();
        bind(fd.as_raw_fd(), &SockaddrStorage::from(local)).unwrap();
        let s = UdpSocket::from(fd);
        if let Some(remote) = remote {
            s.connect(remote).unwrap();
        }
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    })
}

#[test]
fn connected_udp_of_a_server_is_adopted_as_inbound() {
    let p = pair();
    let server_addr = SocketAddr::new(IpAddr::V4(p.s.v4), 7130);
    let client_addr = SocketAddr::new(IpAddr::V4(p.c.v4), 40130);
    // The server's port, and a socket connected to one client on it.
    let _bound = udp_socket(&p.server, SocketAddr::new([0, 0, 0, 0].into(), 7130), None);
    let conn = udp_socket(&p.server, server_addr, Some(client_addr));
    let client = udp_socket(&p.client, client_addr, Some(server_addr));
    let pushes = |n: u8| {
        conn.send(&[n]).unwrap();
        let mut buf = [0u8; 8];
        matches!(client.recv(&mut buf), Ok(1) if buf[0] == n)
    };
    assert!(pushes(1), "works before attach");
    let cfg = inbound_only(&p.c, 7130, "");
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &cfg);
    assert!(out.contains("; 1 established connection adopted;"), "{out}");
    assert!(pushes(2), "the server may still send first to its client");
    let e = tracked(&sg)
        .into_iter()
        .find(|e| e["adopted"] == true)
        .expect("adopted");
    assert_eq!(e["proto_name"], "udp", "{e}");
    assert_eq!(e["direction"], "ingress", "{e}");
    assert_eq!(e["state"], "udp_stream", "{e}");
}

#[test]
fn adoption_stops_at_max_entries_and_says_how_many_did_not_fit() {
    let p = pair();
    let _echo = p.server.tcp_listen(7140);
    let a = Held::open(&p.client, IpAddr::V4(p.s.v4), 7140);
    let b = Held::open(&p.client, IpAddr::V4(p.s.v4), 7140);
    assert!(a.exchange() && b.exchange());
    let cfg = inbound_only(&p.c, 7140, "[conntrack]\nmax_entries = 1\n");
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &cfg);
    assert!(
        out.contains(
            "1 established connection adopted, 1 not adopted: the conntrack table is full"
        ),
        "{out}"
    );
    assert_eq!(
        a.exchange() as u8 + b.exchange() as u8,
        1,
        "exactly one fits"
    );
    assert_eq!(adopted_in_status(&sg), 1);
    let status = sg.json(&["status", "--json"]);
    assert_eq!(status["conntrack_entries"], 1, "{status}");
}

#[test]
fn an_apply_that_restricts_adopts_what_was_untracked() {
    let p = pair();
    let _echo = p.server.tcp_listen(7150);
    // Everything allowed everywhere: flows from anywhere are untracked.
    let open_cfg = TempFile::new(
        "toml",
        "[groups.g]\ningress = [{ proto = \"all\", from = \"anywhere\" }]\n",
    );
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &open_cfg);
    assert!(
        out.contains("; 0 established connections adopted;"),
        "{out}"
    );
    let held = Held::open(&p.client, IpAddr::V4(p.s.v4), 7150);
    assert!(held.exchange());
    assert!(tracked(&sg).is_empty(), "untracked under the open policy");
    let strict = TempFile::new(
        "toml",
        &format!(
            "[groups.g]\negress = []\ningress = [{{ proto = \"tcp\", ports = \"7150\", from = \"{}\" }}]\n[interfaces.{}]\ngroups = [\"g\"]\n",
            p.c.v4, p.s.ifname
        ),
    );
    let out = sg.ok(&["apply", "-c", strict.path()]);
    assert!(
        out.contains(&format!("{}: 1 established connection adopted", p.s.ifname)),
        "{out}"
    );
    assert!(held.exchange(), "it survives the apply");
    let json = sg.json(&["apply", "-c", strict.path(), "--json"]);
    assert_eq!(
        json["adopted"][&p.s.ifname]["adopted"], 0,
        "already tracked: nothing new to adopt: {json}"
    );
    assert_eq!(adopted_in_status(&sg), 1);
}

/// A connection the attached host opened and then half closed (its FIN
/// sent, FIN_WAIT2; the peer in CLOSE_WAIT) is adopted as closing: the
/// peer's half still carries data, which only conntrack lets in.
#[test]
fn a_half_closed_connection_is_adopted_and_its_open_half_still_flows() {
    use std::io::{Read as _, Write as _};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let p = pair();
    let at = SocketAddr::new(IpAddr::V4(p.c.v4), 7130);
    let listener = p.client.in_ns(move || TcpListener::bind(at).unwrap());
    let mut host_side = p
        .server
        .in_ns(move || TcpStream::connect_timeout(&at, Duration::from_secs(3)).unwrap());
    let (mut peer, _) = listener.accept().unwrap();
    host_side.shutdown(Shutdown::Write).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(peer.read(&mut buf).unwrap(), 0, "the peer sees the FIN");
    let cfg = TempFile::new(
        "toml",
        &format!(
            "[groups.g]\ningress = []\negress = [{{ proto = \"tcp\", ports = \"7130\", to = \"{}\" }}]\n",
            p.c.v4
        ),
    );
    let sg = Sg::new(&p.server);
    let out = attach(&sg, &p.s.ifname, &cfg);
    assert!(out.contains("1 established connection adopted"), "{out}");
    let e = tracked(&sg)
        .into_iter()
        .find(|e| e["adopted"] == true)
        .expect("adopted");
    assert_eq!(e["state"], "fin_wait", "{e}");
    assert_eq!(e["direction"], "egress", "{e}");
    peer.write_all(b"still open").unwrap();
    host_side
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut got = [0u8; 10];
    host_side
        .read_exact(&mut got)
        .expect("the open half flows after attach");
    assert_eq!(&got, b"still open");
}
