//! Arbitrary bytes as exchange requests and responses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::exchange::{ExchangeRequest, ExchangeResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = ExchangeRequest::decode(data) {
        // Whatever decodes must re-encode and decode to the same value.
        assert_eq!(ExchangeRequest::decode(&r.encode()).as_ref(), Ok(&r));
    }
    if let Ok(r) = ExchangeResponse::decode(data) {
        for b in &r.blocks {
            assert!(b.cid().verify(b.data()).is_ok(), "unverified block escaped the decoder");
        }
    }
});
