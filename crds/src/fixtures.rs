//! Test builders for quotas and pods (compiled only for tests).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
use k8s_openapi::jiff::Timestamp;

use crate::select::{Grant, Labels, PodFacts, QuotaFacts};
use crate::{DmemQuota, DmemQuotaSpec, LimitEntry};

/// A `DmemQuota` under construction: selector `{}`, no limits, priority 0, no timestamp.
pub struct TestQuota(pub DmemQuota);

impl TestQuota {
    pub fn new(namespace: &str, name: &str) -> Self {
        let mut quota = DmemQuota::new(
            name,
            DmemQuotaSpec {
                selector: Default::default(),
                limits: Vec::new(),
                priority: 0,
                pressure: None,
            },
        );
        quota.metadata.namespace = Some(namespace.to_owned());
        Self(quota)
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.0.spec.priority = priority;
        self
    }

    /// Created `secs` seconds after the epoch.
    pub fn created(mut self, secs: i64) -> Self {
        let ts = Timestamp::from_second(secs).expect("valid timestamp");
        self.0.metadata.creation_timestamp = Some(Time(ts));
        self
    }

    pub fn match_label(mut self, key: &str, value: &str) -> Self {
        let labels = self.0.spec.selector.match_labels.get_or_insert_default();
        labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn expr(mut self, key: &str, operator: &str, values: &[&str]) -> Self {
        let exprs = self
            .0
            .spec
            .selector
            .match_expressions
            .get_or_insert_default();
        exprs.push(LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        });
        self
    }

    /// Adds an entry; `values` are `(field, quantity)` pairs, e.g. `[("max", "8Gi")]`.
    pub fn limit(mut self, region: &str, values: &[(&str, &str)]) -> Self {
        self.0.spec.limits.push(entry(region, values));
        self
    }

    pub fn facts(self) -> QuotaFacts {
        QuotaFacts::from_quota(&self.0).expect("test quota is valid")
    }
}

/// A limit entry from `(field, quantity)` pairs.
pub fn entry(region: &str, values: &[(&str, &str)]) -> LimitEntry {
    let mut entry = LimitEntry {
        region: region.to_owned(),
        ..Default::default()
    };
    for (field, value) in values {
        let slot = match *field {
            "max" => &mut entry.max,
            "high" => &mut entry.high,
            "low" => &mut entry.low,
            "min" => &mut entry.min,
            other => panic!("unknown limit field {other}"),
        };
        *slot = Some((*value).to_owned());
    }
    entry
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A pod with UID `uid-<name>` and no grant.
pub fn pod(namespace: &str, name: &str, pairs: &[(&str, &str)]) -> PodFacts {
    PodFacts {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        labels: labels(pairs),
        grants: Vec::new(),
    }
}

pub fn grant(region: &str, bytes: u64) -> Grant {
    Grant {
        region: region.to_owned(),
        bytes,
    }
}
