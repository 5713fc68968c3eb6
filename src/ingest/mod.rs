//! The transactional sink: from a batch of decoded events to one store transaction.
//!
//! For each batch the rules are evaluated in two passes (the second with the order facts the
//! first asked for, read in one lookup for the whole batch), a `GAP_OVERFLOW` or a wildcard
//! record id triggers a reconciliation of recently modified orders (and, for an overflow reaching
//! further back than that window, a reconcile scan asked for with the batch), and the resulting
//! triggers, jobs, quarantined events, scan requests and the new checkpoint are committed
//! together, with the commit time of the batch's last event. The batch's cache invalidations are
//! handed to the [`Invalidator`] before that commit, as the batch is staged (Salesforce already
//! holds what the events report, so it is never early; and off the path of the channel's serial
//! commits); it records them and returns at once: ingest never waits for the cache.
//!
//! A failed lookup or commit fails the whole batch: the subscriber then resumes from the last
//! committed position, and the batch is evaluated again from scratch.

pub mod redrive;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::cache::invalidate::Invalidator;
use crate::clock::Clock;
use crate::decode::{DecodedEvent, EventBody, FailedEvent, Position, ReplayId, ReplayRecovery};
use crate::rules::{
    self, Decision, Evaluation, Facts, Invalidation, JobRequest, Lost, RulesConfig, SkipReason,
};
use crate::salesforce::OrderLookup;
use crate::sfid::SfId;
use crate::source::sink::{Batch, Sink, SinkError, SinkErrorKind};
use crate::store::lease::Fence;
use crate::store::recovery::NewRecovery;
use crate::store::{
    BatchOutcome, NewJob, NewQuarantine, NewTrigger, Store, StoreBatch, StoreError,
};
use crate::telemetry::events::{
    ChangesLost, DuplicateSuppressed, EventQuarantined, InternalEvent, InvalidationsRequested,
    JobCreated, QuarantineKind, ReconcileReason, TriggerSkipped,
};
use crate::telemetry::metrics::Metrics;

/// A store failure as the subscription should see it: a database error (an outage, a full or
/// read-only disk, a lost connection) is retried; a bad URL or stored data sfcdc cannot read is
/// not; a refused fence means this instance may no longer commit for the channel.
fn store_failure(context: &'static str, e: StoreError) -> SinkError {
    match e {
        StoreError::Database(_) => SinkError::retryable(context, e),
        StoreError::Config(_) | StoreError::Corrupt(_) => SinkError::permanent(context, e),
        StoreError::Fenced { .. } => SinkError::new(SinkErrorKind::Fenced, context, e),
    }
}

/// The sink of `sfcdc run`: rules, lookups and the store.
pub struct IngestSink<S: Store, L: OrderLookup> {
    store: Arc<S>,
    lookup: Arc<L>,
    rules: Arc<RulesConfig>,
    metrics: Arc<Metrics>,
    invalidations: Option<Invalidator>,
    max_attempts: i32,
    jobs_created: Arc<tokio::sync::Notify>,
    clock: Clock,
    /// The lease each channel's batches commit under, while this instance holds it.
    fences: std::sync::Mutex<HashMap<Arc<str>, Fence>>,
    /// This instance's id, when its cache invalidations go to the rest of the fleet.
    broadcast_from: Option<Arc<str>>,
    /// How far before the last committed event a lost window starts.
    recovery_margin_ms: i64,
    /// Notified after a reconcile scan was asked for, so the recovery runner starts at once.
    recovery_requested: Arc<tokio::sync::Notify>,
}

/// A decision taken apart for absorption into a batch.
struct Absorbed {
    triggers_len: usize,
    triggers: Vec<rules::TriggerRecord>,
    jobs: Vec<JobRequest>,
    invalidations: Vec<Invalidation>,
    skips: Vec<SkipReason>,
}

/// Everything one batch of events leads to, before it is committed.
#[derive(Debug, Default)]
pub struct Prepared {
    /// What to write.
    pub batch: StoreBatch,
    /// Cache entries to drop as the batch commits.
    pub invalidations: Vec<Invalidation>,
    /// Why events created no job, for skips not tied to an evaluated trigger (those are
    /// counted from the triggers, after the store's duplicate check).
    pub skips: Vec<SkipReason>,
    /// Orders whose cached guard facts this batch made stale (forgotten here already; the
    /// other instances are told with the commit).
    pub forgets: Vec<SfId>,
}

impl Prepared {
    /// Appends a later batch of the same channel: its rows follow, its checkpoint wins.
    pub fn absorb_later(&mut self, later: Prepared) {
        let b = later.batch;
        self.batch.triggers.extend(b.triggers);
        self.batch.jobs.extend(b.jobs);
        self.batch.quarantine.extend(b.quarantine);
        self.batch.resolve_quarantine.extend(b.resolve_quarantine);
        self.batch.recoveries.extend(b.recoveries);
        if b.checkpoint.is_some() {
            self.batch.checkpoint = b.checkpoint;
        }
        if b.last_event_ms.is_some() {
            self.batch.last_event_ms = self.batch.last_event_ms.max(b.last_event_ms);
        }
        self.invalidations.extend(later.invalidations);
        self.skips.extend(later.skips);
        self.forgets.extend(later.forgets);
    }
}

impl<S: Store, L: OrderLookup> IngestSink<S, L> {
    /// A sink writing to `store`, looking facts up with `lookup`, and sending invalidations to
    /// `invalidations` when given.
    pub fn new(
        store: Arc<S>,
        lookup: Arc<L>,
        rules: Arc<RulesConfig>,
        metrics: Arc<Metrics>,
        invalidations: Option<Invalidator>,
        max_attempts: i32,
    ) -> Self {
        IngestSink {
            store,
            lookup,
            rules,
            metrics,
            invalidations,
            max_attempts,
            jobs_created: Arc::new(tokio::sync::Notify::new()),
            clock: Clock::system(),
            fences: std::sync::Mutex::new(HashMap::new()),
            broadcast_from: None,
            recovery_margin_ms: 300_000,
            recovery_requested: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Starts lost windows `margin` before the last committed event (default 5 minutes).
    pub fn with_recovery_margin(mut self, margin: std::time::Duration) -> Self {
        self.recovery_margin_ms = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// Notified after a lost replay position or a wide `GAP_OVERFLOW` asked for a reconcile.
    pub fn recovery_requested(&self) -> &Arc<tokio::sync::Notify> {
        &self.recovery_requested
    }

    /// Tells the other instances of the fleet, with each commit, which cache entries it made
    /// stale (`from` is this instance's id, so it ignores its own).
    pub fn with_broadcast(mut self, from: &str) -> Self {
        self.broadcast_from = Some(Arc::from(from));
        self
    }

    /// Commits `channel`'s batches under `fence` from now on (`None`: unfenced). A batch staged
    /// under a fence keeps it, so one staged before a lease moved is refused, not written.
    pub fn set_fence(&self, channel: &Arc<str>, fence: Option<Fence>) {
        let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
        match fence {
            Some(f) => fences.insert(channel.clone(), f),
            None => fences.remove(channel),
        };
    }

    fn fence_of(&self, channel: &str) -> Option<Fence> {
        self.fences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            .cloned()
    }

    /// Stamps batches with `clock`'s time instead of the system clock's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock batches are stamped with.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Notified after a commit that created jobs, so an idle worker starts at once.
    pub fn jobs_created(&self) -> &Arc<tokio::sync::Notify> {
        &self.jobs_created
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    fn new_job(&self, channel: &str, event: &DecodedEvent, j: &JobRequest) -> NewJob {
        job_row(
            j,
            channel,
            &event.replay_id,
            &event.event_id,
            self.max_attempts,
        )
    }

    fn absorb(&self, out: &mut Prepared, channel: &str, event: &DecodedEvent, d: Decision) {
        let d = Absorbed {
            triggers_len: d.triggers.len(),
            triggers: d.triggers,
            jobs: d.jobs,
            invalidations: d.invalidations,
            skips: d.skips,
        };
        for t in d.triggers {
            tracing::debug!(
                replay_id = %event.replay_id,
                order_id = %t.order_id,
                skipped = t.skipped.map(SkipReason::label),
                "Trigger evaluated"
            );
            out.batch.triggers.push(NewTrigger {
                key: t.key,
                order_id: t.order_id.to_string(),
                skipped: t.skipped,
            });
        }
        for j in &d.jobs {
            out.batch.jobs.push(self.new_job(channel, event, j));
        }
        out.invalidations.extend(d.invalidations);
        // Skips of evaluated triggers are counted from the triggers after the commit (a replay
        // counts as a duplicate, not as its original reason); the others are counted here.
        let mut trigger_skips: Vec<SkipReason> = out.batch.triggers
            [out.batch.triggers.len() - d.triggers_len..]
            .iter()
            .filter_map(|t| t.skipped)
            .collect();
        for s in d.skips {
            if let Some(i) = trigger_skips.iter().position(|t| *t == s) {
                trigger_skips.swap_remove(i);
            } else {
                out.skips.push(s);
            }
        }
    }

    /// Evaluates the rules for a batch's events, looking up what they need.
    pub async fn prepare(
        &self,
        channel: &Arc<str>,
        events: &[DecodedEvent],
        failed: &[FailedEvent],
    ) -> Result<Prepared, SinkError> {
        let mut out = Prepared::default();
        // Undecodable events were counted and logged as they arrived.
        for f in failed {
            out.batch.quarantine.push(quarantine_row(
                channel,
                &f.replay_id,
                &f.schema_id,
                &f.event_id,
                &f.payload,
                f.error.to_string(),
                QuarantineKind::from(&f.error),
            ));
        }
        let mut pending = Vec::new();
        let mut needed = BTreeSet::new();
        let mut overflows = Vec::new();
        let empty = Facts::default();
        for (i, e) in events.iter().enumerate() {
            match rules::evaluate(&self.rules, e, &empty) {
                Ok(Evaluation::Done(d)) => self.absorb(&mut out, channel, e, d),
                Ok(Evaluation::NeedOrders(ids)) => {
                    needed.extend(ids);
                    pending.push(i);
                }
                Ok(Evaluation::NeedReconciliation { since_ms, lost }) => {
                    overflows.push((i, since_ms, lost));
                }
                Err(error) => {
                    EventQuarantined {
                        channel,
                        replay_id: &e.replay_id,
                        schema_id: &e.schema_id,
                        kind: QuarantineKind::Rule,
                        error: &error,
                    }
                    .emit(&self.metrics);
                    out.batch.quarantine.push(quarantine_row(
                        channel,
                        &e.replay_id,
                        &e.schema_id,
                        &e.event_id,
                        &e.payload,
                        format!("rule: {error}"),
                        QuarantineKind::Rule,
                    ));
                }
            }
        }
        // Facts cached before an event of this batch changed a guard field are out of date,
        // for this batch's lookups and for later ones.
        let changed: BTreeSet<_> = events
            .iter()
            .flat_map(|e| rules::guard_changes(&self.rules, e))
            .collect();
        if !changed.is_empty() {
            let changed: Vec<_> = changed.into_iter().collect();
            self.lookup.forget(&changed).await;
            out.forgets = changed;
        }
        if !needed.is_empty() {
            let ids: Vec<_> = needed.into_iter().collect();
            let facts = self
                .lookup
                .orders(&ids)
                .await
                .map_err(|e| SinkError::retryable("order lookup failed", e))?;
            for i in pending {
                let e = &events[i];
                match rules::evaluate(&self.rules, e, &facts) {
                    Ok(Evaluation::Done(d)) => self.absorb(&mut out, channel, e, d),
                    other => {
                        return Err(SinkError::permanent(
                            "evaluating the rules",
                            format!("the rules asked again after a lookup: {other:?}"),
                        ));
                    }
                }
            }
        }
        for (i, since_ms, lost) in overflows {
            let e = &events[i];
            let EventBody::Change(c) = &e.body else {
                continue;
            };
            ChangesLost {
                channel,
                replay_id: &e.replay_id,
                entity: &c.entity,
                lost,
            }
            .emit(&self.metrics);
            let orders = self
                .lookup
                .modified_since(since_ms)
                .await
                .map_err(|e| SinkError::retryable("reconciliation query failed", e))?;
            let d = rules::reconcile(&self.rules, c, lost, &orders);
            self.absorb(&mut out, channel, e, d);
            if lost == Lost::Overflow
                && let Some(request) = self.overflow_beyond_window(channel, e, since_ms).await?
            {
                out.batch.recoveries.push(request);
            }
        }
        Ok(out)
    }

    /// Where a loss on `channel` starts: its last committed event, less the margin; `None` when
    /// nothing was committed on it yet.
    async fn lost_window_start(&self, channel: &str) -> Result<Option<i64>, SinkError> {
        let last = self
            .store
            .last_commit(channel)
            .await
            .map_err(|e| store_failure("reading the channel's last commit", e))?;
        Ok(last.map(|t| t.saturating_sub(self.recovery_margin_ms)))
    }

    /// A `GAP_OVERFLOW` loses every change since the channel's last committed event, which may
    /// be earlier than the inline window (`since_ms`) reaches: the rest is scanned by a reconcile
    /// asked for with the batch (once per overflow event, however often it is replayed).
    async fn overflow_beyond_window(
        &self,
        channel: &str,
        e: &DecodedEvent,
        since_ms: i64,
    ) -> Result<Option<NewRecovery>, SinkError> {
        let Some(from) = self.lost_window_start(channel).await? else {
            return Ok(None);
        };
        if from >= since_ms {
            return Ok(None);
        }
        Ok(Some(NewRecovery {
            reason: ReconcileReason::GapOverflow.as_str().to_owned(),
            channel: Some(channel.to_owned()),
            since_ms: Some(from),
            once_key: Some(format!("gap_overflow:{channel}:{}", e.replay_id)),
            requested_ms: self.clock.now_ms(),
        }))
    }

    fn record(&self, channel: &Arc<str>, prepared: &Prepared, outcome: &BatchOutcome) {
        let replayed: foldhash::HashSet<&str> = outcome
            .duplicate_events
            .iter()
            .map(String::as_str)
            .collect();
        let trigger_skips = prepared
            .batch
            .triggers
            .iter()
            .filter(|t| !replayed.contains(t.key.as_str()))
            .filter_map(|t| t.skipped);
        // Counted per reason, one metric update each, not one per event.
        let mut skips = std::collections::BTreeMap::<SkipReason, usize>::new();
        for reason in prepared.skips.iter().copied().chain(trigger_skips) {
            *skips.entry(reason).or_default() += 1;
        }
        for (reason, count) in skips {
            TriggerSkipped {
                channel,
                reason,
                count,
            }
            .emit(&self.metrics);
        }
        for (reason, n) in [
            (SkipReason::DuplicateEvent, outcome.duplicate_events.len()),
            (
                SkipReason::DuplicateApproval,
                outcome.duplicate_approvals.len(),
            ),
        ] {
            if n > 0 {
                DuplicateSuppressed {
                    channel,
                    reason,
                    count: n,
                }
                .emit(&self.metrics);
            }
        }
        let jobs: foldhash::HashMap<&str, &NewJob> = prepared
            .batch
            .jobs
            .iter()
            .map(|j| (j.key.as_str(), j))
            .collect();
        for (id, key) in &outcome.created {
            let job = jobs.get(key.as_str());
            JobCreated {
                channel,
                replay_id: job.map_or(&[][..], |j| &j.replay_id),
                order_id: job.map_or("", |j| j.order_id.as_str()),
                job_id: *id,
                job_key: key,
            }
            .emit(&self.metrics);
        }
        if !outcome.created.is_empty() {
            self.jobs_created.notify_one();
        }
        if !prepared.batch.recoveries.is_empty() {
            self.recovery_requested.notify_one();
        }
    }

    /// Hands a batch's cache invalidations to the invalidator, before the batch commits:
    /// Salesforce already holds what the events report, so dropping the entries before the
    /// commit is never early, and by the time the checkpoint moves past an event its
    /// invalidation is at least pending. A failed commit has invalidated entries for nothing,
    /// which only costs a reload.
    fn send_invalidations(&self, invalidations: &[Invalidation]) {
        InvalidationsRequested {
            count: invalidations.len(),
        }
        .emit(&self.metrics);
        if let Some(invalidator) = &self.invalidations {
            invalidator.request(invalidations);
        }
    }

    /// Commits a prepared batch and reports it. Its cache invalidations were requested already
    /// (see [`IngestSink::send_invalidations`]).
    pub async fn commit_prepared(
        &self,
        channel: &Arc<str>,
        prepared: Prepared,
    ) -> Result<BatchOutcome, SinkError> {
        let outcome = self
            .store
            .commit_batch(&prepared.batch)
            .await
            .map_err(|e| store_failure("store commit failed", e))?;
        self.record(channel, &prepared, &outcome);
        Ok(outcome)
    }
}

impl<S: Store, L: OrderLookup> Sink for IngestSink<S, L> {
    type Staged = (Arc<str>, Prepared);

    async fn checkpoint(&self, channel: &str) -> Result<Option<Position>, SinkError> {
        self.store
            .checkpoint(channel)
            .await
            .map_err(|e| store_failure("reading the stored position", e))
    }

    async fn stage(&self, batch: Batch) -> Result<(Arc<str>, Prepared), SinkError> {
        let mut prepared = self
            .prepare(&batch.channel, &batch.events, &batch.failed)
            .await?;
        prepared.batch.channel = batch.channel.to_string();
        prepared.batch.checkpoint = Some(batch.replay_id);
        prepared.batch.fence = self.fence_of(&batch.channel);
        prepared.batch.last_event_ms = batch.events.iter().filter_map(|e| e.commit_ms()).max();
        // Requested here, one batch ahead of the commit, rather than on the commit's path: the
        // commits of one channel are serial, and this one waits for nothing.
        self.send_invalidations(&prepared.invalidations);
        Ok((batch.channel, prepared))
    }

    async fn commit(&self, staged: Vec<(Arc<str>, Prepared)>) -> Result<(), SinkError> {
        let mut staged = staged.into_iter();
        let Some((channel, mut merged)) = staged.next() else {
            return Ok(());
        };
        for (_, p) in staged {
            merged.absorb_later(p);
        }
        merged.batch.now_ms = self.clock.now_ms();
        if let Some(from) = &self.broadcast_from {
            merged.batch.cache_notices =
                crate::cache::broadcast::notices(from, &merged.invalidations, &merged.forgets);
        }
        self.commit_prepared(&channel, merged).await.map(|_| ())
    }

    async fn position_lost(
        &self,
        channel: &str,
        policy: ReplayRecovery,
    ) -> Result<Option<i64>, SinkError> {
        let since = self.lost_window_start(channel).await?;
        if policy == ReplayRecovery::Fail {
            return Ok(since);
        }
        // Without a last commit the window's start is unknown: every order is scanned.
        self.store
            .request_recovery(&NewRecovery {
                reason: ReconcileReason::ReplayLost.as_str().to_owned(),
                channel: Some(channel.to_owned()),
                since_ms: since,
                once_key: None,
                requested_ms: self.clock.now_ms(),
            })
            .await
            .map_err(|e| store_failure("recording the lost window", e))?;
        self.recovery_requested.notify_one();
        Ok(since)
    }
}

/// The stored job for a requested one: `channel`, `replay_id` and `event_id` name where it came
/// from (a reconcile scan has no event: its channel is `reconcile`, the others empty).
pub fn job_row(
    j: &JobRequest,
    channel: &str,
    replay_id: &ReplayId,
    event_id: &str,
    max_attempts: i32,
) -> NewJob {
    /// A job's payload, serialized straight from this struct (fields in this order), with no
    /// JSON map built on the way.
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        order_id: &'a str,
        account_id: Option<&'a str>,
        status: &'a str,
        trigger: &'a str,
        channel: &'a str,
        replay_id: String,
        event_id: &'a str,
    }
    let payload = Payload {
        order_id: j.order_id.as_str(),
        account_id: j.account_id.as_deref(),
        status: &j.status,
        trigger: j.kind.name(),
        channel,
        replay_id: replay_id.to_hex(),
        event_id,
    };
    NewJob {
        key: j.key.clone(),
        order_id: j.order_id.to_string(),
        account_id: j.account_id.clone(),
        trigger_status: j.status.clone(),
        trigger_kind: j.kind.name().to_owned(),
        channel: channel.to_owned(),
        replay_id: replay_id.as_bytes().to_vec(),
        event_id: event_id.to_owned(),
        payload: serde_json::to_string(&payload).expect("strings always serialize"),
        max_attempts,
    }
}

/// A quarantine row: the event as received, and why it cannot be processed.
fn quarantine_row(
    channel: &str,
    replay_id: &ReplayId,
    schema_id: &str,
    event_id: &str,
    payload: &[u8],
    reason: String,
    kind: QuarantineKind,
) -> NewQuarantine {
    NewQuarantine {
        channel: channel.to_owned(),
        replay_id: replay_id.as_bytes().to_vec(),
        schema_id: schema_id.to_owned(),
        event_id: event_id.to_owned(),
        payload: payload.to_vec(),
        reason,
        kind: kind.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::TriggerKind;
    use serde_json::json;

    #[test]
    fn a_job_payload_is_the_json_object_it_always_was() {
        for account_id in [Some("001000000000001AAA".to_owned()), None] {
            let j = JobRequest {
                key: "k".into(),
                order_id: SfId::parse("801000000000001AAA").unwrap(),
                account_id: account_id.clone(),
                status: "Appro\"ved".into(),
                kind: TriggerKind::StatusChange,
            };
            let replay = ReplayId::new(vec![0, 1, 0xab]);
            let row = job_row(&j, "/data/OrderChangeEvent", &replay, "e-1", 5);
            let expected = json!({
                "order_id": "801000000000001AAA",
                "account_id": account_id,
                "status": "Appro\"ved",
                "trigger": TriggerKind::StatusChange.name(),
                "channel": "/data/OrderChangeEvent",
                "replay_id": "0001ab",
                "event_id": "e-1",
            });
            assert_eq!(row.payload, expected.to_string());
        }
    }
}
