use super::*;
use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::select::{Grant, QuotaFacts};

const G: u64 = 1 << 30;
const R0: &str = "drm/0000:03:00.0/vram0";
const R1: &str = "drm/0000:0a:00.0/vram";

fn quota(name: &str, priority: i32, limits: serde_json::Value) -> QuotaFacts {
    let q: DmemQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1",
        "kind": "DmemQuota",
        "metadata": {"name": name, "namespace": "ml", "creationTimestamp": "2026-11-01T10:00:00Z"},
        "spec": {"selector": {"matchLabels": {"team": "a"}}, "priority": priority, "limits": limits},
    }))
    .expect("valid quota fixture");
    QuotaFacts::from_quota(&q).expect("quota fixture passes validation")
}

fn pod(uid: &str, team: &str, grants: Vec<Grant>) -> ObservedPod {
    ObservedPod {
        facts: PodFacts {
            namespace: "ml".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            labels: [("team".to_owned(), team.to_owned())].into_iter().collect(),
            grants,
        },
        cgroup: Some(CgroupPath::new(&format!("/kubepods/pod{uid}")).expect("valid path")),
        in_force: BTreeMap::new(),
    }
}

fn write(uid: &str, file: CgroupFile, region: &str, value: DmemValue) -> LimitWrite {
    LimitWrite {
        cgroup: CgroupPath::new(&format!("/kubepods/pod{uid}")).expect("valid path"),
        file,
        region: region.into(),
        value,
    }
}

#[test]
fn a_governed_pod_gets_max_then_emulated_high_as_low() {
    let q = quota(
        "q",
        0,
        serde_json::json!([{"region": "drm/*/vram*", "max": "4Gi", "high": "3Gi", "low": "1Gi"}]),
    );
    let plan = plan(
        &[pod("u1", "a", vec![])],
        &[q],
        &[R0, R1],
        HighSupport::Emulated,
    );
    let p = &plan.pods[0];
    assert_eq!(p.governing.as_ref().map(|r| r.name.as_str()), Some("q"));
    assert_eq!(
        p.writes,
        vec![
            // Every hard limit first: the workload may allocate from either region meanwhile.
            write("u1", CgroupFile::DmemMax, R0, DmemValue::Bytes(4 * G)),
            write("u1", CgroupFile::DmemMax, R1, DmemValue::Bytes(4 * G)),
            write("u1", CgroupFile::DmemLow, R0, DmemValue::Bytes(3 * G)),
            write("u1", CgroupFile::DmemLow, R1, DmemValue::Bytes(3 * G)),
        ]
    );
}

#[test]
fn native_high_is_written_to_its_own_file() {
    let q = quota(
        "q",
        0,
        serde_json::json!([{"region": R0, "high": "3Gi", "low": "1Gi"}]),
    );
    let plan = plan(&[pod("u1", "a", vec![])], &[q], &[R0], HighSupport::Native);
    assert_eq!(
        plan.pods[0].writes,
        vec![
            write("u1", CgroupFile::DmemHigh, R0, DmemValue::Bytes(3 * G)),
            write("u1", CgroupFile::DmemLow, R0, DmemValue::Bytes(G)),
        ]
    );
}

#[test]
fn values_in_force_are_not_written_again() {
    let q = quota("q", 0, serde_json::json!([{"region": R0, "max": "4Gi"}]));
    let mut p = pod("u1", "a", vec![]);
    p.in_force.insert(
        R0.into(),
        InForce {
            max: DmemValue::Bytes(4 * G),
            ..InForce::default()
        },
    );
    let plan = plan(&[p], &[q], &[R0], HighSupport::Emulated);
    assert_eq!(plan.write_count(), 0);
}

#[test]
fn an_ungoverned_pod_is_reset_to_defaults() {
    let mut p = pod("u1", "b", vec![]);
    p.in_force.insert(
        R0.into(),
        InForce {
            max: DmemValue::Bytes(G),
            low: DmemValue::Bytes(G),
            min: DmemValue::Bytes(0),
            high: None,
        },
    );
    let plan = plan(&[p], &[], &[R0], HighSupport::Emulated);
    assert_eq!(plan.pods[0].governing, None);
    assert_eq!(
        plan.pods[0].writes,
        vec![
            write("u1", CgroupFile::DmemMax, R0, DmemValue::Max),
            write("u1", CgroupFile::DmemLow, R0, DmemValue::Bytes(0)),
        ]
    );
}

#[test]
fn a_grant_caps_max_even_without_a_quota() {
    let grant = Grant {
        region: R1.into(),
        bytes: 2 * G,
    };
    let plan = plan(
        &[pod("u1", "b", vec![grant])],
        &[],
        &[R0, R1],
        HighSupport::Emulated,
    );
    assert_eq!(
        plan.pods[0].writes,
        vec![write(
            "u1",
            CgroupFile::DmemMax,
            R1,
            DmemValue::Bytes(2 * G)
        )]
    );
}

#[test]
fn every_region_a_pod_holds_units_on_gets_its_max() {
    // Two containers, each granted units of a different region (PodResources lists both).
    let grants = vec![
        Grant {
            region: R0.into(),
            bytes: G,
        },
        Grant {
            region: R1.into(),
            bytes: 3 * G,
        },
    ];
    let plan = plan(
        &[pod("u1", "b", grants)],
        &[],
        &[R0, R1],
        HighSupport::Emulated,
    );
    assert_eq!(
        plan.pods[0].writes,
        vec![
            write("u1", CgroupFile::DmemMax, R0, DmemValue::Bytes(G)),
            write("u1", CgroupFile::DmemMax, R1, DmemValue::Bytes(3 * G)),
        ]
    );
}

#[test]
fn a_quota_cannot_raise_a_pod_above_its_grant() {
    let q = quota("q", 0, serde_json::json!([{"region": "*", "max": "8Gi"}]));
    let grant = Grant {
        region: R0.into(),
        bytes: 2 * G,
    };
    let plan = plan(
        &[pod("u1", "a", vec![grant])],
        &[q],
        &[R0],
        HighSupport::Emulated,
    );
    assert_eq!(
        plan.pods[0].writes,
        vec![write(
            "u1",
            CgroupFile::DmemMax,
            R0,
            DmemValue::Bytes(2 * G)
        )]
    );
}

#[test]
fn a_pod_without_a_cgroup_gets_desired_values_but_no_writes() {
    let q = quota("q", 0, serde_json::json!([{"region": R0, "max": "4Gi"}]));
    let mut p = pod("u1", "a", vec![]);
    p.cgroup = None;
    let plan = plan(&[p], &[q], &[R0], HighSupport::Emulated);
    assert!(plan.pods[0].writes.is_empty());
    assert_eq!(plan.pods[0].desired[R0].max, Some(4 * G));
}

#[test]
fn the_higher_priority_quota_decides() {
    let low = quota("low", 0, serde_json::json!([{"region": R0, "max": "1Gi"}]));
    let high = quota("high", 5, serde_json::json!([{"region": R0, "max": "6Gi"}]));
    let plan = plan(
        &[pod("u1", "a", vec![])],
        &[low, high],
        &[R0],
        HighSupport::Emulated,
    );
    assert_eq!(
        plan.pods[0].writes,
        vec![write(
            "u1",
            CgroupFile::DmemMax,
            R0,
            DmemValue::Bytes(6 * G)
        )]
    );
}
