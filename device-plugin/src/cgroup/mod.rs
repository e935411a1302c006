//! The node-side kernel boundary: the `CgroupFs` trait, the files it may touch (`CgroupFile`), validated
//! cgroup paths (`CgroupPath`) and the error every backend returns (`CgroupError`).
//!
//! Layer: boundary definitions (no I/O here). The backends are EDGE (`sysfs`, `sim_backend`); the helpers
//! over `&dyn CgroupFs` (`dmem`, `probe`, `path`) hold no `std::fs` and are testable against the simulator.
//! Kernel facts are in `docs/kernel.md`; the boundary rules in `docs/contributing.md` §3.

pub mod dir_handles;
pub mod dmem;
mod error;
pub mod format;
pub mod path;
pub mod probe;
pub mod sim_backend;
pub mod sysfs;

use std::fmt;

pub use error::CgroupError;
pub use sim_backend::SimCgroups;
pub use sysfs::SysfsCgroups;

/// The only code that touches cgroupfs. Sync on purpose: writes are tiny, and the simulator stays trivial.
///
/// Implementations do not interpret file contents; parsing and the kernel's write rules live in
/// [`format`](mod@format) and [`dmem`], so every backend behaves the same to its callers.
pub trait CgroupFs: Send + Sync {
    /// Reads the whole content of `file` in `group`.
    fn read(&self, group: &CgroupPath, file: CgroupFile) -> Result<String, CgroupError>;

    /// Writes `value` to `file` in `group` with exactly one `write(2)` call, as the kernel parses each
    /// call separately (`docs/kernel.md` §2). A short write is an error.
    fn write(&self, group: &CgroupPath, file: CgroupFile, value: &str) -> Result<(), CgroupError>;

    /// Names of the child cgroups of `group`, sorted, so scans are deterministic.
    fn children(&self, group: &CgroupPath) -> Result<Vec<String>, CgroupError>;

    /// Whether `file` exists in `group`. `false` also when the group itself does not exist; probes use
    /// this to discover what the running kernel offers instead of trusting its version number.
    fn exists(&self, group: &CgroupPath, file: CgroupFile) -> bool;
}

/// The cgroup interface files kube-dmem reads or writes. An enum, not a `&str`, so a typo cannot compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CgroupFile {
    /// `dmem.capacity`: registered region sizes; root only.
    DmemCapacity,
    /// `dmem.current`: hierarchical usage per region.
    DmemCurrent,
    /// `dmem.peak`: hierarchical high-water mark; non-root, 7.3+ only.
    DmemPeak,
    /// `dmem.min`: hard protection.
    DmemMin,
    /// `dmem.low`: best-effort protection.
    DmemLow,
    /// `dmem.max`: hard limit.
    DmemMax,
    /// `dmem.high`: not in any kernel yet (`docs/kernel.md` §6); used only when a probe finds it.
    DmemHigh,
    /// `cgroup.controllers`: controllers available in this cgroup.
    CgroupControllers,
    /// `cgroup.subtree_control`: controllers enabled for the children of this cgroup.
    CgroupSubtreeControl,
}

impl CgroupFile {
    /// Every file, in a stable order (used by probes and listings).
    pub const ALL: [CgroupFile; 9] = [
        CgroupFile::DmemCapacity,
        CgroupFile::DmemCurrent,
        CgroupFile::DmemPeak,
        CgroupFile::DmemMin,
        CgroupFile::DmemLow,
        CgroupFile::DmemMax,
        CgroupFile::DmemHigh,
        CgroupFile::CgroupControllers,
        CgroupFile::CgroupSubtreeControl,
    ];

    /// The file's name inside a cgroup directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            CgroupFile::DmemCapacity => "dmem.capacity",
            CgroupFile::DmemCurrent => "dmem.current",
            CgroupFile::DmemPeak => "dmem.peak",
            CgroupFile::DmemMin => "dmem.min",
            CgroupFile::DmemLow => "dmem.low",
            CgroupFile::DmemMax => "dmem.max",
            CgroupFile::DmemHigh => "dmem.high",
            CgroupFile::CgroupControllers => "cgroup.controllers",
            CgroupFile::CgroupSubtreeControl => "cgroup.subtree_control",
        }
    }

    /// The file with this name, if it is one we know.
    pub fn from_file_name(name: &str) -> Option<CgroupFile> {
        CgroupFile::ALL.into_iter().find(|f| f.file_name() == name)
    }

    /// Whether the file takes per-region limit writes (`"<region> <value>\n"`).
    pub const fn is_dmem_limit(self) -> bool {
        matches!(
            self,
            CgroupFile::DmemMin | CgroupFile::DmemLow | CgroupFile::DmemMax | CgroupFile::DmemHigh
        )
    }

    /// Whether backends open this file for writing with `O_NONBLOCK`: lowering `dmem.max` below usage
    /// makes a blocking writer run the driver's reclaim synchronously on 7.3+ (`docs/kernel.md`
    /// §3.3); the agent must not stall on eviction. Older kernels ignore the flag.
    pub const fn writes_nonblocking(self) -> bool {
        matches!(self, CgroupFile::DmemMax)
    }
}

impl fmt::Display for CgroupFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// A cgroup's path relative to the hierarchy root, written absolute (`/`, `/kubepods/pod123`).
///
/// Validated on construction: starts with `/`, no empty, `.` or `..` components, no NUL, no trailing `/`
/// (except the root). Backends can therefore join it under their root without escaping it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CgroupPath(String);

/// Why a string is not a valid [`CgroupPath`] or cgroup name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cgroup path {path:?}: {problem}")]
pub struct InvalidCgroupPath {
    /// The rejected input.
    pub path: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl CgroupPath {
    /// The hierarchy root `/`.
    pub fn root() -> CgroupPath {
        CgroupPath("/".to_owned())
    }

    /// Validates `path` (see the type docs).
    pub fn new(path: &str) -> Result<CgroupPath, InvalidCgroupPath> {
        let bad = |problem| InvalidCgroupPath {
            path: path.to_owned(),
            problem,
        };
        let Some(rest) = path.strip_prefix('/') else {
            return Err(bad("must start with '/'"));
        };
        if rest.is_empty() {
            return Ok(CgroupPath::root());
        }
        for component in rest.split('/') {
            validate_name(component).map_err(bad)?;
        }
        Ok(CgroupPath(path.to_owned()))
    }

    /// The child cgroup `name` of this one; `name` must be a single valid component.
    pub fn join(&self, name: &str) -> Result<CgroupPath, InvalidCgroupPath> {
        validate_name(name).map_err(|problem| InvalidCgroupPath {
            path: format!("{}/{name}", self.0.trim_end_matches('/')),
            problem,
        })?;
        Ok(CgroupPath(format!(
            "{}/{name}",
            self.0.trim_end_matches('/')
        )))
    }

    /// The path as written, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the hierarchy root.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The path components, root excluded (empty for the root).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The last component (`None` for the root).
    pub fn name(&self) -> Option<&str> {
        self.components().last()
    }

    /// The parent cgroup (`None` for the root).
    pub fn parent(&self) -> Option<CgroupPath> {
        if self.is_root() {
            return None;
        }
        match self.0.rfind('/') {
            Some(0) | None => Some(CgroupPath::root()),
            Some(i) => Some(CgroupPath(self.0[..i].to_owned())),
        }
    }

    /// The root and every ancestor down to and including this path, top-down.
    pub fn ancestors_and_self(&self) -> Vec<CgroupPath> {
        let mut chain = vec![self.clone()];
        while let Some(parent) = chain.last().and_then(CgroupPath::parent) {
            chain.push(parent);
        }
        chain.reverse();
        chain
    }

    /// The path without its leading `/`, for joining under a backend's root directory.
    pub fn relative(&self) -> &str {
        self.0.trim_start_matches('/')
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for CgroupPath {
    type Error = InvalidCgroupPath;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        CgroupPath::new(value)
    }
}

/// One path component: non-empty, not `.`/`..`, no `/` or NUL.
fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty component")
    } else if name == "." || name == ".." {
        Err("'.' and '..' are not allowed")
    } else if name.contains('/') {
        Err("'/' inside a component")
    } else if name.contains('\0') {
        Err("NUL byte")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_validate() {
        for ok in ["/", "/k", "/k/a", "/kubepods.slice/kubepods-pod1_2.slice"] {
            assert_eq!(CgroupPath::new(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "", "k", "//", "/k/", "/k//a", "/..", "/k/../a", "/./k", "/k\0",
        ] {
            assert!(CgroupPath::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn path_navigation() {
        let p = CgroupPath::new("/k/a").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "/k");
        assert_eq!(p.parent().unwrap().parent().unwrap(), CgroupPath::root());
        assert_eq!(CgroupPath::root().parent(), None);
        assert_eq!(p.name(), Some("a"));
        assert_eq!(p.relative(), "k/a");
        let chain: Vec<_> = p
            .ancestors_and_self()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(chain, ["/", "/k", "/k/a"]);
        assert_eq!(CgroupPath::root().join("k").unwrap().as_str(), "/k");
        assert_eq!(p.join("b").unwrap().as_str(), "/k/a/b");
        assert!(p.join("..").is_err());
        assert!(p.join("x/y").is_err());
    }

    #[test]
    fn file_names_round_trip() {
        for f in CgroupFile::ALL {
            assert_eq!(CgroupFile::from_file_name(f.file_name()), Some(f));
        }
        assert_eq!(CgroupFile::from_file_name("dmem.stat"), None);
        assert!(CgroupFile::DmemHigh.is_dmem_limit());
        assert!(!CgroupFile::DmemCurrent.is_dmem_limit());
    }
}
