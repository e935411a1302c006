//! Benchmark: a new pod cgroup appears (`mkdir` through the FUSE-mounted simulator, as the kubelet
//! and runc do on cgroupfs) -> the agent's watch signals it. The event-driven watch (inotify, the
//! production path since it exists) against the polling scan it replaced, in one run so the ratio
//! holds across machines. Needs root and /dev/fuse. Prints a table:
//! `cargo bench -p kube-dmem-device-plugin --bench cgroup_watch`.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod stats;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_dmem_device_plugin::cgroup::{CgroupFile, CgroupFs, CgroupPath, SysfsCgroups};
use kube_dmem_device_plugin::cluster::cgroup_watch::CgroupSignal;
use kube_dmem_device_plugin::cluster::{cgroup_events, cgroup_watch};
use kube_dmem_device_plugin::simfs;
use kube_dmem_sim::{Profile, SimConfig, SimKernel};
use tokio_util::sync::CancellationToken;

const SAMPLES: usize = 100;
const PARENT: &str = "kubepods.slice/kubepods-besteffort.slice";

async fn measure(events: bool) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kernel = SimKernel::new(SimConfig::with_profile(Profile::Current));
    kernel.register_region("drm/0000:03:00.0/vram0", 16 << 30, true);
    let kernel = Arc::new(Mutex::new(kernel));
    let mount = simfs::mount(kernel, dir.path()).expect("mount the simulator (root and /dev/fuse)");
    let fs = SysfsCgroups::with_root(dir.path());
    fs.write(
        &CgroupPath::root(),
        CgroupFile::CgroupSubtreeControl,
        "+dmem",
    )
    .expect("+dmem");
    std::fs::create_dir_all(dir.path().join(PARENT)).expect("parents");
    let signal = Arc::new(CgroupSignal::default());
    let stop = CancellationToken::new();
    let task = if events {
        tokio::spawn(cgroup_events::watch(
            fs.clone(),
            signal.clone(),
            stop.clone(),
        ))
    } else {
        tokio::spawn(cgroup_watch::watch(
            fs.clone(),
            signal.clone(),
            stop.clone(),
        ))
    };
    signal.baseline_taken().await;
    let mut samples = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Pods arrive at arbitrary moments relative to the scan's ticks.
        tokio::time::sleep(Duration::from_millis(13 + (i as u64 * 7) % 40)).await;
        let name = format!(
            "kubepods-besteffort-pod{:08x}_1d5e_4f6a_8b7c_9d0e1f2a3b4c.slice",
            i
        );
        let appeared = signal.appeared();
        let start = Instant::now();
        std::fs::create_dir(dir.path().join(PARENT).join(name)).expect("mkdir pod");
        tokio::time::timeout(Duration::from_secs(5), appeared)
            .await
            .expect("noticed within 5 s");
        samples.push(start.elapsed());
    }
    stop.cancel();
    task.await.expect("watch ends");
    drop(mount);
    samples.sort();
    samples
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("| watch | samples | p50 | p99 |");
    println!("|---|---|---|---|");
    let mut p99s = Vec::new();
    for (name, events) in [
        ("inotify (agent default)", true),
        ("polling scan (fallback)", false),
    ] {
        let mut samples = rt.block_on(measure(events));
        let (p50, p99) = (
            stats::percentile(&mut samples, 0.5),
            stats::percentile(&mut samples, 0.99),
        );
        p99s.push(p99);
        println!("| {name} | {} | {p50:.2?} | {p99:.2?} |", samples.len());
    }
    println!(
        "\np99 ratio scan / inotify: {:.1}x",
        p99s[1].as_secs_f64() / p99s[0].as_secs_f64().max(1e-9)
    );
}
