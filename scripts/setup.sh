#!/usr/bin/env bash
# Installs everything sg needs to build and test, idempotently.
# Fast path: when every tool is already present, this does no network I/O.
set -euo pipefail

USER_TOOLCHAIN=1.98.0
EBPF_TOOLCHAIN=nightly-2026-06-25
DEB_PACKAGES=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev iproute2 iputils-ping iperf3 nftables
  netsniff-ng tcpdump nmap hping3 bpftool socat netcat-openbsd python3-scapy ethtool
  xdp-tools etcd-server etcd-client protobuf-compiler libprotobuf-dev openssl)

log() { printf '[setup] %s\n' "$*" >&2; }

export PATH="$HOME/.cargo/bin:$PATH"

missing_debs=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing_debs+=("$p")
done
if ((${#missing_debs[@]})); then
  log "installing Debian packages: ${missing_debs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
fi

if ! command -v rustup >/dev/null; then
  log "rustup is missing: this machine kind ships it; install rustup first" && exit 1
fi
installed_toolchains=$(rustup toolchain list)
if ! grep -q "^${USER_TOOLCHAIN}-" <<<"$installed_toolchains"; then
  log "installing rust ${USER_TOOLCHAIN}"
  rustup toolchain install "$USER_TOOLCHAIN" --profile minimal --component clippy,rustfmt
fi
if ! grep -q "^${EBPF_TOOLCHAIN}-" <<<"$installed_toolchains" ||
  ! rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null | grep -q '^rust-src'; then
  log "installing rust ${EBPF_TOOLCHAIN} with rust-src"
  rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal --component rust-src
fi

if ! command -v bpf-linker >/dev/null; then
  log "building bpf-linker against llvm-22 (about 1.5 min)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo +"$USER_TOOLCHAIN" install bpf-linker --locked \
    --no-default-features --features llvm-22
fi

if ! command -v cargo-nextest >/dev/null; then
  log "installing cargo-nextest"
  cargo +"$USER_TOOLCHAIN" install cargo-nextest --locked
fi
log "toolchain ready"
