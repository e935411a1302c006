//! EDGE: open handles (`O_PATH`) on the cgroup directories the agent reads and writes, so a file
//! in one is opened relative to its directory: one name to resolve instead of every component of
//! the path from the hierarchy root, on each of the dozen file accesses a pod costs a round. On
//! cgroupfs that is a shorter path walk; through FUSE (our simulator) each component resolved is
//! a request to the server, so a pod's file costs half the requests it did.
//!
//! A handle can outlive its directory: the kubelet removes a pod's cgroup, and a directory of the
//! same path may be made again. Opening in a removed directory fails with `ENOENT` for every
//! name, so an `ENOENT` through a held handle whose directory no longer shows
//! `cgroup.controllers` (every cgroup has it) is retried once through a fresh one; a file that is
//! simply absent from a live cgroup (`dmem.peak` before 7.3) costs no reopening. Handles of
//! directories no longer used (a pod that is gone) are closed by a sweep: an `O_PATH` handle
//! costs little, but the agent must not hold many of them, nor hold removed cgroups' directories
//! for long.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::CgroupPath;

/// A file every cgroup directory has: absent through a handle, the directory was removed (or is
/// not a cgroup, as in a test's tempdir: then the retry costs a reopening, nothing else).
const EVERY_CGROUP_HAS: &str = "cgroup.controllers";

/// Most handles held; past it the least recently swept are closed first (see [`DirHandles`]).
const MAX_HANDLES: usize = 1024;

/// A directory handle, and whether it was used since the last sweep.
#[derive(Debug)]
struct Held {
    fd: Arc<OwnedFd>,
    used: bool,
}

/// The handles, with the accesses since the last sweep.
#[derive(Debug, Default)]
struct Table {
    held: HashMap<CgroupPath, Held>,
    accesses: usize,
}

/// Directory handles under one hierarchy root; clones share them.
#[derive(Debug, Clone)]
pub struct DirHandles {
    root: PathBuf,
    table: Arc<Mutex<Table>>,
}

impl DirHandles {
    /// Handles under the directory `root` (the hierarchy root), none open yet.
    pub fn new(root: PathBuf) -> Self {
        DirHandles {
            root,
            table: Arc::default(),
        }
    }

    /// Opens `name` in `group` with `flags` (`O_CLOEXEC` is added).
    pub fn open(&self, group: &CgroupPath, name: &str, flags: OFlag) -> io::Result<File> {
        let fd = self.in_dir(group, |dir| {
            openat(dir, name, flags | OFlag::O_CLOEXEC, Mode::empty())
        })?;
        Ok(File::from(fd))
    }

    /// Whether `name` in `group` is a regular file (`false` when it or `group` does not exist).
    pub fn is_file(&self, group: &CgroupPath, name: &str) -> bool {
        self.in_dir(group, |dir| fstatat(dir, name, AtFlags::empty()))
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG)
    }

    /// How many handles are open.
    pub fn held(&self) -> usize {
        self.table().held.len()
    }

    /// Runs `op` on `group`'s directory handle; an `ENOENT` through a handle opened earlier whose
    /// directory looks removed is retried once through a fresh one (it may have been made again).
    fn in_dir<T>(
        &self,
        group: &CgroupPath,
        op: impl Fn(&OwnedFd) -> nix::Result<T>,
    ) -> io::Result<T> {
        let (dir, fresh) = self.handle(group)?;
        match op(&dir) {
            Err(Errno::ENOENT)
                if !fresh && fstatat(&*dir, EVERY_CGROUP_HAS, AtFlags::empty()).is_err() =>
            {
                self.table().held.remove(group);
                let (dir, _) = self.handle(group)?;
                op(&dir).map_err(io::Error::from)
            }
            result => result.map_err(io::Error::from),
        }
    }

    /// `group`'s handle, and whether it was just opened.
    fn handle(&self, group: &CgroupPath) -> io::Result<(Arc<OwnedFd>, bool)> {
        {
            let mut table = self.table();
            table.accesses += 1;
            if table.accesses > 8 * table.held.len() + 64 {
                sweep(&mut table);
            }
            if let Some(held) = table.held.get_mut(group) {
                held.used = true;
                return Ok((Arc::clone(&held.fd), false));
            }
        }
        let path = if group.is_root() {
            self.root.clone()
        } else {
            self.root.join(group.relative())
        };
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = Arc::new(open(&path, flags, Mode::empty()).map_err(io::Error::from)?);
        let mut table = self.table();
        if table.held.len() >= MAX_HANDLES {
            sweep(&mut table);
        }
        if table.held.len() < MAX_HANDLES {
            let held = Held {
                fd: Arc::clone(&fd),
                used: true,
            };
            table.held.insert(group.clone(), held);
        }
        Ok((fd, true))
    }

    /// The table holds handles only, consistent whatever a panicking holder did.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Closes the handles not used since the last sweep. Sweeps come every few accesses per handle
/// held, so a directory the rounds still read (every round reads every pod) keeps its handle,
/// and one they stopped reading (a pod gone) loses it within a few rounds.
fn sweep(table: &mut Table) {
    table.held.retain(|_, held| std::mem::take(&mut held.used));
    table.accesses = 0;
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Read;

    use super::*;

    fn read(handles: &DirHandles, group: &CgroupPath, name: &str) -> io::Result<String> {
        let mut text = String::new();
        handles
            .open(group, name, OFlag::O_RDONLY)?
            .read_to_string(&mut text)?;
        Ok(text)
    }

    #[test]
    fn a_directory_removed_and_made_again_is_read_through_a_fresh_handle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = dir.path().join("kubepods/pod1");
        fs::create_dir_all(&pod).expect("mkdir");
        fs::write(pod.join("dmem.max"), "old\n").expect("write");
        let handles = DirHandles::new(dir.path().to_owned());
        let group = CgroupPath::new("/kubepods/pod1").expect("path");
        assert_eq!(read(&handles, &group, "dmem.max").expect("read"), "old\n");
        assert_eq!(handles.held(), 1);
        fs::remove_dir_all(&pod).expect("rmdir");
        assert_eq!(
            read(&handles, &group, "dmem.max").map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOENT))
        );
        fs::create_dir_all(&pod).expect("mkdir again");
        fs::write(pod.join("dmem.max"), "new\n").expect("write");
        assert_eq!(read(&handles, &group, "dmem.max").expect("read"), "new\n");
        assert!(handles.is_file(&group, "dmem.max"));
        assert!(!handles.is_file(&group, "dmem.low"));
        assert!(!handles.is_file(&CgroupPath::new("/gone").expect("path"), "dmem.max"));
    }

    #[test]
    fn a_file_absent_from_a_live_cgroup_does_not_reopen_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let make = |name: &str, max: &str| {
            let pod = dir.path().join(name);
            fs::create_dir(&pod).expect("mkdir");
            fs::write(pod.join(EVERY_CGROUP_HAS), "dmem\n").expect("write");
            fs::write(pod.join("dmem.max"), max).expect("write");
        };
        make("pod1", "held\n");
        let handles = DirHandles::new(dir.path().to_owned());
        let group = CgroupPath::new("/pod1").expect("path");
        assert_eq!(read(&handles, &group, "dmem.max").expect("read"), "held\n");
        // The held directory moves away and another takes its path: only a reopening by path
        // would see the newcomer.
        fs::rename(dir.path().join("pod1"), dir.path().join("moved")).expect("rename");
        make("pod1", "by path\n");
        assert_eq!(
            read(&handles, &group, "dmem.peak").map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOENT))
        );
        assert_eq!(read(&handles, &group, "dmem.max").expect("read"), "held\n");
    }

    #[test]
    fn handles_of_directories_no_longer_used_are_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handles = DirHandles::new(dir.path().to_owned());
        let groups: Vec<CgroupPath> = (0..4)
            .map(|i| {
                fs::create_dir(dir.path().join(format!("pod{i}"))).expect("mkdir");
                fs::write(dir.path().join(format!("pod{i}/dmem.max")), "x").expect("write");
                CgroupPath::new(&format!("/pod{i}")).expect("path")
            })
            .collect();
        for group in &groups {
            read(&handles, group, "dmem.max").expect("read");
        }
        assert_eq!(handles.held(), 4);
        // Rounds now read the first pod only: the others' handles go within two sweeps.
        for _ in 0..500 {
            read(&handles, &groups[0], "dmem.max").expect("read");
        }
        assert_eq!(handles.held(), 1);
    }
}
