//! The reconcile loop against the in-process simulator with a recording API boundary: pods and
//! quotas in, condition patches and events out.

use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::{DmemQuota, POD_CONDITION_VRAM_LIMITS_APPLIED, POD_CONDITION_VRAM_PRESSURE};
use kube_dmem_sim::Profile;
use tokio::sync::watch;

use super::agent::Agent;
use super::backend::Backend;
use super::cgroup_watch::CgroupSignal;
use super::drive::{Loop, NEAR_POLL, ObjectSource};
use super::health::Health;
use super::prestart::RoundRequest;
use crate::cgroup::CgroupPath;
use crate::cluster::api::{ActError, ApiSink, ApiWrite};
use crate::cluster::objects::Objects;
use crate::decide::pressure::PressureThresholds;
use crate::kubelet::decide::grants::Grants;
use crate::kubelet::decide::inventory::Inventory;
use crate::metrics::Metrics;
use crate::round::RoundConfig;

const R0: &str = "drm/0000:03:00.0/vram0";
const UID: &str = "6f1c2a39-1d5e-4f6a-8b7c-9d0e1f2a3b4c";

/// Records every write; the "API server" of these tests.
#[derive(Default)]
struct Recorder(Mutex<Vec<ApiWrite>>);

impl Recorder {
    fn take(&self) -> Vec<ApiWrite> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

#[tonic::async_trait]
impl ApiSink for Recorder {
    async fn write(&self, write: &ApiWrite) -> Result<(), ActError> {
        self.0.lock().expect("lock").push(write.clone());
        Ok(())
    }
}

fn quota() -> DmemQuota {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": "ml", "creationTimestamp": "2026-11-01T10:00:00Z"},
        "spec": {"selector": {"matchLabels": {"app": "train"}},
                 "limits": [{"region": "*", "max": "8Gi", "high": "4Gi"}]}
    }))
    .expect("quota")
}

fn pod(name: &str, uid: &str, usage: &str, phase: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": uid, "labels": {"app": "train"},
                     "annotations": {"sim.kube-dmem.io/usage": format!("{R0}={usage}")}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": phase, "qosClass": "BestEffort"}
    }))
    .expect("pod")
}

fn agent() -> Agent {
    agent_in(&mut prometheus_client::registry::Registry::default())
}

/// An agent over the simulator with its metrics in `registry`.
fn agent_in(registry: &mut prometheus_client::registry::Registry) -> Agent {
    let (backend, high) =
        Backend::sim(Profile::Current, &[(R0.to_owned(), 16 << 30)]).expect("sim");
    let cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high,
        thresholds: PressureThresholds::default(),
    };
    let (inventory, _) = watch::channel(Inventory::default());
    Agent::new(
        "n1".into(),
        backend,
        cfg,
        Metrics::register(registry),
        inventory,
    )
}

/// What the watch would bring back after the writes: the applied conditions on the pod.
fn feed_back(pod: &mut Pod, writes: &[ApiWrite]) {
    for w in writes {
        if let ApiWrite::PodConditions {
            name, conditions, ..
        } = w
            && Some(name) == pod.metadata.name.as_ref()
        {
            pod.status.get_or_insert_default().conditions = Some(conditions.clone());
        }
    }
}

fn condition<'a>(writes: &'a [ApiWrite], type_: &str) -> Option<(&'a str, &'a str)> {
    writes.iter().find_map(|w| match w {
        ApiWrite::PodConditions { conditions, .. } => conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.as_str(), c.reason.as_deref().unwrap_or_default())),
        _ => None,
    })
}

fn events(writes: &[ApiWrite]) -> Vec<(bool, &str)> {
    writes
        .iter()
        .filter_map(|w| match w {
            ApiWrite::Event {
                warning, reason, ..
            } => Some((*warning, reason.as_str())),
            _ => None,
        })
        .collect()
}

/// The parts of an agent loop over `objects` and `sink` without kubelet or DRA: polls at the
/// defaults, a resync an hour apart.
fn loop_parts<'a>(
    agent: Agent,
    objects: &'a dyn ObjectSource,
    sink: &'a dyn ApiSink,
    rounds: tokio::sync::mpsc::Receiver<RoundRequest>,
) -> Loop<'a> {
    Loop {
        agent,
        objects,
        sink,
        trigger: Arc::new(tokio::sync::Notify::new()),
        new_cgroup: Arc::new(CgroupSignal::default()),
        rounds,
        kubelet: None,
        dra: None,
        poll_interval: std::time::Duration::from_secs(1),
        near_poll_interval: NEAR_POLL,
        resync: std::time::Duration::from_secs(3600),
        health: Arc::new(Health::default()),
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("time")
}

#[tokio::test]
async fn conditions_follow_pressure_with_zero_writes_in_steady_state() {
    let mut agent = agent();
    let sink = Recorder::default();
    let mut p = pod("train-0", UID, "2Gi", "Running");
    let done = pod(
        "done-0",
        "0c1b2a39-1d5e-4f6a-8b7c-000000000000",
        "1Gi",
        "Succeeded",
    );
    let objects = |p: &Pod| Objects {
        pods: vec![Arc::new(p.clone()), Arc::new(done.clone())],
        quotas: vec![quota()],
        ..Objects::default()
    };

    // First round: node regions and both conditions; healthy first reports make no events.
    let report = agent
        .round(&objects(&p), None, &sink, t(0))
        .await
        .expect("round");
    assert_eq!(report.pods.len(), 1, "finished pods are skipped");
    let writes = sink.take();
    assert!(writes.iter().any(|w| matches!(w, ApiWrite::NodeRegions { value, .. } if value == &format!("{R0}={}", 16u64 << 30))));
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("True", "Applied"))
    );
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_PRESSURE).map(|c| c.0),
        Some("False")
    );
    assert!(events(&writes).is_empty(), "{writes:?}");
    // The write is not repeated before the watch brings it back...
    agent
        .round(&objects(&p), None, &sink, t(1))
        .await
        .expect("round");
    assert!(sink.take().is_empty());
    // ...nor after: steady state makes zero writes, round after round.
    feed_back(&mut p, &writes);
    for i in 2..5 {
        agent
            .round(&objects(&p), None, &sink, t(i))
            .await
            .expect("round");
        assert!(sink.take().is_empty(), "round {i}");
    }
    // Above high (4Gi): VRAMPressure True, AboveHigh, with a Warning event.
    p.metadata.annotations.get_or_insert_default().insert(
        kube_dmem_crds::SIM_USAGE_ANNOTATION.into(),
        format!("{R0}=6Gi"),
    );
    agent
        .round(&objects(&p), None, &sink, t(10))
        .await
        .expect("round");
    let writes = sink.take();
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_PRESSURE),
        Some(("True", "AboveHigh"))
    );
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("True", "Applied"))
    );
    assert_eq!(events(&writes), [(true, "AboveHigh")]);
    feed_back(&mut p, &writes);
    agent
        .round(&objects(&p), None, &sink, t(11))
        .await
        .expect("round");
    assert!(sink.take().is_empty(), "pressure holds: no write");
    // Usage drops: back to False, a Normal event.
    p.metadata.annotations.get_or_insert_default().insert(
        kube_dmem_crds::SIM_USAGE_ANNOTATION.into(),
        format!("{R0}=1Gi"),
    );
    agent
        .round(&objects(&p), None, &sink, t(20))
        .await
        .expect("round");
    let writes = sink.take();
    let (status, _) = condition(&writes, POD_CONDITION_VRAM_PRESSURE).expect("pressure written");
    assert_eq!(status, "False");
    assert_eq!(events(&writes).first().map(|e| e.0), Some(false));
    feed_back(&mut p, &writes);
    agent
        .round(&objects(&p), None, &sink, t(21))
        .await
        .expect("round");
    assert!(sink.take().is_empty());
}

#[tokio::test]
async fn a_resync_rewrites_conditions_someone_removed() {
    let mut agent = agent();
    let sink = Recorder::default();
    let p = pod("train-0", UID, "1Gi", "Running");
    let objects = Objects {
        pods: vec![Arc::new(p)],
        quotas: vec![quota()],
        ..Objects::default()
    };
    agent
        .round(&objects, None, &sink, t(0))
        .await
        .expect("round");
    assert!(!sink.take().is_empty());
    // The cache never shows our conditions (say, they were removed): only a resync rewrites.
    agent
        .round(&objects, None, &sink, t(1))
        .await
        .expect("round");
    assert!(sink.take().is_empty());
    agent.forget_writes();
    agent
        .round(&objects, None, &sink, t(60))
        .await
        .expect("round");
    let writes = sink.take();
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("True", "Applied"))
    );
    assert!(
        !writes
            .iter()
            .any(|w| matches!(w, ApiWrite::NodeRegions { .. })),
        "regions unchanged"
    );
}

#[tokio::test]
async fn dmem_unavailable_is_reported_on_every_pod_and_once_on_the_node() {
    let cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high: kube_dmem_crds::limits::HighSupport::Emulated,
        thresholds: PressureThresholds::default(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let (inventory, _) = watch::channel(Inventory::default());
    let backend = Backend::Unavailable {
        why: "no dmem in cgroup.controllers".into(),
    };
    let mut agent = Agent::new(
        "n1".into(),
        backend,
        cfg,
        Metrics::register(&mut registry),
        inventory,
    );
    let sink = Recorder::default();
    let mut p = pod("train-0", UID, "1Gi", "Running");
    let objects = |p: &Pod| Objects {
        pods: vec![Arc::new(p.clone())],
        quotas: vec![quota()],
        ..Objects::default()
    };
    agent
        .round(&objects(&p), None, &sink, t(0))
        .await
        .expect("round");
    let writes = sink.take();
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("False", "DmemUnavailable"))
    );
    assert!(writes.iter().any(
        |w| matches!(w, ApiWrite::Event { regarding, warning: true, reason, .. }
        if regarding.kind.as_deref() == Some("Node") && reason == "DmemUnavailable")
    ));
    feed_back(&mut p, &writes);
    agent
        .round(&objects(&p), None, &sink, t(1))
        .await
        .expect("round");
    assert!(sink.take().is_empty(), "the node event is sent once");
}

/// Refuses the node annotation with a 403 (the agent's RBAC lacks `nodes/patch`); records the rest.
#[derive(Default)]
struct ForbidsNode {
    node_attempts: Mutex<u32>,
    ok: Recorder,
}

#[tonic::async_trait]
impl ApiSink for ForbidsNode {
    async fn write(&self, write: &ApiWrite) -> Result<(), ActError> {
        if let ApiWrite::NodeRegions { node, .. } = write {
            *self.node_attempts.lock().expect("lock") += 1;
            let status = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
            return Err(ActError::PatchNode {
                node: node.clone(),
                source: kube::Error::Api(status.boxed()),
            });
        }
        self.ok.write(write).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_node_annotation_backs_off_without_holding_back_conditions() {
    use std::time::Duration;
    let mut agent = agent();
    let sink = ForbidsNode::default();
    let mut p = pod("train-0", UID, "1Gi", "Running");
    let objects = |p: &Pod| Objects {
        pods: vec![Arc::new(p.clone())],
        quotas: vec![quota()],
        ..Objects::default()
    };
    let attempts = || *sink.node_attempts.lock().expect("lock");
    // Rounds every 100 ms (as new cgroups and watch events cause) for 10 s: the annotation is
    // tried at 0, 1, 3 and 7 s (1 s doubling), not on every round.
    let mut tried_at = Vec::new();
    for tick in 0..100u32 {
        let before = attempts();
        if tick == 50 {
            // Pressure starts halfway, while the annotation is backing off.
            p.metadata.annotations.get_or_insert_default().insert(
                kube_dmem_crds::SIM_USAGE_ANNOTATION.into(),
                format!("{R0}=6Gi"),
            );
        }
        agent
            .round(&objects(&p), None, &sink, t(i64::from(tick)))
            .await
            .expect("round");
        if attempts() > before {
            tried_at.push(tick);
        }
        let writes = sink.ok.take();
        if tick == 0 {
            assert_eq!(
                condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
                Some(("True", "Applied")),
                "conditions go out although the annotation failed"
            );
        }
        if tick == 50 {
            assert_eq!(
                condition(&writes, POD_CONDITION_VRAM_PRESSURE),
                Some(("True", "AboveHigh")),
                "a condition change is not delayed by the annotation's backoff"
            );
        }
        feed_back(&mut p, &writes);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    assert_eq!(tried_at, [0, 10, 30, 70]);
}

fn quota_with(limits: serde_json::Value) -> DmemQuota {
    let mut q = quota();
    q.metadata.uid = Some("quid-q".into());
    q.spec.limits = serde_json::from_value(limits).expect("limits");
    q
}

fn max_of(report: &crate::round::RoundReport, region: &str) -> Option<u64> {
    report.pods[0]
        .regions
        .iter()
        .find(|r| r.region == region)
        .and_then(|r| r.reading.max)
}

#[tokio::test]
async fn an_invalid_quota_keeps_its_last_valid_spec_and_says_so() {
    let mut agent = agent();
    let sink = Recorder::default();
    let p = pod("train-0", UID, "1Gi", "Running");
    let objects = |q: DmemQuota| Objects {
        pods: vec![Arc::new(p.clone())],
        quotas: vec![q],
        ..Objects::default()
    };
    let valid = quota_with(serde_json::json!([{"region": "*", "max": "8Gi", "high": "4Gi"}]));
    let report = agent
        .round(&objects(valid), None, &sink, t(0))
        .await
        .expect("round");
    assert_eq!(max_of(&report, R0), Some(8 << 30));
    sink.take();
    // Edited into a spec the rules reject (high above max; an older CRD let it through).
    let broken = quota_with(serde_json::json!([{"region": "*", "max": "2Gi", "high": "4Gi"}]));
    let report = agent
        .round(&objects(broken.clone()), None, &sink, t(10))
        .await
        .expect("round");
    assert_eq!(
        max_of(&report, R0),
        Some(8 << 30),
        "the last valid max stays"
    );
    assert_eq!(report.writes, 0);
    let writes = sink.take();
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("True", "QuotaInvalid"))
    );
    // Deleting the quota releases the pod: its limits go back to the kernel defaults.
    let report = agent
        .round(
            &Objects {
                pods: vec![Arc::new(p.clone())],
                ..Objects::default()
            },
            None,
            &sink,
            t(20),
        )
        .await
        .expect("round");
    assert_eq!(max_of(&report, R0), None);
    assert_eq!(
        condition(&sink.take(), POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("True", "NotGoverned"))
    );
}

#[tokio::test]
async fn an_undecodable_quota_never_seen_valid_leaves_its_pods_alone() {
    let mut agent = agent();
    let sink = Recorder::default();
    let p = pod("train-0", UID, "1Gi", "Running");
    let valid = quota_with(serde_json::json!([{"region": "*", "max": "8Gi"}]));
    agent
        .round(
            &Objects {
                pods: vec![Arc::new(p.clone())],
                quotas: vec![valid],
                ..Objects::default()
            },
            None,
            &sink,
            t(0),
        )
        .await
        .expect("round");
    sink.take();
    // A restarted agent (no memory) meets the quota as an object that no longer deserializes.
    let mut agent = agent.restarted();
    let undecodable = crate::cluster::objects::UndecodableQuota {
        key: kube_dmem_crds::select::QuotaRef {
            namespace: "ml".into(),
            name: "q".into(),
        },
        uid: Some("quid-q".into()),
        selector: None,
        error: "spec.limits[0].max: quantities must match the regular expression".into(),
    };
    let report = agent
        .round(
            &Objects {
                pods: vec![Arc::new(p.clone())],
                undecodable: vec![undecodable],
                ..Objects::default()
            },
            None,
            &sink,
            t(10),
        )
        .await
        .expect("round");
    assert_eq!(report.writes, 0);
    assert_eq!(max_of(&report, R0), Some(8 << 30), "not reset to max");
    assert_eq!(
        condition(&sink.take(), POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("Unknown", "QuotaInvalid"))
    );
}

#[tokio::test]
async fn every_region_a_pod_holds_units_on_is_limited() {
    const R1: &str = "drm/0000:0a:00.0/vram0";
    let (backend, high) = Backend::sim(
        Profile::Current,
        &[(R0.to_owned(), 16 << 30), (R1.to_owned(), 16 << 30)],
    )
    .expect("sim");
    let cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high,
        thresholds: PressureThresholds::default(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let (inventory, _) = watch::channel(Inventory::default());
    let mut agent = Agent::new(
        "n1".into(),
        backend,
        cfg,
        Metrics::register(&mut registry),
        inventory,
    );
    let sink = Recorder::default();
    // Two containers, each allocated units of a different region: PodResources lists both.
    let grants = Grants {
        by_uid: [(
            UID.to_owned(),
            vec![
                crate::kubelet::decide::grants::Grant {
                    region: R0.into(),
                    bytes: 2 << 30,
                },
                crate::kubelet::decide::grants::Grant {
                    region: R1.into(),
                    bytes: 3 << 30,
                },
            ],
        )]
        .into(),
        ..Grants::default()
    };
    let mut p = pod("train-0", UID, "1Gi", "Running");
    p.metadata.labels = None;
    let report = agent
        .round(
            &Objects {
                pods: vec![Arc::new(p)],
                ..Objects::default()
            },
            Some(&grants),
            &sink,
            t(0),
        )
        .await
        .expect("round");
    assert_eq!(max_of(&report, R0), Some(2 << 30));
    assert_eq!(max_of(&report, R1), Some(3 << 30));
}

#[test]
fn a_real_node_hands_out_the_regions_device_nodes_the_simulator_none() {
    // A fake node /dev: the GPU at 0000:03:00.0 with by-path links, as udev makes them.
    let dev = tempfile::tempdir().expect("tempdir");
    let dri = dev.path().join("dri");
    std::fs::create_dir_all(dri.join("by-path")).expect("mkdir");
    for node in ["card1", "renderD128"] {
        std::fs::write(dri.join(node), "").expect("node");
    }
    std::os::unix::fs::symlink("../card1", dri.join("by-path/pci-0000:03:00.0-card"))
        .expect("link");
    std::os::unix::fs::symlink("../renderD128", dri.join("by-path/pci-0000:03:00.0-render"))
        .expect("link");
    let sysfs = super::BackendConfig::Sysfs("/sys/fs/cgroup".into());
    let nodes: Vec<String> = super::device_nodes(&sysfs, dev.path())
        .for_pci("0000:03:00.0")
        .into_iter()
        .map(|d| d.host_path)
        .collect();
    assert_eq!(nodes, ["/dev/dri/card1", "/dev/dri/renderD128"]);
    let sim = super::BackendConfig::Sim {
        profile: Profile::Current,
        regions: vec![(R0.to_owned(), 16 << 30)],
    };
    assert!(
        super::device_nodes(&sim, dev.path())
            .for_pci("0000:03:00.0")
            .is_empty()
    );
}

#[tokio::test]
async fn an_unknown_grant_keeps_the_limit_and_is_reported_only_once_it_lasts() {
    let mut agent = agent();
    let sink = Recorder::default();
    let mut p = pod("train-0", UID, "1Gi", "Running");
    p.metadata.labels = None;
    p.spec.as_mut().expect("spec").containers[0].resources = Some(
        serde_json::from_value(serde_json::json!({"limits": {crate::kubelet::RESOURCE_NAME: "2"}}))
            .expect("resources"),
    );
    let objects = |p: &Pod| Objects {
        pods: vec![Arc::new(p.clone())],
        ..Objects::default()
    };
    let granted = Grants {
        by_uid: [(
            UID.to_owned(),
            vec![crate::kubelet::decide::grants::Grant {
                region: R0.into(),
                bytes: 2 << 30,
            }],
        )]
        .into(),
        listing: crate::kubelet::decide::grants::Listing::Listed,
        ..Grants::default()
    };
    let report = agent
        .round(&objects(&p), Some(&granted), &sink, t(0))
        .await
        .expect("round");
    assert_eq!(max_of(&report, R0), Some(2 << 30));
    feed_back(&mut p, &sink.take());

    // PodResources forgets the pod (a kubelet that just restarted): the limit stays, and the
    // condition keeps saying Applied through the grace.
    let forgot = Grants {
        listing: crate::kubelet::decide::grants::Listing::Listed,
        ..Grants::default()
    };
    for secs in [1, 29] {
        let report = agent
            .round(&objects(&p), Some(&forgot), &sink, t(secs))
            .await
            .expect("round");
        assert_eq!(report.writes, 0, "at {secs} s");
        assert_eq!(max_of(&report, R0), Some(2 << 30), "at {secs} s");
        assert!(sink.take().is_empty(), "no API write within the grace");
    }
    // Still unknown after the grace: the pod says so (Unknown, with a Warning event).
    agent
        .round(&objects(&p), Some(&forgot), &sink, t(31))
        .await
        .expect("round");
    let writes = sink.take();
    assert_eq!(
        condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("Unknown", "GrantUnknown"))
    );
    assert!(
        events(&writes).contains(&(true, "GrantUnknown")),
        "{writes:?}"
    );
    feed_back(&mut p, &writes);
    // Known again: Applied, with no kernel write.
    let report = agent
        .round(&objects(&p), Some(&granted), &sink, t(32))
        .await
        .expect("round");
    assert_eq!(report.writes, 0);
    assert_eq!(
        condition(&sink.take(), POD_CONDITION_VRAM_LIMITS_APPLIED),
        Some(("True", "Applied"))
    );
}

#[tokio::test]
async fn a_settled_pod_has_its_limits_at_once_and_its_conditions_from_the_node_round() {
    let mut agent = agent();
    let sink = Recorder::default();
    const OTHER: &str = "7a2d3b4a-2e6f-4a7b-9c8d-0e1f2a3b4c5d";
    let objects = Objects {
        pods: vec![
            Arc::new(pod("train-0", UID, "1Gi", "Running")),
            Arc::new(pod("train-1", OTHER, "1Gi", "Running")),
        ],
        quotas: vec![quota()],
        ..Objects::default()
    };
    let alone = std::collections::BTreeSet::from([UID.to_owned()]);
    let report = agent
        .kernel()
        .settle_pods(&objects, None, &alone)
        .await
        .expect("pods round");
    assert_eq!(
        report.pods.len(),
        1,
        "the other pod waits for the node round"
    );
    assert_eq!(report.pods[0].facts.uid, UID);
    assert_eq!(report.pods[0].outcome, crate::round::LimitsOutcome::Applied);
    assert_eq!(max_of(&report, R0), Some(8 << 30));
    assert!(
        sink.take().is_empty(),
        "a pods round writes nothing to the API"
    );

    let report = agent
        .round(&objects, None, &sink, t(0))
        .await
        .expect("node round");
    assert_eq!(report.pods.len(), 2);
    let writes = sink.take();
    let applied: Vec<&str> = (writes.iter())
        .filter_map(|w| match w {
            ApiWrite::PodConditions {
                name, conditions, ..
            } if conditions
                .iter()
                .any(|c| c.type_ == POD_CONDITION_VRAM_LIMITS_APPLIED && c.status == "True") =>
            {
                Some(name.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(applied, ["train-0", "train-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_pod_asked_for_shows_its_limits_applied_before_any_node_round() {
    use crate::cluster::drive::drive;
    use std::time::Duration;
    use tokio::sync::{Notify, mpsc, oneshot};

    /// A [`Recorder`] that says when it recorded.
    #[derive(Default)]
    struct Told(Recorder, Notify);
    #[tonic::async_trait]
    impl ApiSink for Told {
        async fn write(&self, write: &ApiWrite) -> Result<(), ActError> {
            self.0.write(write).await?;
            self.1.notify_one();
            Ok(())
        }
    }

    let mut registry = prometheus_client::registry::Registry::default();
    let agent = agent_in(&mut registry);
    let node_rounds = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        (text.lines())
            .find_map(|l| l.strip_prefix("kube_dmem_agent_round_duration_seconds_count "))
            .map(str::to_owned)
    };
    let objects = Objects {
        pods: vec![Arc::new(pod("train-0", UID, "1Gi", "Running"))],
        quotas: vec![quota()],
        ..Objects::default()
    };
    let sink = Told::default();
    let (requests, rounds) = mpsc::channel(4);
    let stop = tokio_util::sync::CancellationToken::new();
    let parts = Loop {
        poll_interval: Duration::from_secs(3600),
        ..loop_parts(agent, &objects, &sink, rounds)
    };
    let test = async {
        let (reply, answer) = oneshot::channel();
        let request = RoundRequest {
            pod: ("ml".into(), "train-0".into()),
            hint: None,
            reply,
        };
        requests.send(request).await.expect("loop");
        let outcome = answer.await.expect("answered");
        assert_eq!(outcome, Some(crate::round::LimitsOutcome::Applied));
        // The clock is paused: the node round, 100 ms after the pod's own, cannot have run
        // before the loop goes idle, which it does only after the writes it owes.
        loop {
            let writes = sink.0.0.lock().expect("lock").clone();
            if let Some(applied) = condition(&writes, POD_CONDITION_VRAM_LIMITS_APPLIED) {
                assert_eq!(applied, ("True", "Applied"));
                break;
            }
            sink.1.notified().await;
        }
        assert_eq!(node_rounds().as_deref(), Some("0"), "no node round yet");
        // Then the node round owed after a pod's own round (pressure, ancestors) runs.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(node_rounds().as_deref(), Some("1"));
        stop.cancel();
    };
    tokio::join!(drive(parts, stop.clone()), test);
}

#[tokio::test(start_paused = true)]
async fn node_rounds_start_a_poll_interval_apart_however_long_their_writes_take() {
    use std::time::Duration;

    use tokio::sync::{Notify, mpsc};
    use tokio::time::Instant;

    use crate::cluster::drive::drive;

    const POLL: Duration = Duration::from_secs(1);
    const WRITE: Duration = Duration::from_millis(150);
    const ROUNDS: usize = 5;

    /// The pod's usage crosses its `high` (4Gi) one way or the other at every snapshot, so every
    /// node round has a condition to write; says when each snapshot was taken.
    #[derive(Default)]
    struct Flipping {
        taken: Mutex<Vec<Instant>>,
        told: Notify,
    }
    impl ObjectSource for Flipping {
        fn snapshot(&self) -> Objects {
            let mut taken = self.taken.lock().expect("lock");
            taken.push(Instant::now());
            self.told.notify_one();
            let usage = if taken.len().is_multiple_of(2) {
                "6Gi"
            } else {
                "1Gi"
            };
            Objects {
                pods: vec![Arc::new(pod("train-0", UID, usage, "Running"))],
                quotas: vec![quota()],
                ..Objects::default()
            }
        }
    }
    /// An API server that takes [`WRITE`] for each write; says when each write ended.
    #[derive(Default)]
    struct Slow(Mutex<Vec<Instant>>);
    #[tonic::async_trait]
    impl ApiSink for Slow {
        async fn write(&self, _: &ApiWrite) -> Result<(), ActError> {
            tokio::time::sleep(WRITE).await;
            self.0.lock().expect("lock").push(Instant::now());
            Ok(())
        }
    }

    let objects = Flipping::default();
    let sink = Slow::default();
    let (_requests, rounds) = mpsc::channel(1);
    let stop = tokio_util::sync::CancellationToken::new();
    let parts = Loop {
        poll_interval: POLL,
        // Adaptive polling off: node rounds only.
        near_poll_interval: POLL,
        ..loop_parts(agent(), &objects, &sink, rounds)
    };
    let began = Instant::now();
    let test = async {
        while objects.taken.lock().expect("lock").len() < ROUNDS {
            objects.told.notified().await;
        }
        stop.cancel();
    };
    tokio::join!(drive(parts, stop.clone()), test);
    let taken = objects.taken.lock().expect("lock").clone();
    let ended = sink.0.lock().expect("lock").clone();
    // Every round but the last (cancelled) spent time writing before the next began.
    for pair in taken.windows(2) {
        assert!(
            ended.iter().any(|e| *e >= pair[0] + WRITE && *e < pair[1]),
            "a round wrote nothing: snapshots {taken:?}, writes ended {ended:?}"
        );
    }
    let starts: Vec<Duration> = taken[..ROUNDS].iter().map(|t| *t - began).collect();
    let every_poll: Vec<Duration> = (1..=ROUNDS as u32).map(|k| POLL * k).collect();
    assert_eq!(
        starts, every_poll,
        "rounds start a poll interval after the last began"
    );
}
