//! `CgroupError`: the one error type of the cgroup boundary. Every variant names the file (full path) it
//! concerns; writes carry the data written; I/O failures keep the `io::Error` (and so the errno) as the
//! source, and parse failures the line number and text.
//!
//! Boundary definitions (no I/O). `Display` describes this layer only; causes are `#[source]`s
//! (`docs/contributing.md` §4).

use std::io;
use std::path::{Path, PathBuf};

use super::InvalidCgroupPath;
use super::format::{FormatError, ParseError};

/// A failed operation on a cgroup file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Opening or reading a file failed.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (errno).
        #[source]
        source: io::Error,
    },
    /// Opening a file for writing, or the `write(2)` itself, failed.
    #[error("writing {data:?} to {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Exactly what was (to be) written.
        data: String,
        /// The OS error (errno), as the kernel or the simulator returned it.
        #[source]
        source: io::Error,
    },
    /// The kernel took fewer bytes than written; cgroupfs never does this, so it is reported, not retried.
    #[error("short write to {}: {written} of {} bytes of {data:?}", path.display(), data.len())]
    ShortWrite {
        /// The file.
        path: PathBuf,
        /// What was written.
        data: String,
        /// How many bytes the kernel reported.
        written: usize,
    },
    /// Listing a cgroup's children failed.
    #[error("listing the child cgroups of {}", path.display())]
    List {
        /// The cgroup directory.
        path: PathBuf,
        /// The OS error (errno).
        #[source]
        source: io::Error,
    },
    /// A file's content is not in the kernel's format.
    #[error("parsing {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number, line text and problem.
        #[source]
        source: ParseError,
    },
    /// A limit write was refused before it reached the kernel (see `format::format_limit_write`).
    #[error("refusing to write region {region:?} to {}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The refused region name.
        region: String,
        /// Why it was refused.
        #[source]
        source: FormatError,
    },
    /// After a write, the file has no line for the region written (e.g. unregistered meanwhile).
    #[error("{} has no line for region {region:?}", path.display())]
    RegionMissing {
        /// The file.
        path: PathBuf,
        /// The region looked for.
        region: String,
    },
    /// A per-region limit write was asked for a file that takes none.
    #[error("{} does not take per-region limits", path.display())]
    NotALimitFile {
        /// The file.
        path: PathBuf,
    },
    /// A cgroup name found on disk is not a valid path component.
    #[error("invalid cgroup name below {}", path.display())]
    InvalidPath {
        /// The parent directory.
        path: PathBuf,
        /// What is wrong with the name.
        #[source]
        source: InvalidCgroupPath,
    },
    /// The simulator's state is unusable (a thread panicked while holding it).
    #[error("simulator state unavailable while accessing {}: {detail}", path.display())]
    Backend {
        /// The file or directory being accessed.
        path: PathBuf,
        /// What went wrong.
        detail: &'static str,
    },
}

impl CgroupError {
    /// A stable PascalCase reason for conditions, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match (self, self.errno()) {
            (_, Some(libc::ENOENT)) => "CgroupNotFound",
            (_, Some(libc::EACCES | libc::EPERM)) => "CgroupPermissionDenied",
            (CgroupError::Write { .. }, Some(libc::EBUSY)) => "CgroupBusy",
            (CgroupError::Write { .. }, _) => "CgroupWriteRejected",
            (CgroupError::Read { .. }, _) => "CgroupReadFailed",
            (CgroupError::List { .. }, _) => "CgroupListFailed",
            (CgroupError::ShortWrite { .. }, _) => "CgroupShortWrite",
            (CgroupError::Parse { .. }, _) => "DmemParseError",
            (CgroupError::Format { .. }, _) => "DmemInvalidRegion",
            (CgroupError::RegionMissing { .. }, _) => "DmemRegionMissing",
            (CgroupError::NotALimitFile { .. }, _) => "DmemNotALimitFile",
            (CgroupError::InvalidPath { .. }, _) => "CgroupInvalidPath",
            (CgroupError::Backend { .. }, _) => "CgroupBackendFailed",
        }
    }

    /// The errno of an I/O failure (`None` for format and parse problems).
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::List { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The file or directory the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            CgroupError::Read { path, .. }
            | CgroupError::Write { path, .. }
            | CgroupError::ShortWrite { path, .. }
            | CgroupError::List { path, .. }
            | CgroupError::Parse { path, .. }
            | CgroupError::Format { path, .. }
            | CgroupError::RegionMissing { path, .. }
            | CgroupError::NotALimitFile { path }
            | CgroupError::InvalidPath { path, .. }
            | CgroupError::Backend { path, .. } => path,
        }
    }

    /// Whether the file or cgroup does not exist (ENOENT): a pod cgroup that went away, a file the
    /// kernel does not offer, or a controller not enabled.
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_err(errno: i32) -> CgroupError {
        CgroupError::Write {
            path: "/sys/fs/cgroup/k/dmem.max".into(),
            data: "r 1\n".into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn reasons_follow_errno() {
        assert_eq!(write_err(libc::EINVAL).reason(), "CgroupWriteRejected");
        assert_eq!(write_err(libc::ENOENT).reason(), "CgroupNotFound");
        assert_eq!(write_err(libc::EACCES).reason(), "CgroupPermissionDenied");
        assert_eq!(write_err(libc::EBUSY).reason(), "CgroupBusy");
        assert_eq!(write_err(libc::EAGAIN).errno(), Some(libc::EAGAIN));
        assert!(write_err(libc::ENOENT).is_not_found());
    }

    #[test]
    fn display_names_path_and_data_not_cause() {
        let err = write_err(libc::EINVAL);
        assert_eq!(
            err.to_string(),
            "writing \"r 1\\n\" to /sys/fs/cgroup/k/dmem.max"
        );
        assert_eq!(err.path(), Path::new("/sys/fs/cgroup/k/dmem.max"));
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("Invalid argument")));
    }
}
