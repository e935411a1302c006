//! EDGE: finds the device nodes of a GPU so `Allocate` can hand them to the container.
//!
//! The node's `/dev/dri/by-path/pci-<bdf>-card` and `pci-<bdf>-render` symlinks point at the GPU's
//! `cardN` and `renderDN` nodes. The lookup reads them under a configurable root (the node's `/dev`
//! as mounted into the agent, or a tempdir in tests) and reports paths as the node sees them
//! (`/dev/dri/card1`), because the container runtime on the node resolves them. A missing link (every
//! simulated region) simply yields no device node.

use std::path::{Component, Path, PathBuf};

use super::proto::v1beta1::DeviceSpec;

/// The node's device directory as the container runtime sees it.
const NODE_DEV: &str = "/dev";

/// cgroup device permissions for GPU nodes: read and write, no mknod.
const PERMISSIONS: &str = "rw";

/// Looks up the device nodes of the GPU at a PCI address.
pub trait DeviceNodes: Send + Sync {
    /// Device nodes for the GPU at `bdf` (e.g. `0000:03:00.0`), with node paths; empty if none.
    fn for_pci(&self, bdf: &str) -> Vec<DeviceSpec>;
}

/// Reads `dri/by-path` links under a directory that holds the node's `/dev`.
#[derive(Debug, Clone)]
pub struct DevDir {
    root: PathBuf,
}

impl DevDir {
    /// Looks under `root`, the mount point of the node's `/dev` (`/dev` itself when not remapped).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Resolves one `by-path` link to a path relative to the dev root, if it stays inside it.
    fn resolve(&self, link_name: &str) -> Option<PathBuf> {
        let by_path = Path::new("dri").join("by-path");
        let target = std::fs::read_link(self.root.join(&by_path).join(link_name)).ok()?;
        let relative = match target.strip_prefix(NODE_DEV) {
            Ok(inside_dev) => inside_dev.to_path_buf(),
            Err(_) if target.is_absolute() => return None,
            Err(_) => by_path.join(target),
        };
        let mut normal = PathBuf::new();
        for part in relative.components() {
            match part {
                Component::Normal(p) => normal.push(p),
                Component::ParentDir if normal.pop() => {}
                Component::CurDir => {}
                _ => return None,
            }
        }
        self.root
            .join(&normal)
            .symlink_metadata()
            .ok()
            .map(|_| normal)
    }
}

impl Default for DevDir {
    fn default() -> Self {
        Self::new(NODE_DEV)
    }
}

impl DeviceNodes for DevDir {
    fn for_pci(&self, bdf: &str) -> Vec<DeviceSpec> {
        ["card", "render"]
            .into_iter()
            .filter_map(|kind| self.resolve(&format!("pci-{bdf}-{kind}")))
            .map(|relative| {
                let path = Path::new(NODE_DEV)
                    .join(relative)
                    .to_string_lossy()
                    .into_owned();
                DeviceSpec {
                    container_path: path.clone(),
                    host_path: path,
                    permissions: PERMISSIONS.into(),
                }
            })
            .collect()
    }
}

/// No device nodes at all: for the simulator backend, where regions are not real GPUs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDeviceNodes;

impl DeviceNodes for NoDeviceNodes {
    fn for_pci(&self, _bdf: &str) -> Vec<DeviceSpec> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const BDF: &str = "0000:03:00.0";

    fn dev_with_links() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let dri = dir.path().join("dri");
        std::fs::create_dir_all(dri.join("by-path")).unwrap();
        std::fs::write(dri.join("card1"), "").unwrap();
        std::fs::write(dri.join("renderD128"), "").unwrap();
        symlink(
            "../card1",
            dri.join("by-path").join(format!("pci-{BDF}-card")),
        )
        .unwrap();
        symlink(
            "/dev/dri/renderD128",
            dri.join("by-path").join(format!("pci-{BDF}-render")),
        )
        .unwrap();
        dir
    }

    #[test]
    fn resolves_relative_and_absolute_links_to_node_paths() {
        let dir = dev_with_links();
        let specs = DevDir::new(dir.path()).for_pci(BDF);
        let paths: Vec<(&str, &str, &str)> = specs
            .iter()
            .map(|s| {
                (
                    s.container_path.as_str(),
                    s.host_path.as_str(),
                    s.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/dev/dri/card1", "/dev/dri/card1", "rw"),
                ("/dev/dri/renderD128", "/dev/dri/renderD128", "rw")
            ]
        );
    }

    #[test]
    fn missing_links_or_targets_give_nothing() {
        let dir = dev_with_links();
        assert!(DevDir::new(dir.path()).for_pci("0000:04:00.0").is_empty());
        std::fs::remove_file(dir.path().join("dri").join("card1")).unwrap();
        assert_eq!(DevDir::new(dir.path()).for_pci(BDF).len(), 1);
        assert!(DevDir::new(dir.path().join("nope")).for_pci(BDF).is_empty());
        assert!(NoDeviceNodes.for_pci(BDF).is_empty());
    }

    #[test]
    fn links_escaping_the_root_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let by_path = dir.path().join("dri").join("by-path");
        std::fs::create_dir_all(&by_path).unwrap();
        symlink(
            "../../../etc/passwd",
            by_path.join(format!("pci-{BDF}-card")),
        )
        .unwrap();
        symlink("/etc/passwd", by_path.join(format!("pci-{BDF}-render"))).unwrap();
        assert!(DevDir::new(dir.path()).for_pci(BDF).is_empty());
    }
}
