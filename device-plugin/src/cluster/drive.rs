//! EDGE: the agent loop, apart from its wiring. [`run`](super::run) builds the real parts (the
//! watch caches, the kube sink, the kubelet clients) and hands them to [`drive`]; the node agent
//! benchmark (`benches/agent.rs`) hands it an in-memory object source and a recording sink, so it
//! measures this very loop, with its real timers, without an API server.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::agent::Agent;
use super::cgroup_watch::CgroupSignal;
use super::health::Health;
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
use crate::round::LimitsOutcome;

/// Poll interval while some pod's usage is near its `high` or `max`
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
    /// Full re-evaluation interval.
    pub resync: Duration,
    /// Set ready after the first good round.
    pub health: Arc<Health>,
}

/// Runs rounds until `stop`: on a request, a new cgroup, a (debounced) change, every poll interval
/// and every resync (which also forgets what was written).
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
        resync,
        health,
    } = parts;
    let fast_poll = NEAR_POLL.min(poll_interval);
    let mut next_poll = tokio::time::Instant::now() + poll_interval;
    let mut resync = tokio::time::interval(resync);
    resync.tick().await;
    // Until PodResources first answers, who holds units is unknown, not "nobody": pods asking
    // for units keep what is in force (a restarted agent must not lapse their limits).
    let mut grants: Option<Grants> = kubelet
        .as_ref()
        .map(|_| Grants::not_listed("no List call yet"));
    let mut grant_unknown_since: Option<tokio::time::Instant> = None;
    loop {
        let mut pending: Option<RoundRequest> = None;
        let mut claim_round: Option<ClaimRound> = None;
        let dra_request = async {
            match dra.as_mut() {
                Some(d) => d.rounds.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(req) = rounds.recv() => pending = Some(req),
            Some(req) = dra_request => claim_round = Some(req),
            () = new_cgroup.appeared() => {}
            // A new cgroup cuts the debounce short: its limits must precede the workload.
            // A pod change may be a new pod whose cgroup the kubelet is about to make: scan fast
            // until the next round has found every pod's cgroup.
            () = trigger.notified() => {
                new_cgroup.expect(true);
                tokio::select! {
                    biased;
                    () = new_cgroup.appeared() => {}
                    () = tokio::time::sleep(DEBOUNCE) => {}
                }
            }
            () = tokio::time::sleep_until(next_poll) => {}
            _ = resync.tick() => agent.forget_writes(),
        }
        let mut snapshot = objects.snapshot();
        if let Some(hint) = pending.as_ref().and_then(|r| r.hint.as_ref()) {
            inputs::add_hint(&mut snapshot, hint);
        }
        if let Some(k) = &kubelet {
            grants = refresh_grants(&k.pod_resources, &snapshot, &k.inventory, grants.take()).await;
        }
        // Claims are grants like the device plugin's units: a pod's sum per region is its ceiling.
        let merged = dra
            .as_ref()
            .map(|d| with_claims(grants.as_ref(), &d.claims));
        let result = agent
            .round(
                &snapshot,
                merged.as_ref().or(grants.as_ref()),
                sink,
                Timestamp::now(),
            )
            .await;
        match &result {
            Ok(report) => {
                health.set_ready();
                // Adaptive polling: fast while a pod approaches a threshold, or for a while after
                // a pod's grant turned unknown (a restarted agent learns its devices in its first
                // round; a kubelet that lasts longer is not worth 10 rounds a second).
                let now = tokio::time::Instant::now();
                let unknown = (report.pods.iter())
                    .any(|p| matches!(p.outcome, LimitsOutcome::GrantUnknown { .. }));
                if !unknown {
                    grant_unknown_since = None;
                }
                let newly_unknown = unknown
                    && now - *grant_unknown_since.get_or_insert(now) < inputs::UNSETTLED_GRACE;
                let near = report.pods.iter().flat_map(|p| &p.regions).any(|r| {
                    crate::decide::pressure::near_threshold(
                        &r.reading,
                        crate::decide::pressure::NEAR_PERCENT,
                    )
                }) || newly_unknown;
                next_poll =
                    tokio::time::Instant::now() + if near { fast_poll } else { poll_interval };
                let waiting = report
                    .pods
                    .iter()
                    .any(|p| p.outcome == LimitsOutcome::CgroupNotFound);
                new_cgroup.expect(waiting);
            }
            Err(err) => {
                next_poll = tokio::time::Instant::now() + poll_interval;
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
        if let Some(req) = pending {
            let outcome = result.ok().and_then(|report| {
                report
                    .pods
                    .into_iter()
                    .find(|p| {
                        (p.facts.namespace.as_str(), p.facts.name.as_str())
                            == (req.pod.0.as_str(), req.pod.1.as_str())
                    })
                    .map(|p| p.outcome)
            });
            let _ = req.reply.send(outcome);
        }
    }
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
