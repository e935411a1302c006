//! CORE: `kubectl dmem why POD`: which DmemQuota governs a pod and why, which quotas lost and to
//! what, the limits that follow per region, what the agent reads in the pod's cgroup, the pod's
//! kube-dmem conditions and its last events.
//!
//! The decision comes from the same pure rules the operator and the agents use
//! ([`kube_dmem_crds::select::quota_facts`], [`governing`], [`precedence`],
//! [`kube_dmem_crds::limits::effective_limits`]); this module only explains which key of the
//! precedence order decided. `now` arrives as an argument.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::DmemQuota;
use kube_dmem_crds::limits::{Limits, effective_limits};
use kube_dmem_crds::regions::parse_regions;
use kube_dmem_crds::select::{
    PodFacts, QuotaFacts, QuotaRef, governing, precedence, quota_facts, selects,
};
use kube_dmem_crds::validate::ValidationError;
use serde::Serialize;

use crate::agents::AgentState;
use crate::podinfo::{ConditionView, conditions, vram_units};
use crate::render::age;
use crate::snapshot::{PodKey, PodRegionStats};

/// How many events `why` shows, newest first.
pub const MAX_EVENTS: usize = 10;

/// What `why` needs, as values.
#[derive(Clone, Copy, Debug)]
pub struct WhyInput<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Every DmemQuota of the pod's namespace.
    pub quotas: &'a [DmemQuota],
    /// The pod's node, for its regions annotation.
    pub node: Option<&'a Node>,
    /// What the node's agent said.
    pub agent: &'a AgentState,
    /// Events about the pod.
    pub events: &'a [Event],
    /// The current time, for ages.
    pub now: Timestamp,
}

/// How one quota of the namespace relates to the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLine {
    /// Quota name.
    pub name: String,
    /// `spec.priority` (absent for an invalid quota).
    pub priority: Option<i32>,
    /// Age of the quota, kubectl style.
    pub age: Option<String>,
    /// `Governs`, `Outranked`, `NotSelecting` or `Invalid`.
    pub outcome: &'static str,
    /// Why, in words.
    pub detail: String,
}

/// Per-region limits, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LimitsView {
    /// Hard limit.
    pub max: Option<u64>,
    /// Soft limit.
    pub high: Option<u64>,
    /// Protection.
    pub low: Option<u64>,
    /// Hard protection.
    pub min: Option<u64>,
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> Self {
        Self {
            max: l.max,
            high: l.high,
            low: l.low,
            min: l.min,
        }
    }
}

/// An event, as shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// RFC 3339 time of the (last) occurrence.
    pub time: Option<String>,
    /// Age, kubectl style.
    pub age: Option<String>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// The reporting component.
    pub from: String,
    /// Message.
    pub message: String,
}

/// The whole explanation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Why {
    /// The pod.
    #[serde(flatten)]
    pub pod: PodKey,
    /// Its node.
    pub node: Option<String>,
    /// `kube-dmem.io/vram` units it holds.
    pub vram_units: u64,
    /// The governing quota's name.
    pub governing: Option<String>,
    /// One sentence: who governs and why.
    pub decision: String,
    /// Every quota of the namespace, the governing one first, then in precedence order, then the
    /// invalid ones.
    pub quotas: Vec<QuotaLine>,
    /// The limits that follow, per region of the node.
    pub effective_limits: BTreeMap<String, LimitsView>,
    /// State of the node's agent: `ok`, `unreachable` or `none`.
    pub agent: &'static str,
    /// What the agent reads in the pod's cgroup, per region (absent when the agent was not read).
    pub cgroup: Option<BTreeMap<String, PodRegionStats>>,
    /// The pod's kube-dmem conditions.
    pub conditions: Vec<ConditionView>,
    /// The pod's last events, newest first.
    pub events: Vec<EventView>,
    /// Things worth knowing that fit no field.
    pub notes: Vec<String>,
}

/// Explains the pod.
pub fn explain(input: WhyInput<'_>) -> Why {
    let WhyInput {
        pod,
        quotas,
        node,
        agent,
        events,
        now,
    } = input;
    let facts = PodFacts::from_pod(pod, Vec::new());
    // Only quotas of the pod's namespace can select it; others are not listed.
    let (valid, invalid) = quota_facts(
        quotas
            .iter()
            .filter(|q| q.metadata.namespace.as_deref() == Some(facts.namespace.as_str())),
    );
    let winner = governing(&valid, &facts);
    let lines = quota_lines(&valid, &invalid, winner, &facts, now);
    let regions = node_regions(node, agent, &facts);
    let units = vram_units(pod);
    let effective = effective_limits(winner, &regions, &[])
        .into_iter()
        .map(|(r, l)| (r, LimitsView::from(l)))
        .collect();
    let pod_key = PodKey {
        namespace: facts.namespace.clone(),
        name: facts.name.clone(),
    };
    let cgroup = agent
        .snapshot()
        .map(|s| s.pods.get(&pod_key).cloned().unwrap_or_default());
    let conditions = conditions(pod);
    let notes = notes(units, agent, &conditions, !invalid.is_empty());
    Why {
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        vram_units: units,
        governing: winner.map(|w| w.key.name.clone()),
        decision: decision(winner, &valid, &facts),
        quotas: lines,
        effective_limits: effective,
        agent: agent.word(),
        cgroup,
        conditions,
        events: event_views(events, now),
        notes,
        pod: pod_key,
    }
}

/// Every quota of the namespace: the governing one first, the other valid ones in precedence
/// order with their outcome for the pod, then the invalid ones.
fn quota_lines(
    valid: &[QuotaFacts],
    invalid: &[(QuotaRef, ValidationError)],
    winner: Option<&QuotaFacts>,
    facts: &PodFacts,
    now: Timestamp,
) -> Vec<QuotaLine> {
    let mut ranked: Vec<&QuotaFacts> = valid.iter().collect();
    ranked.sort_by(|a, b| precedence(a, b));
    let age_of = |q: &QuotaFacts| {
        q.created
            .as_ref()
            .map(|t| age(now.as_second() - t.0.as_second()))
    };
    let mut lines: Vec<QuotaLine> = ranked
        .iter()
        .map(|q| {
            let (outcome, detail) = match winner {
                Some(w) if w.key == q.key => ("Governs", governs_detail(w, valid, facts)),
                Some(w) if selects(q, facts) => ("Outranked", outranked_detail(w, q)),
                _ => (
                    "NotSelecting",
                    "its selector does not match the pod's labels".to_owned(),
                ),
            };
            QuotaLine {
                name: q.key.name.clone(),
                priority: Some(q.spec.priority),
                age: age_of(q),
                outcome,
                detail,
            }
        })
        .collect();
    // The governing quota first; the rest keep precedence order.
    lines.sort_by_key(|l| l.outcome != "Governs");
    lines.extend(invalid.iter().map(|(key, err)| QuotaLine {
        name: key.name.clone(),
        priority: None,
        age: None,
        outcome: "Invalid",
        detail: format!("governs nothing new: {err}"),
    }));
    lines
}

/// The node's regions: the agent's, else the node annotation's, plus any the pod is reported in.
fn node_regions(node: Option<&Node>, agent: &AgentState, pod: &PodFacts) -> Vec<String> {
    let mut regions: Vec<String> = match agent.snapshot() {
        Some(snap) => snap.regions.keys().cloned().collect(),
        None => node
            .and_then(|n| n.metadata.annotations.as_ref())
            .and_then(|a| a.get(kube_dmem_crds::NODE_REGIONS_ANNOTATION))
            .map(|v| parse_regions(v).names().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    if let Some(snap) = agent.snapshot() {
        let key = PodKey {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
        };
        regions.extend(
            snap.pods
                .get(&key)
                .into_iter()
                .flat_map(|m| m.keys().cloned()),
        );
    }
    regions.sort();
    regions.dedup();
    regions
}

fn decision(winner: Option<&QuotaFacts>, valid: &[QuotaFacts], pod: &PodFacts) -> String {
    match winner {
        None => "no valid DmemQuota of the namespace selects the pod: it is not governed (only VRAM units, if any, limit it)".to_owned(),
        Some(w) => format!("{} governs: {}", w.key.name, governs_detail(w, valid, pod)),
    }
}

fn governs_detail(winner: &QuotaFacts, valid: &[QuotaFacts], pod: &PodFacts) -> String {
    let rivals = valid
        .iter()
        .filter(|q| q.key != winner.key && selects(q, pod))
        .count();
    match rivals {
        0 => "the only valid quota selecting the pod".to_owned(),
        n => format!(
            "ranks first of {} quotas selecting the pod (priority, then age, then name)",
            n + 1
        ),
    }
}

/// Which key of [`precedence`] made `winner` outrank `loser`, in its order.
fn outranked_detail(winner: &QuotaFacts, loser: &QuotaFacts) -> String {
    debug_assert_eq!(precedence(winner, loser), Ordering::Less);
    let (wp, lp) = (winner.spec.priority, loser.spec.priority);
    if wp != lp {
        return format!("lost to {}: priority {wp} > {lp}", winner.key.name);
    }
    match (&winner.created, &loser.created) {
        (Some(w), Some(l)) if w != l => format!(
            "lost to {}: same priority {wp}, created earlier ({} < {})",
            winner.key.name, w.0, l.0
        ),
        (Some(_), None) => format!(
            "lost to {}: same priority {wp}, and this quota has no creation time yet",
            winner.key.name
        ),
        _ => format!(
            "lost to {}: same priority {wp} and creation time, its name sorts first",
            winner.key.name
        ),
    }
}

fn notes(
    units: u64,
    agent: &AgentState,
    conditions: &[ConditionView],
    any_invalid: bool,
) -> Vec<String> {
    let mut notes = Vec::new();
    if units > 0 {
        notes.push(format!(
            "the pod holds {units} {} units: the region they came from also gets max = units x unit size (the kubelet knows which region; the agent's max below shows it), and a quota can only lower that",
            kube_dmem_crds::VRAM_RESOURCE
        ));
    }
    match agent {
        AgentState::Failed { error } => {
            notes.push(format!("the node's agent could not be read: {error}"));
        }
        AgentState::NoAgent => notes.push("no kube-dmem agent runs on the pod's node".to_owned()),
        AgentState::Read { .. } => {}
    }
    let quota_invalid = conditions
        .iter()
        .any(|c| c.reason == kube_dmem_crds::REASON_QUOTA_INVALID);
    if quota_invalid || any_invalid {
        notes.push("an invalid quota governs nothing new, but where it governed a pod before, the agent keeps its last valid spec in force (reason QuotaInvalid on the pod)".to_owned());
    }
    notes
}

/// The newest [`MAX_EVENTS`] events, newest first.
fn event_views(events: &[Event], now: Timestamp) -> Vec<EventView> {
    let mut timed: Vec<(Option<Timestamp>, &Event)> = events
        .iter()
        .map(|e| {
            let time = e
                .event_time
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
                .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            (time, e)
        })
        .collect();
    timed.sort_by_key(|t| std::cmp::Reverse(t.0));
    timed
        .into_iter()
        .take(MAX_EVENTS)
        .map(|(time, e)| EventView {
            time: time.map(|t| t.to_string()),
            age: time.map(|t| age(now.as_second() - t.as_second())),
            type_: e.type_.clone().unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            from: e
                .reporting_component
                .clone()
                .filter(|c| !c.is_empty())
                .or_else(|| e.source.as_ref().and_then(|s| s.component.clone()))
                .unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
