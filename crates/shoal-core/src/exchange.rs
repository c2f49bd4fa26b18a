//! Validated forms of the exchange (`/shoal/xchg/1.0.0`) and head
//! (`/shoal/head/1.0.0`) messages. Decoders enforce the limits in
//! [`crate::limits`] before allocating per-entry state, and every block in a
//! response is checked against its CID here, before anything else sees it.

use bytes::Bytes;
use prost::Message;
use shoal_proto::v1 as pb;

use crate::{
    BlockCid, ChannelId, ManifestError, SignedManifest,
    block::VerifiedBlock,
    limits::{
        MAX_EXCHANGE_ENTRIES, MAX_EXCHANGE_REQUEST_BYTES, MAX_EXCHANGE_RESPONSE_BYTES, MAX_HEAD_MANIFESTS,
        MAX_HEAD_RESPONSE_BYTES, MAX_HOLD_MS, MAX_PEER_ID_BYTES, MAX_REDIRECTS,
    },
};

/// Multihash codes a libp2p peer id may use: identity (small keys inline,
/// as ed25519) and sha2-256 (larger keys hashed).
const PEER_ID_HASHES: [u64; 2] = [0x00, 0x12];

/// Why a wire message was refused. Any of these from a peer is a protocol
/// violation and costs the peer score.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Frame over its size limit.
    #[error("{what} is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many entries.
    #[error("{what} has {count} entries; the limit is {limit}")]
    TooMany {
        /// Which message.
        what: &'static str,
        /// Entry count.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Not valid protobuf, or a field that is not what it must be.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn malformed(what: &'static str, reason: impl ToString) -> WireError {
    WireError::Malformed { what, reason: reason.to_string() }
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<(), WireError> {
    if size > limit { Err(WireError::TooLarge { what, size, limit }) } else { Ok(()) }
}

fn cids(what: &'static str, raw: &[Bytes]) -> Result<Vec<BlockCid>, WireError> {
    raw.iter().map(|b| BlockCid::from_bytes(b).map_err(|e| malformed(what, e))).collect()
}

/// What a want asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantKind {
    /// The block itself.
    Block,
    /// Only whether the peer has it.
    Have,
}

/// One want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The block.
    pub cid: BlockCid,
    /// Block or presence.
    pub kind: WantKind,
    /// Answer dont-have rather than nothing.
    pub send_dont_have: bool,
    /// How long the peer may hold the want for a block it expects (ms, capped
    /// at [`MAX_HOLD_MS`]); 0 answers at once.
    pub hold_ms: u32,
}

/// A validated exchange request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// Want-block and want-have entries.
    pub wants: Vec<Want>,
    /// Held wants to drop.
    pub cancels: Vec<BlockCid>,
    /// Blocks the sender now holds.
    pub haves: Vec<BlockCid>,
    /// The `haves` are blocks the sender just published and will serve the
    /// receiver first (the receiver is one of its seeds).
    pub first_copies: bool,
}

impl ExchangeRequest {
    /// Decodes peer bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "exchange request";
        check_size(WHAT, bytes.len(), MAX_EXCHANGE_REQUEST_BYTES)?;
        let m = pb::ExchangeRequest::decode(bytes).map_err(|e| malformed(WHAT, e))?;
        let count = m.wants.len() + m.cancels.len() + m.haves.len();
        if count > MAX_EXCHANGE_ENTRIES {
            return Err(WireError::TooMany { what: WHAT, count, limit: MAX_EXCHANGE_ENTRIES });
        }
        let mut wants = Vec::with_capacity(m.wants.len());
        for w in &m.wants {
            let kind = match pb::WantType::try_from(w.r#type) {
                Ok(pb::WantType::Block) => WantKind::Block,
                Ok(pb::WantType::Have) => WantKind::Have,
                Err(_) => return Err(malformed(WHAT, format!("unknown want type {}", w.r#type))),
            };
            wants.push(Want {
                cid: BlockCid::from_bytes(&w.cid).map_err(|e| malformed(WHAT, e))?,
                kind,
                send_dont_have: w.send_dont_have,
                hold_ms: w.hold_ms.min(MAX_HOLD_MS),
            });
        }
        Ok(Self { wants, cancels: cids(WHAT, &m.cancels)?, haves: cids(WHAT, &m.haves)?, first_copies: m.first_copies })
    }

    /// Wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        let b = |c: &BlockCid| Bytes::copy_from_slice(&c.to_bytes());
        pb::ExchangeRequest {
            wants: self
                .wants
                .iter()
                .map(|w| pb::Want {
                    cid: b(&w.cid),
                    r#type: match w.kind {
                        WantKind::Block => pb::WantType::Block as i32,
                        WantKind::Have => pb::WantType::Have as i32,
                    },
                    send_dont_have: w.send_dont_have,
                    hold_ms: w.hold_ms,
                })
                .collect(),
            cancels: self.cancels.iter().map(b).collect(),
            haves: self.haves.iter().map(b).collect(),
            first_copies: self.first_copies,
        }
        .encode_to_vec()
    }
}

/// An exchange response. Decoding verifies every block: good ones land in
/// `blocks`, ones whose bytes do not match their CID in `bad_blocks`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExchangeResponse {
    /// Verified blocks.
    pub blocks: Vec<VerifiedBlock>,
    /// Answers to want-have.
    pub haves: Vec<BlockCid>,
    /// Blocks the peer does not have.
    pub dont_haves: Vec<BlockCid>,
    /// Peers (binary libp2p peer ids) that hold or are being given the
    /// `dont_haves`: a publisher's first-copies gate names its seeds. At most
    /// [`MAX_REDIRECTS`]; each is checked to be a well-formed peer-id
    /// multihash, not that the peer exists.
    pub redirects: Vec<Bytes>,
    /// CIDs whose bytes did not verify (never stored; penalise the sender).
    pub bad_blocks: Vec<BlockCid>,
}

/// Checks that `raw` is shaped like a libp2p peer id: one whole multihash,
/// identity or sha2-256, at most [`MAX_PEER_ID_BYTES`].
fn check_peer_id(what: &'static str, raw: &[u8]) -> Result<(), WireError> {
    if raw.len() > MAX_PEER_ID_BYTES {
        return Err(malformed(
            what,
            format!("a redirect is {} bytes; a peer id is at most {MAX_PEER_ID_BYTES}", raw.len()),
        ));
    }
    let mut rest = raw;
    let mh = multihash::Multihash::<64>::read(&mut rest).map_err(|e| malformed(what, format!("a redirect: {e}")))?;
    if !rest.is_empty() || !PEER_ID_HASHES.contains(&mh.code()) {
        return Err(malformed(what, "a redirect is not a peer id (an identity or sha2-256 multihash)"));
    }
    Ok(())
}

impl ExchangeResponse {
    /// Decodes and verifies peer bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "exchange response";
        check_size(WHAT, bytes.len(), MAX_EXCHANGE_RESPONSE_BYTES)?;
        let m = pb::ExchangeResponse::decode(bytes).map_err(|e| malformed(WHAT, e))?;
        let count = m.blocks.len() + m.haves.len() + m.dont_haves.len();
        if count > MAX_EXCHANGE_ENTRIES {
            return Err(WireError::TooMany { what: WHAT, count, limit: MAX_EXCHANGE_ENTRIES });
        }
        if m.redirects.len() > MAX_REDIRECTS {
            return Err(WireError::TooMany {
                what: "exchange response redirects",
                count: m.redirects.len(),
                limit: MAX_REDIRECTS,
            });
        }
        for r in &m.redirects {
            check_peer_id(WHAT, r)?;
        }
        let mut out = Self {
            haves: cids(WHAT, &m.haves)?,
            dont_haves: cids(WHAT, &m.dont_haves)?,
            redirects: m.redirects,
            ..Self::default()
        };
        for b in m.blocks {
            let cid = BlockCid::from_bytes(&b.cid).map_err(|e| malformed(WHAT, e))?;
            match VerifiedBlock::verify(cid, b.data) {
                Ok(v) => out.blocks.push(v),
                Err(_) => out.bad_blocks.push(cid),
            }
        }
        Ok(out)
    }

    /// Wire encoding (bad_blocks are never sent).
    pub fn encode(&self) -> Vec<u8> {
        let b = |c: &BlockCid| Bytes::copy_from_slice(&c.to_bytes());
        pb::ExchangeResponse {
            blocks: self.blocks.iter().map(|v| pb::Block { cid: b(&v.cid()), data: v.data().clone() }).collect(),
            haves: self.haves.iter().map(b).collect(),
            dont_haves: self.dont_haves.iter().map(b).collect(),
            redirects: self.redirects.clone(),
        }
        .encode_to_vec()
    }
}

/// A validated head request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadRequest {
    /// The channel.
    pub channel: ChannelId,
    /// How many manifests, clamped to 1..=[`MAX_HEAD_MANIFESTS`].
    pub max: u32,
}

impl HeadRequest {
    /// Decodes peer bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "head request";
        check_size(WHAT, bytes.len(), 256)?;
        let m = pb::HeadRequest::decode(bytes).map_err(|e| malformed(WHAT, e))?;
        let channel = ChannelId::from_bytes(&m.channel).map_err(|e| malformed(WHAT, e))?;
        Ok(Self { channel, max: m.max.clamp(1, MAX_HEAD_MANIFESTS) })
    }

    /// Wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        pb::HeadRequest { channel: Bytes::copy_from_slice(self.channel.as_bytes()), max: self.max }.encode_to_vec()
    }
}

/// A decoded head response: signed manifests, oldest first, not yet verified
/// (verify each with [`SignedManifest::verify_for`] against the channel asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadResponse {
    /// The manifests.
    pub manifests: Vec<SignedManifest>,
}

impl HeadResponse {
    /// Decodes peer bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        const WHAT: &str = "head response";
        check_size(WHAT, bytes.len(), MAX_HEAD_RESPONSE_BYTES)?;
        let m = pb::HeadResponse::decode(bytes).map_err(|e| malformed(WHAT, e))?;
        if m.manifests.len() > MAX_HEAD_MANIFESTS as usize {
            return Err(WireError::TooMany {
                what: WHAT,
                count: m.manifests.len(),
                limit: MAX_HEAD_MANIFESTS as usize,
            });
        }
        let manifests = m
            .manifests
            .into_iter()
            .map(SignedManifest::from_proto)
            .collect::<Result<Vec<_>, ManifestError>>()
            .map_err(|e| malformed(WHAT, e))?;
        Ok(Self { manifests })
    }

    /// Wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        pb::HeadResponse { manifests: self.manifests.iter().map(SignedManifest::to_proto).collect() }.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_cid() -> impl Strategy<Value = BlockCid> {
        any::<[u8; 8]>().prop_map(|b| BlockCid::of(&b))
    }

    proptest! {
        #[test]
        fn request_round_trip(wants in prop::collection::vec((arb_cid(), any::<bool>(), any::<bool>(), 0u32..=MAX_HOLD_MS), 0..50),
                              cancels in prop::collection::vec(arb_cid(), 0..20),
                              haves in prop::collection::vec(arb_cid(), 0..20),
                              first_copies in any::<bool>()) {
            let req = ExchangeRequest {
                wants: wants.into_iter().map(|(cid, b, d, hold_ms)| Want {
                    cid, kind: if b { WantKind::Block } else { WantKind::Have }, send_dont_have: d, hold_ms,
                }).collect(),
                cancels,
                haves,
                first_copies,
            };
            prop_assert_eq!(ExchangeRequest::decode(&req.encode()).unwrap(), req);
        }

        #[test]
        fn response_round_trip_and_verification(blocks in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..8),
                                                corrupt in any::<prop::sample::Index>()) {
            let good: Vec<_> = blocks.into_iter().map(|d| VerifiedBlock::from_content(d.into())).collect();
            let resp = ExchangeResponse { blocks: good.clone(), ..ExchangeResponse::default() };
            prop_assert_eq!(ExchangeResponse::decode(&resp.encode()).unwrap(), resp);
            if !good.is_empty() {
                // Corrupt one block's bytes but keep its CID: it must land in
                // bad_blocks, and the rest must still verify.
                let i = corrupt.index(good.len());
                let mut raw = pb::ExchangeResponse::decode(&ExchangeResponse { blocks: good.clone(), ..Default::default() }.encode()[..]).unwrap();
                let mut data = raw.blocks[i].data.to_vec();
                data[0] ^= 0xff;
                raw.blocks[i].data = data.into();
                let got = ExchangeResponse::decode(&raw.encode_to_vec()).unwrap();
                prop_assert_eq!(got.bad_blocks, vec![good[i].cid()]);
                prop_assert_eq!(got.blocks.len(), good.len() - 1);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = ExchangeRequest::decode(&bytes);
            let _ = ExchangeResponse::decode(&bytes);
            let _ = HeadRequest::decode(&bytes);
            let _ = HeadResponse::decode(&bytes);
        }
    }

    #[test]
    fn limits_are_enforced() {
        let many = ExchangeRequest { haves: vec![BlockCid::of(b"x"); MAX_EXCHANGE_ENTRIES + 1], ..Default::default() };
        assert!(matches!(ExchangeRequest::decode(&many.encode()), Err(WireError::TooMany { .. })));
        assert!(matches!(
            ExchangeRequest::decode(&vec![0u8; MAX_EXCHANGE_REQUEST_BYTES + 1]),
            Err(WireError::TooLarge { .. })
        ));
        let mut raw = pb::ExchangeRequest::default();
        raw.wants.push(pb::Want {
            cid: Bytes::copy_from_slice(&BlockCid::of(b"x").to_bytes()),
            r#type: 7,
            send_dont_have: false,
            hold_ms: u32::MAX,
        });
        assert!(matches!(ExchangeRequest::decode(&raw.encode_to_vec()), Err(WireError::Malformed { .. })));
        raw.wants[0].r#type = 0;
        assert_eq!(ExchangeRequest::decode(&raw.encode_to_vec()).unwrap().wants[0].hold_ms, MAX_HOLD_MS);
    }

    #[test]
    fn redirects_must_be_few_well_formed_peer_ids() {
        // An ed25519 libp2p peer id: identity multihash (0x00, length 36) of
        // the protobuf public key.
        let mut ed = vec![0x00, 36, 0x08, 0x01, 0x12, 0x20];
        ed.extend_from_slice(&[7u8; 32]);
        // A sha2-256 peer id (keys over 42 bytes are hashed).
        let mut sha = vec![0x12, 32];
        sha.extend_from_slice(&[9u8; 32]);
        let ok = ExchangeResponse {
            dont_haves: vec![BlockCid::of(b"x")],
            redirects: vec![Bytes::from(ed.clone()), Bytes::from(sha.clone())],
            ..Default::default()
        };
        assert_eq!(ExchangeResponse::decode(&ok.encode()).unwrap(), ok);

        let with = |redirects: Vec<Vec<u8>>| {
            let r =
                ExchangeResponse { redirects: redirects.into_iter().map(Bytes::from).collect(), ..Default::default() };
            ExchangeResponse::decode(&r.encode())
        };
        assert!(matches!(with(vec![ed.clone(); MAX_REDIRECTS + 1]), Err(WireError::TooMany { .. })));
        assert!(with(vec![ed.clone(); MAX_REDIRECTS]).is_ok());
        let mut trailing = sha.clone();
        trailing.push(0);
        let mut sha1 = sha.clone();
        sha1[0] = 0x11; // sha1: not a peer-id hash
        for bad in [vec![], vec![0xff; 3], trailing, sha1, vec![0x00; MAX_PEER_ID_BYTES + 1]] {
            assert!(matches!(with(vec![bad.clone()]), Err(WireError::Malformed { .. })), "{bad:?} accepted");
        }
    }
}
