//! The publisher against a recording API double, on a paused clock: one write per change, none
//! in steady state, retries after a failure, the generation bumped on every write.

use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Recording {
    existing: Option<i64>,
    /// What `generation` answers once set (a slice deleted or rewritten by someone else).
    now: Mutex<Option<Option<i64>>>,
    fail_next: Mutex<u32>,
    writes: Mutex<Vec<ResourceSliceSpec>>,
}

#[tonic::async_trait]
impl SliceApi for Recording {
    async fn generation(&self, _: &str) -> Result<Option<i64>, SliceError> {
        if let Some(now) = *self.now.lock().expect("lock") {
            return Ok(now);
        }
        let last = self
            .writes
            .lock()
            .expect("lock")
            .last()
            .map(|w| w.pool.generation);
        Ok(last.or(self.existing))
    }

    async fn apply(&self, name: &str, spec: ResourceSliceSpec) -> Result<(), SliceError> {
        let mut fail = self.fail_next.lock().expect("lock");
        if *fail > 0 {
            *fail -= 1;
            return Err(SliceError {
                op: "apply",
                name: name.to_owned(),
                source: "injected".into(),
            });
        }
        self.writes.lock().expect("lock").push(spec);
        Ok(())
    }
}

struct Harness {
    api: Arc<Recording>,
    regions: watch::Sender<Option<Vec<(String, u64)>>>,
    devices: watch::Receiver<Option<SliceContent>>,
    verdict: watch::Sender<KubeletVerdict>,
    stop: CancellationToken,
}

fn start(api: Recording) -> Harness {
    let api = Arc::new(api);
    let (regions, regions_rx) = watch::channel(None);
    let (devices_tx, devices) = watch::channel(None);
    let (verdict, registrations) = watch::channel(KubeletVerdict::default());
    let stop = CancellationToken::new();
    let publisher = Publisher {
        node: "node-1".into(),
        policy: RequestPolicy::default(),
        regions: regions_rx,
        devices: devices_tx,
        drivers: Arc::new(NoDrivers),
        api: api.clone(),
        cdi: None,
        metrics: DraMetrics::default(),
        registrations: Some(registrations),
    };
    tokio::spawn(publisher.run(stop.clone()));
    Harness {
        api,
        regions,
        devices,
        verdict,
        stop,
    }
}

impl Harness {
    fn writes(&self) -> Vec<ResourceSliceSpec> {
        self.api.writes.lock().expect("lock").clone()
    }

    /// Lets the publisher run until it is idle (the clock is paused, so this is not a sleep).
    async fn settle(&self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }
}

const GI: u64 = 1 << 30;

fn regions(list: &[(&str, u64)]) -> Option<Vec<(String, u64)>> {
    Some(list.iter().map(|(n, b)| ((*n).to_owned(), *b)).collect())
}

#[tokio::test(start_paused = true)]
async fn writes_only_on_change_and_bumps_the_generation() {
    let h = start(Recording {
        existing: Some(4),
        ..Recording::default()
    });
    h.regions
        .send_replace(regions(&[("drm/0000:03:00.0/vram0", 16 * GI)]));
    h.settle().await;
    let writes = h.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        writes[0].pool.generation, 5,
        "after the existing slice's generation"
    );
    assert!(
        h.devices
            .borrow()
            .as_ref()
            .is_some_and(|c| c.devices.len() == 1)
    );
    // Steady state: every round publishes the same regions; no write follows.
    for _ in 0..100 {
        h.regions
            .send_replace(regions(&[("drm/0000:03:00.0/vram0", 16 * GI)]));
        h.settle().await;
    }
    tokio::time::advance(Duration::from_secs(600)).await;
    h.settle().await;
    assert_eq!(h.writes().len(), 1, "no write in steady state");
    // A region appears, then the first vanishes: one write each.
    h.regions.send_replace(regions(&[
        ("drm/0000:03:00.0/vram0", 16 * GI),
        ("drm/0000:04:00.0/vram0", 8 * GI),
    ]));
    h.settle().await;
    h.regions
        .send_replace(regions(&[("drm/0000:04:00.0/vram0", 8 * GI)]));
    h.settle().await;
    let writes = h.writes();
    assert_eq!(writes.len(), 3);
    assert_eq!(writes[2].pool.generation, 7);
    let names: Vec<String> = writes[2]
        .devices
        .iter()
        .flatten()
        .map(|d| d.name.clone())
        .collect();
    assert_eq!(names, ["drm-0000-04-00-0-vram0"]);
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_after_backoff() {
    let h = start(Recording {
        fail_next: Mutex::new(2),
        ..Recording::default()
    });
    h.regions.send_replace(regions(&[("r0", 16 * GI)]));
    h.settle().await;
    assert!(h.writes().is_empty());
    tokio::time::advance(BACKOFF_INITIAL).await;
    h.settle().await;
    assert!(h.writes().is_empty(), "second attempt failed too");
    tokio::time::advance(BACKOFF_INITIAL * 2).await;
    h.settle().await;
    let writes = h.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].pool.generation, 1, "a new pool starts at 1");
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_slice_deleted_behind_its_back_is_published_again() {
    let h = start(Recording::default());
    h.regions.send_replace(regions(&[("r0", 16 * GI)]));
    h.settle().await;
    assert_eq!(h.writes().len(), 1);
    // Still there at generation 1: the periodic read changes nothing.
    *h.api.now.lock().expect("lock") = Some(Some(1));
    tokio::time::advance(CHECK_INTERVAL).await;
    h.settle().await;
    assert_eq!(h.writes().len(), 1);
    // Deleted: the next check publishes it again.
    *h.api.now.lock().expect("lock") = Some(None);
    tokio::time::advance(CHECK_INTERVAL).await;
    h.settle().await;
    let writes = h.writes();
    assert_eq!(writes.len(), 2);
    assert_eq!(
        writes[1].pool.generation, 1,
        "a new object starts a new pool generation"
    );
    h.stop.cancel();
}

/// Every GPU has one card node.
struct OneCard;

impl DeviceNodes for OneCard {
    fn for_pci(&self, bdf: &str) -> Vec<crate::kubelet::proto::v1beta1::DeviceSpec> {
        vec![crate::kubelet::proto::v1beta1::DeviceSpec {
            container_path: format!("/dev/dri/card-{bdf}"),
            host_path: format!("/dev/dri/card-{bdf}"),
            permissions: "rw".into(),
        }]
    }
}

#[test]
fn the_cdi_spec_follows_the_regions_with_device_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = CdiWriter {
        dir: dir.path().join("cdi"),
        nodes: Arc::new(OneCard),
    };
    let content = |list: &[(&str, u64)]| SliceContent {
        devices: devices(&regions(list).unwrap_or_default(), &BTreeMap::new()),
        policy: RequestPolicy::default(),
    };
    writer
        .write(&content(&[
            ("drm/0000:03:00.0/vram0", GI),
            ("sim-region", GI),
        ]))
        .expect("write");
    let path = dir.path().join("cdi").join("kube-dmem.io-vram.json");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("spec file")).expect("json");
    assert_eq!(spec["kind"], cdi::CDI_KIND);
    let names: Vec<&str> = (spec["devices"].as_array().expect("devices").iter())
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["drm-0000-03-00-0-vram0"],
        "a region without a PCI address has no nodes"
    );
    assert_eq!(
        spec["devices"][0]["containerEdits"]["deviceNodes"][0]["path"],
        "/dev/dri/card-0000:03:00.0"
    );
    writer
        .write(&content(&[("sim-region", GI)]))
        .expect("write");
    assert!(!path.exists(), "no device with nodes: no spec file");
}

#[tokio::test(start_paused = true)]
async fn after_a_registration_a_wiped_slice_is_back_within_seconds() {
    let h = start(Recording::default());
    h.regions.send_replace(regions(&[("r0", 16 * GI)]));
    h.settle().await;
    assert_eq!(h.writes().len(), 1);
    // The kubelet (re)starts: it registers the driver, then wipes the node's slices.
    h.verdict.send_modify(|v| {
        v.registered = true;
        v.notifications += 1;
    });
    h.settle().await;
    *h.api.now.lock().expect("lock") = Some(None);
    tokio::time::advance(FAST_CHECK_INTERVAL * 3).await;
    h.settle().await;
    assert_eq!(
        h.writes().len(),
        2,
        "published again well before the slow check"
    );
    // After the window, checks go back to the slow interval: a slice stays as written.
    *h.api.now.lock().expect("lock") = None;
    tokio::time::advance(FAST_CHECK_WINDOW + CHECK_INTERVAL * 2).await;
    h.settle().await;
    assert_eq!(h.writes().len(), 2);
    h.stop.cancel();
}
