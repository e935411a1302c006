//! EDGE: the `PreStartContainer` hook of cluster mode. The kubelet names device IDs only; the hook
//! finds the pod holding them through PodResources ([`holders`]), asks the agent loop for a round
//! and answers only once that pod's `VRAMLimitsApplied` outcome is in force, so a container never
//! starts without its limits. Cgroup or pod not there yet: retried every [`RETRY`] until
//! [`PRE_START_TIMEOUT`], which stays below the kubelet's own deadline for the call.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use tokio::sync::{mpsc, oneshot};

use crate::kubelet::RESOURCE_NAME;
use crate::kubelet::decide::grants::holders;
use crate::kubelet::plugin::{PRE_START_TIMEOUT, PreStart, PreStartError};
use crate::kubelet::podresources::PodResourcesClient;
use crate::round::LimitsOutcome;

/// Pause between attempts while the pod or its cgroup has not appeared.
pub const RETRY: Duration = Duration::from_millis(200);

/// A request to the agent loop: run a round now and tell the outcome of this pod.
#[derive(Debug)]
pub struct RoundRequest {
    /// `(namespace, name)` of the pod.
    pub pod: (String, String),
    /// What the requester knows of the pod (the NRI plugin, from the runtime's sandbox), for the
    /// round to use while the API watch has not delivered the pod yet; never over the watch's.
    pub hint: Option<Arc<Pod>>,
    /// The pod's outcome after the round; `None` when the pod was not in the round.
    pub reply: oneshot::Sender<Option<LimitsOutcome>>,
}

/// The hook: PodResources to find the pod, the agent loop to apply its limits.
pub struct AgentPreStart {
    pod_resources: PodResourcesClient,
    rounds: mpsc::Sender<RoundRequest>,
    /// How long one call retries before it gives up; below the kubelet's own deadline.
    budget: Duration,
}

impl AgentPreStart {
    /// A hook asking the loop behind `rounds`, retrying for up to [`PRE_START_TIMEOUT`].
    pub fn new(pod_resources: PodResourcesClient, rounds: mpsc::Sender<RoundRequest>) -> Self {
        Self {
            pod_resources,
            rounds,
            budget: PRE_START_TIMEOUT,
        }
    }

    /// Retries for up to `budget` instead (tests use a short one; never above the default).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget.min(PRE_START_TIMEOUT);
        self
    }

    async fn attempt(&self, device_ids: &[String]) -> Result<(), PreStartError> {
        let list = self
            .pod_resources
            .list()
            .await
            .map_err(|e| PreStartError::Unavailable {
                what: "PodResources",
                source: Box::new(e),
            })?;
        let candidates = holders(&list, RESOURCE_NAME, device_ids);
        let Some((namespace, name)) = candidates.iter().next() else {
            return Err(PreStartError::PodNotFound {
                device_ids: device_ids.to_vec(),
            });
        };
        let pod = format!("{namespace}/{name}");
        let (reply, answer) = oneshot::channel();
        let request = RoundRequest {
            pod: ((*namespace).to_owned(), (*name).to_owned()),
            hint: None,
            reply,
        };
        let unavailable = |what| PreStartError::Unavailable {
            what,
            source: Box::new(Outcome(format!("the agent loop did not answer for {pod}"))),
        };
        self.rounds
            .send(request)
            .await
            .map_err(|_| unavailable("AgentLoop"))?;
        match answer.await.map_err(|_| unavailable("AgentLoop"))? {
            Some(outcome) if outcome.in_force() => Ok(()),
            None => Err(PreStartError::PodNotFound {
                device_ids: device_ids.to_vec(),
            }),
            Some(outcome) => Err(PreStartError::LimitsNotApplied {
                pod,
                reason: outcome.reason(),
                may_settle: outcome.may_settle(),
                source: Box::new(Outcome(format!("{outcome:?}"))),
            }),
        }
    }
}

/// Whether another attempt may succeed: the pod or its cgroup may still appear, PodResources may
/// come back, and an outcome that [may settle](LimitsOutcome::may_settle) may do so.
fn retryable(err: &PreStartError) -> bool {
    match err {
        PreStartError::PodNotFound { .. } | PreStartError::Unavailable { .. } => true,
        PreStartError::LimitsNotApplied { may_settle, .. } => *may_settle,
        PreStartError::TimedOut(_) => false,
    }
}

/// A pod outcome as an error source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Outcome(String);

#[tonic::async_trait]
impl PreStart for AgentPreStart {
    async fn pre_start(&self, device_ids: Vec<String>) -> Result<(), PreStartError> {
        let deadline = tokio::time::Instant::now() + self.budget.saturating_sub(RETRY);
        loop {
            match self.attempt(&device_ids).await {
                Ok(()) => return Ok(()),
                Err(err) if retryable(&err) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!(
                        reason = err.reason(),
                        "PreStart not satisfied yet, retrying"
                    );
                    tokio::time::sleep(RETRY).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}
