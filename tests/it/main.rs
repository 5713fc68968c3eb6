//! Integration tests: one binary, so the heavy dependencies link once.

mod architecture;
mod auth;
mod cache;
mod common;
mod console;
mod console_browser;
// `sfcdc emulator` is one of the binary's tools.
#[cfg(feature = "tools")]
mod emulator_cli;
mod fleet;
mod interop;
mod lease;
mod operability;
mod pipeline;
#[macro_use]
pub mod store;
mod queue;
mod recovery;
mod rules_props;
mod subscriber;
mod worker;
