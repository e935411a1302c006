//! The kubelet edge of the node agent: the device plugin (VRAM units as the extended resource
//! `kube-dmem.io/vram`), its registration and socket lifecycle, and the PodResources client.
//!
//! Layer: EDGE; its decisions live in [`decide`] (inventory, allocate, device IDs, grants), which
//! take values and return values and are checked for purity by path. Kubelet facts are in `docs/kubelet.md` §1–§3, §7.

pub mod decide;
pub mod devnodes;
pub mod plugin;
pub mod podresources;
pub mod proto;
pub mod registration;
mod session;
pub mod uds;

/// Extended resource the plugin advertises (`kube-dmem.io/vram`), shared with the operator.
pub const RESOURCE_NAME: &str = kube_dmem_crds::VRAM_RESOURCE;
