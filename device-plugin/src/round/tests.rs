//! One round against the in-process simulator with injected kernel faults: bad input and failed
//! reads never loosen a limit already applied.

use std::collections::BTreeMap;

use kube_dmem_crds::select::{PodFacts, QuotaFacts, QuotaRef, quota_facts};
use kube_dmem_crds::{DmemQuota, PressureTier};
use kube_dmem_sim::{Profile, SimConfig, SimKernel};

use super::*;
use crate::cgroup::CgroupFile;
use crate::cgroup::dmem::read_values;
use crate::cgroup::format::DmemValue;
use crate::cgroup::sim_backend::SimCgroups;
use crate::decide::conditions::Status;

const R0: &str = "drm/0000:03:00.0/vram0";
const G: u64 = 1 << 30;
const POD: &str = "/kubepods/besteffort/pod0b5a4e2f-3c1d-4e5f-8a9b-0c1d2e3f4a5b";
const UID: &str = "0b5a4e2f-3c1d-4e5f-8a9b-0c1d2e3f4a5b";

/// A node with one region and one running pod cgroup, dmem enabled down to it.
fn node() -> SimCgroups {
    let mut kernel = SimKernel::new(SimConfig::with_profile(Profile::Current));
    kernel.register_region(R0, 16 * G, true);
    let fs = SimCgroups::from_kernel(kernel);
    for dir in ["/", "/kubepods", "/kubepods/besteffort"] {
        if dir != "/" {
            fs.kernel()
                .lock()
                .expect("kernel")
                .mkdir(dir)
                .expect("mkdir");
        }
        fs.write(&path(dir), CgroupFile::CgroupSubtreeControl, "+dmem")
            .expect("+dmem");
    }
    let mut k = fs.kernel().lock().expect("kernel");
    k.mkdir(POD).expect("mkdir pod");
    k.set_has_tasks(POD, true).expect("tasks");
    drop(k);
    fs
}

fn path(p: &str) -> CgroupPath {
    CgroupPath::new(p).expect("valid path")
}

fn cfg() -> RoundConfig {
    RoundConfig {
        scan_root: CgroupPath::root(),
        high: HighSupport::Emulated,
        thresholds: PressureThresholds::default(),
    }
}

fn pod() -> PodFacts {
    PodFacts {
        namespace: "ml".into(),
        name: "train-0".into(),
        uid: UID.into(),
        labels: [("app".to_owned(), "train".to_owned())].into(),
        grants: Vec::new(),
    }
}

fn quota(max: &str) -> QuotaFacts {
    let q: DmemQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": "ml", "uid": "quid"},
        "spec": {"selector": {"matchLabels": {"app": "train"}},
                 "limits": [{"region": R0, "max": max, "high": "1Gi"}]}
    }))
    .expect("quota");
    quota_facts([q].iter()).0.remove(0)
}

/// A quota with `max` 4Gi and `low` 1Gi, so the pods' ancestors get protection.
fn protecting_quota() -> Vec<QuotaFacts> {
    let q: DmemQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": "ml", "uid": "quid"},
        "spec": {"selector": {"matchLabels": {"app": "train"}},
                 "limits": [{"region": R0, "max": "4Gi", "low": "1Gi"}]}
    }))
    .expect("quota");
    quota_facts([q].iter()).0
}

fn max_in_force(fs: &SimCgroups) -> DmemValue {
    read_values(fs, &path(POD), CgroupFile::DmemMax)
        .expect("dmem.max")
        .get(R0)
        .expect("region line")
}

#[test]
fn an_unreadable_limit_file_leaves_the_limits_alone_and_says_why() {
    let fs = node();
    let first = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    assert_eq!(first.pods[0].outcome, LimitsOutcome::Applied);
    // Someone (an operator by hand, another writer) holds the pod tighter than the quota.
    fs.write(&path(POD), CgroupFile::DmemMax, &format!("{R0} {G}"))
        .expect("tighten");
    for errno in [libc::EIO, libc::EACCES] {
        fs.fail_next_at(&path(POD), CgroupFile::DmemMax, errno);
        let writes_before = fs.writes().len();
        let report = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
        let outcome = &report.pods[0].outcome;
        let LimitsOutcome::ReadFailed { message, .. } = outcome else {
            panic!("errno {errno}: expected ReadFailed, got {outcome:?}");
        };
        assert!(message.contains("dmem.max"), "names the file: {message}");
        assert_eq!(report.writes, 0, "errno {errno}: nothing written");
        assert_eq!(fs.writes().len(), writes_before, "errno {errno}");
        assert_eq!(max_in_force(&fs), DmemValue::Bytes(G), "errno {errno}");
        assert_eq!(outcome.status(), Status::Unknown);
        assert!(report.pods[0].read_failure.is_some());
    }
    // Readable again: the agent's own value returns (the quota says 4Gi).
    let report = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(4 * G));
}

#[test]
fn an_unreadable_usage_file_makes_pressure_unknown_not_idle() {
    let fs = node();
    fs.kernel()
        .lock()
        .expect("kernel")
        .try_charge(POD, R0, 2 * G)
        .expect("charge 2Gi");
    let calm = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    assert_eq!(calm.pods[0].tier, PressureTier::AboveHigh);
    assert_eq!(calm.pods[0].read_failure, None);
    fs.fail_next_at(&path(POD), CgroupFile::DmemCurrent, libc::EIO);
    let report = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    let failure = report.pods[0].read_failure.as_deref().unwrap_or_default();
    assert!(failure.contains("dmem.current"), "{failure:?}");
    // The limits themselves were read and are in force.
    assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
}

#[test]
fn a_vanished_cgroup_still_reads_as_not_found() {
    let fs = node();
    fs.fail_next_at(&path(POD), CgroupFile::DmemMax, libc::ENOENT);
    let report = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    assert_eq!(report.pods[0].read_failure, None);
    assert_ne!(
        std::mem::discriminant(&report.pods[0].outcome),
        std::mem::discriminant(&LimitsOutcome::ReadFailed {
            reason: "",
            message: String::new()
        })
    );
}

#[test]
fn a_pod_an_unknown_invalid_quota_may_govern_is_left_as_it_is() {
    let fs = node();
    run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    let key = QuotaRef {
        namespace: "ml".into(),
        name: "q".into(),
    };
    let invalid = BadInputs {
        held: BTreeMap::from([(UID.to_owned(), (key.clone(), "spec: missing".to_owned()))]),
        ..BadInputs::default()
    };
    // No valid quota at all this round: without the hold the pod would be reset to `max`.
    let report = run_round_with(
        &fs,
        &cfg(),
        RoundInputs::new(&[pod()], &[], &invalid),
        &mut Memory::default(),
    )
    .expect("round");
    assert_eq!(report.writes, 0);
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(4 * G));
    assert_eq!(
        report.pods[0].outcome,
        LimitsOutcome::QuotaInvalid {
            quota: key,
            error: "spec: missing".into(),
            last_valid_in_force: false
        }
    );
}

#[test]
fn a_quota_kept_at_its_last_valid_spec_reports_quota_invalid_in_force() {
    let fs = node();
    let key = QuotaRef {
        namespace: "ml".into(),
        name: "q".into(),
    };
    let invalid = BadInputs {
        stale: BTreeMap::from([(key.clone(), "high above max".to_owned())]),
        ..BadInputs::default()
    };
    let report = run_round_with(
        &fs,
        &cfg(),
        RoundInputs::new(&[pod()], &[quota("4Gi")], &invalid),
        &mut Memory::default(),
    )
    .expect("round");
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(4 * G));
    assert!(report.pods[0].outcome.in_force());
    assert_eq!(report.pods[0].outcome.reason(), "QuotaInvalid");
}

#[test]
fn the_kernels_peak_is_reported_after_usage_drops() {
    let fs = node();
    let mut kernel = fs.kernel().lock().expect("kernel");
    kernel.try_charge(POD, R0, 3 * G).expect("charge 3Gi");
    kernel.uncharge(POD, R0, 2 * G);
    drop(kernel);
    let report = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    let reading = report.pods[0].regions[0].reading;
    assert_eq!((reading.usage, reading.peak), (G, Some(3 * G)));
    assert_eq!(report.region_usage.get(R0), Some(&G));
}

#[test]
fn dmem_is_enabled_above_a_pod_cgroup_that_has_no_dmem_files() {
    // A kubelet enables only the controllers it knows: dmem stops at the root here.
    let mut kernel = SimKernel::new(SimConfig::with_profile(Profile::Current));
    kernel.register_region(R0, 16 * G, true);
    let fs = SimCgroups::from_kernel(kernel);
    fs.write(&path("/"), CgroupFile::CgroupSubtreeControl, "+dmem")
        .expect("+dmem at the root");
    let mut k = fs.kernel().lock().expect("kernel");
    for dir in ["/kubepods", "/kubepods/besteffort", POD] {
        k.mkdir(dir).expect("mkdir");
    }
    k.set_has_tasks(POD, true).expect("tasks");
    drop(k);
    assert!(!fs.exists(&path(POD), CgroupFile::DmemMax));
    let report = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(4 * G));
    // Steady state: nothing more to enable or write.
    let again = run_round(&fs, &cfg(), &[pod()], &[quota("4Gi")]).expect("round");
    assert_eq!(again.writes, 0);
}

#[test]
fn another_writer_is_reported_and_never_fought_in_a_loop() {
    let fs = node();
    let mut memory = Memory::default();
    let none = BadInputs::default();
    let round = |memory: &mut Memory| {
        run_round_with(
            &fs,
            &cfg(),
            RoundInputs::new(&[pod()], &[quota("4Gi")], &none),
            memory,
        )
        .expect("round")
    };
    assert_eq!(round(&mut memory).pods[0].outcome, LimitsOutcome::Applied);
    let set_max = |v: &str| {
        fs.write(&path(POD), CgroupFile::DmemMax, &format!("{R0} {v}"))
            .expect("foreign write");
    };
    // HAMi-like writer sets a stricter max: kept, reported, nothing written.
    set_max(&G.to_string());
    let report = round(&mut memory);
    assert_eq!(report.pods[0].outcome.reason(), "ForeignLimitKept");
    assert!(report.pods[0].outcome.in_force());
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(G));
    // It loosens the limit instead: restored each time, at most MAX_RESTORES times in a row.
    for restore in 0..crate::decide::foreign::MAX_RESTORES {
        set_max("max");
        let report = round(&mut memory);
        assert_eq!(
            report.pods[0].outcome.reason(),
            "ForeignWriteReverted",
            "{restore}"
        );
        assert_eq!(max_in_force(&fs), DmemValue::Bytes(4 * G));
    }
    set_max("max");
    let report = round(&mut memory);
    assert_eq!(report.pods[0].outcome.reason(), "ForeignWriterConflict");
    assert!(!report.pods[0].outcome.in_force());
    assert_eq!(report.writes, 0, "no write loop");
    // The quota changes: the agent's new value goes in, and the count starts again.
    let report = run_round_with(
        &fs,
        &cfg(),
        RoundInputs::new(&[pod()], &[quota("3Gi")], &none),
        &mut memory,
    )
    .expect("round");
    assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(3 * G));
}

#[test]
fn a_pod_the_agent_never_limited_keeps_another_writers_limit() {
    let fs = node();
    let mut memory = Memory::default();
    fs.write(&path(POD), CgroupFile::DmemMax, &format!("{R0} {G}"))
        .expect("foreign write");
    let report =
        run_round_with(&fs, &cfg(), RoundInputs::valid(&[pod()], &[]), &mut memory).expect("round");
    assert_eq!(report.writes, 0);
    assert_eq!(max_in_force(&fs), DmemValue::Bytes(G));
}

#[test]
fn a_pods_round_settles_its_pods_alone_and_leaves_the_node_to_the_node_round() {
    const OTHER: &str = "/kubepods/besteffort/pod1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c";
    let fs = node();
    {
        let mut k = fs.kernel().lock().expect("kernel");
        k.mkdir(OTHER).expect("mkdir");
        k.set_has_tasks(OTHER, true).expect("tasks");
        for group in [POD, OTHER] {
            k.alloc_bo(group, R0, G / 2).expect("usage below low");
        }
    }
    let other = PodFacts {
        name: "train-1".into(),
        uid: "1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c".into(),
        ..pod()
    };
    let quotas = protecting_quota();
    let low_of = |group: &str| {
        read_values(&fs, &path(group), CgroupFile::DmemLow)
            .expect("dmem.low")
            .get(R0)
            .expect("region line")
    };
    let max_of = |group: &str| {
        read_values(&fs, &path(group), CgroupFile::DmemMax)
            .expect("dmem.max")
            .get(R0)
            .expect("region line")
    };
    let mut memory = Memory::default();
    let pods_round = run_scoped_round(
        &fs,
        &cfg(),
        RoundInputs::valid(std::slice::from_ref(&other), &quotas),
        &mut memory,
        Scope::Pods,
    )
    .expect("pods round");
    assert_eq!(
        pods_round.pods.len(),
        1,
        "only the pod asked for is reported"
    );
    let remembered = memory.written.len();
    assert!(remembered > 0, "the pods round remembers what it wrote");
    assert_eq!(pods_round.pods[0].outcome, LimitsOutcome::Applied);
    assert_eq!(max_of(OTHER), DmemValue::Bytes(4 * G));
    assert_eq!(low_of(OTHER), DmemValue::Bytes(G));
    assert_eq!(
        max_of(POD),
        DmemValue::Max,
        "a pod outside the round is untouched"
    );
    assert_eq!(
        low_of("/kubepods/besteffort"),
        DmemValue::Bytes(0),
        "the ancestors' protection sums every pod: it waits for the node round"
    );

    let node_round = run_scoped_round(
        &fs,
        &cfg(),
        RoundInputs::valid(&[pod(), other], &quotas),
        &mut memory,
        Scope::Node,
    )
    .expect("node round");
    assert_eq!(node_round.pods.len(), 2);
    assert_eq!(max_of(POD), DmemValue::Bytes(4 * G));
    assert_eq!(
        low_of("/kubepods/besteffort"),
        DmemValue::Bytes(G),
        "each pod passes up min(usage, low)"
    );
    // What the pods round wrote stays remembered as the agent's own, next to the other pod's.
    assert_eq!(node_round.pods[1].outcome, LimitsOutcome::Applied);
    assert_eq!(memory.written.len(), 2 * remembered);
}

#[test]
fn a_pods_round_looks_its_pod_up_where_the_node_round_found_pods_and_forgets_no_other() {
    const NEW: &str = "/kubepods/besteffort/pod1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c";
    let fs = node();
    let quotas = [quota("4Gi")];
    let none = BadInputs::default();
    let mut memory = Memory::default();
    run_round_with(
        &fs,
        &cfg(),
        RoundInputs::new(&[pod()], &quotas, &none),
        &mut memory,
    )
    .expect("node round");
    let remembered = memory.written.len();
    assert!(remembered > 0);
    let mut k = fs.kernel().lock().expect("kernel");
    k.mkdir(NEW).expect("mkdir");
    k.set_has_tasks(NEW, true).expect("tasks");
    drop(k);
    let new = PodFacts {
        name: "train-1".into(),
        uid: "1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c".into(),
        ..pod()
    };
    let listed = fs.listings();
    let report = run_scoped_round(
        &fs,
        &cfg(),
        RoundInputs::new(std::slice::from_ref(&new), &quotas, &none),
        &mut memory,
        Scope::Pods,
    )
    .expect("pods round");
    assert_eq!(
        fs.listings(),
        listed,
        "no directory listed: the pod was looked up"
    );
    assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
    let max = read_values(&fs, &path(NEW), CgroupFile::DmemMax).expect("dmem.max");
    assert_eq!(max.get(R0), Some(DmemValue::Bytes(4 * G)));
    // The pods round saw one pod's cgroup; what was written to the others stays remembered.
    assert_eq!(memory.written.len(), 2 * remembered);
}

/// A [`GiveWay`] that runs `script` at its call number `at` (with the kernel and the round's
/// memory), as a pods round queued at that point of a node round would, and records each call.
struct OnCall<F: FnMut(&dyn CgroupFs, &mut Memory) -> GaveWay> {
    at: usize,
    calls: usize,
    script: F,
}

/// Where a node round on [`node`] gives way: after each of the three directories its scan lists
/// (`/`, `/kubepods`, `/kubepods/besteffort`), then after reading each pod.
const AFTER_THE_SCAN: usize = 3;

impl<F: FnMut(&dyn CgroupFs, &mut Memory) -> GaveWay> GiveWay for OnCall<F> {
    fn between_pods(&mut self, fs: &dyn CgroupFs, memory: &mut Memory) -> GaveWay {
        self.calls += 1;
        if self.calls == self.at {
            (self.script)(fs, memory)
        } else {
            GaveWay::default()
        }
    }
}

#[test]
fn a_node_round_gives_way_while_it_scans_around_each_pod_and_before_the_ancestors() {
    let fs = node();
    let mut never = OnCall {
        at: 0,
        calls: 0,
        script: |_: &dyn CgroupFs, _: &mut Memory| GaveWay::default(),
    };
    node_round_giving_way(&fs, &mut never);
    // Each directory the scan lists, the pod read, the pod acted on, then before the ancestors.
    assert_eq!(never.calls, AFTER_THE_SCAN + 2 + 1);
}

#[test]
fn a_node_round_gives_way_to_pods_rounds_and_takes_in_what_they_settled() {
    const OTHER: &str = "/kubepods/besteffort/pod1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c";
    let fs = node();
    fs.kernel()
        .lock()
        .expect("kernel")
        .alloc_bo(POD, R0, G / 2)
        .expect("usage below low");
    let other = PodFacts {
        name: "train-1".into(),
        uid: "1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c".into(),
        ..pod()
    };
    let quotas = protecting_quota();
    let none = BadInputs::default();
    let read = |group: &str, file| {
        read_values(&fs, &path(group), file)
            .expect("dmem file")
            .get(R0)
            .expect("region line")
    };
    // The node round has read the first pod (nothing in force yet) when a pods round for that
    // pod and for a pod whose cgroup appeared after the node round's scan runs in between.
    let sim = &fs;
    let between_writes = std::cell::Cell::new(0);
    let mut pods_rounds = OnCall {
        at: AFTER_THE_SCAN + 1,
        calls: 0,
        script: |fs: &dyn CgroupFs, memory: &mut Memory| {
            let mut k = sim.kernel().lock().expect("kernel");
            k.mkdir(OTHER).expect("mkdir");
            k.set_has_tasks(OTHER, true).expect("tasks");
            k.alloc_bo(OTHER, R0, G / 2).expect("usage below low");
            drop(k);
            let both = [pod(), other.clone()];
            let (report, gave_way) =
                settle_between(fs, &cfg(), RoundInputs::new(&both, &quotas, &none), memory)
                    .expect("pods round");
            assert!(
                report
                    .pods
                    .iter()
                    .all(|p| p.outcome == LimitsOutcome::Applied),
                "{report:?}"
            );
            between_writes.set(gave_way.writes);
            gave_way
        },
    };
    let mut memory = Memory::default();
    let report = run_node_round_giving_way(
        &fs,
        &cfg(),
        RoundInputs::new(&[pod(), other.clone()], &quotas, &none),
        &mut memory,
        &mut pods_rounds,
    )
    .expect("node round");
    // The first pod is not written again from the reading taken before the pods round (which
    // would take the values just written for another writer's).
    let outcomes: Vec<&str> = report.pods.iter().map(|p| p.outcome.reason()).collect();
    assert_eq!(outcomes, ["Applied", "Applied"], "{report:?}");
    assert!(between_writes.get() > 0);
    assert_eq!(
        report.writes,
        between_writes.get() + 2,
        "the pods round's writes and the two ancestors' lows, nothing written twice"
    );
    assert_eq!(read(POD, CgroupFile::DmemMax), DmemValue::Bytes(4 * G));
    assert_eq!(read(OTHER, CgroupFile::DmemMax), DmemValue::Bytes(4 * G));
    // The pod the node round's scan missed counts in its ancestors' protection.
    assert_eq!(
        read("/kubepods/besteffort", CgroupFile::DmemLow),
        DmemValue::Bytes(G),
        "each pod passes up min(usage, low)"
    );
    // What the pods round wrote stays the agent's own: the next round finds nothing to do and
    // nobody else's value.
    let remembered = memory.written.len();
    let again = run_round_with(
        &fs,
        &cfg(),
        RoundInputs::new(&[pod(), other], &quotas, &none),
        &mut memory,
    )
    .expect("next round");
    assert_eq!(again.writes, 0);
    assert!(
        again
            .pods
            .iter()
            .all(|p| p.outcome == LimitsOutcome::Applied)
    );
    assert_eq!(memory.written.len(), remembered, "nothing was forgotten");
}

/// [`node`] with half a GiB used by its pod and an empty `/kubepods/burstable` beside the pod's
/// QoS directory (the scan lists four directories).
fn node_with_a_sibling() -> SimCgroups {
    let fs = node();
    let mut k = fs.kernel().lock().expect("kernel");
    k.mkdir(SIBLING).expect("mkdir");
    k.alloc_bo(POD, R0, G / 2).expect("usage");
    drop(k);
    fs
}

const SIBLING: &str = "/kubepods/burstable";

fn low_of(fs: &SimCgroups, group: &str) -> DmemValue {
    read_values(fs, &path(group), CgroupFile::DmemLow)
        .expect("dmem.low")
        .get(R0)
        .expect("region line")
}

#[test]
fn the_ancestors_protection_sums_what_the_scan_listed_without_listing_again() {
    let fs = node_with_a_sibling();
    let report = run_round_with(
        &fs,
        &cfg(),
        RoundInputs::valid(&[pod()], &protecting_quota()),
        &mut Memory::default(),
    )
    .expect("node round");
    assert_eq!(report.pods[0].outcome, LimitsOutcome::Applied);
    assert_eq!(low_of(&fs, "/kubepods/besteffort"), DmemValue::Bytes(G / 2));
    assert_eq!(low_of(&fs, "/kubepods"), DmemValue::Bytes(G / 2));
    assert_eq!(
        fs.listings(),
        AFTER_THE_SCAN + 1,
        "each directory listed once: /, /kubepods and its two QoS directories"
    );
}

#[test]
fn a_cgroup_removed_after_the_scan_listed_it_counts_as_nothing_in_its_parents_protection() {
    let fs = node_with_a_sibling();
    let sim = &fs;
    // Right before the ancestors' protection: after the scan's four directories and the pod.
    let mut remove = OnCall {
        at: AFTER_THE_SCAN + 1 + 2 + 1,
        calls: 0,
        script: |_: &dyn CgroupFs, _: &mut Memory| {
            (sim.kernel().lock().expect("kernel"))
                .rmdir(SIBLING)
                .expect("rmdir");
            GaveWay::default()
        },
    };
    node_round_giving_way(&fs, &mut remove);
    assert!(!fs.exists(&path(SIBLING), CgroupFile::CgroupControllers));
    assert_eq!(
        low_of(&fs, "/kubepods"),
        DmemValue::Bytes(G / 2),
        "the protection went on without the removed cgroup"
    );
}

/// A node round on `fs` for [`pod`] under [`protecting_quota`] that gives way to `waiting`.
fn node_round_giving_way(fs: &SimCgroups, waiting: &mut dyn GiveWay) {
    run_node_round_giving_way(
        fs,
        &cfg(),
        RoundInputs::valid(&[pod()], &protecting_quota()),
        &mut Memory::default(),
        waiting,
    )
    .expect("node round");
}

/// A kernel that notes, at each directory listing, how many writes it had taken.
struct WritesAtListings<'a> {
    fs: &'a SimCgroups,
    at: std::sync::Mutex<Vec<usize>>,
}

impl CgroupFs for WritesAtListings<'_> {
    fn read(&self, group: &CgroupPath, file: CgroupFile) -> Result<String, CgroupError> {
        self.fs.read(group, file)
    }
    fn write(&self, group: &CgroupPath, file: CgroupFile, value: &str) -> Result<(), CgroupError> {
        self.fs.write(group, file, value)
    }
    fn children(&self, group: &CgroupPath) -> Result<Vec<String>, CgroupError> {
        self.at
            .lock()
            .expect("listings")
            .push(self.fs.writes().len());
        self.fs.children(group)
    }
    fn exists(&self, group: &CgroupPath, file: CgroupFile) -> bool {
        self.fs.exists(group, file)
    }
}

#[test]
fn a_pods_round_settles_the_pods_it_finds_before_scanning_for_those_it_does_not() {
    const NEW: &str = "/kubepods/besteffort/pod1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c";
    let fs = node();
    let quotas = [quota("4Gi")];
    let none = BadInputs::default();
    let mut memory = Memory::default();
    let known = [pod()];
    run_round_with(
        &fs,
        &cfg(),
        RoundInputs::new(&known, &quotas, &none),
        &mut memory,
    )
    .expect("node round");
    // Two pods announced; the kubelet has made the cgroup of the second only.
    let waiting = PodFacts {
        name: "train-1".into(),
        uid: "2d7c6e4b-5e3f-4a7b-8cbd-2e3f4a5b6c7d".into(),
        ..pod()
    };
    let appeared = PodFacts {
        name: "train-2".into(),
        uid: "1c6b5f3a-4d2e-4f6a-9bac-1d2e3f4a5b6c".into(),
        ..pod()
    };
    fs.kernel()
        .lock()
        .expect("kernel")
        .mkdir(NEW)
        .expect("mkdir");
    let logged = WritesAtListings {
        fs: &fs,
        at: Default::default(),
    };
    let before = fs.writes().len();
    let report = run_scoped_round(
        &logged,
        &cfg(),
        RoundInputs::new(&[waiting.clone(), appeared.clone()], &quotas, &none),
        &mut memory,
        Scope::Pods,
    )
    .expect("pods round");
    let at = logged.at.lock().expect("listings").clone();
    assert!(!at.is_empty(), "the pod without a cgroup was scanned for");
    assert!(
        at[0] > before,
        "the pod found was written to before any listing: writes at listings {at:?}, {before} before"
    );
    let max = read_values(&fs, &path(NEW), CgroupFile::DmemMax).expect("dmem.max");
    assert_eq!(max.get(R0), Some(DmemValue::Bytes(4 * G)));
    // One report in the inputs' order.
    let outcomes: Vec<(&str, &LimitsOutcome)> = (report.pods.iter())
        .map(|p| (p.facts.name.as_str(), &p.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("train-1", &LimitsOutcome::CgroupNotFound),
            ("train-2", &LimitsOutcome::Applied)
        ]
    );
    assert_eq!(report.regions.len(), 1);
}
