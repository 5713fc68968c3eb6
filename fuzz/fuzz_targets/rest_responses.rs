//! Fuzz target `rest_responses`: Salesforce SOQL and error bodies, OAuth token answers, fulfilment answers.
//! The body is [`sfcdc_fuzz::rest_responses`]; see its docs for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sfcdc_fuzz::rest_responses(data));
