//! Fuzz target `config`: The SFCDC_CONFIG file format and every setting of sfcdc run.
//! The body is [`sfcdc_fuzz::config`]; see its docs for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfcdc_fuzz::config(data));
