//! Namespaces seen from the machine's own namespace: listing them,
//! killing what still runs inside, deleting them.

use std::fs::File;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub(crate) fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`{}` -> {}\n--- stdout ---\n{}--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command in the machine's own namespace (only `ip netns ...` and
/// `ip -n <our ns> ...` are ever run this way). Panics on failure.
pub(crate) fn host_run_ok(args: &[&str]) -> String {
    let out = host_run(args);
    if !out.status.success() {
        panic!("lab: command failed: {}", describe(args, &out));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn host_run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("lab: cannot run `{}`: {e}", args.join(" ")))
}

/// Names listed by `ip netns list`.
pub fn netns_list() -> Vec<String> {
    let out = host_run(&["ip", "netns", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Opens a namespace file (`/run/netns/<ns>`) and returns it with its inode
/// number, which identifies the namespace. Holding the file keeps the
/// namespace (and so its inode number) alive even after its name is deleted:
/// inode numbers of freed namespaces are reused at once by new ones (of other
/// labs), so they must never be looked for without holding the file.
fn netns_handle(ns: &str) -> Option<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let f = File::open(format!("/run/netns/{ns}")).ok()?;
    let ino = f.metadata().ok()?.ino();
    Some((f, ino))
}

/// SIGKILLs every process (other than this one) whose network namespace is
/// one of `inodes`; returns how many it found.
fn kill_processes_in(inodes: &[u64]) -> usize {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut found = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // "net:[4026532345]"; unreadable for exited processes and zombies.
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let link = link.to_string_lossy();
        let Some(ino) = link.strip_prefix("net:[").and_then(|r| r.strip_suffix(']')) else {
            continue;
        };
        if inodes.iter().any(|i| i.to_string() == ino) {
            found += 1;
            // SAFETY: plain kill(2) of a process living in one of our namespaces.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
    found
}

/// Kills until `rounds_quiet` consecutive scans (20 ms apart) find nothing,
/// for at most ~2 s.
fn kill_until_quiet(inodes: &[u64], rounds_quiet: u32) {
    if inodes.is_empty() {
        return;
    }
    let mut quiet = 0;
    for _ in 0..100 {
        if kill_processes_in(inodes) == 0 {
            quiet += 1;
            if quiet >= rounds_quiet {
                return;
            }
        } else {
            quiet = 0;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn netns_del(ns: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..20 {
        match Command::new("ip")
            .args(["netns", "del", ns])
            .stdin(Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => last = String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => last = e.to_string(),
        }
        if !netns_list().iter().any(|n| n == ns) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("ip netns del {ns}: {last}"))
}

/// Kills every process in the namespaces and deletes them. Never panics;
/// returns the errors as text.
///
/// Processes are killed before the names are deleted, and again afterwards:
/// an `ip netns exec` that opened the namespace file just before the
/// deletion can still enter it, and would otherwise keep a nameless
/// namespace alive.
pub(crate) fn destroy_netns(names: &[String]) -> Result<(), String> {
    let handles: Vec<(File, u64)> = names.iter().filter_map(|n| netns_handle(n)).collect();
    let inodes: Vec<u64> = handles.iter().map(|h| h.1).collect();
    kill_until_quiet(&inodes, 1);
    let errors: Vec<String> = names.iter().filter_map(|n| netns_del(n).err()).collect();
    kill_until_quiet(&inodes, 3);
    // Only now may the namespaces be freed (and their inode numbers reused).
    drop(handles);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Deletes namespaces left behind by lab runs whose process no longer exists
/// (a test killed by SIGKILL/Ctrl-C cannot run its destructors). Only names
/// matching this module's pattern `sg<pid>n<seq>-...` with a dead `<pid>` are
/// touched. Not called automatically: it assumes all lab users share this
/// machine's pid namespace. Returns the names it removed.
pub fn sweep_stale_namespaces() -> Vec<String> {
    let mut removed = Vec::new();
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix("sg") else {
            continue;
        };
        let Some((pid, rest)) = rest.split_once('n') else {
            continue;
        };
        let Some((seq, _host)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), seq.parse::<u32>()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if destroy_netns(std::slice::from_ref(&ns)).is_ok() {
            removed.push(ns);
        }
    }
    removed
}
