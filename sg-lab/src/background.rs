//! [`Background`]: a process in a lab namespace, killed with its group on drop.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// A process started by [`Host::spawn`]. Dropping it kills its whole process
/// group and reaps it; its log file is printed if the thread is panicking,
/// then removed.
pub struct Background {
    pub(crate) child: Option<Child>,
    pub(crate) label: String,
    pub(crate) log_path: PathBuf,
    pub(crate) status: Option<ExitStatus>,
}

impl Background {
    /// Pid of the child (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What was started, and where.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the log file (stdout and stderr).
    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// The exit status if the process has exited (reaps it), else None.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            self.status = Some(st);
        }
        self.status
    }

    /// Sends SIGTERM to the process group, waits up to `grace` for the child
    /// to exit, then SIGKILLs the group. Returns the child's exit status.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            self.kill_group(libc::SIGKILL);
            return st;
        }
        self.kill_group(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(st) = self.try_wait() {
                self.kill_group(libc::SIGKILL);
                return st;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_group(libc::SIGKILL);
        let st = self
            .child
            .as_mut()
            .and_then(|c| c.wait().ok())
            .unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL));
        self.status = Some(st);
        st
    }

    fn kill_group(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: the child was started with process_group(0), so its pid
            // is its process-group id; the group holds only what it started.
            unsafe { libc::kill(-(c.id() as i32), sig) };
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!(
                "lab: log of `{}` ({}):\n{}",
                self.label,
                self.log_path.display(),
                tail
            );
        }
        self.kill_group(libc::SIGKILL);
        if self.status.is_none()
            && let Some(mut c) = self.child.take()
        {
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}
