#![no_main]
// The tokenizer target of crates/spotlight-fuzz under libFuzzer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spotlight_fuzz::targets::tokenizer(data);
});
