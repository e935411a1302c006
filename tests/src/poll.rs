//! Waiting with a deadline: the only way the suite waits. Each probe says either "done, here is
//! the value" or "not yet, because ..."; on timeout the last reason is in the error.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a probe runs.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Calls `probe` every [`INTERVAL`] until it returns `Ok(Some(value))` or `deadline` has passed.
/// `Ok(None)` and `Err(_)` mean "not yet"; the last error is reported on timeout.
///
/// # Errors
/// When the deadline passes, naming `what` and the last probe error.
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last = format!("{err:#}"),
        }
        if start.elapsed() >= deadline {
            bail!("timed out after {deadline:?} waiting for {what}: {last}");
        }
        std::thread::sleep(INTERVAL);
    }
}

/// Checks that `probe` keeps returning `Ok(true)` for the whole of `period` (a negative test:
/// something must NOT happen). Returns the first failure.
///
/// # Errors
/// When `probe` returns `Ok(false)` or an error before `period` ends.
pub fn consistently(
    what: &str,
    period: Duration,
    mut probe: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < period {
        if !probe()? {
            bail!("{what} stopped holding after {:?}", start.elapsed());
        }
        std::thread::sleep(INTERVAL);
    }
    Ok(())
}
