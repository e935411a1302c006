//! Cgroup tree, file set and open/write rules beyond the `docs/kernel.md` §9 vectors:
//! `cgroup.subtree_control`, `cgroup.controllers`, read-only files (`EINVAL` at write, as root),
//! `ENOENT`/`E2BIG`, empty writes, the root's files before `+dmem`, the charge file and the
//! C-string rule.

mod common;

use common::*;
use kube_dmem_sim::{Errno, Profile, SimConfig, SimKernel};

#[test]
fn files_per_cgroup_and_profile() {
    let k = setup(Profile::Current);
    assert_eq!(
        k.files("/").unwrap(),
        [
            "cgroup.controllers",
            "cgroup.subtree_control",
            "dmem.capacity",
            "dmem.current"
        ]
    );
    assert_eq!(
        k.files("/k/a").unwrap(),
        [
            "cgroup.controllers",
            "cgroup.subtree_control",
            "dmem.current",
            "dmem.low",
            "dmem.max",
            "dmem.min",
            "dmem.peak",
            "dmem.sim.charge"
        ]
    );
    let k = setup(Profile::Legacy);
    assert!(!k.files("/k/a").unwrap().contains(&"dmem.peak"));
    assert_eq!(k.files("/nope"), Err(Errno::ENOENT));
}

#[test]
fn open_rules() {
    for p in ALL {
        let mut k = setup(p);
        // Root (the agent) opens read-only files for writing; the write fails with EINVAL
        // (`cgroup_file_write` finds no write handler), as on the 7.2 and 7.3 kernels.
        for (path, f) in [
            ("/", "dmem.capacity"),
            ("/", "dmem.current"),
            ("/", "cgroup.controllers"),
            ("/k/a", "dmem.current"),
            ("/k/a", "cgroup.controllers"),
        ] {
            assert_eq!(k.check_open(path, f, true), Ok(()), "{path} {f}");
            assert_eq!(k.check_open(path, f, false), Ok(()), "{path} {f}");
            assert!(!kube_dmem_sim::has_write_handler(f), "{f}");
            assert_eq!(
                werr(&mut k, path, f, &format!("{R0} 1")),
                Errno::EINVAL,
                "{path} {f}"
            );
            // An empty write returns 0 before any handler is looked for.
            assert_eq!(w(&mut k, path, f, ""), Ok(0), "{path} {f}");
        }
        for f in ["dmem.max", "dmem.min", "dmem.low", "cgroup.subtree_control"] {
            assert!(kube_dmem_sim::has_write_handler(f), "{f}");
        }
        assert_eq!(k.check_open("/", "dmem.max", false), Err(Errno::ENOENT));
        assert_eq!(
            k.check_open("/k/a", "dmem.capacity", false),
            Err(Errno::ENOENT)
        );
        assert_eq!(k.check_open("/k/a", "dmem.high", false), Err(Errno::ENOENT));
        assert_eq!(k.check_open("/k/a", "dmem.max", true), Ok(()));
        assert_eq!(k.check_open("/k/zz", "dmem.max", false), Err(Errno::ENOENT));
        assert_eq!(
            werr(&mut k, "/", "dmem.max", &format!("{R0} 1")),
            Errno::ENOENT
        );
        assert_eq!(werr(&mut k, "/", "dmem.max", ""), Errno::ENOENT);
    }
}

/// `docs/kernel.md` T0: after boot the root has no `dmem.capacity`/`dmem.current` until a
/// controller is enabled in its `cgroup.subtree_control`; they stay after `-dmem`.
#[test]
fn root_files_appear_with_the_first_enable() {
    for p in ALL {
        let mut k = SimKernel::new(SimConfig::with_profile(p));
        k.register_region(R0, R0_SIZE, true);
        assert_eq!(
            k.files("/").unwrap(),
            ["cgroup.controllers", "cgroup.subtree_control"]
        );
        for f in ["dmem.capacity", "dmem.current"] {
            assert_eq!(k.read_file("/", f), Err(Errno::ENOENT), "{p:?} {f}");
            assert_eq!(werr(&mut k, "/", f, "x"), Errno::ENOENT, "{p:?} {f}");
        }
        assert_eq!(r(&k, "/", "cgroup.controllers"), "dmem\n");
        // An empty or failed write enables nothing.
        assert_eq!(w(&mut k, "/", "cgroup.subtree_control", ""), Ok(0));
        assert_eq!(
            werr(&mut k, "/", "cgroup.subtree_control", "+memory"),
            Errno::EINVAL
        );
        assert_eq!(k.read_file("/", "dmem.capacity"), Err(Errno::ENOENT));
        w(&mut k, "/", "cgroup.subtree_control", "+dmem").unwrap();
        assert_eq!(r(&k, "/", "dmem.capacity"), format!("{R0} {R0_SIZE}\n"));
        assert_eq!(r(&k, "/", "dmem.current"), format!("{R0} 0\n"));
        w(&mut k, "/", "cgroup.subtree_control", "-dmem").unwrap();
        assert_eq!(r(&k, "/", "cgroup.subtree_control"), "");
        assert_eq!(r(&k, "/", "dmem.capacity"), format!("{R0} {R0_SIZE}\n"));
        assert_eq!(
            k.files("/").unwrap(),
            [
                "cgroup.controllers",
                "cgroup.subtree_control",
                "dmem.capacity",
                "dmem.current"
            ]
        );
    }
}

#[test]
fn write_limit_e2big_and_nul() {
    for p in ALL {
        let mut k = setup(p);
        let long = format!("{R0} 1G{}", " ".repeat(4096));
        assert_eq!(werr(&mut k, "/k/a", "dmem.max", &long), Errno::E2BIG);
        let exact = format!("{R0} 1G{}", " ".repeat(4096 - R0.len() - 3));
        assert_eq!(w(&mut k, "/k/a", "dmem.max", &exact), Ok(4096));
        // The handler sees a C string: everything after a NUL is ignored, the return is nbytes.
        let data = format!("{R0} 2G\0garbage");
        assert_eq!(w(&mut k, "/k/a", "dmem.max", &data), Ok(data.len()));
        assert_eq!(val(&k, "/k/a", "dmem.max", R0), "2147483648");
    }
}

#[test]
fn subtree_control_rules() {
    let mut k = SimKernel::new(SimConfig::default());
    k.register_region(R0, R0_SIZE, true);
    assert_eq!(r(&k, "/", "cgroup.controllers"), "dmem\n");
    assert_eq!(r(&k, "/", "cgroup.subtree_control"), "");
    k.mkdir("/k").unwrap();
    k.mkdir("/k/a").unwrap();
    assert!(!k.has_dmem_css("/k"));
    // dmem not in /k's cgroup.controllers.
    assert_eq!(
        werr(&mut k, "/k", "cgroup.subtree_control", "+dmem"),
        Errno::ENOENT
    );
    // Unknown controller names and missing +/- prefixes.
    assert_eq!(
        werr(&mut k, "/", "cgroup.subtree_control", "+memory"),
        Errno::EINVAL
    );
    assert_eq!(
        werr(&mut k, "/", "cgroup.subtree_control", "dmem"),
        Errno::EINVAL
    );
    assert_eq!(
        werr(&mut k, "/", "cgroup.subtree_control", "+"),
        Errno::EINVAL
    );
    assert_eq!(w(&mut k, "/", "cgroup.subtree_control", ""), Ok(0));
    // Enabling at the root creates css for existing children; root may have tasks.
    k.set_has_tasks("/", true).unwrap();
    assert_eq!(w(&mut k, "/", "cgroup.subtree_control", "  +dmem\n"), Ok(8));
    assert_eq!(r(&k, "/", "cgroup.subtree_control"), "dmem\n");
    assert!(k.has_dmem_css("/k"));
    assert!(!k.has_dmem_css("/k/a"));
    assert_eq!(r(&k, "/k", "cgroup.controllers"), "dmem\n");
    assert_eq!(r(&k, "/k/a", "cgroup.controllers"), "");
    // No internal process: a non-root cgroup with tasks cannot enable.
    k.set_has_tasks("/k", true).unwrap();
    assert_eq!(
        werr(&mut k, "/k", "cgroup.subtree_control", "+dmem"),
        Errno::EBUSY
    );
    k.set_has_tasks("/k", false).unwrap();
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem").unwrap();
    assert!(k.has_dmem_css("/k/a"));
    // ... and then cannot get tasks.
    assert_eq!(k.set_has_tasks("/k", true), Err(Errno::EBUSY));
    // Re-enabling is a no-op.
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem").unwrap();
    // -dmem at the root while /k has dmem in its subtree_control.
    assert_eq!(
        werr(&mut k, "/", "cgroup.subtree_control", "-dmem"),
        Errno::EBUSY
    );
    // The last token wins.
    w(&mut k, "/k/a", "dmem.max", &format!("{R0} 1G")).unwrap();
    k.try_charge("/k/a", R0, G / 2).unwrap();
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem -dmem").unwrap();
    assert!(!k.has_dmem_css("/k/a"));
    assert_eq!(k.read_file("/k/a", "dmem.max"), Err(Errno::ENOENT));
    // Charges of the offline css stay in the ancestors; new charges go to /k.
    assert_eq!(k.usage("/k", R0), G / 2);
    k.try_charge("/k/a", R0, G).unwrap();
    assert_eq!(k.usage("/k", R0), 3 * G / 2);
    // Re-enabling gives /k/a a fresh css.
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem").unwrap();
    assert_eq!(val(&k, "/k/a", "dmem.max", R0), "max");
    assert_eq!(val(&k, "/k/a", "dmem.current", R0), "0");
}

#[test]
fn mkdir_rules() {
    let mut k = setup(Profile::Current);
    assert_eq!(k.mkdir("/k/a"), Err(Errno::EEXIST));
    assert_eq!(k.mkdir("/x/y"), Err(Errno::ENOENT));
    assert_eq!(k.mkdir("/k/dmem.max"), Err(Errno::EEXIST));
    assert_eq!(k.mkdir("/"), Err(Errno::EEXIST));
    k.mkdir("/k/c/").unwrap();
    assert!(k.exists("/k/c"));
    assert!(k.has_dmem_css("/k/c"));
    assert_eq!(k.children("/k").unwrap(), ["a", "b", "c"]);
    assert_eq!(k.children("/").unwrap(), ["k"]);
}

#[test]
fn charge_file() {
    for p in ALL {
        let mut k = setup(p);
        assert_eq!(w(&mut k, "/k/a", "dmem.sim.charge", ""), Ok(0));
        for bad in [
            "\n",
            R0,
            &format!("{R0} 1G"),
            &format!("{R0} +0"),
            &format!("{R0} +1.5G"),
            "bogus +1G",
            &format!("{R0} +max"),
        ] {
            assert_eq!(
                werr(&mut k, "/k/a", "dmem.sim.charge", bad),
                Errno::EINVAL,
                "{bad:?}"
            );
        }
        w(&mut k, "/k/a", "dmem.sim.charge", &format!("{R0} +1G")).unwrap();
        w(
            &mut k,
            "/k/a",
            "dmem.sim.charge",
            &format!("{R0}\t+0x10000000\n"),
        )
        .unwrap();
        assert_eq!(k.usage("/k/a", R0), G + 256 * M);
        // Frees newest first, splitting the last BO.
        w(&mut k, "/k/a", "dmem.sim.charge", &format!("{R0} -512M")).unwrap();
        assert_eq!(k.usage("/k/a", R0), G - 256 * M);
        assert_eq!(k.device_used(R0), G - 256 * M);
        assert_eq!(val(&k, "/k/a", "dmem.sim.charge", R0), "805306368");
        // Freeing more than is resident frees everything.
        w(&mut k, "/k/a", "dmem.sim.charge", &format!("{R0} -8G")).unwrap();
        assert_eq!(k.usage("/k", R0), 0);
        // A max hit through the file is EAGAIN; a full device ENOSPC.
        w(&mut k, "/k/a", "dmem.max", &format!("{R0} 1G")).unwrap();
        assert_eq!(
            werr(&mut k, "/k/a", "dmem.sim.charge", &format!("{R0} +2G")),
            Errno::EAGAIN
        );
        assert_eq!(
            werr(&mut k, "/k/b", "dmem.sim.charge", &format!("{R0} +9G")),
            Errno::ENOSPC
        );
        assert_eq!(k.read_file("/", "dmem.sim.charge"), Err(Errno::ENOENT));
    }
}
