//! Adapter tests (docs/contributing.md §8, tier 3): the real plugin, registrar and PodResources
//! client over Unix sockets in a tempdir, against the kubelet test double in `double.rs`.

// Test support code outside `#[test]` fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod double;
#[path = "../pod_resources_double/mod.rs"]
mod pod_resources_double;
mod podresources;
mod registration;
mod rpcs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use double::{KubeletDouble, WAIT};
use kube_dmem_device_plugin::kubelet::decide::inventory::{Inventory, RegionKey};
use kube_dmem_device_plugin::kubelet::devnodes::{DevDir, DeviceNodes, NoDeviceNodes};
use kube_dmem_device_plugin::kubelet::plugin::{DevicePluginService, PreStart, PreStartError};
use kube_dmem_device_plugin::kubelet::registration::{
    Registrar, RegistrationConfig, RegistrationStatus,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) const GIB: u64 = 1 << 30;
/// 4 units.
pub(crate) const A: &str = "drm/0000:03:00.0/vram0";
/// 2 units.
pub(crate) const B: &str = "drm/0000:04:00.0/vram0";

pub(crate) fn capacity(entries: &[(&str, u64)]) -> BTreeMap<String, u64> {
    entries.iter().map(|(n, b)| ((*n).to_owned(), *b)).collect()
}

pub(crate) fn two_regions() -> Inventory {
    Inventory::default()
        .observe(&capacity(&[(A, 4 * GIB), (B, 2 * GIB)]))
        .unwrap()
}

pub(crate) fn id(region: &str, unit: u32) -> String {
    format!("{}-{unit}", RegionKey::of(region))
}

/// A [`PreStart`] hook that reports each call and answers with a configurable error.
#[derive(Default)]
pub(crate) struct RecordingHook {
    calls: Mutex<Option<mpsc::UnboundedSender<Vec<String>>>>,
    fail_with: Mutex<Option<fn() -> PreStartError>>,
}

#[tonic::async_trait]
impl PreStart for RecordingHook {
    async fn pre_start(&self, device_ids: Vec<String>) -> Result<(), PreStartError> {
        if let Some(tx) = self.calls.lock().unwrap().as_ref() {
            let _ = tx.send(device_ids);
        }
        match *self.fail_with.lock().unwrap() {
            Some(make) => Err(make()),
            None => Ok(()),
        }
    }
}

/// The plugin and its registrar running against a kubelet double in a tempdir.
pub(crate) struct Harness {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) kubelet: KubeletDouble,
    pub(crate) inventory: watch::Sender<Inventory>,
    pub(crate) status: watch::Receiver<RegistrationStatus>,
    pub(crate) hook: Arc<RecordingHook>,
    pub(crate) hook_calls: mpsc::UnboundedReceiver<Vec<String>>,
    stop: CancellationToken,
    registrar: Option<JoinHandle<()>>,
}

/// Registration settings for tests: the tempdir, fast polling and backoff.
pub(crate) fn test_config(dir: &Path) -> RegistrationConfig {
    RegistrationConfig {
        dir: dir.to_path_buf(),
        poll_interval: Duration::from_millis(20),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        call_timeout: WAIT,
        ..RegistrationConfig::default()
    }
}

impl Harness {
    /// Kubelet double first, then the plugin.
    pub(crate) async fn start() -> Self {
        Self::start_with(two_regions(), Arc::new(NoDeviceNodes)).await
    }

    pub(crate) async fn start_with(inventory: Inventory, nodes: Arc<dyn DeviceNodes>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubelet = KubeletDouble::start(dir.path());
        Self::start_plugin(dir, kubelet, inventory, nodes)
    }

    pub(crate) fn start_plugin(
        dir: tempfile::TempDir,
        kubelet: KubeletDouble,
        inventory: Inventory,
        nodes: Arc<dyn DeviceNodes>,
    ) -> Self {
        let (inventory, rx) = watch::channel(inventory);
        let hook = Arc::new(RecordingHook::default());
        let (tx, hook_calls) = mpsc::unbounded_channel();
        *hook.calls.lock().unwrap() = Some(tx);
        let plugin = DevicePluginService::new(rx, nodes, hook.clone());
        let registrar = Registrar::new(test_config(dir.path()), plugin);
        let status = registrar.status();
        let stop = CancellationToken::new();
        let task = tokio::spawn(registrar.run(stop.clone()));
        Self {
            dir,
            kubelet,
            inventory,
            status,
            hook,
            hook_calls,
            stop,
            registrar: Some(task),
        }
    }

    pub(crate) fn socket(&self, endpoint: &str) -> PathBuf {
        self.dir.path().join(endpoint)
    }

    pub(crate) fn fail_pre_start_with(&self, make: fn() -> PreStartError) {
        *self.hook.fail_with.lock().unwrap() = Some(make);
    }

    /// Stops the registrar and waits for it to return.
    pub(crate) async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.registrar.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("registrar stops in time")
                .unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A dev root with `dri/by-path` links for region A's GPU.
pub(crate) fn dev_root_for_a() -> (tempfile::TempDir, Arc<dyn DeviceNodes>) {
    let dev = tempfile::tempdir().unwrap();
    let dri = dev.path().join("dri");
    std::fs::create_dir_all(dri.join("by-path")).unwrap();
    for (node, link) in [("card1", "card"), ("renderD128", "render")] {
        std::fs::write(dri.join(node), "").unwrap();
        std::os::unix::fs::symlink(
            format!("../{node}"),
            dri.join("by-path").join(format!("pci-0000:03:00.0-{link}")),
        )
        .unwrap();
    }
    let nodes: Arc<dyn DeviceNodes> = Arc::new(DevDir::new(dev.path()));
    (dev, nodes)
}
