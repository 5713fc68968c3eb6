//! Durable state: channel checkpoints, provisioning jobs, evaluated triggers and quarantined
//! events, on SQLite (the default, one file) or PostgreSQL (several instances), behind one
//! [`Store`] trait that one conformance suite checks on both.
//!
//! **One transaction per batch.** [`Store::commit_batch`] records the batch's triggers, creates
//! its jobs, quarantines its bad events and advances the channel's checkpoint together, so a
//! crash at any point either keeps all of it or none of it; what was lost is replayed from the
//! old checkpoint. That is also why SQLite can run WAL with `synchronous=NORMAL`.
//!
//! **Exactly one job per approval.** A trigger's key (derived from its event) is recorded once:
//! a replayed event finds its key and does nothing, even if it created no job the first time. A
//! job is created only for a newly recorded trigger, and at most one job per order and trigger
//! status is open at a time (a partial unique index), so the CDC signal and the platform event
//! for the same approval, a gap re-read, or another instance racing on the same event, make one
//! job. Both constraints are enforced by the database, so they hold across processes.
//!
//! Statements are batched: one multi-row insert per table per batch (`VALUES` lists on SQLite,
//! `UNNEST` arrays on PostgreSQL), because per-statement overhead, not I/O, bounds throughput.
//!
//! **One file per concern, SQL in plain sight.** Here: the [`Store`] contract and
//! [`StoreError`]. `model.rs`: the rows and inputs, and their mapping from database rows.
//! `queue.rs`: the [`queue::Queue`] contract and its types. `sql.rs`: the statements both
//! backends run as written. `sqlite.rs` and `postgres.rs`, each with its `queue.rs`: a backend's
//! connection and its implementation of both contracts, as plain functions. `leased.rs`: the
//! batched lease-guarded writes, generic over the backend. `recovery.rs`: the log of reconcile
//! scans the service asked for itself. `audit.rs`: the trail of operator actions. `insight.rs`:
//! the console's reads (job pages, throughput). `any.rs`: [`AnyStore`].
//! `migrations.rs`: the schema. The conformance suites (`tests/it/store.rs`, `tests/it/queue.rs`)
//! run on both backends and keep them in step.

mod any;
pub mod audit;
pub mod insight;
pub mod lease;
mod leased;
pub mod migrations;
mod model;
pub mod postgres;
pub mod queue;
pub mod recovery;
mod sql;
pub mod sqlite;

use std::collections::HashSet;
use std::future::Future;

use crate::decode::Position;

pub use any::AnyStore;
pub use model::{
    BatchOutcome, Checkpoint, Counts, JobFilter, JobRow, JobState, NewJob, NewQuarantine,
    NewTrigger, QuarantineRow, StateCounts, StoreBatch,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not usable.
    #[error("SFCDC_DATABASE_URL: {0}")]
    Config(String),
    /// A database error (connection, constraint, I/O, disk full, read-only file).
    /// (Not marked as the source: the message already carries it, and an error chain would
    /// print it twice more.)
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// A stored value is not what sfcdc wrote.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A fenced batch's lease is no longer held at its generation: another instance took the
    /// channel (or an operator reset it). Nothing of the batch was written.
    #[error("the lease of {channel} is no longer held at generation {generation}")]
    Fenced {
        /// The channel.
        channel: String,
        /// The generation the batch was fenced with.
        generation: i64,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

/// The storage contract both backends meet.
pub trait Store:
    recovery::Recoveries + audit::Audit + insight::Insights + Send + Sync + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Creates or upgrades the tables.
    fn migrate(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A channel's position.
    fn checkpoint(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// Every channel's position.
    fn checkpoints(&self) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send;

    /// Sets a channel's position (an operator reset).
    fn set_checkpoint(
        &self,
        channel: &str,
        position: &Position,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes one batch in one transaction.
    fn commit_batch(
        &self,
        batch: &StoreBatch,
    ) -> impl Future<Output = Result<BatchOutcome, StoreError>> + Send;

    /// Lists jobs, newest first.
    fn jobs(
        &self,
        filter: &JobFilter,
    ) -> impl Future<Output = Result<Vec<JobRow>, StoreError>> + Send;

    /// Lists quarantined events, oldest first; `open_only` hides resolved ones.
    fn quarantined(
        &self,
        open_only: bool,
    ) -> impl Future<Output = Result<Vec<QuarantineRow>, StoreError>> + Send;

    /// One quarantined event.
    fn quarantine_entry(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<QuarantineRow>, StoreError>> + Send;

    /// Records a failed re-drive attempt of a quarantined event.
    fn quarantine_retry_failed(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts for summaries.
    fn counts(&self) -> impl Future<Output = Result<Counts, StoreError>> + Send;

    /// Jobs and deliveries by state (two grouped counts over indexed columns).
    fn state_counts(&self) -> impl Future<Output = Result<StateCounts, StoreError>> + Send;

    /// Which of `keys` are recorded triggers.
    fn known_triggers(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, StoreError>> + Send;

    /// The `(order, trigger status)` of every open job of `orders`.
    fn open_approvals(
        &self,
        orders: &[String],
    ) -> impl Future<Output = Result<HashSet<(String, String)>, StoreError>> + Send;
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_in_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(
            redact_url("sqlite://./data/sfcdc.db"),
            "sqlite://./data/sfcdc.db"
        );
    }
}
