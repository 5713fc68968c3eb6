//! The cache against a counting fake source (the narrow seam); the same behaviour against the
//! emulator's REST API is in `tests/it/cache.rs`.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::invalidate::Invalidator;
use super::*;
use crate::rules::Invalidation;

const ORDER: &str = "801000000000001AAA";
const OTHER: &str = "801000000000002AAA";
const ACCOUNT: &str = "001000000000001AAA";

fn id(s: &str) -> SfId {
    SfId::parse(s).unwrap()
}

/// A source whose loads count, can be held at a gate, and fail while told to.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    ids_asked: Mutex<Vec<usize>>,
    /// Loads of guard fields alone.
    guards_asked: AtomicUsize,
    gate: Option<Arc<Semaphore>>,
    fail: AtomicBool,
    status: Mutex<String>,
}

impl Fake {
    fn gated() -> (Fake, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        (
            Fake {
                gate: Some(gate.clone()),
                ..Fake::default()
            },
            gate,
        )
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn pass(&self) -> Result<(), RestError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(g) = &self.gate {
            g.acquire().await.expect("gate open").forget();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(RestError::Api {
                status: 503,
                code: "SERVER_UNAVAILABLE".into(),
                message: "try later".into(),
            });
        }
        Ok(())
    }

    fn record(&self, order: &SfId) -> Json {
        let status = self.status.lock().unwrap().clone();
        json!({
            "attributes": {"type": "Order"},
            "Id": order.as_str(),
            "AccountId": ACCOUNT,
            "Status": if status.is_empty() { "Draft" } else { status.as_str() },
            "Activation_Status__c": null,
            "WHMCS_Order_ID__c": null,
            "OrderItems": {"totalSize": 1, "done": true, "records": [
                {"attributes": {"type": "OrderItem"}, "Id": "802000000000001AAA", "Quantity": 2.0}
            ]},
        })
    }
}

impl OrderSource for Arc<Fake> {
    async fn orders(&self, ids: &[SfId]) -> Result<Vec<Json>, RestError> {
        self.ids_asked.lock().unwrap().push(ids.len());
        // What Salesforce read, before the answer travels back (through the gate).
        let records = ids
            .iter()
            .filter(|i| i.as_str() != OTHER)
            .map(|i| self.record(i))
            .collect();
        self.pass().await?;
        Ok(records)
    }

    async fn guard_orders(&self, ids: &[SfId]) -> Result<Vec<Json>, RestError> {
        self.guards_asked.fetch_add(1, Ordering::SeqCst);
        self.orders(ids).await
    }

    async fn account_orders(&self, _: &SfId, _: usize) -> Result<Vec<Json>, RestError> {
        self.pass().await?;
        Ok(vec![self.record(&id(ORDER))])
    }
}

fn cache(fake: &Arc<Fake>, config: CacheConfig) -> (Arc<OrderCache<Arc<Fake>>>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    (
        Arc::new(OrderCache::new(
            fake.clone(),
            config,
            Arc::new(RulesConfig::from_env(&Env::default()).unwrap()),
            &metrics,
        )),
        metrics,
    )
}

fn count(metrics: &Metrics, name: &str, cache: &str) -> u64 {
    let family = match name {
        "hits" => "sfcdc_cache_hits_total",
        "misses" => "sfcdc_cache_misses_total",
        "coalesced" => "sfcdc_cache_coalesced_waits_total",
        "loads" => "sfcdc_cache_loads_total",
        "load_errors" => "sfcdc_cache_load_errors_total",
        "invalidations" => "sfcdc_cache_invalidations_total",
        other => panic!("no counter {other}"),
    };
    metrics.value(family, &[("cache", cache)]) as u64
}

/// Lets every task spawned so far run until it blocks.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_load() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, metrics) = cache(&fake, CacheConfig::defaults());
    let readers: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.order(&id(ORDER)).await })
        })
        .collect();
    settle().await;
    gate.add_permits(1);
    let mut entries = Vec::new();
    for r in readers {
        entries.push(r.await.unwrap().expect("loads"));
    }
    assert_eq!(fake.calls(), 1, "one load for 1,000 readers");
    assert!(entries.iter().all(|e| Arc::ptr_eq(e, &entries[0])));
    let e = &entries[0];
    assert_eq!(e.record.as_ref().unwrap()["Status"], "Draft");
    assert!(!e.record.as_ref().unwrap().contains_key("attributes"));
    assert_eq!(e.items.len(), 1);
    assert_eq!(count(&metrics, "loads", "order"), 1);
    assert_eq!(
        count(&metrics, "coalesced", "order") + count(&metrics, "hits", "order") + 1,
        1000
    );
    assert!(count(&metrics, "coalesced", "order") > 0);
    // And the next read is a hit.
    cache.order(&id(ORDER)).await.unwrap();
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_failed_load_fails_every_waiter_and_is_not_cached() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    fake.fail.store(true, Ordering::SeqCst);
    let (cache, metrics) = cache(&fake, CacheConfig::defaults());
    let readers: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.order(&id(ORDER)).await })
        })
        .collect();
    settle().await;
    gate.add_permits(1);
    let mut errors = Vec::new();
    for r in readers {
        errors.push(r.await.unwrap().expect_err("fails").to_string());
    }
    assert_eq!(fake.calls(), 1);
    assert!(errors.iter().all(|e| e == &errors[0]), "{errors:?}");
    assert!(errors[0].contains("SERVER_UNAVAILABLE"), "{}", errors[0]);
    assert_eq!(count(&metrics, "load_errors", "order"), 1);

    fake.fail.store(false, Ordering::SeqCst);
    gate.add_permits(1);
    cache
        .order(&id(ORDER))
        .await
        .expect("the error was not cached");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn an_absent_order_is_an_answer_not_an_error() {
    let fake = Arc::new(Fake::default());
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    assert!(cache.order(&id(OTHER)).await.unwrap().record.is_none());
    assert!(cache.order(&id(OTHER)).await.unwrap().record.is_none());
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_load_that_began_before_an_invalidation_is_not_trusted() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.order(&id(ORDER)).await })
    };
    settle().await;
    // The change lands while the load is in flight, then the load finishes with the old value.
    *fake.status.lock().unwrap() = "Approved".into();
    cache.invalidate(&CacheKey::Order(id(ORDER))).await;
    gate.add_permits(1);
    let first = reader.await.unwrap().unwrap();
    assert_eq!(first.record.as_ref().unwrap()["Status"], "Draft");
    gate.add_permits(1);
    let next = cache.order(&id(ORDER)).await.unwrap();
    assert_eq!(next.record.as_ref().unwrap()["Status"], "Approved");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn only_running_loads_are_tracked_and_a_cancelled_one_leaves_nothing() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    let running = |c: &OrderCache<Arc<Fake>>| c.orders.running.lock().unwrap().len();
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.order(&id(ORDER)).await })
    };
    settle().await;
    assert_eq!(running(&cache), 1);
    reader.abort();
    assert!(reader.await.unwrap_err().is_cancelled());
    assert_eq!(running(&cache), 0, "the cancelled load is forgotten");
    // Invalidations keep nothing per key.
    for n in 0..1_000 {
        let order = format!("8010000000{n:05}AAA");
        cache.invalidate(&CacheKey::Order(id(&order))).await;
    }
    assert_eq!(running(&cache), 0);
    gate.add_permits(1);
    cache.order(&id(ORDER)).await.unwrap();
    assert_eq!(running(&cache), 0);
}

#[tokio::test]
async fn a_load_that_began_after_an_invalidation_is_trusted_though_an_older_one_is_not() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    // An old guard load is held at the gate while the order changes.
    let old = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.guard_facts(&[id(ORDER)]).await })
    };
    settle().await;
    *fake.status.lock().unwrap() = "Approved".into();
    cache.forget_guards(&[id(ORDER)]).await;
    // A new one begins after the change and finishes first.
    let new = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.guard_facts(&[id(ORDER)]).await })
    };
    settle().await;
    gate.add_permits(2);
    let (old, new) = (old.await.unwrap().unwrap(), new.await.unwrap().unwrap());
    let status = |f: &Facts| f[&id(ORDER)].as_ref().unwrap().status.clone();
    assert_eq!(status(&new).as_deref(), Some("Approved"));
    // Whichever finished last, the cache answers with the new status, or reloads it.
    assert_eq!(
        status(&old).as_deref(),
        Some("Draft"),
        "read before the change"
    );
    let calls = fake.calls();
    gate.add_permits(1);
    let again = cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(status(&again).as_deref(), Some("Approved"));
    assert!(fake.calls() <= calls + 1);
}

#[tokio::test]
async fn guard_lookups_use_fresh_entries_and_load_the_rest_in_one_query() {
    let fake = Arc::new(Fake::default());
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    cache.order(&id(ORDER)).await.unwrap();
    let facts = cache
        .guard_facts(&[id(ORDER), id(OTHER), id(ORDER)])
        .await
        .unwrap();
    assert_eq!(facts.len(), 2);
    assert_eq!(
        facts[&id(ORDER)].as_ref().unwrap().status.as_deref(),
        Some("Draft")
    );
    assert_eq!(facts[&id(OTHER)], None);
    assert_eq!(
        *fake.ids_asked.lock().unwrap(),
        [1, 1],
        "the cached order is not asked again; the other in one query"
    );
    // A burst of lookups for the same orders costs nothing more while the facts are fresh, and
    // a customer-facing invalidation does not drop them.
    cache.invalidate(&CacheKey::Order(id(ORDER))).await;
    for _ in 0..100 {
        cache.guard_facts(&[id(ORDER), id(OTHER)]).await.unwrap();
    }
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn guard_lookups_read_the_guard_fields_alone_and_leave_the_read_cache_to_readers() {
    let fake = Arc::new(Fake::default());
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    let facts = cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(
        facts[&id(ORDER)].as_ref().unwrap().account_id.as_deref(),
        Some(ACCOUNT)
    );
    assert_eq!(fake.guards_asked.load(Ordering::SeqCst), 1);
    assert!(cache.orders.entries.get(&id(ORDER)).await.is_none());
    // The first read loads the whole order; the guard lookup kept its account for invalidations.
    cache.order(&id(ORDER)).await.unwrap();
    assert_eq!(fake.calls(), 2);
    assert_eq!(
        cache.invalidate(&CacheKey::Order(id(ORDER))).await,
        Some(id(ACCOUNT))
    );
}

#[tokio::test]
async fn the_read_cache_holds_at_most_its_bytes() {
    let fake = Arc::new(Fake::default());
    let config = CacheConfig {
        max_bytes: 64 << 10,
        ..CacheConfig::defaults()
    };
    let (cache, _) = cache(&fake, config);
    let one = cache.order(&id(ORDER)).await.unwrap().weight();
    assert!(one > 500, "an order with an item weighs {one} bytes");
    for n in 0..400 {
        let order = format!("8010000000{n:05}AAA");
        cache.order(&id(&order)).await.unwrap();
    }
    cache.orders.entries.run_pending_tasks().await;
    let held = cache.orders.entries.weighted_size();
    assert!(held <= 32 << 10, "{held} bytes held");
    let count = cache.orders.entries.entry_count();
    assert!(count > 0 && count < 400, "{count} orders held");
}

#[tokio::test]
async fn guard_lookups_reload_entries_older_than_their_bound() {
    let fake = Arc::new(Fake::default());
    let config = CacheConfig {
        guard_max_age: Duration::ZERO,
        ..CacheConfig::defaults()
    };
    let (cache, _) = cache(&fake, config);
    cache.order(&id(ORDER)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(fake.calls(), 2, "no guard facts are kept at a zero bound");
    assert_eq!(fake.guards_asked.load(Ordering::SeqCst), 1);
    // The reader's entry is still the one it loaded.
    cache.order(&id(ORDER)).await.unwrap();
    assert_eq!(fake.calls(), 2);
}

type Running = (Invalidator, CancellationToken, tokio::task::JoinHandle<()>);

/// An invalidator over `window`, applying to `cache`.
fn running(
    cache: &Arc<OrderCache<Arc<Fake>>>,
    metrics: &Arc<Metrics>,
    window: Duration,
) -> Running {
    let invalidator = Invalidator::new(window);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(invalidator.clone().run(
        cache.clone(),
        metrics.clone(),
        cancel.clone(),
    ));
    (invalidator, cancel, task)
}

async fn stop(cancel: CancellationToken, task: tokio::task::JoinHandle<()>) {
    cancel.cancel();
    task.await.unwrap();
}

/// Waits until the invalidator has applied everything pending (its window, then the flush). The
/// invalidator tests run on a paused clock, so a window passes as soon as every task is idle.
async fn flushed(invalidator: &Invalidator) {
    while invalidator.pending() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn order_event(account: Option<&str>) -> Invalidation {
    Invalidation::Order {
        order_id: id(ORDER),
        account_id: account.map(str::to_owned),
    }
}

#[tokio::test(start_paused = true)]
async fn a_burst_within_the_window_is_one_invalidation() {
    let fake = Arc::new(Fake::default());
    let (cache, metrics) = cache(&fake, CacheConfig::defaults());
    let (invalidator, cancel, task) = running(&cache, &metrics, Duration::from_millis(100));
    cache.order(&id(ORDER)).await.unwrap();
    // A burst: a hundred requests far quicker than the window.
    for _ in 0..100 {
        invalidator.request(&[order_event(None)]);
    }
    assert_eq!(invalidator.pending(), 1);
    flushed(&invalidator).await;
    assert_eq!(count(&metrics, "invalidations", "order"), 1);
    cache.order(&id(ORDER)).await.unwrap();
    assert_eq!(fake.calls(), 2, "the invalidated entry is loaded again");

    // A later burst is a new window.
    invalidator.request(&[order_event(None), order_event(None)]);
    flushed(&invalidator).await;
    assert_eq!(count(&metrics, "invalidations", "order"), 2);
    stop(cancel, task).await;
}

#[tokio::test(start_paused = true)]
async fn an_order_event_without_its_account_still_invalidates_the_list() {
    let fake = Arc::new(Fake::default());
    let (cache, metrics) = cache(&fake, CacheConfig::defaults());
    let (invalidator, cancel, task) = running(&cache, &metrics, Duration::from_millis(100));
    cache.account_orders(&id(ACCOUNT)).await.unwrap();
    cache.account_orders(&id(ACCOUNT)).await.unwrap();
    assert_eq!(fake.calls(), 1);
    invalidator.request(&[order_event(None)]);
    flushed(&invalidator).await;
    assert_eq!(count(&metrics, "invalidations", "account_orders"), 1);
    cache.account_orders(&id(ACCOUNT)).await.unwrap();
    assert_eq!(fake.calls(), 2);
    stop(cancel, task).await;
}

#[tokio::test(start_paused = true)]
async fn stopping_applies_what_is_pending() {
    let fake = Arc::new(Fake::default());
    let (cache, metrics) = cache(&fake, CacheConfig::defaults());
    let (invalidator, cancel, task) = running(&cache, &metrics, Duration::from_secs(3600));
    invalidator.request(&[order_event(Some(ACCOUNT))]);
    settle().await;
    stop(cancel, task).await;
    assert_eq!(count(&metrics, "invalidations", "order"), 1);
    assert_eq!(count(&metrics, "invalidations", "account_orders"), 1);
}

#[tokio::test]
async fn a_guard_field_change_drops_the_facts_even_from_a_load_in_flight() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    gate.add_permits(1);
    cache.guard_facts(&[id(ORDER)]).await.unwrap();
    cache.forget_guards(&[id(ORDER)]).await;
    gate.add_permits(1);
    cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(fake.calls(), 2, "forgotten facts are loaded again");

    // A reader's load that began before the change must not bring the old facts back.
    cache.invalidate(&CacheKey::Order(id(ORDER))).await;
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.order(&id(ORDER)).await })
    };
    settle().await;
    cache.forget_guards(&[id(ORDER)]).await;
    *fake.status.lock().unwrap() = "Activated".into();
    gate.add_permits(1);
    reader.await.unwrap().unwrap();
    gate.add_permits(1);
    let facts = cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(fake.calls(), 4);
    assert_eq!(
        facts[&id(ORDER)].as_ref().unwrap().status.as_deref(),
        Some("Activated")
    );
}
