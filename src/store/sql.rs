//! The statements both backends run byte for byte: `$N` parameters, which PostgreSQL and SQLx's
//! SQLite driver both read, and only SQL that means the same on both.
//!
//! A statement that differs by backend (the batch inserts, the claims, the migration lock) lives
//! in that backend's file instead. Each constant says what its parameters are; rows are read back
//! by column name, so the column lists here are the ones the row mappers in `model` ask for.

/// The applied migration versions.
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM sfcdc_migrations";

/// Records a migration: `$1` version, `$2` time.
pub(crate) const RECORD_MIGRATION: &str =
    "INSERT INTO sfcdc_migrations (version, applied_at) VALUES ($1, $2)";

/// A channel's position: `$1` channel.
pub(crate) const CHECKPOINT: &str =
    "SELECT replay_id, preset FROM sfcdc_checkpoints WHERE channel = $1";

/// Every channel's position.
pub(crate) const CHECKPOINTS: &str =
    "SELECT channel, replay_id, preset, updated_at FROM sfcdc_checkpoints ORDER BY channel";

/// An operator's reset of a channel: `$1` channel, `$2` replay id, `$3` preset, `$4` time.
pub(crate) const SET_CHECKPOINT: &str = "INSERT INTO sfcdc_checkpoints (channel, replay_id, preset, updated_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (channel) DO UPDATE SET replay_id = excluded.replay_id, preset = excluded.preset, updated_at = excluded.updated_at";

/// A batch moving its channel past a replay id: `$1` channel, `$2` replay id, `$3` time, `$4`
/// the commit time of its last event (NULL keeps the one stored).
pub(crate) const ADVANCE_CHECKPOINT: &str = "INSERT INTO sfcdc_checkpoints (channel, replay_id, preset, updated_at, last_event_at) VALUES ($1, $2, NULL, $3, $4)
    ON CONFLICT (channel) DO UPDATE SET replay_id = excluded.replay_id, preset = NULL, updated_at = excluded.updated_at,
        last_event_at = COALESCE(excluded.last_event_at, sfcdc_checkpoints.last_event_at)";

/// Jobs, newest first: `$1` only this state (or NULL), `$2` only this order (or NULL), `$3` at
/// most this many.
pub(crate) const JOBS: &str = "SELECT id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress,
        result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at,
        updated_at, finished_at
    FROM sfcdc_jobs WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) AND (CAST($2 AS TEXT) IS NULL OR order_id = $2)
    ORDER BY id DESC LIMIT $3";

/// Quarantined events, oldest first: `$1` true for the open ones only.
pub(crate) const QUARANTINED: &str =
    "SELECT id, channel, replay_id, schema_id, event_id, payload, reason, kind, state,
        attempts, created_at, updated_at
    FROM sfcdc_quarantine WHERE (NOT $1 OR state = 'open') ORDER BY id";

/// One quarantined event: `$1` id.
pub(crate) const QUARANTINE_ENTRY: &str =
    "SELECT id, channel, replay_id, schema_id, event_id, payload, reason, kind, state,
        attempts, created_at, updated_at
    FROM sfcdc_quarantine WHERE id = $1";

/// A failed re-drive: `$1` reason, `$2` time, `$3` id.
pub(crate) const QUARANTINE_RETRY_FAILED: &str = "UPDATE sfcdc_quarantine SET reason = $1, attempts = attempts + 1, updated_at = $2 WHERE id = $3";

/// Jobs by state.
pub(crate) const JOB_STATE_COUNTS: &str =
    "SELECT state, count(*) FROM sfcdc_jobs GROUP BY state ORDER BY state";

/// Deliveries by state.
pub(crate) const DELIVERY_STATE_COUNTS: &str =
    "SELECT state, count(*) FROM sfcdc_deliveries GROUP BY state ORDER BY state";

/// Triggers by outcome and reason (`outcome` or `outcome:reason`).
pub(crate) const TRIGGER_COUNTS: &str = "SELECT outcome || coalesce(':' || reason, ''), count(*) FROM sfcdc_triggers GROUP BY 1 ORDER BY 1";

/// Open quarantine entries.
pub(crate) const OPEN_QUARANTINE_COUNT: &str =
    "SELECT count(*) FROM sfcdc_quarantine WHERE state = 'open'";

/// Rows per multi-row statement: far under both backends' bound-parameter limits.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// One job: `$1` id.
pub(crate) const JOB: &str = "SELECT id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress,
        result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at,
        updated_at, finished_at
    FROM sfcdc_jobs WHERE id = $1";

/// A manual retry: fresh attempts, and a fresh operation under a new idempotency key. The
/// phase stays, so a job that had written `Activating` recognises it as its own. `$1` time,
/// `$2` id.
pub(crate) const RETRY_JOB: &str = "UPDATE sfcdc_jobs SET state = 'available', attempt = 0, run_at = $1,
        generation = generation + 1, operation_id = NULL, submitted_at = NULL, polls = 0, progress = NULL,
        phase = CASE WHEN phase = 'submitted' THEN 'activating' ELSE phase END,
        finished_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $1
    WHERE id = $2 AND state IN ('dead', 'cancelled', 'retryable')
    RETURNING id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress,
        result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at,
        updated_at, finished_at";

/// An operator's cancel of an open job, which also ends any lease on it: `$1` reason, `$2` error
/// history, `$3` time, `$4` id.
pub(crate) const CANCEL_JOB: &str =
    "UPDATE sfcdc_jobs SET state = 'cancelled', last_error = $1, errors = $2, finished_at = $3,
        lease_owner = NULL, lease_until = NULL, updated_at = $3
    WHERE id = $4 AND state IN ('available', 'running', 'polling', 'retryable')";

/// Retention of finished jobs (dead letters stay): `$1` cutoff.
pub(crate) const PURGE_JOBS: &str =
    "DELETE FROM sfcdc_jobs WHERE state IN ('completed', 'cancelled') AND updated_at < $1";

/// Retention of finished deliveries (dead letters stay): `$1` cutoff.
pub(crate) const PURGE_DELIVERIES: &str =
    "DELETE FROM sfcdc_deliveries WHERE state IN ('delivered', 'cancelled') AND updated_at < $1";

/// Retention of evaluated triggers: `$1` cutoff.
pub(crate) const PURGE_TRIGGERS: &str = "DELETE FROM sfcdc_triggers WHERE created_at < $1";

/// Batched step updates join the jobs to a `VALUES` list (`v.column1` is the id, `column2` the
/// lease owner) and change only the rows whose lease still holds. This closes each of them.
pub(crate) const LEASED_ROWS: &str =
    ") AS v WHERE sfcdc_jobs.id = v.column1 AND sfcdc_jobs.lease_owner = v.column2 RETURNING id";

/// `v`: id, owner, phase. Followed by the time.
pub(crate) const PHASE_SET: &str = "UPDATE sfcdc_jobs SET phase = v.column3, updated_at = ";

/// `v`: id, owner, operation. Followed by the time, twice.
pub(crate) const OPERATION_SET: &str =
    "UPDATE sfcdc_jobs SET operation_id = v.column3, phase = 'submitted',
        submitted_at = coalesce(submitted_at, ";

/// `v`: id, owner, operation, progress, next run, error. Followed by the time, twice.
pub(crate) const POLL_SET: &str =
    "UPDATE sfcdc_jobs SET state = 'polling', operation_id = v.column3,
        progress = coalesce(v.column4, progress), polls = polls + 1, run_at = v.column5,
        last_error = coalesce(v.column6, last_error), phase = 'submitted',
        lease_owner = NULL, lease_until = NULL, submitted_at = coalesce(submitted_at, ";

/// `v`: id, owner, state, run_at, error, errors, result, external id, finished at, and 1
/// when the operation is abandoned (the next attempt submits anew). Followed by the time.
pub(crate) const END_SET: &str = "UPDATE sfcdc_jobs SET state = v.column3, run_at = coalesce(v.column4, run_at),
        last_error = coalesce(v.column5, last_error), errors = v.column6, result = coalesce(v.column7, result),
        external_id = coalesce(v.column8, external_id), finished_at = v.column9,
        progress = CASE WHEN v.column3 = 'completed' THEN 100 WHEN v.column10 = 1 THEN NULL ELSE progress END,
        generation = generation + v.column10,
        operation_id = CASE WHEN v.column10 = 1 THEN NULL ELSE operation_id END,
        submitted_at = CASE WHEN v.column10 = 1 THEN NULL ELSE submitted_at END,
        polls = CASE WHEN v.column10 = 1 THEN 0 ELSE polls END,
        phase = CASE WHEN v.column10 = 1 AND phase = 'submitted' THEN 'activating' ELSE phase END,
        lease_owner = NULL, lease_until = NULL, updated_at = ";

/// The outbox: a job's deliveries, followed by a `VALUES` list of job id, notifier, event,
/// payload, state, attempt, max attempts, run at, created at, updated at.
pub(crate) const INSERT_DELIVERIES: &str = "INSERT INTO sfcdc_deliveries
        (job_id, notifier, event, payload, state, attempt, max_attempts, run_at, created_at, updated_at) ";

/// `v`: id, owner, state, run_at, error, errors, delivered at. Followed by the time.
pub(crate) const END_DELIVERY_SET: &str = "UPDATE sfcdc_deliveries SET state = v.column3,
        run_at = coalesce(v.column4, run_at), last_error = coalesce(v.column5, last_error),
        errors = v.column6, delivered_at = v.column7, lease_owner = NULL, lease_until = NULL, updated_at = ";

/// [`LEASED_ROWS`] for deliveries.
pub(crate) const LEASED_DELIVERIES: &str = ") AS v WHERE sfcdc_deliveries.id = v.column1 AND sfcdc_deliveries.lease_owner = v.column2 RETURNING id";

/// Deliveries, newest first: `$1` only this state (or NULL), `$2` only this job's (or NULL),
/// `$3` at most this many.
pub(crate) const DELIVERIES: &str = "SELECT id, job_id, notifier, event, payload, state, attempt, max_attempts, run_at,
        last_error, errors, created_at, delivered_at
    FROM sfcdc_deliveries WHERE (CAST($1 AS TEXT) IS NULL OR state = $1) AND (CAST($2 AS BIGINT) IS NULL OR job_id = $2)
    ORDER BY id DESC LIMIT $3";

/// One delivery: `$1` id.
pub(crate) const DELIVERY: &str =
    "SELECT id, job_id, notifier, event, payload, state, attempt, max_attempts, run_at,
        last_error, errors, created_at, delivered_at
    FROM sfcdc_deliveries WHERE id = $1";

/// An operator's retry of a dead or cancelled delivery: `$1` time, `$2` id.
pub(crate) const RETRY_DELIVERY: &str =
    "UPDATE sfcdc_deliveries SET state = 'pending', attempt = 0, run_at = $1,
        lease_owner = NULL, lease_until = NULL, updated_at = $1
    WHERE id = $2 AND state IN ('dead', 'cancelled')";

/// An operator's cancel of a pending delivery: `$1` time, `$2` id.
pub(crate) const CANCEL_DELIVERY: &str =
    "UPDATE sfcdc_deliveries SET state = 'cancelled', lease_owner = NULL,
        lease_until = NULL, updated_at = $1 WHERE id = $2 AND state = 'pending'";
