//! `cargo xtask deb`: the .deb of SPEC 10.4, built with `dpkg-deb` (the
//! layout cargo-deb would make, without needing cargo-deb):
//!
//! - /usr/sbin/sg
//! - /lib/systemd/system/*.service (every unit in packaging/systemd)
//! - /usr/share/man/man8/sg*.8.gz (made by the binary, from its clap definitions)
//! - bash, zsh and fish completions in their vendor directories
//! - /usr/share/doc/sg/examples/sg.toml
//!
//! `--check` unpacks the package with `dpkg -x` into a scratch root and
//! runs the `sg` found there; `cargo xtask test` runs it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{build_release, run};

const OUT: &str = "target/deb";

pub(crate) fn task(args: &[String]) -> Result<()> {
    let mut check = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            other => bail!("deb: unknown argument {other:?}; usage: deb [--check]"),
        }
    }
    build_release("sg-userspace", "sg")?;
    let deb = build(Path::new("target/release/sg"))?;
    eprintln!("built {}", deb.display());
    if check {
        check_package(&deb)?;
        eprintln!("{}: unpacks and runs", deb.display());
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::create_dir_all(to.parent().expect("has a parent"))?;
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, bytes: &[u8]) -> Result<()> {
    fs::create_dir_all(to.parent().expect("has a parent"))?;
    fs::write(to, bytes).with_context(|| format!("cannot write {}", to.display()))
}

/// Stages the package tree under target/deb/root and builds the .deb.
fn build(binary: &Path) -> Result<PathBuf> {
    let root = Path::new(OUT).join("root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    let sbin = root.join("usr/sbin/sg");
    copy(binary, &sbin, 0o755)?;
    run(Command::new("strip").arg("--strip-unneeded").arg(&sbin))?;

    // "sg 0.1.0 (eBPF object ...)"
    let version_line = output(Command::new(&sbin).arg("--version"))?;
    let version = version_line
        .split_whitespace()
        .nth(1)
        .context("sg --version printed no version")?
        .to_string();

    let mut units = 0;
    for entry in fs::read_dir("packaging/systemd").context("packaging/systemd")? {
        let path = entry?.path();
        if path
            .extension()
            .is_some_and(|e| e == "service" || e == "timer")
        {
            let name = path.file_name().expect("a file");
            copy(&path, &root.join("lib/systemd/system").join(name), 0o644)?;
            units += 1;
        }
    }
    ensure!(units > 0, "no systemd units in packaging/systemd");

    let man_tmp = Path::new(OUT).join("man");
    if man_tmp.exists() {
        fs::remove_dir_all(&man_tmp)?;
    }
    output(Command::new(&sbin).arg("man").arg("--out").arg(&man_tmp))?;
    let man8 = root.join("usr/share/man/man8");
    fs::create_dir_all(&man8)?;
    for entry in fs::read_dir(&man_tmp)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        let target = man8.join(format!("{name}.gz"));
        let file = fs::File::create(&target)?;
        let status = Command::new("gzip")
            .args(["-9", "-n", "-c"])
            .arg(&path)
            .stdout(file)
            .status()?;
        ensure!(status.success(), "gzip {} failed", path.display());
    }
    fs::remove_dir_all(&man_tmp)?;

    for (shell, dest) in [
        ("bash", "usr/share/bash-completion/completions/sg"),
        ("zsh", "usr/share/zsh/vendor-completions/_sg"),
        ("fish", "usr/share/fish/vendor_completions.d/sg.fish"),
    ] {
        let text = output(Command::new(&sbin).args(["completions", shell]))?;
        write(&root.join(dest), text.as_bytes())?;
    }
    copy(
        Path::new("examples/sg.toml"),
        &root.join("usr/share/doc/sg/examples/sg.toml"),
        0o644,
    )?;

    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let installed_kib = output(Command::new("du").args(["-sk"]).arg(&root))?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let control = format!(
        "Package: sg\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: sg maintainers <sg@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6 (>= {glibc}), libgcc-s1\n\
         Recommends: iproute2\n\
         Section: net\n\
         Priority: optional\n\
         Description: cloud-style security groups enforced by XDP and TC eBPF\n \
         sg enforces AWS-style security groups (stateful, allow-only rules whose\n \
         peers are CIDRs or other groups) on Linux interfaces with XDP (ingress)\n \
         and TC (egress) programs. sg-apply.service re-applies /etc/sg/sg.toml\n \
         at boot.\n",
        glibc = glibc_needed(&sbin)?,
    );
    write(&root.join("DEBIAN/control"), control.as_bytes())?;

    let deb = Path::new(OUT).join(format!("sg_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb))?;
    Ok(deb)
}

/// The newest GLIBC_x.y symbol version the binary needs.
fn glibc_needed(binary: &Path) -> Result<String> {
    let dump = output(Command::new("objdump").arg("-T").arg(binary))?;
    let mut best: Option<Vec<u32>> = None;
    for word in dump.split_whitespace() {
        // "(GLIBC_2.34)" in the version column.
        let word = word.trim_matches(|c| c == '(' || c == ')');
        let Some(v) = word.strip_prefix("GLIBC_") else {
            continue;
        };
        let Ok(parts) = v
            .split('.')
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
        else {
            continue;
        };
        if best.as_ref().is_none_or(|b| parts > *b) {
            best = Some(parts);
        }
    }
    let best = best.context("the binary names no GLIBC_ symbol version")?;
    Ok(best
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// Unpacks `deb` into a scratch root and runs what it installed.
fn check_package(deb: &Path) -> Result<()> {
    let root = Path::new(OUT).join("check-root");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    run(Command::new("dpkg").arg("-x").arg(deb).arg(&root))?;
    let sg = root.join("usr/sbin/sg");

    let version = output(Command::new(&sg).arg("--version"))?;
    let ebpf = version.split("sha256:").nth(1).unwrap_or("");
    ensure!(
        version.starts_with("sg ")
            && ebpf.len() >= 12
            && ebpf[..12].bytes().all(|b| b.is_ascii_hexdigit())
            && version.contains("nightly-"),
        "sg --version from the package names no eBPF build: {version:?}"
    );
    let bash = output(Command::new(&sg).args(["completions", "bash"]))?;
    ensure!(
        bash.contains("complete -F _sg") && bash.contains("attach"),
        "sg completions bash from the package is not a bash completion: {}",
        &bash[..bash.len().min(200)]
    );
    let fields = output(Command::new("dpkg-deb").args(["--field"]).arg(deb))?;
    ensure!(
        fields.contains("Depends: libc6 (>= "),
        "control file lacks Depends: {fields}"
    );
    for path in [
        "lib/systemd/system/sg-apply.service",
        "usr/share/man/man8/sg.8.gz",
        "usr/share/man/man8/sg-apply.8.gz",
        "usr/share/bash-completion/completions/sg",
        "usr/share/zsh/vendor-completions/_sg",
        "usr/share/fish/vendor_completions.d/sg.fish",
    ] {
        ensure!(root.join(path).is_file(), "the package lacks /{path}");
    }
    let man = output(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man8/sg-apply.8.gz")),
    )?;
    ensure!(
        man.contains(".TH") && man.contains("confirm"),
        "sg-apply.8 is not a man page"
    );
    fs::remove_dir_all(&root)?;
    println!("{}", version.trim());
    Ok(())
}
