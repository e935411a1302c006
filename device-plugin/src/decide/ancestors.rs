//! Protection of the cgroups above the pods, so a pod's `dmem.low` (and the `high` emulated with it)
//! counts when the kernel computes effective protection from a distant root.
//!
//! On a full device the kernel judges every cgroup against its *effective* low, computed from the
//! calculation root down (`docs/kernel.md` §3.4): a pod three levels below the root gets at most
//! what each ancestor passes down. With the ancestors' `dmem.low` at 0, every pod's effective low
//! is 0 and the emulation does nothing. `docs/kernel.md` §7 gives the fix: each ancestor's low is
//! the sum over its children of `min(usage, low)` — enough that nobody is scaled down, and no more,
//! so no unclaimed protection floats to pods above their `high`.
//!
//! CORE: [`ancestor_lows`] computes, over a snapshot, the low each ancestor needs; the round's act
//! stage (`crate::round::act::protect_ancestors`) reads the snapshot and writes what differs.

use std::collections::{BTreeMap, BTreeSet};

use kube_dmem_crds::limits::parent_low;

use crate::cgroup::CgroupPath;

/// Per-region bytes.
pub type PerRegion = BTreeMap<String, u64>;

/// One child cgroup as its parent's protection sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildReading {
    /// `dmem.current` per region.
    pub usage: PerRegion,
    /// The `dmem.low` it has, or will have after this round, per region.
    pub low: PerRegion,
}

/// The low each ancestor needs, bottom-up: an ancestor that is itself a child of another
/// ancestor contributes the low computed for it here, not the one it has now.
///
/// `children` maps each ancestor to its child cgroups; `readings` holds every child that is not
/// itself an ancestor (pods and unmanaged siblings) plus the usage of every ancestor.
pub fn ancestor_lows(
    ancestors: &BTreeSet<CgroupPath>,
    children: &BTreeMap<CgroupPath, Vec<CgroupPath>>,
    readings: &BTreeMap<CgroupPath, ChildReading>,
    regions: &[String],
) -> BTreeMap<CgroupPath, PerRegion> {
    let mut order: Vec<&CgroupPath> = ancestors.iter().collect();
    // Deepest first, so every child ancestor is computed before its parent.
    order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut computed: BTreeMap<CgroupPath, PerRegion> = BTreeMap::new();
    for ancestor in order {
        let kids = children
            .get(ancestor)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let lows = regions
            .iter()
            .map(|region| {
                let pairs: Vec<(u64, u64)> = kids
                    .iter()
                    .map(|kid| {
                        let usage = bytes(readings.get(kid).map(|r| &r.usage), region);
                        let low = match computed.get(kid) {
                            Some(own) => bytes(Some(own), region),
                            None => bytes(readings.get(kid).map(|r| &r.low), region),
                        };
                        (usage, low)
                    })
                    .collect();
                (region.clone(), parent_low(&pairs))
            })
            .collect();
        computed.insert(ancestor.clone(), lows);
    }
    computed
}

fn bytes(map: Option<&PerRegion>, region: &str) -> u64 {
    map.and_then(|m| m.get(region)).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;
    const R: &str = "r0";

    fn path(p: &str) -> CgroupPath {
        CgroupPath::new(p).expect("valid path")
    }

    fn reading(usage: u64, low: u64) -> ChildReading {
        ChildReading {
            usage: [(R.to_owned(), usage)].into_iter().collect(),
            low: [(R.to_owned(), low)].into_iter().collect(),
        }
    }

    #[test]
    fn each_level_claims_exactly_what_its_children_use_within_their_low() {
        // /kubepods { /kubepods/burstable { podA: 6G used, low 4G; podB: 1G used, low 4G }, podC: 3G, low 2G }
        let ancestors: BTreeSet<CgroupPath> =
            [path("/kubepods"), path("/kubepods/burstable")].into();
        let children = BTreeMap::from([
            (
                path("/kubepods"),
                vec![path("/kubepods/burstable"), path("/kubepods/podC")],
            ),
            (
                path("/kubepods/burstable"),
                vec![
                    path("/kubepods/burstable/podA"),
                    path("/kubepods/burstable/podB"),
                ],
            ),
        ]);
        let readings = BTreeMap::from([
            (path("/kubepods/burstable"), reading(7 * G, 0)),
            (path("/kubepods/burstable/podA"), reading(6 * G, 4 * G)),
            (path("/kubepods/burstable/podB"), reading(G, 4 * G)),
            (path("/kubepods/podC"), reading(3 * G, 2 * G)),
        ]);
        let lows = ancestor_lows(&ancestors, &children, &readings, &[R.to_owned()]);
        // burstable: min(6,4) + min(1,4) = 5G; kubepods: min(7, 5) + min(3, 2) = 7G.
        assert_eq!(lows[&path("/kubepods/burstable")][R], 5 * G);
        assert_eq!(lows[&path("/kubepods")][R], 7 * G);
    }

    #[test]
    fn no_protection_below_means_none_above() {
        let ancestors: BTreeSet<CgroupPath> = [path("/kubepods")].into();
        let children = BTreeMap::from([(path("/kubepods"), vec![path("/kubepods/podA")])]);
        let readings = BTreeMap::from([(path("/kubepods/podA"), reading(6 * G, 0))]);
        let lows = ancestor_lows(&ancestors, &children, &readings, &[R.to_owned()]);
        assert_eq!(lows[&path("/kubepods")][R], 0);
    }
}
