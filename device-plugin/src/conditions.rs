//! CORE: a pod's two kube-dmem conditions from its [`PodReport`] and the conditions it carries now.
//!
//! `kube-dmem.io/VRAMPressure` is `True` iff the pod's tier is a pressure tier, with the tier as
//! reason; `kube-dmem.io/VRAMLimitsApplied` is `True` iff the limits are in force, with the
//! outcome's reason. A write is wanted only when a status or a reason differs from what the pod
//! carries: the numbers in the messages change every round and alone never cause a write
//! (`architecture.md` §5, no write without a change). `lastTransitionTime` is kept while the
//! status stays the same, as the API conventions ask.

use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::{POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE};

use crate::cgroup::format::DmemValue;
use crate::node::{LimitsOutcome, PodReport};

/// The pod's two conditions as they should be, and what changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// `kube-dmem.io/VRAMPressure`.
    pub pressure: PodCondition,
    /// `kube-dmem.io/VRAMLimitsApplied`.
    pub limits: PodCondition,
    /// Conditions whose status or reason differs from the pod's current ones (for events).
    pub transitions: Vec<Transition>,
}

impl Desired {
    /// Whether the pod's status must be written.
    pub fn needs_write(&self) -> bool {
        !self.transitions.is_empty()
    }

    /// `(status, reason)` of both conditions: what decides whether a write is needed.
    pub fn key(&self) -> ConditionKey {
        let k = |c: &PodCondition| (c.status.clone(), c.reason.clone().unwrap_or_default());
        (k(&self.pressure), k(&self.limits))
    }
}

/// `((pressure status, reason), (limits status, reason))`.
pub type ConditionKey = ((String, String), (String, String));

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
}

/// The desired conditions for `report`, given the pod's `current` conditions, at `now`.
pub fn desired(report: &PodReport, current: &[PodCondition], now: Timestamp) -> Desired {
    let pressure_on = report.tier.is_pressure();
    let limits_on = report.outcome.in_force();
    let mut transitions = Vec::new();
    let pressure = condition(
        POD_CONDITION_VRAM_PRESSURE,
        pressure_on,
        report.tier.as_str(),
        pressure_message(report),
        current,
        now,
        pressure_on,
        &mut transitions,
    );
    let limits = condition(
        POD_CONDITION_VRAM_LIMITS_APPLIED,
        limits_on,
        report.outcome.reason(),
        limits_message(report),
        current,
        now,
        !limits_on,
        &mut transitions,
    );
    Desired {
        pressure,
        limits,
        transitions,
    }
}

#[allow(clippy::too_many_arguments)]
fn condition(
    type_: &'static str,
    on: bool,
    reason: &str,
    message: String,
    current: &[PodCondition],
    now: Timestamp,
    warning: bool,
    transitions: &mut Vec<Transition>,
) -> PodCondition {
    let status = if on { "True" } else { "False" };
    let previous = current.iter().find(|c| c.type_ == type_);
    let same_status = previous.is_some_and(|p| p.status == status);
    let same_reason = previous.is_some_and(|p| p.reason.as_deref() == Some(reason));
    if !(same_status && same_reason) {
        transitions.push(Transition {
            condition: type_,
            reason: reason.to_owned(),
            message: message.clone(),
            warning,
            had_previous: previous.is_some(),
        });
    }
    let last_transition_time = match previous {
        Some(p) if same_status => p.last_transition_time.clone(),
        _ => None,
    }
    .or(Some(Time(now)));
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time,
        ..PodCondition::default()
    }
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
