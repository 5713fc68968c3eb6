//! The seam between the subscriber and what it feeds.
//!
//! For every FetchResponse the subscriber hands a [`Sink`] one [`Batch`]: the decoded events, the
//! events that failed to decode (with their raw bytes and the reason), and the replay id to resume
//! after. A keepalive becomes a batch with no events whose replay id is the keepalive's
//! `latest_replay_id`. The sink's `commit` must record everything durably, the replay id with it,
//! before returning: the subscriber asks the server for more only after that.
//!
//! Two small sinks live here: [`MemorySink`], which records batches for tests and keeps
//! checkpoints in memory, and [`JsonLinesSink`], which prints events for `sfcdc tail`.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value as Json, json};

use crate::decode::avro::{Record, Value};
use crate::decode::{DecodedEvent, EventBody, FailedEvent, ReplayId};
use crate::source::Start;

/// What one FetchResponse delivered.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The channel (topic name).
    pub channel: Arc<str>,
    /// Decoded events, in replay order.
    pub events: Vec<DecodedEvent>,
    /// Events that could not be decoded, in replay order.
    pub failed: Vec<FailedEvent>,
    /// The position to resume after once this batch is committed.
    pub replay_id: ReplayId,
    /// True for a keepalive checkpoint (no events).
    pub keepalive: bool,
}

impl Batch {
    /// Decoded and failed events together.
    pub fn len(&self) -> usize {
        self.events.len() + self.failed.len()
    }

    /// Whether the batch carries no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A failed commit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Where batches go.
///
/// Each batch is first staged (the sink's preparation, which may read other systems) and then
/// committed. Staging of one batch may overlap the commit of the one before; commits happen
/// strictly in order.
pub trait Sink: Send + Sync + 'static {
    /// A batch made ready to commit.
    type Staged: Send + 'static;

    /// Where a channel resumes, if a position is stored.
    fn checkpoint(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Option<Start>, SinkError>> + Send;

    /// Prepares a batch for its commit.
    fn stage(&self, batch: Batch) -> impl Future<Output = Result<Self::Staged, SinkError>> + Send;

    /// Durably records staged batches, in order and all together (one transaction when the
    /// sink has transactions), and advances the channel's position past the last of them.
    /// Several batches arrive together when commits are slower than the stream: group commit.
    fn commit(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl<S: Sink> Sink for Arc<S> {
    type Staged = S::Staged;

    fn checkpoint(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Option<Start>, SinkError>> + Send {
        (**self).checkpoint(channel)
    }

    fn stage(&self, batch: Batch) -> impl Future<Output = Result<Self::Staged, SinkError>> + Send {
        (**self).stage(batch)
    }

    fn commit(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).commit(staged)
    }
}

/// Records every batch in memory, with optional slowness and failure injection: for tests.
#[derive(Debug, Default)]
pub struct MemorySink {
    batches: Mutex<Vec<Batch>>,
    checkpoints: Mutex<HashMap<String, ReplayId>>,
    delay: Mutex<Duration>,
    fail_next: AtomicUsize,
    notify: tokio::sync::Notify,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every commit take `d` (a slow sink).
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().expect("sink lock") = d;
    }

    /// Makes the next `n` commits fail.
    pub fn fail_next(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Sets a stored position, as a previous run would have left it.
    pub fn set_checkpoint(&self, channel: &str, replay_id: ReplayId) {
        self.checkpoints
            .lock()
            .expect("sink lock")
            .insert(channel.to_owned(), replay_id);
    }

    /// A copy of every committed batch.
    pub fn batches(&self) -> Vec<Batch> {
        self.batches.lock().expect("sink lock").clone()
    }

    /// Every committed decoded event, in commit order.
    pub fn events(&self) -> Vec<DecodedEvent> {
        self.batches().into_iter().flat_map(|b| b.events).collect()
    }

    /// Every committed failed event, in commit order.
    pub fn failed(&self) -> Vec<FailedEvent> {
        self.batches().into_iter().flat_map(|b| b.failed).collect()
    }

    /// Replay ids of every committed event, decoded or failed, in commit order.
    pub fn replay_ids(&self) -> Vec<ReplayId> {
        let mut out = Vec::new();
        for b in self.batches() {
            let mut ids: Vec<ReplayId> = b
                .events
                .iter()
                .map(|e| e.replay_id.clone())
                .chain(b.failed.iter().map(|f| f.replay_id.clone()))
                .collect();
            ids.sort_by_key(|r| r.position());
            out.extend(ids);
        }
        out
    }

    /// The stored position of a channel.
    pub fn stored(&self, channel: &str) -> Option<ReplayId> {
        self.checkpoints
            .lock()
            .expect("sink lock")
            .get(channel)
            .cloned()
    }

    /// Waits until at least `n` events (decoded or failed) have been committed.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.notify.notified();
            if self
                .batches
                .lock()
                .expect("sink lock")
                .iter()
                .map(Batch::len)
                .sum::<usize>()
                >= n
            {
                return;
            }
            notified.await;
        }
    }

    /// Waits until a keepalive checkpoint has been committed.
    pub async fn wait_for_keepalive(&self) -> Batch {
        loop {
            let notified = self.notify.notified();
            if let Some(b) = self
                .batches
                .lock()
                .expect("sink lock")
                .iter()
                .find(|b| b.keepalive)
            {
                return b.clone();
            }
            notified.await;
        }
    }
}

impl Sink for MemorySink {
    type Staged = Batch;

    async fn stage(&self, batch: Batch) -> Result<Batch, SinkError> {
        Ok(batch)
    }

    async fn checkpoint(&self, channel: &str) -> Result<Option<Start>, SinkError> {
        Ok(self.stored(channel).map(Start::After))
    }

    async fn commit(&self, staged: Vec<Batch>) -> Result<(), SinkError> {
        let delay = *self.delay.lock().expect("sink lock");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError("injected commit failure".into()));
        }
        for batch in staged {
            self.checkpoints
                .lock()
                .expect("sink lock")
                .insert(batch.channel.to_string(), batch.replay_id.clone());
            self.batches.lock().expect("sink lock").push(batch);
        }
        self.notify.notify_waiters();
        Ok(())
    }
}

/// Converts a decoded value to JSON; longs stay integers.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Long(l) => json!(l),
        Value::Float(f) => json!(f),
        Value::Double(d) => json!(d),
        Value::Bytes(b) => Json::String(hex::encode(b)),
        Value::String(s) => Json::String(s.to_string()),
        Value::Enum(s) => Json::String(s.to_string()),
        Value::Array(items) => Json::Array(items.iter().map(value_json).collect()),
        Value::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), value_json(v)))
                .collect(),
        ),
        Value::Record(r) => record_json(r, false),
    }
}

/// A record as a JSON object; with `skip_nulls`, only fields that have a value.
pub fn record_json(r: &Record, skip_nulls: bool) -> Json {
    let mut m = Map::new();
    for (name, v) in r.iter() {
        if name == "ChangeEventHeader" || (skip_nulls && v.is_null()) {
            continue;
        }
        m.insert(name.to_owned(), value_json(v));
    }
    Json::Object(m)
}

fn names(v: &[crate::decode::bitmap::FieldName]) -> Vec<&str> {
    v.iter().map(|n| &**n).collect()
}

/// The `sfcdc tail` line for one event.
pub fn event_json(e: &DecodedEvent) -> Json {
    match &e.body {
        EventBody::Change(c) => json!({
            "replay_id": e.replay_id.to_hex(),
            "schema_id": &*e.schema_id,
            "event_id": e.event_id,
            "change_type": c.change_type.symbol(),
            "entity": c.entity.as_str(),
            "record_ids": c.record_ids.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            "changed_fields": names(&c.changed_fields),
            "nulled_fields": names(&c.nulled_fields),
            "diff_fields": names(&c.diff_fields),
            "commit_timestamp": c.commit_timestamp,
            "commit_number": c.commit_number,
            "commit_user": c.commit_user.as_str(),
            "transaction_key": c.transaction_key.as_str(),
            "fields": record_json(&c.fields, true),
        }),
        EventBody::Platform(p) => json!({
            "replay_id": e.replay_id.to_hex(),
            "schema_id": &*e.schema_id,
            "event_id": e.event_id,
            "topic": &*p.topic,
            "fields": record_json(&p.fields, false),
        }),
    }
}

/// Prints one JSON object per event to a writer, and stops its subscriber after `limit` events.
pub struct JsonLinesSink<W: Write + Send + 'static> {
    out: Mutex<W>,
    seen: AtomicUsize,
    limit: Option<usize>,
    done: tokio_util::sync::CancellationToken,
}

impl<W: Write + Send + 'static> JsonLinesSink<W> {
    /// Prints to `out`; cancels `done` after `limit` events.
    pub fn new(out: W, limit: Option<usize>, done: tokio_util::sync::CancellationToken) -> Self {
        JsonLinesSink {
            out: Mutex::new(out),
            seen: AtomicUsize::new(0),
            limit,
            done,
        }
    }

    /// Events printed so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }
}

impl<W: Write + Send + 'static> Sink for JsonLinesSink<W> {
    type Staged = Batch;

    async fn stage(&self, batch: Batch) -> Result<Batch, SinkError> {
        Ok(batch)
    }

    async fn checkpoint(&self, _channel: &str) -> Result<Option<Start>, SinkError> {
        // tail starts where --from says, never from a stored position.
        Ok(None)
    }

    async fn commit(&self, staged: Vec<Batch>) -> Result<(), SinkError> {
        for batch in staged {
            self.print(batch)?;
        }
        Ok(())
    }
}

impl<W: Write + Send + 'static> JsonLinesSink<W> {
    fn print(&self, batch: Batch) -> Result<(), SinkError> {
        let mut out = self.out.lock().expect("tail output lock");
        // Decoded and failed events interleave in replay order.
        let mut lines: Vec<(Option<u64>, Json)> = batch
            .events
            .iter()
            .map(|e| (e.replay_id.position(), event_json(e)))
            .collect();
        lines.extend(batch.failed.iter().map(|f| {
            (
                f.replay_id.position(),
                json!({"replay_id": f.replay_id.to_hex(), "schema_id": f.schema_id, "event_id": f.event_id, "error": f.error.to_string(), "payload_hex": hex::encode(&f.payload)}),
            )
        }));
        lines.sort_by_key(|(p, _)| *p);
        for (_, line) in lines {
            if self.limit.is_some_and(|l| self.seen() >= l) {
                break;
            }
            writeln!(out, "{line}").map_err(|e| SinkError(format!("cannot write: {e}")))?;
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        out.flush()
            .map_err(|e| SinkError(format!("cannot write: {e}")))?;
        if self.limit.is_some_and(|l| self.seen() >= l) {
            self.done.cancel();
        }
        Ok(())
    }
}
