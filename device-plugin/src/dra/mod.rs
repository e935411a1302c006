//! The DRA driver of the node agent (`docs/dra.md`): every dmem region becomes a device in this
//! node's ResourceSlice, with its memory as a consumable capacity the scheduler hands out in
//! slices, and every claim the kubelet prepares becomes a grant of the pods it is reserved for,
//! which the agent's round writes into `dmem.max` and reads back before the kubelet may start
//! their containers.
//!
//! Layer: EDGE, with the decisions in [`decide`] (CORE). Parts: [`publish`] (the ResourceSlice and
//! the CDI spec), [`plugin`] (sockets and kubelet registration), [`server`] (the gRPC service),
//! [`health`] (the device health stream),
//! [`prepare`] (the agent's driver), [`store`] (prepared claims and their checkpoint),
//! [`metrics`].

pub mod decide;
pub mod health;
pub mod metrics;
pub mod plugin;
pub mod prepare;
pub mod publish;
pub mod server;
pub mod store;

use std::path::PathBuf;

pub use decide::DRIVER;
pub use decide::slice::RequestPolicy;

/// Settings of the driver in `run` mode.
#[derive(Clone, Debug)]
pub struct DraConfig {
    /// Request policy of every device's memory.
    pub policy: RequestPolicy,
    /// The kubelet's `plugins_registry` directory.
    pub registry_dir: PathBuf,
    /// Our directory under the kubelet's `plugins` directory (socket, checkpoint).
    pub plugin_dir: PathBuf,
    /// Where CDI specs go.
    pub cdi_dir: PathBuf,
    /// The node's sysfs, to read the kernel driver of each GPU.
    pub sysfs: PathBuf,
}

/// Regions `(name, bytes)` read by the latest good round; `None` before the first.
pub type Regions = Option<Vec<(String, u64)>>;

/// The checkpoint file's name in [`DraConfig::plugin_dir`].
pub const CHECKPOINT: &str = "claims.json";
