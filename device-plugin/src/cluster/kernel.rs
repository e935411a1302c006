//! EDGE: the agent's hold on the kernel, shared by the loop's node rounds and the pods rounds that
//! must not wait for them. It owns what both kinds of round need (the backend behind its lock,
//! what the rounds wrote, the last valid quota specs, the queue of waiting pods rounds) and what
//! every good round publishes (the regions, the device plugin's inventory). Condition writes and
//! their memory stay with the [`Agent`](super::agent::Agent), which runs one round at a time.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{oneshot, watch};
use tracing::warn;

use super::backend::{Backend, BackendError};
use super::waiting::{SettleJob, Waiting};
use crate::cluster::objects::Objects;
use crate::decide::inputs::{LastValid, RoundInputs, keep_last_valid, round_inputs_for};
use crate::kubelet::decide::grants::Grants;
use crate::kubelet::decide::inventory::Inventory;
use crate::metrics::Metrics;
use crate::round::{Memory, RoundConfig, RoundReport, Scope};

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// The kernel side failed.
    #[error("kernel round failed")]
    Backend(#[from] BackendError),
    /// The blocking task panicked or the kernel lock was poisoned.
    #[error("the kernel round task failed")]
    Task,
}

impl RoundError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Backend(e) => e.reason(),
            Self::Task => "RoundTaskFailed",
        }
    }
}

/// The kernel side of the agent; shared as `Arc<Kernel>`.
pub struct Kernel {
    backend: Arc<Mutex<Backend>>,
    /// Why the kernel offers no dmem, fixed when the backend was probed.
    unavailable: Option<String>,
    cfg: RoundConfig,
    metrics: Metrics,
    /// What the rounds remember of the node: what they wrote, where the pods' cgroups are.
    memory: Arc<Mutex<Memory>>,
    /// Pods rounds waiting for the kernel.
    waiting: Arc<Waiting>,
    /// The last valid spec of every quota, kept in force while its current spec is invalid.
    last_valid: Mutex<LastValid>,
    inventory: watch::Sender<Inventory>,
    /// Regions `(name, bytes)` of the latest good round, for the DRA driver's ResourceSlice.
    regions: OnceLock<watch::Sender<crate::dra::Regions>>,
}

impl Kernel {
    /// The kernel side over `backend`; inventories go to `inventory`.
    pub fn new(
        backend: Arc<Mutex<Backend>>,
        cfg: RoundConfig,
        metrics: Metrics,
        inventory: watch::Sender<Inventory>,
    ) -> Self {
        let unavailable = backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unavailable()
            .map(str::to_owned);
        Self {
            backend,
            unavailable,
            cfg,
            metrics,
            memory: Arc::default(),
            waiting: Arc::default(),
            last_valid: Mutex::default(),
            inventory,
            regions: OnceLock::new(),
        }
    }

    /// Publishes the regions of every good round on `regions` too; a second channel is refused
    /// (one DRA driver per agent).
    pub fn publish_regions_on(&self, regions: watch::Sender<crate::dra::Regions>) {
        if self.regions.set(regions).is_err() {
            warn!("A second regions channel was refused; the first stays");
        }
    }

    /// The same kernel with every memory of earlier rounds gone, as after a restart.
    #[cfg(test)]
    pub(crate) fn restarted(&self) -> Self {
        let (inventory, _) = watch::channel(Inventory::default());
        Self::new(
            Arc::clone(&self.backend),
            self.cfg.clone(),
            self.metrics.clone(),
            inventory,
        )
    }

    /// Why the kernel offers no dmem, if it does not.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Applies `inputs` to the kernel, for every pod or only those in `only` (a poll of the pods
    /// near a threshold). A node round runs the pods rounds that queue meanwhile between its pods.
    pub async fn round(
        &self,
        inputs: &RoundInputs,
        only: Option<&BTreeSet<String>>,
    ) -> Result<RoundReport, RoundError> {
        // The round-duration histogram is the node round's: a pods round is a few pods' worth.
        let timer = only.is_none().then(|| self.metrics.time_round());
        let job = self.job(inputs, only, oneshot::channel().0);
        let scope = if only.is_none() {
            Scope::Node
        } else {
            Scope::Pods
        };
        let backend = Arc::clone(&self.backend);
        let memory = Arc::clone(&self.memory);
        let waiting = Arc::clone(&self.waiting);
        let cfg = self.cfg.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut backend = backend.lock().map_err(|_| RoundError::Task)?;
            let mut memory = memory.lock().map_err(|_| RoundError::Task)?;
            let report = backend.round(&cfg, &job.pods, job.inputs(), &mut memory, scope, &waiting);
            // What queued too late for this round's last pod runs now, not after another wait.
            backend.settle_waiting(&cfg, &mut memory, &waiting);
            report.map_err(RoundError::Backend)
        })
        .await
        .map_err(|_| RoundError::Task)
        .and_then(|r| r);
        drop(timer);
        self.count(result)
    }

    /// A round of the pods in `uids` alone ([`Scope::Pods`]), for pods that must not wait for
    /// the whole node: their limits are written and read back, the regions published;
    /// conditions, gauges and the ancestors' protection wait for the next node round, which must
    /// follow. It does not wait for a node round in progress either: that round runs it between
    /// two of its pods.
    pub async fn settle_pods(
        &self,
        objects: &Objects,
        grants: Option<&Grants>,
        uids: &BTreeSet<String>,
    ) -> Result<RoundReport, RoundError> {
        let inputs = round_inputs_for(objects, grants, Some(uids));
        let (reply, answer) = oneshot::channel();
        self.waiting.push(self.job(&inputs, Some(uids), reply));
        // Runs it unless a node round takes it first; then this finds the queue empty.
        let backend = Arc::clone(&self.backend);
        let memory = Arc::clone(&self.memory);
        let waiting = Arc::clone(&self.waiting);
        let cfg = self.cfg.clone();
        drop(tokio::task::spawn_blocking(move || {
            let poisoned = || BackendError::Poisoned;
            let Ok(mut backend) = backend.lock() else {
                return waiting.fail_all(poisoned);
            };
            let Ok(mut memory) = memory.lock() else {
                return waiting.fail_all(poisoned);
            };
            backend.settle_waiting(&cfg, &mut memory, &waiting);
        }));
        let result = match answer.await {
            Ok(report) => report.map_err(RoundError::Backend),
            Err(_) => Err(RoundError::Task),
        };
        let report = self.count(result)?;
        // The regions are the node's whatever the scope: a restarted agent learns its devices
        // (and so the grants it can join) from its first round of either kind.
        self.publish_inventory(&report);
        Ok(report)
    }

    /// The round for `inputs` (every pod, or those in `only`) as a job, with the quotas' last
    /// valid specs in force where their current ones are invalid.
    fn job(
        &self,
        inputs: &RoundInputs,
        only: Option<&BTreeSet<String>>,
        reply: oneshot::Sender<Result<RoundReport, BackendError>>,
    ) -> SettleJob {
        let mut last_valid = self
            .last_valid
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (quotas, mut invalid) = keep_last_valid(inputs, &mut last_valid);
        invalid.grant_unknown = inputs.grant_unknown.clone();
        let facts = match only {
            None => inputs.facts.clone(),
            Some(uids) => (inputs.facts.iter())
                .filter(|f| uids.contains(&f.uid))
                .cloned()
                .collect(),
        };
        SettleJob {
            pods: inputs.pods.clone(),
            facts,
            quotas,
            invalid,
            reply,
        }
    }

    fn count(&self, result: Result<RoundReport, RoundError>) -> Result<RoundReport, RoundError> {
        match result {
            Ok(report) => {
                Metrics::inc(&self.metrics.rounds, "result", "ok");
                self.metrics.kernel_writes.inc_by(report.writes as u64);
                Ok(report)
            }
            Err(err) => {
                Metrics::inc(&self.metrics.rounds, "result", "error");
                Metrics::inc(&self.metrics.kernel_errors, "reason", err.reason());
                Err(err)
            }
        }
    }

    /// Publishes the node's regions of `report` (the DRA driver's slice, the device plugin's
    /// inventory), each only when it changed.
    pub fn publish_inventory(&self, report: &RoundReport) {
        if let Some(tx) = self.regions.get() {
            let now: Vec<(String, u64)> = (report.regions.iter())
                .map(|r| (r.region.clone(), r.bytes))
                .collect();
            tx.send_if_modified(|last| {
                let changed = last.as_ref() != Some(&now);
                if changed {
                    *last = Some(now.clone());
                }
                changed
            });
        }
        let capacity = report
            .regions
            .iter()
            .map(|r| (r.region.clone(), r.bytes))
            .collect();
        self.inventory
            .send_if_modified(|inv| match inv.observe(&capacity) {
                Ok(next) if next != *inv => {
                    *inv = next;
                    true
                }
                Ok(_) => false,
                Err(err) => {
                    warn!(
                        reason = err.reason(),
                        error = &err as &dyn std::error::Error,
                        "Inventory not updated"
                    );
                    false
                }
            });
    }
}
