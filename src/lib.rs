//! sfcdc: a Salesforce change-data-capture subscriber.
//!
//! The library holds everything; `src/main.rs` only parses the command line and calls in here,
//! so tests drive exactly what users run. Data flows `source` (Pub/Sub API) → `decode` (Avro,
//! bitmaps) → `sink` (what consumes batches). The stand-in for Salesforce is a crate of its own,
//! `sfcdc-emulator` (`emulator/`), which shares nothing with this one but the proto.

pub mod admin;
pub mod app;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod demo;
pub mod deps;
pub mod fuzzing;
pub mod ingest;
pub mod proto;
pub mod rules;
pub mod salesforce;
pub mod sfid;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod worker;
