#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| memento::fuzzing::sse_parser(data));
