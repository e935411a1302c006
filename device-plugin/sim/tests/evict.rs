//! Driver-model details beyond the `docs/kernel.md` §9 vectors: LRU order with priorities, touching
//! and pinning, oversize and zero-size BOs, errors of `alloc_bo`, and legacy min protection under
//! pressure.

mod common;

use common::*;
use kube_dmem_sim::{Errno, Profile};
use proptest::prelude::*;

#[test]
fn lru_priority_touch_and_pin() {
    for p in ALL {
        let mut k = evict_setup(p, 4 * G);
        let bos: Vec<_> = (0..4)
            .map(|_| k.alloc_bo("/k/a", R0, G).expect("alloc"))
            .collect();
        k.set_bo_pinned(bos[0], true);
        k.set_bo_priority(bos[1], 1); // evicted after every priority-0 BO
        k.touch_bo(bos[2]); // now the most recently used priority-0 BO
        let c1 = k.alloc_bo("/c", R0, G).expect("evicts bos[3]");
        assert_eq!(k.bo_resident(bos[3]), Some(false), "{p:?}");
        k.alloc_bo("/c", R0, G).expect("evicts bos[2]");
        assert_eq!(k.bo_resident(bos[2]), Some(false), "{p:?}");
        // Priority 0 first: /c's own older BO goes before a's priority-1 BO.
        k.alloc_bo("/c", R0, G).expect("evicts c1");
        assert_eq!(k.bo_resident(c1), Some(false), "{p:?}");
        assert_eq!(k.bo_resident(bos[1]), Some(true), "{p:?}");
        k.set_bo_priority(bos[1], 0);
        k.alloc_bo("/c", R0, G).expect("evicts bos[1]");
        assert_eq!(k.bo_resident(bos[1]), Some(false), "{p:?}");
        assert_eq!(k.bo_resident(bos[0]), Some(true), "{p:?}");
        assert_eq!(k.device_used(R0), 4 * G);
        assert_eq!(k.evicted_bytes("/k/a", R0), 3 * G);
        assert_eq!(k.evicted_bytes("/c", R0), G);
        assert_eq!(k.evicted_bytes("/", R0), 4 * G);
        k.free_bo(bos[0]);
        k.free_bo(bos[0]);
        assert_eq!(k.device_used(R0), 3 * G);
        assert_eq!(k.bo_resident(bos[0]), None);
    }
}

#[test]
fn alloc_errors() {
    for p in ALL {
        let mut k = evict_setup(p, 4 * G);
        assert_eq!(k.alloc_bo("/k/a", R0, 0).unwrap_err().errno, Errno::EINVAL);
        assert_eq!(
            k.alloc_bo("/k/a", R0, 4 * G + 1).unwrap_err().errno,
            Errno::ENOSPC
        );
        assert_eq!(k.alloc_bo("/nope", R0, 1).unwrap_err().errno, Errno::ENOENT);
        assert_eq!(
            k.alloc_bo("/k/a", "bogus", 1).unwrap_err().errno,
            Errno::ENODEV
        );
        assert_eq!(k.device_used(R0), 0);
        assert_eq!(k.usage("/", R0), 0);
        // A max that eviction cannot resolve (a's usage is raw, not BOs): EAGAIN at /k.
        w(&mut k, "/k", "dmem.max", &format!("{R0} 1G")).expect("max");
        k.try_charge("/k/b", R0, G).expect("charge");
        let err = k.alloc_bo("/k/a", R0, 1).unwrap_err();
        assert_eq!(
            (err.errno, err.limit_pool.as_deref()),
            (Errno::EAGAIN, Some("/k"))
        );
        // A limit-pool walk evicts only inside the limited subtree: b's BO under /k goes.
        k.uncharge("/k/b", R0, G);
        let b = k.alloc_bo("/k/b", R0, G).expect("alloc b");
        let c = k.alloc_bo("/c", R0, G).expect("alloc c");
        k.alloc_bo("/k/a", R0, G / 2).expect("evicts b");
        assert_eq!(
            (k.bo_resident(b), k.bo_resident(c)),
            (Some(false), Some(true))
        );
    }
}

#[test]
fn current_protected_allocation_skips_own_bos() {
    // /c is below its low after charging: the first (non-forced) walk skips /c's own BOs and
    // takes unprotected BOs of others instead, even though /c's BO is older.
    let mut k = evict_setup(Profile::Current, 4 * G);
    w(&mut k, "/c", "dmem.low", &format!("{R0} 4G")).expect("low");
    let own = k.alloc_bo("/c", R0, G).expect("own");
    let other: Vec<_> = (0..3)
        .map(|_| k.alloc_bo("/k/a", R0, G).expect("a"))
        .collect();
    assert!(k.below_low(None, "/c", R0));
    k.alloc_bo("/c", R0, G).expect("evicts a's LRU BO");
    assert_eq!(k.bo_resident(own), Some(true));
    assert_eq!(k.bo_resident(other[0]), Some(false));
}

proptest! {
    /// Legacy, device full: BOs of a direct child of the root whose usage stays at or below its
    /// declared min are never evicted by other cgroups' allocations.
    #[test]
    fn legacy_min_protected_never_evicted(
        p in prop_oneof![Just(Profile::Legacy), Just(Profile::LegacyUnfixed)],
        protected in proptest::collection::vec(1u64..=4, 1..4),
        others in proptest::collection::vec((0usize..2, 1u64..=8), 1..30),
    ) {
        let mut k = evict_setup(p, 16 * G);
        let total: u64 = protected.iter().sum::<u64>() * 256 * M;
        w(&mut k, "/c", "dmem.min", &format!("{R0} {total}")).expect("min");
        let mine: Vec<_> = protected.iter().map(|n| k.alloc_bo("/c", R0, n * 256 * M).expect("alloc")).collect();
        for (who, n) in others {
            let _ = k.alloc_bo(["/k/a", "/k/b"][who], R0, n * G);
            for bo in &mine {
                prop_assert_eq!(k.bo_resident(*bo), Some(true));
            }
        }
    }
}
