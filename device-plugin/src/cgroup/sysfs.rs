//! `SysfsCgroups`: the real cgroupfs backend over a root directory (default `/sys/fs/cgroup`; in the
//! DaemonSet the hostPath mount given as `--cgroup-root`; in tests a tempdir or a FUSE-mounted simulator).
//!
//! EDGE: plain file I/O, no decisions. It owns the open flags: `dmem.max` is opened with `O_NONBLOCK` so a
//! 7.3+ kernel's synchronous driver reclaim does not run in the agent's thread (`docs/kernel.md`
//! §3.3 and §10, rule 3); older kernels ignore the flag. Each `write` is exactly one `write(2)`.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupFile, CgroupFs, CgroupPath};

/// Where cgroup v2 is mounted on a node.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The real cgroupfs backend.
#[derive(Debug, Clone)]
pub struct SysfsCgroups {
    root: PathBuf,
}

impl Default for SysfsCgroups {
    fn default() -> Self {
        SysfsCgroups::with_root(DEFAULT_CGROUP_ROOT)
    }
}

impl SysfsCgroups {
    /// A backend whose hierarchy root `/` is the directory `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        SysfsCgroups { root: root.into() }
    }

    /// The directory the hierarchy root maps to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `group`. `CgroupPath` has no `..`, so this never leaves `root`.
    pub fn dir(&self, group: &CgroupPath) -> PathBuf {
        if group.is_root() {
            self.root.clone()
        } else {
            self.root.join(group.relative())
        }
    }

    /// The full path of `file` in `group`.
    pub fn file_path(&self, group: &CgroupPath, file: CgroupFile) -> PathBuf {
        self.dir(group).join(file.file_name())
    }

    /// The extra open flags for writing `file`.
    fn write_flags(file: CgroupFile) -> i32 {
        if file.writes_nonblocking() {
            libc::O_NONBLOCK
        } else {
            0
        }
    }
}

impl CgroupFs for SysfsCgroups {
    fn read(&self, group: &CgroupPath, file: CgroupFile) -> Result<String, CgroupError> {
        let path = self.file_path(group, file);
        fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
    }

    fn write(&self, group: &CgroupPath, file: CgroupFile, value: &str) -> Result<(), CgroupError> {
        let path = self.file_path(group, file);
        let fail = |path: PathBuf, source: io::Error| CgroupError::Write {
            path,
            data: value.to_owned(),
            source,
        };
        // No O_TRUNC/O_CREAT: cgroupfs files exist or the cgroup/controller is missing (ENOENT).
        let mut handle = match OpenOptions::new()
            .write(true)
            .custom_flags(Self::write_flags(file))
            .open(&path)
        {
            Ok(handle) => handle,
            Err(source) => return Err(fail(path, source)),
        };
        // `write`, not `write_all`: the kernel parses each call on its own, so a retry of the rest
        // would be a second, different write.
        match handle.write(value.as_bytes()) {
            Ok(n) if n == value.len() => Ok(()),
            Ok(written) => Err(CgroupError::ShortWrite {
                path,
                data: value.to_owned(),
                written,
            }),
            Err(source) => Err(fail(path, source)),
        }
    }

    fn children(&self, group: &CgroupPath) -> Result<Vec<String>, CgroupError> {
        let path = self.dir(group);
        let list_err = |path: &Path, source| CgroupError::List {
            path: path.to_owned(),
            source,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&path).map_err(|e| list_err(&path, e))? {
            let entry = entry.map_err(|e| list_err(&path, e))?;
            let is_dir = entry.file_type().map_err(|e| list_err(&path, e))?.is_dir();
            // A name that is not UTF-8 cannot be a kubelet cgroup; skip rather than fail the scan.
            if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, group: &CgroupPath, file: CgroupFile) -> bool {
        self.file_path(group, file).is_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, SysfsCgroups) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("k/b")).unwrap();
        fs::create_dir_all(dir.path().join("k/a")).unwrap();
        fs::write(dir.path().join("k/file"), "").unwrap();
        fs::write(dir.path().join("k/a/dmem.max"), "r max\n").unwrap();
        let fs = SysfsCgroups::with_root(dir.path());
        (dir, fs)
    }

    #[test]
    fn reads_writes_and_lists_a_tempdir_root() {
        let (dir, fs) = tree();
        let k = CgroupPath::new("/k").unwrap();
        let a = k.join("a").unwrap();
        assert_eq!(fs.children(&k).unwrap(), ["a", "b"]);
        assert_eq!(fs.children(&CgroupPath::root()).unwrap(), ["k"]);
        assert_eq!(fs.read(&a, CgroupFile::DmemMax).unwrap(), "r max\n");
        assert!(fs.exists(&a, CgroupFile::DmemMax));
        assert!(!fs.exists(&a, CgroupFile::DmemLow));
        assert!(!fs.exists(&k, CgroupFile::DmemMax));
        fs.write(&a, CgroupFile::DmemMax, "r 1\n").unwrap();
        // No O_TRUNC, as on cgroupfs: a regular file keeps its tail, which proves the flags.
        assert_eq!(
            fs::read_to_string(dir.path().join("k/a/dmem.max")).unwrap(),
            "r 1\nx\n"
        );
        assert_eq!(
            fs.file_path(&a, CgroupFile::DmemMax),
            dir.path().join("k/a/dmem.max")
        );
        assert_eq!(SysfsCgroups::default().root(), Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn errors_carry_path_data_and_errno() {
        let (dir, fs) = tree();
        let gone = CgroupPath::new("/k/gone").unwrap();
        let err = fs.write(&gone, CgroupFile::DmemMax, "r 1\n").unwrap_err();
        assert_eq!(err.errno(), Some(libc::ENOENT));
        assert_eq!(err.reason(), "CgroupNotFound");
        assert_eq!(err.path(), dir.path().join("k/gone/dmem.max"));
        assert!(matches!(&err, CgroupError::Write { data, .. } if data == "r 1\n"));
        let err = fs.read(&gone, CgroupFile::DmemCurrent).unwrap_err();
        assert_eq!(
            (err.errno(), err.reason()),
            (Some(libc::ENOENT), "CgroupNotFound")
        );
        let err = fs.children(&gone).unwrap_err();
        assert_eq!(err.path(), dir.path().join("k/gone"));
        assert!(err.is_not_found());
    }
}
