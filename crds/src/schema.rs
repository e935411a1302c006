//! CORE: hand-written OpenAPI schemas for the fields whose derived schema would be unbounded or too
//! loose: quantities and the label selector.
//!
//! The API server estimates the cost of every CEL rule from the largest input the schema allows, so
//! every string and list a rule touches carries a `maxLength`/`maxItems`. The bounds here are
//! mirrored by [`crate::validate`].

use schemars::{Schema, SchemaGenerator, json_schema};

/// Longest accepted quantity text (far more than any real quantity needs).
pub const MAX_QUANTITY_LEN: usize = 64;
/// Most `matchExpressions` a selector may carry.
pub const MAX_SELECTOR_EXPRESSIONS: usize = 32;
/// Most `values` one selector requirement may list.
pub const MAX_SELECTOR_VALUES: usize = 64;
/// Most `matchLabels` pairs a selector may carry.
pub const MAX_SELECTOR_LABELS: usize = 64;
/// Longest label key (253-character prefix, `/`, 63-character name).
pub const MAX_LABEL_KEY_LEN: usize = 317;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// CEL message for a limit value that is not a quantity.
pub const MSG_NOT_A_QUANTITY: &str =
    "must be a Kubernetes quantity such as 8Gi, 512Mi, 1G or 1073741824";
/// CEL message for a quantity outside 0..2^64 bytes.
pub const MSG_QUANTITY_RANGE: &str = "must be at least 0 and below 16Ei (2^64 bytes)";
/// CEL message for `In`/`NotIn` without values.
pub const MSG_VALUES_REQUIRED: &str = "operators In and NotIn need at least one value";
/// CEL message for `Exists`/`DoesNotExist` with values.
pub const MSG_VALUES_FORBIDDEN: &str = "operators Exists and DoesNotExist take no values";

/// Schema of one limit value (`max`, `high`, `low`, `min`): a quantity string, checked with the
/// Kubernetes CEL quantity library. The range rule is guarded by `isQuantity` so a malformed value
/// reports only the first message instead of an evaluation error.
pub fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": MAX_QUANTITY_LEN,
        "x-kubernetes-validations": [
            {"rule": "isQuantity(self)", "message": MSG_NOT_A_QUANTITY},
            {
                "rule": "!isQuantity(self) || (sign(quantity(self)) >= 0 && quantity(self).isLessThan(quantity('16Ei')))",
                "message": MSG_QUANTITY_RANGE
            }
        ]
    })
}

/// Schema of `spec.selector`: the shape of `meta/v1` `LabelSelector`, with bounds, an operator enum
/// and rules that reject requirements the Kubernetes selector parser would reject.
pub fn label_selector(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-map-type": "atomic",
        "properties": {
            "matchLabels": {
                "description": "Labels a pod must carry with exactly these values. ANDed with matchExpressions.",
                "type": "object",
                "maxProperties": MAX_SELECTOR_LABELS,
                "additionalProperties": {"type": "string", "maxLength": MAX_LABEL_VALUE_LEN}
            },
            "matchExpressions": {
                "description": "Label requirements, all of which a pod must meet. ANDed with matchLabels.",
                "type": "array",
                "maxItems": MAX_SELECTOR_EXPRESSIONS,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "description": "The label key the requirement applies to, for example app.kubernetes.io/name.",
                            "type": "string",
                            "minLength": 1,
                            "maxLength": MAX_LABEL_KEY_LEN
                        },
                        "operator": {
                            "description": "In: the label is set to one of values. NotIn: the label is absent or set to none of values. Exists: the label is set (values must be empty). DoesNotExist: the label is absent (values must be empty).",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"]
                        },
                        "values": {
                            "description": "Label values for In and NotIn (at least one); empty or absent for Exists and DoesNotExist.",
                            "type": "array",
                            "maxItems": MAX_SELECTOR_VALUES,
                            "items": {"type": "string", "maxLength": MAX_LABEL_VALUE_LEN}
                        }
                    },
                    "x-kubernetes-validations": [
                        {
                            "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
                            "message": MSG_VALUES_REQUIRED
                        },
                        {
                            "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
                            "message": MSG_VALUES_FORBIDDEN
                        }
                    ]
                }
            }
        }
    })
}
