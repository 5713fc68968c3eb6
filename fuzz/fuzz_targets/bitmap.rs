//! Fuzz target `bitmap`: ChangeEventHeader changedFields/diffFields/nulledFields bitmaps.
//! The body is [`sfcdc_fuzz::bitmap`]; see its docs for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfcdc_fuzz::bitmap(data));
