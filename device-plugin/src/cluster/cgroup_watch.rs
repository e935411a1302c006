//! EDGE: notices new pod cgroups by a polling scan, so the agent applies limits as the kubelet
//! creates a pod's cgroup, before its workload allocates. Where inotify works,
//! [`super::cgroup_events`] notices them at once and runs this scan only as its safety net (once
//! a second); on its own, where inotify cannot be set up, the scan runs every [`SCAN_INTERVAL`].
//!
//! Every tick it lists only the directories where pod cgroups appear (the kubepods hierarchy down
//! to the QoS level: a few `readdir`s), found once and again every [`REDISCOVER_EVERY`] ticks.
//! Listing works the same on cgroupfs, the FUSE simulator and any layout the scan in
//! `cgroup::path` understands, with no watch descriptors to lose.
//!
//! The scan speeds up when a cgroup is expected: the API announces a pod before the kubelet makes
//! its cgroup, so while a pod of this node has none yet ([`CgroupSignal::expect`]), the scan runs
//! every [`FAST_SCAN_INTERVAL`] for at most [`FAST_SCAN_FOR`]; otherwise every [`SCAN_INTERVAL`].

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cgroup::path::pod_uid_from_name;
use crate::cgroup::{CgroupFs, CgroupPath};

/// Time between two scans: short against a container start (hundreds of milliseconds).
pub const SCAN_INTERVAL: Duration = Duration::from_millis(100);
/// Ticks between rediscoveries of the parent directories (every 5 s at the default interval).
pub const REDISCOVER_EVERY: u32 = 50;
/// Time between two scans while a pod cgroup is expected: the budget from a new cgroup to
/// verified limits is 50 ms at p99, and the workload may allocate as soon as its container starts.
pub const FAST_SCAN_INTERVAL: Duration = Duration::from_millis(10);
/// Longest fast-scan episode: a pod whose cgroup never comes (a broken kubelet, a pod stuck
/// pulling its image) must not keep the agent scanning at 100 Hz.
pub const FAST_SCAN_FOR: Duration = Duration::from_secs(30);

/// Between the scan and the agent loop: the scan says a pod cgroup appeared, the loop says
/// whether one is expected.
#[derive(Debug)]
pub struct CgroupSignal {
    appeared: Notify,
    /// Since when a cgroup is expected, if it is.
    expecting_since: Mutex<Option<Instant>>,
    /// Wakes a sleeping scan when fast scanning starts, so the switch takes effect at once
    /// without the scan thread waking up every few milliseconds to look.
    fast: Condvar,
    /// Set once the first scan has recorded the cgroups that already exist: from then on, every
    /// new one is reported.
    baseline: tokio::sync::watch::Sender<bool>,
    /// New pod cgroups reported by inotify events and by scans, for tests and metrics.
    by_event: std::sync::atomic::AtomicU64,
    by_scan: std::sync::atomic::AtomicU64,
}

/// How a new pod cgroup was noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noticed {
    /// An inotify event.
    Event,
    /// A scan of the pod parent directories.
    Scan,
}

impl Default for CgroupSignal {
    fn default() -> Self {
        Self {
            appeared: Notify::new(),
            expecting_since: Mutex::new(None),
            fast: Condvar::new(),
            baseline: tokio::sync::watch::Sender::new(false),
            by_event: std::sync::atomic::AtomicU64::new(0),
            by_scan: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl CgroupSignal {
    /// Waits until the scan has taken its first look, so a cgroup made afterwards is new to it.
    pub async fn baseline_taken(&self) {
        let mut rx = self.baseline.subscribe();
        // An error means the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|taken| *taken).await;
    }

    /// Waits until the scan reports a new pod cgroup.
    pub async fn appeared(&self) {
        self.appeared.notified().await;
    }

    /// Says the watch has taken its first look (see [`Self::baseline_taken`]).
    pub fn baseline_taken_now(&self) {
        self.baseline
            .send_if_modified(|taken| !std::mem::replace(taken, true));
    }

    /// Reports a new pod cgroup to the loop.
    pub fn notify(&self, how: Noticed) {
        let counter = match how {
            Noticed::Event => &self.by_event,
            Noticed::Scan => &self.by_scan,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.appeared.notify_one();
    }

    /// How many new pod cgroups were noticed `how`.
    pub fn noticed(&self, how: Noticed) -> u64 {
        match how {
            Noticed::Event => &self.by_event,
            Noticed::Scan => &self.by_scan,
        }
        .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a pod of this node has no cgroup yet; the loop says so after every round.
    pub fn expect(&self, expecting: bool) {
        if let Ok(mut since) = self.expecting_since.lock() {
            match (expecting, *since) {
                (true, None) => {
                    *since = Some(Instant::now());
                    self.fast.notify_all();
                }
                (false, _) => *since = None,
                (true, Some(_)) => {}
            }
        }
    }

    /// How long the scan sleeps before its next pass.
    pub fn interval(&self) -> Duration {
        let since = self.expecting_since.lock().ok().and_then(|s| *s);
        interval_since(since)
    }

    /// Sleeps for [`Self::interval`], or less if fast scanning starts meanwhile.
    fn sleep(&self) {
        let Ok(since) = self.expecting_since.lock() else {
            std::thread::sleep(SCAN_INTERVAL);
            return;
        };
        let interval = interval_since(*since);
        if interval == FAST_SCAN_INTERVAL {
            drop(since);
            std::thread::sleep(interval);
        } else {
            // Spurious wake-ups only shorten one sleep; a poisoned lock just ends it.
            let _ = self.fast.wait_timeout(since, interval);
        }
    }
}

fn interval_since(since: Option<Instant>) -> Duration {
    match since {
        Some(t) if t.elapsed() < FAST_SCAN_FOR => FAST_SCAN_INTERVAL,
        _ => SCAN_INTERVAL,
    }
}
/// Deepest level below the root where pod cgroups appear (kind nests the kubelet's root,
/// `docs/kubelet.md` §4.5).
const MAX_PARENT_DEPTH: usize = 4;

/// Whether a cgroup name belongs to the kubelet's hierarchy.
fn kubelet_like(name: &str) -> bool {
    name.contains("kubepods") || name.contains("kubelet")
}

/// The directories pod cgroups appear in: every non-pod cgroup at or below a kubelet-like one,
/// down to `MAX_PARENT_DEPTH`. Unreadable or vanished directories are skipped.
pub fn pod_parents(fs: &dyn CgroupFs) -> Vec<CgroupPath> {
    let mut parents = Vec::new();
    let mut queue = VecDeque::from([(CgroupPath::root(), 0usize, false)]);
    while let Some((dir, depth, inside)) = queue.pop_front() {
        if inside {
            parents.push(dir.clone());
        }
        if depth >= MAX_PARENT_DEPTH {
            continue;
        }
        let Ok(children) = fs.children(&dir) else {
            continue;
        };
        for name in children {
            let child_inside = inside || kubelet_like(&name);
            if pod_uid_from_name(&name).is_some() || !child_inside && depth + 1 >= MAX_PARENT_DEPTH
            {
                continue;
            }
            if let Ok(child) = dir.join(&name) {
                queue.push_back((child, depth + 1, child_inside));
            }
        }
    }
    parents
}

/// Scan state: the parent directories and the pod cgroups already seen.
#[derive(Debug, Default)]
pub struct NewPodCgroups {
    parents: Vec<CgroupPath>,
    known: BTreeSet<String>,
    ticks: u32,
}

impl NewPodCgroups {
    /// Scans once; `true` when a pod cgroup appeared since the last scan (the first scan only
    /// learns what exists).
    pub fn poll(&mut self, fs: &dyn CgroupFs) -> bool {
        if self.ticks.is_multiple_of(REDISCOVER_EVERY) || self.parents.is_empty() {
            self.parents = pod_parents(fs);
        }
        let first = self.ticks == 0;
        self.ticks = self.ticks.wrapping_add(1);
        let mut seen = BTreeSet::new();
        for parent in &self.parents {
            if let Ok(children) = fs.children(parent) {
                seen.extend(
                    children
                        .into_iter()
                        .filter(|n| pod_uid_from_name(n).is_some()),
                );
            }
        }
        let appeared = seen.iter().any(|name| !self.known.contains(name));
        self.known = seen;
        appeared && !first
    }
}

/// Scans `fs` on a blocking thread, at [`CgroupSignal::interval`], and signals when a pod cgroup
/// appears, until `stop`. The agent runs it over the node's cgroupfs; generic so the benchmark can
/// run the same scan over the simulator.
pub async fn watch<F: CgroupFs + 'static>(
    fs: F,
    signal: Arc<CgroupSignal>,
    stop: CancellationToken,
) {
    let task = tokio::task::spawn_blocking(move || {
        let mut scan = NewPodCgroups::default();
        while !stop.is_cancelled() {
            if scan.poll(&fs) {
                tracing::debug!("New pod cgroup");
                signal.notify(Noticed::Scan);
            }
            signal
                .baseline
                .send_if_modified(|taken| !std::mem::replace(taken, true));
            signal.sleep();
        }
    });
    if task.await.is_err() {
        tracing::error!("The pod cgroup scan stopped unexpectedly");
    }
}

#[cfg(test)]
mod tests {
    use kube_dmem_sim::{SimConfig, SimKernel};

    use super::*;
    use crate::cgroup::SimCgroups;

    #[test]
    fn the_scan_speeds_up_only_while_a_cgroup_is_expected() {
        let signal = CgroupSignal::default();
        assert_eq!(signal.interval(), SCAN_INTERVAL);
        signal.expect(true);
        assert_eq!(signal.interval(), FAST_SCAN_INTERVAL);
        signal.expect(true);
        assert_eq!(
            signal.interval(),
            FAST_SCAN_INTERVAL,
            "a repeat keeps the episode"
        );
        signal.expect(false);
        assert_eq!(signal.interval(), SCAN_INTERVAL);
    }

    #[test]
    fn new_pod_cgroups_are_noticed_in_every_layout() {
        let mut k = SimKernel::new(SimConfig::default());
        for dir in [
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods",
            "/kubepods/besteffort",
            "/system.slice",
        ] {
            k.mkdir(dir).expect("mkdir");
        }
        let fs = SimCgroups::from_kernel(k);
        let mut scan = NewPodCgroups::default();
        assert!(!scan.poll(&fs), "the first scan learns");
        assert!(!scan.poll(&fs));
        let uid = "0c1b2a39-1d5e-4f6a-8b7c-9d0e1f2a3b4c";
        for pod in [
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                uid.replace('-', "_")
            ),
            format!(
                "/kubepods.slice/kubepods-pod{}.slice",
                uid.replace('-', "_")
            ),
            format!("/kubepods/besteffort/pod{uid}"),
        ] {
            fs.kernel()
                .lock()
                .expect("lock")
                .mkdir(&pod)
                .expect("mkdir pod");
            assert!(scan.poll(&fs), "{pod}");
            assert!(!scan.poll(&fs), "{pod} seen once");
        }
        fs.kernel()
            .lock()
            .expect("lock")
            .mkdir("/system.slice/podlike")
            .expect("mkdir");
        assert!(!scan.poll(&fs), "outside the kubelet's hierarchy");
    }
}
