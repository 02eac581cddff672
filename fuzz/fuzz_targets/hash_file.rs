#![no_main]
// The hash_file target of crates/spotlight-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spotlight_fuzz::targets::hash_file(data);
});
