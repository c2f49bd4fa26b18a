//! Size bounds shared by every decoder of peer bytes. Each one is a named
//! constant with the reason for its size; docs/protocol.md repeats them, and
//! a second implementation must enforce the same ones.

/// Largest encoded `SignedManifest` accepted from anyone. A 1 s segment at
/// 20 Mbit/s is ~2.5 MB = 10 blocks of 256 KiB; even 1024 blocks at ~40 bytes
/// per `BlockRef` fit in 48 KiB, so 64 KiB leaves room for stream info while
/// keeping gossip messages small.
pub const MAX_SIGNED_MANIFEST_BYTES: usize = 64 * 1024;

/// Most blocks one segment may have (see [`MAX_SIGNED_MANIFEST_BYTES`]).
pub const MAX_BLOCKS_PER_SEGMENT: usize = 1024;

/// Largest block anyone may announce or send. Blocks default to 256 KiB;
/// 1 MiB caps what one want can make a peer buffer.
pub const MAX_BLOCK_SIZE: u32 = 1024 * 1024;

/// Longest free-text field (title, codec names, description) in bytes.
pub const MAX_TEXT_BYTES: usize = 512;

/// Most entries in one exchange request (wants + cancels + haves). A peer
/// asking for more than a few segments' worth at once is flooding.
pub const MAX_EXCHANGE_ENTRIES: usize = 512;

/// Most peers one exchange response may name as `redirects`: a publisher
/// names its seeds, and `origin_copies` is a handful at most.
pub const MAX_REDIRECTS: usize = 4;

/// Longest peer id in a redirect, in bytes: a multihash of at most 64 bytes
/// of digest (an identity-hashed ed25519 key is 38 bytes).
pub const MAX_PEER_ID_BYTES: usize = 66;

/// Largest exchange response frame: a few blocks per response keeps head-of-
/// line blocking short while amortising the request round trip.
pub const MAX_EXCHANGE_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Largest exchange request frame (512 entries of ~40 bytes, with slack).
pub const MAX_EXCHANGE_REQUEST_BYTES: usize = 64 * 1024;

/// Most manifests one head response may carry.
pub const MAX_HEAD_MANIFESTS: u32 = 32;

/// Largest head response frame.
pub const MAX_HEAD_RESPONSE_BYTES: usize = MAX_HEAD_MANIFESTS as usize * MAX_SIGNED_MANIFEST_BYTES;

/// Largest encoded directory entry.
pub const MAX_DIRECTORY_ENTRY_BYTES: usize = 8 * 1024;

/// Most renditions a directory entry may list.
pub const MAX_RENDITIONS: usize = 16;

/// Longest allowed hold on a want: a want held longer than a few segment
/// durations is for a block that is no longer live.
pub const MAX_HOLD_MS: u32 = 10_000;
