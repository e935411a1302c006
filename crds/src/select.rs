//! CORE: which quota governs a pod, and which quotas lose.
//!
//! Owns label-selector semantics and the precedence between quotas. A quota selects a pod when both
//! live in the same namespace and the pod's labels satisfy the quota's selector (Kubernetes
//! `LabelSelector` semantics). Of the quotas that select a pod, the one that ranks first by
//! [`precedence`] governs it: highest `priority`, then oldest `creationTimestamp`, then name. Every
//! other selecting quota has lost to it for that pod, which [`resolve`] reports per quota so the
//! operator can set `Conflict`. Both binaries feed these functions from plain [`PodFacts`] and
//! [`QuotaFacts`], so their answers cannot differ.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use crate::DmemQuota;
use crate::validate::{ValidQuota, ValidationError, validate};

/// A pod's labels.
pub type Labels = BTreeMap<String, String>;

/// VRAM the scheduler granted a pod through `kube-dmem.io/vram` units (from PodResources).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The region the units came from, for example `drm/0000:03:00.0/vram0`.
    pub region: String,
    /// Units times unit size, in bytes.
    pub bytes: u64,
}

/// What the rules need to know about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID; [`Resolution`] keys pods by it.
    pub uid: String,
    /// The pod's labels.
    pub labels: Labels,
    /// VRAM units the pod holds, one entry per region (a pod's containers may hold units of
    /// different regions); empty when it holds none.
    pub grants: Vec<Grant>,
}

impl PodFacts {
    /// The facts of an API pod; `grants` come from the kubelet's PodResources, not from the pod.
    pub fn from_pod(pod: &Pod, grants: Vec<Grant>) -> Self {
        let meta = &pod.metadata;
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            grants,
        }
    }
}

/// Identifies a quota: its namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuotaRef {
    /// The quota's namespace.
    pub namespace: String,
    /// The quota's name.
    pub name: String,
}

impl std::fmt::Display for QuotaRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the rules need to know about a quota: its identity, age and checked spec.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaFacts {
    /// Namespace and name.
    pub key: QuotaRef,
    /// `metadata.creationTimestamp`; `None` (not yet persisted) ranks after any timestamp.
    pub created: Option<Time>,
    /// The validated spec.
    pub spec: ValidQuota,
}

impl QuotaFacts {
    /// Checks a quota's spec and keeps what the rules need.
    ///
    /// # Errors
    /// The first rule the spec breaks; such a quota must not select or limit anything.
    pub fn from_quota(quota: &DmemQuota) -> Result<Self, ValidationError> {
        Ok(Self {
            key: quota_ref(quota),
            created: quota.metadata.creation_timestamp.clone(),
            spec: validate(&quota.spec)?,
        })
    }
}

/// Splits quotas into the valid ones, as facts, and the invalid ones with their first error (to
/// report; they govern nothing).
pub fn quota_facts<'a, I>(quotas: I) -> (Vec<QuotaFacts>, Vec<(QuotaRef, ValidationError)>)
where
    I: IntoIterator<Item = &'a DmemQuota>,
{
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for quota in quotas {
        match QuotaFacts::from_quota(quota) {
            Ok(facts) => valid.push(facts),
            Err(err) => invalid.push((quota_ref(quota), err)),
        }
    }
    (valid, invalid)
}

fn quota_ref(quota: &DmemQuota) -> QuotaRef {
    QuotaRef {
        namespace: quota.metadata.namespace.clone().unwrap_or_default(),
        name: quota.metadata.name.clone().unwrap_or_default(),
    }
}

/// A label selector that passed validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One compiled requirement; `matchLabels` pairs become `In` with one value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

/// Why a label selector is malformed (it then selects nothing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement has an empty key.
    #[error("matchExpressions[{index}]: key is empty")]
    EmptyKey {
        /// Position in `matchExpressions`.
        index: usize,
    },
    /// `In`/`NotIn` without values.
    #[error("matchExpressions[{index}]: operator {operator} needs at least one value")]
    ValuesRequired {
        /// Position in `matchExpressions`.
        index: usize,
        /// The operator.
        operator: String,
    },
    /// `Exists`/`DoesNotExist` with values.
    #[error("matchExpressions[{index}]: operator {operator} takes no values")]
    ValuesForbidden {
        /// Position in `matchExpressions`.
        index: usize,
        /// The operator.
        operator: String,
    },
    /// An operator other than `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error(
        "matchExpressions[{index}]: unknown operator {operator:?} (expected In, NotIn, Exists or DoesNotExist)"
    )]
    UnknownOperator {
        /// Position in `matchExpressions`.
        index: usize,
        /// The operator as written.
        operator: String,
    },
}

impl Selector {
    /// Compiles a `LabelSelector`; `{}` selects everything.
    ///
    /// # Errors
    /// [`SelectorError`] for the first malformed requirement.
    pub fn compile(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements: Vec<Requirement> = (selector.match_labels.iter().flatten())
            .map(|(k, v)| Requirement::In(k.clone(), BTreeSet::from([v.clone()])))
            .collect();
        for (index, expr) in selector.match_expressions.iter().flatten().enumerate() {
            if expr.key.is_empty() {
                return Err(SelectorError::EmptyKey { index });
            }
            let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
            let key = expr.key.clone();
            let operator = expr.operator.clone();
            let requirement = match (expr.operator.as_str(), values.is_empty()) {
                ("In" | "NotIn", true) => {
                    return Err(SelectorError::ValuesRequired { index, operator });
                }
                ("Exists" | "DoesNotExist", false) => {
                    return Err(SelectorError::ValuesForbidden { index, operator });
                }
                ("In", false) => Requirement::In(key, values),
                ("NotIn", false) => Requirement::NotIn(key, values),
                ("Exists", true) => Requirement::Exists(key),
                ("DoesNotExist", true) => Requirement::DoesNotExist(key),
                _ => return Err(SelectorError::UnknownOperator { index, operator }),
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether labels satisfy every requirement (`NotIn` also holds when the label is absent).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|req| match req {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

/// Whether `quota` selects `pod`: same namespace and a matching selector.
pub fn selects(quota: &QuotaFacts, pod: &PodFacts) -> bool {
    quota.key.namespace == pod.namespace && quota.spec.selector.matches(&pod.labels)
}

/// Total order between quotas; `Less` means `a` outranks `b`. Higher `priority` first, then the
/// older `creationTimestamp` (a missing one last), then name, then namespace, so no two distinct
/// quotas tie and the result never depends on input order.
pub fn precedence(a: &QuotaFacts, b: &QuotaFacts) -> Ordering {
    b.spec
        .priority
        .cmp(&a.spec.priority)
        .then_with(|| match (&a.created, &b.created) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.key.name.cmp(&b.key.name))
        .then_with(|| a.key.namespace.cmp(&b.key.namespace))
}

/// The quota that governs `pod`, if any selects it.
pub fn governing<'q>(quotas: &'q [QuotaFacts], pod: &PodFacts) -> Option<&'q QuotaFacts> {
    quotas
        .iter()
        .filter(|q| selects(q, pod))
        .min_by(|a, b| precedence(a, b))
}

/// Who governs whom, over all quotas and pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Governing quota per pod UID; pods no quota selects are absent.
    pub governing: BTreeMap<String, QuotaRef>,
    /// UIDs of the pods each quota governs; quotas governing none are absent.
    pub governed: BTreeMap<QuotaRef, BTreeSet<String>>,
    /// Per quota, the quotas that outranked it for at least one pod it selects; quotas that lost
    /// nothing are absent.
    pub lost_to: BTreeMap<QuotaRef, BTreeSet<QuotaRef>>,
}

/// Resolves every pod against every quota.
pub fn resolve(quotas: &[QuotaFacts], pods: &[PodFacts]) -> Resolution {
    let mut resolution = Resolution::default();
    for pod in pods {
        let Some(winner) = governing(quotas, pod) else {
            continue;
        };
        resolution
            .governing
            .insert(pod.uid.clone(), winner.key.clone());
        resolution
            .governed
            .entry(winner.key.clone())
            .or_default()
            .insert(pod.uid.clone());
        for loser in quotas
            .iter()
            .filter(|q| q.key != winner.key && selects(q, pod))
        {
            resolution
                .lost_to
                .entry(loser.key.clone())
                .or_default()
                .insert(winner.key.clone());
        }
    }
    resolution
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{TestQuota, labels, pod};
    use proptest::prelude::*;

    fn star(q: TestQuota) -> TestQuota {
        q.limit("*", &[("max", "1Gi")])
    }

    #[test]
    fn selector_semantics() {
        let base = || star(TestQuota::new("ns", "q"));
        type Case = (TestQuota, &'static [(&'static str, &'static str)], bool);
        let cases: Vec<Case> = vec![
            (base(), &[], true),
            (base(), &[("app", "x")], true),
            (base().match_label("app", "a"), &[("app", "a")], true),
            (base().match_label("app", "a"), &[("app", "b")], false),
            (base().match_label("app", "a"), &[], false),
            (
                base().expr("tier", "In", &["gpu", "tpu"]),
                &[("tier", "tpu")],
                true,
            ),
            (
                base().expr("tier", "In", &["gpu"]),
                &[("tier", "cpu")],
                false,
            ),
            (base().expr("tier", "In", &["gpu"]), &[], false),
            (base().expr("tier", "NotIn", &["cpu"]), &[], true),
            (
                base().expr("tier", "NotIn", &["cpu"]),
                &[("tier", "cpu")],
                false,
            ),
            (
                base().expr("tier", "NotIn", &["cpu"]),
                &[("tier", "gpu")],
                true,
            ),
            (base().expr("gpu", "Exists", &[]), &[("gpu", "")], true),
            (base().expr("gpu", "Exists", &[]), &[], false),
            (base().expr("gpu", "DoesNotExist", &[]), &[], true),
            (
                base().expr("gpu", "DoesNotExist", &[]),
                &[("gpu", "1")],
                false,
            ),
            (
                base().match_label("app", "a").expr("gpu", "Exists", &[]),
                &[("app", "a")],
                false,
            ),
            (
                base().match_label("app", "a").expr("gpu", "Exists", &[]),
                &[("app", "a"), ("gpu", "1")],
                true,
            ),
        ];
        for (i, (quota, pod_labels, want)) in cases.into_iter().enumerate() {
            let facts = quota.facts();
            assert_eq!(
                facts.spec.selector.matches(&labels(pod_labels)),
                want,
                "case {i}"
            );
            assert_eq!(
                selects(&facts, &pod("ns", "p", pod_labels)),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn invalid_quotas_are_set_aside_with_their_error() {
        let good = star(TestQuota::new("ns", "good")).0;
        let bad = TestQuota::new("ns", "bad").limit("*", &[("max", "lots")]).0;
        let (valid, invalid) = quota_facts([&good, &bad]);
        assert_eq!(valid.len(), 1);
        assert_eq!(valid[0].key.name, "good");
        assert_eq!(invalid.len(), 1);
        assert_eq!(invalid[0].0.to_string(), "ns/bad");
        assert_eq!(invalid[0].1.reason(), "InvalidQuantity");
    }

    #[test]
    fn pod_facts_come_from_the_api_pod() {
        let mut api_pod = Pod::default();
        api_pod.metadata.namespace = Some("ns".into());
        api_pod.metadata.name = Some("p".into());
        api_pod.metadata.uid = Some("u-1".into());
        api_pod.metadata.labels = Some(labels(&[("app", "a")]));
        let grant = Grant {
            region: "drm/x/vram0".into(),
            bytes: 1,
        };
        let facts = PodFacts::from_pod(&api_pod, vec![grant.clone()]);
        assert_eq!(
            facts,
            PodFacts {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u-1".into(),
                labels: labels(&[("app", "a")]),
                grants: vec![grant],
            }
        );
    }

    #[test]
    fn selects_only_in_its_own_namespace() {
        let quota = star(TestQuota::new("a", "q")).facts();
        assert!(selects(&quota, &pod("a", "p", &[])));
        assert!(!selects(&quota, &pod("b", "p", &[])));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        let base = || star(TestQuota::new("ns", "q"));
        let cases: Vec<(TestQuota, SelectorError)> = vec![
            (
                base().expr("a", "In", &[]),
                SelectorError::ValuesRequired {
                    index: 0,
                    operator: "In".into(),
                },
            ),
            (
                base().expr("a", "Exists", &[]).expr("b", "NotIn", &[]),
                SelectorError::ValuesRequired {
                    index: 1,
                    operator: "NotIn".into(),
                },
            ),
            (
                base().expr("a", "DoesNotExist", &["x"]),
                SelectorError::ValuesForbidden {
                    index: 0,
                    operator: "DoesNotExist".into(),
                },
            ),
            (
                base().expr("a", "in", &["x"]),
                SelectorError::UnknownOperator {
                    index: 0,
                    operator: "in".into(),
                },
            ),
            (
                base().expr("", "Exists", &[]),
                SelectorError::EmptyKey { index: 0 },
            ),
        ];
        for (quota, want) in cases {
            assert_eq!(
                Selector::compile(&quota.0.spec.selector).as_ref(),
                Err(&want)
            );
            assert_eq!(
                QuotaFacts::from_quota(&quota.0),
                Err(ValidationError::InvalidSelector(want))
            );
        }
    }

    #[test]
    fn winner_is_highest_priority_then_oldest_then_name() {
        let q = |name: &str| star(TestQuota::new("ns", name));
        // (quotas, expected winner)
        let cases: Vec<(Vec<TestQuota>, &str)> = vec![
            (
                vec![
                    q("a").priority(1).created(200),
                    q("b").priority(5).created(300),
                ],
                "b",
            ),
            (vec![q("a").priority(-1), q("b")], "b"),
            (vec![q("a").created(200), q("b").created(100)], "b"),
            (vec![q("b").created(100), q("a").created(100)], "a"),
            (vec![q("a"), q("b").created(100)], "b"),
            (vec![q("b"), q("a")], "a"),
            (
                vec![
                    q("z").priority(2).created(900),
                    q("a").priority(2).created(100),
                    q("m").priority(1),
                ],
                "a",
            ),
        ];
        let p = pod("ns", "p", &[]);
        for (i, (quotas, want)) in cases.into_iter().enumerate() {
            let facts: Vec<QuotaFacts> = quotas.into_iter().map(TestQuota::facts).collect();
            let winner = governing(&facts, &p).expect("some quota selects");
            assert_eq!(winner.key.name, want, "case {i}");
        }
        assert!(governing(&[], &p).is_none());
    }

    #[test]
    fn losers_report_whom_they_lost_to() {
        let key = |name: &str| QuotaRef {
            namespace: "ns".into(),
            name: name.into(),
        };
        let quotas = vec![
            star(TestQuota::new("ns", "team").match_label("team", "a")).facts(),
            star(
                TestQuota::new("ns", "gpu")
                    .priority(10)
                    .expr("gpu", "Exists", &[]),
            )
            .facts(),
            star(TestQuota::new("ns", "all").priority(-5)).facts(),
            star(TestQuota::new("ns", "nobody").match_label("app", "none")).facts(),
            star(TestQuota::new("other", "elsewhere").priority(100)).facts(),
        ];
        let pods = vec![
            pod("ns", "p1", &[("team", "a"), ("gpu", "1")]),
            pod("ns", "p2", &[("team", "a")]),
            pod("ns", "p3", &[]),
            pod("ns2", "p4", &[]),
        ];
        let r = resolve(&quotas, &pods);
        let governing: Vec<(&str, &str)> = r
            .governing
            .iter()
            .map(|(uid, q)| (uid.as_str(), q.name.as_str()))
            .collect();
        assert_eq!(
            governing,
            [("uid-p1", "gpu"), ("uid-p2", "team"), ("uid-p3", "all")]
        );
        assert_eq!(
            r.governed[&key("team")],
            BTreeSet::from(["uid-p2".to_owned()])
        );
        assert_eq!(
            r.lost_to,
            BTreeMap::from([
                (key("team"), BTreeSet::from([key("gpu")])),
                (key("all"), BTreeSet::from([key("gpu"), key("team")])),
            ])
        );
        assert!(!r.lost_to.contains_key(&key("nobody")));
        assert!(!r.governed.contains_key(&key("nobody")));
    }

    /// Quotas over a tiny label space so they overlap often; names are unique by construction.
    fn arb_quotas() -> impl Strategy<Value = Vec<QuotaFacts>> {
        prop::collection::vec(
            (
                -2i32..3,
                prop::option::of(0i64..4),
                prop::option::of(0usize..3),
                any::<bool>(),
            ),
            0..7,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (priority, created, label, negate))| {
                    let mut q = star(TestQuota::new("ns", &format!("q{}", (i * 7) % 11)))
                        .priority(priority);
                    if let Some(secs) = created {
                        q = q.created(secs);
                    }
                    if let Some(l) = label {
                        let op = if negate { "NotIn" } else { "In" };
                        q = q.expr("k", op, &[["a", "b", "c"][l]]);
                    }
                    q.facts()
                })
                .collect()
        })
    }

    fn arb_pods() -> impl Strategy<Value = Vec<PodFacts>> {
        prop::collection::vec(prop::option::of(0usize..3), 0..6).prop_map(|labels| {
            labels
                .into_iter()
                .enumerate()
                .map(|(i, l)| match l {
                    Some(l) => pod("ns", &format!("p{i}"), &[("k", ["a", "b", "c"][l])]),
                    None => pod("ns", &format!("p{i}"), &[]),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn resolution_ignores_quota_order(
            (quotas, shuffled) in arb_quotas().prop_flat_map(|q| (Just(q.clone()), Just(q).prop_shuffle())),
            pods in arb_pods(),
        ) {
            let first = resolve(&quotas, &pods);
            prop_assert_eq!(&first, &resolve(&shuffled, &pods));
            prop_assert_eq!(&first, &resolve(&quotas, &pods));
            // Every pod some quota selects is governed by the top-ranked selecting quota, and a
            // quota never loses to itself.
            for p in &pods {
                let selecting: Vec<_> = quotas.iter().filter(|q| selects(q, p)).collect();
                prop_assert_eq!(first.governing.contains_key(&p.uid), !selecting.is_empty());
                if let Some(winner) = first.governing.get(&p.uid) {
                    let winner = quotas.iter().find(|w| w.key == *winner).expect("winner is an input");
                    for q in selecting.iter().filter(|q| q.key != winner.key) {
                        prop_assert_eq!(precedence(q, winner), Ordering::Greater);
                    }
                }
            }
            for (loser, winners) in &first.lost_to {
                prop_assert!(!winners.contains(loser));
            }
        }
    }
}
