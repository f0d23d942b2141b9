//! Wall time of the steps of a command, logged at debug level under the
//! `sg::phase` target: `RUST_LOG=sg::phase=debug sg apply -c FILE` shows
//! where an apply's time goes without a profiler.

use std::time::Instant;

/// Logs its name and the time since it was made when dropped.
pub struct Phase {
    name: &'static str,
    started: Instant,
}

/// Starts timing `name` until the returned guard drops.
pub fn start(name: &'static str) -> Phase {
    Phase {
        name,
        started: Instant::now(),
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        tracing::debug!(
            target: "sg::phase",
            phase = self.name,
            ms = format_args!("{:.1}", self.started.elapsed().as_secs_f64() * 1e3),
            rss_mb = resident_mb()
        );
    }
}

/// The process's resident memory in MB (0 if unknown): peak memory is
/// time too, every fresh page is zeroed by the kernel.
fn resident_mb() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096 / 1_000_000
}
