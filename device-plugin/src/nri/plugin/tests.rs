//! The plugin against a runtime test double speaking NRI's framing over a real Unix socket in a
//! tempdir, with a stand-in for the agent loop answering [`RoundRequest`]s.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::nri::decide::frame::{
    MuxDecoder, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, TTRPC_REQUEST, TTRPC_RESPONSE,
    TtrpcDecoder, TtrpcHeader, encode_mux, encode_ttrpc,
};
use crate::nri::proto::{PLUGIN_SERVICE, RUNTIME_SERVICE, ttrpc};
use crate::nri::{NriConfig, run, session};
use crate::round::LimitsOutcome;

/// The runtime's end of one plugin connection.
struct FakeRuntime {
    sock: UnixStream,
    mux: MuxDecoder,
    /// Our calls' answers (conn 1) and the plugin's calls (conn 2).
    conn1: TtrpcDecoder,
    conn2: TtrpcDecoder,
    next_stream: u32,
}

impl FakeRuntime {
    fn new(sock: UnixStream) -> Self {
        Self {
            sock,
            mux: MuxDecoder::default(),
            conn1: TtrpcDecoder::default(),
            conn2: TtrpcDecoder::default(),
            next_stream: 1,
        }
    }

    /// The next whole ttrpc message on either connection.
    async fn read(&mut self) -> (u32, TtrpcHeader, Vec<u8>) {
        loop {
            if let Some(m) = self.conn1.next_message().unwrap() {
                return (PLUGIN_SERVICE_CONN, m.0, m.1);
            }
            if let Some(m) = self.conn2.next_message().unwrap() {
                return (RUNTIME_SERVICE_CONN, m.0, m.1);
            }
            if let Some((conn, payload)) = self.mux.next_frame().unwrap() {
                match conn {
                    PLUGIN_SERVICE_CONN => self.conn1.push(&payload),
                    RUNTIME_SERVICE_CONN => self.conn2.push(&payload),
                    other => panic!("frame on conn {other}"),
                }
                continue;
            }
            let mut buf = [0u8; 1024];
            let n = self.sock.read(&mut buf).await.unwrap();
            assert!(n > 0, "plugin closed the connection");
            self.mux.push(&buf[..n]);
        }
    }

    /// Sends a ttrpc message on `conn`, cut into 3-byte mux frames to exercise reassembly.
    async fn send(&mut self, conn: u32, header: TtrpcHeader, payload: &[u8]) {
        let mut msg = Vec::new();
        encode_ttrpc(header, payload, &mut msg).unwrap();
        let mut wire = Vec::new();
        for part in msg.chunks(3) {
            encode_mux(conn, part, &mut wire);
        }
        self.sock.write_all(&wire).await.unwrap();
    }

    /// Waits for RegisterPlugin on conn 2 and accepts it.
    async fn accept_registration(&mut self) -> crate::nri::proto::api::RegisterPluginRequest {
        let (conn, header, body) = self.read().await;
        assert_eq!((conn, header.kind), (RUNTIME_SERVICE_CONN, TTRPC_REQUEST));
        let req = ttrpc::Request::decode(body.as_slice()).unwrap();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            (RUNTIME_SERVICE, "RegisterPlugin")
        );
        let answer = ttrpc::Response {
            status: None,
            payload: api::Empty {}.encode_to_vec(),
        };
        let reply = TtrpcHeader {
            kind: TTRPC_RESPONSE,
            ..header
        };
        self.send(RUNTIME_SERVICE_CONN, reply, &answer.encode_to_vec())
            .await;
        api::RegisterPluginRequest::decode(req.payload.as_slice()).unwrap()
    }

    /// Calls the plugin's `method` on conn 1.
    async fn call(&mut self, method: &str, req: &impl Message) -> ttrpc::Response {
        let stream = self.next_stream;
        self.next_stream += 2;
        let envelope = ttrpc::Request {
            service: PLUGIN_SERVICE.to_owned(),
            method: method.to_owned(),
            payload: req.encode_to_vec(),
            timeout_nano: 2_000_000_000,
            metadata: Vec::new(),
        };
        let header = TtrpcHeader {
            stream,
            kind: TTRPC_REQUEST,
            flags: 0,
        };
        self.send(PLUGIN_SERVICE_CONN, header, &envelope.encode_to_vec())
            .await;
        let (conn, header, body) = self.read().await;
        assert_eq!(
            (conn, header.stream, header.kind),
            (PLUGIN_SERVICE_CONN, stream, TTRPC_RESPONSE)
        );
        ttrpc::Response::decode(body.as_slice()).unwrap()
    }

    async fn configure(&mut self, request_timeout_ms: i64) -> api::ConfigureResponse {
        let req = api::ConfigureRequest {
            runtime_name: "fake".into(),
            runtime_version: "0".into(),
            registration_timeout: 5000,
            request_timeout: request_timeout_ms,
            ..Default::default()
        };
        let resp = self.call("Configure", &req).await;
        assert_eq!(resp.status.map_or(0, |s| s.code), 0);
        api::ConfigureResponse::decode(resp.payload.as_slice()).unwrap()
    }
}

fn pod(ns: &str, name: &str) -> api::PodSandbox {
    api::PodSandbox {
        id: format!("sandbox-{name}"),
        name: name.into(),
        namespace: ns.into(),
        uid: "0000-1111".into(),
        ..Default::default()
    }
}

fn create(ns: &str, name: &str) -> api::CreateContainerRequest {
    api::CreateContainerRequest {
        pod: Some(pod(ns, name)),
        container: Some(api::Container {
            id: "c1".into(),
            name: "main".into(),
            ..Default::default()
        }),
    }
}

/// A plugin whose loop side is returned, and a listener it will connect to.
fn setup(
    dir: &Path,
) -> (
    Arc<NriPlugin>,
    mpsc::Receiver<RoundRequest>,
    mpsc::UnboundedReceiver<Seen>,
    NriConfig,
    crate::metrics::NriHeld,
) {
    let (rounds, rounds_rx) = mpsc::channel(16);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let mut registry = prometheus_client::registry::Registry::default();
    let held = crate::metrics::Metrics::register(&mut registry).nri_held;
    let plugin = Arc::new(
        NriPlugin::new(rounds)
            .with_observer(seen_tx)
            .with_metrics(held.clone()),
    );
    let cfg = NriConfig {
        socket: dir.join("nri.sock"),
    };
    (plugin, rounds_rx, seen, cfg, held)
}

/// Creations the plugin recorded as held, for `event` and `outcome`.
fn held_count(held: &crate::metrics::NriHeld, event: &str, outcome: &str) -> u64 {
    let labels = [("event", event.to_owned()), ("outcome", outcome.to_owned())];
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("held", "", held.clone());
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    let want = format!(
        "held_count{{{}}} ",
        labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn last_seen(seen: &mut mpsc::UnboundedReceiver<Seen>, method: &str) -> Seen {
    loop {
        let s = seen.recv().await.unwrap();
        if s.method == method {
            return s;
        }
    }
}

#[tokio::test]
async fn registers_configures_and_answers_once_limits_are_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, mut rounds, mut seen, cfg, held) = setup(dir.path());
    let listener = UnixListener::bind(&cfg.socket).unwrap();
    let plugin_side = tokio::spawn(async move { session(&cfg, plugin).await });
    // The loop: first round does not know the pod yet, the second applies its limits.
    let agent = tokio::spawn(async move {
        let mut asked = Vec::new();
        while let Some(req) = rounds.recv().await {
            let outcome = (!asked.is_empty()).then_some(LimitsOutcome::Applied);
            asked.push(req.pod.clone());
            let _ = req.reply.send(outcome);
        }
        asked
    });
    let (sock, _) = listener.accept().await.unwrap();
    let mut rt = FakeRuntime::new(sock);
    let reg = rt.accept_registration().await;
    assert_eq!(
        (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
        ("kube-dmem", "10")
    );

    let configured = rt.configure(2000).await;
    assert_eq!(
        configured.events, 0b1001,
        "RunPodSandbox and CreateContainer"
    );

    let sync = api::SynchronizeRequest {
        pods: vec![],
        containers: vec![],
        more: true,
    };
    let resp = rt.call("Synchronize", &sync).await;
    let resp = api::SynchronizeResponse::decode(resp.payload.as_slice()).unwrap();
    assert!(
        resp.more && resp.update.is_empty(),
        "a split sync echoes `more`"
    );

    let resp = rt.call("CreateContainer", &create("ml", "train")).await;
    assert_eq!(resp.status.map_or(0, |s| s.code), 0);
    let answer = api::CreateContainerResponse::decode(resp.payload.as_slice()).unwrap();
    assert_eq!(
        answer,
        api::CreateContainerResponse::default(),
        "no adjustment"
    );
    let s = last_seen(&mut seen, "CreateContainer").await;
    assert_eq!(s.ensured, Some(Ensured::InForce));
    assert_eq!(s.container.as_deref(), Some("c1"));
    // The time the creation was held is on the agent's metrics.
    assert_eq!(held_count(&held, "CreateContainer", "in_force"), 1);
    assert_eq!(held_count(&held, "CreateContainer", "not_confirmed"), 0);

    // Older runtimes announce new pods as a state change.
    let change = api::StateChangeEvent {
        event: api::Event::RunPodSandbox as i32,
        pod: Some(pod("ml", "train")),
        container: None,
    };
    let resp = rt.call("StateChange", &change).await;
    assert_eq!(resp.status.map_or(0, |s| s.code), 0);
    assert_eq!(
        last_seen(&mut seen, "RunPodSandbox").await.ensured,
        Some(Ensured::InForce)
    );

    // A request without Kubernetes metadata asks for nothing.
    let bare = api::CreateContainerRequest::default();
    rt.call("CreateContainer", &bare).await;
    assert_eq!(
        last_seen(&mut seen, "CreateContainer").await.ensured,
        Some(Ensured::NoPod)
    );

    let resp = rt.call("PostStartContainer", &api::Empty {}).await;
    assert_eq!(resp.status.map(|s| s.code), Some(super::UNIMPLEMENTED));

    drop(rt);
    plugin_side.await.unwrap().unwrap();
    let asked = agent.await.unwrap();
    assert_eq!(asked, vec![("ml".to_owned(), "train".to_owned()); 3]);
}

#[tokio::test]
async fn a_slow_loop_still_gets_an_answer_before_the_runtime_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, rounds, mut seen, cfg, _held) = setup(dir.path());
    let listener = UnixListener::bind(&cfg.socket).unwrap();
    tokio::spawn(async move { session(&cfg, plugin).await });
    let (sock, _) = listener.accept().await.unwrap();
    let mut rt = FakeRuntime::new(sock);
    rt.accept_registration().await;
    rt.configure(400).await;
    // `rounds` is held but never read: the loop is stuck in a long round.
    let started = std::time::Instant::now();
    let resp = rt.call("CreateContainer", &create("ml", "stuck")).await;
    let took = started.elapsed();
    assert_eq!(
        resp.status.map_or(0, |s| s.code),
        0,
        "never fails the container"
    );
    assert!(took < Duration::from_millis(400), "answered after {took:?}");
    assert_eq!(
        last_seen(&mut seen, "CreateContainer").await.ensured,
        Some(Ensured::TimedOut)
    );
    drop(rounds);
    // With the loop gone the answer comes at once.
    let resp = rt.call("CreateContainer", &create("ml", "gone")).await;
    assert_eq!(resp.status.map_or(0, |s| s.code), 0);
    assert_eq!(
        last_seen(&mut seen, "CreateContainer").await.ensured,
        Some(Ensured::LoopGone)
    );
}

#[tokio::test]
async fn reconnects_when_the_runtime_comes_back_on_a_new_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (plugin, _rounds, _seen, cfg, _held) = setup(dir.path());
    let path = cfg.socket.clone();
    let stop = CancellationToken::new();
    // No socket yet: the plugin keeps trying.
    let task = tokio::spawn(run(cfg, plugin, stop.clone()));
    for _ in 0..2 {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let (sock, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("the plugin connects within a few reconnect intervals")
            .unwrap();
        let mut rt = FakeRuntime::new(sock);
        rt.accept_registration().await;
        rt.configure(2000).await;
        // The runtime restarts: connection and socket go away.
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

mod with_the_agent_loop {
    //! The plugin in front of the real agent loop ([`crate::cluster::drive::drive`]) on the
    //! in-process simulator: a creation request is answered only after a real round applied and
    //! read back the pod's limits.

    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Pod;
    use kube_dmem_crds::DmemQuota;
    use kube_dmem_sim::Profile;
    use tokio::net::UnixListener;
    use tokio::sync::{Notify, mpsc, watch};
    use tokio_util::sync::CancellationToken;

    use super::{FakeRuntime, api, create, last_seen, pod};
    use crate::cgroup::CgroupPath;
    use crate::cluster::agent::Agent;
    use crate::cluster::api::DiscardSink;
    use crate::cluster::backend::Backend;
    use crate::cluster::cgroup_watch::CgroupSignal;
    use crate::cluster::drive::{Loop, drive};
    use crate::cluster::health::Health;
    use crate::cluster::objects::Objects;
    use crate::decide::pressure::PressureThresholds;
    use crate::kubelet::decide::inventory::Inventory;
    use crate::metrics::Metrics;
    use crate::nri::plugin::Ensured;
    use crate::nri::{NriConfig, session};
    use crate::round::RoundConfig;

    const R0: &str = "drm/0000:03:00.0/vram0";

    fn objects() -> Objects {
        let quota: DmemQuota = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
            "metadata": {"name": "q", "namespace": "ml", "creationTimestamp": "2026-11-01T10:00:00Z"},
            "spec": {"selector": {"matchLabels": {"app": "train"}},
                     "limits": [{"region": "*", "max": "8Gi"}]}
        }))
        .expect("quota");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "train", "namespace": "ml",
                         "uid": "6f1c2a39-1d5e-4f6a-8b7c-9d0e1f2a3b4c", "labels": {"app": "train"},
                         "annotations": {"sim.kube-dmem.io/usage": format!("{R0}=1Gi")}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}
        }))
        .expect("pod");
        Objects {
            pods: vec![Arc::new(pod)],
            quotas: vec![quota],
            ..Objects::default()
        }
    }

    #[tokio::test]
    async fn creation_is_answered_after_a_real_round_applied_the_limits() {
        let (backend, high) =
            Backend::sim(Profile::Current, &[(R0.to_owned(), 16 << 30)]).expect("sim");
        let kernel = match &backend {
            Backend::Sim { fs, .. } => fs.clone(),
            _ => unreachable!("a simulator backend"),
        };
        let cfg = RoundConfig {
            scan_root: CgroupPath::root(),
            high,
            thresholds: PressureThresholds::default(),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let (inventory, _) = watch::channel(Inventory::default());
        let agent = Agent::new(
            "n1".into(),
            backend,
            cfg,
            Metrics::register(&mut registry),
            inventory,
        );
        let dir = tempfile::tempdir().unwrap();
        let nri_cfg = NriConfig {
            socket: dir.path().join("nri.sock"),
        };
        let (rounds_tx, rounds_rx) = mpsc::channel(16);
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let plugin = Arc::new(super::NriPlugin::new(rounds_tx).with_observer(seen_tx));
        let objects: &'static Objects = Box::leak(Box::new(objects()));
        let stop = CancellationToken::new();
        let parts = Loop {
            agent,
            objects,
            sink: &DiscardSink,
            trigger: Arc::new(Notify::new()),
            new_cgroup: Arc::new(CgroupSignal::default()),
            rounds: rounds_rx,
            kubelet: None,
            dra: None,
            poll_interval: std::time::Duration::from_secs(3600),
            near_poll_interval: crate::cluster::drive::NEAR_POLL,
            resync: std::time::Duration::from_secs(3600),
            health: Arc::new(Health::default()),
        };
        let agent_loop = tokio::spawn(drive(parts, stop.clone()));

        let listener = UnixListener::bind(&nri_cfg.socket).unwrap();
        tokio::spawn(async move { session(&nri_cfg, plugin).await });
        let (sock, _) = listener.accept().await.unwrap();
        let mut rt = FakeRuntime::new(sock);
        rt.accept_registration().await;
        rt.configure(2000).await;
        let resp = rt.call("CreateContainer", &create("ml", "train")).await;
        assert_eq!(resp.status.map_or(0, |s| s.code), 0);
        assert_eq!(
            last_seen(&mut seen, "CreateContainer").await.ensured,
            Some(Ensured::InForce)
        );
        // A pod the API watch has not delivered yet: the round governs it from what the sandbox
        // says (its labels select the quota), so its limits are in force before its container.
        let mut fresh = pod("ml", "fresh");
        fresh.uid = "9e0d1c2b-3a4f-4e5d-8c7b-6a5f4e3d2c1b".into();
        fresh.labels = [
            ("app", "train"),
            ("io.kubernetes.pod.name", "fresh"),
            (
                "io.kubernetes.pod.uid",
                "9e0d1c2b-3a4f-4e5d-8c7b-6a5f4e3d2c1b",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let request = api::RunPodSandboxRequest { pod: Some(fresh) };
        let resp = rt.call("RunPodSandbox", &request).await;
        assert_eq!(resp.status.map_or(0, |s| s.code), 0);
        assert_eq!(
            last_seen(&mut seen, "RunPodSandbox").await.ensured,
            Some(Ensured::InForce)
        );
        let cgroup = crate::cgroup::path::expected_pod_cgroup(
            crate::cgroup::path::CgroupDriver::Systemd,
            "/",
            crate::cgroup::path::QosClass::BestEffort,
            "9e0d1c2b-3a4f-4e5d-8c7b-6a5f4e3d2c1b",
        )
        .expect("path");
        let max = kernel
            .kernel()
            .lock()
            .expect("kernel")
            .read_file(cgroup.as_str(), "dmem.max")
            .expect("the sandbox's pod cgroup");
        assert!(max.contains(&format!("{R0} {}", 8u64 << 30)), "{max}");
        // A sandbox that names no pod UID (not made by a kubelet), unknown to the watch: let
        // through once the budget is spent.
        rt.configure(600).await;
        let mut unnamed = create("ml", "unknown");
        if let Some(p) = unnamed.pod.as_mut() {
            p.uid.clear();
        }
        let resp = rt.call("CreateContainer", &unnamed).await;
        assert_eq!(resp.status.map_or(0, |s| s.code), 0);
        assert_eq!(
            last_seen(&mut seen, "CreateContainer").await.ensured,
            Some(Ensured::NotInForce("PodNotFound"))
        );
        stop.cancel();
        agent_loop.await.unwrap();
    }
}
