//! CORE: the pure parts of the NRI plugin: the byte framing of the NRI socket ([`frame`]: the
//! multiplexer's frames and ttrpc's messages, decoded from partial reads) and what the plugin
//! answers ([`events`]: its subscription, the pod a request names, its answer deadline).

pub mod events;
pub mod frame;
