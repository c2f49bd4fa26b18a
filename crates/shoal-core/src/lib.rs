//! Shoal's core vocabulary: channel keys and ids, block and manifest CIDs,
//! signed manifests, the channel-head state machine, directory entries and
//! the validated forms of every wire message.
//!
//! This crate is sans-IO: no async runtime, no sockets. The one exception is
//! [`keyfile`], which reads and writes PKCS#8 key files with std::fs because
//! getting their permissions right is part of the key's contract.
//!
//! Trust flows one way: peer bytes become trusted values only through the
//! decoders and verifiers here ([`SignedManifest::verify`] produces the only
//! [`VerifiedManifest`]), and later crates accept only the verified types.
#![deny(missing_docs)]

pub mod block;
pub mod block_peers;
pub mod chain;
pub mod channel;
pub mod cid;
pub mod directory;
pub mod exchange;
pub mod keyfile;
pub mod limits;
pub mod manifest;

pub use crate::{
    block::VerifiedBlock,
    chain::{ChainDecision, ChainState, Equivocation},
    channel::{ChannelId, ChannelIdError, ChannelKey},
    cid::{BlockCid, CidError, ManifestCid},
    directory::{DirectoryEntry, DirectoryError, SignedDirectoryEntry, VerifiedDirectoryEntry},
    manifest::{
        BlockRef, Manifest, ManifestError, Segment, SignedManifest, StreamInfo, VerifiedManifest, VerifyPolicy,
    },
};
