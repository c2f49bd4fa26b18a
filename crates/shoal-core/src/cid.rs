//! Content identifiers for blocks and manifests.
//!
//! Both are CIDv1 with the `raw` codec (0x55) and a sha2-256 multihash, so any
//! IPFS tool can check them. A [`BlockCid`] names the bytes of one block; a
//! [`ManifestCid`] names the exact signed `Manifest` bytes (not the envelope
//! around them, so re-wrapping a signature cannot change a chain link).

use std::fmt;

use cid::multibase::Base;
use multihash_codetable::{Code, MultihashDigest};

/// Multicodec `raw`.
const RAW_CODEC: u64 = 0x55;
/// Multihash code for sha2-256.
const SHA2_256: u64 = 0x12;

/// Why bytes are not an acceptable CID, or do not match one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidError {
    /// The bytes do not parse as a canonical CID.
    #[error("malformed CID: {0}")]
    Malformed(&'static str),
    /// A CID of another kind (version, codec or hash) than shoal uses.
    #[error("unsupported CID: {0}; shoal uses CIDv1, raw codec (0x55), sha2-256")]
    Unsupported(&'static str),
    /// The bytes hash to something else.
    #[error("content does not match CID {expected} (hashes to {actual})")]
    Mismatch {
        /// The CID the content claimed to have.
        expected: String,
        /// The CID the content actually has.
        actual: String,
    },
}

/// Parses and checks binary CID bytes: canonical CIDv1, raw, sha2-256.
fn parse_sha256_raw(bytes: &[u8]) -> Result<[u8; 32], CidError> {
    // Fast path on the fixed layout: 0x01 (v1), 0x55 (raw), 0x12 (sha2-256),
    // 0x20 (32 bytes), digest. All four prefix bytes are single-byte varints,
    // so this is exactly the canonical encoding and nothing else.
    if bytes.len() != 36 {
        return Err(if bytes.is_empty() {
            CidError::Malformed("empty")
        } else {
            CidError::Malformed("wrong length for a CIDv1 raw sha2-256 (36 bytes)")
        });
    }
    if bytes[0] != 0x01 {
        return Err(CidError::Unsupported("not CIDv1"));
    }
    if u64::from(bytes[1]) != RAW_CODEC {
        return Err(CidError::Unsupported("codec is not raw"));
    }
    if u64::from(bytes[2]) != SHA2_256 || bytes[3] != 32 {
        return Err(CidError::Unsupported("hash is not sha2-256"));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&bytes[4..]);
    Ok(digest)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mh = Code::Sha2_256.digest(bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(mh.digest());
    out
}

fn to_cid(digest: &[u8; 32]) -> cid::Cid {
    // Invariant: 32 bytes always fit a 64-byte multihash.
    let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, digest).unwrap_or_else(|_| unreachable!("32 bytes fit"));
    cid::Cid::new_v1(RAW_CODEC, mh)
}

macro_rules! sha256_cid {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Length of the binary form.
            pub const BINARY_LEN: usize = 36;

            /// The CID of `bytes` (hashes them).
            pub fn of(bytes: &[u8]) -> Self {
                Self(sha256(bytes))
            }

            /// Parses the binary form, rejecting anything but a canonical
            /// CIDv1 raw sha2-256.
            pub fn from_bytes(bytes: &[u8]) -> Result<Self, CidError> {
                parse_sha256_raw(bytes).map(Self)
            }

            /// The binary form (36 bytes), as on the wire and in the store.
            pub fn to_bytes(&self) -> [u8; 36] {
                let mut out = [0u8; 36];
                out[..4].copy_from_slice(&[0x01, RAW_CODEC as u8, SHA2_256 as u8, 32]);
                out[4..].copy_from_slice(&self.0);
                out
            }

            /// The raw sha2-256 digest.
            pub fn digest(&self) -> &[u8; 32] {
                &self.0
            }

            /// Checks that `bytes` hash to this CID.
            pub fn verify(&self, bytes: &[u8]) -> Result<(), CidError> {
                let actual = Self::of(bytes);
                if actual == *self {
                    Ok(())
                } else {
                    Err(CidError::Mismatch { expected: self.to_string(), actual: actual.to_string() })
                }
            }
        }

        impl fmt::Display for $name {
            /// Base32 lower case (`bafkrei…`), the IPFS default text form.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match to_cid(&self.0).to_string_of_base(Base::Base32Lower) {
                    Ok(s) => f.write_str(&s),
                    Err(_) => Err(fmt::Error),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = CidError;

            fn from_str(s: &str) -> Result<Self, CidError> {
                let cid = cid::Cid::try_from(s).map_err(|_| CidError::Malformed("not CID text"))?;
                Self::from_bytes(&cid.to_bytes())
            }
        }
    };
}

sha256_cid!(
    /// The CID of one block of segment data.
    BlockCid
);
sha256_cid!(
    /// The CID of one manifest: sha2-256 over the exact signed `Manifest` bytes.
    ManifestCid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_cid_matches_ipfs_text_form() {
        // `echo -n hello | ipfs add --raw-leaves --cid-version 1` gives this CID.
        let cid = BlockCid::of(b"hello");
        assert_eq!(cid.to_string(), "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq");
        assert_eq!(cid.to_string().parse::<BlockCid>(), Ok(cid));
        assert_eq!(BlockCid::from_bytes(&cid.to_bytes()), Ok(cid));
    }

    #[test]
    fn verify_detects_any_change() {
        let cid = BlockCid::of(b"segment bytes");
        assert!(cid.verify(b"segment bytes").is_ok());
        assert!(matches!(cid.verify(b"segment bytez"), Err(CidError::Mismatch { .. })));
    }

    #[test]
    fn rejects_other_cids() {
        let mut bytes = BlockCid::of(b"x").to_bytes();
        bytes[1] = 0x70; // dag-pb
        assert!(matches!(BlockCid::from_bytes(&bytes), Err(CidError::Unsupported(_))));
        assert!(BlockCid::from_bytes(&bytes[..35]).is_err());
        assert!(BlockCid::from_bytes(&[]).is_err());
        let mut long = BlockCid::of(b"x").to_bytes().to_vec();
        long.push(0);
        assert!(BlockCid::from_bytes(&long).is_err());
    }
}
