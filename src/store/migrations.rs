//! Schema migrations, applied automatically at start.
//!
//! Each backend has an ordered list of `(version, statements)`; applied versions are recorded in
//! `sfcdc_migrations`. Migrations run in one transaction under a lock (`BEGIN IMMEDIATE` on
//! SQLite, an advisory lock on PostgreSQL), so instances starting together apply each version
//! once. A version is never edited once released; changes come as new versions.

use super::{StoreError, sql};

/// One migration: a version and its statements.
pub type Migration = (i64, &'static [&'static str]);

/// SQLite migrations. Times are epoch milliseconds; replay ids and payloads are blobs. Every
/// index costs a page write per commit, so there are only those the queries need: jobs of an
/// order are found through the partial index of open jobs, which is all the ordering gate asks.
pub const SQLITE: &[Migration] = &[
    (
    1,
    &[
        "CREATE TABLE sfcdc_checkpoints (
            channel TEXT PRIMARY KEY,
            replay_id BLOB,
            preset TEXT,
            updated_at INTEGER NOT NULL
        )",
        "CREATE TABLE sfcdc_triggers (
            trigger_key TEXT PRIMARY KEY,
            order_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT,
            created_at INTEGER NOT NULL
        ) WITHOUT ROWID",
        "CREATE TABLE sfcdc_jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            order_id TEXT NOT NULL,
            account_id TEXT,
            trigger_status TEXT NOT NULL,
            trigger_kind TEXT NOT NULL,
            source_channel TEXT NOT NULL,
            source_replay_id BLOB NOT NULL,
            source_event_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            run_at INTEGER NOT NULL,
            lease_owner TEXT,
            lease_until INTEGER,
            operation_id TEXT,
            progress INTEGER,
            result TEXT,
            last_error TEXT,
            errors TEXT NOT NULL DEFAULT '[]',
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            finished_at INTEGER
        )",
        "CREATE UNIQUE INDEX sfcdc_jobs_one_open_per_approval ON sfcdc_jobs (order_id, trigger_status)
            WHERE state IN ('available', 'running', 'polling', 'retryable')",
        "CREATE INDEX sfcdc_jobs_due ON sfcdc_jobs (state, run_at)",
        "CREATE TABLE sfcdc_quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            channel TEXT NOT NULL,
            replay_id BLOB NOT NULL,
            schema_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            payload BLOB NOT NULL,
            reason TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            UNIQUE (channel, replay_id)
        )",
    ],
),
    (
        2,
        &[
            "ALTER TABLE sfcdc_jobs ADD COLUMN phase TEXT",
            "ALTER TABLE sfcdc_jobs ADD COLUMN submitted_at INTEGER",
            "ALTER TABLE sfcdc_jobs ADD COLUMN polls INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE sfcdc_jobs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE sfcdc_jobs ADD COLUMN external_id TEXT",
            "CREATE TABLE sfcdc_deliveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                job_id INTEGER NOT NULL,
                notifier TEXT NOT NULL,
                event TEXT NOT NULL,
                payload TEXT NOT NULL,
                state TEXT NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                run_at INTEGER NOT NULL,
                lease_owner TEXT,
                lease_until INTEGER,
                last_error TEXT,
                errors TEXT NOT NULL DEFAULT '[]',
                created_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL,
                delivered_at INTEGER,
                UNIQUE (job_id, notifier, event)
            )",
            "CREATE INDEX sfcdc_deliveries_due ON sfcdc_deliveries (run_at, id) WHERE state = 'pending'",
            // Claims walk due jobs in order and stop at the limit, whatever the backlog.
            "DROP INDEX sfcdc_jobs_due",
            "CREATE INDEX sfcdc_jobs_claimable ON sfcdc_jobs (run_at, id)
                WHERE state IN ('available', 'running', 'polling', 'retryable')",
        ],
    ),
    (
        3,
        &[
            // Which instance may subscribe to a channel and commit for it (see store::lease).
            "CREATE TABLE sfcdc_leases (
                channel TEXT PRIMARY KEY,
                holder TEXT,
                generation INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                acquired_at INTEGER NOT NULL
            )",
            "CREATE TABLE sfcdc_instances (
                id TEXT PRIMARY KEY,
                seen_at INTEGER NOT NULL
            )",
        ],
    ),
    (
        4,
        &[
            // The commit time of the last event committed on a channel: where a loss starts.
            "ALTER TABLE sfcdc_checkpoints ADD COLUMN last_event_at INTEGER",
            // Reconcile scans the service asked for itself (see store::recovery).
            "CREATE TABLE sfcdc_recoveries (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                reason TEXT NOT NULL,
                channel TEXT,
                since_ms INTEGER,
                once_key TEXT UNIQUE,
                requested_at INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT,
                finished_at INTEGER,
                scanned INTEGER,
                created INTEGER
            )",
        ],
    ),
    (
        5,
        &[
            // The audit trail of operator actions (see store::audit).
            "CREATE TABLE sfcdc_audit (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                at INTEGER NOT NULL,
                role TEXT NOT NULL,
                session TEXT,
                via TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                outcome TEXT NOT NULL,
                detail TEXT
            )",
            // The console's throughput chart and rates look back an hour (see store::insight);
            // retention's purge of old triggers walks the same index.
            "CREATE INDEX sfcdc_triggers_created ON sfcdc_triggers (created_at)",
            "CREATE INDEX sfcdc_jobs_finished ON sfcdc_jobs (finished_at) WHERE finished_at IS NOT NULL",
        ],
    ),
];

/// PostgreSQL migrations, the same tables with PostgreSQL types.
pub const POSTGRES: &[Migration] = &[
    (
    1,
    &[
        "CREATE TABLE sfcdc_checkpoints (
            channel TEXT PRIMARY KEY,
            replay_id BYTEA,
            preset TEXT,
            updated_at BIGINT NOT NULL
        )",
        "CREATE TABLE sfcdc_triggers (
            trigger_key TEXT PRIMARY KEY,
            order_id TEXT NOT NULL,
            channel TEXT NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT,
            created_at BIGINT NOT NULL
        )",
        "CREATE TABLE sfcdc_jobs (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            job_key TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            order_id TEXT NOT NULL,
            account_id TEXT,
            trigger_status TEXT NOT NULL,
            trigger_kind TEXT NOT NULL,
            source_channel TEXT NOT NULL,
            source_replay_id BYTEA NOT NULL,
            source_event_id TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            run_at BIGINT NOT NULL,
            lease_owner TEXT,
            lease_until BIGINT,
            operation_id TEXT,
            progress INTEGER,
            result TEXT,
            last_error TEXT,
            errors TEXT NOT NULL DEFAULT '[]',
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            finished_at BIGINT
        )",
        "CREATE UNIQUE INDEX sfcdc_jobs_one_open_per_approval ON sfcdc_jobs (order_id, trigger_status)
            WHERE state IN ('available', 'running', 'polling', 'retryable')",
        "CREATE INDEX sfcdc_jobs_due ON sfcdc_jobs (state, run_at)",
        "CREATE TABLE sfcdc_quarantine (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            channel TEXT NOT NULL,
            replay_id BYTEA NOT NULL,
            schema_id TEXT NOT NULL,
            event_id TEXT NOT NULL,
            payload BYTEA NOT NULL,
            reason TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            UNIQUE (channel, replay_id)
        )",
    ],
),
    (
        2,
        &[
            "ALTER TABLE sfcdc_jobs ADD COLUMN phase TEXT",
            "ALTER TABLE sfcdc_jobs ADD COLUMN submitted_at BIGINT",
            "ALTER TABLE sfcdc_jobs ADD COLUMN polls INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE sfcdc_jobs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE sfcdc_jobs ADD COLUMN external_id TEXT",
            "CREATE TABLE sfcdc_deliveries (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job_id BIGINT NOT NULL,
                notifier TEXT NOT NULL,
                event TEXT NOT NULL,
                payload TEXT NOT NULL,
                state TEXT NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                run_at BIGINT NOT NULL,
                lease_owner TEXT,
                lease_until BIGINT,
                last_error TEXT,
                errors TEXT NOT NULL DEFAULT '[]',
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                delivered_at BIGINT,
                UNIQUE (job_id, notifier, event)
            )",
            "CREATE INDEX sfcdc_deliveries_due ON sfcdc_deliveries (run_at, id) WHERE state = 'pending'",
            // Claims walk due jobs in order and stop at the limit, whatever the backlog.
            "DROP INDEX sfcdc_jobs_due",
            "CREATE INDEX sfcdc_jobs_claimable ON sfcdc_jobs (run_at, id)
                WHERE state IN ('available', 'running', 'polling', 'retryable')",
        ],
    ),
    (
        3,
        &[
            // Which instance may subscribe to a channel and commit for it (see store::lease).
            "CREATE TABLE sfcdc_leases (
                channel TEXT PRIMARY KEY,
                holder TEXT,
                generation BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                acquired_at BIGINT NOT NULL
            )",
            "CREATE TABLE sfcdc_instances (
                id TEXT PRIMARY KEY,
                seen_at BIGINT NOT NULL
            )",
        ],
    ),
    (
        4,
        &[
            "ALTER TABLE sfcdc_checkpoints ADD COLUMN last_event_at BIGINT",
            "CREATE TABLE sfcdc_recoveries (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                reason TEXT NOT NULL,
                channel TEXT,
                since_ms BIGINT,
                once_key TEXT UNIQUE,
                requested_at BIGINT NOT NULL,
                attempts BIGINT NOT NULL DEFAULT 0,
                last_error TEXT,
                finished_at BIGINT,
                scanned BIGINT,
                created BIGINT
            )",
        ],
    ),
    (
        5,
        &[
            "CREATE TABLE sfcdc_audit (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                at BIGINT NOT NULL,
                role TEXT NOT NULL,
                session TEXT,
                via TEXT NOT NULL,
                action TEXT NOT NULL,
                target TEXT NOT NULL,
                outcome TEXT NOT NULL,
                detail TEXT
            )",
            "CREATE INDEX sfcdc_triggers_created ON sfcdc_triggers (created_at)",
            "CREATE INDEX sfcdc_jobs_finished ON sfcdc_jobs (finished_at) WHERE finished_at IS NOT NULL",
        ],
    ),
    (
        6,
        &[
            // A job's row is updated four or five times in its life. Room left on each page lets
            // the updates that change no indexed column (the phase, the recorded operation, a
            // claim of a polling job) be heap-only: one new row version on the same page and no
            // new entry in the table's five indexes. The room is kept on the pages of rows
            // inserted from now on.
            "ALTER TABLE sfcdc_jobs SET (fillfactor = 70)",
        ],
    ),
];

/// Creates the bookkeeping table (valid on both backends).
pub const CREATE_LEDGER: &str = "CREATE TABLE IF NOT EXISTS sfcdc_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

/// Applies the versions of `list` not recorded yet, in order, inside the caller's write
/// transaction (which holds the lock and commits), recording each in the ledger.
pub(crate) async fn apply<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    list: &[Migration],
    backend: &'static str,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    sqlx::query(CREATE_LEDGER).execute(&mut **tx).await?;
    let applied: Vec<i64> = sqlx::query_scalar(sql::APPLIED_MIGRATIONS)
        .fetch_all(&mut **tx)
        .await?;
    for (version, statements) in list {
        if applied.contains(version) {
            continue;
        }
        for s in *statements {
            sqlx::query(*s).execute(&mut **tx).await?;
        }
        sqlx::query(sql::RECORD_MIGRATION)
            .bind(version)
            .bind(crate::clock::now_ms())
            .execute(&mut **tx)
            .await?;
        tracing::info!(version, backend, "Applied migration");
    }
    Ok(())
}
