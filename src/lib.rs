//! sfcdc: a Salesforce change-data-capture subscriber.
//!
//! The library holds everything; `src/main.rs` only parses the command line and calls in here,
//! so tests drive exactly what users run.
pub mod cli;
pub mod decode;
pub mod emulator;
pub mod proto;
pub mod sfid;
pub mod telemetry;
