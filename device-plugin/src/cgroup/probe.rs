//! What the running kernel offers, found by looking rather than by version number: is `dmem` available at
//! the root, where along a path is it enabled, which `dmem.*` files exist, which regions are registered.
//! Also the helper that enables `+dmem` top-down along a path.
//!
//! `probe` and `enable_dmem_along` are EDGE helpers over `&dyn CgroupFs`; `decide` and `decide_profile`
//! are CORE (pure functions of an [`Observation`]). Kernel facts: `docs/kernel.md` §1.1 (which file
//! exists where and since when), `docs/kernel.md` §5 (enabling rules), §6 (`dmem.high` is not
//! merged anywhere yet).

use std::collections::BTreeSet;

use super::dmem::capacity;
use super::format::RegionCapacity;
use super::{CgroupError, CgroupFile, CgroupFs, CgroupPath};

/// The controller's name in `cgroup.controllers` / `cgroup.subtree_control`.
const DMEM: &str = "dmem";

/// Raw findings of [`probe`]; decisions are made from it by [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The probed group (normally the kubepods cgroup, where dmem must be enabled anyway).
    pub group: CgroupPath,
    /// Controllers listed in the root's `cgroup.controllers`.
    pub root_controllers: Vec<String>,
    /// For the root and each ancestor of `group` (top-down, `group` excluded): whether its
    /// `cgroup.subtree_control` enables dmem, i.e. whether its children get a dmem css.
    pub subtree_dmem: Vec<(CgroupPath, bool)>,
    /// The files that exist in `group`.
    pub files: BTreeSet<CgroupFile>,
    /// Registered regions from the root's `dmem.capacity` (empty if the file does not exist).
    pub regions: Vec<RegionCapacity>,
}

/// Which dmem kernel behaviour applies (`docs/kernel.md` §0 version map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelProfile {
    /// No dmem controller (kernel < 6.14, `CONFIG_CGROUP_DMEM` off, or disabled on the command line).
    Unavailable,
    /// dmem exists but the probed group has no dmem css, so its files cannot tell the version.
    Undetermined,
    /// 6.14–7.2: multi-line writes, a `dmem.max` below usage silently ignored.
    Legacy,
    /// 7.3+: `dmem.peak`, one region per write, `dmem.max` applied below usage with reclaim.
    Current,
}

/// What the agent may rely on, decided from an [`Observation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The kernel profile.
    pub profile: KernelProfile,
    /// A `dmem.high` file exists: write it natively instead of emulating high with `dmem.low`.
    pub native_high: bool,
    /// `dmem.peak` can be read.
    pub peak: bool,
    /// dmem is enabled in every ancestor's `cgroup.subtree_control`, so the group has its own css.
    pub enabled_along_path: bool,
}

/// CORE: the profile from the files found in a group. Only a non-root group with a dmem css tells:
/// `dmem.peak` is `CFTYPE_NOT_ON_ROOT` and new in 7.3, `dmem.max` marks the css (`docs/kernel.md`
/// §1.1).
pub fn decide_profile(files: &BTreeSet<CgroupFile>) -> KernelProfile {
    if !files.contains(&CgroupFile::DmemMax) {
        KernelProfile::Undetermined
    } else if files.contains(&CgroupFile::DmemPeak) {
        KernelProfile::Current
    } else {
        KernelProfile::Legacy
    }
}

/// CORE: everything the agent needs to know from one observation.
pub fn decide(obs: &Observation) -> Capabilities {
    let available = obs.root_controllers.iter().any(|c| c == DMEM);
    Capabilities {
        profile: if available {
            decide_profile(&obs.files)
        } else {
            KernelProfile::Unavailable
        },
        native_high: available && obs.files.contains(&CgroupFile::DmemHigh),
        peak: available && obs.files.contains(&CgroupFile::DmemPeak),
        enabled_along_path: available && obs.subtree_dmem.iter().all(|(_, on)| *on),
    }
}

/// Whether a `cgroup.controllers` / `cgroup.subtree_control` line lists dmem.
fn lists_dmem(text: &str) -> bool {
    text.split_whitespace().any(|c| c == DMEM)
}

/// EDGE: observes the root and `group` (see [`Observation`]). A missing ancestor ends the walk (its
/// level and those below it are reported as not enabled); other I/O errors are returned.
pub fn probe(fs: &dyn CgroupFs, group: &CgroupPath) -> Result<Observation, CgroupError> {
    let root = CgroupPath::root();
    let root_controllers = fs
        .read(&root, CgroupFile::CgroupControllers)?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut subtree_dmem = Vec::new();
    let mut missing = false;
    for level in group
        .ancestors_and_self()
        .into_iter()
        .filter(|l| l != group)
    {
        let on = if missing {
            false
        } else {
            match fs.read(&level, CgroupFile::CgroupSubtreeControl) {
                Ok(text) => lists_dmem(&text),
                Err(e) if e.is_not_found() => {
                    missing = true;
                    false
                }
                Err(e) => return Err(e),
            }
        };
        subtree_dmem.push((level, on));
    }
    let files = CgroupFile::ALL
        .into_iter()
        .filter(|f| fs.exists(group, *f))
        .collect();
    let regions = if fs.exists(&root, CgroupFile::DmemCapacity) {
        capacity(fs)?
    } else {
        Vec::new()
    };
    Ok(Observation {
        group: group.clone(),
        root_controllers,
        subtree_dmem,
        files,
        regions,
    })
}

/// Why `+dmem` could not be enabled at some level.
#[derive(Debug, thiserror::Error)]
pub enum EnableDmemError {
    /// ENOENT on the write: dmem is not in this cgroup's `cgroup.controllers` (not enabled above it, or
    /// not in the kernel).
    #[error("enabling dmem below {group}: the controller is not available there")]
    ControllerUnavailable {
        /// The cgroup whose `cgroup.subtree_control` refused.
        group: CgroupPath,
        /// The write error (path, data, errno).
        #[source]
        source: CgroupError,
    },
    /// EBUSY on the write: a non-root cgroup with member processes cannot enable a domain controller
    /// for its children (the "no internal processes" rule).
    #[error("enabling dmem below {group}: the cgroup has member processes")]
    HasProcesses {
        /// The cgroup whose `cgroup.subtree_control` refused.
        group: CgroupPath,
        /// The write error (path, data, errno).
        #[source]
        source: CgroupError,
    },
    /// Any other failure (a missing cgroup, permissions, I/O).
    #[error("enabling dmem below {group}")]
    Failed {
        /// The cgroup being handled.
        group: CgroupPath,
        /// The error.
        #[source]
        source: CgroupError,
    },
}

impl EnableDmemError {
    /// A stable PascalCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            EnableDmemError::ControllerUnavailable { .. } => "DmemControllerUnavailable",
            EnableDmemError::HasProcesses { .. } => "CgroupHasProcesses",
            EnableDmemError::Failed { source, .. } => source.reason(),
        }
    }
}

/// EDGE: writes `+dmem` to `cgroup.subtree_control` of the root and each ancestor of `group`, top-down,
/// so that `group` gets its own dmem css and files. Levels that already list dmem are not written.
/// Returns the cgroups that were changed.
pub fn enable_dmem_along(
    fs: &dyn CgroupFs,
    group: &CgroupPath,
) -> Result<Vec<CgroupPath>, EnableDmemError> {
    let mut changed = Vec::new();
    for level in group
        .ancestors_and_self()
        .into_iter()
        .filter(|l| l != group)
    {
        let current = fs
            .read(&level, CgroupFile::CgroupSubtreeControl)
            .map_err(|source| EnableDmemError::Failed {
                group: level.clone(),
                source,
            })?;
        if lists_dmem(&current) {
            continue;
        }
        match fs.write(&level, CgroupFile::CgroupSubtreeControl, "+dmem") {
            Ok(()) => changed.push(level),
            Err(source) => {
                return Err(match source.errno() {
                    Some(libc::ENOENT) => EnableDmemError::ControllerUnavailable {
                        group: level,
                        source,
                    },
                    Some(libc::EBUSY) => EnableDmemError::HasProcesses {
                        group: level,
                        source,
                    },
                    _ => EnableDmemError::Failed {
                        group: level,
                        source,
                    },
                });
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CgroupFile::*;

    fn obs(controllers: &str, subtree: &[bool], files: &[CgroupFile]) -> Observation {
        Observation {
            group: CgroupPath::new("/k").unwrap(),
            root_controllers: controllers.split_whitespace().map(str::to_owned).collect(),
            subtree_dmem: subtree.iter().map(|on| (CgroupPath::root(), *on)).collect(),
            files: files.iter().copied().collect(),
            regions: Vec::new(),
        }
    }

    #[test]
    fn profile_from_files() {
        let legacy = [DmemCurrent, DmemMin, DmemLow, DmemMax, CgroupControllers];
        let current = [DmemCurrent, DmemPeak, DmemMin, DmemLow, DmemMax];
        let high = [DmemCurrent, DmemPeak, DmemMin, DmemLow, DmemMax, DmemHigh];
        let cases: [(&[CgroupFile], KernelProfile); 4] = [
            (&legacy, KernelProfile::Legacy),
            (&current, KernelProfile::Current),
            (&high, KernelProfile::Current),
            (
                &[CgroupControllers, CgroupSubtreeControl],
                KernelProfile::Undetermined,
            ),
        ];
        for (files, want) in cases {
            assert_eq!(
                decide_profile(&files.iter().copied().collect()),
                want,
                "{files:?}"
            );
        }
    }

    #[test]
    fn decisions() {
        let caps = decide(&obs(
            "cpu memory dmem",
            &[true],
            &[DmemMax, DmemPeak, DmemHigh],
        ));
        assert_eq!(
            caps,
            Capabilities {
                profile: KernelProfile::Current,
                native_high: true,
                peak: true,
                enabled_along_path: true
            }
        );
        let caps = decide(&obs("cpu memory", &[true], &[DmemMax, DmemPeak]));
        assert_eq!(caps.profile, KernelProfile::Unavailable);
        assert!(!caps.peak && !caps.enabled_along_path);
        let caps = decide(&obs("dmem", &[true, false], &[]));
        assert_eq!(caps.profile, KernelProfile::Undetermined);
        assert!(!caps.enabled_along_path);
        assert!(lists_dmem("cpu dmem\n") && !lists_dmem("dmemx cpu") && !lists_dmem(""));
    }

    /// Refuses `+dmem` below the root with `errno`, like a kernel where dmem is not available there.
    struct Refuses(i32);

    impl CgroupFs for Refuses {
        fn read(&self, _: &CgroupPath, _: CgroupFile) -> Result<String, CgroupError> {
            Ok(String::new())
        }
        fn write(&self, g: &CgroupPath, f: CgroupFile, v: &str) -> Result<(), CgroupError> {
            if g.is_root() {
                return Ok(());
            }
            Err(CgroupError::Write {
                path: std::path::PathBuf::from(g.as_str()).join(f.file_name()),
                data: v.to_owned(),
                source: std::io::Error::from_raw_os_error(self.0),
            })
        }
        fn children(&self, _: &CgroupPath) -> Result<Vec<String>, CgroupError> {
            Ok(Vec::new())
        }
        fn exists(&self, _: &CgroupPath, _: CgroupFile) -> bool {
            true
        }
    }

    #[test]
    fn enable_errors_say_which_level_and_why() {
        let group = CgroupPath::new("/kubepods/pod1").unwrap();
        let err = enable_dmem_along(&Refuses(libc::ENOENT), &group).unwrap_err();
        assert_eq!(err.reason(), "DmemControllerUnavailable");
        assert!(
            matches!(&err, EnableDmemError::ControllerUnavailable { group, .. } if group.as_str() == "/kubepods")
        );
        let err = enable_dmem_along(&Refuses(libc::EBUSY), &group).unwrap_err();
        assert_eq!(err.reason(), "CgroupHasProcesses");
        let err = enable_dmem_along(&Refuses(libc::EACCES), &group).unwrap_err();
        assert_eq!(err.reason(), "CgroupPermissionDenied");
        assert_eq!(err.to_string(), "enabling dmem below /kubepods");
    }
}
