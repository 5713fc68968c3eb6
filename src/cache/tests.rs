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

    async fn guard_orders(&self, ids: &[SfId]) -> Result<Vec<TextFields>, RestError> {
        self.guards_asked.fetch_add(1, Ordering::SeqCst);
        let records = self.orders(ids).await?;
        Ok(records.iter().map(TextFields::from_json).collect())
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
async fn a_cancelled_load_hands_over_to_one_of_its_waiters() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, metrics) = cache(&fake, CacheConfig::defaults());
    let read = || {
        let cache = cache.clone();
        tokio::spawn(async move { cache.order(&id(ORDER)).await })
    };
    let first = read();
    settle().await;
    let waiters: Vec<_> = (0..10).map(|_| read()).collect();
    settle().await;
    assert_eq!(fake.calls(), 1, "the waiters wait");
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    settle().await;
    assert_eq!(fake.calls(), 2, "one waiter loads in its place");
    gate.add_permits(1);
    for w in waiters {
        w.await.unwrap().expect("loads");
    }
    assert_eq!(fake.calls(), 2);
    assert_eq!(count(&metrics, "loads", "order"), 2);
    assert_eq!(count(&metrics, "coalesced", "order"), 9);
    assert!(cache.orders.running.lock().unwrap().is_empty());
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
async fn a_read_after_an_invalidation_does_not_wait_for_the_load_it_outdated() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    let read = || {
        let cache = cache.clone();
        tokio::spawn(async move { cache.order(&id(ORDER)).await })
    };
    let old = read();
    settle().await;
    *fake.status.lock().unwrap() = "Approved".into();
    cache.invalidate(&CacheKey::Order(id(ORDER))).await;
    let new = read();
    settle().await;
    assert_eq!(fake.calls(), 2, "the read after the change loads again");
    gate.add_permits(2);
    let status = |e: Arc<OrderEntry>| e.record.as_ref().unwrap()["Status"].clone();
    assert_eq!(status(old.await.unwrap().unwrap()), "Draft");
    assert_eq!(status(new.await.unwrap().unwrap()), "Approved");
    // The outdated load kept nothing; the new one's entry answers.
    assert_eq!(status(cache.order(&id(ORDER)).await.unwrap()), "Approved");
    assert_eq!(fake.calls(), 2);
}

#[tokio::test]
async fn invalidating_everything_drops_every_entry_and_outdates_running_loads() {
    let (fake, gate) = Fake::gated();
    let fake = Arc::new(fake);
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    gate.add_permits(2);
    cache.order(&id(ORDER)).await.unwrap();
    cache.account_orders(&id(ACCOUNT)).await.unwrap();
    let running = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.order(&id(OTHER)).await })
    };
    settle().await;
    cache.invalidate_all().await;
    gate.add_permits(1);
    running.await.unwrap().unwrap();
    assert_eq!(fake.calls(), 3);
    gate.add_permits(3);
    cache.order(&id(ORDER)).await.unwrap();
    cache.account_orders(&id(ACCOUNT)).await.unwrap();
    cache.order(&id(OTHER)).await.unwrap();
    assert_eq!(fake.calls(), 6, "everything is loaded again");
}

#[tokio::test(start_paused = true)]
async fn entries_expire_at_their_ttl_or_when_not_read_for_the_idle_time() {
    let fake = Arc::new(Fake::default());
    let config = CacheConfig {
        ttl: Duration::from_secs(300),
        idle: Duration::from_secs(60),
        ..CacheConfig::defaults()
    };
    let (cache, metrics) = cache(&fake, config);
    let read = || async { cache.order(&id(ORDER)).await.unwrap() };
    read().await;
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(50)).await;
        read().await;
    }
    assert_eq!(fake.calls(), 1, "read every 50 s, for 250 s");
    tokio::time::advance(Duration::from_secs(50)).await;
    read().await;
    assert_eq!(fake.calls(), 2, "expired at its TTL, read or not");
    tokio::time::advance(Duration::from_secs(59)).await;
    read().await;
    tokio::time::advance(Duration::from_secs(60)).await;
    read().await;
    assert_eq!(fake.calls(), 3, "dropped after a minute without a read");
    assert_eq!(count(&metrics, "hits", "order"), 6);
    assert_eq!(count(&metrics, "misses", "order"), 3);
}

#[tokio::test(start_paused = true)]
async fn guard_facts_expire_at_the_guard_max_age() {
    let fake = Arc::new(Fake::default());
    let (cache, _) = cache(&fake, CacheConfig::defaults());
    let age = cache.config().guard_max_age;
    cache.guard_facts(&[id(ORDER)]).await.unwrap();
    tokio::time::advance(age / 2).await;
    cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(fake.calls(), 1);
    tokio::time::advance(age / 2).await;
    cache.guard_facts(&[id(ORDER)]).await.unwrap();
    assert_eq!(fake.calls(), 2, "older than SFCDC_GUARD_MAX_AGE");
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
    assert!(cache.orders.entries.get(&id(ORDER)).is_none());
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
    let held = cache.orders.entries.weight();
    assert!(held <= 32 << 10, "{held} bytes held");
    let count = cache.orders.entries.len();
    assert!(count > 0 && count < 400, "{count} orders held");
}

/// An entry that weighs what it says and holds nothing but what the cache keeps for it.
struct Bare(u32);

impl Loaded for Bare {
    fn weight(&self) -> u32 {
        self.0
    }
}

/// What a byte-bounded cache of `bound` bytes keeps besides the values, after ten times as many
/// inserts of entries weighing `weight` as fit, so that evicted keys fill its ghost list too:
/// the bytes, and the entries held.
fn bookkeeping(bound: u64, weight: u32) -> (usize, usize) {
    // glibc's chunk for a request of `n` bytes.
    let chunk = |n: usize| (n + 8).next_multiple_of(16).max(32);
    let metrics = Metrics::new();
    let entries: Entries<Bare> = Entries::new(
        Bound::Bytes(bound),
        Duration::from_secs(60),
        None,
        Epoch::new(),
        CacheReads::new(&metrics, CacheKind::Order),
    );
    let n = 10 * bound / u64::from(weight);
    for i in 0..n {
        let load = entries.begin(&crate::sfid::generate("801", "Qc", i));
        entries.insert(&load, Arc::new(Bare(weight)));
    }
    let held = entries.entries.len();
    assert!(held > 0 && (held as u64) < n, "{held} held");
    let per_entry = chunk(18) // the key's text
        + chunk(std::mem::size_of::<Slot<Bare>>() + 16) // the slot's Arc
        + chunk(1 + 16) // its load's flag
        + chunk(16); // the value's Arc
    (
        entries.entries.memory_used().total() + held * per_entry,
        held,
    )
}

#[test]
fn the_entry_overhead_covers_what_the_cache_keeps() {
    // Small entries: the cost of each.
    let (bytes, held) = bookkeeping(1 << 20, clamp_weight(0));
    assert!(
        bytes / held <= ENTRY_OVERHEAD,
        "{} bytes an entry ({bytes} for {held})",
        bytes / held
    );
    // Entries of the typical weight: the evicted keys remembered add less than 1% of the bound.
    let bound = 1 << 20;
    let (bytes, held) = bookkeeping(bound, TYPICAL_ENTRY_BYTES as u32);
    let allowed = held * ENTRY_OVERHEAD + bound as usize / 100;
    assert!(bytes <= allowed, "{bytes} bytes for {held} entries");
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
