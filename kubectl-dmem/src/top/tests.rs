use std::collections::BTreeMap;

use super::*;
use crate::agents::AgentState;
use crate::fixtures::{self, AGENT_A_METRICS, AGENT_B_METRICS};
use crate::promtext::parse;
use crate::snapshot::{NodeSnapshot, PeakSource};

fn read(text: &str) -> AgentState {
    AgentState::Read {
        snapshot: NodeSnapshot::from_samples(&parse(text).expect("fixture parses")),
    }
}

fn agents() -> BTreeMap<String, AgentState> {
    BTreeMap::from([
        ("gpu-a".to_owned(), read(AGENT_A_METRICS)),
        ("gpu-b".to_owned(), read(AGENT_B_METRICS)),
    ])
}

fn names(rows: &[PodRow]) -> Vec<&str> {
    rows.iter().map(|r| r.pod.as_str()).collect()
}

#[test]
fn pod_rows_join_the_agents_numbers_with_the_pods_conditions() {
    let rows = pod_rows(&fixtures::pods(), &agents());
    // cpu-only has neither agent data nor kube-dmem conditions.
    assert_eq!(names(&rows), ["trainer-0", "notebook-7", "idle", "infer-1"]);
    let trainer = &rows[0];
    assert_eq!(trainer.node, "gpu-a");
    assert_eq!(trainer.region.as_deref(), Some("drm/0000:03:00.0/vram0"));
    assert_eq!(trainer.stats.usage, Some(13 << 30));
    assert_eq!(trainer.stats.tier, Some(PressureTier::AboveHigh));
    assert_eq!(trainer.limits.as_deref(), Some("True/Applied"));
    let infer = &rows[3];
    assert_eq!(infer.stats.peak.map(|p| p.source), Some(PeakSource::Agent));
    assert_eq!(infer.limits.as_deref(), Some("False/MaxBelowUsage"));
}

#[test]
fn a_pod_whose_agent_is_unreachable_keeps_a_row_without_numbers() {
    let mut states = agents();
    states.insert(
        "gpu-b".into(),
        AgentState::Failed {
            error: "503".into(),
        },
    );
    let rows = pod_rows(&fixtures::pods(), &states);
    let infer = rows.iter().find(|r| r.pod == "infer-1").expect("row kept");
    assert_eq!(infer.region, None);
    assert_eq!(infer.stats, PodRegionStats::default());
    assert_eq!(infer.limits.as_deref(), Some("False/MaxBelowUsage"));
}

#[test]
fn sorting_puts_the_biggest_or_most_pressed_first_and_unknowns_last() {
    let mut states = agents();
    states.insert("gpu-b".into(), AgentState::NoAgent);
    let mut rows = pod_rows(&fixtures::pods(), &states);
    sort_pods(&mut rows, SortBy::Name);
    assert_eq!(names(&rows), ["idle", "infer-1", "notebook-7", "trainer-0"]);
    sort_pods(&mut rows, SortBy::Usage);
    assert_eq!(names(&rows), ["trainer-0", "notebook-7", "idle", "infer-1"]);
    sort_pods(&mut rows, SortBy::Peak);
    assert_eq!(names(&rows), ["trainer-0", "notebook-7", "idle", "infer-1"]);
    let mut rows = pod_rows(&fixtures::pods(), &agents());
    sort_pods(&mut rows, SortBy::Pressure);
    assert_eq!(names(&rows), ["infer-1", "trainer-0", "notebook-7", "idle"]);
}

#[test]
fn node_rows_sum_regions_and_units() {
    let mut pods = fixtures::pods();
    // A finished pod's units are free again.
    let mut done = fixtures::pod("ml", "done", "gpu-b", serde_json::json!({}), 4, &[]);
    if let Some(status) = done.status.as_mut() {
        status.phase = Some("Succeeded".into());
    }
    pods.push(done);
    let rows = node_rows(&fixtures::nodes(), &pods, &agents());
    // cpu-1 has no agent, no regions and no units: not shown.
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!((a.node.as_str(), a.agent), ("gpu-a", "ok"));
    assert_eq!(a.capacity, Some(24 << 30));
    assert_eq!(a.used, Some(15 << 30));
    assert_eq!((a.units_allocated, a.units_allocatable), (0, Some(24)));
    let b = &rows[1];
    assert_eq!((b.units_allocated, b.units_allocatable), (8, Some(16)));

    // Without its agent, a node falls back to its regions annotation, and usage is unknown.
    let mut states = agents();
    states.insert(
        "gpu-a".into(),
        AgentState::Failed {
            error: "timeout".into(),
        },
    );
    let mut rows = node_rows(&fixtures::nodes(), &pods, &states);
    assert_eq!(rows[0].agent, "unreachable");
    assert_eq!(rows[0].agent_error.as_deref(), Some("timeout"));
    assert_eq!(rows[0].regions, ["drm/0000:03:00.0/vram0"]);
    assert_eq!((rows[0].capacity, rows[0].used), (Some(24 << 30), None));
    sort_nodes(&mut rows, SortBy::Usage);
    assert_eq!(rows[0].node, "gpu-b");
}

#[test]
fn tables_render_like_kubectl() {
    let mut rows = pod_rows(&fixtures::pods(), &agents());
    sort_pods(&mut rows, SortBy::Usage);
    let got = pods_table(&rows).render();
    println!("{got}");
    assert_eq!(got, POD_TABLE);
    let mut rows = node_rows(&fixtures::nodes(), &fixtures::pods(), &agents());
    sort_nodes(&mut rows, SortBy::Pressure);
    let got = nodes_table(&rows).render();
    println!("{got}");
    assert_eq!(got, NODE_TABLE);
}

const POD_TABLE: &str = "\
NAMESPACE   POD          REGION                   USAGE   PEAK            MAX    HIGH   LOW    TIER        LIMITS
ml          trainer-0    drm/0000:03:00.0/vram0   13Gi    14Gi (kernel)   16Gi   12Gi   12Gi   AboveHigh   True/Applied
ml          infer-1      drm/0000:c1:00.0/vram0   8Gi     8Gi (agent)     8Gi    -      -      AtMax       False/MaxBelowUsage
ml          notebook-7   drm/0000:03:00.0/vram0   1Gi     2Gi (kernel)    4Gi    -      2Gi    Protected   True/Applied
default     idle         drm/0000:03:00.0/vram0   0       0 (kernel)      -      -      0      Idle        True/NotGoverned
";

const NODE_TABLE: &str = "\
NODE    AGENT   REGIONS   CAPACITY   USED   USED%   VRAM-UNITS
gpu-a   ok      1         24Gi       15Gi   62%     0/24
gpu-b   ok      1         16Gi       8Gi    50%     8/16
";
