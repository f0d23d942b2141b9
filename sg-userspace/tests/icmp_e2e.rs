//! ICMP end to end: the real `sg` binary on veths in network namespaces,
//! real clients. PMTU discovery for flows that the rules leave untracked
//! (SPEC 1.6, 1.8). Needs root; without it every test fails loudly.

use std::net::IpAddr;

mod support;

use support::{PmtuLab, Sg, TempFile, download, pmtu_lab, wait_listening};

#[test]
fn pmtu_discovery_works_for_untracked_http_through_a_1280_link() {
    // server ==1500== router ==1280== client. The client's own end keeps
    // 1500, so it advertises a 1460 MSS: the server's full-size segments
    // (DF set) reach the router, which answers fragmentation needed /
    // packet too big. HTTP from anywhere with the default egress is
    // untracked (SPEC 1.8), so no conntrack entry is there to relate the
    // errors to: they must be related to the untracked flow.
    let PmtuLab {
        lab: _lab,
        server,
        client,
        s,
        c,
    } = pmtu_lab();
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
