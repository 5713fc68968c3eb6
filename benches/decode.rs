//! Decoding speed: sfcdc's compiled-plan decoder (in full, and projected as ingest runs it) next
//! to apache-avro's generic `Value` reader on the same bytes, and bitmap expansion. Run with `cargo bench --bench decode`; the event, the
//! decoders and the paths are those of `sfcdc bench --report`, which times them over a mix of
//! events instead of one: this bench compiles that module of the binary
//! (src/bin/sfcdc/bench/decode.rs) as its own, so both time the same code.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sfcdc::decode::bitmap;

// The parts only `sfcdc bench --report` uses (its timing loop, its result types) are unused here,
// and so is its test module's import (its test runs with the binary's tests); the binary's build
// lints the file in full.
#[allow(dead_code, unused_imports)]
#[path = "../src/bin/sfcdc/bench/decode.rs"]
mod decode;

use decode::{Corpus, Decoders, avro_change, avro_value};

fn bench(c: &mut Criterion) {
    let corpus = Corpus::build(0).unwrap();
    let decoders = Decoders::new(&corpus).unwrap();
    let reader = decoders.reader().unwrap();
    let layout = decoders.compiled.layout();
    let payload = &corpus.representative;
    eprintln!(
        "payload: {} bytes, {} top-level fields",
        payload.len(),
        layout.len()
    );

    let mut g = c.benchmark_group("decode_order_change_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sfcdc_compiled_plan", |b| {
        b.iter(|| decoders.sfcdc(std::hint::black_box(payload)).unwrap())
    });
    g.bench_function("sfcdc_ingest_projection", |b| {
        b.iter(|| decoders.ingest(std::hint::black_box(payload)).unwrap())
    });
    g.bench_function("apache_avro_value", |b| {
        b.iter(|| avro_value(&reader, std::hint::black_box(payload)).unwrap())
    });
    g.bench_function("apache_avro_value_header_bitmaps", |b| {
        b.iter(|| avro_change(&reader, layout, std::hint::black_box(payload)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("bitmap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_changed_fields", |b| {
        b.iter(|| bitmap::decode(layout, std::hint::black_box(&corpus.changed)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
