//! Verified blocks: bytes together with the CID they were checked against.

use bytes::Bytes;

use crate::{BlockCid, CidError, limits::MAX_BLOCK_SIZE};

/// A block whose bytes hash to its CID. Only [`VerifiedBlock::verify`] and
/// [`VerifiedBlock::from_content`] make one, so a store or a peer never gets
/// unchecked bytes by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlock {
    cid: BlockCid,
    data: Bytes,
}

impl VerifiedBlock {
    /// Checks `data` against `cid` (and the block size bound).
    pub fn verify(cid: BlockCid, data: Bytes) -> Result<Self, CidError> {
        if data.len() > MAX_BLOCK_SIZE as usize {
            return Err(CidError::Malformed("block larger than MAX_BLOCK_SIZE"));
        }
        cid.verify(&data)?;
        Ok(Self { cid, data })
    }

    /// Hashes `data` to make its CID (for content this node produced).
    pub fn from_content(data: Bytes) -> Self {
        Self { cid: BlockCid::of(&data), data }
    }

    /// The CID.
    pub fn cid(&self) -> BlockCid {
        self.cid
    }

    /// The bytes (cheap to clone).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Takes the bytes.
    pub fn into_data(self) -> Bytes {
        self.data
    }
}
