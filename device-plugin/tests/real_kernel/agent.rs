//! The node agent's own round on the real kernel: `round::run_round_with` (the cluster agent's
//! entry point, with what earlier rounds wrote carried over) through the vectors' `Side`s, so each
//! scenario runs on the kernel (`SysfsCgroups` on `/sys/fs/cgroup`) and on the simulator and the
//! two records must agree like any vector's. Pod cgroups are laid out as a kubelet does (both
//! cgroup drivers; a container cgroup below each pod holds its task), the kubelet's cgroups start
//! without dmem (the round enables it), and pods and quotas are the round's own inputs.
//!
//! What the kernel must show, whatever the simulator says, is checked against [`EXPECTED`]:
//! limits written and read back, `high` (emulated through `low`) making the driver evict the pod
//! above its `high` first, whether the agent's ancestor protection is needed and sufficient for
//! each place an evicting allocation can come from, `dmem.max` below usage on 7.2 and 7.3.

use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::limits::HighSupport;
use kube_dmem_crds::select::{PodFacts, QuotaFacts, quota_facts};
use kube_dmem_device_plugin::decide::pressure::PressureThresholds;
use kube_dmem_device_plugin::round::{Memory, RoundConfig, RoundInputs, run_round_with};

use super::{Log, R0, R1, Side, alloc, cg, read, show, wblock, write};

/// Pod UIDs (kubelet form) and their names in the records.
const UID_A: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const UID_B: &str = "1b2c3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e";
const UID_C: &str = "2c3d4e5f-6a7b-4c8d-ae9f-1a2b3c4d5e6f";

pub fn pod_facts(name: &str, uid: &str, app: &str) -> PodFacts {
    PodFacts {
        namespace: "ml".to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        grants: Vec::new(),
    }
}

/// The quota `ml/train`, selecting `app=train`, with `limits` as JSON.
fn quota(limits: serde_json::Value) -> QuotaFacts {
    let q: DmemQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": "train", "namespace": "ml", "uid": "quid-train", "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "train"}}, "limits": limits}
    }))
    .expect("quota");
    let (mut valid, invalid) = quota_facts([q].iter());
    assert!(invalid.is_empty(), "test quota invalid: {invalid:?}");
    valid.remove(0)
}

/// The quota `bench/TEAM`, selecting `team=TEAM`, with `limits` as JSON.
pub fn quota_team(team: &str, limits: serde_json::Value) -> QuotaFacts {
    let q: DmemQuota = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-dmem.io/v1alpha1", "kind": "DmemQuota",
        "metadata": {"name": team, "namespace": "ml", "uid": format!("quid-{team}"), "generation": 1},
        "spec": {"selector": {"matchLabels": {"team": team}}, "limits": limits}
    }))
    .expect("quota");
    let (mut valid, invalid) = quota_facts([q].iter());
    assert!(invalid.is_empty(), "test quota invalid: {invalid:?}");
    valid.remove(0)
}

pub fn cfg() -> RoundConfig {
    RoundConfig {
        scan_root: kube_dmem_device_plugin::cgroup::CgroupPath::root(),
        high: HighSupport::Emulated,
        thresholds: PressureThresholds::default(),
    }
}

/// The agent across rounds: what it wrote is remembered, as in the cluster agent.
#[derive(Default)]
struct Agent {
    memory: Memory,
    rounds: usize,
}

impl Agent {
    /// One round; records the writes it made and each pod's outcome.
    fn round(&mut self, s: &mut dyn Side, log: &mut Log, pods: &[PodFacts], quotas: &[QuotaFacts]) {
        self.rounds += 1;
        let n = self.rounds;
        let result = run_round_with(
            s.fs(),
            &cfg(),
            RoundInputs::valid(pods, quotas),
            &mut self.memory,
        );
        match result {
            Ok(report) => {
                log.note(format!("round {n}: writes"), report.writes.to_string());
                for p in &report.pods {
                    log.note(
                        format!("round {n}: outcome of {}", p.facts.name),
                        format!("{:?}", p.outcome),
                    );
                }
            }
            Err(e) => log.note(format!("round {n}"), format!("failed: {e}")),
        }
    }
}

/// A kubelet-made pod cgroup `pod` with a container cgroup `ctr` holding a task; `dirs` (its
/// ancestors, top-down) are created first when missing. Returns the container cgroup.
fn kubelet_pod(s: &mut dyn Side, log: &mut Log, dirs: &[&str], pod: &str) -> String {
    for d in dirs.iter().chain([&pod]) {
        if !s.fs().exists(
            &cg(d),
            kube_dmem_device_plugin::cgroup::CgroupFile::CgroupControllers,
        ) {
            log.note(format!("mkdir {d}"), show(s.mkdir(d)));
        }
    }
    let ctr = format!("{pod}/ctr");
    log.note(format!("mkdir {ctr}"), show(s.mkdir(&ctr)));
    s.set_tasks(&ctr, true);
    ctr
}

/// Who lost buffers: `#ID OWNER-CGROUP` of each evicted buffer, in id order.
fn evicted(s: &mut dyn Side, log: &mut Log, step: &str) {
    let text: Vec<String> = s
        .buffers()
        .into_iter()
        .filter(|b| !b.resident)
        .map(|b| format!("#{} {}", b.id, b.charged))
        .collect();
    log.note(format!("evicted {step}"), text.join(", "));
}

const BE: &str = "/kubepods/besteffort";
const BU: &str = "/kubepods/burstable";

/// A1: limits on a systemd-driver node, two regions. The kubelet's cgroups have no dmem files
/// until the round enables dmem (at the root too, when the root shows no `dmem.capacity`); the
/// limits are read back; the kernel enforces them; the second round after a change of usage
/// writes only the ancestors' protection, the third nothing; a `dmem.max` below usage.
pub fn a1_limits(s: &mut dyn Side, log: &mut Log) {
    let slice = "/kubepods.slice";
    let be = "/kubepods.slice/kubepods-besteffort.slice";
    let bu = "/kubepods.slice/kubepods-burstable.slice";
    let pod_a = format!(
        "{be}/kubepods-besteffort-pod{}.slice",
        UID_A.replace('-', "_")
    );
    let pod_b = format!(
        "{bu}/kubepods-burstable-pod{}.slice",
        UID_B.replace('-', "_")
    );
    log.note(
        "root shows dmem.capacity before the round",
        format!(
            "{}",
            s.fs().exists(
                &cg("/"),
                kube_dmem_device_plugin::cgroup::CgroupFile::DmemCapacity
            )
        ),
    );
    let ctr_a = kubelet_pod(s, log, &[slice, be], &pod_a);
    let ctr_b = kubelet_pod(s, log, &[bu], &pod_b);
    read(s, log, &pod_a, "dmem.max");
    let pods = [
        pod_facts("a", UID_A, "train"),
        pod_facts("b", UID_B, "infer"),
    ];
    let q = quota(serde_json::json!([
        {"region": R0, "max": "2Gi", "high": "1Gi", "min": "256Mi"},
        {"region": R1, "max": "4Gi"}
    ]));
    let mut agent = Agent::default();
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    let shown = s.fs().exists(
        &cg("/"),
        kube_dmem_device_plugin::cgroup::CgroupFile::DmemCapacity,
    );
    log.note("root shows dmem.capacity after round 1", shown.to_string());
    for g in ["/", slice, be, bu] {
        read(s, log, g, "cgroup.subtree_control");
    }
    read(s, log, "/", "dmem.capacity");
    for f in ["dmem.max", "dmem.low", "dmem.min"] {
        read(s, log, &pod_a, f);
    }
    read(s, log, &pod_b, "dmem.max");
    read(s, log, &ctr_a, "dmem.max");
    // The kernel enforces what the agent wrote (charged to the pod: the container has no css).
    // A buffer larger than max fails with EAGAIN; one that would cross max makes the driver evict
    // the pod's own buffers first (its limit pool is its own), so usage never passes max.
    alloc(s, log, &ctr_a, R0, "+3G");
    alloc(s, log, &ctr_a, R0, "+2G");
    alloc(s, log, &ctr_a, R1, "+4G");
    alloc(s, log, &ctr_a, R1, "+1");
    alloc(s, log, &ctr_b, R0, "+3G");
    read(s, log, &pod_a, "dmem.current");
    evicted(s, log, "after the pods allocate");
    // Usage changed: the ancestors' protection follows (min(usage, low) of a is 1G), then steady.
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    for g in [slice, be] {
        read(s, log, g, "dmem.low");
    }
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    // The quota's max drops below a's usage (2G): 7.2 keeps the old max (MaxBelowUsage); 7.3
    // applies it at once, and with O_NONBLOCK (the agent's writes) runs no reclaim.
    let lower = quota(serde_json::json!([
        {"region": R0, "max": "1Gi", "high": "1Gi", "min": "256Mi"},
        {"region": R1, "max": "4Gi"}
    ]));
    agent.round(s, log, &pods, std::slice::from_ref(&lower));
    read(s, log, &pod_a, "dmem.max");
    read(s, log, &pod_a, "dmem.current");
    evicted(s, log, "after the agent lowers max below usage");
    // a's next allocation: on 7.3 its limit pool is its own, so the driver evicts a's own buffers.
    alloc(s, log, &ctr_a, R0, "+512M");
    read(s, log, &pod_a, "dmem.current");
    evicted(s, log, "after a allocates above its max");
}

/// A1b: `dmem.max` below usage with a blocking write, as a person or another tool would do it
/// (not the agent): 7.3 calls the driver's reclaim op until usage fits; 7.2 refuses nothing and
/// keeps the old max.
pub fn a1b_blocking_max(s: &mut dyn Side, log: &mut Log) {
    let pod = format!("{BE}/pod{UID_A}");
    let ctr = kubelet_pod(s, log, &["/kubepods", BE], &pod);
    let pods = [pod_facts("a", UID_A, "train")];
    let q = quota(serde_json::json!([{"region": R0, "max": "4Gi"}]));
    let mut agent = Agent::default();
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    for _ in 0..3 {
        alloc(s, log, &ctr, R0, "+1G");
    }
    wblock(s, log, &pod, "dmem.max", &format!("{R0} 1G"));
    read(s, log, &pod, "dmem.max");
    read(s, log, &pod, "dmem.current");
    evicted(s, log, "after a blocking max of 1G");
    // The agent's next round sees a stricter max than its own and keeps it.
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    read(s, log, &pod, "dmem.max");
}

/// Where the allocation that needs eviction comes from.
#[derive(Clone, Copy)]
enum Evictor {
    /// A best-effort pod, sibling of the protected pods.
    SameQos,
    /// A burstable pod: the common ancestor with the victims is `/kubepods`.
    OtherQos,
    /// A system service outside kubepods: the common ancestor is the root.
    System,
}

/// A2: `high` emulated through `low` on a full device (one 8G region, cgroupfs driver). Pods a and
/// b (quota: high 2Gi) use 5G and 2G, b's buffers the oldest; an unprotected allocation of 2G from
/// `evictor` needs 1G evicted. With the agent's protection the driver should evict a's oldest
/// buffer (a is above its high, b is not); LRU alone would take b's. `ancestors`: keep the
/// ancestors' lows the agent wrote (false: set them to 0 first, as an agent without ancestor
/// protection would leave them).
fn high_eviction(s: &mut dyn Side, log: &mut Log, evictor: Evictor, ancestors: bool) {
    let (pod_a, pod_b) = (format!("{BE}/pod{UID_A}"), format!("{BE}/pod{UID_B}"));
    let ctr_b = kubelet_pod(s, log, &["/kubepods", BE], &pod_b);
    let ctr_a = kubelet_pod(s, log, &[], &pod_a);
    let mut pods = vec![
        pod_facts("a", UID_A, "train"),
        pod_facts("b", UID_B, "train"),
    ];
    let evictor_ctr = match evictor {
        Evictor::SameQos => kubelet_pod(s, log, &[], &format!("{BE}/pod{UID_C}")),
        Evictor::OtherQos => kubelet_pod(s, log, &[BU], &format!("{BU}/pod{UID_C}")),
        Evictor::System => {
            log.note("mkdir /system.slice", show(s.mkdir("/system.slice")));
            kubelet_pod(s, log, &[], "/system.slice/gpu.service")
        }
    };
    if !matches!(evictor, Evictor::System) {
        pods.push(pod_facts("c", UID_C, "batch"));
    }
    let q = quota(serde_json::json!([{"region": R0, "high": "2Gi"}]));
    let mut agent = Agent::default();
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    for _ in 0..2 {
        alloc(s, log, &ctr_b, R0, "+1G");
    }
    for _ in 0..5 {
        alloc(s, log, &ctr_a, R0, "+1G");
    }
    // The round after the pods allocated: ancestors' lows follow usage.
    agent.round(s, log, &pods, std::slice::from_ref(&q));
    for g in [&pod_a, &pod_b] {
        read(s, log, g, "dmem.low");
    }
    for g in ["/kubepods", BE, BU] {
        if s.fs()
            .exists(&cg(g), kube_dmem_device_plugin::cgroup::CgroupFile::DmemLow)
        {
            read(s, log, g, "dmem.low");
        }
    }
    if !ancestors {
        for g in ["/kubepods", BE] {
            write(s, log, g, "dmem.low", &format!("{R0} 0"));
        }
    }
    alloc(s, log, &evictor_ctr, R0, "+2G");
    evicted(s, log, "after the evictor allocates 2G");
}

pub fn a2_same_qos(s: &mut dyn Side, log: &mut Log) {
    high_eviction(s, log, Evictor::SameQos, true);
}
pub fn a2_same_qos_no_ancestors(s: &mut dyn Side, log: &mut Log) {
    high_eviction(s, log, Evictor::SameQos, false);
}
pub fn a3_other_qos(s: &mut dyn Side, log: &mut Log) {
    high_eviction(s, log, Evictor::OtherQos, true);
}
pub fn a3_other_qos_no_ancestors(s: &mut dyn Side, log: &mut Log) {
    high_eviction(s, log, Evictor::OtherQos, false);
}
pub fn a4_system(s: &mut dyn Side, log: &mut Log) {
    high_eviction(s, log, Evictor::System, true);
}
pub fn a4_system_no_ancestors(s: &mut dyn Side, log: &mut Log) {
    high_eviction(s, log, Evictor::System, false);
}

/// What the kernel must show: `(series or "*", vector, step label, value as recorded)`. In the
/// eviction scenarios b's buffers are #1 and #2, a's #3 to #7: `#3` evicted means the pod above
/// its `high` paid, `#1` that LRU order won and the protected pod paid.
pub fn expected() -> Vec<(&'static str, &'static str, String, String)> {
    let slice_a = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID_A.replace('-', "_")
    );
    let ctr_a = format!("{slice_a}/ctr");
    let be_a = format!("{BE}/pod{UID_A}");
    let be_b = format!("{BE}/pod{UID_B}");
    let victim_a = format!("#3 {be_a}");
    let victim_b = format!("#1 {be_b}");
    let q = |t: &str| format!("{t:?}");
    let mut out = vec![
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.max"),
            "ENOENT".to_owned(),
        ),
        (
            "*",
            "A1",
            "root shows dmem.capacity after round 1".to_owned(),
            "true".to_owned(),
        ),
        (
            "*",
            "A1",
            "round 1: outcome of a".to_owned(),
            "Applied".to_owned(),
        ),
        (
            "*",
            "A1",
            "round 1: outcome of b".to_owned(),
            "NotGoverned".to_owned(),
        ),
        (
            "*",
            "A1",
            "read /cgroup.subtree_control".to_owned(),
            q("dmem\n"),
        ),
        (
            "*",
            "A1",
            "read /kubepods.slice/cgroup.subtree_control".to_owned(),
            q("dmem\n"),
        ),
        (
            "*",
            "A1",
            "read /kubepods.slice/kubepods-besteffort.slice/cgroup.subtree_control".to_owned(),
            q("dmem\n"),
        ),
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.max #2"),
            q(&format!("{R0} 2147483648\n{R1} 4294967296\n")),
        ),
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.low"),
            q(&format!("{R0} 1073741824\n{R1} 0\n")),
        ),
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.min"),
            q(&format!("{R0} 268435456\n{R1} 0\n")),
        ),
        (
            "*",
            "A1",
            format!("alloc in {ctr_a}: {R0} +3G"),
            "EAGAIN".to_owned(),
        ),
        (
            "*",
            "A1",
            format!("alloc in {ctr_a}: {R0} +2G"),
            "Ok(())".to_owned(),
        ),
        (
            "*",
            "A1",
            format!("alloc in {ctr_a}: {R1} +4G"),
            "Ok(())".to_owned(),
        ),
        (
            "*",
            "A1",
            format!("alloc in {ctr_a}: {R1} +1"),
            "Ok(())".to_owned(),
        ),
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.current"),
            q(&format!("{R0} 2147483648\n{R1} 1\n")),
        ),
        (
            "*",
            "A1",
            "evicted after the pods allocate".to_owned(),
            format!("#2 {slice_a}"),
        ),
        ("*", "A1", "round 3: writes".to_owned(), "0".to_owned()),
        (
            "*",
            "A1",
            "evicted after the agent lowers max below usage".to_owned(),
            format!("#2 {slice_a}"),
        ),
        (
            "7.2",
            "A1",
            "round 4: outcome of a".to_owned(),
            format!(
                "MaxBelowUsage {{ region: {R0:?}, wanted: Bytes(1073741824), actual: Bytes(2147483648) }}"
            ),
        ),
        (
            "7.2",
            "A1",
            format!("read {slice_a}/dmem.max #3"),
            q(&format!("{R0} 2147483648\n{R1} 4294967296\n")),
        ),
        (
            "7.3",
            "A1",
            "round 4: outcome of a".to_owned(),
            "Applied".to_owned(),
        ),
        (
            "7.3",
            "A1",
            format!("read {slice_a}/dmem.max #3"),
            q(&format!("{R0} 1073741824\n{R1} 4294967296\n")),
        ),
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.current #2"),
            q(&format!("{R0} 2147483648\n{R1} 1\n")),
        ),
        // a's next allocation crosses its max: the driver evicts a's own 2G buffer (#1).
        (
            "*",
            "A1",
            "evicted after a allocates above its max".to_owned(),
            format!("#1 {slice_a}, #2 {slice_a}"),
        ),
        (
            "*",
            "A1",
            format!("read {slice_a}/dmem.current #3"),
            q(&format!("{R0} 536870912\n{R1} 1\n")),
        ),
        // 7.3: a blocking write runs the driver's reclaim op (oldest first) until usage fits.
        (
            "7.3",
            "A1b",
            "evicted after a blocking max of 1G".to_owned(),
            format!("#1 {be_a}, #2 {be_a}"),
        ),
        (
            "7.3",
            "A1b",
            format!("read {be_a}/dmem.current"),
            q(&format!("{R0} 1073741824\n{R1} 0\n")),
        ),
        (
            "7.2",
            "A1b",
            "evicted after a blocking max of 1G".to_owned(),
            String::new(),
        ),
        // 7.2 keeps the old max when the new one is below usage; the write still succeeds.
        (
            "7.2",
            "A1b",
            format!("blocking write {be_a}/dmem.max \"{R0} 1G\""),
            "Ok(25)".to_owned(),
        ),
        (
            "7.2",
            "A1b",
            format!("read {be_a}/dmem.max"),
            q(&format!("{R0} 4294967296\n{R1} max\n")),
        ),
        (
            "7.3",
            "A1b",
            format!("read {be_a}/dmem.max"),
            q(&format!("{R0} 1073741824\n{R1} max\n")),
        ),
    ];
    // Which buffer pays for the evictor's 2G. Protected (the agent's ancestor lows in place):
    for (series, vector, victim) in [
        ("*", "A2", &victim_a),
        ("*", "A3", &victim_a),
        ("7.2", "A4", &victim_a),
        // 7.3: the common ancestor of a system service and a pod is the root, and
        // dmem_cgroup_state_evict_valuable() returns true at once for a root limit pool: no
        // protection holds against an allocation from outside kubepods.
        ("7.3", "A4", &victim_b),
        // Without the ancestors' lows: on 7.2 (protection computed from the root) b pays;
        // on 7.3 a sibling's allocation is judged from the QoS cgroup down, where b's own low is
        // enough, but another QoS class's or the system's is judged from higher up.
        ("7.2", "A2-noanc", &victim_b),
        ("7.3", "A2-noanc", &victim_a),
        ("*", "A3-noanc", &victim_b),
        ("*", "A4-noanc", &victim_b),
    ] {
        out.push((
            series,
            vector,
            "evicted after the evictor allocates 2G".to_owned(),
            victim.clone(),
        ));
    }
    out
}
