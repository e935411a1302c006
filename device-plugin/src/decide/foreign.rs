//! CORE: coexistence with other writers of `dmem.*`. HAMi's AMD plugin writes `dmem.max`, NVIDIA
//! MPS and NVML write `dmem.max` and `dmem.min`, systemd may gain `DeviceMemory*` properties. The
//! agent remembers what it wanted and saw in force ([`Written`]); a planned write whose target is
//! exactly what was in force before, while the kernel now shows something else, means someone else
//! wrote the file (the quota did not change, or the target would differ). Policy, documented in
//! `docs/user-guide.md`:
//!
//! - a stricter `dmem.max` (fewer bytes than ours) is left in force: never loosen a limit, whoever
//!   set it (`ForeignLimitKept`);
//! - anything else (a looser max, a changed low or min) is restored, since the quota is the
//!   contract (`ForeignWriteReverted`), at most [`MAX_RESTORES`] times in a row; then the agent
//!   stops fighting in a write loop and reports the conflict (`ForeignWriterConflict`) until the
//!   quota or the other writer changes.

use std::collections::BTreeMap;

use kube_dmem_crds::limits::HighSupport;

use crate::cgroup::format::DmemValue;
use crate::cgroup::{CgroupFile, CgroupPath};
use crate::decide::limits::{PodPlan, kernel_values};

/// How many times in a row the agent restores a value another writer keeps changing.
pub const MAX_RESTORES: u8 = 3;

/// One value the agent wanted and saw in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// The value.
    pub value: DmemValue,
    /// Restorations after foreign writes since the value was last set by the agent.
    pub restores: u8,
}

/// What the agent wanted and saw in force, per pod cgroup, region and file.
///
/// Keyed by cgroup first so that a round's bookkeeping for a pod whose values did not change is
/// lookups only: no path or region name is cloned unless a value is new (the agent remembers
/// every governed pod every round; see the CPU numbers in the README's benchmarks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    by_cgroup: BTreeMap<CgroupPath, BTreeMap<String, BTreeMap<CgroupFile, Recorded>>>,
}

impl Written {
    /// Nothing remembered.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many values are remembered, over all cgroups.
    pub fn len(&self) -> usize {
        let regions = self.by_cgroup.values().flat_map(BTreeMap::values);
        regions.map(BTreeMap::len).sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_cgroup.is_empty()
    }

    fn get_mut(
        &mut self,
        cgroup: &CgroupPath,
        file: CgroupFile,
        region: &str,
    ) -> Option<&mut Recorded> {
        self.by_cgroup
            .get_mut(cgroup)?
            .get_mut(region)?
            .get_mut(&file)
    }

    fn knows(&self, cgroup: &CgroupPath, file: CgroupFile, region: &str) -> bool {
        let regions = self.by_cgroup.get(cgroup);
        regions
            .and_then(|r| r.get(region))
            .is_some_and(|f| f.contains_key(&file))
    }

    /// Records a value not seen before (the only place that clones a path or region name).
    fn insert_new(&mut self, cgroup: &CgroupPath, file: CgroupFile, region: &str, r: Recorded) {
        let regions = self.by_cgroup.entry(cgroup.clone()).or_default();
        regions
            .entry(region.to_owned())
            .or_default()
            .insert(file, r);
    }
}

/// What the agent does about a foreign write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// A stricter `dmem.max` stays in force.
    Kept,
    /// Our value is written back.
    Reverted,
    /// Restored too often: left as the other writer set it, and reported.
    GaveUp,
}

/// A value someone else wrote to a pod's cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignWrite {
    /// The file.
    pub file: CgroupFile,
    /// The region.
    pub region: String,
    /// The agent's value.
    pub ours: DmemValue,
    /// The value found.
    pub theirs: DmemValue,
    /// What the agent does.
    pub policy: Policy,
}

/// Applies the policy to `plan`: returns the plan with the writes the policy holds back removed,
/// and the foreign writes found (the first one is reported). `in_force` reads the value found for
/// a file and region. Restorations are counted in `written`.
///
/// A pod nothing governs (`governed` false) gets only the writes that undo values the agent set
/// itself (its quota went away): limits another writer put on a pod the agent never limited are
/// not the agent's to reset.
pub fn settle(
    plan: &PodPlan,
    governed: bool,
    written: &mut Written,
    in_force: impl Fn(CgroupFile, &str) -> DmemValue,
) -> (PodPlan, Vec<ForeignWrite>) {
    let mut kept = Vec::with_capacity(plan.writes.len());
    let mut foreign = Vec::new();
    for w in &plan.writes {
        if !governed && !written.knows(&w.cgroup, w.file, &w.region) {
            continue;
        }
        let seen = written.get_mut(&w.cgroup, w.file, &w.region);
        let Some(seen) = seen.filter(|r| r.value == w.value) else {
            kept.push(w.clone());
            continue;
        };
        let theirs = in_force(w.file, &w.region);
        let stricter = w.file == CgroupFile::DmemMax && theirs.as_limit() < w.value.as_limit();
        let policy = if stricter {
            Policy::Kept
        } else if seen.restores >= MAX_RESTORES {
            Policy::GaveUp
        } else {
            seen.restores += 1;
            kept.push(w.clone());
            Policy::Reverted
        };
        foreign.push(ForeignWrite {
            file: w.file,
            region: w.region.clone(),
            ours: w.value,
            theirs,
            policy,
        });
    }
    let settled = PodPlan {
        writes: kept,
        ..plan.clone()
    };
    (settled, foreign)
}

/// Records the values of `plan` as in force in `cgroup` after a round that confirmed them with no
/// foreign write in sight (restoration counts start again).
pub fn remember(written: &mut Written, cgroup: &CgroupPath, plan: &PodPlan, high: HighSupport) {
    let fresh = Recorded {
        value: DmemValue::Max,
        restores: 0,
    };
    for (region, want) in &plan.desired {
        for (file, value) in kernel_values(want, high) {
            let want = Recorded { value, ..fresh };
            // The steady state: the same value as last round, nothing to allocate.
            if let Some(seen) = written.get_mut(cgroup, file, region) {
                *seen = want;
                continue;
            }
            written.insert_new(cgroup, file, region, want);
        }
    }
}

/// Forgets what the agent wrote to `cgroup` (it no longer governs the pod).
pub fn release(written: &mut Written, cgroup: &CgroupPath) {
    written.by_cgroup.remove(cgroup);
}

/// Forgets the cgroups not in `present` (pods gone).
pub fn forget_others<'a>(written: &mut Written, present: impl IntoIterator<Item = &'a CgroupPath>) {
    if written.is_empty() {
        return;
    }
    let present: std::collections::BTreeSet<&CgroupPath> = present.into_iter().collect();
    written
        .by_cgroup
        .retain(|cgroup, _| present.contains(cgroup));
}

#[cfg(test)]
mod tests {
    use kube_dmem_crds::limits::KernelLimits;

    use super::*;
    use crate::decide::limits::LimitWrite;

    const R: &str = "drm/0000:03:00.0/vram0";
    const G: u64 = 1 << 30;

    fn cg() -> CgroupPath {
        CgroupPath::new("/kubepods/pod1").expect("path")
    }

    fn plan(max: u64, min: u64, writes: &[(CgroupFile, DmemValue)]) -> PodPlan {
        PodPlan {
            uid: "u".into(),
            governing: None,
            declared: BTreeMap::new(),
            desired: [(
                R.to_owned(),
                KernelLimits {
                    max: Some(max),
                    min: Some(min),
                    ..KernelLimits::default()
                },
            )]
            .into(),
            writes: writes
                .iter()
                .map(|&(file, value)| LimitWrite {
                    cgroup: cg(),
                    file,
                    region: R.into(),
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn a_first_write_or_a_quota_change_is_not_foreign() {
        let mut written = Written::new();
        let p = plan(4 * G, 0, &[(CgroupFile::DmemMax, DmemValue::Bytes(4 * G))]);
        let (settled, foreign) = settle(&p, true, &mut written, |_, _| DmemValue::Max);
        assert!(foreign.is_empty());
        assert_eq!(settled.writes.len(), 1);
        remember(&mut written, &cg(), &p, HighSupport::Emulated);
        // The quota now says 2Gi: our own change, not a foreign one.
        let p2 = plan(2 * G, 0, &[(CgroupFile::DmemMax, DmemValue::Bytes(2 * G))]);
        let (settled, foreign) = settle(&p2, true, &mut written, |_, _| DmemValue::Bytes(4 * G));
        assert!(foreign.is_empty());
        assert_eq!(settled.writes.len(), 1);
    }

    #[test]
    fn a_stricter_foreign_max_is_kept_and_a_looser_one_reverted_then_given_up() {
        let mut written = Written::new();
        let p = plan(4 * G, G, &[]);
        remember(&mut written, &cg(), &p, HighSupport::Emulated);
        // Someone lowered max to 1Gi: kept, nothing written.
        let lowered = plan(4 * G, G, &[(CgroupFile::DmemMax, DmemValue::Bytes(4 * G))]);
        let (settled, foreign) = settle(&lowered, true, &mut written, |_, _| DmemValue::Bytes(G));
        assert!(settled.writes.is_empty());
        assert_eq!(foreign[0].policy, Policy::Kept);
        assert_eq!(foreign[0].theirs, DmemValue::Bytes(G));
        // Someone raised it to max (looser): reverted MAX_RESTORES times, then left alone.
        for round in 0..MAX_RESTORES {
            let (settled, foreign) = settle(&lowered, true, &mut written, |_, _| DmemValue::Max);
            assert_eq!(foreign[0].policy, Policy::Reverted, "round {round}");
            assert_eq!(settled.writes.len(), 1);
        }
        let (settled, foreign) = settle(&lowered, true, &mut written, |_, _| DmemValue::Max);
        assert_eq!(foreign[0].policy, Policy::GaveUp);
        assert!(settled.writes.is_empty());
        // A changed min (MPS and NVML write it) is restored like any other value.
        let mut written = Written::new();
        remember(&mut written, &cg(), &p, HighSupport::Emulated);
        let min = plan(4 * G, G, &[(CgroupFile::DmemMin, DmemValue::Bytes(G))]);
        let (_, foreign) = settle(&min, true, &mut written, |_, _| DmemValue::Bytes(3 * G));
        assert_eq!(foreign[0].policy, Policy::Reverted);
        assert_eq!(foreign[0].file, CgroupFile::DmemMin);
    }

    #[test]
    fn limits_on_a_pod_the_agent_never_limited_are_not_reset() {
        let mut written = Written::new();
        // HAMi limited an ungoverned pod to 2Gi: the plan would reset it to `max`.
        let reset = plan(u64::MAX, 0, &[(CgroupFile::DmemMax, DmemValue::Max)]);
        let (settled, foreign) =
            settle(&reset, false, &mut written, |_, _| DmemValue::Bytes(2 * G));
        assert!(settled.writes.is_empty() && foreign.is_empty());
        // Once the agent limited it (a quota that then went away), resetting is its own to do.
        remember(
            &mut written,
            &cg(),
            &plan(4 * G, 0, &[]),
            HighSupport::Emulated,
        );
        let (settled, _) = settle(&reset, false, &mut written, |_, _| DmemValue::Bytes(4 * G));
        assert_eq!(settled.writes.len(), 1);
    }

    #[test]
    fn pods_gone_are_forgotten() {
        let mut written = Written::new();
        remember(&mut written, &cg(), &plan(G, 0, &[]), HighSupport::Emulated);
        assert_eq!(written.len(), 3);
        forget_others(&mut written, []);
        assert!(written.is_empty());
    }
}
