//! `sfcdc tail`: subscribe to one channel and print each event as one JSON line, from a chosen
//! position, without storing anything. The JSON-lines printer is a [`Sink`] that commits by
//! writing: the subscription asks for more only once a batch is printed, so a slow reader slows
//! the stream instead of filling memory. Decoded and failed events interleave in replay order.

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::config::Env;
use crate::decode::Position;
use crate::decode::avro::{Record, Value};
use crate::decode::{DecodedEvent, EventBody};
use crate::salesforce::auth::{AuthConfig, Authenticator};
use crate::source::sink::{Batch, Sink, SinkError};
use crate::source::{Source, SourceConfig};
use crate::telemetry::metrics::Metrics;

/// Subscribes to `channel` from `start` and prints events until `count` of them, `shutdown`, or a
/// permanent failure.
pub async fn run(
    channel: &str,
    start: Position,
    count: Option<usize>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let env = Env::load()?;
    let source_config = SourceConfig::from_env(&env)?;
    let auth_config = AuthConfig::from_env(&env)?;
    let http = crate::salesforce::http::http_client(source_config.ca_cert.as_deref())
        .map_err(|e| anyhow::anyhow!(e))?;
    let metrics = Arc::new(Metrics::new());
    let auth = Arc::new(Authenticator::new(auth_config, http, metrics.clone()));
    let cancel = CancellationToken::new();
    let sink = Arc::new(JsonLinesSink::new(std::io::stdout(), count, cancel.clone()));
    let source = Source::new(source_config, auth, sink, metrics)?;
    let run = source.run_channel(channel, Some(start), cancel.clone());
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result?,
        () = shutdown => {
            cancel.cancel();
            run.await?;
        }
    }
    Ok(())
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
    done: CancellationToken,
}

impl<W: Write + Send + 'static> JsonLinesSink<W> {
    /// Prints to `out`; cancels `done` after `limit` events.
    pub fn new(out: W, limit: Option<usize>, done: CancellationToken) -> Self {
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

    async fn checkpoint(&self, _channel: &str) -> Result<Option<Position>, SinkError> {
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
            writeln!(out, "{line}").map_err(|e| SinkError::permanent("writing the output", e))?;
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        out.flush()
            .map_err(|e| SinkError::permanent("writing the output", e))?;
        if self.limit.is_some_and(|l| self.seen() >= l) {
            self.done.cancel();
        }
        Ok(())
    }
}
