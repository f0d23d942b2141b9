// Rebuild when bpf-linker changes: cargo cannot see this dependency otherwise.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // bpf-linker asks LLVM to expand only memcpy itself, in order (for JIT
    // pattern matchers sg does not need); every memset and memmove then
    // becomes a call to a byte-at-a-time loop. The generic expansion
    // inlines them as word stores: zeroing a key's padding or copying an
    // IPv6 address from the packet costs a few instructions, not a call.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
}
