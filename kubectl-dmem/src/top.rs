//! CORE: `kubectl dmem top`: joins the pods and nodes from the API with what each node's agent
//! reported, sorts, and renders.
//!
//! A pod row is one pod in one region: usage, peak and its source, `max`/`high`/`low` in force,
//! the pressure tier (from the agent's metrics) and the `kube-dmem.io/VRAMLimitsApplied` reason
//! (from the pod). Pods the agent does not report but that carry kube-dmem conditions (their agent
//! is unreachable, or has not seen them yet) get one row without numbers, so they do not vanish.
//! A node row sums a node's regions and its `kube-dmem.io/vram` units.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube_dmem_crds::{PressureTier, VRAM_RESOURCE};
use serde::Serialize;

use crate::agents::AgentState;
use crate::podinfo::{condition, is_active, vram_units};
use crate::render::{Table, bytes, opt_bytes, percent};
use crate::snapshot::{Peak, PodKey, PodRegionStats};

/// `--sort-by`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Namespace, then name (the default).
    #[default]
    Name,
    /// Highest usage first.
    Usage,
    /// Highest peak first.
    Peak,
    /// Most severe pressure tier first (nodes: fullest first).
    Pressure,
}

/// One pod in one region.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRow {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Node the pod runs on.
    pub node: String,
    /// Region; `None` when the agent reported nothing for the pod.
    pub region: Option<String>,
    /// What the agent reported for the pod in this region.
    #[serde(flatten)]
    pub stats: PodRegionStats,
    /// The `kube-dmem.io/VRAMLimitsApplied` condition as `Status/Reason`, e.g. `True/Applied`.
    pub limits: Option<String>,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// Node name.
    pub node: String,
    /// `ok`, `unreachable` or `none`.
    pub agent: &'static str,
    /// The agent's error, when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// Region names (from the agent, else from the node's `kube-dmem.io/regions` annotation).
    pub regions: Vec<String>,
    /// Sum of the regions' capacities.
    pub capacity: Option<u64>,
    /// Sum of the regions' usage (from the agent only).
    pub used: Option<u64>,
    /// `kube-dmem.io/vram` units the node can allocate.
    pub units_allocatable: Option<u64>,
    /// Units held by the node's active pods.
    pub units_allocated: u64,
}

/// The pod rows for `pods` (already filtered to the namespaces asked for), given each node's agent.
pub fn pod_rows(pods: &[Pod], agents: &BTreeMap<String, AgentState>) -> Vec<PodRow> {
    let mut rows = Vec::new();
    for pod in pods.iter().filter(|p| is_active(p)) {
        let key = PodKey {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let limits = condition(pod, kube_dmem_crds::POD_CONDITION_VRAM_LIMITS_APPLIED)
            .map(|c| format!("{}/{}", c.status, c.reason));
        let reported = agents
            .get(&node)
            .and_then(AgentState::snapshot)
            .and_then(|s| s.pods.get(&key));
        let row = |region: Option<String>, stats: PodRegionStats| PodRow {
            namespace: key.namespace.clone(),
            pod: key.name.clone(),
            node: node.clone(),
            region,
            stats,
            limits: limits.clone(),
        };
        match reported {
            Some(regions) => {
                for (region, stats) in regions {
                    rows.push(row(Some(region.clone()), stats.clone()));
                }
            }
            None if limits.is_some() => rows.push(row(None, PodRegionStats::default())),
            None => {}
        }
    }
    rows
}

/// Sorts pod rows; ties (and [`SortBy::Name`]) go by namespace, pod and region.
pub fn sort_pods(rows: &mut [PodRow], by: SortBy) {
    let name = |a: &PodRow, b: &PodRow| {
        (&a.namespace, &a.pod, &a.region).cmp(&(&b.namespace, &b.pod, &b.region))
    };
    // Unknown values sort last in every order.
    let desc = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let tier = |t: Option<PressureTier>| t.map_or(PressureTier::ALL.len(), tier_rank);
    rows.sort_by(|a, b| {
        match by {
            SortBy::Name => Ordering::Equal,
            SortBy::Usage => desc(a.stats.usage, b.stats.usage),
            SortBy::Peak => desc(a.stats.peak.map(|p| p.bytes), b.stats.peak.map(|p| p.bytes)),
            SortBy::Pressure => tier(a.stats.tier)
                .cmp(&tier(b.stats.tier))
                .then_with(|| desc(a.stats.usage, b.stats.usage)),
        }
        .then_with(|| name(a, b))
    });
}

fn tier_rank(tier: PressureTier) -> usize {
    PressureTier::ALL
        .iter()
        .position(|t| *t == tier)
        .unwrap_or(PressureTier::ALL.len())
}

/// The node rows: nodes with an agent, VRAM units or a regions annotation. `all_pods` are the
/// pods of every namespace (for the units they hold).
pub fn node_rows(
    nodes: &[Node],
    all_pods: &[Pod],
    agents: &BTreeMap<String, AgentState>,
) -> Vec<NodeRow> {
    let mut allocated: BTreeMap<&str, u64> = BTreeMap::new();
    for pod in all_pods.iter().filter(|p| is_active(p)) {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *allocated.entry(node).or_default() += vram_units(pod);
        }
    }
    let mut rows = Vec::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let state = agents.get(&name).cloned().unwrap_or(AgentState::NoAgent);
        let annotated = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(kube_dmem_crds::NODE_REGIONS_ANNOTATION))
            .map(|v| kube_dmem_crds::regions::parse_regions(v).regions);
        let units_allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(VRAM_RESOURCE))
            .and_then(|q| q.0.parse::<u64>().ok());
        let (regions, capacity, used) = match (state.snapshot(), &annotated) {
            (Some(snap), _) => (
                snap.regions.keys().cloned().collect(),
                sum(snap.regions.values().map(|r| r.capacity)),
                sum(snap.regions.values().map(|r| r.usage)),
            ),
            (None, Some(regions)) => (
                regions.iter().map(|(r, _)| r.clone()).collect(),
                sum(regions.iter().map(|(_, b)| Some(*b))),
                None,
            ),
            (None, None) => (Vec::new(), None, None),
        };
        if matches!(state, AgentState::NoAgent)
            && annotated.is_none()
            && units_allocatable.is_none()
        {
            continue;
        }
        rows.push(NodeRow {
            agent: state.word(),
            agent_error: match &state {
                AgentState::Failed { error } => Some(error.clone()),
                _ => None,
            },
            units_allocated: allocated.get(name.as_str()).copied().unwrap_or(0),
            node: name,
            regions,
            capacity,
            used,
            units_allocatable,
        });
    }
    rows
}

/// Sums values; `None` when there are none or one is unknown.
fn sum(values: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let mut total: Option<u64> = None;
    for v in values {
        total = Some(total.unwrap_or(0).saturating_add(v?));
    }
    total
}

/// Sorts node rows: by name, or fullest (`usage`, `pressure`) first.
pub fn sort_nodes(rows: &mut [NodeRow], by: SortBy) {
    let fill = |r: &NodeRow| match (r.used, r.capacity) {
        // Per-mille is enough to order; no float comparison needed.
        (Some(u), Some(c)) if c > 0 => Some(u.saturating_mul(1000) / c),
        _ => None,
    };
    rows.sort_by(|a, b| {
        match by {
            SortBy::Name => Ordering::Equal,
            SortBy::Usage | SortBy::Peak => b.used.cmp(&a.used),
            SortBy::Pressure => fill(b).cmp(&fill(a)),
        }
        .then_with(|| a.node.cmp(&b.node))
    });
}

fn peak_cell(peak: Option<Peak>) -> String {
    peak.map_or_else(
        || "-".to_owned(),
        |p| format!("{} ({})", bytes(p.bytes), p.source.as_str()),
    )
}

/// The pod table.
pub fn pods_table(rows: &[PodRow]) -> Table {
    let mut table = Table::new(&[
        "NAMESPACE",
        "POD",
        "REGION",
        "USAGE",
        "PEAK",
        "MAX",
        "HIGH",
        "LOW",
        "TIER",
        "LIMITS",
    ]);
    for r in rows {
        let s = &r.stats;
        table.row(vec![
            r.namespace.clone(),
            r.pod.clone(),
            r.region
                .clone()
                .unwrap_or_else(|| "<no agent data>".to_owned()),
            opt_bytes(s.usage),
            peak_cell(s.peak),
            opt_bytes(s.max),
            opt_bytes(s.high),
            opt_bytes(s.low),
            s.tier
                .map_or_else(|| "-".to_owned(), |t| t.as_str().to_owned()),
            r.limits.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table
}

/// The node table.
pub fn nodes_table(rows: &[NodeRow]) -> Table {
    let mut table = Table::new(&[
        "NODE",
        "AGENT",
        "REGIONS",
        "CAPACITY",
        "USED",
        "USED%",
        "VRAM-UNITS",
    ]);
    for r in rows {
        table.row(vec![
            r.node.clone(),
            r.agent.to_owned(),
            r.regions.len().to_string(),
            opt_bytes(r.capacity),
            opt_bytes(r.used),
            percent(r.used, r.capacity),
            format!(
                "{}/{}",
                r.units_allocated,
                r.units_allocatable
                    .map_or_else(|| "-".to_owned(), |u| u.to_string())
            ),
        ]);
    }
    table
}

#[cfg(test)]
mod tests;
