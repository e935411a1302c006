//! NRI plugin of the node agent (Node Resource Interface: containerd 2.x and CRI-O call plugins
//! over a ttrpc socket before they create pod sandboxes and containers).
//!
//! EDGE: the session ([`run`]): connect to the runtime's NRI socket, register as `kube-dmem`,
//! serve the runtime's calls ([`plugin::NriPlugin`]) until the connection closes, and connect
//! again whenever the socket is back (a runtime restart makes a new socket). While the agent or
//! this plugin is away the runtime simply runs without it, as NRI does for absent plugins.
//! Layers: [`decide`] (pure framing and answers), [`conn`] (ttrpc over the multiplexed socket),
//! [`plugin`] (the handlers), [`proto`] (generated messages). Protocol facts: `docs/nri.md`.

pub mod conn;
pub mod decide;
pub mod plugin;
pub mod proto;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use conn::{CallError, ConnError};
use plugin::NriPlugin;
use proto::{RUNTIME_SERVICE, api};

/// Where containerd and CRI-O put the NRI socket unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
/// The name the plugin registers under.
pub const PLUGIN_NAME: &str = "kube-dmem";
/// Invocation order among NRI plugins (two digits, ascending). Early, as limits should be in force
/// before other plugins start acting on the container; we never adjust anything ourselves.
pub const PLUGIN_INDEX: &str = "10";
/// How long registration may take: NRI's default registration timeout.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before connecting again after the socket was missing or the connection ended.
pub const RECONNECT: Duration = Duration::from_secs(1);

/// Where and as whom the plugin connects.
#[derive(Debug, Clone)]
pub struct NriConfig {
    /// The runtime's NRI socket.
    pub socket: PathBuf,
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The socket could not be reached (absent, NRI disabled, runtime down).
    #[error("connecting to the NRI socket {}", .path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Registration failed.
    #[error("registering the NRI plugin")]
    Register(#[source] CallError),
    /// The connection broke.
    #[error("the NRI connection failed")]
    Connection(#[source] ConnError),
}

impl SessionError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect { .. } => "NriSocketUnavailable",
            Self::Register(e) => e.reason(),
            Self::Connection(e) => e.reason(),
        }
    }
}

/// Keeps the plugin connected until `stop`.
pub async fn run(cfg: NriConfig, plugin: Arc<NriPlugin>, stop: CancellationToken) {
    let mut connected_before = true;
    loop {
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            r = session(&cfg, plugin.clone()) => r,
        };
        match result {
            Ok(()) => info!("NRI runtime closed the connection; reconnecting"),
            Err(err @ SessionError::Connect { .. }) if !connected_before => {
                debug!(
                    reason = err.reason(),
                    error = &err as &dyn std::error::Error,
                    "NRI still unavailable"
                );
            }
            Err(err) => warn!(
                reason = err.reason(),
                error = &err as &dyn std::error::Error,
                "NRI unavailable, retrying; containers start without waiting for the agent meanwhile"
            ),
        }
        connected_before = false;
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// One connection: register, then serve until the runtime closes it. `Ok` when it closed cleanly.
pub async fn session(cfg: &NriConfig, plugin: Arc<NriPlugin>) -> Result<(), SessionError> {
    let stream =
        UnixStream::connect(&cfg.socket)
            .await
            .map_err(|source| SessionError::Connect {
                path: cfg.socket.clone(),
                source,
            })?;
    let (client, driver) = conn::open(stream, plugin);
    tokio::pin!(driver);
    let request = api::RegisterPluginRequest {
        plugin_name: PLUGIN_NAME.to_owned(),
        plugin_idx: PLUGIN_INDEX.to_owned(),
        nri_version: String::new(),
    };
    let register = client.call::<api::Empty>(
        RUNTIME_SERVICE,
        "RegisterPlugin",
        &request,
        REGISTRATION_TIMEOUT,
    );
    tokio::select! {
        r = &mut driver => return r.map_err(SessionError::Connection),
        r = register => {
            r.map_err(SessionError::Register)?;
        }
    }
    info!(socket = %cfg.socket.display(), name = PLUGIN_NAME, index = PLUGIN_INDEX, "Registered with the NRI runtime");
    driver.await.map_err(SessionError::Connection)
}
