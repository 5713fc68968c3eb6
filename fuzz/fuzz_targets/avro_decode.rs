//! Fuzz target `avro_decode`: Event payloads decoded with every schema the emulator serves, then the rules.
//! The body is [`sfcdc_fuzz::avro_decode`]; see its docs for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfcdc_fuzz::avro_decode(data));
