//! Generates the emulator's Pub/Sub API server (and the client its tests use) from the
//! repository's `proto/pubsub_api.proto`, the only thing the emulator shares with sfcdc.
//!
//! protox parses the proto in pure Rust, so no system `protoc` is needed on any machine that
//! builds the emulator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/pubsub_api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["../proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads and replay ids stay `Bytes`: the event bus hands out stored payloads without
        // copying them.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
