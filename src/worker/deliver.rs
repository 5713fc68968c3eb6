//! The outbox's delivery loop: claims due deliveries, sends them, records each outcome.
//!
//! Each delivery is independent: its own lease, attempts, backoff ([`super::transition`], the
//! same function as jobs) and dead letter. Sends run concurrently; outcomes are written in one
//! transaction per claim. A delivery whose notifier is no longer configured is dead-lettered with
//! that reason, so an operator can re-drive it once the notifier is back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::notify::Notifier;
use super::transition::{self, ErrorKind, RetryPolicy, Transition};
use crate::clock::Clock;
use crate::store::queue::{DeliveryEnd, DeliveryRow, DeliveryUpdate, Queue, append_error};
use crate::telemetry::events::{DeliveryAttempted, DeliveryResult, InternalEvent};
use crate::telemetry::metrics::Metrics;

/// Deliveries claimed at once.
const CLAIM: i64 = 64;

/// Everything the loop needs.
pub struct Deliverer<Q> {
    /// The outbox.
    pub queue: Arc<Q>,
    /// The configured notifiers.
    pub notifiers: Vec<Notifier>,
    /// The HTTP client.
    pub http: reqwest::Client,
    /// Bound on each send.
    pub timeout: Duration,
    /// Lease on a claimed delivery.
    pub lease: Duration,
    /// Attempts and backoff.
    pub retry: RetryPolicy,
    /// How often an idle loop looks for due deliveries.
    pub idle: Duration,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// This loop's name in leases.
    pub name: String,
    /// Notified when deliveries are written.
    pub wake: Arc<Notify>,
    /// Claims and retries are judged by it.
    pub clock: Clock,
}

/// Runs until `cancel`; a claim in flight is finished first.
pub async fn run<Q: Queue>(d: Deliverer<Q>, cancel: CancellationToken) {
    let mut claims = 0u64;
    loop {
        claims += 1;
        let owner = format!("{}/{claims}", d.name);
        let now = d.clock.now_ms();
        let due = d
            .queue
            .claim_deliveries(&owner, CLAIM, now, d.lease.as_millis() as i64)
            .await;
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "Could not claim deliveries");
                Vec::new()
            }
        };
        if due.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(d.idle) => continue,
                () = d.wake.notified() => continue,
                () = cancel.cancelled() => return,
            }
        }
        let sends = due.iter().map(|row| d.attempt(row, &owner));
        let updates = futures_util::future::join_all(sends).await;
        if let Err(e) = d.queue.end_deliveries(&updates, d.clock.now_ms()).await {
            // The leases expire and the deliveries are sent again: at least once.
            tracing::error!(error = %e, "Could not record delivery outcomes");
        }
        if cancel.is_cancelled() {
            return;
        }
    }
}

impl<Q: Queue> Deliverer<Q> {
    /// Sends one delivery and decides its fate.
    async fn attempt(&self, row: &DeliveryRow, owner: &str) -> DeliveryUpdate {
        let now = self.clock.now_ms();
        let sent = match self.notifiers.iter().find(|n| n.name() == row.notifier) {
            Some(n) => n.send(&self.http, &row.payload, self.timeout).await,
            None => Err(super::notify::SendError {
                transient: false,
                message: format!("notifier '{}' is not configured", row.notifier),
            }),
        };
        let attempted = |result| DeliveryAttempted {
            delivery_id: row.id,
            job_id: row.job_id,
            notifier: &row.notifier,
            result,
        };
        let (end, errors) = match sent {
            Ok(()) => {
                attempted(DeliveryResult::Delivered).emit(&self.metrics);
                (DeliveryEnd::Delivered, row.errors.clone())
            }
            Err(e) => {
                let errors = append_error(&row.errors, row.attempt, now, &e.message);
                let kind = ErrorKind::of(e.transient);
                match transition::next(&self.retry, row.attempt, kind, rand::random()) {
                    Transition::Retry { delay } => {
                        attempted(DeliveryResult::Retry {
                            error: &e,
                            retry_in: delay,
                        })
                        .emit(&self.metrics);
                        let run_at = now + delay.as_millis() as i64;
                        let end = DeliveryEnd::Retry {
                            run_at,
                            error: e.message,
                        };
                        (end, errors)
                    }
                    Transition::Dead => {
                        attempted(DeliveryResult::Dead { error: &e }).emit(&self.metrics);
                        (DeliveryEnd::Dead { error: e.message }, errors)
                    }
                }
            }
        };
        DeliveryUpdate {
            id: row.id,
            owner: owner.to_owned(),
            end,
            errors,
        }
    }
}
