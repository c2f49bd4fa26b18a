//! Arbitrary bytes as a gossiped signed manifest: decode, verify, and feed
//! the chain state machine. Must never panic; must never verify (the fuzzer
//! cannot forge ed25519).
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::{ChainState, SignedManifest, VerifyPolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SignedManifest::decode(data) {
        let channel = s.claimed().channel;
        let _ = s.encode();
        if let Ok(v) = s.verify(&VerifyPolicy::default(), u64::MAX / 2) {
            let mut chain = ChainState::new(channel, 16);
            let _ = chain.decide(&v);
            panic!("a fuzzed manifest verified: forged signature accepted");
        }
    }
});
