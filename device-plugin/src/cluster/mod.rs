//! Cluster mode (`kube-dmem-device-plugin run`): the node agent of one node in a real cluster.
//!
//! EDGE wiring: the watches ([`objects`]), the kernel backend ([`backend`]), the kubelet device
//! plugin and PodResources when the kubelet is enabled, the new-pod-cgroup scan ([`cgroup_watch`]),
//! the admin server; then the loop ([`drive::drive`]). A round ([`agent::Agent::round`]: the kernel
//! round of [`crate::round`], then the API writes of [`api`]) runs on a pod or quota change
//! (debounced), every poll interval (pressure) and every resync; a new pod cgroup or a PreStart or
//! NRI request gets a round of its pods alone at once ([`kernel::Kernel::settle_pods`]), which a
//! node round in progress runs between two of its pods ([`waiting`]). No round runs before both
//! watches have synced, so limits are never reset from an empty view; a round writes only
//! differences, so a restarted agent adopts what is in force.

pub mod agent;
pub mod api;
pub mod backend;
pub mod cgroup_events;
pub mod cgroup_watch;
pub mod drive;
pub mod health;
pub mod kernel;
pub mod objects;
pub mod prestart;
pub mod waiting;

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_dmem_sim::Profile;
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, info_span, warn};

use crate::cgroup::CgroupPath;
use crate::cluster::api::KubeSink;
use crate::cluster::objects::Caches;
use crate::decide::pressure::PressureThresholds;
use crate::kubelet::decide::inventory::Inventory;
use crate::kubelet::devnodes::{DevDir, DeviceNodes, NoDeviceNodes};
use crate::kubelet::plugin::DevicePluginService;
use crate::kubelet::podresources::PodResourcesClient;
use crate::kubelet::registration::{Registrar, RegistrationConfig};
use crate::metrics::Metrics;
use crate::round::RoundConfig;
use agent::Agent;
use backend::Backend;
use drive::{DraSide, KubeletSide, Loop, drive};
use health::Health;
use kube_dmem_runtime::admin;
use prestart::{AgentPreStart, RoundRequest};

/// Which kernel the agent enforces on.
#[derive(Clone, Debug)]
pub enum BackendConfig {
    /// The node's cgroupfs under this root.
    Sysfs(PathBuf),
    /// The in-process simulator.
    Sim {
        /// Kernel profile.
        profile: Profile,
        /// Regions, `(name, bytes)` in registration order.
        regions: Vec<(String, u64)>,
    },
}

/// What `run` needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// This node.
    pub node: String,
    /// The kernel side.
    pub backend: BackendConfig,
    /// Whether a kubelet runs here (device plugin registration, PodResources).
    pub kubelet: bool,
    /// The kubelet's device-plugin directory.
    pub device_plugin_dir: PathBuf,
    /// Where the node's `/dev` is mounted, for the device nodes `Allocate` hands out.
    pub dev_root: PathBuf,
    /// The kubelet's PodResources socket.
    pub pod_resources_socket: PathBuf,
    /// Admin server address.
    pub admin_addr: std::net::SocketAddr,
    /// Pressure polling interval.
    pub poll_interval: Duration,
    /// Pressure polling interval while a pod is near a threshold (adaptive polling).
    pub near_poll_interval: Duration,
    /// Full re-evaluation interval (also forgets what was written).
    pub resync: Duration,
    /// Bytes per `kube-dmem.io/vram` unit.
    pub vram_unit: NonZeroU64,
    /// The runtime's NRI socket; `None`: no NRI plugin (`crate::nri`).
    pub nri_socket: Option<PathBuf>,
    /// The DRA driver (`crate::dra`); `None`: off. Without a kubelet it only publishes the slice.
    pub dra: Option<crate::dra::DraConfig>,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes client could be built.
    #[error("could not build a Kubernetes client (in-cluster or $KUBECONFIG)")]
    Client(#[source] kube::Error),
    /// The admin server could not start.
    #[error("starting the admin server")]
    Admin(#[source] admin::AdminError),
    /// The simulator could not be set up.
    #[error("setting up the simulated node")]
    Sim(#[source] crate::standalone::sim_node::SimNodeError),
    /// The DRA driver's claim checkpoint cannot be read: starting without it would drop the
    /// limits of running pods, so the agent does not start.
    #[error("loading the DRA claim checkpoint")]
    ClaimCheckpoint(#[source] crate::dra::store::StoreError),
}

/// Runs the agent until `stop` is cancelled.
pub async fn run(cfg: RunConfig, stop: CancellationToken) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let dra_metrics = cfg
        .dra
        .as_ref()
        .map(|_| crate::dra::metrics::DraMetrics::register(&mut registry));
    let health = Arc::new(Health::default());
    let listener = admin::bind(cfg.admin_addr).await.map_err(RunError::Admin)?;
    let mut tasks = JoinSet::new();
    let admin_server = admin::serve(listener, health.clone(), Arc::new(registry), stop.clone());
    tasks.spawn(async move {
        if let Err(err) = admin_server.await {
            tracing::error!(
                reason = err.reason(),
                error = &err as &dyn std::error::Error,
                "Admin server stopped"
            );
        }
    });

    let (backend, high) = match &cfg.backend {
        BackendConfig::Sysfs(root) => Backend::sysfs(root.clone()),
        BackendConfig::Sim { profile, regions } => {
            Backend::sim(*profile, regions).map_err(RunError::Sim)?
        }
    };
    if let Some(why) = backend.unavailable() {
        warn!(
            why,
            "dmem is unavailable on this node; reporting, not enforcing"
        );
    }
    let new_cgroup = Arc::new(cgroup_watch::CgroupSignal::default());
    if let Some(fs) = backend.sysfs_root() {
        tasks.spawn(
            cgroup_events::watch(fs, new_cgroup.clone(), stop.clone())
                .instrument(info_span!("pod-cgroup-scan")),
        );
    }
    let trigger = Arc::new(Notify::new());
    let caches = Caches::start(&client, &cfg.node, &metrics, &trigger, &stop, &mut tasks);
    let (inventory_tx, inventory_rx) = watch::channel(Inventory::new(cfg.vram_unit));
    let (rounds_tx, rounds_rx) = mpsc::channel::<RoundRequest>(16);
    let pod_resources = cfg
        .kubelet
        .then(|| PodResourcesClient::new(cfg.pod_resources_socket.clone()));
    if let Some(pr) = &pod_resources {
        let hook = Arc::new(AgentPreStart::new(pr.clone(), rounds_tx.clone()));
        let plugin = DevicePluginService::new(
            inventory_rx.clone(),
            device_nodes(&cfg.backend, &cfg.dev_root),
            hook,
        )
        .with_stop(stop.clone());
        let config = RegistrationConfig {
            dir: cfg.device_plugin_dir.clone(),
            ..RegistrationConfig::default()
        };
        tasks.spawn(
            Registrar::new(config, plugin)
                .run(stop.clone())
                .instrument(info_span!("kubelet-registration")),
        );
    }
    // NRI plugin (crate::nri): asks the loop for rounds like the PreStart hook; off unless configured.
    if let Some(socket) = cfg.nri_socket.clone() {
        let plugin = Arc::new(
            crate::nri::plugin::NriPlugin::new(rounds_tx.clone())
                .with_metrics(metrics.nri_held.clone()),
        );
        tasks.spawn(
            crate::nri::run(crate::nri::NriConfig { socket }, plugin, stop.clone())
                .instrument(info_span!("nri")),
        );
    }
    let round_cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high,
        thresholds: PressureThresholds::default(),
    };
    let mut agent = Agent::new(cfg.node.clone(), backend, round_cfg, metrics, inventory_tx);
    let dra = match (&cfg.dra, dra_metrics) {
        (Some(dra_cfg), Some(m)) => {
            let (side, regions) = start_dra(&cfg, dra_cfg, &client, m, &stop, &mut tasks)?;
            agent = agent.with_regions(regions);
            Some(side)
        }
        _ => None,
    };
    let sink = KubeSink::new(client, &cfg.node);

    // Observe nothing before both watches have synced: an empty view would look like "no pods".
    tokio::select! {
        biased;
        () = stop.cancelled() => return Ok(()),
        synced = caches.wait_synced() => if !synced { return Ok(()) },
    }
    info!(node = %cfg.node, kubelet = cfg.kubelet, "Watches synced, enforcing");
    let parts = Loop {
        agent,
        objects: &caches,
        sink: &sink,
        trigger,
        new_cgroup,
        rounds: rounds_rx,
        dra,
        kubelet: pod_resources.map(|pod_resources| KubeletSide {
            pod_resources,
            inventory: inventory_rx,
        }),
        poll_interval: cfg.poll_interval,
        near_poll_interval: cfg.near_poll_interval,
        resync: cfg.resync,
        health,
    };
    drive(parts, stop).await;
    tasks.shutdown().await;
    Ok(())
}

/// Starts the DRA driver: the slice publisher always, the kubelet plugin where a kubelet runs.
/// Returns the loop's side of it and where the rounds publish their regions.
fn start_dra(
    cfg: &RunConfig,
    dra: &crate::dra::DraConfig,
    client: &Client,
    metrics: crate::dra::metrics::DraMetrics,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(DraSide, RegionsTx), RunError> {
    use crate::dra::{health, plugin, prepare, publish, server, store};
    let claims = Arc::new(if cfg.kubelet {
        store::ClaimStore::open(dra.plugin_dir.join(crate::dra::CHECKPOINT))
            .map_err(RunError::ClaimCheckpoint)?
    } else {
        // No kubelet prepares claims here: nothing to remember.
        store::ClaimStore::in_memory()
    });
    let (regions_tx, regions_rx) = watch::channel(None);
    let (devices_tx, devices_rx) = watch::channel(None);
    let (rounds_tx, rounds_rx) = mpsc::channel(16);
    let nodes = device_nodes(&cfg.backend, &cfg.dev_root);
    let drivers: Arc<dyn publish::KernelDrivers> = match cfg.backend {
        BackendConfig::Sysfs(_) => Arc::new(publish::SysfsDrivers(dra.sysfs.clone())),
        BackendConfig::Sim { .. } => Arc::new(publish::NoDrivers),
    };
    let mut registrations = None;
    if cfg.kubelet {
        let health = health::HealthService::new(
            health::track(devices_rx.clone(), stop.clone()),
            cfg.node.clone(),
        );
        let driver = prepare::AgentDriver::new(
            Arc::new(prepare::KubeClaims(client.clone())),
            claims.clone(),
            devices_rx,
            cfg.node.clone(),
            rounds_tx,
            Arc::clone(&nodes),
        );
        let service = server::DraService::new(Arc::new(driver), metrics.clone());
        let paths = plugin::PluginPaths {
            registry_dir: dra.registry_dir.clone(),
            plugin_dir: dra.plugin_dir.clone(),
            poll_interval: Duration::from_secs(1),
        };
        let plugin = plugin::DraPlugin::new(paths, service).with_health(health);
        registrations = Some(plugin.verdict());
        let stop = stop.clone();
        tasks.spawn(
            async move {
                if let Err(err) = plugin.run(stop).await {
                    tracing::error!(error = &err as &dyn std::error::Error, "DRA driver stopped");
                }
            }
            .instrument(info_span!("dra-plugin")),
        );
    }
    // The publisher reads its slice back often for a while after each registration.
    let publisher = publish::Publisher {
        node: cfg.node.clone(),
        policy: dra.policy,
        regions: regions_rx,
        devices: devices_tx,
        drivers,
        api: Arc::new(publish::KubeSlices::new(client.clone(), &cfg.node)),
        cdi: cfg.kubelet.then(|| publish::CdiWriter {
            dir: dra.cdi_dir.clone(),
            nodes: nodes.clone(),
        }),
        metrics: metrics.clone(),
        registrations,
    };
    tasks.spawn(
        publisher
            .run(stop.clone())
            .instrument(info_span!("dra-slice")),
    );
    let side = DraSide {
        claims,
        rounds: rounds_rx,
    };
    Ok((side, regions_tx))
}

/// Where rounds publish the regions they read.
type RegionsTx = watch::Sender<crate::dra::Regions>;

/// The device-node lookup for `backend`: the node's `dri/by-path` links under `dev_root` on a real
/// cgroupfs, none on the simulator (its regions are no GPUs, and `/dev` may hold real ones).
pub fn device_nodes(backend: &BackendConfig, dev_root: &std::path::Path) -> Arc<dyn DeviceNodes> {
    match backend {
        BackendConfig::Sysfs(_) => Arc::new(DevDir::new(dev_root)),
        BackendConfig::Sim { .. } => Arc::new(NoDeviceNodes),
    }
}

#[cfg(test)]
mod tests;
