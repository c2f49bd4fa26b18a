//! Multi-node tests of shoal-net. One binary (one link step) with one
//! harness; each module is one area of the test list. A test
//! crate's root resolves modules next to itself, hence the `path`s.

// Test helpers outside `#[test]` functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "net/harness.rs"]
mod harness;

#[path = "net/announce.rs"]
mod announce;
#[path = "net/budget.rs"]
mod budget;
#[path = "net/deny.rs"]
mod deny;
#[path = "net/exchange.rs"]
mod exchange;
#[path = "net/head.rs"]
mod head;
#[path = "net/liveness.rs"]
mod liveness;
#[path = "net/providers.rs"]
mod providers;
#[path = "net/swarm.rs"]
mod swarm;
