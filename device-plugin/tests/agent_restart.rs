//! A restarted node agent never lapses the limit of a pod that holds `kube-dmem.io/vram` units.
//!
//! The real loop ([`drive`]) with its real PodResources client, over the real `SysfsCgroups`
//! backend on the simulator mounted with FUSE; PodResources is a double over a real unix socket.
//! A first agent applies a pod's grant; then fresh agents start over the same kernel, as after
//! the DaemonSet recreates the agent pod: while PodResources is down, and while it answers but
//! the new agent does not know its devices yet. A thread reads the pod's `dmem.max` through the
//! mount the whole time: it must never change, and the fresh agents must write nothing.
//! Skipped where FUSE is unavailable (`KUBE_DMEM_REQUIRE_FUSE=1` makes that a failure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pod_resources_double;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{FuseEnv, R0, fuse_available, kubepods_node, with_timeout};
use k8s_openapi::api::core::v1::Pod;
use kube_dmem_device_plugin::cgroup::CgroupPath;
use kube_dmem_device_plugin::cgroup::path::{CgroupDriver, QosClass, expected_pod_cgroup};
use kube_dmem_device_plugin::cluster::agent::Agent;
use kube_dmem_device_plugin::cluster::api::DiscardSink;
use kube_dmem_device_plugin::cluster::backend::Backend;
use kube_dmem_device_plugin::cluster::cgroup_watch::CgroupSignal;
use kube_dmem_device_plugin::cluster::drive::{KubeletSide, Loop, drive};
use kube_dmem_device_plugin::cluster::health::Health;
use kube_dmem_device_plugin::cluster::objects::Objects;
use kube_dmem_device_plugin::cluster::prestart::{AgentPreStart, RoundRequest};
use kube_dmem_device_plugin::decide::pressure::PressureThresholds;
use kube_dmem_device_plugin::kubelet::RESOURCE_NAME;
use kube_dmem_device_plugin::kubelet::decide::inventory::Inventory;
use kube_dmem_device_plugin::kubelet::plugin::PreStart;
use kube_dmem_device_plugin::kubelet::podresources::PodResourcesClient;
use kube_dmem_device_plugin::kubelet::proto::podresources::{
    ContainerDevices, ContainerResources, PodResources,
};
use kube_dmem_device_plugin::metrics::Metrics;
use kube_dmem_device_plugin::round::{LimitsOutcome, RoundConfig};
use kube_dmem_sim::Profile;
use pod_resources_double::PodResourcesDouble;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

const UID: &str = "0b8e7c1a-5d2f-4e3a-9c6b-7a1d2e3f4a5b";
const NS: &str = "ml";
const NAME: &str = "train-0";
/// Units the pod holds, and so its `dmem.max` on [`R0`] (1 GiB units).
const UNITS: u32 = 2;
const GRANT: u64 = UNITS as u64 * (1 << 30);
/// Longest wait for a condition.
const WAIT: Duration = Duration::from_secs(20);

/// The pod, asking for [`UNITS`] units; no quota exists, so only its grant governs it.
fn pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID,
                     "creationTimestamp": "2026-11-01T10:00:00Z"},
        "spec": {"nodeName": "n1", "containers": [{"name": "main", "image": "x",
                 "resources": {"limits": {RESOURCE_NAME: UNITS.to_string()}}}]},
        "status": {"phase": "Running", "qosClass": "BestEffort"}
    }))
    .expect("pod")
}

fn pod_cgroup() -> String {
    expected_pod_cgroup(CgroupDriver::Systemd, "/", QosClass::BestEffort, UID)
        .expect("path")
        .as_str()
        .to_owned()
}

/// The simulator mounted with FUSE and the pod's cgroup running in it.
fn node() -> FuseEnv {
    let env = kubepods_node(Profile::Current);
    common::add_running_cgroup(&env, &pod_cgroup());
    env
}

/// The device IDs of the pod's units, as the plugin advertises them.
fn held_by_pod(capacity: u64) -> PodResources {
    let regions: BTreeMap<String, u64> = [(R0.to_owned(), capacity)].into_iter().collect();
    let inventory = Inventory::default().observe(&regions).expect("inventory");
    let region = inventory.region(R0).expect("region");
    PodResources {
        namespace: NS.into(),
        name: NAME.into(),
        containers: vec![ContainerResources {
            name: "main".into(),
            devices: vec![ContainerDevices {
                resource_name: RESOURCE_NAME.into(),
                device_ids: (0..UNITS)
                    .map(|u| region.device_id(u).to_string())
                    .collect(),
                topology: None,
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One agent process: its loop, the way to ask it for a round, and its kernel write counter.
struct Running {
    rounds: mpsc::Sender<RoundRequest>,
    kernel_writes: Counter,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// A fresh agent over the cgroup root `root`, with PodResources at `socket`. Rounds run only
    /// when asked for (no poll or resync within a test), so each step below is one round.
    fn start(root: &Path, socket: &Path, cluster: &'static Objects) -> Self {
        let (backend, high) = Backend::sysfs(root.to_owned());
        assert!(backend.unavailable().is_none(), "dmem on the mount");
        let cfg = RoundConfig {
            scan_root: CgroupPath::root(),
            high,
            thresholds: PressureThresholds::default(),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        let kernel_writes = metrics.kernel_writes.clone();
        let (inventory, inventory_rx) = watch::channel(Inventory::default());
        let agent = Agent::new("n1".into(), backend, cfg, metrics, inventory);
        let (rounds, rounds_rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let parts = Loop {
            agent,
            objects: cluster,
            sink: &DiscardSink,
            trigger: Arc::new(Notify::new()),
            new_cgroup: Arc::new(CgroupSignal::default()),
            rounds: rounds_rx,
            kubelet: Some(KubeletSide {
                pod_resources: PodResourcesClient::new(socket).with_timeout(Duration::from_secs(5)),
                inventory: inventory_rx,
            }),
            dra: None,
            poll_interval: Duration::from_secs(3600),
            near_poll_interval: kube_dmem_device_plugin::cluster::drive::NEAR_POLL,
            resync: Duration::from_secs(3600),
            health: Arc::new(Health::default()),
        };
        let handle = tokio::spawn(drive(parts, stop.clone()));
        Self {
            rounds,
            kernel_writes,
            stop,
            handle,
        }
    }

    /// Runs one round and returns the pod's outcome in it.
    async fn round(&self) -> LimitsOutcome {
        let (reply, answer) = oneshot::channel();
        self.rounds
            .send(RoundRequest {
                pod: (NS.to_owned(), NAME.to_owned()),
                hint: None,
                reply,
            })
            .await
            .expect("agent loop");
        answer
            .await
            .expect("round")
            .expect("the pod is in the round")
    }

    /// Stops the process; returns how many kernel writes it made.
    async fn stop(self) -> u64 {
        self.stop.cancel();
        self.handle.await.expect("agent loop");
        self.kernel_writes.get()
    }
}

/// Fewest samples a sampler takes: on a loaded machine the rounds under watch can pass between
/// a handful of reads, and a window of a few samples proves little.
const MIN_SAMPLES: usize = 10;

/// Reads a file through the mount over and over on its own thread until stopped, and at least
/// [`MIN_SAMPLES`] times (the limit must hold after the rounds watched too).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Sampler {
    fn start(file: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) || seen.len() < MIN_SAMPLES {
                seen.push(std::fs::read_to_string(&file).expect("read dmem.max"));
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("sampler")
    }
}

fn is_unknown(outcome: &LimitsOutcome) -> bool {
    matches!(outcome, LimitsOutcome::GrantUnknown { .. })
}

/// A node with the pod's cgroup, PodResources listing the pod's units, and a first agent that
/// has applied its grant; a sampler reads `dmem.max` from then on.
struct Fixture {
    env: FuseEnv,
    socket: PathBuf,
    kubelet: PodResourcesDouble,
    stop_kubelet: CancellationToken,
    cluster: &'static Objects,
    capacity: u64,
    /// `dmem.max` once the grant was applied.
    applied: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> (Self, Running) {
        let env = node();
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("kubelet.sock");
        let stop_kubelet = CancellationToken::new();
        let kubelet = PodResourcesDouble::start(&socket, stop_kubelet.clone());
        let capacity = common::Env::kernel(&env)
            .regions()
            .into_iter()
            .find_map(|(name, bytes)| (name == R0).then_some(bytes))
            .expect("R0 registered");
        kubelet.set(vec![held_by_pod(capacity)]);
        // The pod, as the API server sees it.
        let cluster: &'static Objects = Box::leak(Box::new(Objects {
            pods: vec![Arc::new(pod())],
            ..Objects::default()
        }));
        // The agent learns its devices in its first round and applies the grant in the next.
        let agent = Running::start(env.root(), &socket, cluster);
        let deadline = tokio::time::Instant::now() + WAIT;
        while agent.round().await != LimitsOutcome::Applied {
            assert!(
                tokio::time::Instant::now() < deadline,
                "grant never applied"
            );
        }
        let applied = std::fs::read_to_string(env.host_path(&pod_cgroup(), Some("dmem.max")))
            .expect("read dmem.max");
        assert!(
            applied.contains(&format!("{R0} {GRANT}")),
            "dmem.max after the grant: {applied}"
        );
        let fixture = Self {
            env,
            socket,
            kubelet,
            stop_kubelet,
            cluster,
            capacity,
            applied,
            _dir: dir,
        };
        (fixture, agent)
    }

    fn sampler(&self) -> Sampler {
        Sampler::start(self.env.host_path(&pod_cgroup(), Some("dmem.max")))
    }

    fn agent(&self) -> Running {
        Running::start(self.env.root(), &self.socket, self.cluster)
    }

    /// Stops the sampler and fails if any sample differs from the applied value.
    fn assert_never_changed(&self, sampler: Sampler) {
        let samples = sampler.finish();
        self.stop_kubelet.cancel();
        assert!(
            samples.len() >= MIN_SAMPLES,
            "only {} samples",
            samples.len()
        );
        let changed: Vec<&String> = samples.iter().filter(|s| **s != self.applied).collect();
        assert!(
            changed.is_empty(),
            "dmem.max changed ({} of {} samples), first: {:?}",
            changed.len(),
            samples.len(),
            changed.first()
        );
    }
}

#[test]
fn a_kubelet_restart_that_forgets_the_pods_units_for_a_while_lapses_no_limit() {
    if !fuse_available() {
        return;
    }
    with_timeout(|| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (node, agent) = Fixture::start().await;
            let writes = agent.kernel_writes.get();
            let sampler = node.sampler();
            // The kubelet is down, then back with its pod list not synced yet (no pods), then
            // with the pod but not its devices; the agent keeps what it applied throughout.
            node.kubelet.refuse(true);
            assert_eq!(
                agent.round().await,
                LimitsOutcome::Applied,
                "last grants kept"
            );
            node.kubelet.refuse(false);
            node.kubelet.set(Vec::new());
            let outcome = agent.round().await;
            assert!(is_unknown(&outcome), "pod not listed: {outcome:?}");
            let mut without_devices = held_by_pod(node.capacity);
            without_devices.containers[0].devices.clear();
            node.kubelet.set(vec![without_devices]);
            let outcome = agent.round().await;
            assert!(
                is_unknown(&outcome),
                "pod listed without units: {outcome:?}"
            );
            node.kubelet.set(vec![held_by_pod(node.capacity)]);
            assert_eq!(agent.round().await, LimitsOutcome::Applied);
            assert_eq!(
                agent.stop().await,
                writes,
                "nothing written after the grant"
            );
            node.assert_never_changed(sampler);
        });
    });
}

#[test]
fn a_restarted_agent_keeps_the_limits_of_pods_holding_units() {
    if !fuse_available() {
        return;
    }
    with_timeout(|| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (node, first) = Fixture::start().await;
            assert!(first.stop().await > 0, "the first agent wrote the grant");
            let sampler = node.sampler();

            // Restart while the kubelet is restarting too: PodResources refuses.
            node.kubelet.refuse(true);
            let second = node.agent();
            for round in 0..3 {
                let outcome = second.round().await;
                assert!(
                    is_unknown(&outcome),
                    "round {round} without PodResources: {outcome:?}"
                );
            }
            node.kubelet.refuse(false);
            assert_eq!(second.round().await, LimitsOutcome::Applied);
            assert_eq!(
                second.stop().await,
                0,
                "nothing to write: the limit was in force"
            );

            // Restart with PodResources answering at once, before the new agent has read the
            // regions its device IDs name (the real node's sequence).
            let answered = node.kubelet.answered();
            let third = node.agent();
            let outcome = third.round().await;
            assert!(node.kubelet.answered() > answered, "PodResources was asked");
            assert!(
                is_unknown(&outcome),
                "first round, devices unknown: {outcome:?}"
            );
            assert_eq!(third.round().await, LimitsOutcome::Applied);
            assert_eq!(
                third.stop().await,
                0,
                "nothing to write: the limit was in force"
            );

            // A container start right after a restart: the kubelet's PreStartContainer waits
            // for the grant to be known and in force, never for "not governed".
            let fourth = node.agent();
            let ids = held_by_pod(node.capacity).containers[0].devices[0]
                .device_ids
                .clone();
            AgentPreStart::new(PodResourcesClient::new(&node.socket), fourth.rounds.clone())
                .pre_start(ids)
                .await
                .expect("the hook answers once the grant is in force");
            assert_eq!(
                fourth.stop().await,
                0,
                "nothing to write: the limit was in force"
            );
            node.assert_never_changed(sampler);
        });
    });
}
