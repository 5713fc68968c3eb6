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

pub mod migrations;
pub mod postgres;
pub mod queue;
pub mod sqlite;

use std::future::Future;

use serde::Serialize;

use crate::decode::ReplayId;

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

/// Where a channel resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "replay_id", rename_all = "snake_case")]
pub enum Position {
    /// Strictly after this replay id.
    After(ReplayId),
    /// From the earliest retained event (set by `checkpoints reset --to earliest`).
    Earliest,
    /// From new events only (set by `checkpoints reset --to latest`).
    Latest,
}

/// A channel's stored position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// The channel.
    pub channel: String,
    /// Where it resumes.
    pub position: Position,
    /// When it was last written, epoch ms.
    pub updated_at: i64,
}

/// The lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run.
    Available,
    /// Claimed by a worker.
    Running,
    /// Submitted; waiting for the fulfilment system.
    Polling,
    /// Failed; will run again.
    Retryable,
    /// Done.
    Completed,
    /// Stopped on purpose.
    Cancelled,
    /// Out of attempts: a dead letter, kept until someone acts.
    Dead,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        JobState::Available,
        JobState::Running,
        JobState::Polling,
        JobState::Retryable,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Dead,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Polling => "polling",
            JobState::Retryable => "retryable",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Dead => "dead",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(s: &str) -> Option<JobState> {
        Self::ALL
            .into_iter()
            .find(|j| j.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether the job still has work ahead.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            JobState::Available | JobState::Running | JobState::Polling | JobState::Retryable
        )
    }
}

/// A job to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Idempotency key (the creating trigger's key).
    pub key: String,
    /// The order.
    pub order_id: String,
    /// Its account, if known.
    pub account_id: Option<String>,
    /// The status that triggered it.
    pub trigger_status: String,
    /// How it was triggered.
    pub trigger_kind: String,
    /// The event's channel.
    pub channel: String,
    /// The event's replay id.
    pub replay_id: Vec<u8>,
    /// The event's id.
    pub event_id: String,
    /// JSON arguments for the worker.
    pub payload: String,
    /// Attempts before it is dead-lettered.
    pub max_attempts: i32,
}

/// An evaluated trigger to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrigger {
    /// Its key.
    pub key: String,
    /// The order.
    pub order_id: String,
    /// `job` or `skipped`.
    pub outcome: &'static str,
    /// The skip reason.
    pub reason: Option<&'static str>,
}

/// An event to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQuarantine {
    /// Its channel.
    pub channel: String,
    /// Its replay id.
    pub replay_id: Vec<u8>,
    /// The schema id it named.
    pub schema_id: String,
    /// Its event id.
    pub event_id: String,
    /// The raw payload.
    pub payload: Vec<u8>,
    /// Why.
    pub reason: String,
    /// A fixed label for the reason.
    pub kind: String,
}

/// Everything one batch writes, in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreBatch {
    /// The channel.
    pub channel: String,
    /// The new position, if it moves.
    pub checkpoint: Option<ReplayId>,
    /// Triggers evaluated.
    pub triggers: Vec<NewTrigger>,
    /// Jobs requested (each keyed by one of `triggers`).
    pub jobs: Vec<NewJob>,
    /// Events to quarantine.
    pub quarantine: Vec<NewQuarantine>,
    /// Quarantine entries this batch re-drove successfully.
    pub resolve_quarantine: Vec<i64>,
    /// The commit time, epoch ms.
    pub now_ms: i64,
}

/// What a batch commit did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Jobs created: `(id, key)`.
    pub created: Vec<(i64, String)>,
    /// Trigger keys already recorded: replayed events.
    pub duplicate_events: Vec<String>,
    /// Job keys not created because the approval already has an open job.
    pub duplicate_approvals: Vec<String>,
    /// Events quarantined (a replayed bad event is quarantined once).
    pub quarantined: usize,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRow {
    /// Id.
    pub id: i64,
    /// Idempotency key.
    pub key: String,
    /// The order.
    pub order_id: String,
    /// Its account.
    pub account_id: Option<String>,
    /// The status that triggered it.
    pub trigger_status: String,
    /// How it was triggered.
    pub trigger_kind: String,
    /// State.
    pub state: JobState,
    /// Attempts made.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Earliest next run, epoch ms.
    pub run_at: i64,
    /// The worker holding the job for a step.
    pub lease_owner: Option<String>,
    /// Until when it holds it, epoch ms.
    pub lease_until: Option<i64>,
    /// The fulfilment operation, once submitted.
    pub operation_id: Option<String>,
    /// How far the current operation got: none yet, `activating`, `submitted`.
    pub phase: Option<String>,
    /// When the current operation was submitted, epoch ms.
    pub submitted_at: Option<i64>,
    /// Polls scheduled for the current operation (the poll backoff grows with them).
    pub polls: i32,
    /// Operations abandoned so far; part of the idempotency key, so a new operation gets a new
    /// key while a retried submit of the same operation reuses its key.
    pub generation: i32,
    /// Progress 0–100, when reported.
    pub progress: Option<i32>,
    /// The fulfilment system's result (JSON), once completed.
    #[serde(serialize_with = "raw_json_opt")]
    pub result: Option<String>,
    /// The external id written back to Salesforce.
    pub external_id: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Every error so far (a JSON array of `{at, attempt, error}`).
    #[serde(serialize_with = "raw_json")]
    pub errors: String,
    /// The source channel.
    pub channel: String,
    /// The source event's replay id (hex).
    pub replay_id: String,
    /// The source event id.
    pub event_id: String,
    /// Worker arguments.
    pub payload: String,
    /// Created, epoch ms.
    pub created_at: i64,
    /// Last changed, epoch ms.
    pub updated_at: i64,
    /// Finished (completed, cancelled or dead), epoch ms.
    pub finished_at: Option<i64>,
}

impl JobRow {
    /// The idempotency key of the current operation: the job's key, then `key/N` for the Nth
    /// operation that replaced an abandoned one.
    pub fn operation_key(&self) -> String {
        if self.generation == 0 {
            self.key.clone()
        } else {
            format!("{}/{}", self.key, self.generation)
        }
    }

    /// The error history with `error` appended for the current attempt.
    pub fn errors_with(&self, error: &str, now_ms: i64) -> String {
        queue::append_error(&self.errors, self.attempt, now_ms, error)
    }
}

/// Serializes stored JSON text as JSON (or as a string if it is not JSON).
pub(crate) fn raw_json<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    match serde_json::from_str::<serde_json::Value>(v) {
        Ok(j) => j.serialize(s),
        Err(_) => s.serialize_str(v),
    }
}

/// [`raw_json`] for an optional value.
fn raw_json_opt<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => raw_json(v, s),
        None => s.serialize_none(),
    }
}

/// A quarantined event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineRow {
    /// Id.
    pub id: i64,
    /// Channel.
    pub channel: String,
    /// Replay id (hex).
    pub replay_id: String,
    /// Schema id.
    pub schema_id: String,
    /// Event id.
    pub event_id: String,
    /// Raw payload.
    #[serde(serialize_with = "hex_bytes")]
    pub payload: Vec<u8>,
    /// Why.
    pub reason: String,
    /// Reason label.
    pub kind: String,
    /// `open` or `resolved`.
    pub state: String,
    /// Re-drive attempts.
    pub attempts: i32,
    /// Quarantined, epoch ms.
    pub created_at: i64,
    /// Last changed, epoch ms.
    pub updated_at: i64,
}

fn hex_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this order.
    pub order_id: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<i64>,
}

/// Counts of jobs and triggers, for summaries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Jobs by state.
    pub jobs: Vec<(String, i64)>,
    /// Triggers by outcome and reason.
    pub triggers: Vec<(String, i64)>,
    /// Open quarantine entries.
    pub quarantined: i64,
}

/// Rows by state, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Jobs by state.
    pub jobs: Vec<(String, i64)>,
    /// Outbox deliveries by state.
    pub deliveries: Vec<(String, i64)>,
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

/// Either backend, chosen by `SFCDC_DATABASE_URL` at run time.
pub enum AnyStore {
    /// SQLite.
    Sqlite(sqlite::SqliteStore),
    /// PostgreSQL.
    Postgres(postgres::PgStore),
}

impl AnyStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs the migrations.
    pub async fn open(url: &str) -> Result<AnyStore, StoreError> {
        let store = if url.starts_with("sqlite:") {
            AnyStore::Sqlite(sqlite::SqliteStore::connect(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            AnyStore::Postgres(postgres::PgStore::connect(url, None).await?)
        } else {
            return Err(StoreError::Config(format!(
                "'{}' is neither sqlite://PATH nor postgres://…",
                redact_url(url)
            )));
        };
        store.migrate().await?;
        Ok(store)
    }
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

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl AnyStore {
    /// [`queue::Queue::claim_jobs`] without the per-order gate: only for measuring what the gate
    /// costs (`sfcdc bench`).
    #[doc(hidden)]
    pub async fn claim_jobs_ungated(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        delegate!(self, s => s.claim_jobs_ungated(owner, limit, now_ms, lease_ms).await)
    }
}

impl Store for AnyStore {
    fn backend(&self) -> &'static str {
        delegate!(self, s => s.backend())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.migrate().await)
    }

    async fn checkpoint(&self, channel: &str) -> Result<Option<Position>, StoreError> {
        delegate!(self, s => s.checkpoint(channel).await)
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        delegate!(self, s => s.checkpoints().await)
    }

    async fn set_checkpoint(
        &self,
        channel: &str,
        position: &Position,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.set_checkpoint(channel, position, now_ms).await)
    }

    async fn commit_batch(&self, batch: &StoreBatch) -> Result<BatchOutcome, StoreError> {
        delegate!(self, s => s.commit_batch(batch).await)
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        delegate!(self, s => s.jobs(filter).await)
    }

    async fn quarantined(&self, open_only: bool) -> Result<Vec<QuarantineRow>, StoreError> {
        delegate!(self, s => s.quarantined(open_only).await)
    }

    async fn quarantine_entry(&self, id: i64) -> Result<Option<QuarantineRow>, StoreError> {
        delegate!(self, s => s.quarantine_entry(id).await)
    }

    async fn quarantine_retry_failed(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.quarantine_retry_failed(id, reason, now_ms).await)
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        delegate!(self, s => s.counts().await)
    }

    async fn state_counts(&self) -> Result<StateCounts, StoreError> {
        delegate!(self, s => s.state_counts().await)
    }
}

impl queue::Queue for AnyStore {
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        delegate!(self, s => s.claim_jobs(owner, limit, now_ms, lease_ms).await)
    }

    async fn update_jobs(
        &self,
        updates: &[queue::JobUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        delegate!(self, s => s.update_jobs(updates, now_ms).await)
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        delegate!(self, s => s.job(id).await)
    }

    async fn retry_job(&self, id: i64, now_ms: i64) -> Result<JobRow, queue::ActionError> {
        delegate!(self, s => s.retry_job(id, now_ms).await)
    }

    async fn cancel_job(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<JobRow, queue::ActionError> {
        delegate!(self, s => s.cancel_job(id, reason, now_ms).await)
    }

    async fn purge(
        &self,
        before_ms: i64,
        triggers_before_ms: i64,
    ) -> Result<queue::Purged, StoreError> {
        delegate!(self, s => s.purge(before_ms, triggers_before_ms).await)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<queue::DeliveryRow>, StoreError> {
        delegate!(self, s => s.claim_deliveries(owner, limit, now_ms, lease_ms).await)
    }

    async fn end_deliveries(
        &self,
        updates: &[queue::DeliveryUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        delegate!(self, s => s.end_deliveries(updates, now_ms).await)
    }

    async fn deliveries(
        &self,
        filter: &queue::DeliveryFilter,
    ) -> Result<Vec<queue::DeliveryRow>, StoreError> {
        delegate!(self, s => s.deliveries(filter).await)
    }

    async fn delivery(&self, id: i64) -> Result<Option<queue::DeliveryRow>, StoreError> {
        delegate!(self, s => s.delivery(id).await)
    }

    async fn retry_delivery(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<queue::DeliveryRow, queue::ActionError> {
        delegate!(self, s => s.retry_delivery(id, now_ms).await)
    }

    async fn cancel_delivery(
        &self,
        id: i64,
        now_ms: i64,
    ) -> Result<queue::DeliveryRow, queue::ActionError> {
        delegate!(self, s => s.cancel_delivery(id, now_ms).await)
    }
}

/// Maps a stored checkpoint row to a position.
fn position(replay_id: Option<Vec<u8>>, preset: Option<String>) -> Result<Position, StoreError> {
    match (replay_id, preset.as_deref()) {
        (Some(r), _) if !r.is_empty() => Ok(Position::After(ReplayId::new(r))),
        (_, Some("earliest")) => Ok(Position::Earliest),
        (_, Some("latest")) => Ok(Position::Latest),
        (r, p) => Err(StoreError::Corrupt(format!(
            "checkpoint with replay id {r:?} and preset {p:?}"
        ))),
    }
}

/// `(replay_id, preset)` columns for a position.
fn position_columns(p: &Position) -> (Option<Vec<u8>>, Option<&'static str>) {
    match p {
        Position::After(r) => (Some(r.as_bytes().to_vec()), None),
        Position::Earliest => (None, Some("earliest")),
        Position::Latest => (None, Some("latest")),
    }
}

/// Splits triggers into those this batch newly recorded and replays, and keeps the jobs of the
/// new ones only.
fn jobs_of_new_triggers<'a>(
    batch: &'a StoreBatch,
    inserted: &std::collections::HashSet<String>,
) -> (Vec<&'a NewJob>, Vec<String>) {
    let replays = batch
        .triggers
        .iter()
        .filter(|t| !inserted.contains(&t.key))
        .map(|t| t.key.clone())
        .collect();
    let jobs = batch
        .jobs
        .iter()
        .filter(|j| inserted.contains(&j.key))
        .collect();
    (jobs, replays)
}

/// Maps a row of `JOB_COLUMNS` to a job, on either backend.
pub(crate) fn job_from_row<R>(r: &R) -> Result<JobRow, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = r.try_get("state")?;
    let replay: Vec<u8> = r.try_get("source_replay_id")?;
    Ok(JobRow {
        id: r.try_get("id")?,
        key: r.try_get("job_key")?,
        order_id: r.try_get("order_id")?,
        account_id: r.try_get("account_id")?,
        trigger_status: r.try_get("trigger_status")?,
        trigger_kind: r.try_get("trigger_kind")?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("job state {state:?}")))?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        run_at: r.try_get("run_at")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_until: r.try_get("lease_until")?,
        operation_id: r.try_get("operation_id")?,
        phase: r.try_get("phase")?,
        submitted_at: r.try_get("submitted_at")?,
        polls: r.try_get("polls")?,
        generation: r.try_get("generation")?,
        progress: r.try_get("progress")?,
        result: r.try_get("result")?,
        external_id: r.try_get("external_id")?,
        last_error: r.try_get("last_error")?,
        errors: r.try_get("errors")?,
        channel: r.try_get("source_channel")?,
        replay_id: hex::encode(replay),
        event_id: r.try_get("source_event_id")?,
        payload: r.try_get("payload")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

/// Maps a row of `QUARANTINE_COLUMNS` to an entry, on either backend.
fn quarantine_from_row<R>(r: &R) -> Result<QuarantineRow, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let replay: Vec<u8> = r.try_get("replay_id")?;
    Ok(QuarantineRow {
        id: r.try_get("id")?,
        channel: r.try_get("channel")?,
        replay_id: hex::encode(replay),
        schema_id: r.try_get("schema_id")?,
        event_id: r.try_get("event_id")?,
        payload: r.try_get("payload")?,
        reason: r.try_get("reason")?,
        kind: r.try_get("kind")?,
        state: r.try_get("state")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
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
