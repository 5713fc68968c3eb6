//! The PostgreSQL backend, for several instances sharing one database.
//!
//! Batches insert with one `INSERT … SELECT FROM UNNEST(…)` per table: a single round trip and
//! a single plan however many rows. Uniqueness (trigger keys, job keys, one open job per
//! approval) is enforced by indexes, so two instances inserting the same job concurrently make
//! one row: the second waits for the first to commit, then skips.

pub mod lease;
pub mod notify;
mod queue;
mod steps;

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Row};

use super::model::{
    checkpoint_from_row, duplicate_approvals, job_from_row, jobs_of_new_triggers, position_columns,
    position_from_row, quarantine_from_row,
};
use super::{
    BatchOutcome, Checkpoint, Counts, JobFilter, JobRow, NewJob, NewQuarantine, NewTrigger,
    Position, QuarantineRow, StateCounts, Store, StoreBatch, StoreError, migrations, recovery, sql,
};

/// A PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The schema the tables live in: `NOTIFY` reaches the whole database, so signals carry it
    /// and listeners ignore those of other schemas.
    scope: std::sync::Arc<str>,
}

/// How long a session may sit idle inside a transaction when the caller does not say: as for
/// the default lease TTL (see [`PgStore::connect_with`]).
pub const DEFAULT_IDLE_IN_TRANSACTION: Duration =
    super::lease::idle_in_transaction(super::lease::DEFAULT_LEASE_TTL);

impl PgStore {
    /// Connects to `url`; with `schema`, every table lives in that schema (created if needed),
    /// which is how tests get a fresh database each. Sessions idle in a transaction for
    /// [`DEFAULT_IDLE_IN_TRANSACTION`] are ended by the server.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<PgStore, StoreError> {
        PgStore::connect_with(url, schema, DEFAULT_IDLE_IN_TRANSACTION).await
    }

    /// [`PgStore::connect`], with the server told to end any of this store's sessions that sits
    /// idle inside a transaction for `idle_in_transaction` (PostgreSQL's
    /// `idle_in_transaction_session_timeout`), which frees its locks: otherwise an instance
    /// stopped in the middle of a fenced commit keeps its share lock on the lease row, and no
    /// standby can take the lease over, however long ago it expired. See
    /// [`idle_in_transaction`](super::lease::idle_in_transaction) for the value.
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        idle_in_transaction: Duration,
    ) -> Result<PgStore, StoreError> {
        let mut options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            StoreError::Config(format!("{}: {e}", super::redact_url(url)))
        })?;
        options = options
            .application_name("sfcdc")
            .log_statements(tracing::log::LevelFilter::Trace)
            .options([(
                "idle_in_transaction_session_timeout",
                format!("{}ms", idle_in_transaction.as_millis().max(1)),
            )]);
        if let Some(schema) = schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::Config(format!(
                    "schema name {schema:?} is not an identifier"
                )));
            }
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&admin)
            .await?;
            admin.close().await;
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let scope: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await?;
        Ok(PgStore {
            pool,
            scope: scope.into(),
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Where writes go: the same pool (PostgreSQL runs many writers at once).
    pub(crate) fn writer(&self) -> &PgPool {
        &self.pool
    }
}

impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        // One instance migrates at a time; the others then find the versions applied.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('sfcdc_migrations'))")
            .execute(&mut *tx)
            .await?;
        migrations::apply(&mut tx, migrations::POSTGRES, self.backend()).await?;
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
        let mut tx = begin_write(&self.pool).await?;
        lease::revoke(&mut tx, &self.scope, channel).await?;
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
        let mut tx = begin_write(&self.pool).await?;
        if let Some(fence) = &batch.fence {
            lease::check_fence(&mut tx, &batch.channel, fence).await?;
        }
        let mut inserted = foldhash::HashSet::default();
        if !batch.triggers.is_empty() {
            let t = &batch.triggers;
            let keys: Vec<&str> = t.iter().map(|t| t.key.as_str()).collect();
            let orders: Vec<&str> = t.iter().map(|t| t.order_id.as_str()).collect();
            let outcomes: Vec<&str> = t.iter().map(NewTrigger::outcome).collect();
            let reasons: Vec<Option<&str>> = t.iter().map(NewTrigger::reason).collect();
            inserted.extend(
                sqlx::query_scalar::<_, String>(
                    "INSERT INTO sfcdc_triggers (trigger_key, order_id, channel, outcome, reason, created_at)
                     SELECT k, o, $5, oc, r, $6 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS u(k, o, oc, r)
                     ON CONFLICT DO NOTHING RETURNING trigger_key",
                )
                .bind(&keys)
                .bind(&orders)
                .bind(&outcomes)
                .bind(&reasons)
                .bind(&batch.channel)
                .bind(batch.now_ms)
                .fetch_all(&mut *tx)
                .await?,
            );
        }
        let (jobs, duplicate_events) = jobs_of_new_triggers(batch, &inserted);
        let mut created = Vec::new();
        if !jobs.is_empty() {
            let col = |f: fn(&NewJob) -> &str| -> Vec<&str> { jobs.iter().map(|j| f(j)).collect() };
            let accounts: Vec<Option<&str>> =
                jobs.iter().map(|j| j.account_id.as_deref()).collect();
            let replays: Vec<&[u8]> = jobs.iter().map(|j| j.replay_id.as_slice()).collect();
            let max_attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts).collect();
            let rows = sqlx::query(
                "INSERT INTO sfcdc_jobs (job_key, kind, order_id, account_id, trigger_status, trigger_kind, source_channel, source_replay_id,
                    source_event_id, payload, state, attempt, max_attempts, run_at, created_at, updated_at)
                 SELECT k, 'provision', o, a, ts, tk, c, r, e, p, 'available', 0, m, $11, $11, $11
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], $9::text[], $10::int[])
                    AS u(k, o, a, ts, tk, c, r, e, p, m)
                 ON CONFLICT DO NOTHING RETURNING id, job_key",
            )
            .bind(col(|j| &j.key))
            .bind(col(|j| &j.order_id))
            .bind(&accounts)
            .bind(col(|j| &j.trigger_status))
            .bind(col(|j| &j.trigger_kind))
            .bind(col(|j| &j.channel))
            .bind(&replays)
            .bind(col(|j| &j.event_id))
            .bind(col(|j| &j.payload))
            .bind(&max_attempts)
            .bind(batch.now_ms)
            .fetch_all(&mut *tx)
            .await?;
            for r in rows {
                created.push((r.try_get::<i64, _>(0)?, r.try_get::<String, _>(1)?));
            }
        }
        let duplicate_approvals = duplicate_approvals(&jobs, &created);
        let mut quarantined = 0;
        if !batch.quarantine.is_empty() {
            let q = &batch.quarantine;
            let text = |f: fn(&NewQuarantine) -> &str| -> Vec<&str> { q.iter().map(f).collect() };
            let blob = |f: fn(&NewQuarantine) -> &[u8]| -> Vec<&[u8]> { q.iter().map(f).collect() };
            quarantined = sqlx::query(
                "INSERT INTO sfcdc_quarantine (channel, replay_id, schema_id, event_id, payload, reason, kind, created_at, updated_at)
                 SELECT c, r, s, e, p, re, k, $8, $8
                 FROM UNNEST($1::text[], $2::bytea[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[]) AS u(c, r, s, e, p, re, k)
                 ON CONFLICT (channel, replay_id) DO NOTHING",
            )
            .bind(text(|e| &e.channel))
            .bind(blob(|e| &e.replay_id))
            .bind(text(|e| &e.schema_id))
            .bind(text(|e| &e.event_id))
            .bind(blob(|e| &e.payload))
            .bind(text(|e| &e.reason))
            .bind(text(|e| &e.kind))
            .bind(batch.now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        }
        if !batch.resolve_quarantine.is_empty() {
            sqlx::query("UPDATE sfcdc_quarantine SET state = 'resolved', attempts = attempts + 1, updated_at = $1 WHERE id = ANY($2)")
                .bind(batch.now_ms)
                .bind(&batch.resolve_quarantine)
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
        // Delivered with the commit: idle workers everywhere wake for the new jobs, and every
        // instance's cache drops what this batch changed.
        if !created.is_empty() {
            notify::send(&mut tx, &self.scope, notify::JOBS, "").await?;
        }
        for notice in &batch.cache_notices {
            notify::send(&mut tx, &self.scope, notify::CACHE, notice).await?;
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
            .execute(&self.pool)
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
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT trigger_key FROM sfcdc_triggers WHERE trigger_key = ANY($1)",
        )
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    async fn open_approvals(
        &self,
        orders: &[String],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT order_id, trigger_status FROM sfcdc_jobs
             WHERE state IN ('available', 'running', 'polling', 'retryable') AND order_id = ANY($1)",
        )
        .bind(orders)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

recovery::recoveries_on_pool!(PgStore);
super::audit::audit_on_pool!(PgStore);
super::insight::insights_on_pool!(PgStore);

/// Opens a write transaction.
async fn begin_write(
    pool: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin().await
}
