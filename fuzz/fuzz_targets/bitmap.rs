//! Fuzz target `bitmap`: ChangeEventHeader changedFields/diffFields/nulledFields bitmaps.
//! The body is [`sfcdc::fuzzing::bitmap`]; see its docs for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfcdc::fuzzing::bitmap(data));
