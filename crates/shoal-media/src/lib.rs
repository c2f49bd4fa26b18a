//! Everything in shoal that knows what video is. The relay path (`shoal-net`,
//! `shoal-store`) moves opaque segments; this crate turns live MPEG-TS into
//! those segments and turns stored segments back into HLS for players.
//!
//! Sans-IO: no async runtime, no sockets, no files. Bytes go in, segments and
//! playlists come out, so every rule here is unit-tested without a network.
#![deny(missing_docs)]

pub mod hls;
pub mod segment;
pub mod ts;
