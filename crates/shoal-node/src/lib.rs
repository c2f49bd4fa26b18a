//! The shoal daemon's orchestration: verify → store → schedule fetches →
//! serve.
//!
//! - [`node::Node`] starts everything and shuts it down in order.
//! - The engine (`node/engine.rs`) owns each channel's chain state and
//!   [`scheduler::Scheduler`], and turns network events into stored segments.
//! - [`api`] is the local HTTP API (token-protected writes).
//! - [`config::NodeConfig`] is the one configuration struct.
#![deny(missing_docs)]

pub mod api;
pub mod config;
pub mod identity;
pub mod keystore;
pub mod metrics;
pub mod node;
pub mod scheduler;
pub mod source;

pub use crate::{
    config::{NodeArgs, NodeConfig},
    node::{Node, NodeError, NodeHandle, PublishSegment, SegmentEvent},
};
