//! `SysfsCgroups`: the real cgroupfs backend over a root directory (default `/sys/fs/cgroup`; in the
//! DaemonSet the hostPath mount given as `--cgroup-root`; in tests a tempdir or a FUSE-mounted simulator).
//!
//! EDGE: plain file I/O, no decisions. Files are opened relative to held handles on their cgroup
//! directories ([`DirHandles`]), not by their full path. It owns the open flags: `dmem.max` is
//! opened with `O_NONBLOCK` so a 7.3+ kernel's synchronous driver reclaim does not run in the
//! agent's thread (`docs/kernel.md` §3.3 and §10, rule 3); older kernels ignore the flag. Each
//! `write` is exactly one `write(2)`.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::dir_handles::DirHandles;
use super::{CgroupError, CgroupFile, CgroupFs, CgroupPath};

/// Where cgroup v2 is mounted on a node.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The real cgroupfs backend.
#[derive(Debug, Clone)]
pub struct SysfsCgroups {
    root: PathBuf,
    handles: DirHandles,
}

impl Default for SysfsCgroups {
    fn default() -> Self {
        SysfsCgroups::with_root(DEFAULT_CGROUP_ROOT)
    }
}

impl SysfsCgroups {
    /// A backend whose hierarchy root `/` is the directory `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        SysfsCgroups {
            handles: DirHandles::new(root.clone()),
            root,
        }
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

    /// The open flags for writing `file`.
    fn write_flags(file: CgroupFile) -> OFlag {
        if file.writes_nonblocking() {
            OFlag::O_WRONLY | OFlag::O_NONBLOCK
        } else {
            OFlag::O_WRONLY
        }
    }
}

impl CgroupFs for SysfsCgroups {
    fn read(&self, group: &CgroupPath, file: CgroupFile) -> Result<String, CgroupError> {
        let fail = |source| CgroupError::Read {
            path: self.file_path(group, file),
            source,
        };
        let mut handle = (self.handles)
            .open(group, file.file_name(), OFlag::O_RDONLY)
            .map_err(fail)?;
        // Read until end of file with plain `read(2)` calls: `read_to_string` would first ask
        // for the size, which cgroupfs does not know (it reports 4096 or 0).
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match handle.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        String::from_utf8(bytes).map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn write(&self, group: &CgroupPath, file: CgroupFile, value: &str) -> Result<(), CgroupError> {
        let path = self.file_path(group, file);
        let fail = |path: PathBuf, source: io::Error| CgroupError::Write {
            path,
            data: value.to_owned(),
            source,
        };
        // No O_TRUNC/O_CREAT: cgroupfs files exist or the cgroup/controller is missing (ENOENT).
        let mut handle = match (self.handles).open(group, file.file_name(), Self::write_flags(file))
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
        self.handles.is_file(group, file.file_name())
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
