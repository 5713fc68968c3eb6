//! The store's data: where channels resume, the jobs, triggers and quarantined events a batch
//! writes, and the rows read back, with their mapping from database rows on either backend.
//!
//! Rows are mapped by column name, so a statement may list its columns in any order; times are
//! epoch milliseconds and replay ids are raw bytes in the database, hex in rows read back.

use foldhash::HashSet;

use serde::Serialize;

use super::lease::Fence;
use super::{StoreError, queue};
use crate::decode::{Position, ReplayId};
use crate::rules::SkipReason;

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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
    /// Why it created no job; `None` when it created one.
    pub skipped: Option<SkipReason>,
}

impl NewTrigger {
    /// The stored outcome: `job` or `skipped`.
    pub(crate) fn outcome(&self) -> &'static str {
        if self.skipped.is_some() {
            "skipped"
        } else {
            "job"
        }
    }

    /// The stored reason: the skip reason's label.
    pub(crate) fn reason(&self) -> Option<&'static str> {
        self.skipped.map(SkipReason::label)
    }
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
    /// When set, the batch commits only while this lease holds the channel (see
    /// `store::lease`); otherwise nothing is written and the commit fails as fenced.
    pub fence: Option<Fence>,
    /// Cache invalidations for the other instances, sent with the commit (PostgreSQL only:
    /// instances on one SQLite file share no cache traffic), each under `NOTIFY`'s size limit.
    pub cache_notices: Vec<String>,
    /// The commit time of the batch's last event (Salesforce's clock), kept with the
    /// checkpoint as where a later loss would start.
    pub last_event_ms: Option<i64>,
    /// Reconcile scans this batch asks for (a wide `GAP_OVERFLOW`), recorded with it.
    pub recoveries: Vec<super::recovery::NewRecovery>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = Option<serde_json::Value>)]
    pub result: Option<String>,
    /// The external id written back to Salesforce.
    pub external_id: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Every error so far (a JSON array of `{at, attempt, error}`).
    #[serde(serialize_with = "raw_json")]
    #[schema(value_type = serde_json::Value)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// Raw payload, in hex.
    #[serde(serialize_with = "hex_bytes")]
    #[schema(value_type = String)]
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

/// Maps a row of `replay_id, preset` to a position, on either backend.
pub(crate) fn position_from_row<R>(r: &R) -> Result<Position, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    position(r.try_get("replay_id")?, r.try_get("preset")?)
}

/// Maps a row of `channel, replay_id, preset, updated_at` to a checkpoint, on either backend.
pub(crate) fn checkpoint_from_row<R>(r: &R) -> Result<Checkpoint, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Checkpoint {
        channel: r.try_get("channel")?,
        position: position_from_row(r)?,
        updated_at: r.try_get("updated_at")?,
    })
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
pub(crate) fn position_columns(p: &Position) -> (Option<Vec<u8>>, Option<&'static str>) {
    match p {
        Position::After(r) => (Some(r.as_bytes().to_vec()), None),
        Position::Earliest => (None, Some("earliest")),
        Position::Latest => (None, Some("latest")),
    }
}

/// Splits triggers into those this batch newly recorded and replays, and keeps the jobs of the
/// new ones only.
pub(crate) fn jobs_of_new_triggers<'a>(
    batch: &'a StoreBatch,
    inserted: &HashSet<String>,
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

/// The keys of `jobs` that `created` (what the insert returned) lacks: jobs not created because
/// their approval already has an open job.
pub(crate) fn duplicate_approvals(jobs: &[&NewJob], created: &[(i64, String)]) -> Vec<String> {
    let created: HashSet<&str> = created.iter().map(|(_, k)| k.as_str()).collect();
    jobs.iter()
        .filter(|j| !created.contains(j.key.as_str()))
        .map(|j| j.key.clone())
        .collect()
}

/// Maps a row of the job columns to a job, on either backend.
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

/// Maps a row of the quarantine columns to an entry, on either backend.
pub(crate) fn quarantine_from_row<R>(r: &R) -> Result<QuarantineRow, StoreError>
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
