//! The parts of a GPU node that the standalone mode simulates around the agent: the kubelet
//! (pod cgroups in the systemd driver's layout, `docs/kubelet.md` §4.3, with `dmem` enabled
//! top-down as runc does, `docs/kernel.md` §5) and the workloads (buffer objects allocated through
//! the simulated driver, with the kernel's charging and eviction).
//!
//! EDGE: drives the simulator directly, as the kernel's other users would; the agent itself only
//! ever sees the `CgroupFs` interface.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::Pod;
use kube_dmem_sim::{BoId, SimConfig, SimError, SimKernel};

use super::inputs::sim_usage;
use crate::cgroup::path::{CgroupDriver, QosClass, expected_pod_cgroup};

/// Workloads allocate in buffer objects of this size (a large texture or tensor); smaller pieces
/// let eviction take part of a pod's memory, as TTM does.
const BO_SIZE: u64 = 256 << 20;

/// Why the simulated node could not do its part.
#[derive(Debug, thiserror::Error)]
pub enum SimNodeError {
    /// The simulator's lock was poisoned by a panic elsewhere.
    #[error("the simulated kernel is unusable after a panic")]
    Poisoned,
    /// Creating or configuring a cgroup failed.
    #[error("setting up cgroup {path}: {problem}")]
    Cgroup {
        /// The cgroup.
        path: String,
        /// What the simulator answered (an errno name, or an oops).
        problem: String,
    },
    /// A pod's cgroup path could not be formed from its UID.
    #[error("pod {pod} has no usable UID")]
    BadUid {
        /// namespace/name.
        pod: String,
    },
}

impl SimNodeError {
    /// PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Poisoned => "SimulatorPoisoned",
            Self::Cgroup { .. } => "SimulatedCgroupFailed",
            Self::BadUid { .. } => "PodWithoutUid",
        }
    }
}

/// The simulated kubelet, runtime and workloads of one node.
pub struct SimNode {
    kernel: Arc<Mutex<SimKernel>>,
    /// Resident buffer objects per (pod UID, region), oldest first.
    bos: BTreeMap<(String, String), Vec<BoId>>,
    /// Pod UID → its cgroup path.
    cgroups: BTreeMap<String, String>,
}

impl SimNode {
    /// A node with `regions` registered and the kubepods hierarchy in place.
    pub fn new(config: SimConfig, regions: &[(String, u64)]) -> Result<Self, SimNodeError> {
        let mut kernel = SimKernel::new(config);
        for (name, size) in regions {
            kernel.register_region(name, *size, true);
        }
        let node = SimNode {
            kernel: Arc::new(Mutex::new(kernel)),
            bos: BTreeMap::new(),
            cgroups: BTreeMap::new(),
        };
        {
            let mut k = node.lock()?;
            for dir in [
                "/kubepods.slice",
                "/kubepods.slice/kubepods-burstable.slice",
                "/kubepods.slice/kubepods-besteffort.slice",
            ] {
                mkdir_with_dmem(&mut k, dir)?;
            }
        }
        Ok(node)
    }

    /// The shared kernel, for the agent's `CgroupFs` backend.
    pub fn kernel(&self) -> Arc<Mutex<SimKernel>> {
        Arc::clone(&self.kernel)
    }

    /// Creates the cgroups of new pods and removes those of pods that are gone (freeing their VRAM,
    /// as the driver does when a process exits).
    pub fn sync_pods(&mut self, pods: &[Pod]) -> Result<(), SimNodeError> {
        let mut wanted = BTreeSet::new();
        for pod in pods {
            let uid = pod.metadata.uid.clone().ok_or_else(|| bad_uid(pod))?;
            if !self.cgroups.contains_key(&uid) {
                let path = expected_pod_cgroup(CgroupDriver::Systemd, "/", qos(pod), &uid)
                    .map_err(|_| bad_uid(pod))?;
                let mut k = self.lock()?;
                mkdir_with_dmem(&mut k, path.as_str())?;
                drop(k);
                self.cgroups.insert(uid.clone(), path.as_str().to_owned());
            }
            wanted.insert(uid);
        }
        let gone: Vec<String> = self
            .cgroups
            .keys()
            .filter(|uid| !wanted.contains(*uid))
            .cloned()
            .collect();
        let kernel = Arc::clone(&self.kernel);
        for uid in gone {
            let mut k = kernel.lock().map_err(|_| SimNodeError::Poisoned)?;
            let keys: Vec<_> = self
                .bos
                .keys()
                .filter(|(u, _)| *u == uid)
                .cloned()
                .collect();
            for key in keys {
                for bo in self.bos.remove(&key).unwrap_or_default() {
                    k.free_bo(bo);
                }
            }
            if let Some(path) = self.cgroups.remove(&uid) {
                k.set_has_tasks(&path, false)
                    .map_err(|errno| cgroup_err(&path, errno))?;
                k.rmdir(&path).map_err(|errno| cgroup_err(&path, errno))?;
            }
        }
        Ok(())
    }

    /// Lets every workload allocate or free towards the usage its annotation asks for. Allocation
    /// failures (a `max` hit, a full device) are what a real workload would see; they are logged,
    /// not errors. Evicted buffers are forgotten, as if the workload lost them.
    pub fn run_workloads(&mut self, pods: &[Pod]) -> Result<(), SimNodeError> {
        let mut k = self.kernel.lock().map_err(|_| SimNodeError::Poisoned)?;
        for pod in pods {
            let Some(uid) = pod.metadata.uid.as_deref() else {
                continue;
            };
            let Some(path) = self.cgroups.get(uid) else {
                continue;
            };
            for (region, target) in sim_usage(pod) {
                let bos = self
                    .bos
                    .entry((uid.to_owned(), region.clone()))
                    .or_default();
                bos.retain(|bo| k.bo_resident(*bo) == Some(true));
                let mut resident: u64 = bos.iter().filter_map(|bo| k.bo_size(*bo)).sum();
                while resident > target {
                    let Some(bo) = bos.pop() else { break };
                    resident = resident.saturating_sub(k.bo_size(bo).unwrap_or(0));
                    k.free_bo(bo);
                }
                while resident < target {
                    let size = BO_SIZE.min(target - resident);
                    match k.alloc_bo(path, &region, size) {
                        Ok(bo) => {
                            bos.push(bo);
                            resident += size;
                        }
                        Err(err) => {
                            tracing::debug!(pod = uid, region, errno = %err.errno, "Workload allocation failed");
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, SimKernel>, SimNodeError> {
        self.kernel.lock().map_err(|_| SimNodeError::Poisoned)
    }
}

/// Creates `path` (if missing) and enables `dmem` for its children, as runc does for every
/// controller the root offers; the cgroup then counts as holding the pod's processes.
fn mkdir_with_dmem(k: &mut SimKernel, path: &str) -> Result<(), SimNodeError> {
    if !k.exists(path) {
        k.mkdir(path).map_err(|errno| cgroup_err(path, errno))?;
    }
    let parent = path
        .rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
    k.write_file(parent, "cgroup.subtree_control", b"+dmem", false)
        .map_err(|e: SimError| cgroup_err(parent, e))?;
    Ok(())
}

/// The pod's QoS class: the recorded one, else computed as the kubelet does (`docs/kubelet.md`
/// §4.2).
fn qos(pod: &Pod) -> QosClass {
    let recorded = pod.status.as_ref().and_then(|s| s.qos_class.as_deref());
    match recorded {
        Some("Guaranteed") => return QosClass::Guaranteed,
        Some("BestEffort") => return QosClass::BestEffort,
        Some("Burstable") => return QosClass::Burstable,
        _ => {}
    }
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let mut any = false;
    let mut all_guaranteed = !containers.is_empty();
    for c in containers {
        let res = c.resources.as_ref();
        let get =
            |which: Option<
                &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
             key: &str| { which.and_then(|m| m.get(key)).map(|q| q.0.clone()) };
        let requests = res.and_then(|r| r.requests.as_ref());
        let limits = res.and_then(|r| r.limits.as_ref());
        for key in ["cpu", "memory"] {
            let (req, lim) = (get(requests, key), get(limits, key));
            any |= req.is_some() || lim.is_some();
            all_guaranteed &= lim.is_some() && (req.is_none() || req == lim);
        }
    }
    match (any, all_guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}

fn bad_uid(pod: &Pod) -> SimNodeError {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or("<unnamed>");
    SimNodeError::BadUid {
        pod: format!("{ns}/{name}"),
    }
}

fn cgroup_err(path: &str, problem: impl std::fmt::Display) -> SimNodeError {
    SimNodeError::Cgroup {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}
