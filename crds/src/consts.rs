//! CORE: the names both binaries must agree on: API group, field managers, the extended
//! resource, condition types and reasons, and the pressure tiers the agent reports.
//!
//! A reason is written by one component and read back by another (the agent writes a pod's
//! `kube-dmem.io/VRAMPressure` reason, the operator reads it to decide on eviction), so every string
//! here is part of the wire contract: change one only together with a migration note.

use std::fmt;
use std::str::FromStr;

/// API group of the `DmemQuota` custom resource.
pub const API_GROUP: &str = "kube-dmem.io";
/// API version of the `DmemQuota` custom resource served today.
pub const API_VERSION: &str = "v1alpha1";

/// Server-side-apply field manager of the operator (quota status, evictions).
pub const OPERATOR_FIELD_MANAGER: &str = "kube-dmem-operator";
/// Server-side-apply field manager of the node agent (pod conditions).
pub const AGENT_FIELD_MANAGER: &str = "kube-dmem-agent";

/// Extended resource the device plugin advertises; one unit is a fixed slice of one region's VRAM.
pub const VRAM_RESOURCE: &str = "kube-dmem.io/vram";

/// Pod condition type carrying the pod's [`PressureTier`] as its reason.
pub const POD_CONDITION_VRAM_PRESSURE: &str = "kube-dmem.io/VRAMPressure";
/// Pod condition type saying whether the pod's limits are in force in the kernel, and if not, why.
pub const POD_CONDITION_VRAM_LIMITS_APPLIED: &str = "kube-dmem.io/VRAMLimitsApplied";
/// Pod condition type: `True` while the pod's usage is above its `high` in some region. Its
/// `lastTransitionTime` is the moment the pod crossed `high`, which starts the operator's eviction
/// grace period; it does not move when the pod's pressure tier changes for another reason (for
/// example from `Contended` to `AtMax`), which `VRAMPressure`'s transition time cannot tell apart.
pub const POD_CONDITION_VRAM_ABOVE_HIGH: &str = "kube-dmem.io/VRAMAboveHigh";

/// Quota condition type: the quota is valid and its status reflects the current spec.
pub const QUOTA_CONDITION_READY: &str = "Ready";
/// Quota condition type: for at least one pod another quota outranks this one.
pub const QUOTA_CONDITION_CONFLICT: &str = "Conflict";

/// `Ready=True`: the spec is valid and the status was computed from it.
pub const REASON_RECONCILED: &str = "Reconciled";
/// `Ready=False`: the spec breaks a rule; the message carries the validation error.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// `Conflict=True`: another quota governs at least one pod this quota selects.
pub const REASON_OUTRANKED: &str = "Outranked";
/// `Conflict=False`: this quota governs every pod it selects.
pub const REASON_NO_CONFLICT: &str = "NoConflict";

/// `VRAMLimitsApplied=True`: every value was written and read back as written.
pub const REASON_APPLIED: &str = "Applied";
/// `VRAMLimitsApplied=False`: the pod's cgroup has not appeared yet (or was not found).
pub const REASON_CGROUP_NOT_FOUND: &str = "CgroupNotFound";
/// `VRAMLimitsApplied=False`: the kernel kept the old `dmem.max` because usage is above the new
/// value (kernels 6.14 to 7.2 drop such a write silently); the agent retries.
pub const REASON_MAX_BELOW_USAGE: &str = "MaxBelowUsage";
/// `VRAMLimitsApplied=False`: a write to a `dmem.*` file failed.
pub const REASON_WRITE_FAILED: &str = "WriteFailed";
/// `VRAMLimitsApplied`: the governing quota's current spec is invalid or does not decode. The
/// agent keeps its last valid spec in force (status `True`), or, when it never saw a valid one,
/// leaves the pod's limits as they are (status `Unknown`); nothing applied is loosened.
pub const REASON_QUOTA_INVALID: &str = "QuotaInvalid";
/// `VRAMLimitsApplied=Unknown` or `VRAMPressure=Unknown`: a `dmem.*` file of the pod's cgroup
/// could not be read or parsed (anything but "not found"); the pod's limits are left as they are
/// and the event names the file, the line and the error.
pub const REASON_KERNEL_READ_ERROR: &str = "KernelReadError";
/// `VRAMLimitsApplied=Unknown`: the pod asks for `kube-dmem.io/vram` units but the agent cannot
/// tell which it holds (no PodResources answer since the agent started, or an entry it cannot
/// join); the pod's limits are left as they are until it can.
pub const REASON_GRANT_UNKNOWN: &str = "GrantUnknown";
/// `VRAMLimitsApplied=True`: another writer set a stricter `dmem.max` than the quota's; it stays
/// in force (a limit is never loosened, whoever set it).
pub const REASON_FOREIGN_LIMIT_KEPT: &str = "ForeignLimitKept";
/// `VRAMLimitsApplied=True`: another writer changed a `dmem.*` value of the pod; the agent wrote
/// the quota's value back.
pub const REASON_FOREIGN_WRITE_REVERTED: &str = "ForeignWriteReverted";
/// `VRAMLimitsApplied=False`: another writer keeps changing a `dmem.*` value of the pod; the agent
/// stopped restoring it rather than fight in a write loop. Find the other writer.
pub const REASON_FOREIGN_WRITER_CONFLICT: &str = "ForeignWriterConflict";
/// `VRAMAboveHigh=True`: usage is above `high` in at least one region.
pub const REASON_ABOVE_HIGH: &str = "AboveHigh";
/// `VRAMAboveHigh=False`: usage is at or below `high` in every region (or no `high` is set).
pub const REASON_WITHIN_HIGH: &str = "WithinHigh";
/// `VRAMLimitsApplied=True`: no quota governs the pod and it holds no VRAM units, so the kernel
/// defaults are what should be in force, and are.
pub const REASON_NOT_GOVERNED: &str = "NotGoverned";

/// Event reason: the operator evicted a pod that stayed above `high` for longer than the grace period.
pub const REASON_EVICTED: &str = "Evicted";
/// Event reason: an eviction was refused (for example by a PodDisruptionBudget) and will be retried.
pub const REASON_EVICTION_BLOCKED: &str = "EvictionBlocked";
/// Quota condition type: `True` while the Eviction API refuses (for example because of a
/// PodDisruptionBudget) to evict at least one pod this quota's remediation chose. Present only on
/// quotas with `spec.pressure.action: Evict`.
pub const QUOTA_CONDITION_EVICTION_BLOCKED: &str = "EvictionBlocked";
/// `EvictionBlocked=False`: no eviction of this quota is being refused.
pub const REASON_NO_BLOCKED_EVICTIONS: &str = "NoBlockedEvictions";

/// Node annotation in which each node agent publishes its node's dmem regions, as
/// `REGION=BYTES[,REGION=BYTES...]` (bytes from `dmem.capacity`); written by the agent with
/// [`crate::regions::format_regions`], read by the operator with [`crate::regions::parse_regions`].
pub const NODE_REGIONS_ANNOTATION: &str = "kube-dmem.io/regions";

/// `VRAMLimitsApplied=False`: the node's kernel has no usable dmem controller (too old, not
/// configured, or disabled), so no limit can be enforced on this node.
pub const REASON_DMEM_UNAVAILABLE: &str = "DmemUnavailable";

/// Pod annotation the simulator backend reads to charge VRAM to a pod; value format
/// `REGION=QUANTITY[,REGION=QUANTITY...]`, parsed by [`crate::usage::parse_sim_usage`].
pub const SIM_USAGE_ANNOTATION: &str = "sim.kube-dmem.io/usage";

/// How close a pod is to losing VRAM, in the kernel's eviction order (`docs/kernel.md` §3.6, §7).
///
/// The agent writes [`PressureTier::as_str`] as the reason of the `kube-dmem.io/VRAMPressure`
/// condition; the operator parses it back with [`FromStr`]. Variants are ordered from most to least
/// severe, so `min()` over several regions gives the pod's worst tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PressureTier {
    /// Usage reached `max` in some region: further allocations there fail.
    AtMax,
    /// Usage is above `high`: this memory is evicted first under contention.
    AboveHigh,
    /// The region is nearly full: the kernel is evicting, even within protections.
    Contended,
    /// Usage is above `low`/`min` but not above `high`: evicted in the second pass.
    Unprotected,
    /// Usage is within the pod's `low`/`min` protection.
    Protected,
    /// The pod uses no VRAM in any region.
    Idle,
}

impl PressureTier {
    /// Every tier, most severe first.
    pub const ALL: [Self; 6] = [
        Self::AtMax,
        Self::AboveHigh,
        Self::Contended,
        Self::Unprotected,
        Self::Protected,
        Self::Idle,
    ];

    /// The stable PascalCase form used as a condition reason.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AtMax => "AtMax",
            Self::AboveHigh => "AboveHigh",
            Self::Contended => "Contended",
            Self::Unprotected => "Unprotected",
            Self::Protected => "Protected",
            Self::Idle => "Idle",
        }
    }

    /// Whether the `VRAMPressure` condition status is `True` for this tier: the pod is losing or
    /// about to lose VRAM.
    pub const fn is_pressure(self) -> bool {
        matches!(self, Self::AtMax | Self::AboveHigh | Self::Contended)
    }
}

impl fmt::Display for PressureTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A condition reason that is not one of the [`PressureTier`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pressure tier {0:?}")]
pub struct UnknownPressureTier(pub String);

impl FromStr for PressureTier {
    type Err = UnknownPressureTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|tier| tier.as_str() == s)
            .ok_or_else(|| UnknownPressureTier(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_round_trip_through_their_string_form() {
        for tier in PressureTier::ALL {
            assert_eq!(tier.as_str().parse::<PressureTier>(), Ok(tier));
            assert_eq!(tier.to_string(), tier.as_str());
        }
        assert_eq!(
            "abovehigh".parse::<PressureTier>(),
            Err(UnknownPressureTier("abovehigh".into()))
        );
    }

    #[test]
    fn tiers_are_ordered_by_severity() {
        let mut sorted = PressureTier::ALL;
        sorted.sort();
        assert_eq!(sorted, PressureTier::ALL);
        assert_eq!(
            [PressureTier::Protected, PressureTier::AboveHigh]
                .into_iter()
                .min(),
            Some(PressureTier::AboveHigh)
        );
        let pressured: Vec<_> = PressureTier::ALL
            .into_iter()
            .filter(|t| t.is_pressure())
            .collect();
        assert_eq!(
            pressured,
            [
                PressureTier::AtMax,
                PressureTier::AboveHigh,
                PressureTier::Contended
            ]
        );
    }

    #[test]
    fn condition_types_are_qualified_names_under_our_group() {
        for ty in [
            POD_CONDITION_VRAM_PRESSURE,
            POD_CONDITION_VRAM_LIMITS_APPLIED,
            POD_CONDITION_VRAM_ABOVE_HIGH,
        ] {
            let (prefix, name) = ty.split_once('/').expect("qualified");
            assert_eq!(prefix, API_GROUP);
            assert!(name.len() <= 63);
        }
    }
}
