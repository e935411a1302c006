//! CORE: the CRD's validation rules again, in Rust, turning a `DmemQuotaSpec` into a checked
//! [`ValidQuota`].
//!
//! The API server rejects invalid quotas at admission with the CEL rules in the schema. A quota can
//! still reach a binary unchecked (an older CRD installed, the agent's standalone mode reading a
//! file), so both binaries parse every spec through [`validate`] and act only on the result: an
//! invalid quota selects and limits nothing, and its error (with [`ValidationError::reason`]) is
//! reported. Order comparisons are made on whole bytes after rounding up, so two fractional values
//! that round to the same byte count compare equal here while CEL would order them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::duration::{DurationError, parse_duration};
use crate::limits::{LimitRule, Limits};
use crate::quantity::{QuantityError, parse_quantity};
use crate::select::{Selector, SelectorError};
use crate::{
    DmemQuotaSpec, EVICTIONS_PER_MINUTE_RANGE, LimitEntry, MAX_LIMIT_ENTRIES, MAX_REGION_LEN,
    PressureAction, PressurePolicy,
};

/// A spec that passed every rule, with values parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidQuota {
    /// The compiled `spec.selector`.
    pub selector: Selector,
    /// `spec.limits`, in list order (the order breaks specificity ties).
    pub limits: Vec<LimitRule>,
    /// `spec.priority`.
    pub priority: i32,
    /// `spec.pressure` with defaults applied.
    pub pressure: Pressure,
}

/// The checked remediation policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// What to do about pods above `high`.
    pub action: PressureAction,
    /// How long a pod may stay above `high` before eviction.
    pub grace_period: Duration,
    /// Eviction rate limit for this quota.
    pub max_evictions_per_minute: u32,
}

/// One of the four limit fields of a `spec.limits[]` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitField {
    /// `max`.
    Max,
    /// `high`.
    High,
    /// `low`.
    Low,
    /// `min`.
    Min,
}

impl fmt::Display for LimitField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Max => "max",
            Self::High => "high",
            Self::Low => "low",
            Self::Min => "min",
        })
    }
}

/// The first rule a `DmemQuotaSpec` breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// `spec.limits` is empty.
    #[error("spec.limits: needs at least one entry")]
    NoLimits,
    /// `spec.limits` is longer than [`MAX_LIMIT_ENTRIES`].
    #[error("spec.limits: {count} entries, at most {MAX_LIMIT_ENTRIES} allowed")]
    TooManyLimits {
        /// Number of entries.
        count: usize,
    },
    /// A region is empty, too long or contains whitespace.
    #[error(
        "spec.limits[{index}].region: {region:?} is not a region name or pattern (must be 1 to {MAX_REGION_LEN} characters without whitespace)"
    )]
    InvalidRegion {
        /// Entry position.
        index: usize,
        /// The region as written.
        region: String,
    },
    /// Two entries name the same region.
    #[error("spec.limits[{index}].region: {region:?} already appears in spec.limits[{first}]")]
    DuplicateRegion {
        /// Position of the repeated entry.
        index: usize,
        /// Position of the first entry with that region.
        first: usize,
        /// The region.
        region: String,
    },
    /// An entry sets none of `max`, `high`, `low`, `min`.
    #[error("spec.limits[{index}]: set at least one of max, high, low or min")]
    NoLimitValue {
        /// Entry position.
        index: usize,
    },
    /// A limit value is not a usable quantity.
    #[error("spec.limits[{index}].{field}: invalid quantity {value:?}")]
    InvalidQuantity {
        /// Entry position.
        index: usize,
        /// Which field.
        field: LimitField,
        /// The value as written.
        value: String,
        /// Why it does not parse.
        #[source]
        source: QuantityError,
    },
    /// Two limits of an entry are out of order (`min <= low <= high <= max` is required).
    #[error(
        "spec.limits[{index}].{lower}: {lower_value} must not be greater than {upper} ({upper_value})"
    )]
    LimitOrder {
        /// Entry position.
        index: usize,
        /// The field that should be smaller.
        lower: LimitField,
        /// Its value as written.
        lower_value: String,
        /// The field that should be larger.
        upper: LimitField,
        /// Its value as written.
        upper_value: String,
    },
    /// The label selector is malformed.
    #[error("spec.selector: invalid label selector")]
    InvalidSelector(#[source] SelectorError),
    /// `spec.pressure.gracePeriod` is not a duration.
    #[error("spec.pressure.gracePeriod: invalid duration {value:?}")]
    InvalidGracePeriod {
        /// The value as written.
        value: String,
        /// Why it does not parse.
        #[source]
        source: DurationError,
    },
    /// `spec.pressure.maxEvictionsPerMinute` is outside 1..=600.
    #[error("spec.pressure.maxEvictionsPerMinute: {value} is outside 1 to 600")]
    InvalidEvictionRate {
        /// The value as written.
        value: i32,
    },
}

impl ValidationError {
    /// PascalCase reason for conditions, events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoLimits => "NoLimits",
            Self::TooManyLimits { .. } => "TooManyLimits",
            Self::InvalidRegion { .. } => "InvalidRegion",
            Self::DuplicateRegion { .. } => "DuplicateRegion",
            Self::NoLimitValue { .. } => "NoLimitValue",
            Self::InvalidQuantity { .. } => "InvalidQuantity",
            Self::LimitOrder { .. } => "LimitOrder",
            Self::InvalidSelector(_) => "InvalidSelector",
            Self::InvalidGracePeriod { .. } => "InvalidGracePeriod",
            Self::InvalidEvictionRate { .. } => "InvalidEvictionRate",
        }
    }
}

/// Checks a spec against every rule of the CRD schema and parses its values.
///
/// # Errors
/// The first [`ValidationError`], checking the selector, then the list, then each entry in order
/// (region, values, ordering), then the pressure policy.
pub fn validate(spec: &DmemQuotaSpec) -> Result<ValidQuota, ValidationError> {
    let selector = Selector::compile(&spec.selector).map_err(ValidationError::InvalidSelector)?;
    if spec.limits.is_empty() {
        return Err(ValidationError::NoLimits);
    }
    if spec.limits.len() > MAX_LIMIT_ENTRIES {
        return Err(ValidationError::TooManyLimits {
            count: spec.limits.len(),
        });
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut limits = Vec::with_capacity(spec.limits.len());
    for (index, entry) in spec.limits.iter().enumerate() {
        let region = entry.region.as_str();
        if region.is_empty()
            || region.len() > MAX_REGION_LEN
            || region.contains(char::is_whitespace)
        {
            return Err(ValidationError::InvalidRegion {
                index,
                region: region.to_owned(),
            });
        }
        if let Some(&first) = seen.get(region) {
            return Err(ValidationError::DuplicateRegion {
                index,
                first,
                region: region.to_owned(),
            });
        }
        seen.insert(region, index);
        limits.push(LimitRule {
            region: region.to_owned(),
            limits: check_entry(index, entry)?,
        });
    }
    Ok(ValidQuota {
        selector,
        limits,
        priority: spec.priority,
        pressure: check_pressure(spec.pressure.as_ref())?,
    })
}

/// Parses an entry's values and checks `min <= low <= high <= max` pairwise (so a missing middle
/// value still orders the outer two), in the same order as the CEL rules.
fn check_entry(index: usize, entry: &LimitEntry) -> Result<Limits, ValidationError> {
    let fields = [
        (LimitField::Min, &entry.min),
        (LimitField::Low, &entry.low),
        (LimitField::High, &entry.high),
        (LimitField::Max, &entry.max),
    ];
    if fields.iter().all(|(_, value)| value.is_none()) {
        return Err(ValidationError::NoLimitValue { index });
    }
    let mut parsed: [Option<(LimitField, &str, u64)>; 4] = [None; 4];
    for (slot, (field, value)) in parsed.iter_mut().zip(fields) {
        if let Some(value) = value {
            let bytes =
                parse_quantity(value).map_err(|source| ValidationError::InvalidQuantity {
                    index,
                    field,
                    value: value.clone(),
                    source,
                })?;
            *slot = Some((field, value.as_str(), bytes));
        }
    }
    for (i, lower) in parsed.iter().enumerate() {
        for upper in &parsed[i + 1..] {
            if let (Some((lf, lv, lb)), Some((uf, uv, ub))) = (lower, upper)
                && lb > ub
            {
                return Err(ValidationError::LimitOrder {
                    index,
                    lower: *lf,
                    lower_value: (*lv).to_owned(),
                    upper: *uf,
                    upper_value: (*uv).to_owned(),
                });
            }
        }
    }
    let bytes = |i: usize| parsed[i].map(|(_, _, b)| b);
    Ok(Limits {
        min: bytes(0),
        low: bytes(1),
        high: bytes(2),
        max: bytes(3),
    })
}

fn check_pressure(policy: Option<&PressurePolicy>) -> Result<Pressure, ValidationError> {
    let default = PressurePolicy::default();
    let policy = policy.unwrap_or(&default);
    let grace_period = parse_duration(&policy.grace_period).map_err(|source| {
        ValidationError::InvalidGracePeriod {
            value: policy.grace_period.clone(),
            source,
        }
    })?;
    let rate = policy.max_evictions_per_minute;
    let max_evictions_per_minute = u32::try_from(rate)
        .ok()
        .filter(|_| EVICTIONS_PER_MINUTE_RANGE.contains(&rate))
        .ok_or(ValidationError::InvalidEvictionRate { value: rate })?;
    Ok(Pressure {
        action: policy.action,
        grace_period,
        max_evictions_per_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::TestQuota;

    const GI: u64 = 1 << 30;

    fn check(quota: TestQuota) -> Result<ValidQuota, ValidationError> {
        validate(&quota.0.spec)
    }

    #[test]
    fn a_valid_spec_is_parsed() {
        let mut quota = TestQuota::new("ns", "q")
            .priority(3)
            .limit(
                "drm/0000:03:00.0/vram0",
                &[
                    ("max", "8Gi"),
                    ("high", "6Gi"),
                    ("low", "2Gi"),
                    ("min", "1Gi"),
                ],
            )
            .limit("*", &[("high", "1.5Gi")]);
        quota.0.spec.pressure = Some(PressurePolicy {
            action: PressureAction::Evict,
            grace_period: "90s".into(),
            max_evictions_per_minute: 10,
        });
        let valid = check(quota).expect("valid");
        assert_eq!(valid.priority, 3);
        assert_eq!(
            valid.limits,
            [
                LimitRule {
                    region: "drm/0000:03:00.0/vram0".into(),
                    limits: Limits {
                        max: Some(8 * GI),
                        high: Some(6 * GI),
                        low: Some(2 * GI),
                        min: Some(GI)
                    },
                },
                LimitRule {
                    region: "*".into(),
                    limits: Limits {
                        high: Some(3 * GI / 2),
                        ..Limits::default()
                    }
                },
            ]
        );
        assert_eq!(
            valid.pressure,
            Pressure {
                action: PressureAction::Evict,
                grace_period: Duration::from_secs(90),
                max_evictions_per_minute: 10
            }
        );
    }

    #[test]
    fn pressure_defaults_apply_when_absent() {
        let valid = check(TestQuota::new("ns", "q").limit("*", &[("max", "1Gi")])).expect("valid");
        assert_eq!(
            valid.pressure,
            Pressure {
                action: PressureAction::None,
                grace_period: Duration::from_secs(300),
                max_evictions_per_minute: 1
            }
        );
    }

    #[test]
    fn each_rule_yields_a_precise_error() {
        let base = || TestQuota::new("ns", "q");
        let with_pressure = |grace: &str, rate: i32| {
            let mut q = base().limit("*", &[("max", "1Gi")]);
            q.0.spec.pressure = Some(PressurePolicy {
                action: PressureAction::Evict,
                grace_period: grace.into(),
                max_evictions_per_minute: rate,
            });
            q
        };
        let mut seventeen = base();
        for i in 0..17 {
            seventeen = seventeen.limit(&format!("drm/{i}/vram0"), &[("max", "1Gi")]);
        }
        let cases: Vec<(TestQuota, &str, &str)> = vec![
            (base(), "NoLimits", "spec.limits: needs at least one entry"),
            (
                seventeen,
                "TooManyLimits",
                "spec.limits: 17 entries, at most 16 allowed",
            ),
            (
                base()
                    .limit("*", &[("max", "1Gi")])
                    .limit("", &[("max", "1Gi")]),
                "InvalidRegion",
                "spec.limits[1].region: \"\" is not a region name or pattern",
            ),
            (
                base().limit("drm/a b", &[("max", "1Gi")]),
                "InvalidRegion",
                "spec.limits[0].region: \"drm/a b\"",
            ),
            (
                base()
                    .limit("drm/*", &[("max", "1Gi")])
                    .limit("x", &[("max", "1Gi")])
                    .limit("drm/*", &[("low", "1Gi")]),
                "DuplicateRegion",
                "spec.limits[2].region: \"drm/*\" already appears in spec.limits[0]",
            ),
            (
                base().limit("*", &[]),
                "NoLimitValue",
                "spec.limits[0]: set at least one of max, high, low or min",
            ),
            (
                base()
                    .limit("*", &[("max", "1Gi")])
                    .limit("x", &[("high", "8GB")]),
                "InvalidQuantity",
                "spec.limits[1].high: invalid quantity \"8GB\"",
            ),
            (
                base().limit("*", &[("min", "-1")]),
                "InvalidQuantity",
                "spec.limits[0].min: invalid quantity \"-1\"",
            ),
            (
                base().limit("*", &[("min", "2Gi"), ("low", "1Gi")]),
                "LimitOrder",
                "spec.limits[0].min: 2Gi must not be greater than low (1Gi)",
            ),
            (
                base().limit("*", &[("min", "2Gi"), ("max", "1Gi")]),
                "LimitOrder",
                "spec.limits[0].min: 2Gi must not be greater than max (1Gi)",
            ),
            (
                base().limit("*", &[("low", "3Gi"), ("high", "2Gi"), ("max", "1Gi")]),
                "LimitOrder",
                "spec.limits[0].low: 3Gi must not be greater than high (2Gi)",
            ),
            (
                base().limit("*", &[("high", "9Gi"), ("max", "8Gi")]),
                "LimitOrder",
                "spec.limits[0].high: 9Gi must not be greater than max (8Gi)",
            ),
            (
                base().limit("*", &[("max", "1Gi")]).expr("app", "In", &[]),
                "InvalidSelector",
                "spec.selector: invalid label selector",
            ),
            (
                with_pressure("5 minutes", 1),
                "InvalidGracePeriod",
                "spec.pressure.gracePeriod: invalid duration \"5 minutes\"",
            ),
            (
                with_pressure("5m", 0),
                "InvalidEvictionRate",
                "spec.pressure.maxEvictionsPerMinute: 0 is outside 1 to 600",
            ),
            (
                with_pressure("5m", 601),
                "InvalidEvictionRate",
                "spec.pressure.maxEvictionsPerMinute: 601",
            ),
        ];
        for (quota, reason, message) in cases {
            let err = check(quota).expect_err(message);
            assert_eq!(err.reason(), reason, "{err}");
            assert!(
                err.to_string().starts_with(message),
                "{err} does not start with {message}"
            );
        }
    }

    #[test]
    fn errors_keep_the_cause_as_source() {
        use std::error::Error;
        let err =
            check(TestQuota::new("ns", "q").limit("*", &[("max", "8GB")])).expect_err("invalid");
        let source = err.source().expect("source").to_string();
        assert!(source.contains("not a quantity"), "{source}");
        assert!(!err.to_string().contains("not a quantity"), "{err}");
    }
}
