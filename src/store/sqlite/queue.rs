//! The job queue and the outbox on SQLite.
//!
//! SQLite has one writer, so a claim is one guarded `UPDATE … RETURNING`: the subquery picks the
//! due rows and the update leases them in the same statement, and no other claim can interleave.
//! Writes that span statements (step updates, delivery outcomes) run in a `BEGIN IMMEDIATE`
//! transaction, like every write here. A claim made with a batch of step updates runs after
//! them in their transaction, so it already sees the jobs they ended.

use super::{SqliteStore, begin_write};
use crate::store::model::job_from_row;
use crate::store::queue::{
    ActionError, Applied, Claim, DeliveryFilter, DeliveryRow, DeliveryUpdate, JobUpdate, Purged,
    Queue, changed_one, check_cancellable_delivery, check_cancellable_job,
    check_retryable_delivery, check_retryable_job, delivery_from_row, retry_refused,
};
use crate::store::{JobRow, StoreError, leased, sql};

/// Leases due jobs: `$1` owner, `$2` lease deadline, `$3` now, `$4` at most this many. Claiming
/// an `available` or `retryable` job starts an attempt; re-claiming a `running` job whose worker
/// died, or a `polling` job, continues it. The `NOT EXISTS` is the per-order gate: only the
/// oldest open job of an order is due.
const CLAIM_JOBS: &str = "UPDATE sfcdc_jobs SET lease_owner = $1, lease_until = $2, updated_at = $3,
        attempt = CASE WHEN state IN ('available', 'retryable') THEN attempt + 1 ELSE attempt END,
        state = CASE WHEN state IN ('available', 'retryable') THEN 'running' ELSE state END
    WHERE id IN (
        SELECT j.id FROM sfcdc_jobs j
        WHERE j.state IN ('available', 'running', 'polling', 'retryable') AND j.run_at <= $3
            AND (j.lease_until IS NULL OR j.lease_until < $3)
            AND NOT EXISTS (
                SELECT 1 FROM sfcdc_jobs e WHERE e.order_id = j.order_id AND e.id < j.id
                    AND e.state IN ('available', 'running', 'polling', 'retryable'))
        ORDER BY j.run_at, j.id LIMIT $4)
    RETURNING id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress,
        result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at,
        updated_at, finished_at";

/// Leases due deliveries, each for one attempt: `$1` owner, `$2` lease deadline, `$3` now, `$4`
/// at most this many.
const CLAIM_DELIVERIES: &str = "UPDATE sfcdc_deliveries SET lease_owner = $1, lease_until = $2, attempt = attempt + 1, updated_at = $3
    WHERE id IN (
        SELECT d.id FROM sfcdc_deliveries d
        WHERE d.state = 'pending' AND d.run_at <= $3 AND (d.lease_until IS NULL OR d.lease_until < $3)
        ORDER BY d.run_at, d.id LIMIT $4)
    RETURNING id, job_id, notifier, event, payload, state, attempt, max_attempts, run_at, last_error, errors,
        created_at, delivered_at";

/// Claims up to `limit` due jobs for `owner` on `db` (the pool, or a write transaction); they
/// come back in id order.
async fn claim_jobs_on<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    owner: &str,
    limit: i64,
    now_ms: i64,
    lease_ms: i64,
) -> Result<Vec<JobRow>, StoreError> {
    leased::claim(db, CLAIM_JOBS, owner, limit, now_ms, lease_ms, job_from_row).await
}

impl Queue for SqliteStore {
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        claim_jobs_on(&self.writer, owner, limit, now_ms, lease_ms).await
    }

    async fn update_jobs(
        &self,
        updates: &[JobUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let held = leased::update_jobs(&mut tx, updates, now_ms).await?;
        tx.commit().await?;
        Ok(held)
    }

    async fn update_jobs_and_claim(
        &self,
        updates: &[JobUpdate],
        claim: &Claim,
        now_ms: i64,
    ) -> Result<Applied, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let held = leased::update_jobs(&mut tx, updates, now_ms).await?;
        let mut claimed = Vec::new();
        if claim.limit > 0 {
            claimed =
                claim_jobs_on(&mut *tx, &claim.owner, claim.limit, now_ms, claim.lease_ms).await?;
        }
        tx.commit().await?;
        Ok(Applied { held, claimed })
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
            .fetch_optional(&self.writer)
            .await;
        match retried {
            Ok(Some(row)) => Ok(job_from_row(&row)?),
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
            .execute(&self.writer)
            .await
            .map_err(StoreError::from)?;
        changed_one("job", r.rows_affected())?;
        self.job(id).await?.ok_or(ActionError::NotFound("job"))
    }

    async fn purge(&self, before_ms: i64, triggers_before_ms: i64) -> Result<Purged, StoreError> {
        let jobs = sqlx::query(sql::PURGE_JOBS)
            .bind(before_ms)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let deliveries = sqlx::query(sql::PURGE_DELIVERIES)
            .bind(before_ms)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let triggers = sqlx::query(sql::PURGE_TRIGGERS)
            .bind(triggers_before_ms)
            .execute(&self.writer)
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
            &self.writer,
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
        let mut tx = begin_write(&self.writer).await?;
        let held = leased::end_deliveries(&mut tx, updates, now_ms).await?;
        tx.commit().await?;
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
            .execute(&self.writer)
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
            .execute(&self.writer)
            .await
            .map_err(StoreError::from)?;
        changed_one("delivery", r.rows_affected())?;
        self.delivery(id)
            .await?
            .ok_or(ActionError::NotFound("delivery"))
    }
}
