//! The operator's command line: `sfcdc run` and the commands that inspect and repair what it
//! stores (`checkpoints`, `jobs`, `deliveries`, `quarantine`), and `sfcdc tail`. Each command
//! builds what it needs and nothing more: `run` the whole service ([`crate::app`]); `quarantine
//! retry` only the ingest side; the others only the store. The HTTP face of the same operations is
//! [`crate::api`].

pub mod cli;
pub mod tail;
