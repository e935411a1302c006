//! EDGE: the DRA device health stream (`v1alpha1.DRAResourceHealth/NodeWatchResources`,
//! `docs/dra.md` §2.1), served on the DRA socket. The kubelet 1.36 opens it for every DRA driver
//! (feature `ResourceHealthStatus`, beta, on by default) and, without it, logs an error and dials
//! again every 5 s for as long as the driver runs.
//!
//! One tracker follows the devices the publisher puts in the slice from the agent's start, so a
//! region that left before the kubelet (re)connected is still reported; every stream sends the
//! tracker's report at once, on every change, and every [`HEARTBEAT`] otherwise. The decisions are
//! in [`super::decide::health`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::debug;

pub use super::decide::health::HEARTBEAT;
use super::decide::health::{DeviceHealth, Health, Published, TIMEOUT_SECONDS};
use super::decide::slice::SliceContent;
use crate::kubelet::proto::dra_health as pb;

/// Follows the slice's devices until `stop`; the receiver holds the latest report (`None` until
/// the first round has read the regions).
pub fn track(
    mut devices: watch::Receiver<Option<SliceContent>>,
    stop: CancellationToken,
) -> watch::Receiver<Option<Vec<DeviceHealth>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut published = Published::default();
        loop {
            let report = devices
                .borrow_and_update()
                .as_ref()
                .map(|content| published.report(&content.devices));
            if report.is_some() {
                tx.send_if_modified(|old| {
                    let changed = *old != report;
                    *old = report;
                    changed
                });
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = devices.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}

/// The health service: the tracker's reports, for the devices of `pool`.
#[derive(Clone)]
pub struct HealthService {
    reports: watch::Receiver<Option<Vec<DeviceHealth>>>,
    pool: String,
    heartbeat: Duration,
}

impl HealthService {
    /// Serves `reports` (from [`track`]) for the devices of `pool` (the node's name, as in the
    /// slice), sent again every [`HEARTBEAT`].
    pub fn new(reports: watch::Receiver<Option<Vec<DeviceHealth>>>, pool: String) -> Self {
        Self {
            reports,
            pool,
            heartbeat: HEARTBEAT,
        }
    }

    /// Sends the report again every `heartbeat` instead (tests).
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }
}

fn response(pool: &str, report: &[DeviceHealth]) -> pb::NodeWatchResourcesResponse {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    pb::NodeWatchResourcesResponse {
        devices: report
            .iter()
            .map(|d| pb::DeviceHealth {
                device: Some(pb::DeviceIdentifier {
                    pool_name: pool.to_owned(),
                    device_name: d.device.clone(),
                }),
                health: match d.health {
                    Health::Healthy => pb::HealthStatus::Healthy,
                    Health::Unhealthy => pb::HealthStatus::Unhealthy,
                }
                .into(),
                last_updated_time: now,
                health_check_timeout_seconds: TIMEOUT_SECONDS,
                message: d.message.clone(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::dra_resource_health_server::DraResourceHealth for HealthService {
    type NodeWatchResourcesStream = ReceiverStream<Result<pb::NodeWatchResourcesResponse, Status>>;

    async fn node_watch_resources(
        &self,
        _: Request<pb::NodeWatchResourcesRequest>,
    ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        let mut reports = self.reports.clone();
        let (pool, heartbeat) = (self.pool.clone(), self.heartbeat);
        tokio::spawn(async move {
            debug!("DRA health stream opened");
            loop {
                let report = reports.borrow_and_update().clone();
                if let Some(report) = report
                    && tx.send(Ok(response(&pool, &report))).await.is_err()
                {
                    break;
                }
                tokio::select! {
                    () = tx.closed() => break,
                    changed = reports.changed() => if changed.is_err() { break },
                    () = tokio::time::sleep(heartbeat) => {}
                }
            }
            debug!("DRA health stream closed");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dra::decide::slice::{RegionDevice, RequestPolicy};
    use pb::dra_resource_health_server::DraResourceHealth as _;
    use tokio_stream::StreamExt as _;

    fn content(devices: &[(&str, &str)]) -> Option<SliceContent> {
        Some(SliceContent {
            devices: devices
                .iter()
                .map(|(device, region)| RegionDevice {
                    device: (*device).into(),
                    region: (*region).into(),
                    bytes: 16 << 30,
                    kernel_driver: None,
                })
                .collect(),
            policy: RequestPolicy::default(),
        })
    }

    fn states(message: &pb::NodeWatchResourcesResponse) -> Vec<(String, String, i32)> {
        message
            .devices
            .iter()
            .map(|d| {
                let id = d.device.clone().unwrap_or_default();
                (id.pool_name, id.device_name, d.health)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_reports_at_once_on_change_and_at_each_heartbeat() {
        let (devices, rx) = watch::channel(None);
        let stop = CancellationToken::new();
        let service = HealthService::new(track(rx, stop.clone()), "node-a".into())
            .with_heartbeat(Duration::from_secs(30));
        let mut stream = service
            .node_watch_resources(Request::new(pb::NodeWatchResourcesRequest {}))
            .await
            .expect("stream")
            .into_inner();
        // Nothing until the regions are known.
        let quiet = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(quiet.is_err(), "a report before any region was read");

        devices.send_replace(content(&[
            ("a", "drm/0000:03:00.0/vram0"),
            ("b", "drm/0000:c1:00.0/vram0"),
        ]));
        let first = stream.next().await.expect("open").expect("ok");
        let healthy = i32::from(pb::HealthStatus::Healthy);
        let unhealthy = i32::from(pb::HealthStatus::Unhealthy);
        assert_eq!(
            states(&first),
            [
                ("node-a".into(), "a".into(), healthy),
                ("node-a".into(), "b".into(), healthy)
            ]
        );
        assert_eq!(
            first.devices[0].health_check_timeout_seconds,
            TIMEOUT_SECONDS
        );

        devices.send_replace(content(&[("a", "drm/0000:03:00.0/vram0")]));
        let gone = stream.next().await.expect("open").expect("ok");
        assert_eq!(
            states(&gone),
            [
                ("node-a".into(), "a".into(), healthy),
                ("node-a".into(), "b".into(), unhealthy)
            ]
        );
        assert!(gone.devices[1].message.contains("drm/0000:c1:00.0/vram0"));

        // Nothing changes: the same report comes again after one heartbeat, not before.
        let start = tokio::time::Instant::now();
        let again = stream.next().await.expect("open").expect("ok");
        assert_eq!(states(&again), states(&gone));
        assert!(
            start.elapsed() >= Duration::from_secs(30),
            "{:?}",
            start.elapsed()
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_opened_after_a_region_left_still_hears_it() {
        let (devices, rx) = watch::channel(content(&[("a", "r/a"), ("b", "r/b")]));
        let stop = CancellationToken::new();
        let reports = track(rx, stop.clone());
        // Let the tracker see the first content before the region leaves.
        let mut seen = reports.clone();
        seen.wait_for(Option::is_some).await.expect("first report");
        devices.send_replace(content(&[("a", "r/a")]));
        seen.wait_for(|r| {
            r.as_ref()
                .is_some_and(|r| r.iter().any(|d| d.health == Health::Unhealthy))
        })
        .await
        .expect("the tracker saw b leave");
        let service = HealthService::new(reports, "node-a".into());
        let mut stream = service
            .node_watch_resources(Request::new(pb::NodeWatchResourcesRequest {}))
            .await
            .expect("stream")
            .into_inner();
        let first = stream.next().await.expect("open").expect("ok");
        assert_eq!(
            states(&first),
            [
                (
                    "node-a".into(),
                    "a".into(),
                    i32::from(pb::HealthStatus::Healthy)
                ),
                (
                    "node-a".into(),
                    "b".into(),
                    i32::from(pb::HealthStatus::Unhealthy)
                )
            ]
        );
        stop.cancel();
    }
}
