//! CORE: the error values the simulated kernel returns.
//!
//! [`Errno`] names the errno a system call on cgroupfs (or an in-kernel driver call) would fail
//! with; [`SimError`] adds the one outcome that is not an errno, the NULL-pointer dereference of
//! 6.14–6.18 kernels without the stable fix (`docs/kernel.md` §2.3, test vector T10);
//! [`ChargeError`] is what a failed driver charge or allocation reports (`docs/kernel.md` §3.2,
//! §8.6).

use std::fmt;

/// An errno value the kernel would return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Errno {
    /// Invalid argument (malformed write, unknown region).
    EINVAL,
    /// No such device (charge against an unregistered region).
    ENODEV,
    /// Resource temporarily unavailable (a `dmem.max` would be exceeded).
    EAGAIN,
    /// No such file or directory (missing cgroup or file, unavailable controller).
    ENOENT,
    /// Permission denied (write-open of a read-only file).
    EACCES,
    /// Device or resource busy (rmdir with tasks or children, "no internal process" rule).
    EBUSY,
    /// No space left on device (the device region is full and eviction cannot make room).
    ENOSPC,
    /// Out of memory (pool allocation failure; never produced by the simulator itself).
    ENOMEM,
    /// Argument list too long (write larger than the cgroup file write limit).
    E2BIG,
    /// File exists (mkdir of an existing name).
    EEXIST,
    /// Not a directory.
    ENOTDIR,
    /// Directory not empty.
    ENOTEMPTY,
    /// Operation not permitted.
    EPERM,
}

impl Errno {
    /// The raw libc value of this errno, as `write(2)` would report it in `errno`.
    pub fn raw(self) -> i32 {
        match self {
            Errno::EINVAL => libc::EINVAL,
            Errno::ENODEV => libc::ENODEV,
            Errno::EAGAIN => libc::EAGAIN,
            Errno::ENOENT => libc::ENOENT,
            Errno::EACCES => libc::EACCES,
            Errno::EBUSY => libc::EBUSY,
            Errno::ENOSPC => libc::ENOSPC,
            Errno::ENOMEM => libc::ENOMEM,
            Errno::E2BIG => libc::E2BIG,
            Errno::EEXIST => libc::EEXIST,
            Errno::ENOTDIR => libc::ENOTDIR,
            Errno::ENOTEMPTY => libc::ENOTEMPTY,
            Errno::EPERM => libc::EPERM,
        }
    }

    /// The symbolic name, e.g. `"EINVAL"`.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EINVAL => "EINVAL",
            Errno::ENODEV => "ENODEV",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOENT => "ENOENT",
            Errno::EACCES => "EACCES",
            Errno::EBUSY => "EBUSY",
            Errno::ENOSPC => "ENOSPC",
            Errno::ENOMEM => "ENOMEM",
            Errno::E2BIG => "E2BIG",
            Errno::EEXIST => "EEXIST",
            Errno::ENOTDIR => "ENOTDIR",
            Errno::ENOTEMPTY => "ENOTEMPTY",
            Errno::EPERM => "EPERM",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.name(),
            std::io::Error::from_raw_os_error(self.raw()).kind()
        )
    }
}

impl std::error::Error for Errno {}

/// The outcome of a failed [`crate::SimKernel::write_file`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// The write failed with this errno.
    #[error("write failed with {0}")]
    Errno(Errno),
    /// The modelled kernel would have crashed (NULL-pointer dereference in `dmemcg_parse_limit` on
    /// 6.14–6.18 without the stable fix, `docs/kernel.md` §2.3). Only
    /// [`crate::Profile::LegacyUnfixed`] produces it. Lines before the crashing one stay applied;
    /// the simulator keeps running and remembers the event (see [`crate::SimKernel::oopsed`]).
    #[error("kernel oops writing {file}: {detail}")]
    KernelOops {
        /// The file being written, e.g. `"dmem.max"`.
        file: String,
        /// What the kernel dereferenced, and on which line.
        detail: String,
    },
}

impl SimError {
    /// The errno, if this is an errno failure.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SimError::Errno(e) => Some(*e),
            SimError::KernelOops { .. } => None,
        }
    }

    /// A raw errno for layers that must return one (FUSE): the errno itself, or `EIO` for a kernel
    /// oops (a writer on a real machine would never see a return at all).
    pub fn raw_errno(&self) -> i32 {
        match self {
            SimError::Errno(e) => e.raw(),
            SimError::KernelOops { .. } => libc::EIO,
        }
    }
}

impl From<Errno> for SimError {
    fn from(e: Errno) -> Self {
        SimError::Errno(e)
    }
}

/// A failed driver-side charge or allocation (`dmem_cgroup_try_charge`, TTM allocation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("charge failed with {errno}{}", limit_pool.as_deref().map(|p| format!(" at limit pool {p}")).unwrap_or_default())]
pub struct ChargeError {
    /// `EAGAIN` (a `dmem.max` would be exceeded), `ENOSPC` (device full), `ENODEV` (region
    /// unregistered or unknown), `ENOENT` (no such cgroup) or `EINVAL` (zero size).
    pub errno: Errno,
    /// For `EAGAIN`: the cgroup path of the pool whose max would be exceeded — the lowest level,
    /// self first (`ret_limit_pool`, `docs/kernel.md` §3.2). `None` otherwise.
    pub limit_pool: Option<String>,
}

impl ChargeError {
    /// A charge error without a limit pool.
    pub fn new(errno: Errno) -> Self {
        ChargeError {
            errno,
            limit_pool: None,
        }
    }
}
