//! EDGE: keeps the device plugin registered with the kubelet (`docs/kubelet.md` §3.1, §3.6): runs
//! one `Session` (module `session`) after another until stopped.
//!
//! A session that fails before it is registered is retried after a capped exponential backoff; a
//! registered session ends when the kubelet restarts (its socket vanished or `kubelet.sock` was
//! recreated), and the next session registers again on a new socket file. Progress is published on a
//! `watch` channel ([`RegistrationStatus`]) for readiness and tests. On stop the last session's server
//! shuts down and its socket file is removed.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::plugin::DevicePluginService;
use super::session::Session;

/// Where the kubelet looks for device plugins. The kubelet hard-codes it (`DevicePluginPath`); only
/// tests point [`RegistrationConfig::dir`] elsewhere.
pub const DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins/";
/// The kubelet's registration socket inside the device plugin directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// Prefix of our socket file names.
pub const SOCKET_PREFIX: &str = "kube-dmem-";

/// Settings of the registration loop.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Directory holding `kubelet.sock` and our socket.
    pub dir: PathBuf,
    /// Extended resource name to register.
    pub resource_name: String,
    /// How often the sockets are checked for a kubelet restart.
    pub poll_interval: Duration,
    /// First wait after a failed session; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest wait between sessions.
    pub backoff_max: Duration,
    /// Bound on one connect-and-call (the kubelet's dial-back alone may take 10 s).
    pub call_timeout: Duration,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEVICE_PLUGIN_DIR),
            resource_name: super::RESOURCE_NAME.to_owned(),
            poll_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a session ended before it was registered.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// Our socket could not be created.
    #[error("bind plugin socket {path}")]
    BindSocket {
        /// Socket path.
        path: PathBuf,
        /// I/O failure.
        #[source]
        source: io::Error,
    },
    /// A socket could not be connected.
    #[error("connect to {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Transport failure.
        #[source]
        source: tonic::transport::Error,
    },
    /// Our own server did not answer `GetDevicePluginOptions`.
    #[error("self-check of plugin socket {path} failed")]
    SelfCheck {
        /// Socket path.
        path: PathBuf,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The kubelet refused or failed `Register`.
    #[error("register {resource} with kubelet at {path}")]
    RegisterWithKubelet {
        /// Resource name.
        resource: String,
        /// The kubelet socket.
        path: PathBuf,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// The stop signal arrived before the session was registered.
    #[error("stopped before registration completed")]
    Stopped,
    /// A call did not finish in time.
    #[error("{what} timed out after {after:?}")]
    TimedOut {
        /// The call.
        what: &'static str,
        /// The bound that expired.
        after: Duration,
    },
}

impl RegistrationError {
    /// PascalCase reason for logs, metrics and readiness.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BindSocket { .. } => "BindSocket",
            Self::Connect { .. } => "Connect",
            Self::SelfCheck { .. } => "SelfCheck",
            Self::RegisterWithKubelet { .. } => "RegisterWithKubelet",
            Self::Stopped => "Stopped",
            Self::TimedOut { .. } => "TimedOut",
        }
    }
}

/// What the registration loop reports, e.g. for the `/ready` endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationStatus {
    /// Socket file name of the registered session; `None` while not registered.
    pub endpoint: Option<String>,
    /// Successful registrations since start (a kubelet restart adds one).
    pub registrations: u64,
    /// Reason of the last failed session, cleared on success.
    pub last_error: Option<&'static str>,
}

/// Serves the device plugin and keeps it registered with the kubelet until stopped.
pub struct Registrar {
    config: RegistrationConfig,
    plugin: DevicePluginService,
    status: watch::Sender<RegistrationStatus>,
    last_socket_ms: u128,
}

impl Registrar {
    /// A registrar for `plugin` with `config`; nothing runs before [`Registrar::run`].
    pub fn new(config: RegistrationConfig, plugin: DevicePluginService) -> Self {
        let (status, _) = watch::channel(RegistrationStatus::default());
        Self {
            config,
            plugin,
            status,
            last_socket_ms: 0,
        }
    }

    /// Follows the registration state.
    pub fn status(&self) -> watch::Receiver<RegistrationStatus> {
        self.status.subscribe()
    }

    /// Runs sessions until `stop` is cancelled, then removes our socket and returns.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut backoff = self.config.backoff_initial;
        while !stop.is_cancelled() {
            let name = self.next_socket_name();
            let session = match Session::start(&self.config, &self.plugin, name, &stop).await {
                Ok(session) => session,
                Err(RegistrationError::Stopped) => break,
                Err(err) => {
                    warn!(reason = err.reason(), error = &err as &dyn std::error::Error, retry_in = ?backoff,
                        "Registration with kubelet failed");
                    self.status
                        .send_modify(|s| (s.endpoint, s.last_error) = (None, Some(err.reason())));
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    continue;
                }
            };
            backoff = self.config.backoff_initial;
            self.status.send_modify(|s| {
                s.endpoint = Some(session.name.clone());
                s.registrations += 1;
                s.last_error = None;
            });
            info!(socket = %session.name, resource = %self.config.resource_name, "Registered with kubelet");
            let cause = session.watch(&self.config, &stop).await;
            self.status.send_modify(|s| s.endpoint = None);
            if let Some(cause) = cause {
                info!(socket = %session.name, cause, "Re-registering with kubelet");
            }
            session.shutdown().await;
        }
        info!("Device plugin stopped");
    }

    /// A socket name newer than every earlier one, so a new session never reuses a file name.
    fn next_socket_name(&mut self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.last_socket_ms = now.max(self.last_socket_ms + 1);
        format!("{SOCKET_PREFIX}{}.sock", self.last_socket_ms)
    }
}
