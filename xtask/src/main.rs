//! Project tasks: `cargo xtask test | demo | bench | lint`.
//!
//! `scripts/setup.sh` installs the toolchains and tools first; the README's
//! commands run it before these.

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

mod deb;

const USAGE: &str = "usage: cargo xtask <test|demo|bench|fuzz|lint|deb> [args...]

  test   lint, then every test (unit, BPF_PROG_TEST_RUN, end-to-end), then
         `deb --check` (the package unpacked and run); needs root
  demo   build sg and run `sg demo`; needs root
  bench  per-packet cost as ratios to a do-nothing XDP program, and end-to-end
         figures against nftables (SPEC 6); writes target/bench/report.json
         and BENCHMARKS.md; needs root. `bench --fleet-only`: fleet
         convergence alone (3 agents, 1,000 simulated hosts on etcd).
         `bench --apply-only`: 10,000-rule `sg apply` alone (and
         target/bench/apply.json); `--peer-only`: xdp-filter side by side
         and the per-step table; `--e2e-only`: veth runs (iperf3, flood,
         live update). These three print only: BENCHMARKS.md left as it is
  fuzz   --minutes N [--seed S]: the differential test (kernel against the
         reference evaluator) for N minutes; needs root
  lint   cargo fmt --check and clippy -D warnings
  deb    [--check]: build target/deb/sg_VERSION_ARCH.deb (binary, systemd units,
         man pages, completions) with dpkg-deb; --check then unpacks it with
         dpkg -x into a scratch root and runs the sg found there";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("lint") => lint(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz(&args[1..]),
        Some("deb") => deb::task(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{what} loads eBPF programs and builds network namespaces: run it as root");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // Over the default members: the product, the harness crates (sg-lab,
    // sg-testkit) and xtask.
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    // The eBPF programs, checked for the host: a no_std binary builds there
    // only with panic=abort, and a target dir of its own keeps that flag
    // from invalidating the main build.
    run(cargo()
        .args(["clippy", "--package", "sg-ebpf", "--bins", "--lib"])
        .args(["--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", "target/ebpf-lint")
        .env("RUSTFLAGS", "-C panic=abort"))?;
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    require_root("the test suite")?;
    lint()?;
    run(cargo()
        .args(["nextest", "run", "--no-fail-fast", "--profile", "ci"])
        .args(extra))?;
    leftover_namespaces()?;
    // The package, installed into a scratch root, runs (SPEC 10.4).
    deb::task(&["--check".to_string()])
}

/// Tests must remove every namespace they create (SPEC 7).
fn leftover_namespaces() -> Result<()> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let ours: Vec<&str> = listing.lines().filter(|l| l.starts_with("sg")).collect();
    if !ours.is_empty() {
        bail!("tests left network namespaces behind: {ours:?}");
    }
    Ok(())
}

/// Soak run of the differential test: `SG_FUZZ_MINUTES` makes it loop over
/// fresh configs and packet sequences until the time is up.
fn fuzz(args: &[String]) -> Result<()> {
    require_root("the differential test")?;
    let mut minutes = None;
    let mut seed = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => minutes = it.next().cloned(),
            "--seed" => seed = it.next().cloned(),
            other => bail!("fuzz: unknown argument {other:?}; usage: fuzz --minutes N [--seed S]"),
        }
    }
    let Some(minutes) = minutes else {
        bail!("fuzz: usage: fuzz --minutes N [--seed S]");
    };
    minutes
        .parse::<u64>()
        .with_context(|| format!("fuzz: --minutes {minutes:?} is not a whole number"))?;
    // Plain `cargo test`: nextest would stop a test after its slow limit,
    // and a soak run outlives that by design.
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--package",
        "sg-userspace",
        "--test",
        "differential",
        "--",
        "--nocapture",
    ])
    .env("SG_FUZZ_MINUTES", &minutes);
    if let Some(seed) = seed {
        cmd.env("SG_SEED", seed);
    }
    run(&mut cmd)
}

/// Builds binary `bin` of `package` into target/release.
pub(crate) fn build_release(package: &str, bin: &str) -> Result<()> {
    run(cargo().args(["build", "--release", "--package", package, "--bin", bin]))
}

fn demo() -> Result<()> {
    require_root("the demo")?;
    build_release("sg-userspace", "sg")?;
    run(Command::new("target/release/sg").args(["demo"]))?;
    leftover_namespaces()
}

fn bench(sizes: &[String]) -> Result<()> {
    require_root("the benchmark")?;
    // The harness lives outside the product crate (sg-testkit); its
    // end-to-end part runs the `sg` binary beside it.
    build_release("sg-userspace", "sg")?;
    build_release("sg-testkit", "sg-bench")?;
    let out = Command::new("target/release/sg-bench")
        .args(sizes)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run sg-bench")?;
    if !out.status.success() {
        bail!("sg-bench failed: {}", out.status);
    }
    let table = String::from_utf8(out.stdout)?;
    print!("{table}");
    if sizes
        .iter()
        .any(|a| ["--apply-only", "--peer-only", "--e2e-only"].contains(&a.as_str()))
    {
        // A part of the whole: printed only, so BENCHMARKS.md keeps the
        // sections this run did not make (and its written-up ones).
        eprintln!("printed only: BENCHMARKS.md left as it is");
        return Ok(());
    }
    if sizes.iter().any(|a| a == "--fleet-only") {
        // Only the fleet section changes: replace it, keep the rest.
        let old = std::fs::read_to_string("BENCHMARKS.md").unwrap_or_default();
        let head = old
            .split("## Fleet convergence")
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string();
        std::fs::write("BENCHMARKS.md", format!("{head}\n\n{table}"))?;
        eprintln!("wrote the fleet section of BENCHMARKS.md and target/bench/fleet.json");
        return Ok(());
    }
    let machine = machine_description();
    let doc = format!(
        "# Benchmarks\n\nMade by `cargo xtask bench{}` on {machine}.\n\n{table}",
        if sizes.is_empty() {
            String::new()
        } else {
            format!(" {}", sizes.join(" "))
        }
    );
    std::fs::write("BENCHMARKS.md", doc)?;
    eprintln!("wrote BENCHMARKS.md and target/bench/report.json");
    Ok(())
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {kernel}")
}
