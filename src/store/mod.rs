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

mod any;
pub mod migrations;
mod model;
pub mod postgres;
pub mod queue;
pub mod sqlite;

use std::future::Future;

pub use any::AnyStore;
pub use model::{
    BatchOutcome, Checkpoint, Counts, JobFilter, JobRow, JobState, NewJob, NewQuarantine,
    NewTrigger, Position, QuarantineRow, StateCounts, StoreBatch,
};
pub(crate) use model::{
    job_from_row, jobs_of_new_triggers, position, position_columns, quarantine_from_row, raw_json,
};

/// The job columns every query reads.
pub(crate) const JOB_COLUMNS: &str = "id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt, \
     max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress, \
     result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at, \
     updated_at, finished_at";

/// The quarantine columns every query reads.
pub(crate) const QUARANTINE_COLUMNS: &str = "id, channel, replay_id, schema_id, event_id, payload, reason, kind, state, attempts, created_at, updated_at";

/// The [`Store`] methods both backends run with the same SQL (written with `$N` parameters and
/// adapted by `$sql`), expanded inside each backend's `impl Store`. Only the batch commit differs
/// by backend and stays with it; migrations differ in their list, their write transaction
/// (`$begin`) and an optional lock statement taken first.
macro_rules! shared_store_methods {
    ($sql:path, backend = $backend:literal, begin = $begin:path, migrations = $migrations:expr, lock = $lock:expr) => {
        fn backend(&self) -> &'static str {
            $backend
        }

        async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
            let mut tx = $begin(&self.pool).await?;
            let lock: Option<&'static str> = $lock;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *tx).await?;
            }
            sqlx::query($crate::store::migrations::CREATE_LEDGER)
                .execute(&mut *tx)
                .await?;
            let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM sfcdc_migrations")
                .fetch_all(&mut *tx)
                .await?;
            for (version, statements) in $migrations {
                if applied.contains(version) {
                    continue;
                }
                for s in *statements {
                    sqlx::query(sqlx::AssertSqlSafe(*s))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(sqlx::AssertSqlSafe($sql(
                    "INSERT INTO sfcdc_migrations (version, applied_at) VALUES ($1, $2)",
                )))
                .bind(version)
                .bind($crate::clock::now_ms())
                .execute(&mut *tx)
                .await?;
                tracing::info!(version, backend = $backend, "Applied migration");
            }
            tx.commit().await?;
            Ok(())
        }

        async fn checkpoint(
            &self,
            channel: &str,
        ) -> Result<Option<$crate::store::Position>, $crate::store::StoreError> {
            use sqlx::Row;
            let row = sqlx::query(sqlx::AssertSqlSafe($sql(
                "SELECT replay_id, preset FROM sfcdc_checkpoints WHERE channel = $1",
            )))
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
            row.map(|r| $crate::store::position(r.try_get("replay_id")?, r.try_get("preset")?))
                .transpose()
        }

        async fn checkpoints(
            &self,
        ) -> Result<Vec<$crate::store::Checkpoint>, $crate::store::StoreError> {
            use sqlx::Row;
            let rows = sqlx::query(
                "SELECT channel, replay_id, preset, updated_at FROM sfcdc_checkpoints ORDER BY channel",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok($crate::store::Checkpoint {
                        channel: r.try_get("channel")?,
                        position: $crate::store::position(
                            r.try_get("replay_id")?,
                            r.try_get("preset")?,
                        )?,
                        updated_at: r.try_get("updated_at")?,
                    })
                })
                .collect()
        }

        async fn set_checkpoint(
            &self,
            channel: &str,
            p: &$crate::store::Position,
            now_ms: i64,
        ) -> Result<(), $crate::store::StoreError> {
            let (replay_id, preset) = $crate::store::position_columns(p);
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "INSERT INTO sfcdc_checkpoints (channel, replay_id, preset, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (channel) DO UPDATE SET replay_id = excluded.replay_id, preset = excluded.preset, updated_at = excluded.updated_at",
            )))
            .bind(channel)
            .bind(replay_id)
            .bind(preset)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn jobs(
            &self,
            filter: &$crate::store::JobFilter,
        ) -> Result<Vec<$crate::store::JobRow>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM sfcdc_jobs WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) AND (CAST($2 AS TEXT) IS NULL OR order_id = $2) ORDER BY id DESC LIMIT $3",
                $crate::store::JOB_COLUMNS
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe($sql(&sql)))
                .bind(filter.state.map(|s| s.as_str()))
                .bind(filter.order_id.as_deref())
                .bind(filter.limit.unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map($crate::store::job_from_row).collect()
        }

        async fn quarantined(
            &self,
            open_only: bool,
        ) -> Result<Vec<$crate::store::QuarantineRow>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM sfcdc_quarantine WHERE (NOT $1 OR state = 'open') ORDER BY id",
                $crate::store::QUARANTINE_COLUMNS
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe($sql(&sql)))
                .bind(open_only)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map($crate::store::quarantine_from_row).collect()
        }

        async fn quarantine_entry(
            &self,
            id: i64,
        ) -> Result<Option<$crate::store::QuarantineRow>, $crate::store::StoreError> {
            let sql = format!(
                "SELECT {} FROM sfcdc_quarantine WHERE id = $1",
                $crate::store::QUARANTINE_COLUMNS
            );
            let row = sqlx::query(sqlx::AssertSqlSafe($sql(&sql)))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map($crate::store::quarantine_from_row).transpose()
        }

        async fn quarantine_retry_failed(
            &self,
            id: i64,
            reason: &str,
            now_ms: i64,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(sqlx::AssertSqlSafe($sql(
                "UPDATE sfcdc_quarantine SET reason = $1, attempts = attempts + 1, updated_at = $2 WHERE id = $3",
            )))
            .bind(reason)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
            Ok(())
        }

        async fn state_counts(
            &self,
        ) -> Result<$crate::store::StateCounts, $crate::store::StoreError> {
            let jobs = sqlx::query_as::<_, (String, i64)>(
                "SELECT state, count(*) FROM sfcdc_jobs GROUP BY state ORDER BY state",
            )
            .fetch_all(&self.pool)
            .await?;
            let deliveries = sqlx::query_as::<_, (String, i64)>(
                "SELECT state, count(*) FROM sfcdc_deliveries GROUP BY state ORDER BY state",
            )
            .fetch_all(&self.pool)
            .await?;
            Ok($crate::store::StateCounts { jobs, deliveries })
        }

        async fn counts(&self) -> Result<$crate::store::Counts, $crate::store::StoreError> {
            let jobs = self.state_counts().await?.jobs;
            let triggers = sqlx::query_as::<_, (String, i64)>(
                "SELECT outcome || coalesce(':' || reason, ''), count(*) FROM sfcdc_triggers GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(&self.pool)
            .await?;
            let quarantined: i64 =
                sqlx::query_scalar("SELECT count(*) FROM sfcdc_quarantine WHERE state = 'open'")
                    .fetch_one(&self.pool)
                    .await?;
            Ok($crate::store::Counts {
                jobs,
                triggers,
                quarantined,
            })
        }
    };
}

pub(crate) use shared_store_methods;

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
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

/// The storage contract both backends meet.
pub trait Store: Send + Sync + 'static {
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
