//! Integration tests: one binary, so the heavy dependencies link once.

mod auth;
mod cache;
mod common;
mod emulator_cli;
mod emulator_events;
mod emulator_faults;
mod emulator_fulfilment;
mod emulator_grpc;
mod emulator_rest;
mod fuzz_regressions;
mod operability;
mod pipeline;
#[macro_use]
pub mod store;
mod queue;
mod subscriber;
mod worker;
