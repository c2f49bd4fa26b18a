//! Arbitrary bytes as directory announcements.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::SignedDirectoryEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = SignedDirectoryEntry::decode(data) {
        assert!(s.verify(u64::MAX / 2, 0).is_err(), "a fuzzed directory entry verified");
    }
});
