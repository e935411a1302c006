//! CORE: the DRA driver's decisions, pure: which device each dmem region becomes and what the
//! node's ResourceSlice says ([`slice`](mod@slice)), what a prepared claim grants to which pod
//! ([`claims`]), the CDI spec that hands a region's device nodes to a container ([`cdi`]), and
//! what the kubelet hears about each device's health ([`health`]).

pub mod cdi;
pub mod claims;
pub mod health;
pub mod slice;

/// The driver name, in ResourceSlices, allocation results and plugin registration. The chart's
/// DeviceClass of the same name selects it.
pub const DRIVER: &str = "vram.kube-dmem.io";

/// The capacity name of a region's memory in the slice and in `consumedCapacity`.
pub const MEMORY: &str = "memory";
