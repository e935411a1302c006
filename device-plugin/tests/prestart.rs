//! The `PreStartContainer` hook of cluster mode ([`AgentPreStart`]) against the real agent loop
//! ([`drive`]) on the in-process simulator, with PodResources served by a small in-test double:
//! the hook answers `Ok` only once the pod's limits are in the kernel, and otherwise a precise error;
//! and the loop answers a held creation while a kubelet slow to list its pods holds the node round.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube_dmem_crds::DmemQuota;
use kube_dmem_device_plugin::cgroup::path::{CgroupDriver, QosClass, expected_pod_cgroup};
use kube_dmem_device_plugin::cgroup::{CgroupPath, SimCgroups};
use kube_dmem_device_plugin::cluster::agent::Agent;
use kube_dmem_device_plugin::cluster::api::DiscardSink;
use kube_dmem_device_plugin::cluster::backend::Backend;
use kube_dmem_device_plugin::cluster::cgroup_watch;
use kube_dmem_device_plugin::cluster::drive::{KubeletSide, Loop, drive};
use kube_dmem_device_plugin::cluster::health::Health;
use kube_dmem_device_plugin::cluster::objects::Objects;
use kube_dmem_device_plugin::cluster::prestart::{AgentPreStart, RETRY, RoundRequest};
use kube_dmem_device_plugin::decide::pressure::PressureThresholds;
use kube_dmem_device_plugin::kubelet::RESOURCE_NAME;
use kube_dmem_device_plugin::kubelet::decide::inventory::Inventory;
use kube_dmem_device_plugin::kubelet::plugin::{PreStart, PreStartError};
use kube_dmem_device_plugin::kubelet::podresources::PodResourcesClient;
use kube_dmem_device_plugin::kubelet::proto::podresources::{
    ContainerDevices, ContainerResources, PodResources,
};
use kube_dmem_device_plugin::metrics::Metrics;
use kube_dmem_device_plugin::round::{LimitsOutcome, RoundConfig};
use kube_dmem_sim::Profile;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

mod pod_resources_double;
use pod_resources_double::PodResourcesDouble;

const REGION: &str = "drm/0000:03:00.0/vram0";
const GIB: u64 = 1 << 30;
/// The quota's per-pod `max` and `high`.
const MAX: u64 = 3 * GIB;
const HIGH: u64 = 2 * GIB;
const UID: &str = "00000000-0000-4000-8000-000000000001";
const NS: &str = "ml";
const NAME: &str = "train";
/// The hook's retry budget in these tests: long enough for several retries, short enough that
/// a test that waits for it out stays fast (the production budget is PRE_START_TIMEOUT).
const BUDGET: Duration = Duration::from_millis(1200);

fn pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "labels": {"app": "train"},
                     "annotations": {"sim.kube-dmem.io/usage": format!("{REGION}=256Mi")}},
        "spec": {"nodeName": "node", "containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": "Running", "qosClass": "BestEffort"},
    }))
    .expect("pod")
}

fn quota() -> DmemQuota {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": NS, "creationTimestamp": "2026-11-01T10:00:00Z"},
        "spec": {"selector": {"matchLabels": {"app": "train"}},
                 "limits": [{"region": "*", "max": MAX.to_string(), "high": HIGH.to_string()}]},
    }))
    .expect("quota")
}

fn pod_cgroup() -> CgroupPath {
    expected_pod_cgroup(CgroupDriver::Systemd, "/", QosClass::BestEffort, UID).expect("path")
}

/// The agent loop over the simulator with [`pod`] and [`quota`], until `stop`: rounds run on a
/// request or on `trigger`, never on a poll or resync within a test. With `pod_resources`, the
/// loop lists the kubelet's pods before each node round.
fn spawn_loop(
    pod_resources: Option<PodResourcesClient>,
    trigger: Arc<Notify>,
    stop: &CancellationToken,
) -> (
    SimCgroups,
    mpsc::Sender<RoundRequest>,
    tokio::task::JoinHandle<()>,
) {
    let regions = vec![(REGION.to_owned(), 4 * GIB)];
    let (backend, high) = Backend::sim(Profile::Current, &regions).expect("sim");
    let fs: SimCgroups = match &backend {
        Backend::Sim { fs, .. } => fs.clone(),
        _ => unreachable!("a simulator backend"),
    };
    let round_cfg = RoundConfig {
        scan_root: CgroupPath::root(),
        high,
        thresholds: PressureThresholds::default(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let (inventory, inventory_rx) = watch::channel(Inventory::default());
    let agent = Agent::new(
        "node".into(),
        backend,
        round_cfg,
        Metrics::register(&mut registry),
        inventory,
    );
    // Leaked: the loop borrows the store for its whole life, as `run` borrows its caches.
    let cluster: &'static Objects = Box::leak(Box::new(Objects {
        pods: vec![Arc::new(pod())],
        quotas: vec![quota()],
        ..Objects::default()
    }));
    let (rounds_tx, rounds) = mpsc::channel(16);
    let parts = Loop {
        agent,
        objects: cluster,
        sink: &DiscardSink,
        trigger,
        new_cgroup: Arc::new(cgroup_watch::CgroupSignal::default()),
        rounds,
        kubelet: pod_resources.map(|pod_resources| KubeletSide {
            pod_resources,
            inventory: inventory_rx,
        }),
        dra: None,
        poll_interval: Duration::from_secs(3600),
        near_poll_interval: kube_dmem_device_plugin::cluster::drive::NEAR_POLL,
        resync: Duration::from_secs(3600),
        health: Arc::new(Health::default()),
    };
    let agent_loop = tokio::spawn(drive(parts, stop.clone()));
    (fs, rounds_tx, agent_loop)
}

/// The device IDs of units 0 and 1 of [`REGION`], as the plugin advertises them.
fn device_ids() -> Vec<String> {
    let capacity: BTreeMap<String, u64> = [(REGION.to_owned(), 4 * GIB)].into_iter().collect();
    let inventory = Inventory::default().observe(&capacity).expect("inventory");
    let region = inventory.region(REGION).expect("region");
    (0..2).map(|u| region.device_id(u).to_string()).collect()
}

fn held_by_pod(ids: &[String]) -> PodResources {
    PodResources {
        namespace: NS.into(),
        name: NAME.into(),
        containers: vec![ContainerResources {
            name: "main".into(),
            devices: vec![ContainerDevices {
                resource_name: RESOURCE_NAME.into(),
                device_ids: ids.to_vec(),
                topology: None,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A running node: the agent loop on the simulator, PodResources listing the pod, and the hook.
struct Node {
    fs: SimCgroups,
    hook: AgentPreStart,
    /// Rounds the hook has asked the loop for.
    attempts: Arc<AtomicUsize>,
    rounds: mpsc::Sender<RoundRequest>,
    stop: CancellationToken,
    agent_loop: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Asks the agent loop behind `rounds` for a round of the test's pod; the receiver of its outcome.
async fn ask(rounds: &mpsc::Sender<RoundRequest>) -> oneshot::Receiver<Option<LimitsOutcome>> {
    let (reply, answer) = oneshot::channel();
    let pod = (NS.to_owned(), NAME.to_owned());
    let request = RoundRequest {
        pod,
        hint: None,
        reply,
    };
    rounds.send(request).await.expect("agent loop");
    answer
}

impl Node {
    /// The simulated kubelet ([`Backend::Sim`]) makes the pod's cgroup in the first round.
    fn start() -> Self {
        let stop = CancellationToken::new();
        // Rounds run on the hook's request only.
        let (fs, rounds_tx, agent_loop) = spawn_loop(None, Arc::new(Notify::new()), &stop);

        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("kubelet.sock");
        let kubelet = PodResourcesDouble::start(&socket, stop.clone());
        kubelet.set(vec![held_by_pod(&device_ids())]);
        let client = PodResourcesClient::new(&socket).with_timeout(Duration::from_secs(10));
        // The hook's requests pass through a counter on their way to the loop.
        let (hook_tx, mut hook_rx) = mpsc::channel::<RoundRequest>(16);
        let attempts = Arc::new(AtomicUsize::new(0));
        let forward = (rounds_tx.clone(), Arc::clone(&attempts));
        tokio::spawn(async move {
            while let Some(request) = hook_rx.recv().await {
                forward.1.fetch_add(1, Ordering::SeqCst);
                if forward.0.send(request).await.is_err() {
                    return;
                }
            }
        });
        Self {
            fs,
            hook: AgentPreStart::new(client, hook_tx).with_budget(BUDGET),
            attempts,
            rounds: rounds_tx,
            stop,
            agent_loop,
            _dir: dir,
        }
    }

    fn dmem_max(&self) -> String {
        self.fs
            .kernel()
            .lock()
            .expect("kernel")
            .read_file(pod_cgroup().as_str(), "dmem.max")
            .unwrap_or_default()
    }

    /// Runs one round (the simulated kubelet makes the pod's cgroup), then removes the pod's
    /// cgroup behind the simulated kubelet's back: it will not make it again.
    async fn lose_pod_cgroup(&self) {
        let answer = ask(&self.rounds).await;
        assert_eq!(answer.await.expect("round"), Some(LimitsOutcome::Applied));
        self.fs
            .kernel()
            .lock()
            .expect("kernel")
            .rmdir(pod_cgroup().as_str())
            .expect("rmdir pod cgroup");
    }

    async fn stop(self) {
        self.stop.cancel();
        self.agent_loop.await.expect("agent loop");
    }
}

#[tokio::test]
async fn answers_ok_only_once_the_quota_max_is_in_the_pod_cgroup() {
    let node = Node::start();
    assert!(
        !node.dmem_max().contains(&format!("{REGION} {MAX}")),
        "no limit before the hook: {}",
        node.dmem_max()
    );
    node.hook
        .pre_start(device_ids())
        .await
        .expect("limits in force");
    let max = node.dmem_max();
    assert!(
        max.contains(&format!("{REGION} {MAX}")),
        "dmem.max of the pod cgroup after PreStart: {max}"
    );
    node.stop().await;
}

#[tokio::test]
async fn missing_pod_cgroup_is_refused_with_cgroup_not_found() {
    let node = Node::start();
    node.lose_pod_cgroup().await;
    let started = Instant::now();
    let err = node
        .hook
        .pre_start(device_ids())
        .await
        .expect_err("no cgroup, no start");
    let elapsed = started.elapsed();
    match &err {
        PreStartError::LimitsNotApplied { pod, reason, .. } => {
            assert_eq!(pod, &format!("{NS}/{NAME}"));
            assert_eq!(*reason, kube_dmem_crds::REASON_CGROUP_NOT_FOUND);
        }
        other => panic!("expected LimitsNotApplied(CgroupNotFound), got {other:?}"),
    }
    assert_eq!(err.reason(), kube_dmem_crds::REASON_CGROUP_NOT_FOUND);
    // Retried every RETRY until the budget ran out, then refused (not sooner, not much later).
    assert!(elapsed >= BUDGET - RETRY, "gave up after {elapsed:?}");
    assert!(
        elapsed < BUDGET + Duration::from_secs(2),
        "took {elapsed:?}"
    );
    let attempts = node.attempts.load(Ordering::SeqCst);
    let most = (BUDGET.as_millis() / RETRY.as_millis()) as usize + 1;
    assert!(
        (3..=most).contains(&attempts),
        "{attempts} rounds asked for"
    );
    node.stop().await;
}

#[tokio::test]
async fn unknown_device_ids_are_pod_not_found() {
    let node = Node::start();
    let unknown = vec!["not-a-device-0".to_owned()];
    let err = node
        .hook
        .pre_start(unknown.clone())
        .await
        .expect_err("nobody holds these devices");
    match &err {
        PreStartError::PodNotFound { device_ids } => assert_eq!(device_ids, &unknown),
        other => panic!("expected PodNotFound, got {other:?}"),
    }
    node.stop().await;
}

/// A creation held by the runtime (an NRI request for a pod without units) is answered while the
/// node round waits for a kubelet slow to list its pods: that wait must not hold containers.
#[tokio::test]
async fn a_held_creation_is_answered_while_the_kubelet_is_slow_to_list() {
    let stop = CancellationToken::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("kubelet.sock");
    let kubelet = PodResourcesDouble::start(&socket, stop.clone());
    kubelet.stall(true);
    let called = kubelet.list_called();
    let trigger = Arc::new(Notify::new());
    let client = PodResourcesClient::new(&socket).with_timeout(Duration::from_secs(30));
    let (_fs, rounds_tx, agent_loop) = spawn_loop(Some(client), Arc::clone(&trigger), &stop);
    // A pod change: the node round starts by listing the kubelet's pods, which hangs.
    trigger.notify_one();
    called.await;
    let answer = ask(&rounds_tx).await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("answered while the listing hangs")
        .expect("round");
    assert_eq!(outcome, Some(LimitsOutcome::Applied));
    assert_eq!(kubelet.answered(), 0, "the listing still hangs");
    kubelet.stall(false);
    stop.cancel();
    agent_loop.await.expect("agent loop");
}
