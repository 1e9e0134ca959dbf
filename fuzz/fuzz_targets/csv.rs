//! libFuzzer entry for zbmd_fuzz_targets::csv (what it feeds and asserts is
//! documented there and in docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zbmd_fuzz_targets::csv(data));
