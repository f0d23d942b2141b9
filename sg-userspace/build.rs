//! Builds the eBPF programs with the pinned nightly and bpf-linker, so that
//! `include_bytes_aligned!` in the loader can embed them, and names that
//! build for `sg --version`: the object's sha256 and the eBPF toolchain.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Newer nightlies emit LLVM bitcode that bpf-linker (llvm-22) cannot read.
const EBPF_TOOLCHAIN: &str = "nightly-2026-06-25";

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|p| p.name.as_str() == "sg-ebpf")
        .ok_or_else(|| anyhow!("sg-ebpf package not found"))?;
    let root_dir = ebpf_package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf_package.manifest_path))?;
    let package = aya_build::Package {
        name: ebpf_package.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(EBPF_TOOLCHAIN))?;
    describe_object()
}

/// `SG_EBPF_SHA256` (of the embedded object) and `SG_EBPF_TOOLCHAIN`, so a
/// running `sg` says which datapath it carries.
fn describe_object() -> anyhow::Result<()> {
    use sha2::Digest as _;
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR")?;
    let object = std::path::Path::new(&out_dir).join("sg");
    let bytes = std::fs::read(&object).with_context(|| format!("cannot read {object:?}"))?;
    let digest = sha2::Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=SG_EBPF_SHA256={hex}");
    println!("cargo:rustc-env=SG_EBPF_SHA256_SHORT={}", &hex[..12]);
    let linker = std::process::Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "bpf-linker".to_string());
    println!("cargo:rustc-env=SG_EBPF_TOOLCHAIN=rust {EBPF_TOOLCHAIN}, {linker}");
    Ok(())
}
