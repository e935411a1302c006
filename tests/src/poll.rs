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

/// Samples a value on a background thread every [`SAMPLE_INTERVAL`] until [`Sampler::finish`],
/// for properties that must hold *throughout* a disruption (a limit that must never lapse while
/// an agent restarts), not only at its end.
pub struct Sampler<T: Send + 'static> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<T>>,
}

/// How often a [`Sampler`] samples: well below any gap a broken agent could leave.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(10);

impl<T: Send + 'static> Sampler<T> {
    /// Starts sampling `probe`; an `Err` sample is recorded through `on_error`.
    pub fn start(
        mut probe: impl FnMut() -> Result<T> + Send + 'static,
        on_error: fn(anyhow::Error) -> T,
    ) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                samples.push(probe().unwrap_or_else(on_error));
                std::thread::sleep(SAMPLE_INTERVAL);
            }
            samples
        });
        Self { stop, thread }
    }

    /// Stops sampling and returns every sample, in order.
    ///
    /// # Errors
    /// When the sampling thread panicked.
    pub fn finish(self) -> Result<Vec<T>> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the sampling thread panicked"))
    }
}
