//! EDGE: the `v1beta1.DevicePlugin` gRPC service the kubelet calls on our socket.
//!
//! It translates between gRPC and the CORE modules: `ListAndWatch` streams
//! [`list_and_watch_response`] of every inventory published on a `tokio::sync::watch` channel,
//! `GetPreferredAllocation` and `Allocate` call [`allocate`](mod@super::decide::allocate), and
//! `PreStartContainer` hands the device IDs to the injected [`PreStart`] hook (the node agent applies
//! and verifies the pod's limits there, so a container never starts without them).

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::decide::allocate::{self, pci_address};
use super::decide::inventory::{Inventory, list_and_watch_response};
use super::devnodes::DeviceNodes;
use super::proto::v1beta1::device_plugin_server::DevicePlugin;
use super::proto::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, DevicePluginOptions,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse,
};

/// How long the [`PreStart`] hook may run: below the kubelet's own 30 s deadline
/// (`KubeletPreStartContainerRPCTimeoutInSecs`), so the kubelet sees our precise error, not its timeout.
pub const PRE_START_TIMEOUT: Duration = Duration::from_secs(25);

/// Why the [`PreStart`] hook refused a container start. Each variant maps to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum PreStartError {
    /// No pod on this node holds the devices yet (for example PodResources lags behind).
    #[error("no pod on this node holds devices {device_ids:?}")]
    PodNotFound {
        /// The device IDs of the request.
        device_ids: Vec<String>,
    },
    /// The pod's limits could not be applied or did not read back as written.
    #[error("limits of pod {pod} are not in force")]
    LimitsNotApplied {
        /// `namespace/name` of the pod.
        pod: String,
        /// PascalCase reason, e.g. `MaxBelowUsage` or `WriteFailed`.
        reason: &'static str,
        /// Whether another round may bring the limits in force (the cgroup may still appear,
        /// usage may drop, the grant may become known): the hook then retries within its budget.
        may_settle: bool,
        /// What failed underneath.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Something the hook depends on is not reachable now; the kubelet retries the container start.
    #[error("{what} is unavailable")]
    Unavailable {
        /// What was unavailable, e.g. `PodResources`.
        what: &'static str,
        /// What failed underneath.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The hook did not finish within [`PRE_START_TIMEOUT`].
    #[error("limits were not applied within {0:?}")]
    TimedOut(Duration),
}

impl PreStartError {
    /// PascalCase reason for logs, metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PodNotFound { .. } => "PodNotFound",
            Self::LimitsNotApplied { reason, .. } => reason,
            Self::Unavailable { .. } => "Unavailable",
            Self::TimedOut(_) => "TimedOut",
        }
    }
}

impl From<PreStartError> for Status {
    fn from(err: PreStartError) -> Self {
        let code = match &err {
            PreStartError::PodNotFound { .. } => tonic::Code::NotFound,
            PreStartError::LimitsNotApplied { .. } => tonic::Code::FailedPrecondition,
            PreStartError::Unavailable { .. } => tonic::Code::Unavailable,
            PreStartError::TimedOut(_) => tonic::Code::DeadlineExceeded,
        };
        Status::new(code, format!("{}: {}", err.reason(), error_chain(&err)))
    }
}

/// `err` and all its sources, so the kubelet's event shows the whole cause.
pub use kube_dmem_crds::error_chain;

/// Runs before every start of a container that holds our units; the node agent implements it.
#[tonic::async_trait]
pub trait PreStart: Send + Sync {
    /// Makes sure the limits of the pod holding `device_ids` are in force; an error stops the start.
    async fn pre_start(&self, device_ids: Vec<String>) -> Result<(), PreStartError>;
}

/// A hook that accepts every container start, for running the plugin without enforcement.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

#[tonic::async_trait]
impl PreStart for AcceptAll {
    async fn pre_start(&self, _device_ids: Vec<String>) -> Result<(), PreStartError> {
        Ok(())
    }
}

/// The device plugin service. Cheap to clone; every clone serves the same inventory.
#[derive(Clone)]
pub struct DevicePluginService {
    inventory: watch::Receiver<Inventory>,
    device_nodes: Arc<dyn DeviceNodes>,
    pre_start: Arc<dyn PreStart>,
    stop: CancellationToken,
}

impl DevicePluginService {
    /// A service over the inventories published on `inventory`.
    pub fn new(
        inventory: watch::Receiver<Inventory>,
        device_nodes: Arc<dyn DeviceNodes>,
        pre_start: Arc<dyn PreStart>,
    ) -> Self {
        Self {
            inventory,
            device_nodes,
            pre_start,
            stop: CancellationToken::new(),
        }
    }

    /// The same service whose `ListAndWatch` streams end when `stop` is cancelled (and only then),
    /// so a server shutting down gracefully is not held open by the kubelet's stream.
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// The options we announce: the kubelet must call `PreStartContainer` and may ask for a preference.
    pub fn options() -> DevicePluginOptions {
        DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: true,
        }
    }
}

/// Sends the full device list now and after every change, until the client goes away or `stop`.
///
/// If the inventory's sender is dropped the stream stays open with the last list: ending it would
/// make the kubelet mark every unit unhealthy (`docs/kubelet.md` §3.2).
async fn forward_inventory(
    mut inventory: watch::Receiver<Inventory>,
    tx: mpsc::Sender<Result<ListAndWatchResponse, Status>>,
    stop: CancellationToken,
) {
    let mut source_alive = true;
    loop {
        let (message, (all, healthy)) = {
            let current = inventory.borrow_and_update();
            (list_and_watch_response(&current), current.counts())
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            sent = tx.send(Ok(message)) => if sent.is_err() { return },
        }
        debug!(devices = all, healthy, "Sent device list");
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                changed = inventory.changed(), if source_alive => match changed {
                    Ok(()) => break,
                    Err(_) => {
                        warn!("Inventory source ended; keeping the device list stream open");
                        source_alive = false;
                    }
                },
            }
        }
    }
}

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    type ListAndWatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(Self::options()))
    }

    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        let task = forward_inventory(self.inventory.clone(), tx, self.stop.clone());
        tokio::spawn(task.instrument(info_span!("list-and-watch")));
        info!("Kubelet started ListAndWatch");
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let inventory = self.inventory.borrow().clone();
        let mut container_responses = Vec::new();
        for container in &request.get_ref().container_requests {
            let device_i_ds = allocate::preferred(&inventory, container).inspect_err(|err| {
                warn!(
                    reason = err.reason(),
                    error = err as &dyn StdError,
                    "Refused preference"
                );
            })?;
            debug!(size = container.allocation_size, devices = ?device_i_ds, "Preferred devices");
            container_responses.push(ContainerPreferredAllocationResponse { device_i_ds });
        }
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let inventory = self.inventory.borrow().clone();
        let mut container_responses = Vec::new();
        for container in &request.get_ref().container_requests {
            let grant =
                allocate::allocate(&inventory, &container.devices_ids).inspect_err(|err| {
                    warn!(
                        reason = err.reason(),
                        error = err as &dyn StdError,
                        "Refused allocation"
                    );
                })?;
            let nodes = pci_address(&grant.region)
                .map(|bdf| self.device_nodes.for_pci(bdf))
                .unwrap_or_default();
            info!(region = %grant.region, bytes = grant.bytes, units = grant.units.len(),
                device_nodes = nodes.len(), "Allocated VRAM units");
            container_responses.push(allocate::container_response(&grant, nodes));
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        let device_ids = request.into_inner().devices_ids;
        let count = device_ids.len();
        let outcome = tokio::time::timeout(PRE_START_TIMEOUT, self.pre_start.pre_start(device_ids))
            .await
            .unwrap_or(Err(PreStartError::TimedOut(PRE_START_TIMEOUT)));
        match outcome {
            Ok(()) => {
                debug!(devices = count, "Pre-start hook passed");
                Ok(Response::new(PreStartContainerResponse {}))
            }
            Err(err) => {
                warn!(
                    reason = err.reason(),
                    error = &err as &dyn StdError,
                    "Pre-start hook refused"
                );
                Err(err.into())
            }
        }
    }
}
