//! Projected decoding against the full decode, on schema-shaped random payloads, intact and
//! damaged: the same kept values, and the same errors but for UTF-8 in skipped fields.

use apache_avro::Schema;
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::super::Value;
use super::*;

/// Every shape the decoder knows, nested and in unions, the header-like record first.
const SHAPES: &str = r#"{"type":"record","name":"S","namespace":"t","fields":[
    {"name":"h","type":{"type":"record","name":"H","fields":[
        {"name":"a","type":"string"},{"name":"ids","type":{"type":"array","items":"string"}}]}},
    {"name":"s","type":"string"},
    {"name":"ns","type":["null","string"]},
    {"name":"sn","type":["string","null"]},
    {"name":"i","type":"int"},
    {"name":"l","type":["null","long"]},
    {"name":"f","type":"float"},
    {"name":"d","type":["null","double"]},
    {"name":"b","type":"boolean"},
    {"name":"by","type":["null","bytes"]},
    {"name":"fx","type":{"type":"fixed","name":"F4","size":4}},
    {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y","Z"]}},
    {"name":"u","type":["null","string","long",{"type":"record","name":"Addr","fields":[
        {"name":"street","type":["null","string"]},{"name":"n","type":"int"}]}]},
    {"name":"a2","type":["null","Addr"]},
    {"name":"arr","type":{"type":"array","items":["null","string"]}},
    {"name":"an","type":{"type":"array","items":"null"}},
    {"name":"m","type":{"type":"map","values":"long"}},
    {"name":"mm","type":["null",{"type":"map","values":{"type":"array","items":"E"}}]},
    {"name":"dt","type":{"type":"int","logicalType":"date"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"geo","type":["null",{"type":"record","name":"Geo","fields":[
        {"name":"lat","type":["null","double"]},{"name":"city","type":["null","string"]},
        {"name":"code","type":["long","null"]},{"name":"n","type":["null","int"]},
        {"name":"at","type":["null","long"]},{"name":"ok","type":["null","boolean"]},
        {"name":"f","type":["null","float"]},{"name":"by","type":["null","bytes"]}]}]},
    {"name":"geo2","type":"Geo"},
    {"name":"last","type":["null","bytes"]}]}"#;

fn plan(json: &str) -> Plan {
    Plan::compile(&Schema::parse_str(json).unwrap()).unwrap()
}

fn zigzag(out: &mut Vec<u8>, v: i64) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Writes a random value of `op`: mostly valid, sometimes with invalid UTF-8 in a string;
/// strings and varints of every length class the projection's fast skips tell apart.
fn random_value(op: &Op, rng: &mut ChaCha8Rng, out: &mut Vec<u8>) {
    let text = |rng: &mut ChaCha8Rng, out: &mut Vec<u8>| {
        let s: Vec<u8> = match rng.random_range(0..16u8) {
            0 => vec![0xC3, 0x28],
            1 => "é✓ünï".as_bytes().to_vec(),
            // Longer than 63 bytes: a length of two varint bytes.
            2 => (0..rng.random_range(64..200usize))
                .map(|_| rng.random_range(b' '..=b'~'))
                .collect(),
            _ => (0..rng.random_range(0..40usize))
                .map(|_| rng.random_range(b' '..=b'~'))
                .collect(),
        };
        zigzag(out, s.len() as i64);
        out.extend(s);
    };
    let count = |rng: &mut ChaCha8Rng| rng.random_range(0..4i64);
    match op {
        Op::Null => {}
        Op::Boolean => out.push(rng.random_range(0..2u8)),
        Op::Int => zigzag(
            out,
            i64::from(rng.random::<i32>() >> rng.random_range(0..32u32)),
        ),
        Op::Long => zigzag(out, rng.random::<i64>() >> rng.random_range(0..64u32)),
        Op::Float => out.extend(rng.random::<[u8; 4]>()),
        Op::Double => out.extend(rng.random::<[u8; 8]>()),
        Op::Bytes => {
            let n = rng.random_range(0..20usize);
            zigzag(out, n as i64);
            out.extend((0..n).map(|_| rng.random::<u8>()));
        }
        Op::String => text(rng, out),
        Op::Fixed(n) => out.extend((0..*n).map(|_| rng.random::<u8>())),
        Op::Enum(symbols) => zigzag(out, rng.random_range(0..symbols.len() as i64)),
        Op::Union(branches) => {
            let i = rng.random_range(0..branches.len());
            zigzag(out, i as i64);
            random_value(&branches[i], rng, out);
        }
        Op::Nullable { null_index, inner } => {
            if rng.random::<bool>() {
                zigzag(out, *null_index);
            } else {
                zigzag(out, 1 - null_index);
                random_value(inner, rng, out);
            }
        }
        Op::Record(plan) => plan
            .fields
            .iter()
            .for_each(|f| random_value(&f.op, rng, out)),
        Op::Array(_) | Op::Map(_) => {
            for _ in 0..rng.random_range(0..3u8) {
                let n = 1 + count(rng);
                let mut block = Vec::new();
                for _ in 0..n {
                    match op {
                        Op::Array(item) => random_value(item, rng, &mut block),
                        Op::Map(item) => {
                            text(rng, &mut block);
                            random_value(item, rng, &mut block);
                        }
                        _ => unreachable!("a collection"),
                    }
                }
                // Half the blocks carry their byte size (a negative count).
                if rng.random::<bool>() {
                    zigzag(out, -n);
                    zigzag(out, block.len() as i64);
                } else {
                    zigzag(out, n);
                }
                out.extend(block);
            }
            zigzag(out, 0);
        }
    }
}

/// A random datum of `plan`, damaged `damage` times (a byte changed, inserted or removed, or
/// the datum cut short).
fn random_payload(plan: &Plan, seed: u64, damage: usize) -> Bytes {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    random_value(&Op::Record(plan.root().clone()), &mut rng, &mut out);
    damaged(out, &mut rng, damage)
}

/// `out` damaged `damage` times: a byte changed, inserted or removed, or the datum cut short.
fn damaged(mut out: Vec<u8>, rng: &mut ChaCha8Rng, damage: usize) -> Bytes {
    for _ in 0..damage {
        if out.is_empty() {
            break;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..4u8) {
            0 => out[at] = rng.random(),
            1 => out.insert(at, rng.random()),
            2 => {
                out.remove(at);
            }
            _ => out.truncate(at),
        }
    }
    Bytes::from(out)
}

/// Value equality with floats compared bit for bit, so that a NaN equals itself.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Double(x), Value::Double(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k, a), (l, b))| k == l && same(a, b))
        }
        (Value::Record(x), Value::Record(y)) => same_record(x, y),
        _ => a == b,
    }
}

fn same_record(x: &Record, y: &Record) -> bool {
    x.name() == y.name()
        && x.len() == y.len()
        && x.iter()
            .zip(y.iter())
            .all(|((n, a), (m, b))| n == m && same(a, b))
}

/// The projection's promise on one payload: with the full decode `Ok`, the same value for
/// every kept field and no other field; with it `Err`, the same error, unless that error is
/// invalid UTF-8 (which a skipped string is not checked for).
fn check_agrees(plan: &Plan, projection: &Projection, payload: &Bytes) -> Result<(), String> {
    let full = plan.decode(payload);
    let part = projection.decode(payload);
    match (&full, &part) {
        (Ok(f), Ok(p)) => {
            let kept: Vec<&str> = projection.root().field_names().collect();
            let got: Vec<&str> = p.iter().map(|(n, _)| n).collect();
            if kept != got {
                return Err(format!("fields {got:?}, expected {kept:?}"));
            }
            for (name, v) in p.iter() {
                if !f.get(name).is_some_and(|w| same(v, w)) {
                    return Err(format!(
                        "{name}: {v:?} projected, {:?} in full",
                        f.get(name)
                    ));
                }
            }
            Ok(())
        }
        (Err(a), Err(b)) if a == b => Ok(()),
        (Err(AvroError::Utf8(_)), _) => Ok(()),
        _ => Err(format!("full {full:?}, projected {part:?}")),
    }
}

fn keep_subset(plan: &Plan, mask: u64) -> Projection {
    let names: Vec<&str> = plan
        .root()
        .field_names()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 64)) != 0)
        .map(|(_, n)| n)
        .collect();
    Projection::compile(plan, names)
}

#[test]
fn keeps_the_named_fields_and_nothing_else() {
    let p = plan(SHAPES);
    let projection = Projection::compile(&p, ["s", "l", "u", "not_in_the_schema"]);
    let payload = (0..)
        .map(|seed| random_payload(&p, seed, 0))
        .find(|b| p.decode(b).is_ok())
        .unwrap();
    let full = p.decode(&payload).unwrap();
    let part = projection.decode(&payload).unwrap();
    assert_eq!(part.len(), 3);
    assert_eq!(part.name(), "t.S");
    for name in ["s", "l", "u"] {
        assert_eq!(part.get(name), full.get(name), "{name}");
    }
    assert_eq!(part.get("i"), None, "a skipped field is absent, not Null");
    assert_eq!(part.get("not_in_the_schema"), None);
}

#[test]
fn keeping_every_field_is_the_full_decode() {
    let p = plan(SHAPES);
    let all = Projection::compile(&p, p.root().field_names().collect::<Vec<_>>());
    let mut valid = 0;
    for seed in 0..500 {
        let payload = random_payload(&p, seed, seed as usize % 3);
        let agree = match (all.decode(&payload), p.decode(&payload)) {
            (Ok(a), Ok(b)) => same_record(&a, &b),
            (a, b) => a == b,
        };
        assert!(agree, "seed {seed}");
        valid += usize::from(p.decode(&payload).is_ok());
    }
    // The generator makes valid data unless told to damage it: both outcomes are exercised.
    assert!((100..400).contains(&valid), "{valid} of 500 decode");
}

#[test]
fn records_of_nullable_fields_are_skipped_as_runs() {
    let p = plan(SHAPES);
    let none = Projection::compile(&p, std::iter::empty());
    // `Geo`, behind a union and plain; `Addr` has a plain `int`, so it is skipped in general.
    assert_eq!(none.records.len(), 2);
    let geo = |name: &str| none.skips[p.root().position(name).unwrap()].fast;
    assert!(matches!(geo("geo"), Fast::Record(0)));
    assert!(matches!(geo("geo2"), Fast::Record(1)));
    assert_eq!(geo("a2"), Fast::None);
    let valid = (0..300)
        .map(|seed| random_payload(&p, seed, 0))
        .filter(|b| none.decode(b).is_ok())
        .count();
    assert!(valid > 100, "{valid} of 300 decode");
}

#[test]
fn utf8_is_checked_in_kept_strings_only() {
    let p = plan(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}"#,
    );
    let bad = Bytes::from_static(&[0x04, 0xC3, 0x28, 0x02, b'x']);
    assert_eq!(p.decode(&bad), Err(AvroError::Utf8(0)));
    let keep_a = Projection::compile(&p, ["a"]);
    assert_eq!(keep_a.decode(&bad), Err(AvroError::Utf8(0)));
    let keep_b = Projection::compile(&p, ["b"]);
    let r = keep_b.decode(&bad).unwrap();
    assert_eq!(r.get("b"), Some(&Value::String("x".into())));
}

#[test]
fn structural_faults_in_skipped_fields_fail_as_in_full() {
    let p = plan(SHAPES);
    let none = Projection::compile(&p, std::iter::empty());
    let payload = (0..)
        .map(|seed| random_payload(&p, seed, 0))
        .find(|b| p.decode(b).is_ok() && b.len() > 40)
        .unwrap();
    assert!(none.decode(&payload).is_ok());
    for cut in 0..payload.len() {
        let short = payload.slice(..cut);
        assert_eq!(none.decode(&short), p.decode(&short), "cut at {cut}");
        assert!(none.decode(&short).is_err());
    }
    let mut long = payload.to_vec();
    long.push(0);
    assert_eq!(none.decode(&Bytes::from(long)), Err(AvroError::Trailing(1)));
    // A huge zero-width array is refused without spinning, skipped or not.
    let p = plan(
        r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
    );
    let mut buf = Vec::new();
    zigzag(&mut buf, i64::MAX / 2);
    let none = Projection::compile(&p, std::iter::empty());
    assert!(matches!(
        none.decode(&Bytes::from(buf)),
        Err(AvroError::TooLarge(0))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn projection_agrees_with_the_full_decode(
        seed in any::<u64>(),
        mask in any::<u64>(),
        damage in prop_oneof![Just(0usize), 1..4usize],
    ) {
        let p = plan(SHAPES);
        let projection = keep_subset(&p, mask);
        let payload = random_payload(&p, seed, damage);
        if let Err(e) = check_agrees(&p, &projection, &payload) {
            prop_assert!(false, "{e}");
        }
    }
}

/// A change event schema with the header Salesforce sends, but with `changeType`'s symbols in
/// another order and one that is no change type, a `long` sequence number (which can exceed
/// an `int`) and an extra header field; then a body with a compound field.
const CHANGE: &str = r#"{"type":"record","name":"OrderChangeEvent","namespace":"com.sforce.eventbus","fields":[
    {"name":"ChangeEventHeader","type":{"type":"record","name":"ChangeEventHeader","fields":[
        {"name":"entityName","type":"string"},
        {"name":"recordIds","type":{"type":"array","items":"string"}},
        {"name":"changeType","type":{"type":"enum","name":"ChangeType","symbols":["UPDATE","CREATE","OTHER","DELETE","UNDELETE","GAP_CREATE","GAP_UPDATE","GAP_DELETE","GAP_UNDELETE","GAP_OVERFLOW"]}},
        {"name":"changeOrigin","type":"string"},
        {"name":"transactionKey","type":"string"},
        {"name":"sequenceNumber","type":"long"},
        {"name":"extra","type":["null","string"]},
        {"name":"commitTimestamp","type":"long"},
        {"name":"commitNumber","type":"long"},
        {"name":"commitUser","type":"string"},
        {"name":"nulledFields","type":{"type":"array","items":"string"}},
        {"name":"diffFields","type":{"type":"array","items":"string"}},
        {"name":"changedFields","type":{"type":"array","items":"string"}}]}},
    {"name":"Name","type":["null","string"]},
    {"name":"BillingAddress","type":["null",{"type":"record","name":"Address","fields":[
        {"name":"Street","type":["null","string"]},{"name":"City","type":["null","string"]}]}]},
    {"name":"Status","type":["null","string"]},
    {"name":"Tags","type":{"type":"array","items":"string"}},
    {"name":"CreatedDate","type":["null","long"]}]}"#;

/// The same header with the shapes of the reference schema (`int` sequence number, the nine
/// symbols in order, no extra field).
const CHANGE_PLAIN: &str = r#"{"type":"record","name":"E","namespace":"com.sforce.eventbus","fields":[
    {"name":"ChangeEventHeader","type":{"type":"record","name":"ChangeEventHeader","fields":[
        {"name":"entityName","type":"string"},{"name":"recordIds","type":{"type":"array","items":"string"}},
        {"name":"changeType","type":{"type":"enum","name":"ChangeType","symbols":["CREATE","UPDATE","DELETE","UNDELETE","GAP_CREATE","GAP_UPDATE","GAP_DELETE","GAP_UNDELETE","GAP_OVERFLOW"]}},
        {"name":"changeOrigin","type":"string"},{"name":"transactionKey","type":"string"},{"name":"sequenceNumber","type":"int"},
        {"name":"commitTimestamp","type":"long"},{"name":"commitNumber","type":"long"},{"name":"commitUser","type":"string"},
        {"name":"nulledFields","type":{"type":"array","items":"string"}},{"name":"diffFields","type":{"type":"array","items":"string"}},
        {"name":"changedFields","type":{"type":"array","items":"string"}}]}},
    {"name":"Status","type":["null","string"]},
    {"name":"BillingAddress","type":["null",{"type":"record","name":"Address","fields":[
        {"name":"Street","type":["null","string"]},{"name":"City","type":["null","string"]}]}]}]}"#;

/// Writes a random change event of `plan`: the header's bitmaps drawn from well-formed and
/// malformed elements, its other fields and the body as [`random_value`] makes them.
fn random_change(plan: &Plan, seed: u64, damage: usize) -> Bytes {
    const ELEMENTS: [&str; 12] = [
        "0x02",
        "0x0E",
        "0x20000200",
        "0x0400000000",
        "2-0x03",
        "2-0x1",
        "99-0x01",
        "1-0x01",
        "Name",
        "0x",
        "0xZZ",
        "x-0x01",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for (i, f) in plan.root().fields.iter().enumerate() {
        let Op::Record(header) = &f.op else {
            random_value(&f.op, &mut rng, &mut out);
            continue;
        };
        assert_eq!(i, 0, "the header comes first");
        for h in &header.fields {
            match &*h.name {
                "nulledFields" | "diffFields" | "changedFields" => {
                    let n = rng.random_range(0..3usize);
                    zigzag(&mut out, n as i64);
                    for _ in 0..n {
                        // Mostly well formed, so that whole events decode.
                        let e = ELEMENTS[rng.random_range(0..ELEMENTS.len())];
                        let e = if rng.random_range(0..4u8) == 0 {
                            e
                        } else {
                            ELEMENTS[0]
                        };
                        zigzag(&mut out, e.len() as i64);
                        out.extend(e.as_bytes());
                    }
                    if n > 0 {
                        zigzag(&mut out, 0);
                    }
                }
                "sequenceNumber" if h.op == Op::Long => zigzag(
                    &mut out,
                    match rng.random_range(0..4u8) {
                        0 => i64::from(i32::MAX) + 1,
                        _ => rng.random_range(0..1000),
                    },
                ),
                _ => random_value(&h.op, &mut rng, &mut out),
            }
        }
    }
    damaged(out, &mut rng, damage)
}

/// The typed header's promise on one payload: the same event, or the same error, as the
/// header decoded as a generic record, in the full decode and in the projection.
fn check_header(json: &str, keep: &[&str], payload: &Bytes) -> Result<&'static str, String> {
    use crate::decode::{CompiledSchema, DecodeError};
    let typed = CompiledSchema::compile("s", json)
        .unwrap()
        .with_projection(keep);
    let generic = CompiledSchema::compile("s", json)
        .unwrap()
        .with_projection(keep)
        .with_generic_header();
    assert!(typed.has_typed_header() && !generic.has_typed_header());
    let topic: std::sync::Arc<str> = "/data/OrderChangeEvent".into();
    let full = typed.decode(&topic, payload);
    for (what, a, b) in [
        ("full", &full, &generic.decode(&topic, payload)),
        (
            "projected",
            &typed.decode_projected(&topic, payload),
            &generic.decode_projected(&topic, payload),
        ),
    ] {
        // Debug, not ==, so that a NaN compares equal to itself.
        if format!("{a:?}") != format!("{b:?}") {
            return Err(format!("{what}: typed {a:?}, generic {b:?}"));
        }
    }
    Ok(match full {
        Ok(_) => "ok",
        Err(DecodeError::Header(_)) => "header",
        Err(DecodeError::Bitmap(_)) => "bitmap",
        Err(DecodeError::Payload(_)) => "payload",
        Err(_) => "other",
    })
}

#[test]
fn the_typed_header_decodes_as_the_generic_one() {
    let mut outcomes = std::collections::BTreeMap::new();
    for (json, keep) in [
        (CHANGE, &["Status"][..]),
        (CHANGE_PLAIN, &["BillingAddress"][..]),
    ] {
        let p = plan(json);
        for seed in 0..1500 {
            let payload = random_change(&p, seed, seed as usize % 3);
            match check_header(json, keep, &payload) {
                Ok(kind) => *outcomes.entry(kind).or_insert(0) += 1,
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
    }
    // Every outcome is exercised: events that decode, and each kind of failure.
    for kind in ["ok", "header", "bitmap", "payload"] {
        assert!(outcomes.get(kind).is_some_and(|&n| n > 20), "{outcomes:?}");
    }
}

#[test]
fn a_header_of_another_shape_decodes_generically() {
    use crate::decode::CompiledSchema;
    // A nullable entityName, a changeType given as a string, a header behind a union.
    for (from, to) in [
        (
            r#"{"name":"entityName","type":"string"}"#,
            r#"{"name":"entityName","type":["null","string"]}"#,
        ),
        (
            r#""type":{"type":"enum","name":"ChangeType","symbols":["CREATE","UPDATE","DELETE","UNDELETE","GAP_CREATE","GAP_UPDATE","GAP_DELETE","GAP_UNDELETE","GAP_OVERFLOW"]}"#,
            r#""type":"string""#,
        ),
        (
            r#"{"name":"ChangeEventHeader","type":{"type":"record""#,
            r#"{"name":"ChangeEventHeader","type":["null",{"type":"record""#,
        ),
    ] {
        let mut json = CHANGE_PLAIN.replace(from, to);
        if to.ends_with(r#"["null",{"type":"record""#) {
            json = json.replace(r#""string"}}]}},"#, r#""string"}}]}]},"#);
        }
        assert_ne!(json, CHANGE_PLAIN);
        let s = CompiledSchema::compile("s", &json).unwrap();
        assert!(s.is_change_event() && !s.has_typed_header(), "{json}");
    }
    let s = CompiledSchema::compile("s", CHANGE_PLAIN).unwrap();
    assert!(s.has_typed_header());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn typed_headers_agree_with_generic_ones(
        seed in any::<u64>(),
        damage in prop_oneof![Just(0usize), 1..4usize],
    ) {
        let p = plan(CHANGE);
        let payload = random_change(&p, seed, damage);
        if let Err(e) = check_header(CHANGE, &["Name", "BillingAddress"], &payload) {
            prop_assert!(false, "{e}");
        }
    }
}
