//! EDGE: one plugin socket and its registration (`docs/kubelet.md` §3.1, §3.6).
//!
//! A session binds `<dir>/kube-dmem-<unix-ms>.sock`, serves the device plugin on it, dials it itself
//! to check it answers (the kubelet requires serving before `Register`), then calls
//! `Registration.Register` on `<dir>/kubelet.sock`; the kubelet dials back synchronously inside that
//! call. Once registered, the session polls both sockets: the kubelet, when it restarts, deletes every
//! socket in the directory (ours included) and recreates `kubelet.sock`, so our socket vanishing or
//! `kubelet.sock` changing identity (device, inode and change time: inode numbers can be reused at
//! once) ends the session.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::{Instrument as _, debug, info_span, warn};

use super::plugin::DevicePluginService;
use super::proto::DEVICE_PLUGIN_VERSION;
use super::proto::v1beta1::device_plugin_client::DevicePluginClient;
use super::proto::v1beta1::device_plugin_server::DevicePluginServer;
use super::proto::v1beta1::registration_client::RegistrationClient;
use super::proto::v1beta1::{Empty, RegisterRequest};
use super::registration::{KUBELET_SOCKET, RegistrationConfig, RegistrationError};
use super::uds;

/// How long a stopped session's server may take to finish in-flight calls before it is aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// (device, inode, change time): tells a recreated file apart even when its inode number is reused.
type FileId = (u64, u64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

/// Runs `call` within `after`, turning the timeout into [`RegistrationError::TimedOut`].
async fn within<T>(
    after: Duration,
    what: &'static str,
    call: impl Future<Output = Result<T, RegistrationError>>,
) -> Result<T, RegistrationError> {
    tokio::time::timeout(after, call)
        .await
        .map_err(|_| RegistrationError::TimedOut { what, after })?
}

/// One registered socket and the server on it.
pub(super) struct Session {
    /// Socket file name, the `endpoint` given to the kubelet.
    pub(super) name: String,
    path: PathBuf,
    stop: CancellationToken,
    server_done: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Identity of `kubelet.sock` just before `Register`; a change means the kubelet restarted.
    kubelet_id: Option<FileId>,
}

impl Session {
    /// Binds socket `name`, serves `plugin` on it and registers it; on failure nothing is left behind.
    pub(super) async fn start(
        config: &RegistrationConfig,
        plugin: &DevicePluginService,
        name: String,
        stop: &CancellationToken,
    ) -> Result<Self, RegistrationError> {
        let path = uds::socket_path(&config.dir, &name);
        let incoming = uds::bind(&path).map_err(|source| RegistrationError::BindSocket {
            path: path.clone(),
            source,
        })?;
        let session_stop = stop.child_token();
        let server_done = CancellationToken::new();
        // The plugin's streams end with the session, so the graceful shutdown below is quick.
        let service = DevicePluginServer::new(plugin.clone().with_stop(session_stop.clone()));
        let serve = Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, session_stop.clone().cancelled_owned());
        let done = server_done.clone();
        let span = info_span!("device-plugin-server", socket = %name);
        let server = tokio::spawn(
            async move {
                let result = serve.await;
                done.cancel();
                result
            }
            .instrument(span),
        );
        let kubelet_id = file_id(&config.dir.join(KUBELET_SOCKET));
        let session = Self {
            name,
            path,
            stop: session_stop,
            server_done,
            server,
            kubelet_id,
        };
        // A stop during the handshake (Register may block for the kubelet's 10 s dial-back) must
        // still clean up the socket, so the race is decided here rather than by dropping `start`.
        let handshake = tokio::select! {
            biased;
            () = stop.cancelled() => Err(RegistrationError::Stopped),
            result = session.handshake(config) => result,
        };
        match handshake {
            Ok(()) => Ok(session),
            Err(err) => {
                session.shutdown().await;
                Err(err)
            }
        }
    }

    /// Checks our socket answers, then registers it. Each step is bounded by `call_timeout`.
    async fn handshake(&self, config: &RegistrationConfig) -> Result<(), RegistrationError> {
        let after = config.call_timeout;
        let own = &self.path;
        within(after, "plugin self-check", async {
            let channel =
                uds::connect(own, after)
                    .await
                    .map_err(|source| RegistrationError::Connect {
                        path: own.clone(),
                        source,
                    })?;
            DevicePluginClient::new(channel)
                .get_device_plugin_options(Empty {})
                .await
                .map_err(|source| RegistrationError::SelfCheck {
                    path: own.clone(),
                    source,
                })
        })
        .await?;
        let kubelet = config.dir.join(KUBELET_SOCKET);
        let request = RegisterRequest {
            version: DEVICE_PLUGIN_VERSION.to_owned(),
            endpoint: self.name.clone(),
            resource_name: config.resource_name.clone(),
            options: Some(DevicePluginService::options()),
        };
        within(after, "kubelet Register", async {
            let channel = uds::connect(&kubelet, after).await.map_err(|source| {
                RegistrationError::Connect {
                    path: kubelet.clone(),
                    source,
                }
            })?;
            RegistrationClient::new(channel)
                .register(request)
                .await
                .map_err(|source| RegistrationError::RegisterWithKubelet {
                    resource: config.resource_name.clone(),
                    path: kubelet.clone(),
                    source,
                })
        })
        .await?;
        Ok(())
    }

    /// Waits until the session must end: `None` on stop, otherwise the PascalCase cause.
    pub(super) async fn watch(
        &self,
        config: &RegistrationConfig,
        stop: &CancellationToken,
    ) -> Option<&'static str> {
        let kubelet = config.dir.join(KUBELET_SOCKET);
        let mut tick = tokio::time::interval(config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return None,
                () = self.server_done.cancelled() => return Some("PluginServerExited"),
                _ = tick.tick() => {}
            }
            if file_id(&self.path).is_none() {
                return Some("PluginSocketRemoved");
            }
            let now = file_id(&kubelet);
            if now.is_some() && now != self.kubelet_id {
                return Some("KubeletSocketRecreated");
            }
        }
    }

    /// Stops the server (bounded by [`SHUTDOWN_GRACE`]) and removes the socket file.
    pub(super) async fn shutdown(self) {
        self.stop.cancel();
        let mut server = self.server;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => {
                warn!(
                    error = &err as &dyn std::error::Error,
                    "Plugin server failed"
                );
            }
            Ok(Err(err)) => {
                warn!(
                    error = &err as &dyn std::error::Error,
                    "Plugin server task failed"
                );
            }
            Err(_) => {
                warn!(grace = ?SHUTDOWN_GRACE, "Plugin server did not stop in time; aborting it");
                server.abort();
            }
        }
        if let Err(err) = uds::remove(&self.path) {
            let path = self.path.display();
            warn!(%path, error = &err as &dyn std::error::Error, "Could not remove plugin socket");
        }
        debug!(socket = %self.name, "Plugin session ended");
    }
}
