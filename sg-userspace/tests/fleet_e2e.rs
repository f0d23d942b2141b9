//! Fleet mode end to end (SPEC 8): a real etcd in a lab namespace, real
//! agents in their own namespaces and state dirs, real traffic.
//!
//! Layout: a hub namespace routes between the hosts and runs etcd on
//! 198.18.1.1; host i hangs off the hub on 198.18.i.0/24 (the host is .2).

mod support;

use std::{
    net::IpAddr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use sg_lab::{Background, Etcd, EtcdTls, Host, Lab, Link, unique_name};
use support::{Sg, TempFile, wait_until};

/// The course example: db accepts 1433 from the app group. `base` lets
/// etcd's replies in when no entry tracks the agent's connection (attach
/// adopts it: `the_agents_etcd_connection_is_adopted_at_attach`).
const POLICY: &str = r#"
[groups.base]
ingress = [{ proto = "tcp", ports = "1024-65535", from = "198.18.1.1/32", description = "etcd replies" }]

[groups.db]
ingress = [{ proto = "tcp", ports = "1433", from = "sg:app" }]

[groups.app]
"#;

const LEASE: u64 = 3;

struct FleetLab {
    etcd: Etcd,
    hosts: Vec<(Host, Link)>,
    _hub: Host,
    _lab: Lab,
}

fn fleet_lab(n: u8) -> FleetLab {
    let mut lab = Lab::new();
    let hub = lab.router("hub");
    let mut hosts = Vec::new();
    for i in 1..=n {
        let h = lab.host(&format!("h{i}"));
        let (_hub_end, host_end) = lab.link(&hub, &h, i);
        h.add_route("198.18.0.0/16", format!("198.18.{i}.1").parse().unwrap());
        hosts.push((h, host_end));
    }
    let etcd = Etcd::start(&hub, "198.18.1.1".parse().unwrap());
    FleetLab {
        etcd,
        hosts,
        _hub: hub,
        _lab: lab,
    }
}

impl FleetLab {
    fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1].0
    }
    fn link(&self, i: usize) -> &Link {
        &self.hosts[i - 1].1
    }
    fn ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.link(i).v4)
    }
    fn prefix(&self) -> String {
        "/sgtest".into()
    }
    /// `sg fleet ARGS --etcd URL --prefix P` (no namespace: run on `host`).
    fn fleet(&self, on: &Sg, args: &[&str]) -> std::process::Output {
        let url = self.etcd.url();
        let prefix = self.prefix();
        let mut full = vec!["fleet"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--etcd", &url, "--prefix", &prefix]);
        on.run(&full)
    }
    fn push(&self, on: &Sg, policy: &str) -> i64 {
        let f = TempFile::new("toml", policy);
        let out = self.fleet(on, &["push", "-c", f.path()]);
        assert!(
            out.status.success(),
            "push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.trim()
            .rsplit(' ')
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {text:?}"))
    }
    fn show(&self, on: &Sg) -> serde_json::Value {
        let out = self.fleet(on, &["show", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A running `sg agent`, its state dir and namespace. Drop kills it, then
/// detaches (through `Sg`).
struct Agent {
    child: Option<Child>,
    log: PathBuf,
    sg: Sg,
    args: Vec<String>,
    password: String,
}

impl Agent {
    fn start(fl: &FleetLab, i: usize, name: &str, groups: &str) -> Agent {
        Agent::start_with(fl, i, name, groups, &[], "")
    }

    /// With extra flags, and `SG_ETCD_PASSWORD` when `password` is not empty.
    fn start_with(
        fl: &FleetLab,
        i: usize,
        name: &str,
        groups: &str,
        extra: &[&str],
        password: &str,
    ) -> Agent {
        let sg = Sg::new(fl.host(i));
        let mut args = vec![
            "agent".to_string(),
            "--etcd".into(),
            fl.etcd.url(),
            "--prefix".into(),
            fl.prefix(),
            "--host".into(),
            name.into(),
            "--iface".into(),
            format!("{}={groups}", fl.link(i).ifname),
            "--lease".into(),
            format!("{LEASE}s"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("sgagent")));
        let mut agent = Agent {
            child: None,
            log,
            sg,
            args,
            password: password.to_string(),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut cmd = self.sg.cmd(&args);
        if !self.password.is_empty() {
            cmd.env("SG_ETCD_PASSWORD", &self.password);
        }
        let child: Child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("sg agent starts");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&mut self, sig: i32) {
        let child = self.child.as_mut().expect("running");
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        self.child = None;
        if sig == libc::SIGTERM {
            assert!(
                status.success(),
                "SIGTERM ends the agent cleanly: {status:?}\n{}",
                self.log()
            );
        }
    }

    fn fleet_status(&self) -> serde_json::Value {
        let out = self.sg.run(&["status", "--json"]);
        if !out.status.success() {
            return serde_json::Value::Null;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["fleet"].clone()
    }

    /// Waits until the agent is connected with policy `revision` in force
    /// and `group` has `members` registered addresses.
    fn wait_for(&self, revision: i64, group: &str, members: u64) {
        let ok = wait_until(
            || {
                let f = self.fleet_status();
                f["connected"] == true
                    && f["revision"] == revision
                    && f["members"][group].as_u64().unwrap_or(0) == members
            },
            // The first attach loads and verifies the programs: slow on a
            // loaded machine.
            Duration::from_secs(90),
        );
        assert!(
            ok,
            "agent never reached revision {revision} with {members} members in {group}: {}\n{}",
            self.fleet_status(),
            self.log()
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: our own child's process group.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("agent log {}:\n{}", self.log.display(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn listen(host: &Host, port: u16) -> Background {
    let mut bg = host.tcp_listen(port);
    support::wait_listening(host, port, &mut bg);
    bg
}

/// Members per host (v4 and v6 address of its link) per group.
const PER_HOST: u64 = 2;

#[test]
fn join_crash_and_policy_change_reach_every_agent() {
    let fl = fleet_lab(3);
    let admin = Sg::new(fl.host(1));
    let rev = fl.push(&admin, POLICY);
    let _srv = listen(fl.host(1), 1433);
    let db = Agent::start(&fl, 1, "db-1", "base,db");
    let app = Agent::start(&fl, 2, "app-1", "base,app");
    db.wait_for(rev, "app", PER_HOST);
    app.wait_for(rev, "app", PER_HOST);
    let db_ip = fl.ip(1);
    assert!(
        fl.host(2).tcp_connects(db_ip, 1433),
        "an app host reaches db:1433"
    );
    assert!(
        !fl.host(3).tcp_connects(db_ip, 1433),
        "host 3 is no app member yet"
    );

    // Join: host 3's agent puts it in app; db lets it in.
    let mut joiner = Agent::start(&fl, 3, "app-2", "base,app");
    db.wait_for(rev, "app", 2 * PER_HOST);
    assert!(
        fl.host(3).tcp_connects(db_ip, 1433),
        "a host that joins app gets in"
    );
    let show = fl.show(&admin);
    assert_eq!(show["revision"], rev);
    assert_eq!(show["hosts"].as_object().unwrap().len(), 3, "{show}");
    assert_eq!(
        show["groups"]["app"]["registered"]["app-2"][0],
        fl.ip(3).to_string()
    );

    // Crash: the joiner's agent is SIGKILLed; its lease runs out and db
    // shuts it out within the TTL plus a second (plus polling slack).
    joiner.signal(libc::SIGKILL);
    let killed = Instant::now();
    db.wait_for(rev, "app", PER_HOST);
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(LEASE + 3),
        "a dead agent's members left after {took:?} (TTL {LEASE}s)"
    );
    assert!(
        !fl.host(3).tcp_connects(db_ip, 1433),
        "a dead agent's host is shut out"
    );
    assert!(
        fl.host(2).tcp_connects(db_ip, 1433),
        "the live app host still gets in"
    );

    // Policy change: db now serves 1434 only, on every agent at once.
    let _srv2 = listen(fl.host(1), 1434);
    let changed = POLICY.replace("\"1433\"", "\"1434\"");
    let rev2 = fl.push(&admin, &changed);
    assert!(rev2 > rev);
    db.wait_for(rev2, "app", PER_HOST);
    app.wait_for(rev2, "app", PER_HOST);
    assert!(fl.host(2).tcp_connects(db_ip, 1434));
    assert!(
        !fl.host(2).tcp_connects(db_ip, 1433),
        "the old rule is gone"
    );
    let text = db.sg.ok(&["status"]);
    assert!(
        text.contains("connected to etcd since") && text.contains(&format!("revision {rev2}")),
        "{text}"
    );
}

#[test]
fn addresses_follow_netlink_and_leave_removes_at_once() {
    let fl = fleet_lab(2);
    let admin = Sg::new(fl.host(1));
    let rev = fl.push(&admin, POLICY);
    let _srv = listen(fl.host(1), 1433);
    let db = Agent::start(&fl, 1, "db-1", "base,db");
    let mut app = Agent::start(&fl, 2, "app-1", "base,app");
    db.wait_for(rev, "app", PER_HOST);

    // An address added on the app host joins app within a second...
    let iface = fl.link(2).ifname.clone();
    fl.host(2)
        .run_ok(&["ip", "addr", "add", "198.18.2.77/24", "dev", &iface]);
    let added = Instant::now();
    db.wait_for(rev, "app", PER_HOST + 1);
    assert!(
        added.elapsed() < Duration::from_secs(3),
        "{:?}",
        added.elapsed()
    );
    let show = fl.show(&admin);
    let addrs = show["groups"]["app"]["registered"]["app-1"].to_string();
    assert!(addrs.contains("198.18.2.77"), "{addrs}");
    // ... a link-local or tentative one does not.
    fl.host(2)
        .run_ok(&["ip", "addr", "add", "169.254.9.9/16", "dev", &iface]);
    // ... and a removed one leaves.
    fl.host(2)
        .run_ok(&["ip", "addr", "del", "198.18.2.77/24", "dev", &iface]);
    db.wait_for(rev, "app", PER_HOST);
    let show = fl.show(&admin);
    let addrs = show["groups"]["app"]["registered"]["app-1"].to_string();
    assert!(
        !addrs.contains("198.18.2.77") && !addrs.contains("169.254"),
        "{addrs}"
    );
    assert!(fl.host(2).tcp_connects(fl.ip(1), 1433));

    // Leave: the host is out at once (no lease wait), its agent exits and
    // its own enforcement stays pinned.
    let out = fl.fleet(&admin, &["leave", "--host", "app-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db.wait_for(rev, "app", 0);
    assert!(
        !fl.host(2).tcp_connects(fl.ip(1), 1433),
        "a host that left is shut out"
    );
    let exited = wait_until(
        || app.child.as_mut().unwrap().try_wait().unwrap().is_some(),
        Duration::from_secs(5),
    );
    assert!(exited, "the agent of a host that left exits");
    assert!(
        app.log().contains("removed from the fleet"),
        "{}",
        app.log()
    );
    let status = app.sg.json(&["status", "--json"]);
    assert_eq!(
        status["interfaces"].as_array().unwrap().len(),
        1,
        "still enforcing"
    );
    app.child = None;
    let out = fl.fleet(&admin, &["leave", "--host", "app-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the fleet"));
}

#[test]
fn invalid_push_stores_nothing_and_a_bad_revision_is_refused() {
    let fl = fleet_lab(2);
    let admin = Sg::new(fl.host(1));
    let rev = fl.push(&admin, POLICY);
    let _srv = listen(fl.host(1), 1433);
    let db = Agent::start(&fl, 1, "db-1", "base,db");
    let _app = Agent::start(&fl, 2, "app-1", "base,app");
    db.wait_for(rev, "app", PER_HOST);

    // An invalid file: exit 1 with file:line:col, nothing stored.
    let bad = TempFile::new(
        "toml",
        "[groups.db]\ningress = [{ proto = \"tcp\", ports = \"99999\", from = \"sg:app\" }]\n",
    );
    let out = fl.fleet(&admin, &["push", "-c", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", bad.path())), "{err}");
    assert_eq!(fl.show(&admin)["revision"], rev, "nothing stored");

    // A revision this host cannot compile (its group is gone), written past
    // the push check: refused and reported, the last good one stays.
    let no_db = POLICY.replace("[groups.db]\n", "[groups.other]\n");
    let f = TempFile::new("toml", &no_db);
    let text = std::fs::read_to_string(f.path()).unwrap();
    fl.etcd
        .etcdctl_ok(&["put", &format!("{}/policy", fl.prefix()), &text]);
    let bad_rev = fl.show(&admin)["revision"].as_i64().unwrap();
    let refused = wait_until(
        || db.fleet_status()["refused"]["revision"] == bad_rev,
        Duration::from_secs(10),
    );
    assert!(refused, "{}", db.fleet_status());
    let st = db.fleet_status();
    assert_eq!(st["revision"], rev, "the last good revision stays in force");
    assert!(
        st["refused"]["error"].as_str().unwrap().contains("db"),
        "{st}"
    );
    let text = db.sg.ok(&["status"]);
    assert!(
        text.contains(&format!("refused policy revision {bad_rev}")),
        "{text}"
    );
    assert!(
        fl.host(2).tcp_connects(fl.ip(1), 1433),
        "enforcement unchanged"
    );

    // A policy that blocks the agent's own etcd traffic is applied as
    // written (no hidden rules), with a warning.
    let closed = POLICY
        .replace("[groups.base]\n", "[groups.base]\negress = []\n")
        .replace("[groups.db]\n", "[groups.db]\negress = []\n");
    fl.push(&admin, &closed);
    let warned = wait_until(
        || {
            db.log()
                .contains("blocks this agent's connection to etcd at 198.18.1.1:2379")
        },
        Duration::from_secs(10),
    );
    assert!(warned, "{}", db.log());
}

#[test]
fn etcd_down_keeps_enforcement_and_a_restarted_agent_keeps_its_lease() {
    let mut fl = fleet_lab(2);
    let admin = Sg::new(fl.host(1));
    let rev = fl.push(&admin, POLICY);
    let _srv = listen(fl.host(1), 1433);
    let db = Agent::start(&fl, 1, "db-1", "base,db");
    let mut app = Agent::start(&fl, 2, "app-1", "base,app");
    db.wait_for(rev, "app", PER_HOST);
    app.wait_for(rev, "app", PER_HOST);

    // Restart within the lease: same lease, no membership gap at db.
    let lease = app.fleet_status()["lease"].clone();
    assert!(lease.is_i64(), "{}", app.fleet_status());
    app.signal(libc::SIGTERM);
    assert!(
        app.log().contains("enforcement stays pinned"),
        "{}",
        app.log()
    );
    assert_eq!(db.fleet_status()["members"]["app"], PER_HOST, "no gap");
    app.spawn();
    app.wait_for(rev, "app", PER_HOST);
    assert_eq!(
        app.fleet_status()["lease"],
        lease,
        "the lease was taken over"
    );
    // Past the old TTL, the members are still there (the lease lives on).
    std::thread::sleep(Duration::from_secs(LEASE + 1));
    assert_eq!(db.fleet_status()["members"]["app"], PER_HOST);

    // etcd down: enforcement stays, status says since when.
    fl.etcd.stop();
    let down = wait_until(
        || db.fleet_status()["connected"] == false,
        Duration::from_secs(15),
    );
    assert!(down, "{}", db.fleet_status());
    let text = db.sg.ok(&["status"]);
    assert!(text.contains("fleet disconnected since"), "{text}");
    assert!(
        fl.host(2).tcp_connects(fl.ip(1), 1433),
        "static, never open or closed"
    );

    // Back: a fresh read; a change made after it reaches the agents.
    fl.etcd.resume();
    let rev2 = fl.push(&admin, &POLICY.replace("\"1433\"", "\"1433-1434\""));
    db.wait_for(rev2, "app", PER_HOST);
    assert!(fl.host(2).tcp_connects(fl.ip(1), 1433));
    let text = db.sg.ok(&["status"]);
    assert!(text.contains("connected to etcd since"), "{text}");
}

/// SPEC 8.2 `--nacl IFACE=NACL`: the agent composes `nacl = "NACL"` into its
/// interface, and the fleet policy's NACL is enforced there (a port the SGs
/// allow, the NACL denies); `fleet push` validates NACLs and prefix lists.
#[test]
fn an_agent_with_nacl_enforces_the_policys_nacl() {
    let fl = fleet_lab(2);
    let admin = Sg::new(fl.host(1));
    let policy = format!(
        r#"{}
[prefix_lists.closed]
entries = ["198.18.0.0/16"]

[nacls.edge]
ingress = [
  {{ rule = 10, action = "deny", proto = "tcp", ports = "1434", from = "pl:closed" }},
  {{ rule = 100, action = "allow", proto = "all", from = "anywhere" }},
]
egress = [{{ rule = 100, action = "allow", proto = "all", to = "anywhere" }}]
"#,
        POLICY.replace("\"1433\"", "\"1433-1434\"")
    );
    // A NACL rule naming a list the file lacks: refused, nothing stored.
    let bad = TempFile::new("toml", &policy.replace("pl:closed", "pl:nope"));
    let out = fl.fleet(&admin, &["push", "-c", bad.path()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown prefix list `nope`"), "{err}");
    let good = TempFile::new("toml", &policy);
    let out = fl.fleet(&admin, &["push", "-c", good.path()]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("named by no interface"), "{err}");
    let rev = fl.show(&admin)["revision"].as_i64().unwrap();

    let _srv = [listen(fl.host(1), 1433), listen(fl.host(1), 1434)];
    let nacl = format!("{}=edge", fl.link(1).ifname);
    let db = Agent::start_with(&fl, 1, "db-1", "base,db", &["--nacl", &nacl], "");
    let app = Agent::start(&fl, 2, "app-1", "base,app");
    db.wait_for(rev, "app", PER_HOST);
    app.wait_for(rev, "app", PER_HOST);
    assert!(
        fl.host(2).tcp_connects(fl.ip(1), 1433),
        "NACL 100 and db allow"
    );
    assert!(
        !fl.host(2).tcp_connects(fl.ip(1), 1434),
        "NACL rule 10 denies what db allows"
    );
    let status = db.sg.json(&["status", "--json"]);
    assert_eq!(status["interfaces"][0]["nacl"]["name"], "edge", "{status}");
    let stats = db.sg.stats();
    let ten = stats["nacl_rules"]
        .as_array()
        .expect("nacl_rules")
        .iter()
        .find(|r| r["nacl"] == "edge" && r["direction"] == "ingress" && r["rule"] == "10")
        .unwrap_or_else(|| panic!("no rule 10 in {stats}"))
        .clone();
    assert!(ten["denied_packets"].as_u64().unwrap() >= 1, "{ten}");
    // The app host has no --nacl: no NACL layer there.
    let status = app.sg.json(&["status", "--json"]);
    assert!(status["interfaces"][0]["nacl"].is_null(), "{status}");
}

/// Adoption (issue 17) at the agent's attach: the agent's own connection to
/// etcd, opened before the attach and allowed by the policy's egress (the
/// AWS default allow-all here), is adopted, so etcd's replies pass with no
/// ingress rule for them and the agent keeps following the fleet.
#[test]
fn the_agents_etcd_connection_is_adopted_at_attach() {
    let fl = fleet_lab(2);
    let admin = Sg::new(fl.host(1));
    let no_base = POLICY.replace(
        r#"[groups.base]
ingress = [{ proto = "tcp", ports = "1024-65535", from = "198.18.1.1/32", description = "etcd replies" }]
"#,
        "",
    );
    assert!(!no_base.contains("base"), "{no_base}");
    let rev = fl.push(&admin, &no_base);
    let _srv = listen(fl.host(1), 1433);
    let db = Agent::start(&fl, 1, "db-1", "db");
    let app = Agent::start(&fl, 2, "app-1", "app");
    db.wait_for(rev, "app", PER_HOST);
    app.wait_for(rev, "app", PER_HOST);
    let status = db.sg.json(&["status", "--json"]);
    assert!(
        status["interfaces"][0]["adopted"].as_u64().unwrap() >= 1,
        "the etcd connection is adopted: {status}"
    );
    // Changes still reach both agents over their adopted connections.
    let rev2 = fl.push(&admin, &no_base.replace("\"1433\"", "\"1433-1434\""));
    db.wait_for(rev2, "app", PER_HOST);
    app.wait_for(rev2, "app", PER_HOST);
    assert!(fl.host(2).tcp_connects(fl.ip(1), 1433));
    assert!(
        !db.log().contains("blocks this agent's connection to etcd"),
        "{}",
        db.log()
    );
}

#[test]
fn bad_flags_are_usage_errors_that_change_nothing() {
    let fl = fleet_lab(1);
    let sg = Sg::new(fl.host(1));
    let out = sg.run(&[
        "agent",
        "--etcd",
        "localhost:2379",
        "--host",
        "h",
        "--iface",
        "x=a",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http://HOST:PORT"));
    let out = sg.run(&[
        "agent",
        "--etcd",
        &fl.etcd.url(),
        "--host",
        "h",
        "--iface",
        "nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("IFACE=GROUP"));
    for (nacl, why) in [
        ("x", "expected IFACE=NACL"),
        ("x=", "name a NACL"),
        ("y=edge", "y is not an --iface of this agent"),
    ] {
        let out = sg.run(&[
            "agent",
            "--etcd",
            &fl.etcd.url(),
            "--host",
            "h",
            "--iface",
            "x=a",
            "--nacl",
            nacl,
        ]);
        assert_eq!(out.status.code(), Some(1), "--nacl {nacl}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "--nacl {nacl}: {err}");
    }
    let out = sg.run(&["fleet", "show", "--etcd", &fl.etcd.url(), "--cert", "/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cert and --key"));
    assert!(
        sg.json(&["status", "--json"])["interfaces"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn rbac_lets_a_host_write_only_its_own_keys() {
    let fl = fleet_lab(2);
    let admin = Sg::new(fl.host(1));
    let p = fl.prefix();
    // The README's setup, for host db-1 (groups base and db).
    let root = ["--user", "root:rootpw"];
    for cmd in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "sg-admin"],
        vec![
            "role",
            "grant-permission",
            "sg-admin",
            "readwrite",
            &format!("{p}/"),
            "--prefix=true",
        ],
        vec!["user", "add", "sg-admin:adminpw"],
        vec!["user", "grant-role", "sg-admin", "sg-admin"],
        vec!["role", "add", "sg-host-db-1"],
        vec![
            "role",
            "grant-permission",
            "sg-host-db-1",
            "read",
            &format!("{p}/"),
            "--prefix=true",
        ],
        vec![
            "role",
            "grant-permission",
            "sg-host-db-1",
            "readwrite",
            &format!("{p}/hosts/db-1"),
        ],
        vec![
            "role",
            "grant-permission",
            "sg-host-db-1",
            "readwrite",
            &format!("{p}/members/base/db-1"),
        ],
        vec![
            "role",
            "grant-permission",
            "sg-host-db-1",
            "readwrite",
            &format!("{p}/members/db/db-1"),
        ],
        vec!["user", "add", "db-1:hostpw"],
        vec!["user", "grant-role", "db-1", "sg-host-db-1"],
        vec!["auth", "enable"],
    ] {
        let mut args: Vec<&str> = cmd.iter().map(|s| s.as_ref()).collect();
        if args[0] != "user" || args[1] != "add" || args[2] != "root:rootpw" {
            args.extend_from_slice(&root);
        }
        fl.etcd.etcdctl_ok(&args);
    }
    let f = TempFile::new("toml", POLICY);
    let url = fl.etcd.url();
    let push = |user: &[&str]| {
        let mut args = vec![
            "fleet",
            "push",
            "-c",
            f.path(),
            "--etcd",
            &url,
            "--prefix",
            &p,
        ];
        args.extend_from_slice(user);
        admin.run(&args)
    };
    let out = push(&[]);
    assert_eq!(out.status.code(), Some(1), "no user: refused");
    let out = push(&["--user", "db-1", "--password", "hostpw"]);
    assert_eq!(out.status.code(), Some(1), "a host cannot push");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = push(&["--user", "sg-admin", "--password", "adminpw"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The host's agent registers with its own user (password from the
    // environment) ...
    let mut db = Agent::start_with(&fl, 1, "db-1", "base,db", &["--user", "db-1"], "hostpw");
    let ok = wait_until(
        || db.fleet_status()["members"]["db"] == PER_HOST,
        Duration::from_secs(90),
    );
    assert!(ok, "{}\n{}", db.fleet_status(), db.log());
    // ... and cannot write another host's membership.
    let out = fl.etcd.etcdctl(&[
        "--user",
        "db-1:hostpw",
        "put",
        &format!("{p}/members/app/app-1"),
        "[\"198.18.1.2\"]",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"));
    db.signal(libc::SIGTERM);
}

/// etcd over TLS with client certificates (`--client-cert-auth`): sg
/// talks to it with `--cacert/--cert/--key`; without the CA, with another
/// CA, or without a client certificate it refuses, names the cause, and
/// stores nothing.
#[test]
fn tls_etcd_takes_the_ca_and_a_client_certificate_and_refuses_without() {
    let mut lab = Lab::new();
    let hub = lab.router("hub");
    let h = lab.host("h1");
    let (_hub_end, _host_end) = lab.link(&hub, &h, 1);
    let addr: IpAddr = "198.18.1.1".parse().unwrap();
    let etcd = Etcd::start_tls(&hub, addr, EtcdTls::new(addr, "sg-test-ca"));
    let tls = etcd.tls().expect("a TLS etcd");
    let url = etcd.url();
    assert!(url.starts_with("https://"), "{url}");
    let sg = Sg::new(&h);
    let policy = TempFile::new("toml", POLICY);
    let fleet = |extra: &[&str], args: &[&str]| {
        let mut full = vec!["fleet"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--etcd", &url, "--prefix", "/sgtls"]);
        full.extend_from_slice(extra);
        sg.run(&full)
    };
    let (ca, cert, key) = (
        tls.ca.to_str().unwrap(),
        tls.client_cert.to_str().unwrap(),
        tls.client_key.to_str().unwrap(),
    );
    let other = EtcdTls::new(addr, "another-ca");
    let other_ca = other.ca.to_str().unwrap();
    for (why, extra, needle) in [
        ("no CA", vec!["--cert", cert, "--key", key], "need --cacert"),
        (
            "no client certificate",
            vec!["--cacert", ca],
            "cannot reach etcd",
        ),
        (
            "another CA",
            vec!["--cacert", other_ca, "--cert", cert, "--key", key],
            "cannot reach etcd",
        ),
        (
            "a certificate without its key",
            vec!["--cacert", ca, "--cert", cert],
            "go together",
        ),
    ] {
        let out = fleet(&extra, &["push", "-c", policy.path()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{why}: pushed anyway: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(err.contains(needle), "{why}: {:?}: {err}", out.status);
    }
    assert_eq!(
        etcd.etcdctl_ok(&["get", "--prefix", "/sgtls", "--keys-only"])
            .trim(),
        "",
        "nothing stored"
    );
    let tls_args = ["--cacert", ca, "--cert", cert, "--key", key];
    let out = fleet(&tls_args, &["push", "-c", policy.path()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleet(&tls_args, &["show", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let groups: Vec<&String> = shown["groups"]
        .as_object()
        .map(|g| g.keys().collect())
        .unwrap_or_default();
    assert_eq!(groups, ["app", "base", "db"], "read back over TLS: {shown}");
}
