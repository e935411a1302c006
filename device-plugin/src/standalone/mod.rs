//! Standalone mode: the node agent's enforcement and pressure rounds without an API server or a GPU.
//!
//! EDGE: pods and quotas come from local YAML (an embedded example by default), the kernel is the
//! in-process simulator, and a live table goes to stdout. The agent side is the production round
//! ([`crate::round::run_round`]) over the same `CgroupFs` interface the DaemonSet uses; only the roles
//! the kubelet, the container runtime and the GPU workload play on a real node are simulated here
//! ([`sim_node`]): creating pod cgroups, and allocating the VRAM each pod's
//! `sim.kube-dmem.io/usage` annotation asks for, after the agent has applied its limits.

pub mod inputs;
pub mod sim_node;
pub mod table;

use std::path::PathBuf;
use std::time::Duration;

use kube_dmem_crds::limits::HighSupport;
use kube_dmem_crds::select::quota_facts;
use kube_dmem_sim::{Profile, SimConfig};

use crate::cgroup::{CgroupError, CgroupPath, SimCgroups};
use crate::decide::pressure::PressureThresholds;
use crate::round::{RoundConfig, RoundReport, run_round};
use inputs::{Inputs, InputsError};
use sim_node::{SimNode, SimNodeError};

/// The example node the README runs: two quotas and five pods on two simulated GPUs.
pub const EMBEDDED_EXAMPLE: &str = include_str!("../../examples/standalone.yaml");

/// The regions of the example node when none are given: an xe card and an amdgpu card, named as
/// their drivers name them (`docs/kernel.md` §4.1).
pub const DEFAULT_REGIONS: [(&str, u64); 2] = [
    ("drm/0000:03:00.0/vram0", 16 << 30),
    ("drm/0000:0a:00.0/vram", 24 << 30),
];

/// What the standalone mode runs.
#[derive(Clone, Debug)]
pub struct StandaloneConfig {
    /// YAML files with DmemQuotas and Pods; empty means the embedded example.
    pub inputs: Vec<PathBuf>,
    /// Simulated regions, `(name, bytes)` in registration order.
    pub regions: Vec<(String, u64)>,
    /// Kernel profile to simulate.
    pub profile: Profile,
    /// Time between rounds.
    pub interval: Duration,
    /// Stop after this many rounds (`None`: until interrupted).
    pub rounds: Option<u64>,
    /// Pressure thresholds.
    pub thresholds: PressureThresholds,
}

/// Why the standalone mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// The inputs could not be read or parsed.
    #[error("reading the pods and quotas")]
    Inputs(#[source] InputsError),
    /// The simulated node could not be set up or driven.
    #[error("driving the simulated node")]
    SimNode(#[source] SimNodeError),
    /// The enforcement round failed on the kernel interface.
    #[error("running an enforcement round")]
    Round(#[source] CgroupError),
}

impl StandaloneError {
    /// PascalCase reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Inputs(e) => e.reason(),
            Self::SimNode(e) => e.reason(),
            Self::Round(e) => e.reason(),
        }
    }
}

/// Runs rounds and prints the table after each; returns the last round's report.
pub async fn run(cfg: StandaloneConfig) -> Result<RoundReport, StandaloneError> {
    let kernel_cfg = SimConfig {
        profile: cfg.profile,
        ..SimConfig::default()
    };
    let mut node = SimNode::new(kernel_cfg, &cfg.regions).map_err(StandaloneError::SimNode)?;
    let fs = SimCgroups::from_shared(node.kernel());
    let round_cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high: HighSupport::Emulated,
        thresholds: cfg.thresholds,
    };
    let mut round = 0u64;
    loop {
        round += 1;
        // Inputs are re-read every round so that editing the files changes the live table.
        let inputs = Inputs::load(&cfg.inputs).map_err(StandaloneError::Inputs)?;
        let report = one_round(&mut node, &fs, &round_cfg, &inputs)?;
        println!("{}", table::render(&report, round));
        if cfg.rounds.is_some_and(|n| round >= n) {
            return Ok(report);
        }
        tokio::select! {
            biased;
            _ = tokio::signal::ctrl_c() => return Ok(report),
            () = tokio::time::sleep(cfg.interval) => {}
        }
    }
}

/// One round as it happens on a node: the kubelet creates the cgroups of new pods, the agent
/// applies limits, the workloads allocate, and the agent reads usage for pressure.
fn one_round(
    node: &mut SimNode,
    fs: &SimCgroups,
    round_cfg: &RoundConfig,
    inputs: &Inputs,
) -> Result<RoundReport, StandaloneError> {
    let (quotas, invalid) = quota_facts(inputs.quotas.iter());
    for (quota, err) in &invalid {
        tracing::warn!(quota = %quota, error = err as &dyn std::error::Error, "Ignoring invalid DmemQuota");
    }
    node.sync_pods(&inputs.pods)
        .map_err(StandaloneError::SimNode)?;
    let facts = inputs.pod_facts();
    let before = run_round(fs, round_cfg, &facts, &quotas).map_err(StandaloneError::Round)?;
    node.run_workloads(&inputs.pods)
        .map_err(StandaloneError::SimNode)?;
    let mut after = run_round(fs, round_cfg, &facts, &quotas).map_err(StandaloneError::Round)?;
    after.writes += before.writes;
    Ok(after)
}

#[cfg(test)]
mod tests;
