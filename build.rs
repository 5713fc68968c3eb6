//! Generates the Pub/Sub API client and server from `proto/pubsub_api.proto`.
//!
//! protox parses the proto in pure Rust, so no system `protoc` is needed on any machine that
//! builds sfcdc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/pubsub_api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads and replay ids stay `Bytes` end to end: decoding slices strings out of the
        // payload instead of copying them.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
