//! sfcdc against the emulator with nothing shared but the wire: the emulator's own encoders
//! (bitmaps, Avro payloads, ids) checked against sfcdc's decoders on random inputs, and a check
//! of the dependency graph that the emulator crate cannot reach sfcdc, so a bug on one side
//! cannot be hidden by the same code on the other.
//!
//! The two crates name none of each other's types: where a value crosses, it crosses as text
//! (a change type by its symbol, an id by its characters), as it would on the wire.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use sfcdc::decode::avro::Value;
use sfcdc::decode::{CompiledSchema, EventBody};
use sfcdc_emulator::model::{self, ADDRESS_COMPONENTS, FieldType};
use sfcdc_emulator::schema::{ChangeHeader, ChangeType, EventSchema, FieldValue};

/// A random schema layout: per top-level field, `None` for a scalar or the number of nested
/// fields of a compound one.
fn layouts() -> impl Strategy<Value = Vec<Option<usize>>> {
    proptest::collection::vec(
        prop_oneof![3 => Just(None), 1 => (1usize..20).prop_map(Some)],
        1..80,
    )
}

/// The same layout built by each side: the emulator's encoder layout and sfcdc's decoder layout.
fn both_layouts(
    shape: &[Option<usize>],
) -> (
    sfcdc_emulator::bitmap::FieldLayout,
    sfcdc::decode::bitmap::FieldLayout,
) {
    let mut emulated = sfcdc_emulator::bitmap::FieldLayout::new();
    let mut product = sfcdc::decode::bitmap::FieldLayout::new();
    for (i, children) in shape.iter().enumerate() {
        let children = children.map(|n| (0..n).map(|c| format!("C{c}")).collect::<Vec<_>>());
        emulated.push(format!("F{i}"), children.clone());
        product.push(format!("F{i}"), children);
    }
    (emulated, product)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any set of field paths, written by the emulator's bitmap encoder, reads back through
    /// sfcdc's bitmap decoder as the same names: top-level fields in schema order, then nested
    /// ones by parent and position.
    #[test]
    fn emulator_bitmaps_decode_to_the_same_names(
        shape in layouts(),
        picks in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 0..40),
    ) {
        let (emulated, product) = both_layouts(&shape);
        let mut top = BTreeSet::new();
        let mut nested = BTreeSet::new();
        for (f, c, go_inside) in picks {
            let f = f % shape.len();
            match shape[f] {
                Some(n) if go_inside => {
                    nested.insert((f, c % n));
                }
                _ => {
                    top.insert(f);
                }
            }
        }
        let paths: Vec<String> = top
            .iter()
            .map(|f| format!("F{f}"))
            .chain(nested.iter().map(|(f, c)| format!("F{f}.C{c}")))
            .collect();
        // The emulator is handed the paths in no particular order.
        let encoded = sfcdc_emulator::bitmap::encode(&emulated, paths.iter().rev().map(String::as_str));
        prop_assert_eq!(encoded.is_empty(), paths.is_empty());
        let decoded = sfcdc::decode::bitmap::decode(&product, &encoded).expect("the emulator's bitmaps decode");
        let decoded: Vec<String> = decoded.iter().map(|n| n.to_string()).collect();
        prop_assert_eq!(decoded, paths);
    }
}

/// A value of the type a field is written as, from a seed and a text.
fn value_of(ftype: FieldType, seed: u64, text: &str) -> FieldValue {
    match ftype {
        FieldType::Id
        | FieldType::Reference
        | FieldType::Text
        | FieldType::Picklist
        | FieldType::TextArea => FieldValue::Str(text.to_owned()),
        FieldType::DateTime | FieldType::Date => FieldValue::Long(seed as i64),
        FieldType::Int => FieldValue::Long(i64::from(seed as i32)),
        FieldType::Double | FieldType::Currency => FieldValue::Double((seed as i64) as f64 / 100.0),
        FieldType::Boolean => FieldValue::Bool(seed.is_multiple_of(2)),
        FieldType::Address => unreachable!("addresses are written by component"),
    }
}

/// Whether sfcdc decoded the value the emulator wrote.
fn same_value(decoded: Option<&Value>, written: &FieldValue, ftype: FieldType) -> bool {
    match (decoded, written) {
        (Some(Value::Null), FieldValue::Null) => true,
        (Some(Value::String(d)), FieldValue::Str(w)) => d.as_str() == w,
        (Some(Value::Int(d)), FieldValue::Long(w)) => {
            ftype == FieldType::Int && i64::from(*d) == *w
        }
        (Some(Value::Long(d)), FieldValue::Long(w)) => d == w,
        (Some(Value::Double(d)), FieldValue::Double(w)) => d.to_bits() == w.to_bits(),
        (Some(Value::Boolean(d)), FieldValue::Bool(w)) => d == w,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any Order change event the emulator's encoder writes (any header, any set of changed,
    /// nulled and untouched fields, addresses included) decodes through sfcdc's decoder to the
    /// same header, the same changed and nulled field names, and the same field values, with
    /// every untouched field null.
    #[test]
    fn emulator_order_events_decode_to_the_same_header_and_fields(
        ct in 0usize..ChangeType::ALL.len(),
        ids in proptest::collection::vec("[0-9A-Za-z]{18}", 0..3),
        origin in ".{0,40}",
        tx in "[0-9a-f-]{0,36}",
        seq in any::<i32>(),
        ts in any::<i64>(),
        commit in any::<i64>(),
        user in "[0-9A-Za-z]{18}",
        picks in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u64>(), ".{0,20}", any::<bool>()), 0..25),
    ) {
        let def = model::order();
        let fields: Vec<&model::FieldDef> = def.fields.iter().filter(|f| f.cdc).collect();
        let schema = EventSchema::change_event(&def);
        // What the event carries: path → (value, the field's type).
        let mut written: BTreeMap<String, (FieldValue, FieldType)> = BTreeMap::new();
        for (f, c, seed, text, null) in picks {
            let field = fields[f % fields.len()];
            let (path, ftype) = if field.ftype == FieldType::Address {
                let (component, _, t) = ADDRESS_COMPONENTS[c % ADDRESS_COMPONENTS.len()];
                (format!("{}.{component}", field.name), t)
            } else {
                (field.name.clone(), field.ftype)
            };
            let value = if null { FieldValue::Null } else { value_of(ftype, seed, &text) };
            written.insert(path, (value, ftype));
        }
        let change_type = ChangeType::ALL[ct];
        let header = ChangeHeader {
            entity_name: "Order".into(),
            record_ids: ids.clone(),
            change_type,
            change_origin: origin.clone(),
            transaction_key: tx.clone(),
            sequence_number: seq,
            commit_timestamp: ts,
            commit_number: commit,
            commit_user: user.clone(),
            changed: written.keys().cloned().collect(),
            nulled: written.iter().filter(|(_, (v, _))| v.is_null()).map(|(p, _)| p.clone()).collect(),
        };
        let values: BTreeMap<String, FieldValue> = written.iter().map(|(p, (v, _))| (p.clone(), v.clone())).collect();
        let payload = schema.encode_change(&header, &values);

        let compiled = CompiledSchema::compile(&schema.id, &schema.json).expect("the served schema compiles");
        let topic: Arc<str> = Arc::from("/data/OrderChangeEvent");
        let EventBody::Change(e) = compiled.decode(&topic, &Bytes::from(payload)).expect("the emulator's payload decodes") else {
            panic!("a change event");
        };
        prop_assert_eq!(e.entity.as_str(), "Order");
        prop_assert_eq!(e.record_ids.iter().map(|i| i.to_string()).collect::<Vec<_>>(), ids);
        prop_assert_eq!(e.change_type.symbol(), change_type.symbol());
        prop_assert_eq!(e.change_origin.as_str(), origin.as_str());
        prop_assert_eq!(e.transaction_key.as_str(), tx.as_str());
        prop_assert_eq!((e.sequence_number, e.commit_timestamp, e.commit_number), (seq, ts, commit));
        prop_assert_eq!(e.commit_user.as_str(), user.as_str());
        let names = |fs: &[sfcdc::decode::bitmap::FieldName]| fs.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        prop_assert_eq!(names(&e.changed_fields), header.changed.iter().cloned().collect::<BTreeSet<_>>());
        prop_assert_eq!(names(&e.nulled_fields), header.nulled.iter().cloned().collect::<BTreeSet<_>>());
        prop_assert!(e.diff_fields.is_empty());
        for field in &fields {
            let decoded = e.fields.get(&field.name);
            if field.ftype == FieldType::Address {
                let prefix = format!("{}.", field.name);
                let components: Vec<(&str, &(FieldValue, FieldType))> = written
                    .iter()
                    .filter_map(|(p, v)| p.strip_prefix(&prefix).map(|c| (c, v)))
                    .collect();
                if components.is_empty() {
                    prop_assert_eq!(decoded, Some(&Value::Null), "{}", field.name);
                    continue;
                }
                let Some(Value::Record(address)) = decoded else {
                    panic!("{} should be a record: {decoded:?}", field.name);
                };
                for (component, _, t) in ADDRESS_COMPONENTS {
                    let expected = components
                        .iter()
                        .find(|(c, _)| *c == component)
                        .map_or(&FieldValue::Null, |(_, (v, _))| v);
                    prop_assert!(same_value(address.get(component), expected, t), "{}.{component}: {:?} ≠ {expected:?}", field.name, address.get(component));
                }
            } else {
                let expected = written.get(&field.name).map_or(&FieldValue::Null, |(v, _)| v);
                prop_assert!(same_value(decoded, expected, field.ftype), "{}: {decoded:?} ≠ {expected:?}", field.name);
            }
        }
    }

    /// Every id the emulator issues is a valid id to sfcdc, with the same 18-character form;
    /// and both sides agree on the 18-character form (or the refusal) of any text.
    #[test]
    fn emulator_ids_are_the_ids_sfcdc_reads(
        prefix in "[0-9A-Za-z]{3}",
        instance in "[0-9A-Za-z]{2}",
        n in any::<u64>(),
        text in "[0-9A-Za-z]{15}|.{0,20}",
    ) {
        let issued = sfcdc_emulator::ids::generate(&prefix, &instance, n);
        let read = sfcdc::sfid::SfId::parse(issued.as_str()).expect("sfcdc reads the emulator's id");
        prop_assert_eq!(read.as_str(), issued.as_str());
        let again = sfcdc::sfid::SfId::parse(read.short()).expect("the 15-character form reads");
        prop_assert_eq!(again.as_str(), issued.as_str());
        prop_assert_eq!(
            sfcdc_emulator::ids::to_18(&text).map_err(|e| e.to_string()),
            sfcdc::sfid::to_18(&text).map_err(|e| e.to_string())
        );
    }
}

/// Changes made through the emulated org (not its encoder alone) read back through sfcdc.
mod round_trip {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use proptest::prelude::*;
    use sfcdc::decode::{CompiledSchema, EventBody};
    use sfcdc_emulator::org::Actor;
    use sfcdc_emulator::world::World;

    /// Writable Order fields and address components a change can touch, with a value for each.
    const FIELDS: [(&str, &str, &str); 14] = [
        ("Status", "Status", "Approved"),
        ("Description", "Description", "changed"),
        ("Name", "Name", "renamed"),
        ("PoNumber", "PoNumber", "PO-7"),
        ("Type", "Type", "Renewal"),
        ("OrderReferenceNumber", "OrderReferenceNumber", "REF-1"),
        ("Activation_Status__c", "Activation_Status__c", "Activating"),
        ("WHMCS_Order_ID__c", "WHMCS_Order_ID__c", "WH-77"),
        ("BillingStreet", "BillingAddress.Street", "1 Main St"),
        ("BillingCity", "BillingAddress.City", "Derby"),
        ("BillingPostalCode", "BillingAddress.PostalCode", "DE1 1AA"),
        ("ShippingCity", "ShippingAddress.City", "Hull"),
        ("ShippingCountryCode", "ShippingAddress.CountryCode", "GB"),
        ("ShippingLatitude", "ShippingAddress.Latitude", "53.7"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any set of changes, encoded by the emulator and decoded by sfcdc, names exactly the
        /// fields that changed (plus LastModifiedDate), and nulled ones as nulled.
        #[test]
        fn changed_and_nulled_fields_survive_encoding(picks in proptest::collection::vec((0usize..FIELDS.len(), any::<bool>()), 0..10), extra in 0usize..4) {
            let mut world = World::new(3);
            for i in 0..extra {
                world.add_order_field(&format!("Extra_{i}__c")).unwrap();
            }
            world.seed_sample_data(1_700_000_000_000);
            let actor = Actor { user_id: world.org.user_id.to_string(), origin: "test".into() };
            let id = world.org.pick("Order", |r| r.text("Status") == Some("Draft")).unwrap();
            // First set every picked field, so that nulling it afterwards is a real change.
            let mut set = serde_json::Map::new();
            for (i, _) in &picks {
                let (flat, _, v) = FIELDS[*i];
                let value = if flat == "ShippingLatitude" { serde_json::json!(53.7) } else { serde_json::json!(v) };
                set.insert(flat.into(), value);
            }
            let now = 1_700_000_000_000;
            world.mutate(now, |o| o.update("Order", &id, &set, &actor, now).map(|c| ((), c))).unwrap();
            let mut change = serde_json::Map::new();
            let mut expected_changed = BTreeSet::from(["LastModifiedDate".to_string()]);
            let mut expected_nulled = BTreeSet::new();
            for (i, null) in &picks {
                let (flat, path, _) = FIELDS[*i];
                if *null {
                    change.insert(flat.into(), serde_json::Value::Null);
                    expected_nulled.insert(path.to_string());
                    expected_changed.insert(path.to_string());
                } else {
                    expected_nulled.remove(path);
                    expected_changed.remove(path);
                    change.remove(flat);
                }
            }
            let later = now + 1000;
            world.mutate(later, |o| o.update("Order", &id, &change, &actor, later).map(|c| ((), c))).unwrap();
            let event = world.bus.last("/data/OrderChangeEvent").unwrap();
            let schema = world.schema(&event.schema_id).unwrap();
            let compiled = CompiledSchema::compile(&schema.id, &schema.json).unwrap();
            let EventBody::Change(c) = compiled.decode(&Arc::from("/data/OrderChangeEvent"), &event.payload).unwrap() else { panic!() };
            let changed: BTreeSet<String> = c.changed_fields.iter().map(|f| f.to_string()).collect();
            let nulled: BTreeSet<String> = c.nulled_fields.iter().map(|f| f.to_string()).collect();
            prop_assert_eq!(changed, expected_changed);
            prop_assert_eq!(nulled, expected_nulled);
        }
    }
}

/// The host's target triple, as `rustc -vV` reports it.
fn host_triple() -> String {
    let out = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// The emulator crate cannot reach sfcdc: none of its declared dependencies (normal, dev or
/// build, on any target) is an sfcdc package, and nothing in the resolved dependency graph leads
/// from it to sfcdc. Reads `cargo metadata` offline, with the graph filtered to the host (the
/// full graph would need every other platform's crates downloaded).
#[test]
fn the_emulator_crate_cannot_reach_sfcdc() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let package = |name: &str| {
        meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("package {name} in the workspace"))
            .clone()
    };
    let (emulator, product) = (package("sfcdc-emulator"), package("sfcdc"));

    let declared: Vec<&str> = emulator["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(
        !declared.is_empty(),
        "the emulator declares its dependencies"
    );
    assert!(
        declared.iter().all(|d| !d.starts_with("sfcdc")),
        "sfcdc-emulator declares a dependency on an sfcdc crate: {declared:?}"
    );

    // Every package the resolved graph reaches from `from`, dev and build dependencies included.
    let nodes: BTreeMap<&str, Vec<&str>> = meta["resolve"]["nodes"]
        .as_array()
        .expect("a resolved graph")
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter_map(|d| d["pkg"].as_str())
                .collect();
            (n["id"].as_str().expect("id"), deps)
        })
        .collect();
    let reachable = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(id) = todo.pop() {
            for dep in nodes.get(id.as_str()).into_iter().flatten() {
                if seen.insert(dep.to_string()) {
                    todo.push(dep.to_string());
                }
            }
        }
        seen
    };
    let (emulator_id, product_id) = (
        emulator["id"].as_str().expect("id"),
        product["id"].as_str().expect("id"),
    );
    // The walk sees edges: sfcdc does use the emulator (for `sfcdc emulator`, demo, bench).
    assert!(reachable(product_id).contains(emulator_id));
    let from_emulator = reachable(emulator_id);
    assert!(
        !from_emulator.contains(product_id),
        "sfcdc-emulator reaches sfcdc through its dependencies"
    );
}
