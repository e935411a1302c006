//! EDGE: carries out a [`Plan`]: status with server-side apply (field manager
//! `kube-dmem-operator`, forced: the status is ours alone), evictions through the Eviction API
//! (so PodDisruptionBudgets hold; HTTP 429 becomes a refusal to retry, 404 and a UID mismatch mean
//! the pod is gone), and Events through the kube-runtime `Recorder`. Translates API results into
//! outcome values; decides nothing. Every write is skipped once `leading` turns false.

mod error;
mod events;
mod evict;

use std::future::Future;
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource};
use kube_dmem_crds::{DmemQuota, OPERATOR_FIELD_MANAGER, REASON_EVICTION_BLOCKED};
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, error, warn};

pub use error::ActError;

use crate::decide::remediation::{Eviction, EvictionOutcome};
use crate::decide::{Plan, StatusPatch};
use crate::metrics::Metrics;

/// Bound on one API call, so a hung connection cannot stall the pass (and keep writing after
/// leadership moved on).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Status patches in flight at once: fast catch-up after a failover without flooding the API.
const PATCH_CONCURRENCY: usize = 16;

/// What the API did with a plan.
#[derive(Debug, Default)]
pub struct Report {
    /// Status patches applied.
    pub patched: usize,
    /// Status patches that failed (retried on the next pass, which the driver schedules soon).
    pub failed: usize,
    /// Each attempted eviction and its outcome.
    pub evictions: Vec<(Eviction, EvictionOutcome)>,
    /// Leadership was lost mid-plan; the rest was skipped.
    pub interrupted: bool,
}

/// The API writer.
pub struct Actor {
    client: Client,
    /// Same cluster, without kube's default retry layer: that layer retries HTTP 429 up to 15
    /// times with growing delays, which would turn a PodDisruptionBudget refusal into a stalled
    /// pass instead of an answer.
    eviction_client: Client,
    recorder: Recorder,
    metrics: Metrics,
}

impl Actor {
    /// An actor publishing events as `kube-dmem-operator`, instance `identity`; `config` is the
    /// one `client` was built from.
    ///
    /// # Errors
    /// The client error when the eviction client cannot be built from `config`.
    pub fn new(
        client: Client,
        config: kube::Config,
        identity: String,
        metrics: Metrics,
    ) -> Result<Self, kube::Error> {
        let mut config = config;
        config.default_retry = false;
        let eviction_client = Client::try_from(config)?;
        let reporter = Reporter {
            controller: OPERATOR_FIELD_MANAGER.to_owned(),
            instance: Some(identity),
        };
        Ok(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            eviction_client,
            metrics,
        })
    }

    /// Applies the plan's status patches, then its evictions in order, while `leading` is true.
    pub async fn apply_plan(&self, plan: &Plan, leading: &watch::Receiver<bool>) -> Report {
        let mut report = Report::default();
        // Futures built up front (they do nothing until polled): a closure passed to `map` here
        // would make the whole pass future not `Send` (higher-ranked lifetime inference).
        let patches: Vec<_> = plan
            .status_patches
            .iter()
            .map(|p| self.patch_if_leading(p, leading))
            .collect();
        let results: Vec<Option<bool>> = stream::iter(patches)
            .buffer_unordered(PATCH_CONCURRENCY)
            .collect()
            .await;
        for result in results {
            match result {
                Some(true) => report.patched += 1,
                Some(false) => report.failed += 1,
                None => report.interrupted = true,
            }
        }
        self.metrics.status_patches.inc_by(report.patched as u64);
        for eviction in &plan.evictions {
            if !*leading.borrow() {
                report.interrupted = true;
                break;
            }
            let outcome = self.evict(eviction).await;
            let label = match &outcome {
                EvictionOutcome::Evicted => "evicted",
                EvictionOutcome::Gone => "gone",
                EvictionOutcome::Refused { reason, .. } if *reason == REASON_EVICTION_BLOCKED => {
                    "blocked"
                }
                EvictionOutcome::Refused { .. } => "failed",
            };
            self.metrics
                .evictions
                .get_or_create(&vec![("outcome", label)])
                .inc();
            report.evictions.push((eviction.clone(), outcome));
        }
        report
    }

    /// `None` when no longer leading, else whether the patch succeeded.
    async fn patch_if_leading(
        &self,
        patch: &StatusPatch,
        leading: &watch::Receiver<bool>,
    ) -> Option<bool> {
        if !*leading.borrow() {
            return None;
        }
        Some(self.record(self.patch_status(patch).await).is_some())
    }

    async fn patch_status(&self, patch: &StatusPatch) -> Result<(), ActError> {
        let quota = patch.quota.to_string();
        let api: Api<DmemQuota> = Api::namespaced(self.client.clone(), &patch.quota.namespace);
        let body = json!({
            "apiVersion": DmemQuota::api_version(&()),
            "kind": DmemQuota::kind(&()),
            "metadata": {"name": patch.quota.name, "namespace": patch.quota.namespace},
            "status": patch.status,
        });
        let params = PatchParams::apply(OPERATOR_FIELD_MANAGER).force();
        let apply = Patch::Apply(&body);
        let call = api.patch_status(&patch.quota.name, &params, &apply);
        timed("PatchStatus", &quota, call)
            .await?
            .map_err(|source| ActError::PatchStatus {
                quota: quota.clone(),
                source,
            })?;
        debug!(quota = %quota, matched = patch.status.matched_pods, "Applied quota status");
        Ok(())
    }

    /// Logs and counts a failure; `error` when a human must act, `warn` when a retry may help.
    fn record<T>(&self, result: Result<T, ActError>) -> Option<T> {
        result
            .map_err(|err| {
                self.metrics.error(err.reason());
                let e = &err as &dyn std::error::Error;
                if err.is_permanent() {
                    error!(reason = err.reason(), error = e, "API action failed");
                } else {
                    warn!(
                        reason = err.reason(),
                        error = e,
                        "API action failed, will retry"
                    );
                }
            })
            .ok()
    }
}

async fn timed<T>(
    action: &'static str,
    object: &str,
    call: impl Future<Output = T>,
) -> Result<T, ActError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| ActError::TimedOut {
            action,
            object: object.to_owned(),
        })
}
