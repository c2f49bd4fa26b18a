//! Arbitrary bytes as head requests and responses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::exchange::{HeadRequest, HeadResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = HeadRequest::decode(data) {
        assert!((1..=shoal_core::limits::MAX_HEAD_MANIFESTS).contains(&r.max));
    }
    if let Ok(r) = HeadResponse::decode(data) {
        assert!(r.manifests.len() <= shoal_core::limits::MAX_HEAD_MANIFESTS as usize);
    }
});
