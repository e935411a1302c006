//! CORE: what one round reads, from the cached objects and the kubelet's grants: the pods that
//! still run on this node (finished pods hold no VRAM and are left alone), their rule facts with the
//! VRAM units PodResources says they hold, and the quotas split into valid and invalid.
//!
//! A pod that asks for `kube-dmem.io/vram` units while nobody can say which it holds (no
//! PodResources answer since the agent started, or an entry that cannot be joined yet) is held:
//! its grant is unknown, not absent, so the quota alone must not decide its limits
//! ([`RoundInputs::grant_unknown`]).
//!
//! Bad input never loosens a limit ([`keep_last_valid`]): a quota whose spec turns invalid (or
//! stops deserializing) keeps its last valid spec in force, remembered across rounds by UID; one
//! never seen valid leaves the pods it may govern (those its selector matches, or its whole
//! namespace when even the selector is unreadable) as they are. Only deleting a quota releases
//! its pods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube_dmem_crds::select::{self, PodFacts, QuotaFacts, QuotaRef, Selector, quota_facts};

use crate::cluster::objects::Objects;
use crate::kubelet::decide::grants::{Grants, KnownPod};
use crate::round::BadInputs;

/// The inputs of one round.
#[derive(Clone, Debug, Default)]
pub struct RoundInputs {
    /// Running (not finished) pods of this node, in cache order.
    pub pods: Vec<Arc<Pod>>,
    /// Their rule facts, in the same order.
    pub facts: Vec<PodFacts>,
    /// Valid quotas, each with its `metadata.uid`.
    pub quotas: Vec<(QuotaFacts, Option<String>)>,
    /// Quotas that are invalid or do not deserialize.
    pub invalid: Vec<InvalidQuota>,
    /// Pods (by UID) that ask for VRAM units whose grant is unknown, with why.
    pub grant_unknown: BTreeMap<String, String>,
}

/// A quota whose current spec cannot be applied.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidQuota {
    /// Namespace and name.
    pub key: QuotaRef,
    /// `metadata.uid`: a remembered spec is reused only for the same object.
    pub uid: Option<String>,
    /// Which of the namespace's pods it may govern.
    pub scope: Scope,
    /// Why it is invalid.
    pub error: String,
}

/// The pods an invalid quota may govern.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    /// Those its (valid) selector matches.
    Selector(Selector),
    /// Every pod of its namespace: its selector cannot be read.
    Namespace,
}

/// The last valid spec of each quota, by namespace and name, with the UID it was seen under.
pub type LastValid = BTreeMap<QuotaRef, (Option<String>, QuotaFacts)>;

/// Updates `memory` from this round's quotas and says how the invalid ones are treated: the
/// quotas to apply (valid ones, plus the last valid spec of each invalid one that has one) and
/// what the round must know about the invalid ones. Quotas that no longer exist are forgotten.
pub fn keep_last_valid(
    inputs: &RoundInputs,
    memory: &mut LastValid,
) -> (Vec<QuotaFacts>, BadInputs) {
    let present: std::collections::BTreeSet<&QuotaRef> = inputs
        .quotas
        .iter()
        .map(|(q, _)| &q.key)
        .chain(inputs.invalid.iter().map(|q| &q.key))
        .collect();
    memory.retain(|key, _| present.contains(key));
    let mut quotas = Vec::with_capacity(inputs.quotas.len());
    for (facts, uid) in &inputs.quotas {
        memory.insert(facts.key.clone(), (uid.clone(), facts.clone()));
        quotas.push(facts.clone());
    }
    let mut out = BadInputs::default();
    for bad in &inputs.invalid {
        match memory.get(&bad.key) {
            Some((uid, last)) if *uid == bad.uid => {
                quotas.push(last.clone());
                out.stale.insert(bad.key.clone(), bad.error.clone());
            }
            _ => {
                for pod in inputs.facts.iter().filter(|p| in_scope(bad, p)) {
                    out.held
                        .entry(pod.uid.clone())
                        .or_insert_with(|| (bad.key.clone(), bad.error.clone()));
                }
            }
        }
    }
    (quotas, out)
}

fn in_scope(quota: &InvalidQuota, pod: &PodFacts) -> bool {
    quota.key.namespace == pod.namespace
        && match &quota.scope {
            Scope::Selector(selector) => selector.matches(&pod.labels),
            Scope::Namespace => true,
        }
}

/// Whether a pod has finished (`Succeeded` or `Failed`): its containers are gone.
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// How long a pod's outcome may stay unsettled before that is worth a condition and a Warning:
/// a pod that looks alive without its cgroup (the kubelet removes a finished pod's cgroup before
/// the API server hears that its containers exited; under load the status lags by seconds), or
/// a pod whose grant is unknown (PodResources answers a restarted agent within a round or two).
pub const UNSETTLED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether an outcome unsettled since `since` is news at `now`.
pub fn unsettled_is_news(since: Timestamp, now: Timestamp) -> bool {
    now.duration_since(since).as_secs_f64() >= UNSETTLED_GRACE.as_secs_f64()
}

/// Whether a pod may rightly have no cgroup on the node: it has not started yet (`Pending`: the
/// kubelet makes the pod cgroup when it creates the sandbox, seconds after scheduling), its
/// containers have all exited (the kubelet removes the cgroup before the API shows `Succeeded` or
/// `Failed`), or it is being deleted. For these a missing cgroup is no news: reporting
/// `CgroupNotFound` would put a Warning on every pod that starts or completes normally, and a
/// completed pod would keep it for good (finished pods are not looked at again).
pub fn cgroup_may_be_absent(pod: &Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return true;
    }
    let Some(status) = pod.status.as_ref() else {
        return true;
    };
    if matches!(status.phase.as_deref(), None | Some("Pending")) {
        return true;
    }
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    !containers.is_empty()
        && containers
            .iter()
            .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

/// Whether some container of `pod` (init containers included) asks for `kube-dmem.io/vram`
/// units. Extended resources are requested in limits (requests, if given, must equal them).
pub fn asks_for_units(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let asks = |c: &k8s_openapi::api::core::v1::Container| {
        let resources = c.resources.as_ref();
        [
            resources.and_then(|r| r.limits.as_ref()),
            resources.and_then(|r| r.requests.as_ref()),
        ]
        .into_iter()
        .flatten()
        .filter_map(|m| m.get(kube_dmem_crds::VRAM_RESOURCE))
        // An unreadable count is taken as a request: holding a pod is the safe mistake.
        .any(|q| q.0.trim().parse::<u64>().map_or(true, |n| n > 0))
    };
    spec.containers.iter().any(asks) || spec.init_containers.iter().flatten().any(asks)
}

/// The round inputs from `objects`, with `grants` (none without a kubelet).
pub fn round_inputs(objects: &Objects, grants: Option<&Grants>) -> RoundInputs {
    round_inputs_for(objects, grants, None)
}

/// [`round_inputs`] with the facts of the pods in `only` alone, when given: a round of a few pods
/// must not pay for the facts of the node's hundred (it is on the path of a new pod's limits).
pub fn round_inputs_for(
    objects: &Objects,
    grants: Option<&Grants>,
    only: Option<&BTreeSet<String>>,
) -> RoundInputs {
    let pods: Vec<Arc<Pod>> = objects
        .pods
        .iter()
        .filter(|p| !is_finished(p) && p.metadata.uid.is_some())
        .cloned()
        .collect();
    let wanted = |pod: &&Arc<Pod>| {
        only.is_none_or(|uids| (pod.metadata.uid.as_ref()).is_some_and(|uid| uids.contains(uid)))
    };
    let grant_unknown = grants
        .map(|g| {
            pods.iter()
                .filter(wanted)
                .filter(|pod| asks_for_units(pod))
                .filter_map(|pod| {
                    let meta = &pod.metadata;
                    let uid = meta.uid.as_deref().unwrap_or_default();
                    let why = g.unknown(
                        meta.namespace.as_deref().unwrap_or_default(),
                        meta.name.as_deref().unwrap_or_default(),
                        uid,
                    )?;
                    Some((uid.to_owned(), why))
                })
                .collect()
        })
        .unwrap_or_default();
    let facts = pods
        .iter()
        .filter(wanted)
        .map(|pod| {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            // Every region the pod holds units on: one Allocate never mixes regions, but each
            // container is allocated on its own, so a pod can hold units of several.
            let held = grants
                .and_then(|g| g.by_uid.get(uid))
                .map(|held| {
                    held.iter()
                        .map(|g| select::Grant {
                            region: g.region.clone(),
                            bytes: g.bytes,
                        })
                        .collect()
                })
                .unwrap_or_default();
            PodFacts::from_pod(pod, held)
        })
        .collect();
    let find = |key: &QuotaRef| {
        objects.quotas.iter().find(|q| {
            q.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                && q.metadata.name.as_deref() == Some(key.name.as_str())
        })
    };
    let uid_of = |key: &QuotaRef| find(key).and_then(|q| q.metadata.uid.clone());
    let (valid, invalid) = quota_facts(objects.quotas.iter());
    let mut invalid: Vec<InvalidQuota> = invalid
        .into_iter()
        .map(|(key, err)| {
            let scope = find(&key)
                .and_then(|q| Selector::compile(&q.spec.selector).ok())
                .map_or(Scope::Namespace, Scope::Selector);
            InvalidQuota {
                uid: uid_of(&key),
                key,
                scope,
                error: kube_dmem_crds::error_chain(&err),
            }
        })
        .collect();
    invalid.extend(objects.undecodable.iter().map(|q| {
        InvalidQuota {
            key: q.key.clone(),
            uid: q.uid.clone(),
            scope: q
                .selector
                .as_ref()
                .and_then(|s| Selector::compile(s).ok())
                .map_or(Scope::Namespace, Scope::Selector),
            error: q.error.clone(),
        }
    }));
    let quotas = valid
        .into_iter()
        .map(|facts| {
            let uid = uid_of(&facts.key);
            (facts, uid)
        })
        .collect();
    RoundInputs {
        pods,
        facts,
        quotas,
        invalid,
        grant_unknown,
    }
}

/// The pods `grants::join` matches PodResources entries against.
pub fn known_pods(objects: &Objects) -> Vec<KnownPod> {
    objects
        .pods
        .iter()
        .filter_map(|pod| {
            let meta = &pod.metadata;
            Some(KnownPod {
                namespace: meta.namespace.clone()?,
                name: meta.name.clone()?,
                uid: meta.uid.clone()?,
                created: meta
                    .creation_timestamp
                    .as_ref()
                    .map_or(SystemTime::UNIX_EPOCH, |t| SystemTime::from(t.0)),
            })
        })
        .collect()
}

/// Adds `hint` (a pod as the runtime described it) to `objects` unless a pod with its UID is
/// there already: the watch's object, with its spec and status, always wins.
pub fn add_hint(objects: &mut Objects, hint: &Arc<Pod>) {
    let uid = hint.metadata.uid.as_deref();
    if uid.is_some()
        && !objects
            .pods
            .iter()
            .any(|p| p.metadata.uid.as_deref() == uid)
    {
        objects.pods.push(Arc::clone(hint));
    }
}

/// Pods by UID, to find a report's pod object again.
pub fn by_uid(pods: &[Arc<Pod>]) -> BTreeMap<&str, &Pod> {
    pods.iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, p.as_ref())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value, deleting: bool) -> Pod {
        let mut meta = serde_json::json!({"name": "p", "namespace": "ns", "uid": "u"});
        if deleting {
            meta["deletionTimestamp"] = "2026-11-30T10:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({"metadata": meta, "status": status}))
            .expect("pod")
    }

    #[test]
    fn an_unsettled_outcome_is_news_only_after_the_grace() {
        let since: Timestamp = "2026-11-30T10:00:00Z".parse().expect("timestamp");
        let at = |secs: i64| since + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        assert!(!unsettled_is_news(since, since));
        assert!(!unsettled_is_news(since, at(29)));
        assert!(unsettled_is_news(since, at(30)));
        // A clock that steps back never turns absence into news.
        assert!(!unsettled_is_news(since, at(-60)));
    }

    #[test]
    fn a_missing_cgroup_is_expected_only_before_start_after_exit_or_while_deleting() {
        let running = serde_json::json!({"running": {}});
        let exited = serde_json::json!({"terminated": {"exitCode": 0}});
        let statuses = |states: &[&serde_json::Value]| -> serde_json::Value {
            states
                .iter()
                .map(|s| serde_json::json!({"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": s}))
                .collect()
        };
        let table = [
            ("no status yet", serde_json::json!(null), false, true),
            (
                "pending",
                serde_json::json!({"phase": "Pending"}),
                false,
                true,
            ),
            (
                "running",
                serde_json::json!({"phase": "Running", "containerStatuses": statuses(&[&running])}),
                false,
                false,
            ),
            (
                "running, status not yet filled",
                serde_json::json!({"phase": "Running"}),
                false,
                false,
            ),
            (
                "one of two exited",
                serde_json::json!({"phase": "Running", "containerStatuses": statuses(&[&exited, &running])}),
                false,
                false,
            ),
            (
                "all exited, phase lagging",
                serde_json::json!({"phase": "Running", "containerStatuses": statuses(&[&exited, &exited])}),
                false,
                true,
            ),
            (
                "running but deleting",
                serde_json::json!({"phase": "Running", "containerStatuses": statuses(&[&running])}),
                true,
                true,
            ),
        ];
        for (case, status, deleting, expected) in table {
            assert_eq!(
                cgroup_may_be_absent(&pod(status, deleting)),
                expected,
                "{case}"
            );
        }
    }

    fn asking(name: &str, uid: &str, containers: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "ns", "uid": uid},
                "spec": containers,
                "status": {"phase": "Running"},
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn a_pod_asking_for_units_without_a_known_grant_is_held_with_why() {
        let res = kube_dmem_crds::VRAM_RESOURCE;
        let c = |limits: serde_json::Value| serde_json::json!({"name": "c", "resources": {"limits": limits}});
        let units = asking(
            "units",
            "u1",
            serde_json::json!({"containers": [c(serde_json::json!({res: "2"}))]}),
        );
        let init = asking(
            "init",
            "u2",
            serde_json::json!({"containers": [c(serde_json::json!({}))], "initContainers": [c(serde_json::json!({res: "1"}))]}),
        );
        let zero = asking(
            "zero",
            "u3",
            serde_json::json!({"containers": [c(serde_json::json!({res: "0"}))]}),
        );
        let plain = asking(
            "plain",
            "u4",
            serde_json::json!({"containers": [c(serde_json::json!({"cpu": "1"}))]}),
        );
        assert!(asks_for_units(&units) && asks_for_units(&init));
        assert!(!asks_for_units(&zero) && !asks_for_units(&plain));
        let objects = Objects {
            pods: vec![units, init, zero, plain],
            ..Objects::default()
        };
        // Without a device plugin nothing is unknown; before PodResources answers, the two
        // pods that ask for units are.
        assert!(round_inputs(&objects, None).grant_unknown.is_empty());
        assert!(
            round_inputs(&objects, Some(&Grants::default()))
                .grant_unknown
                .is_empty()
        );
        let held =
            round_inputs(&objects, Some(&Grants::not_listed("ConnectPodResources"))).grant_unknown;
        assert_eq!(held.keys().collect::<Vec<_>>(), ["u1", "u2"]);
        // Once `units` is joined, only `init` stays unknown; its facts carry no grant.
        let mut grants = Grants {
            listing: crate::kubelet::decide::grants::Listing::Listed,
            ..Grants::default()
        };
        grants.by_uid.insert(
            "u1".into(),
            vec![crate::kubelet::decide::grants::Grant {
                region: "drm/0000:03:00.0/vram0".into(),
                bytes: 2 << 30,
            }],
        );
        let inputs = round_inputs(&objects, Some(&grants));
        assert_eq!(inputs.grant_unknown.keys().collect::<Vec<_>>(), ["u2"]);
        assert_eq!(inputs.facts[0].grants.len(), 1);
        assert!(inputs.facts[1].grants.is_empty());
        // A round of some pods has their facts alone, and says only theirs are unknown.
        let some: BTreeSet<String> = ["u2".to_owned(), "u4".to_owned()].into();
        let inputs = round_inputs_for(&objects, Some(&grants), Some(&some));
        let uids: Vec<&str> = inputs.facts.iter().map(|f| f.uid.as_str()).collect();
        assert_eq!(uids, ["u2", "u4"]);
        assert_eq!(inputs.grant_unknown.keys().collect::<Vec<_>>(), ["u2"]);
        assert_eq!(inputs.pods.len(), 4, "the pods stay whole");
    }

    #[test]
    fn a_hint_fills_in_only_for_a_pod_the_watch_lacks() {
        let watched = asking("units", "u1", serde_json::json!({"containers": []}));
        let mut objects = Objects {
            pods: vec![Arc::clone(&watched)],
            ..Objects::default()
        };
        // The same UID from the runtime: the watch's object stays, alone.
        let stale = asking("units", "u1", serde_json::json!({}));
        add_hint(&mut objects, &stale);
        assert_eq!(objects.pods.len(), 1);
        assert!(Arc::ptr_eq(&objects.pods[0], &watched));
        let fresh = asking("fresh", "u2", serde_json::json!({}));
        add_hint(&mut objects, &fresh);
        assert_eq!(objects.pods.len(), 2);
    }
}
