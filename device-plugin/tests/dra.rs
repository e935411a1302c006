//! The DRA driver against a kubelet test double over Unix sockets: plugin registration the way the
//! kubelet's plugin watcher does it, then `NodePrepareResources` / `NodeUnprepareResources` on the
//! socket it announced, with the real agent loop on the in-process simulator behind them. Checks
//! that prepare answers only once `dmem.max` is in the pod cgroup, that unprepare takes it away, that
//! a quota lowers but never raises it, that a restarted agent keeps it, and the per-claim errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSliceSpec};
use kube_dmem_crds::DmemQuota;
use kube_dmem_device_plugin::cgroup::path::{CgroupDriver, QosClass, expected_pod_cgroup};
use kube_dmem_device_plugin::cgroup::{CgroupPath, SimCgroups};
use kube_dmem_device_plugin::cluster::agent::Agent;
use kube_dmem_device_plugin::cluster::api::{ActError, ApiSink, ApiWrite};
use kube_dmem_device_plugin::cluster::backend::Backend;
use kube_dmem_device_plugin::cluster::cgroup_watch;
use kube_dmem_device_plugin::cluster::drive::{DraSide, Loop, ObjectSource, drive};
use kube_dmem_device_plugin::cluster::health::Health;
use kube_dmem_device_plugin::cluster::objects::Objects;
use kube_dmem_device_plugin::decide::pressure::PressureThresholds;
use kube_dmem_device_plugin::dra::DRIVER;
use kube_dmem_device_plugin::dra::decide::slice::RequestPolicy;
use kube_dmem_device_plugin::dra::health::{HealthService, track};
use kube_dmem_device_plugin::dra::metrics::DraMetrics;
use kube_dmem_device_plugin::dra::plugin::{DraPlugin, KubeletVerdict, PluginPaths};
use kube_dmem_device_plugin::dra::prepare::{AgentDriver, ClaimSource, ReadClaimError};
use kube_dmem_device_plugin::dra::publish::{NoDrivers, Publisher, SliceApi, SliceError};
use kube_dmem_device_plugin::dra::server::DraService;
use kube_dmem_device_plugin::dra::store::ClaimStore;
use kube_dmem_device_plugin::kubelet::decide::inventory::Inventory;
use kube_dmem_device_plugin::kubelet::devnodes::NoDeviceNodes;
use kube_dmem_device_plugin::kubelet::proto::dra_health::HealthStatus;
use kube_dmem_device_plugin::kubelet::proto::dra_health::NodeWatchResourcesRequest;
use kube_dmem_device_plugin::kubelet::proto::dra_health::dra_resource_health_client::DraResourceHealthClient;
use kube_dmem_device_plugin::kubelet::proto::dra_v1 as v1;
use kube_dmem_device_plugin::kubelet::proto::dra_v1beta1 as v1beta1;
use kube_dmem_device_plugin::kubelet::proto::pluginregistration::registration_client::RegistrationClient;
use kube_dmem_device_plugin::kubelet::proto::pluginregistration::{
    InfoRequest, RegistrationStatus,
};
use kube_dmem_device_plugin::kubelet::uds;
use kube_dmem_device_plugin::metrics::Metrics;
use kube_dmem_device_plugin::round::RoundConfig;
use kube_dmem_sim::Profile;
use kube_dmem_sim::SimKernel;
use serde_json::json;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

const REGION: &str = "drm/0000:03:00.0/vram0";
const DEVICE: &str = "drm-0000-03-00-0-vram0";
const GIB: u64 = 1 << 30;
const NODE: &str = "node-1";
const NS: &str = "ml";
const POD_UID: &str = "00000000-0000-4000-8000-0000000000a1";

/// Pods, quotas and claims in memory; API writes accepted and dropped.
#[derive(Default)]
struct Cluster {
    pods: Mutex<Vec<Arc<Pod>>>,
    quotas: Mutex<Vec<DmemQuota>>,
    claims: Mutex<BTreeMap<String, ResourceClaim>>,
}

impl ObjectSource for Cluster {
    fn snapshot(&self) -> Objects {
        Objects {
            pods: self.pods.lock().unwrap().clone(),
            quotas: self.quotas.lock().unwrap().clone(),
            ..Objects::default()
        }
    }
}

#[tonic::async_trait]
impl ApiSink for Cluster {
    async fn write(&self, _write: &ApiWrite) -> Result<(), ActError> {
        Ok(())
    }
}

/// The API server's claims, for the driver.
struct Claims(&'static Cluster);

#[tonic::async_trait]
impl ClaimSource for Claims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, ReadClaimError> {
        let key = format!("{namespace}/{name}");
        self.0
            .claims
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .ok_or(ReadClaimError::NotFound(key))
    }
}

/// Slice writes, counted.
#[derive(Default)]
struct Slices(Mutex<Vec<ResourceSliceSpec>>);

#[tonic::async_trait]
impl SliceApi for Slices {
    async fn generation(&self, _: &str) -> Result<Option<i64>, SliceError> {
        Ok(None)
    }
    async fn apply(&self, _: &str, spec: ResourceSliceSpec) -> Result<(), SliceError> {
        self.0.lock().unwrap().push(spec);
        Ok(())
    }
}

fn pod(uid: &str, name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": uid, "labels": {"app": "train"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "x"}]},
        "status": {"phase": "Running", "qosClass": "BestEffort"},
    }))
    .expect("pod")
}

fn quota(max: u64) -> DmemQuota {
    serde_json::from_value(json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": NS, "creationTimestamp": "2026-11-01T10:00:00Z"},
        "spec": {"selector": {"matchLabels": {"app": "train"}},
                 "limits": [{"region": "*", "max": max.to_string()}]},
    }))
    .expect("quota")
}

/// A claim allocated on [`DEVICE`] with `consumed` memory, reserved for `pod_uid`.
fn claim(name: &str, uid: &str, pod_uid: &str, consumed: &str) -> ResourceClaim {
    serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": NS, "uid": uid},
        "spec": {"devices": {"requests": [{"name": "vram", "exactly": {"deviceClassName": DRIVER}}]}},
        "status": {
            "allocation": {"devices": {"results": [{
                "request": "vram", "driver": DRIVER, "pool": NODE, "device": DEVICE,
                "consumedCapacity": {"memory": consumed}, "shareID": format!("share-{uid}")
            }]}},
            "reservedFor": [{"resource": "pods", "name": "p", "uid": pod_uid}]
        }
    }))
    .expect("claim")
}

fn pod_cgroup(uid: &str) -> CgroupPath {
    expected_pod_cgroup(CgroupDriver::Systemd, "/", QosClass::BestEffort, uid).expect("path")
}

/// One node: the agent loop, the slice publisher, the driver and its sockets, over a kernel that
/// outlives it (so a second `Node` over the same kernel is a restarted agent).
struct Node {
    kernel: Arc<Mutex<SimKernel>>,
    cluster: &'static Cluster,
    slices: Arc<Slices>,
    paths: PluginPaths,
    verdict: watch::Receiver<KubeletVerdict>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Node {
    fn start(
        dir: &std::path::Path,
        cluster: &'static Cluster,
        kernel: Option<Arc<Mutex<SimKernel>>>,
    ) -> Self {
        let regions = vec![(REGION.to_owned(), 16 * GIB)];
        let (mut backend, high) = Backend::sim(Profile::Current, &regions).expect("sim");
        if let (Some(kernel), Backend::Sim { fs, .. }) = (&kernel, &mut backend) {
            // The restarted agent reads and writes the kernel its predecessor left.
            *fs = SimCgroups::from_shared(Arc::clone(kernel));
        }
        let kernel = match &backend {
            Backend::Sim { fs, .. } => Arc::clone(fs.kernel()),
            _ => unreachable!("a simulator backend"),
        };
        let round_cfg = RoundConfig {
            scan_root: CgroupPath::root(),
            high,
            thresholds: PressureThresholds::default(),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let (inventory, _) = watch::channel(Inventory::default());
        let (regions_tx, regions_rx) = watch::channel(None);
        let agent = Agent::new(
            NODE.into(),
            backend,
            round_cfg,
            Metrics::register(&mut registry),
            inventory,
        )
        .with_regions(regions_tx);
        let stop = CancellationToken::new();
        let store = Arc::new(ClaimStore::open(dir.join("claims.json")).expect("checkpoint"));
        let (devices_tx, devices_rx) = watch::channel(None);
        let health = HealthService::new(track(devices_rx.clone(), stop.clone()), NODE.into());
        let (claim_rounds_tx, claim_rounds) = mpsc::channel(16);
        let (_rounds_tx, rounds) = mpsc::channel(16);
        let slices = Arc::new(Slices::default());
        let metrics = DraMetrics::default();
        let publisher = Publisher {
            node: NODE.into(),
            policy: RequestPolicy::default(),
            regions: regions_rx,
            devices: devices_tx,
            drivers: Arc::new(NoDrivers),
            api: slices.clone(),
            cdi: None,
            metrics: metrics.clone(),
            registrations: None,
        };
        let driver = AgentDriver::new(
            Arc::new(Claims(cluster)),
            store.clone(),
            devices_rx,
            NODE.into(),
            claim_rounds_tx,
            Arc::new(NoDeviceNodes),
        )
        .with_budget(Duration::from_secs(2));
        let paths = PluginPaths {
            registry_dir: dir.join("plugins_registry"),
            plugin_dir: dir.join("plugins").join(DRIVER),
            poll_interval: Duration::from_millis(50),
        };
        let plugin = DraPlugin::new(paths.clone(), DraService::new(Arc::new(driver), metrics))
            .with_health(health);
        let verdict = plugin.verdict();
        // Rounds on request only (and a first one from the poll timer), as in `run`.
        let parts = Loop {
            agent,
            objects: cluster,
            sink: cluster,
            trigger: Arc::new(Notify::new()),
            new_cgroup: Arc::new(cgroup_watch::CgroupSignal::default()),
            rounds,
            kubelet: None,
            dra: Some(DraSide {
                claims: store,
                rounds: claim_rounds,
            }),
            poll_interval: Duration::from_millis(20),
            near_poll_interval: kube_dmem_device_plugin::cluster::drive::NEAR_POLL,
            resync: Duration::from_secs(3600),
            health: Arc::new(Health::default()),
        };
        let tasks = vec![
            tokio::spawn(drive(parts, stop.clone())),
            tokio::spawn(publisher.run(stop.clone())),
            tokio::spawn({
                let stop = stop.clone();
                async move { plugin.run(stop).await.expect("DRA plugin") }
            }),
        ];
        Self {
            kernel,
            cluster,
            slices,
            paths,
            verdict,
            stop,
            tasks,
        }
    }

    fn dmem_max(&self, uid: &str) -> String {
        self.kernel
            .lock()
            .unwrap()
            .read_file(pod_cgroup(uid).as_str(), "dmem.max")
            .unwrap_or_default()
    }

    /// The registration socket's path once the driver has created it (the plugin watcher's
    /// trigger), failing after 10 s.
    async fn registration_socket(&self) -> std::path::PathBuf {
        let reg = self.paths.registration_socket();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while std::fs::symlink_metadata(&reg).is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no registration socket at {}",
                reg.display()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reg
    }

    /// Registers like the kubelet's plugin watcher: wait for the socket, `GetInfo`, dial the
    /// endpoint, `NotifyRegistrationStatus`. Returns the DRA v1 client.
    async fn kubelet_registers(
        &mut self,
    ) -> v1::dra_plugin_client::DraPluginClient<tonic::transport::Channel> {
        let reg = self.registration_socket().await;
        let channel = uds::connect(&reg, Duration::from_secs(5))
            .await
            .expect("dial registration");
        let mut registration = RegistrationClient::new(channel);
        let info = registration
            .get_info(InfoRequest {})
            .await
            .expect("GetInfo")
            .into_inner();
        assert_eq!(info.r#type, "DRAPlugin");
        assert_eq!(info.name, DRIVER);
        assert_eq!(
            info.supported_versions,
            ["v1.DRAPlugin", "v1beta1.DRAPlugin"]
        );
        assert_eq!(
            std::path::PathBuf::from(&info.endpoint),
            self.paths.dra_socket()
        );
        let channel = uds::connect(std::path::Path::new(&info.endpoint), Duration::from_secs(5))
            .await
            .expect("dial DRA endpoint");
        registration
            .notify_registration_status(RegistrationStatus {
                plugin_registered: true,
                error: String::new(),
            })
            .await
            .expect("notify");
        self.verdict
            .wait_for(|v| v.registered)
            .await
            .expect("verdict");
        v1::dra_plugin_client::DraPluginClient::new(channel)
    }

    async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            task.await.expect("task");
        }
    }
}

fn request(name: &str, uid: &str) -> v1::Claim {
    v1::Claim {
        namespace: NS.into(),
        uid: uid.into(),
        name: name.into(),
    }
}

async fn prepare(
    client: &mut v1::dra_plugin_client::DraPluginClient<tonic::transport::Channel>,
    claims: Vec<v1::Claim>,
) -> BTreeMap<String, v1::NodePrepareResourceResponse> {
    let answer = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest { claims })
        .await
        .expect("NodePrepareResources")
        .into_inner();
    answer.claims.into_iter().collect()
}

fn leak(cluster: Cluster) -> &'static Cluster {
    Box::leak(Box::new(cluster))
}

fn with_pod_and_claims(claims: Vec<ResourceClaim>) -> &'static Cluster {
    let cluster = Cluster::default();
    cluster
        .pods
        .lock()
        .unwrap()
        .push(Arc::new(pod(POD_UID, "train")));
    for c in claims {
        let key = format!("{NS}/{}", c.metadata.name.clone().unwrap());
        cluster.claims.lock().unwrap().insert(key, c);
    }
    leak(cluster)
}

#[tokio::test]
async fn prepare_answers_after_dmem_max_reads_back_and_unprepare_takes_it_away() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = with_pod_and_claims(vec![
        claim("c1", "uid-c1", POD_UID, "4Gi"),
        claim("c2", "uid-c2", POD_UID, "2Gi"),
    ]);
    let mut node = Node::start(dir.path(), cluster, None);
    let mut client = node.kubelet_registers().await;
    let answer = prepare(&mut client, vec![request("c1", "uid-c1")]).await;
    let c1 = &answer["uid-c1"];
    assert_eq!(c1.error, "");
    assert_eq!(c1.devices.len(), 1);
    assert_eq!(c1.devices[0].device_name, DEVICE);
    assert_eq!(c1.devices[0].pool_name, NODE);
    assert_eq!(c1.devices[0].request_names, ["vram"]);
    assert_eq!(c1.devices[0].share_id.as_deref(), Some("share-uid-c1"));
    assert!(
        c1.devices[0].cdi_device_ids.is_empty(),
        "simulated regions have no device nodes"
    );
    // In force when the answer arrives, not eventually.
    assert_eq!(node.dmem_max(POD_UID), format!("{REGION} {}\n", 4 * GIB));
    // A second claim of the same pod on the same region adds up; preparing c1 again is a no-op.
    let answer = prepare(
        &mut client,
        vec![request("c2", "uid-c2"), request("c1", "uid-c1")],
    )
    .await;
    assert!(answer.values().all(|a| a.error.is_empty()), "{answer:?}");
    assert_eq!(node.dmem_max(POD_UID), format!("{REGION} {}\n", 6 * GIB));
    // Unprepare: the claim's share goes, then the whole limit.
    client
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: vec![request("c2", "uid-c2")],
        })
        .await
        .expect("unprepare");
    assert_eq!(node.dmem_max(POD_UID), format!("{REGION} {}\n", 4 * GIB));
    let answer = client
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: vec![request("c1", "uid-c1")],
        })
        .await
        .expect("unprepare")
        .into_inner();
    assert_eq!(answer.claims["uid-c1"].error, "");
    assert_eq!(node.dmem_max(POD_UID), format!("{REGION} max\n"));
    // The slice was written once for the one region, however many rounds ran.
    assert_eq!(node.slices.0.lock().unwrap().len(), 1);
    node.stop().await;
}

/// The kubelet 1.36 opens the device health stream on the DRA endpoint (and, when it is
/// unimplemented, logs an error and dials again every 5 s): it hears the region's device healthy,
/// in the slice's pool, with the timeout the driver keeps with its heartbeats.
#[tokio::test]
async fn the_kubelet_hears_the_region_device_healthy_on_the_dra_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), with_pod_and_claims(Vec::new()), None);
    node.kubelet_registers().await;
    let channel = uds::connect(&node.paths.dra_socket(), Duration::from_secs(5))
        .await
        .expect("dial DRA endpoint");
    let mut health = DraResourceHealthClient::new(channel);
    let mut stream = health
        .node_watch_resources(NodeWatchResourcesRequest {})
        .await
        .expect("NodeWatchResources is served")
        .into_inner();
    let report = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a report within 10 s")
        .expect("stream ok")
        .expect("stream open");
    assert_eq!(report.devices.len(), 1, "{report:?}");
    let device = &report.devices[0];
    let id = device.device.clone().unwrap_or_default();
    assert_eq!(
        (id.pool_name.as_str(), id.device_name.as_str()),
        (NODE, DEVICE)
    );
    assert_eq!(device.health, i32::from(HealthStatus::Healthy));
    assert!(device.message.contains(REGION), "{}", device.message);
    assert!(device.health_check_timeout_seconds > 0);
    node.stop().await;
}

#[tokio::test]
async fn a_quota_lowers_a_claim_but_never_raises_it() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = with_pod_and_claims(vec![claim("c1", "uid-c1", POD_UID, "6Gi")]);
    cluster.quotas.lock().unwrap().push(quota(4 * GIB));
    let mut node = Node::start(dir.path(), cluster, None);
    let mut client = node.kubelet_registers().await;
    let answer = prepare(&mut client, vec![request("c1", "uid-c1")]).await;
    assert_eq!(answer["uid-c1"].error, "");
    assert_eq!(
        node.dmem_max(POD_UID),
        format!("{REGION} {}\n", 4 * GIB),
        "lowered"
    );
    *node.cluster.quotas.lock().unwrap() = vec![quota(12 * GIB)];
    // The next round (poll timer) applies the new quota: the claim stays the ceiling.
    let want = format!("{REGION} {}\n", 6 * GIB);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.dmem_max(POD_UID) != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "max is {:?}",
            node.dmem_max(POD_UID)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    node.stop().await;
}

#[tokio::test]
async fn a_restarted_agent_keeps_the_claims_limits() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = with_pod_and_claims(vec![claim("c1", "uid-c1", POD_UID, "6Gi")]);
    let mut node = Node::start(dir.path(), cluster, None);
    let mut client = node.kubelet_registers().await;
    assert_eq!(
        prepare(&mut client, vec![request("c1", "uid-c1")]).await["uid-c1"].error,
        ""
    );
    let kernel = Arc::clone(&node.kernel);
    node.stop().await;
    // The claim object is gone from the API server meanwhile: the checkpoint still knows it.
    cluster.claims.lock().unwrap().clear();
    let mut node = Node::start(dir.path(), cluster, Some(kernel));
    let mut client = node.kubelet_registers().await;
    // Several rounds of the new agent: the limit stays.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(node.dmem_max(POD_UID), format!("{REGION} {}\n", 6 * GIB));
    }
    // The kubelet prepares again after its own restart: answered from the checkpoint.
    assert_eq!(
        prepare(&mut client, vec![request("c1", "uid-c1")]).await["uid-c1"].error,
        ""
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_claims_fail_alone_with_precise_errors_and_nothing_applied_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut too_big = claim("big", "uid-big", POD_UID, "17Gi");
    too_big.metadata.uid = Some("uid-big".into());
    let mut bad_config = claim("cfg", "uid-cfg", POD_UID, "1Gi");
    let config = json!([{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": {"apiVersion": "vram.kube-dmem.io/v1alpha1", "kind": "VramConfig", "max": "1Gi"}}}]);
    bad_config
        .status
        .as_mut()
        .unwrap()
        .allocation
        .as_mut()
        .unwrap()
        .devices
        .as_mut()
        .unwrap()
        .config = Some(serde_json::from_value(config).unwrap());
    let mut vanished = claim("gone", "uid-gone", POD_UID, "1Gi");
    let results = vanished
        .status
        .as_mut()
        .unwrap()
        .allocation
        .as_mut()
        .unwrap()
        .devices
        .as_mut()
        .unwrap();
    results.results.as_mut().unwrap()[0].device = "drm-0000-09-00-0-vram0".into();
    let cluster = with_pod_and_claims(vec![
        claim("ok", "uid-ok", POD_UID, "3Gi"),
        too_big,
        bad_config,
        vanished,
    ]);
    let mut node = Node::start(dir.path(), cluster, None);
    let mut client = node.kubelet_registers().await;
    assert_eq!(
        prepare(&mut client, vec![request("ok", "uid-ok")]).await["uid-ok"].error,
        ""
    );
    let answer = prepare(
        &mut client,
        vec![
            request("big", "uid-big"),
            request("cfg", "uid-cfg"),
            request("gone", "uid-gone"),
            request("missing", "uid-missing"),
            request("ok", "other-uid"),
        ],
    )
    .await;
    let error = |uid: &str| answer[uid].error.clone();
    assert!(
        error("uid-big").starts_with("ClaimExceedsRegion: claim ml/big takes 18253611008 bytes"),
        "{}",
        error("uid-big")
    );
    assert!(
        error("uid-cfg").starts_with("MalformedConfig: claim ml/cfg: opaque configuration #0"),
        "{}",
        error("uid-cfg")
    );
    assert!(
        error("uid-cfg").contains("unknown field `max`"),
        "{}",
        error("uid-cfg")
    );
    assert!(
        error("uid-gone")
            .starts_with("RegionNotFound: claim ml/gone has device drm-0000-09-00-0-vram0"),
        "{}",
        error("uid-gone")
    );
    assert_eq!(
        error("uid-missing"),
        "ClaimNotFound: claim ml/missing not found"
    );
    assert!(
        error("other-uid").starts_with("ClaimUidMismatch"),
        "{}",
        error("other-uid")
    );
    assert!(answer.values().all(|a| a.devices.is_empty()));
    // The good claim's limit is untouched.
    assert_eq!(node.dmem_max(POD_UID), format!("{REGION} {}\n", 3 * GIB));
    node.stop().await;
}

#[tokio::test]
async fn a_kubelet_speaking_v1beta1_is_served_too() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = with_pod_and_claims(vec![claim("c1", "uid-c1", POD_UID, "2Gi")]);
    let mut node = Node::start(dir.path(), cluster, None);
    let _ = node.kubelet_registers().await;
    let channel = uds::connect(&node.paths.dra_socket(), Duration::from_secs(5))
        .await
        .expect("dial");
    let mut beta = v1beta1::dra_plugin_client::DraPluginClient::new(channel);
    let answer = beta
        .node_prepare_resources(v1beta1::NodePrepareResourcesRequest {
            claims: vec![v1beta1::Claim {
                namespace: NS.into(),
                uid: "uid-c1".into(),
                name: "c1".into(),
            }],
        })
        .await
        .expect("prepare")
        .into_inner();
    assert_eq!(answer.claims["uid-c1"].error, "");
    assert_eq!(answer.claims["uid-c1"].devices[0].device_name, DEVICE);
    assert_eq!(node.dmem_max(POD_UID), format!("{REGION} {}\n", 2 * GIB));
    node.stop().await;
}

/// `GetInfo` the way the real kubelet's plugin watcher sends it (grpc-go dialing the bare socket
/// path, `docs/kubelet.md` §7.4): the path is the request's `:authority`, which an HTTP/2 server
/// that checks authorities refuses with `RST_STREAM(PROTOCOL_ERROR)`. Raw frames, because no Rust
/// client sends such an authority. Returns the decoded answer.
async fn get_info_with_the_path_as_authority(
    socket: &std::path::Path,
) -> kube_dmem_device_plugin::kubelet::proto::pluginregistration::PluginInfo {
    use prost::Message as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, ty, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    fn literal(out: &mut Vec<u8>, s: &[u8]) {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s);
    }
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.push(0x44);
    literal(&mut block, b"/pluginregistration.Registration/GetInfo");
    block.push(0x41);
    literal(&mut block, socket.to_string_lossy().as_bytes());
    block.push(0x5f);
    literal(&mut block, b"application/grpc");
    block.push(0x40);
    literal(&mut block, b"te");
    literal(&mut block, b"trailers");
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &block));
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    let mut conn = tokio::net::UnixStream::connect(socket).await.expect("dial");
    conn.write_all(&out).await.expect("send");

    let read = async {
        loop {
            let mut header = [0u8; 9];
            conn.read_exact(&mut header).await.expect("frame header");
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let mut payload = vec![0; len];
            conn.read_exact(&mut payload).await.expect("frame payload");
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            match header[3] {
                0x3 => panic!("the server reset the request: error code {payload:?}"),
                0x7 => panic!("the server went away: {payload:?}"),
                0x0 if stream == 1 && len >= 5 => return payload,
                _ => {}
            }
        }
    };
    let message = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    kube_dmem_device_plugin::kubelet::proto::pluginregistration::PluginInfo::decode(&message[5..])
        .expect("a PluginInfo")
}

#[tokio::test]
async fn the_registration_socket_answers_a_kubelet_that_names_the_path_as_authority() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = with_pod_and_claims(vec![]);
    let node = Node::start(dir.path(), cluster, None);
    let reg = node.registration_socket().await;
    let info = get_info_with_the_path_as_authority(&reg).await;
    assert_eq!(info.name, DRIVER);
    assert_eq!(info.r#type, "DRAPlugin");
    node.stop().await;
}
