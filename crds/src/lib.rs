//! CORE: the `DmemQuota` API (`kube-dmem.io/v1alpha1`) and the pure rules the operator and the node
//! agent share, so the operator's status and the agent's enforcement can never disagree.
//!
//! - this file: the custom resource types, their schema, CEL rules and printer columns;
//! - [`consts`]: field managers, condition types and reasons, [`PressureTier`];
//! - [`quantity`], [`duration`], [`glob`]: the value grammars of the spec;
//! - [`validate`]: the CEL rules again in Rust, producing a checked [`validate::ValidQuota`];
//! - [`select`]: which quota governs a pod, and which quotas lose;
//! - [`limits`]: the limits that follow for a pod and region, and what to write to the kernel;
//! - [`regions`]: the node regions annotation both binaries read or write;
//! - [`usage`]: the simulator's usage annotation.
//!
//! No I/O, no clocks, no client: inputs arrive as values. The `crdgen` binary prints the CRD.

#![deny(missing_docs)]

pub mod errors;
pub use errors::error_chain;
pub mod consts;
pub mod duration;
pub mod glob;
pub mod limits;
pub mod quantity;
pub mod regions;
pub mod schema;
pub mod select;
pub mod usage;
pub mod validate;

#[cfg(test)]
mod cel_tests;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub use consts::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Most entries `spec.limits` may hold.
pub const MAX_LIMIT_ENTRIES: usize = 16;
/// Longest region name or pattern.
pub const MAX_REGION_LEN: usize = 256;
/// Longest `spec.pressure.gracePeriod` text.
pub const MAX_DURATION_LEN: usize = 32;
/// Bounds of `spec.pressure.maxEvictionsPerMinute`.
pub const EVICTIONS_PER_MINUTE_RANGE: std::ops::RangeInclusive<i32> = 1..=600;

/// Desired VRAM limits for the pods a label selector picks in this quota's namespace.
// The printer columns repeat `type_ = "…"`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-dmem.io",
    version = "v1alpha1",
    kind = "DmemQuota",
    namespaced,
    status = "DmemQuotaStatus",
    shortname = "dmq",
    derive = "PartialEq",
    doc = "DmemQuota sets kernel-enforced GPU memory (VRAM) limits, through the Linux dmem cgroup controller, for the pods its selector picks in its namespace.",
    printcolumn(
        name = "MAX",
        type_ = "string",
        json_path = ".spec.limits[0].max",
        description = "Hard limit of the first limits entry"
    ),
    printcolumn(
        name = "HIGH",
        type_ = "string",
        json_path = ".spec.limits[0].high",
        description = "Soft limit of the first limits entry"
    ),
    printcolumn(
        name = "PODS",
        type_ = "integer",
        json_path = ".status.matchedPods",
        description = "Pods this quota governs"
    ),
    printcolumn(
        name = "ENFORCED",
        type_ = "integer",
        json_path = ".status.enforcedPods",
        description = "Governed pods whose limits are in force"
    ),
    printcolumn(
        name = "PRESSURED",
        type_ = "integer",
        json_path = ".status.pressuredPods",
        description = "Governed pods under VRAM pressure"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DmemQuotaSpec {
    /// Pods in this quota's namespace that the quota applies to, by label. An empty selector ({})
    /// selects every pod in the namespace. When several quotas select a pod, the one with the highest
    /// priority governs it (ties: the oldest, then the first by name); the others report Conflict.
    #[schemars(schema_with = "schema::label_selector")]
    pub selector: LabelSelector,

    /// Limits per VRAM region. For each region on a node the most specific matching entry applies:
    /// an exact region name beats a glob, a glob with more literal characters beats a broader one,
    /// and on a tie the earlier entry wins. Regions that no entry matches get no limit from this
    /// quota. A pod that holds kube-dmem.io/vram units is never allowed more than it was granted.
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.region == l.region))")
        // No `reason`: with FieldValueDuplicate the API server prints its generic "Duplicate
        // value" text instead of this message.
        .message("each region may appear only once in limits"))]
    #[schemars(length(min = 1, max = MAX_LIMIT_ENTRIES))]
    pub limits: Vec<LimitEntry>,

    /// Decides between quotas that select the same pod: the higher value governs. Default 0.
    #[serde(default)]
    pub priority: i32,

    /// What the operator does about pods that stay above their high limit. Absent means the
    /// defaults: no action, only reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pressure: Option<PressurePolicy>,
}

/// Limits on one region or group of regions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.max) || has(self.high) || has(self.low) || has(self.min)")
        .message("set at least one of max, high, low or min"),
    validation = Rule::new(ordered("min", "low")).message("min must not be greater than low").field_path(".min"),
    validation = Rule::new(ordered("min", "high")).message("min must not be greater than high").field_path(".min"),
    validation = Rule::new(ordered("min", "max")).message("min must not be greater than max").field_path(".min"),
    validation = Rule::new(ordered("low", "high")).message("low must not be greater than high").field_path(".low"),
    validation = Rule::new(ordered("low", "max")).message("low must not be greater than max").field_path(".low"),
    validation = Rule::new(ordered("high", "max")).message("high must not be greater than max").field_path(".high"),
)]
pub struct LimitEntry {
    /// The region(s) these limits apply to: an exact region name as listed in dmem.capacity, such
    /// as drm/0000:03:00.0/vram0, or a glob where * matches any run of characters except /, such as
    /// drm/*/vram*. The pattern * alone matches every region.
    #[x_kube(validation = Rule::new("!self.matches('[[:space:]]')").message("must not contain whitespace"))]
    #[schemars(length(min = 1, max = MAX_REGION_LEN))]
    pub region: String,

    /// Hard limit (dmem.max): allocations beyond it fail. A quantity in bytes, such as 8Gi or 500M.
    /// For a pod holding kube-dmem.io/vram units, the granted amount caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub max: Option<String>,

    /// Soft limit: memory above it is evicted first when the device is full, and the pod is
    /// reported as under pressure (and evicted if spec.pressure.action is Evict). Enforced through
    /// dmem.low where the kernel has no dmem.high. A quantity in bytes, such as 6Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub high: Option<String>,

    /// Best-effort protection (dmem.low): memory up to this amount is evicted only after all
    /// unprotected memory. A quantity in bytes, such as 2Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub low: Option<String>,

    /// Hard protection (dmem.min): memory up to this amount is never evicted for other cgroups. A
    /// quantity in bytes, such as 1Gi. Keep it small: it pins VRAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::quantity")]
    pub min: Option<String>,
}

/// The CEL rule "`lower` <= `upper` when both are set and both are quantities". Malformed values
/// are reported by the field's own rule, so this one must not fail on them with an evaluation error.
fn ordered(lower: &str, upper: &str) -> String {
    format!(
        "!has(self.{lower}) || !has(self.{upper}) || !isQuantity(self.{lower}) || \
         !isQuantity(self.{upper}) || quantity(self.{lower}).compareTo(quantity(self.{upper})) <= 0"
    )
}

/// The operator's remediation policy for pods above their high limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PressurePolicy {
    /// None: only report pods above high (condition kube-dmem.io/VRAMPressure, events, metrics).
    /// Evict: also evict, through the Eviction API (PodDisruptionBudgets apply), pods that stay
    /// above high for longer than gracePeriod. Default None.
    #[serde(default)]
    pub action: PressureAction,

    /// How long a pod may stay above its high limit before it is evicted (with action Evict). A
    /// duration with units h, m, s, ms, us or ns, such as 30s, 5m or 1h30m. Default 5m.
    #[serde(default = "default_grace_period")]
    #[x_kube(validation = Rule::new(format!("self.matches('{}')", duration::DURATION_PATTERN.replace('\\', "\\\\")))
        .message("must be a duration such as 30s, 5m or 1h30m (units h, m, s, ms, us, ns)"))]
    #[schemars(length(max = MAX_DURATION_LEN))]
    pub grace_period: String,

    /// Most pods the operator evicts for this quota per minute, 1 to 600. Default 1.
    #[serde(default = "default_max_evictions_per_minute")]
    #[schemars(range(min = 1, max = 600))]
    pub max_evictions_per_minute: i32,
}

impl Default for PressurePolicy {
    fn default() -> Self {
        Self {
            action: PressureAction::default(),
            grace_period: default_grace_period(),
            max_evictions_per_minute: default_max_evictions_per_minute(),
        }
    }
}

fn default_grace_period() -> String {
    "5m".to_owned()
}

fn default_max_evictions_per_minute() -> i32 {
    1
}

/// What the operator does about a pod that stays above its high limit.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum PressureAction {
    /// Report only.
    #[default]
    None,
    /// Evict through the Eviction API after the grace period.
    Evict,
}

/// Observed state of a quota, written by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DmemQuotaStatus {
    /// The metadata.generation of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the spec is valid and this status reflects it (False with reason InvalidSpec and the
    /// error in the message otherwise). Conflict: True when another quota outranks this one for at
    /// least one pod it selects; the message names those quotas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Number of pods this quota governs: pods it selects for which no other quota ranks higher.
    #[serde(default)]
    pub matched_pods: i32,

    /// Number of governed pods whose node agent reports the limits in force
    /// (condition kube-dmem.io/VRAMLimitsApplied is True).
    #[serde(default)]
    pub enforced_pods: i32,

    /// Number of governed pods under VRAM pressure (condition kube-dmem.io/VRAMPressure is True:
    /// above high, at max, or in a contended region).
    #[serde(default)]
    pub pressured_pods: i32,

    /// Region patterns of spec.limits that match no region on any node, for example because of a
    /// typo in a device address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched_regions: Vec<String>,
}

/// The `DmemQuota` CustomResourceDefinition as YAML, exactly as committed in
/// `crds/dmemquotas.kube-dmem.io.yaml`.
///
/// # Errors
/// The serializer's error; the derived CRD is plain data, so this does not happen in practice.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    // A derived CRD is plain data: it always converts to JSON.
    let mut crd = serde_json::to_value(DmemQuota::crd()).expect("a CRD serializes to JSON");
    unwrap_descriptions(&mut crd);
    serde_saphyr::to_string(&crd)
}

/// Joins the lines of every `description` into paragraphs. The descriptions come from `///`
/// comments wrapped at 100 columns; `kubectl explain` wraps text itself, and the comments' line
/// breaks would otherwise show as ragged lines. Blank lines (paragraph breaks) are kept.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| {
                                paragraph
                                    .split('\n')
                                    .map(str::trim)
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    other => unwrap_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::Value;

    const COMMITTED: &str = include_str!("../dmemquotas.kube-dmem.io.yaml");

    #[test]
    fn committed_crd_matches_the_types() {
        let generated = crd_yaml().expect("serialize CRD");
        assert!(
            generated == COMMITTED,
            "crds/dmemquotas.kube-dmem.io.yaml is stale; regenerate it with\n  \
             cargo run -q -p kube-dmem-crds --bin crdgen > crds/dmemquotas.kube-dmem.io.yaml"
        );
    }

    #[test]
    fn crd_names_scope_and_subresources() {
        let crd = DmemQuota::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("dmemquotas.kube-dmem.io")
        );
        assert_eq!(crd.spec.group, API_GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["dmq".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, API_VERSION);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<(&str, &str, &str)> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("MAX", "string", ".spec.limits[0].max"),
                ("HIGH", "string", ".spec.limits[0].high"),
                ("PODS", "integer", ".status.matchedPods"),
                ("ENFORCED", "integer", ".status.enforcedPods"),
                ("PRESSURED", "integer", ".status.pressuredPods"),
                ("AGE", "date", ".metadata.creationTimestamp"),
            ]
        );
    }

    /// Every property in the schema carries a description (it is `kubectl explain` text).
    #[test]
    fn every_field_is_described() {
        fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
            for (name, prop) in schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let path = format!("{path}.{name}");
                if prop
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(path.clone());
                }
                walk(&path, prop, missing);
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let crd = serde_json::to_value(DmemQuota::crd()).expect("crd json");
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk("", root, &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn manifests_read_with_camel_case_and_defaults() {
        let yaml = r#"
apiVersion: kube-dmem.io/v1alpha1
kind: DmemQuota
metadata: {name: training, namespace: ml}
spec:
  selector:
    matchLabels: {app: trainer}
    matchExpressions:
    - {key: tier, operator: In, values: [gpu]}
  limits:
  - {region: "drm/*/vram*", max: 8Gi, high: 6Gi}
  pressure: {action: Evict}
status:
  matchedPods: 2
  unmatchedRegions: ["drm/*/gtt"]
"#;
        let quota: DmemQuota = serde_saphyr::from_str(yaml).expect("parse manifest");
        assert_eq!(quota.spec.priority, 0);
        assert_eq!(quota.spec.limits[0].high.as_deref(), Some("6Gi"));
        let pressure = quota.spec.pressure.clone().expect("pressure");
        assert_eq!(pressure.action, PressureAction::Evict);
        assert_eq!(pressure.grace_period, "5m");
        assert_eq!(pressure.max_evictions_per_minute, 1);
        let status = quota.status.clone().expect("status");
        assert_eq!((status.matched_pods, status.enforced_pods), (2, 0));
        let json = serde_json::to_value(&quota).expect("json");
        assert_eq!(json["spec"]["pressure"]["gracePeriod"], "5m");
        assert_eq!(json["status"]["unmatchedRegions"][0], "drm/*/gtt");
        assert!(json["spec"]["limits"][0].get("low").is_none());
    }
}
