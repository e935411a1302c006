//! EDGE: the act stage of a round, kernel writes only, each read back: a pod's planned limits,
//! then the protection of the cgroups above the pods. Which values to write was decided before
//! ([`crate::decide::limits`], [`crate::decide::ancestors`]); this module only carries it out and
//! says what the kernel kept.

use std::collections::{BTreeMap, BTreeSet};

use super::error_chain;
use super::observe::read_bytes;
use super::report::LimitsOutcome;
use crate::cgroup::dmem::{Applied, apply_limit, apply_limits};
use crate::cgroup::format::DmemValue;
use crate::cgroup::path::Listings;
use crate::cgroup::probe::enable_dmem_along;
use crate::cgroup::{CgroupError, CgroupFile, CgroupFs, CgroupPath};
use crate::decide::ancestors::{ChildReading, PerRegion, ancestor_lows};
use crate::decide::limits::{ObservedPod, PodPlan};

/// Makes the kernel show dmem files where the round needs them: `+dmem` in the root's
/// `cgroup.subtree_control` when the root offers dmem but shows no `dmem.capacity` (real kernels
/// hide the root files until a controller is enabled there), and top-down along the path of every
/// pod cgroup in `pods` that has no `dmem.max` (a kubelet enables only the controllers it knows,
/// so pod cgroups get no dmem files until the agent enables dmem above them). Returns the number
/// of `cgroup.subtree_control` writes.
///
/// # Errors
/// Reading the root's files failed (other than "not found"). A pod whose path cannot be enabled
/// is logged and left to the round, which reports it.
pub fn enable_dmem(fs: &dyn CgroupFs, pods: &[&CgroupPath]) -> Result<usize, CgroupError> {
    let root = CgroupPath::root();
    let mut writes = 0;
    if !fs.exists(&root, CgroupFile::DmemCapacity) {
        let offered = fs.read(&root, CgroupFile::CgroupControllers)?;
        let enabled = fs.read(&root, CgroupFile::CgroupSubtreeControl)?;
        let has = |text: &str| text.split_whitespace().any(|c| c == "dmem");
        if has(&offered) && !has(&enabled) {
            fs.write(&root, CgroupFile::CgroupSubtreeControl, "+dmem")?;
            tracing::info!("Enabled dmem at the cgroup root");
            writes += 1;
        }
    }
    for pod in pods {
        if fs.exists(pod, CgroupFile::DmemMax) || !fs.exists(pod, CgroupFile::CgroupControllers) {
            continue;
        }
        match enable_dmem_along(fs, pod) {
            Ok(changed) => {
                for group in &changed {
                    tracing::info!(cgroup = %group.as_str(), "Enabled dmem for the cgroups below");
                }
                writes += changed.len();
            }
            Err(err) => tracing::warn!(
                cgroup = %pod.as_str(),
                error = &err as &dyn std::error::Error,
                "Could not enable dmem above a pod cgroup"
            ),
        }
    }
    Ok(writes)
}

/// Writes `pod_plan`'s values to the pod's cgroup, each file read back once after its regions'
/// writes (the plan puts every region's writes to a file together); every write is attempted
/// even after one fails (a region that can be limited should be). The first failure is the
/// outcome.
pub fn pod_limits(fs: &dyn CgroupFs, pod: &ObservedPod, pod_plan: &PodPlan) -> LimitsOutcome {
    if pod.cgroup.is_none() {
        return LimitsOutcome::CgroupNotFound;
    }
    let failure = |e: CgroupError| {
        if e.is_not_found() {
            LimitsOutcome::CgroupNotFound
        } else {
            LimitsOutcome::WriteFailed {
                reason: e.reason(),
                message: error_chain(&e),
            }
        }
    };
    let mut outcome = None;
    for run in (pod_plan.writes).chunk_by(|a, b| a.cgroup == b.cgroup && a.file == b.file) {
        let lines: Vec<(&str, DmemValue)> =
            run.iter().map(|w| (w.region.as_str(), w.value)).collect();
        let each = match apply_limits(fs, &run[0].cgroup, run[0].file, &lines) {
            Ok(each) => each,
            Err(e) => vec![Err(e)],
        };
        for (result, w) in each.into_iter().zip(run) {
            let failed = match result {
                Ok(Applied::Confirmed(_)) => None,
                Ok(Applied::NotApplied { wanted, actual }) => Some(LimitsOutcome::MaxBelowUsage {
                    region: w.region.clone(),
                    wanted,
                    actual,
                }),
                Err(e) => Some(failure(e)),
            };
            outcome = outcome.or(failed);
        }
    }
    outcome.unwrap_or(
        if pod_plan.governing.is_some() || !pod.facts.grants.is_empty() {
            LimitsOutcome::Applied
        } else {
            LimitsOutcome::NotGoverned
        },
    )
}

/// Reads what [`ancestor_lows`] needs for the ancestors of `pods` and `read_pods` (below the root,
/// which has no `dmem.low`), then writes every ancestor low that differs. `pods` maps each pod
/// cgroup to its usage as read this round and the low it will have after it; the usage and low of
/// `read_pods` (settled by another round meanwhile) are read from their files. An ancestor's
/// children are taken from `listed` (what this round's scan listed there, plus `read_pods`) where
/// it has them, else listed now. Returns the number of writes.
pub fn protect_ancestors(
    fs: &dyn CgroupFs,
    pods: &BTreeMap<CgroupPath, ChildReading>,
    read_pods: &[CgroupPath],
    listed: &Listings,
    regions: &[String],
) -> Result<usize, CgroupError> {
    let is_pod = |p: &CgroupPath| pods.contains_key(p) || read_pods.contains(p);
    let ancestors: BTreeSet<CgroupPath> = (pods.keys().chain(read_pods))
        .flat_map(|pod| pod.ancestors_and_self())
        .filter(|p| !p.is_root() && !is_pod(p))
        .collect();
    let mut children = BTreeMap::new();
    let mut readings = BTreeMap::new();
    for ancestor in &ancestors {
        let mut kids: BTreeSet<CgroupPath> = match listed.get(ancestor) {
            Some(names) => names.iter().filter_map(|n| ancestor.join(n).ok()).collect(),
            None => (fs.children(ancestor)?.iter())
                .filter_map(|name| ancestor.join(name).ok())
                .collect(),
        };
        // Settled after the scan listed their parent.
        kids.extend(
            (read_pods.iter())
                .filter(|pod| pod.parent().as_ref() == Some(ancestor))
                .cloned(),
        );
        for kid in &kids {
            let reading = match pods.get(kid) {
                Some(pod) => pod.clone(),
                // A child removed since the scan listed it reads as nothing, as one without dmem.
                None => ChildReading {
                    usage: read_bytes(fs, kid, CgroupFile::DmemCurrent)?,
                    low: if ancestors.contains(kid) {
                        PerRegion::new()
                    } else {
                        read_bytes(fs, kid, CgroupFile::DmemLow)?
                    },
                },
            };
            readings.insert(kid.clone(), reading);
        }
        children.insert(ancestor.clone(), kids.into_iter().collect());
    }
    let wanted = ancestor_lows(&ancestors, &children, &readings, regions);
    let mut writes = 0;
    for (ancestor, lows) in wanted {
        let in_force = read_bytes(fs, &ancestor, CgroupFile::DmemLow)?;
        for (region, low) in lows {
            if in_force.get(&region).copied().unwrap_or(0) == low {
                continue;
            }
            writes += 1;
            if let Applied::NotApplied { wanted, actual } = apply_limit(
                fs,
                &ancestor,
                CgroupFile::DmemLow,
                &region,
                DmemValue::Bytes(low),
            )? {
                // The kernel never refuses a low; seeing this means someone else wrote meanwhile.
                tracing::warn!(cgroup = %ancestor.as_str(), region, %wanted, %actual, "Ancestor low changed under us");
            }
        }
    }
    Ok(writes)
}
