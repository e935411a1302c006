//! Test builders for the operator (used by unit tests and the `decide` bench): the shared quota
//! and pod builders of `kube_dmem_crds::fixtures`, seen the way the operator observes them, and
//! nodes. Plain data, no I/O.

// Builders panic on impossible fixtures; they are never used by the binary.
#![allow(clippy::expect_used, clippy::missing_panics_doc)]

use k8s_openapi::api::core::v1::Node;
use kube::api::PartialObjectMeta;
pub use kube_dmem_crds::fixtures::{TestPod, TestQuota, ts};

use crate::decide::observed::{NODE_REGIONS_ANNOTATION, Observed, ObservedPod, ObservedQuota};

/// The operator's view of a built object.
pub trait Observe {
    /// What the operator's conversions make of it.
    type Seen;
    /// As the operator observes it.
    fn observed(&self) -> Self::Seen;
}

impl Observe for TestQuota {
    type Seen = ObservedQuota;
    fn observed(&self) -> ObservedQuota {
        ObservedQuota::from_dynamic(&self.dynamic()).expect("named quota")
    }
}

impl Observe for TestPod {
    type Seen = ObservedPod;
    fn observed(&self) -> ObservedPod {
        ObservedPod::from_pod(&self.0).expect("complete pod")
    }
}

/// A node's metadata with an optional regions annotation value.
pub fn node(name: &str, regions: Option<&str>) -> PartialObjectMeta<Node> {
    let mut meta = PartialObjectMeta::<Node>::default();
    meta.metadata.name = Some(name.to_owned());
    if let Some(value) = regions {
        meta.metadata.annotations =
            Some([(NODE_REGIONS_ANNOTATION.to_owned(), value.to_owned())].into());
    }
    meta
}

/// An [`Observed`] value from builders and region names.
pub fn observed(quotas: &[TestQuota], pods: &[TestPod], regions: &[&str]) -> Observed {
    Observed {
        quotas: quotas.iter().map(Observe::observed).collect(),
        pods: pods.iter().map(Observe::observed).collect(),
        regions: regions.iter().map(|r| (*r).to_owned()).collect(),
    }
}
