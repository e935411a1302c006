//! EDGE: the two watches the node agent acts on, cached in reflector stores: this node's pods
//! (field selector `spec.nodeName=<node>`) and every DmemQuota.
//!
//! Quotas are watched as dynamic objects and converted when a snapshot is taken: one quota whose
//! spec does not deserialize (an older CRD let it in) is counted and handed on as undecodable, it
//! never stalls the watch. Watch errors are counted and the watcher restarts with kube's default backoff; the stores
//! keep their last contents meanwhile, so enforcement goes on from the last known objects while the
//! API server is unreachable. Every change after the initial list pokes `trigger` (the loop
//! debounces). Streaming lists are not used (`docs/kubelet.md` §6.3).

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::select::QuotaRef;
use kube_dmem_runtime::watch::{WatchContext, drive};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::metrics::Metrics;

/// The objects one round reads.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// This node's pods.
    pub pods: Vec<Arc<Pod>>,
    /// Every DmemQuota that deserializes.
    pub quotas: Vec<DmemQuota>,
    /// DmemQuotas that do not deserialize: never dropped silently, since they may govern pods whose
    /// limits must not be loosened (see [`crate::decide::inputs`]).
    pub undecodable: Vec<UndecodableQuota>,
}

/// A DmemQuota whose object does not deserialize into the current types.
#[derive(Clone, Debug, PartialEq)]
pub struct UndecodableQuota {
    /// Namespace and name.
    pub key: QuotaRef,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `spec.selector`, when that part alone still reads as a label selector.
    pub selector: Option<LabelSelector>,
    /// Why it does not deserialize.
    pub error: String,
}

impl UndecodableQuota {
    /// Reads what can still be read of `obj`, given why it does not deserialize.
    pub fn from_dynamic(obj: &DynamicObject, error: String) -> Self {
        let selector = obj
            .data
            .get("spec")
            .and_then(|spec| spec.get("selector"))
            .and_then(|sel| serde_json::from_value(sel.clone()).ok());
        Self {
            key: QuotaRef {
                namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                name: obj.metadata.name.clone().unwrap_or_default(),
            },
            uid: obj.metadata.uid.clone(),
            selector,
            error,
        }
    }
}

/// Read handles on the two caches.
#[derive(Clone)]
pub struct Caches {
    pods: Store<Pod>,
    quotas: Store<DynamicObject>,
    metrics: Metrics,
}

impl Caches {
    /// Starts the watches on `tasks`; they end when `stop` is cancelled.
    pub fn start(
        client: &Client,
        node: &str,
        metrics: &Metrics,
        trigger: &Arc<Notify>,
        stop: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) -> Self {
        let ar = ApiResource::erase::<DmemQuota>(&());
        let quota_writer = Writer::new(ar.clone());
        let (pods, pod_writer) = reflector::store::<Pod>();
        let caches = Self {
            pods,
            quotas: quota_writer.as_reader(),
            metrics: metrics.clone(),
        };
        let pod_stream = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={node}")),
        )
        .modify(|p: &mut Pod| p.metadata.managed_fields = None);
        let quota_stream = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            watcher::Config::default(),
        )
        .modify(|q: &mut DynamicObject| q.metadata.managed_fields = None);
        let ctx = WatchContext {
            errors: metrics.watch_errors.clone(),
            trigger: trigger.clone(),
            stop: stop.clone(),
        };
        tasks.spawn(
            drive("pods", pod_stream, pod_writer, ctx.clone())
                .instrument(info_span!("watch", resource = "pods")),
        );
        tasks.spawn(
            drive("dmemquotas", quota_stream, quota_writer, ctx)
                .instrument(info_span!("watch", resource = "dmemquotas")),
        );
        caches
    }

    /// Waits until both watches have delivered their initial list; `false` if a watch task ended
    /// first (shutdown).
    pub async fn wait_synced(&self) -> bool {
        let (p, q) = tokio::join!(self.pods.wait_until_ready(), self.quotas.wait_until_ready());
        p.is_ok() && q.is_ok()
    }

    /// The cached objects now (no API call).
    pub fn snapshot(&self) -> Objects {
        let mut objects = Objects {
            pods: self.pods.state(),
            ..Objects::default()
        };
        for obj in self.quotas.state() {
            match obj.as_ref().clone().try_parse::<DmemQuota>() {
                Ok(quota) => objects.quotas.push(quota),
                Err(err) => {
                    // Logged by the agent when the set of invalid quotas changes, not per snapshot.
                    Metrics::inc(&self.metrics.decode_errors, "resource", "dmemquotas");
                    let error = kube_dmem_crds::error_chain(&err);
                    objects
                        .undecodable
                        .push(UndecodableQuota::from_dynamic(&obj, error));
                }
            }
        }
        objects
    }
}
