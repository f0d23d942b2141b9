//! ICMP end to end: the real `sg` binary on veths in network namespaces,
//! real clients. PMTU discovery for flows that the rules leave untracked
//! (SPEC 1.6, 1.8). Needs root; without it every test fails loudly.

use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

mod support;

use sg_lab::{Background, Host, Lab};
use support::{Sg, TempFile};

/// Reads everything a TCP server at `dst:port` sends, from inside `host`.
fn download(host: &Host, dst: IpAddr, port: u16) -> std::io::Result<usize> {
    host.in_ns(move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    })
}

fn wait_listening(host: &Host, port: u16, bg: &mut Background) {
    let sport = format!(":{port}");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(bg.try_wait().is_none(), "server exited: {}", bg.log());
        if !host
            .run_ok(&["ss", "-Hltn", "sport", "=", &sport])
            .trim()
            .is_empty()
        {
            return;
        }
        assert!(Instant::now() < end, "not listening: {}", bg.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pmtu_discovery_works_for_untracked_http_through_a_1280_link() {
    // server ==1500== router ==1280== client. The client's own end keeps
    // 1500, so it advertises a 1460 MSS: the server's full-size segments
    // (DF set) reach the router, which answers fragmentation needed /
    // packet too big. HTTP from anywhere with the default egress is
    // untracked (SPEC 1.8), so no conntrack entry is there to relate the
    // errors to: they must be related to the untracked flow.
    let mut lab = Lab::new();
    let server = lab.host("server");
    let router = lab.router("router");
    let client = lab.host("client");
    let (s, r1) = lab.link(&server, &router, 1);
    let (r2, c) = lab.link(&router, &client, 2);
    router.run_ok(&["ip", "link", "set", &r2.ifname, "mtu", "1280"]);
    server.add_route("198.18.2.0/24", IpAddr::V4(r1.v4));
    server.add_route("2001:db8:2::/64", IpAddr::V6(r1.v6));
    client.add_route("198.18.1.0/24", IpAddr::V4(r2.v4));
    client.add_route("2001:db8:1::/64", IpAddr::V6(r2.v6));
    const SIZE: usize = 200_000;
    let mut srv = server.spawn(&[
        "socat",
        "TCP6-LISTEN:80,fork,reuseaddr,ipv6only=0",
        &format!("SYSTEM:head -c {SIZE} /dev/zero"),
    ]);
    wait_listening(&server, 80, &mut srv);
    let cfg = TempFile::new(
        "toml",
        "[groups.web]\ningress = [{ type = \"http\", from = \"anywhere\" }]\n",
    );
    let sg = Sg::new(&server);
    sg.ok(&["attach", &s.ifname, "-c", cfg.path(), "--groups", "web"]);
    for dst in [IpAddr::V4(s.v4), IpAddr::V6(s.v6)] {
        let got = download(&client, dst, 80);
        assert_eq!(
            got.as_ref().ok(),
            Some(&SIZE),
            "download from {dst} through the 1280 link: {got:?}"
        );
    }
    let listed = sg.ok(&["conntrack", "list", "--json"]);
    let entries: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        entries.as_array().map(Vec::len),
        Some(0),
        "untracked: {listed}"
    );
    let mtu4 = server.run_ok(&["ip", "-4", "route", "get", &c.v4.to_string()]);
    let mtu6 = server.run_ok(&["ip", "-6", "route", "get", &c.v6.to_string()]);
    assert!(mtu4.contains("mtu 1280"), "learned path MTU v4: {mtu4}");
    assert!(mtu6.contains("mtu 1280"), "learned path MTU v6: {mtu6}");
    let stats = sg.stats();
    assert_eq!(
        stats["drops_by_reason"]["no_rule"].as_u64(),
        Some(0),
        "{stats}"
    );
}
