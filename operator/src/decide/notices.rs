//! CORE: the Events the operator publishes, as plain values: a quota turning invalid or
//! outranked, and eviction outcomes. Only transitions are announced, so a steady state publishes
//! nothing.

use kube_dmem_crds::select::QuotaRef;
use kube_dmem_crds::{
    DmemQuotaStatus, QUOTA_CONDITION_CONFLICT, QUOTA_CONDITION_READY, REASON_EVICTED,
    REASON_INVALID_SPEC, REASON_OUTRANKED,
};

use crate::decide::remediation::{Eviction, EvictionOutcome, PodRef};
use crate::decide::status::find;

/// An event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// The object the event is about.
    pub regarding: Regarding,
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// PascalCase action the event reports on.
    pub action: &'static str,
    /// Human-readable text.
    pub note: String,
}

/// The object of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Regarding {
    /// A quota, with its UID when known.
    Quota(QuotaRef, Option<String>),
    /// A pod.
    Pod(PodRef),
}

/// Warning events for a quota turning invalid or outranked; only on the transition, so a quota
/// that stays in that state does not repeat them.
pub fn condition_notices(
    before: Option<&DmemQuotaStatus>,
    after: &DmemQuotaStatus,
    key: &QuotaRef,
    uid: Option<&String>,
) -> Vec<Notice> {
    let watched = [
        (QUOTA_CONDITION_READY, "False", REASON_INVALID_SPEC),
        (QUOTA_CONDITION_CONFLICT, "True", REASON_OUTRANKED),
    ];
    watched
        .into_iter()
        .filter_map(|(ty, bad, reason)| {
            let now = find(Some(after), ty)?;
            let was = find(before, ty).map(|c| c.status.as_str());
            (now.status == bad && was != Some(bad)).then(|| Notice {
                regarding: Regarding::Quota(key.clone(), uid.cloned()),
                warning: true,
                reason: reason.to_owned(),
                action: "UpdateStatus",
                note: now.message.clone(),
            })
        })
        .collect()
}

/// Events for eviction outcomes; `news` is [`crate::decide::remediation::RemediationState::record`]'s answer. Each event goes
/// to both the pod and its quota, so `kubectl describe` on either shows what happened.
pub fn outcome_notices(outcomes: &[(Eviction, EvictionOutcome)], news: &[bool]) -> Vec<Notice> {
    let mut notices = Vec::new();
    for ((eviction, outcome), _) in outcomes.iter().zip(news).filter(|(_, news)| **news) {
        let since = eviction.above_high_since;
        let grace = humantime::format_duration(eviction.grace_period);
        let (warning, reason, pod_note, quota_note) = match outcome {
            EvictionOutcome::Evicted => (
                false,
                REASON_EVICTED.to_owned(),
                format!(
                    "Evicted: above its high VRAM limit since {since}, longer than the grace period {grace} of DmemQuota {}",
                    eviction.quota.name
                ),
                format!(
                    "Evicted pod {}: above its high VRAM limit since {since}, longer than the grace period {grace}",
                    eviction.pod.name
                ),
            ),
            EvictionOutcome::Refused { reason, message } => (
                true,
                (*reason).to_owned(),
                format!(
                    "Eviction for DmemQuota {} refused, will retry: {message}",
                    eviction.quota.name
                ),
                format!(
                    "Eviction of pod {} refused, will retry: {message}",
                    eviction.pod.name
                ),
            ),
            EvictionOutcome::Gone => continue,
        };
        let notice = |regarding, note| Notice {
            regarding,
            warning,
            reason: reason.clone(),
            action: "Evict",
            note,
        };
        notices.push(notice(Regarding::Pod(eviction.pod.clone()), pod_note));
        notices.push(notice(
            Regarding::Quota(eviction.quota.clone(), None),
            quota_note,
        ));
    }
    notices
}
