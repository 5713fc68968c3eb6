//! Decoding speed: sfcdc's compiled-plan decoder next to apache-avro's generic `Value` reader on
//! the same payloads. `sfcdc bench --report` times it over a mix of order change events and on
//! one representative event; `cargo bench --bench decode` (criterion) times the same paths on
//! that one event.
//!
//! The events come from an emulator world (no servers): the Order schema with a dozen extra
//! custom fields (about 45 fields in all), one representative UPDATE touching about a quarter of
//! them, then the bulk mix the ingest benchmark uses (creates, approvals, address changes).
//!
//! The paths, each over the same bytes with the same writer schema:
//! - **sfcdc full decode**: [`CompiledSchema::decode`]: the Avro payload, the header as typed
//!   fields, and the three field bitmaps expanded to names (what `sfcdc tail` and the quarantine
//!   re-drive use).
//! - **sfcdc ingest projection**: [`CompiledSchema::decode_projected`], as `sfcdc run` decodes:
//!   the same header and bitmaps, the body fields the default rules read
//!   ([`RulesConfig::event_fields`]), every other field skipped.
//! - **apache-avro `Value`**: `GenericDatumReader::read_value`, the reader built once: the Avro
//!   payload only, as a tree of `Value`s with owned field names and union wrappers.
//! - **apache-avro `Value` + header + bitmaps**: the same, then what it takes to get sfcdc's
//!   output from it ([`avro_change`]): the header fields taken out by name and typed, the
//!   bitmaps expanded with sfcdc's own [`bitmap::decode`] (apache-avro has none), unions
//!   unwrapped.
//! - **apache-avro `from_avro_datum`**: the (deprecated) one-call form, which builds the reader,
//!   and so resolves the schema, on every call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value as AvroValue;
use bytes::Bytes;

use sfcdc::decode::bitmap::{self, FieldLayout, FieldName};
use sfcdc::decode::event::{CompiledSchema, EventBody};
use sfcdc::rules::RulesConfig;
use sfcdc_emulator::org::{Actor, now_ms};
use sfcdc_emulator::world::World;

/// The channel the events are on.
pub const CHANNEL: &str = "/data/OrderChangeEvent";
/// Bulk events decoded by `sfcdc bench --report` (after the representative one).
pub const REPORT_BULK_EVENTS: usize = 20_000;
/// Time spent on each path by `sfcdc bench --report`, split into [`ROUNDS`] rounds.
pub const REPORT_BUDGET: Duration = Duration::from_millis(1_200);
/// Timed rounds per path; the fastest counts.
pub const ROUNDS: u32 = 3;

/// Order change events of one schema, to decode.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// The writer schema's id.
    pub schema_id: String,
    /// The writer schema's JSON.
    pub schema_json: String,
    /// The representative UPDATE (also `payloads[0]`).
    pub representative: Bytes,
    /// A `changedFields` value with a nested element, for timing bitmap expansion alone.
    #[allow(
        dead_code,
        reason = "only the criterion bench (benches/decode.rs) times it"
    )]
    pub changed: Vec<String>,
    /// Every payload: the representative one, then the bulk mix.
    pub payloads: Vec<Bytes>,
}

impl Corpus {
    /// Builds the world, the representative event, then `bulk` events of the ingest mix.
    pub fn build(bulk: usize) -> anyhow::Result<Corpus> {
        let mut world = World::new(7);
        for i in 0..12 {
            world
                .add_order_field(&format!("Custom_{i:02}__c"))
                .map_err(|e| anyhow::anyhow!("adding a field: {e}"))?;
        }
        world.seed_sample_data(now_ms());
        let actor = Actor {
            user_id: world.org.user_id.to_string(),
            origin: "com/salesforce/api/rest/60.0;client=bench".into(),
        };
        let id = world
            .org
            .pick("Order", |r| r.text("Status") == Some("Draft"))
            .context("a Draft order")?;
        let now = now_ms();
        let patch = serde_json::json!({
            "Status": "Approved", "Description": "Upgrade to the large plan", "PoNumber": "PO-99812",
            "BillingStreet": "1 Infinite Loop", "BillingCity": "Cupertino", "BillingPostalCode": "95014",
            "Custom_01__c": "alpha", "Custom_04__c": "beta", "Custom_07__c": "gamma", "Custom_10__c": "delta",
            "Activation_Status__c": "Pending"
        });
        let patch = patch.as_object().context("an object")?;
        world
            .mutate(now, |org| {
                org.update("Order", &id, patch, &actor, now)
                    .map(|c| ((), c))
            })
            .map_err(|e| anyhow::anyhow!("updating an order: {e}"))?;
        let world = Mutex::new(world);
        sfcdc_emulator::bulk::generate(&world, bulk);
        let world = world.into_inner().expect("world lock");
        let events = world.bus.read_after(CHANNEL, 0, usize::MAX, usize::MAX);
        let first = events.first().context("no events")?;
        let schema = world
            .schema(&first.schema_id)
            .context("the events' schema")?;
        anyhow::ensure!(
            events.iter().all(|e| e.schema_id == first.schema_id),
            "the events have several schemas"
        );
        Ok(Corpus {
            schema_id: schema.id.clone(),
            schema_json: schema.json.clone(),
            representative: first.payload.clone(),
            changed: vec!["0x20000200".to_string(), "14-0x02".to_string()],
            payloads: events.iter().map(|e| e.payload.clone()).collect(),
        })
    }

    /// Mean payload size, bytes.
    pub fn mean_bytes(&self) -> f64 {
        let total: usize = self.payloads.iter().map(Bytes::len).sum();
        total as f64 / self.payloads.len().max(1) as f64
    }
}

/// The compiled forms of the corpus's schema.
#[derive(Debug)]
pub struct Decoders {
    /// sfcdc's compiled plan.
    pub compiled: CompiledSchema,
    /// The same, with the projection of the default rules' fields.
    pub projected: CompiledSchema,
    /// apache-avro's parsed schema (a [`GenericDatumReader`] borrows it: see [`Decoders::reader`]).
    pub avro_schema: apache_avro::Schema,
    /// The topic handed to sfcdc's decoder.
    pub topic: Arc<str>,
}

impl Decoders {
    /// Compiles both.
    pub fn new(corpus: &Corpus) -> anyhow::Result<Decoders> {
        Ok(Decoders {
            compiled: CompiledSchema::compile(&corpus.schema_id, &corpus.schema_json)?,
            projected: CompiledSchema::compile(&corpus.schema_id, &corpus.schema_json)?
                .with_projection(&RulesConfig::defaults().event_fields()),
            avro_schema: apache_avro::Schema::parse_str(&corpus.schema_json)?,
            topic: Arc::from(CHANNEL),
        })
    }

    /// apache-avro's reader for the writer schema, built once.
    pub fn reader(&self) -> anyhow::Result<GenericDatumReader<'_>> {
        Ok(GenericDatumReader::builder(&self.avro_schema).build()?)
    }

    /// sfcdc's decoder.
    pub fn sfcdc(&self, payload: &Bytes) -> anyhow::Result<EventBody> {
        Ok(self.compiled.decode(&self.topic, payload)?)
    }

    /// sfcdc's decoder as ingest runs it: projected on the rules' fields.
    pub fn ingest(&self, payload: &Bytes) -> anyhow::Result<EventBody> {
        Ok(self.projected.decode_projected(&self.topic, payload)?)
    }

    /// The body fields the projection keeps in this schema (the header aside).
    pub fn projected_fields(&self) -> Vec<&str> {
        let kept = self.projected.projected_fields().unwrap_or_default();
        kept.into_iter()
            .filter(|f| *f != "ChangeEventHeader")
            .collect()
    }

    /// apache-avro's one-call form, deprecated since 0.22: it builds a reader per call.
    #[allow(deprecated)]
    pub fn avro_from_datum(&self, payload: &[u8]) -> anyhow::Result<AvroValue> {
        Ok(apache_avro::from_avro_datum(
            &self.avro_schema,
            &mut &payload[..],
            None,
        )?)
    }
}

/// apache-avro's `Value` reader: the payload only.
pub fn avro_value(reader: &GenericDatumReader<'_>, payload: &[u8]) -> anyhow::Result<AvroValue> {
    Ok(reader.read_value(&mut &payload[..])?)
}

/// A change event read with apache-avro and completed to what sfcdc's decoder returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AvroChange {
    /// `entityName`.
    pub entity: String,
    /// `recordIds`.
    pub record_ids: Vec<String>,
    /// `changeType`, the symbol.
    pub change_type: String,
    /// `changeOrigin`.
    pub change_origin: String,
    /// `transactionKey`.
    pub transaction_key: String,
    /// `sequenceNumber`.
    pub sequence_number: i32,
    /// `commitTimestamp`.
    pub commit_timestamp: i64,
    /// `commitNumber`.
    pub commit_number: i64,
    /// `commitUser`.
    pub commit_user: String,
    /// `changedFields`, as names.
    pub changed_fields: Vec<FieldName>,
    /// `nulledFields`, as names.
    pub nulled_fields: Vec<FieldName>,
    /// `diffFields`, as names.
    pub diff_fields: Vec<FieldName>,
    /// The record's fields, unions unwrapped (the header slot is `Null`).
    pub fields: Vec<(String, AvroValue)>,
}

/// apache-avro's `Value` reader, then the header fields by name, the bitmaps expanded and the
/// unions unwrapped: the same information sfcdc's decoder returns.
pub fn avro_change(
    reader: &GenericDatumReader<'_>,
    layout: &FieldLayout,
    payload: &[u8],
) -> anyhow::Result<AvroChange> {
    fn string(v: AvroValue) -> anyhow::Result<String> {
        match v {
            AvroValue::String(s) | AvroValue::Enum(_, s) => Ok(s),
            other => anyhow::bail!("not a string: {other:?}"),
        }
    }
    fn strings(v: AvroValue) -> anyhow::Result<Vec<String>> {
        match v {
            AvroValue::Array(items) => items.into_iter().map(string).collect(),
            other => anyhow::bail!("not an array: {other:?}"),
        }
    }
    fn long(v: AvroValue) -> anyhow::Result<i64> {
        match v {
            AvroValue::Long(n) => Ok(n),
            AvroValue::Int(n) => Ok(i64::from(n)),
            other => anyhow::bail!("not a long: {other:?}"),
        }
    }
    let AvroValue::Record(mut fields) = avro_value(reader, payload)? else {
        anyhow::bail!("not a record");
    };
    let header = match fields.first_mut() {
        Some((name, value)) if name == "ChangeEventHeader" => {
            std::mem::replace(value, AvroValue::Null)
        }
        _ => anyhow::bail!("no ChangeEventHeader"),
    };
    let AvroValue::Record(header) = header else {
        anyhow::bail!("ChangeEventHeader is not a record");
    };
    let mut out = AvroChange::default();
    let (mut changed, mut nulled, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for (name, value) in header {
        match name.as_str() {
            "entityName" => out.entity = string(value)?,
            "recordIds" => out.record_ids = strings(value)?,
            "changeType" => out.change_type = string(value)?,
            "changeOrigin" => out.change_origin = string(value)?,
            "transactionKey" => out.transaction_key = string(value)?,
            "sequenceNumber" => out.sequence_number = i32::try_from(long(value)?)?,
            "commitTimestamp" => out.commit_timestamp = long(value)?,
            "commitNumber" => out.commit_number = long(value)?,
            "commitUser" => out.commit_user = string(value)?,
            "changedFields" => changed = strings(value)?,
            "nulledFields" => nulled = strings(value)?,
            "diffFields" => diff = strings(value)?,
            _ => {}
        }
    }
    out.changed_fields = bitmap::decode(layout, &changed)?;
    out.nulled_fields = bitmap::decode(layout, &nulled)?;
    out.diff_fields = bitmap::decode(layout, &diff)?;
    out.fields = fields
        .into_iter()
        .map(|(name, value)| match value {
            AvroValue::Union(_, inner) => (name, *inner),
            value => (name, value),
        })
        .collect();
    Ok(out)
}

/// One path's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodePath {
    /// Stable name: `sfcdc` (the full decode), `sfcdc_ingest`, `apache_avro_value`,
    /// `apache_avro_value_header_bitmaps`, `apache_avro_from_avro_datum`.
    pub path: String,
    /// The same, for people.
    pub label: String,
    /// Which payloads: `mix` (the whole corpus in turn) or `representative` (the one UPDATE).
    pub set: String,
    /// What the path produces.
    pub includes: String,
    /// Events decoded in the fastest round.
    pub events: usize,
    /// That round's wall time.
    pub seconds: f64,
    /// Events per second on one core.
    pub events_per_second: f64,
    /// Mean time per event, ns.
    pub ns_per_event: f64,
    /// Events per second of this thread's CPU time (Linux; `None` elsewhere), the fastest of
    /// the rounds: the figure that holds on a loaded machine, where wall time also counts the
    /// time other processes had the core.
    pub events_per_cpu_second: Option<f64>,
}

/// Everything the decode benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecodeBenchResult {
    /// Distinct payloads of the mix, decoded in turn.
    pub payloads: usize,
    /// Their mean size, bytes.
    pub mean_payload_bytes: f64,
    /// Size of the representative UPDATE, bytes.
    pub representative_bytes: usize,
    /// Top-level fields of the schema (the header included).
    pub schema_fields: usize,
    /// Timed rounds per path (the fastest counts).
    pub rounds: u32,
    /// The paths.
    pub paths: Vec<DecodePath>,
}

/// The CPU time this thread has run, from Linux's `/proc/thread-self/schedstat` (`None` where
/// there is none).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Decodes payloads in turn, from `cursor` on, for about `budget`; events decoded, seconds,
/// and CPU seconds (when known).
fn run_for<T>(
    payloads: &[Bytes],
    cursor: &mut usize,
    budget: Duration,
    decode: &mut impl FnMut(&Bytes) -> anyhow::Result<T>,
) -> anyhow::Result<(usize, f64, Option<f64>)> {
    let started = Instant::now();
    let cpu_started = thread_cpu();
    let mut n = 0;
    loop {
        for _ in 0..64 {
            std::hint::black_box(decode(std::hint::black_box(&payloads[*cursor]))?);
            *cursor = (*cursor + 1) % payloads.len();
        }
        n += 64;
        let elapsed = started.elapsed();
        if elapsed >= budget {
            let cpu = thread_cpu()
                .zip(cpu_started)
                .map(|(end, start)| end.saturating_sub(start).as_secs_f64())
                .filter(|s| *s > 0.0);
            return Ok((n, elapsed.as_secs_f64(), cpu));
        }
    }
}

/// Warms up, then times [`ROUNDS`] rounds of `budget / ROUNDS`; the fastest.
fn time_path<T>(
    (path, label): (&str, &str),
    includes: &str,
    (set, payloads): (&str, &[Bytes]),
    budget: Duration,
    mut decode: impl FnMut(&Bytes) -> anyhow::Result<T>,
) -> anyhow::Result<DecodePath> {
    anyhow::ensure!(!payloads.is_empty(), "nothing to decode");
    let mut cursor = 0;
    run_for(payloads, &mut cursor, budget / 10, &mut decode)?;
    let mut best = (0, f64::INFINITY);
    let mut best_cpu: Option<f64> = None;
    for _ in 0..ROUNDS {
        let (n, seconds, cpu) = run_for(payloads, &mut cursor, budget / ROUNDS, &mut decode)?;
        if n as f64 / seconds > best.0 as f64 / best.1 {
            best = (n, seconds);
        }
        if let Some(cpu) = cpu {
            best_cpu = Some(best_cpu.unwrap_or(0.0).max(n as f64 / cpu));
        }
    }
    let (events, seconds) = best;
    Ok(DecodePath {
        path: path.to_owned(),
        label: label.to_owned(),
        set: set.to_owned(),
        includes: includes.to_owned(),
        events,
        seconds,
        events_per_second: events as f64 / seconds,
        ns_per_event: seconds * 1e9 / events as f64,
        events_per_cpu_second: best_cpu,
    })
}

/// Checks that sfcdc and the completed apache-avro path read the same header and field names
/// from every payload, so that the two are compared on equal output, and that the projection
/// reads the same header and, for each field it keeps, the same value as the full decode.
fn check_agree(
    corpus: &Corpus,
    decoders: &Decoders,
    reader: &GenericDatumReader<'_>,
) -> anyhow::Result<()> {
    for (i, payload) in corpus.payloads.iter().enumerate() {
        let EventBody::Change(ours) = decoders.sfcdc(payload)? else {
            anyhow::bail!("payload {i} is not a change event");
        };
        let EventBody::Change(projected) = decoders.ingest(payload)? else {
            anyhow::bail!("payload {i} is not a change event when projected");
        };
        anyhow::ensure!(
            projected.record_ids == ours.record_ids
                && projected.transaction_key == ours.transaction_key
                && projected.changed_fields == ours.changed_fields
                && projected.nulled_fields == ours.nulled_fields
                && projected.fields.len() < ours.fields.len()
                && projected
                    .fields
                    .iter()
                    .all(|(name, v)| ours.fields.get(name) == Some(v)),
            "payload {i}: the projection and the full decode disagree"
        );
        let theirs = avro_change(reader, decoders.compiled.layout(), payload)?;
        anyhow::ensure!(
            ours.entity == theirs.entity
                && ours.record_ids == theirs.record_ids
                && ours.change_type.symbol() == theirs.change_type
                && ours.commit_number == theirs.commit_number
                && ours.changed_fields == theirs.changed_fields
                && ours.nulled_fields == theirs.nulled_fields
                && ours.diff_fields == theirs.diff_fields
                && ours.fields.len() == theirs.fields.len(),
            "payload {i}: sfcdc and apache-avro disagree"
        );
    }
    Ok(())
}

/// Times every path over the mix, then all but `from_avro_datum` on the representative event
/// alone (as `cargo bench --bench decode` does), `budget` each, and prints a table.
pub fn run(corpus: &Corpus, budget: Duration) -> anyhow::Result<DecodeBenchResult> {
    let decoders = Decoders::new(corpus)?;
    let reader = decoders.reader()?;
    let layout = decoders.compiled.layout();
    check_agree(corpus, &decoders, &reader)?;
    let mut paths = Vec::new();
    let sets: [(&str, &[Bytes]); 2] = [
        ("mix", &corpus.payloads),
        (
            "representative",
            std::slice::from_ref(&corpus.representative),
        ),
    ];
    for set in sets {
        paths.push(time_path(
            ("sfcdc", "sfcdc full decode"),
            "Avro + typed header + 3 bitmaps as names",
            set,
            budget,
            |p| decoders.sfcdc(p),
        )?);
        paths.push(time_path(
            ("sfcdc_ingest", "sfcdc ingest projection"),
            &format!(
                "the same, the body projected on {} (the rules' fields), the rest skipped",
                decoders.projected_fields().join(", ")
            ),
            set,
            budget,
            |p| decoders.ingest(p),
        )?);
        paths.push(time_path(
            ("apache_avro_value", "apache-avro read_value"),
            "Avro only: Value tree, reader built once",
            set,
            budget,
            |p| avro_value(&reader, p),
        )?);
        paths.push(time_path(
            (
                "apache_avro_value_header_bitmaps",
                "apache-avro read_value + header + bitmaps",
            ),
            "Value + header by name + 3 bitmaps (sfcdc's) + unions unwrapped",
            set,
            budget,
            |p| avro_change(&reader, layout, p),
        )?);
        if set.0 == "mix" {
            paths.push(time_path(
                ("apache_avro_from_avro_datum", "apache-avro from_avro_datum"),
                "Avro only, deprecated one-call form: builds the reader per call",
                set,
                budget,
                |p| decoders.avro_from_datum(p),
            )?);
        }
    }
    let result = DecodeBenchResult {
        payloads: corpus.payloads.len(),
        mean_payload_bytes: corpus.mean_bytes(),
        representative_bytes: corpus.representative.len(),
        schema_fields: layout.len(),
        rounds: ROUNDS,
        paths,
    };
    println!(
        "Decode, one core, fastest of {} rounds: the mix is {} order change events ({:.0} bytes \
         on average), the representative UPDATE {} bytes; {} top-level fields",
        result.rounds,
        result.payloads,
        result.mean_payload_bytes,
        result.representative_bytes,
        result.schema_fields
    );
    println!(
        "{:<15} {:<42} {:>12} {:>10} {:>14}  includes",
        "payloads", "path", "events/s", "ns/event", "events/CPU-s"
    );
    for p in &result.paths {
        let cpu = p
            .events_per_cpu_second
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0}"));
        println!(
            "{:<15} {:<42} {:>12.0} {:>10.0} {:>14}  {}",
            p.set, p.label, p.events_per_second, p.ns_per_event, cpu, p.includes
        );
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_agree_on_a_small_corpus() {
        let corpus = Corpus::build(200).unwrap();
        assert_eq!(corpus.payloads.len(), 201);
        assert_eq!(corpus.payloads[0], corpus.representative);
        let decoders = Decoders::new(&corpus).unwrap();
        let reader = decoders.reader().unwrap();
        check_agree(&corpus, &decoders, &reader).unwrap();
        assert!(decoders.ingest(&corpus.representative).is_ok());
        let kept = decoders.projected_fields();
        for f in [
            "Status",
            "AccountId",
            "Activation_Status__c",
            "WHMCS_Order_ID__c",
        ] {
            assert!(kept.contains(&f), "{f} in {kept:?}");
        }
        let change =
            avro_change(&reader, decoders.compiled.layout(), &corpus.representative).unwrap();
        assert_eq!(change.change_type, "UPDATE");
        assert!(change.changed_fields.iter().any(|f| &**f == "Status"));
        assert!(bitmap::decode(decoders.compiled.layout(), &corpus.changed).is_ok());
        assert!(decoders.avro_from_datum(&corpus.representative).is_ok());
    }
}
