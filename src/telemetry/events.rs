//! Telemetry as named events. One struct per operational event writes its log line and its
//! metric together in [`InternalEvent::emit`], so a count never drifts from the line that explains
//! it. A line has its fields first and a short message last; metric labels come from closed enums
//! (a channel name is the one open label); nothing secret (token, password, key) is ever a field
//! or a label. Each line keeps the target of the module whose work it describes, so filters such
//! as `sfcdc::worker=debug` go on selecting it.
//!
//! A lookup by channel clones the shared name and allocates nothing. What is hotter still (every
//! cache read, the in-flight gauge of a stream) counts through handles resolved once:
//! [`CacheReads`], [`CacheInvalidations`], [`StreamGauges`].

use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

pub use super::labels::{
    CacheKind, DeliveryOutcome, NotifierKind, QuarantineKind, ReconcileReason, ReconnectReason,
    StepOutcome,
};
use super::metrics::{ChannelLabel, ChannelReason, Metrics, ReconcileLabel};
use crate::decode::Position;
use crate::decode::{ReplayId, ReplayRecovery};
use crate::rules::{Lost, SkipReason};
use crate::store::lease::TakeoverReason;

// Targets of the lines, as they were when each module logged its own.
const SOURCE: &str = "sfcdc::source::subscription";
const INGEST: &str = "sfcdc::ingest";
const STEP: &str = "sfcdc::worker::step";
const DELIVER: &str = "sfcdc::worker::deliver";
const AUTH: &str = "sfcdc::salesforce::auth";
const FLEET: &str = "sfcdc::fleet";
const RECONCILE: &str = "sfcdc::reconcile";

/// An operational event: its log line and its metric, written together.
pub trait InternalEvent {
    /// Logs the event and counts it in `metrics`.
    fn emit(self, metrics: &Metrics);
}

/// Events of a channel arrived in one response.
#[derive(Debug)]
pub struct EventsReceived<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// Events in the response.
    pub count: usize,
}

impl InternalEvent for EventsReceived<'_> {
    fn emit(self, metrics: &Metrics) {
        let count = self.count;
        tracing::trace!(target: SOURCE, channel = %self.channel, count, "Events received");
        metrics
            .events_received
            .get_or_create(&ChannelLabel::new(self.channel))
            .inc_by(count as u64);
    }
}

/// Events of one response decoded.
#[derive(Debug)]
pub struct EventsDecoded<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// Events that decoded.
    pub count: usize,
}

impl InternalEvent for EventsDecoded<'_> {
    fn emit(self, metrics: &Metrics) {
        let count = self.count;
        tracing::trace!(target: SOURCE, channel = %self.channel, count, "Events decoded");
        metrics
            .events_decoded
            .get_or_create(&ChannelLabel::new(self.channel))
            .inc_by(count as u64);
    }
}

/// An event that cannot be decoded, or that the rules cannot evaluate, is kept aside.
pub struct EventQuarantined<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// The event's position.
    pub replay_id: &'a ReplayId,
    /// The schema the event names.
    pub schema_id: &'a str,
    /// Why.
    pub kind: QuarantineKind,
    /// What went wrong.
    pub error: &'a dyn Display,
}

impl InternalEvent for EventQuarantined<'_> {
    fn emit(self, metrics: &Metrics) {
        let (channel, replay_id, error) = (self.channel, self.replay_id, self.error);
        match self.kind {
            QuarantineKind::Rule => {
                let channel: &str = channel;
                tracing::warn!(target: INGEST, channel, replay_id = %replay_id, error = %error, "Event quarantined: the rules cannot handle it");
            }
            _ => {
                tracing::warn!(target: SOURCE, channel = %channel, replay_id = %replay_id, schema_id = %self.schema_id, error = %error, "Event quarantined: it cannot be decoded");
            }
        }
        metrics
            .events_quarantined
            .get_or_create(&ChannelReason::new(channel, self.kind))
            .inc();
    }
}

/// The server rejected the session: sfcdc logs in again and reconnects at once.
#[derive(Debug)]
pub struct SessionRejected<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// The server's error.
    pub error: &'a str,
}

impl InternalEvent for SessionRejected<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(target: SOURCE, channel = %self.channel, error = %self.error, "Session rejected; logging in again");
        metrics
            .reconnects
            .get_or_create(&ChannelReason::new(self.channel, ReconnectReason::Auth))
            .inc();
    }
}

/// The server rejected the stored replay id: `SFCDC_REPLAY_RECOVERY` decides where to resume
/// (or to stop the channel).
#[derive(Debug)]
pub struct ReplayRecovered<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// The position that was rejected.
    pub rejected: &'a Position,
    /// What applies.
    pub policy: ReplayRecovery,
    /// The server's error.
    pub error: &'a str,
    /// Where the lost window starts (epoch ms), when the sink knows.
    pub lost_since: Option<i64>,
}

impl InternalEvent for ReplayRecovered<'_> {
    fn emit(self, metrics: &Metrics) {
        let channel = self.channel;
        metrics
            .replay_recoveries
            .get_or_create(&ChannelReason::new(channel, self.policy))
            .inc();
        metrics
            .reconnects
            .get_or_create(&ChannelReason::new(
                channel,
                ReconnectReason::ReplayRejected,
            ))
            .inc();
        tracing::warn!(
            target: SOURCE,
            channel = %channel,
            rejected = ?self.rejected,
            policy = self.policy.name(),
            error = %self.error,
            lost_since = self.lost_since.map(crate::clock::rfc3339),
            "REPLAY ID REJECTED: the stored position is invalid or older than the retention window; applying SFCDC_REPLAY_RECOVERY"
        );
    }
}

/// A stream ended; the next one opens after a backoff.
#[derive(Debug)]
pub struct Reconnecting<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// Why the stream ended.
    pub reason: ReconnectReason,
    /// The backoff.
    pub retry_in: Duration,
    /// Where the next stream starts.
    pub resume: &'a Position,
}

impl InternalEvent for Reconnecting<'_> {
    fn emit(self, metrics: &Metrics) {
        metrics
            .reconnects
            .get_or_create(&ChannelReason::new(self.channel, self.reason))
            .inc();
        let reason = self.reason.as_str();
        tracing::info!(target: SOURCE, channel = %self.channel, reason, retry_in = ?self.retry_in, resume = ?self.resume, "Reconnecting to the Pub/Sub API");
    }
}

/// A group of staged batches committed.
#[derive(Debug)]
pub struct BatchCommitted<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// Events in the group.
    pub events: usize,
    /// How long the commit took.
    pub elapsed: Duration,
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self, metrics: &Metrics) {
        let events = self.events;
        tracing::debug!(target: SOURCE, channel = %self.channel, events, elapsed = ?self.elapsed, "Batch committed");
        metrics
            .batch_commit_seconds
            .get_or_create(&ChannelLabel::new(self.channel))
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A group of staged batches failed to commit; the stream ends and resumes after the last
/// commit (the subscription logs that decision).
#[derive(Debug)]
pub struct CommitFailed<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// Events in the group.
    pub events: usize,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// What failed.
    pub error: &'a (dyn std::error::Error + Send + Sync),
}

impl InternalEvent for CommitFailed<'_> {
    fn emit(self, metrics: &Metrics) {
        let events = self.events;
        tracing::debug!(target: SOURCE, channel = %self.channel, events, elapsed = ?self.elapsed, error = %self.error, "Batch commit failed");
        metrics
            .batch_commit_seconds
            .get_or_create(&ChannelLabel::new(self.channel))
            .observe(self.elapsed.as_secs_f64());
    }
}

/// An event said changes were lost (a `GAP_OVERFLOW`, or record ids given as a wildcard), and
/// recently modified orders are reconciled.
#[derive(Debug)]
pub struct ChangesLost<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// The event's position.
    pub replay_id: &'a ReplayId,
    /// The entity whose changes were lost.
    pub entity: &'a str,
    /// How they were lost.
    pub lost: Lost,
}

impl InternalEvent for ChangesLost<'_> {
    fn emit(self, metrics: &Metrics) {
        let label = ChannelLabel::new(self.channel);
        let channel: &str = self.channel;
        match self.lost {
            Lost::Overflow => {
                metrics.gap_overflows.get_or_create(&label).inc();
                tracing::warn!(target: INGEST, channel, replay_id = %self.replay_id, entity = %self.entity, "GAP_OVERFLOW: changes were lost; reconciling recently modified orders");
            }
            Lost::Wildcard => {
                metrics.wildcard_events.get_or_create(&label).inc();
                tracing::warn!(target: INGEST, channel, replay_id = %self.replay_id, entity = %self.entity, "Record ids given as a wildcard: these records changed, ids unknown; reconciling recently modified orders");
            }
        }
    }
}

/// A provisioning job was created (committed with its event).
#[derive(Debug)]
pub struct JobCreated<'a> {
    /// The topic of the event that created it.
    pub channel: &'a Arc<str>,
    /// That event's replay id (empty when unknown).
    pub replay_id: &'a [u8],
    /// The order.
    pub order_id: &'a str,
    /// The job's id.
    pub job_id: i64,
    /// The job's idempotency key.
    pub job_key: &'a str,
}

impl InternalEvent for JobCreated<'_> {
    fn emit(self, metrics: &Metrics) {
        let channel: &str = self.channel;
        tracing::info!(
            target: INGEST,
            channel,
            replay_id = hex::encode(self.replay_id),
            order_id = self.order_id,
            job_id = self.job_id,
            job_key = %self.job_key,
            "Provisioning job created"
        );
        metrics
            .jobs_created
            .get_or_create(&ChannelLabel::new(self.channel))
            .inc();
    }
}

/// An event (or a record of it) created no job.
#[derive(Debug)]
pub struct TriggerSkipped<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// Why.
    pub reason: SkipReason,
    /// How many, in one batch.
    pub count: usize,
}

impl InternalEvent for TriggerSkipped<'_> {
    fn emit(self, metrics: &Metrics) {
        let (channel, n): (&str, usize) = (self.channel, self.count);
        tracing::debug!(target: INGEST, channel, reason = self.reason.label(), n, "No job");
        metrics
            .rule_skips
            .get_or_create(&ChannelReason::new(self.channel, self.reason))
            .inc_by(n as u64);
    }
}

/// Triggers seen before (a replayed event, or an approval with an open job) made no new job.
#[derive(Debug)]
pub struct DuplicateSuppressed<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// `DuplicateEvent` or `DuplicateApproval`.
    pub reason: SkipReason,
    /// How many.
    pub count: usize,
}

impl InternalEvent for DuplicateSuppressed<'_> {
    fn emit(self, metrics: &Metrics) {
        let (channel, n): (&str, usize) = (self.channel, self.count);
        tracing::debug!(target: INGEST, channel, reason = self.reason.label(), n, "Duplicate trigger suppressed");
        metrics
            .rule_skips
            .get_or_create(&ChannelReason::new(self.channel, self.reason))
            .inc_by(n as u64);
    }
}

/// The rules asked for cache invalidations (counted before coalescing).
#[derive(Debug)]
pub struct InvalidationsRequested {
    /// How many.
    pub count: usize,
}

impl InternalEvent for InvalidationsRequested {
    fn emit(self, metrics: &Metrics) {
        let n = self.count;
        if n > 0 {
            tracing::debug!(target: INGEST, n, "Cache invalidations requested");
        }
        metrics.invalidations_requested.inc_by(n as u64);
    }
}

/// How a job step ended, with what its line reports.
#[derive(Debug)]
pub enum StepEnd {
    /// The outcome is written back.
    Completed {
        /// The fulfilment system's id for the order, if it gave one.
        external_id: Option<String>,
        /// Seconds from the job's creation.
        latency_seconds: f64,
    },
    /// The order no longer qualifies.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// A retry is scheduled.
    Retry {
        /// The attempt that failed.
        attempt: i32,
        /// What failed.
        error: String,
        /// The backoff.
        retry_in: Duration,
    },
    /// The job is dead-lettered.
    Dead {
        /// The last attempt.
        attempt: i32,
        /// What failed.
        error: String,
    },
    /// The operation is still running.
    Poll {
        /// When it is polled again.
        poll_in: Duration,
    },
}

impl StepEnd {
    /// The metric label.
    pub fn outcome(&self) -> StepOutcome {
        match self {
            StepEnd::Completed { .. } => StepOutcome::Completed,
            StepEnd::Cancelled { .. } => StepOutcome::Cancelled,
            StepEnd::Retry { .. } => StepOutcome::Retry,
            StepEnd::Dead { .. } => StepOutcome::Dead,
            StepEnd::Poll { .. } => StepOutcome::Poll,
        }
    }
}

/// A job step ended and its outcome is recorded.
#[derive(Debug)]
pub struct JobStepEnded<'a> {
    /// The job.
    pub job_id: i64,
    /// Its order.
    pub order_id: &'a str,
    /// How the step ended.
    pub end: StepEnd,
}

impl InternalEvent for JobStepEnded<'_> {
    fn emit(self, metrics: &Metrics) {
        let (job_id, order_id) = (self.job_id, self.order_id);
        let outcome = self.end.outcome();
        match self.end {
            StepEnd::Completed {
                external_id,
                latency_seconds,
            } => {
                tracing::info!(target: STEP, job_id, order_id = %order_id, external_id = ?external_id, "Job completed");
                metrics.job_latency_seconds.observe(latency_seconds);
            }
            StepEnd::Cancelled { reason } => {
                tracing::info!(target: STEP, job_id, order_id = %order_id, %reason, "Job cancelled: the order no longer qualifies");
            }
            StepEnd::Retry {
                attempt,
                error,
                retry_in,
            } => {
                tracing::warn!(target: STEP, job_id, attempt, %error, retry_in = ?retry_in, "Job step failed; retrying");
                metrics.job_retries.inc();
            }
            StepEnd::Dead { attempt, error } => {
                tracing::error!(target: STEP, job_id, order_id = %order_id, attempt, %error, "Job dead-lettered");
                metrics.job_dead_letters.inc();
            }
            StepEnd::Poll { poll_in } => {
                tracing::debug!(target: STEP, job_id, poll_in = ?poll_in, "Operation pending; polling again");
            }
        }
        metrics
            .job_steps
            .get_or_create(&super::metrics::OutcomeLabel { outcome })
            .inc();
    }
}

/// Another worker (or an operator's cancel) took a job over mid-step: the step writes nothing.
#[derive(Debug)]
pub struct JobLeaseLost {
    /// The job.
    pub job_id: i64,
}

impl InternalEvent for JobLeaseLost {
    fn emit(self, metrics: &Metrics) {
        metrics.job_leases_lost.inc();
        tracing::warn!(
            target: STEP,
            job_id = self.job_id,
            "Lost the job's lease (another worker or an operator has it); dropping this step"
        );
    }
}

/// How a delivery attempt ended, with what its line reports.
pub enum DeliveryResult<'a> {
    /// The notifier accepted it.
    Delivered,
    /// A retry is scheduled.
    Retry {
        /// What failed.
        error: &'a dyn Display,
        /// The backoff.
        retry_in: Duration,
    },
    /// The delivery is dead-lettered.
    Dead {
        /// What failed.
        error: &'a dyn Display,
    },
}

/// A notification delivery was attempted.
pub struct DeliveryAttempted<'a> {
    /// The delivery.
    pub delivery_id: i64,
    /// Its job.
    pub job_id: i64,
    /// The notifier's stored name.
    pub notifier: &'a str,
    /// How it ended.
    pub result: DeliveryResult<'a>,
}

impl InternalEvent for DeliveryAttempted<'_> {
    fn emit(self, metrics: &Metrics) {
        let (delivery_id, notifier) = (self.delivery_id, self.notifier);
        let outcome = match self.result {
            DeliveryResult::Delivered => {
                tracing::info!(target: DELIVER, delivery_id, job_id = self.job_id, notifier = %notifier, "Notification delivered");
                DeliveryOutcome::Delivered
            }
            DeliveryResult::Retry { error, retry_in } => {
                tracing::warn!(target: DELIVER, delivery_id, notifier = %notifier, error = %error, retry_in = ?retry_in, "Notification failed; retrying");
                DeliveryOutcome::Retry
            }
            DeliveryResult::Dead { error } => {
                tracing::error!(target: DELIVER, delivery_id, notifier = %notifier, error = %error, "Notification dead-lettered");
                DeliveryOutcome::Dead
            }
        };
        metrics
            .deliveries
            .get_or_create(&super::metrics::NotifierOutcome {
                notifier: NotifierKind::of(notifier),
                outcome,
            })
            .inc();
    }
}

/// A login to Salesforce succeeded; every one after the first is a refresh.
#[derive(Debug)]
pub struct LoggedIn<'a> {
    /// The `SF_AUTH` method.
    pub method: &'static str,
    /// The org.
    pub org_id: &'a str,
    /// The session's generation.
    pub generation: u64,
    /// Whether it replaced an earlier session.
    pub refresh: bool,
}

impl InternalEvent for LoggedIn<'_> {
    fn emit(self, metrics: &Metrics) {
        if self.refresh {
            metrics.auth_refreshes.inc();
        }
        tracing::info!(target: AUTH, method = self.method, org_id = %self.org_id, generation = self.generation, "Logged in to Salesforce");
    }
}

/// One cache's read counters, resolved once: a read counts with an atomic add, no lookup.
#[derive(Debug, Clone)]
pub struct CacheReads {
    hits: Counter,
    misses: Counter,
    coalesced: Counter,
    loads: Counter,
    load_errors: Counter,
}

impl CacheReads {
    /// The counters of `cache`.
    pub fn new(metrics: &Metrics, cache: CacheKind) -> CacheReads {
        let label = super::metrics::CacheLabel { cache };
        CacheReads {
            hits: metrics.cache_hits.get_or_create_owned(&label),
            misses: metrics.cache_misses.get_or_create_owned(&label),
            coalesced: metrics.cache_coalesced_waits.get_or_create_owned(&label),
            loads: metrics.cache_loads.get_or_create_owned(&label),
            load_errors: metrics.cache_load_errors.get_or_create_owned(&label),
        }
    }

    /// A read answered from the cache.
    pub fn hit(&self) {
        self.hits.inc();
    }

    /// Reads that found no usable entry.
    pub fn misses(&self, n: u64) {
        self.misses.inc_by(n);
    }

    /// A miss that waited for another caller's load.
    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    /// A load from Salesforce began.
    pub fn load(&self) {
        self.loads.inc();
    }

    /// A load failed.
    pub fn load_failed(&self) {
        self.load_errors.inc();
    }
}

/// One cache's counter of invalidations applied (after coalescing), resolved once.
#[derive(Debug, Clone)]
pub struct CacheInvalidations(Counter);

impl CacheInvalidations {
    /// The counter of `cache`.
    pub fn new(metrics: &Metrics, cache: CacheKind) -> CacheInvalidations {
        CacheInvalidations(
            metrics
                .cache_invalidations
                .get_or_create_owned(&super::metrics::CacheLabel { cache }),
        )
    }

    /// An invalidation applied.
    pub fn applied(&self) {
        self.0.inc();
    }
}

/// One channel's stream gauges: in-flight events resolved once per stream, the last message's
/// time looked up (without allocating) when a message arrives, so that it is exported only once
/// there is one.
#[derive(Debug)]
pub struct StreamGauges<'a> {
    metrics: &'a Metrics,
    channel: ChannelLabel,
    inflight: Gauge,
}

impl<'a> StreamGauges<'a> {
    /// The gauges of `channel`.
    pub fn new(metrics: &'a Metrics, channel: &Arc<str>) -> StreamGauges<'a> {
        let channel = ChannelLabel::new(channel);
        StreamGauges {
            inflight: metrics.inflight_events.get_or_create_owned(&channel),
            metrics,
            channel,
        }
    }

    /// Events received and not yet committed.
    pub fn inflight(&self, events: i64) {
        self.inflight.set(events);
    }

    /// A message (an event or a keepalive) arrived at `now_ms`.
    pub fn message_at(&self, now_ms: i64) {
        self.metrics
            .last_message_timestamp
            .get_or_create(&self.channel)
            .set(now_ms / 1000);
    }
}

/// This instance took a channel's lease and subscribes to it.
#[derive(Debug)]
pub struct LeaseTaken<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// This instance.
    pub instance: &'a str,
    /// The lease generation (the fencing token its commits carry).
    pub generation: i64,
    /// Why the lease was free.
    pub reason: TakeoverReason,
}

impl InternalEvent for LeaseTaken<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(target: FLEET, channel = %self.channel, instance = self.instance, generation = self.generation, reason = self.reason.as_str(), "Lease taken; subscribing");
        let label = ChannelLabel::new(self.channel);
        metrics
            .lease_takeovers
            .get_or_create(&ChannelReason::new(self.channel, self.reason))
            .inc();
        metrics.channel_leader.get_or_create(&label).set(1);
        metrics
            .lease_generation
            .get_or_create(&label)
            .set(self.generation);
    }
}

/// This instance lost a channel's lease while holding it: another instance took it, an operator
/// reset the channel, or it could not be renewed in time. It stops subscribing at once.
#[derive(Debug)]
pub struct LeaseLost<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// The generation it held.
    pub generation: i64,
    /// What happened.
    pub why: &'a str,
}

impl InternalEvent for LeaseLost<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(target: FLEET, channel = %self.channel, generation = self.generation, why = self.why, "Lease lost; standing by");
        let label = ChannelLabel::new(self.channel);
        metrics.lease_lost.get_or_create(&label).inc();
        metrics.channel_leader.get_or_create(&label).set(0);
    }
}

/// This instance let a channel's lease go (a graceful stop, or more than its fair share).
#[derive(Debug)]
pub struct LeaseReleased<'a> {
    /// The topic.
    pub channel: &'a Arc<str>,
    /// The generation it held.
    pub generation: i64,
    /// Why.
    pub why: &'a str,
}

impl InternalEvent for LeaseReleased<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::info!(target: FLEET, channel = %self.channel, generation = self.generation, why = self.why, "Lease released");
        metrics
            .channel_leader
            .get_or_create(&ChannelLabel::new(self.channel))
            .set(0);
    }
}

/// The cache dropped everything: the invalidation broadcast was interrupted, so invalidations
/// sent meanwhile by other instances may have been missed.
#[derive(Debug)]
pub struct CacheBroadcastReset<'a> {
    /// What interrupted it.
    pub why: &'a str,
}

impl InternalEvent for CacheBroadcastReset<'_> {
    fn emit(self, metrics: &Metrics) {
        tracing::warn!(target: FLEET, why = self.why, "Invalidation broadcast interrupted; dropping the whole cache");
        metrics.cache_broadcast_resets.inc();
    }
}

/// A reconcile scan finished: what it read and what it did. Jobs it created are approvals the
/// stream did not deliver (or not yet): each one is counted by why the scan ran.
#[derive(Debug)]
pub struct ReconcileFinished<'a> {
    /// Why it ran.
    pub reason: ReconcileReason,
    /// `soql` or `bulk`.
    pub via: &'a str,
    /// Orders read.
    pub scanned: u64,
    /// Orders with a trigger status.
    pub candidates: u64,
    /// Jobs created.
    pub created: u64,
    /// Candidates that already had their job (open, or created by an earlier trigger).
    pub existing: u64,
    /// Candidates the guards refused (activation status blocking, external id present).
    pub skipped_by_guard: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// Whether nothing was written (`--dry-run`).
    pub dry_run: bool,
}

impl InternalEvent for ReconcileFinished<'_> {
    fn emit(self, metrics: &Metrics) {
        let label = ReconcileLabel {
            reason: self.reason,
        };
        metrics
            .reconcile_orders_scanned
            .get_or_create(&label)
            .inc_by(self.scanned);
        if !self.dry_run {
            metrics
                .reconcile_jobs_created
                .get_or_create(&label)
                .inc_by(self.created);
        }
        let (reason, via) = (self.reason.as_str(), self.via);
        let (scanned, candidates, created) = (self.scanned, self.candidates, self.created);
        let (existing, skipped, dry_run) = (self.existing, self.skipped_by_guard, self.dry_run);
        let elapsed = self.elapsed;
        if created > 0 && !dry_run && !matches!(self.reason, ReconcileReason::Manual) {
            tracing::warn!(target: RECONCILE, reason, via, scanned, candidates, created, existing, skipped_by_guard = skipped, ?elapsed, "Reconcile created jobs for approvals the stream had not delivered");
        } else {
            tracing::info!(target: RECONCILE, reason, via, scanned, candidates, created, existing, skipped_by_guard = skipped, dry_run, ?elapsed, "Reconcile finished");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_unique_and_snake_case() {
        fn check(names: impl Iterator<Item = &'static str>) {
            let mut seen = std::collections::HashSet::new();
            for n in names {
                assert!(seen.insert(n), "{n} twice");
                assert!(n.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{n}");
            }
        }
        check(QuarantineKind::ALL.iter().map(|k| k.as_str()));
        check(ReconnectReason::ALL.iter().map(|k| k.as_str()));
        check(StepOutcome::ALL.iter().map(|k| k.as_str()));
        check(NotifierKind::ALL.iter().map(|k| k.as_str()));
        check(DeliveryOutcome::ALL.iter().map(|k| k.as_str()));
        check(CacheKind::ALL.iter().map(|k| k.as_str()));
    }

    #[test]
    fn stored_notifier_names_map_to_kinds() {
        assert_eq!(NotifierKind::of("webhook"), NotifierKind::Webhook);
        assert_eq!(NotifierKind::of("github"), NotifierKind::GitHub);
        assert_eq!(NotifierKind::of("pager"), NotifierKind::Unknown);
    }

    #[test]
    fn channel_events_count_under_their_channel_and_reason() {
        let m = Metrics::new();
        let channel: Arc<str> = Arc::from("/data/OrderChangeEvent");
        let ch = ("channel", "/data/OrderChangeEvent");
        EventsReceived {
            channel: &channel,
            count: 3,
        }
        .emit(&m);
        EventsDecoded {
            channel: &channel,
            count: 2,
        }
        .emit(&m);
        EventQuarantined {
            channel: &channel,
            replay_id: &ReplayId::default(),
            schema_id: "s",
            kind: QuarantineKind::Payload,
            error: &"bad",
        }
        .emit(&m);
        Reconnecting {
            channel: &channel,
            reason: ReconnectReason::Watchdog,
            retry_in: Duration::from_secs(1),
            resume: &Position::Latest,
        }
        .emit(&m);
        ReplayRecovered {
            channel: &channel,
            rejected: &Position::Earliest,
            policy: ReplayRecovery::Latest,
            lost_since: None,
            error: "x",
        }
        .emit(&m);
        DuplicateSuppressed {
            channel: &channel,
            reason: SkipReason::DuplicateEvent,
            count: 4,
        }
        .emit(&m);
        assert_eq!(m.value("sfcdc_events_received_total", &[ch]), 3.0);
        assert_eq!(m.value("sfcdc_events_decoded_total", &[ch]), 2.0);
        let quarantined = [ch, ("reason", "payload")];
        assert_eq!(m.value("sfcdc_events_quarantined_total", &quarantined), 1.0);
        let watchdog = [ch, ("reason", "watchdog")];
        assert_eq!(m.value("sfcdc_reconnects_total", &watchdog), 1.0);
        let rejected = [ch, ("reason", "replay_rejected")];
        assert_eq!(m.value("sfcdc_reconnects_total", &rejected), 1.0);
        let latest = [ch, ("reason", "latest")];
        assert_eq!(m.value("sfcdc_replay_recoveries_total", &latest), 1.0);
        let duplicates = [ch, ("reason", "duplicate_event")];
        assert_eq!(m.value("sfcdc_rule_skips_total", &duplicates), 4.0);
    }

    #[test]
    fn job_steps_count_their_outcome_and_its_own_counter() {
        let m = Metrics::new();
        let ended = |end| JobStepEnded {
            job_id: 1,
            order_id: "801",
            end,
        };
        ended(StepEnd::Retry {
            attempt: 1,
            error: "e".into(),
            retry_in: Duration::ZERO,
        })
        .emit(&m);
        ended(StepEnd::Dead {
            attempt: 2,
            error: "e".into(),
        })
        .emit(&m);
        ended(StepEnd::Completed {
            external_id: None,
            latency_seconds: 0.5,
        })
        .emit(&m);
        for outcome in ["retry", "dead", "completed"] {
            let labels = [("outcome", outcome)];
            assert_eq!(m.value("sfcdc_job_steps_total", &labels), 1.0);
        }
        assert_eq!(m.value("sfcdc_job_retries_total", &[]), 1.0);
        assert_eq!(m.value("sfcdc_job_dead_letters_total", &[]), 1.0);
        assert_eq!(m.value("sfcdc_job_latency_seconds_count", &[]), 1.0);
    }

    #[test]
    fn deliveries_count_by_notifier_and_outcome() {
        let m = Metrics::new();
        DeliveryAttempted {
            delivery_id: 1,
            job_id: 1,
            notifier: "github",
            result: DeliveryResult::Dead { error: &"gone" },
        }
        .emit(&m);
        let labels = [("notifier", "github"), ("outcome", "dead")];
        assert_eq!(m.value("sfcdc_deliveries_total", &labels), 1.0);
    }
}
