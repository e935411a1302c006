//! The node agent's cluster-mode round over the real `SysfsCgroups` backend, against the simulator
//! mounted with FUSE: a new pod cgroup is noticed and limited before its first charge; a cgroup
//! that vanishes and a region that is unregistered mid-round are reported precisely; on the
//! legacy kernel a `max` below usage is reported as `MaxBelowUsage`, retried, never claimed.
//! Skipped where FUSE is unavailable (`KUBE_DMEM_REQUIRE_FUSE=1` makes that a failure).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FuseEnv, G, R0, cg, fuse_available, kubepods_node, with_timeout};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::limits::HighSupport;
use kube_dmem_crds::select::{PodFacts, quota_facts};
use kube_dmem_device_plugin::cgroup::path::{CgroupDriver, QosClass, expected_pod_cgroup};
use kube_dmem_device_plugin::cgroup::{
    CgroupError, CgroupFile, CgroupFs, CgroupPath, SysfsCgroups,
};
use kube_dmem_device_plugin::cluster::agent::Agent;
use kube_dmem_device_plugin::cluster::api::{ActError, ApiSink, ApiWrite};
use kube_dmem_device_plugin::cluster::backend::Backend;
use kube_dmem_device_plugin::cluster::objects::Objects;
use kube_dmem_device_plugin::cluster::{cgroup_events, cgroup_watch};
use kube_dmem_device_plugin::decide::pressure::PressureThresholds;
use kube_dmem_device_plugin::kubelet::decide::inventory::Inventory;
use kube_dmem_device_plugin::metrics::Metrics;
use kube_dmem_device_plugin::round::{LimitsOutcome, RoundConfig, run_round};
use kube_dmem_sim::Profile;
use tokio_util::sync::CancellationToken;

const UID: &str = "6f1c2a39-1d5e-4f6a-8b7c-9d0e1f2a3b4c";

#[derive(Default)]
struct Recorder(Mutex<Vec<ApiWrite>>);

#[tonic::async_trait]
impl ApiSink for Recorder {
    async fn write(&self, write: &ApiWrite) -> Result<(), ActError> {
        self.0.lock().expect("lock").push(write.clone());
        Ok(())
    }
}

fn quota(max: &str) -> DmemQuota {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": "ml"},
        "spec": {"selector": {"matchLabels": {"app": "train"}},
                 "limits": [{"region": "*", "max": max}]}
    }))
    .expect("quota")
}

fn pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "train-0", "namespace": "ml", "uid": UID, "labels": {"app": "train"}},
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

fn add_pod_cgroup(env: &FuseEnv) {
    common::add_running_cgroup(env, &pod_cgroup());
}

fn charge(env: &FuseEnv, amount: &str) -> Result<(), i32> {
    common::Env::charge(env, &pod_cgroup(), R0, amount)
}

fn round_cfg() -> RoundConfig {
    RoundConfig {
        scan_root: CgroupPath::root(),
        high: HighSupport::Emulated,
        thresholds: PressureThresholds::default(),
    }
}

#[test]
fn a_new_pod_cgroup_is_limited_before_its_first_charge() {
    if !fuse_available() {
        return;
    }
    with_timeout(|| {
        let env = kubepods_node(Profile::Current);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let (backend, high) = Backend::sysfs(env.root().to_owned());
            assert!(backend.unavailable().is_none());
            let mut registry = prometheus_client::registry::Registry::default();
            let (inventory, _) = tokio::sync::watch::channel(Inventory::default());
            let cfg = RoundConfig {
                high,
                ..round_cfg()
            };
            let mut agent = Agent::new(
                "n1".into(),
                backend,
                cfg,
                Metrics::register(&mut registry),
                inventory,
            );
            let objects = Objects {
                pods: vec![Arc::new(pod())],
                quotas: vec![quota("2Gi")],
                ..Objects::default()
            };
            let sink = Recorder::default();
            // The agent runs before the cgroup exists: CgroupNotFound.
            let report = agent
                .round(&objects, None, &sink, Timestamp::UNIX_EPOCH)
                .await
                .expect("round");
            assert_eq!(report.pods[0].outcome, LimitsOutcome::CgroupNotFound);
            // The watch (inotify, the production path) notices the kubelet's mkdir through the
            // mount, and the round limits it.
            let notify = Arc::new(cgroup_watch::CgroupSignal::default());
            let stop = CancellationToken::new();
            let scan = tokio::spawn(cgroup_events::watch(
                SysfsCgroups::with_root(env.root()),
                notify.clone(),
                stop.clone(),
            ));
            tokio::time::timeout(Duration::from_secs(2), notify.baseline_taken())
                .await
                .expect("the scan takes its first look within 2 s");
            let made = std::time::Instant::now();
            add_pod_cgroup(&env);
            tokio::time::timeout(Duration::from_secs(2), notify.appeared())
                .await
                .expect("the new pod cgroup is noticed within 2 s");
            // By the inotify event, not by the safety-net scan.
            assert_eq!(
                notify.noticed(cgroup_watch::Noticed::Event),
                1,
                "noticed after {:?}, by a scan: {}",
                made.elapsed(),
                notify.noticed(cgroup_watch::Noticed::Scan)
            );
            let report = agent
                .round(&objects, None, &sink, Timestamp::UNIX_EPOCH)
                .await
                .expect("round");
            assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
            stop.cancel();
            scan.await.expect("scan ends");
        });
        // The workload's first allocation meets the limit (one 3Gi buffer cannot fit under 2Gi).
        assert_eq!(charge(&env, &format!("+{}", 3 * G)), Err(libc::EAGAIN));
        assert!(charge(&env, &format!("+{}", G)).is_ok());
        let max = SysfsCgroups::with_root(env.root())
            .read(&cg(&pod_cgroup()), CgroupFile::DmemMax)
            .expect("read max");
        assert!(max.contains(&format!("{R0} {}", 2 * G)), "{max}");
    });
}

/// A backend that runs `before_first_write` once, just before the first `dmem.max` write.
struct Interfere {
    inner: SysfsCgroups,
    hook: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl CgroupFs for Interfere {
    fn read(&self, group: &CgroupPath, file: CgroupFile) -> Result<String, CgroupError> {
        self.inner.read(group, file)
    }
    fn write(&self, group: &CgroupPath, file: CgroupFile, value: &str) -> Result<(), CgroupError> {
        if file == CgroupFile::DmemMax
            && let Some(hook) = self.hook.lock().expect("lock").take()
        {
            hook();
        }
        self.inner.write(group, file, value)
    }
    fn children(&self, group: &CgroupPath) -> Result<Vec<String>, CgroupError> {
        self.inner.children(group)
    }
    fn exists(&self, group: &CgroupPath, file: CgroupFile) -> bool {
        self.inner.exists(group, file)
    }
}

fn facts() -> (Vec<PodFacts>, Vec<kube_dmem_crds::select::QuotaFacts>) {
    let quotas = [quota("2Gi")];
    (
        vec![PodFacts::from_pod(&pod(), Vec::new())],
        quota_facts(quotas.iter()).0,
    )
}

#[test]
fn a_pod_cgroup_vanishing_mid_round_reads_as_not_found() {
    if !fuse_available() {
        return;
    }
    with_timeout(|| {
        let env = kubepods_node(Profile::Current);
        add_pod_cgroup(&env);
        let kernel = env.shared_kernel();
        let fs = Interfere {
            inner: SysfsCgroups::with_root(env.root()),
            hook: Mutex::new(Some(Box::new(move || {
                let mut k = kernel.lock().expect("lock");
                k.set_has_tasks(&pod_cgroup(), false).expect("no tasks");
                k.rmdir(&pod_cgroup()).expect("rmdir");
            }))),
        };
        let (pods, quotas) = facts();
        let report = run_round(&fs, &round_cfg(), &pods, &quotas).expect("round");
        assert_eq!(report.pods[0].outcome, LimitsOutcome::CgroupNotFound);
    });
}

#[test]
fn a_region_unregistered_mid_round_is_a_precise_write_failure() {
    if !fuse_available() {
        return;
    }
    with_timeout(|| {
        let env = kubepods_node(Profile::Current);
        add_pod_cgroup(&env);
        let kernel = env.shared_kernel();
        let fs = Interfere {
            inner: SysfsCgroups::with_root(env.root()),
            hook: Mutex::new(Some(Box::new(move || {
                kernel
                    .lock()
                    .expect("lock")
                    .unregister_region(R0)
                    .expect("unregister");
            }))),
        };
        let (pods, quotas) = facts();
        let report = run_round(&fs, &round_cfg(), &pods, &quotas).expect("round");
        let outcome = &report.pods[0].outcome;
        assert!(!outcome.in_force(), "{outcome:?}");
        let LimitsOutcome::WriteFailed { message, .. } = outcome else {
            panic!("expected WriteFailed, got {outcome:?}");
        };
        assert!(
            message.contains("dmem.max"),
            "the message names the file: {message}"
        );
    });
}

#[test]
fn max_below_usage_on_legacy_is_reported_retried_and_never_claimed() {
    if !fuse_available() {
        return;
    }
    with_timeout(|| {
        let env = kubepods_node(Profile::Legacy);
        add_pod_cgroup(&env);
        charge(&env, &format!("+{}", 3 * G)).expect("charge 3Gi before any limit");
        let fs = SysfsCgroups::with_root(env.root());
        let (pods, quotas) = facts();
        for attempt in 0..3 {
            let report = run_round(&fs, &round_cfg(), &pods, &quotas).expect("round");
            assert!(
                matches!(report.pods[0].outcome, LimitsOutcome::MaxBelowUsage { ref region, .. } if region == R0),
                "attempt {attempt}: {:?}",
                report.pods[0].outcome
            );
            assert!(
                report.writes > 0,
                "attempt {attempt}: the write is retried every round"
            );
        }
        charge(&env, &format!("-{}", 2 * G)).expect("free 2Gi");
        let report = run_round(&fs, &round_cfg(), &pods, &quotas).expect("round");
        assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
    });
}
