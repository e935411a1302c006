//! The kubelet edge of the node agent: the device plugin (VRAM units as the extended resource
//! `kube-dmem.io/vram`), its registration and socket lifecycle, and the PodResources client.
//!
//! Layer: EDGE overall; the decisions live in the CORE submodules `inventory`, `allocate` and
//! `grants`, which take values and return values. Kubelet facts are in `docs/kubelet.md` §1–§3, §7.

pub mod allocate;
pub mod device_id;
pub mod devnodes;
pub mod grants;
pub mod inventory;
pub mod plugin;
pub mod podresources;
pub mod proto;
pub mod registration;
mod session;
pub mod uds;

/// Extended resource the plugin advertises (`kube-dmem.io/vram`), shared with the operator.
pub const RESOURCE_NAME: &str = kube_dmem_crds::VRAM_RESOURCE;
