//! CORE: which pod holds how much VRAM in which region, from a PodResources `List` joined with the
//! pods the agent knows from the API server.
//!
//! PodResources names pods only by namespace and name, never by UID (`docs/kubelet.md` §2.2), but
//! limits go to the cgroup `pod<UID>`. A name can be reused (a StatefulSet pod deleted and
//! recreated, or a force-deleted pod whose containers still run), so a name alone may point at the
//! wrong instance.
//!
//! # The same-name guard
//!
//! A grant is given to a UID only when all of these hold; otherwise the entry is reported in
//! [`Grants::skipped`] and the caller keeps what it applied before and retries on its next round:
//! 1. the UID is the *current* pod of that name: among known pods with the same namespace and name,
//!    the one created last (older UIDs are superseded and never get a grant);
//! 2. the `List` answer has exactly one entry for that name: two entries mean the kubelet still runs
//!    an old instance next to the new one, and nothing tells which devices are whose
//!    ([`SkipReason::Ambiguous`]);
//! 3. the current pod was created no later than the `List` call started (`listed_at`): a pod created
//!    afterwards cannot be in the answer, so the entry belongs to an earlier instance
//!    ([`SkipReason::CreatedAfterList`]).
//!
//! Callers read their pod cache before calling `List`, so a pod created in between fails rule 3
//! rather than being matched. Rule 3 compares the API server's clock (creation time) with the node's
//! (`listed_at`); a skew makes the guard either skip a new pod for one more round (safe) or, with an
//! API server clock behind the node's, trust an entry for at most that skew.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use super::allocate::{AllocateError, units_by_region};
use super::inventory::Inventory;
use crate::kubelet::proto::podresources::{ListPodResourcesResponse, PodResources};

/// A pod the agent knows from the API server (its node-scoped pod watch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.creationTimestamp`.
    pub created: SystemTime,
}

/// VRAM a pod holds in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Region name.
    pub region: String,
    /// Bytes: units held × unit size.
    pub bytes: u64,
}

/// Why a `List` entry holding our units got no grant this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// No known pod has that namespace and name (the pod cache lags, or the pod is gone).
    NotKnown,
    /// The `List` answer has several entries with that namespace and name.
    Ambiguous,
    /// The current pod of that name was created after the `List` call started.
    CreatedAfterList,
    /// The device IDs do not resolve against the inventory.
    InvalidDevices(AllocateError),
}

impl SkipReason {
    /// PascalCase reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotKnown => "NotKnown",
            Self::Ambiguous => "Ambiguous",
            Self::CreatedAfterList => "CreatedAfterList",
            Self::InvalidDevices(_) => "InvalidDevices",
        }
    }
}

/// A `List` entry that holds our units but got no grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Namespace of the entry.
    pub namespace: String,
    /// Name of the entry.
    pub name: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// How much the agent knows about who holds the device plugin's units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Listing {
    /// No device plugin serves units on this node (no kubelet): no pod can hold any.
    #[default]
    NoDevicePlugin,
    /// PodResources has not answered since the agent started, so nobody's units are known; the
    /// text says why (the last error).
    NotYet(String),
    /// From a `List` answer: [`Grants::by_uid`] and [`Grants::skipped`] are what it said.
    Listed,
}

/// Result of [`join`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Pod UID → its grants, one per region, ordered by region name. Pods without our units are absent.
    pub by_uid: BTreeMap<String, Vec<Grant>>,
    /// Entries holding our units that could not be trusted this round.
    pub skipped: Vec<Skipped>,
    /// Whether the two fields above come from a `List` answer at all.
    pub listing: Listing,
}

impl Grants {
    /// No `List` answer yet, for the reason `why`: a pod that asks for units may hold some, and
    /// nothing tells how many, so its limits must be left as they are.
    pub fn not_listed(why: impl Into<String>) -> Self {
        Self {
            listing: Listing::NotYet(why.into()),
            ..Self::default()
        }
    }

    /// Why the grant of the pod `namespace/name` (UID `uid`), which asks for units, is not known;
    /// `None` when it is (granted, or no device plugin here).
    pub fn unknown(&self, namespace: &str, name: &str, uid: &str) -> Option<String> {
        if self.by_uid.contains_key(uid) {
            return None;
        }
        match &self.listing {
            Listing::NoDevicePlugin => None,
            Listing::NotYet(why) => Some(format!(
                "PodResources has not answered since the agent started ({why})"
            )),
            Listing::Listed => Some(
                match self
                    .skipped
                    .iter()
                    .find(|s| s.namespace == namespace && s.name == name)
                {
                    Some(Skipped {
                        reason: SkipReason::InvalidDevices(err),
                        ..
                    }) => format!(
                        "its PodResources entry names devices this agent does not know yet ({err})"
                    ),
                    Some(skipped) => format!(
                        "its PodResources entry was not trusted ({})",
                        skipped.reason.reason()
                    ),
                    None => "PodResources lists no units for the pod".to_owned(),
                },
            ),
        }
    }
}

/// Device IDs of `resource` held by any container of `pod`, each once (containers may share units).
fn held_ids(pod: &PodResources, resource: &str) -> Vec<String> {
    let ids: BTreeSet<&String> = pod
        .containers
        .iter()
        .flat_map(|c| &c.devices)
        .filter(|d| d.resource_name == resource)
        .flat_map(|d| &d.device_ids)
        .collect();
    ids.into_iter().cloned().collect()
}

/// Joins a `List` answer taken at `listed_at` with the known pods, applying the same-name guard (see
/// the module docs). `resource` is our extended resource name.
pub fn join(
    list: &ListPodResourcesResponse,
    known: &[KnownPod],
    inventory: &Inventory,
    resource: &str,
    listed_at: SystemTime,
) -> Grants {
    let mut current: BTreeMap<(&str, &str), &KnownPod> = BTreeMap::new();
    for pod in known {
        let slot = current
            .entry((pod.namespace.as_str(), pod.name.as_str()))
            .or_insert(pod);
        if (pod.created, &pod.uid) > (slot.created, &slot.uid) {
            *slot = pod;
        }
    }
    let mut entries: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for pod in &list.pod_resources {
        *entries
            .entry((pod.namespace.as_str(), pod.name.as_str()))
            .or_default() += 1;
    }
    let mut grants = Grants {
        listing: Listing::Listed,
        ..Grants::default()
    };
    for pod in &list.pod_resources {
        let ids = held_ids(pod, resource);
        if ids.is_empty() {
            continue;
        }
        let key = (pod.namespace.as_str(), pod.name.as_str());
        let decided = match current.get(&key) {
            _ if entries.get(&key).copied().unwrap_or(0) > 1 => Err(SkipReason::Ambiguous),
            None => Err(SkipReason::NotKnown),
            Some(known) if known.created > listed_at => Err(SkipReason::CreatedAfterList),
            Some(known) => units_by_region(inventory, &ids)
                .map(|units| (known.uid.clone(), units))
                .map_err(SkipReason::InvalidDevices),
        };
        match decided {
            Ok((uid, units)) => {
                let per_region = units.into_iter().map(|(region, units)| Grant {
                    region,
                    bytes: inventory.unit_bytes().saturating_mul(units.len() as u64),
                });
                grants.by_uid.insert(uid, per_region.collect());
            }
            Err(reason) => grants.skipped.push(Skipped {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                reason,
            }),
        }
    }
    grants
}

/// `(namespace, name)` of every `List` entry holding any of `device_ids` of `resource`: the
/// candidates for a `PreStartContainer` call, which carries device IDs but no pod identity.
pub fn holders<'a>(
    list: &'a ListPodResourcesResponse,
    resource: &str,
    device_ids: &[String],
) -> BTreeSet<(&'a str, &'a str)> {
    let wanted: BTreeSet<&String> = device_ids.iter().collect();
    list.pod_resources
        .iter()
        .filter(|pod| held_ids(pod, resource).iter().any(|id| wanted.contains(id)))
        .map(|pod| (pod.namespace.as_str(), pod.name.as_str()))
        .collect()
}

#[cfg(test)]
mod tests;
