//! The recovery log: reconcile scans the service asked for itself, kept until one has run.
//!
//! A scan is asked for where a loss is noticed, and durably, so a crash between noticing and
//! scanning loses nothing: a rejected replay position records its window before the channel
//! resumes elsewhere; a `GAP_OVERFLOW` wider than the inline window records its window in the
//! same transaction as the batch that carried it; the first start records its backfill once (a
//! `once_key` makes the request unique across a fleet starting together); the periodic safety
//! net records each run. A runner (see `reconcile::recovery`) takes pending requests in order,
//! under a lease, and marks each finished with its counts, or counts a failed attempt and keeps
//! it pending. The same statements run on both backends.
//!
//! Each channel's checkpoint also keeps the commit time of the last event committed on it
//! (Salesforce's clock, the one `LastModifiedDate` is stamped by), which is where a lost window
//! starts.

use std::future::Future;

use serde::Serialize;

use super::StoreError;

/// A scan to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecovery {
    /// Why (a reconcile reason's label: `replay_lost`, `gap_overflow`, `backfill`, …).
    pub reason: String,
    /// The channel the loss was noticed on, if any.
    pub channel: Option<String>,
    /// Orders modified at or after this time (epoch ms); `None` for every order.
    pub since_ms: Option<i64>,
    /// Makes the request unique: a second request with the same key is not recorded.
    pub once_key: Option<String>,
    /// When it was asked for, epoch ms.
    pub requested_ms: i64,
}

/// A recorded scan request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecoveryRow {
    /// Id, in the order requests were made.
    pub id: i64,
    /// Why.
    pub reason: String,
    /// The channel the loss was noticed on.
    pub channel: Option<String>,
    /// Orders modified at or after this time (epoch ms); `None` for every order.
    pub since_ms: Option<i64>,
    /// When it was asked for, epoch ms.
    pub requested_at: i64,
    /// Failed attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it finished, epoch ms; `None` while pending.
    pub finished_at: Option<i64>,
    /// Orders it read.
    pub scanned: Option<i64>,
    /// Jobs it created.
    pub created: Option<i64>,
}

/// The recovery log, on both backends; the store conformance suite checks it.
pub trait Recoveries: Send + Sync + 'static {
    /// Records a request; false when its `once_key` was recorded before.
    fn request_recovery(
        &self,
        request: &NewRecovery,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Requests not finished yet, oldest first.
    fn pending_recoveries(
        &self,
    ) -> impl Future<Output = Result<Vec<RecoveryRow>, StoreError>> + Send;

    /// Marks a request finished with its counts.
    fn finish_recovery(
        &self,
        id: i64,
        finished_ms: i64,
        scanned: i64,
        created: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts a failed attempt; the request stays pending.
    fn fail_recovery(
        &self,
        id: i64,
        error: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The latest requests, newest first.
    fn recoveries(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RecoveryRow>, StoreError>> + Send;

    /// When the last request for `reason` was made, epoch ms.
    fn last_requested(
        &self,
        reason: &str,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// Where a loss on `channel` starts: the commit time of the last event committed on it, or,
    /// for a checkpoint written before that was kept, when the checkpoint was last written.
    fn last_commit(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
}

/// A request row's columns, as [`from_row`] reads them.
macro_rules! columns {
    () => {
        "id, reason, channel, since_ms, requested_at, attempts, last_error, finished_at, scanned, created"
    };
}

/// Records a request: `$1` reason, `$2` channel, `$3` since, `$4` once key, `$5` time.
pub(crate) const INSERT: &str =
    "INSERT INTO sfcdc_recoveries (reason, channel, since_ms, once_key, requested_at)
    VALUES ($1, $2, $3, $4, $5) ON CONFLICT (once_key) DO NOTHING RETURNING id";

/// Inserts `request` through `executor` (a pool, or a batch's transaction); true if recorded.
pub(crate) async fn insert<'e, DB, E>(
    executor: E,
    request: &NewRecovery,
) -> Result<bool, StoreError>
where
    DB: sqlx::Database,
    E: sqlx::Executor<'e, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    let id: Option<i64> = sqlx::query_scalar(INSERT)
        .bind(request.reason.as_str())
        .bind(request.channel.as_deref())
        .bind(request.since_ms)
        .bind(request.once_key.as_deref())
        .bind(request.requested_ms)
        .fetch_optional(executor)
        .await?;
    Ok(id.is_some())
}

/// Pending requests, oldest first.
pub(crate) const PENDING: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM sfcdc_recoveries WHERE finished_at IS NULL ORDER BY id"
);

/// The latest requests: `$1` at most this many.
pub(crate) const HISTORY: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM sfcdc_recoveries ORDER BY id DESC LIMIT $1"
);

/// Finishes a request: `$1` id, `$2` time, `$3` scanned, `$4` created. A request already
/// finished keeps its first outcome.
pub(crate) const FINISH: &str =
    "UPDATE sfcdc_recoveries SET finished_at = $2, scanned = $3, created = $4, last_error = NULL
    WHERE id = $1 AND finished_at IS NULL";

/// Counts a failed attempt: `$1` id, `$2` error.
pub(crate) const FAIL: &str =
    "UPDATE sfcdc_recoveries SET attempts = attempts + 1, last_error = $2 WHERE id = $1";

/// The last request for a reason: `$1` reason.
pub(crate) const LAST_REQUESTED: &str =
    "SELECT max(requested_at) FROM sfcdc_recoveries WHERE reason = $1";

/// Where a loss on a channel starts: `$1` channel.
pub(crate) const LAST_COMMIT: &str =
    "SELECT COALESCE(last_event_at, updated_at) FROM sfcdc_checkpoints WHERE channel = $1";

/// Reads a request row.
pub(crate) fn from_row<R>(r: &R) -> Result<RecoveryRow, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RecoveryRow {
        id: r.try_get("id")?,
        reason: r.try_get("reason")?,
        channel: r.try_get("channel")?,
        since_ms: r.try_get("since_ms")?,
        requested_at: r.try_get("requested_at")?,
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        finished_at: r.try_get("finished_at")?,
        scanned: r.try_get("scanned")?,
        created: r.try_get("created")?,
    })
}

/// Implements [`Recoveries`] for a backend store that reads on `self.pool` and writes on
/// `self.writer()`.
macro_rules! recoveries_on_pool {
    ($store:ty) => {
        impl $crate::store::recovery::Recoveries for $store {
            async fn request_recovery(
                &self,
                request: &$crate::store::recovery::NewRecovery,
            ) -> Result<bool, $crate::store::StoreError> {
                $crate::store::recovery::insert(self.writer(), request).await
            }

            async fn pending_recoveries(
                &self,
            ) -> Result<Vec<$crate::store::recovery::RecoveryRow>, $crate::store::StoreError> {
                let rows = sqlx::query($crate::store::recovery::PENDING)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map($crate::store::recovery::from_row).collect()
            }

            async fn finish_recovery(
                &self,
                id: i64,
                finished_ms: i64,
                scanned: i64,
                created: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::recovery::FINISH)
                    .bind(id)
                    .bind(finished_ms)
                    .bind(scanned)
                    .bind(created)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn fail_recovery(
                &self,
                id: i64,
                error: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::recovery::FAIL)
                    .bind(id)
                    .bind(error)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn recoveries(
                &self,
                limit: i64,
            ) -> Result<Vec<$crate::store::recovery::RecoveryRow>, $crate::store::StoreError> {
                let rows = sqlx::query($crate::store::recovery::HISTORY)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map($crate::store::recovery::from_row).collect()
            }

            async fn last_requested(
                &self,
                reason: &str,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::recovery::LAST_REQUESTED)
                    .bind(reason)
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn last_commit(
                &self,
                channel: &str,
            ) -> Result<Option<i64>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::recovery::LAST_COMMIT)
                    .bind(channel)
                    .fetch_optional(&self.pool)
                    .await?
                    .flatten())
            }
        }
    };
}
pub(crate) use recoveries_on_pool;
