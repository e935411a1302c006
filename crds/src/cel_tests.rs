//! Evaluates the CRD's CEL rules client-side (kube-cel, via `kube/cel` in dev-dependencies) on
//! sample objects, so a rule that does not compile, errors at run time, or accepts what it should
//! reject fails here before it meets an API server. kube-cel approximates the API server's CEL
//! environment; the integration tier checks the same rules against a real kube-apiserver.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::DmemQuota;

/// Every CEL failure for a spec, as `"path: message"`.
fn cel_errors(spec: Value) -> Vec<String> {
    let crd = DmemQuota::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    let schema = serde_json::to_value(schema).expect("schema to json");
    let object = json!({
        "apiVersion": "kube-dmem.io/v1alpha1",
        "kind": "DmemQuota",
        "metadata": {"name": "q", "namespace": "ns"},
        "spec": spec,
    });
    match kube::core::cel::Validator::new().validate(&schema, &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn spec_with_limits(limits: Value) -> Value {
    json!({"selector": {}, "limits": limits})
}

#[test]
fn valid_specs_pass() {
    let specs = [
        spec_with_limits(json!([{"region": "*", "max": "8Gi"}])),
        spec_with_limits(json!([
            {"region": "drm/0000:03:00.0/vram0", "max": "8Gi", "high": "6Gi", "low": "2Gi", "min": "1Gi"},
            {"region": "drm/*/vram*", "high": "4G"},
            {"region": "*", "low": "1073741824"},
        ])),
        spec_with_limits(json!([{"region": "*", "min": "1Gi", "max": "1024Mi"}])),
        spec_with_limits(json!([{"region": "*", "low": "1.5Gi", "high": "1536Mi"}])),
        spec_with_limits(json!([{"region": "*", "max": "1e9", "high": "999999999"}])),
        json!({
            "selector": {"matchLabels": {"app": "train"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gpu"]},
                {"key": "team", "operator": "NotIn", "values": ["a", "b"]},
                {"key": "gpu", "operator": "Exists"},
                {"key": "cpu-only", "operator": "DoesNotExist", "values": []},
            ]},
            "limits": [{"region": "*", "max": "8Gi"}],
            "priority": 10,
            "pressure": {"action": "Evict", "gracePeriod": "1h30m", "maxEvictionsPerMinute": 5},
        }),
    ];
    for spec in specs {
        assert_eq!(cel_errors(spec.clone()), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn invalid_specs_fail_with_the_field_message() {
    let cases: Vec<(Value, &str)> = vec![
        (
            spec_with_limits(json!([{"region": "*", "max": "8GB"}])),
            "must be a Kubernetes quantity",
        ),
        (
            spec_with_limits(json!([{"region": "*", "high": "-1Gi"}])),
            "must be at least 0",
        ),
        (
            spec_with_limits(json!([{"region": "*", "max": "16Ei"}])),
            "below 16Ei",
        ),
        (
            spec_with_limits(json!([{"region": "*"}])),
            "set at least one of max, high, low or min",
        ),
        (
            spec_with_limits(json!([{"region": "*", "min": "2Gi", "low": "1Gi"}])),
            "min must not be greater than low",
        ),
        (
            spec_with_limits(json!([{"region": "*", "min": "2Gi", "high": "1Gi"}])),
            "min must not be greater than high",
        ),
        (
            spec_with_limits(json!([{"region": "*", "min": "2Gi", "max": "1Gi"}])),
            "min must not be greater than max",
        ),
        (
            spec_with_limits(json!([{"region": "*", "low": "2Gi", "high": "1Gi"}])),
            "low must not be greater than high",
        ),
        (
            spec_with_limits(json!([{"region": "*", "low": "2Gi", "max": "1Gi"}])),
            "low must not be greater than max",
        ),
        (
            spec_with_limits(json!([{"region": "*", "high": "9Gi", "max": "8Gi"}])),
            "high must not be greater than max",
        ),
        (
            spec_with_limits(json!([{"region": "*", "high": "1.5G", "max": "1Gi"}])),
            "high must not be greater than max",
        ),
        (
            spec_with_limits(
                json!([{"region": "drm/*", "max": "1Gi"}, {"region": "drm/*", "max": "2Gi"}]),
            ),
            "each region may appear only once",
        ),
        (
            spec_with_limits(json!([{"region": "drm/a b", "max": "1Gi"}])),
            "must not contain whitespace",
        ),
        (
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}, "limits": [{"region": "*", "max": "1Gi"}]}),
            "operators In and NotIn need at least one value",
        ),
        (
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]}, "limits": [{"region": "*", "max": "1Gi"}]}),
            "operators In and NotIn need at least one value",
        ),
        (
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "limits": [{"region": "*", "max": "1Gi"}]}),
            "operators Exists and DoesNotExist take no values",
        ),
        (
            json!({"selector": {}, "limits": [{"region": "*", "max": "1Gi"}], "pressure": {"gracePeriod": "5 minutes"}}),
            "must be a duration",
        ),
    ];
    for (spec, want) in cases {
        let errors = cel_errors(spec.clone());
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{spec}: want {want:?}, got {errors:?}"
        );
        // A malformed value yields its field's message only, never an evaluation error.
        assert!(
            errors.iter().all(|e| !e.to_lowercase().contains("evaluat")),
            "{spec}: {errors:?}"
        );
    }
}

#[test]
fn malformed_quantities_do_not_trip_the_ordering_rules() {
    let errors = cel_errors(spec_with_limits(
        json!([{"region": "*", "min": "lots", "max": "1Gi"}]),
    ));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("spec.limits[0].min"), "{errors:?}");
}

#[test]
fn durations_the_rust_parser_accepts_pass_the_cel_rule() {
    for text in ["0", "30s", "5m", "1h30m", "1.5h", "250ms", "10us", "7ns"] {
        assert!(crate::duration::parse_duration(text).is_ok(), "{text}");
        let spec = json!({"selector": {}, "limits": [{"region": "*", "max": "1Gi"}], "pressure": {"gracePeriod": text}});
        assert_eq!(cel_errors(spec), Vec::<String>::new(), "{text}");
    }
    for text in ["5", "-5m", "1d", ".5s", "5min"] {
        assert!(crate::duration::parse_duration(text).is_err(), "{text}");
        let spec = json!({"selector": {}, "limits": [{"region": "*", "max": "1Gi"}], "pressure": {"gracePeriod": text}});
        assert_eq!(cel_errors(spec).len(), 1, "{text}");
    }
}
