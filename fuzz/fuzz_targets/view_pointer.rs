//! Fuzz target: `checks::view_pointer` on arbitrary bytes (see checks.rs for what it asserts).

#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::view_pointer(data));
