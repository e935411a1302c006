//! EDGE: the errors of the API actions in [`super`], with their reasons.

/// A failed API action.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Applying a quota's status failed.
    #[error("could not apply the status of DmemQuota {quota}")]
    PatchStatus {
        /// `namespace/name`.
        quota: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The Eviction API failed for a reason other than a PodDisruptionBudget.
    #[error("could not evict pod {pod}")]
    EvictPod {
        /// `namespace/name`.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Publishing an Event failed.
    #[error("could not publish event {reason} about {object}")]
    PublishEvent {
        /// The event reason.
        reason: String,
        /// `kind namespace/name`.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A call did not answer within the per-call timeout (10 s).
    #[error("{action} on {object} timed out")]
    TimedOut {
        /// The action, as in the other variants' reasons.
        action: &'static str,
        /// The object.
        object: String,
    },
}

impl ActError {
    /// PascalCase reason: Event reason and `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PatchStatus { .. } => "PatchStatus",
            Self::EvictPod { .. } => "EvictPod",
            Self::PublishEvent { .. } => "PublishEvent",
            Self::TimedOut { .. } => "TimedOut",
        }
    }

    /// Permanent: the API rejected the request itself (forbidden, invalid); retrying the same
    /// request without a change (RBAC, CRD) fails again. Conflicts, throttling, server errors and
    /// timeouts are transient.
    pub fn is_permanent(&self) -> bool {
        let source = match self {
            Self::PatchStatus { source, .. }
            | Self::EvictPod { source, .. }
            | Self::PublishEvent { source, .. } => source,
            Self::TimedOut { .. } => return false,
        };
        matches!(source, kube::Error::Api(s) if (400..500).contains(&s.code) && ![409, 429].contains(&s.code))
    }
}
