//! EDGE: the driver's two sockets and its registration with the kubelet (`docs/dra.md` §1).
//!
//! The kubelet's plugin watcher notices a new socket in its `plugins_registry` directory, dials it
//! and calls `Registration.GetInfo`; we answer with our driver name, the path of the DRA socket
//! (in `plugins/<driver>/`) and the gRPC services we serve, newest first. The kubelet picks one,
//! checks it can dial it, and tells us the result with `NotifyRegistrationStatus`. Unlike the device
//! plugin there is no call to make: a kubelet that restarts scans the directory again. A socket
//! file that disappears (someone cleaned the directory) is bound again at the next check. The DRA
//! socket also serves the device health stream ([`super::health`]) when one is given.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, info, info_span, warn};

use super::decide::DRIVER;
use super::health::HealthService;
use super::server::DraService;
use crate::kubelet::proto::dra_health::dra_resource_health_server::DraResourceHealthServer;
use crate::kubelet::proto::pluginregistration::registration_server::{
    Registration, RegistrationServer,
};
use crate::kubelet::proto::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use crate::kubelet::proto::{dra_v1, dra_v1beta1};
use crate::kubelet::uds;

/// The kubelet's plugin registration directory (it follows the kubelet's `--root-dir`).
pub const REGISTRY_DIR: &str = "/var/lib/kubelet/plugins_registry";
/// The directory holding our DRA socket (it follows the kubelet's `--root-dir`).
pub const PLUGIN_DIR: &str = "/var/lib/kubelet/plugins/vram.kube-dmem.io";
/// Plugin type for DRA drivers in `PluginInfo.type`.
pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
/// gRPC services we serve, newest first; the kubelet takes the first it knows.
pub const SUPPORTED_SERVICES: [&str; 2] = ["v1.DRAPlugin", "v1beta1.DRAPlugin"];

/// Where the sockets go.
#[derive(Clone, Debug)]
pub struct PluginPaths {
    /// The kubelet's `plugins_registry` directory.
    pub registry_dir: PathBuf,
    /// Our directory under the kubelet's `plugins`: DRA socket and claim checkpoint.
    pub plugin_dir: PathBuf,
    /// How often the socket files are checked.
    pub poll_interval: Duration,
}

impl PluginPaths {
    /// The registration socket.
    pub fn registration_socket(&self) -> PathBuf {
        uds::socket_path(&self.registry_dir, &format!("{DRIVER}-reg.sock"))
    }

    /// The DRA socket, as announced to the kubelet.
    pub fn dra_socket(&self) -> PathBuf {
        uds::socket_path(&self.plugin_dir, "dra.sock")
    }
}

/// What the kubelet last told us in `NotifyRegistrationStatus`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubeletVerdict {
    /// Whether the kubelet registered us.
    pub registered: bool,
    /// Its error, when it did not.
    pub error: Option<String>,
    /// How many verdicts arrived since start.
    pub notifications: u64,
}

#[derive(Clone)]
struct RegistrationService {
    info: PluginInfo,
    verdict: watch::Sender<KubeletVerdict>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            info!(driver = DRIVER, "Registered with kubelet as DRA driver");
        } else {
            warn!(driver = DRIVER, error = %status.error, "Kubelet refused the DRA driver");
        }
        self.verdict.send_modify(|v| {
            v.registered = status.plugin_registered;
            v.error = (!status.plugin_registered).then_some(status.error);
            v.notifications += 1;
        });
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// Serves the DRA service and the registration service until stopped.
pub struct DraPlugin {
    paths: PluginPaths,
    service: DraService,
    health: Option<HealthService>,
    verdict: watch::Sender<KubeletVerdict>,
}

/// Why the sockets could not be served.
#[derive(Debug, thiserror::Error)]
#[error("bind DRA socket {path}")]
pub struct BindError {
    /// Socket path.
    pub path: PathBuf,
    /// I/O failure.
    #[source]
    pub source: std::io::Error,
}

impl DraPlugin {
    /// A plugin serving `service` at `paths`.
    pub fn new(paths: PluginPaths, service: DraService) -> Self {
        let (verdict, _) = watch::channel(KubeletVerdict::default());
        Self {
            paths,
            service,
            health: None,
            verdict,
        }
    }

    /// Also serves the device health stream on the DRA socket.
    #[must_use]
    pub fn with_health(mut self, health: HealthService) -> Self {
        self.health = Some(health);
        self
    }

    /// Follows what the kubelet said about our registration.
    pub fn verdict(&self) -> watch::Receiver<KubeletVerdict> {
        self.verdict.subscribe()
    }

    fn serve(&self, stop: &CancellationToken) -> Result<Vec<JoinHandle<()>>, BindError> {
        let dra_path = self.paths.dra_socket();
        let reg_path = self.paths.registration_socket();
        // The DRA socket first: the kubelet dials it as soon as it has read our info.
        let in_dir = |path: &PathBuf| {
            let dir = path.parent().map_or(Ok(()), std::fs::create_dir_all);
            dir.map_err(|source| BindError {
                path: path.clone(),
                source,
            })
        };
        let failed = |path: &PathBuf| {
            let path = path.clone();
            move |source| BindError { path, source }
        };
        in_dir(&dra_path)?;
        let dra_incoming = uds::bind(&dra_path).map_err(failed(&dra_path))?;
        let dra = Server::builder()
            .add_service(dra_v1::dra_plugin_server::DraPluginServer::new(
                self.service.clone(),
            ))
            .add_service(dra_v1beta1::dra_plugin_server::DraPluginServer::new(
                self.service.clone(),
            ))
            .add_optional_service(self.health.clone().map(DraResourceHealthServer::new))
            .serve_with_incoming_shutdown(dra_incoming, stop.clone().cancelled_owned());
        // The kubelet's plugin watcher sends this socket's path as the HTTP/2 :authority.
        in_dir(&reg_path)?;
        let reg_incoming = uds::bind_for_plugin_watcher(&reg_path).map_err(failed(&reg_path))?;
        let registration = RegistrationService {
            info: PluginInfo {
                r#type: DRA_PLUGIN_TYPE.to_owned(),
                name: DRIVER.to_owned(),
                endpoint: dra_path.to_string_lossy().into_owned(),
                supported_versions: SUPPORTED_SERVICES.map(str::to_owned).to_vec(),
            },
            verdict: self.verdict.clone(),
        };
        let reg = Server::builder()
            .add_service(RegistrationServer::new(registration))
            .serve_with_incoming_shutdown(reg_incoming, stop.clone().cancelled_owned());
        let log = |what: &'static str| {
            move |result: Result<(), tonic::transport::Error>| {
                if let Err(err) = result {
                    warn!(
                        server = what,
                        error = &err as &dyn std::error::Error,
                        "DRA server failed"
                    );
                }
            }
        };
        Ok(vec![
            tokio::spawn(async move { log("dra")(dra.await) }.instrument(info_span!("dra-server"))),
            tokio::spawn(
                async move { log("registration")(reg.await) }
                    .instrument(info_span!("dra-registration")),
            ),
        ])
    }

    /// Serves until `stop`, binding the sockets again when a file disappears, then removes them.
    pub async fn run(self, stop: CancellationToken) -> Result<(), BindError> {
        let sockets = [self.paths.dra_socket(), self.paths.registration_socket()];
        loop {
            let session = stop.child_token();
            let servers = self.serve(&session)?;
            info!(socket = %sockets[1].display(), "DRA driver serving");
            let mut tick = tokio::time::interval(self.paths.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let gone = loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break false,
                    _ = tick.tick() => {}
                }
                if sockets
                    .iter()
                    .any(|s| std::fs::symlink_metadata(s).is_err())
                {
                    break true;
                }
            };
            session.cancel();
            for server in servers {
                let _ = server.await;
            }
            for socket in &sockets {
                if let Err(err) = uds::remove(socket) {
                    warn!(socket = %socket.display(), error = &err as &dyn std::error::Error, "Could not remove DRA socket");
                }
            }
            if !gone {
                return Ok(());
            }
            info!("A DRA socket vanished; serving again");
        }
    }
}
