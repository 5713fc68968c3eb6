//! `sfcdc tail`: subscribe to one channel and print each event as one JSON line, from a chosen
//! position, without storing anything. The printer is a [`Sink`] that commits by writing: the
//! subscription asks for more only once a batch is printed, so a slow reader slows the stream
//! instead of filling memory. Decoded and failed events interleave in replay order. Its source
//! has no projection, so every field of every event is decoded and printed.
//!
//! Lines are serialized straight from the decoded event into a buffered writer (no JSON tree per
//! event), flushed once per batch. `--format none` prints nothing per event: it counts, and ends
//! with a summary, to measure a stream or check that it decodes.

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use tokio_util::sync::CancellationToken;

use crate::config::Env;
use crate::decode::avro::{Record, Value};
use crate::decode::bitmap::FieldName;
use crate::decode::{DecodedEvent, EventBody, FailedEvent, Position};
use crate::salesforce::auth::{AuthConfig, Authenticator};
use crate::source::sink::{Batch, Sink, SinkError};
use crate::source::{Source, SourceConfig};
use crate::telemetry::metrics::Metrics;

/// What `sfcdc tail` prints per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TailFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Nothing: count, then print a summary.
    None,
}

/// Subscribes to `channel` from `start` and prints events until `count` of them, `shutdown`, or a
/// permanent failure.
pub async fn run(
    channel: &str,
    start: Position,
    count: Option<usize>,
    format: TailFormat,
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
    let out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    let sink = Arc::new(JsonLinesSink::new(out, count, cancel.clone()).with_format(format));
    let started = Instant::now();
    let source = Source::new(source_config, auth, sink.clone(), metrics)?;
    let run = source.run_channel(channel, Some(start), cancel.clone());
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result?,
        () = shutdown => {
            cancel.cancel();
            run.await?;
        }
    }
    if format == TailFormat::None {
        let elapsed = started.elapsed().as_secs_f64();
        let (events, failed) = (sink.seen(), sink.failed());
        println!(
            "{events} events ({failed} undecodable) in {elapsed:.2} s: {:.0} events/s",
            events as f64 / elapsed.max(1e-9)
        );
    }
    Ok(())
}

/// A decoded value as JSON; longs stay integers, bytes are hex.
struct ValueJson<'a>(&'a Value);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i32(*i),
            Value::Long(l) => s.serialize_i64(*l),
            Value::Float(f) => s.serialize_f32(*f),
            Value::Double(d) => s.serialize_f64(*d),
            Value::Bytes(b) => s.serialize_str(&hex::encode(b)),
            Value::String(v) => s.serialize_str(v),
            Value::Enum(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(&ValueJson(v))?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&**k, &ValueJson(v))?;
                }
                map.end()
            }
            Value::Record(r) => RecordJson(r, false).serialize(s),
        }
    }
}

/// A record as a JSON object, without its change event header; with `.1`, only fields that
/// have a value.
struct RecordJson<'a>(&'a Record, bool);

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut entry = |name: &str, v: &Value| match name {
            "ChangeEventHeader" => Ok(()),
            _ => map.serialize_entry(name, &ValueJson(v)),
        };
        if self.1 {
            self.0.iter_set().try_for_each(|(n, v)| entry(n, v))?;
        } else {
            self.0.iter().try_for_each(|(n, v)| entry(n, v))?;
        }
        map.end()
    }
}

/// Field names as a JSON array.
struct Names<'a>(&'a [FieldName]);

impl Serialize for Names<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| &**n))
    }
}

/// The `sfcdc tail` line for one decoded event.
pub struct EventLine<'a>(pub &'a DecodedEvent);

impl Serialize for EventLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("replay_id", &e.replay_id.to_hex())?;
        map.serialize_entry("schema_id", &*e.schema_id)?;
        map.serialize_entry("event_id", &e.event_id)?;
        match &e.body {
            EventBody::Change(c) => {
                map.serialize_entry("change_type", c.change_type.symbol())?;
                map.serialize_entry("entity", c.entity.as_str())?;
                map.serialize_entry("record_ids", &c.record_ids)?;
                map.serialize_entry("changed_fields", &Names(&c.changed_fields))?;
                map.serialize_entry("nulled_fields", &Names(&c.nulled_fields))?;
                map.serialize_entry("diff_fields", &Names(&c.diff_fields))?;
                map.serialize_entry("commit_timestamp", &c.commit_timestamp)?;
                map.serialize_entry("commit_number", &c.commit_number)?;
                map.serialize_entry("commit_user", c.commit_user.as_str())?;
                map.serialize_entry("transaction_key", c.transaction_key.as_str())?;
                map.serialize_entry("fields", &RecordJson(&c.fields, true))?;
            }
            EventBody::Platform(p) => {
                map.serialize_entry("topic", &*p.topic)?;
                map.serialize_entry("fields", &RecordJson(&p.fields, false))?;
            }
        }
        map.end()
    }
}

/// The `sfcdc tail` line for an event that did not decode: its envelope, the error, the bytes.
pub struct FailedLine<'a>(pub &'a FailedEvent);

impl Serialize for FailedLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("replay_id", &f.replay_id.to_hex())?;
        map.serialize_entry("schema_id", &f.schema_id)?;
        map.serialize_entry("event_id", &f.event_id)?;
        map.serialize_entry("error", &f.error.to_string())?;
        map.serialize_entry("payload_hex", &hex::encode(&f.payload))?;
        map.end()
    }
}

/// One line to print, in replay order.
enum Line<'a> {
    Decoded(&'a DecodedEvent),
    Failed(&'a FailedEvent),
}

impl Line<'_> {
    fn position(&self) -> Option<u64> {
        match self {
            Line::Decoded(e) => e.replay_id.position(),
            Line::Failed(f) => f.replay_id.position(),
        }
    }
}

/// Prints one JSON object per event to a writer, and stops its subscriber after `limit` events.
pub struct JsonLinesSink<W: Write + Send + 'static> {
    out: Mutex<W>,
    seen: AtomicUsize,
    failed: AtomicUsize,
    limit: Option<usize>,
    done: CancellationToken,
    format: TailFormat,
}

impl<W: Write + Send + 'static> JsonLinesSink<W> {
    /// Prints to `out`; cancels `done` after `limit` events.
    pub fn new(out: W, limit: Option<usize>, done: CancellationToken) -> Self {
        JsonLinesSink {
            out: Mutex::new(out),
            seen: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            limit,
            done,
            format: TailFormat::Json,
        }
    }

    /// Prints in `format`.
    pub fn with_format(mut self, format: TailFormat) -> Self {
        self.format = format;
        self
    }

    /// Events printed (or counted) so far.
    pub fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    /// Events that did not decode, so far.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
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
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let write_err = |e: std::io::Error| SinkError::permanent("writing the output", e);
        // Decoded and failed events interleave in replay order.
        let mut lines: Vec<Line<'_>> = batch.events.iter().map(Line::Decoded).collect();
        lines.extend(batch.failed.iter().map(Line::Failed));
        if !batch.failed.is_empty() {
            lines.sort_by_key(Line::position);
        }
        for line in &lines {
            if self.limit.is_some_and(|l| self.seen() >= l) {
                break;
            }
            if let Line::Failed(_) = line {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
            if self.format == TailFormat::Json {
                match line {
                    Line::Decoded(e) => serde_json::to_writer(&mut *out, &EventLine(e)),
                    Line::Failed(f) => serde_json::to_writer(&mut *out, &FailedLine(f)),
                }
                .map_err(|e| write_err(e.into()))?;
                out.write_all(b"\n").map_err(write_err)?;
            }
            self.seen.fetch_add(1, Ordering::SeqCst);
        }
        out.flush().map_err(write_err)?;
        if self.limit.is_some_and(|l| self.seen() >= l) {
            self.done.cancel();
        }
        Ok(())
    }
}
