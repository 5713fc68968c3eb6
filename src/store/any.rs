//! [`AnyStore`]: either backend behind one type, chosen by the database URL at run time.
//!
//! Every method is a plain `match` that hands the call to the backend inside, so the wiring,
//! the worker and the admin commands hold one store type whatever the URL says. It adds no
//! behaviour of its own: each backend's conformance suite covers what runs.

use std::collections::HashSet;
use std::time::Duration;

use super::audit::{Audit, AuditRow, NewAudit};
use super::insight::{Insights, JobQuery, Minute};
use super::lease::{Fence, LeaseRow, Leases, Takeover};
use super::postgres::{DEFAULT_IDLE_IN_TRANSACTION, PgStore};
use super::queue::{
    ActionError, Applied, Claim, DeliveryFilter, DeliveryRow, DeliveryUpdate, JobUpdate, Purged,
    Queue,
};
use super::recovery::{NewRecovery, Recoveries, RecoveryRow};
use super::sqlite::SqliteStore;
use super::{
    BatchOutcome, Checkpoint, Counts, JobFilter, JobRow, Position, QuarantineRow, StateCounts,
    Store, StoreBatch, StoreError, redact_url,
};

/// Either backend, chosen by `SFCDC_DATABASE_URL` at run time.
pub enum AnyStore {
    /// SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

impl AnyStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs the migrations.
    pub async fn open(url: &str) -> Result<AnyStore, StoreError> {
        AnyStore::open_with(url, DEFAULT_IDLE_IN_TRANSACTION).await
    }

    /// [`AnyStore::open`]; on PostgreSQL the server ends a session idle inside a transaction
    /// for `idle_in_transaction` (see [`PgStore::connect_with`]).
    pub async fn open_with(
        url: &str,
        idle_in_transaction: Duration,
    ) -> Result<AnyStore, StoreError> {
        let store = if url.starts_with("sqlite:") {
            AnyStore::Sqlite(SqliteStore::connect(url).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            AnyStore::Postgres(PgStore::connect_with(url, None, idle_in_transaction).await?)
        } else {
            return Err(StoreError::Config(format!(
                "'{}' is neither sqlite://PATH nor postgres://…",
                redact_url(url)
            )));
        };
        store.migrate().await?;
        Ok(store)
    }
}

impl Store for AnyStore {
    fn backend(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(s) => s.backend(),
            AnyStore::Postgres(p) => p.backend(),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.migrate().await,
            AnyStore::Postgres(p) => p.migrate().await,
        }
    }

    async fn checkpoint(&self, channel: &str) -> Result<Option<Position>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.checkpoint(channel).await,
            AnyStore::Postgres(p) => p.checkpoint(channel).await,
        }
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.checkpoints().await,
            AnyStore::Postgres(p) => p.checkpoints().await,
        }
    }

    async fn set_checkpoint(
        &self,
        channel: &str,
        position: &Position,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.set_checkpoint(channel, position, now_ms).await,
            AnyStore::Postgres(p) => p.set_checkpoint(channel, position, now_ms).await,
        }
    }

    async fn commit_batch(&self, batch: &StoreBatch) -> Result<BatchOutcome, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.commit_batch(batch).await,
            AnyStore::Postgres(p) => p.commit_batch(batch).await,
        }
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.jobs(filter).await,
            AnyStore::Postgres(p) => p.jobs(filter).await,
        }
    }

    async fn quarantined(&self, open_only: bool) -> Result<Vec<QuarantineRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.quarantined(open_only).await,
            AnyStore::Postgres(p) => p.quarantined(open_only).await,
        }
    }

    async fn quarantine_entry(&self, id: i64) -> Result<Option<QuarantineRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.quarantine_entry(id).await,
            AnyStore::Postgres(p) => p.quarantine_entry(id).await,
        }
    }

    async fn quarantine_retry_failed(
        &self,
        id: i64,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.quarantine_retry_failed(id, reason, now_ms).await,
            AnyStore::Postgres(p) => p.quarantine_retry_failed(id, reason, now_ms).await,
        }
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.counts().await,
            AnyStore::Postgres(p) => p.counts().await,
        }
    }

    async fn state_counts(&self) -> Result<StateCounts, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.state_counts().await,
            AnyStore::Postgres(p) => p.state_counts().await,
        }
    }

    async fn known_triggers(&self, keys: &[String]) -> Result<HashSet<String>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.known_triggers(keys).await,
            AnyStore::Postgres(p) => p.known_triggers(keys).await,
        }
    }

    async fn open_approvals(
        &self,
        orders: &[String],
    ) -> Result<HashSet<(String, String)>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.open_approvals(orders).await,
            AnyStore::Postgres(p) => p.open_approvals(orders).await,
        }
    }
}

impl Queue for AnyStore {
    async fn claim_jobs(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.claim_jobs(owner, limit, now_ms, lease_ms).await,
            AnyStore::Postgres(p) => p.claim_jobs(owner, limit, now_ms, lease_ms).await,
        }
    }

    async fn update_jobs(
        &self,
        updates: &[JobUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.update_jobs(updates, now_ms).await,
            AnyStore::Postgres(p) => p.update_jobs(updates, now_ms).await,
        }
    }

    async fn update_jobs_and_claim(
        &self,
        updates: &[JobUpdate],
        claim: &Claim,
        now_ms: i64,
    ) -> Result<Applied, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.update_jobs_and_claim(updates, claim, now_ms).await,
            AnyStore::Postgres(p) => p.update_jobs_and_claim(updates, claim, now_ms).await,
        }
    }

    async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.job(id).await,
            AnyStore::Postgres(p) => p.job(id).await,
        }
    }

    async fn retry_job(&self, id: i64, now_ms: i64) -> Result<JobRow, ActionError> {
        match self {
            AnyStore::Sqlite(s) => s.retry_job(id, now_ms).await,
            AnyStore::Postgres(p) => p.retry_job(id, now_ms).await,
        }
    }

    async fn cancel_job(&self, id: i64, reason: &str, now_ms: i64) -> Result<JobRow, ActionError> {
        match self {
            AnyStore::Sqlite(s) => s.cancel_job(id, reason, now_ms).await,
            AnyStore::Postgres(p) => p.cancel_job(id, reason, now_ms).await,
        }
    }

    async fn purge(&self, before_ms: i64, triggers_before_ms: i64) -> Result<Purged, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.purge(before_ms, triggers_before_ms).await,
            AnyStore::Postgres(p) => p.purge(before_ms, triggers_before_ms).await,
        }
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.claim_deliveries(owner, limit, now_ms, lease_ms).await,
            AnyStore::Postgres(p) => p.claim_deliveries(owner, limit, now_ms, lease_ms).await,
        }
    }

    async fn end_deliveries(
        &self,
        updates: &[DeliveryUpdate],
        now_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.end_deliveries(updates, now_ms).await,
            AnyStore::Postgres(p) => p.end_deliveries(updates, now_ms).await,
        }
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.deliveries(filter).await,
            AnyStore::Postgres(p) => p.deliveries(filter).await,
        }
    }

    async fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.delivery(id).await,
            AnyStore::Postgres(p) => p.delivery(id).await,
        }
    }

    async fn retry_delivery(&self, id: i64, now_ms: i64) -> Result<DeliveryRow, ActionError> {
        match self {
            AnyStore::Sqlite(s) => s.retry_delivery(id, now_ms).await,
            AnyStore::Postgres(p) => p.retry_delivery(id, now_ms).await,
        }
    }

    async fn cancel_delivery(&self, id: i64, now_ms: i64) -> Result<DeliveryRow, ActionError> {
        match self {
            AnyStore::Sqlite(s) => s.cancel_delivery(id, now_ms).await,
            AnyStore::Postgres(p) => p.cancel_delivery(id, now_ms).await,
        }
    }
}

impl Leases for AnyStore {
    async fn acquire(
        &self,
        channel: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<Takeover>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.acquire(channel, holder, ttl_ms).await,
            AnyStore::Postgres(p) => p.acquire(channel, holder, ttl_ms).await,
        }
    }

    async fn renew(&self, channel: &str, fence: &Fence, ttl_ms: i64) -> Result<bool, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.renew(channel, fence, ttl_ms).await,
            AnyStore::Postgres(p) => p.renew(channel, fence, ttl_ms).await,
        }
    }

    async fn release(&self, channel: &str, fence: &Fence) -> Result<bool, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.release(channel, fence).await,
            AnyStore::Postgres(p) => p.release(channel, fence).await,
        }
    }

    async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.leases().await,
            AnyStore::Postgres(p) => p.leases().await,
        }
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: i64) -> Result<usize, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.heartbeat(instance, ttl_ms).await,
            AnyStore::Postgres(p) => p.heartbeat(instance, ttl_ms).await,
        }
    }

    async fn leave(&self, instance: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.leave(instance).await,
            AnyStore::Postgres(p) => p.leave(instance).await,
        }
    }
}

impl Recoveries for AnyStore {
    async fn request_recovery(&self, request: &NewRecovery) -> Result<bool, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.request_recovery(request).await,
            AnyStore::Postgres(p) => p.request_recovery(request).await,
        }
    }

    async fn pending_recoveries(&self) -> Result<Vec<RecoveryRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.pending_recoveries().await,
            AnyStore::Postgres(p) => p.pending_recoveries().await,
        }
    }

    async fn finish_recovery(
        &self,
        id: i64,
        finished_ms: i64,
        scanned: i64,
        created: i64,
    ) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.finish_recovery(id, finished_ms, scanned, created).await,
            AnyStore::Postgres(p) => p.finish_recovery(id, finished_ms, scanned, created).await,
        }
    }

    async fn fail_recovery(&self, id: i64, error: &str) -> Result<(), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.fail_recovery(id, error).await,
            AnyStore::Postgres(p) => p.fail_recovery(id, error).await,
        }
    }

    async fn recoveries(&self, limit: i64) -> Result<Vec<RecoveryRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.recoveries(limit).await,
            AnyStore::Postgres(p) => p.recoveries(limit).await,
        }
    }

    async fn last_requested(&self, reason: &str) -> Result<Option<i64>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.last_requested(reason).await,
            AnyStore::Postgres(p) => p.last_requested(reason).await,
        }
    }

    async fn last_commit(&self, channel: &str) -> Result<Option<i64>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.last_commit(channel).await,
            AnyStore::Postgres(p) => p.last_commit(channel).await,
        }
    }
}

impl Audit for AnyStore {
    async fn record_audit(&self, entry: &NewAudit) -> Result<i64, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.record_audit(entry).await,
            AnyStore::Postgres(p) => p.record_audit(entry).await,
        }
    }

    async fn audit_trail(
        &self,
        limit: i64,
        before: Option<i64>,
    ) -> Result<Vec<AuditRow>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.audit_trail(limit, before).await,
            AnyStore::Postgres(p) => p.audit_trail(limit, before).await,
        }
    }
}

impl Insights for AnyStore {
    async fn job_page(
        &self,
        query: &JobQuery,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<JobRow>, i64), StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.job_page(query, limit, offset).await,
            AnyStore::Postgres(p) => p.job_page(query, limit, offset).await,
        }
    }

    async fn job_ids(&self, query: &JobQuery, limit: i64) -> Result<Vec<i64>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.job_ids(query, limit).await,
            AnyStore::Postgres(p) => p.job_ids(query, limit).await,
        }
    }

    async fn throughput(&self, since_ms: i64) -> Result<Vec<Minute>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.throughput(since_ms).await,
            AnyStore::Postgres(p) => p.throughput(since_ms).await,
        }
    }

    async fn channel_events(&self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        match self {
            AnyStore::Sqlite(s) => s.channel_events(since_ms).await,
            AnyStore::Postgres(p) => p.channel_events(since_ms).await,
        }
    }
}
