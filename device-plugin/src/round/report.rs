//! CORE: what a round found, as plain data: each pod's limits outcome (the `VRAMLimitsApplied`
//! vocabulary), its readings and pressure tier per region, and the node's regions. [`pod_report`]
//! assembles a pod's report from what the observe stage read; nothing here touches the kernel.

use std::collections::BTreeMap;

use kube_dmem_crds::limits::KernelLimits;
use kube_dmem_crds::select::{PodFacts, QuotaRef};
use kube_dmem_crds::{PressureTier, consts};

use crate::cgroup::format::{DmemValue, DmemValues, RegionCapacity};
use crate::decide::conditions::Status;
use crate::decide::foreign::{ForeignWrite, Policy};
use crate::decide::limits::{InForce, PodPlan};
use crate::decide::pressure::{PressureThresholds, RegionReading, pod_tier, region_tier};

/// Whether a pod's limits are in force, and if not, why (the `VRAMLimitsApplied` condition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitsOutcome {
    /// Every value was written and read back as written.
    Applied,
    /// No quota governs the pod and it holds no VRAM units: defaults are in force.
    NotGoverned,
    /// The pod's cgroup does not exist (yet, or any more).
    CgroupNotFound,
    /// The kernel kept an old `dmem.max` because usage is above the new one (6.14–7.2).
    MaxBelowUsage {
        /// The region.
        region: String,
        /// The value written.
        wanted: DmemValue,
        /// The value in force.
        actual: DmemValue,
    },
    /// The node's kernel offers no usable dmem controller; nothing can be enforced here.
    DmemUnavailable,
    /// A write failed.
    WriteFailed {
        /// The error's reason.
        reason: &'static str,
        /// The error, for the condition message.
        message: String,
    },
    /// A `dmem.*` file of the pod's cgroup could not be read or parsed (anything but "not found"):
    /// what is in force is unknown, so nothing was written.
    ReadFailed {
        /// The error's reason.
        reason: &'static str,
        /// The error with file, line and cause, for the condition message.
        message: String,
    },
    /// Another writer changed one of the pod's `dmem.*` values (the first one found).
    Foreign(ForeignWrite),
    /// The pod asks for VRAM units but which it holds is unknown (no PodResources answer since
    /// the agent started, or an entry that cannot be joined): nothing was written.
    GrantUnknown {
        /// Why, for the condition message.
        why: String,
    },
    /// The governing quota's current spec is invalid.
    QuotaInvalid {
        /// The quota.
        quota: QuotaRef,
        /// Why it is invalid.
        error: String,
        /// Whether its last valid spec was applied (`false`: the pod's limits were left alone).
        last_valid_in_force: bool,
    },
}

impl LimitsOutcome {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Applied => consts::REASON_APPLIED,
            Self::NotGoverned => consts::REASON_NOT_GOVERNED,
            Self::CgroupNotFound => consts::REASON_CGROUP_NOT_FOUND,
            Self::MaxBelowUsage { .. } => consts::REASON_MAX_BELOW_USAGE,
            Self::DmemUnavailable => consts::REASON_DMEM_UNAVAILABLE,
            Self::WriteFailed { .. } => consts::REASON_WRITE_FAILED,
            Self::ReadFailed { .. } => consts::REASON_KERNEL_READ_ERROR,
            Self::QuotaInvalid { .. } => consts::REASON_QUOTA_INVALID,
            Self::GrantUnknown { .. } => consts::REASON_GRANT_UNKNOWN,
            Self::Foreign(w) => match w.policy {
                Policy::Kept => consts::REASON_FOREIGN_LIMIT_KEPT,
                Policy::Reverted => consts::REASON_FOREIGN_WRITE_REVERTED,
                Policy::GaveUp => consts::REASON_FOREIGN_WRITER_CONFLICT,
            },
        }
    }

    /// The `VRAMLimitsApplied` status: `Unknown` where the agent cannot tell what is in force.
    pub fn status(&self) -> Status {
        match self {
            Self::Applied
            | Self::NotGoverned
            | Self::QuotaInvalid {
                last_valid_in_force: true,
                ..
            } => Status::True,
            Self::Foreign(w) if w.policy != Policy::GaveUp => Status::True,
            Self::Foreign(_) => Status::False,
            Self::ReadFailed { .. }
            | Self::GrantUnknown { .. }
            | Self::QuotaInvalid {
                last_valid_in_force: false,
                ..
            } => Status::Unknown,
            Self::CgroupNotFound
            | Self::MaxBelowUsage { .. }
            | Self::DmemUnavailable
            | Self::WriteFailed { .. } => Status::False,
        }
    }

    /// Whether the limits the pod should have are in force.
    pub fn in_force(&self) -> bool {
        self.status() == Status::True
    }

    /// Whether the outcome may turn into limits in force by itself, so a hook waiting for them
    /// (PreStartContainer, NRI, DRA prepare) should run another round before it gives up: the
    /// cgroup may still appear, usage may drop below a new `max`, the grant may become known.
    pub fn may_settle(&self) -> bool {
        matches!(
            self,
            Self::CgroupNotFound | Self::MaxBelowUsage { .. } | Self::GrantUnknown { .. }
        )
    }

    /// Whether someone should look at the pod (a Warning rather than a Normal event).
    pub fn is_problem(&self) -> bool {
        !matches!(self, Self::Applied | Self::NotGoverned)
    }
}

/// One pod's region after a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionReport {
    /// The region.
    pub region: String,
    /// What the agent wants in force.
    pub desired: KernelLimits,
    /// The kernel reading used for pressure.
    pub reading: RegionReading,
    /// The region's tier.
    pub tier: PressureTier,
}

/// One pod after a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodReport {
    /// Identity and grant.
    pub facts: PodFacts,
    /// The governing quota.
    pub governing: Option<QuotaRef>,
    /// Whether its limits are in force.
    pub outcome: LimitsOutcome,
    /// Per region, in registration order.
    pub regions: Vec<RegionReport>,
    /// The worst region's tier.
    pub tier: PressureTier,
    /// Why the pod's usage or limits could not be read this round (file, line and cause), when
    /// they could not: its pressure is then unknown, never assumed calm.
    pub read_failure: Option<String>,
}

/// The result of a round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// The node's regions.
    pub regions: Vec<RegionCapacity>,
    /// Every pod, in input order.
    pub pods: Vec<PodReport>,
    /// Writes performed this round (zero in steady state).
    pub writes: usize,
    /// Bytes charged per region on the whole node (the root's `dmem.current`).
    pub region_usage: BTreeMap<String, u64>,
}

/// What the observe stage read of one pod after the act stage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodReadings {
    /// `dmem.current` per region.
    pub usage: DmemValues,
    /// `dmem.peak` per region, where the kernel has the file (7.3+).
    pub peak: Option<DmemValues>,
    /// The limits in force per region.
    pub in_force: BTreeMap<String, InForce>,
    /// The first read that failed (other than "not found"), with file, line and cause.
    pub failure: Option<String>,
}

/// A pod's report from its plan, outcome and readings, against the node's `regions` and their
/// node-wide usage.
pub fn pod_report(
    pod_plan: &PodPlan,
    facts: &PodFacts,
    outcome: LimitsOutcome,
    readings: PodReadings,
    regions: &[RegionCapacity],
    root_usage: &DmemValues,
    thresholds: PressureThresholds,
) -> PodReport {
    let rows: Vec<RegionReport> = regions
        .iter()
        .map(|cap| {
            let region = cap.region.as_str();
            let desired = pod_plan.desired.get(region).copied().unwrap_or_default();
            let now = readings.in_force.get(region).copied().unwrap_or_default();
            let declared = pod_plan.declared.get(region).copied().unwrap_or_default();
            let reading = RegionReading {
                usage: readings
                    .usage
                    .get(region)
                    .and_then(DmemValue::bytes)
                    .unwrap_or(0),
                max: now.max.bytes(),
                high: declared.high,
                low: now.low.bytes().unwrap_or(u64::MAX),
                min: now.min.bytes().unwrap_or(u64::MAX),
                declared_low: declared.low.unwrap_or(0),
                capacity: cap.bytes,
                region_usage: root_usage
                    .get(region)
                    .and_then(DmemValue::bytes)
                    .unwrap_or(0),
                peak: readings.peak.as_ref().and_then(|p| p.get(region)?.bytes()),
            };
            let tier = region_tier(&reading, thresholds);
            RegionReport {
                region: region.to_owned(),
                desired,
                reading,
                tier,
            }
        })
        .collect();
    let tier = pod_tier(rows.iter().map(|r| &r.reading), thresholds);
    PodReport {
        facts: facts.clone(),
        governing: pod_plan.governing.clone(),
        outcome,
        regions: rows,
        tier,
        read_failure: readings.failure,
    }
}
