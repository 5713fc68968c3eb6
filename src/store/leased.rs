//! Batched writes to leased rows on SQLite: a worker's step updates
//! ([`Queue::update_jobs`](super::queue::Queue::update_jobs)) and the outbox's delivery outcomes
//! ([`Queue::end_deliveries`](super::queue::Queue::end_deliveries)). PostgreSQL writes both with
//! statements of its own (`postgres/steps.rs`, `postgres/queue.rs`), one round trip a round, over
//! the same [`rounds`] and the same columns ([`JobEnd::columns`], [`DeliveryEnd::columns`]).
//!
//! Each change joins its row to a `VALUES` list and names the lease owner, so it applies only
//! while that owner still holds the lease; the ids returned say which did. Changes are grouped
//! one statement per kind, in rounds in which no row repeats, so two changes of one row in a
//! batch still apply in order. A job's end inserts its deliveries in the same transaction. The
//! caller opens that transaction (its backend's write transaction) and commits it.
//!
//! Claims, on both backends, run through [`claim`]: each backend has its own claim statements,
//! and one function binds them and reads the rows back in id order.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Row};

use super::StoreError;
use super::queue::{DeliveryEnd, DeliveryRow, DeliveryUpdate, JobChange, JobEnd, JobUpdate};
use super::sql::{self, ROWS_PER_STATEMENT};

/// Applies step updates in the caller's transaction; each says whether its lease still held.
pub(crate) async fn update_jobs<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    updates: &[JobUpdate],
    now_ms: i64,
) -> Result<Vec<bool>, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB>,
    for<'q> Option<i32>: sqlx::Encode<'q, DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut held = Vec::with_capacity(updates.len());
    for round in rounds(updates, |u| u.id) {
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
        for chunk in phases.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(sql::PHASE_SET);
            q.push_bind(now_ms).push(" FROM (");
            q.push_values(chunk, |mut b, (u, phase)| {
                b.push_bind(u.id)
                    .push_bind(u.owner.as_str())
                    .push_bind(*phase);
            });
            q.push(sql::LEASED_ROWS);
            for r in q.build().fetch_all(&mut **tx).await? {
                held_ids.insert(r.try_get(0)?);
            }
        }
        for chunk in operations.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(sql::OPERATION_SET);
            q.push_bind(now_ms)
                .push("), updated_at = ")
                .push_bind(now_ms)
                .push(" FROM (");
            q.push_values(chunk, |mut b, (u, op)| {
                b.push_bind(u.id)
                    .push_bind(u.owner.as_str())
                    .push_bind(op.as_str());
            });
            q.push(sql::LEASED_ROWS);
            for r in q.build().fetch_all(&mut **tx).await? {
                held_ids.insert(r.try_get(0)?);
            }
        }
        for chunk in polls.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(sql::POLL_SET);
            q.push_bind(now_ms)
                .push("), updated_at = ")
                .push_bind(now_ms)
                .push(" FROM (");
            q.push_values(chunk, |mut b, (u, p)| {
                b.push_bind(u.id)
                    .push_bind(u.owner.as_str())
                    .push_bind(p.operation_id.as_str())
                    .push_bind(p.progress)
                    .push_bind(p.run_at)
                    .push_bind(p.error.as_deref());
            });
            q.push(sql::LEASED_ROWS);
            for r in q.build().fetch_all(&mut **tx).await? {
                held_ids.insert(r.try_get(0)?);
            }
        }
        for chunk in ends.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(sql::END_SET);
            q.push_bind(now_ms).push(" FROM (");
            q.push_values(chunk, |mut b, (u, c, errors, _)| {
                b.push_bind(u.id)
                    .push_bind(u.owner.as_str())
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
            for r in q.build().fetch_all(&mut **tx).await? {
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
            for rows in deliveries.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::<DB>::new(sql::INSERT_DELIVERIES);
                q.push_values(rows, |mut b, (job_id, d)| {
                    b.push_bind(*job_id)
                        .push_bind(d.notifier.as_str())
                        .push_bind(d.event.as_str())
                        .push_bind(d.payload.as_str())
                        .push_bind("pending")
                        .push_bind(0i32)
                        .push_bind(d.max_attempts)
                        .push_bind(now_ms)
                        .push_bind(now_ms)
                        .push_bind(now_ms);
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().execute(&mut **tx).await?;
            }
        }
        held.extend(round.iter().map(|u| held_ids.contains(&u.id)));
    }
    Ok(held)
}

/// Ends delivery attempts in the caller's transaction; each says whether its lease still held.
pub(crate) async fn end_deliveries<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    updates: &[DeliveryUpdate],
    now_ms: i64,
) -> Result<Vec<bool>, StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Encode<'q, DB>,
    for<'q> Option<&'q str>: sqlx::Encode<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut held = Vec::with_capacity(updates.len());
    for round in rounds(updates, |u| u.id) {
        let mut held_ids: HashSet<i64> = HashSet::new();
        for chunk in round.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<DB>::new(sql::END_DELIVERY_SET);
            q.push_bind(now_ms).push(" FROM (");
            q.push_values(chunk, |mut b, u| {
                let (state, run_at, error, delivered_at) = u.end.columns(now_ms);
                b.push_bind(u.id)
                    .push_bind(u.owner.as_str())
                    .push_bind(state)
                    .push_bind(run_at)
                    .push_bind(error)
                    .push_bind(u.errors.as_str())
                    .push_bind(delivered_at);
            });
            q.push(sql::LEASED_DELIVERIES);
            for r in q.build().fetch_all(&mut **tx).await? {
                held_ids.insert(r.try_get(0)?);
            }
        }
        held.extend(round.iter().map(|u| held_ids.contains(&u.id)));
    }
    Ok(held)
}

/// A row a claim returns: it comes back among the others in id order.
pub(crate) trait Claimed {
    /// The row's id.
    fn id(&self) -> i64;
}

impl Claimed for super::JobRow {
    fn id(&self) -> i64 {
        self.id
    }
}

impl Claimed for DeliveryRow {
    fn id(&self) -> i64 {
        self.id
    }
}

/// Runs a claim on `db` (a pool, or a write transaction's connection), on either backend:
/// `statement` leases due rows with `$1` the owner, `$2` the lease deadline (`now_ms +
/// lease_ms`), `$3` now and `$4` at most this many, and returns them; they come back in id
/// order, read by `from_row`.
pub(crate) async fn claim<'e, DB, T>(
    db: impl sqlx::Executor<'e, Database = DB>,
    statement: &'static str,
    owner: &str,
    limit: i64,
    now_ms: i64,
    lease_ms: i64,
    from_row: impl Fn(&DB::Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError>
where
    DB: sqlx::Database,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    T: Claimed,
{
    let rows = sqlx::query::<DB>(statement)
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(db)
        .await?;
    let mut claimed = rows.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    claimed.sort_by_key(T::id);
    Ok(claimed)
}

/// Splits `items` into consecutive runs in which no id repeats, so that a batch applied one
/// statement per kind of change still applies two changes of one row in order.
pub(crate) fn rounds<T>(items: &[T], id: impl Fn(&T) -> i64) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < items.len() {
        let mut seen = HashSet::new();
        let end = items[start..]
            .iter()
            .position(|x| !seen.insert(id(x)))
            .map_or(items.len(), |n| start + n);
        out.push(&items[start..end]);
        start = end;
    }
    out
}

/// The columns of a job end, bound in [`sql::END_SET`]'s order.
pub(crate) struct EndColumns<'a> {
    /// The job's new state.
    pub(crate) state: &'static str,
    /// When a retry runs.
    pub(crate) run_at: Option<i64>,
    /// The last error.
    pub(crate) error: Option<&'a str>,
    /// The fulfilment result.
    pub(crate) result: Option<&'a str>,
    /// The external id.
    pub(crate) external_id: Option<&'a str>,
    /// When the job finished, unless it retries.
    pub(crate) finished_at: Option<i64>,
    /// 1 when the operation is abandoned (the next attempt submits anew), else 0.
    pub(crate) new_operation: i32,
}

impl JobEnd {
    /// The columns this end writes.
    pub(crate) fn columns(&self, now_ms: i64) -> EndColumns<'_> {
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
    pub(crate) fn columns(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
