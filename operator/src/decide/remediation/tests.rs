//! Unit tests for the eviction window and refusal memory.

use super::*;
use crate::decide::notices::{Regarding, outcome_notices};

fn key(name: &str) -> QuotaRef {
    QuotaRef {
        namespace: "ns".into(),
        name: name.into(),
    }
}

fn ts(secs: i64) -> Timestamp {
    crate::fixtures::ts(secs)
}

fn candidate(name: &str, quota: &str, since: i64, per_minute: u32) -> Candidate {
    Candidate {
        pod: PodRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        quota: key(quota),
        above_high_since: ts(since),
        grace_period: Duration::from_secs(60),
        per_minute,
    }
}

fn evicted(sel: &Selection) -> Vec<(Eviction, EvictionOutcome)> {
    sel.evictions
        .iter()
        .map(|e| (e.clone(), EvictionOutcome::Evicted))
        .collect()
}

#[test]
fn the_window_slides() {
    let state = RemediationState::new(100);
    let (sel, state) = state.select(
        vec![candidate("a", "q", 0, 1), candidate("b", "q", 1, 1)],
        ts(1000),
    );
    assert_eq!(sel.evictions.len(), 1);
    let (state, news) = state.record(&evicted(&sel), ts(1000));
    assert_eq!(news, [true]);
    assert_eq!(state.evictions_in_window(ts(1059)), 1);
    assert_eq!(state.evictions_in_window(ts(1060)), 0);
    // (now, evictions of b)
    for (now, want) in [(1059, 0), (1060, 1)] {
        let (sel, _) = state.select(vec![candidate("b", "q", 1, 1)], ts(now));
        assert_eq!(sel.evictions.len(), want, "at {now}");
    }
}

#[test]
fn other_quotas_keep_their_own_budget_under_the_cluster_limit() {
    let state = RemediationState::new(2);
    let cands = vec![
        candidate("a1", "a", 0, 1),
        candidate("a2", "a", 1, 1),
        candidate("b1", "b", 2, 1),
    ];
    let (sel, _) = state.select(cands, ts(1000));
    let names: Vec<_> = sel.evictions.iter().map(|e| e.pod.name.as_str()).collect();
    assert_eq!(names, ["a1", "b1"]);
    assert_eq!(sel.rate_limited, 1);
}

#[test]
fn refusals_are_forgotten_when_the_pod_stops_being_a_candidate() {
    let state = RemediationState::new(10);
    let (sel, state) = state.select(vec![candidate("a", "q", 0, 5)], ts(1000));
    let refused = EvictionOutcome::Refused {
        reason: "EvictionBlocked",
        message: "pdb".into(),
    };
    let (state, _) = state.record(&[(sel.evictions[0].clone(), refused)], ts(1000));
    assert_eq!(state.blocked_for(&key("q")), ["a"]);
    let (sel, kept) = state.select(vec![candidate("a", "q", 0, 5)], ts(1010));
    assert_eq!((sel.evictions.len(), sel.waiting_retry), (0, 1));
    assert_eq!(sel.wake_at, Some(ts(1030)));
    assert_eq!(kept.blocked_for(&key("q")), ["a"]);
    let (_, forgotten) = state.select(vec![], ts(1010));
    assert!(forgotten.blocked_for(&key("q")).is_empty());
}

#[test]
fn gone_pods_clear_refusals_without_spending_budget() {
    let state = RemediationState::new(10);
    let (sel, state) = state.select(vec![candidate("a", "q", 0, 1)], ts(1000));
    let (state, news) = state.record(
        &[(sel.evictions[0].clone(), EvictionOutcome::Gone)],
        ts(1000),
    );
    assert_eq!(news, [false]);
    assert_eq!(state.evictions_in_window(ts(1000)), 0);
}

#[test]
fn outcomes_become_events_on_pod_and_quota_only_when_news() {
    let (sel, state) = RemediationState::new(10).select(
        vec![candidate("a", "q", 0, 5), candidate("b", "q", 1, 5)],
        ts(1000),
    );
    let refused = EvictionOutcome::Refused {
        reason: "EvictionBlocked",
        message: "pdb says no".into(),
    };
    let outcomes = vec![
        (sel.evictions[0].clone(), EvictionOutcome::Evicted),
        (sel.evictions[1].clone(), refused),
    ];
    let (_, news) = state.record(&outcomes, ts(1000));
    let notices = outcome_notices(&outcomes, &news);
    let summary: Vec<_> = notices
        .iter()
        .map(|n| {
            (
                matches!(n.regarding, Regarding::Pod(_)),
                n.warning,
                n.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (true, false, "Evicted"),
            (false, false, "Evicted"),
            (true, true, "EvictionBlocked"),
            (false, true, "EvictionBlocked")
        ]
    );
    assert!(notices[2].note.ends_with("pdb says no"));
    assert!(outcome_notices(&outcomes, &[false, false]).is_empty());
}
