//! CORE: the kubelet-facing decisions, pure like the agent's [`crate::decide`]: the device table
//! the plugin advertises ([`inventory`]), which units a container gets ([`allocate`]), the
//! device-ID scheme ([`device_id`]) and which pod holds how much VRAM where ([`grants`]).

pub mod allocate;
pub mod device_id;
pub mod grants;
pub mod inventory;
