//! CORE: a pod's three kube-dmem conditions from its [`PodReport`] and the conditions it carries now.
//!
//! - `kube-dmem.io/VRAMPressure` is `True` iff the pod's tier is a pressure tier, with the tier as
//!   reason;
//! - `kube-dmem.io/VRAMAboveHigh` is `True` iff usage is above `high` in some region. Its
//!   `lastTransitionTime` is when the pod crossed `high`: the operator's eviction grace period
//!   starts there, never at a change of pressure tier for another reason;
//! - `kube-dmem.io/VRAMLimitsApplied` is `True` iff the limits are in force, with the outcome's
//!   reason.
//!
//! When the pod's `dmem.*` files could not be read, the pressure conditions are `Unknown` (reason
//! `KernelReadError`), never `False`: a failed read is not evidence of calm. A write is wanted only
//! when a status or a reason differs from what the pod carries: the numbers in the messages change
//! every round and alone never cause a write (`docs/architecture.md` §5, no write without a change).
//! `lastTransitionTime` moves only when the status changes, as the API conventions ask.

use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::{
    POD_CONDITION_VRAM_ABOVE_HIGH, POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE,
    REASON_ABOVE_HIGH, REASON_KERNEL_READ_ERROR, REASON_WITHIN_HIGH,
};

use crate::cgroup::format::DmemValue;
use crate::decide::foreign::Policy;
use crate::round::{LimitsOutcome, PodReport};

/// The pod's conditions as they should be, and what changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// `kube-dmem.io/VRAMPressure`.
    pub pressure: PodCondition,
    /// `kube-dmem.io/VRAMAboveHigh`.
    pub above_high: PodCondition,
    /// `kube-dmem.io/VRAMLimitsApplied`.
    pub limits: PodCondition,
    /// Conditions whose status or reason differs from the pod's current ones.
    pub transitions: Vec<Transition>,
}

impl Desired {
    /// Whether the pod's status must be written.
    pub fn needs_write(&self) -> bool {
        !self.transitions.is_empty()
    }

    /// The conditions to apply, in a fixed order.
    pub fn conditions(&self) -> Vec<PodCondition> {
        vec![
            self.pressure.clone(),
            self.above_high.clone(),
            self.limits.clone(),
        ]
    }

    /// `(status, reason)` of every condition: what decides whether a write is needed.
    pub fn key(&self) -> ConditionKey {
        key_of(&self.conditions())
    }
}

/// `(type, status, reason)` of each condition, in order.
pub type ConditionKey = Vec<(String, String, String)>;

/// The [`ConditionKey`] of `conditions`.
pub fn key_of(conditions: &[PodCondition]) -> ConditionKey {
    conditions
        .iter()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// One condition that changed status or reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The condition type.
    pub condition: &'static str,
    /// The new reason (the event reason).
    pub reason: String,
    /// The new message (the event note).
    pub message: String,
    /// Whether the new state is a problem (a Warning event) rather than a recovery (Normal).
    pub warning: bool,
    /// Whether the pod carried this condition before (first reports of a healthy pod are quiet).
    pub had_previous: bool,
    /// Whether the change deserves an event of its own. `VRAMAboveHigh` changes do not: the
    /// `VRAMPressure` transition of the same round already tells the story.
    pub announce: bool,
}

impl Transition {
    /// Whether an event is published for this transition.
    pub fn wants_event(&self) -> bool {
        self.announce && (self.had_previous || self.warning)
    }
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`: the agent could not tell.
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }

    fn from_bool(on: bool) -> Self {
        if on { Self::True } else { Self::False }
    }
}

/// The desired conditions for `report`, given the pod's `current` conditions, at `now`.
pub fn desired(report: &PodReport, current: &[PodCondition], now: Timestamp) -> Desired {
    let mut transitions = Vec::new();
    let mut cond = |spec: Spec| condition(spec, current, now, &mut transitions);
    let (pressure, above_high) = match &report.read_failure {
        Some(failure) => {
            let unknown = |type_| Spec {
                type_,
                status: Status::Unknown,
                reason: REASON_KERNEL_READ_ERROR,
                message: failure.clone(),
                warning: true,
                announce: type_ == POD_CONDITION_VRAM_PRESSURE,
            };
            (
                cond(unknown(POD_CONDITION_VRAM_PRESSURE)),
                cond(unknown(POD_CONDITION_VRAM_ABOVE_HIGH)),
            )
        }
        None => {
            let pressure_on = report.tier.is_pressure();
            let above = above_high_message(report);
            (
                cond(Spec {
                    type_: POD_CONDITION_VRAM_PRESSURE,
                    status: Status::from_bool(pressure_on),
                    reason: report.tier.as_str(),
                    message: pressure_message(report),
                    warning: pressure_on,
                    announce: true,
                }),
                cond(Spec {
                    type_: POD_CONDITION_VRAM_ABOVE_HIGH,
                    status: Status::from_bool(above.is_some()),
                    reason: if above.is_some() {
                        REASON_ABOVE_HIGH
                    } else {
                        REASON_WITHIN_HIGH
                    },
                    warning: above.is_some(),
                    message: above.unwrap_or_else(|| "usage is within high in every region".into()),
                    announce: false,
                }),
            )
        }
    };
    let limits_status = report.outcome.status();
    let limits = cond(Spec {
        type_: POD_CONDITION_VRAM_LIMITS_APPLIED,
        status: limits_status,
        reason: report.outcome.reason(),
        message: limits_message(report),
        warning: report.outcome.is_problem(),
        announce: true,
    });
    Desired {
        pressure,
        above_high,
        limits,
        transitions,
    }
}

/// What one condition should say.
struct Spec {
    type_: &'static str,
    status: Status,
    reason: &'static str,
    message: String,
    warning: bool,
    announce: bool,
}

fn condition(
    spec: Spec,
    current: &[PodCondition],
    now: Timestamp,
    transitions: &mut Vec<Transition>,
) -> PodCondition {
    let status = spec.status.as_str();
    let previous = current.iter().find(|c| c.type_ == spec.type_);
    let same_status = previous.is_some_and(|p| p.status == status);
    let same_reason = previous.is_some_and(|p| p.reason.as_deref() == Some(spec.reason));
    if !(same_status && same_reason) {
        transitions.push(Transition {
            condition: spec.type_,
            reason: spec.reason.to_owned(),
            message: spec.message.clone(),
            warning: spec.warning,
            had_previous: previous.is_some(),
            announce: spec.announce,
        });
    }
    let last_transition_time = match previous {
        Some(p) if same_status => p.last_transition_time.clone(),
        _ => None,
    }
    .or(Some(Time(now)));
    PodCondition {
        type_: spec.type_.to_owned(),
        status: status.to_owned(),
        reason: Some(spec.reason.to_owned()),
        message: Some(spec.message),
        last_transition_time,
        ..PodCondition::default()
    }
}

/// The first region above its `high`, with its numbers; `None` when none is.
fn above_high_message(report: &PodReport) -> Option<String> {
    report.regions.iter().find_map(|r| {
        let high = r.reading.high?;
        (r.reading.usage > high).then(|| {
            format!(
                "region {}: usage {} bytes above high {high}",
                r.region, r.reading.usage
            )
        })
    })
}

/// The worst region's numbers: region, usage, high and max.
fn pressure_message(report: &PodReport) -> String {
    let Some(worst) = report.regions.iter().find(|r| r.tier == report.tier) else {
        return "no dmem region on this node".to_owned();
    };
    let reading = &worst.reading;
    let bytes = |v: Option<u64>| v.map_or_else(|| "max".to_owned(), |b| b.to_string());
    format!(
        "{}: region {}: usage {} bytes, high {}, max {}",
        report.tier,
        worst.region,
        reading.usage,
        bytes(reading.high),
        bytes(reading.max),
    )
}

fn limits_message(report: &PodReport) -> String {
    let quota = report
        .governing
        .as_ref()
        .map_or_else(|| "no DmemQuota".to_owned(), |q| format!("DmemQuota {q}"));
    match &report.outcome {
        LimitsOutcome::Applied => format!("limits in force ({quota})"),
        LimitsOutcome::NotGoverned => {
            "no DmemQuota governs this pod and it holds no VRAM units".to_owned()
        }
        LimitsOutcome::CgroupNotFound => {
            "the pod's cgroup was not found under the cgroup root; retrying".to_owned()
        }
        LimitsOutcome::MaxBelowUsage {
            region,
            wanted,
            actual,
        } => format!(
            "region {region}: dmem.max stays {} instead of {} because usage is above it; retrying",
            value(*actual),
            value(*wanted)
        ),
        LimitsOutcome::DmemUnavailable => {
            "the node's kernel has no usable dmem cgroup controller; no limit is enforced"
                .to_owned()
        }
        LimitsOutcome::WriteFailed { message, .. } => message.clone(),
        LimitsOutcome::ReadFailed { message, .. } => {
            format!("{message}; the pod's limits are left as they are")
        }
        LimitsOutcome::Foreign(w) => {
            let what = format!(
                "region {}: {} is {} where the quota says {}",
                w.region,
                w.file.file_name(),
                value(w.theirs),
                value(w.ours)
            );
            match w.policy {
                Policy::Kept => format!("{what}: another writer set a stricter limit; it stays"),
                Policy::Reverted => format!("{what}: another writer changed it; restored"),
                Policy::GaveUp => format!(
                    "{what}: another writer keeps changing it; no longer restored (find the other writer of this cgroup's dmem files)"
                ),
            }
        }
        LimitsOutcome::GrantUnknown { why } => format!(
            "the pod asks for VRAM units but which it holds is unknown: {why}; its limits are left as they are"
        ),
        LimitsOutcome::QuotaInvalid {
            quota,
            error,
            last_valid_in_force: true,
        } => format!("DmemQuota {quota} is invalid ({error}); its last valid spec stays in force"),
        LimitsOutcome::QuotaInvalid {
            quota,
            error,
            last_valid_in_force: false,
        } => format!(
            "DmemQuota {quota} is invalid ({error}) and no valid spec of it is known; the pod's limits are left as they are"
        ),
    }
}

fn value(v: DmemValue) -> String {
    match v.bytes() {
        Some(b) => b.to_string(),
        None => "max".to_owned(),
    }
}

#[cfg(test)]
mod tests;
