//! CORE: how a round settles a pod's limits outcome around the act stage. Bad input and failed
//! reads never loosen a limit: a pod whose limits could not be read, that a quota with no known
//! valid spec may govern, or whose VRAM grant is unknown, is left alone ([`before_act`]); one governed by a quota kept at its last
//! valid spec says so ([`after_act`]).

use kube_dmem_crds::select::QuotaRef;

use crate::decide::foreign::ForeignWrite;
use crate::round::LimitsOutcome;

/// Whether the round may write a pod's planned limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write the plan.
    Apply,
    /// Write nothing; this is the pod's outcome.
    Hold(LimitsOutcome),
}

/// The verdict for a pod, given the failure (reason, message) of reading what is in force, the
/// invalid quota (with its error) that may govern it without a known valid spec, and why its VRAM
/// grant is unknown. A failed read comes first (nothing is known of the pod), then the invalid
/// quota (it lasts until a user acts), then the unknown grant (it passes by itself).
pub fn before_act(
    read_failure: Option<(&'static str, String)>,
    held: Option<&(QuotaRef, String)>,
    grant_unknown: Option<&String>,
) -> Verdict {
    match (read_failure, held, grant_unknown) {
        (Some((reason, message)), _, _) => {
            Verdict::Hold(LimitsOutcome::ReadFailed { reason, message })
        }
        (None, Some((quota, error)), _) => Verdict::Hold(LimitsOutcome::QuotaInvalid {
            quota: quota.clone(),
            error: error.clone(),
            last_valid_in_force: false,
        }),
        (None, None, Some(why)) => Verdict::Hold(LimitsOutcome::GrantUnknown { why: why.clone() }),
        (None, None, None) => Verdict::Apply,
    }
}

/// The outcome after the act stage: `applied` as the kernel answered, unless it is fine and the
/// governing quota is in force with its last valid spec (`stale`: the quota and its current
/// error), or another writer changed the pod's files (`foreign`), which the pod's condition must
/// say. A failure the kernel reported always wins: it is the more urgent news.
pub fn after_act(
    applied: LimitsOutcome,
    stale: Option<(&QuotaRef, &String)>,
    foreign: Option<&ForeignWrite>,
) -> LimitsOutcome {
    if !applied.in_force() {
        return applied;
    }
    match (stale, foreign) {
        (Some((quota, error)), _) => LimitsOutcome::QuotaInvalid {
            quota: quota.clone(),
            error: error.clone(),
            last_valid_in_force: true,
        },
        (None, Some(write)) => LimitsOutcome::Foreign(write.clone()),
        (None, None) => applied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> QuotaRef {
        QuotaRef {
            namespace: "ns".into(),
            name: "q".into(),
        }
    }

    #[test]
    fn a_failed_read_holds_even_a_pod_with_a_good_quota() {
        let held = (key(), "spec: missing".to_owned());
        let unknown = "PodResources has not answered".to_owned();
        let v = before_act(
            Some(("CgroupReadFailed", "EIO".into())),
            Some(&held),
            Some(&unknown),
        );
        assert!(
            matches!(v, Verdict::Hold(LimitsOutcome::ReadFailed { .. })),
            "{v:?}"
        );
        let v = before_act(None, Some(&held), Some(&unknown));
        assert!(matches!(
            v,
            Verdict::Hold(LimitsOutcome::QuotaInvalid {
                last_valid_in_force: false,
                ..
            })
        ));
        assert_eq!(before_act(None, None, None), Verdict::Apply);
    }

    #[test]
    fn a_pod_whose_grant_is_unknown_is_left_alone() {
        let why = "PodResources has not answered since the agent started".to_owned();
        assert_eq!(
            before_act(None, None, Some(&why)),
            Verdict::Hold(LimitsOutcome::GrantUnknown { why })
        );
    }

    #[test]
    fn a_stale_quota_is_reported_only_when_its_limits_are_in_force() {
        let error = "high above max".to_owned();
        let out = after_act(LimitsOutcome::Applied, Some((&key(), &error)), None);
        assert!(matches!(
            out,
            LimitsOutcome::QuotaInvalid {
                last_valid_in_force: true,
                ..
            }
        ));
        // A write failure stays the more urgent news.
        assert_eq!(
            after_act(LimitsOutcome::CgroupNotFound, Some((&key(), &error)), None),
            LimitsOutcome::CgroupNotFound
        );
        assert_eq!(
            after_act(LimitsOutcome::Applied, None, None),
            LimitsOutcome::Applied
        );
    }
}
