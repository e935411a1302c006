//! Shared fixtures for the integration tests: the `docs/kernel.md` §9 setup S and small helpers.
#![allow(dead_code)]

use kube_dmem_sim::{Errno, Profile, SimConfig, SimError, SimKernel};

/// Region R0 of setup S (xe).
pub const R0: &str = "drm/0000:03:00.0/vram0";
/// Region R1 of setup S (amdgpu).
pub const R1: &str = "drm/0000:0a:00.0/vram";
/// Size of R0.
pub const R0_SIZE: u64 = 8_514_437_120;
/// Size of R1.
pub const R1_SIZE: u64 = 17_095_983_104;
/// 1 GiB.
pub const G: u64 = 1 << 30;
/// 1 MiB.
pub const M: u64 = 1 << 20;

/// Every profile.
pub const ALL: [Profile; 3] = [Profile::Legacy, Profile::LegacyUnfixed, Profile::Current];
/// Both legacy variants.
pub const LEGACY: [Profile; 2] = [Profile::Legacy, Profile::LegacyUnfixed];

/// An empty kernel of `profile` with `+dmem` in the root's subtree_control.
pub fn kernel(profile: Profile) -> SimKernel {
    let mut k = SimKernel::new(SimConfig::with_profile(profile));
    w(&mut k, "/", "cgroup.subtree_control", "+dmem").expect("root +dmem");
    k
}

/// Setup S of `docs/kernel.md` §9: R0, R1; `/` and `/k` with `+dmem`; `/k/a`, `/k/b` with tasks.
pub fn setup(profile: Profile) -> SimKernel {
    let mut k = kernel(profile);
    k.register_region(R0, R0_SIZE, true);
    k.register_region(R1, R1_SIZE, true);
    k.mkdir("/k").expect("mkdir /k");
    w(&mut k, "/k", "cgroup.subtree_control", "+dmem\n").expect("/k +dmem");
    for c in ["/k/a", "/k/b"] {
        k.mkdir(c).expect("mkdir");
        k.set_has_tasks(c, true).expect("tasks");
    }
    k
}

/// One blocking write of `data`.
pub fn w(k: &mut SimKernel, path: &str, file: &str, data: &str) -> Result<usize, SimError> {
    k.write_file(path, file, data.as_bytes(), false)
}

/// The errno of a failed write.
pub fn werr(k: &mut SimKernel, path: &str, file: &str, data: &str) -> Errno {
    match w(k, path, file, data) {
        Err(SimError::Errno(e)) => e,
        other => panic!("write {data:?} to {path}/{file}: expected an errno, got {other:?}"),
    }
}

/// Read a file that must exist.
pub fn r(k: &SimKernel, path: &str, file: &str) -> String {
    k.read_file(path, file)
        .unwrap_or_else(|e| panic!("read {path}/{file}: {e}"))
}

/// The value printed for `region` in `path/file`.
pub fn val(k: &SimKernel, path: &str, file: &str, region: &str) -> String {
    r(k, path, file)
        .lines()
        .find_map(|l| {
            l.rsplit_once(' ')
                .filter(|(n, _)| *n == region)
                .map(|(_, v)| v.to_string())
        })
        .unwrap_or_else(|| panic!("{path}/{file} has no line for {region}"))
}

/// A single-region kernel for eviction scenarios: region `R0` of `size` bytes, `/` and `/k` with
/// `+dmem`, `/k/a`, `/k/b` and `/c` (a child of the root).
pub fn evict_setup(profile: Profile, size: u64) -> SimKernel {
    let mut k = kernel(profile);
    k.register_region(R0, size, true);
    for c in ["/k", "/k/a", "/k/b", "/c"] {
        k.mkdir(c).expect("mkdir");
        if c == "/k" {
            w(&mut k, "/k", "cgroup.subtree_control", "+dmem").expect("+dmem");
        }
    }
    k
}
