//! The job queue and the outbox on PostgreSQL, shared by several instances.
//!
//! Claims lock the rows they pick with `FOR UPDATE SKIP LOCKED`, so concurrent claimers on other
//! instances pass over each other's rows instead of waiting for them or taking them twice; the
//! lease then fences a worker that lost its row. Step updates are one statement a batch
//! (`steps.rs`), and so are delivery outcomes (one statement per round in one transaction when a
//! delivery repeats in a batch): fixed texts over `unnest` of array parameters, prepared once per
//! connection whatever the batch size.

use std::collections::HashSet;

use sqlx::Postgres;

use super::{PgStore, begin_write};
use crate::store::model::job_from_row;
use crate::store::queue::{
    ActionError, Applied, Claim, DeliveryFilter, DeliveryRow, DeliveryUpdate, JobUpdate, Purged,
    Queue, changed_one, check_cancellable_delivery, check_cancellable_job,
    check_retryable_delivery, check_retryable_job, delivery_from_row, retry_refused,
};
use crate::store::{JobRow, StoreError, leased, sql};

/// The claim of due jobs, given where its values come from: the lease holder, the lease
/// deadline, now, at most this many, and more conditions on the candidate `j` (or `""`).
/// Claiming an `available` or `retryable` job starts an attempt; re-claiming a `running` job whose
/// worker died, or a `polling` job, continues it. The `NOT EXISTS` is the per-order gate: only the
/// oldest open job of an order is due. The rows picked are leased through `id = ANY(ARRAY(…))`,
/// not `id IN (…)`: a prepared statement soon runs a generic plan (no parameter values), and for
/// `IN` that plan scans the whole table to join it with the rows picked, where `ANY` of the
/// array looks each up by its key (2 ms against 0.3 ms with 10,000 open jobs here). One text
/// for [`CLAIM_JOBS`] and the claim that rides on a batch of step updates (`steps.rs`), so the
/// two cannot drift apart.
macro_rules! claim_jobs {
    ($owner:literal, $until:literal, $now:literal, $limit:literal, $except:literal) => {
        concat!(
            "UPDATE sfcdc_jobs SET lease_owner = ", $owner, ", lease_until = ", $until,
            ", updated_at = ", $now, ",
        attempt = CASE WHEN state IN ('available', 'retryable') THEN attempt + 1 ELSE attempt END,
        state = CASE WHEN state IN ('available', 'retryable') THEN 'running' ELSE state END
    WHERE id = ANY(ARRAY(
        SELECT j.id FROM sfcdc_jobs j
        WHERE j.state IN ('available', 'running', 'polling', 'retryable') AND j.run_at <= ", $now, "
            AND (j.lease_until IS NULL OR j.lease_until < ", $now, ")
            AND NOT EXISTS (
                SELECT 1 FROM sfcdc_jobs e WHERE e.order_id = j.order_id AND e.id < j.id
                    AND e.state IN ('available', 'running', 'polling', 'retryable'))", $except, "
        ORDER BY j.run_at, j.id LIMIT ", $limit, " FOR UPDATE SKIP LOCKED))
    RETURNING id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress,
        result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at,
        updated_at, finished_at"
        )
    };
}
pub(super) use claim_jobs;

/// Leases due jobs: `$1` owner, `$2` lease deadline, `$3` now, `$4` at most this many.
const CLAIM_JOBS: &str = claim_jobs!("$1", "$2", "$3", "$4", "");

/// Leases due deliveries, each for one attempt: `$1` owner, `$2` lease deadline, `$3` now, `$4`
/// at most this many. `ANY(ARRAY(…))` for the generic plan, as in `claim_jobs!`.
const CLAIM_DELIVERIES: &str = "UPDATE sfcdc_deliveries SET lease_owner = $1, lease_until = $2, attempt = attempt + 1, updated_at = $3
    WHERE id = ANY(ARRAY(
        SELECT d.id FROM sfcdc_deliveries d
        WHERE d.state = 'pending' AND d.run_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3)
        ORDER BY d.run_at, d.id LIMIT $4 FOR UPDATE SKIP LOCKED))
    RETURNING id, job_id, notifier, event, payload, state, attempt, max_attempts, run_at, last_error, errors,
        created_at, delivered_at";

/// Ends delivery attempts, each only while its owner holds the lease: `$1` now, then parallel
/// arrays of id `$2`, owner `$3`, state `$4`, next run `$5`, error `$6`, error history `$7` and
/// delivery time `$8`. Returns the ids whose lease held. The `SET` clause is `END_DELIVERY_SET`'s
/// (`sql.rs`); one fixed text whatever the number of outcomes, so it is prepared once per
/// connection.
const END_DELIVERIES: &str = "UPDATE sfcdc_deliveries AS d SET state = v.state,
        run_at = coalesce(v.run_at, d.run_at), last_error = coalesce(v.error, d.last_error),
        errors = v.errors, delivered_at = v.delivered_at, lease_owner = NULL, lease_until = NULL,
        updated_at = $1
    FROM unnest($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[])
        AS v(id, owner, state, run_at, error, errors, delivered_at)
    WHERE d.id = v.id AND d.lease_owner = v.owner
    RETURNING d.id";

/// Ends one round of delivery attempts (no delivery twice) in one statement; the ids whose
/// lease held.
async fn end_delivery_round<'e, E>(
    executor: E,
    round: &[DeliveryUpdate],
    now_ms: i64,
) -> Result<HashSet<i64>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let (mut id, mut owner, mut state, mut run_at) = (vec![], vec![], vec![], vec![]);
    let (mut error, mut errors, mut delivered_at) = (vec![], vec![], vec![]);
    for u in round {
        let c = u.end.columns(now_ms);
        id.push(u.id);
        owner.push(u.owner.as_str());
        state.push(c.0);
        run_at.push(c.1);
        error.push(c.2);
        errors.push(u.errors.as_str());
        delivered_at.push(c.3);
    }
    let held = sqlx::query_scalar::<_, i64>(END_DELIVERIES)
        .bind(now_ms)
        .bind(id)
        .bind(owner)
        .bind(state)
        .bind(run_at)
        .bind(error)
        .bind(errors)
        .bind(delivered_at)
        .fetch_all(executor)
        .await?;
    Ok(held.into_iter().collect())
}

impl PgStore {
    /// Runs a job claim; the jobs come back in id order.
    async fn claim(
        &self,
        statement: &'static str,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        leased::claim(
            &self.pool,
            statement,
            owner,
            limit,
            now_ms,
            lease_ms,
            job_from_row,
        )
        .await
    }
}

impl Queue for PgStore {
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        self.claim(CLAIM_JOBS, owner, limit, now_ms, lease_ms).await
    }

    async fn update_jobs(
        &self,
        updates: &[JobUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        Ok(super::steps::update_jobs(&self.pool, updates, None, now_ms)
            .await?
            .held)
    }

    async fn update_jobs_and_claim(
        &self,
        updates: &[JobUpdate],
        claim: &Claim,
        now_ms: i64,
    ) -> Result<Applied, StoreError> {
        super::steps::update_jobs(&self.pool, updates, Some(claim), now_ms).await
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(sql::JOB)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn retry_job(&self, id: i64, now_ms: i64) -> Result<JobRow, ActionError> {
        let job = self.job(id).await?.ok_or(ActionError::NotFound("job"))?;
        check_retryable_job(&job)?;
        // The row as the retry left it, read in the same statement: a worker may claim it the
        // moment it is written.
        let retried = sqlx::query(sql::RETRY_JOB)
            .bind(now_ms)
            .bind(id)
            .fetch_optional(&self.pool)
            .await;
        match retried {
            Ok(Some(row)) => {
                // Idle workers on every instance wake for it.
                super::notify::send_now(self, super::notify::JOBS, "").await?;
                Ok(job_from_row(&row)?)
            }
            Ok(None) => Err(retry_refused(&job, None)),
            Err(e) => Err(retry_refused(&job, Some(e))),
        }
    }

    async fn cancel_job(&self, id: i64, reason: &str, now_ms: i64) -> Result<JobRow, ActionError> {
        let job = self.job(id).await?.ok_or(ActionError::NotFound("job"))?;
        check_cancellable_job(&job)?;
        let errors = job.errors_with(reason, now_ms);
        let r = sqlx::query(sql::CANCEL_JOB)
            .bind(reason)
            .bind(errors)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        changed_one("job", r.rows_affected())?;
        super::notify::send_now(self, super::notify::JOBS, "").await?;
        self.job(id).await?.ok_or(ActionError::NotFound("job"))
    }

    async fn purge(&self, before_ms: i64, triggers_before_ms: i64) -> Result<Purged, StoreError> {
        let jobs = sqlx::query(sql::PURGE_JOBS)
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let deliveries = sqlx::query(sql::PURGE_DELIVERIES)
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let triggers = sqlx::query(sql::PURGE_TRIGGERS)
            .bind(triggers_before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(Purged {
            jobs,
            deliveries,
            triggers,
        })
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        leased::claim(
            &self.pool,
            CLAIM_DELIVERIES,
            owner,
            limit,
            now_ms,
            lease_ms,
            delivery_from_row,
        )
        .await
    }

    async fn end_deliveries(
        &self,
        updates: &[DeliveryUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        // One statement (a transaction of its own) when no delivery repeats, as nearly always:
        // the loop sends one outcome per delivery claimed.
        let rounds = leased::rounds(updates, |u| u.id);
        let mut held = Vec::with_capacity(updates.len());
        match rounds.as_slice() {
            [] => {}
            [round] => {
                let ids = end_delivery_round(&self.pool, round, now_ms).await?;
                held.extend(round.iter().map(|u| ids.contains(&u.id)));
            }
            rounds => {
                let mut tx = begin_write(&self.pool).await?;
                for round in rounds {
                    let ids = end_delivery_round(&mut *tx, round, now_ms).await?;
                    held.extend(round.iter().map(|u| ids.contains(&u.id)));
                }
                tx.commit().await?;
            }
        }
        Ok(held)
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = sqlx::query(sql::DELIVERIES)
            .bind(filter.state.map(|s| s.as_str()))
            .bind(filter.job_id)
            .bind(filter.limit.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>, StoreError> {
        let row = sqlx::query(sql::DELIVERY)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(delivery_from_row).transpose()
    }

    async fn retry_delivery(&self, id: i64, now_ms: i64) -> Result<DeliveryRow, ActionError> {
        let d = self
            .delivery(id)
            .await?
            .ok_or(ActionError::NotFound("delivery"))?;
        check_retryable_delivery(&d)?;
        let r = sqlx::query(sql::RETRY_DELIVERY)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        changed_one("delivery", r.rows_affected())?;
        self.delivery(id)
            .await?
            .ok_or(ActionError::NotFound("delivery"))
    }

    async fn cancel_delivery(&self, id: i64, now_ms: i64) -> Result<DeliveryRow, ActionError> {
        let d = self
            .delivery(id)
            .await?
            .ok_or(ActionError::NotFound("delivery"))?;
        check_cancellable_delivery(&d)?;
        let r = sqlx::query(sql::CANCEL_DELIVERY)
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        changed_one("delivery", r.rows_affected())?;
        self.delivery(id)
            .await?
            .ok_or(ActionError::NotFound("delivery"))
    }
}
