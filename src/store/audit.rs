//! The audit trail: every operator action (a retry, a cancel, a re-drive, a checkpoint reset, a
//! bulk action), from the admin API, the console or the command line, with who did it, when, to
//! what, and how it ended.
//!
//! **Who** is a role (`operator`, or `cli` for the command line, which has the store itself) and,
//! for the console, the session's public id: never a token or a session cookie, which are
//! credentials. An entry is written after the action, with its outcome (`ok`, or `refused` with
//! the reason the operator saw), so the trail shows what was tried as well as what happened.
//! Entries are only ever added. The same statements run on both backends.

use std::future::Future;

use serde::Serialize;

use super::StoreError;

/// An action to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAudit {
    /// When, epoch ms.
    pub at_ms: i64,
    /// The actor's role: `operator`, `viewer` (a refused attempt) or `cli`.
    pub role: String,
    /// The console session's public id, if the action came from the console.
    pub session: Option<String>,
    /// Where it came from: `api`, `console` or `cli`.
    pub via: String,
    /// What: `job.retry`, `job.cancel`, `delivery.retry`, `delivery.cancel`,
    /// `quarantine.redrive`, `checkpoint.reset`, `jobs.bulk_retry`, `jobs.bulk_cancel`.
    pub action: String,
    /// To what: `job 12`, a channel, or a bulk action's filter.
    pub target: String,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// What came of it, or why it was refused.
    pub detail: Option<String>,
}

/// A recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Id, in the order actions were recorded.
    pub id: i64,
    /// When, epoch ms.
    pub at: i64,
    /// The actor's role.
    pub role: String,
    /// The console session's public id.
    pub session: Option<String>,
    /// `api`, `console` or `cli`.
    pub via: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: String,
    /// `ok`, `refused` or `failed`.
    pub outcome: String,
    /// What came of it, or why it was refused.
    pub detail: Option<String>,
}

/// The audit trail, on both backends; the store conformance suite checks it.
pub trait Audit: Send + Sync + 'static {
    /// Records an action; returns its id.
    fn record_audit(
        &self,
        entry: &NewAudit,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The latest entries, newest first: at most `limit`, older than `before` (an id) if set.
    fn audit_trail(
        &self,
        limit: i64,
        before: Option<i64>,
    ) -> impl Future<Output = Result<Vec<AuditRow>, StoreError>> + Send;
}

/// Records an entry: `$1` time … `$8` detail.
pub(crate) const INSERT: &str =
    "INSERT INTO sfcdc_audit (at, role, session, via, action, target, outcome, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";

/// The latest entries: `$1` before this id (or none), `$2` at most this many.
pub(crate) const TRAIL: &str = "SELECT id, at, role, session, via, action, target, outcome, detail
    FROM sfcdc_audit WHERE (CAST($1 AS BIGINT) IS NULL OR id < $1) ORDER BY id DESC LIMIT $2";

/// Reads an entry.
pub(crate) fn from_row<R>(r: &R) -> Result<AuditRow, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(AuditRow {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        role: r.try_get("role")?,
        session: r.try_get("session")?,
        via: r.try_get("via")?,
        action: r.try_get("action")?,
        target: r.try_get("target")?,
        outcome: r.try_get("outcome")?,
        detail: r.try_get("detail")?,
    })
}

/// Implements [`Audit`] for a backend store that reads on `self.pool` and writes on
/// `self.writer()`.
macro_rules! audit_on_pool {
    ($store:ty) => {
        impl $crate::store::audit::Audit for $store {
            async fn record_audit(
                &self,
                e: &$crate::store::audit::NewAudit,
            ) -> Result<i64, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::audit::INSERT)
                    .bind(e.at_ms)
                    .bind(e.role.as_str())
                    .bind(e.session.as_deref())
                    .bind(e.via.as_str())
                    .bind(e.action.as_str())
                    .bind(e.target.as_str())
                    .bind(e.outcome.as_str())
                    .bind(e.detail.as_deref())
                    .fetch_one(self.writer())
                    .await?)
            }

            async fn audit_trail(
                &self,
                limit: i64,
                before: Option<i64>,
            ) -> Result<Vec<$crate::store::audit::AuditRow>, $crate::store::StoreError> {
                let rows = sqlx::query($crate::store::audit::TRAIL)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map($crate::store::audit::from_row).collect()
            }
        }
    };
}
pub(crate) use audit_on_pool;
