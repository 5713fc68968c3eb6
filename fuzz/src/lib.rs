//! Fuzz target bodies: what `fuzz_targets/*` run under libFuzzer (with the `libfuzzer` feature,
//! through scripts/fuzz.sh), and what `cargo test` replays from `corpus/` and `regressions/`
//! (tests/regressions.rs). They call sfcdc's parsers through its public API, as any client would.
//!
//! Each function takes arbitrary bytes and feeds them to one family of parsers exactly as sfcdc
//! runs them on untrusted input: [`avro_decode`] the Pub/Sub payload decoder (and the rules that
//! ingest applies to what it decodes), [`bitmap()`] the ChangeEventHeader field bitmaps,
//! [`rest_responses`] the Salesforce, OAuth and fulfilment HTTP answers, and [`config`] the
//! configuration file and every setting. The invariant is that **none of them panics** on any
//! input, nor allocates without bound: rejecting input with an error is fine. Where a parser
//! accepts the input, the functions also check properties that must hold for accepted input
//! (decoding agrees with apache-avro, bitmaps survive an encode/decode round trip, secrets never
//! appear in errors), and those checks panic, so the fuzzer reports them like any crash. The
//! first input byte picks a schema, layout or parser where there is a choice, so one corpus
//! covers every case.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value as Json;

use sfcdc::config::{Env, SECRET_VARS};
use sfcdc::decode::avro::{Plan, Record, Value};
use sfcdc::decode::bitmap::{self, BitmapError, FieldLayout};
use sfcdc::decode::{CompiledSchema, DecodeError, DecodedEvent, EventBody, ReplayId};
use sfcdc::rules::{self, Evaluation, Facts, OrderFacts, RulesConfig};
use sfcdc::sfid::SfId;
use sfcdc_emulator::schema::{EventSchema, SchemaKind};
use sfcdc_emulator::world::{self, FULFILMENT_EVENT, World};

/// The body of a fuzz target: takes arbitrary bytes, panics only on a broken invariant.
pub type Target = fn(&[u8]);

/// Every fuzz target: its name (the `fuzz/fuzz_targets/<name>.rs` and corpus directory) and its
/// body.
pub const TARGETS: [(&str, Target); 4] = [
    ("avro_decode", avro_decode),
    ("bitmap", bitmap),
    ("rest_responses", rest_responses),
    ("config", config),
];

/// One event schema the emulator serves, with the decoders sfcdc and apache-avro build from it.
pub struct ServedSchema {
    /// The emulator's schema (its JSON, and the encoder that writes its events).
    pub schema: Arc<EventSchema>,
    /// The topic its events arrive on.
    pub topic: Arc<str>,
    compiled: CompiledSchema,
    plan: Plan,
    avro: apache_avro::Schema,
}

impl std::fmt::Debug for ServedSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedSchema")
            .field("entity", &self.schema.entity)
            .field("id", &self.schema.id)
            .finish_non_exhaustive()
    }
}

/// Name of the field added to Order to make the emulator serve a second Order schema version.
pub const ADDED_ORDER_FIELD: &str = "Fuzz_Note__c";

/// The schemas the emulator serves, in the order [`avro_decode`]'s first byte picks them: Order
/// (as first served), Order after an admin added [`ADDED_ORDER_FIELD`] (old events keep the old
/// version, so both are served), OrderItem, and the fulfilment platform event.
pub fn served_schemas() -> &'static [ServedSchema] {
    static SERVED: OnceLock<Vec<ServedSchema>> = OnceLock::new();
    SERVED.get_or_init(|| {
        let mut w = World::new(0);
        let first_order = w.current_schema("Order").expect("Order is served");
        w.add_order_field(ADDED_ORDER_FIELD)
            .expect("the field can be added");
        let schemas = [
            first_order,
            w.current_schema("Order").expect("Order is served"),
            w.current_schema("OrderItem").expect("OrderItem is served"),
            w.current_schema(FULFILMENT_EVENT)
                .expect("the platform event is served"),
        ];
        schemas
            .into_iter()
            .map(|schema| {
                assert!(
                    w.schema(&schema.id).is_some(),
                    "{} is served",
                    schema.entity
                );
                let topic = match schema.kind {
                    SchemaKind::ChangeEvent => world::cdc_channel(&schema.entity),
                    SchemaKind::PlatformEvent => format!("/event/{}", schema.entity),
                };
                let avro = apache_avro::Schema::parse_str(&schema.json).expect("valid Avro");
                ServedSchema {
                    compiled: CompiledSchema::compile(&schema.id, &schema.json)
                        .expect("a served schema compiles"),
                    plan: Plan::compile(&avro).expect("a served schema compiles"),
                    avro,
                    topic: Arc::from(topic),
                    schema,
                }
            })
            .collect()
    })
}

fn rules_config() -> &'static RulesConfig {
    static RULES: OnceLock<RulesConfig> = OnceLock::new();
    RULES.get_or_init(RulesConfig::defaults)
}

/// Decodes `data[1..]` as an event payload of the served schema `data[0]` picks, through the
/// subscriber's decoder ([`CompiledSchema::decode`]), then evaluates the rules on it as ingest
/// does. Checks that the decoder agrees with apache-avro on every payload it accepts, and that
/// the rules answer after one lookup.
pub fn avro_decode(data: &[u8]) {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let served = served_schemas();
    let s = &served[usize::from(pick) % served.len()];
    let payload = Bytes::copy_from_slice(payload);
    let decoded = s.compiled.decode(&s.topic, &payload);
    let plain = s.plan.decode(&payload);
    match (&decoded, &plain) {
        (Ok(_), Err(e)) => panic!("the event decodes but its record does not: {e}"),
        (Err(DecodeError::Payload(e)), Ok(_)) => {
            panic!("the record decodes but the event reports a payload error: {e}")
        }
        (Err(DecodeError::Payload(a)), Err(b)) => assert_eq!(a, b, "the same payload error"),
        _ => {}
    }
    if let Ok(record) = &plain {
        let mut rest: &[u8] = &payload;
        let theirs = apache_avro::reader::datum::GenericDatumReader::builder(&s.avro)
            .build()
            .and_then(|r| r.read_value(&mut rest))
            .unwrap_or_else(|e| panic!("apache-avro rejects a payload sfcdc accepts: {e}"));
        assert!(rest.is_empty(), "apache-avro leaves {} bytes", rest.len());
        assert!(
            same_record(record, &theirs),
            "sfcdc and apache-avro disagree:\n{record:?}\n{theirs:?}"
        );
    }
    let Ok(body) = decoded else {
        return;
    };
    assert_eq!(
        matches!(body, EventBody::Change(_)),
        s.schema.kind == SchemaKind::ChangeEvent
    );
    let event = DecodedEvent {
        replay_id: ReplayId::new(vec![0, 0, 0, 0, 0, 0, 0x10, 0]),
        schema_id: s.compiled.id.clone(),
        event_id: "00000000-0000-4000-8000-000000000000".into(),
        payload,
        body,
    };
    evaluate_as_ingest(&event);
}

/// The facts a lookup finds for `id`: varied by the id, so both branches of every guard run.
fn looked_up(id: &SfId) -> Option<OrderFacts> {
    let facts = |status: &str, activation: Option<&str>, external: Option<&str>| OrderFacts {
        status: Some(status.to_owned()),
        activation: activation.map(str::to_owned),
        external_id: external.map(str::to_owned),
        account_id: Some("001000000000001AAA".into()),
    };
    match id.as_str().bytes().map(usize::from).sum::<usize>() % 4 {
        0 => None,
        1 => Some(facts("Approved", None, None)),
        2 => Some(facts("Approved", Some("Activated"), None)),
        _ => Some(facts("Draft", None, Some("WH-1"))),
    }
}

/// Runs the rules over one event the way [`sfcdc::ingest`] does: evaluate, look up what they
/// ask for, evaluate again; reconcile after an overflow.
fn evaluate_as_ingest(event: &DecodedEvent) {
    let cfg = rules_config();
    let _ = rules::guard_changes(cfg, event);
    match rules::evaluate(cfg, event, &Facts::default()) {
        Ok(Evaluation::Done(_)) | Err(_) => {}
        Ok(Evaluation::NeedOrders(ids)) => {
            let facts: Facts = ids.iter().map(|id| (id.clone(), looked_up(id))).collect();
            match rules::evaluate(cfg, event, &facts) {
                Ok(Evaluation::Done(_)) => {}
                other => panic!("the rules asked again after a lookup: {other:?}"),
            }
        }
        Ok(Evaluation::NeedReconciliation { lost, .. }) => {
            let EventBody::Change(c) = &event.body else {
                panic!("only a change event asks for reconciliation");
            };
            let orders: Vec<(SfId, OrderFacts)> = c
                .record_ids
                .iter()
                .filter_map(|i| SfId::parse(i).ok())
                .filter_map(|id| Some((id.clone(), looked_up(&id)?)))
                .collect();
            let d = rules::reconcile(cfg, c, lost, &orders);
            assert_eq!(d.invalidations.len(), orders.len());
        }
    }
}

fn same_record(ours: &Record, theirs: &apache_avro::types::Value) -> bool {
    let apache_avro::types::Value::Record(fields) = theirs else {
        return false;
    };
    ours.len() == fields.len()
        && ours
            .iter()
            .zip(fields)
            .all(|((name, v), (their_name, t))| name == their_name && same(v, t))
}

/// Whether one of our values is the value apache-avro read (unions unwrapped, floats by bits).
fn same(ours: &Value, theirs: &apache_avro::types::Value) -> bool {
    use apache_avro::types::Value as A;
    match (ours, theirs) {
        (_, A::Union(_, inner)) => same(ours, inner),
        (Value::Null, A::Null) => true,
        (Value::Boolean(a), A::Boolean(b)) => a == b,
        (Value::Int(a), A::Int(b) | A::Date(b) | A::TimeMillis(b)) => a == b,
        (
            Value::Long(a),
            A::Long(b)
            | A::TimeMicros(b)
            | A::TimestampMillis(b)
            | A::TimestampMicros(b)
            | A::TimestampNanos(b)
            | A::LocalTimestampMillis(b)
            | A::LocalTimestampMicros(b)
            | A::LocalTimestampNanos(b),
        ) => a == b,
        (Value::Float(a), A::Float(b)) => a.to_bits() == b.to_bits(),
        (Value::Double(a), A::Double(b)) => a.to_bits() == b.to_bits(),
        (Value::String(a), A::String(b)) => a == b,
        (Value::Bytes(a), A::Bytes(b) | A::Fixed(_, b)) => a == b,
        (Value::Enum(a), A::Enum(_, b)) => **a == **b,
        (Value::Array(a), A::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        (Value::Map(a), A::Map(b)) => a
            .iter()
            .all(|(k, v)| b.get(k.as_str()).is_some_and(|t| same(v, t))),
        (Value::Record(a), t) => same_record(a, t),
        _ => false,
    }
}

/// The layouts [`bitmap()`]'s first byte picks from: each served schema's (as the subscriber
/// derives it), then schemas A and D of the Pub/Sub API reference §4.4, whose test vectors the
/// seed corpus holds.
pub fn bitmap_layouts() -> &'static [FieldLayout] {
    static LAYOUTS: OnceLock<Vec<FieldLayout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        let mut layouts: Vec<FieldLayout> = served_schemas()
            .iter()
            .map(|s| s.compiled.layout().clone())
            .collect();
        let address = || {
            Some(
                sfcdc_emulator::model::ADDRESS_COMPONENTS
                    .iter()
                    .map(|(n, _, _)| n.to_string())
                    .collect(),
            )
        };
        let mut a = FieldLayout::new();
        for n in sfcdc::decode::bitmap::REFERENCE_ACCOUNT_FIELDS {
            a.push(n, n.ends_with("Address").then(address).flatten());
        }
        layouts.push(a);
        let small = || -> Option<Vec<String>> {
            Some(
                ["Street", "City", "State", "PostalCode", "Country"]
                    .map(String::from)
                    .to_vec(),
            )
        };
        let mut d = FieldLayout::new();
        d.push("ChangeEventHeader", Some(Vec::new()));
        for i in 1..=31 {
            match i {
                4 => d.push("AddrA", small()),
                7 => d.push("AddrB", small()),
                _ => d.push(format!("F{i}"), None),
            }
        }
        layouts.push(d);
        layouts
    })
}

/// Whether `encode` knows a field path: a top-level name, or `Parent.Child` of a compound field.
fn encodable(layout: &FieldLayout, path: &str) -> bool {
    match path.split_once('.') {
        Some((parent, child)) => layout
            .position(parent)
            .and_then(|p| layout.children(p))
            .is_some_and(|cs| cs.contains(&child)),
        None => layout.position(path).is_some(),
    }
}

/// Decodes the lines of `data[1..]` as one bitmap array (`changedFields` and friends) over the
/// layout `data[0]` picks. Checks that every name decoded is a field of the layout (or a plain
/// name passed through), and that encoding the names and decoding them again gives them back.
pub fn bitmap(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let layouts = bitmap_layouts();
    let layout = &layouts[usize::from(pick) % layouts.len()];
    let text = String::from_utf8_lossy(rest);
    let values: Vec<&str> = if text.is_empty() {
        Vec::new()
    } else {
        text.split('\n').collect()
    };
    let names = match bitmap::decode(layout, &values) {
        Ok(names) => names,
        Err(BitmapError::NotHex { element } | BitmapError::BadParent { element }) => {
            assert!(values.contains(&element.as_str()), "{element:?} was given");
            return;
        }
    };
    for n in &names {
        assert!(
            encodable(layout, n) || values.contains(&&**n),
            "{n:?} is neither a field nor a name that was given"
        );
    }
    let known: BTreeSet<&str> = names
        .iter()
        .map(|n| &**n)
        .filter(|n| encodable(layout, n))
        .collect();
    let encoded = bitmap::encode(layout, known.iter().copied());
    for (i, e) in encoded.iter().enumerate() {
        let hex = if i == 0 {
            e.strip_prefix("0x")
        } else {
            e.split_once("-0x").map(|(p, hex)| {
                assert!(p.parse::<usize>().is_ok(), "{e}");
                hex
            })
        };
        let hex = hex.unwrap_or_else(|| panic!("{e} is not in the Salesforce format"));
        assert!(
            !hex.is_empty()
                && hex.len() % 2 == 0
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')),
            "{e} is not upper-case hex with an even digit count"
        );
    }
    let again = bitmap::decode(layout, &encoded).expect("what encode writes decodes");
    let again: BTreeSet<&str> = again.iter().map(|n| &**n).collect();
    assert_eq!(
        again, known,
        "an encode/decode round trip changes the fields"
    );
}

/// HTTP statuses [`rest_responses`]'s second byte picks from.
const STATUSES: [u16; 20] = [
    200, 201, 202, 204, 301, 400, 401, 403, 404, 405, 408, 409, 415, 422, 429, 500, 501, 502, 503,
    599,
];

/// Parses `data[2..]` as the body of one HTTP answer sfcdc reads, with the status `data[1]`
/// picks. `data[0]` picks the parser: a SOQL query page (with the order facts read from its
/// records), a Salesforce REST error, the OAuth token response, the OAuth userinfo, and the
/// fulfilment system's submit, poll and batch-poll answers.
pub fn rest_responses(data: &[u8]) {
    let [which, status, body @ ..] = data else {
        return;
    };
    let status = STATUSES[usize::from(*status) % STATUSES.len()];
    // reqwest's `text()` reads a body as lossy UTF-8; `json()` parses the bytes.
    let text = String::from_utf8_lossy(body);
    match which % 7 {
        0 => soql_page(body),
        1 => {
            let json: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
            let e = sfcdc::salesforce::rest::api_error(status, &json);
            let sfcdc::salesforce::RestError::Api { status: s, .. } = &e else {
                panic!("an API error: {e:?}");
            };
            assert_eq!(*s, status);
            assert_eq!(
                e.is_retryable(),
                status >= 500 || status == 429 || status == 401
            );
        }
        2 => token_answer(status, &text),
        3 => {
            if let Ok(info) = serde_json::from_slice::<sfcdc::salesforce::auth::UserInfo>(body)
                && let Ok(id) = SfId::parse(&info.organization_id)
            {
                assert_eq!(id.as_str().len(), 18);
                assert_eq!(SfId::parse(id.as_str()).as_ref(), Ok(&id));
            }
        }
        4 => {
            use sfcdc::worker::fulfilment::{Submitted, submit_answer};
            match submit_answer(status, &text) {
                Ok(Submitted::Accepted(op)) => {
                    assert_eq!(status, 202);
                    check_operation(&op);
                }
                Ok(Submitted::Finished(op)) => {
                    assert!(status == 200 || status == 201);
                    check_operation(&op);
                }
                Err(e) => check_call_error(status, &e, 200..=202),
            }
        }
        5 => match sfcdc::worker::fulfilment::poll_answer(status, &text) {
            Ok(Some(op)) => {
                assert_eq!(status, 200);
                check_operation(&op);
            }
            Ok(None) => assert_eq!(status, 404),
            Err(e) => check_call_error(status, &e, 200..=200),
        },
        _ => match sfcdc::worker::fulfilment::batch_answer(status, &text) {
            Ok(Some(ops)) => {
                assert_eq!(status, 200);
                ops.iter().for_each(check_operation);
            }
            Ok(None) => assert!(matches!(status, 404 | 405 | 501)),
            Err(e) => check_call_error(status, &e, 200..=200),
        },
    }
}

/// One page of a SOQL query, and the order facts [`sfcdc::salesforce::RestLookup`] reads from
/// each record.
fn soql_page(body: &[u8]) {
    use sfcdc::salesforce::rest::{RecordFields, TextFields, order_facts, parse_page, record_id};
    let Ok((records, next)) = parse_page::<Json>(body) else {
        return;
    };
    let page: Json = serde_json::from_slice(body).expect("a page is JSON");
    assert_eq!(
        records.len(),
        page["records"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(next.as_deref(), page["nextRecordsUrl"].as_str());
    let rules = rules_config();
    // The guard lookups read records straight into their text fields: the same fields, and the
    // same facts, as the JSON tree of the record.
    match parse_page::<TextFields>(body) {
        Ok((texts, _)) => {
            assert_eq!(texts.len(), records.len());
            for (t, r) in texts.iter().zip(&records) {
                let fields = r
                    .as_object()
                    .expect("a record read as text fields is an object");
                for (name, value) in fields {
                    assert_eq!(t.text(name), value.as_str());
                }
                assert_eq!(order_facts(t, rules), order_facts(fields, rules));
                assert_eq!(t.id(), record_id(r));
            }
        }
        Err(_) => assert!(records.iter().any(|r| !r.is_object())),
    }
    for r in &records {
        let Some(id) = record_id(r) else {
            continue;
        };
        let Some(fields) = r.as_object() else {
            panic!("a record with an Id is an object");
        };
        let facts = order_facts(fields, rules);
        assert_eq!(facts.status.as_deref(), r["Status"].as_str());
        assert_eq!(id.as_str().len(), 18);
    }
}

fn token_answer(status: u16, body: &str) {
    let code = reqwest::StatusCode::from_u16(status).expect("a valid status");
    let url = "https://login.salesforce.com/services/oauth2/token";
    match sfcdc::salesforce::auth::token_response("password", code, body, url) {
        Ok((_, instance_url, expires_in)) => {
            assert!(code.is_success());
            assert!(!instance_url.ends_with('/'));
            let now = Instant::now();
            for timeout in [None, Some(Duration::from_secs(7200))] {
                let expiry = sfcdc::salesforce::auth::session_expiry(now, expires_in, timeout);
                assert!(expiry.is_none_or(|e| e >= now));
            }
        }
        Err(sfcdc::salesforce::auth::AuthError::Rejected { .. }) => assert!(code.is_client_error()),
        Err(e) => assert!(e.is_retryable(), "{e}"),
    }
}

fn check_operation(op: &sfcdc::worker::fulfilment::Operation) {
    assert!(op.progress().is_none_or(|p| (0..=100).contains(&p)));
    if let Some(result) = &op.result
        && let Some(id) = sfcdc::worker::fulfilment::external_id(result)
    {
        assert!(!id.trim().is_empty());
    }
}

fn check_call_error(
    status: u16,
    e: &sfcdc::worker::fulfilment::CallError,
    success: std::ops::RangeInclusive<u16>,
) {
    if success.contains(&status) {
        // A success status with a body that is not what the protocol says: transient.
        assert!(e.transient, "{e}");
    } else {
        let transient = matches!(status, 401 | 403 | 408 | 429) || status >= 500;
        assert_eq!(e.transient, transient, "{status}: {e}");
        assert!(e.message.contains(&status.to_string()), "{e}");
    }
}

/// The sample configuration, completed so that it is valid: the base [`config`] lays fuzzed
/// settings over.
fn sample_config() -> &'static HashMap<String, String> {
    static SAMPLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let mut vars = sfcdc::config::parse_file(include_str!("../../config/sfcdc.env"))
            .expect("the sample configuration parses");
        vars.insert(
            "SFCDC_FULFILMENT_URL".into(),
            "http://127.0.0.1:9300".into(),
        );
        vars
    })
}

/// Reads `data[1..]` as an `SFCDC_CONFIG` file, then every setting of `sfcdc run` from it: alone
/// when `data[0]` is even, laid over the (valid) sample configuration when it is odd, so the
/// checks of every variable are reached. Checks that the file format round-trips, that a bad
/// setting names a variable and never shows a secret's value, and that every duration a valid
/// configuration holds can be waited for.
pub fn config(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let vars = match sfcdc::config::parse_file(&text) {
        Ok(vars) => vars,
        Err((line, reason)) => {
            assert!(line >= 1 && line <= text.lines().count(), "line {line}");
            assert!(!reason.is_empty());
            return;
        }
    };
    // Written back in the quoted form, the file reads the same.
    let written: String = vars.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
    assert_eq!(
        sfcdc::config::parse_file(&written).as_ref(),
        Ok(&vars),
        "{written}"
    );
    let mut merged: HashMap<String, String> = if mode % 2 == 1 {
        sample_config().clone()
    } else {
        HashMap::new()
    };
    merged.extend(vars);
    // The key file is read whole: keep the fuzzer to a key that exists and one that does not
    // (it would otherwise find /dev/zero).
    if let Some(path) = merged.get_mut("SF_PRIVATE_KEY_FILE") {
        *path = if path.contains("jwt-test-key.pem") {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/jwt-test-key.pem"
            )
            .into()
        } else {
            "/nonexistent/sfcdc-fuzz.pem".into()
        };
    }
    let env = Env::from_pairs(merged.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    match sfcdc::app::Settings::from_env(&env) {
        Err(e) => {
            assert!(!e.var.is_empty() && !e.reason.is_empty(), "{e:?}");
            let shown = e.to_string();
            assert!(
                leaked_secret(&merged, &shown).is_none(),
                "{shown} shows the value of {:?}",
                leaked_secret(&merged, &shown)
            );
        }
        Ok(settings) => {
            let shown = format!("{settings:?}");
            assert!(
                leaked_secret(&merged, &shown).is_none(),
                "the settings show the value of {:?}",
                leaked_secret(&merged, &shown)
            );
            let mut durations = vec![
                settings.source.stream_timeout,
                settings.source.reconnect_min,
                settings.source.reconnect_max,
                settings.cache.ttl,
                settings.cache.idle,
                settings.cache.invalidation_window,
                settings.cache.guard_max_age,
            ];
            durations.extend(settings.auth.session_timeout);
            if let Some(w) = &settings.worker {
                durations.extend([
                    w.lease,
                    w.poll_timeout,
                    w.http_timeout,
                    w.retention,
                    w.poll.base,
                    w.poll.cap,
                    w.retry.base,
                    w.retry.cap,
                ]);
            }
            let now = Instant::now();
            for d in durations {
                assert!(now.checked_add(d).is_some(), "{d:?} cannot be waited for");
            }
            assert!(settings.rules.reconcile_window_ms >= 0);
        }
    }
}

/// The secret variable whose value `shown` contains, when that can only be a leak: the value is
/// long and marked (a control character no message contains), and no other variable holds it.
fn leaked_secret<'a>(vars: &'a HashMap<String, String>, shown: &str) -> Option<&'a str> {
    SECRET_VARS.into_iter().find_map(|key| {
        let (key, value) = vars.get_key_value(key)?;
        let value = value.trim();
        let marked = value.len() >= 8 && value.chars().any(|c| ('\u{1}'..='\u{8}').contains(&c));
        let elsewhere = vars.iter().any(|(k, v)| k != key && v.contains(value));
        let visible = shown.contains(value) || shown.contains(&value.escape_debug().to_string());
        (marked && !elsewhere && visible).then_some(key.as_str())
    })
}
