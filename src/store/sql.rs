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

/// A batch moving its channel past a replay id: `$1` channel, `$2` replay id, `$3` time.
pub(crate) const ADVANCE_CHECKPOINT: &str = "INSERT INTO sfcdc_checkpoints (channel, replay_id, preset, updated_at) VALUES ($1, $2, NULL, $3)
    ON CONFLICT (channel) DO UPDATE SET replay_id = excluded.replay_id, preset = NULL, updated_at = excluded.updated_at";

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
