//! The `docs/kernel.md` §9 test vectors about file behaviour, run through the agent's `CgroupFs`
//! backends: in-process (`SimCgroups`) and the real `SysfsCgroups` over the FUSE-mounted simulator.
//! Every write is one `write(2)`, multi-line vectors included. Charges go through `dmem.sim.charge`.

// The vector bodies are plain fns shared by the generated #[test]s, which clippy's
// allow-unwrap-in-tests does not see as tests; here a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ALL_PROFILES, Env, G, Kind, R0, R1, cg, setup_s};
use kube_dmem_device_plugin::cgroup::CgroupError;
use kube_dmem_device_plugin::cgroup::CgroupFile::{self, *};
use kube_dmem_device_plugin::cgroup::dmem::{Applied, apply_limit, capacity, read_region};
use kube_dmem_device_plugin::cgroup::format::DmemValue;
use kube_dmem_sim::Profile;

fn read(env: &dyn Env, group: &str, file: CgroupFile) -> String {
    env.fs().read(&cg(group), file).expect("read")
}

fn write(env: &dyn Env, group: &str, file: CgroupFile, data: &str) -> Result<(), CgroupError> {
    env.fs().write(&cg(group), file, data)
}

/// The write failed with `errno`, and the error names the file and the data.
fn assert_errno(result: Result<(), CgroupError>, errno: i32, data: &str) {
    let err = result.expect_err("the write must fail");
    assert_eq!(err.errno(), Some(errno), "{err:?}");
    match &err {
        CgroupError::Write {
            data: written,
            path,
            ..
        } => {
            assert_eq!(written, data);
            assert!(path.is_absolute() && path.file_name().is_some(), "{path:?}");
        }
        other => panic!("expected a write error, got {other:?}"),
    }
}

fn max_lines(r0: &str, r1: &str) -> String {
    format!("{R0} {r0}\n{R1} {r1}\n")
}

fn t1_capacity(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        let want = format!("{R0} 8514437120\n{R1} 17095983104\n");
        assert_eq!(read(&*env, "/", DmemCapacity), want);
        let regions = capacity(env.fs()).unwrap();
        assert_eq!(regions.len(), 2);
        assert_eq!(
            (regions[1].region.as_str(), regions[1].bytes),
            (R1, 17_095_983_104)
        );
    }
}

fn t2_fresh_defaults(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("max", "max"));
        assert_eq!(read(&*env, "/k/a", DmemMin), max_lines("0", "0"));
        assert_eq!(read(&*env, "/k/a", DmemCurrent), max_lines("0", "0"));
    }
}

fn t3_t4_write_and_reset(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        let line = format!("{R0} 1G\n");
        assert_eq!(line.len(), 26);
        write(&*env, "/k/a", DmemMax, &line).unwrap();
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("1073741824", "max"));
        write(&*env, "/k/a", DmemMax, &format!("{R0} max")).unwrap();
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("max", "max"));
    }
}

fn t5_value_forms(kind: Kind) {
    // `None`: EINVAL, the value stays. memparse of the 7.2/7.3 kernels: overflow saturates (16E,
    // 2^64 read back as max), a suffix needs a digit before it (a bare G is EINVAL).
    let forms = [
        ("0x40000000", Some("1073741824")),
        ("010", Some("8")),
        ("1g", Some("1073741824")),
        ("2251799813685246", Some("2251799813685246")),
        ("2251799813685247", Some("max")),
        ("8E", Some("max")),
        ("5", Some("5")),
        ("16E", Some("max")),
        ("18446744073709551616", Some("max")),
        ("7", Some("7")),
        ("G", None),
    ];
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        let mut shown_before = "max";
        for (value, shown) in forms {
            let data = format!("{R0} {value}");
            match shown {
                Some(_) => write(&*env, "/k/a", DmemMax, &data).unwrap(),
                None => assert_errno(write(&*env, "/k/a", DmemMax, &data), libc::EINVAL, &data),
            }
            let shown = shown.unwrap_or(shown_before);
            assert_eq!(
                read(&*env, "/k/a", DmemMax),
                max_lines(shown, "max"),
                "{value}"
            );
            shown_before = shown;
        }
    }
}

fn t6_value_errors(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        write(&*env, "/k/a", DmemMax, &format!("{R0} 1G")).unwrap();
        for value in ["08", "1.5G", "1GB", "1Gi", "-1", "+1", "MAX", "1 G"] {
            let data = format!("{R0} {value}");
            assert_errno(write(&*env, "/k/a", DmemMax, &data), libc::EINVAL, &data);
            assert_eq!(
                read(&*env, "/k/a", DmemMax),
                max_lines("1073741824", "max"),
                "{value}"
            );
        }
    }
}

fn t7_t9_names_and_spacing(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        for data in [
            "drm/0000:03:00.0/vram9 1G",
            "DRM/0000:03:00.0/vram0 1G",
            "drm/0000:03:00.0/vram0  2G",
        ] {
            assert_errno(write(&*env, "/k/a", DmemMax, data), libc::EINVAL, data);
            assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("max", "max"));
        }
        // T8: blanks around, tab as separator.
        write(&*env, "/k/a", DmemMax, &format!("  {R0}\t2G  \n")).unwrap();
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("2147483648", "max"));
    }
}

fn t10_bare_name(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        let data = format!("{R0}\n");
        let result = write(&*env, "/k/a", DmemMax, &data);
        if profile == Profile::LegacyUnfixed {
            // The modelled kernel oopses; through a filesystem the writer sees EIO.
            assert_errno(result, libc::EIO, &data);
            assert_eq!(env.kernel().oopsed(), 1);
        } else {
            assert_errno(result, libc::EINVAL, &data);
            assert_eq!(env.kernel().oopsed(), 0);
        }
    }
}

fn t11_t13_multi_line(kind: Kind) {
    for profile in ALL_PROFILES {
        let legacy = profile.is_legacy();
        // T11: two regions in one write(2).
        let env = setup_s(kind, profile);
        let data = format!("{R0} 1G\n{R1} 2G\n");
        let result = write(&*env, "/k/a", DmemMax, &data);
        if legacy {
            result.unwrap();
            assert_eq!(
                read(&*env, "/k/a", DmemMax),
                max_lines("1073741824", "2147483648")
            );
        } else {
            assert_errno(result, libc::EINVAL, &data);
            assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("max", "max"));
        }
        // T12: a bad second line; legacy keeps the first line applied.
        let env = setup_s(kind, profile);
        let data = format!("{R0} 1G\nbogus 2G\n");
        assert_errno(write(&*env, "/k/a", DmemMax, &data), libc::EINVAL, &data);
        let r0 = if legacy { "1073741824" } else { "max" };
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines(r0, "max"));
        // T13: a lone newline.
        let result = write(&*env, "/k/a", DmemMax, "\n");
        if legacy {
            result.unwrap();
        } else {
            assert_errno(result, libc::EINVAL, "\n");
        }
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines(r0, "max"));
        // A zero-byte write returns 0 on every profile (the cgroup core answers it).
        write(&*env, "/k/a", DmemMax, "").unwrap();
        assert_eq!(read(&*env, "/k/a", DmemMax), max_lines(r0, "max"));
    }
}

fn t14_t15_charges(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        env.charge("/k/a", R0, "+1G").unwrap();
        env.charge("/k/b", R0, "+2G").unwrap();
        assert_eq!(
            read(&*env, "/k/a", DmemCurrent),
            max_lines("1073741824", "0")
        );
        assert_eq!(
            read(&*env, "/k/b", DmemCurrent),
            max_lines("2147483648", "0")
        );
        assert_eq!(read(&*env, "/k", DmemCurrent), max_lines("3221225472", "0"));
        assert_eq!(read(&*env, "/", DmemCurrent), max_lines("3221225472", "0"));

        // T15 (raw kernel charges, no eviction): the lowest level whose max is exceeded is reported.
        let env = setup_s(kind, profile);
        env.charge("/k/a", R0, "+1G").unwrap();
        write(&*env, "/k", DmemMax, &format!("{R0} 2G")).unwrap();
        let err = env.kernel().try_charge("/k/a", R0, G + G / 2).unwrap_err();
        assert_eq!(
            (err.errno.raw(), err.limit_pool.as_deref()),
            (libc::EAGAIN, Some("/k"))
        );
        assert_eq!(env.kernel().usage("/k", R0), G);
        write(&*env, "/k/a", DmemMax, &format!("{R0} 1G")).unwrap();
        let err = env.kernel().try_charge("/k/a", R0, G / 2).unwrap_err();
        assert_eq!(
            (err.errno.raw(), err.limit_pool.as_deref()),
            (libc::EAGAIN, Some("/k/a"))
        );
        assert_eq!(
            read(&*env, "/k/a", DmemCurrent),
            max_lines("1073741824", "0")
        );
        // Through the charge file, an allocation that no eviction can fit fails with EAGAIN.
        write(&*env, "/k/b", DmemMax, &format!("{R0} 1G")).unwrap();
        assert_eq!(env.charge("/k/b", R0, "+2G"), Err(libc::EAGAIN));
        assert_eq!(read(&*env, "/k/b", DmemCurrent), max_lines("0", "0"));
    }
}

fn t16_max_below_usage(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        env.charge("/k/a", R0, "+1G").unwrap();
        // SysfsCgroups and SimCgroups open dmem.max with O_NONBLOCK (T16b on current kernels).
        let outcome =
            apply_limit(env.fs(), &cg("/k/a"), DmemMax, R0, DmemValue::Bytes(G / 2)).unwrap();
        if profile.is_legacy() {
            // T16: success, silently not applied; the read-back exposes it.
            assert_eq!(
                outcome,
                Applied::NotApplied {
                    wanted: DmemValue::Bytes(G / 2),
                    actual: DmemValue::Max
                }
            );
            assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("max", "max"));
            env.charge("/k/a", R0, "+1").unwrap();
        } else {
            // T16b: applied at once, no reclaim (non-blocking), further charges fail.
            assert_eq!(outcome, Applied::Confirmed(DmemValue::Bytes(G / 2)));
            assert_eq!(read(&*env, "/k/a", DmemMax), max_lines("536870912", "max"));
            assert_eq!(env.kernel().usage("/k/a", R0), G);
            let err = env.kernel().try_charge("/k/a", R0, 1).unwrap_err();
            assert_eq!(
                (err.errno.raw(), err.limit_pool.as_deref()),
                (libc::EAGAIN, Some("/k/a"))
            );
        }
    }
}

fn t16c_blocking_write_reclaims(kind: Kind) {
    let env = setup_s(kind, Profile::Current);
    for _ in 0..4 {
        env.charge("/k/a", R0, "+256M").unwrap();
    }
    // Without O_NONBLOCK the writer runs the driver's reclaim: proof the flag reaches the kernel model.
    env.write_blocking("/k/a", "dmem.max", &format!("{R0} 512M"))
        .unwrap();
    assert!(env.kernel().usage("/k/a", R0) <= G / 2);
    assert_eq!(
        read_region(env.fs(), &cg("/k/a"), DmemMax, R0).unwrap(),
        DmemValue::Bytes(G / 2)
    );
}

fn t21_peak(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        env.charge("/k/a", R0, "+3G").unwrap();
        env.charge("/k/a", R0, "-1G").unwrap();
        let peak = env.fs().read(&cg("/k/a"), DmemPeak);
        if profile == Profile::Current {
            assert_eq!(peak.unwrap(), max_lines("3221225472", "0"));
            assert!(env.fs().exists(&cg("/k/a"), DmemPeak));
        } else {
            assert_eq!(peak.unwrap_err().errno(), Some(libc::ENOENT));
        }
        let root = env.fs().read(&cg("/"), DmemPeak).unwrap_err();
        assert_eq!(
            (root.errno(), root.reason()),
            (Some(libc::ENOENT), "CgroupNotFound")
        );
        assert_eq!(
            read(&*env, "/k/a", DmemCurrent),
            max_lines("2147483648", "0")
        );
    }
}

/// T0: after boot the root shows no `dmem.capacity`/`dmem.current` until a controller is enabled
/// in its `cgroup.subtree_control`; they stay after `-dmem`. Read-only files, written by root,
/// fail with EINVAL at write(2).
fn t0_root_files_and_read_only(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = common::env(kind, common::kernel(profile));
        let root = cg("/");
        for file in [DmemCapacity, DmemCurrent] {
            assert!(!env.fs().exists(&root, file), "{file}");
            let err = env.fs().read(&root, file).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{file}");
        }
        assert!(capacity(env.fs()).is_err());
        write(&*env, "/", CgroupSubtreeControl, "+dmem").unwrap();
        write(&*env, "/", CgroupSubtreeControl, "-dmem").unwrap();
        assert_eq!(read(&*env, "/", CgroupSubtreeControl), "");
        assert_eq!(
            read(&*env, "/", DmemCapacity),
            format!("{R0} 8514437120\n{R1} 17095983104\n")
        );
        assert_eq!(read(&*env, "/", DmemCurrent), max_lines("0", "0"));
        let env = setup_s(kind, profile);
        for (group, file) in [
            ("/", DmemCapacity),
            ("/", DmemCurrent),
            ("/k/a", DmemCurrent),
        ] {
            let data = format!("{R0} 1G");
            assert_errno(write(&*env, group, file, &data), libc::EINVAL, &data);
        }
    }
}

fn t22_no_css_below_root(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = common::env(kind, common::kernel(profile));
        // Something enabled at the root once (its dmem.current shows), then disabled again.
        write(&*env, "/", CgroupSubtreeControl, "+dmem").unwrap();
        write(&*env, "/", CgroupSubtreeControl, "-dmem").unwrap();
        env.mkdir("/k").unwrap();
        for file in [DmemCurrent, DmemMax, DmemMin, DmemLow] {
            assert!(!env.fs().exists(&cg("/k"), file));
            let err = env.fs().read(&cg("/k"), file).unwrap_err();
            assert_eq!(err.errno(), Some(libc::ENOENT), "{file}");
        }
        env.charge("/k", R0, "+1G").unwrap();
        assert_eq!(read(&*env, "/", DmemCurrent), max_lines("1073741824", "0"));
    }
}

fn t23_rmdir_keeps_charges(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        env.charge("/k/b", R0, "+2G").unwrap();
        assert_eq!(env.rmdir("/k/b"), Err(libc::EBUSY), "tasks block rmdir");
        env.kernel().set_has_tasks("/k/b", false).unwrap();
        env.rmdir("/k/b").unwrap();
        assert_eq!(read(&*env, "/k", DmemCurrent), max_lines("2147483648", "0"));
        assert_eq!(env.fs().children(&cg("/k")).unwrap(), ["a"]);
    }
}

fn t24_unregister(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        env.kernel().unregister_region(R1).unwrap();
        assert_eq!(read(&*env, "/", DmemCapacity), format!("{R0} 8514437120\n"));
        for file in [DmemCurrent, DmemMax, DmemMin, DmemLow] {
            assert_eq!(read(&*env, "/k/a", file).lines().count(), 1, "{file}");
        }
        let data = format!("{R1} 1G");
        assert_errno(write(&*env, "/k/a", DmemMax, &data), libc::EINVAL, &data);
        let err = apply_limit(env.fs(), &cg("/k/a"), DmemMax, R1, DmemValue::Max).unwrap_err();
        assert_eq!(err.reason(), "CgroupWriteRejected");
    }
}

fn t25_low_max(kind: Kind) {
    for profile in ALL_PROFILES {
        let env = setup_s(kind, profile);
        write(&*env, "/k/a", DmemLow, &format!("{R0} max")).unwrap();
        assert_eq!(read(&*env, "/k/a", DmemLow), max_lines("max", "0"));
        let outcome = apply_limit(env.fs(), &cg("/k/a"), DmemMin, R1, DmemValue::Bytes(G)).unwrap();
        assert_eq!(outcome, Applied::Confirmed(DmemValue::Bytes(G)));
    }
}

/// One `#[test]` per vector and environment.
macro_rules! vectors {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $( #[test] fn $name() { super::$name(super::common::Kind::InProcess) } )*
        }
        mod fuse {
            $( #[test] fn $name() {
                if super::common::fuse_available() {
                    super::common::with_timeout(|| super::$name(super::common::Kind::Fuse));
                }
            } )*
        }
    };
}

vectors!(
    t0_root_files_and_read_only,
    t1_capacity,
    t2_fresh_defaults,
    t3_t4_write_and_reset,
    t5_value_forms,
    t6_value_errors,
    t7_t9_names_and_spacing,
    t10_bare_name,
    t11_t13_multi_line,
    t14_t15_charges,
    t16_max_below_usage,
    t16c_blocking_write_reclaims,
    t21_peak,
    t22_no_css_below_root,
    t23_rmdir_keeps_charges,
    t24_unregister,
    t25_low_max,
);
