//! EDGE: notices new pod cgroups as the kernel creates them, by inotify on the directories pod
//! cgroups appear in (the kubepods hierarchy down to the QoS level), so a new pod's limits are
//! written within milliseconds of its `mkdir`, long before its container starts.
//!
//! cgroupfs and our FUSE simulator both report `mkdir` to inotify. The polling scan of
//! [`super::cgroup_watch`] stays as the safety net, at [`SAFETY_SCAN`]: it finds parent directories
//! created later (a new QoS level) and anything inotify missed (a queue overflow), and takes over
//! entirely where inotify cannot be set up.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};
use tokio_util::sync::CancellationToken;

use super::cgroup_watch::{CgroupSignal, NewPodCgroups, Noticed, pod_parents};
use crate::cgroup::path::pod_uid_from_name;
use crate::cgroup::{CgroupPath, SysfsCgroups};

/// How often the safety-net scan runs while inotify works.
pub const SAFETY_SCAN: Duration = Duration::from_secs(1);

/// Watches `fs` for new pod cgroups and signals each one, until `stop`. Falls back to the polling
/// scan when inotify is unavailable.
pub async fn watch(fs: SysfsCgroups, signal: Arc<CgroupSignal>, stop: CancellationToken) {
    let inotify = match Inotify::init() {
        Ok(inotify) => inotify,
        Err(err) => {
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                "inotify unavailable; scanning for new pod cgroups instead"
            );
            return super::cgroup_watch::watch(fs, signal, stop).await;
        }
    };
    let mut events = match inotify.into_event_stream([0u8; 4096]) {
        Ok(events) => events,
        Err(err) => {
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                "inotify unavailable; scanning for new pod cgroups instead"
            );
            return super::cgroup_watch::watch(fs, signal, stop).await;
        }
    };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    let mut scan = NewPodCgroups::default();
    let mut safety = tokio::time::interval(SAFETY_SCAN);
    safety.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            event = events.next() => match event {
                Some(Ok(event)) => {
                    let name = event.name.as_ref().map(|n| n.to_string_lossy().into_owned());
                    if event.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                        // Events were lost: look at everything now.
                        safety.reset_immediately();
                    } else if name.as_deref().and_then(pod_uid_from_name).is_some() {
                        tracing::debug!(cgroup = ?name, "New pod cgroup (inotify)");
                        signal.notify(Noticed::Event);
                    } else if event.mask.contains(inotify::EventMask::ISDIR) {
                        // A new non-pod directory may be a new parent: arm it on the next scan.
                        safety.reset_immediately();
                    }
                }
                Some(Err(err)) => {
                    tracing::warn!(error = &err as &dyn std::error::Error, "inotify read failed");
                    safety.reset_immediately();
                }
                None => return super::cgroup_watch::watch(fs, signal, stop).await,
            },
            _ = safety.tick() => {
                // Arm watches on parents not yet watched, then scan once for anything missed.
                let probe = fs.clone();
                let scanned = tokio::task::spawn_blocking(move || {
                    let parents = pod_parents(&probe);
                    let appeared = scan.poll(&probe);
                    (parents, appeared, scan)
                })
                .await;
                let Ok((parents, appeared, back)) = scanned else {
                    tracing::error!("The pod cgroup scan stopped unexpectedly");
                    return;
                };
                scan = back;
                for parent in parents {
                    let dir = host_dir(&fs, &parent);
                    if watched.contains(&dir) {
                        continue;
                    }
                    match events.watches().add(&dir, WatchMask::CREATE | WatchMask::MOVED_TO) {
                        Ok(_) => {
                            watched.insert(dir);
                        }
                        Err(err) => tracing::debug!(dir = %dir.display(),
                            error = &err as &dyn std::error::Error, "Cannot watch a pod parent"),
                    }
                }
                if appeared {
                    tracing::debug!("New pod cgroup (safety scan)");
                    signal.notify(Noticed::Scan);
                }
                signal.baseline_taken_now();
            }
        }
    }
}

fn host_dir(fs: &SysfsCgroups, group: &CgroupPath) -> PathBuf {
    fs.dir(group)
}
