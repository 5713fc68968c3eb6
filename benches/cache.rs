//! A warm in-process cache hit: `OrderCache::order` for an order already loaded, with a source
//! that answers at once. Run with `cargo bench --bench cache`; `sfcdc bench --cache-only`
//! measures the same read (and the read API, and the REST calls saved) against the emulator.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use serde_json::{Value as Json, json};
use sfcdc::cache::{CacheConfig, OrderCache, OrderSource};
use sfcdc::rules::RulesConfig;
use sfcdc::salesforce::RestError;
use sfcdc::salesforce::rest::TextFields;
use sfcdc::sfid::SfId;
use sfcdc::telemetry::metrics::Metrics;

const ORDERS: u64 = 1_000;

/// Salesforce, answering at once: an order with two items.
struct Immediate;

impl OrderSource for Immediate {
    async fn orders(&self, ids: &[SfId]) -> Result<Vec<Json>, RestError> {
        Ok(ids
            .iter()
            .map(|id| {
                json!({
                    "attributes": {"type": "Order"},
                    "Id": id.as_str(),
                    "AccountId": "001000000000001AAA",
                    "Status": "Draft",
                    "PoNumber": "PO-1",
                    "TotalAmount": 58.5,
                    "OrderItems": {"totalSize": 2, "done": true, "records": [
                        {"attributes": {"type": "OrderItem"}, "Id": "802000000000001AAA", "Quantity": 1.0, "UnitPrice": 19.5},
                        {"attributes": {"type": "OrderItem"}, "Id": "802000000000002AAA", "Quantity": 2.0, "UnitPrice": 19.5}
                    ]},
                })
            })
            .collect())
    }

    async fn guard_orders(&self, ids: &[SfId]) -> Result<Vec<TextFields>, RestError> {
        let records = self.orders(ids).await?;
        Ok(records.iter().map(TextFields::from_json).collect())
    }

    async fn account_orders(&self, _account: &SfId, _limit: usize) -> Result<Vec<Json>, RestError> {
        Ok(Vec::new())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = OrderCache::new(
        Immediate,
        CacheConfig::defaults(),
        Arc::new(RulesConfig::defaults()),
        &Metrics::new(),
    );
    let ids: Vec<SfId> = (0..ORDERS)
        .map(|n| sfcdc::sfid::generate("801", "Bn", n))
        .collect();
    rt.block_on(async {
        for id in &ids {
            cache.order(id).await.unwrap();
        }
    });
    // A hit never waits: polling it once finishes it, so no executor sits in the figure.
    let hit = |id: &SfId| {
        cache
            .order(black_box(id))
            .now_or_never()
            .expect("a hit completes at once")
            .unwrap()
    };
    let mut g = c.benchmark_group("cache");
    g.bench_function("order hit, one key", |b| b.iter(|| hit(&ids[0])));
    let mut n = 0;
    g.bench_function("order hit, 1,000 keys in turn", |b| {
        b.iter(|| {
            n = (n + 1) % ids.len();
            hit(&ids[n])
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
