//! Table tests for the conditions core: no write without a status or reason change, transition
//! times kept while the status holds, the numbers in the messages.

use k8s_openapi::api::core::v1::PodCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::select::{PodFacts, QuotaRef};
use kube_dmem_crds::{
    POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE, PressureTier,
};

use super::*;
use crate::cgroup::format::DmemValue;
use crate::node::{LimitsOutcome, PodReport, RegionReport};
use crate::pressure::RegionReading;

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
            grant: None,
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
            },
            tier,
        }],
        tier,
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
    // (tier, expected status, write wanted, transition time expected, warning)
    let cases = [
        (PressureTier::Unprotected, "False", true, t(0), false),
        (PressureTier::AboveHigh, "True", true, t(10), true),
        (PressureTier::AtMax, "True", true, t(10), true),
        (PressureTier::Contended, "True", true, t(10), true),
        (PressureTier::Idle, "False", true, t(10), false),
    ];
    let mut current = written(&calm);
    let mut last_transition = t(0);
    for (i, (tier, status, write, _, warning)) in cases.iter().enumerate() {
        let now = t(10 * (i as i64 + 1));
        let d = desired(
            &report(*tier, LimitsOutcome::Applied, 3 << 30),
            &current,
            now,
        );
        assert_eq!(d.pressure.status, *status, "{tier}");
        assert_eq!(d.pressure.reason.as_deref(), Some(tier.as_str()));
        assert_eq!(d.needs_write(), *write, "{tier}");
        let previous = current
            .iter()
            .find(|c| c.type_ == POD_CONDITION_VRAM_PRESSURE)
            .expect("written");
        if previous.status != *status {
            last_transition = now;
        }
        assert_eq!(
            d.pressure.last_transition_time,
            Some(Time(last_transition)),
            "{tier}"
        );
        let tr = &d.transitions[0];
        assert_eq!(
            (tr.condition, tr.warning, tr.had_previous),
            (POD_CONDITION_VRAM_PRESSURE, *warning, true)
        );
        // The limits condition did not change: no transition for it, its time kept.
        assert_eq!(d.transitions.len(), 1);
        assert_eq!(d.limits.last_transition_time, Some(Time(t(0))));
        current = written(&d);
    }
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
        assert_eq!(tr.warning, status == "False");
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
