//! Generated code for the Salesforce Pub/Sub API (`eventbus.v1`): the server the emulator runs,
//! and the client its own tests drive it with.
//!
//! The wire contract is the repository's `proto/pubsub_api.proto`, the one file the emulator
//! shares with sfcdc; this crate's `build.rs` compiles it with protox.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("eventbus.v1");
