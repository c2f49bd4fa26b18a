//! Prost types for shoal's wire formats, generated at build time from the
//! schemas in `proto/` (package `shoal.v1`).
//!
//! These are raw wire structs: nothing here is validated. Peer bytes become
//! trusted values only through `shoal-core`'s decoders and verifiers.
#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

/// Version 1 of the wire formats.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/shoal.v1.rs"));
}
