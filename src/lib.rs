//! sfcdc: a Salesforce change-data-capture subscriber.
//!
//! The library holds the product that operators deploy: the service (`app`) and its operator
//! commands (`admin::cli`). Data flows `source` (Pub/Sub API) → `decode` (Avro, bitmaps) →
//! `ingest` (rules, one store transaction per batch) → `store` → `worker` (fulfilment,
//! notifications), with `cache` serving order reads, `api` the admin HTTP API and `console` its
//! pages for people. The binary's
//! top-level parser and the developer tools (emulator, demo, bench) live in `src/bin/sfcdc/`;
//! the stand-in for Salesforce is a crate of its own, `sfcdc-emulator` (`emulator/`), which
//! shares nothing with this one but the proto.

pub mod admin;
pub mod api;
pub mod app;
pub mod cache;
pub mod clock;
pub mod config;
pub mod console;
pub mod decode;
pub mod deps;
pub mod fleet;
pub mod ingest;
pub mod proto;
pub mod reconcile;
pub mod rules;
pub mod salesforce;
pub mod sfid;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod worker;
