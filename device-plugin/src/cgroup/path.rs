//! Finding a pod's cgroup: the kubelet's naming rules (`docs/kubelet.md` §4) as pure functions, and
//! a bounded breadth-first scan below the hierarchy root that recognises `pod<UID>` (cgroupfs
//! driver) and `*-pod<UID_>.slice` (systemd driver) under any cgroup-root prefix, including kind's
//! `kubelet.slice/kubelet-kubepods.slice/...` and a kind node seen from its host.
//!
//! EDGE (the scan reads directories through `CgroupFs::children`, never `std::fs`, so the same code
//! runs against a tempdir, FUSE or the simulator); name matching and the expected-path computation
//! are pure functions with table tests in `path/tests.rs`.
//! We scan rather than compute because the layout depends on the driver, `--cgroup-root`, the QoS class
//! and feature gates (`docs/kubelet.md` §4.6); [`expected_pod_cgroup`] is the fast path to try
//! first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{CgroupError, CgroupFs, CgroupPath, InvalidCgroupPath};

/// The kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// `cgroupDriver: systemd`: slices named by `CgroupName.ToSystemd`.
    Systemd,
    /// `cgroupDriver: cgroupfs`: plain directories.
    Cgroupfs,
}

/// A pod's QoS class (decides the parent cgroup, `docs/kubelet.md` §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Directly under `kubepods`.
    Guaranteed,
    /// Under `kubepods/burstable`.
    Burstable,
    /// Under `kubepods/besteffort`.
    BestEffort,
}

/// Longest UID accepted when extracting one from a name (UUIDs are 36; static-pod hashes 32).
const MAX_UID_LEN: usize = 64;

/// Bounds for a scan, so a huge or hostile tree cannot stall the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Deepest level searched below the start (the start is depth 0). kind seen from a host puts pods
    /// at depth 6 (`system.slice/docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice/<qos>/<pod>`).
    pub max_depth: usize,
    /// Most directories listed in one scan.
    pub max_dirs: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_depth: 8,
            max_dirs: 20_000,
        }
    }
}

/// The pod UID a cgroup directory name stands for, with dashes (`None` if it names no pod cgroup).
pub fn pod_uid_from_name(name: &str) -> Option<String> {
    // cgroupfs: "pod<uid>"
    if let Some(uid) = name.strip_prefix("pod") {
        return is_uid(uid, '-').then(|| uid.to_owned());
    }
    // systemd: "<prefix>-pod<uid with '-' escaped to '_'>.slice"
    let stem = name.strip_suffix(".slice")?;
    let (prefix, escaped) = stem.rsplit_once("-pod")?;
    (!prefix.is_empty() && is_uid(escaped, '_')).then(|| escaped.replace('_', "-"))
}

/// Whether a name is a UID in kubelet form: lower-case hex with `sep` as separator.
fn is_uid(s: &str, sep: char) -> bool {
    !s.is_empty()
        && s.len() <= MAX_UID_LEN
        && s.chars().any(|c| c != sep)
        && s.chars()
            .all(|c| c == sep || c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Whether the cgroup directory `name` is the cgroup of the pod `uid` (either driver).
pub fn name_matches_pod(name: &str, uid: &str) -> bool {
    if name.strip_prefix("pod") == Some(uid) {
        return true;
    }
    name.strip_suffix(".slice")
        .and_then(|stem| stem.rsplit_once("-pod"))
        .is_some_and(|(prefix, escaped)| {
            !prefix.is_empty() && !uid.contains('_') && escaped == uid.replace('-', "_")
        })
}

/// The pod cgroup the kubelet creates for `driver`, `--cgroup-root` (cgroupfs form, `/` by default), QoS
/// class and UID (`docs/kubelet.md` §4.1–§4.3): `ToCgroupfs` or `ToSystemd` with `ExpandSlice`.
pub fn expected_pod_cgroup(
    driver: CgroupDriver,
    cgroup_root: &str,
    qos: QosClass,
    uid: &str,
) -> Result<CgroupPath, InvalidCgroupPath> {
    let mut parts: Vec<String> = cgroup_root
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    parts.push("kubepods".to_owned());
    match qos {
        QosClass::Guaranteed => {}
        QosClass::Burstable => parts.push("burstable".to_owned()),
        QosClass::BestEffort => parts.push("besteffort".to_owned()),
    }
    parts.push(format!("pod{uid}"));
    let path = match driver {
        CgroupDriver::Cgroupfs => format!("/{}", parts.join("/")),
        CgroupDriver::Systemd => {
            // ToSystemd escapes '-' to '_' per part; ExpandSlice makes each level carry its ancestors.
            let escaped: Vec<String> = parts.iter().map(|p| p.replace('-', "_")).collect();
            let levels: Vec<String> = (1..=escaped.len())
                .map(|n| format!("{}.slice", escaped[..n].join("-")))
                .collect();
            format!("/{}", levels.join("/"))
        }
    };
    CgroupPath::new(&path)
}

/// Whether a name looks like part of the kubelet's hierarchy; such subtrees are searched first, so the
/// usual layouts are found before unrelated ones (`system.slice`, `user.slice`) are listed.
fn kubelet_like(name: &str) -> bool {
    name.contains("kubepods") || name.contains("kubelet")
}

/// The pod cgroups found by [`scan_pods`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanResult {
    /// `(pod UID with dashes, its cgroup)`, in discovery order (kubelet-like subtrees first).
    pub pods: Vec<(String, CgroupPath)>,
    /// The scan stopped at `max_dirs`; some cgroups were not looked at.
    pub truncated: bool,
    /// What the scan listed in each ancestor of a pod cgroup it found (below `start` and
    /// `start` itself), so what sums over the pods' siblings need not list them again.
    pub listings: Listings,
}

/// Directory listings (child names) by directory.
pub type Listings = BTreeMap<CgroupPath, Vec<String>>;

/// What [`walk`] does with a child cgroup.
enum Step {
    /// Look below it.
    Descend,
    /// Do not look below it (a pod cgroup: its children are containers).
    Prune,
    /// End the scan.
    Stop,
}

/// Walks below `start` within `limits`, asking `step` about every child cgroup: breadth-first, but
/// subtrees below a kubelet-like name before all others, calling `pause` after each directory
/// listed and handing the listing to `seen` once its children are queued. A cgroup removed while
/// scanning (ENOENT) is skipped. Returns whether `max_dirs` cut the scan short.
fn walk(
    fs: &dyn CgroupFs,
    start: &CgroupPath,
    limits: ScanLimits,
    mut step: impl FnMut(&str, &CgroupPath) -> Step,
    seen: &mut dyn FnMut(CgroupPath, Vec<String>),
    pause: &mut dyn FnMut(),
) -> Result<bool, CgroupError> {
    // [kubelet-like subtrees, the rest]; entries are (cgroup, depth below start).
    let mut queues = [VecDeque::new(), VecDeque::new()];
    queues[usize::from(!start.name().is_some_and(kubelet_like))].push_back((start.clone(), 0usize));
    let mut listed = 0usize;
    while let Some((dir, depth, preferred)) = queues[0]
        .pop_front()
        .map(|(d, n)| (d, n, true))
        .or_else(|| queues[1].pop_front().map(|(d, n)| (d, n, false)))
    {
        if listed >= limits.max_dirs {
            return Ok(true);
        }
        listed += 1;
        let names = match fs.children(&dir) {
            Ok(names) => names,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        pause();
        for name in &names {
            // Names that are not valid components cannot be kubelet cgroups.
            let Ok(child) = dir.join(name) else { continue };
            match step(name, &child) {
                Step::Stop => return Ok(false),
                Step::Prune => {}
                Step::Descend if depth + 1 < limits.max_depth => {
                    let queue = usize::from(!(preferred || kubelet_like(name)));
                    queues[queue].push_back((child, depth + 1));
                }
                Step::Descend => {}
            }
        }
        seen(dir, names);
    }
    Ok(false)
}

/// Lists every pod cgroup below `start` within `limits`.
pub fn scan_pods(
    fs: &dyn CgroupFs,
    start: &CgroupPath,
    limits: ScanLimits,
) -> Result<ScanResult, CgroupError> {
    scan_pods_pausing(fs, start, limits, &mut || {})
}

/// [`scan_pods`], calling `pause` after each directory listed (a node round lets waiting pods
/// rounds run there).
pub fn scan_pods_pausing(
    fs: &dyn CgroupFs,
    start: &CgroupPath,
    limits: ScanLimits,
    pause: &mut dyn FnMut(),
) -> Result<ScanResult, CgroupError> {
    let mut pods = Vec::new();
    let step = |name: &str, path: &CgroupPath| match pod_uid_from_name(name) {
        Some(uid) => {
            pods.push((uid, path.clone()));
            Step::Prune
        }
        None => Step::Descend,
    };
    let mut listings = BTreeMap::new();
    let mut listed = |dir, names| {
        listings.insert(dir, names);
    };
    let truncated = walk(fs, start, limits, step, &mut listed, pause)?;
    // Only the pods' ancestors: a scan from the root lists unrelated trees too.
    let mut ancestors = BTreeSet::new();
    for (_, pod) in &pods {
        let mut up = pod.parent();
        while let Some(dir) = up {
            up = dir.parent();
            if !ancestors.insert(dir) {
                break;
            }
        }
    }
    listings.retain(|dir, _| ancestors.contains(dir));
    Ok(ScanResult {
        pods,
        truncated,
        listings,
    })
}

/// Finds the cgroup of pod `uid` below `start`: the first match, kubelet-like subtrees searched first. Matching compares
/// names exactly with the kubelet's forms, so any UID spelling the kubelet uses is found.
pub fn find_pod_cgroup(
    fs: &dyn CgroupFs,
    start: &CgroupPath,
    uid: &str,
    limits: ScanLimits,
) -> Result<Option<CgroupPath>, CgroupError> {
    let mut hit = None;
    walk(
        fs,
        start,
        limits,
        |name, path| {
            if name_matches_pod(name, uid) {
                hit = Some(path.clone());
                Step::Stop
            } else if pod_uid_from_name(name).is_some() {
                Step::Prune
            } else {
                Step::Descend
            }
        },
        &mut |_, _| {},
        &mut || {},
    )?;
    Ok(hit)
}

#[cfg(test)]
mod tests;
