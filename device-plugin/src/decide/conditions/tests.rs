//! Table tests for the conditions core: no write without a status or reason change, transition
//! times kept while the status holds, the numbers in the messages.

use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::select::{PodFacts, QuotaRef};
use kube_dmem_crds::{
    POD_CONDITION_VRAM_ABOVE_HIGH, POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE,
    PressureTier,
};

use super::*;
use crate::cgroup::format::DmemValue;
use crate::decide::pressure::RegionReading;
use crate::round::{LimitsOutcome, PodReport, RegionReport};

const R0: &str = "drm/0000:03:00.0/vram0";

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
}

fn report(tier: PressureTier, outcome: LimitsOutcome, usage: u64) -> PodReport {
    PodReport {
        facts: PodFacts {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            labels: Default::default(),
            grants: Vec::new(),
        },
        governing: Some(QuotaRef {
            namespace: "ns".into(),
            name: "q".into(),
        }),
        outcome,
        regions: vec![RegionReport {
            region: R0.into(),
            desired: Default::default(),
            reading: RegionReading {
                usage,
                max: Some(4 << 30),
                high: Some(2 << 30),
                low: 0,
                min: 0,
                declared_low: 0,
                capacity: 8 << 30,
                region_usage: usage,
                peak: None,
            },
            tier,
        }],
        tier,
        read_failure: None,
    }
}

/// The conditions a pod carries after `desired` was written.
fn written(d: &Desired) -> Vec<PodCondition> {
    vec![
        PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..Default::default()
        },
        d.pressure.clone(),
        d.above_high.clone(),
        d.limits.clone(),
    ]
}

#[test]
fn first_report_writes_both_conditions_with_now() {
    let d = desired(
        &report(PressureTier::Protected, LimitsOutcome::Applied, 1 << 30),
        &[],
        t(0),
    );
    assert!(d.needs_write());
    assert_eq!(d.pressure.type_, POD_CONDITION_VRAM_PRESSURE);
    assert_eq!(d.pressure.status, "False");
    assert_eq!(d.pressure.reason.as_deref(), Some("Protected"));
    assert_eq!(d.limits.type_, POD_CONDITION_VRAM_LIMITS_APPLIED);
    assert_eq!(d.limits.status, "True");
    assert_eq!(d.limits.reason.as_deref(), Some("Applied"));
    assert_eq!(d.pressure.last_transition_time, Some(Time(t(0))));
    assert!(
        d.transitions
            .iter()
            .all(|tr| !tr.had_previous && !tr.warning)
    );
}

#[test]
fn unchanged_status_and_reason_need_no_write_even_when_numbers_move() {
    let first = desired(
        &report(PressureTier::Unprotected, LimitsOutcome::Applied, 1 << 30),
        &[],
        t(0),
    );
    let current = written(&first);
    // (tier, usage) pairs that keep status and reason: only the message numbers differ.
    for usage in [1 << 30, (1 << 30) + 4096, 3 << 29] {
        let again = desired(
            &report(PressureTier::Unprotected, LimitsOutcome::Applied, usage),
            &current,
            t(60),
        );
        assert!(!again.needs_write(), "usage {usage}");
        assert_eq!(again.pressure.last_transition_time, Some(Time(t(0))));
        assert_eq!(again.key(), first.key());
    }
}

#[test]
fn pressure_transitions_and_transition_times() {
    let calm = desired(
        &report(PressureTier::Protected, LimitsOutcome::Applied, 1 << 30),
        &[],
        t(0),
    );
    // Each row is evaluated at t(10 * (row + 1)). The transition time moves only when the status
    // does: AboveHigh at t(20) turns it True; AtMax and Contended keep t(20); Idle at t(50) turns
    // it False. Usage stays below high, so VRAMAboveHigh never changes here.
    // (tier, expected status, transition time expected, warning)
    let cases = [
        (PressureTier::Unprotected, "False", t(0), false),
        (PressureTier::AboveHigh, "True", t(20), true),
        (PressureTier::AtMax, "True", t(20), true),
        (PressureTier::Contended, "True", t(20), true),
        (PressureTier::Idle, "False", t(50), false),
    ];
    let mut current = written(&calm);
    for (i, (tier, status, since, warning)) in cases.iter().enumerate() {
        let now = t(10 * (i as i64 + 1));
        let d = desired(
            &report(*tier, LimitsOutcome::Applied, 1 << 30),
            &current,
            now,
        );
        assert_eq!(d.pressure.status, *status, "{tier}");
        assert_eq!(d.pressure.reason.as_deref(), Some(tier.as_str()));
        assert!(d.needs_write(), "{tier}: the reason changed");
        assert_eq!(
            d.pressure.last_transition_time,
            Some(Time(*since)),
            "{tier}"
        );
        assert_eq!(d.transitions.len(), 1, "{tier}: {:?}", d.transitions);
        let tr = &d.transitions[0];
        assert_eq!(
            (tr.condition, tr.warning, tr.had_previous),
            (POD_CONDITION_VRAM_PRESSURE, *warning, true)
        );
        // The other conditions did not change: their times are kept.
        assert_eq!(d.limits.last_transition_time, Some(Time(t(0))));
        assert_eq!(d.above_high.last_transition_time, Some(Time(t(0))));
        current = written(&d);
    }
}

#[test]
fn above_high_time_is_when_usage_crossed_high_whatever_the_tier_did() {
    const G: u64 = 1 << 30;
    // (at, tier, usage; high is 2 GiB) -> (VRAMAboveHigh status, its transition time)
    let steps = [
        (0, PressureTier::Contended, G, "False", 0),
        (10, PressureTier::Contended, G, "False", 0),
        (20, PressureTier::AboveHigh, 3 * G, "True", 20),
        (30, PressureTier::AtMax, 4 * G, "True", 20),
        (40, PressureTier::Contended, 3 * G, "True", 20),
        (50, PressureTier::Contended, G, "False", 50),
    ];
    let mut current = Vec::new();
    for (at, tier, usage, status, since) in steps {
        let d = desired(
            &report(tier, LimitsOutcome::Applied, usage),
            &current,
            t(at),
        );
        assert_eq!(d.above_high.type_, POD_CONDITION_VRAM_ABOVE_HIGH);
        assert_eq!(d.above_high.status, status, "at {at}");
        assert_eq!(
            d.above_high.last_transition_time,
            Some(Time(t(since))),
            "at {at}"
        );
        // VRAMPressure has been True since t(0) throughout: it cannot tell when high was crossed.
        assert_eq!(d.pressure.status, "True");
        assert_eq!(d.pressure.last_transition_time, Some(Time(t(0))));
        // Crossing high is told by the VRAMPressure event, not by one of its own.
        assert!(
            d.transitions
                .iter()
                .filter(|tr| tr.condition == POD_CONDITION_VRAM_ABOVE_HIGH)
                .all(|tr| !tr.wants_event())
        );
        current = written(&d);
    }
}

#[test]
fn unreadable_kernel_files_make_pressure_unknown_not_false() {
    let calm = desired(
        &report(PressureTier::AboveHigh, LimitsOutcome::Applied, 3 << 30),
        &[],
        t(0),
    );
    let mut failing = report(PressureTier::Idle, LimitsOutcome::Applied, 0);
    failing.read_failure = Some("reading /sys/fs/cgroup/p/dmem.current: EIO".into());
    let d = desired(&failing, &written(&calm), t(10));
    for c in [&d.pressure, &d.above_high] {
        assert_eq!(c.status, "Unknown", "{}", c.type_);
        assert_eq!(c.reason.as_deref(), Some("KernelReadError"));
        assert!(
            c.message
                .as_deref()
                .unwrap_or_default()
                .contains("dmem.current: EIO")
        );
    }
    let events: Vec<_> = d.transitions.iter().filter(|t| t.wants_event()).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].warning);
}

#[test]
fn limits_outcomes_map_to_status_reason_and_message() {
    let cases = [
        (
            LimitsOutcome::Applied,
            "True",
            "Applied",
            "limits in force (DmemQuota ns/q)",
        ),
        (
            LimitsOutcome::NotGoverned,
            "True",
            "NotGoverned",
            "no DmemQuota governs",
        ),
        (
            LimitsOutcome::CgroupNotFound,
            "False",
            "CgroupNotFound",
            "cgroup was not found",
        ),
        (
            LimitsOutcome::MaxBelowUsage {
                region: R0.into(),
                wanted: DmemValue::Bytes(1 << 30),
                actual: DmemValue::Max,
            },
            "False",
            "MaxBelowUsage",
            "dmem.max stays max instead of 1073741824",
        ),
        (
            LimitsOutcome::DmemUnavailable,
            "False",
            "DmemUnavailable",
            "no usable dmem",
        ),
        (
            LimitsOutcome::WriteFailed {
                reason: "WriteCgroupFile",
                message: "writing dmem.max: ENODEV".into(),
            },
            "False",
            "WriteFailed",
            "ENODEV",
        ),
        (
            LimitsOutcome::ReadFailed {
                reason: "DmemParseError",
                message: "parsing /sys/fs/cgroup/p/dmem.max: line 2: no value".into(),
            },
            "Unknown",
            "KernelReadError",
            "line 2: no value; the pod's limits are left as they are",
        ),
        (
            LimitsOutcome::QuotaInvalid {
                quota: QuotaRef {
                    namespace: "ns".into(),
                    name: "q".into(),
                },
                error: "high above max".into(),
                last_valid_in_force: true,
            },
            "True",
            "QuotaInvalid",
            "its last valid spec stays in force",
        ),
        (
            LimitsOutcome::QuotaInvalid {
                quota: QuotaRef {
                    namespace: "ns".into(),
                    name: "q".into(),
                },
                error: "spec: missing".into(),
                last_valid_in_force: false,
            },
            "Unknown",
            "QuotaInvalid",
            "left as they are",
        ),
        (
            LimitsOutcome::GrantUnknown {
                why: "PodResources lists no units for the pod".into(),
            },
            "Unknown",
            "GrantUnknown",
            "which it holds is unknown: PodResources lists no units for the pod; its limits are left as they are",
        ),
    ];
    for (outcome, status, reason, message) in cases {
        let d = desired(&report(PressureTier::Idle, outcome.clone(), 0), &[], t(0));
        assert_eq!(d.limits.status, status, "{outcome:?}");
        assert_eq!(d.limits.reason.as_deref(), Some(reason));
        let text = d.limits.message.clone().unwrap_or_default();
        assert!(text.contains(message), "{text:?} lacks {message:?}");
        let tr = d
            .transitions
            .iter()
            .find(|tr| tr.condition == POD_CONDITION_VRAM_LIMITS_APPLIED)
            .expect("first report is a transition");
        assert_eq!(
            tr.warning,
            !matches!(reason, "Applied" | "NotGoverned"),
            "{reason}"
        );
    }
}

#[test]
fn reason_change_with_the_same_status_writes_but_keeps_the_time() {
    let first = desired(
        &report(PressureTier::Idle, LimitsOutcome::CgroupNotFound, 0),
        &[],
        t(0),
    );
    let outcome = LimitsOutcome::MaxBelowUsage {
        region: R0.into(),
        wanted: DmemValue::Bytes(1),
        actual: DmemValue::Max,
    };
    let d = desired(
        &report(PressureTier::Idle, outcome, 0),
        &written(&first),
        t(30),
    );
    assert!(d.needs_write());
    assert_eq!(d.limits.last_transition_time, Some(Time(t(0))));
    assert_eq!(d.limits.reason.as_deref(), Some("MaxBelowUsage"));
}

#[test]
fn pressure_message_carries_region_and_numbers() {
    let d = desired(
        &report(PressureTier::AboveHigh, LimitsOutcome::Applied, 3 << 30),
        &[],
        t(0),
    );
    let msg = d.pressure.message.unwrap_or_default();
    assert!(msg.contains(R0), "{msg}");
    assert!(msg.contains(&(3u64 << 30).to_string()), "{msg}");
    assert!(msg.contains(&(2u64 << 30).to_string()), "{msg}");
    assert!(msg.contains(&(4u64 << 30).to_string()), "{msg}");
}
