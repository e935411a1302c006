//! CORE: what the NRI plugin subscribes to, which pod a runtime request names (and what it says
//! about the pod, [`pod_from_sandbox`]), how long the plugin may take to answer, and what a
//! round's outcome means for the request waiting on it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::nri::proto::api::{Event, PodSandbox};
use crate::round::LimitsOutcome;

/// The events the plugin handles: a pod sandbox being created (its cgroup exists then, made by the
/// kubelet before it asks the runtime) and a container being created (before its process starts).
pub const SUBSCRIBED: [Event; 2] = [Event::RunPodSandbox, Event::CreateContainer];

/// The runtime's request timeout when `Configure` does not say (NRI's default, 2 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Margin kept below the runtime's request timeout: NRI treats a plugin that misses the deadline as
/// broken and closes its connection, so the answer must leave in time even when the loop is slow.
pub const MIN_MARGIN: Duration = Duration::from_millis(250);

/// Shortest budget ever used, so a tiny configured timeout still lets one round run.
pub const MIN_BUDGET: Duration = Duration::from_millis(100);

/// The subscription bit mask: bit `event - 1` for each event.
pub fn event_mask(events: &[Event]) -> i32 {
    events
        .iter()
        .map(|e| *e as i32)
        .filter(|n| (1..32).contains(n))
        .fold(0, |mask, n| mask | (1 << (n - 1)))
}

/// A Kubernetes pod as the runtime names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (the pod cgroup is `pod<UID>`); may be empty for sandboxes not made by a kubelet.
    pub uid: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The pod a sandbox belongs to; `None` for sandboxes without Kubernetes metadata (`ctr`, tests).
pub fn pod_key(pod: Option<&PodSandbox>) -> Option<PodKey> {
    let pod = pod?;
    if pod.namespace.is_empty() || pod.name.is_empty() {
        return None;
    }
    Some(PodKey {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
    })
}

/// Labels the kubelet adds to every sandbox's CRI labels besides the pod's own.
pub const KUBELET_SANDBOX_LABELS: [&str; 3] = [
    "io.kubernetes.pod.name",
    "io.kubernetes.pod.namespace",
    "io.kubernetes.pod.uid",
];

/// The pod as the runtime's sandbox describes it: namespace, name, UID, the pod's labels (the
/// kubelet copies them into the sandbox's, adding [`KUBELET_SANDBOX_LABELS`]) and annotations.
/// That is all a quota's selector reads, so a round can govern a new pod from it while the API
/// watch has not delivered the pod yet (slow under load, and the sandbox's cgroup exists
/// already). `None` without a namespace, name and UID. It carries no spec, so it never asks for
/// units; a pod that does is started through `PreStartContainer`, which waits for the API object.
pub fn pod_from_sandbox(sandbox: &PodSandbox) -> Option<Pod> {
    if sandbox.namespace.is_empty() || sandbox.name.is_empty() || sandbox.uid.is_empty() {
        return None;
    }
    let labels = (sandbox.labels.iter())
        .filter(|(k, _)| !KUBELET_SANDBOX_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let annotations = (sandbox.annotations.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(Pod {
        metadata: ObjectMeta {
            namespace: Some(sandbox.namespace.clone()),
            name: Some(sandbox.name.clone()),
            uid: Some(sandbox.uid.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..Pod::default()
    })
}

/// How long a request may wait for the agent loop: the runtime's timeout (`request_timeout_ms`
/// from `Configure`, 0 meaning the default) less a quarter of it, at least [`MIN_MARGIN`] less.
pub fn answer_budget(request_timeout_ms: i64) -> Duration {
    let timeout = u64::try_from(request_timeout_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_millis);
    let margin = (timeout / 4).max(MIN_MARGIN);
    timeout.saturating_sub(margin).max(MIN_BUDGET)
}

/// What a creation request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The pod's limits are in force (or it has none to enforce).
    InForce,
    /// The round ran but the limits are not in force, with the `VRAMLimitsApplied` reason.
    NotInForce(&'static str),
    /// The budget ran out before the loop confirmed the limits.
    TimedOut,
    /// The agent loop is gone (shutting down).
    LoopGone,
    /// The request names no Kubernetes pod; nothing to do.
    NoPod,
}

/// After one round: answer now, or run another round if the budget allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Answer with this.
    Answer(Ensured),
    /// Another round may succeed; this reason is the answer if the budget ends first.
    Retry(&'static str),
}

/// What the pod's outcome in a round (`None`: the pod was not in the round) means for a creation
/// request. The pod may not be in the watch cache yet, or its outcome may settle by itself
/// ([`LimitsOutcome::may_settle`]): worth another round. Anything else is final.
pub fn after_round(outcome: Option<&LimitsOutcome>) -> Next {
    match outcome {
        Some(o) if o.in_force() => Next::Answer(Ensured::InForce),
        None => Next::Retry("PodNotFound"),
        Some(o) if o.may_settle() => Next::Retry(o.reason()),
        Some(o) => Next::Answer(Ensured::NotInForce(o.reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_retried_only_while_the_pod_may_still_appear() {
        assert_eq!(
            after_round(Some(&LimitsOutcome::Applied)),
            Next::Answer(Ensured::InForce)
        );
        assert_eq!(
            after_round(Some(&LimitsOutcome::NotGoverned)),
            Next::Answer(Ensured::InForce)
        );
        assert_eq!(after_round(None), Next::Retry("PodNotFound"));
        assert!(matches!(
            after_round(Some(&LimitsOutcome::CgroupNotFound)),
            Next::Retry(_)
        ));
        let unknown = LimitsOutcome::GrantUnknown {
            why: "PodResources has not answered".into(),
        };
        assert_eq!(after_round(Some(&unknown)), Next::Retry("GrantUnknown"));
        assert!(matches!(
            after_round(Some(&LimitsOutcome::DmemUnavailable)),
            Next::Answer(Ensured::NotInForce(_))
        ));
    }

    #[test]
    fn mask_sets_bit_event_minus_one() {
        // RUN_POD_SANDBOX = 1 -> bit 0; CREATE_CONTAINER = 4 -> bit 3.
        assert_eq!(event_mask(&SUBSCRIBED), 0b1001);
        assert_eq!(event_mask(&[Event::Unknown]), 0);
        assert_eq!(event_mask(&[Event::StopContainer]), 1 << 9);
    }

    #[test]
    fn pod_key_needs_namespace_and_name() {
        let pod = PodSandbox {
            id: "sb".into(),
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u-1".into(),
            ..PodSandbox::default()
        };
        let key = pod_key(Some(&pod)).unwrap();
        assert_eq!(key.to_string(), "ns/p");
        assert_eq!(key.uid, "u-1");
        assert_eq!(pod_key(None), None);
        let bare = PodSandbox {
            namespace: String::new(),
            ..pod
        };
        assert_eq!(pod_key(Some(&bare)), None);
    }

    #[test]
    fn budget_stays_below_the_runtime_timeout() {
        assert_eq!(answer_budget(0), Duration::from_millis(1500));
        assert_eq!(answer_budget(-5), Duration::from_millis(1500));
        assert_eq!(answer_budget(2000), Duration::from_millis(1500));
        assert_eq!(answer_budget(10_000), Duration::from_millis(7500));
        assert_eq!(answer_budget(500), Duration::from_millis(250));
        assert_eq!(answer_budget(200), MIN_BUDGET);
        for ms in [1, 300, 1000, 2000, 5000, 60_000] {
            assert!(
                answer_budget(ms) < Duration::from_millis(ms as u64).max(MIN_BUDGET + MIN_MARGIN)
            );
        }
    }

    #[test]
    fn a_sandbox_describes_its_pod_without_the_kubelets_labels() {
        let sandbox = PodSandbox {
            name: "train-0".into(),
            namespace: "ml".into(),
            uid: "u-1".into(),
            labels: [
                ("app", "train"),
                ("io.kubernetes.pod.name", "train-0"),
                ("io.kubernetes.pod.namespace", "ml"),
                ("io.kubernetes.pod.uid", "u-1"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..PodSandbox::default()
        };
        let pod = pod_from_sandbox(&sandbox).expect("a kubelet's sandbox");
        let facts = kube_dmem_crds::select::PodFacts::from_pod(&pod, Vec::new());
        assert_eq!(
            (facts.namespace.as_str(), facts.name.as_str()),
            ("ml", "train-0")
        );
        assert_eq!(facts.uid, "u-1");
        assert_eq!(facts.labels.len(), 1, "{:?}", facts.labels);
        assert_eq!(facts.labels.get("app").map(String::as_str), Some("train"));
        assert!(!crate::decide::inputs::asks_for_units(&pod));
        let unnamed = PodSandbox {
            uid: String::new(),
            ..sandbox
        };
        assert_eq!(pod_from_sandbox(&unnamed), None);
    }
}
