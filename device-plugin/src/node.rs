//! The driver for this node: one enforcement round, observe → decide → act → report.
//!
//! EDGE driver: the observe and act stages read and write the kernel through a `&dyn CgroupFs`
//! (the real cgroupfs or the simulator, unchanged); the decide and report stages are the CORE
//! functions of [`crate::enforce`] and [`crate::pressure`]. The same round serves the DaemonSet and
//! the standalone mode, so what a demo shows is what a node does.

use std::collections::BTreeMap;

use kube_dmem_crds::limits::{HighSupport, KernelLimits};
use kube_dmem_crds::select::{PodFacts, QuotaFacts, QuotaRef};
use kube_dmem_crds::{PressureTier, consts};

use crate::cgroup::dmem::{Applied, apply_limit, capacity, read_values};
use crate::cgroup::format::{DmemValue, DmemValues, RegionCapacity};
use crate::cgroup::path::{ScanLimits, scan_pods};
use crate::cgroup::{CgroupError, CgroupFile, CgroupFs, CgroupPath};
use crate::conditions::Status;
use crate::enforce::{InForce, ObservedPod, PodPlan, plan};
use crate::pressure::{PressureThresholds, RegionReading, pod_tier, region_tier};

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
            Self::ReadFailed { .. }
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

/// Settings of a round that do not change between rounds.
#[derive(Clone, Debug)]
pub struct RoundConfig {
    /// Where pod cgroups are searched (normally the hierarchy root).
    pub scan_root: CgroupPath,
    /// Whether the kernel has a native `dmem.high` (found by probing).
    pub high: HighSupport,
    /// Pressure thresholds.
    pub thresholds: PressureThresholds,
}

/// Quotas whose current spec is invalid, as a round must treat them. Bad input never loosens a
/// limit already applied: a quota keeps its last valid spec in force, and where no valid spec of it
/// is known, the pods it may govern are left as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvalidQuotas {
    /// Quotas in force with their last valid spec (which the caller passes among the round's
    /// quotas), with the error of the current spec.
    pub stale: BTreeMap<QuotaRef, String>,
    /// Pods, by UID, that an invalid quota with no known valid spec may govern, with that quota
    /// and its error: nothing is written to them.
    pub held: BTreeMap<String, (QuotaRef, String)>,
}

/// Runs one round for `pods` under `quotas`: applies what differs, then reads usage for pressure.
pub fn run_round(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    pods: &[PodFacts],
    quotas: &[QuotaFacts],
) -> Result<RoundReport, CgroupError> {
    run_round_with(fs, cfg, pods, quotas, &InvalidQuotas::default())
}

/// [`run_round`], with quotas whose current spec is invalid.
pub fn run_round_with(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    pods: &[PodFacts],
    quotas: &[QuotaFacts],
    invalid: &InvalidQuotas,
) -> Result<RoundReport, CgroupError> {
    // Observe (kernel reads).
    let regions = capacity(fs)?;
    let names: Vec<&str> = regions.iter().map(|r| r.region.as_str()).collect();
    let found: BTreeMap<String, CgroupPath> = scan_pods(fs, &cfg.scan_root, ScanLimits::default())?
        .pods
        .into_iter()
        .collect();
    let (observed, read_failures): (Vec<ObservedPod>, Vec<Option<CgroupError>>) = pods
        .iter()
        .map(|facts| observe_pod(fs, facts, found.get(&facts.uid), cfg.high))
        .unzip();
    // Decide (pure).
    let decided = plan(&observed, quotas, &names, cfg.high);
    // Act (kernel writes, each read back) and report (pure, from fresh readings).
    let root_usage = read_values(fs, &CgroupPath::root(), CgroupFile::DmemCurrent)?;
    let mut report = RoundReport {
        region_usage: root_usage
            .iter()
            .filter_map(|line| Some((line.region.clone(), line.value.bytes()?)))
            .collect(),
        regions,
        ..RoundReport::default()
    };
    for ((pod, pod_plan), failure) in observed.iter().zip(&decided.pods).zip(&read_failures) {
        // What is in force could not be read, or an invalid quota may govern the pod: write
        // nothing, so nothing applied is loosened.
        let outcome = if let Some(err) = failure {
            LimitsOutcome::ReadFailed {
                reason: err.reason(),
                message: error_chain(err),
            }
        } else if let Some((quota, error)) = invalid.held.get(&pod.facts.uid) {
            LimitsOutcome::QuotaInvalid {
                quota: quota.clone(),
                error: error.clone(),
                last_valid_in_force: false,
            }
        } else {
            report.writes += pod_plan.writes.len();
            let applied = apply(fs, pod, pod_plan);
            match pod_plan
                .governing
                .as_ref()
                .map(|q| (q, invalid.stale.get(q)))
            {
                Some((quota, Some(error))) if applied.in_force() => LimitsOutcome::QuotaInvalid {
                    quota: quota.clone(),
                    error: error.clone(),
                    last_valid_in_force: true,
                },
                _ => applied,
            }
        };
        let acted = matches!(
            outcome,
            LimitsOutcome::ReadFailed { .. }
                | LimitsOutcome::QuotaInvalid {
                    last_valid_in_force: false,
                    ..
                }
        );
        let empty = PodPlan {
            writes: Vec::new(),
            ..pod_plan.clone()
        };
        let pod_report = report_pod(
            fs,
            cfg,
            pod,
            if acted { &empty } else { pod_plan },
            outcome,
            &report.regions,
            &root_usage,
        );
        report.pods.push(pod_report);
    }
    if read_failures.iter().any(Option::is_some) {
        // The sums below would count an unreadable pod as using and protecting nothing, which
        // lowers its ancestors' protection: leave them as they are until the pod reads again.
        return Ok(report);
    }
    // Ancestors' protection last: it sums the pods' lows as just written, with the usage the
    // report just read (no second read of each pod's dmem.current).
    let pod_lows: BTreeMap<CgroupPath, crate::protect::ChildReading> = observed
        .iter()
        .zip(&decided.pods)
        .zip(&report.pods)
        .filter_map(|((pod, pod_plan), pod_report)| {
            let low = pod_plan
                .desired
                .iter()
                .map(|(r, k)| (r.clone(), k.low.unwrap_or(0)))
                .collect();
            let usage = pod_report
                .regions
                .iter()
                .map(|r| (r.region.clone(), r.reading.usage))
                .collect();
            let reading = crate::protect::ChildReading { usage, low };
            pod.cgroup.clone().map(|cgroup| (cgroup, reading))
        })
        .collect();
    let names: Vec<String> = report.regions.iter().map(|r| r.region.clone()).collect();
    match crate::protect::protect_ancestors(fs, &pod_lows, &names) {
        Ok(writes) => report.writes += writes,
        // The pods' own limits are in force; a failed ancestor write only weakens protection
        // until the next round retries it.
        Err(err) => tracing::warn!(
            error = &err as &dyn std::error::Error,
            "Protecting pod ancestors failed"
        ),
    }
    Ok(report)
}

/// The pod with the values in force in its cgroup, and the error when they could not be read. Only
/// "not found" means absent (a cgroup that vanished between scan and read; the act stage then
/// reports it as not found); any other failure (a parse error, EACCES, EIO) is returned.
fn observe_pod(
    fs: &dyn CgroupFs,
    facts: &PodFacts,
    cgroup: Option<&CgroupPath>,
    high: HighSupport,
) -> (ObservedPod, Option<CgroupError>) {
    let (in_force, failure) = match cgroup.map(|group| read_in_force(fs, group, high)) {
        None => (BTreeMap::new(), None),
        Some(Ok(in_force)) => (in_force, None),
        Some(Err(err)) if err.is_not_found() => (BTreeMap::new(), None),
        Some(Err(err)) => (BTreeMap::new(), Some(err)),
    };
    let pod = ObservedPod {
        facts: facts.clone(),
        cgroup: cgroup.cloned(),
        in_force,
    };
    (pod, failure)
}

/// The values in force per region.
fn read_in_force(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    high: HighSupport,
) -> Result<BTreeMap<String, InForce>, CgroupError> {
    let max = read_values(fs, group, CgroupFile::DmemMax)?;
    let low = read_values(fs, group, CgroupFile::DmemLow)?;
    let min = read_values(fs, group, CgroupFile::DmemMin)?;
    let native = match high {
        HighSupport::Native => Some(read_values(fs, group, CgroupFile::DmemHigh)?),
        HighSupport::Emulated => None,
    };
    let value = |v: &DmemValues, region: &str, default: DmemValue| v.get(region).unwrap_or(default);
    Ok(max
        .iter()
        .map(|line| {
            let r = line.region.as_str();
            let in_force = InForce {
                max: line.value,
                low: value(&low, r, DmemValue::Bytes(0)),
                min: value(&min, r, DmemValue::Bytes(0)),
                high: native.as_ref().map(|h| value(h, r, DmemValue::Max)),
            };
            (line.region.clone(), in_force)
        })
        .collect())
}

fn apply(fs: &dyn CgroupFs, pod: &ObservedPod, pod_plan: &PodPlan) -> LimitsOutcome {
    if pod.cgroup.is_none() {
        return LimitsOutcome::CgroupNotFound;
    }
    // Every write is attempted even after one fails: a region that can be limited should be.
    let mut outcome = None;
    for w in &pod_plan.writes {
        let result = apply_limit(fs, &w.cgroup, w.file, &w.region, w.value);
        let failed = match result {
            Ok(Applied::Confirmed(_)) => None,
            Ok(Applied::NotApplied { wanted, actual }) => Some(LimitsOutcome::MaxBelowUsage {
                region: w.region.clone(),
                wanted,
                actual,
            }),
            Err(e) if e.is_not_found() => Some(LimitsOutcome::CgroupNotFound),
            Err(e) => Some(LimitsOutcome::WriteFailed {
                reason: e.reason(),
                message: error_chain(&e),
            }),
        };
        outcome = outcome.or(failed);
    }
    outcome.unwrap_or(
        if pod_plan.governing.is_some() || !pod.facts.grants.is_empty() {
            LimitsOutcome::Applied
        } else {
            LimitsOutcome::NotGoverned
        },
    )
}

fn report_pod(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    pod: &ObservedPod,
    pod_plan: &PodPlan,
    outcome: LimitsOutcome,
    regions: &[RegionCapacity],
    root_usage: &DmemValues,
) -> PodReport {
    let mut read_failure = match &outcome {
        LimitsOutcome::ReadFailed { message, .. } => Some(message.clone()),
        _ => None,
    };
    let usage: DmemValues = match &pod.cgroup {
        Some(g) => absent_or_note(
            read_values(fs, g, CgroupFile::DmemCurrent),
            &mut read_failure,
        ),
        None => DmemValues::default(),
    };
    // `dmem.peak` exists on 7.3+ only: absent is normal on older kernels.
    let peak: Option<DmemValues> = match &pod.cgroup {
        Some(g) if fs.exists(g, CgroupFile::DmemPeak) => Some(absent_or_note(
            read_values(fs, g, CgroupFile::DmemPeak),
            &mut read_failure,
        )),
        _ => None,
    };
    // Without writes the values observed at the start of the round are still the ones in force;
    // after writes, read them back so the report shows what the kernel kept, not what was asked.
    let in_force = match &pod.cgroup {
        Some(g) if !pod_plan.writes.is_empty() => {
            absent_or_note(read_in_force(fs, g, cfg.high), &mut read_failure)
        }
        _ => pod.in_force.clone(),
    };
    let rows: Vec<RegionReport> = regions
        .iter()
        .map(|cap| {
            let region = cap.region.as_str();
            let desired = pod_plan.desired.get(region).copied().unwrap_or_default();
            let now = in_force.get(region).copied().unwrap_or_default();
            let declared = pod_plan.declared.get(region).copied().unwrap_or_default();
            let reading = RegionReading {
                usage: usage.get(region).and_then(DmemValue::bytes).unwrap_or(0),
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
                peak: peak.as_ref().and_then(|p| p.get(region)?.bytes()),
            };
            let tier = region_tier(&reading, cfg.thresholds);
            RegionReport {
                region: region.to_owned(),
                desired,
                reading,
                tier,
            }
        })
        .collect();
    let tier = pod_tier(rows.iter().map(|r| &r.reading), cfg.thresholds);
    PodReport {
        facts: pod.facts.clone(),
        governing: pod_plan.governing.clone(),
        outcome,
        regions: rows,
        tier,
        read_failure,
    }
}

/// The value read, or the default when the file is absent. Only "not found" reads as absent (the
/// cgroup went away); any other failure is noted in `failure` (the first one wins), so the pod's
/// pressure reads unknown instead of zero usage.
fn absent_or_note<T: Default>(result: Result<T, CgroupError>, failure: &mut Option<String>) -> T {
    match result {
        Ok(values) => values,
        Err(err) if err.is_not_found() => T::default(),
        Err(err) => {
            failure.get_or_insert_with(|| error_chain(&err));
            T::default()
        }
    }
}

/// The error and its causes on one line, for condition messages and events.
pub use kube_dmem_crds::error_chain;

#[cfg(test)]
mod tests;
