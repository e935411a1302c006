//! EDGE: the node agent's [`Driver`]: what `NodePrepareResources` and `NodeUnprepareResources` do.
//!
//! Prepare reads the claim from the API server (the kubelet sends only its name and UID), checks it
//! against this node's devices ([`claims::prepare`]), records it in
//! the [`ClaimStore`] (checkpointed), then asks the agent loop for a round and answers only once
//! every pod the claim is reserved for has its limits written and read back, so the containers the
//! kubelet creates next start under them. The kubelet creates the pod cgroup before it prepares
//! claims (`docs/dra.md` §4); a pod or cgroup the agent has not seen yet is retried every [`RETRY`]
//! within [`PREPARE_BUDGET`]. A claim that fails is not recorded, so nothing already in force
//! changes. Unprepare forgets the claim and asks for a round, which takes its share away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceClaim;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use super::decide::cdi;
use super::decide::claims::{self, ClaimRef, Prepared};
use super::decide::slice::SliceContent;
use super::server::{ClaimFailure, Driver, PreparedForKubelet};
use super::store::ClaimStore;
use crate::kubelet::devnodes::DeviceNodes;
use crate::round::LimitsOutcome;

/// Pause between attempts while a pod or its cgroup has not appeared.
pub const RETRY: Duration = Duration::from_millis(100);
/// How long one claim's prepare may wait for its limits; below the kubelet's own deadline for the
/// call (45 s in 1.34 to 1.36), so the kubelet sees our precise error, not its timeout.
pub const PREPARE_BUDGET: Duration = Duration::from_secs(30);
/// How long an API read of a claim may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long unprepare waits for the round that releases the claim; it does not retry, since the
/// pod is usually gone by then.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// A request to the agent loop: run a round now and tell these pods' outcomes (by UID; a pod not
/// in the round is missing from the answer).
#[derive(Debug)]
pub struct ClaimRound {
    /// Pod UIDs.
    pub pods: Vec<String>,
    /// The outcomes after the round.
    pub reply: oneshot::Sender<BTreeMap<String, LimitsOutcome>>,
}

/// Why a claim could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadClaimError {
    /// The claim does not exist.
    #[error("claim {0} not found")]
    NotFound(String),
    /// The API server failed or could not be reached.
    #[error("read claim {claim}")]
    Api {
        /// The claim.
        claim: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Reads claims from the API server (a test double in tests).
#[tonic::async_trait]
pub trait ClaimSource: Send + Sync {
    /// The claim `namespace/name`.
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ReadClaimError>;
}

/// [`ClaimSource`] over the API server.
pub struct KubeClaims(pub kube::Client);

#[tonic::async_trait]
impl ClaimSource for KubeClaims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ReadClaimError> {
        let api: kube::Api<ResourceClaim> = kube::Api::namespaced(self.0.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(claim)) => Ok(claim),
            Ok(None) => Err(ReadClaimError::NotFound(format!("{namespace}/{name}"))),
            Err(source) => Err(ReadClaimError::Api {
                claim: format!("{namespace}/{name}"),
                source: Box::new(source),
            }),
        }
    }
}

/// The agent's driver.
pub struct AgentDriver {
    claims: Arc<dyn ClaimSource>,
    store: Arc<ClaimStore>,
    devices: watch::Receiver<Option<SliceContent>>,
    pool: String,
    rounds: mpsc::Sender<ClaimRound>,
    device_nodes: Arc<dyn DeviceNodes>,
    budget: Duration,
}

fn failure(reason: &'static str, err: &(dyn std::error::Error + 'static)) -> ClaimFailure {
    ClaimFailure {
        reason,
        message: kube_dmem_crds::error_chain(err),
    }
}

impl AgentDriver {
    /// A driver for the pool `pool` (this node), recording claims in `store`, with this node's
    /// devices from `devices` (published after each round) and rounds through `rounds`.
    pub fn new(
        claims: Arc<dyn ClaimSource>,
        store: Arc<ClaimStore>,
        devices: watch::Receiver<Option<SliceContent>>,
        pool: String,
        rounds: mpsc::Sender<ClaimRound>,
        device_nodes: Arc<dyn DeviceNodes>,
    ) -> Self {
        Self {
            claims,
            store,
            devices,
            pool,
            rounds,
            device_nodes,
            budget: PREPARE_BUDGET,
        }
    }

    /// Waits up to `budget` instead (tests use a short one; never above the default).
    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget.min(PREPARE_BUDGET);
        self
    }

    /// The claim checked and recorded, or the record of an earlier prepare of it.
    async fn record(&self, claim: &ClaimRef) -> Result<Prepared, ClaimFailure> {
        if let Some(done) = self.store.get(&claim.uid) {
            return Ok(done);
        }
        let read =
            tokio::time::timeout(READ_TIMEOUT, self.claims.get(&claim.namespace, &claim.name));
        let object = match read.await {
            Err(_) => {
                return Err(ClaimFailure {
                    reason: "ReadClaimTimedOut",
                    message: format!("reading claim {claim} took longer than {READ_TIMEOUT:?}"),
                });
            }
            Ok(Err(err @ ReadClaimError::NotFound(_))) => {
                return Err(failure("ClaimNotFound", &err));
            }
            Ok(Err(err)) => return Err(failure("ReadClaim", &err)),
            Ok(Ok(object)) => object,
        };
        let content = self.devices_now().await?;
        let prepared = claims::prepare(&object, claim, &self.pool, &content.devices)
            .map_err(|e| failure(e.reason(), &e))?;
        self.store
            .insert(prepared.clone())
            .map_err(|e| failure(e.reason(), &e))?;
        Ok(prepared)
    }

    /// This node's devices, waiting for the first round to publish them.
    async fn devices_now(&self) -> Result<SliceContent, ClaimFailure> {
        let mut rx = self.devices.clone();
        let first = tokio::time::timeout(self.budget, rx.wait_for(Option::is_some)).await;
        match first {
            Ok(Ok(content)) => Ok(content.clone().unwrap_or_else(|| SliceContent {
                devices: Vec::new(),
                policy: Default::default(),
            })),
            _ => Err(ClaimFailure {
                reason: "RegionsUnknown",
                message: "no enforcement round has read this node's regions yet".to_owned(),
            }),
        }
    }

    /// One round; the outcomes of `pods`.
    async fn round(
        &self,
        pods: &[String],
    ) -> Result<BTreeMap<String, LimitsOutcome>, ClaimFailure> {
        let gone = || ClaimFailure {
            reason: "AgentLoop",
            message: "the agent loop did not answer".to_owned(),
        };
        let (reply, answer) = oneshot::channel();
        let request = ClaimRound {
            pods: pods.to_vec(),
            reply,
        };
        self.rounds.send(request).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Rounds until every pod of `prepared` has its limits in force, or the budget is spent.
    async fn in_force(&self, prepared: &Prepared) -> Result<(), ClaimFailure> {
        let deadline = tokio::time::Instant::now() + self.budget;
        loop {
            let outcomes = self.round(&prepared.pods).await?;
            let pending = prepared
                .pods
                .iter()
                .find_map(|uid| match outcomes.get(uid) {
                    // A grant governs the pod, so "not governed" means the grant did not reach the round.
                    Some(o) if o.in_force() && *o != LimitsOutcome::NotGoverned => None,
                    other => Some((uid, other.cloned())),
                });
            let Some((uid, outcome)) = pending else {
                return Ok(());
            };
            let retry = outcome.as_ref().is_none_or(LimitsOutcome::may_settle);
            if retry && tokio::time::Instant::now() + RETRY < deadline {
                debug!(claim = %prepared.claim, pod = %uid, "Claim limits not in force yet, retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            return Err(match outcome {
                None => ClaimFailure {
                    reason: "PodNotFound",
                    message: format!(
                        "pod {uid} of claim {} is not among this node's pods",
                        prepared.claim
                    ),
                },
                Some(o) => ClaimFailure {
                    reason: o.reason(),
                    message: format!(
                        "limits of pod {uid} for claim {} are not in force: {o:?}",
                        prepared.claim
                    ),
                },
            });
        }
    }
}

#[tonic::async_trait]
impl Driver for AgentDriver {
    async fn prepare(&self, claim: ClaimRef) -> Result<Vec<PreparedForKubelet>, ClaimFailure> {
        let prepared = self.record(&claim).await?;
        self.in_force(&prepared).await?;
        Ok(prepared
            .devices
            .iter()
            .map(|d| {
                let pci = crate::kubelet::decide::allocate::pci_address(&d.region);
                let nodes = pci
                    .map(|p| self.device_nodes.for_pci(p))
                    .unwrap_or_default();
                PreparedForKubelet {
                    requests: d.requests.clone(),
                    pool: prepared.pool.clone(),
                    device: d.device.clone(),
                    cdi_ids: if nodes.is_empty() {
                        Vec::new()
                    } else {
                        vec![cdi::device_id(&d.device)]
                    },
                    share_id: d.share_id.clone(),
                }
            })
            .collect())
    }

    async fn unprepare(&self, claim: ClaimRef) -> Result<(), ClaimFailure> {
        let removed = self
            .store
            .remove(&claim.uid)
            .map_err(|e| failure(e.reason(), &e))?;
        if let Some(prepared) = removed {
            // Best effort: the round that drops the claim's share runs now; the pod is usually
            // gone, and a later round would do the same.
            let _ = tokio::time::timeout(RELEASE_WAIT, self.round(&prepared.pods)).await;
        }
        Ok(())
    }
}
