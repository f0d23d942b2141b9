//! Project tasks: `cargo xtask test | demo | bench | lint`.
//!
//! `scripts/setup.sh` installs the toolchains and tools first; the README's
//! commands run it before these.

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask <test|demo|lint|fuzz> [args...]

  test   lint, then every test (unit, BPF_PROG_TEST_RUN, end-to-end); needs root
  demo   build sg and run `sg demo`; needs root
  lint   cargo fmt --check and clippy -D warnings
  fuzz   --minutes N [--seed S]: the differential test (kernel against the
         reference evaluator) for N minutes; needs root";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("lint") => lint(),
        Some("fuzz") => fuzz(&args[1..]),
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

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
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
    run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    require_root("the test suite")?;
    lint()?;
    run(cargo()
        .args(["nextest", "run", "--no-fail-fast", "--profile", "ci"])
        .args(extra))?;
    leftover_namespaces()
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

fn demo() -> Result<()> {
    require_root("the demo")?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "sg-userspace",
        "--bin",
        "sg",
    ]))?;
    run(Command::new("target/release/sg").args(["demo"]))?;
    leftover_namespaces()
}
