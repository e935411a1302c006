use super::*;
use kube_dmem_crds::PressureTier;

use crate::round::{LimitsOutcome, PodReport};

const R0: &str = "drm/0000:03:00.0/vram0";
const R1: &str = "drm/0000:0a:00.0/vram";
const G: u64 = 1 << 30;

struct Harness {
    node: SimNode,
    fs: SimCgroups,
    cfg: RoundConfig,
}

impl Harness {
    fn new(profile: Profile) -> Self {
        let regions: Vec<(String, u64)> = DEFAULT_REGIONS
            .iter()
            .map(|(n, s)| ((*n).to_owned(), *s))
            .collect();
        let node = SimNode::new(
            SimConfig {
                profile,
                ..SimConfig::default()
            },
            &regions,
        )
        .expect("sim node");
        let fs = SimCgroups::from_shared(node.kernel());
        let cfg = RoundConfig {
            scan_root: CgroupPath::root(),
            high: HighSupport::Emulated,
            thresholds: PressureThresholds::default(),
        };
        Harness { node, fs, cfg }
    }

    fn round(&mut self, inputs: &Inputs) -> RoundReport {
        one_round(&mut self.node, &self.fs, &self.cfg, inputs).expect("round")
    }
}

fn example() -> Inputs {
    Inputs::load(&[]).expect("embedded example parses")
}

fn pod<'a>(report: &'a RoundReport, name: &str) -> &'a PodReport {
    report
        .pods
        .iter()
        .find(|p| p.facts.name == name)
        .expect("pod in report")
}

fn usage(p: &PodReport, region: &str) -> u64 {
    p.regions
        .iter()
        .find(|r| r.region == region)
        .map(|r| r.reading.usage)
        .expect("region")
}

#[test]
fn the_embedded_example_shows_every_tier_it_was_written_for() {
    for profile in [Profile::Legacy, Profile::Current] {
        let mut h = Harness::new(profile);
        let report = h.round(&example());
        let tier = |name: &str| pod(&report, name).tier;
        assert_eq!(
            tier("trainer-1"),
            PressureTier::AboveHigh,
            "10Gi used, high 8Gi"
        );
        assert_eq!(
            tier("trainer-0"),
            PressureTier::Contended,
            "above its low on a full device"
        );
        assert_eq!(
            tier("notebook-bob"),
            PressureTier::AtMax,
            "asked for 5Gi under a 4Gi max"
        );
        assert_eq!(tier("notebook-ada"), PressureTier::Unprotected);
        assert_eq!(tier("batch-untracked"), PressureTier::Unprotected);
        assert_eq!(
            usage(pod(&report, "notebook-bob"), R1),
            4 * G,
            "the kernel refused the rest"
        );
        assert_eq!(usage(pod(&report, "trainer-1"), R0), 10 * G);
        // notebook-ada carries both teams' labels: the higher-priority quota governs it.
        let ada = pod(&report, "notebook-ada");
        assert_eq!(
            ada.governing.as_ref().map(|q| q.name.as_str()),
            Some("training")
        );
        assert_eq!(
            pod(&report, "batch-untracked").outcome,
            LimitsOutcome::NotGoverned
        );
        assert_eq!(pod(&report, "trainer-1").outcome, LimitsOutcome::Applied);
    }
}

#[test]
fn a_second_round_writes_nothing() {
    let mut h = Harness::new(Profile::Legacy);
    let inputs = example();
    let first = h.round(&inputs);
    assert!(first.writes > 0, "the first round applies the quotas");
    let second = h.round(&inputs);
    assert_eq!(second.writes, 0, "steady state");
    assert_eq!(render_tiers(&first), render_tiers(&second));
}

fn render_tiers(report: &RoundReport) -> Vec<(String, PressureTier)> {
    report
        .pods
        .iter()
        .map(|p| (p.facts.name.clone(), p.tier))
        .collect()
}

fn lower_training_max(inputs: &mut Inputs, max: &str) {
    let quota = inputs
        .quotas
        .iter_mut()
        .find(|q| q.metadata.name.as_deref() == Some("training"))
        .expect("quota");
    quota.spec.limits[0].max = Some(max.to_owned());
    quota.spec.limits[0].high = Some("4Gi".to_owned());
    quota.spec.limits[0].low = Some("1Gi".to_owned());
}

#[test]
fn legacy_kernels_keep_a_max_below_usage_and_the_agent_says_so() {
    let mut h = Harness::new(Profile::Legacy);
    let mut inputs = example();
    h.round(&inputs);
    lower_training_max(&mut inputs, "8Gi");
    let report = h.round(&inputs);
    let trainer = pod(&report, "trainer-1");
    assert!(
        matches!(&trainer.outcome, LimitsOutcome::MaxBelowUsage { region, .. } if region == R0),
        "got {:?}",
        trainer.outcome
    );
    // trainer-0 uses 6Gi: the new max is below nothing it holds, so it is applied.
    assert_eq!(pod(&report, "trainer-0").outcome, LimitsOutcome::Applied);
}

#[test]
fn current_kernels_apply_a_max_below_usage_without_blocking_the_agent() {
    let mut h = Harness::new(Profile::Current);
    let mut inputs = example();
    h.round(&inputs);
    lower_training_max(&mut inputs, "8Gi");
    let report = h.round(&inputs);
    let trainer = pod(&report, "trainer-1");
    assert_eq!(trainer.outcome, LimitsOutcome::Applied);
    // The agent writes dmem.max with O_NONBLOCK, so the kernel does not reclaim in its thread
    // (docs/kernel.md §3.3): usage stays above the new max and the pod can allocate nothing more.
    assert_eq!(usage(trainer, R0), 10 * G);
    assert_eq!(trainer.tier, PressureTier::AtMax);
}

#[test]
fn removing_the_quota_resets_the_limits() {
    let mut h = Harness::new(Profile::Legacy);
    let mut inputs = example();
    h.round(&inputs);
    inputs.quotas.clear();
    let report = h.round(&inputs);
    for p in &report.pods {
        assert_eq!(p.outcome, LimitsOutcome::NotGoverned, "{}", p.facts.name);
        for r in &p.regions {
            assert_eq!(r.desired.max, None);
            assert_eq!(r.desired.low, None);
        }
    }
    assert!(report.writes > 0);
}

#[test]
fn a_deleted_pod_gives_its_memory_back() {
    let mut h = Harness::new(Profile::Legacy);
    let mut inputs = example();
    h.round(&inputs);
    inputs
        .pods
        .retain(|p| p.metadata.name.as_deref() != Some("trainer-1"));
    let report = h.round(&inputs);
    assert_eq!(report.pods.len(), 4);
    assert_eq!(
        pod(&report, "trainer-0").tier,
        PressureTier::Unprotected,
        "the device is no longer full"
    );
}

#[test]
fn the_table_names_every_pod() {
    let mut h = Harness::new(Profile::Legacy);
    let text = table::render(&h.round(&example()), 1);
    for name in [
        "ml/trainer-0",
        "ml/trainer-1",
        "ml/notebook-ada",
        "ml/notebook-bob",
        "default/batch-untracked",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    assert!(
        text.contains("AboveHigh") && text.contains("AtMax"),
        "{text}"
    );
}

const HIGH_EMULATION: &str = r#"
apiVersion: kube-dmem.io/v1alpha1
kind: DmemQuota
metadata: {name: q, namespace: ml, creationTimestamp: "2026-11-01T10:00:00Z"}
spec:
  selector: {matchLabels: {team: a}}
  limits: [{region: "drm/0000:03:00.0/vram0", high: 7Gi}]
---
apiVersion: v1
kind: Pod
metadata:
  name: steady
  namespace: ml
  uid: 00000000-0000-4000-8000-00000000000b
  labels: {team: a}
  annotations: {sim.kube-dmem.io/usage: "drm/0000:03:00.0/vram0=3Gi"}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: greedy
  namespace: ml
  uid: 00000000-0000-4000-8000-00000000000a
  labels: {team: a}
  annotations: {sim.kube-dmem.io/usage: "drm/0000:03:00.0/vram0=12Gi"}
spec: {containers: [{name: c, image: x}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: batch
  namespace: ml
  uid: 00000000-0000-4000-8000-00000000000c
spec: {containers: [{name: c, image: x}]}
"#;

/// The point of emulating `high` with `dmem.low` (docs/kernel.md §7): on a full device the kernel
/// evicts the pod above its `high` before a pod within it, even when the latter's buffers are the
/// least recently used. On a legacy kernel that only holds because the agent also protects the
/// pods' ancestors: without it every effective low is 0 and the oldest buffers go first.
#[test]
fn on_a_full_device_the_pod_above_high_is_evicted_first() {
    let mut h = Harness::new(Profile::Legacy);
    let mut inputs = Inputs::default();
    inputs.add("test", HIGH_EMULATION).expect("fixture parses");
    h.round(&inputs);
    // 3Gi + 12Gi of 16Gi; "steady" allocated first, so its buffers are the least recently used.
    // Now an unprotected pod allocates 2Gi: 1Gi must be evicted from someone.
    let batch = inputs
        .pods
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some("batch"))
        .expect("pod");
    batch
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("sim.kube-dmem.io/usage".into(), format!("{R0}=2Gi"));
    let report = h.round(&inputs);
    assert_eq!(usage(pod(&report, "batch"), R0), 2 * G);
    assert_eq!(
        usage(pod(&report, "steady"), R0),
        3 * G,
        "within its high: kept"
    );
    assert_eq!(
        usage(pod(&report, "greedy"), R0),
        11 * G,
        "above its high: evicted first"
    );
    let kernel = h.node.kernel();
    let k = kernel.lock().expect("kernel");
    // Σ min(usage, high) over the two governed pods: 3Gi + 7Gi.
    let low = k
        .read_file("/kubepods.slice", "dmem.low")
        .expect("ancestor low");
    assert!(low.starts_with(&format!("{R0} {}\n", 10 * G)), "{low}");
}
