//! Table tests for `decide`: status counts, validity, conflicts, regions, write suppression and
//! remediation, with an injected clock.

use super::*;
use crate::decide::remediation::EvictionOutcome;
use crate::decide::status::{QUOTA_CONDITION_EVICTION_BLOCKED, find as find_condition};
use crate::fixtures::{Observe as _, TestPod, TestQuota, observed, ts};
use kube_dmem_crds::{
    QUOTA_CONDITION_CONFLICT, QUOTA_CONDITION_READY, REASON_EVICTION_BLOCKED, REASON_INVALID_SPEC,
    REASON_NO_CONFLICT, REASON_OUTRANKED, REASON_RECONCILED,
};

const VRAM0: &str = "drm/0000:03:00.0/vram0";

fn state() -> RemediationState {
    RemediationState::new(6)
}

/// Stores the plan's statuses as the API would, so the next pass sees them.
fn store(obs: &mut Observed, plan: &Plan) {
    for patch in &plan.status_patches {
        let quota = obs
            .quotas
            .iter_mut()
            .find(|q| q.key == patch.quota)
            .expect("patched quota exists");
        quota.status = Some(patch.status.clone());
    }
}

fn status_of<'p>(plan: &'p Plan, name: &str) -> &'p DmemQuotaStatus {
    &plan
        .status_patches
        .iter()
        .find(|p| p.quota.name == name)
        .expect("status patch")
        .status
}

fn counts(s: &DmemQuotaStatus) -> (i32, i32, i32) {
    (s.matched_pods, s.enforced_pods, s.pressured_pods)
}

fn cond<'s>(s: &'s DmemQuotaStatus, ty: &str) -> (&'s str, &'s str, &'s str) {
    let c = find_condition(Some(s), ty).expect("condition present");
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.evictions.iter().map(|e| e.pod.name.as_str()).collect()
}

fn max_1gi(q: TestQuota) -> TestQuota {
    q.limit("*", &[("max", "1Gi")])
}

#[test]
fn counts_cover_governed_pods_only() {
    let quota = max_1gi(TestQuota::new("ns", "q").match_label("app", "a"));
    let pods = [
        TestPod::new("ns", "applied-pressured")
            .label("app", "a")
            .limits_applied(true)
            .pressure(true, "AtMax", 1),
        TestPod::new("ns", "applied")
            .label("app", "a")
            .limits_applied(true)
            .pressure(false, "Protected", 1),
        TestPod::new("ns", "pending")
            .label("app", "a")
            .limits_applied(false),
        TestPod::new("ns", "finished")
            .label("app", "a")
            .limits_applied(true)
            .phase("Succeeded"),
        TestPod::new("ns", "terminating")
            .label("app", "a")
            .terminating(),
        TestPod::new("other", "elsewhere")
            .label("app", "a")
            .limits_applied(true),
        TestPod::new("ns", "unselected")
            .label("app", "b")
            .limits_applied(true),
    ];
    let plan = decide(&observed(&[quota], &pods, &[VRAM0]), &state(), ts(10));
    let s = status_of(&plan, "q");
    assert_eq!(counts(s), (4, 2, 1));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(cond(s, QUOTA_CONDITION_READY).1, REASON_RECONCILED);
    assert_eq!(
        cond(s, QUOTA_CONDITION_CONFLICT),
        (
            "False",
            REASON_NO_CONFLICT,
            "This quota governs every pod it selects"
        )
    );
    assert!(
        find_condition(Some(s), QUOTA_CONDITION_EVICTION_BLOCKED).is_none(),
        "report-only quota"
    );
    assert_eq!(
        (plan.summary.governed_pods, plan.summary.pressured_pods),
        (4, 1)
    );
}

#[test]
fn invalid_specs_are_reported_and_govern_nothing() {
    let cases: Vec<(TestQuota, &str)> = vec![
        (
            TestQuota::new("ns", "bad")
                .priority(100)
                .limit("*", &[("max", "1Gi"), ("high", "2Gi")]),
            "spec.limits[0].high: 2Gi must not be greater than max (1Gi)",
        ),
        (
            TestQuota::new("ns", "bad")
                .priority(100)
                .limit("*", &[("max", "8Gx")]),
            "spec.limits[0].max: invalid quantity \"8Gx\": ",
        ),
        (
            TestQuota::new("ns", "bad").priority(100),
            "spec.limits: needs at least one entry",
        ),
    ];
    let fallback = max_1gi(TestQuota::new("ns", "fallback"));
    let pods = [TestPod::new("ns", "p")];
    for (i, (bad, message)) in cases.into_iter().enumerate() {
        let obs = observed(&[bad, fallback.clone()], &pods, &[VRAM0]);
        let plan = decide(&obs, &state(), ts(10));
        let s = status_of(&plan, "bad");
        let (status, reason, msg) = cond(s, QUOTA_CONDITION_READY);
        assert_eq!((status, reason), ("False", REASON_INVALID_SPEC), "case {i}");
        assert!(msg.starts_with(message), "case {i}: {msg}");
        assert_eq!(counts(s), (0, 0, 0), "case {i}");
        assert_eq!(
            counts(status_of(&plan, "fallback")).0,
            1,
            "invalid quota must not take the pod, case {i}"
        );
        assert_eq!(plan.summary.invalid, 1);
        let notice = plan
            .notices
            .iter()
            .find(|n| n.reason == REASON_INVALID_SPEC)
            .expect("warning event");
        assert!(notice.warning && notice.note == msg);
    }

    // A spec that did not even deserialize.
    let mut obs = observed(&[fallback], &pods, &[VRAM0]);
    obs.quotas[0].spec = Err("spec: invalid type: string \"x\", expected a sequence".into());
    let plan = decide(&obs, &state(), ts(10));
    let s = status_of(&plan, "fallback");
    assert_eq!(
        cond(s, QUOTA_CONDITION_READY).2,
        "spec: invalid type: string \"x\", expected a sequence"
    );
    assert_eq!(counts(s).0, 0);
}

#[test]
fn conflicts_name_the_winners_sorted() {
    let q = |name: &str, prio: i32| max_1gi(TestQuota::new("ns", name).priority(prio));
    let quotas = [
        q("zeta", 5).match_label("team", "a"),
        q("alpha", 5).created(10).match_label("gpu", "yes"),
        q("all", 0),
        q("top", 9).match_label("tier", "gold"),
        max_1gi(TestQuota::new("other", "all").priority(100)),
    ];
    let pods = [
        TestPod::new("ns", "p1")
            .label("team", "a")
            .label("gpu", "yes"),
        TestPod::new("ns", "p2").label("team", "a"),
        TestPod::new("ns", "p3").label("tier", "gold"),
        TestPod::new("ns", "p4"),
    ];
    let plan = decide(&observed(&quotas, &pods, &[VRAM0]), &state(), ts(10));
    // (quota, matched, conflict status, message)
    let want = [
        // Equal priority: alpha has a timestamp, zeta has none, so alpha wins p1.
        (
            "zeta",
            1,
            "True",
            "Outranked by alpha for some of the pods it selects",
        ),
        (
            "alpha",
            1,
            "False",
            "This quota governs every pod it selects",
        ),
        (
            "all",
            1,
            "True",
            "Outranked by alpha, top, zeta for some of the pods it selects",
        ),
        ("top", 1, "False", "This quota governs every pod it selects"),
    ];
    for (name, matched, status, message) in want {
        let s = status_of(&plan, name);
        assert_eq!(counts(s).0, matched, "{name}");
        let (st, _, msg) = cond(s, QUOTA_CONDITION_CONFLICT);
        assert_eq!((st, msg), (status, message), "{name}");
    }
    let other = plan
        .status_patches
        .iter()
        .find(|p| p.quota.namespace == "other")
        .expect("patched");
    assert_eq!(
        cond(&other.status, QUOTA_CONDITION_CONFLICT).0,
        "False",
        "namespaces never conflict"
    );
    assert_eq!(plan.summary.conflicting, 2);
    assert_eq!(
        plan.notices
            .iter()
            .filter(|n| n.reason == REASON_OUTRANKED)
            .count(),
        2
    );
}

#[test]
fn unmatched_regions_list_patterns_matching_no_node() {
    let quota = TestQuota::new("ns", "q")
        .limit("drm/*/vram*", &[("max", "1Gi")])
        .limit("drm/0000:99:00.0/vram0", &[("max", "1Gi")])
        .limit("*", &[("low", "1Gi")]);
    // (regions published by nodes, expected unmatched)
    let cases: Vec<(&[&str], &[&str])> = vec![
        (&[VRAM0], &["drm/0000:99:00.0/vram0"]),
        (&[VRAM0, "drm/0000:99:00.0/vram0"], &[]),
        (&["system/gtt"], &["drm/*/vram*", "drm/0000:99:00.0/vram0"]),
        (&[], &["drm/*/vram*", "drm/0000:99:00.0/vram0", "*"]),
    ];
    for (regions, want) in cases {
        let plan = decide(
            &observed(std::slice::from_ref(&quota), &[], regions),
            &state(),
            ts(1),
        );
        assert_eq!(
            status_of(&plan, "q").unmatched_regions,
            *want,
            "{regions:?}"
        );
    }
}

#[test]
fn unchanged_input_plans_zero_writes_and_keeps_transition_times() {
    let quotas = [
        max_1gi(TestQuota::new("ns", "a").priority(1)),
        max_1gi(TestQuota::new("ns", "b")).evict("5m", 1),
        TestQuota::new("ns", "bad"),
    ];
    let pods = [TestPod::new("ns", "p").limits_applied(true)];
    let mut obs = observed(&quotas, &pods, &[VRAM0]);
    let first = decide(&obs, &state(), ts(100));
    assert_eq!(first.status_patches.len(), 3);
    store(&mut obs, &first);

    let second = decide(&obs, &first.remediation, ts(200));
    assert!(
        second.status_patches.is_empty(),
        "{:?}",
        second.status_patches
    );
    assert!(second.notices.is_empty() && second.evictions.is_empty());

    // A pod appears: only the governing quota's status changes; its Ready time stays.
    obs.pods.push(TestPod::new("ns", "p2").observed());
    let third = decide(&obs, &second.remediation, ts(300));
    assert_eq!(third.status_patches.len(), 1);
    let s = status_of(&third, "a");
    assert_eq!(counts(s), (2, 1, 0));
    let ready = find_condition(Some(s), QUOTA_CONDITION_READY).expect("ready");
    assert_eq!(ready.last_transition_time.0, ts(100));

    // A spec change bumps the generation: observedGeneration follows, times stay.
    obs.quotas[0].generation = Some(2);
    let fourth = decide(&obs, &third.remediation, ts(400));
    let s = status_of(&fourth, "a");
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(
        find_condition(Some(s), QUOTA_CONDITION_READY)
            .expect("ready")
            .last_transition_time
            .0,
        ts(100)
    );
}

fn evicting(per_minute: i32) -> TestQuota {
    max_1gi(TestQuota::new("ns", "q")).evict("5m", per_minute)
}

fn above_high(name: &str, since: i64) -> TestPod {
    TestPod::new("ns", name).pressure(true, "AboveHigh", since)
}

#[test]
fn eviction_waits_for_the_grace_period() {
    let obs = observed(&[evicting(10)], &[above_high("p", 1000)], &[VRAM0]);
    let before = decide(&obs, &state(), ts(1299));
    assert!(before.evictions.is_empty());
    assert_eq!(
        before.wake_at,
        Some(ts(1300)),
        "next pass when the grace period ends"
    );
    let at = decide(&obs, &state(), ts(1300));
    assert_eq!(names(&at), ["p"]);
    assert_eq!(at.evictions[0].above_high_since, ts(1000));
}

#[test]
fn the_grace_period_starts_when_the_pod_crossed_high_not_when_pressure_began() {
    // Contended (VRAMPressure=True) since t=0; crossed high at t=3600. VRAMPressure stays True
    // across the tier change, so its transition time is still 0: the clock must be VRAMAboveHigh's.
    let pod = TestPod::new("ns", "p")
        .pressure(true, "AboveHigh", 0)
        .above_high(3600);
    let obs = observed(&[evicting(10)], &[pod], &[VRAM0]);
    let early = decide(&obs, &state(), ts(3601));
    assert!(
        early.evictions.is_empty(),
        "evicted 1 s after crossing high"
    );
    assert_eq!(early.wake_at, Some(ts(3600 + 300)));
    let due = decide(&obs, &state(), ts(3900));
    assert_eq!(names(&due), ["p"]);
    assert_eq!(due.evictions[0].above_high_since, ts(3600));
    // Pressured for another reason only: never a candidate, however long.
    let contended = TestPod::new("ns", "p").pressure(true, "Contended", 0);
    let obs = observed(&[evicting(10)], &[contended], &[VRAM0]);
    assert!(decide(&obs, &state(), ts(100_000)).evictions.is_empty());
}

#[test]
fn only_pods_above_high_are_evicted_and_only_with_action_evict() {
    let long_ago = 0;
    let now = ts(100_000);
    // (quota, pod, evicted?)
    let cases: Vec<(TestQuota, TestPod, bool)> = vec![
        (evicting(10), above_high("p", long_ago), true),
        (
            max_1gi(TestQuota::new("ns", "q")).report_only("0s"),
            above_high("p", long_ago),
            false,
        ),
        (
            max_1gi(TestQuota::new("ns", "q")),
            above_high("p", long_ago),
            false,
        ),
        (
            evicting(10),
            TestPod::new("ns", "p").pressure(true, "AtMax", long_ago),
            false,
        ),
        (
            evicting(10),
            TestPod::new("ns", "p").pressure(true, "Contended", long_ago),
            false,
        ),
        (
            evicting(10),
            TestPod::new("ns", "p").pressure(false, "AboveHigh", long_ago),
            false,
        ),
        (
            evicting(10),
            TestPod::new("ns", "p").condition(
                kube_dmem_crds::POD_CONDITION_VRAM_PRESSURE,
                true,
                "AboveHigh",
                None,
            ),
            false,
        ),
        (evicting(10), above_high("p", long_ago).terminating(), false),
        (
            evicting(10),
            above_high("p", long_ago).phase("Failed"),
            false,
        ),
        (evicting(10), above_high("p", 200_000), false),
        (
            TestQuota::new("ns", "q").evict("0s", 10),
            above_high("p", long_ago),
            false,
        ),
    ];
    for (i, (quota, pod, want)) in cases.into_iter().enumerate() {
        let plan = decide(&observed(&[quota], &[pod], &[VRAM0]), &state(), now);
        assert_eq!(!plan.evictions.is_empty(), want, "case {i}");
    }
}

#[test]
fn evictions_go_longest_above_high_first_within_the_quota_rate() {
    let pods = [
        above_high("young", 500),
        above_high("old", 10),
        above_high("mid", 100),
        above_high("also-mid", 100),
    ];
    let mut obs = observed(&[evicting(2)], &pods, &[VRAM0]);
    let t0 = ts(10_000);
    let plan = decide(&obs, &state(), t0);
    assert_eq!(names(&plan), ["old", "also-mid"]);
    assert_eq!(plan.summary.rate_limited, 2);
    let outcomes: Vec<_> = plan
        .evictions
        .iter()
        .map(|e| (e.clone(), EvictionOutcome::Evicted))
        .collect();
    let (state1, _) = plan.remediation.record(&outcomes, t0);

    // The watch has not caught up yet: evicted pods still look eligible but are not re-evicted,
    // and the quota's budget is spent until the window moves.
    let again = decide(&obs, &state1, ts(10_030));
    assert!(again.evictions.is_empty());
    assert_eq!(again.wake_at, Some(ts(10_060)));

    obs.pods
        .retain(|p| p.facts.name == "young" || p.facts.name == "mid");
    let later = decide(&obs, &state1, ts(10_060));
    assert_eq!(names(&later), ["mid", "young"]);
}

#[test]
fn cluster_wide_limit_spans_quotas() {
    let quota = |name: &str, label: &str| {
        max_1gi(TestQuota::new("ns", name).match_label("q", label)).evict("1m", 100)
    };
    let pods: Vec<TestPod> = (0..4)
        .flat_map(|i| {
            [
                above_high(&format!("a{i}"), i * 10).label("q", "a"),
                above_high(&format!("b{i}"), i * 10 + 5).label("q", "b"),
            ]
        })
        .collect();
    let obs = observed(&[quota("qa", "a"), quota("qb", "b")], &pods, &[VRAM0]);
    let plan = decide(&obs, &RemediationState::new(3), ts(10_000));
    assert_eq!(names(&plan), ["a0", "b0", "a1"]);
    assert_eq!(plan.summary.rate_limited, 5);
    let none = decide(&obs, &RemediationState::new(0), ts(10_000));
    assert!(
        none.evictions.is_empty(),
        "a cluster limit of 0 disables evictions"
    );
}

#[test]
fn blocked_evictions_are_retried_later_and_surface_in_status() {
    let pods = [above_high("guarded", 0), above_high("next", 50)];
    let mut obs = observed(&[evicting(1)], &pods, &[VRAM0]);
    let t0 = ts(10_000);
    let first = decide(&obs, &state(), t0);
    assert_eq!(names(&first), ["guarded"]);
    store(&mut obs, &first);
    let refused = EvictionOutcome::Refused {
        reason: REASON_EVICTION_BLOCKED,
        message: "would violate the disruption budget".into(),
    };
    let (s1, news) = first
        .remediation
        .record(&[(first.evictions[0].clone(), refused.clone())], t0);
    assert_eq!(news, [true], "first refusal is announced");

    // Right after: the refused pod waits for its retry time and does not hold the budget.
    let second = decide(&obs, &s1, ts(10_001));
    assert_eq!(names(&second), ["next"]);
    let s = status_of(&second, "q");
    assert_eq!(cond(s, QUOTA_CONDITION_EVICTION_BLOCKED).0, "True");
    assert!(
        cond(s, QUOTA_CONDITION_EVICTION_BLOCKED)
            .2
            .contains("guarded")
    );
    store(&mut obs, &second);
    obs.pods.retain(|p| p.facts.name != "next");
    let (s2, _) = second.remediation.record(
        &[(second.evictions[0].clone(), EvictionOutcome::Evicted)],
        ts(10_001),
    );

    // After the retry delay and a freed budget it is tried again, flagged as a retry.
    let third = decide(&obs, &s2, ts(10_070));
    assert_eq!(names(&third), ["guarded"]);
    assert!(third.evictions[0].retry);
    let blocked = find_condition(
        Some(status_of(&third, "q")),
        QUOTA_CONDITION_EVICTION_BLOCKED,
    )
    .expect("present");
    assert_eq!(
        blocked.last_transition_time.0,
        ts(10_001),
        "still blocked: transition time kept"
    );
    let (s3, news) = third
        .remediation
        .record(&[(third.evictions[0].clone(), refused)], ts(10_070));
    assert_eq!(news, [false], "repeated refusals are not re-announced");
    let (s4, _) = s3.record(
        &[(third.evictions[0].clone(), EvictionOutcome::Evicted)],
        ts(10_200),
    );
    let fourth = decide(&obs, &s4, ts(10_201));
    assert_eq!(
        cond(status_of(&fourth, "q"), QUOTA_CONDITION_EVICTION_BLOCKED).0,
        "False"
    );
}
