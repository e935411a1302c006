//! `SimFs`: the simulated kernel served as a filesystem that behaves like cgroupfs for the calls the
//! agent (and a shell) makes: cgroup directories, interface files, `mkdir`/`rmdir`.
//!
//! EDGE: translates FUSE requests into `SimKernel` calls and the simulator's errnos back, unchanged, so a
//! writer sees EINVAL, EAGAIN, ENOENT, EACCES, EBUSY exactly as from the kernel. Behaviour that matters
//! (`docs/testing.md` §4): files report size 0 and are opened with `FOPEN_DIRECT_IO`, so every read
//! reaches us; reads are served by offset; each `write(2)` is one request and one simulator write,
//! offset ignored as kernfs does; `O_NONBLOCK` of the writer's file reaches the simulator as `nonblock`;
//! `setattr` (the `O_TRUNC` of a shell's `>`) succeeds without changing anything.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo, OpenAccMode, OpenFlags};
use kube_dmem_sim::SimKernel;
use tracing::{debug, error};

use super::nodes::{Handles, Inodes, Node, ROOT_INO, child_path, slice_at};

/// Called once when the session ends (unmounted by us or from outside).
pub type OnEnd = Box<dyn FnOnce() + Send>;

/// Called with the cgroup, the file and the bytes of every write the simulator accepted, in the
/// server thread before the writer's `write(2)` returns: the moment the value is in force.
pub type OnWrite = Box<dyn Fn(&str, &str, &[u8]) + Send + Sync>;

/// The FUSE filesystem over a shared simulated kernel.
pub struct SimFs {
    kernel: Arc<Mutex<SimKernel>>,
    inodes: Mutex<Inodes>,
    handles: Mutex<Handles>,
    /// Owner of every node: the mount point's owner, as cgroupfs files belong to root.
    owner: (u32, u32),
    mounted_at: SystemTime,
    on_end: Mutex<Option<OnEnd>>,
    on_write: Option<OnWrite>,
}

fn sim_errno(e: kube_dmem_sim::Errno) -> Errno {
    Errno::from_i32(e.raw())
}

/// A poisoned lock means a handler panicked mid-update; answer EIO rather than trust the state.
fn locked<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Errno> {
    m.lock().map_err(|_| Errno::EIO)
}

impl SimFs {
    /// A filesystem over `kernel`, owned by `uid:gid`, calling `on_end` when the session ends.
    pub fn new(kernel: Arc<Mutex<SimKernel>>, owner: (u32, u32), on_end: OnEnd) -> Self {
        SimFs {
            kernel,
            inodes: Mutex::new(Inodes::default()),
            handles: Mutex::new(Handles::default()),
            owner,
            mounted_at: SystemTime::now(),
            on_end: Mutex::new(Some(on_end)),
            on_write: None,
        }
    }

    /// The same filesystem, calling `on_write` for every accepted write (a benchmark's witness
    /// of when a limit reached the kernel, at no cost to the writer).
    pub fn observing_writes(mut self, on_write: OnWrite) -> Self {
        self.on_write = Some(on_write);
        self
    }

    fn node(&self, ino: INodeNo) -> Result<Node, Errno> {
        locked(&self.inodes)?
            .node(ino.0)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    fn ino(&self, node: Node) -> Result<u64, Errno> {
        Ok(locked(&self.inodes)?.ino(node))
    }

    fn make_attr(&self, ino: u64, kind: FileType, perm: u16) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: self.mounted_at,
            mtime: self.mounted_at,
            ctime: self.mounted_at,
            crtime: self.mounted_at,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }

    /// Attributes of a node that must still exist: a removed cgroup or a file that vanished with
    /// its controller is ENOENT. Files with a write handler are 0644, the others 0444.
    fn attr(&self, kernel: &SimKernel, ino: u64, node: &Node) -> Result<FileAttr, Errno> {
        match node {
            Node::Dir(path) if kernel.exists(path) => {
                Ok(self.make_attr(ino, FileType::Directory, 0o755))
            }
            Node::Dir(_) => Err(Errno::ENOENT),
            Node::File(path, file) => {
                kernel.check_open(path, file, false).map_err(sim_errno)?;
                let perm = if kube_dmem_sim::has_write_handler(file) {
                    0o644
                } else {
                    0o444
                };
                Ok(self.make_attr(ino, FileType::RegularFile, perm))
            }
        }
    }

    pub(super) fn current_attr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        self.attr(&*locked(&self.kernel)?, ino.0, &node)
    }

    fn dir_path(&self, ino: INodeNo) -> Result<String, Errno> {
        match self.node(ino)? {
            Node::Dir(path) => Ok(path),
            Node::File(..) => Err(Errno::ENOTDIR),
        }
    }

    fn file_node(&self, ino: INodeNo) -> Result<(String, &'static str), Errno> {
        match self.node(ino)? {
            Node::File(path, file) => Ok((path, file)),
            Node::Dir(_) => Err(Errno::EISDIR),
        }
    }

    pub(super) fn do_lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let dir = self.dir_path(parent)?;
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let kernel = locked(&self.kernel)?;
        let child = child_path(&dir, name);
        let node = if kernel.exists(&child) {
            Node::Dir(child)
        } else {
            let files = kernel.files(&dir).map_err(sim_errno)?;
            let file = files
                .into_iter()
                .find(|f| *f == name)
                .ok_or(Errno::ENOENT)?;
            Node::File(dir, file)
        };
        let ino = self.ino(node.clone())?;
        self.attr(&kernel, ino, &node)
    }

    pub(super) fn do_mkdir(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let dir = self.dir_path(parent)?;
        let path = child_path(&dir, name.to_str().ok_or(Errno::EINVAL)?);
        let mut kernel = locked(&self.kernel)?;
        kernel.mkdir(&path).map_err(sim_errno)?;
        debug!(cgroup = %path, "Created cgroup");
        let node = Node::Dir(path);
        let ino = self.ino(node.clone())?;
        self.attr(&kernel, ino, &node)
    }

    pub(super) fn do_rmdir(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let dir = self.dir_path(parent)?;
        let path = child_path(&dir, name.to_str().ok_or(Errno::ENOENT)?);
        locked(&self.kernel)?.rmdir(&path).map_err(sim_errno)?;
        debug!(cgroup = %path, "Removed cgroup");
        Ok(())
    }

    pub(super) fn do_open(&self, ino: INodeNo, flags: OpenFlags) -> Result<u64, Errno> {
        let (path, file) = self.file_node(ino)?;
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        locked(&self.kernel)?
            .check_open(&path, file, write)
            .map_err(sim_errno)?;
        Ok(locked(&self.handles)?.open())
    }

    pub(super) fn do_read(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let (path, file) = self.file_node(ino)?;
        let mut handles = locked(&self.handles)?;
        if let Some(snapshot) = handles.snapshot(fh.0).filter(|_| offset != 0) {
            return Ok(slice_at(snapshot, offset, size).to_vec());
        }
        let content = locked(&self.kernel)?
            .read_file(&path, file)
            .map_err(sim_errno)?
            .into_bytes();
        let out = slice_at(&content, offset, size).to_vec();
        handles.set_snapshot(fh.0, content);
        Ok(out)
    }

    pub(super) fn do_write(
        &self,
        ino: INodeNo,
        data: &[u8],
        flags: OpenFlags,
    ) -> Result<u32, Errno> {
        let (path, file) = self.file_node(ino)?;
        // FUSE passes the file's current f_flags with every write, so fcntl(F_SETFL) is honoured too.
        let nonblock = flags.0 & libc::O_NONBLOCK != 0;
        let result = locked(&self.kernel)?.write_file(&path, file, data, nonblock);
        let text = String::from_utf8_lossy(data);
        match result {
            Ok(n) => {
                if let Some(on_write) = &self.on_write {
                    on_write(&path, file, data);
                }
                debug!(cgroup = %path, file, data = ?text, nonblock, "Write accepted");
                u32::try_from(n).map_err(|_| Errno::EIO)
            }
            Err(e) => {
                if e.errno().is_none() {
                    error!(cgroup = %path, file, data = ?text, error = &e as &dyn std::error::Error,
                        "Simulated kernel oops");
                } else {
                    debug!(cgroup = %path, file, data = ?text, error = %e, "Write rejected");
                }
                Err(Errno::from_i32(e.raw_errno()))
            }
        }
    }

    pub(super) fn do_readdir(&self, ino: INodeNo) -> Result<Vec<(u64, FileType, String)>, Errno> {
        let dir = self.dir_path(ino)?;
        let (files, children) = {
            let kernel = locked(&self.kernel)?;
            (
                kernel.files(&dir).map_err(sim_errno)?,
                kernel.children(&dir).map_err(sim_errno)?,
            )
        };
        let parent = match dir.rsplit_once('/') {
            Some(("", _)) | None => ROOT_INO,
            Some((up, _)) => self.ino(Node::Dir(up.to_owned()))?,
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, ".".to_owned()),
            (parent, FileType::Directory, "..".to_owned()),
        ];
        for file in files {
            let ino = self.ino(Node::File(dir.clone(), file))?;
            entries.push((ino, FileType::RegularFile, file.to_owned()));
        }
        for name in children {
            let ino = self.ino(Node::Dir(child_path(&dir, &name)))?;
            entries.push((ino, FileType::Directory, name));
        }
        Ok(entries)
    }

    /// Runs the end-of-session callback (once).
    pub(super) fn session_ended(&mut self) {
        if let Some(on_end) = self.on_end.get_mut().ok().and_then(Option::take) {
            on_end();
        }
    }

    /// Forgets an open file (release).
    pub(super) fn do_release(&self, fh: FileHandle) {
        if let Ok(mut handles) = locked(&self.handles) {
            handles.close(fh.0);
        }
    }
}
