//! The job queue and the notification outbox, on the same tables and backends as the store.
//!
//! **Claims are leases.** A worker claims due jobs for one step each: the lease names the claim
//! (owner) until a deadline. Every later write names the owner too and does nothing once the
//! lease is lost (expired and re-claimed, or the job cancelled), so a slow or dead worker never
//! overwrites the work of the one that replaced it. A job whose lease expires mid-step is claimed
//! again; its stored operation id means the next worker polls instead of submitting again, and its
//! idempotency key (job key and generation) makes a repeated submit return the first operation.
//!
//! **Per-order ordering.** Only the oldest open job of an order is claimable, so jobs of one
//! order run one at a time, in creation order. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`;
//! SQLite with one `UPDATE … RETURNING` under its single writer.
//!
//! **Attempts.** Claiming an `available` or `retryable` job starts an attempt; claiming a
//! `polling` job, or re-claiming a `running` one whose worker died, continues it. Polling jobs
//! hold no lease between polls, so a thousand pending operations hold no worker.
//!
//! **Batched writes.** Step updates ([`Queue::update_jobs`]) and delivery outcomes are applied
//! many to a transaction. A job's final update inserts its notification deliveries in the same
//! transaction (the outbox); each delivery then has its own lease, retries and dead letter.
//!
//! The SQL is written once, with `$N` parameters (SQLite reads them as `?N`), and implemented
//! for both backends by one macro.

use std::future::Future;

use serde::Serialize;

use super::{JobRow, JobState, StoreError};

/// How a job's step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// Done.
    Completed {
        /// The fulfilment system's result (JSON).
        result: String,
        /// The external id written back to Salesforce.
        external_id: Option<String>,
    },
    /// Stopped without error (the order no longer qualifies).
    Cancelled {
        /// Why.
        reason: String,
    },
    /// Out of attempts, or a permanent failure: a dead letter.
    Dead {
        /// The last error.
        error: String,
    },
    /// A new attempt later.
    Retry {
        /// When, epoch ms.
        run_at: i64,
        /// The error of this attempt.
        error: String,
        /// The operation is abandoned (it failed or timed out): the next attempt submits a new
        /// one, under a new idempotency key.
        new_operation: bool,
    },
}

/// An operation's state after a submit or a poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollUpdate {
    /// The fulfilment operation.
    pub operation_id: String,
    /// Progress 0–100, if reported.
    pub progress: Option<i32>,
    /// When to poll next, epoch ms.
    pub run_at: i64,
    /// Why the last poll failed, if it did (polls are retried without using an attempt).
    pub error: Option<String>,
}

/// A change to a leased job: applied only while `owner` still holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUpdate {
    /// The job.
    pub id: i64,
    /// The lease holder.
    pub owner: String,
    /// What changes.
    pub change: JobChange,
}

/// What a [`JobUpdate`] changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobChange {
    /// The step reached a phase (`activating`: Salesforce is about to say so).
    Phase(&'static str),
    /// Submitted and already finished: store the operation, keeping the lease, before its
    /// outcome is written to Salesforce. A step that dies after that write resumes by polling
    /// the operation, instead of finding its own write-back and cancelling the job.
    Operation(String),
    /// Submitted, or still pending: store the operation and release the job until `run_at`.
    Poll(PollUpdate),
    /// The step ended. `errors` is the job's new error history; `deliveries` are written in the
    /// same transaction.
    End {
        /// How.
        end: JobEnd,
        /// The error history (JSON array) after this step.
        errors: String,
        /// Notifications to send.
        deliveries: Vec<NewDelivery>,
    },
}

/// A notification to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// `webhook` or `github`.
    pub notifier: String,
    /// `completed` or `dead`.
    pub event: String,
    /// What to send (JSON).
    pub payload: String,
    /// Attempts before it is dead-lettered.
    pub max_attempts: i32,
}

/// The lifecycle of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting to be sent (or to be sent again).
    Pending,
    /// Sent.
    Delivered,
    /// Out of attempts.
    Dead,
    /// Stopped by an operator.
    Cancelled,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Dead,
        DeliveryState::Cancelled,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// Parses a stored or user-given name.
    pub fn parse(s: &str) -> Option<DeliveryState> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }
}

/// A stored delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRow {
    /// Id.
    pub id: i64,
    /// The job it reports on.
    pub job_id: i64,
    /// The notifier.
    pub notifier: String,
    /// The job event.
    pub event: String,
    /// What is sent (JSON).
    #[serde(serialize_with = "super::raw_json")]
    pub payload: String,
    /// State.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempt: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Earliest next attempt, epoch ms.
    pub run_at: i64,
    /// The last error.
    pub last_error: Option<String>,
    /// Every error so far (JSON array).
    #[serde(serialize_with = "super::raw_json")]
    pub errors: String,
    /// Created, epoch ms.
    pub created_at: i64,
    /// Delivered, epoch ms.
    pub delivered_at: Option<i64>,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEnd {
    /// Sent.
    Delivered,
    /// Try again later.
    Retry {
        /// When, epoch ms.
        run_at: i64,
        /// Why this attempt failed.
        error: String,
    },
    /// Out of attempts, or refused for good.
    Dead {
        /// The last error.
        error: String,
    },
}

/// The end of a leased delivery attempt: applied only while `owner` still holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    /// The delivery.
    pub id: i64,
    /// The lease holder.
    pub owner: String,
    /// How the attempt ended.
    pub end: DeliveryEnd,
    /// The error history (JSON array) after this attempt.
    pub errors: String,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this job's.
    pub job_id: Option<i64>,
    /// At most this many (newest first).
    pub limit: Option<i64>,
}

/// Why an operator action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such row.
    #[error("there is no {0} with that id")]
    NotFound(&'static str),
    /// The action does not apply in this state.
    #[error("the {what} is {state}: {hint}")]
    WrongState {
        /// Job or delivery.
        what: &'static str,
        /// Its state.
        state: String,
        /// What is possible.
        hint: &'static str,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rows removed by retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Completed or cancelled jobs.
    pub jobs: u64,
    /// Delivered or cancelled deliveries.
    pub deliveries: u64,
    /// Evaluated triggers.
    pub triggers: u64,
}

/// The worker's and the outbox's contract, met by both backends.
pub trait Queue: Send + Sync + 'static {
    /// Claims up to `limit` due jobs for one step each, under a lease held by `owner` until
    /// `now_ms + lease_ms`. Only the oldest open job of an order is ever due.
    fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<JobRow>, StoreError>> + Send;

    /// Applies updates in one transaction; each says whether its lease still held.
    fn update_jobs(
        &self,
        updates: &[JobUpdate],
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// One job.
    fn job(&self, id: i64) -> impl Future<Output = Result<Option<JobRow>, StoreError>> + Send;

    /// Puts a dead, cancelled or retryable job back to work with fresh attempts and a fresh
    /// operation.
    fn retry_job(
        &self,
        id: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<JobRow, ActionError>> + Send;

    /// Cancels an open job; a worker holding it loses its lease.
    fn cancel_job(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<JobRow, ActionError>> + Send;

    /// Deletes completed and cancelled jobs and delivered and cancelled deliveries last changed
    /// before `before_ms`, and evaluated triggers recorded before `triggers_before_ms` (a trigger
    /// must outlive the event retention, or a replay could create its job again). Dead letters
    /// stay until someone acts.
    fn purge(
        &self,
        before_ms: i64,
        triggers_before_ms: i64,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;

    /// Claims up to `limit` due deliveries, each for one attempt.
    fn claim_deliveries(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<DeliveryRow>, StoreError>> + Send;

    /// Ends delivery attempts in one transaction; each says whether its lease still held.
    fn end_deliveries(
        &self,
        updates: &[DeliveryUpdate],
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Lists deliveries, newest first.
    fn deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> impl Future<Output = Result<Vec<DeliveryRow>, StoreError>> + Send;

    /// One delivery.
    fn delivery(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<DeliveryRow>, StoreError>> + Send;

    /// Puts a dead or cancelled delivery back with fresh attempts.
    fn retry_delivery(
        &self,
        id: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<DeliveryRow, ActionError>> + Send;

    /// Cancels a pending delivery.
    fn cancel_delivery(
        &self,
        id: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<DeliveryRow, ActionError>> + Send;
}

/// The open job states, as SQL.
const OPEN: &str = "('available', 'running', 'polling', 'retryable')";

/// Appends an error to a JSON history (kept as text in both backends).
pub fn append_error(history: &str, attempt: i32, at_ms: i64, error: &str) -> String {
    let mut v: Vec<serde_json::Value> = serde_json::from_str(history).unwrap_or_default();
    v.push(serde_json::json!({"at": at_ms, "attempt": attempt, "error": error}));
    // Keep the history bounded: the first errors and the most recent ones tell the story.
    if v.len() > 50 {
        v.drain(10..v.len() - 40);
    }
    serde_json::Value::Array(v).to_string()
}

/// The statements of the queue, written once with `$N` parameters (SQLite reads them as `?N`).
pub(super) mod sql {
    use super::OPEN;

    /// Claims due jobs. `{skip}` is `FOR UPDATE SKIP LOCKED` on PostgreSQL. A claim of an
    /// `available` or `retryable` job starts an attempt; re-claiming a `running` job whose worker
    /// died, or a `polling` job, continues the attempt. The `NOT EXISTS` is the per-order gate
    /// (left out only to measure what it costs).
    pub fn claim_jobs(skip: &str, gated: bool) -> String {
        let gate = if gated {
            format!(
                "AND NOT EXISTS (
                    SELECT 1 FROM sfcdc_jobs e WHERE e.order_id = j.order_id AND e.id < j.id AND e.state IN {OPEN})"
            )
        } else {
            String::new()
        };
        format!(
            "UPDATE sfcdc_jobs SET lease_owner = $1, lease_until = $2, updated_at = $3,
                attempt = CASE WHEN state IN ('available', 'retryable') THEN attempt + 1 ELSE attempt END,
                state = CASE WHEN state IN ('available', 'retryable') THEN 'running' ELSE state END
             WHERE id IN (
                SELECT j.id FROM sfcdc_jobs j
                WHERE j.state IN {OPEN} AND j.run_at <= $3 AND (j.lease_until IS NULL OR j.lease_until < $3)
                  {gate}
                ORDER BY j.run_at, j.id LIMIT $4 {skip})
             RETURNING {cols}",
            cols = crate::store::JOB_COLUMNS,
        )
    }

    /// Rows per multi-row statement: far under both backends' bound-parameter limits.
    pub const ROWS_PER_STATEMENT: usize = 500;

    /// Batched updates join the jobs to a `VALUES` list (`v.column1` is the id, `column2` the
    /// lease owner) and change only the rows whose lease still holds.
    pub const LEASED_ROWS: &str = ") AS v WHERE sfcdc_jobs.id = v.column1 AND sfcdc_jobs.lease_owner = v.column2 RETURNING id";

    /// `v`: id, owner, phase. Followed by the time.
    pub const PHASE_SET: &str = "UPDATE sfcdc_jobs SET phase = v.column3, updated_at = ";

    /// `v`: id, owner, operation. Followed by the time, twice.
    pub const OPERATION_SET: &str =
        "UPDATE sfcdc_jobs SET operation_id = v.column3, phase = 'submitted',
            submitted_at = coalesce(submitted_at, ";

    /// `v`: id, owner, operation, progress, next run, error. Followed by the time, twice.
    pub const POLL_SET: &str = "UPDATE sfcdc_jobs SET state = 'polling', operation_id = v.column3,
            progress = coalesce(v.column4, progress), polls = polls + 1, run_at = v.column5,
            last_error = coalesce(v.column6, last_error), phase = 'submitted',
            lease_owner = NULL, lease_until = NULL, submitted_at = coalesce(submitted_at, ";

    /// `v`: id, owner, state, run_at, error, errors, result, external id, finished at, and 1
    /// when the operation is abandoned (the next attempt submits anew). Followed by the time.
    pub const END_SET: &str = "UPDATE sfcdc_jobs SET state = v.column3, run_at = coalesce(v.column4, run_at),
            last_error = coalesce(v.column5, last_error), errors = v.column6, result = coalesce(v.column7, result),
            external_id = coalesce(v.column8, external_id), finished_at = v.column9,
            progress = CASE WHEN v.column3 = 'completed' THEN 100 WHEN v.column10 = 1 THEN NULL ELSE progress END,
            generation = generation + v.column10,
            operation_id = CASE WHEN v.column10 = 1 THEN NULL ELSE operation_id END,
            submitted_at = CASE WHEN v.column10 = 1 THEN NULL ELSE submitted_at END,
            polls = CASE WHEN v.column10 = 1 THEN 0 ELSE polls END,
            phase = CASE WHEN v.column10 = 1 AND phase = 'submitted' THEN 'activating' ELSE phase END,
            lease_owner = NULL, lease_until = NULL, updated_at = ";

    pub const INSERT_DELIVERIES: &str = "INSERT INTO sfcdc_deliveries
            (job_id, notifier, event, payload, state, attempt, max_attempts, run_at, created_at, updated_at) ";

    pub fn job() -> String {
        format!(
            "SELECT {} FROM sfcdc_jobs WHERE id = $1",
            crate::store::JOB_COLUMNS
        )
    }

    /// A manual retry: fresh attempts, and a fresh operation under a new idempotency key. The
    /// phase stays, so a job that had written `Activating` recognises it as its own.
    pub const RETRY_JOB: &str = "UPDATE sfcdc_jobs SET state = 'available', attempt = 0, run_at = $1,
            generation = generation + 1, operation_id = NULL, submitted_at = NULL, polls = 0, progress = NULL,
            phase = CASE WHEN phase = 'submitted' THEN 'activating' ELSE phase END,
            finished_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $1
         WHERE id = $2 AND state IN ('dead', 'cancelled', 'retryable')";

    pub fn cancel_job() -> String {
        format!(
            "UPDATE sfcdc_jobs SET state = 'cancelled', last_error = $1, errors = $2, finished_at = $3,
                lease_owner = NULL, lease_until = NULL, updated_at = $3
             WHERE id = $4 AND state IN {OPEN}"
        )
    }

    pub const PURGE_JOBS: &str =
        "DELETE FROM sfcdc_jobs WHERE state IN ('completed', 'cancelled') AND updated_at < $1";
    pub const PURGE_DELIVERIES: &str = "DELETE FROM sfcdc_deliveries WHERE state IN ('delivered', 'cancelled') AND updated_at < $1";
    pub const PURGE_TRIGGERS: &str = "DELETE FROM sfcdc_triggers WHERE created_at < $1";

    pub fn claim_deliveries(skip: &str) -> String {
        format!(
            "UPDATE sfcdc_deliveries SET lease_owner = $1, lease_until = $2, attempt = attempt + 1, updated_at = $3
             WHERE id IN (
                SELECT d.id FROM sfcdc_deliveries d
                WHERE d.state = 'pending' AND d.run_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3)
                ORDER BY d.run_at, d.id LIMIT $4 {skip})
             RETURNING {cols}",
            cols = super::DELIVERY_COLUMNS,
        )
    }

    /// `v`: id, owner, state, run_at, error, errors, delivered at. Followed by the time.
    pub const END_DELIVERY_SET: &str = "UPDATE sfcdc_deliveries SET state = v.column3,
            run_at = coalesce(v.column4, run_at), last_error = coalesce(v.column5, last_error),
            errors = v.column6, delivered_at = v.column7, lease_owner = NULL, lease_until = NULL, updated_at = ";

    /// [`LEASED_ROWS`] for deliveries.
    pub const LEASED_DELIVERIES: &str = ") AS v WHERE sfcdc_deliveries.id = v.column1 AND sfcdc_deliveries.lease_owner = v.column2 RETURNING id";

    pub fn deliveries() -> String {
        format!(
            "SELECT {} FROM sfcdc_deliveries WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) AND (CAST($2 AS BIGINT) IS NULL OR job_id = $2)
             ORDER BY id DESC LIMIT $3",
            super::DELIVERY_COLUMNS
        )
    }

    pub fn delivery() -> String {
        format!(
            "SELECT {} FROM sfcdc_deliveries WHERE id = $1",
            super::DELIVERY_COLUMNS
        )
    }

    pub const RETRY_DELIVERY: &str =
        "UPDATE sfcdc_deliveries SET state = 'pending', attempt = 0, run_at = $1,
            lease_owner = NULL, lease_until = NULL, updated_at = $1
         WHERE id = $2 AND state IN ('dead', 'cancelled')";

    pub const CANCEL_DELIVERY: &str =
        "UPDATE sfcdc_deliveries SET state = 'cancelled', lease_owner = NULL,
            lease_until = NULL, updated_at = $1 WHERE id = $2 AND state = 'pending'";
}

/// Splits `items` into consecutive runs in which no id repeats, so that a batch applied one
/// statement per kind of change still applies two changes of one row in order.
pub(super) fn rounds<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut seen = std::collections::HashSet::new();
        let end = items[start..]
            .iter()
            .position(|x| !seen.insert(id(x)))
            .map_or(items.len(), |n| start + n);
        out.push(&items[start..end]);
        start = end;
    }
    out
}

/// The columns of a job end, bound in [`sql::END`]'s order.
pub(super) struct EndColumns<'a> {
    pub state: &'static str,
    pub run_at: Option<i64>,
    pub error: Option<&'a str>,
    pub result: Option<&'a str>,
    pub external_id: Option<&'a str>,
    pub finished_at: Option<i64>,
    pub new_operation: i32,
}

impl JobEnd {
    pub(super) fn columns(&self, now_ms: i64) -> EndColumns<'_> {
        let base = EndColumns {
            state: "",
            run_at: None,
            error: None,
            result: None,
            external_id: None,
            finished_at: Some(now_ms),
            new_operation: 0,
        };
        match self {
            JobEnd::Completed {
                result,
                external_id,
            } => EndColumns {
                state: "completed",
                result: Some(result),
                external_id: external_id.as_deref(),
                ..base
            },
            JobEnd::Cancelled { reason } => EndColumns {
                state: "cancelled",
                error: Some(reason),
                ..base
            },
            JobEnd::Dead { error } => EndColumns {
                state: "dead",
                error: Some(error),
                ..base
            },
            JobEnd::Retry {
                run_at,
                error,
                new_operation,
            } => EndColumns {
                state: "retryable",
                run_at: Some(*run_at),
                error: Some(error),
                finished_at: None,
                new_operation: i32::from(*new_operation),
                ..base
            },
        }
    }
}

impl DeliveryEnd {
    /// `(state, run_at, error, delivered_at)`.
    pub(super) fn columns(
        &self,
        now_ms: i64,
    ) -> (&'static str, Option<i64>, Option<&str>, Option<i64>) {
        match self {
            DeliveryEnd::Delivered => ("delivered", None, None, Some(now_ms)),
            DeliveryEnd::Retry { run_at, error } => ("pending", Some(*run_at), Some(error), None),
            DeliveryEnd::Dead { error } => ("dead", None, Some(error), None),
        }
    }
}

/// Why a job cannot be retried, if it cannot.
pub(super) fn check_retryable_job(job: &JobRow) -> Result<(), ActionError> {
    if matches!(
        job.state,
        JobState::Dead | JobState::Cancelled | JobState::Retryable
    ) {
        Ok(())
    } else {
        Err(ActionError::WrongState {
            what: "job",
            state: job.state.as_str().into(),
            hint: "only dead, cancelled or retryable jobs can be retried",
        })
    }
}

/// Why a job cannot be cancelled, if it cannot.
pub(super) fn check_cancellable_job(job: &JobRow) -> Result<(), ActionError> {
    if job.state.is_open() {
        Ok(())
    } else {
        Err(ActionError::WrongState {
            what: "job",
            state: job.state.as_str().into(),
            hint: "only open jobs can be cancelled",
        })
    }
}

/// The state changed between reading and writing.
pub(super) fn raced(what: &'static str) -> ActionError {
    ActionError::WrongState {
        what,
        state: "changing".into(),
        hint: "its state changed meanwhile; look again",
    }
}

/// Implements [`Queue`] for a backend: `$store` has a `pool` of `$db`; `$sql` turns the shared
/// `$N` SQL into the backend's; `$skip` is appended to claim subqueries; `$begin` opens a write
/// transaction on the pool.
macro_rules! impl_queue {
    ($store:ty, $db:ty, sql = $sql:path, skip = $skip:expr, begin = $begin:path) => {
        impl $store {
            /// [`Queue::claim_jobs`] without the per-order gate: only for measuring what the
            /// gate costs (`sfcdc bench`).
            #[doc(hidden)]
            pub async fn claim_jobs_ungated(
                &self,
                owner: &str,
                limit: i64,
                now_ms: i64,
                lease_ms: i64,
            ) -> Result<Vec<$crate::store::JobRow>, $crate::store::StoreError> {
                self.claim(owner, limit, now_ms, lease_ms, false).await
            }

            async fn claim(
                &self,
                owner: &str,
                limit: i64,
                now_ms: i64,
                lease_ms: i64,
                gated: bool,
            ) -> Result<Vec<$crate::store::JobRow>, $crate::store::StoreError> {
                let q = $sql(&$crate::store::queue::sql::claim_jobs($skip, gated));
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(owner)
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                let mut jobs = rows
                    .iter()
                    .map($crate::store::job_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                jobs.sort_by_key(|j| j.id);
                Ok(jobs)
            }

            /// An operator action on one delivery: checks its state, applies `statement` (bound
            /// to `now_ms` and `id`, guarded by the same state in SQL), and returns the result.
            async fn delivery_action(
                &self,
                id: i64,
                now_ms: i64,
                allowed: fn($crate::store::queue::DeliveryState) -> bool,
                hint: &'static str,
                statement: &str,
            ) -> Result<$crate::store::queue::DeliveryRow, $crate::store::queue::ActionError> {
                use $crate::store::queue::{ActionError, Queue, raced};
                let d = self
                    .delivery(id)
                    .await?
                    .ok_or(ActionError::NotFound("delivery"))?;
                if !allowed(d.state) {
                    return Err(ActionError::WrongState {
                        what: "delivery",
                        state: d.state.as_str().into(),
                        hint,
                    });
                }
                let r = sqlx::query(sqlx::AssertSqlSafe($sql(statement)))
                    .bind(now_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from)?;
                if r.rows_affected() != 1 {
                    return Err(raced("delivery"));
                }
                self.delivery(id)
                    .await?
                    .ok_or(ActionError::NotFound("delivery"))
            }
        }

        impl $crate::store::queue::Queue for $store {
            async fn claim_jobs(
                &self,
                owner: &str,
                limit: i64,
                now_ms: i64,
                lease_ms: i64,
            ) -> Result<Vec<$crate::store::JobRow>, $crate::store::StoreError> {
                self.claim(owner, limit, now_ms, lease_ms, true).await
            }

            async fn update_jobs(
                &self,
                updates: &[$crate::store::queue::JobUpdate],
                now_ms: i64,
            ) -> Result<Vec<bool>, $crate::store::StoreError> {
                use std::collections::HashSet;

                use sqlx::{QueryBuilder, Row};

                use $crate::store::queue::{JobChange, sql};
                let mut tx = $begin(&self.pool).await?;
                let mut held = Vec::with_capacity(updates.len());
                for round in $crate::store::queue::rounds(updates, |u| u.id) {
                    let mut held_ids: HashSet<i64> = HashSet::new();
                    // One pass, matched exhaustively: a new kind of change cannot go unwritten.
                    let (mut phases, mut operations, mut polls, mut ends) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    for u in round {
                        match &u.change {
                            JobChange::Phase(p) => phases.push((u, *p)),
                            JobChange::Operation(op) => operations.push((u, op)),
                            JobChange::Poll(p) => polls.push((u, p)),
                            JobChange::End {
                                end,
                                errors,
                                deliveries,
                            } => ends.push((u, end.columns(now_ms), errors, deliveries)),
                        }
                    }
                    for chunk in phases.chunks(sql::ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<$db>::new(sql::PHASE_SET);
                        q.push_bind(now_ms).push(" FROM (");
                        q.push_values(chunk, |mut b, (u, phase)| {
                            b.push_bind(u.id).push_bind(&u.owner).push_bind(*phase);
                        });
                        q.push(sql::LEASED_ROWS);
                        for r in q.build().fetch_all(&mut *tx).await? {
                            held_ids.insert(r.try_get(0)?);
                        }
                    }
                    for chunk in operations.chunks(sql::ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<$db>::new(sql::OPERATION_SET);
                        q.push_bind(now_ms).push("), updated_at = ").push_bind(now_ms).push(" FROM (");
                        q.push_values(chunk, |mut b, (u, op)| {
                            b.push_bind(u.id).push_bind(&u.owner).push_bind(op.as_str());
                        });
                        q.push(sql::LEASED_ROWS);
                        for r in q.build().fetch_all(&mut *tx).await? {
                            held_ids.insert(r.try_get(0)?);
                        }
                    }
                    for chunk in polls.chunks(sql::ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<$db>::new(sql::POLL_SET);
                        q.push_bind(now_ms).push("), updated_at = ").push_bind(now_ms).push(" FROM (");
                        q.push_values(chunk, |mut b, (u, p)| {
                            b.push_bind(u.id)
                                .push_bind(&u.owner)
                                .push_bind(&p.operation_id)
                                .push_bind(p.progress)
                                .push_bind(p.run_at)
                                .push_bind(p.error.as_deref());
                        });
                        q.push(sql::LEASED_ROWS);
                        for r in q.build().fetch_all(&mut *tx).await? {
                            held_ids.insert(r.try_get(0)?);
                        }
                    }
                    for chunk in ends.chunks(sql::ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<$db>::new(sql::END_SET);
                        q.push_bind(now_ms).push(" FROM (");
                        q.push_values(chunk, |mut b, (u, c, errors, _)| {
                            b.push_bind(u.id)
                                .push_bind(&u.owner)
                                .push_bind(c.state)
                                .push_bind(c.run_at)
                                .push_bind(c.error)
                                .push_bind(errors.as_str())
                                .push_bind(c.result)
                                .push_bind(c.external_id)
                                .push_bind(c.finished_at)
                                .push_bind(c.new_operation);
                        });
                        q.push(sql::LEASED_ROWS);
                        let mut ended = HashSet::new();
                        for r in q.build().fetch_all(&mut *tx).await? {
                            let id: i64 = r.try_get(0)?;
                            ended.insert(id);
                            held_ids.insert(id);
                        }
                        // The outbox: deliveries of the jobs whose end was recorded.
                        let deliveries: Vec<_> = chunk
                            .iter()
                            .filter(|(u, ..)| ended.contains(&u.id))
                            .flat_map(|(u, _, _, d)| d.iter().map(move |d| (u.id, d)))
                            .collect();
                        for rows in deliveries.chunks(sql::ROWS_PER_STATEMENT) {
                            let mut q = QueryBuilder::<$db>::new(sql::INSERT_DELIVERIES);
                            q.push_values(rows, |mut b, (job_id, d)| {
                                b.push_bind(*job_id)
                                    .push_bind(&d.notifier)
                                    .push_bind(&d.event)
                                    .push_bind(&d.payload)
                                    .push_bind("pending")
                                    .push_bind(0i32)
                                    .push_bind(d.max_attempts)
                                    .push_bind(now_ms)
                                    .push_bind(now_ms)
                                    .push_bind(now_ms);
                            });
                            q.push(" ON CONFLICT DO NOTHING");
                            q.build().execute(&mut *tx).await?;
                        }
                    }
                    held.extend(round.iter().map(|u| held_ids.contains(&u.id)));
                }
                tx.commit().await?;
                Ok(held)
            }

            async fn job(
                &self,
                id: i64,
            ) -> Result<Option<$crate::store::JobRow>, $crate::store::StoreError> {
                let q = $sql(&$crate::store::queue::sql::job());
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map($crate::store::job_from_row).transpose()
            }

            async fn retry_job(
                &self,
                id: i64,
                now_ms: i64,
            ) -> Result<$crate::store::JobRow, $crate::store::queue::ActionError> {
                use $crate::store::queue::{ActionError, raced, sql};
                let job = self.job(id).await?.ok_or(ActionError::NotFound("job"))?;
                $crate::store::queue::check_retryable_job(&job)?;
                let r = sqlx::query(sqlx::AssertSqlSafe($sql(sql::RETRY_JOB)))
                    .bind(now_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await;
                match r {
                    Ok(r) if r.rows_affected() == 1 => {}
                    Ok(_) => return Err(raced("job")),
                    // One open job per approval: another job for it is open already.
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        return Err(ActionError::WrongState {
                            what: "job",
                            state: job.state.as_str().into(),
                            hint: "another job for the same order and status is open; retry or cancel that one",
                        });
                    }
                    Err(e) => return Err(ActionError::Store(e.into())),
                }
                self.job(id).await?.ok_or(ActionError::NotFound("job"))
            }

            async fn cancel_job(
                &self,
                id: i64,
                reason: &str,
                now_ms: i64,
            ) -> Result<$crate::store::JobRow, $crate::store::queue::ActionError> {
                use $crate::store::queue::{ActionError, append_error, raced, sql};
                let job = self.job(id).await?.ok_or(ActionError::NotFound("job"))?;
                $crate::store::queue::check_cancellable_job(&job)?;
                let errors = append_error(&job.errors, job.attempt, now_ms, reason);
                let r = sqlx::query(sqlx::AssertSqlSafe($sql(&sql::cancel_job())))
                    .bind(reason)
                    .bind(errors)
                    .bind(now_ms)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::store::StoreError::from)?;
                if r.rows_affected() != 1 {
                    return Err(raced("job"));
                }
                self.job(id).await?.ok_or(ActionError::NotFound("job"))
            }

            async fn purge(
                &self,
                before_ms: i64,
                triggers_before_ms: i64,
            ) -> Result<$crate::store::queue::Purged, $crate::store::StoreError> {
                use $crate::store::queue::sql;
                let mut removed = [0u64; 3];
                for (n, (q, cutoff)) in [
                    (sql::PURGE_JOBS, before_ms),
                    (sql::PURGE_DELIVERIES, before_ms),
                    (sql::PURGE_TRIGGERS, triggers_before_ms),
                ]
                .into_iter()
                .enumerate()
                {
                    removed[n] = sqlx::query(sqlx::AssertSqlSafe($sql(q)))
                        .bind(cutoff)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                Ok($crate::store::queue::Purged {
                    jobs: removed[0],
                    deliveries: removed[1],
                    triggers: removed[2],
                })
            }

            async fn claim_deliveries(
                &self,
                owner: &str,
                limit: i64,
                now_ms: i64,
                lease_ms: i64,
            ) -> Result<Vec<$crate::store::queue::DeliveryRow>, $crate::store::StoreError> {
                let q = $sql(&$crate::store::queue::sql::claim_deliveries($skip));
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(owner)
                    .bind(now_ms + lease_ms)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out = rows
                    .iter()
                    .map($crate::store::queue::delivery_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                out.sort_by_key(|d| d.id);
                Ok(out)
            }

            async fn end_deliveries(
                &self,
                updates: &[$crate::store::queue::DeliveryUpdate],
                now_ms: i64,
            ) -> Result<Vec<bool>, $crate::store::StoreError> {
                use std::collections::HashSet;

                use sqlx::{QueryBuilder, Row};

                use $crate::store::queue::sql;
                let mut tx = $begin(&self.pool).await?;
                let mut held = Vec::with_capacity(updates.len());
                for round in $crate::store::queue::rounds(updates, |u| u.id) {
                    let mut held_ids: HashSet<i64> = HashSet::new();
                    for chunk in round.chunks(sql::ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<$db>::new(sql::END_DELIVERY_SET);
                        q.push_bind(now_ms).push(" FROM (");
                        q.push_values(chunk, |mut b, u| {
                            let (state, run_at, error, delivered_at) = u.end.columns(now_ms);
                            b.push_bind(u.id)
                                .push_bind(&u.owner)
                                .push_bind(state)
                                .push_bind(run_at)
                                .push_bind(error)
                                .push_bind(&u.errors)
                                .push_bind(delivered_at);
                        });
                        q.push(sql::LEASED_DELIVERIES);
                        for r in q.build().fetch_all(&mut *tx).await? {
                            held_ids.insert(r.try_get(0)?);
                        }
                    }
                    held.extend(round.iter().map(|u| held_ids.contains(&u.id)));
                }
                tx.commit().await?;
                Ok(held)
            }

            async fn deliveries(
                &self,
                filter: &$crate::store::queue::DeliveryFilter,
            ) -> Result<Vec<$crate::store::queue::DeliveryRow>, $crate::store::StoreError> {
                let q = $sql(&$crate::store::queue::sql::deliveries());
                let rows = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(filter.state.map(|s| s.as_str()))
                    .bind(filter.job_id)
                    .bind(filter.limit.unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map($crate::store::queue::delivery_from_row)
                    .collect()
            }

            async fn delivery(
                &self,
                id: i64,
            ) -> Result<Option<$crate::store::queue::DeliveryRow>, $crate::store::StoreError> {
                let q = $sql(&$crate::store::queue::sql::delivery());
                let row = sqlx::query(sqlx::AssertSqlSafe(q))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref()
                    .map($crate::store::queue::delivery_from_row)
                    .transpose()
            }

            async fn retry_delivery(
                &self,
                id: i64,
                now_ms: i64,
            ) -> Result<$crate::store::queue::DeliveryRow, $crate::store::queue::ActionError> {
                use $crate::store::queue::{DeliveryState, sql};
                self.delivery_action(
                    id,
                    now_ms,
                    |s| matches!(s, DeliveryState::Dead | DeliveryState::Cancelled),
                    "only dead or cancelled deliveries can be retried",
                    sql::RETRY_DELIVERY,
                )
                .await
            }

            async fn cancel_delivery(
                &self,
                id: i64,
                now_ms: i64,
            ) -> Result<$crate::store::queue::DeliveryRow, $crate::store::queue::ActionError> {
                use $crate::store::queue::{DeliveryState, sql};
                self.delivery_action(
                    id,
                    now_ms,
                    |s| s == DeliveryState::Pending,
                    "only pending deliveries can be cancelled",
                    sql::CANCEL_DELIVERY,
                )
                .await
            }
        }
    };
}

pub(crate) use impl_queue;

/// The delivery columns every query reads.
pub const DELIVERY_COLUMNS: &str = "id, job_id, notifier, event, payload, state, attempt, max_attempts, run_at, last_error, errors, created_at, delivered_at";

/// Maps a row of `DELIVERY_COLUMNS`, on either backend.
pub fn delivery_from_row<R>(r: &R) -> Result<DeliveryRow, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = r.try_get("state")?;
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        notifier: r.try_get("notifier")?,
        event: r.try_get("event")?,
        payload: r.try_get("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery state {state:?}")))?,
        attempt: r.try_get("attempt")?,
        max_attempts: r.try_get("max_attempts")?,
        run_at: r.try_get("run_at")?,
        last_error: r.try_get("last_error")?,
        errors: r.try_get("errors")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// Converts `$N` parameters to SQLite's `?N`.
pub fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// PostgreSQL takes `$N` as it is.
pub fn postgres_sql(sql: &str) -> String {
    sql.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_history_is_bounded_and_keeps_both_ends() {
        let mut h = "[]".to_string();
        for i in 0..60 {
            h = append_error(&h, i, i64::from(i), &format!("e{i}"));
        }
        let v: Vec<serde_json::Value> = serde_json::from_str(&h).unwrap();
        assert_eq!(v.len(), 50);
        assert_eq!(v[0]["error"], "e0");
        assert_eq!(v[49]["error"], "e59");
    }

    #[test]
    fn a_row_changed_twice_starts_a_new_round() {
        let ids = [1, 2, 3, 2, 4, 1, 1];
        let r: Vec<Vec<i64>> = rounds(&ids, |x| *x)
            .into_iter()
            .map(<[i64]>::to_vec)
            .collect();
        assert_eq!(r, [vec![1, 2, 3], vec![2, 4, 1], vec![1]]);
        assert!(rounds::<i64>(&[], |x| *x).is_empty());
    }

    #[test]
    fn job_states_name_their_actions() {
        assert!(JobState::Polling.is_open());
        assert!(!JobState::Dead.is_open());
        assert_eq!(DeliveryState::parse("DEAD"), Some(DeliveryState::Dead));
    }
}
