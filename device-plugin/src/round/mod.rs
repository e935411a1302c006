//! The driver for this node: one enforcement round, observe -> decide -> act -> report.
//!
//! EDGE driver: [`observe`] reads and [`act`] writes the kernel through a `&dyn CgroupFs` (the
//! real cgroupfs or the simulator, unchanged); the decisions are the CORE functions of
//! [`crate::decide`] and the report is assembled by [`report`]. The same round serves the DaemonSet
//! and the standalone mode, so what a demo shows is what a node does.

pub mod act;
pub mod locate;
pub mod observe;
pub mod report;

use std::collections::BTreeMap;

use kube_dmem_crds::limits::HighSupport;
use kube_dmem_crds::select::{PodFacts, QuotaFacts, QuotaRef};

pub use report::{LimitsOutcome, PodReport, RegionReport, RoundReport};

use crate::cgroup::path::Listings;
use crate::cgroup::{CgroupError, CgroupFs, CgroupPath};
use crate::decide::ancestors::ChildReading;
use crate::decide::foreign::{self, Written};
use crate::decide::limits::{ObservedPod, PodPlan, plan};
use crate::decide::outcome::{Verdict, after_act, before_act};
use crate::decide::pressure::PressureThresholds;
use locate::PodCgroups;

/// Settings of a round that do not change between rounds.
#[derive(Clone, Debug)]
pub struct RoundConfig {
    /// Where pod cgroups are searched (normally the hierarchy root).
    pub scan_root: CgroupPath,
    /// Whether the kernel has a native `dmem.high` (found by probing).
    pub high: HighSupport,
    /// Pressure thresholds.
    pub thresholds: PressureThresholds,
}

/// Inputs a round must not take as given: quotas whose current spec is invalid, and pods whose
/// VRAM grant is unknown. Bad or missing input never loosens a limit already applied: a quota
/// keeps its last valid spec in force; where no valid spec of it is known, the pods it may govern
/// are left as they are, and so is a pod that asks for units nobody can say it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BadInputs {
    /// Quotas in force with their last valid spec (which the caller passes among the round's
    /// quotas), with the error of the current spec.
    pub stale: BTreeMap<QuotaRef, String>,
    /// Pods, by UID, that an invalid quota with no known valid spec may govern, with that quota
    /// and its error: nothing is written to them.
    pub held: BTreeMap<String, (QuotaRef, String)>,
    /// Pods, by UID, that ask for `kube-dmem.io/vram` units while their grant is unknown (no
    /// PodResources answer yet, or an entry that cannot be joined), with why: nothing is
    /// written to them, since a limit from the quota alone could be looser than the grant.
    pub grant_unknown: BTreeMap<String, String>,
}

/// What a round decides from, besides the node's settings: the pods it covers, the quotas, and
/// the inputs it must not take as given.
#[derive(Clone, Copy, Debug)]
pub struct RoundInputs<'a> {
    /// The pods: every pod of the node in a node round, the pods to settle in a pods round.
    pub pods: &'a [PodFacts],
    /// Every quota of the node's pods' namespaces (a stale one with its last valid spec).
    pub quotas: &'a [QuotaFacts],
    /// What of them is not to be taken as given.
    pub invalid: &'a BadInputs,
}

impl<'a> RoundInputs<'a> {
    /// `pods` under `quotas`, with what of them is not to be taken as given.
    pub fn new(pods: &'a [PodFacts], quotas: &'a [QuotaFacts], invalid: &'a BadInputs) -> Self {
        RoundInputs {
            pods,
            quotas,
            invalid,
        }
    }

    /// `pods` under `quotas`, all valid.
    pub fn valid(pods: &'a [PodFacts], quotas: &'a [QuotaFacts]) -> Self {
        Self::new(pods, quotas, &NO_BAD_INPUTS)
    }
}

/// No bad input.
static NO_BAD_INPUTS: BadInputs = BadInputs {
    stale: BTreeMap::new(),
    held: BTreeMap::new(),
    grant_unknown: BTreeMap::new(),
};

/// Which pods a round covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every pod of the node: their limits, then what depends on all of them (the ancestors'
    /// protection, forgetting what was written to pods that are gone).
    Node,
    /// Only the pods passed in, for pods that must not wait for the whole node (a new pod cgroup,
    /// a runtime or kubelet hook holding a container's start): their limits and nothing that
    /// depends on the others. Its cost does not grow with the node's pods; a node round follows.
    Pods,
}

/// What rounds remember of the node from one to the next.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// What the rounds wanted and saw in force, to tell other writers' values from their own
    /// (see [`crate::decide::foreign`]).
    pub written: Written,
    /// Where the pods' cgroups are, so a pods round need not scan for them.
    pub cgroups: PodCgroups,
}

/// Runs one round for `pods` under `quotas`: applies what differs, then reads usage for pressure.
pub fn run_round(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    pods: &[PodFacts],
    quotas: &[QuotaFacts],
) -> Result<RoundReport, CgroupError> {
    let mut memory = Memory::default();
    run_round_with(fs, cfg, RoundInputs::valid(pods, quotas), &mut memory)
}

/// [`run_round`], with inputs that may be bad, and what earlier rounds remember.
pub fn run_round_with(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    inputs: RoundInputs<'_>,
    memory: &mut Memory,
) -> Result<RoundReport, CgroupError> {
    run_scoped_round(fs, cfg, inputs, memory, Scope::Node)
}

/// Pods rounds that cannot wait for a whole node round (a container held until its limits are in
/// force): a node round calls [`GiveWay::between_pods`] after each pod it reads or settles, so
/// such a round waits for one pod's reads or writes, not for every pod of the node.
pub trait GiveWay {
    /// Runs the pods rounds waiting now, if any, on `fs` with the node round's memory (each with
    /// [`settle_between`]), and says what they settled.
    fn between_pods(&mut self, fs: &dyn CgroupFs, memory: &mut Memory) -> GaveWay;
}

/// Nothing ever waits: the node round runs through.
pub struct NoneWaiting;

impl GiveWay for NoneWaiting {
    fn between_pods(&mut self, _fs: &dyn CgroupFs, _memory: &mut Memory) -> GaveWay {
        GaveWay::default()
    }
}

/// What pods rounds run in the middle of a node round settled, for the node round to take in:
/// their pods' reports replace its own (they are newer) and it does not act on those pods again
/// with what it read before them.
#[derive(Clone, Debug, Default)]
pub struct GaveWay {
    /// The reports of the pods settled.
    pub pods: Vec<PodReport>,
    /// The cgroups of the pods settled: the node round counts them in their ancestors'
    /// protection from their files, and does not forget what was written to them (either way,
    /// a pod whose cgroup appeared after the node round's scan counts too).
    pub cgroups: Vec<CgroupPath>,
    /// Kernel writes they made.
    pub writes: usize,
}

impl GaveWay {
    /// Adds what another pods round settled.
    pub fn absorb(&mut self, more: GaveWay) {
        self.pods.extend(more.pods);
        self.cgroups.extend(more.cgroups);
        self.writes += more.writes;
    }

    fn settled(&self, uid: &str) -> bool {
        self.pods.iter().any(|p| p.facts.uid == uid)
    }
}

/// [`run_round_with`] over `scope`: with [`Scope::Pods`], the inputs' pods are only the pods to
/// settle now.
pub fn run_scoped_round(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    inputs: RoundInputs<'_>,
    memory: &mut Memory,
    scope: Scope,
) -> Result<RoundReport, CgroupError> {
    let round = scoped_round(fs, cfg, inputs, memory, scope, &mut NoneWaiting)?;
    Ok(round.0)
}

/// A node round over the inputs' pods that gives way to the pods rounds `waiting` supplies
/// between pods.
pub fn run_node_round_giving_way(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    inputs: RoundInputs<'_>,
    memory: &mut Memory,
    waiting: &mut dyn GiveWay,
) -> Result<RoundReport, CgroupError> {
    let round = scoped_round(fs, cfg, inputs, memory, Scope::Node, waiting)?;
    Ok(round.0)
}

/// A pods round run in the middle of a node round ([`GiveWay`]): its report, and what the node
/// round takes in from it.
pub fn settle_between(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    inputs: RoundInputs<'_>,
    memory: &mut Memory,
) -> Result<(RoundReport, GaveWay), CgroupError> {
    let (report, found) = scoped_round(fs, cfg, inputs, memory, Scope::Pods, &mut NoneWaiting)?;
    let gave_way = GaveWay {
        pods: report.pods.clone(),
        cgroups: found.into_values().collect(),
        writes: report.writes,
    };
    Ok((report, gave_way))
}

/// The round, and the pod cgroups it found by pod UID: every one in a node round, its own pods'
/// in a pods round.
fn scoped_round(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    inputs: RoundInputs<'_>,
    memory: &mut Memory,
    scope: Scope,
    waiting: &mut dyn GiveWay,
) -> Result<(RoundReport, BTreeMap<String, CgroupPath>), CgroupError> {
    let RoundInputs {
        pods,
        quotas,
        invalid,
    } = inputs;
    let mut gave_way = GaveWay::default();
    // What the scan listed in the pods' ancestors: the ancestors' protection sums their children.
    let mut listings = Listings::new();
    let found = match scope {
        // Every pod cgroup: what was written to the others is forgotten below. Pods rounds
        // waiting meanwhile run between two directories.
        Scope::Node => {
            let scanned = locate::scan(fs, &cfg.scan_root, &mut || {
                gave_way.absorb(waiting.between_pods(fs, memory));
            })?;
            memory.cgroups.remember(&scanned.pods);
            listings = scanned.listings;
            scanned.pods
        }
        // Its own pods only, looked up: its cost does not grow with the node's pods.
        Scope::Pods => {
            let (mut found, missed) =
                (memory.cgroups).look_up_known(fs, pods.iter().map(|p| &*p.uid));
            if !found.is_empty() && !missed.is_empty() {
                let inputs = RoundInputs::new(pods, quotas, invalid);
                return found_first(fs, cfg, inputs, memory, waiting, &found);
            }
            found.extend(memory.cgroups.scan_for(fs, &cfg.scan_root, &missed)?);
            found
        }
    };
    // The kernel shows dmem files only where dmem is enabled top-down: enable it where the
    // round needs them (an act before observing; no write once it is enabled).
    let mut enabled = act::enable_dmem(fs, &[])?;
    // Observe (kernel reads): regions, pod cgroups, what is in force in each.
    let node = observe::node(fs, found)?;
    let (mut observed, mut failures): (Vec<_>, Vec<_>) = pods
        .iter()
        .map(|facts| {
            let seen = observe::pod(fs, facts, node.pod_cgroups.get(&facts.uid), cfg.high);
            gave_way.absorb(waiting.between_pods(fs, memory));
            seen
        })
        .unzip();
    // A pod cgroup without dmem files: enable dmem above it (a kubelet enables only the
    // controllers it knows), then look again. Pods that have their files cost nothing here.
    let bare: Vec<usize> = (0..observed.len())
        .filter(|&i| observed[i].in_force.is_empty() && failures[i].is_none())
        .filter(|&i| observed[i].cgroup.is_some())
        .collect();
    if !bare.is_empty() {
        let groups: Vec<&CgroupPath> = bare
            .iter()
            .filter_map(|&i| observed[i].cgroup.as_ref())
            .collect();
        let changed = act::enable_dmem(fs, &groups)?;
        enabled += changed;
        for &i in bare.iter().filter(|_| changed > 0) {
            let cgroup = node.pod_cgroups.get(&pods[i].uid);
            (observed[i], failures[i]) = observe::pod(fs, &pods[i], cgroup, cfg.high);
        }
    }
    // Decide (pure): the limits each pod should have, and whether the round may write them.
    let names: Vec<&str> = node.regions.iter().map(|r| r.region.as_str()).collect();
    let decided = plan(&observed, quotas, &names, cfg.high);
    let mut report = RoundReport {
        writes: enabled,
        region_usage: node
            .root_usage
            .iter()
            .filter_map(|l| Some((l.region.clone(), l.value.bytes()?)))
            .collect(),
        regions: node.regions.clone(),
        ..RoundReport::default()
    };
    let mut protect = BTreeMap::new();
    for ((pod, pod_plan), failure) in observed.iter().zip(&decided.pods).zip(&failures) {
        gave_way.absorb(waiting.between_pods(fs, memory));
        if gave_way.settled(&pod.facts.uid) {
            // Settled meanwhile from a fresher reading than this round's: acting on what this
            // round read would take the values just written for another writer's.
            continue;
        }
        let failure = failure.as_ref().map(|e| (e.reason(), error_chain(e)));
        let held = invalid.held.get(&pod.facts.uid);
        let unknown = invalid.grant_unknown.get(&pod.facts.uid);
        // Act (kernel writes, each read back) unless the pod must be left alone.
        let (outcome, applied) = match before_act(failure.clone(), held, unknown) {
            Verdict::Hold(outcome) => (outcome, None),
            Verdict::Apply => {
                // Other writers: keep what is stricter, restore the rest, never fight forever.
                let governed = pod_plan.governing.is_some() || !pod.facts.grants.is_empty();
                let (pod_plan, foreign) =
                    foreign::settle(pod_plan, governed, &mut memory.written, |f, r| {
                        pod.in_force.get(r).copied().unwrap_or_default().get(f)
                    });
                report.writes += pod_plan.writes.len();
                let done = act::pod_limits(fs, pod, &pod_plan);
                let stale =
                    (pod_plan.governing.as_ref()).and_then(|q| Some((q, invalid.stale.get(q)?)));
                let outcome = after_act(done, stale, foreign.first());
                match (&pod.cgroup, &outcome) {
                    (Some(cgroup), LimitsOutcome::Applied) => {
                        foreign::remember(&mut memory.written, cgroup, &pod_plan, cfg.high);
                    }
                    // Nothing governs the pod any more and the agent's values are undone: what
                    // others write to it from now on is theirs.
                    (Some(cgroup), LimitsOutcome::NotGoverned) => {
                        foreign::release(&mut memory.written, cgroup)
                    }
                    _ => {}
                }
                (outcome, Some(pod_plan))
            }
        };
        // Report: fresh readings, tiers and outcome.
        let wrote = applied.as_ref().is_some_and(|p| !p.writes.is_empty());
        let readings = observe::after_act(fs, pod, wrote, cfg.high, failure.map(|f| f.1));
        let shown = applied.clone().unwrap_or_else(|| left_alone(pod_plan));
        let pod_report = report::pod_report(
            &shown,
            &pod.facts,
            outcome,
            readings,
            &report.regions,
            &node.root_usage,
            cfg.thresholds,
        );
        if let Some(cgroup) = &pod.cgroup {
            protect.insert(
                cgroup.clone(),
                child_reading(&pod_report, applied.as_ref(), pod),
            );
        }
        report.pods.push(pod_report);
    }
    // What waits now runs before the ancestors' protection, which reads and writes without
    // giving way (and takes in what this settles).
    gave_way.absorb(waiting.between_pods(fs, memory));
    if scope == Scope::Node {
        // A pods round looks up its own pods only: it cannot tell which others are gone.
        foreign::forget_others(
            &mut memory.written,
            node.pod_cgroups.values().chain(&gave_way.cgroups),
        );
    }
    report.writes += gave_way.writes;
    for settled in gave_way.pods {
        // Only pods of this round: others are a later snapshot's, reported by their own round.
        if let Some(mine) = (report.pods.iter_mut()).find(|p| p.facts.uid == settled.facts.uid) {
            *mine = settled;
        } else if pods.iter().any(|p| p.uid == settled.facts.uid) {
            report.pods.push(settled);
        }
    }
    let found = node.pod_cgroups;
    if scope == Scope::Pods {
        // The ancestors' protection sums every pod below them: it waits for the node round.
        return Ok((report, found));
    }
    // Ancestors' protection last, from the pods' lows as just written and the usage just read
    // (pods settled by a round that ran in between are not in `protect`: their files are read).
    if failures.iter().any(Option::is_some) {
        // An unreadable pod would count as using and protecting nothing, lowering its ancestors'
        // protection: leave them as they are until it reads again.
        return Ok((report, found));
    }
    let names: Vec<String> = report.regions.iter().map(|r| r.region.clone()).collect();
    match act::protect_ancestors(fs, &protect, &gave_way.cgroups, &listings, &names) {
        Ok(writes) => report.writes += writes,
        // The pods' own limits are in force; a failed ancestor write only weakens protection
        // until the next round retries it.
        Err(err) => tracing::warn!(
            error = &err as &dyn std::error::Error,
            "Protecting pod ancestors failed"
        ),
    }
    Ok((report, found))
}

/// A pods round over pods of which some have their cgroup where expected (`found`) and others
/// not (yet): the found are settled first, then a scan looks for the others. A burst of announced
/// pods whose cgroups appear one by one must not make each new cgroup's limits wait for a scan
/// on account of the pods still without one. One report, in the inputs' order.
fn found_first(
    fs: &dyn CgroupFs,
    cfg: &RoundConfig,
    inputs: RoundInputs<'_>,
    memory: &mut Memory,
    waiting: &mut dyn GiveWay,
    found: &BTreeMap<String, CgroupPath>,
) -> Result<(RoundReport, BTreeMap<String, CgroupPath>), CgroupError> {
    let (now, later): (Vec<PodFacts>, Vec<PodFacts>) =
        (inputs.pods.iter().cloned()).partition(|p| found.contains_key(&p.uid));
    let part = |pods| RoundInputs::new(pods, inputs.quotas, inputs.invalid);
    let (mut report, mut cgroups) =
        scoped_round(fs, cfg, part(&now), memory, Scope::Pods, waiting)?;
    let (rest, rest_cgroups) = scoped_round(fs, cfg, part(&later), memory, Scope::Pods, waiting)?;
    report.pods.extend(rest.pods);
    report
        .pods
        .sort_by_key(|p| inputs.pods.iter().position(|f| f.uid == p.facts.uid));
    report.writes += rest.writes;
    // The later round's readings of the node are the fresher.
    report.regions = rest.regions;
    report.region_usage = rest.region_usage;
    cgroups.extend(rest_cgroups);
    Ok((report, cgroups))
}

/// The plan of a pod the round left alone: nothing written.
fn left_alone(pod_plan: &PodPlan) -> PodPlan {
    PodPlan {
        writes: Vec::new(),
        ..pod_plan.clone()
    }
}

/// The pod as its ancestors' protection sees it: its usage as just read, and its low: as planned
/// when the round applied its limits, else as found in its cgroup.
fn child_reading(
    pod_report: &PodReport,
    applied: Option<&PodPlan>,
    pod: &ObservedPod,
) -> ChildReading {
    let low = match applied {
        Some(plan) => (plan.desired.iter())
            .map(|(region, k)| (region.clone(), k.low.unwrap_or(0)))
            .collect(),
        None => (pod.in_force.iter())
            .map(|(region, f)| (region.clone(), f.low.as_limit()))
            .collect(),
    };
    let usage = (pod_report.regions.iter())
        .map(|r| (r.region.clone(), r.reading.usage))
        .collect();
    ChildReading { usage, low }
}

/// The error and its causes on one line, for condition messages and events.
pub use kube_dmem_crds::error_chain;

#[cfg(test)]
mod tests;
