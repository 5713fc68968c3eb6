//! Automatic recovery: the service runs the reconcile scans its recovery log asks for.
//!
//! Requests are recorded where a loss is noticed (see `store::recovery`): a rejected replay
//! position (the window from the channel's last committed event, less `SFCDC_RECONCILE_MARGIN`),
//! a `GAP_OVERFLOW` reaching further back than `SFCDC_RECONCILE_WINDOW`, the first start's
//! `SFCDC_BACKFILL`, and each period of `SFCDC_RECONCILE_EVERY`. [`Recovery::run`] takes pending
//! requests oldest first and scans each with the [`Reconciler`], under the `reconcile` lease, so
//! two instances never scan at once; a scan longer than the lease renews it. A request is marked
//! finished with its counts only after its scan completed; a failed scan counts an attempt, and
//! the request is retried after a growing pause. A scan interrupted by a crash runs again:
//! reconcile is idempotent.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Backfill, Quiet, Reconciler, Scope};
use crate::store::lease::{Fence, Leases};
use crate::store::recovery::{NewRecovery, Recoveries, RecoveryRow};
use crate::store::{AnyStore, Store, StoreError};
use crate::telemetry::events::ReconcileReason;

/// The lease recovery scans run under (channel names start with `/`, so it cannot clash).
pub const LEASE: &str = "reconcile";

/// How often pending requests are looked for when nothing wakes the runner (requests made by
/// another instance, the periodic schedule).
const POLL: Duration = Duration::from_secs(2);

/// The longest pause before a failed scan is tried again.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Runs the recovery log's scans.
pub struct Recovery {
    reconciler: Arc<Reconciler>,
    instance: String,
    lease_ttl: Duration,
    wake: Arc<Notify>,
    /// The last period of `SFCDC_RECONCILE_EVERY` this instance recorded its scan for, so the
    /// store is asked once per period, not every round.
    planned_period: AtomicI64,
}

impl Recovery {
    /// A runner scanning with `reconciler`, holding the `reconcile` lease as `instance` for
    /// `lease_ttl` at a time, woken by `wake` when a request is recorded in this process.
    pub fn new(
        reconciler: Arc<Reconciler>,
        instance: &str,
        lease_ttl: Duration,
        wake: Arc<Notify>,
    ) -> Self {
        Recovery {
            reconciler,
            instance: instance.to_owned(),
            lease_ttl,
            wake,
            planned_period: AtomicI64::new(i64::MIN),
        }
    }

    fn store(&self) -> &Arc<AnyStore> {
        self.reconciler.store()
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// On the first start (no channel has a stored position), records the `SFCDC_BACKFILL`
    /// scan, once for the store whatever the number of instances starting. True if it did.
    pub async fn plan_backfill(&self) -> Result<bool, StoreError> {
        let since_ms = match self.reconciler.config().backfill {
            Backfill::None => return Ok(false),
            Backfill::All => None,
            Backfill::Recent(d) => Some(
                self.reconciler
                    .clock()
                    .now_ms()
                    .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ),
        };
        if !self.store().checkpoints().await?.is_empty() {
            return Ok(false);
        }
        let recorded = self
            .store()
            .request_recovery(&NewRecovery {
                reason: ReconcileReason::Backfill.as_str().to_owned(),
                channel: None,
                since_ms,
                once_key: Some("backfill".to_owned()),
                requested_ms: self.reconciler.clock().now_ms(),
            })
            .await?;
        if recorded {
            tracing::info!(
                since = since_ms.map(crate::clock::rfc3339),
                "First start: backfilling approved orders without a job (SFCDC_BACKFILL)"
            );
        }
        Ok(recorded)
    }

    /// Records this period's `SFCDC_RECONCILE_EVERY` scan (of the period and the margin before
    /// it), once per period for the store (a unique key), and asks the store once per period.
    async fn plan_periodic(&self) -> Result<(), StoreError> {
        let Some(every) = self.reconciler.config().every else {
            return Ok(());
        };
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
        let margin_ms = i64::try_from(self.reconciler.config().margin.as_millis()).unwrap_or(0);
        let now = self.reconciler.clock().now_ms();
        let period = now / every_ms;
        if self.planned_period.load(Ordering::Relaxed) == period {
            return Ok(());
        }
        self.store()
            .request_recovery(&NewRecovery {
                reason: ReconcileReason::Periodic.as_str().to_owned(),
                channel: None,
                since_ms: Some(now.saturating_sub(every_ms).saturating_sub(margin_ms)),
                once_key: Some(format!("periodic:{period}")),
                requested_ms: now,
            })
            .await?;
        self.planned_period.store(period, Ordering::Relaxed);
        Ok(())
    }

    /// Runs pending scans until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut retry = Duration::ZERO;
        loop {
            match self.round(&stop).await {
                Ok(()) => retry = Duration::ZERO,
                Err(e) => {
                    retry = (retry * 2).clamp(POLL, MAX_RETRY);
                    tracing::warn!(error = %e, retry_in = ?retry, "Recovery scan failed; it stays pending");
                }
            }
            let pause = if retry.is_zero() { POLL } else { retry };
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified(), if retry.is_zero() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Plans the periodic scan, then runs every pending request under the lease.
    async fn round(&self, stop: &CancellationToken) -> Result<(), String> {
        self.plan_periodic().await.map_err(|e| e.to_string())?;
        let pending = self
            .store()
            .pending_recoveries()
            .await
            .map_err(|e| e.to_string())?;
        if pending.is_empty() {
            return Ok(());
        }
        let Some(taken) = self
            .store()
            .acquire(LEASE, &self.instance, self.ttl_ms())
            .await
            .map_err(|e| e.to_string())?
        else {
            // Another instance is scanning; it takes these too.
            return Ok(());
        };
        // Read again under the lease: another instance may have run them meanwhile.
        let pending = match self.store().pending_recoveries().await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.store().release(LEASE, &taken.fence).await;
                return Err(e.to_string());
            }
        };
        let held = CancellationToken::new();
        let renewal = tokio::spawn(renew(
            self.store().clone(),
            taken.fence.clone(),
            self.lease_ttl,
            held.clone(),
        ));
        let mut result = Ok(());
        for request in pending {
            if stop.is_cancelled() || held.is_cancelled() {
                break;
            }
            if let Err(e) = self.scan(&request, stop).await {
                result = Err(e);
                break;
            }
        }
        renewal.abort();
        if let Err(e) = self.store().release(LEASE, &taken.fence).await {
            tracing::debug!(error = %e, "Could not release the reconcile lease; it expires");
        }
        result
    }

    /// Runs one request and records its outcome.
    async fn scan(&self, request: &RecoveryRow, stop: &CancellationToken) -> Result<(), String> {
        let reason = ReconcileReason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == request.reason)
            .unwrap_or(ReconcileReason::Manual);
        let scope = request.since_ms.map_or(Scope::All, Scope::Since);
        tracing::info!(
            id = request.id,
            reason = reason.as_str(),
            channel = request.channel.as_deref(),
            since = request.since_ms.map(crate::clock::rfc3339),
            "Recovery scan starting"
        );
        let outcome = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            r = self.reconciler.run(scope, reason, false, &Quiet) => r,
        };
        match outcome {
            Ok(summary) => {
                if reason == ReconcileReason::ReplayLost {
                    tracing::warn!(
                        channel = request.channel.as_deref(),
                        since = request.since_ms.map(crate::clock::rfc3339),
                        scanned = summary.counts.scanned,
                        created = summary.counts.created,
                        "Recovered the window a rejected replay id lost"
                    );
                }
                let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                self.store()
                    .finish_recovery(
                        request.id,
                        self.reconciler.clock().now_ms(),
                        count(summary.counts.scanned),
                        count(summary.counts.created),
                    )
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => {
                let message = e.to_string();
                if let Err(e) = self.store().fail_recovery(request.id, &message).await {
                    tracing::debug!(error = %e, "Could not count the failed attempt");
                }
                Err(message)
            }
        }
    }
}

/// Renews the lease every third of its life until it is lost (then cancels `held`) or the task
/// is aborted.
async fn renew(store: Arc<AnyStore>, fence: Fence, ttl: Duration, held: CancellationToken) {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.renew(LEASE, &fence, ttl_ms).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("The reconcile lease was taken over; stopping after this scan");
                held.cancel();
                return;
            }
            Err(e) => tracing::debug!(error = %e, "Could not renew the reconcile lease"),
        }
    }
}
