//! What the console reads beyond the operator commands: jobs found by state, order and error
//! text a page at a time (with the count of all that match, for paging and bulk actions),
//! per-minute throughput, and per-channel event rates.
//!
//! Every read is bounded: the throughput and the rates look back a fixed window through the
//! indexes on `sfcdc_triggers (created_at)` and `sfcdc_jobs (finished_at)` (migration 5), and a
//! job page has a limit. Error text is matched case-insensitively as a plain substring (`%` and
//! `_` in it match themselves). The same statements run on both backends.

use std::future::Future;

use super::{JobRow, JobState, StoreError};

/// Which jobs: every field narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only this state.
    pub state: Option<JobState>,
    /// Only this order.
    pub order_id: Option<String>,
    /// Only jobs whose last error contains this text (any case).
    pub error: Option<String>,
}

impl JobQuery {
    /// The error text as a `LIKE` pattern, with its own `%`, `_` and `\` escaped.
    fn error_pattern(&self) -> Option<String> {
        self.error.as_ref().map(|e| {
            let escaped = e
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
    }
}

/// One minute of throughput.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Minute {
    /// The minute's start, epoch ms.
    pub at_ms: i64,
    /// Events committed (triggers recorded).
    pub events: i64,
    /// Jobs that finished (completed, cancelled or dead).
    pub finished: i64,
}

/// The console's reads, on both backends; the store conformance suite checks them.
pub trait Insights: Send + Sync + 'static {
    /// A page of the jobs `query` matches, newest first, and how many match in all.
    fn job_page(
        &self,
        query: &JobQuery,
        limit: i64,
        offset: i64,
    ) -> impl Future<Output = Result<(Vec<JobRow>, i64), StoreError>> + Send;

    /// The ids of every job `query` matches, newest first, at most `limit` (a bulk action).
    fn job_ids(
        &self,
        query: &JobQuery,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<i64>, StoreError>> + Send;

    /// Events committed and jobs finished in each minute from `since_ms` on; minutes without
    /// either are left out.
    fn throughput(
        &self,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<Minute>, StoreError>> + Send;

    /// Events committed on each channel since `since_ms`.
    fn channel_events(
        &self,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<(String, i64)>, StoreError>> + Send;
}

/// The filter of the job reads: `$1` state, `$2` order, `$3` error pattern.
macro_rules! job_where {
    () => {
        " FROM sfcdc_jobs WHERE (CAST($1 AS TEXT) IS NULL OR state = $1)
        AND (CAST($2 AS TEXT) IS NULL OR order_id = $2)
        AND (CAST($3 AS TEXT) IS NULL OR lower(last_error) LIKE $3 ESCAPE '\\')"
    };
}

/// A page of jobs: the filter, `$4` limit, `$5` offset.
pub(crate) const JOB_PAGE: &str = concat!(
    "SELECT id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls,
        generation, progress, result, external_id, last_error, errors, source_channel,
        source_replay_id, source_event_id, payload, created_at, updated_at, finished_at",
    job_where!(),
    " ORDER BY id DESC LIMIT $4 OFFSET $5"
);

/// How many jobs match the filter.
pub(crate) const JOB_COUNT: &str = concat!("SELECT count(*)", job_where!());

/// The ids of matching jobs: the filter, `$4` limit.
pub(crate) const JOB_IDS: &str = concat!("SELECT id", job_where!(), " ORDER BY id DESC LIMIT $4");

/// Triggers recorded per minute: `$1` since.
pub(crate) const EVENTS_PER_MINUTE: &str = "SELECT created_at / 60000 AS minute, count(*) AS n
    FROM sfcdc_triggers WHERE created_at >= $1 GROUP BY created_at / 60000";

/// Jobs finished per minute: `$1` since.
pub(crate) const FINISHED_PER_MINUTE: &str = "SELECT finished_at / 60000 AS minute, count(*) AS n
    FROM sfcdc_jobs WHERE finished_at >= $1 GROUP BY finished_at / 60000";

/// Triggers recorded per channel: `$1` since.
pub(crate) const CHANNEL_EVENTS: &str = "SELECT channel, count(*) AS n FROM sfcdc_triggers
    WHERE created_at >= $1 GROUP BY channel ORDER BY channel";

/// Merges per-minute event and finished counts into minutes, oldest first.
pub(crate) fn minutes(events: Vec<(i64, i64)>, finished: Vec<(i64, i64)>) -> Vec<Minute> {
    let mut by: std::collections::BTreeMap<i64, Minute> = std::collections::BTreeMap::new();
    for (m, n) in events {
        let e = by.entry(m).or_default();
        e.at_ms = m * 60_000;
        e.events = n;
    }
    for (m, n) in finished {
        let e = by.entry(m).or_default();
        e.at_ms = m * 60_000;
        e.finished = n;
    }
    by.into_values().collect()
}

/// The bind values of a query: state, order, error pattern.
pub(crate) fn binds(q: &JobQuery) -> (Option<&'static str>, Option<&str>, Option<String>) {
    (
        q.state.map(JobState::as_str),
        q.order_id.as_deref(),
        q.error_pattern(),
    )
}

/// Implements [`Insights`] for a backend store whose pool is `self.pool`.
macro_rules! insights_on_pool {
    ($store:ty) => {
        impl $crate::store::insight::Insights for $store {
            async fn job_page(
                &self,
                query: &$crate::store::insight::JobQuery,
                limit: i64,
                offset: i64,
            ) -> Result<(Vec<$crate::store::JobRow>, i64), $crate::store::StoreError> {
                let (state, order, error) = $crate::store::insight::binds(query);
                let rows = sqlx::query($crate::store::insight::JOB_PAGE)
                    .bind(state)
                    .bind(order)
                    .bind(error.as_deref())
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?;
                let total: i64 = sqlx::query_scalar($crate::store::insight::JOB_COUNT)
                    .bind(state)
                    .bind(order)
                    .bind(error.as_deref())
                    .fetch_one(&self.pool)
                    .await?;
                let jobs = rows
                    .iter()
                    .map($crate::store::model::job_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((jobs, total))
            }

            async fn job_ids(
                &self,
                query: &$crate::store::insight::JobQuery,
                limit: i64,
            ) -> Result<Vec<i64>, $crate::store::StoreError> {
                let (state, order, error) = $crate::store::insight::binds(query);
                Ok(sqlx::query_scalar($crate::store::insight::JOB_IDS)
                    .bind(state)
                    .bind(order)
                    .bind(error.as_deref())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn throughput(
                &self,
                since_ms: i64,
            ) -> Result<Vec<$crate::store::insight::Minute>, $crate::store::StoreError> {
                let events: Vec<(i64, i64)> =
                    sqlx::query_as($crate::store::insight::EVENTS_PER_MINUTE)
                        .bind(since_ms)
                        .fetch_all(&self.pool)
                        .await?;
                let finished: Vec<(i64, i64)> =
                    sqlx::query_as($crate::store::insight::FINISHED_PER_MINUTE)
                        .bind(since_ms)
                        .fetch_all(&self.pool)
                        .await?;
                Ok($crate::store::insight::minutes(events, finished))
            }

            async fn channel_events(
                &self,
                since_ms: i64,
            ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::insight::CHANNEL_EVENTS)
                    .bind(since_ms)
                    .fetch_all(&self.pool)
                    .await?)
            }
        }
    };
}
pub(crate) use insights_on_pool;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_matches_itself_only() {
        let q = JobQuery {
            error: Some("50%_of \\ Timeout".into()),
            ..JobQuery::default()
        };
        assert_eq!(q.error_pattern().unwrap(), "%50\\%\\_of \\\\ timeout%");
    }

    #[test]
    fn minutes_merge_both_counts_in_order() {
        let m = minutes(vec![(2, 5), (1, 3)], vec![(2, 1), (4, 2)]);
        assert_eq!(
            m,
            vec![
                Minute {
                    at_ms: 60_000,
                    events: 3,
                    finished: 0
                },
                Minute {
                    at_ms: 120_000,
                    events: 5,
                    finished: 1
                },
                Minute {
                    at_ms: 240_000,
                    events: 0,
                    finished: 2
                },
            ]
        );
    }
}
