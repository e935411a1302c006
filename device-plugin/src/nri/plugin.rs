//! EDGE: the plugin's handlers. Pod sandbox and container creation ask the agent loop for a round
//! for the pod named in the request (the same [`RoundRequest`] the kubelet's PreStart hook sends,
//! with the pod as the sandbox describes it, for a round that runs before the API watch has it)
//! and answer once the pod's limits are in force, or when the answer budget runs out, whichever
//! comes first. The answer is always a success with an empty adjustment: the plugin never fails a
//! pod or container creation, exactly as if it were absent, and never misses the runtime's deadline
//! (a plugin that does is disconnected).
//!
//! Why no `linux.resources.unified` fallback: those values land in the *container's* cgroup, and
//! runc fails the container when a `dmem.*` file is missing there (dmem not enabled in the pod's
//! `cgroup.subtree_control`, or a kernel without dmem). A fallback that can fail pod creation breaks
//! the rule above; the round that follows keeps enforcing on the pod cgroup instead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::conn::{Handler, INVALID_ARGUMENT, RpcStatus, UNIMPLEMENTED};
pub use super::decide::events::Ensured;
use super::decide::events::{
    Next, PodKey, SUBSCRIBED, after_round, answer_budget, event_mask, pod_from_sandbox, pod_key,
};
use super::proto::api;
use crate::cluster::prestart::RoundRequest;

/// Pause between rounds while the pod or its cgroup has not appeared yet.
pub const RETRY: Duration = Duration::from_millis(100);

/// One request the plugin handled, for observers (the real-runtime test's probe, unit tests).
#[derive(Debug, Clone)]
pub struct Seen {
    /// The ttrpc method.
    pub method: String,
    /// The pod it named.
    pub pod: Option<PodKey>,
    /// The container id it named.
    pub container: Option<String>,
    /// What the plugin found for creation requests.
    pub ensured: Option<Ensured>,
    /// When the request arrived (for ordering against the container's start).
    pub at: std::time::SystemTime,
}

/// The NRI plugin's state: the way to the agent loop and the budget the runtime allows.
pub struct NriPlugin {
    rounds: mpsc::Sender<RoundRequest>,
    budget: Mutex<Duration>,
    observer: Option<mpsc::UnboundedSender<Seen>>,
    /// How long each creation event was held, by event and outcome: the latency the plugin adds
    /// to a pod's or container's start.
    held: Option<crate::metrics::NriHeld>,
}

impl NriPlugin {
    /// A plugin asking the loop behind `rounds`.
    pub fn new(rounds: mpsc::Sender<RoundRequest>) -> Self {
        Self {
            rounds,
            budget: Mutex::new(answer_budget(0)),
            observer: None,
            held: None,
        }
    }

    /// Also records how long each creation was held in `held`.
    pub fn with_metrics(mut self, held: crate::metrics::NriHeld) -> Self {
        self.held = Some(held);
        self
    }

    /// Also reports every handled request to `observer`.
    pub fn with_observer(mut self, observer: mpsc::UnboundedSender<Seen>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The current answer budget.
    pub fn budget(&self) -> Duration {
        *self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_budget(&self, budget: Duration) {
        *self
            .budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = budget;
    }

    /// Runs rounds for `pod` until its limits are in force, a final answer, or the budget ends;
    /// `hint` is the pod as the runtime describes it, for rounds that run before the API watch
    /// has the pod.
    pub async fn ensure(&self, pod: &PodKey, hint: Option<Arc<Pod>>) -> Ensured {
        let deadline = Instant::now() + self.budget();
        loop {
            let (reply, answer) = oneshot::channel();
            let request = RoundRequest {
                pod: (pod.namespace.clone(), pod.name.clone()),
                hint: hint.clone(),
                reply,
            };
            let attempt = async {
                self.rounds.send(request).await.ok()?;
                answer.await.ok()
            };
            let outcome = match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Ensured::TimedOut,
                Ok(None) => return Ensured::LoopGone,
                Ok(Some(outcome)) => outcome,
            };
            match after_round(outcome.as_ref()) {
                Next::Answer(ensured) => return ensured,
                Next::Retry(reason) if Instant::now() + RETRY >= deadline => {
                    return Ensured::NotInForce(reason);
                }
                Next::Retry(_) => {}
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn creation(
        &self,
        method: &str,
        pod: Option<&api::PodSandbox>,
        container: Option<&api::Container>,
    ) {
        let key = pod_key(pod);
        let hint = pod.and_then(pod_from_sandbox).map(Arc::new);
        let started = Instant::now();
        let ensured = match &key {
            Some(key) => self.ensure(key, hint).await,
            None => Ensured::NoPod,
        };
        if let Some(held) = &self.held {
            let outcome = if ensured == Ensured::InForce {
                "in_force"
            } else {
                "not_confirmed"
            };
            held.get_or_create(&vec![
                ("event", method.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .observe(started.elapsed().as_secs_f64());
        }
        let container_id = container.map(|c| c.id.clone());
        match (&key, &ensured) {
            (Some(key), Ensured::InForce) => debug!(pod = %key, method, "Limits in force"),
            (Some(key), other) => warn!(
                pod = %key,
                method,
                outcome = ?other,
                "Limits not confirmed before the runtime's deadline; allowing it, the agent keeps enforcing"
            ),
            (None, _) => debug!(method, "No Kubernetes pod in the request"),
        }
        self.observe(method, key, container_id, Some(ensured));
    }

    fn observe(
        &self,
        method: &str,
        pod: Option<PodKey>,
        container: Option<String>,
        ensured: Option<Ensured>,
    ) {
        if let Some(tx) = &self.observer {
            let _ = tx.send(Seen {
                method: method.to_owned(),
                pod,
                container,
                ensured,
                at: std::time::SystemTime::now(),
            });
        }
    }

    /// Asks for one round without waiting for it, so the loop catches up with what the runtime
    /// already runs.
    fn nudge(&self, pod: &PodKey) {
        let (reply, _) = oneshot::channel();
        let _ = self.rounds.try_send(RoundRequest {
            pod: (pod.namespace.clone(), pod.name.clone()),
            hint: None,
            reply,
        });
    }
}

/// Decodes an event's request; a broken one is logged and treated as empty, so it never fails a
/// creation.
fn lenient<M: Message + Default>(method: &str, payload: &[u8]) -> M {
    M::decode(payload).unwrap_or_else(|e| {
        warn!(
            method,
            error = &e as &dyn std::error::Error,
            "Undecodable NRI request, ignored"
        );
        M::default()
    })
}

#[tonic::async_trait]
impl Handler for NriPlugin {
    async fn handle(&self, method: &str, payload: &[u8]) -> Result<Vec<u8>, RpcStatus> {
        let answer = match method {
            "Configure" => {
                let req = api::ConfigureRequest::decode(payload).map_err(|e| RpcStatus {
                    code: INVALID_ARGUMENT,
                    message: format!("undecodable ConfigureRequest: {e}"),
                })?;
                self.set_budget(answer_budget(req.request_timeout));
                info!(
                    runtime = %req.runtime_name,
                    version = %req.runtime_version,
                    nri = %req.nri_version,
                    request_timeout_ms = req.request_timeout,
                    budget = ?self.budget(),
                    "Configured by the NRI runtime"
                );
                self.observe(method, None, None, None);
                api::ConfigureResponse {
                    events: event_mask(&SUBSCRIBED),
                }
                .encode_to_vec()
            }
            "Synchronize" => {
                let req: api::SynchronizeRequest = lenient(method, payload);
                info!(
                    pods = req.pods.len(),
                    containers = req.containers.len(),
                    more = req.more,
                    "NRI synchronize"
                );
                if let Some(key) = req.pods.iter().find_map(|p| pod_key(Some(p))) {
                    self.nudge(&key);
                }
                self.observe(method, None, None, None);
                api::SynchronizeResponse {
                    update: Vec::new(),
                    more: req.more,
                }
                .encode_to_vec()
            }
            "RunPodSandbox" => {
                let req: api::RunPodSandboxRequest = lenient(method, payload);
                self.creation(method, req.pod.as_ref(), None).await;
                api::Empty {}.encode_to_vec()
            }
            "StateChange" => {
                let req: api::StateChangeEvent = lenient(method, payload);
                if req.event == api::Event::RunPodSandbox as i32 {
                    self.creation("RunPodSandbox", req.pod.as_ref(), None).await;
                }
                api::Empty {}.encode_to_vec()
            }
            "CreateContainer" => {
                let req: api::CreateContainerRequest = lenient(method, payload);
                self.creation(method, req.pod.as_ref(), req.container.as_ref())
                    .await;
                api::CreateContainerResponse::default().encode_to_vec()
            }
            "UpdateContainer" => api::UpdateContainerResponse::default().encode_to_vec(),
            "StopContainer" => api::StopContainerResponse::default().encode_to_vec(),
            "Shutdown" => {
                info!("The NRI runtime is shutting down the plugin connection");
                api::Empty {}.encode_to_vec()
            }
            other => {
                return Err(RpcStatus {
                    code: UNIMPLEMENTED,
                    message: format!("method {other} is not implemented by kube-dmem"),
                });
            }
        };
        Ok(answer)
    }
}

#[cfg(test)]
mod tests;
