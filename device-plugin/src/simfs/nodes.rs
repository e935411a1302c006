//! Inode and open-file tables of the FUSE simulator: a stable inode number per cgroup directory or
//! interface file, and a per-open snapshot of what was read.
//!
//! CORE: plain maps, no I/O. Inodes are never reused for another path (a removed and re-created cgroup
//! gets its old number back), so a stale kernel dentry can never point at a different file.

use std::collections::HashMap;

/// The inode number FUSE reserves for the mount's root directory.
pub const ROOT_INO: u64 = 1;

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// A cgroup directory, by hierarchy path (`/`, `/k/a`).
    Dir(String),
    /// An interface file: the cgroup's path and the file name.
    File(String, &'static str),
}

/// Path of the child `name` of the cgroup `parent`.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Inode numbers for nodes.
#[derive(Debug)]
pub struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_node: HashMap<Node, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        let root = Node::Dir("/".to_owned());
        Inodes {
            by_ino: HashMap::from([(ROOT_INO, root.clone())]),
            by_node: HashMap::from([(root, ROOT_INO)]),
            next: ROOT_INO + 1,
        }
    }
}

impl Inodes {
    /// The inode of `node`, allocating one on first sight.
    pub fn ino(&mut self, node: Node) -> u64 {
        if let Some(ino) = self.by_node.get(&node) {
            return *ino;
        }
        let ino = self.next;
        self.next += 1;
        self.by_ino.insert(ino, node.clone());
        self.by_node.insert(node, ino);
        ino
    }

    /// The node behind `ino`, if the kernel got it from us.
    pub fn node(&self, ino: u64) -> Option<&Node> {
        self.by_ino.get(&ino)
    }
}

/// Open files: the content snapshot taken by the read at offset 0, so a reader that needs several
/// `read` calls sees one consistent text, as with the kernel's seq_file.
#[derive(Debug, Default)]
pub struct Handles {
    open: HashMap<u64, Option<Vec<u8>>>,
    next: u64,
}

impl Handles {
    /// Registers an open file and returns its handle.
    pub fn open(&mut self) -> u64 {
        self.next += 1;
        self.open.insert(self.next, None);
        self.next
    }

    /// The snapshot of `fh`, if a read at offset 0 took one.
    pub fn snapshot(&self, fh: u64) -> Option<&[u8]> {
        self.open.get(&fh).and_then(|s| s.as_deref())
    }

    /// Stores the content read for `fh`.
    pub fn set_snapshot(&mut self, fh: u64, content: Vec<u8>) {
        if let Some(slot) = self.open.get_mut(&fh) {
            *slot = Some(content);
        }
    }

    /// Forgets `fh` (release).
    pub fn close(&mut self, fh: u64) {
        self.open.remove(&fh);
    }
}

/// The part of `content` a read of `size` bytes at `offset` returns; empty at or past the end.
pub fn slice_at(content: &[u8], offset: u64, size: u32) -> &[u8] {
    let len = content.len();
    let start = usize::try_from(offset).map_or(len, |o| o.min(len));
    let end = usize::try_from(size).map_or(len, |s| start.saturating_add(s).min(len));
    &content[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_are_stable() {
        let mut t = Inodes::default();
        assert_eq!(t.ino(Node::Dir("/".into())), ROOT_INO);
        let a = t.ino(Node::Dir("/a".into()));
        let f = t.ino(Node::File("/a".into(), "dmem.max"));
        assert_ne!(a, f);
        assert_eq!(t.ino(Node::Dir("/a".into())), a);
        assert_eq!(t.node(f), Some(&Node::File("/a".into(), "dmem.max")));
        assert_eq!(t.node(999), None);
        assert_eq!(child_path("/", "a"), "/a");
        assert_eq!(child_path("/a", "b"), "/a/b");
    }

    #[test]
    fn reads_by_offset() {
        assert_eq!(slice_at(b"hello", 0, 4096), b"hello");
        assert_eq!(slice_at(b"hello", 2, 2), b"ll");
        assert_eq!(slice_at(b"hello", 5, 10), b"");
        assert_eq!(slice_at(b"hello", u64::MAX, u32::MAX), b"");
        let mut h = Handles::default();
        let fh = h.open();
        assert_eq!(h.snapshot(fh), None);
        h.set_snapshot(fh, b"x".to_vec());
        assert_eq!(h.snapshot(fh), Some(&b"x"[..]));
        h.close(fh);
        assert_eq!(h.snapshot(fh), None);
    }
}
