//! CORE: `decide(&Observed, &RemediationState, now) -> Plan`: every quota's desired status, the
//! status writes that differ from what is stored, the evictions to attempt, and the events worth
//! publishing. Sync, no client, no clock.
//!
//! Definitions (the `status` fields):
//! - a quota *selects* a pod by `kube_dmem_crds::select::selects`; of the valid quotas selecting a
//!   pod, the one first by `precedence` *governs* it (`select::resolve`, the same call the agents
//!   make). `matchedPods` counts the pods a quota governs, so a pod counts for exactly one quota
//!   and the counts add up; a quota that selects pods but governs none reports `Conflict=True`.
//! - `enforcedPods` / `pressuredPods`: governed pods whose agent condition
//!   `kube-dmem.io/VRAMLimitsApplied` / `kube-dmem.io/VRAMPressure` is `True`.
//! - finished pods (`Succeeded`, `Failed`) hold no VRAM and are ignored everywhere; pods being
//!   deleted still count until they are gone.
//! - an invalid quota (spec unreadable or rejected by `validate`) selects and governs nothing,
//!   exactly as the agents treat it, and reports `Ready=False` / `InvalidSpec`.
//! - `unmatchedRegions`: limit patterns matching no region any node publishes
//!   (`limits::unmatched_patterns`); with no node publishing, every pattern is unmatched.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
pub mod notices;
pub mod observed;
pub mod remediation;
pub mod status;

use kube_dmem_crds::select::{PodFacts, QuotaFacts, QuotaRef, resolve};
use kube_dmem_crds::validate::validate;
use kube_dmem_crds::{DmemQuotaStatus, PressureAction, limits};

use crate::decide::notices::condition_notices;
pub use crate::decide::notices::{Notice, Regarding};
use crate::decide::observed::{Observed, ObservedPod};
use crate::decide::remediation::{Eligibility, Eviction, RemediationState, eligibility};
use crate::decide::status::{Findings, desired_status, same_status};

/// What one pass should do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Status writes, only for quotas whose desired status differs from the stored one.
    pub status_patches: Vec<StatusPatch>,
    /// Evictions to attempt, in order.
    pub evictions: Vec<Eviction>,
    /// Events about status changes (a quota turning invalid or outranked).
    pub notices: Vec<Notice>,
    /// Eviction memory to carry to the next pass (pruned); outcomes are recorded into it.
    pub remediation: RemediationState,
    /// Earliest time something becomes due (a grace period ends, a retry or rate budget frees);
    /// the driver runs a pass then even without watch events.
    pub wake_at: Option<Timestamp>,
    /// Counts for metrics and the pass log line.
    pub summary: Summary,
}

/// A status to apply to one quota.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    /// The quota.
    pub quota: QuotaRef,
    /// The whole status we own.
    pub status: DmemQuotaStatus,
}

/// Counts describing a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Quotas seen.
    pub quotas: usize,
    /// Quotas with an invalid spec.
    pub invalid: usize,
    /// Quotas outranked for at least one pod.
    pub conflicting: usize,
    /// Pods governed by some quota.
    pub governed_pods: usize,
    /// Governed pods under pressure.
    pub pressured_pods: usize,
    /// Pods eligible for eviction now.
    pub candidates: usize,
    /// Candidates held back by a rate limit.
    pub rate_limited: usize,
}

/// Computes the plan for one pass. See the module docs for the definitions it applies.
pub fn decide(observed: &Observed, state: &RemediationState, now: Timestamp) -> Plan {
    let mut summary = Summary {
        quotas: observed.quotas.len(),
        ..Summary::default()
    };
    let regions: Vec<&str> = observed.regions.iter().map(String::as_str).collect();

    // Validate each quota once; valid ones are grouped by namespace, since a quota only ever
    // selects pods of its own namespace (resolving per namespace gives the same answer cheaper).
    let mut findings: BTreeMap<QuotaRef, Findings> = BTreeMap::new();
    let mut valid: BTreeMap<&str, Vec<QuotaFacts>> = BTreeMap::new();
    for q in &observed.quotas {
        let mut f = Findings {
            generation: q.generation,
            ..Findings::default()
        };
        match q
            .spec
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|s| validate(s).map_err(|e| chain(&e)))
        {
            Ok(spec) => {
                f.unmatched_regions = limits::unmatched_patterns(&spec.limits, &regions);
                f.blocked_evictions =
                    (spec.pressure.action == PressureAction::Evict).then(Vec::new);
                let facts = QuotaFacts {
                    key: q.key.clone(),
                    created: q.created.clone(),
                    spec,
                };
                valid
                    .entry(q.key.namespace.as_str())
                    .or_default()
                    .push(facts);
            }
            Err(message) => {
                summary.invalid += 1;
                f.invalid = Some(message);
            }
        }
        findings.insert(q.key.clone(), f);
    }

    let mut pods: BTreeMap<&str, Vec<&ObservedPod>> = BTreeMap::new();
    for pod in observed.pods.iter().filter(|p| !p.finished) {
        pods.entry(pod.facts.namespace.as_str())
            .or_default()
            .push(pod);
    }

    let (mut candidates, mut wake_at) = (Vec::new(), None::<Timestamp>);
    for (ns, quotas) in &valid {
        let ns_pods = pods.get(ns).map_or(&[][..], Vec::as_slice);
        let facts: Vec<PodFacts> = ns_pods.iter().map(|p| p.facts.clone()).collect();
        let resolution = resolve(quotas, &facts);
        let by_key: BTreeMap<&QuotaRef, &QuotaFacts> = quotas.iter().map(|q| (&q.key, q)).collect();
        for pod in ns_pods {
            let Some(key) = resolution.governing.get(&pod.facts.uid) else {
                continue;
            };
            let (Some(f), Some(quota)) = (findings.get_mut(key), by_key.get(key)) else {
                continue;
            };
            f.matched += 1;
            f.enforced += i32::from(pod.limits_applied);
            let pressured = pod.pressure.is_some_and(|p| p.active);
            f.pressured += i32::from(pressured);
            summary.governed_pods += 1;
            summary.pressured_pods += usize::from(pressured);
            match eligibility(pod, quota, now) {
                Eligibility::No => {}
                Eligibility::Later(due) => wake_at = Some(wake_at.map_or(due, |w| w.min(due))),
                Eligibility::Now(candidate) => candidates.push(candidate),
            }
        }
        for (loser, winners) in resolution.lost_to {
            if let Some(f) = findings.get_mut(&loser) {
                // Winners share the loser's namespace, so names alone identify them.
                f.lost_to = winners.into_iter().map(|w| w.name).collect();
            }
        }
    }

    summary.candidates = candidates.len();
    let (selection, remediation) = state.select(candidates, now);
    summary.rate_limited = selection.rate_limited;
    if let Some(t) = selection.wake_at {
        wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
    }

    let mut status_patches = Vec::new();
    let mut notices = Vec::new();
    for q in &observed.quotas {
        let Some(f) = findings.get_mut(&q.key) else {
            continue;
        };
        if let Some(blocked) = f.blocked_evictions.as_mut() {
            *blocked = remediation.blocked_for(&q.key);
        }
        summary.conflicting += usize::from(!f.lost_to.is_empty());
        let desired = desired_status(q.status.as_ref(), f, now);
        notices.extend(condition_notices(
            q.status.as_ref(),
            &desired,
            &q.key,
            q.uid.as_ref(),
        ));
        if !q
            .status
            .as_ref()
            .is_some_and(|current| same_status(current, &desired))
        {
            status_patches.push(StatusPatch {
                quota: q.key.clone(),
                status: desired,
            });
        }
    }

    Plan {
        status_patches,
        evictions: selection.evictions,
        notices,
        remediation,
        wake_at,
        summary,
    }
}

/// An error and its sources, `": "`-joined (shared with the node agent).
pub use kube_dmem_crds::error_chain as chain;

#[cfg(test)]
mod tests;
