//! The fuzz targets' inputs, replayed in the normal suite: every seed of `fuzz/corpus/<target>/`
//! and every input a fuzzer once crashed on, kept in `fuzz/regressions/<target>/`, goes through
//! the same `sfcdc_fuzz` function libFuzzer runs, which panics on a broken invariant. Also
//! property tests over the decoders, and (ignored) the generator of the seed corpus.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sfcdc::decode::{ChangeType, CompiledSchema, EventBody};
use sfcdc_emulator::schema::{ChangeHeader, EventSchema, FieldValue, SchemaKind};
use sfcdc_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of one directory, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every file through `body`; returns the files it panicked on, with the message.
fn replay(body: fn(&[u8]), paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .filter_map(|p| {
            let data = std::fs::read(p).expect("a readable file");
            std::panic::catch_unwind(|| body(&data)).err().map(|e| {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("{}: {msg}", p.display())
            })
        })
        .collect()
}

#[test]
fn every_target_has_a_seed_corpus_that_replays_cleanly() {
    for (name, body) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let seeds = files(&dir);
        assert!(
            seeds.len() >= 5,
            "{} should hold the seed corpus of {name}, found {} files",
            dir.display(),
            seeds.len()
        );
        let failed = replay(body, &seeds);
        assert!(failed.is_empty(), "{name} panics on seeds:\n{failed:#?}");
    }
}

#[test]
fn every_input_a_fuzzer_crashed_on_is_fixed() {
    let dir = fuzz_dir().join("regressions");
    let known: BTreeSet<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            known.contains(name.as_str()),
            "fuzz/regressions/{name} names no fuzz target"
        );
        let body = TARGETS.iter().find(|(n, _)| *n == name).unwrap().1;
        let inputs = files(&path);
        assert!(!inputs.is_empty(), "fuzz/regressions/{name} is empty");
        let failed = replay(body, &inputs);
        assert!(failed.is_empty(), "{name} still fails on:\n{failed:#?}");
        replayed += inputs.len();
    }
    assert!(
        replayed > 0,
        "no regression input found under {}",
        dir.display()
    );
}

#[test]
fn a_gap_overflow_at_the_oldest_commit_time_reconciles_from_the_oldest_time() {
    // fuzz/regressions/avro_decode/gap-overflow-at-the-oldest-commit-timestamp: the window was
    // subtracted from commitTimestamp without a bound, an overflow.
    let s = &order().schema;
    let mut h = header(s, ChangeType::GapOverflow, &[]);
    h.commit_timestamp = i64::MIN;
    let payload = Bytes::from(s.encode_change(&h, &BTreeMap::new()));
    let compiled = CompiledSchema::compile(&s.id, &s.json).unwrap();
    let event = sfcdc::decode::DecodedEvent {
        replay_id: sfcdc::decode::ReplayId::new(vec![0; 8]),
        schema_id: compiled.id.clone(),
        event_id: "e".into(),
        body: compiled.decode(&order().topic, &payload).unwrap(),
        payload,
    };
    let cfg = sfcdc::rules::RulesConfig::defaults();
    assert_eq!(
        sfcdc::rules::evaluate(&cfg, &event, &Default::default()),
        Ok(sfcdc::rules::Evaluation::NeedReconciliation {
            since_ms: i64::MIN,
            lost: sfcdc::rules::Lost::Overflow,
        })
    );
}

#[test]
fn durations_beyond_a_century_are_refused_by_name() {
    // fuzz/regressions/config/*: such durations overflowed `4 × SFCDC_HTTP_TIMEOUT` and the
    // deadlines computed from SFCDC_INVALIDATION_WINDOW and SF_SESSION_TIMEOUT.
    use sfcdc::config::{Env, MAX_DURATION};
    let env = Env::from_pairs([("SFCDC_HTTP_TIMEOUT", "150000000000y"), ("OK", "100y")]);
    let e = env
        .duration_or("SFCDC_HTTP_TIMEOUT", std::time::Duration::ZERO)
        .unwrap_err();
    assert_eq!(e.var, "SFCDC_HTTP_TIMEOUT");
    assert!(e.reason.ends_with("must be at most 100 years"), "{e}");
    assert_eq!(
        env.duration_or("OK", std::time::Duration::ZERO),
        Ok(MAX_DURATION)
    );
}

/// The served Order schema, as first served.
fn order() -> &'static sfcdc_fuzz::ServedSchema {
    &sfcdc_fuzz::served_schemas()[0]
}

fn sfid(prefix: &str, n: u32) -> String {
    sfcdc::sfid::to_18(&format!("{prefix}5g00000{n:05}")).unwrap()
}

/// The emulator's change type for the product's, by symbol: the crates share no types.
fn emulated(change_type: ChangeType) -> sfcdc_emulator::schema::ChangeType {
    sfcdc_emulator::schema::ChangeType::from_symbol(change_type.symbol()).unwrap()
}

fn header(schema: &EventSchema, change_type: ChangeType, changed: &[&str]) -> ChangeHeader {
    let key_prefix = if schema.entity == "Order" {
        "801"
    } else {
        "802"
    };
    ChangeHeader {
        entity_name: schema.entity.clone(),
        record_ids: if change_type == ChangeType::GapOverflow {
            Vec::new()
        } else {
            vec![sfid(key_prefix, 7)]
        },
        change_type: emulated(change_type),
        change_origin: "com/salesforce/api/rest/60.0;client=sfcdc".into(),
        transaction_key: "00001983-4fdf-b2cf-3f09-22bfd2e31173".into(),
        sequence_number: 1,
        commit_timestamp: 1_709_303_151_000,
        commit_number: 1_709_303_151_782_928_388,
        commit_user: "0055J000001D89MQAS".into(),
        changed: changed.iter().map(|s| s.to_string()).collect(),
        nulled: Vec::new(),
    }
}

fn values(pairs: &[(&str, FieldValue)]) -> BTreeMap<String, FieldValue> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(s: &str) -> FieldValue {
    FieldValue::Str(s.to_owned())
}

/// The seeds of `avro_decode`: valid events of every served schema, and two broken ones.
fn avro_seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (i, served) in sfcdc_fuzz::served_schemas().iter().enumerate() {
        let s = &served.schema;
        let mut push = |name: &str, payload: Vec<u8>| {
            let mut data = vec![i as u8];
            data.extend(payload);
            seeds.push((format!("{i}-{}-{name}", s.entity.to_lowercase()), data));
        };
        match (s.kind, s.entity.as_str()) {
            (SchemaKind::ChangeEvent, "Order") => {
                let approved = values(&[
                    ("Status", text("Approved")),
                    ("BillingAddress.City", text("Lyon")),
                    ("LastModifiedDate", FieldValue::Long(1_709_303_151_000)),
                ]);
                let changed = ["Status", "BillingAddress.City", "LastModifiedDate"];
                push(
                    "update-approved",
                    s.encode_change(&header(s, ChangeType::Update, &changed), &approved),
                );
                let mut created = approved.clone();
                created.extend(values(&[
                    ("AccountId", text(&sfid("001", 3))),
                    ("Name", text("Order for Lyon")),
                    ("TotalAmount", FieldValue::Double(1249.5)),
                    ("IsReductionOrder", FieldValue::Bool(false)),
                    ("Activation_Status__c", text("Activating")),
                ]));
                let names: Vec<&str> = created.keys().map(String::as_str).collect();
                push(
                    "create",
                    s.encode_change(&header(s, ChangeType::Create, &names), &created),
                );
                let mut nulled = header(s, ChangeType::Update, &["WHMCS_Order_ID__c"]);
                nulled.nulled = vec!["WHMCS_Order_ID__c".into()];
                push(
                    "update-nulled",
                    s.encode_change(&nulled, &values(&[("WHMCS_Order_ID__c", FieldValue::Null)])),
                );
                for (name, ct) in [
                    ("delete", ChangeType::Delete),
                    ("gap-update", ChangeType::GapUpdate),
                    ("gap-overflow", ChangeType::GapOverflow),
                ] {
                    push(name, s.encode_change(&header(s, ct, &[]), &BTreeMap::new()));
                }
                if s.field_names().any(|f| f == sfcdc_fuzz::ADDED_ORDER_FIELD) {
                    push(
                        "update-added-field",
                        s.encode_change(
                            &header(s, ChangeType::Update, &[sfcdc_fuzz::ADDED_ORDER_FIELD]),
                            &values(&[(sfcdc_fuzz::ADDED_ORDER_FIELD, text("note"))]),
                        ),
                    );
                }
                // The corrupt event the emulator's fault injection sends.
                let good = s.encode_change(&header(s, ChangeType::Update, &[]), &BTreeMap::new());
                push("corrupt", s.corrupt(&good));
            }
            (SchemaKind::ChangeEvent, _) => {
                let changed = values(&[
                    ("Quantity", FieldValue::Double(3.0)),
                    ("UnitPrice", FieldValue::Double(19.99)),
                    ("OrderId", text(&sfid("801", 7))),
                ]);
                let names: Vec<&str> = changed.keys().map(String::as_str).collect();
                push(
                    "update",
                    s.encode_change(&header(s, ChangeType::Update, &names), &changed),
                );
                push(
                    "undelete",
                    s.encode_change(&header(s, ChangeType::Undelete, &[]), &BTreeMap::new()),
                );
            }
            (SchemaKind::PlatformEvent, _) => {
                let base = values(&[
                    ("CreatedDate", FieldValue::Long(1_709_303_151_000)),
                    ("CreatedById", text("0055J000001D89MQAS")),
                ]);
                let mut full = base.clone();
                full.extend(values(&[
                    ("OrderId__c", text(&sfid("801", 7))),
                    ("RequestedBy__c", text("ops@example.com")),
                    ("Priority__c", text("high")),
                ]));
                push("full", s.encode_platform(&full));
                push("no-order", s.encode_platform(&base));
                let mut bad = base;
                bad.insert("OrderId__c".into(), text("not-an-id"));
                push("bad-order", s.encode_platform(&bad));
            }
        }
    }
    // A truncated varint and trailing bytes.
    seeds.push(("truncated".into(), vec![0, 0x80]));
    let mut trailing = seeds[0].1.clone();
    trailing.push(0);
    seeds.push(("trailing-byte".into(), trailing));
    seeds
}

/// The seeds of `bitmap`: the test vectors of the Pub/Sub API reference §4.4 over the layouts
/// they were written for (4 is schema A, 5 schema D, 0 the served Order schema), and malformed
/// elements.
fn bitmap_seeds() -> Vec<(String, Vec<u8>)> {
    let vectors: [(&str, u8, &[&str]); 19] = [
        ("v1", 4, &["0x400000", "4-0x06"]),
        ("v2", 4, &["0x02"]),
        ("v3", 4, &["0x2000"]),
        ("v4", 4, &["0xC00000"]),
        ("v5", 4, &["0x400000", "4-0x07FF"]),
        ("v6", 4, &["0x400000", "4-0x06", "5-0x01"]),
        ("v7", 4, &["4-0x02"]),
        ("v8", 4, &["0x4000e0"]),
        ("v9", 5, &["0x650004E0", "4-0x10", "7-0x06"]),
        ("v11", 4, &["0x00"]),
        ("v12", 4, &["0x0400000000"]),
        ("v13", 4, &["0x100"]),
        ("v14", 0, &["0x2080"]),
        ("v15", 0, &["0x20000200", "14-0x02"]),
        ("beyond-schema", 4, &["0xFF00000000000002", "99-0x01"]),
        ("scalar-parent", 0, &["9-0x01"]),
        ("plain-name", 2, &["Quantity"]),
        ("not-hex", 4, &["0xZZ"]),
        ("bad-parent", 4, &["x-0x01"]),
    ];
    vectors
        .iter()
        .map(|(name, layout, elements)| {
            let mut data = vec![*layout];
            data.extend(elements.join("\n").into_bytes());
            (name.to_string(), data)
        })
        .collect()
}

/// The seeds of `rest_responses`: `[parser, status index, body…]`, the indexes as
/// `sfcdc_fuzz::rest_responses` reads them.
fn rest_seeds() -> Vec<(String, Vec<u8>)> {
    let order = sfid("801", 7);
    let account = sfid("001", 3);
    let bodies: Vec<(&str, u8, u8, String)> = vec![
        (
            "soql-page",
            0,
            0,
            format!(
                r#"{{"totalSize":2,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gD0000002HU6KIAW-2000","records":[{{"attributes":{{"type":"Order","url":"/services/data/v60.0/sobjects/Order/{order}"}},"Id":"{order}","Status":"Approved","AccountId":"{account}","Activation_Status__c":null,"WHMCS_Order_ID__c":null}},{{"attributes":{{"type":"Order"}},"Id":"not-an-id","Status":"Draft"}}]}}"#
            ),
        ),
        (
            "soql-last-page",
            0,
            0,
            format!(
                r#"{{"totalSize":1,"done":true,"records":[{{"Id":"{order}","Status":"Activated","Activation_Status__c":"Activated","WHMCS_Order_ID__c":"WH-17","OrderItems":{{"totalSize":1,"done":true,"records":[{{"Id":"{}","Quantity":2.0}}]}}}}]}}"#,
                sfid("802", 9)
            ),
        ),
        ("soql-empty", 0, 0, r#"{"totalSize":0,"done":true,"records":[]}"#.into()),
        (
            "rest-error-list",
            1,
            5,
            r#"[{"message":"unexpected token: 'FROM'","errorCode":"MALFORMED_QUERY"}]"#.into(),
        ),
        (
            "rest-error-session",
            1,
            6,
            r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#.into(),
        ),
        ("rest-error-html", 1, 18, "<html><body>Service Unavailable</body></html>".into()),
        (
            "token",
            2,
            0,
            r#"{"access_token":"00D5g00000LxD2a!AQ4AQFAKETOKEN","instance_url":"https://example.my.salesforce.com/","id":"https://login.salesforce.com/id/00D5g00000LxD2aEAF/0055J000001D89MQAS","token_type":"Bearer","issued_at":"1709303151000","signature":"c2lnbmF0dXJl"}"#.into(),
        ),
        (
            "token-expires-in",
            2,
            0,
            r#"{"access_token":"eyJ0eXAiOiJKV1QifQ.e30.sig","instance_url":"https://example.my.salesforce.com","token_type":"Bearer","expires_in":7200}"#.into(),
        ),
        (
            "token-refused",
            2,
            5,
            r#"{"error":"invalid_grant","error_description":"authentication failure"}"#.into(),
        ),
        ("token-unavailable", 2, 18, "upstream connect error".into()),
        (
            "userinfo",
            3,
            0,
            r#"{"sub":"https://login.salesforce.com/id/00D5g00000LxD2aEAF/0055J000001D89MQAS","organization_id":"00D5g00000LxD2aEAF","user_id":"0055J000001D89MQAS","preferred_username":"integration@example.com"}"#.into(),
        ),
        (
            "submit-accepted",
            4,
            2,
            r#"{"operation_id":"op_8f2c","status":"pending","progress":0}"#.into(),
        ),
        (
            "submit-finished",
            4,
            1,
            r#"{"operation_id":"op_8f2d","status":"completed","progress":100,"result":{"external_id":"WH-1042","service":"hosting"}}"#.into(),
        ),
        (
            "submit-invalid",
            4,
            13,
            r#"{"error":{"code":"invalid_request","message":"order has no items"}}"#.into(),
        ),
        ("submit-throttled", 4, 14, "slow down".into()),
        (
            "poll-failed",
            5,
            0,
            r#"{"operation_id":"op_8f2c","status":"failed","progress":40,"error":{"code":"out_of_stock","message":"no capacity","retryable":true}}"#.into(),
        ),
        (
            "poll-completed-numeric-id",
            5,
            0,
            r#"{"operation_id":"op_8f2c","status":"completed","result":{"id":42}}"#.into(),
        ),
        ("poll-unknown", 5, 8, r#"{"error":{"code":"not_found"}}"#.into()),
        (
            "batch",
            6,
            0,
            r#"{"operations":[{"operation_id":"op_1","status":"pending","progress":140},{"operation_id":"op_2","status":"completed","result":{"external_id":" "}}]}"#.into(),
        ),
        ("batch-unsupported", 6, 9, "".into()),
    ];
    bodies
        .into_iter()
        .map(|(name, parser, status, body)| {
            let mut data = vec![parser, status];
            data.extend(body.into_bytes());
            (name.to_string(), data)
        })
        .collect()
}

/// The seeds of `config`: `[mode, file…]`, mode 1 laying the file over the sample
/// configuration.
fn config_seeds() -> Vec<(String, Vec<u8>)> {
    let sample =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sfcdc.env"))
            .unwrap();
    let key = "tests/fixtures/jwt-test-key.pem";
    let files: Vec<(&str, u8, String)> = vec![
        ("sample", 0, sample.clone()),
        ("sample-over-sample", 1, sample),
        (
            "token-auth",
            0,
            "SF_AUTH=token\nSF_ACCESS_TOKEN='00D5g00000LxD2a!AQ4AQ'\nSF_INSTANCE_URL=https://example.my.salesforce.com\nSF_ORG_ID=00D5g00000LxD2aEAF\n".into(),
        ),
        (
            "jwt-bearer",
            0,
            format!("export SF_AUTH=jwt-bearer\nSF_CLIENT_ID=3MVG9\nSF_USERNAME=integration@example.com\nSF_PRIVATE_KEY_FILE={key}\n"),
        ),
        (
            "password",
            0,
            "SF_AUTH=password\nSF_CLIENT_ID=id\nSF_CLIENT_SECRET=\"s3cret # not a comment\"\nSF_USERNAME=u\nSF_PASSWORD=hunter2\nSF_SESSION_TIMEOUT=2h\n".into(),
        ),
        (
            "worker",
            1,
            "SFCDC_FULFILMENT_URL=https://fulfilment.example.com/api/\nSFCDC_FULFILMENT_TOKEN=0123456789abcdef\nSFCDC_HTTP_TIMEOUT=10s\nSFCDC_JOB_LEASE=1m\nSFCDC_POLL_INTERVAL=500ms\nSFCDC_POLL_MAX_INTERVAL=30s\nSFCDC_RETRY_BASE=5s\nSFCDC_RETRY_MAX=10m\nSFCDC_WORKER_CONCURRENCY=8\nSFCDC_MAX_ATTEMPTS=5\nSFCDC_RETENTION=30d\n".into(),
        ),
        (
            "subscriber",
            1,
            "SFCDC_PUBSUB_ENDPOINT=api.pubsub.salesforce.com:7443\nSFCDC_CHANNELS=/data/OrderChangeEvent,/event/Order_Fulfilment_Requested__e\nSFCDC_REPLAY_PRESET=earliest\nSFCDC_BATCH_SIZE=50\nSFCDC_STREAM_TIMEOUT=5m\nSFCDC_RECONNECT_MIN=250ms\nSFCDC_RECONNECT_MAX=1m\nSF_API_VERSION=v63.0\n".into(),
        ),
        (
            "rules-and-cache",
            1,
            "SFCDC_PROVISION_STATUSES=Approved, Reactivate\nSFCDC_ACTIVATION_BLOCKING=Activating,Activated\nSFCDC_RECONCILE_WINDOW=2h\nSFCDC_CACHE_TTL=10m\nSFCDC_INVALIDATION_WINDOW=250ms\nSFCDC_ORDER_READ_FIELDS=Id,Status,TotalAmount\nSFCDC_ADMIN_ADDR=off\nSFCDC_DATABASE_URL=postgres://sfcdc@127.0.0.1/sfcdc\n".into(),
        ),
        (
            "bad-values",
            1,
            "SFCDC_BATCH_SIZE=5000\nSFCDC_ADMIN_TOKEN=short\n".into(),
        ),
        ("not-a-file", 0, "just some words\n".into()),
    ];
    files
        .into_iter()
        .map(|(name, mode, text)| {
            let mut data = vec![mode];
            data.extend(text.into_bytes());
            (name.to_string(), data)
        })
        .collect()
}

/// Writes the seed corpus into `fuzz/corpus/`: `cargo test -p sfcdc-fuzz --test regressions -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the schemas or formats change"]
fn write_seed_corpus() {
    for (target, seeds) in [
        ("avro_decode", avro_seeds()),
        ("bitmap", bitmap_seeds()),
        ("rest_responses", rest_seeds()),
        ("config", config_seeds()),
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
        }
    }
}

#[test]
fn the_generated_seeds_pass_every_check() {
    // The generated seeds, not only the committed ones: a schema change that breaks them shows.
    for (body, seeds) in [
        (sfcdc_fuzz::avro_decode as fn(&[u8]), avro_seeds()),
        (sfcdc_fuzz::bitmap, bitmap_seeds()),
        (sfcdc_fuzz::rest_responses, rest_seeds()),
        (sfcdc_fuzz::config, config_seeds()),
    ] {
        for (_, data) in seeds {
            body(&data);
        }
    }
    // And the valid ones really are valid: every served schema decodes its seeds.
    let decoded = avro_seeds()
        .iter()
        .filter(|(name, data)| {
            let served = &sfcdc_fuzz::served_schemas()[usize::from(data[0])];
            let compiled = CompiledSchema::compile(&served.schema.id, &served.schema.json).unwrap();
            let ok = compiled
                .decode(&served.topic, &Bytes::copy_from_slice(&data[1..]))
                .is_ok();
            let broken =
                name.contains("corrupt") || name.contains("trunc") || name.contains("trailing");
            assert_eq!(ok, !broken, "{name}");
            ok
        })
        .count();
    assert!(decoded >= 12, "{decoded}");
}

fn change_type() -> impl Strategy<Value = ChangeType> {
    proptest::sample::select(ChangeType::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any header the emulator can write decodes to itself, with the changed fields named as
    /// they were given; and any corruption of the payload is an error or a decode, never a
    /// panic or a broken invariant.
    #[test]
    fn emulator_events_decode_to_what_was_encoded(
        entity in "[A-Za-z]{1,12}",
        ids in proptest::collection::vec("[0-9A-Za-z]{18}", 0..3),
        ct in change_type(),
        origin in ".{0,40}",
        seq in any::<i32>(),
        ts in any::<i64>(),
        commit in any::<i64>(),
        changed in proptest::sample::subsequence(vec!["Status", "Name", "BillingAddress.City", "ShippingAddress.Country", "TotalAmount", "LastModifiedDate"], 0..6),
        flip in any::<(usize, u8)>(),
    ) {
        let served = order();
        let s = &served.schema;
        let header = ChangeHeader {
            entity_name: entity.clone(),
            record_ids: ids.clone(),
            change_type: emulated(ct),
            change_origin: origin.clone(),
            transaction_key: "tx".into(),
            sequence_number: seq,
            commit_timestamp: ts,
            commit_number: commit,
            commit_user: "0055J000001D89MQAS".into(),
            changed: changed.iter().map(|c| c.to_string()).collect(),
            nulled: Vec::new(),
        };
        let payload = s.encode_change(&header, &BTreeMap::new());
        let compiled = CompiledSchema::compile(&s.id, &s.json).unwrap();
        let topic: Arc<str> = Arc::from("/data/OrderChangeEvent");
        let EventBody::Change(e) = compiled.decode(&topic, &Bytes::from(payload.clone())).unwrap() else {
            panic!("a change event");
        };
        prop_assert_eq!(&*e.entity, entity.as_str());
        prop_assert_eq!(e.record_ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(), ids.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(e.change_type, ct);
        prop_assert_eq!(&*e.change_origin, origin.as_str());
        prop_assert_eq!((e.sequence_number, e.commit_timestamp, e.commit_number), (seq, ts, commit));
        let names: BTreeSet<&str> = e.changed_fields.iter().map(|n| &**n).collect();
        prop_assert_eq!(names, changed.iter().copied().collect::<BTreeSet<_>>());
        // The same payload through the fuzz body (schema 0 is this one), whole and corrupted.
        let mut data = vec![0u8];
        data.extend(&payload);
        sfcdc_fuzz::avro_decode(&data);
        let (at, byte) = flip;
        let at = 1 + at % payload.len();
        data[at] ^= byte | 1;
        sfcdc_fuzz::avro_decode(&data);
        data.truncate(at);
        sfcdc_fuzz::avro_decode(&data);
    }

    /// Any set of Order fields survives an encode/decode round trip of its bitmap.
    #[test]
    fn order_bitmaps_round_trip(picks in proptest::collection::btree_set(0usize..200, 0..20)) {
        // The layout the subscriber derives from the served schema.
        let avro = apache_avro::Schema::parse_str(&order().schema.json).unwrap();
        let layout = sfcdc::decode::schema::field_layout(&avro).unwrap();
        let mut paths = BTreeSet::new();
        for p in picks {
            let i = p % layout.len();
            let name = layout.name(i).unwrap().to_string();
            match layout.children(i) {
                Some(children) if !children.is_empty() && p >= 100 => {
                    paths.insert(format!("{name}.{}", children[p % children.len()]));
                }
                _ => {
                    paths.insert(name);
                }
            }
        }
        let encoded = sfcdc::decode::bitmap::encode(&layout, paths.iter().map(String::as_str));
        let decoded = sfcdc::decode::bitmap::decode(&layout, &encoded).unwrap();
        let decoded: BTreeSet<String> = decoded.iter().map(|n| n.to_string()).collect();
        prop_assert_eq!(decoded, paths);
    }

    /// Arbitrary bytes never make any target panic (the fuzzers do this at scale).
    #[test]
    fn arbitrary_bytes_break_no_target(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        for (_, body) in TARGETS {
            body(&data);
        }
    }
}
