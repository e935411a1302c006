//! CORE: the writes that bring this node's pod cgroups to the limits their quotas and grants call for.
//!
//! Input is what the agent observed (pods with their cgroup and the values in force, the valid
//! quotas, the node's regions, whether the kernel has a native `dmem.high`); output is a [`Plan`]:
//! per pod the desired kernel values and only the writes that differ from what is in force, so a
//! node in steady state writes nothing and a restarted agent adopts what it finds instead of
//! resetting running pods. The quota and limit rules come from `kube-dmem-crds`, shared with the
//! operator, so the two can never disagree.

use std::collections::BTreeMap;

use kube_dmem_crds::limits::{HighSupport, KernelLimits, Limits, effective_limits};
use kube_dmem_crds::select::{PodFacts, QuotaFacts, QuotaRef, governing};

use crate::cgroup::format::DmemValue;
use crate::cgroup::{CgroupFile, CgroupPath};

/// The per-region values in force in one cgroup (what its `dmem.*` files read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InForce {
    /// `dmem.max`.
    pub max: DmemValue,
    /// `dmem.low`.
    pub low: DmemValue,
    /// `dmem.min`.
    pub min: DmemValue,
    /// `dmem.high`, only where the kernel has the file.
    pub high: Option<DmemValue>,
}

impl InForce {
    /// The value of `file` (`dmem.high` reads `max` where the kernel has none).
    pub fn get(&self, file: CgroupFile) -> DmemValue {
        match file {
            CgroupFile::DmemMax => self.max,
            CgroupFile::DmemLow => self.low,
            CgroupFile::DmemMin => self.min,
            CgroupFile::DmemHigh => self.high.unwrap_or(DmemValue::Max),
            _ => DmemValue::Max,
        }
    }
}

impl Default for InForce {
    /// A fresh cgroup: no limit, no protection (`docs/kernel.md` §1.2 defaults).
    fn default() -> Self {
        Self {
            max: DmemValue::Max,
            low: DmemValue::Bytes(0),
            min: DmemValue::Bytes(0),
            high: None,
        }
    }
}

/// One pod as the agent sees it on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedPod {
    /// Identity, labels and VRAM grant.
    pub facts: PodFacts,
    /// The pod's cgroup, once it exists.
    pub cgroup: Option<CgroupPath>,
    /// Values in force per region (regions missing here are read as defaults).
    pub in_force: BTreeMap<String, InForce>,
}

/// One limit write: a single region of a single file, as the kernel wants it (`docs/kernel.md` §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitWrite {
    /// The cgroup written.
    pub cgroup: CgroupPath,
    /// `dmem.max`, `dmem.high`, `dmem.low` or `dmem.min`.
    pub file: CgroupFile,
    /// The region.
    pub region: String,
    /// The value.
    pub value: DmemValue,
}

/// What should happen to one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodPlan {
    /// The pod's UID.
    pub uid: String,
    /// The quota that governs it, if any.
    pub governing: Option<QuotaRef>,
    /// Limits declared for the pod per region (after grant capping and clamping), before they are
    /// mapped onto kernel files; pressure is judged against these.
    pub declared: BTreeMap<String, Limits>,
    /// Kernel values wanted per region.
    pub desired: BTreeMap<String, KernelLimits>,
    /// The writes needed, in the order to perform them; empty when everything is in force.
    pub writes: Vec<LimitWrite>,
}

/// The decision for the whole node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// One entry per observed pod, in input order.
    pub pods: Vec<PodPlan>,
}

impl Plan {
    /// Total number of writes.
    pub fn write_count(&self) -> usize {
        self.pods.iter().map(|p| p.writes.len()).sum()
    }
}

/// Decides the limits and writes for every pod on the node.
pub fn plan<S: AsRef<str>>(
    pods: &[ObservedPod],
    quotas: &[QuotaFacts],
    regions: &[S],
    high: HighSupport,
) -> Plan {
    let pods = pods
        .iter()
        .map(|pod| plan_pod(pod, quotas, regions, high))
        .collect();
    Plan { pods }
}

fn plan_pod<S: AsRef<str>>(
    pod: &ObservedPod,
    quotas: &[QuotaFacts],
    regions: &[S],
    high: HighSupport,
) -> PodPlan {
    let quota = governing(quotas, &pod.facts);
    let limits = effective_limits(quota, regions, &pod.facts.grants);
    let declared: BTreeMap<String, Limits> = regions
        .iter()
        .map(|region| {
            let region = region.as_ref();
            (
                region.to_owned(),
                limits.get(region).copied().unwrap_or_default(),
            )
        })
        .collect();
    let desired: BTreeMap<String, KernelLimits> = declared
        .iter()
        .map(|(region, wanted)| (region.clone(), wanted.to_kernel(high)))
        .collect();
    let mut writes: Vec<(usize, LimitWrite)> = match &pod.cgroup {
        Some(cgroup) => desired
            .iter()
            .flat_map(|(region, want)| {
                let have = pod.in_force.get(region).copied().unwrap_or_default();
                region_writes(cgroup, region, want, &have, high)
            })
            .collect(),
        None => Vec::new(),
    };
    // Every region's hard limit before any region's protection: a workload may allocate from any
    // of its regions while the writes go on, and `max` is what fails its allocations.
    writes.sort_by_key(|&(rank, _)| rank);
    let writes = writes.into_iter().map(|(_, write)| write).collect();
    PodPlan {
        uid: pod.facts.uid.clone(),
        governing: quota.map(|q| q.key.clone()),
        declared,
        desired,
        writes,
    }
}

/// The kernel values of one region's limits, file by file, hard limit first: if the workload
/// starts allocating while the agent is half-way through writing them, the limit that fails
/// allocations is the one that must already be there. `dmem.high` only where the kernel has it.
pub fn kernel_values(want: &KernelLimits, high: HighSupport) -> Vec<(CgroupFile, DmemValue)> {
    let bytes_or = |v: Option<u64>, none: DmemValue| v.map_or(none, DmemValue::Bytes);
    let zero = DmemValue::Bytes(0);
    let mut values = vec![(CgroupFile::DmemMax, bytes_or(want.max, DmemValue::Max))];
    if high == HighSupport::Native {
        values.push((CgroupFile::DmemHigh, bytes_or(want.high, DmemValue::Max)));
    }
    values.push((CgroupFile::DmemLow, bytes_or(want.low, zero)));
    values.push((CgroupFile::DmemMin, bytes_or(want.min, zero)));
    values
}

/// The writes for one region whose value is not in force, each with its place in the
/// [`kernel_values`] order (the same for every region of a pod).
fn region_writes(
    cgroup: &CgroupPath,
    region: &str,
    want: &KernelLimits,
    have: &InForce,
    high: HighSupport,
) -> Vec<(usize, LimitWrite)> {
    (kernel_values(want, high).into_iter().enumerate())
        .filter(|&(_, (file, value))| !value.reads_back_as(have.get(file)))
        .map(|(rank, (file, value))| {
            let write = LimitWrite {
                cgroup: cgroup.clone(),
                file,
                region: region.to_owned(),
                value,
            };
            (rank, write)
        })
        .collect()
}

#[cfg(test)]
mod tests;
