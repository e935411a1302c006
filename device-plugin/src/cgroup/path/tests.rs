//! Table tests for every path row of `docs/kubelet.md` §4.3–§4.5, and scans over tempdir trees.

use std::fs;

use super::*;
use crate::cgroup::SysfsCgroups;
use CgroupDriver::{Cgroupfs, Systemd};
use QosClass::{BestEffort, Burstable, Guaranteed};

/// A UID per row, so one tree can hold every row at once.
fn pod_uid(i: usize) -> String {
    format!("{i:08x}-1f2e-4d3c-8b7a-{i:012x}")
}

/// `(driver, --cgroup-root, QoS, pod cgroup with <UID> / <UID_> placeholders)`.
const ROWS: &[(CgroupDriver, &str, QosClass, &str)] = &[
    // `docs/kubelet.md` §4.3, default --cgroup-root=/
    (
        Systemd,
        "/",
        Guaranteed,
        "/kubepods.slice/kubepods-pod<UID_>.slice",
    ),
    (
        Systemd,
        "/",
        Burstable,
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID_>.slice",
    ),
    (
        Systemd,
        "/",
        BestEffort,
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<UID_>.slice",
    ),
    (Cgroupfs, "/", Guaranteed, "/kubepods/pod<UID>"),
    (Cgroupfs, "/", Burstable, "/kubepods/burstable/pod<UID>"),
    (Cgroupfs, "/", BestEffort, "/kubepods/besteffort/pod<UID>"),
    // `docs/kubelet.md` §4.3, --cgroup-root=/foo
    (
        Cgroupfs,
        "/foo",
        Burstable,
        "/foo/kubepods/burstable/pod<UID>",
    ),
    (
        Systemd,
        "/foo",
        Burstable,
        "/foo.slice/foo-kubepods.slice/foo-kubepods-burstable.slice/foo-kubepods-burstable-pod<UID_>.slice",
    ),
    // `docs/kubelet.md` §4.5, kind: systemd driver, cgroupRoot /kubelet
    (
        Systemd,
        "/kubelet",
        Burstable,
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod<UID_>.slice",
    ),
    (
        Systemd,
        "/kubelet",
        Guaranteed,
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod<UID_>.slice",
    ),
    (
        Systemd,
        "/kubelet",
        BestEffort,
        "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod<UID_>.slice",
    ),
];

fn fill(template: &str, uid: &str) -> String {
    template
        .replace("<UID_>", &uid.replace('-', "_"))
        .replace("<UID>", uid)
}

#[test]
fn expected_paths_match_the_kubelet_tables() {
    for (i, (driver, root, qos, template)) in ROWS.iter().enumerate() {
        let uid = pod_uid(i);
        let want = fill(template, &uid);
        let got = expected_pod_cgroup(*driver, root, *qos, &uid).unwrap();
        assert_eq!(got.as_str(), want, "row {i}");
        let name = got.name().unwrap();
        assert!(name_matches_pod(name, &uid), "row {i}: {name}");
        assert!(!name_matches_pod(name, &pod_uid(i + 1)), "row {i}: {name}");
        assert_eq!(
            pod_uid_from_name(name).as_deref(),
            Some(uid.as_str()),
            "row {i}"
        );
    }
}

#[test]
fn non_pod_names_are_not_pods() {
    for name in [
        "pods",
        "pod",
        "podXYZ",
        "kubepods",
        "kubepods.slice",
        "kubepods-burstable.slice",
        "kubepods-pod.slice",
        "-pod1234.slice",
        "kubepods-pod1234-abcd.slice",
        "kubepods-podABCD.slice",
        "cri-containerd-0123abcd.scope",
        "crio-conmon-0123.scope",
        "docker-0123abcd.scope",
        "system.slice",
        "pod____",
    ] {
        assert_eq!(pod_uid_from_name(name), None, "{name}");
    }
    assert_eq!(
        pod_uid_from_name("kubepods-pod12_ab.slice").as_deref(),
        Some("12-ab")
    );
    assert!(
        name_matches_pod("podABC", "ABC"),
        "cgroupfs names compare exactly"
    );
    assert!(!name_matches_pod("kubepods-pod1_2.slice", "1_2"));
}

/// A tree with every row, containers below each pod, unrelated cgroups, and a kind node as its host
/// sees it.
fn node_tree() -> (tempfile::TempDir, SysfsCgroups, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    for (i, (driver, root, qos, _)) in ROWS.iter().enumerate() {
        let uid = pod_uid(i);
        let path = expected_pod_cgroup(*driver, root, *qos, &uid).unwrap();
        pods.push((uid, path.to_string()));
    }
    let host_kind = format!(
        "/system.slice/docker-0a1b2c.scope{}",
        fill(ROWS[8].3, &pod_uid(99))
    );
    pods.push((pod_uid(99), host_kind));
    for (_, path) in &pods {
        let base = dir.path().join(path.trim_start_matches('/'));
        fs::create_dir_all(base.join("cri-containerd-0123abcd.scope")).unwrap();
        // A nested directory named like a pod must not be taken for one (containers are not scanned).
        fs::create_dir_all(base.join("pod00000000")).unwrap();
    }
    for noise in [
        "system.slice/sshd.service",
        "user.slice/user-0.slice/session-1.scope",
        "init.scope",
    ] {
        fs::create_dir_all(dir.path().join(noise)).unwrap();
    }
    let backend = SysfsCgroups::with_root(dir.path());
    (dir, backend, pods)
}

#[test]
fn scan_finds_every_layout() {
    let (_dir, backend, pods) = node_tree();
    let root = CgroupPath::root();
    for (uid, path) in &pods {
        let found = find_pod_cgroup(&backend, &root, uid, ScanLimits::default()).unwrap();
        assert_eq!(
            found.map(|p| p.to_string()).as_deref(),
            Some(path.as_str()),
            "{uid}"
        );
    }
    let missing = find_pod_cgroup(&backend, &root, &pod_uid(1000), ScanLimits::default()).unwrap();
    assert_eq!(missing, None);
    let result = scan_pods(&backend, &root, ScanLimits::default()).unwrap();
    assert!(!result.truncated);
    let mut got: Vec<_> = result
        .pods
        .iter()
        .map(|(u, p)| (u.clone(), p.to_string()))
        .collect();
    let mut want = pods.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The listings kept are those of the pods' ancestors, each naming the way down to them.
    let mut ancestors = std::collections::BTreeSet::new();
    for (_, path) in &pods {
        let chain = CgroupPath::new(path).unwrap().ancestors_and_self();
        for pair in chain.windows(2) {
            let (dir, below) = (&pair[0], &pair[1]);
            let names = &result.listings[dir];
            assert!(
                names.iter().any(|n| Some(n.as_str()) == below.name()),
                "{dir} lists {below}"
            );
            ancestors.insert(dir.clone());
        }
    }
    assert_eq!(
        result
            .listings
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        ancestors,
        "no unrelated tree (user.slice) kept"
    );
}

#[test]
fn scan_respects_limits() {
    let (_dir, backend, pods) = node_tree();
    let root = CgroupPath::root();
    // The host-side kind pod sits at depth 6: not found with max_depth 5, found with 6.
    let (deep_uid, _) = &pods[pods.len() - 1];
    let shallow = ScanLimits {
        max_depth: 5,
        max_dirs: 10_000,
    };
    assert_eq!(
        find_pod_cgroup(&backend, &root, deep_uid, shallow).unwrap(),
        None
    );
    let enough = ScanLimits {
        max_depth: 6,
        max_dirs: 10_000,
    };
    assert!(
        find_pod_cgroup(&backend, &root, deep_uid, enough)
            .unwrap()
            .is_some()
    );
    let tiny = ScanLimits {
        max_depth: 8,
        max_dirs: 2,
    };
    assert!(scan_pods(&backend, &root, tiny).unwrap().truncated);
    // Starting below the root narrows the scan; a start that does not exist finds nothing.
    let kubepods = CgroupPath::new("/kubepods").unwrap();
    assert_eq!(
        scan_pods(&backend, &kubepods, ScanLimits::default())
            .unwrap()
            .pods
            .len(),
        3
    );
    let gone = CgroupPath::new("/gone").unwrap();
    assert_eq!(
        scan_pods(&backend, &gone, ScanLimits::default()).unwrap(),
        ScanResult::default()
    );
}

#[test]
fn kubelet_subtrees_are_searched_first() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        fs::create_dir_all(dir.path().join(format!("noise-{i}.slice/child"))).unwrap();
    }
    let uid = pod_uid(7);
    fs::create_dir_all(dir.path().join(format!("kubepods/burstable/pod{uid}"))).unwrap();
    let backend = SysfsCgroups::with_root(dir.path());
    // Three listings (/, /kubepods, /kubepods/burstable) reach the pod despite 50 siblings.
    let limits = ScanLimits {
        max_depth: 8,
        max_dirs: 3,
    };
    let found = find_pod_cgroup(&backend, &CgroupPath::root(), &uid, limits).unwrap();
    assert_eq!(
        found.unwrap().to_string(),
        format!("/kubepods/burstable/pod{uid}")
    );
}
