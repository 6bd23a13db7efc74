//! Fuzz target `set`: see tests/fuzz_entry/mod.rs for what it drives.
#![no_main]

#[path = "../../tests/fuzz_entry/mod.rs"]
mod fuzz_entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = fuzz_entry::set(data);
});
