//! Channel keys and channel ids.
//!
//! A channel is an ed25519 key pair. Its id is the public key; the text form
//! is the IPNS-style name: a CIDv1 with the `libp2p-key` codec (0x72) over an
//! identity multihash of the protobuf-encoded libp2p public key, written in
//! base36 lower case (it starts with `k51`).

use std::{fmt, str::FromStr};

use cid::{
    multibase::{self, Base},
    multihash::Multihash,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Multicodec code for `libp2p-key`.
const LIBP2P_KEY_CODEC: u64 = 0x72;
/// Multihash code for `identity`.
const IDENTITY_HASH: u64 = 0x00;
/// libp2p's protobuf `PublicKey { Type: Ed25519 (1), Data: 32 bytes }` prefix:
/// field 1 varint 1, field 2 length 32.
const ED25519_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// Why a string or byte slice is not a channel id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelIdError {
    /// Not base36 multibase text.
    #[error(
        "'{0}' is not a channel id: expected base36 text starting with 'k51' (a CIDv1 libp2p-key name, like an IPNS name)"
    )]
    NotBase36(String),
    /// Decoded, but not a CIDv1 with the libp2p-key codec and an identity hash.
    #[error("'{0}' is not a channel id: {1}; expected a CIDv1 with the libp2p-key codec holding an ed25519 key")]
    WrongShape(String, &'static str),
    /// The 32 bytes are not a valid ed25519 public key.
    #[error("not a valid ed25519 public key (32 bytes on the curve expected)")]
    BadKey,
}

/// The public identity of a channel: an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId([u8; 32]);

impl ChannelId {
    /// Builds a channel id from raw public key bytes, checking that they are a
    /// valid ed25519 point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChannelIdError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| ChannelIdError::BadKey)?;
        VerifyingKey::from_bytes(&arr).map_err(|_| ChannelIdError::BadKey)?;
        Ok(Self(arr))
    }

    /// The raw 32-byte public key, as it appears on the wire.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The ed25519 verifying key. Cannot fail: construction checked the point.
    pub fn verifying_key(&self) -> VerifyingKey {
        // Invariant: every constructor validated these bytes as a curve point.
        VerifyingKey::from_bytes(&self.0).unwrap_or_else(|_| unreachable!("checked at construction"))
    }

    /// Verifies `signature` over `domain || message` with strict rules
    /// (rejects small-order keys and malleable signatures).
    pub fn verify(&self, domain: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        let sig = Signature::from_bytes(&sig);
        let mut buf = Vec::with_capacity(domain.len() + message.len());
        buf.extend_from_slice(domain);
        buf.extend_from_slice(message);
        self.verifying_key().verify_strict(&buf, &sig).is_ok()
    }

    /// The gossipsub topic that carries this channel's manifests.
    pub fn topic(&self) -> String {
        format!("shoal/v1/ch/{self}")
    }

    fn to_cid(self) -> cid::Cid {
        let mut key = Vec::with_capacity(36);
        key.extend_from_slice(&ED25519_PROTOBUF_PREFIX);
        key.extend_from_slice(&self.0);
        // Invariant: 36 bytes always fit the 64-byte multihash.
        let mh = Multihash::<64>::wrap(IDENTITY_HASH, &key)
            .unwrap_or_else(|_| unreachable!("36 bytes fit a 64-byte multihash"));
        cid::Cid::new_v1(LIBP2P_KEY_CODEC, mh)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(Base::Base36Lower, self.to_cid().to_bytes()))
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

impl FromStr for ChannelId {
    type Err = ChannelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(80).collect();
        // Only one stable multibase is accepted, so every channel has exactly
        // one text form (no case or base aliasing in URLs and logs).
        if !s.starts_with('k') {
            return Err(ChannelIdError::NotBase36(shown));
        }
        let (base, bytes) = multibase::decode(s).map_err(|_| ChannelIdError::NotBase36(shown.clone()))?;
        if base != Base::Base36Lower {
            return Err(ChannelIdError::NotBase36(shown));
        }
        let cid =
            cid::Cid::try_from(bytes.as_slice()).map_err(|_| ChannelIdError::WrongShape(shown.clone(), "not a CID"))?;
        if cid.version() != cid::Version::V1 {
            return Err(ChannelIdError::WrongShape(shown, "not CIDv1"));
        }
        if cid.to_bytes() != bytes {
            return Err(ChannelIdError::WrongShape(shown, "trailing or non-canonical bytes"));
        }
        if cid.codec() != LIBP2P_KEY_CODEC {
            return Err(ChannelIdError::WrongShape(shown, "codec is not libp2p-key (0x72)"));
        }
        if cid.hash().code() != IDENTITY_HASH {
            return Err(ChannelIdError::WrongShape(shown, "multihash is not identity"));
        }
        let key = cid.hash().digest();
        if key.len() != 36 || key[..4] != ED25519_PROTOBUF_PREFIX {
            return Err(ChannelIdError::WrongShape(shown, "key is not ed25519"));
        }
        Self::from_bytes(&key[4..])
    }
}

/// A channel's secret key: whoever holds it can publish on the channel.
pub struct ChannelKey(SigningKey);

impl ChannelKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let key = Self(SigningKey::from_bytes(&secret));
        secret.fill(0);
        key
    }

    /// A key from its 32 secret bytes (deterministic; for tests and import).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// The channel this key publishes.
    pub fn channel_id(&self) -> ChannelId {
        ChannelId(self.0.verifying_key().to_bytes())
    }

    /// Signs `domain || message`.
    pub fn sign(&self, domain: &[u8], message: &[u8]) -> [u8; 64] {
        let mut buf = Vec::with_capacity(domain.len() + message.len());
        buf.extend_from_slice(domain);
        buf.extend_from_slice(message);
        self.0.sign(&buf).to_bytes()
    }

    /// The PKCS#8 v2 PEM encoding (what key files hold).
    pub fn to_pkcs8_pem(&self) -> Result<String, ed25519_dalek::pkcs8::Error> {
        use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
        Ok(self.0.to_pkcs8_pem(LineEnding::LF)?.to_string())
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, ed25519_dalek::pkcs8::Error> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        Ok(Self(SigningKey::from_pkcs8_pem(pem)?))
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secret material.
        write!(f, "ChannelKey({})", self.channel_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_is_ipns_style() {
        let key = ChannelKey::from_secret_bytes(&[7; 32]);
        let id = key.channel_id();
        let text = id.to_string();
        assert!(text.starts_with("k51"), "{text}");
        assert_eq!(text.parse::<ChannelId>(), Ok(id));
    }

    #[test]
    fn rejects_other_bases_and_codecs() {
        let id = ChannelKey::from_secret_bytes(&[1; 32]).channel_id();
        let b32 = multibase::encode(Base::Base32Lower, id.to_cid().to_bytes());
        let err = b32.parse::<ChannelId>().unwrap_err();
        assert!(err.to_string().contains("expected base36"), "{err}");
        let raw = cid::Cid::new_v1(0x55, *id.to_cid().hash());
        let err = multibase::encode(Base::Base36Lower, raw.to_bytes()).parse::<ChannelId>().unwrap_err();
        assert!(matches!(err, ChannelIdError::WrongShape(_, m) if m.contains("libp2p-key")));
        assert!("k51garbage!".parse::<ChannelId>().is_err());
        assert!("".parse::<ChannelId>().is_err());
    }

    #[test]
    fn signatures_are_domain_separated() {
        let key = ChannelKey::from_secret_bytes(&[3; 32]);
        let id = key.channel_id();
        let sig = key.sign(b"a\0", b"msg");
        assert!(id.verify(b"a\0", b"msg", &sig));
        assert!(!id.verify(b"b\0", b"msg", &sig));
        assert!(!id.verify(b"a\0", b"msh", &sig));
        assert!(!id.verify(b"a\0", b"msg", &sig[..63]));
    }

    #[test]
    fn pem_round_trip() {
        let key = ChannelKey::generate();
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = ChannelKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.channel_id(), key.channel_id());
    }
}
