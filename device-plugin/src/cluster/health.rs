//! EDGE (shared state): the node agent's readiness, written by the agent loop and read by the
//! admin server of `kube-dmem-runtime`: ready once both watches (this node's pods, all DmemQuotas)
//! have synced and the first enforcement round has run, so a rollout waits until the agent
//! enforces.

use std::sync::atomic::{AtomicBool, Ordering};

use kube_dmem_runtime::admin::Readiness;

/// Readiness inputs, shared between the agent loop (writer) and the admin server (reader).
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Both watches synced and the first round ran.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

impl Readiness for Health {
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_waits_for_the_first_round() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_ready();
        assert!(h.is_ready());
    }
}
