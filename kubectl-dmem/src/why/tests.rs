use std::collections::BTreeMap;

use super::*;
use crate::fixtures::{self, AGENT_A_METRICS};
use crate::promtext::parse;
use crate::snapshot::NodeSnapshot;

fn now() -> Timestamp {
    "2026-11-30T18:30:00Z".parse().expect("timestamp")
}

fn agent_a() -> AgentState {
    AgentState::Read {
        snapshot: NodeSnapshot::from_samples(&parse(AGENT_A_METRICS).expect("parses")),
    }
}

fn explain_pod(name: &str, agent: &AgentState) -> Why {
    let pods = fixtures::pods();
    let pod = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .expect("fixture pod");
    let nodes = fixtures::nodes();
    let quotas = fixtures::quotas();
    let events = fixtures::events();
    explain(WhyInput {
        pod,
        quotas: &quotas,
        node: nodes.first(),
        agent,
        events: &events,
        now: now(),
    })
}

fn outcomes(why: &Why) -> Vec<(&str, &str)> {
    why.quotas
        .iter()
        .map(|q| (q.name.as_str(), q.outcome))
        .collect()
}

#[test]
fn the_governing_quota_is_the_one_the_shared_rules_pick_and_losers_say_why() {
    let why = explain_pod("trainer-0", &agent_a());
    assert_eq!(why.governing.as_deref(), Some("training"));
    assert_eq!(
        outcomes(&why),
        [
            ("training", "Governs"),
            ("batch", "Outranked"),
            ("everyone", "Outranked"),
            ("broken", "Invalid"),
        ]
    );
    assert_eq!(
        why.quotas[1].detail,
        "lost to training: same priority 10, created earlier (2026-11-20T00:00:00Z < 2026-11-26T00:00:00Z)"
    );
    assert_eq!(why.quotas[2].detail, "lost to training: priority 10 > 0");
    assert!(
        why.quotas[3].detail.starts_with("governs nothing new: "),
        "{:?}",
        why.quotas[3]
    );
    assert_eq!(why.quotas[0].age.as_deref(), Some("10d"));
    // The limits follow from the governing quota on the node's regions.
    assert_eq!(
        why.effective_limits,
        BTreeMap::from([(
            "drm/0000:03:00.0/vram0".to_owned(),
            LimitsView {
                max: Some(16 << 30),
                high: Some(12 << 30),
                low: None,
                min: None
            }
        )])
    );
    let cgroup = why.cgroup.as_ref().expect("agent read");
    assert_eq!(cgroup["drm/0000:03:00.0/vram0"].usage, Some(13 << 30));
    assert_eq!(why.conditions.len(), 3);
    // Newest event first.
    assert_eq!(why.events[0].reason, "AboveHigh");
    assert_eq!(why.events[0].age.as_deref(), Some("30m"));
    assert_eq!(why.events[1].from, "kube-dmem-agent");
}

#[test]
fn a_pod_only_the_catch_all_selects_and_a_pod_no_quota_selects() {
    let why = explain_pod("notebook-7", &agent_a());
    assert_eq!(why.governing.as_deref(), Some("everyone"));
    assert_eq!(
        why.decision,
        "everyone governs: the only valid quota selecting the pod"
    );
    assert_eq!(
        outcomes(&why)[..3],
        [
            ("everyone", "Governs"),
            ("training", "NotSelecting"),
            ("batch", "NotSelecting"),
        ]
    );
    let why = explain_pod("idle", &agent_a());
    assert_eq!(why.governing, None);
    assert!(why.quotas.is_empty(), "no quota in default");
    assert!(why.effective_limits.is_empty());
    assert!(
        why.decision.starts_with("no valid DmemQuota"),
        "{}",
        why.decision
    );
}

#[test]
fn an_unreachable_agent_and_vram_units_are_noted() {
    let failed = AgentState::Failed {
        error: "503 Service Unavailable".into(),
    };
    let why = explain_pod("infer-1", &failed);
    assert_eq!(why.cgroup, None);
    assert_eq!(why.vram_units, 8);
    assert_eq!(why.agent, "unreachable");
    assert!(
        why.notes
            .iter()
            .any(|n| n.contains("503 Service Unavailable")),
        "{:?}",
        why.notes
    );
    assert!(
        why.notes
            .iter()
            .any(|n| n.contains("holds 8 kube-dmem.io/vram units"))
    );
    // Without the agent, the regions come from the node annotation (here gpu-a's, as passed).
    assert!(why.effective_limits.contains_key("drm/0000:03:00.0/vram0"));
}

#[test]
fn the_text_form_reads_like_describe() {
    let got = crate::whytext::render(&explain_pod("trainer-0", &agent_a()));
    println!("{got}");
    assert_eq!(got, WHY_TEXT);
}

#[test]
fn json_and_yaml_carry_the_same_explanation() {
    let why = explain_pod("trainer-0", &agent_a());
    let json = crate::render::encode(&why, crate::render::Format::Json).expect("json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    assert_eq!(value["namespace"], "ml");
    assert_eq!(value["governing"], "training");
    assert_eq!(
        value["cgroup"]["drm/0000:03:00.0/vram0"]["tier"],
        "AboveHigh"
    );
    assert_eq!(
        value["cgroup"]["drm/0000:03:00.0/vram0"]["peak"]["source"],
        "kernel"
    );
    let yaml = crate::render::encode(&why, crate::render::Format::Yaml).expect("yaml");
    assert!(yaml.contains("governing: training"), "{yaml}");
}

const WHY_TEXT: &str = "\
Pod:       ml/trainer-0 (node gpu-a, 0 kube-dmem.io/vram units)
Decision:  training governs: ranks first of 3 quotas selecting the pod (priority, then age, then name)

Quotas in ml:
  QUOTA      PRIORITY   AGE   OUTCOME     DETAIL
  training   10         10d   Governs     ranks first of 3 quotas selecting the pod (priority, then age, then name)
  batch      10         4d    Outranked   lost to training: same priority 10, created earlier (2026-11-20T00:00:00Z < 2026-11-26T00:00:00Z)
  everyone   0          29d   Outranked   lost to training: priority 10 > 0
  broken     -          -     Invalid     governs nothing new: spec.limits[0].low: 2Gi must not be greater than high (1Gi)

Effective limits (the governing quota on the node's regions):
  REGION                   MAX    HIGH   LOW   MIN
  drm/0000:03:00.0/vram0   16Gi   12Gi   -     -

In the pod's cgroup (node agent: ok):
  REGION                   USAGE   PEAK            MAX    HIGH   LOW    MIN   TIER
  drm/0000:03:00.0/vram0   13Gi    14Gi (kernel)   16Gi   12Gi   12Gi   -     AboveHigh

Conditions:
  TYPE                             STATUS   REASON      MESSAGE
  kube-dmem.io/VRAMPressure        True     AboveHigh   drm/0000:03:00.0/vram0: usage 13Gi above high 12Gi
  kube-dmem.io/VRAMAboveHigh       True     AboveHigh   drm/0000:03:00.0/vram0
  kube-dmem.io/VRAMLimitsApplied   True     Applied     limits applied

Events:
  AGE   TYPE      REASON      FROM              MESSAGE
  30m   Warning   AboveHigh   kube-dmem-agent   drm/0000:03:00.0/vram0: usage 13Gi above high 12Gi
  90m   Normal    Applied     kube-dmem-agent   limits applied

Notes:
  - an invalid quota governs nothing new, but where it governed a pod before, the agent keeps its last valid spec in force (reason QuotaInvalid on the pod)
";

#[test]
fn the_answer_matches_the_operators_resolution_for_every_pod() {
    use kube_dmem_crds::select::{PodFacts, quota_facts, resolve};
    let quotas = fixtures::quotas();
    let (valid, _) = quota_facts(quotas.iter());
    let pods = fixtures::pods();
    let facts: Vec<PodFacts> = pods
        .iter()
        .map(|p| PodFacts::from_pod(p, Vec::new()))
        .collect();
    let resolution = resolve(&valid, &facts);
    for (pod, facts) in pods.iter().zip(&facts) {
        let why = explain(WhyInput {
            pod,
            quotas: &quotas,
            node: None,
            agent: &AgentState::NoAgent,
            events: &[],
            now: now(),
        });
        assert_eq!(
            why.governing,
            resolution.governing.get(&facts.uid).map(|q| q.name.clone()),
            "{}",
            facts.name
        );
        // Every quota listed as outranked is one the operator reports as having lost.
        for line in why.quotas.iter().filter(|l| l.outcome == "Outranked") {
            let lost = resolution
                .lost_to
                .iter()
                .any(|(loser, _)| loser.name == line.name);
            assert!(
                lost,
                "{} outranked for {} but not in lost_to",
                line.name, facts.name
            );
        }
    }
}
