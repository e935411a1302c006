//! The statistics the benchmarks' tables print: nearest-rank percentiles, one definition for all.

use std::time::Duration;

/// The `q`-quantile (0 to 1, nearest rank) of `samples`, which it sorts; zero when there are none.
pub fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// `d` in milliseconds, for tables that print numbers rather than durations.
#[allow(dead_code)]
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
