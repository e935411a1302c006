//! The `docs/kernel.md` §9 test vectors T1–T26, one `#[test]` each (plus variants), on every
//! profile the table names.

mod common;

use common::*;
use kube_dmem_sim::{Errno, Profile, SimConfig, SimError};

#[test]
fn t01_capacity() {
    for p in ALL {
        let k = setup(p);
        assert_eq!(
            r(&k, "/", "dmem.capacity"),
            "drm/0000:03:00.0/vram0 8514437120\ndrm/0000:0a:00.0/vram 17095983104\n"
        );
    }
}

#[test]
fn t02_fresh_defaults() {
    for p in ALL {
        let k = setup(p);
        assert_eq!(
            r(&k, "/k/a", "dmem.max"),
            "drm/0000:03:00.0/vram0 max\ndrm/0000:0a:00.0/vram max\n"
        );
        assert_eq!(
            r(&k, "/k/a", "dmem.min"),
            "drm/0000:03:00.0/vram0 0\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/k/a", "dmem.low"),
            "drm/0000:03:00.0/vram0 0\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/k/a", "dmem.current"),
            "drm/0000:03:00.0/vram0 0\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/", "dmem.current"),
            "drm/0000:03:00.0/vram0 0\ndrm/0000:0a:00.0/vram 0\n"
        );
    }
}

#[test]
fn t03_write_max() {
    for p in ALL {
        let mut k = setup(p);
        assert_eq!(
            w(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0 1G\n"),
            Ok(26)
        );
        assert_eq!(
            r(&k, "/k/a", "dmem.max"),
            "drm/0000:03:00.0/vram0 1073741824\ndrm/0000:0a:00.0/vram max\n"
        );
    }
}

#[test]
fn t04_write_max_keyword() {
    for p in ALL {
        let mut k = setup(p);
        w(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0 1G\n").unwrap();
        assert_eq!(
            w(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0 max"),
            Ok(26)
        );
        assert_eq!(
            r(&k, "/k/a", "dmem.max"),
            "drm/0000:03:00.0/vram0 max\ndrm/0000:0a:00.0/vram max\n"
        );
    }
}

#[test]
fn t05_value_forms() {
    // (input, shown afterwards); `None` = EINVAL, value unchanged. memparse as in the 7.2 and 7.3
    // kernels: overflow saturates (16E, 2^64), a suffix needs a digit before it (G).
    let cases = [
        ("0x40000000", Some("1073741824")),
        ("010", Some("8")),
        ("1g", Some("1073741824")),
        ("2251799813685246", Some("2251799813685246")),
        ("2251799813685247", Some("max")),
        ("8E", Some("max")),
        ("12345", Some("12345")),
        ("16E", Some("max")),
        ("0", Some("0")),
        ("18446744073709551616", Some("max")),
        ("5", Some("5")),
        ("G", None),
    ];
    for p in ALL {
        let mut k = setup(p);
        for (input, shown) in cases {
            let data = format!("{R0} {input}");
            let before = val(&k, "/k/a", "dmem.max", R0);
            match shown {
                Some(shown) => {
                    assert_eq!(
                        w(&mut k, "/k/a", "dmem.max", &data),
                        Ok(data.len()),
                        "{p:?} {input}"
                    );
                    assert_eq!(val(&k, "/k/a", "dmem.max", R0), shown, "{p:?} {input}");
                }
                None => {
                    assert_eq!(
                        werr(&mut k, "/k/a", "dmem.max", &data),
                        Errno::EINVAL,
                        "{p:?} {input}"
                    );
                    assert_eq!(val(&k, "/k/a", "dmem.max", R0), before, "{p:?} {input}");
                }
            }
        }
    }
}

#[test]
fn t06_value_errors() {
    for p in ALL {
        let mut k = setup(p);
        w(&mut k, "/k/a", "dmem.max", &format!("{R0} 3G")).unwrap();
        let before = r(&k, "/k/a", "dmem.max");
        for bad in ["08", "1.5G", "1GB", "1Gi", "-1", "+1", "MAX", "1 G"] {
            assert_eq!(
                werr(&mut k, "/k/a", "dmem.max", &format!("{R0} {bad}")),
                Errno::EINVAL,
                "{p:?} {bad}"
            );
            assert_eq!(r(&k, "/k/a", "dmem.max"), before, "{p:?} {bad}");
        }
    }
}

#[test]
fn t07_unknown_region() {
    for p in ALL {
        let mut k = setup(p);
        let before = r(&k, "/k/a", "dmem.max");
        for bad in ["drm/0000:03:00.0/vram9 1G", "DRM/0000:03:00.0/vram0 1G"] {
            assert_eq!(
                werr(&mut k, "/k/a", "dmem.max", bad),
                Errno::EINVAL,
                "{p:?} {bad}"
            );
            assert_eq!(r(&k, "/k/a", "dmem.max"), before);
        }
    }
}

#[test]
fn t08_blanks_and_tab() {
    for p in ALL {
        let mut k = setup(p);
        let data = "  drm/0000:03:00.0/vram0\t2G  \n";
        assert_eq!(w(&mut k, "/k/a", "dmem.max", data), Ok(data.len()));
        assert_eq!(val(&k, "/k/a", "dmem.max", R0), "2147483648");
    }
}

#[test]
fn t09_two_spaces() {
    for p in ALL {
        let mut k = setup(p);
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0  2G"),
            Errno::EINVAL
        );
        assert_eq!(val(&k, "/k/a", "dmem.max", R0), "max");
    }
}

#[test]
fn t10_region_without_value() {
    for p in [Profile::Current, Profile::Legacy] {
        let mut k = setup(p);
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0\n"),
            Errno::EINVAL,
            "{p:?}"
        );
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0 \n"),
            Errno::EINVAL,
            "{p:?}"
        );
    }
    let mut k = setup(Profile::LegacyUnfixed);
    let res = w(&mut k, "/k/a", "dmem.max", "drm/0000:03:00.0/vram0\n");
    assert!(
        matches!(res, Err(SimError::KernelOops { ref file, .. }) if file == "dmem.max"),
        "{res:?}"
    );
    assert_eq!(k.oopsed(), 1);
    // A line before the crashing one stays applied.
    let res = w(&mut k, "/k/a", "dmem.low", &format!("{R1} 1G\n{R0}\n"));
    assert!(matches!(res, Err(SimError::KernelOops { .. })));
    assert_eq!(val(&k, "/k/a", "dmem.low", R1), "1073741824");
    // An unknown name fails the region lookup before the value is dereferenced.
    assert_eq!(werr(&mut k, "/k/a", "dmem.max", "bogus\n"), Errno::EINVAL);
}

#[test]
fn t11_two_lines() {
    let data = "drm/0000:03:00.0/vram0 1G\ndrm/0000:0a:00.0/vram 2G\n";
    let mut k = setup(Profile::Current);
    assert_eq!(werr(&mut k, "/k/a", "dmem.max", data), Errno::EINVAL);
    assert_eq!(
        r(&k, "/k/a", "dmem.max"),
        "drm/0000:03:00.0/vram0 max\ndrm/0000:0a:00.0/vram max\n"
    );
    for p in LEGACY {
        let mut k = setup(p);
        assert_eq!(w(&mut k, "/k/a", "dmem.max", data), Ok(data.len()));
        assert_eq!(
            r(&k, "/k/a", "dmem.max"),
            "drm/0000:03:00.0/vram0 1073741824\ndrm/0000:0a:00.0/vram 2147483648\n"
        );
    }
}

#[test]
fn t12_partial_apply() {
    let data = "drm/0000:03:00.0/vram0 1G\nbogus 2G\n";
    let mut k = setup(Profile::Current);
    assert_eq!(werr(&mut k, "/k/a", "dmem.max", data), Errno::EINVAL);
    assert_eq!(val(&k, "/k/a", "dmem.max", R0), "max");
    for p in LEGACY {
        let mut k = setup(p);
        assert_eq!(werr(&mut k, "/k/a", "dmem.max", data), Errno::EINVAL);
        assert_eq!(val(&k, "/k/a", "dmem.max", R0), "1073741824");
        assert_eq!(val(&k, "/k/a", "dmem.max", R1), "max");
        // A malformed value on a later line: earlier lines stay applied too.
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.min", &format!("{R1} 5M\n{R0} 1.5G\n")),
            Errno::EINVAL
        );
        assert_eq!(val(&k, "/k/a", "dmem.min", R1), "5242880");
        assert_eq!(val(&k, "/k/a", "dmem.min", R0), "0");
    }
}

#[test]
fn t13_newline_only() {
    let mut k = setup(Profile::Current);
    assert_eq!(werr(&mut k, "/k/a", "dmem.max", "\n"), Errno::EINVAL);
    // A zero-byte write never reaches the handler (`cgroup_file_write` returns 0), so the 7.3
    // "exactly one region" rule does not see it.
    assert_eq!(w(&mut k, "/k/a", "dmem.max", ""), Ok(0));
    for p in LEGACY {
        let mut k = setup(p);
        assert_eq!(w(&mut k, "/k/a", "dmem.max", "\n"), Ok(1));
        assert_eq!(w(&mut k, "/k/a", "dmem.max", ""), Ok(0));
        assert_eq!(w(&mut k, "/k/a", "dmem.max", "\n\n  \n"), Ok(5));
        assert_eq!(
            r(&k, "/k/a", "dmem.max"),
            "drm/0000:03:00.0/vram0 max\ndrm/0000:0a:00.0/vram max\n"
        );
    }
}

#[test]
fn t14_hierarchical_current() {
    for p in ALL {
        let mut k = setup(p);
        // Through the simulator's charge file (a task in the cgroup allocates a BO) ...
        w(&mut k, "/k/a", "dmem.sim.charge", &format!("{R0} +1G\n")).unwrap();
        // ... and through the raw driver API.
        k.try_charge("/k/b", R0, 2 * G).unwrap();
        assert_eq!(
            r(&k, "/k/a", "dmem.current"),
            "drm/0000:03:00.0/vram0 1073741824\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/k/b", "dmem.current"),
            "drm/0000:03:00.0/vram0 2147483648\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/k", "dmem.current"),
            "drm/0000:03:00.0/vram0 3221225472\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/", "dmem.current"),
            "drm/0000:03:00.0/vram0 3221225472\ndrm/0000:0a:00.0/vram 0\n"
        );
        assert_eq!(
            r(&k, "/k/a", "dmem.sim.charge"),
            "drm/0000:03:00.0/vram0 1073741824\ndrm/0000:0a:00.0/vram 0\n"
        );
    }
}

#[test]
fn t15_limit_pool_is_lowest_level() {
    for p in ALL {
        let mut k = setup(p);
        k.try_charge("/k/a", R0, G).unwrap();
        w(&mut k, "/k", "dmem.max", &format!("{R0} 2G")).unwrap();
        let before: Vec<u64> = ["/", "/k", "/k/a", "/k/b"]
            .iter()
            .map(|c| k.usage(c, R0))
            .collect();
        let err = k.try_charge("/k/a", R0, 3 * G / 2).unwrap_err();
        assert_eq!(
            (err.errno, err.limit_pool.as_deref()),
            (Errno::EAGAIN, Some("/k"))
        );
        let after: Vec<u64> = ["/", "/k", "/k/a", "/k/b"]
            .iter()
            .map(|c| k.usage(c, R0))
            .collect();
        assert_eq!(before, after);
        w(&mut k, "/k/a", "dmem.max", &format!("{R0} 1G")).unwrap();
        let err = k.try_charge("/k/a", R0, G / 2).unwrap_err();
        assert_eq!(
            (err.errno, err.limit_pool.as_deref()),
            (Errno::EAGAIN, Some("/k/a"))
        );
        assert_eq!(k.usage("/k/a", R0), G);
        // The same through the charge file (allocation with eviction: a's own BO cannot help
        // because it was charged raw, so the allocation fails with EAGAIN).
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.sim.charge", &format!("{R0} +512M")),
            Errno::EAGAIN
        );
        // Exactly at the limit succeeds (the failure test is a strict `>`).
        k.try_charge("/k/b", R0, G).unwrap();
        assert_eq!(k.usage("/k", R0), 2 * G);
    }
}

#[test]
fn t16_legacy_max_below_usage_ignored() {
    for p in LEGACY {
        let mut k = setup(p);
        k.try_charge("/k/a", R0, G).unwrap();
        let data = format!("{R0} 512M");
        assert_eq!(w(&mut k, "/k/a", "dmem.max", &data), Ok(data.len()));
        assert_eq!(val(&k, "/k/a", "dmem.max", R0), "max");
        assert_eq!(k.usage("/k/a", R0), G);
        // Exactly at usage is applied.
        w(&mut k, "/k/a", "dmem.max", &format!("{R0} 1G")).unwrap();
        assert_eq!(val(&k, "/k/a", "dmem.max", R0), "1073741824");
    }
}

#[test]
fn t16b_current_nonblock_applies_below_usage() {
    let mut k = setup(Profile::Current);
    k.alloc_bo("/k/a", R0, G).unwrap();
    let data = format!("{R0} 512M");
    assert_eq!(
        k.write_file("/k/a", "dmem.max", data.as_bytes(), true),
        Ok(data.len())
    );
    assert_eq!(val(&k, "/k/a", "dmem.max", R0), "536870912");
    assert_eq!(k.usage("/k/a", R0), G);
    let err = k.try_charge("/k/a", R0, 1).unwrap_err();
    assert_eq!(
        (err.errno, err.limit_pool.as_deref()),
        (Errno::EAGAIN, Some("/k/a"))
    );
}

#[test]
fn t16c_current_blocking_reclaim() {
    let mut k = setup(Profile::Current);
    let bos: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/k/a", R0, 256 * M).unwrap())
        .collect();
    w(&mut k, "/k/a", "dmem.max", &format!("{R0} 512M")).unwrap();
    assert_eq!(val(&k, "/k/a", "dmem.max", R0), "536870912");
    assert_eq!(k.usage("/k/a", R0), 512 * M);
    // LRU order: the two oldest BOs went to GTT.
    let resident: Vec<_> = bos.iter().map(|b| k.bo_resident(*b)).collect();
    assert_eq!(resident, [Some(false), Some(false), Some(true), Some(true)]);
    assert_eq!(k.evicted_bytes("/k/a", R0), 512 * M);
    assert_eq!(k.evicted_bytes("/k", R0), 512 * M);

    // No progress possible (pinned BOs): 16 rounds, then the write still succeeds.
    for b in &bos[2..] {
        k.set_bo_pinned(*b, true);
    }
    w(&mut k, "/k/a", "dmem.max", &format!("{R0} 0")).unwrap();
    assert_eq!(val(&k, "/k/a", "dmem.max", R0), "0");
    assert_eq!(k.usage("/k/a", R0), 512 * M);

    // A region without a reclaim op is not reclaimed, even on a blocking write.
    let mut k = kube_dmem_sim::SimKernel::new(SimConfig::with_profile(Profile::Current));
    k.register_region(R0, R0_SIZE, false);
    w(&mut k, "/", "cgroup.subtree_control", "+dmem").unwrap();
    k.mkdir("/a").unwrap();
    k.alloc_bo("/a", R0, G).unwrap();
    w(&mut k, "/a", "dmem.max", &format!("{R0} 1M")).unwrap();
    assert_eq!(
        (val(&k, "/a", "dmem.max", R0).as_str(), k.usage("/a", R0)),
        ("1048576", G)
    );
}

#[test]
fn t16d_reclaim_respects_descendant_min() {
    let mut k = setup(Profile::Current);
    w(&mut k, "/k/a", "dmem.min", &format!("{R0} 1G")).unwrap();
    let a: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/k/a", R0, 256 * M).unwrap())
        .collect();
    let b: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/k/b", R0, 256 * M).unwrap())
        .collect();
    w(&mut k, "/k", "dmem.max", &format!("{R0} 1G")).unwrap();
    // a is a direct child of the limit pool: its declared min (1G) holds; b goes entirely.
    assert!(a.iter().all(|x| k.bo_resident(*x) == Some(true)));
    assert!(b.iter().all(|x| k.bo_resident(*x) == Some(false)));
    assert_eq!(k.usage("/k", R0), G);
}

/// T17 arrangement: `/k` low 8G (or `k_low`), a low 4G usage 6G, b low 4G usage 2G, raw charges.
fn t17_arrangement(p: Profile, k_low: &str, wrap: bool) -> kube_dmem_sim::SimKernel {
    let mut cfg = SimConfig::with_profile(p);
    cfg.wrap_protection_math = wrap;
    let mut k = kube_dmem_sim::SimKernel::new(cfg);
    k.register_region(R0, R0_SIZE, true);
    w(&mut k, "/", "cgroup.subtree_control", "+dmem").expect("fixture");
    k.mkdir("/k").expect("fixture");
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem").expect("fixture");
    k.mkdir("/k/a").expect("fixture");
    k.mkdir("/k/b").expect("fixture");
    w(&mut k, "/k", "dmem.low", &format!("{R0} {k_low}")).expect("fixture");
    w(&mut k, "/k/a", "dmem.low", &format!("{R0} 4G")).expect("fixture");
    w(&mut k, "/k/b", "dmem.low", &format!("{R0} 4G")).expect("fixture");
    k.try_charge("/k/a", R0, 6 * G).expect("fixture");
    k.try_charge("/k/b", R0, 2 * G).expect("fixture");
    k
}

/// Fill a 8 GiB region: a gets 6 × 1G, b 2 × 1G, interleaved a b a b a a a a (LRU order).
fn fill_ab(
    k: &mut kube_dmem_sim::SimKernel,
) -> (Vec<kube_dmem_sim::BoId>, Vec<kube_dmem_sim::BoId>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for who in ["a", "b", "a", "b", "a", "a", "a", "a"] {
        let bo = k.alloc_bo(&format!("/k/{who}"), R0, G).expect("fixture");
        if who == "a" { a.push(bo) } else { b.push(bo) }
    }
    (a, b)
}

#[test]
fn t17_floating_low_protects_over_low_sibling() {
    for p in ALL {
        let mut k = t17_arrangement(p, "8G", true);
        assert_eq!(k.effective_protection(None, "/k", R0), (0, 8 * G));
        assert_eq!(k.effective_protection(None, "/k/a", R0), (0, 6 * G));
        assert_eq!(k.effective_protection(None, "/k/b", R0), (0, 2 * G));
        // Pass 1 (respect low): neither is evictable, both hit low; pass 2 takes both.
        assert_eq!(k.evict_valuable(None, "/k/a", R0, false), Ok((false, true)));
        assert_eq!(k.evict_valuable(None, "/k/b", R0, false), Ok((false, true)));
        assert_eq!(k.evict_valuable(None, "/k/a", R0, true), Ok((true, false)));
        assert_eq!(k.evict_valuable(None, "/k/b", R0, true), Ok((true, false)));
    }
    // Full legacy allocation path on an exactly full 8 GiB device: /c allocates 2G.
    for p in LEGACY {
        let mut k = evict_setup(p, 8 * G);
        w(&mut k, "/k", "dmem.low", &format!("{R0} 8G")).unwrap();
        w(&mut k, "/k/a", "dmem.low", &format!("{R0} 4G")).unwrap();
        w(&mut k, "/k/b", "dmem.low", &format!("{R0} 4G")).unwrap();
        let (a, b) = fill_ab(&mut k);
        k.alloc_bo("/c", R0, 2 * G).unwrap();
        // Pass 1 evicted nothing; pass 2 took the two least recently used BOs, one of each.
        assert_eq!(k.bo_resident(a[0]), Some(false));
        assert_eq!(k.bo_resident(b[0]), Some(false));
        assert_eq!(
            (k.evicted_bytes("/k/a", R0), k.evicted_bytes("/k/b", R0)),
            (G, G)
        );
    }
    // Current: the device-full walk computes protection relative to the common ancestor of
    // evictor and evictee. An allocator inside /k sees a and b on their declared lows (4G each),
    // so a (6G) is evicted in pass 1 down to 4G and b (2G) is protected.
    let mut k = evict_setup(Profile::Current, 8 * G);
    k.mkdir("/k/c").unwrap();
    w(&mut k, "/k", "dmem.low", &format!("{R0} 8G")).unwrap();
    w(&mut k, "/k/a", "dmem.low", &format!("{R0} 4G")).unwrap();
    w(&mut k, "/k/b", "dmem.low", &format!("{R0} 4G")).unwrap();
    let (a, b) = fill_ab(&mut k);
    k.alloc_bo("/k/c", R0, 2 * G).unwrap();
    assert_eq!(
        (k.bo_resident(a[0]), k.bo_resident(a[1])),
        (Some(false), Some(false))
    );
    assert!(b.iter().all(|x| k.bo_resident(*x) == Some(true)));
    assert_eq!(k.usage("/k/a", R0), 4 * G);
}

#[test]
fn t18_no_floating_share() {
    for p in ALL {
        let mut k = t17_arrangement(p, "6G", true);
        assert_eq!(k.effective_protection(None, "/k/a", R0), (0, 4_294_967_296));
        assert_eq!(k.effective_protection(None, "/k/b", R0), (0, 2 * G));
        assert_eq!(k.evict_valuable(None, "/k/a", R0, false), Ok((true, false)));
        assert_eq!(k.evict_valuable(None, "/k/b", R0, false), Ok((false, true)));
    }
    for p in LEGACY {
        let mut k = evict_setup(p, 8 * G);
        w(&mut k, "/k", "dmem.low", &format!("{R0} 6G")).unwrap();
        w(&mut k, "/k/a", "dmem.low", &format!("{R0} 4G")).unwrap();
        w(&mut k, "/k/b", "dmem.low", &format!("{R0} 4G")).unwrap();
        let (a, b) = fill_ab(&mut k);
        k.alloc_bo("/c", R0, 2 * G).unwrap();
        // a evicted first (LRU, skipping b's low-protected BO), down to 4G; b untouched.
        assert_eq!(
            (k.bo_resident(a[0]), k.bo_resident(a[1])),
            (Some(false), Some(false))
        );
        assert!(b.iter().all(|x| k.bo_resident(*x) == Some(true)));
        assert_eq!((k.usage("/k/a", R0), k.usage("/k/b", R0)), (4 * G, 2 * G));
    }
}

#[test]
fn t19_overcommit_and_overflow() {
    for p in ALL {
        let mut k = t17_arrangement(p, "4G", true);
        assert_eq!(k.effective_protection(None, "/k/a", R0), (0, 0)); // 4G·4G wraps to 0
        assert_eq!(k.effective_protection(None, "/k/b", R0), (0, 1_431_655_765));
        assert_eq!(k.evict_valuable(None, "/k/a", R0, false), Ok((true, false)));
        assert_eq!(k.evict_valuable(None, "/k/b", R0, false), Ok((true, false)));
        let mut k = t17_arrangement(p, "4G", false);
        assert_eq!(k.effective_protection(None, "/k/a", R0), (0, 2_863_311_530));
        assert_eq!(k.effective_protection(None, "/k/b", R0), (0, 1_431_655_765));
        assert_eq!(k.evict_valuable(None, "/k/a", R0, false), Ok((true, false)));
    }
}

#[test]
fn t20_min_never_evicted_by_others() {
    for p in ALL {
        let mut k = setup(p);
        w(&mut k, "/k/a", "dmem.min", &format!("{R0} 2G")).unwrap();
        // Legacy computes device-full protection from the global root, so /k needs a min that
        // covers a's for a's declared min to reach it (`docs/kernel.md` §3.4); 7.3 uses the common
        // ancestor /k.
        w(&mut k, "/k", "dmem.min", &format!("{R0} 2G")).unwrap();
        let a: Vec<_> = (0..2).map(|_| k.alloc_bo("/k/a", R0, G).unwrap()).collect();
        let b: Vec<_> = (0..5).map(|_| k.alloc_bo("/k/b", R0, G).unwrap()).collect();
        // Device full: b's further allocations evict b's own BOs, never a's.
        for _ in 0..6 {
            k.alloc_bo("/k/b", R0, G).unwrap();
            assert!(a.iter().all(|x| k.bo_resident(*x) == Some(true)), "{p:?}");
        }
        assert!(b.iter().all(|x| k.bo_resident(*x) == Some(false)), "{p:?}");
        // More than everything but a's 2G: fails, a still resident.
        let err = k.alloc_bo("/k/b", R0, 7 * G).unwrap_err();
        assert_eq!(err.errno, Errno::ENOSPC);
        assert!(a.iter().all(|x| k.bo_resident(*x) == Some(true)));
        // a's own max hit: a's own BOs are evictable despite its min.
        w(&mut k, "/k/a", "dmem.max", &format!("{R0} 2G")).unwrap();
        let newer = k.alloc_bo("/k/a", R0, G).unwrap();
        assert_eq!(k.bo_resident(a[0]), Some(false), "{p:?}");
        assert_eq!(k.bo_resident(newer), Some(true));
        assert_eq!(k.usage("/k/a", R0), 2 * G);
    }
}

#[test]
fn t20b_legacy_min_without_ancestor_min_is_not_effective() {
    // `docs/kernel.md` §3.4 as the kernel computes it: with no min on /k, a's effective min
    // relative to the global root is 0 (scaled by the parent's emin of 0), so a legacy device-full
    // walk may evict a.
    for p in LEGACY {
        let mut k = setup(p);
        w(&mut k, "/k/a", "dmem.min", &format!("{R0} 2G")).unwrap();
        k.try_charge("/k/a", R0, 2 * G).unwrap();
        assert_eq!(k.effective_protection(None, "/k/a", R0), (0, 0));
        assert_eq!(k.evict_valuable(None, "/k/a", R0, true), Ok((true, false)));
        // Relative to /k (the 7.3 common ancestor of a and b), the declared min applies.
        assert_eq!(k.effective_protection(Some("/k"), "/k/a", R0), (2 * G, 0));
        assert_eq!(
            k.evict_valuable(Some("/k"), "/k/a", R0, true),
            Ok((false, false))
        );
    }
}

#[test]
fn t21_peak() {
    let mut k = setup(Profile::Current);
    k.try_charge("/k/a", R0, 3 * G).unwrap();
    k.uncharge("/k/a", R0, G);
    assert_eq!(
        r(&k, "/k/a", "dmem.peak"),
        "drm/0000:03:00.0/vram0 3221225472\ndrm/0000:0a:00.0/vram 0\n"
    );
    assert_eq!(
        r(&k, "/k/a", "dmem.current"),
        "drm/0000:03:00.0/vram0 2147483648\ndrm/0000:0a:00.0/vram 0\n"
    );
    assert_eq!(val(&k, "/k", "dmem.peak", R0), "3221225472");
    assert_eq!(k.read_file("/", "dmem.peak"), Err(Errno::ENOENT));
    // Read-only: root opens it for writing, the write fails with EINVAL.
    assert_eq!(k.check_open("/k/a", "dmem.peak", true), Ok(()));
    assert_eq!(
        werr(&mut k, "/k/a", "dmem.peak", &format!("{R0} 1G")),
        Errno::EINVAL
    );
    for p in LEGACY {
        let k = setup(p);
        assert_eq!(k.read_file("/k/a", "dmem.peak"), Err(Errno::ENOENT));
    }
}

#[test]
fn t22_no_css_charges_nearest_ancestor() {
    for p in ALL {
        let mut k = kube_dmem_sim::SimKernel::new(SimConfig::with_profile(p));
        k.register_region(R0, R0_SIZE, true);
        k.register_region(R1, R1_SIZE, true);
        // The root shows dmem.current once something was enabled there (T0); -dmem keeps it.
        assert_eq!(k.read_file("/", "dmem.current"), Err(Errno::ENOENT));
        w(&mut k, "/", "cgroup.subtree_control", "+dmem").unwrap();
        w(&mut k, "/", "cgroup.subtree_control", "-dmem").unwrap();
        k.mkdir("/k").unwrap();
        k.set_has_tasks("/k", true).unwrap();
        assert_eq!(
            k.files("/k").unwrap(),
            [
                "cgroup.controllers",
                "cgroup.subtree_control",
                "dmem.sim.charge"
            ]
        );
        for f in [
            "dmem.current",
            "dmem.max",
            "dmem.min",
            "dmem.low",
            "dmem.peak",
            "dmem.capacity",
        ] {
            assert_eq!(k.read_file("/k", f), Err(Errno::ENOENT), "{f}");
            assert_eq!(
                werr(&mut k, "/k", f, &format!("{R0} 1G")),
                Errno::ENOENT,
                "{f}"
            );
        }
        assert_eq!(r(&k, "/k", "cgroup.controllers"), "");
        w(&mut k, "/k", "dmem.sim.charge", &format!("{R0} +1G")).unwrap();
        assert_eq!(val(&k, "/", "dmem.current", R0), "1073741824");
        k.try_charge("/k", R0, G).unwrap();
        assert_eq!(val(&k, "/", "dmem.current", R0), "2147483648");
        assert_eq!(k.usage("/k", R0), 2 * G);
    }
}

#[test]
fn t23_rmdir_keeps_charges_in_ancestors() {
    for p in ALL {
        let mut k = setup(p);
        let bos: Vec<_> = (0..2).map(|_| k.alloc_bo("/k/b", R0, G).unwrap()).collect();
        w(&mut k, "/k/b", "dmem.max", &format!("{R0} 3G")).unwrap();
        assert_eq!(k.rmdir("/k/b"), Err(Errno::EBUSY)); // tasks
        assert_eq!(k.rmdir("/k"), Err(Errno::EBUSY)); // children
        k.set_has_tasks("/k/b", false).unwrap();
        k.rmdir("/k/b").unwrap();
        assert!(!k.exists("/k/b"));
        assert_eq!(k.children("/k").unwrap(), ["a"]);
        assert_eq!(k.read_file("/k/b", "dmem.current"), Err(Errno::ENOENT));
        assert_eq!(val(&k, "/k", "dmem.current", R0), "2147483648");
        assert_eq!(val(&k, "/", "dmem.current", R0), "2147483648");
        assert_eq!(k.bo_pool_path(bos[0]).as_deref(), Some("/k/b"));
        // A new cgroup of the same name is a fresh css with fresh pools.
        k.mkdir("/k/b").unwrap();
        assert_eq!(val(&k, "/k/b", "dmem.max", R0), "max");
        assert_eq!(val(&k, "/k/b", "dmem.current", R0), "0");
        for bo in bos {
            k.free_bo(bo);
        }
        assert_eq!(val(&k, "/k", "dmem.current", R0), "0");
        assert_eq!(k.rmdir("/"), Err(Errno::EBUSY));
        assert_eq!(k.rmdir("/nope"), Err(Errno::ENOENT));
    }
}

#[test]
fn t24_unregister() {
    for p in ALL {
        let mut k = setup(p);
        k.try_charge("/k/a", R1, G).unwrap();
        w(&mut k, "/k/a", "dmem.max", &format!("{R1} 4G")).unwrap();
        k.unregister_region(R1).unwrap();
        assert_eq!(k.regions(), [(R0.to_string(), R0_SIZE)]);
        assert_eq!(
            r(&k, "/", "dmem.capacity"),
            "drm/0000:03:00.0/vram0 8514437120\n"
        );
        for (path, file) in [
            ("/", "dmem.current"),
            ("/k/a", "dmem.max"),
            ("/k/a", "dmem.min"),
            ("/k/a", "dmem.low"),
            ("/k/a", "dmem.current"),
        ] {
            assert!(!r(&k, path, file).contains(R1), "{path}/{file}");
        }
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.max", &format!("{R1} 1G")),
            Errno::EINVAL
        );
        assert_eq!(
            k.try_charge("/k/a", R1, 1).unwrap_err().errno,
            Errno::ENODEV
        );
        assert_eq!(k.alloc_bo("/k/a", R1, 1).unwrap_err().errno, Errno::ENODEV);
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.sim.charge", &format!("{R1} +1")),
            Errno::EINVAL
        );
        assert_eq!(k.usage("/k/a", R1), G);
        k.uncharge("/k/a", R1, G);
        assert_eq!(k.usage("/k/a", R1), 0);
        assert_eq!(k.usage("/", R1), 0);
        assert_eq!(k.unregister_region(R1), Err(Errno::ENOENT));
        // With no region at all the files exist but are empty.
        k.unregister_region(R0).unwrap();
        assert_eq!(r(&k, "/", "dmem.capacity"), "");
        assert_eq!(r(&k, "/k/a", "dmem.max"), "");
    }
}

#[test]
fn t25_low_max_keyword() {
    for p in ALL {
        let mut k = setup(p);
        w(&mut k, "/k/a", "dmem.low", "drm/0000:03:00.0/vram0 max").unwrap();
        assert_eq!(
            r(&k, "/k/a", "dmem.low"),
            "drm/0000:03:00.0/vram0 max\ndrm/0000:0a:00.0/vram 0\n"
        );
    }
}

#[test]
fn t26_current_common_ancestor_root_ignores_protection() {
    let mut k = kernel(Profile::Current);
    k.register_region(R0, 8 * G, true);
    for c in ["/kubepods.slice", "/system.slice"] {
        k.mkdir(c).unwrap();
        w(&mut k, c, "cgroup.subtree_control", "+dmem").unwrap();
    }
    k.mkdir("/kubepods.slice/pod1").unwrap();
    k.mkdir("/system.slice/x.service").unwrap();
    w(&mut k, "/system.slice", "dmem.low", &format!("{R0} 8G")).unwrap();
    w(
        &mut k,
        "/system.slice/x.service",
        "dmem.low",
        &format!("{R0} 8G"),
    )
    .unwrap();
    let x: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/system.slice/x.service", R0, G).unwrap())
        .collect();
    let pod: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/kubepods.slice/pod1", R0, G).unwrap())
        .collect();
    // x is fully low-protected relative to the global root (elow = its whole usage) ...
    assert_eq!(
        k.effective_protection(None, "/system.slice/x.service", R0),
        (0, 4 * G)
    );
    assert_eq!(
        k.evict_valuable(None, "/system.slice/x.service", R0, false),
        Ok((false, true))
    );
    // ... but the common ancestor with the evictor is the root: evictable.
    let ca = k
        .common_ancestor("/kubepods.slice/pod1", "/system.slice/x.service")
        .unwrap();
    assert_eq!(ca, "/");
    assert_eq!(
        k.evict_valuable(Some(&ca), "/system.slice/x.service", R0, false),
        Ok((true, false))
    );
    // Device full: the pod's allocation evicts x's least recently used BO in the first pass.
    k.alloc_bo("/kubepods.slice/pod1", R0, G).unwrap();
    assert_eq!(k.bo_resident(x[0]), Some(false));
    assert!(pod.iter().all(|b| k.bo_resident(*b) == Some(true)));

    // Legacy computes from the global root: x is protected in pass 1, so the pod's own LRU BO
    // goes first (pass 1 evicts unprotected BOs of any cgroup).
    let mut k = kernel(Profile::Legacy);
    k.register_region(R0, 8 * G, true);
    for c in ["/kubepods.slice", "/system.slice"] {
        k.mkdir(c).unwrap();
        w(&mut k, c, "cgroup.subtree_control", "+dmem").unwrap();
    }
    k.mkdir("/kubepods.slice/pod1").unwrap();
    k.mkdir("/system.slice/x.service").unwrap();
    w(&mut k, "/system.slice", "dmem.low", &format!("{R0} 8G")).unwrap();
    w(
        &mut k,
        "/system.slice/x.service",
        "dmem.low",
        &format!("{R0} 8G"),
    )
    .unwrap();
    let x: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/system.slice/x.service", R0, G).unwrap())
        .collect();
    let pod: Vec<_> = (0..4)
        .map(|_| k.alloc_bo("/kubepods.slice/pod1", R0, G).unwrap())
        .collect();
    k.alloc_bo("/kubepods.slice/pod1", R0, G).unwrap();
    assert!(x.iter().all(|b| k.bo_resident(*b) == Some(true)));
    assert_eq!(k.bo_resident(pod[0]), Some(false));
}
