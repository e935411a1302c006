//! CORE: a quota's desired `status` from what [`crate::decide`] found about it, and the status
//! conditions, keeping each condition's `lastTransitionTime` while its status stays the same.
//!
//! Owns the condition vocabulary of the quota status (types, reasons, messages) and the equality
//! that decides whether a status write is needed at all: messages never carry counters or times,
//! so a steady cluster produces byte-identical statuses and zero writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::{
    DmemQuotaStatus, QUOTA_CONDITION_CONFLICT, QUOTA_CONDITION_READY, REASON_EVICTION_BLOCKED,
    REASON_INVALID_SPEC, REASON_NO_CONFLICT, REASON_OUTRANKED, REASON_RECONCILED,
};

pub use kube_dmem_crds::{QUOTA_CONDITION_EVICTION_BLOCKED, REASON_NO_BLOCKED_EVICTIONS};

/// Longest condition message we write; the API allows 32768, `kubectl describe` stays readable.
const MAX_MESSAGE_LEN: usize = 1024;
/// Names listed in a message before "and N more", so a message stays stable and short.
const MAX_LISTED_NAMES: usize = 20;

/// What one decision pass found about one quota.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// `metadata.generation` the findings were computed from.
    pub generation: Option<i64>,
    /// `Some(message)` when the spec is invalid; the quota then governs nothing.
    pub invalid: Option<String>,
    /// Names of the quotas that outrank this one for some pod it selects, sorted.
    pub lost_to: Vec<String>,
    /// Pods this quota governs (see [`crate::decide`] for the definition).
    pub matched: i32,
    /// Governed pods whose limits the agent reports in force.
    pub enforced: i32,
    /// Governed pods under VRAM pressure.
    pub pressured: i32,
    /// Limit patterns that match no region on any node.
    pub unmatched_regions: Vec<String>,
    /// `Some` for quotas with `action: Evict`: names of governed pods whose eviction is refused.
    pub blocked_evictions: Option<Vec<String>>,
}

/// The status to apply for `findings`, reusing transition times from `previous`.
pub fn desired_status(
    previous: Option<&DmemQuotaStatus>,
    findings: &Findings,
    now: Timestamp,
) -> DmemQuotaStatus {
    let prev = previous.map_or(&[][..], |s| s.conditions.as_slice());
    let generation = findings.generation;
    let cond = |ty: &str, status: bool, reason: &str, message: String| {
        condition(prev, ty, status, reason, message, generation, now)
    };
    let mut conditions = vec![match &findings.invalid {
        None => cond(
            QUOTA_CONDITION_READY,
            true,
            REASON_RECONCILED,
            "The spec is valid and the status reflects it".into(),
        ),
        Some(message) => cond(
            QUOTA_CONDITION_READY,
            false,
            REASON_INVALID_SPEC,
            message.clone(),
        ),
    }];
    conditions.push(if findings.lost_to.is_empty() {
        cond(
            QUOTA_CONDITION_CONFLICT,
            false,
            REASON_NO_CONFLICT,
            "This quota governs every pod it selects".into(),
        )
    } else {
        let names = list(&findings.lost_to);
        cond(
            QUOTA_CONDITION_CONFLICT,
            true,
            REASON_OUTRANKED,
            format!("Outranked by {names} for some of the pods it selects"),
        )
    });
    if let Some(blocked) = &findings.blocked_evictions {
        conditions.push(if blocked.is_empty() {
            cond(QUOTA_CONDITION_EVICTION_BLOCKED, false, REASON_NO_BLOCKED_EVICTIONS, "No eviction is being refused".into())
        } else {
            let message = format!(
                "The Eviction API refuses to evict {} (a PodDisruptionBudget or an API error); retrying",
                list(blocked)
            );
            cond(QUOTA_CONDITION_EVICTION_BLOCKED, true, REASON_EVICTION_BLOCKED, message)
        });
    }
    DmemQuotaStatus {
        observed_generation: generation,
        conditions,
        matched_pods: findings.matched,
        enforced_pods: findings.enforced,
        pressured_pods: findings.pressured,
        unmatched_regions: findings.unmatched_regions.clone(),
    }
}

/// One condition; `lastTransitionTime` is kept from the previous condition of the same type when
/// the status (`True`/`False`) did not change, and is `now` (whole seconds, as the API stores it)
/// otherwise.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(whole_seconds(now)),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncate(message),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Whether two statuses say the same thing; condition order does not matter (the API keeps
/// conditions as a map keyed by type).
pub fn same_status(a: &DmemQuotaStatus, b: &DmemQuotaStatus) -> bool {
    fn sorted(s: &DmemQuotaStatus) -> Vec<&Condition> {
        let mut c: Vec<&Condition> = s.conditions.iter().collect();
        c.sort_by(|x, y| x.type_.cmp(&y.type_));
        c
    }
    a.observed_generation == b.observed_generation
        && a.matched_pods == b.matched_pods
        && a.enforced_pods == b.enforced_pods
        && a.pressured_pods == b.pressured_pods
        && a.unmatched_regions == b.unmatched_regions
        && sorted(a) == sorted(b)
}

/// The condition of type `type_` in a status, if present.
pub fn find<'s>(status: Option<&'s DmemQuotaStatus>, type_: &str) -> Option<&'s Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// The API stores `metav1.Time` with second precision; writing the same precision keeps what we
/// wrote equal to what we read back.
pub fn whole_seconds(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// `a, b and 3 more`, keeping messages short and their content stable.
fn list(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(MAX_LISTED_NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(MAX_LISTED_NAMES) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ts;

    fn valid() -> Findings {
        Findings {
            generation: Some(3),
            ..Findings::default()
        }
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let first = desired_status(None, &valid(), ts(100));
        let ready = find(Some(&first), QUOTA_CONDITION_READY).expect("ready");
        assert_eq!(ready.last_transition_time.0, ts(100));

        // Same status later, even with a new generation and message: time kept.
        let later = Findings {
            generation: Some(4),
            matched: 7,
            ..valid()
        };
        let second = desired_status(Some(&first), &later, ts(500));
        assert_eq!(
            find(Some(&second), QUOTA_CONDITION_READY)
                .expect("ready")
                .last_transition_time
                .0,
            ts(100)
        );

        // Status flips: time moves.
        let invalid = Findings {
            invalid: Some("spec.limits: needs at least one entry".into()),
            ..later
        };
        let third = desired_status(Some(&second), &invalid, ts(900));
        let ready = find(Some(&third), QUOTA_CONDITION_READY).expect("ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", REASON_INVALID_SPEC)
        );
        assert_eq!(ready.message, "spec.limits: needs at least one entry");
        assert_eq!(ready.last_transition_time.0, ts(900));
        assert_eq!(
            find(Some(&third), QUOTA_CONDITION_CONFLICT)
                .expect("c")
                .last_transition_time
                .0,
            ts(100)
        );
    }

    #[test]
    fn conditions_by_findings() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        // (findings, type, status, reason, message)
        let cases: Vec<(Findings, &str, &str, &str, &str)> = vec![
            (
                valid(),
                QUOTA_CONDITION_CONFLICT,
                "False",
                REASON_NO_CONFLICT,
                "This quota governs every pod it selects",
            ),
            (
                Findings {
                    lost_to: names(&["a", "b"]),
                    ..valid()
                },
                QUOTA_CONDITION_CONFLICT,
                "True",
                REASON_OUTRANKED,
                "Outranked by a, b for some of the pods it selects",
            ),
            (
                Findings {
                    blocked_evictions: Some(vec![]),
                    ..valid()
                },
                QUOTA_CONDITION_EVICTION_BLOCKED,
                "False",
                REASON_NO_BLOCKED_EVICTIONS,
                "No eviction is being refused",
            ),
            (
                Findings {
                    blocked_evictions: Some(names(&["p1"])),
                    ..valid()
                },
                QUOTA_CONDITION_EVICTION_BLOCKED,
                "True",
                REASON_EVICTION_BLOCKED,
                "The Eviction API refuses to evict p1 (a PodDisruptionBudget or an API error); retrying",
            ),
        ];
        for (i, (findings, ty, status, reason, message)) in cases.into_iter().enumerate() {
            let s = desired_status(None, &findings, ts(1));
            let c = find(Some(&s), ty).expect("condition present");
            assert_eq!(
                (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
                (status, reason, message),
                "case {i}"
            );
            assert_eq!(c.observed_generation, Some(3));
        }
        assert!(
            find(
                Some(&desired_status(None, &valid(), ts(1))),
                QUOTA_CONDITION_EVICTION_BLOCKED
            )
            .is_none()
        );
    }

    #[test]
    fn long_lists_and_messages_are_bounded() {
        let many: Vec<String> = (0..25).map(|i| format!("q{i:02}")).collect();
        let s = desired_status(
            None,
            &Findings {
                lost_to: many,
                ..valid()
            },
            ts(1),
        );
        let msg = &find(Some(&s), QUOTA_CONDITION_CONFLICT).expect("c").message;
        assert!(msg.contains("q19 and 5 more"), "{msg}");
        let huge = Findings {
            invalid: Some("é".repeat(2000)),
            ..valid()
        };
        let s = desired_status(None, &huge, ts(1));
        let msg = &find(Some(&s), QUOTA_CONDITION_READY).expect("r").message;
        assert!(msg.len() <= MAX_MESSAGE_LEN && msg.ends_with("..."));
    }

    #[test]
    fn equality_ignores_condition_order_and_times_are_whole_seconds() {
        let a = desired_status(None, &valid(), ts(10));
        let mut b = a.clone();
        b.conditions.reverse();
        assert!(same_status(&a, &b));
        b.matched_pods = 1;
        assert!(!same_status(&a, &b));
        let frac = Timestamp::from_millisecond(10_500).expect("ts");
        assert_eq!(whole_seconds(frac), ts(10));
    }
}
