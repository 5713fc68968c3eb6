//! The SQLite backend: one file, WAL, `synchronous=NORMAL`.
//!
//! Every write goes through one connection of its own (the writer pool holds exactly one), and
//! reads through a small pool beside it, which WAL lets run while the writer writes. SQLite has
//! one writer at a time anyway, so writers queue on the pool instead of on the file's lock; and
//! a connection discards its whole page cache whenever another connection has written since its
//! last transaction, so writes rotating over several connections re-read the tables' pages for
//! nearly every commit (half of the kernel's page reads during ingest, about 5% of its CPU).
//! The one writer's cache stays warm.
//! Transactions take the write lock up front (`BEGIN IMMEDIATE`), so a transaction that reads
//! before it writes never fails with a busy snapshot. Each batch is a handful of multi-row
//! statements, never one per row: SQLx pays tens of microseconds per SQLite statement.

mod lease;
mod queue;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::model::{
    checkpoint_from_row, duplicate_approvals, job_from_row, jobs_of_new_triggers, position_columns,
    position_from_row, quarantine_from_row,
};
use super::{
    BatchOutcome, Checkpoint, Counts, JobFilter, JobRow, Position, QuarantineRow, StateCounts,
    Store, StoreBatch, StoreError, migrations, recovery, sql,
};

/// A SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    /// Reads: the admin API, the console, the commands, the background WAL checkpoint.
    pool: SqlitePool,
    /// Writes: one connection, so its page cache survives every commit (see the module doc).
    writer: SqlitePool,
    _checkpointer: Arc<Checkpointer>,
}

/// Copies the WAL into the database file in the background, so that commits do not pay for it.
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// How long a write waits for the file's lock, or for the writer connection.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Connections for reads, beside the writer's one.
const READERS: u32 = 3;

impl SqliteStore {
    /// Opens (creating if needed) the database file named by a `sqlite://PATH` URL.
    pub async fn connect(url: &str) -> Result<SqliteStore, StoreError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| StoreError::Config(format!("'{url}' is not a sqlite:// URL")))?;
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path == ":memory:" {
            return Err(StoreError::Config(
                "sfcdc needs a database file (sqlite://PATH), not an in-memory database".into(),
            ));
        }
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Config(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(WRITE_WAIT)
            .foreign_keys(true)
            // Commits no longer checkpoint every 1,000 pages (a 15 ms stall with its fsync): a
            // background task does it. The larger limit is a safety net if that task falls behind.
            .pragma("wal_autocheckpoint", "16000")
            // Statement journals (the undo log of one statement inside a transaction, which a
            // multi-row insert with ON CONFLICT keeps) in memory: past 64 KiB SQLite spills them
            // to a temporary file it creates, writes and deletes for that one statement: a third
            // of ingest's `pwrite` calls went to such files. They live for one statement.
            .pragma("temp_store", "memory");
        let pool_options = || {
            SqlitePoolOptions::new()
                // No ping before each use: the database is in this process, and a ping is a round
                // trip to the connection's thread before every transaction (one of a commit's
                // five or six, each 0.1-0.4 ms of waiting on a busy 2-core machine).
                .test_before_acquire(false)
                // A COMMIT that fails for a full disk has already been rolled back by SQLite; the
                // rollback sqlx then sends fails too, and the connection stays marked as inside a
                // transaction, refusing every later BEGIN. Such a connection is closed, not reused.
                // (By the time a connection is acquired, the rollbacks of ordinary dropped
                // transactions have been flushed on release.)
                .before_acquire(|conn, _| {
                    Box::pin(async move {
                        let stuck = sqlx::Connection::is_in_transaction(conn);
                        if stuck {
                            tracing::warn!(
                                "Closing a SQLite connection left inside a failed transaction"
                            );
                        }
                        Ok(!stuck)
                    })
                })
        };
        let open_error = |e: sqlx::Error| {
            StoreError::Config(format!(
                "cannot open the SQLite database {path}: {e} (check that its folder exists, is writable, and that the disk is neither full nor read-only)"
            ))
        };
        // The writer first: it creates the file and sets WAL mode before any reader opens it.
        let writer = pool_options()
            .max_connections(1)
            // A writer waits for the one connection as it would wait for the file's lock.
            .acquire_timeout(WRITE_WAIT)
            .connect_with(options.clone())
            .await
            .map_err(open_error)?;
        let pool = pool_options()
            .max_connections(READERS)
            .connect_with(options)
            .await
            .map_err(open_error)?;
        let background = pool.clone();
        let checkpointer = Checkpointer(tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECKPOINT_EVERY).await;
                // PASSIVE never blocks the writer or readers; it copies what it can.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&background)
                    .await
                {
                    tracing::debug!(error = %e, "Background WAL checkpoint failed; the next one retries");
                }
            }
        }));
        Ok(SqliteStore {
            pool,
            writer,
            _checkpointer: Arc::new(checkpointer),
        })
    }

    /// The readers' connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The writer's pool (one connection): every write goes through it.
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes every connection for good: the store answers only errors from then on.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        migrations::apply(&mut tx, migrations::SQLITE, self.backend()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn checkpoint(&self, channel: &str) -> Result<Option<Position>, StoreError> {
        let row = sqlx::query(sql::CHECKPOINT)
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(position_from_row).transpose()
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(sql::CHECKPOINTS).fetch_all(&self.pool).await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn set_checkpoint(
        &self,
        channel: &str,
        position: &Position,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (replay_id, preset) = position_columns(position);
        let mut tx = begin_write(&self.writer).await?;
        lease::revoke(&mut tx, channel).await?;
        sqlx::query(sql::SET_CHECKPOINT)
            .bind(channel)
            .bind(replay_id)
            .bind(preset)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn commit_batch(&self, batch: &StoreBatch) -> Result<BatchOutcome, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        if let Some(fence) = &batch.fence {
            lease::check_fence(&mut tx, &batch.channel, fence).await?;
        }
        let mut inserted = foldhash::HashSet::default();
        for (text, chunk) in padded::TRIGGERS.chunks(&batch.triggers) {
            let mut q = sqlx::query_scalar::<_, String>(text)
                .bind(&batch.channel)
                .bind(batch.now_ms);
            for t in chunk {
                q = q
                    .bind(&t.key)
                    .bind(&t.order_id)
                    .bind(t.outcome())
                    .bind(t.reason());
            }
            inserted.extend(q.fetch_all(&mut *tx).await?);
        }
        let (jobs, duplicate_events) = jobs_of_new_triggers(batch, &inserted);
        let mut created = Vec::new();
        for (text, chunk) in padded::JOBS.chunks(&jobs) {
            let mut q = sqlx::query(text)
                .bind(batch.now_ms)
                .bind(batch.now_ms)
                .bind(batch.now_ms);
            for j in chunk {
                q = q
                    .bind(&j.key)
                    .bind(&j.order_id)
                    .bind(&j.account_id)
                    .bind(&j.trigger_status)
                    .bind(&j.trigger_kind)
                    .bind(&j.channel)
                    .bind(&j.replay_id)
                    .bind(&j.event_id)
                    .bind(&j.payload)
                    .bind(j.max_attempts);
            }
            for r in q.fetch_all(&mut *tx).await? {
                created.push((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?));
            }
        }
        let duplicate_approvals = duplicate_approvals(&jobs, &created);
        let mut quarantined = 0;
        for chunk in batch.quarantine.chunks(sql::ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO sfcdc_quarantine (channel, replay_id, schema_id, event_id, payload, reason, kind, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.channel)
                    .push_bind(&e.replay_id)
                    .push_bind(&e.schema_id)
                    .push_bind(&e.event_id)
                    .push_bind(&e.payload)
                    .push_bind(&e.reason)
                    .push_bind(&e.kind)
                    .push_bind(batch.now_ms)
                    .push_bind(batch.now_ms);
            });
            q.push(" ON CONFLICT (channel, replay_id) DO NOTHING");
            quarantined += q.build().execute(&mut *tx).await?.rows_affected() as usize;
        }
        for id in &batch.resolve_quarantine {
            sqlx::query("UPDATE sfcdc_quarantine SET state = 'resolved', attempts = attempts + 1, updated_at = ? WHERE id = ?")
                .bind(batch.now_ms)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(replay) = &batch.checkpoint {
            sqlx::query(sql::ADVANCE_CHECKPOINT)
                .bind(&batch.channel)
                .bind(replay.as_bytes())
                .bind(batch.now_ms)
                .bind(batch.last_event_ms)
                .execute(&mut *tx)
                .await?;
        }
        for request in &batch.recoveries {
            recovery::insert(&mut *tx, request).await?;
        }
        tx.commit().await?;
        Ok(BatchOutcome {
            created,
            duplicate_events,
            duplicate_approvals,
            quarantined,
        })
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(sql::JOBS)
            .bind(filter.state.map(|s| s.as_str()))
            .bind(filter.order_id.as_deref())
            .bind(filter.limit.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn quarantined(&self, open_only: bool) -> Result<Vec<QuarantineRow>, StoreError> {
        let rows = sqlx::query(sql::QUARANTINED)
            .bind(open_only)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(quarantine_from_row).collect()
    }

    async fn quarantine_entry(&self, id: i64) -> Result<Option<QuarantineRow>, StoreError> {
        let row = sqlx::query(sql::QUARANTINE_ENTRY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(quarantine_from_row).transpose()
    }

    async fn quarantine_retry_failed(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::QUARANTINE_RETRY_FAILED)
            .bind(reason)
            .bind(now_ms)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let jobs = self.state_counts().await?.jobs;
        let triggers = sqlx::query_as(sql::TRIGGER_COUNTS)
            .fetch_all(&self.pool)
            .await?;
        let quarantined = sqlx::query_scalar(sql::OPEN_QUARANTINE_COUNT)
            .fetch_one(&self.pool)
            .await?;
        Ok(Counts {
            jobs,
            triggers,
            quarantined,
        })
    }

    async fn state_counts(&self) -> Result<StateCounts, StoreError> {
        let jobs = sqlx::query_as(sql::JOB_STATE_COUNTS)
            .fetch_all(&self.pool)
            .await?;
        let deliveries = sqlx::query_as(sql::DELIVERY_STATE_COUNTS)
            .fetch_all(&self.pool)
            .await?;
        Ok(StateCounts { jobs, deliveries })
    }

    async fn known_triggers(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        let list = serde_json::to_string(keys).unwrap_or_else(|_| "[]".into());
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT trigger_key FROM sfcdc_triggers WHERE trigger_key IN (SELECT value FROM json_each($1))",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn open_approvals(
        &self,
        orders: &[String],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let list = serde_json::to_string(orders).unwrap_or_else(|_| "[]".into());
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT order_id, trigger_status FROM sfcdc_jobs
             WHERE state IN ('available', 'running', 'polling', 'retryable')
               AND order_id IN (SELECT value FROM json_each($1))",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

recovery::recoveries_on_pool!(SqliteStore);
super::audit::audit_on_pool!(SqliteStore);
super::insight::insights_on_pool!(SqliteStore);

/// Opens a write transaction, taking the write lock up front.
async fn begin_write(
    pool: &SqlitePool,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// The ingest's two hot inserts (triggers and jobs) as a few fixed statement texts, prepared once
/// and kept in the connection's statement cache, instead of a new text for every row count
/// (built, hashed, parsed and compiled for nearly every commit, and crowding the cache with
/// statements of many kilobytes).
///
/// A chunk of n rows runs the text for the smallest class of at least n rows. Its rows come
/// from a `VALUES` list whose unused tail is left unbound: SQLx clears a statement's bindings
/// before binding (`sqlite3_clear_bindings`) and leaves parameters past its arguments unbound,
/// and SQLite reads an unbound parameter as `NULL`, so the padding rows are all `NULL` and the
/// `WHERE column1 IS NOT NULL` drops them (the first column is a key, never `NULL`). Values
/// shared by every row (the channel, the time) sit in the `SELECT` list, before the rows.
///
/// Every parameter is an anonymous `?`, numbered by SQLite in the order of the text (the
/// `SELECT` list's first), so a value used twice is bound twice. Numbered ones (`?NNN`) would
/// cost a scan per bound parameter: SQLx asks each parameter's name to find its argument, and
/// SQLite finds a name by walking the statement's list of named parameters, quadratic in a
/// statement of 2,560 of them (5.6% of `sfcdc run`'s instructions); an anonymous one has no
/// name and takes the next argument.
mod padded {
    use std::sync::LazyLock;

    /// Rows per statement, by class.
    const CLASSES: [usize; 6] = [8, 16, 32, 64, 128, 256];

    /// The most rows one statement takes.
    const MAX_ROWS: usize = CLASSES[CLASSES.len() - 1];

    /// One insert's texts, one per class.
    pub(super) struct Insert(Vec<String>);

    impl Insert {
        /// `INSERT {head} SELECT {select} FROM (VALUES ...) WHERE column1 IS NOT NULL {tail}`,
        /// with `per_row` parameters in each row (the `select` list's own come first).
        fn new(head: &str, select: &str, per_row: usize, tail: &str) -> Insert {
            let row = format!("({})", vec!["?"; per_row].join(", "));
            Insert(
                CLASSES
                    .iter()
                    .map(|&rows| {
                        let mut sql = format!("{head} SELECT {select} FROM (VALUES ");
                        for n in 0..rows {
                            if n > 0 {
                                sql.push_str(", ");
                            }
                            sql.push_str(&row);
                        }
                        sql.push_str(&format!(") WHERE column1 IS NOT NULL {tail}"));
                        sql
                    })
                    .collect(),
            )
        }

        /// `rows` in chunks of at most [`MAX_ROWS`], each with the text of the smallest class
        /// that holds it.
        pub(super) fn chunks<'r, T>(
            &'static self,
            rows: &'r [T],
        ) -> impl Iterator<Item = (&'static str, &'r [T])> {
            rows.chunks(MAX_ROWS).map(|chunk| {
                let class = CLASSES.partition_point(|&c| c < chunk.len());
                (self.0[class].as_str(), chunk)
            })
        }
    }

    /// Channel, time; per row: key, order, outcome, reason.
    pub(super) static TRIGGERS: LazyLock<Insert> = LazyLock::new(|| {
        Insert::new(
            "INSERT INTO sfcdc_triggers (trigger_key, order_id, channel, outcome, reason, created_at)",
            "column1, column2, ?, column3, column4, ?",
            4,
            "ON CONFLICT DO NOTHING RETURNING trigger_key",
        )
    });

    /// Time (run at), time (created at), time (updated at); per row: key, order, account, trigger
    /// status, trigger kind, channel, replay id, event id, payload, max attempts.
    pub(super) static JOBS: LazyLock<Insert> = LazyLock::new(|| {
        Insert::new(
            "INSERT INTO sfcdc_jobs (job_key, kind, order_id, account_id, trigger_status, trigger_kind, \
             source_channel, source_replay_id, source_event_id, payload, state, attempt, max_attempts, \
             run_at, created_at, updated_at)",
            "column1, 'provision', column2, column3, column4, column5, column6, column7, column8, \
             column9, 'available', 0, column10, ?, ?, ?",
            10,
            "ON CONFLICT DO NOTHING RETURNING id, job_key",
        )
    });

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn each_chunk_runs_the_smallest_class_that_holds_it() {
            let rows = |sql: &str| sql.matches("), (").count() + 1;
            // The text a chunk of n rows runs.
            let text = |insert: &'static Insert, n: usize| {
                let only: Vec<&str> = insert.chunks(&vec![(); n]).map(|(sql, _)| sql).collect();
                assert_eq!(only.len(), 1, "{n} rows are one chunk");
                only[0]
            };
            assert_eq!(rows(text(&TRIGGERS, 1)), 8);
            assert_eq!(rows(text(&TRIGGERS, 8)), 8);
            assert_eq!(rows(text(&TRIGGERS, 9)), 16);
            assert_eq!(rows(text(&JOBS, 200)), 256);
            assert_eq!(rows(text(&JOBS, MAX_ROWS)), MAX_ROWS);
            // Anonymous parameters only, bound in the order of the text: the shared ones of the
            // select list, then row by row.
            let params = |sql: &str| sql.matches('?').count();
            assert!(!text(&TRIGGERS, 1).contains("?1"));
            assert!(text(&TRIGGERS, 1).contains("VALUES (?, ?, ?, ?), (?, ?, ?, ?)"));
            assert_eq!(params(text(&TRIGGERS, 1)), 2 + 8 * 4);
            assert_eq!(params(text(&JOBS, 256)), 3 + 256 * 10);
            // More rows than a statement takes: full statements, then the rest's class.
            let split: Vec<_> = JOBS
                .chunks(&[(); MAX_ROWS + 1])
                .map(|(sql, chunk)| (rows(sql), chunk.len()))
                .collect();
            assert_eq!(split, [(MAX_ROWS, MAX_ROWS), (8, 1)]);
        }
    }
}
