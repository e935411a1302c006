//! EDGE: keeps this node's ResourceSlice equal to its dmem regions. After each round the agent
//! publishes the regions it read; the publisher turns them into [`SliceContent`] (pure, in
//! [`slice`](super::decide::slice)), hands the devices to the preparer, and applies the slice
//! only when the content differs from what it last applied, so a steady node writes nothing.
//! Each write bumps the pool generation (one slice per pool). A failed write is retried with a
//! capped backoff; the CDI spec for the regions' device nodes is rewritten on the same changes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::decide::cdi;
use super::decide::slice::{RequestPolicy, SliceContent, devices, slice_name, slice_spec};
use super::metrics::DraMetrics;
use super::plugin::KubeletVerdict;
use crate::kubelet::devnodes::DeviceNodes;

/// First wait after a failed slice write; doubles up to [`BACKOFF_MAX`].
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest wait between slice write attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often the applied slice is read back: someone may have deleted it (or the kubelet removed
/// it while the driver was unregistered). A read, so the steady state still writes nothing.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How often it is read back for a while after the kubelet registered the driver: a starting
/// kubelet deletes every DRA driver's slices of its node in the background (`docs/dra.md` §3),
/// possibly just after our registration.
pub const FAST_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long the fast checks last after a registration.
pub const FAST_CHECK_WINDOW: Duration = Duration::from_secs(30);

/// Why a slice could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{op} ResourceSlice {name}")]
pub struct SliceError {
    /// `get` or `apply`.
    pub op: &'static str,
    /// The slice.
    pub name: String,
    /// What failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SliceError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self.op {
            "get" => "GetResourceSlice",
            _ => "ApplyResourceSlice",
        }
    }
}

/// The API side of the publisher (a recording double in tests).
#[tonic::async_trait]
pub trait SliceApi: Send + Sync {
    /// The pool generation of the slice `name`, `None` when it does not exist.
    async fn generation(&self, name: &str) -> Result<Option<i64>, SliceError>;
    /// Applies the slice `name` with `spec`.
    async fn apply(&self, name: &str, spec: ResourceSliceSpec) -> Result<(), SliceError>;
}

/// [`SliceApi`] over the API server: server-side apply under the agent's field manager, owned by
/// the Node so the slice goes when the node does.
pub struct KubeSlices {
    client: kube::Client,
    node: String,
}

impl KubeSlices {
    /// Slices of `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_owned(),
        }
    }
}

#[tonic::async_trait]
impl SliceApi for KubeSlices {
    async fn generation(&self, name: &str) -> Result<Option<i64>, SliceError> {
        let api: kube::Api<ResourceSlice> = kube::Api::all(self.client.clone());
        let found = api.get_opt(name).await.map_err(|e| SliceError {
            op: "get",
            name: name.to_owned(),
            source: Box::new(e),
        })?;
        Ok(found.map(|s| s.spec.pool.generation))
    }

    async fn apply(&self, name: &str, spec: ResourceSliceSpec) -> Result<(), SliceError> {
        let nodes: kube::Api<Node> = kube::Api::all(self.client.clone());
        // The owner is a nicety (garbage collection with the Node); without it the slice still works.
        let owner = match nodes.get_opt(&self.node).await {
            Ok(Some(node)) => node.metadata.uid.map(|uid| OwnerReference {
                api_version: "v1".to_owned(),
                kind: "Node".to_owned(),
                name: self.node.clone(),
                uid,
                ..OwnerReference::default()
            }),
            _ => None,
        };
        let mut slice = ResourceSlice {
            spec,
            ..ResourceSlice::default()
        };
        slice.metadata.name = Some(name.to_owned());
        slice.metadata.owner_references = owner.map(|o| vec![o]);
        let value = serde_json::json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": slice.metadata,
            "spec": slice.spec,
        });
        let api: kube::Api<ResourceSlice> = kube::Api::all(self.client.clone());
        let params = kube::api::PatchParams::apply(kube_dmem_crds::AGENT_FIELD_MANAGER).force();
        api.patch(name, &params, &kube::api::Patch::Apply(value))
            .await
            .map(|_| ())
            .map_err(|e| SliceError {
                op: "apply",
                name: name.to_owned(),
                source: Box::new(e),
            })
    }
}

/// Finds the kernel driver bound to a GPU, for the slice's `kernelDriver` attribute.
pub trait KernelDrivers: Send + Sync {
    /// The driver of the PCI device `bdf`, if one is bound and readable.
    fn driver_of(&self, bdf: &str) -> Option<String>;
}

/// Reads `<sysfs>/bus/pci/devices/<bdf>/driver`, a link to the driver's directory.
pub struct SysfsDrivers(pub PathBuf);

impl KernelDrivers for SysfsDrivers {
    fn driver_of(&self, bdf: &str) -> Option<String> {
        let link = self.0.join("bus/pci/devices").join(bdf).join("driver");
        let target = std::fs::read_link(link).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }
}

/// No drivers known (the simulator's regions are no GPUs).
pub struct NoDrivers;

impl KernelDrivers for NoDrivers {
    fn driver_of(&self, _: &str) -> Option<String> {
        None
    }
}

/// Writes the CDI spec of the devices that have device nodes.
pub struct CdiWriter {
    /// The CDI spec directory, normally `/var/run/cdi`.
    pub dir: PathBuf,
    /// Device node lookup.
    pub nodes: Arc<dyn DeviceNodes>,
}

impl CdiWriter {
    fn write(&self, content: &SliceContent) -> std::io::Result<()> {
        let path = self.dir.join("kube-dmem.io-vram.json");
        let with_nodes: Vec<_> = (content.devices.iter())
            .map(|d| {
                let nodes = d
                    .pci_address()
                    .map(|p| self.nodes.for_pci(p))
                    .unwrap_or_default();
                (d.clone(), nodes)
            })
            .collect();
        match cdi::spec(&with_nodes) {
            Some(spec) => {
                std::fs::create_dir_all(&self.dir)?;
                let tmp = path.with_extension("tmp");
                std::fs::write(
                    &tmp,
                    serde_json::to_vec_pretty(&spec).map_err(std::io::Error::other)?,
                )?;
                std::fs::rename(tmp, path)
            }
            None => crate::kubelet::uds::remove(&path),
        }
    }
}

/// The publisher's parts.
pub struct Publisher {
    /// This node.
    pub node: String,
    /// Request policy of every device.
    pub policy: RequestPolicy,
    /// Regions read by the latest round (`None` before the first).
    pub regions: watch::Receiver<super::Regions>,
    /// Where this node's devices go for the preparer.
    pub devices: watch::Sender<Option<SliceContent>>,
    /// Kernel driver lookup.
    pub drivers: Arc<dyn KernelDrivers>,
    /// The API.
    pub api: Arc<dyn SliceApi>,
    /// CDI spec writer; `None` where nothing consumes CDI (no kubelet).
    pub cdi: Option<CdiWriter>,
    /// Metrics.
    pub metrics: DraMetrics,
    /// The kubelet's verdicts on our registration; `None` without a kubelet.
    pub registrations: Option<watch::Receiver<KubeletVerdict>>,
}

impl Publisher {
    /// Publishes until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let Publisher {
            node,
            policy,
            mut regions,
            devices: devices_tx,
            drivers,
            api,
            cdi,
            metrics,
            mut registrations,
        } = self;
        let name = slice_name(&node);
        let mut applied: Option<SliceContent> = None;
        let mut generation: Option<i64> = None;
        let mut backoff = BACKOFF_INITIAL;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut next_check = tokio::time::Instant::now() + CHECK_INTERVAL;
        let mut fast_until = tokio::time::Instant::now();
        loop {
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let registered = async {
                match registrations.as_mut() {
                    Some(rx) => rx.changed().await.is_ok() && rx.borrow_and_update().registered,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                changed = regions.changed() => if changed.is_err() { return },
                () = retry => {}
                true = registered => {
                    fast_until = tokio::time::Instant::now() + FAST_CHECK_WINDOW;
                    next_check = tokio::time::Instant::now() + FAST_CHECK_INTERVAL;
                    continue;
                }
                () = tokio::time::sleep_until(next_check) => {
                    let now = tokio::time::Instant::now();
                    next_check = now + if now < fast_until { FAST_CHECK_INTERVAL } else { CHECK_INTERVAL };
                    // Still there at our generation? Otherwise publish again below.
                    match (generation, api.generation(&name).await) {
                        (Some(ours), Ok(Some(found))) if found == ours => continue,
                        (Some(_), Ok(_)) => {
                            info!(slice = %name, "ResourceSlice gone or changed by someone else; publishing again");
                            applied = None;
                            generation = None;
                        }
                        _ => continue,
                    }
                }
            }
            let Some(list) = regions.borrow_and_update().clone() else {
                continue;
            };
            let known: BTreeMap<String, String> = list
                .iter()
                .filter_map(|(r, _)| crate::kubelet::decide::allocate::pci_address(r))
                .filter_map(|pci| Some((pci.to_owned(), drivers.driver_of(pci)?)))
                .collect();
            let content = SliceContent {
                devices: devices(&list, &known),
                policy,
            };
            devices_tx.send_if_modified(|d| {
                let changed = d.as_ref() != Some(&content);
                if changed {
                    *d = Some(content.clone());
                }
                changed
            });
            if applied.as_ref() == Some(&content) {
                retry_at = None;
                continue;
            }
            if let Some(cdi) = &cdi
                && let Err(err) = cdi.write(&content)
            {
                warn!(error = &err as &dyn std::error::Error, dir = %cdi.dir.display(), "Writing the CDI spec failed");
            }
            let result = async {
                let current = match generation {
                    Some(g) => Some(g),
                    None => api.generation(&name).await?,
                };
                let next = current.unwrap_or(0) + 1;
                api.apply(&name, slice_spec(&node, &content, next)).await?;
                Ok::<i64, SliceError>(next)
            }
            .await;
            match result {
                Ok(next) => {
                    metrics
                        .slice_writes
                        .get_or_create(&vec![("result", "ok")])
                        .inc();
                    info!(slice = %name, devices = content.devices.len(), generation = next, "ResourceSlice published");
                    generation = Some(next);
                    applied = Some(content);
                    backoff = BACKOFF_INITIAL;
                    retry_at = None;
                }
                Err(err) => {
                    metrics
                        .slice_writes
                        .get_or_create(&vec![("result", "error")])
                        .inc();
                    warn!(reason = err.reason(), error = &err as &dyn std::error::Error, retry_in = ?backoff, "ResourceSlice not published");
                    // The generation may have moved; read it again before the next write.
                    generation = None;
                    retry_at = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
