//! EDGE (shared state): the operator's readiness, written by the controller and read by the admin
//! server of `kube-dmem-runtime`: ready once every watch has synced and, while this replica leads,
//! once the first status pass has run; a standby replica is ready as soon as its caches are, so
//! rollouts of two replicas do not hang on the one that does not lead.

use std::sync::atomic::{AtomicBool, Ordering};

use kube_dmem_runtime::admin::Readiness;

/// Readiness inputs, shared between the controller (writer) and the admin server (reader).
#[derive(Debug, Default)]
pub struct Health {
    synced: AtomicBool,
    leading: AtomicBool,
    passed_while_leading: AtomicBool,
}

impl Health {
    /// Every watch has produced its initial list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Leadership changed; a new term needs a new first pass before it counts as ready.
    pub fn set_leading(&self, leading: bool) {
        self.passed_while_leading.store(false, Ordering::Release);
        self.leading.store(leading, Ordering::Release);
    }

    /// A status pass completed while leading.
    pub fn set_passed(&self) {
        self.passed_while_leading.store(true, Ordering::Release);
    }
}

impl Readiness for Health {
    fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            && (!self.leading.load(Ordering::Acquire)
                || self.passed_while_leading.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_sync_and_a_pass_while_leading() {
        let h = Health::default();
        assert!(!h.is_ready());
        h.set_synced();
        assert!(h.is_ready(), "a synced standby is ready");
        h.set_leading(true);
        assert!(!h.is_ready(), "a new leader waits for its first pass");
        h.set_passed();
        assert!(h.is_ready());
        h.set_leading(false);
        assert!(h.is_ready());
    }
}
