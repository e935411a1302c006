//! EDGE: where the pods' cgroups are, remembered between rounds.
//!
//! A node round scans the hierarchy ([`scan`]): it must find every pod cgroup, and it learns
//! from what it finds. A pods round (a new cgroup, a held container, a pod near a threshold) asks
//! for a few pods only, and a scan lists every pod cgroup's parent (110 entries on a full node,
//! each listing several operations through FUSE): so it looks its pods up instead, where a scan
//! saw them, else by the name the kubelet gives them in each directory pod cgroups were found in.
//! Only when that misses (the first pod of a QoS class, a layout not seen yet) does it scan.
//!
//! A lookup answers what a scan would: a cgroup counts as found only if it exists now, and a name
//! is tried only in the form found beside it, so the kubelet's naming is learned, not assumed.

use std::collections::{BTreeMap, BTreeSet};

use crate::cgroup::path::{Listings, ScanLimits, pod_uid_from_name, scan_pods_pausing};
use crate::cgroup::{CgroupError, CgroupFile, CgroupFs, CgroupPath};

/// Most parent directories remembered; past it a scan's own replace them (a node has a handful:
/// the QoS levels, per kubelet when a host runs nested ones).
const MAX_PARENTS: usize = 64;

/// How the pod cgroups in one directory are named, learned from one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Naming {
    /// `pod<uid>` (the cgroupfs driver).
    Plain,
    /// `<prefix>-pod<uid with '_' for '-'>.slice` (the systemd driver).
    Slice(String),
}

impl Naming {
    /// The naming of `name`, the name of a pod cgroup.
    fn of(name: &str) -> Option<Naming> {
        if name.starts_with("pod") {
            return Some(Naming::Plain);
        }
        let stem = name.strip_suffix(".slice")?;
        let (prefix, _) = stem.rsplit_once("-pod")?;
        Some(Naming::Slice(prefix.to_owned()))
    }

    /// The name of pod `uid`'s cgroup.
    fn name(&self, uid: &str) -> String {
        match self {
            Naming::Plain => format!("pod{uid}"),
            Naming::Slice(prefix) => format!("{prefix}-pod{}.slice", uid.replace('-', "_")),
        }
    }
}

/// What the rounds know of where pod cgroups are.
#[derive(Clone, Debug, Default)]
pub struct PodCgroups {
    /// Pod cgroups by pod UID: the last scan's, and the pods looked up since.
    by_uid: BTreeMap<String, CgroupPath>,
    /// Directories pod cgroups were found in, with their naming.
    parents: BTreeMap<CgroupPath, Naming>,
}

impl PodCgroups {
    /// Every pod cgroup below `root`, by pod UID (a full scan), remembered.
    pub fn scan(
        &mut self,
        fs: &dyn CgroupFs,
        root: &CgroupPath,
    ) -> Result<BTreeMap<String, CgroupPath>, CgroupError> {
        let found = scan(fs, root, &mut || {})?.pods;
        self.remember(&found);
        Ok(found)
    }

    /// Takes in what a scan ([`scan`]) found: every pod cgroup there is.
    pub fn remember(&mut self, found: &BTreeMap<String, CgroupPath>) {
        if self.parents.len() > MAX_PARENTS {
            self.parents.clear();
        }
        for group in found.values() {
            self.learn(group);
        }
        self.by_uid.clone_from(found);
    }

    /// The cgroups of the pods `uids` that exist now, each where it was seen, else by name in the
    /// directories pod cgroups were found in (no listing), and the UIDs of those that missed
    /// (for [`Self::scan_for`]).
    pub fn look_up_known<'a>(
        &mut self,
        fs: &dyn CgroupFs,
        uids: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeMap<String, CgroupPath>, BTreeSet<&'a str>) {
        let mut found = BTreeMap::new();
        let mut missed = BTreeSet::new();
        for uid in uids {
            match self.known(fs, uid) {
                Some(group) => {
                    found.insert(uid.to_owned(), group);
                }
                None => {
                    missed.insert(uid);
                }
            }
        }
        (found, missed)
    }

    /// The cgroups of the pods `uids` a scan below `root` finds (none scanned for, no scan).
    pub fn scan_for(
        &mut self,
        fs: &dyn CgroupFs,
        root: &CgroupPath,
        uids: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, CgroupPath>, CgroupError> {
        if uids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let scanned = self.scan(fs, root)?;
        Ok((uids.iter())
            .filter_map(|&uid| Some((uid.to_owned(), scanned.get(uid)?.clone())))
            .collect())
    }

    /// Pod `uid`'s cgroup where it was seen or where its name would be, if it exists now.
    fn known(&mut self, fs: &dyn CgroupFs, uid: &str) -> Option<CgroupPath> {
        let exists = |group: &CgroupPath| fs.exists(group, CgroupFile::CgroupControllers);
        if let Some(group) = self.by_uid.get(uid) {
            // The UID names the cgroup for the pod's life; gone means the pod's cgroup is gone.
            return exists(group).then(|| group.clone());
        }
        let group = (self.parents.iter())
            .map(|(parent, naming)| (parent, naming.name(uid)))
            // Only a name a scan would take for this pod's (a UID the kubelet would not write
            // is found by neither).
            .filter(|(_, name)| pod_uid_from_name(name).as_deref() == Some(uid))
            .filter_map(|(parent, name)| parent.join(&name).ok())
            .find(|group| exists(group))?;
        self.by_uid.insert(uid.to_owned(), group.clone());
        Some(group)
    }

    /// Remembers the directory `group` (a pod cgroup) is in, and its naming.
    fn learn(&mut self, group: &CgroupPath) {
        let naming = group
            .name()
            .filter(|name| pod_uid_from_name(name).is_some())
            .and_then(Naming::of);
        if let (Some(parent), Some(naming)) = (group.parent(), naming) {
            self.parents.entry(parent).or_insert(naming);
        }
    }
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// Every pod cgroup below the root, by pod UID.
    pub pods: BTreeMap<String, CgroupPath>,
    /// What the scan listed in the pods' ancestors.
    pub listings: Listings,
}

/// Every pod cgroup below `root`, by pod UID, calling `pause` after each directory listed.
pub fn scan(
    fs: &dyn CgroupFs,
    root: &CgroupPath,
    pause: &mut dyn FnMut(),
) -> Result<Scanned, CgroupError> {
    let found = scan_pods_pausing(fs, root, ScanLimits::default(), pause)?;
    Ok(Scanned {
        pods: found.pods.into_iter().collect(),
        listings: found.listings,
    })
}

#[cfg(test)]
mod tests {
    use kube_dmem_sim::{SimConfig, SimKernel};

    use super::*;
    use crate::cgroup::SimCgroups;

    const UID: &str = "0f3c2b1a-4d5e-4f60-8a7b-9c0d1e2f3a4b";
    const OTHER: &str = "1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c";

    fn path(s: &str) -> CgroupPath {
        CgroupPath::new(s).expect("path")
    }

    /// A simulated kernel with `dirs` made.
    fn tree(dirs: &[&str]) -> SimCgroups {
        let mut kernel = SimKernel::new(SimConfig::default());
        for dir in dirs {
            kernel.mkdir(dir).expect("mkdir");
        }
        SimCgroups::from_kernel(kernel)
    }

    fn mkdir(fs: &SimCgroups, dir: &str) {
        fs.kernel()
            .lock()
            .expect("kernel")
            .mkdir(dir)
            .expect("mkdir");
    }

    #[test]
    fn a_pod_in_a_directory_a_scan_learned_is_found_without_scanning() {
        let fs = tree(&[
            "/kubepods",
            "/kubepods/burstable",
            &format!("/kubepods/burstable/pod{OTHER}"),
        ]);
        let mut cgroups = PodCgroups::default();
        let root = CgroupPath::root();
        assert_eq!(cgroups.scan(&fs, &root).expect("scan").len(), 1);
        mkdir(&fs, &format!("/kubepods/burstable/pod{UID}"));
        let before = fs.listings();
        let (found, missed) = cgroups.look_up_known(&fs, [UID, OTHER]);
        assert!(missed.is_empty(), "{missed:?}");
        assert_eq!(fs.listings(), before, "no directory listed");
        assert_eq!(
            found.get(UID),
            Some(&path(&format!("/kubepods/burstable/pod{UID}")))
        );
        assert_eq!(
            found.get(OTHER),
            Some(&path(&format!("/kubepods/burstable/pod{OTHER}")))
        );
    }

    #[test]
    fn the_systemd_naming_is_learned_from_the_pods_found() {
        let slice = "/kubepods.slice/kubepods-besteffort.slice";
        let name = |uid: &str| {
            format!(
                "{slice}/kubepods-besteffort-pod{}.slice",
                uid.replace('-', "_")
            )
        };
        let fs = tree(&["/kubepods.slice", slice, &name(OTHER)]);
        let mut cgroups = PodCgroups::default();
        let root = CgroupPath::root();
        cgroups.scan(&fs, &root).expect("scan");
        mkdir(&fs, &name(UID));
        let before = fs.listings();
        let (found, missed) = cgroups.look_up_known(&fs, [UID]);
        assert!(missed.is_empty(), "{missed:?}");
        assert_eq!(fs.listings(), before, "no directory listed");
        assert_eq!(found.get(UID), Some(&path(&name(UID))));
    }

    #[test]
    fn a_pod_in_a_directory_not_seen_yet_is_found_by_a_scan_which_teaches_it() {
        let fs = tree(&["/kubepods", "/kubepods/burstable", "/kubepods/besteffort"]);
        mkdir(&fs, &format!("/kubepods/burstable/pod{OTHER}"));
        let mut cgroups = PodCgroups::default();
        let root = CgroupPath::root();
        cgroups.scan(&fs, &root).expect("scan");
        mkdir(&fs, &format!("/kubepods/besteffort/pod{UID}"));
        let (found, missed) = cgroups.look_up_known(&fs, [UID]);
        assert!(found.is_empty(), "{found:?}");
        let before = fs.listings();
        let found = cgroups.scan_for(&fs, &root, &missed).expect("scan");
        assert!(fs.listings() > before, "the miss scanned");
        assert_eq!(
            found.get(UID),
            Some(&path(&format!("/kubepods/besteffort/pod{UID}")))
        );
        // The next pod there is looked up by name.
        let third = "2d7c6e4b-5e3f-4a7b-8cbd-2e3f4a5b6c7d";
        mkdir(&fs, &format!("/kubepods/besteffort/pod{third}"));
        let before = fs.listings();
        let (found, missed) = cgroups.look_up_known(&fs, [third]);
        assert!(missed.is_empty(), "{missed:?}");
        assert_eq!(fs.listings(), before, "no directory listed");
        assert!(found.contains_key(third));
    }

    #[test]
    fn a_cgroup_gone_or_not_made_yet_is_not_found() {
        let mine = format!("/kubepods/pod{UID}");
        let fs = tree(&["/kubepods", &mine]);
        let mut cgroups = PodCgroups::default();
        let root = CgroupPath::root();
        cgroups.scan(&fs, &root).expect("scan");
        fs.kernel()
            .lock()
            .expect("kernel")
            .rmdir(&mine)
            .expect("rmdir");
        let (mut found, missed) = cgroups.look_up_known(&fs, [UID, OTHER]);
        found.extend(cgroups.scan_for(&fs, &root, &missed).expect("scan"));
        assert!(found.is_empty(), "{found:?}");
    }
}
