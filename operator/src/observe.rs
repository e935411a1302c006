//! EDGE: the watches the operator reads from, cached in reflector stores, and the snapshot of
//! those caches as an [`Observed`] value.
//!
//! - DmemQuotas, all namespaces, as dynamic objects: a quota whose spec no longer deserializes
//!   (an older CRD let it in) must become an `InvalidSpec` status, not a stalled watch.
//! - Pods, all namespaces, without finished pods (field selector), pruned on arrival to identity,
//!   labels, phase and the agent's two conditions ([`prune_pod`]); status is needed, so a
//!   metadata-only watch is not enough.
//! - Nodes, metadata only, pruned to the regions annotation.
//!
//! Watches run whether or not this replica leads, so a new leader acts on warm caches. Every
//! change after the initial list pokes `trigger`; the driver debounces.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use kube_dmem_crds::DmemQuota;
use kube_dmem_runtime::watch::{WatchContext, drive};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::decide::observed::{Observed, prune_node, prune_pod};
use crate::metrics::Metrics;

/// Pods that finished hold no VRAM; leaving them out of the watch keeps the cache small.
const ACTIVE_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// Why the operator cannot read its API.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The DmemQuota CRD is not installed in the cluster.
    #[error(
        "the DmemQuota CRD ({crd}) is not installed; install it with \
         `kubectl apply --server-side -f crds/dmemquotas.kube-dmem.io.yaml` \
         (the Helm chart installs it too), then start the operator again"
    )]
    CrdMissing {
        /// The CRD name.
        crd: String,
    },
    /// Listing DmemQuotas failed for another reason (RBAC, connectivity).
    #[error("could not list DmemQuotas")]
    ListQuotas(#[source] kube::Error),
    /// A watch ended before its initial list completed (the process is shutting down).
    #[error("a watch stopped before its initial list")]
    WaitForSync,
}

impl ObserveError {
    /// PascalCase reason for events and the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CrdMissing { .. } => "CrdMissing",
            Self::ListQuotas(_) => "ListQuotas",
            Self::WaitForSync => "WaitForSync",
        }
    }

    /// Whether retrying without a change elsewhere is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::CrdMissing { .. })
    }
}

/// Checks at start-up that the DmemQuota API is served, so a missing CRD is one clear error
/// instead of an endless watch retry loop.
///
/// # Errors
/// [`ObserveError::CrdMissing`] on 404, [`ObserveError::ListQuotas`] otherwise.
pub async fn ensure_crd_installed(client: &Client) -> Result<(), ObserveError> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &quota_resource());
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(ObserveError::CrdMissing {
            crd: format!("{}.{}", DmemQuota::plural(&()), DmemQuota::group(&())),
        }),
        Err(err) => Err(ObserveError::ListQuotas(err)),
    }
}

fn quota_resource() -> ApiResource {
    ApiResource::erase::<DmemQuota>(&())
}

/// Read handles on the three caches.
#[derive(Clone)]
pub struct Caches {
    quotas: Store<DynamicObject>,
    pods: Store<Pod>,
    nodes: Store<PartialObjectMeta<Node>>,
}

impl Caches {
    /// Starts the watches on `tasks`; they end when `stop` is cancelled.
    pub fn start(
        client: &Client,
        metrics: &Metrics,
        trigger: &Arc<Notify>,
        stop: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let ar = quota_resource();
        let quota_writer = Writer::new(ar.clone());
        let (pods, pod_writer) = reflector::store::<Pod>();
        let (nodes, node_writer) = reflector::store::<PartialObjectMeta<Node>>();
        let caches = Self {
            quotas: quota_writer.as_reader(),
            pods,
            nodes,
        };

        let quota_stream = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
        )
        .modify(|q: &mut DynamicObject| q.metadata.managed_fields = None);
        let pod_stream = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(ACTIVE_PODS),
        )
        .modify(prune_pod);
        let node_stream = watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(prune_node);
        let ctx = WatchContext {
            errors: metrics.watch_errors.clone(),
            trigger: trigger.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(
            drive("dmemquotas", quota_stream, quota_writer, ctx.clone())
                .instrument(info_span!("watch", resource = "dmemquotas")),
        );
        tasks.spawn(
            drive("pods", pod_stream, pod_writer, ctx.clone())
                .instrument(info_span!("watch", resource = "pods")),
        );
        tasks.spawn(
            drive("nodes", node_stream, node_writer, ctx)
                .instrument(info_span!("watch", resource = "nodes")),
        );
        caches
    }

    /// Waits until every watch has delivered its initial list.
    ///
    /// # Errors
    /// [`ObserveError::WaitForSync`] when a watch task ended first.
    pub async fn wait_synced(&self) -> Result<(), ObserveError> {
        let (q, p, n) = tokio::join!(
            self.quotas.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.nodes.wait_until_ready()
        );
        q.and(p).and(n).map_err(|_| ObserveError::WaitForSync)
    }

    /// The current cache contents as an [`Observed`] value (no API call).
    pub fn snapshot(&self) -> Observed {
        let (quotas, pods, nodes) = (self.quotas.state(), self.pods.state(), self.nodes.state());
        Observed::from_objects(
            quotas.iter().map(AsRef::as_ref),
            pods.iter().map(AsRef::as_ref),
            nodes.iter().map(AsRef::as_ref),
        )
    }
}
