//! EDGE (process setup): installs the global `tracing` subscriber once, from `--log-level` (an
//! EnvFilter directive) and `--log-format`: plain lines or one flat JSON object per line, always on
//! stderr so stdout stays free for command output.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--log-level` is not a valid EnvFilter directive.
    #[error("invalid log filter {filter:?}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A subscriber was already installed.
    #[error("could not install the log subscriber")]
    Install(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the subscriber.
///
/// # Errors
/// [`TelemetryError`] on a bad filter or when called twice.
pub fn init(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    // Colours only on a terminal: `kubectl logs` and log collectors would show escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(TelemetryError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_and_a_second_init_fails() {
        let err = init("foo=notalevel", LogFormat::Plain).expect_err("bad filter");
        assert!(matches!(err, TelemetryError::Filter { .. }), "{err:?}");
        init("info", LogFormat::Json).expect("first init");
        let err = init("info", LogFormat::Plain).expect_err("second init");
        assert!(matches!(err, TelemetryError::Install(_)), "{err:?}");
    }
}
