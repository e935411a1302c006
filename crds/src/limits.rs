//! CORE: the limits that follow for a pod in each region, and the values to write to the kernel.
//!
//! Owns three steps, all pure:
//! 1. [`effective_limits`]: per region on the node, the governing quota's most specific entry
//!    ([`crate::glob`]; ties to the earlier entry), capped by the pod's VRAM grant on every
//!    granted region, then [`Limits::clamped`] so `min <= low <= high <= max` always holds;
//! 2. [`Limits::to_kernel`]: what to write, given whether the kernel has a native `dmem.high`
//!    (found by probing); without it, `high` is emulated through `dmem.low` (`docs/kernel.md` §7);
//! 3. [`parent_low`]: the `dmem.low` an ancestor cgroup needs so the emulation is not diluted.

use std::collections::BTreeMap;

use crate::glob;
use crate::select::{Grant, QuotaFacts};

/// Limits in bytes for one region; `None` means "no limit of this kind".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Hard limit (`dmem.max`).
    pub max: Option<u64>,
    /// Soft limit: memory above it is evicted first and reported as pressure.
    pub high: Option<u64>,
    /// Best-effort protection (`dmem.low`).
    pub low: Option<u64>,
    /// Hard protection (`dmem.min`).
    pub min: Option<u64>,
}

impl Limits {
    /// Whether no limit of any kind is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Lowers values until `min <= low <= high <= max` holds for those that are set. Clamping is
    /// always downward, toward the stricter ceiling: a cap (such as a grant) must never be loosened
    /// by a protection, and a protection above its ceiling could not be honoured anyway.
    pub fn clamped(self) -> Self {
        let cap = |value: Option<u64>, ceiling: Option<u64>| match (value, ceiling) {
            (Some(v), Some(c)) => Some(v.min(c)),
            (value, _) => value,
        };
        let high = cap(self.high, self.max);
        let low = cap(self.low, high.or(self.max));
        let min = cap(self.min, low.or(high).or(self.max));
        Self {
            max: self.max,
            high,
            low,
            min,
        }
    }

    /// The values to write for these limits.
    ///
    /// With [`HighSupport::Emulated`] (every kernel so far), `dmem.low` gets `high` when it is set:
    /// under contention the kernel's first eviction pass takes only memory above the effective
    /// low, so memory above `high` goes first (`docs/kernel.md` §7). The declared `low` is then
    /// implied (it is at most `high`), and `min` is written as declared, never raised to `high`,
    /// because `min` would pin memory. With [`HighSupport::Native`], `high` is written to its own
    /// file and `low` stays `low`.
    pub fn to_kernel(self, support: HighSupport) -> KernelLimits {
        let limits = self.clamped();
        match support {
            HighSupport::Native => KernelLimits {
                max: limits.max,
                high: limits.high,
                low: limits.low,
                min: limits.min,
            },
            HighSupport::Emulated => KernelLimits {
                max: limits.max,
                high: None,
                low: limits.high.or(limits.low),
                min: limits.min,
            },
        }
    }
}

/// Whether the kernel exposes `dmem.high`, as found by probing for the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HighSupport {
    /// The kernel has a `dmem.high` file: write `high` there.
    Native,
    /// No `dmem.high`: enforce `high` through `dmem.low`.
    Emulated,
}

/// Values to write to one region of a pod cgroup's `dmem.*` files. `None` means the kernel default:
/// `max` for `dmem.max` and `dmem.high`, `0` for `dmem.low` and `dmem.min`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelLimits {
    /// For `dmem.max`.
    pub max: Option<u64>,
    /// For `dmem.low`.
    pub low: Option<u64>,
    /// For `dmem.min`.
    pub min: Option<u64>,
    /// For `dmem.high`; always `None` with [`HighSupport::Emulated`].
    pub high: Option<u64>,
}

/// One checked `spec.limits[]` entry: a region pattern and its limits in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitRule {
    /// Exact region name or glob ([`crate::glob`]).
    pub region: String,
    /// The entry's limits.
    pub limits: Limits,
}

/// The entry of `rules` that applies to `region`: most specific, earliest on a tie.
pub fn rule_for<'r>(rules: &'r [LimitRule], region: &str) -> Option<&'r LimitRule> {
    glob::best_match(rules.iter().map(|r| r.region.as_str()), region).map(|i| &rules[i])
}

/// A pod's limits per region, for the regions that get any.
///
/// `quota` is the governing quota (see [`crate::select::governing`]), `regions` the node's region
/// names (from `dmem.capacity`), `grants` the pod's VRAM units per region. Every granted region
/// gets `max = min(granted bytes, the quota's max)`, even if `regions` lacks it, so a quota can
/// never raise a pod above what the scheduler granted. Grants naming one region twice add up
/// (each container's units count). Every result is [`Limits::clamped`].
pub fn effective_limits<S: AsRef<str>>(
    quota: Option<&QuotaFacts>,
    regions: &[S],
    grants: &[Grant],
) -> BTreeMap<String, Limits> {
    let rules = quota.map_or(&[][..], |q| q.spec.limits.as_slice());
    limits_from_rules(rules, regions, grants)
}

/// [`effective_limits`] over bare rules (an empty slice means no quota).
pub fn limits_from_rules<S: AsRef<str>>(
    rules: &[LimitRule],
    regions: &[S],
    grants: &[Grant],
) -> BTreeMap<String, Limits> {
    let mut out: BTreeMap<String, Limits> = regions
        .iter()
        .map(AsRef::as_ref)
        .filter_map(|region| Some((region.to_owned(), rule_for(rules, region)?.limits)))
        .collect();
    let mut granted: BTreeMap<&str, u64> = BTreeMap::new();
    for grant in grants {
        let sum = granted.entry(grant.region.as_str()).or_default();
        *sum = sum.saturating_add(grant.bytes);
    }
    for (region, bytes) in granted {
        let limits = out.entry(region.to_owned()).or_insert_with(|| {
            rule_for(rules, region)
                .map(|r| r.limits)
                .unwrap_or_default()
        });
        limits.max = Some(limits.max.map_or(bytes, |m| m.min(bytes)));
    }
    out.into_iter()
        .map(|(region, limits)| (region, limits.clamped()))
        .filter(|(_, limits)| !limits.is_empty())
        .collect()
}

/// Region patterns of `rules` that match none of `regions`, in list order (for
/// `status.unmatchedRegions`; the caller passes the union of every node's regions).
pub fn unmatched_patterns<S: AsRef<str>>(rules: &[LimitRule], regions: &[S]) -> Vec<String> {
    rules
        .iter()
        .filter(|r| {
            !regions
                .iter()
                .any(|region| glob::matches(&r.region, region.as_ref()))
        })
        .map(|r| r.region.clone())
        .collect()
}

/// The `dmem.low` a parent cgroup needs so emulated `high` works for its children: the sum over the
/// children of `min(usage, low)`, given as `(usage, low)` pairs in bytes.
///
/// The kernel scales a child's effective low by how much of its parent's effective low the children
/// claim (`docs/kernel.md` §7, conditions 1 and 2). A parent low below this sum scales every child down, so
/// pods below their `high` become evictable in the first pass; one above it hands the unclaimed
/// rest to children over their low, partly protecting memory above `high`. At exactly this sum each
/// child's effective low is `min(usage, low)`, which is what emulation relies on. Recompute it as
/// usage changes. Saturates at `u64::MAX`.
pub fn parent_low(children: &[(u64, u64)]) -> u64 {
    children.iter().fold(0u64, |sum, &(usage, low)| {
        sum.saturating_add(usage.min(low))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{TestQuota, grant};
    use proptest::prelude::*;

    const GI: u64 = 1 << 30;
    const A: &str = "drm/0000:03:00.0/vram0";
    const B: &str = "drm/0000:04:00.0/vram0";
    const GTT: &str = "drm/0000:03:00.0/gtt";

    fn l(max: Option<u64>, high: Option<u64>, low: Option<u64>, min: Option<u64>) -> Limits {
        Limits {
            max,
            high,
            low,
            min,
        }
    }

    fn max(bytes: u64) -> Limits {
        l(Some(bytes), None, None, None)
    }

    #[test]
    fn limits_per_region_with_and_without_quota_and_grant() {
        let regions = [A, B, GTT];
        let star8 = TestQuota::new("ns", "q")
            .limit("*", &[("max", "8Gi")])
            .facts();
        let layered = TestQuota::new("ns", "q")
            .limit("*", &[("max", "8Gi")])
            .limit("drm/*/vram*", &[("max", "4Gi"), ("high", "3Gi")])
            .limit(A, &[("low", "1Gi")])
            .facts();
        let with_high = TestQuota::new("ns", "q")
            .limit(
                A,
                &[
                    ("max", "8Gi"),
                    ("high", "6Gi"),
                    ("low", "5Gi"),
                    ("min", "4Gi"),
                ],
            )
            .facts();
        type Case<'a> = (Option<&'a QuotaFacts>, Vec<Grant>, Vec<(&'a str, Limits)>);
        let cases: Vec<Case> = vec![
            // Nothing governs, nothing granted: no limits at all.
            (None, vec![], vec![]),
            // Units alone: max = granted, on the granted region only.
            (None, vec![grant(A, 2 * GI)], vec![(A, max(2 * GI))]),
            // `*` reaches every region.
            (
                Some(&star8),
                vec![],
                vec![(A, max(8 * GI)), (B, max(8 * GI)), (GTT, max(8 * GI))],
            ),
            // A grant below the quota's max lowers it; above it, the quota's max stays.
            (
                Some(&star8),
                vec![grant(B, 2 * GI)],
                vec![(A, max(8 * GI)), (B, max(2 * GI)), (GTT, max(8 * GI))],
            ),
            (
                Some(&star8),
                vec![grant(B, 16 * GI)],
                vec![(A, max(8 * GI)), (B, max(8 * GI)), (GTT, max(8 * GI))],
            ),
            // Most specific entry wins whole (entries are not merged).
            (
                Some(&layered),
                vec![],
                vec![
                    (A, l(None, None, Some(GI), None)),
                    (B, l(Some(4 * GI), Some(3 * GI), None, None)),
                    (GTT, max(8 * GI)),
                ],
            ),
            // A grant on a region whose entry has no max adds one, and clamps low below it.
            (
                Some(&layered),
                vec![grant(A, GI / 2)],
                vec![
                    (A, l(Some(GI / 2), None, Some(GI / 2), None)),
                    (B, l(Some(4 * GI), Some(3 * GI), None, None)),
                    (GTT, max(8 * GI)),
                ],
            ),
            // The grant caps max and clamps high, low and min downward.
            (
                Some(&with_high),
                vec![grant(A, 5 * GI)],
                vec![(A, l(Some(5 * GI), Some(5 * GI), Some(5 * GI), Some(4 * GI)))],
            ),
            // A granted region missing from the node's list still gets its max.
            (
                None,
                vec![grant("drm/0000:09:00.0/vram0", GI)],
                vec![("drm/0000:09:00.0/vram0", max(GI))],
            ),
            // Units of two regions (one container each): every granted region gets its max.
            (
                None,
                vec![grant(A, 2 * GI), grant(B, 3 * GI)],
                vec![(A, max(2 * GI)), (B, max(3 * GI))],
            ),
            (
                Some(&star8),
                vec![grant(B, 16 * GI), grant(A, 2 * GI)],
                vec![(A, max(2 * GI)), (B, max(8 * GI)), (GTT, max(8 * GI))],
            ),
            // Two containers holding units of one region: the pod may use both.
            (
                None,
                vec![grant(A, 2 * GI), grant(A, GI)],
                vec![(A, max(3 * GI))],
            ),
        ];
        for (i, (quota, grants, want)) in cases.into_iter().enumerate() {
            let want: BTreeMap<String, Limits> =
                want.into_iter().map(|(r, l)| (r.to_owned(), l)).collect();
            assert_eq!(effective_limits(quota, &regions, &grants), want, "case {i}");
        }
    }

    #[test]
    fn clamping_is_downward_and_orders_the_values() {
        let cases = [
            (
                l(Some(4), Some(6), Some(8), Some(9)),
                l(Some(4), Some(4), Some(4), Some(4)),
            ),
            (
                l(Some(8), None, Some(9), Some(2)),
                l(Some(8), None, Some(8), Some(2)),
            ),
            (
                l(None, Some(6), Some(8), Some(7)),
                l(None, Some(6), Some(6), Some(6)),
            ),
            (
                l(None, None, Some(3), Some(5)),
                l(None, None, Some(3), Some(3)),
            ),
            (
                l(Some(8), Some(6), Some(4), Some(2)),
                l(Some(8), Some(6), Some(4), Some(2)),
            ),
            (Limits::default(), Limits::default()),
        ];
        for (input, want) in cases {
            assert_eq!(input.clamped(), want, "{input:?}");
        }
    }

    #[test]
    fn kernel_mapping_emulates_high_through_low() {
        let k = |max, low, min, high| KernelLimits {
            max,
            low,
            min,
            high,
        };
        let cases = [
            // (limits, emulated, native)
            (
                l(Some(8), Some(6), Some(2), Some(1)),
                k(Some(8), Some(6), Some(1), None),
                k(Some(8), Some(2), Some(1), Some(6)),
            ),
            (
                l(Some(8), None, Some(2), None),
                k(Some(8), Some(2), None, None),
                k(Some(8), Some(2), None, None),
            ),
            (
                l(None, Some(6), None, None),
                k(None, Some(6), None, None),
                k(None, None, None, Some(6)),
            ),
            (
                l(Some(8), None, None, None),
                k(Some(8), None, None, None),
                k(Some(8), None, None, None),
            ),
            // Unordered input is clamped before mapping.
            (
                l(Some(4), Some(6), None, None),
                k(Some(4), Some(4), None, None),
                k(Some(4), None, None, Some(4)),
            ),
        ];
        for (limits, emulated, native) in cases {
            assert_eq!(
                limits.to_kernel(HighSupport::Emulated),
                emulated,
                "{limits:?}"
            );
            assert_eq!(limits.to_kernel(HighSupport::Native), native, "{limits:?}");
        }
    }

    #[test]
    fn parent_low_sums_claimed_protection() {
        let cases: &[(&[(u64, u64)], u64)] = &[
            (&[], 0),
            (&[(2 * GI, 4 * GI), (6 * GI, 4 * GI)], 6 * GI),
            (&[(0, 4 * GI)], 0),
            (&[(u64::MAX, u64::MAX), (1, 1)], u64::MAX),
        ];
        for (children, want) in cases {
            assert_eq!(parent_low(children), *want, "{children:?}");
        }
    }

    #[test]
    fn unmatched_patterns_are_reported_in_order() {
        let quota = TestQuota::new("ns", "q")
            .limit("drm/*/gtt", &[("max", "1Gi")])
            .limit(A, &[("max", "1Gi")])
            .limit("drm/0000:0a:00.0/vram0", &[("max", "1Gi")])
            .limit("*", &[("max", "1Gi")])
            .facts();
        assert_eq!(
            unmatched_patterns(&quota.spec.limits, &[A, B]),
            ["drm/*/gtt", "drm/0000:0a:00.0/vram0"]
        );
        assert_eq!(
            unmatched_patterns(&quota.spec.limits, &[] as &[&str]).len(),
            4
        );
    }

    fn arb_limits() -> impl Strategy<Value = Limits> {
        let v = || prop::option::of(0u64..20);
        (v(), v(), v(), v()).prop_map(|(max, high, low, min)| Limits {
            max,
            high,
            low,
            min,
        })
    }

    fn ordered(l: &Limits) -> bool {
        let chain = [l.min, l.low, l.high, l.max];
        chain.iter().enumerate().all(|(i, lower)| {
            chain[i + 1..].iter().all(|upper| match (lower, upper) {
                (Some(a), Some(b)) => a <= b,
                _ => true,
            })
        })
    }

    proptest! {
        #[test]
        fn effective_limits_are_always_ordered_and_within_the_grant(
            rules in prop::collection::vec(
                (prop::sample::select(vec!["*", "drm/*/vram*", A, B, "drm/0000:03:00.0/*"]), arb_limits()),
                0..5,
            ),
            granted in prop::collection::vec((prop::sample::select(vec![A, B, GTT]), 0u64..20), 0..3),
        ) {
            let rules: Vec<LimitRule> = rules
                .into_iter()
                .map(|(region, limits)| LimitRule { region: region.to_owned(), limits })
                .collect();
            let grants: Vec<Grant> = granted.iter().map(|&(region, bytes)| grant(region, bytes)).collect();
            let out = limits_from_rules(&rules, &[A, B, GTT], &grants);
            for (region, limits) in &out {
                prop_assert!(ordered(limits), "{region}: {limits:?}");
                prop_assert!(!limits.is_empty());
                for support in [HighSupport::Native, HighSupport::Emulated] {
                    let k = limits.to_kernel(support);
                    // Written values keep min <= low <= max (absent low/min write 0, absent max "max").
                    if let (Some(min), Some(low)) = (k.min, k.low) {
                        prop_assert!(min <= low);
                    }
                    prop_assert!(k.low.unwrap_or(0) <= k.max.unwrap_or(u64::MAX));
                }
            }
            // Every granted region is capped at the sum of its grants.
            for g in &grants {
                let sum: u64 = grants.iter().filter(|o| o.region == g.region).map(|o| o.bytes).sum();
                prop_assert!(out[&g.region].max.is_some_and(|m| m <= sum));
            }
            let reversed: Vec<Grant> = grants.iter().rev().cloned().collect();
            prop_assert_eq!(&out, &limits_from_rules(&rules, &[A, B, GTT], &reversed));
        }

        #[test]
        fn clamped_is_ordered_and_idempotent(limits in arb_limits()) {
            let once = limits.clamped();
            prop_assert!(ordered(&once));
            prop_assert_eq!(once.clamped(), once);
            prop_assert_eq!(once.max, limits.max);
        }
    }
}
