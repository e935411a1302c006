//! EDGE: the observe stage of a round, kernel reads only: the node's regions and usage (where each
//! pod's cgroup is: [`super::locate`]), what is in force in each pod's cgroup, and after the act stage what the pod uses.
//!
//! Only "not found" means absent (a cgroup that vanished between scan and read; the act stage then
//! reports it as not found). Any other failure (a parse error, EACCES, EIO) is returned or noted,
//! never read as a default: a default would rewrite limits or read as zero usage.

use std::collections::BTreeMap;

use kube_dmem_crds::limits::HighSupport;
use kube_dmem_crds::select::PodFacts;

use super::error_chain;
use super::report::PodReadings;
use crate::cgroup::dmem::{capacity, read_values};
use crate::cgroup::format::{DmemValue, DmemValues, RegionCapacity};
use crate::cgroup::{CgroupError, CgroupFile, CgroupFs, CgroupPath};
use crate::decide::ancestors::PerRegion;
use crate::decide::limits::{InForce, ObservedPod};

/// The node as one round sees it.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Registered regions and their sizes (`dmem.capacity`).
    pub regions: Vec<RegionCapacity>,
    /// The root's `dmem.current`: usage per region on the whole node.
    pub root_usage: DmemValues,
    /// Pod cgroups found, by pod UID.
    pub pod_cgroups: BTreeMap<String, CgroupPath>,
}

/// Reads the regions and the node's usage, with the pod cgroups found.
pub fn node(
    fs: &dyn CgroupFs,
    pod_cgroups: BTreeMap<String, CgroupPath>,
) -> Result<NodeView, CgroupError> {
    Ok(NodeView {
        regions: capacity(fs)?,
        root_usage: read_values(fs, &CgroupPath::root(), CgroupFile::DmemCurrent)?,
        pod_cgroups,
    })
}

/// The pod with the values in force in its cgroup, and the error when they could not be read.
pub fn pod(
    fs: &dyn CgroupFs,
    facts: &PodFacts,
    cgroup: Option<&CgroupPath>,
    high: HighSupport,
) -> (ObservedPod, Option<CgroupError>) {
    let (in_force, failure) = match cgroup.map(|group| read_in_force(fs, group, high)) {
        None => (BTreeMap::new(), None),
        Some(Ok(in_force)) => (in_force, None),
        Some(Err(err)) if err.is_not_found() => (BTreeMap::new(), None),
        Some(Err(err)) => (BTreeMap::new(), Some(err)),
    };
    let pod = ObservedPod {
        facts: facts.clone(),
        cgroup: cgroup.cloned(),
        in_force,
    };
    (pod, failure)
}

/// What `pod` uses after the act stage, and what is in force: read back when the round wrote to
/// it (so a report shows what the kernel kept, not what was asked), else as observed.
pub fn after_act(
    fs: &dyn CgroupFs,
    pod: &ObservedPod,
    wrote: bool,
    high: HighSupport,
    failure: Option<String>,
) -> PodReadings {
    let mut failure = failure;
    let Some(group) = &pod.cgroup else {
        return PodReadings {
            in_force: pod.in_force.clone(),
            failure,
            ..PodReadings::default()
        };
    };
    let usage = absent_or_note(
        read_values(fs, group, CgroupFile::DmemCurrent),
        &mut failure,
    );
    // `dmem.peak` exists on 7.3+ only: absent is normal on older kernels.
    let peak = match read_values(fs, group, CgroupFile::DmemPeak) {
        Ok(values) => Some(values),
        Err(err) if err.is_not_found() => None,
        Err(err) => {
            failure.get_or_insert_with(|| error_chain(&err));
            None
        }
    };
    let in_force = if wrote {
        absent_or_note(read_in_force(fs, group, high), &mut failure)
    } else {
        pod.in_force.clone()
    };
    PodReadings {
        usage,
        peak,
        in_force,
        failure,
    }
}

/// The values in force per region.
pub fn read_in_force(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    high: HighSupport,
) -> Result<BTreeMap<String, InForce>, CgroupError> {
    let max = read_values(fs, group, CgroupFile::DmemMax)?;
    let low = read_values(fs, group, CgroupFile::DmemLow)?;
    let min = read_values(fs, group, CgroupFile::DmemMin)?;
    let native = match high {
        HighSupport::Native => Some(read_values(fs, group, CgroupFile::DmemHigh)?),
        HighSupport::Emulated => None,
    };
    let value = |v: &DmemValues, region: &str, default: DmemValue| v.get(region).unwrap_or(default);
    Ok(max
        .iter()
        .map(|line| {
            let r = line.region.as_str();
            let in_force = InForce {
                max: line.value,
                low: value(&low, r, DmemValue::Bytes(0)),
                min: value(&min, r, DmemValue::Bytes(0)),
                high: native.as_ref().map(|h| value(h, r, DmemValue::Max)),
            };
            (line.region.clone(), in_force)
        })
        .collect())
}

/// The value read, or the default when the file is absent. Only "not found" reads as absent (the
/// cgroup went away); any other failure is noted in `failure` (the first one wins), so the pod's
/// pressure reads unknown instead of zero usage.
fn absent_or_note<T: Default>(result: Result<T, CgroupError>, failure: &mut Option<String>) -> T {
    match result {
        Ok(values) => values,
        Err(err) if err.is_not_found() => T::default(),
        Err(err) => {
            failure.get_or_insert_with(|| error_chain(&err));
            T::default()
        }
    }
}

/// A per-region file as bytes; a missing file (a child without a dmem css) reads as nothing, and
/// `max` as `u64::MAX`.
pub fn read_bytes(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
    file: CgroupFile,
) -> Result<PerRegion, CgroupError> {
    match read_values(fs, group, file) {
        Ok(values) => Ok(values
            .iter()
            .map(|v| (v.region.clone(), v.value.as_limit()))
            .collect()),
        Err(e) if e.is_not_found() => Ok(PerRegion::new()),
        Err(e) => Err(e),
    }
}
