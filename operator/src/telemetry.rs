//! EDGE (process setup): initializes `tracing` once from `--log-level` and `--log-format`.
//! Kept alike with the node agent's `telemetry.rs` (`docs/contributing.md` §1).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;

use crate::args::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--log-level` is not a valid EnvFilter directive.
    #[error("invalid log filter {filter:?}")]
    ParseFilter {
        /// The filter as given.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: ParseError,
    },
    /// A global subscriber was already installed.
    #[error("could not install the log subscriber")]
    InstallSubscriber(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Installs the global subscriber.
///
/// # Errors
/// [`TelemetryError`] on a bad filter or when called twice.
pub fn init(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::ParseFilter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    }
    .map_err(TelemetryError::InstallSubscriber)
}
