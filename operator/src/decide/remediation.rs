//! CORE: the eviction rule for `spec.pressure.action: Evict`, the order and rate limits of
//! evictions, and the memory they need across passes ([`RemediationState`], a plain value).
//!
//! Rule: a pod governed by a valid quota with action `Evict` becomes a candidate once its
//! `kube-dmem.io/VRAMAboveHigh` condition has been `True` for at least the quota's `gracePeriod`,
//! measured from that condition's `lastTransitionTime`: the moment the pod crossed `high`. The
//! `VRAMPressure` condition cannot serve as the clock: it stays `True` across tiers (`Contended`,
//! `AtMax`, `AboveHigh`), so its transition time can predate the crossing by hours. Pods already being
//! deleted, finished pods and pods without a transition time are never candidates; action `None`
//! never evicts. Candidates are taken longest-above-high first (then namespace, name) while both
//! the quota's `maxEvictionsPerMinute` and the cluster-wide limit allow, each a sliding
//! 60-second window over *successful* evictions: a refused eviction evicted nothing and spends no
//! budget. A refused pod is retried after [`BLOCKED_RETRY_AFTER`] and stays out of the way of
//! other candidates meanwhile. The clock is the `now` argument; nothing here reads time.

mod state;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::PressureAction;
use kube_dmem_crds::select::{QuotaFacts, QuotaRef};

pub use state::{Blocked, RemediationState, Selection};

use crate::decide::observed::ObservedPod;

/// Length of the rate-limit window: limits are "per minute".
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a refused pod waits before it is tried again. PodDisruptionBudget allowances change
/// when replacement pods become ready, typically tens of seconds; retrying sooner only adds API
/// calls, later delays remediation.
pub const BLOCKED_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A pod, by namespace, name and UID (the UID guards against evicting a namesake).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// A planned eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    /// The pod to evict.
    pub pod: PodRef,
    /// The quota whose policy asks for it.
    pub quota: QuotaRef,
    /// Since when the pod has been above `high`.
    pub above_high_since: Timestamp,
    /// The quota's grace period, for the event text.
    pub grace_period: Duration,
    /// A refused eviction being retried.
    pub retry: bool,
}

/// What the Eviction API did with one planned eviction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EvictionOutcome {
    /// The pod is being evicted.
    Evicted,
    /// The pod was already gone, or its UID changed: nothing to do.
    Gone,
    /// The API refused; `reason` is `EvictionBlocked` for a PodDisruptionBudget (HTTP 429) and the
    /// error's reason otherwise. Retried after [`BLOCKED_RETRY_AFTER`].
    Refused {
        /// PascalCase reason, for events and metrics.
        reason: &'static str,
        /// The API's message.
        message: String,
    },
}

/// A pod that may be evicted now, with the policy that allows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The pod.
    pub pod: PodRef,
    /// Its governing quota.
    pub quota: QuotaRef,
    /// Since when it has been above `high`.
    pub above_high_since: Timestamp,
    /// The quota's grace period.
    pub grace_period: Duration,
    /// The quota's `maxEvictionsPerMinute`.
    pub per_minute: u32,
}

/// Whether a governed pod may be evicted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Eligibility {
    /// Not under this rule (no Evict policy, not above high, finished, terminating...).
    No,
    /// Above high, but the grace period ends at this time.
    Later(Timestamp),
    /// Eligible now.
    Now(Candidate),
}

/// Applies the eviction rule to one pod and its governing (valid) quota.
pub fn eligibility(pod: &ObservedPod, quota: &QuotaFacts, now: Timestamp) -> Eligibility {
    let policy = &quota.spec.pressure;
    let Some(since) = pod.above_high_since else {
        return Eligibility::No;
    };
    if policy.action != PressureAction::Evict || pod.finished || pod.terminating {
        return Eligibility::No;
    }
    let due = after(since, policy.grace_period);
    if now < due {
        return Eligibility::Later(due);
    }
    Eligibility::Now(Candidate {
        pod: PodRef {
            namespace: pod.facts.namespace.clone(),
            name: pod.facts.name.clone(),
            uid: pod.facts.uid.clone(),
        },
        quota: quota.key.clone(),
        above_high_since: since,
        grace_period: policy.grace_period,
        per_minute: policy.max_evictions_per_minute,
    })
}

/// `t + d`, saturating at the end of time (a grace period of centuries is valid input).
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests;
