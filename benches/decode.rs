//! Decoding speed: sfcdc's compiled-plan decoder next to apache-avro's generic `Value` reader on
//! the same bytes, and bitmap expansion. Run with `cargo bench --bench decode`.

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sfcdc::decode::CompiledSchema;
use sfcdc::decode::bitmap;
use sfcdc::emulator::org::{Actor, now_ms};
use sfcdc::emulator::world::World;

/// A representative OrderChangeEvent: the Order schema with a dozen extra custom fields (about
/// 45 fields in all), an UPDATE touching about a quarter of them.
fn representative() -> (String, String, bytes::Bytes, Vec<String>) {
    let mut world = World::new(7);
    for i in 0..12 {
        world.add_order_field(&format!("Custom_{i:02}__c")).unwrap();
    }
    world.seed_sample_data(now_ms());
    let actor = Actor {
        user_id: world.org.user_id.to_string(),
        origin: "com/salesforce/api/rest/60.0;client=bench".into(),
    };
    let id = world
        .org
        .pick("Order", |r| r.text("Status") == Some("Draft"))
        .unwrap();
    let now = now_ms();
    let patch = serde_json::json!({
        "Status": "Approved", "Description": "Upgrade to the large plan", "PoNumber": "PO-99812",
        "BillingStreet": "1 Infinite Loop", "BillingCity": "Cupertino", "BillingPostalCode": "95014",
        "Custom_01__c": "alpha", "Custom_04__c": "beta", "Custom_07__c": "gamma", "Custom_10__c": "delta",
        "Activation_Status__c": "Pending"
    });
    let events = world
        .mutate(now, |org| {
            org.update("Order", &id, patch.as_object().unwrap(), &actor, now)
                .map(|c| ((), c))
        })
        .map(|()| world.bus.last("/data/OrderChangeEvent").unwrap())
        .unwrap();
    let schema = world.schema(&events.schema_id).unwrap();
    let changed = vec!["0x20000200".to_string(), "14-0x02".to_string()];
    (
        schema.id.clone(),
        schema.json.clone(),
        events.payload.clone(),
        changed,
    )
}

fn bench(c: &mut Criterion) {
    let (id, json, payload, changed) = representative();
    let compiled = CompiledSchema::compile(&id, &json).unwrap();
    let topic: Arc<str> = Arc::from("/data/OrderChangeEvent");
    let avro_schema = apache_avro::Schema::parse_str(&json).unwrap();
    let reader = apache_avro::reader::datum::GenericDatumReader::builder(&avro_schema)
        .build()
        .unwrap();
    eprintln!(
        "payload: {} bytes, {} top-level fields",
        payload.len(),
        compiled.layout().len()
    );

    let mut g = c.benchmark_group("decode_order_change_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sfcdc_compiled_plan", |b| {
        b.iter(|| {
            compiled
                .decode(&topic, std::hint::black_box(&payload))
                .unwrap()
        })
    });
    g.bench_function("apache_avro_value", |b| {
        b.iter(|| {
            reader
                .read_value(&mut &std::hint::black_box(&payload)[..])
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("bitmap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_changed_fields", |b| {
        b.iter(|| bitmap::decode(compiled.layout(), std::hint::black_box(&changed)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
