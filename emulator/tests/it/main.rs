//! The emulator's integration tests, one binary: the emulator as a system, driven over real gRPC
//! and HTTPS on loopback by clients built in this crate, never by sfcdc.

mod bulk_query;
mod common;
mod events;
mod faults;
mod fulfilment;
mod grpc;
mod rest;
