//! `kubectl dmem`: a kubectl plugin for cluster operators of kube-dmem. It reads, never writes:
//! pods, nodes, DmemQuotas and events from the API server, and each node agent's `/metrics`
//! through the API server's pod proxy, then shows per pod and region what the agents see (usage,
//! peak, limits, pressure) or explains one pod's limits with the same rules the agents apply.
//!
//! - CORE: [`args`] (command line), [`promtext`] (Prometheus text parser), [`snapshot`] (an agent's
//!   metrics as values), [`agents`] (which agent pod serves which node), [`podinfo`] (units,
//!   conditions), [`top`], [`why`] and [`whytext`] (the joins and their rendering), [`render`]
//!   (tables, sizes, JSON and YAML);
//! - EDGE: [`cluster`] (every API call) and [`app`] (runs a command: edge reads, core decides).

pub mod agents;
pub mod app;
pub mod args;
pub mod cluster;
pub mod podinfo;
pub mod promtext;
pub mod render;
pub mod snapshot;
pub mod top;
pub mod why;
pub mod whytext;

#[cfg(test)]
mod fixtures;
