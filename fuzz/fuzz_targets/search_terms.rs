#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| memento_fuzz_checks::search_terms(data));
