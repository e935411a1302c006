//! Host processes under test (operator, node agents, the FUSE simulator): stdout and stderr go to
//! a log file in the run directory, and the guard stops the process when dropped (SIGTERM, then
//! SIGKILL after a grace period), so a failing test leaves nothing running.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::poll::eventually;

/// How long a process gets to exit after SIGTERM.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running host process and its log file.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with its output appended to `<dir>/<name>.log` (a numbered name when that
    /// exists already, e.g. after a restart).
    ///
    /// # Errors
    /// When the log file cannot be made or the program cannot start.
    pub fn spawn(name: &str, dir: &Path, mut cmd: Command) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut log = dir.join(format!("{name}.log"));
        let mut n = 1;
        while log.exists() {
            log = dir.join(format!("{name}.{n}.log"));
            n += 1;
        }
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// The process's name in logs and dumps.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whole log, for assertions on what a component said.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let exited = eventually(&format!("{} to exit", self.name), STOP_GRACE, || {
                Ok(child.try_wait()?.map(|_| ()))
            });
            if exited.is_err() {
                eprintln!("e2e: {} ignored SIGTERM; killing it", self.name);
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }

    /// SIGKILL at once (a crash), then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
