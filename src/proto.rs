//! Generated code for the Salesforce Pub/Sub API (`eventbus.v1`), client and server.
//!
//! The wire contract lives in `proto/pubsub_api.proto`; `build.rs` compiles it with protox.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("eventbus.v1");
