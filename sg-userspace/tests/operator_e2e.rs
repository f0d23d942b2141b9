//! What an operator does off the happy path (issue 10): running sg under
//! `ip netns exec`, piping its output into `head`, reordering rules while
//! connections are tracked, and a neighbour spoofing a link-local member
//! address. The real `sg` binary on veths in network namespaces.
//! Needs root; without it every test fails loudly.

use std::{
    io::Read as _,
    net::IpAddr,
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
};

mod support;

use support::{Sg, TempFile, pair};

/// scapy lives in the system Python (python3-scapy), not in a pyenv one.
const PYTHON: &str = "/usr/bin/python3";

#[test]
fn attach_under_ip_netns_exec_refuses_and_points_to_netns() {
    let p = pair();
    let cfg = TempFile::new("toml", "[groups.g]\ningress = []\n");
    let sg = Sg::new(&p.server);
    let out = Command::new("ip")
        .args(["netns", "exec", &p.server.ns])
        .arg(&sg.exe)
        .arg("--state-dir")
        .arg(&sg.state_dir)
        .args(["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("private mount namespace")
            && stderr.contains(&format!("sg --netns {}", p.server.ns)),
        "{stderr}"
    );
    // Every command that reads or writes pins refuses the same way: an
    // apply or detach there would act on a bpffs that is not the host's.
    for args in [
        &["status"][..],
        &["apply", "-c", cfg.path()],
        &["detach", "--all"],
    ] {
        let out = Command::new("ip")
            .args(["netns", "exec", &p.server.ns])
            .arg(&sg.exe)
            .arg("--state-dir")
            .arg(&sg.state_dir)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "sg {args:?}: {stderr}");
        assert!(
            stderr.contains("private mount namespace"),
            "sg {args:?}: {stderr}"
        );
    }
    // Nothing is attached, as seen from the host's mount namespace, and the
    // client still reaches the server (ingress = [] would stop the ping).
    let status = sg.json(&["status", "--json"]);
    assert_eq!(
        status["interfaces"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 1);

    // The same attach with --netns enforces, and stays after sg exits.
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 0);
}

/// Runs `sg ARGS` with its stdout a pipe whose reader is already gone.
fn into_closed_pipe(sg: &Sg, args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = sg
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (child.wait().unwrap(), stderr)
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let p = pair();
    let _srv = p.server.tcp_listen(7000);
    let cfg = TempFile::new(
        "toml",
        r#"
[groups.g]
ingress = [{ proto = "tcp", ports = "7000", from = "198.18.0.0/15" }]
egress = []
"#,
    );
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 7000));
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["stats"],
        &["stats", "--json"],
        &["conntrack", "list"],
        &["conntrack", "list", "--json"],
    ] {
        let (status, stderr) = into_closed_pipe(&sg, args);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "sg {args:?}: {stderr}"
        );
        // Ended by SIGPIPE, as `cat` into a closed pipe is, or done first.
        assert!(
            status.signal() == Some(libc::SIGPIPE) || status.success(),
            "sg {args:?}: {status:?} {stderr}"
        );
    }
}

#[test]
fn conntrack_list_names_the_opening_rule_after_rules_are_reordered() {
    let p = pair();
    let _a = p.server.tcp_listen(7000);
    let _b = p.server.tcp_listen(7001);
    let rules_a_b = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "7000", from = "198.18.0.0/15", description = "a" },
  { proto = "tcp", ports = "7001", from = "198.18.0.0/15", description = "b" },
]
"#;
    // b moves from position 1 to 0, and a (slot 0) takes position 1.
    let rules_b_a_c = r#"
[groups.g]
egress = []
ingress = [
  { proto = "tcp", ports = "7001", from = "198.18.0.0/15", description = "b" },
  { proto = "tcp", ports = "7000", from = "198.18.0.0/15", description = "a" },
  { proto = "udp", ports = "53", from = "198.18.0.0/15", description = "c" },
]
"#;
    let cfg = TempFile::new("toml", rules_a_b);
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    assert!(p.client.tcp_connects(IpAddr::V4(p.s.v4), 7001));
    let opener = |sg: &Sg| -> Vec<String> {
        sg.json(&["conntrack", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["dst_port"] == 7001)
            .map(|e| e["rule"].as_str().unwrap_or("none").to_string())
            .collect()
    };
    let before = opener(&sg);
    assert!(!before.is_empty(), "no tracked connection to 7001");
    let b_id = before[0].clone();
    assert!(b_id.starts_with("sgr-"), "{b_id}");

    let cfg2 = TempFile::new("toml", rules_b_a_c);
    sg.ok(&["apply", "-c", cfg2.path()]);
    assert!(
        opener(&sg).iter().all(|id| *id == b_id),
        "after reordering, the connection to 7001 must still name rule b ({b_id}): {:?}",
        opener(&sg)
    );
}

/// A neighbour on the link takes the server's own link-local address as
/// its source. Link-local addresses name no host beyond the link, so they
/// make no one a member of `sg:g`: the packet needs a rule of its own.
#[test]
fn a_spoofed_link_local_member_address_is_not_a_member() {
    let p = pair();
    let cfg = TempFile::new(
        "toml",
        r#"
[groups.g]
ingress = [{ proto = "udp", ports = "7001", from = "sg:g" }]
"#,
    );
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    let addrs = p.server.run_ok(&[
        "ip",
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        &p.s.ifname,
        "scope",
        "link",
    ]);
    let server_ll = addrs
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on the server: {addrs}"))
        .to_string();
    let no_rule = |sg: &Sg| sg.stats()["drops_by_reason"]["no_rule"].as_u64().unwrap();
    let before = no_rule(&sg);
    let script = format!(
        "from scapy.all import Ether, IPv6, UDP, sendp, conf\n\
         conf.verb = 0\n\
         sendp(Ether()/IPv6(src='{server_ll}', dst='{}')/UDP(sport=40000, dport=7001)/b'x', iface='{}')\n",
        p.s.v6, p.c.ifname
    );
    p.client.run_ok(&[PYTHON, "-c", &script]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while no_rule(&sg) == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        no_rule(&sg),
        before + 1,
        "a packet from the server's link-local address {server_ll} must match no sg:g rule"
    );
}

/// Unmounts and removes a state dir that is a bpffs mount of its own.
struct OwnMount(std::path::PathBuf);

impl Drop for OwnMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A state dir outside /sys/fs/bpf gets a bpffs mounted on it, whose root
/// holds the kernel's own `maps.debug` and `progs.debug` that no one may
/// remove: `detach --all` must leave them, succeed, and stop enforcing.
#[test]
fn detach_all_succeeds_on_a_state_dir_that_is_its_own_bpffs() {
    let p = pair();
    let cfg = TempFile::new("toml", "[groups.g]\ningress = []\n");
    let exe = Sg::new(&p.server).exe.clone();
    let dir = std::path::PathBuf::from(format!("/run/{}", sg_lab::unique_name("sgown")));
    let _mount = OwnMount(dir.clone());
    let sg = sg_lab::SgCli {
        exe,
        state_dir: dir.clone(),
        netns: p.server.ns.clone(),
    };
    sg.run(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"])
        .unwrap();
    assert!(
        dir.join("progs.debug").exists(),
        "the kernel's bpffs files are what this test is about"
    );
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 0, "enforced");
    let out = sg.cmd(&["detach", "--all"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("cannot remove"), "{stderr}");
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 1, "detached");
}

/// After an upgrade that changed a map's definition, the maps pinned by the
/// old version cannot be reused: commands name the way out, and `detach
/// --all` (which needs no map) takes it.
#[test]
fn maps_pinned_by_another_version_are_named_and_detach_all_removes_them() {
    let p = pair();
    let cfg = TempFile::new("toml", "[groups.g]\ningress = []\n");
    let sg = Sg::new(&p.server);
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 0, "enforced");
    // What an older sg left: RULE_SETS with other flags (preallocated).
    let pin = sg.state_dir.join("maps").join("RULE_SETS");
    std::fs::remove_file(&pin).unwrap();
    support::pin_hash_map(&pin, 8, 8, 64, 0);

    let out = sg.cmd(&["status"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("were made by another version of sg")
            && stderr.contains("sg detach --all")
            && stderr.contains("RULE_SETS"),
        "{stderr}"
    );

    let out = sg.cmd(&["detach", "--all"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 1, "detached");
    assert!(!pin.exists(), "the foreign map's pin is gone");
    // And a new attach starts over with this version's maps.
    sg.ok(&["attach", &p.s.ifname, "-c", cfg.path(), "--groups", "g"]);
    assert_eq!(p.client.ping(IpAddr::V4(p.s.v4), 1), 0, "enforced again");
}
