//! The helpers over `&dyn CgroupFs` against the kernel model, in-process and through FUSE: capability
//! probing and `+dmem` enabling, pod-cgroup discovery on kubelet-shaped trees, and `apply_limit`'s
//! read-back on both kernel profiles.

// The vector bodies are plain fns shared by the generated #[test]s, which clippy's
// allow-unwrap-in-tests does not see as tests; here a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Kind, R0, cg, env, kernel};
use kube_dmem_device_plugin::cgroup::CgroupFile;
use kube_dmem_device_plugin::cgroup::dmem::{Applied, apply_limit};
use kube_dmem_device_plugin::cgroup::format::DmemValue;
use kube_dmem_device_plugin::cgroup::path::{
    CgroupDriver, QosClass, ScanLimits, expected_pod_cgroup, find_pod_cgroup, scan_pods,
};
use kube_dmem_device_plugin::cgroup::probe::{
    Capabilities, EnableDmemError, KernelProfile, decide, enable_dmem_along, probe,
};
use kube_dmem_sim::Profile;

const UID: &str = "6b1f2c3d-0a1b-4c2d-8e3f-112233445566";

fn probe_and_enable(kind: Kind) {
    for (profile, want) in [
        (Profile::Legacy, KernelProfile::Legacy),
        (Profile::LegacyUnfixed, KernelProfile::Legacy),
        (Profile::Current, KernelProfile::Current),
    ] {
        let env = env(kind, kernel(profile));
        for dir in [
            "/kubepods",
            "/kubepods/burstable",
            "/kubepods/burstable/pod1",
        ] {
            env.mkdir(dir).unwrap();
        }
        let pod = cg("/kubepods/burstable/pod1");
        let before = probe(env.fs(), &pod).unwrap();
        assert_eq!(before.root_controllers, ["dmem"]);
        // As on a freshly booted kernel: the root shows no dmem.capacity before a controller is
        // enabled in its cgroup.subtree_control, so no regions are seen yet.
        assert!(before.regions.is_empty());
        assert_eq!(before.subtree_dmem.iter().filter(|(_, on)| *on).count(), 0);
        assert_eq!(decide(&before).profile, KernelProfile::Undetermined);

        let changed = enable_dmem_along(env.fs(), &pod).unwrap();
        let changed: Vec<_> = changed.iter().map(ToString::to_string).collect();
        assert_eq!(changed, ["/", "/kubepods", "/kubepods/burstable"]);
        assert!(
            enable_dmem_along(env.fs(), &pod).unwrap().is_empty(),
            "idempotent"
        );

        let observed = probe(env.fs(), &pod).unwrap();
        assert_eq!(observed.regions.len(), 2);
        let after = decide(&observed);
        let current = want == KernelProfile::Current;
        assert_eq!(
            after,
            Capabilities {
                profile: want,
                native_high: false,
                peak: current,
                enabled_along_path: true
            }
        );
    }
}

fn enable_reports_the_busy_level(kind: Kind) {
    let env = env(kind, kernel(Profile::Current));
    env.mkdir("/kubepods").unwrap();
    env.mkdir("/kubepods/pod1").unwrap();
    env.kernel().set_has_tasks("/kubepods", true).unwrap();
    let err = enable_dmem_along(env.fs(), &cg("/kubepods/pod1/c")).unwrap_err();
    assert_eq!(err.reason(), "CgroupHasProcesses");
    let EnableDmemError::HasProcesses { group, source } = err else {
        panic!("{err:?}")
    };
    assert_eq!(group.as_str(), "/kubepods");
    assert_eq!(source.errno(), Some(libc::EBUSY));
    assert!(
        source.path().ends_with("kubepods/cgroup.subtree_control"),
        "{:?}",
        source.path()
    );
    // The probe of a path below a missing cgroup reports the walk, not an error.
    let obs = probe(env.fs(), &cg("/nope/x")).unwrap();
    assert_eq!(obs.subtree_dmem.len(), 2);
    assert!(obs.files.is_empty());
}

fn finds_pods_in_kubelet_trees(kind: Kind) {
    let env = env(kind, kernel(Profile::Current));
    let pods = [
        expected_pod_cgroup(CgroupDriver::Systemd, "/", QosClass::Burstable, UID).unwrap(),
        expected_pod_cgroup(
            CgroupDriver::Cgroupfs,
            "/",
            QosClass::BestEffort,
            "0000aaaa-1111",
        )
        .unwrap(),
        expected_pod_cgroup(
            CgroupDriver::Systemd,
            "/kubelet",
            QosClass::Guaranteed,
            "0000bbbb-2222",
        )
        .unwrap(),
    ];
    for pod in &pods {
        for level in pod.ancestors_and_self().iter().skip(1) {
            let _ = env.mkdir(level.as_str());
        }
        env.mkdir(&format!("{pod}/cri-containerd-0123abcd.scope"))
            .unwrap();
    }
    env.mkdir("/system.slice").unwrap();
    env.mkdir("/system.slice/containerd.service").unwrap();
    let root = cg("/");
    let found = find_pod_cgroup(env.fs(), &root, UID, ScanLimits::default()).unwrap();
    assert_eq!(found.as_ref(), Some(&pods[0]));
    let all = scan_pods(env.fs(), &root, ScanLimits::default()).unwrap();
    let mut uids: Vec<_> = all.pods.iter().map(|(uid, _)| uid.as_str()).collect();
    uids.sort_unstable();
    assert_eq!(uids, ["0000aaaa-1111", "0000bbbb-2222", UID]);
    assert!(!all.truncated);
    // Limits are applied on that pod, found by the scan.
    let pod = found.unwrap();
    let _ = enable_dmem_along(env.fs(), &pod).unwrap();
    let outcome = apply_limit(
        env.fs(),
        &pod,
        CgroupFile::DmemMax,
        R0,
        DmemValue::Bytes(1 << 30),
    );
    assert_eq!(
        outcome.unwrap(),
        Applied::Confirmed(DmemValue::Bytes(1 << 30))
    );
}

fn apply_limit_read_back(kind: Kind) {
    for profile in [Profile::Legacy, Profile::Current] {
        let env = common::setup_s(kind, profile);
        let a = cg("/k/a");
        env.charge("/k/a", R0, "+1G").unwrap();
        // At or above usage: in force on both profiles.
        let ok = apply_limit(
            env.fs(),
            &a,
            CgroupFile::DmemMax,
            R0,
            DmemValue::Bytes(2 << 30),
        )
        .unwrap();
        assert!(ok.is_confirmed());
        // Below usage: legacy drops it silently, current applies it.
        let below = apply_limit(
            env.fs(),
            &a,
            CgroupFile::DmemMax,
            R0,
            DmemValue::Bytes(1 << 29),
        )
        .unwrap();
        let want = match profile {
            Profile::Current => Applied::Confirmed(DmemValue::Bytes(1 << 29)),
            _ => Applied::NotApplied {
                wanted: DmemValue::Bytes(1 << 29),
                actual: DmemValue::Bytes(2 << 30),
            },
        };
        assert_eq!(below, want, "{profile:?}");
        // Writing max back is always in force.
        let max = apply_limit(env.fs(), &a, CgroupFile::DmemMax, R0, DmemValue::Max).unwrap();
        assert_eq!(max, Applied::Confirmed(DmemValue::Max));
    }
}

/// One `#[test]` per case and environment.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $( #[test] fn $name() { super::$name(super::common::Kind::InProcess) } )*
        }
        mod fuse {
            $( #[test] fn $name() {
                if super::common::fuse_available() {
                    super::common::with_timeout(|| super::$name(super::common::Kind::Fuse));
                }
            } )*
        }
    };
}

both!(
    probe_and_enable,
    enable_reports_the_busy_level,
    finds_pods_in_kubelet_trees,
    apply_limit_read_back,
);
