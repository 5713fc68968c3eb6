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
//! transaction (the outbox); each delivery then has its own lease, retries and dead letter. A
//! batch may carry a claim ([`Queue::update_jobs_and_claim`]): the worker slots its last writes
//! free take their next jobs in the same transaction, behind the same per-order gate, instead of
//! waiting for a claim of their own.
//!
//! This file holds the contract and its types. Each backend implements it in its own
//! `queue.rs` (`sqlite/queue.rs`, `postgres/queue.rs`) with the statements of `sql.rs` and its
//! own claims; the batched writes are shared in `leased.rs`, but for PostgreSQL's, which are one
//! statement of fixed text a batch (`postgres/steps.rs`, `postgres/queue.rs`). The queue
//! conformance suite, run on both, keeps them in step.

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

/// A claim made with a batch of step updates ([`Queue::update_jobs_and_claim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The lease holder of the jobs claimed.
    pub owner: String,
    /// At most this many.
    pub limit: i64,
    /// Their lease runs until `now_ms + lease_ms`.
    pub lease_ms: i64,
}

/// What a batch of step updates did, with the claim made with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Per update, in order: whether its lease held.
    pub held: Vec<bool>,
    /// The jobs claimed, in id order.
    pub claimed: Vec<JobRow>,
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    #[serde(serialize_with = "super::model::raw_json")]
    #[schema(value_type = serde_json::Value)]
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
    #[serde(serialize_with = "super::model::raw_json")]
    #[schema(value_type = serde_json::Value)]
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

    /// Applies updates as [`Queue::update_jobs`] does and, in the same transaction, claims up to
    /// `claim.limit` due jobs as [`Queue::claim_jobs`] does: the slots that a batch's last writes
    /// free take their next jobs without a claim of their own. The per-order gate holds as in any
    /// claim; whether the claim already sees the batch's own updates is the backend's (PostgreSQL
    /// claims in the statement of the batch's last round, from the queue as it was before that
    /// statement, and never takes a job it changes), so a job whose predecessor ends in the
    /// batch may wait for the next claim.
    fn update_jobs_and_claim(
        &self,
        updates: &[JobUpdate],
        claim: &Claim,
        now_ms: i64,
    ) -> impl Future<Output = Result<Applied, StoreError>> + Send;

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

/// Why a delivery cannot be retried, if it cannot.
pub(super) fn check_retryable_delivery(d: &DeliveryRow) -> Result<(), ActionError> {
    if matches!(d.state, DeliveryState::Dead | DeliveryState::Cancelled) {
        Ok(())
    } else {
        Err(ActionError::WrongState {
            what: "delivery",
            state: d.state.as_str().into(),
            hint: "only dead or cancelled deliveries can be retried",
        })
    }
}

/// Why a delivery cannot be cancelled, if it cannot.
pub(super) fn check_cancellable_delivery(d: &DeliveryRow) -> Result<(), ActionError> {
    if d.state == DeliveryState::Pending {
        Ok(())
    } else {
        Err(ActionError::WrongState {
            what: "delivery",
            state: d.state.as_str().into(),
            hint: "only pending deliveries can be cancelled",
        })
    }
}

/// Why an operator's retry of `job` changed nothing: no error means the job changed state
/// meanwhile; a unique violation, that another job for the same approval is open (one open job
/// per approval).
pub(super) fn retry_refused(job: &JobRow, error: Option<sqlx::Error>) -> ActionError {
    match error {
        None => raced("job"),
        Some(sqlx::Error::Database(e)) if e.is_unique_violation() => ActionError::WrongState {
            what: "job",
            state: job.state.as_str().into(),
            hint: "another job for the same order and status is open; retry or cancel that one",
        },
        Some(e) => ActionError::Store(e.into()),
    }
}

/// An operator action's guarded update changed `changed` rows: anything but one means the row
/// changed state meanwhile.
pub(super) fn changed_one(what: &'static str, changed: u64) -> Result<(), ActionError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(raced(what))
    }
}

/// The state changed between reading and writing.
fn raced(what: &'static str) -> ActionError {
    ActionError::WrongState {
        what,
        state: "changing".into(),
        hint: "its state changed meanwhile; look again",
    }
}

/// The delivery columns every query reads.
pub const DELIVERY_COLUMNS: &str = "id, job_id, notifier, event, payload, state, attempt, max_attempts, run_at, last_error, errors, created_at, delivered_at";

/// Maps a row of [`DELIVERY_COLUMNS`] to a delivery, on either backend.
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
    fn job_states_name_their_actions() {
        assert!(JobState::Polling.is_open());
        assert!(!JobState::Dead.is_open());
        assert_eq!(DeliveryState::parse("DEAD"), Some(DeliveryState::Dead));
    }
}
