//! `sg demo`: builds a lab of network namespaces, enforces an example
//! config on the server's two interfaces, sends allowed and denied traffic,
//! shows the verdicts and the live drops, applies a change, and cleans up.
//! It fails if any verdict differs from what the config says.

use std::{
    io::{BufRead as _, BufReader},
    net::IpAddr,
    path::PathBuf,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use sg_lab::{Host, Lab, SgCli, unique_name};

/// The project's example config (SPEC 3), which the README shows.
const EXAMPLE: &str = include_str!("../../examples/sg.toml");
const EXAMPLE_MEMBERS: &str = "members = [\"198.18.0.10\"]";
const EXAMPLE_INTERFACES: &str = "[interfaces.eth0]\ngroups = [\"web\"]\n";
const EXAMPLE_WEB_ICMP: &str = "  { proto = \"icmp\", icmp_type = 8, from = \"198.18.0.0/15\" },\n";

/// `examples/sg.toml` made to fit the lab: the admin host's addresses are
/// the members of `bastion` (so `sg:bastion` may ssh in), and the server's
/// two interfaces enforce `web`. With `ssh_from_outsiders`, the change the
/// demo applies live: ssh from the outsiders' network too.
fn config(admin: &[IpAddr], ifaces: &[&str], ssh_from_outsiders: bool) -> String {
    let members: Vec<String> = admin.iter().map(|a| format!("\"{a}\"")).collect();
    let mut interfaces = String::new();
    for iface in ifaces {
        interfaces.push_str(&format!("[interfaces.{iface}]\ngroups = [\"web\"]\n"));
    }
    let mut web_icmp = EXAMPLE_WEB_ICMP.to_string();
    if ssh_from_outsiders {
        web_icmp.push_str(
            "  { type = \"ssh\", from = \"198.18.2.0/24\", description = \"added live by sg apply\" },\n",
        );
    }
    EXAMPLE
        .replace(
            EXAMPLE_MEMBERS,
            &format!("members = [{}]", members.join(", ")),
        )
        .replace(EXAMPLE_INTERFACES, &interfaces)
        .replace(EXAMPLE_WEB_ICMP, &web_icmp)
}

struct Check {
    from: &'static str,
    what: String,
    allowed: bool,
    expected: bool,
}

fn probe(host: &Host, name: &'static str, dst: IpAddr, what: &str, expected: bool) -> Check {
    let allowed = match what {
        "ping" => host.ping(dst, 1) == 1,
        port => host.tcp_connects(dst, port.parse().expect("a port")),
    };
    let family = if dst.is_ipv4() { "IPv4" } else { "IPv6" };
    let what = if what == "ping" {
        format!("ping {family} {dst}")
    } else {
        format!("tcp/{what} {family} {dst}")
    };
    let check = Check {
        from: name,
        what,
        allowed,
        expected,
    };
    println!(
        "  {:<9} {:<36} {:<8} {}",
        check.from,
        check.what,
        if check.allowed { "ALLOWED" } else { "DROPPED" },
        if check.allowed == check.expected {
            "as configured"
        } else {
            "UNEXPECTED"
        }
    );
    check
}

pub fn run() -> Result<()> {
    let exe = std::env::current_exe()?;
    println!("== sg demo: security groups on a server with two networks ==\n");
    let mut lab = Lab::new();
    let admin = lab.host("admin");
    let outsider = lab.host("outsider");
    let server = lab.host("server");
    let (admin_if, server_if1) = lab.link(&admin, &server, 1);
    let (outsider_if, server_if2) = lab.link(&outsider, &server, 2);
    println!("lab (network namespaces, removed at the end):");
    println!(
        "  admin    {} / {}  --  server {} ({})",
        admin_if.v4, admin_if.v6, server_if1.v4, server_if1.ifname
    );
    println!(
        "  outsider {} / {}  --  server {} ({})\n",
        outsider_if.v4, outsider_if.v6, server_if2.v4, server_if2.ifname
    );

    let admins = [IpAddr::V4(admin_if.v4), IpAddr::V6(admin_if.v6)];
    let ifaces = [server_if1.ifname.as_str(), server_if2.ifname.as_str()];
    let cfg_path = std::env::temp_dir().join(format!("{}.toml", unique_name("sg-demo")));
    let _cfg_guard = RemoveOnDrop(cfg_path.clone());
    std::fs::write(&cfg_path, config(&admins, &ifaces, false))?;
    println!(
        "config {} (examples/sg.toml with the lab's admin as bastion and the server's interfaces):\n{}",
        cfg_path.display(),
        std::fs::read_to_string(&cfg_path)?
    );

    let _listeners = [server.tcp_listen(22), server.tcp_listen(80)];
    let sg = SgCli::new(exe, &server, "sg-demo");
    let cfg = cfg_path.to_str().context("temp path is not UTF-8")?;
    for iface in ifaces {
        print!(
            "$ sg attach {iface} -c {}\n{}",
            cfg_path.display(),
            sg.run(&["attach", iface, "-c", cfg])?
        );
    }
    println!("\n$ sg status\n{}", sg.run(&["status"])?);

    let drops = Arc::new(Mutex::new(Vec::new()));
    let mut watch = spawn_watch(&sg, Arc::clone(&drops))?;

    let s1 = [IpAddr::V4(server_if1.v4), IpAddr::V6(server_if1.v6)];
    let s2 = [IpAddr::V4(server_if2.v4), IpAddr::V6(server_if2.v6)];
    println!("traffic (the attach processes have exited; enforcement is pinned):");
    let mut checks = Vec::new();
    // web: http from anywhere, ssh from sg:bastion (the admin), IPv4
    // echo from 198.18.0.0/15 (both hosts), no ICMPv6 rule.
    for dst in s1 {
        checks.push(probe(&admin, "admin", dst, "80", true));
        checks.push(probe(&admin, "admin", dst, "22", true));
        checks.push(probe(&admin, "admin", dst, "ping", dst.is_ipv4()));
    }
    for dst in s2 {
        checks.push(probe(&outsider, "outsider", dst, "80", true));
        checks.push(probe(&outsider, "outsider", dst, "22", false));
        checks.push(probe(&outsider, "outsider", dst, "ping", dst.is_ipv4()));
    }

    println!("\n$ sg apply (allow ssh from 198.18.2.0/24, live)");
    std::fs::write(&cfg_path, config(&admins, &ifaces, true))?;
    print!("{}", sg.run(&["apply", "-c", cfg])?);
    checks.push(probe(&outsider, "outsider", s2[0], "22", true));
    checks.push(probe(&outsider, "outsider", s2[1], "22", false));

    std::thread::sleep(Duration::from_millis(300));
    let _ = watch.kill();
    let _ = watch.wait();
    println!("\nlive drops seen by `sg watch` during the run:");
    let drops = drops.lock().expect("watch thread does not panic").clone();
    for line in &drops {
        println!("  {line}");
    }
    println!("\n$ sg stats\n{}", sg.run(&["stats"])?);

    let wrong = checks.iter().filter(|c| c.allowed != c.expected).count();
    if drops.is_empty() {
        bail!("sg watch reported no drops, but denied traffic was sent");
    }
    if wrong > 0 {
        bail!("{wrong} verdicts differed from the config");
    }
    println!(
        "all {} verdicts matched the config; cleaning up",
        checks.len()
    );
    Ok(())
}

fn spawn_watch(sg: &SgCli, drops: Arc<Mutex<Vec<String>>>) -> Result<Child> {
    let mut child = sg
        .cmd(&["watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start sg watch")?;
    let mut banner = String::new();
    BufReader::new(child.stderr.take().context("watch stderr")?).read_line(&mut banner)?;
    let stdout = child.stdout.take().context("watch stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            drops
                .lock()
                .expect("demo does not panic holding it")
                .push(line);
        }
    });
    Ok(child)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo rewrites the example in three places: if the example
    /// changes, this fails before the demo does.
    #[test]
    fn the_example_fits_the_lab() {
        let admin: [IpAddr; 2] = [
            "198.18.1.2".parse().unwrap(),
            "2001:db8:1::2".parse().unwrap(),
        ];
        for live in [false, true] {
            let text = config(&admin, &["s1", "s2"], live);
            let cfg = crate::config::parse(&text, "demo.toml")
                .unwrap_or_else(|e| panic!("{e}\n{text}"))
                .config;
            let bastion = &cfg.groups["bastion"];
            assert_eq!(bastion.members.len(), 2, "{text}");
            assert_eq!(cfg.interfaces.keys().collect::<Vec<_>>(), ["s1", "s2"]);
            assert_eq!(
                cfg.groups["web"].ingress.len(),
                3 + usize::from(live),
                "{text}"
            );
        }
    }
}
