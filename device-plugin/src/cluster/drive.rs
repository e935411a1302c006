//! EDGE: the agent loop, apart from its wiring. [`run`](super::run) builds the real parts (the
//! watch caches, the kube sink, the kubelet clients) and hands them to [`drive`]; the node agent
//! benchmark (`benches/agent.rs`) hands it an in-memory object source and a recording sink, so it
//! measures this very loop, with its real timers, without an API server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::agent::Agent;
use super::cgroup_watch::CgroupSignal;
use super::health::Health;
use super::kernel::Kernel;
use super::prestart::RoundRequest;
use crate::cluster::api::ApiSink;
use crate::cluster::objects::{Caches, Objects};
use crate::decide::inputs;
use crate::dra::prepare::ClaimRound;
use crate::dra::store::ClaimStore;
use crate::kubelet::RESOURCE_NAME;
use crate::kubelet::decide::grants::{Grants, Listing, join};
use crate::kubelet::decide::inventory::Inventory;
use crate::kubelet::podresources::PodResourcesClient;
use crate::round::{LimitsOutcome, RoundReport};

/// The default poll interval while some pod's usage is near its `high` or `max`
/// ([`near_threshold`](crate::decide::pressure::near_threshold)): crossing it is then reported
/// within about this long instead of a whole poll interval. Only while such a pod exists, so the
/// steady state costs what a plain poll costs.
pub const NEAR_POLL: Duration = Duration::from_millis(100);

/// Quiet time after a pod or quota change before the round, so a burst of watch events (a
/// Deployment scaling up) makes one round, not one per event.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// Where the loop reads pods and quotas from at the start of each round: the watch caches in
/// production ([`Caches`]), memory in the benchmark. A snapshot must not call the API server.
pub trait ObjectSource: Send + Sync {
    /// The objects now.
    fn snapshot(&self) -> Objects;
}

impl ObjectSource for Caches {
    fn snapshot(&self) -> Objects {
        Caches::snapshot(self)
    }
}

/// Objects that never change (benchmarks and tests that need no watch).
impl ObjectSource for Objects {
    fn snapshot(&self) -> Objects {
        self.clone()
    }
}

/// The kubelet side of the loop, present when a kubelet runs on the node.
pub struct KubeletSide {
    /// The PodResources client, listed before each round.
    pub pod_resources: PodResourcesClient,
    /// The device plugin's inventory, to join grants against.
    pub inventory: watch::Receiver<Inventory>,
}

/// The DRA driver's side of the loop: the prepared claims (their grants join the kubelet's in
/// every round) and the driver's requests for a round.
pub struct DraSide {
    /// Prepared claims.
    pub claims: Arc<ClaimStore>,
    /// Round requests of `NodePrepareResources` and `NodeUnprepareResources`.
    pub rounds: mpsc::Receiver<ClaimRound>,
}

/// Everything the loop drives; [`drive`] runs it.
pub struct Loop<'a> {
    /// The agent's state between rounds.
    pub agent: Agent,
    /// Pods and quotas.
    pub objects: &'a dyn ObjectSource,
    /// Where the API writes go.
    pub sink: &'a dyn ApiSink,
    /// Poked on a pod or quota change; the round follows after [`DEBOUNCE`].
    pub trigger: Arc<Notify>,
    /// Raised when a pod cgroup appears (the round follows at once); told after every round
    /// whether a pod still waits for its cgroup.
    pub new_cgroup: Arc<CgroupSignal>,
    /// PreStart requests; each gets the pod's outcome after the round.
    pub rounds: mpsc::Receiver<RoundRequest>,
    /// PodResources and inventory, without a kubelet `None`.
    pub kubelet: Option<KubeletSide>,
    /// The DRA driver, `None` when it is off.
    pub dra: Option<DraSide>,
    /// Pressure polling interval.
    pub poll_interval: Duration,
    /// Pressure polling interval while a pod is near a threshold ([`NEAR_POLL`] by default); at
    /// or above `poll_interval` adaptive polling is off.
    pub near_poll_interval: Duration,
    /// Full re-evaluation interval.
    pub resync: Duration,
    /// Set ready after the first good round.
    pub health: Arc<Health>,
}

/// Runs rounds until `stop`: on a request, a new cgroup, a (debounced) change, every poll interval
/// and every resync (which also forgets what was written). A request or a new cgroup first gets a
/// round of its pods alone ([`Kernel::settle_pods`]), answered at once, even while a node round
/// runs (which runs it between two of its pods); the node round follows.
pub async fn drive(parts: Loop<'_>, stop: CancellationToken) {
    let Loop {
        mut agent,
        objects,
        sink,
        trigger,
        new_cgroup,
        mut rounds,
        kubelet,
        mut dra,
        poll_interval,
        near_poll_interval,
        resync,
        health,
    } = parts;
    let kernel = agent.kernel();
    let fast_poll = near_poll_interval.min(poll_interval);
    let mut next_poll = tokio::time::Instant::now() + poll_interval;
    let mut resync = tokio::time::interval(resync);
    resync.tick().await;
    // Until PodResources first answers, who holds units is unknown, not "nobody": pods asking
    // for units keep what is in force (a restarted agent must not lapse their limits).
    let mut grants: Option<Grants> = kubelet
        .as_ref()
        .map(|_| Grants::not_listed("no List call yet"));
    let mut grant_unknown_since: Option<tokio::time::Instant> = None;
    let mut settling = Settling::default();
    // Adaptive polling: the pods near a threshold, polled alone every `fast_poll` between node
    // rounds, so a few pods near `high` cost a few pods' reads, not the node's.
    let mut near_pods: BTreeSet<String> = BTreeSet::new();
    let mut next_near_poll: Option<tokio::time::Instant> = None;
    loop {
        let mut pending: Option<RoundRequest> = None;
        let mut claim_round: Option<ClaimRound> = None;
        let mut cgroup_appeared = false;
        let mut near_poll = false;
        let dra_request = async {
            match dra.as_mut() {
                Some(d) => d.rounds.recv().await,
                None => std::future::pending().await,
            }
        };
        let node_round_owed = sleep_until_some(settling.node_round_due);
        let near_poll_due = sleep_until_some(next_near_poll);
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Before requests: a stream of them must not starve the node round.
            () = node_round_owed => {}
            Some(req) = rounds.recv() => pending = Some(req),
            Some(req) = dra_request => claim_round = Some(req),
            () = new_cgroup.appeared() => cgroup_appeared = true,
            // A new cgroup cuts the debounce short: its limits must precede the workload.
            // A pod change may be a new pod whose cgroup the kubelet is about to make: scan fast
            // until the next round has found every pod's cgroup.
            () = trigger.notified() => {
                new_cgroup.expect(true);
                tokio::select! {
                    biased;
                    () = new_cgroup.appeared() => cgroup_appeared = true,
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
            }
            () = tokio::time::sleep_until(next_poll) => {}
            () = near_poll_due => near_poll = true,
            _ = resync.tick() => agent.forget_writes(),
        }
        // Polls are timed from when their round began, not ended: a round's own time (its API
        // writes, a slow FUSE) must not stretch the interval, or pressure is seen that much later.
        let woke = tokio::time::Instant::now();
        let mut snapshot = objects.snapshot();
        if let Some(hint) = pending.as_ref().and_then(|r| r.hint.as_ref()) {
            inputs::add_hint(&mut snapshot, hint);
        }
        // A pod whose container waits (a runtime or kubelet hook) or whose cgroup just appeared
        // is settled alone, so its wait does not grow with the node's pods; the node round
        // (conditions, pressure, ancestors) follows shortly, once for a burst of such pods.
        let focus = match (&pending, &claim_round) {
            (Some(req), None) => uid_of(&snapshot, &req.pod).into_iter().collect(),
            (None, None) if cgroup_appeared => settling.unsettled(&snapshot),
            _ => BTreeSet::new(),
        };
        let mut urgent = Urgent {
            kernel: &kernel,
            objects,
            rounds: &mut rounds,
            new_cgroup: &new_cgroup,
            sides: Sides {
                kubelet: kubelet.as_ref(),
                dra: dra.as_ref(),
            },
            grants: &mut grants,
            settling: &mut settling,
        };
        // On failure the node round below tries again and answers.
        if !focus.is_empty()
            && let Some(report) = urgent.settle(&snapshot, &focus).await
        {
            if let Some(req) = pending {
                let _ = req.reply.send(outcome_of(&report, &req.pod));
            }
            // Their conditions now, not at the node round, serving other pods meanwhile.
            for req in urgent.report_settled(&mut agent, sink).await {
                // Its pod's round failed: the requester asks again.
                let _ = req.reply.send(None);
            }
            continue;
        }
        let (grants_now, mut deferred) = urgent.grants_for_node(&snapshot, near_poll).await;
        if near_poll {
            next_near_poll = None;
            match agent
                .round_of_pods(
                    &snapshot,
                    grants_now.as_ref(),
                    sink,
                    Timestamp::now(),
                    &near_pods,
                )
                .await
            {
                Ok(report) => {
                    near_pods = near_threshold(&report);
                    if !near_pods.is_empty() {
                        next_near_poll = Some(next_start(woke, fast_poll));
                    }
                }
                Err(err) => warn!(
                    reason = err.reason(),
                    error = &err as &dyn std::error::Error,
                    "Polling the pods near a threshold failed"
                ),
            }
            continue;
        }
        urgent.settling.node_round_starts();
        // The node round holds the kernel for every pod, then writes to the API; a pod whose
        // container waits, or whose cgroup appears meanwhile, is settled in between (the kernel
        // round runs it between two of its pods), not after it. Requests whose pod's round
        // failed meanwhile are answered from the node round's report.
        let (result, stuck) = urgent
            .serve_while(agent.round(&snapshot, grants_now.as_ref(), sink, Timestamp::now()))
            .await;
        deferred.extend(stuck);
        deferred.extend(urgent.report_settled(&mut agent, sink).await);
        match &result {
            Ok(report) => {
                health.set_ready();
                // Adaptive polling: the pods approaching a threshold alone; the whole node fast
                // only for a while after a pod's grant turned unknown (a restarted agent learns
                // its devices in its first round; a kubelet that lasts longer is not worth 10
                // node rounds a second).
                let now = tokio::time::Instant::now();
                let unknown = (report.pods.iter())
                    .any(|p| matches!(p.outcome, LimitsOutcome::GrantUnknown { .. }));
                if !unknown {
                    grant_unknown_since = None;
                }
                let newly_unknown = unknown
                    && now - *grant_unknown_since.get_or_insert(now) < inputs::UNSETTLED_GRACE;
                near_pods = near_threshold(report);
                next_near_poll = (!near_pods.is_empty() && fast_poll < poll_interval)
                    .then(|| next_start(woke, fast_poll));
                next_poll = next_start(
                    woke,
                    if newly_unknown {
                        fast_poll
                    } else {
                        poll_interval
                    },
                );
                new_cgroup.expect(settling.node_round_ended(report));
            }
            Err(err) => {
                next_poll = next_start(woke, poll_interval);
                warn!(
                    reason = err.reason(),
                    error = err as &dyn std::error::Error,
                    "Round failed"
                );
            }
        }
        if let Some(req) = claim_round {
            let outcomes = match &result {
                Ok(report) => (report.pods.iter())
                    .filter(|p| req.pods.contains(&p.facts.uid))
                    .map(|p| (p.facts.uid.clone(), p.outcome.clone()))
                    .collect(),
                Err(_) => Default::default(),
            };
            let _ = req.reply.send(outcomes);
        }
        for req in pending.into_iter().chain(deferred) {
            let outcome = (result.as_ref().ok()).and_then(|report| outcome_of(report, &req.pod));
            let _ = req.reply.send(outcome);
        }
    }
}

/// The loop's bookkeeping of pods rounds: whose cgroup the rounds found (so a new pod cgroup
/// wakes a round of the others alone), and when the node round owed after a pods round is due.
#[derive(Default)]
struct Settling {
    /// Pods whose cgroup the last node round or a later pods round found.
    settled: BTreeSet<String>,
    /// Pods settled since the node round in progress started, which its report may miss.
    meanwhile: BTreeSet<String>,
    /// When the node round owed after a pods round is due.
    node_round_due: Option<tokio::time::Instant>,
    /// Pods rounds whose conditions are not written yet, with the pods they ran on (their
    /// conditions as the API had them).
    unreported: Vec<(Vec<Arc<Pod>>, RoundReport)>,
}

impl Settling {
    /// The pods among `objects` whose cgroup no round has found yet.
    fn unsettled(&self, objects: &Objects) -> BTreeSet<String> {
        unsettled(objects, &self.settled)
    }

    /// Runs a pods round for `focus` and records what it found; `None` when it failed (logged).
    async fn settle(
        &mut self,
        kernel: &Kernel,
        objects: &Objects,
        grants: Option<&Grants>,
        focus: &BTreeSet<String>,
        new_cgroup: &CgroupSignal,
    ) -> Option<RoundReport> {
        match kernel.settle_pods(objects, grants, focus).await {
            Ok(report) => {
                let found = (report.pods.iter())
                    .filter(|p| p.outcome != LimitsOutcome::CgroupNotFound)
                    .map(|p| p.facts.uid.clone());
                for uid in found {
                    self.settled.insert(uid.clone());
                    self.meanwhile.insert(uid);
                }
                if (report.pods.iter()).any(|p| p.outcome == LimitsOutcome::CgroupNotFound) {
                    new_cgroup.expect(true);
                }
                // Pressure and the ancestors' protection come from a node round.
                self.node_round_due
                    .get_or_insert(tokio::time::Instant::now() + DEBOUNCE);
                self.unreported.push((objects.pods.clone(), report.clone()));
                Some(report)
            }
            Err(err) => {
                warn!(
                    reason = err.reason(),
                    error = &err as &dyn std::error::Error,
                    "Settling new pods failed"
                );
                None
            }
        }
    }

    fn node_round_starts(&mut self) {
        self.meanwhile.clear();
        self.node_round_due = None;
    }

    /// Takes in a node round's report; says whether a pod still waits for its cgroup.
    fn node_round_ended(&mut self, report: &RoundReport) -> bool {
        let mut waiting = false;
        self.settled = std::mem::take(&mut self.meanwhile);
        for pod in &report.pods {
            if pod.outcome != LimitsOutcome::CgroupNotFound {
                self.settled.insert(pod.facts.uid.clone());
            } else if !self.settled.contains(&pod.facts.uid) {
                waiting = true;
            }
        }
        waiting
    }
}

/// What settling a pod takes while the agent is busy with something else (a node round, API
/// writes), so that a pod whose container waits, or whose cgroup just appeared, never waits for it.
struct Urgent<'a> {
    kernel: &'a Kernel,
    objects: &'a dyn ObjectSource,
    rounds: &'a mut mpsc::Receiver<RoundRequest>,
    new_cgroup: &'a CgroupSignal,
    sides: Sides<'a>,
    grants: &'a mut Option<Grants>,
    settling: &'a mut Settling,
}

impl Urgent<'_> {
    /// Runs `busy` to its end, settling meanwhile each pod that is asked for or whose cgroup
    /// appears. Returns its output and the requests whose pod's round failed (for the caller to
    /// answer).
    async fn serve_while<T>(&mut self, busy: impl Future<Output = T>) -> (T, Vec<RoundRequest>) {
        tokio::pin!(busy);
        let mut stuck = Vec::new();
        loop {
            tokio::select! {
                biased;
                out = &mut busy => return (out, stuck),
                Some(req) = self.rounds.recv() => {
                    let mut now = self.objects.snapshot();
                    if let Some(hint) = req.hint.as_ref() {
                        inputs::add_hint(&mut now, hint);
                    }
                    let focus: BTreeSet<String> = uid_of(&now, &req.pod).into_iter().collect();
                    if focus.is_empty() {
                        // Not a pod yet as far as anyone knows: the requester asks again.
                        let _ = req.reply.send(None);
                        continue;
                    }
                    match self.settle(&now, &focus).await {
                        Some(report) => {
                            let _ = req.reply.send(outcome_of(&report, &req.pod));
                        }
                        None => stuck.push(req),
                    }
                }
                () = self.new_cgroup.appeared() => {
                    let now = self.objects.snapshot();
                    let focus = self.settling.unsettled(&now);
                    if !focus.is_empty() {
                        self.settle(&now, &focus).await;
                    }
                }
            }
        }
    }

    /// The grants for a round of every pod (a near poll keeps the last ones). PodResources is
    /// asked while waiting pods are served: a kubelet slow to answer (seconds on a loaded node)
    /// must not hold the creations the runtime is waiting on. Returns the grants and the requests
    /// whose pod's round failed meanwhile.
    async fn grants_for_node(
        &mut self,
        objects: &Objects,
        near_poll: bool,
    ) -> (Option<Grants>, Vec<RoundRequest>) {
        let mut stuck = Vec::new();
        if let Some(k) = self.sides.kubelet.filter(|_| !near_poll) {
            // A pods round meanwhile may refresh them too; this listing is the newer.
            let listing =
                refresh_grants(&k.pod_resources, objects, &k.inventory, self.grants.clone());
            let (fresh, failed) = self.serve_while(listing).await;
            *self.grants = fresh;
            stuck = failed;
        }
        (self.sides.merged(self.grants), stuck)
    }

    /// Runs a pods round for `focus` with the grants it needs.
    async fn settle(&mut self, objects: &Objects, focus: &BTreeSet<String>) -> Option<RoundReport> {
        let grants = (self.sides)
            .grants_for(objects, focus, false, self.grants)
            .await;
        (self.settling)
            .settle(
                self.kernel,
                objects,
                grants.as_ref(),
                focus,
                self.new_cgroup,
            )
            .await
    }

    /// Writes the conditions of the pods settled so far (the node round would, up to 100 ms
    /// later), serving other pods meanwhile. Returns the requests whose pod's round failed.
    async fn report_settled(&mut self, agent: &mut Agent, sink: &dyn ApiSink) -> Vec<RoundRequest> {
        let mut stuck = Vec::new();
        // Those settled while these writes go out wait for the next turn or the node round.
        for (pods, report) in std::mem::take(&mut self.settling.unreported) {
            let write = agent.report_pods(&pods, &report, sink, Timestamp::now());
            stuck.extend(self.serve_while(write).await.1);
        }
        stuck
    }
}

/// The kubelet's and the DRA driver's sides, where a round's grants come from.
#[derive(Clone, Copy)]
struct Sides<'a> {
    kubelet: Option<&'a KubeletSide>,
    dra: Option<&'a DraSide>,
}

impl Sides<'_> {
    /// The grants for a round over `focus` (every pod when empty): PodResources is asked when the
    /// round needs fresh grants; not for a near poll (running pods, whose grants do not change),
    /// nor for pods none of which asks for units (a kubelet slow to answer must not hold their
    /// containers' start). Claims are grants like the device plugin's units: a pod's sum per
    /// region is its ceiling.
    async fn grants_for(
        self,
        snapshot: &Objects,
        focus: &BTreeSet<String>,
        near_poll: bool,
        grants: &mut Option<Grants>,
    ) -> Option<Grants> {
        let needs_grants = !near_poll
            && (focus.is_empty()
                || (snapshot.pods.iter()).any(|p| {
                    p.metadata.uid.as_ref().is_some_and(|u| focus.contains(u))
                        && inputs::asks_for_units(p)
                }));
        if let Some(k) = self.kubelet.filter(|_| needs_grants) {
            *grants = refresh_grants(&k.pod_resources, snapshot, &k.inventory, grants.take()).await;
        }
        self.merged(grants)
    }

    /// The kubelet's `grants` with the prepared claims' added.
    fn merged(self, grants: &Option<Grants>) -> Option<Grants> {
        match self.dra {
            Some(d) => Some(with_claims(grants.as_ref(), &d.claims)),
            None => grants.clone(),
        }
    }
}

/// When the next round of a kind that runs every `period` starts, the last one having started at
/// `began`: a period after it, or, if it ran past that, a whole period from now (a node too big
/// for its period is polled back to back no more than a small one).
fn next_start(began: tokio::time::Instant, period: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let due = began + period;
    if due > now { due } else { now + period }
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The UIDs of the pods in `report` whose usage approaches a threshold.
fn near_threshold(report: &RoundReport) -> BTreeSet<String> {
    (report.pods.iter())
        .filter(|p| {
            (p.regions.iter()).any(|r| {
                crate::decide::pressure::near_threshold(
                    &r.reading,
                    crate::decide::pressure::NEAR_PERCENT,
                )
            })
        })
        .map(|p| p.facts.uid.clone())
        .collect()
}

/// The outcome of pod `(namespace, name)` in `report`.
fn outcome_of(report: &RoundReport, pod: &(String, String)) -> Option<LimitsOutcome> {
    (report.pods.iter())
        .find(|p| (&p.facts.namespace, &p.facts.name) == (&pod.0, &pod.1))
        .map(|p| p.outcome.clone())
}

/// The UID of pod `(namespace, name)` among `objects`.
fn uid_of(objects: &Objects, pod: &(String, String)) -> Option<String> {
    objects.pods.iter().find_map(|p| {
        let meta = &p.metadata;
        let named = (meta.namespace.as_ref(), meta.name.as_ref()) == (Some(&pod.0), Some(&pod.1));
        meta.uid.clone().filter(|_| named)
    })
}

/// The UIDs of the pods among `objects` whose cgroup no round has found yet.
fn unsettled(objects: &Objects, settled: &BTreeSet<String>) -> BTreeSet<String> {
    (objects.pods.iter())
        .filter_map(|p| p.metadata.uid.clone())
        .filter(|uid| !settled.contains(uid))
        .collect()
}

/// The kubelet's grants (if any) with the prepared claims' grants added.
fn with_claims(kubelet: Option<&Grants>, claims: &ClaimStore) -> Grants {
    let mut merged = kubelet.cloned().unwrap_or_default();
    for (uid, grants) in claims.grants_by_pod() {
        let held = merged.by_uid.entry(uid).or_default();
        held.extend(
            grants
                .into_iter()
                .map(|g| crate::kubelet::decide::grants::Grant {
                    region: g.region,
                    bytes: g.bytes,
                }),
        );
    }
    merged
}

/// Fresh grants from PodResources; on failure the last known ones stay in use.
async fn refresh_grants(
    pr: &PodResourcesClient,
    objects: &Objects,
    inventory: &watch::Receiver<Inventory>,
    last: Option<Grants>,
) -> Option<Grants> {
    let listed_at = SystemTime::now();
    match pr.list().await {
        Ok(list) => {
            let known = inputs::known_pods(objects);
            // Borrowed only now, never across the await, so the loop's future stays `Send`.
            Some(join(
                &list,
                &known,
                &inventory.borrow(),
                RESOURCE_NAME,
                listed_at,
            ))
        }
        Err(err) => {
            warn!(
                reason = err.reason(),
                error = &err as &dyn std::error::Error,
                "PodResources unavailable, using the last grants"
            );
            match last {
                Some(g) if g.listing != Listing::Listed => Some(Grants::not_listed(format!(
                    "{}: {}",
                    err.reason(),
                    kube_dmem_crds::error_chain(&err)
                ))),
                last => last,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::{Instant, advance};

    use super::next_start;

    #[tokio::test(start_paused = true)]
    async fn a_round_that_runs_past_its_period_is_followed_a_whole_period_later() {
        let period = Duration::from_secs(1);
        let began = Instant::now();
        advance(Duration::from_millis(300)).await;
        assert_eq!(
            next_start(began, period),
            began + period,
            "on time: a period after it began"
        );
        advance(Duration::from_millis(900)).await;
        assert_eq!(
            next_start(began, period),
            began + Duration::from_millis(2200),
            "past its period: not back to back"
        );
    }
}
