//! CORE: [`RemediationState`], the eviction memory carried from pass to pass (successful
//! evictions in the last minute, refused evictions), and the selection of this pass's evictions
//! under the per-quota and cluster-wide limits. Time comes in as `now`.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube_dmem_crds::select::QuotaRef;

use super::{BLOCKED_RETRY_AFTER, Candidate, Eviction, EvictionOutcome, PodRef, WINDOW, after};

/// A refused eviction, remembered for pacing retries and for the quota's `EvictionBlocked`
/// condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The pod.
    pub pod: PodRef,
    /// The quota that asked for the eviction.
    pub quota: QuotaRef,
    /// First refusal in the current run of refusals.
    pub since: Timestamp,
    /// Latest attempt.
    pub last_attempt: Timestamp,
    /// Attempts so far.
    pub attempts: u32,
}

/// Eviction memory carried from pass to pass. Leadership changes start from an empty value,
/// which at worst allows one extra minute's budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemediationState {
    cluster_per_minute: u32,
    /// Successful evictions within the window, per quota: (time, pod UID).
    evicted: BTreeMap<QuotaRef, Vec<(Timestamp, String)>>,
    /// Refused evictions, by pod UID.
    blocked: BTreeMap<String, Blocked>,
}

/// This pass's evictions and what held other candidates back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Evictions to attempt, in order.
    pub evictions: Vec<Eviction>,
    /// Candidates held back by a rate limit.
    pub rate_limited: usize,
    /// Refused candidates waiting for their retry time.
    pub waiting_retry: usize,
    /// Earliest time a held-back candidate may go.
    pub wake_at: Option<Timestamp>,
}

impl RemediationState {
    /// Empty memory with the cluster-wide limit (`--max-evictions-per-minute`).
    pub fn new(cluster_per_minute: u32) -> Self {
        Self {
            cluster_per_minute,
            evicted: BTreeMap::new(),
            blocked: BTreeMap::new(),
        }
    }

    /// Names of the pods whose eviction for `quota` is currently refused, sorted.
    pub fn blocked_for(&self, quota: &QuotaRef) -> Vec<String> {
        let mut names: Vec<String> = self
            .blocked
            .values()
            .filter(|b| &b.quota == quota)
            .map(|b| b.pod.name.clone())
            .collect();
        names.sort();
        names
    }

    /// Successful evictions inside the window ending at `now`, cluster-wide.
    pub fn evictions_in_window(&self, now: Timestamp) -> usize {
        self.evicted
            .values()
            .flatten()
            .filter(|(t, _)| in_window(*t, now))
            .count()
    }

    /// Picks this pass's evictions from `candidates` (any order) and returns the state pruned
    /// to the window and to pods that are still candidates.
    pub fn select(&self, mut candidates: Vec<Candidate>, now: Timestamp) -> (Selection, Self) {
        candidates.sort_by(|a, b| (a.above_high_since, &a.pod).cmp(&(b.above_high_since, &b.pod)));
        let mut next = self.pruned(&candidates, now);
        let mut sel = Selection::default();
        let mut cluster_used = next.evictions_in_window(now);
        let mut quota_used: BTreeMap<&QuotaRef, usize> =
            next.evicted.iter().map(|(q, v)| (q, v.len())).collect();
        let recently_evicted = |uid: &str| next.evicted.values().flatten().any(|(_, u)| u == uid);
        let mut wake = |t: Timestamp| sel.wake_at = Some(sel.wake_at.map_or(t, |w| w.min(t)));
        let (mut planned, mut rate_limited, mut waiting) = (Vec::new(), 0, 0);
        for c in &candidates {
            // The watch has not shown the pod terminating yet; evicting again would spend budget.
            if recently_evicted(&c.pod.uid) {
                continue;
            }
            let blocked = next.blocked.get(&c.pod.uid);
            if let Some(b) = blocked
                && now < after(b.last_attempt, BLOCKED_RETRY_AFTER)
            {
                waiting += 1;
                wake(after(b.last_attempt, BLOCKED_RETRY_AFTER));
                continue;
            }
            let used = quota_used.get(&c.quota).copied().unwrap_or(0);
            if used >= c.per_minute as usize || cluster_used >= self.cluster_per_minute as usize {
                rate_limited += 1;
                wake(next.window_frees_at(&c.quota, now));
                continue;
            }
            *quota_used.entry(&c.quota).or_insert(0) += 1;
            cluster_used += 1;
            planned.push(Eviction {
                pod: c.pod.clone(),
                quota: c.quota.clone(),
                above_high_since: c.above_high_since,
                grace_period: c.grace_period,
                retry: blocked.is_some(),
            });
        }
        sel.evictions = planned;
        sel.rate_limited = rate_limited;
        sel.waiting_retry = waiting;
        next.evicted.retain(|_, v| !v.is_empty());
        (sel, next)
    }

    /// Records what the API did with this pass's evictions. Returns the new state and, per
    /// eviction, whether it is news worth an Event: every success, and the first refusal of a run
    /// (retries of a refused pod are logged and counted, not re-announced, so a long-blocked pod
    /// does not cause a write every retry).
    pub fn record(
        mut self,
        outcomes: &[(Eviction, EvictionOutcome)],
        now: Timestamp,
    ) -> (Self, Vec<bool>) {
        let mut news = Vec::with_capacity(outcomes.len());
        for (eviction, outcome) in outcomes {
            let uid = &eviction.pod.uid;
            match outcome {
                EvictionOutcome::Evicted => {
                    self.blocked.remove(uid);
                    self.evicted
                        .entry(eviction.quota.clone())
                        .or_default()
                        .push((now, uid.clone()));
                    news.push(true);
                }
                EvictionOutcome::Gone => {
                    self.blocked.remove(uid);
                    news.push(false);
                }
                EvictionOutcome::Refused { .. } => {
                    let entry = self.blocked.entry(uid.clone()).or_insert_with(|| Blocked {
                        pod: eviction.pod.clone(),
                        quota: eviction.quota.clone(),
                        since: now,
                        last_attempt: now,
                        attempts: 0,
                    });
                    entry.attempts += 1;
                    entry.last_attempt = now;
                    news.push(entry.attempts == 1);
                }
            }
        }
        (self, news)
    }

    /// Drops evictions older than the window and refusals of pods that are no longer candidates.
    fn pruned(&self, candidates: &[Candidate], now: Timestamp) -> Self {
        let mut next = self.clone();
        for window in next.evicted.values_mut() {
            window.retain(|(t, _)| in_window(*t, now));
        }
        next.blocked
            .retain(|uid, _| candidates.iter().any(|c| &c.pod.uid == uid));
        next
    }

    /// When the binding window (quota or cluster) next loses an entry; conservative (early) is
    /// fine, it only schedules another pass.
    fn window_frees_at(&self, quota: &QuotaRef, now: Timestamp) -> Timestamp {
        let oldest_quota = self
            .evicted
            .get(quota)
            .and_then(|v| v.iter().map(|(t, _)| *t).min());
        let oldest_any = self.evicted.values().flatten().map(|(t, _)| *t).min();
        oldest_quota
            .or(oldest_any)
            .map_or(after(now, WINDOW), |t| after(t, WINDOW))
    }
}

fn in_window(t: Timestamp, now: Timestamp) -> bool {
    now.duration_since(t) < SignedDuration::try_from(WINDOW).unwrap_or(SignedDuration::MAX)
}
