//! CORE: the kubelet-facing decisions, pure like the agent's [`crate::decide`]: the device table
//! the plugin advertises ([`inventory`]), which units a container gets ([`allocate`]), the
//! device-ID scheme ([`device_id`]), which pod holds how much VRAM where ([`grants`]), and the
//! `:authority` a plugin-registration client sends, made acceptable to our HTTP/2 server
//! ([`authority`]).

pub mod allocate;
pub mod authority;
pub mod device_id;
pub mod grants;
pub mod inventory;
