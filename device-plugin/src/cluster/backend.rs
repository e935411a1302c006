//! EDGE: the kernel side of cluster mode: the real cgroupfs (probed first), or the in-process
//! simulator with a simulated kubelet and workloads ([`SimNode`]), or nothing when the kernel
//! offers no dmem. Sync on purpose (the `CgroupFs` trait is sync); the loop calls it from
//! `spawn_blocking`.

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube_dmem_crds::limits::HighSupport;
use kube_dmem_sim::{Profile, SimConfig};

use super::waiting::{Between, Waiting};
use crate::cgroup::probe::{KernelProfile, decide, probe};
use crate::cgroup::{CgroupError, CgroupPath, SimCgroups, SysfsCgroups};
use crate::round::{
    LimitsOutcome, Memory, PodReport, RoundConfig, RoundInputs, RoundReport, Scope,
    run_node_round_giving_way, run_scoped_round,
};
use crate::standalone::sim_node::{SimNode, SimNodeError};

/// Why a round could not run.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The kernel interface failed (a read at the root, a scan).
    #[error("enforcement round failed on the cgroup interface")]
    Round(#[source] CgroupError),
    /// The simulated node failed.
    #[error("the simulated node failed")]
    SimNode(#[source] SimNodeError),
    /// A round panicked while it held the kernel; no round can run on this backend any more.
    #[error("a round panicked while holding the kernel")]
    Poisoned,
}

impl BackendError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Round(e) => e.reason(),
            Self::SimNode(e) => e.reason(),
            Self::Poisoned => "KernelLockPoisoned",
        }
    }
}

/// Where limits go.
pub enum Backend {
    /// The node's cgroupfs under a root path.
    Sysfs(SysfsCgroups),
    /// The in-process simulator, with the kubelet's and workloads' parts simulated.
    Sim {
        /// Kubelet, runtime and workloads.
        node: Box<SimNode>,
        /// The agent's view of the same kernel.
        fs: SimCgroups,
    },
    /// The kernel has no usable dmem; every pod is reported `DmemUnavailable`.
    Unavailable {
        /// What the probe found, for the node event.
        why: String,
    },
}

impl Backend {
    /// The simulator with `regions` registered.
    pub fn sim(
        profile: Profile,
        regions: &[(String, u64)],
    ) -> Result<(Self, HighSupport), SimNodeError> {
        let config = SimConfig {
            profile,
            ..SimConfig::default()
        };
        let node = SimNode::new(config, regions)?;
        let fs = SimCgroups::from_shared(node.kernel());
        Ok((
            Backend::Sim {
                node: Box::new(node),
                fs,
            },
            HighSupport::Emulated,
        ))
    }

    /// The cgroupfs under `root`, probed: native `dmem.high` when the kernel has it, unavailable
    /// when the root offers no dmem controller or no region.
    pub fn sysfs(root: PathBuf) -> (Self, HighSupport) {
        let fs = SysfsCgroups::with_root(root.clone());
        let observation = match probe(&fs, &CgroupPath::root()) {
            Ok(obs) => obs,
            Err(err) => {
                let why = format!(
                    "probing {}: {}",
                    root.display(),
                    crate::round::error_chain(&err)
                );
                return (Backend::Unavailable { why }, HighSupport::Emulated);
            }
        };
        let caps = decide(&observation);
        if caps.profile == KernelProfile::Unavailable {
            let why = format!(
                "the cgroup root {} does not offer the dmem controller (cgroup.controllers: {})",
                root.display(),
                observation.root_controllers.join(" ")
            );
            return (Backend::Unavailable { why }, HighSupport::Emulated);
        }
        let high = if caps.native_high {
            HighSupport::Native
        } else {
            HighSupport::Emulated
        };
        tracing::info!(root = %root.display(), profile = ?caps.profile, native_high = caps.native_high,
            regions = observation.regions.len(), "Probed the cgroup root");
        (Backend::Sysfs(fs), high)
    }

    /// The reason dmem is unavailable, if it is.
    pub fn unavailable(&self) -> Option<&str> {
        match self {
            Backend::Unavailable { why } => Some(why),
            _ => None,
        }
    }

    /// The kernel interface, for the new-cgroup watch (sysfs only).
    pub fn sysfs_root(&self) -> Option<SysfsCgroups> {
        match self {
            Backend::Sysfs(fs) => Some(fs.clone()),
            _ => None,
        }
    }

    /// Runs the pods rounds in `waiting`, each answered on its job's channel.
    pub fn settle_waiting(&mut self, cfg: &RoundConfig, memory: &mut Memory, waiting: &Waiting) {
        for job in waiting.take() {
            let report = self.round(cfg, &job.pods, job.inputs(), memory, Scope::Pods, waiting);
            let _ = job.reply.send(report);
        }
    }

    /// One round over `scope`: with the simulator, the kubelet first creates the cgroups of new
    /// pods (and removes those of pods that are gone), then the agent applies limits, then (in a
    /// node round) the workloads allocate and a second round reads what they did. `pods` are all
    /// the node's pods; the inputs' pods those the round covers. A node round on the cgroupfs runs
    /// the pods rounds queued in `waiting` between its pods; the simulator's cannot (its kubelet
    /// makes the cgroups inside rounds), so they wait for it there.
    pub fn round(
        &mut self,
        cfg: &RoundConfig,
        pods: &[Arc<Pod>],
        inputs: RoundInputs<'_>,
        memory: &mut Memory,
        scope: Scope,
        waiting: &Waiting,
    ) -> Result<RoundReport, BackendError> {
        match self {
            Backend::Sysfs(fs) if scope == Scope::Node => {
                let mut between = Between { waiting, cfg };
                run_node_round_giving_way(fs, cfg, inputs, memory, &mut between)
                    .map_err(BackendError::Round)
            }
            Backend::Sysfs(fs) => {
                run_scoped_round(fs, cfg, inputs, memory, scope).map_err(BackendError::Round)
            }
            Backend::Sim { node, fs } => {
                let pods: Vec<Pod> = pods.iter().map(|p| p.as_ref().clone()).collect();
                node.sync_pods(&pods).map_err(BackendError::SimNode)?;
                let before = run_scoped_round(fs, cfg, inputs, memory, scope)
                    .map_err(BackendError::Round)?;
                if scope == Scope::Pods {
                    return Ok(before);
                }
                node.run_workloads(&pods).map_err(BackendError::SimNode)?;
                let mut after = run_scoped_round(fs, cfg, inputs, memory, scope)
                    .map_err(BackendError::Round)?;
                after.writes += before.writes;
                Ok(after)
            }
            Backend::Unavailable { .. } => Ok(RoundReport {
                pods: (inputs.pods.iter())
                    .map(|f| PodReport {
                        facts: f.clone(),
                        governing: None,
                        outcome: LimitsOutcome::DmemUnavailable,
                        regions: Vec::new(),
                        tier: kube_dmem_crds::PressureTier::Idle,
                        read_failure: None,
                    })
                    .collect(),
                ..RoundReport::default()
            }),
        }
    }
}
