#![no_main]
// The checkpoint target of crates/spotlight-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spotlight_fuzz::targets::checkpoint(data);
});
