#![no_main]
// The config target of crates/spotlight-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spotlight_fuzz::targets::config(data);
});
