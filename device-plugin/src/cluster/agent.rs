//! EDGE: the agent between rounds and one round of cluster mode: inputs from the cached objects,
//! the kernel round in `spawn_blocking`, then the API writes the round calls for, through an
//! [`ApiSink`]. Conditions are written only on a status or reason change ([`conditions`]), the
//! node regions only when they change, so steady state makes zero API writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::regions::format_regions;
use kube_dmem_crds::select::QuotaRef;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backend::Backend;
use super::kernel::Kernel;
pub use super::kernel::RoundError;
use crate::cluster::api::{ApiSink, ApiWrite, node_ref, pod_ref};
use crate::cluster::objects::Objects;
use crate::decide::backoff::Backoff;
use crate::decide::conditions::{self, ConditionKey};
use crate::decide::inputs::{
    InvalidQuota, by_uid, cgroup_may_be_absent, round_inputs_for, unsettled_is_news,
};
use crate::kubelet::decide::grants::Grants;
use crate::kubelet::decide::inventory::Inventory;
use crate::metrics::{Metrics, Published};
use crate::round::{LimitsOutcome, RoundConfig, RoundReport};

/// First wait after a failed condition write; doubles up to [`CONDITIONS_BACKOFF_MAX`]. Rounds go
/// on meanwhile: enforcement never waits for the API server.
const CONDITIONS_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between condition write attempts while the API server fails.
const CONDITIONS_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// First wait after a failed node annotation or event write. These fail for reasons a retry rarely
/// cures (missing RBAC, an admission webhook), so they back off further than conditions do.
const SIDE_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between node annotation or event write attempts.
const SIDE_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The agent's state between rounds.
pub struct Agent {
    node: String,
    /// The kernel side, shared with the pods rounds that run while this agent's round does.
    kernel: Arc<Kernel>,
    metrics: Metrics,
    /// Condition keys written per pod (`namespace/name`), so a write is not repeated before the
    /// watch brings it back.
    written: BTreeMap<String, ConditionKey>,
    /// Since when each pod's outcome has been unsettled (its cgroup missing while the pod looked
    /// alive, or its grant unknown), so a pod that just finished (the kubelet removes the cgroup
    /// before the API says so) or an agent that just started gets no Warning.
    unsettled_since: BTreeMap<String, Timestamp>,
    /// The regions annotation value last applied.
    published_regions: Option<String>,
    dmem_event_sent: bool,
    /// Quotas invalid last round, so each is logged once when it turns invalid.
    invalid_quotas: BTreeSet<QuotaRef>,
    gauges: Published,
    /// Backoff of pod condition writes; while it runs, no write goes out (the server is likely down).
    conditions_backoff: Backoff,
    /// Backoff of the node annotation, on its own so its failures never hold back conditions.
    node_backoff: Backoff,
    /// Backoff of events, on its own likewise.
    event_backoff: Backoff,
}

impl Agent {
    /// An agent for `node` over `backend`; inventories go to `inventory`.
    pub fn new(
        node: String,
        backend: Backend,
        round_cfg: RoundConfig,
        metrics: Metrics,
        inventory: watch::Sender<Inventory>,
    ) -> Self {
        metrics
            .dmem_available
            .set(i64::from(backend.unavailable().is_none()));
        let backend = Arc::new(Mutex::new(backend));
        let kernel = Kernel::new(backend, round_cfg, metrics.clone(), inventory);
        Self::over(node, kernel, metrics)
    }

    fn over(node: String, kernel: Kernel, metrics: Metrics) -> Self {
        Self {
            node,
            kernel: Arc::new(kernel),
            metrics,
            written: BTreeMap::new(),
            unsettled_since: BTreeMap::new(),
            published_regions: None,
            dmem_event_sent: false,
            invalid_quotas: BTreeSet::new(),
            gauges: Published::default(),
            conditions_backoff: Backoff::new(CONDITIONS_BACKOFF_INITIAL, CONDITIONS_BACKOFF_MAX),
            node_backoff: Backoff::new(SIDE_BACKOFF_INITIAL, SIDE_BACKOFF_MAX),
            event_backoff: Backoff::new(SIDE_BACKOFF_INITIAL, SIDE_BACKOFF_MAX),
        }
    }

    /// Publishes the regions of every good round on `regions` (the DRA driver's slice follows them).
    pub fn with_regions(self, regions: watch::Sender<crate::dra::Regions>) -> Self {
        self.kernel.publish_regions_on(regions);
        self
    }

    /// A fresh agent over the same kernel, as after a restart of the process: every memory of
    /// earlier rounds is gone, the kernel state is not.
    #[cfg(test)]
    pub(crate) fn restarted(&self) -> Self {
        Self::over(
            self.node.clone(),
            self.kernel.restarted(),
            self.metrics.clone(),
        )
    }

    /// The kernel side, for pods rounds that must not wait for this agent's round
    /// ([`Kernel::settle_pods`]).
    pub fn kernel(&self) -> Arc<Kernel> {
        Arc::clone(&self.kernel)
    }

    /// Forgets what was written, so the next round compares with the cache alone (the periodic
    /// resync heals writes that were lost or undone by someone else).
    pub fn forget_writes(&mut self) {
        self.written.clear();
    }

    /// One round: kernel first, then the API writes it calls for. Returns the kernel report.
    pub async fn round(
        &mut self,
        objects: &Objects,
        grants: Option<&Grants>,
        sink: &dyn ApiSink,
        now: Timestamp,
    ) -> Result<RoundReport, RoundError> {
        self.round_of(objects, grants, sink, now, None).await
    }

    /// [`Agent::round`] for the pods in `uids` alone ([`Scope::Pods`](crate::round::Scope::Pods)):
    /// their limits and their conditions; the node's gauges and the ancestors' protection wait for
    /// the next node round.
    /// For polling the few pods near a threshold often without reading every pod as often.
    pub async fn round_of_pods(
        &mut self,
        objects: &Objects,
        grants: Option<&Grants>,
        sink: &dyn ApiSink,
        now: Timestamp,
        uids: &BTreeSet<String>,
    ) -> Result<RoundReport, RoundError> {
        self.round_of(objects, grants, sink, now, Some(uids)).await
    }

    async fn round_of(
        &mut self,
        objects: &Objects,
        grants: Option<&Grants>,
        sink: &dyn ApiSink,
        now: Timestamp,
        only: Option<&BTreeSet<String>>,
    ) -> Result<RoundReport, RoundError> {
        let inputs = round_inputs_for(objects, grants, only);
        self.note_invalid(&inputs.invalid);
        let report = self.kernel.round(&inputs, only).await?;
        if only.is_none() {
            self.metrics.observe_round(&report, &mut self.gauges);
            // The gauges of a full node take milliseconds of CPU, and so does planning its
            // conditions: a pods round waiting meanwhile (a new pod's cgroup) goes in between.
            tokio::task::yield_now().await;
        }
        self.kernel.publish_inventory(&report);
        // Report (pure decisions, then the client).
        let writes = self.plan_writes(&report, &inputs.pods, now, only.is_some());
        tokio::task::yield_now().await;
        self.perform(writes, sink).await;
        Ok(report)
    }

    /// The API writes a pods round ([`Kernel::settle_pods`]) calls for: its pods' conditions,
    /// as the node round would write them (which then finds them written). So a new pod shows
    /// `VRAMLimitsApplied` without waiting for the node round.
    pub async fn report_pods(
        &mut self,
        pods: &[Arc<Pod>],
        report: &RoundReport,
        sink: &dyn ApiSink,
        now: Timestamp,
    ) {
        let writes = self.plan_writes(report, pods, now, true);
        self.perform(writes, sink).await;
    }

    fn note_invalid(&mut self, invalid: &[InvalidQuota]) {
        let now: BTreeSet<QuotaRef> = invalid.iter().map(|q| q.key.clone()).collect();
        for quota in invalid {
            if !self.invalid_quotas.contains(&quota.key) {
                warn!(quota = %quota.key, error = %quota.error,
                    "Invalid DmemQuota: its last valid spec stays in force, or its pods are left as they are");
            }
        }
        self.metrics
            .invalid_quotas
            .set(i64::try_from(now.len()).unwrap_or(i64::MAX));
        self.invalid_quotas = now;
    }

    /// The writes this round calls for, in order: node annotation and event, then per pod.
    /// `partial`: the report covers some of the node's pods; the others are not gone.
    fn plan_writes(
        &mut self,
        report: &RoundReport,
        pods: &[Arc<Pod>],
        now: Timestamp,
        partial: bool,
    ) -> Vec<ApiWrite> {
        let mut writes = Vec::new();
        if let Some(why) = self.kernel.unavailable().map(str::to_owned) {
            if !self.dmem_event_sent {
                writes.push(ApiWrite::Event {
                    regarding: node_ref(&self.node),
                    warning: true,
                    reason: kube_dmem_crds::REASON_DMEM_UNAVAILABLE.to_owned(),
                    note: why,
                });
            }
        } else {
            let value = format_regions(report.regions.iter().map(|r| (r.region.as_str(), r.bytes)));
            if self.published_regions.as_deref() != Some(value.as_str()) {
                writes.push(ApiWrite::NodeRegions {
                    node: self.node.clone(),
                    value,
                });
            }
        }
        let objects = by_uid(pods);
        let present: BTreeSet<String> = report
            .pods
            .iter()
            .map(|p| pod_key(&p.facts.namespace, &p.facts.name))
            .collect();
        if !partial {
            self.written.retain(|key, _| present.contains(key));
            self.unsettled_since.retain(|key, _| present.contains(key));
        }
        for pod in &report.pods {
            let key = pod_key(&pod.facts.namespace, &pod.facts.name);
            let current = objects
                .get(pod.facts.uid.as_str())
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default();
            // A pod that is starting, done or going away may have no cgroup: not worth a Warning.
            let object = objects.get(pod.facts.uid.as_str());
            // A missing cgroup or an unknown grant usually passes by itself within seconds (a
            // pod starting, an agent that just started): news only once it lasts.
            let unsettled = match &pod.outcome {
                LimitsOutcome::CgroupNotFound
                    if object.is_some_and(|p| cgroup_may_be_absent(p)) =>
                {
                    self.unsettled_since.remove(&key);
                    continue;
                }
                LimitsOutcome::CgroupNotFound | LimitsOutcome::GrantUnknown { .. } => true,
                _ => false,
            };
            if unsettled {
                let since = *self.unsettled_since.entry(key.clone()).or_insert(now);
                if !unsettled_is_news(since, now) {
                    continue;
                }
            } else {
                self.unsettled_since.remove(&key);
            }
            let desired = conditions::desired(pod, current, now);
            if !desired.needs_write() {
                self.written.remove(&key);
                continue;
            }
            if self.written.get(&key) == Some(&desired.key()) {
                // Written already; the watch has not brought it back yet.
                continue;
            }
            // Logged when the condition changes; counted every round (Metrics::observe_round).
            if let LimitsOutcome::ReadFailed { reason, message } = &pod.outcome {
                warn!(pod = %pod.facts.name, namespace = %pod.facts.namespace, reason,
                    error = %message, "Reading the pod's dmem files failed; its limits are left as they are");
            } else if let Some(failure) = &pod.read_failure {
                warn!(pod = %pod.facts.name, namespace = %pod.facts.namespace,
                    error = %failure, "Reading the pod's VRAM usage failed; its pressure is unknown");
            }
            debug!(pod = %pod.facts.name, namespace = %pod.facts.namespace, tier = %pod.tier,
                outcome = pod.outcome.reason(), "Conditions changed");
            writes.push(ApiWrite::PodConditions {
                namespace: pod.facts.namespace.clone(),
                name: pod.facts.name.clone(),
                conditions: desired.conditions(),
            });
            for tr in desired.transitions.iter().filter(|t| t.wants_event()) {
                writes.push(ApiWrite::Event {
                    regarding: pod_ref(&pod.facts.namespace, &pod.facts.name, &pod.facts.uid),
                    warning: tr.warning,
                    reason: tr.reason.clone(),
                    note: tr.message.clone(),
                });
            }
        }
        writes
    }

    /// Performs `writes` in order. A failed condition write stops this round's writes and backs
    /// off all writes (the API server is likely down; decisions are recomputed next time from
    /// fresher state). A failed node annotation or event is counted and backs off only its own
    /// kind, so missing RBAC for one of them can never hold back pod conditions; writes of a kind
    /// in backoff are skipped (the annotation is planned again each round until it goes through;
    /// a pod event skipped meanwhile is dropped, as events are best effort).
    async fn perform(&mut self, writes: Vec<ApiWrite>, sink: &dyn ApiSink) {
        if writes.is_empty() || !self.conditions_backoff.ready(Instant::now()) {
            return;
        }
        for write in writes {
            if !self.backoff_of(&write).ready(Instant::now()) {
                continue;
            }
            match sink.write(&write).await {
                Ok(()) => {
                    Metrics::inc(&self.metrics.api_writes, "kind", write.kind());
                    self.backoff_of(&write).succeeded();
                    self.remember(&write);
                }
                Err(err) if err.is_not_found() => {
                    debug!(
                        error = &err as &dyn std::error::Error,
                        "Object gone, write dropped"
                    );
                }
                Err(err) => {
                    Metrics::inc(&self.metrics.api_errors, "reason", err.reason());
                    let retry_in = self.backoff_of(&write).failed(Instant::now());
                    warn!(
                        error = &err as &dyn std::error::Error,
                        kind = write.kind(),
                        ?retry_in,
                        "API write failed"
                    );
                    if matches!(write, ApiWrite::PodConditions { .. }) {
                        return;
                    }
                }
            }
        }
    }

    fn backoff_of(&mut self, write: &ApiWrite) -> &mut Backoff {
        match write {
            ApiWrite::PodConditions { .. } => &mut self.conditions_backoff,
            ApiWrite::NodeRegions { .. } => &mut self.node_backoff,
            ApiWrite::Event { .. } => &mut self.event_backoff,
        }
    }

    fn remember(&mut self, write: &ApiWrite) {
        match write {
            ApiWrite::PodConditions {
                conditions,
                namespace,
                name,
            } => {
                let key = conditions::key_of(conditions);
                let reasons: Vec<&str> = key.iter().map(|(_, _, r)| r.as_str()).collect();
                info!(namespace = %namespace, pod = %name, reasons = ?reasons, "Pod conditions applied");
                self.written.insert(pod_key(namespace, name), key);
            }
            ApiWrite::NodeRegions { value, .. } => self.published_regions = Some(value.clone()),
            ApiWrite::Event { regarding, .. } if regarding.kind.as_deref() == Some("Node") => {
                self.dmem_event_sent = true;
            }
            ApiWrite::Event { .. } => {}
        }
    }
}

fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}
