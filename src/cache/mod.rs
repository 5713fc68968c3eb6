//! Cached order reads: the read API's orders and account order lists, and the rules' guard
//! lookups, served from quick_cache and kept fresh by change events.
//!
//! **Coalescing.** Concurrent misses for one key share one Salesforce call: the first caller
//! registers its load for the key and loads, the others wait for its outcome. A failed load is
//! not cached; every waiter gets the same error, and the next read tries again. A caller
//! cancelled while it loads wakes its waiters, and one of them loads in its place.
//!
//! **Freshness.** Entries live for `SFCDC_CACHE_TTL` from the start of their load, or
//! `SFCDC_CACHE_IDLE` without a read (guard facts: `SFCDC_GUARD_MAX_AGE`): each entry keeps both
//! times, and a read that finds it too old treats it as a miss and drops it.
//! Change events invalidate entries through the [`invalidate::Invalidator`], which coalesces a
//! burst for one key into one invalidation. A load that was already running when its key was
//! invalidated may finish afterwards with what it read before the change; the loads running are
//! therefore registered per key, and an invalidation flags those of its key: what a flagged load
//! read is not kept (an entry flagged after it was kept is treated as a miss), and misses after
//! the invalidation load again rather than wait for it. Only customer-facing fields invalidate
//! (`SFCDC_CUSTOMER_FIELDS`), so the read API shows only the fields it is configured to
//! (`SFCDC_ORDER_READ_FIELDS`, `SFCDC_ORDER_ITEM_READ_FIELDS`): an entry may hold a stale
//! activation status, which no reader sees.
//!
//! **Bounds.** Orders and account lists are bounded in bytes (`SFCDC_CACHE_MAX_BYTES`, half
//! each, by an estimate of what each entry holds), guard facts and the account of each order read
//! in entries (`SFCDC_CACHE_MAX_ENTRIES`). quick_cache evicts (S3-FIFO, with CLOCK marks) only
//! when an insert passes the bound, so a hit does no housekeeping: a shard's read lock, a mark
//! and a time stamp. An expired entry nobody reads stays until eviction takes it, among the first
//! since it is not read. Nothing is kept per invalidation: the registry of running loads is as
//! large as the loads.
//!
//! **Guard lookups** ([`CachedLookup`]) keep their own facts (status, activation status, external
//! id, account) from every load, for `SFCDC_GUARD_MAX_AGE`, and load every other order of a batch
//! in one SOQL query of those fields alone, so a burst of events for one order costs one REST
//! read, and the stream fills no read cache entry. Customer-facing invalidations do not touch
//! these facts; an event that changes a guard field does, at once and before the lookup of its
//! batch ([`OrderLookup::forget`]). The guard is a filter, not the last word: the worker reads
//! the order again, uncached, before it submits anything.

pub mod broadcast;
pub mod http;
pub mod invalidate;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{OptionsBuilder, Weighter};
use secrecy::SecretString;
use serde_json::{Map, Value as Json};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::rules::{Facts, OrderFacts, RulesConfig};
use crate::salesforce::rest::{RecordFields, TextFields, order_facts, record_id};
use crate::salesforce::{OrderLookup, RestError, RestLookup, SalesforceRest};
use crate::sfid::SfId;
use crate::telemetry::events::{CacheKind, CacheReads};
use crate::telemetry::metrics::Metrics;

/// The default order fields of the read API.
pub const DEFAULT_ORDER_READ_FIELDS: &str = "OrderNumber,Name,AccountId,Status,Type,EffectiveDate,EndDate,PoNumber,PoDate,Description,TotalAmount,BillingAddress,ShippingAddress,ActivatedDate";

/// The default order item fields of the read API.
pub const DEFAULT_ORDER_ITEM_READ_FIELDS: &str = "Product2Id,PricebookEntryId,Quantity,UnitPrice,ListPrice,TotalPrice,ServiceDate,EndDate,Description";

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `SFCDC_CACHE_MAX_ENTRIES`: orders whose guard facts are held; the account of as many
    /// orders read, four times over.
    pub max_entries: u64,
    /// `SFCDC_CACHE_MAX_BYTES`: what the read cache's orders and account lists may hold, by the
    /// estimate of [`Loaded::weight`]; each kind gets half.
    pub max_bytes: u64,
    /// `SFCDC_CACHE_TTL`: the longest an entry lives.
    pub ttl: Duration,
    /// `SFCDC_CACHE_IDLE`: an entry not read for this long is dropped.
    pub idle: Duration,
    /// `SFCDC_INVALIDATION_WINDOW`: invalidations of one key within this window become one.
    pub invalidation_window: Duration,
    /// `SFCDC_GUARD_MAX_AGE`: the oldest entry a guard lookup uses.
    pub guard_max_age: Duration,
    /// `SFCDC_READ_TOKEN`: the bearer token of the read API.
    pub read_token: Option<SecretString>,
    /// `SFCDC_ORDER_READ_FIELDS`.
    pub order_fields: Vec<String>,
    /// `SFCDC_ORDER_ITEM_READ_FIELDS`.
    pub item_fields: Vec<String>,
    /// `SFCDC_ACCOUNT_ORDERS_LIMIT`: the most orders an account list returns.
    pub account_orders_limit: usize,
}

impl CacheConfig {
    /// Reads the cache variables.
    pub fn from_env(env: &Env) -> Result<CacheConfig, ConfigError> {
        let fields = |var: &str, default: &str| -> Result<Vec<String>, ConfigError> {
            env.parse_or(var, crate::rules::list(default), |s| {
                let list = crate::rules::list(s);
                if list.is_empty() {
                    return Err("expected a comma-separated list of field names".into());
                }
                for f in &list {
                    crate::rules::field_name(f).map_err(|e| format!("'{f}': {e}"))?;
                }
                Ok(list)
            })
        };
        let read_token = env.token("SFCDC_READ_TOKEN", 16)?;
        let positive = |key: &str, default: Duration| env.positive_duration_or(key, default);
        Ok(CacheConfig {
            max_entries: env.int_or("SFCDC_CACHE_MAX_ENTRIES", 10_000, 1..=10_000_000)?,
            max_bytes: env.bytes_or("SFCDC_CACHE_MAX_BYTES", 16 << 20, 64 << 10..=64 << 30)?,
            ttl: positive("SFCDC_CACHE_TTL", Duration::from_secs(300))?,
            idle: positive("SFCDC_CACHE_IDLE", Duration::from_secs(60))?,
            invalidation_window: env
                .duration_or("SFCDC_INVALIDATION_WINDOW", Duration::from_millis(100))?,
            guard_max_age: env.duration_or("SFCDC_GUARD_MAX_AGE", Duration::from_secs(2))?,
            read_token,
            order_fields: fields("SFCDC_ORDER_READ_FIELDS", DEFAULT_ORDER_READ_FIELDS)?,
            item_fields: fields(
                "SFCDC_ORDER_ITEM_READ_FIELDS",
                DEFAULT_ORDER_ITEM_READ_FIELDS,
            )?,
            account_orders_limit: env.int_or("SFCDC_ACCOUNT_ORDERS_LIMIT", 200, 1..=2000)? as usize,
        })
    }

    /// The settings with every default (tests, the demo).
    pub fn defaults() -> CacheConfig {
        CacheConfig::from_env(&Env::default()).expect("the defaults are valid")
    }
}

/// Where the cache loads from: Salesforce REST in production, a counting fake in unit tests.
pub trait OrderSource: Send + Sync + 'static {
    /// The orders with these ids (absent ones are left out), each with its items under
    /// `OrderItems`, as one SOQL query returns them.
    fn orders(&self, ids: &[SfId]) -> impl Future<Output = Result<Vec<Json>, RestError>> + Send;

    /// The orders with these ids (absent ones are left out), with at least `Id`, `AccountId`,
    /// `Status` and the rules' activation and external-id fields: what a guard decides on.
    fn guard_orders(
        &self,
        ids: &[SfId],
    ) -> impl Future<Output = Result<Vec<TextFields>, RestError>> + Send;

    /// Up to `limit` orders of an account, newest first, without items.
    fn account_orders(
        &self,
        account: &SfId,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Json>, RestError>> + Send;
}

/// [`OrderSource`] over SOQL.
pub struct RestOrderSource {
    rest: Arc<SalesforceRest>,
    order_select: String,
    guard_select: String,
    list_select: String,
}

impl RestOrderSource {
    /// Reads the configured read fields plus the fields the rules guard on.
    pub fn new(rest: Arc<SalesforceRest>, config: &CacheConfig, rules: &RulesConfig) -> Self {
        let guard_fields = [
            "AccountId",
            "Status",
            &rules.activation_field,
            &rules.external_id_field,
        ];
        let order_fields = distinct(
            std::iter::once("Id")
                .chain(config.order_fields.iter().map(String::as_str))
                .chain(guard_fields),
        );
        let guard_select = distinct(std::iter::once("Id").chain(guard_fields));
        let mut item_fields = vec!["Id".to_owned()];
        item_fields.extend(config.item_fields.iter().filter(|f| *f != "Id").cloned());
        let list_fields =
            distinct(std::iter::once("Id").chain(config.order_fields.iter().map(String::as_str)));
        RestOrderSource {
            rest,
            order_select: format!(
                "SELECT {}, (SELECT {} FROM OrderItems ORDER BY Id) FROM Order",
                order_fields.join(", "),
                item_fields.join(", ")
            ),
            guard_select: format!("SELECT {} FROM Order", guard_select.join(", ")),
            list_select: format!("SELECT {} FROM Order", list_fields.join(", ")),
        }
    }
}

impl OrderSource for RestOrderSource {
    async fn orders(&self, ids: &[SfId]) -> Result<Vec<Json>, RestError> {
        self.rest.query_by_ids(&self.order_select, ids).await
    }

    async fn guard_orders(&self, ids: &[SfId]) -> Result<Vec<TextFields>, RestError> {
        self.rest.query_by_ids(&self.guard_select, ids).await
    }

    async fn account_orders(&self, account: &SfId, limit: usize) -> Result<Vec<Json>, RestError> {
        // Ids are validated (alphanumeric) before they reach a query.
        let soql = format!(
            "{} WHERE AccountId = '{account}' ORDER BY EffectiveDate DESC LIMIT {}",
            self.list_select,
            limit + 1
        );
        self.rest.query(&soql).await
    }
}

/// Why a load failed. Shared by every waiter of the load.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Salesforce could not be read: {0}")]
pub struct LoadError(pub RestError);

impl LoadError {
    /// Whether the caller may try again later (Salesforce unavailable, a timeout).
    pub fn is_retryable(&self) -> bool {
        self.0.is_retryable()
    }
}

/// An order as Salesforce returned it, with when its load started.
#[derive(Debug)]
pub struct OrderEntry {
    /// The record (without `attributes`), or `None` when the order does not exist.
    pub record: Option<Map<String, Json>>,
    /// The items, each without `attributes`.
    pub items: Vec<Map<String, Json>>,
    /// When the load began: what the entry reflects is at least this fresh.
    pub loaded_at: Instant,
    /// The same, as wall-clock epoch milliseconds, for the read API.
    pub loaded_at_ms: i64,
}

/// An account's orders, newest first.
#[derive(Debug)]
pub struct AccountOrders {
    /// The orders (without `attributes`).
    pub orders: Vec<Map<String, Json>>,
    /// More orders exist than the list holds.
    pub truncated: bool,
    /// When the load began.
    pub loaded_at: Instant,
    /// The same, as wall-clock epoch milliseconds.
    pub loaded_at_ms: i64,
}

/// What a cache key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// One order.
    Order(SfId),
    /// One account's order list.
    AccountOrders(SfId),
    /// One order's guard facts.
    Guard(SfId),
}

/// An order's guard facts (`None`: the order does not exist).
#[derive(Debug)]
pub struct GuardEntry {
    facts: Option<OrderFacts>,
}

/// A cache entry that knows about how much memory it holds.
pub trait Loaded: Send + Sync + 'static {
    /// An estimate of the bytes the entry holds, the cache's own bookkeeping included.
    fn weight(&self) -> u32;
}

impl Loaded for OrderEntry {
    fn weight(&self) -> u32 {
        let items: usize = self.items.iter().map(map_bytes).sum();
        clamp_weight(self.record.as_ref().map_or(0, map_bytes) + items)
    }
}

impl Loaded for AccountOrders {
    fn weight(&self) -> u32 {
        clamp_weight(self.orders.iter().map(map_bytes).sum())
    }
}

impl Loaded for GuardEntry {
    fn weight(&self) -> u32 {
        let text = |t: &Option<String>| t.as_ref().map_or(0, String::capacity);
        let heap = self.facts.as_ref().map_or(0, |f| {
            text(&f.status) + text(&f.activation) + text(&f.external_id) + text(&f.account_id)
        });
        clamp_weight(std::mem::size_of::<GuardEntry>() + heap)
    }
}

/// What the cache keeps for each entry besides the value, measured on quick_cache 0.7 by
/// `the_entry_overhead_covers_what_the_cache_keeps` (about 230 bytes): the entry's slab and
/// hash-table slots, the key's text, the [`Slot`] with its stamps and flag, and the value's
/// `Arc`. The cache also remembers evicted keys, up to half the entries it expects to hold
/// ([`TYPICAL_ENTRY_BYTES`]), which adds less than 1% to a byte bound.
const ENTRY_OVERHEAD: usize = 256;

fn clamp_weight(bytes: usize) -> u32 {
    u32::try_from(bytes + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// The bytes a JSON object holds: per field, its slot in the ordered map (hash, key, value and
/// index, about 80 bytes) plus the key's text and whatever the value holds on the heap.
fn map_bytes(m: &Map<String, Json>) -> usize {
    m.iter().map(|(k, v)| 80 + k.len() + json_heap(v)).sum()
}

fn json_heap(v: &Json) -> usize {
    match v {
        Json::Null | Json::Bool(_) | Json::Number(_) => 0,
        Json::String(s) => s.capacity(),
        Json::Array(a) => a.iter().map(|v| 32 + json_heap(v)).sum(),
        Json::Object(m) => map_bytes(m),
    }
}

/// How many entries of one kind a cache may hold.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// At most this many entries.
    Entries(u64),
    /// At most this many bytes, by [`Loaded::weight`].
    Bytes(u64),
}

/// What an entry of a byte-bounded cache is assumed to weigh when the cache is sized (about an
/// order with its items): it sets how many evicted keys the cache remembers (half as many as it
/// is then expected to hold) and how many shards it may have.
const TYPICAL_ENTRY_BYTES: u64 = 4 << 10;

/// The least a shard of a byte-bounded cache holds. Each shard is bounded on its own, and an
/// entry heavier than its shard is served but not kept, so a shard must hold the heaviest entry
/// worth keeping: an account list of several hundred orders with the default fields (the
/// default limit is 200).
const MIN_SHARD_BYTES: u64 = 2 << 20;

/// A quick_cache bounded by `bound`. It is sharded, each shard behind its own lock: a read takes
/// the shard's read lock and marks the entry used; eviction runs only when an insert overflows a
/// shard, so a read never pays for housekeeping.
fn bounded<K, V, W>(bound: Bound, weighter: W) -> QuickCache<K, V, W>
where
    K: Eq + std::hash::Hash,
    V: Clone,
    W: Weighter<K, V> + Clone,
{
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    let (items, weight, shards) = match bound {
        Bound::Entries(n) => (n, n, parallelism * 4),
        Bound::Bytes(n) => {
            let shards = usize::try_from(n / MIN_SHARD_BYTES).unwrap_or(usize::MAX);
            (n / TYPICAL_ENTRY_BYTES, n, shards.clamp(1, parallelism * 4))
        }
    };
    let options = OptionsBuilder::new()
        .estimated_items_capacity(usize::try_from(items).unwrap_or(usize::MAX).max(1))
        .weight_capacity(weight)
        .shards(shards)
        .build()
        .expect("both capacities are set");
    QuickCache::with_options(options, weighter, Default::default(), Default::default())
}

/// Monotonic time as the cache ages its entries: nanoseconds since the cache was built. It reads
/// tokio's clock, which is the system's monotonic clock unless a test pauses it.
#[derive(Debug, Clone, Copy)]
struct Epoch(tokio::time::Instant);

impl Epoch {
    fn new() -> Epoch {
        Epoch(tokio::time::Instant::now())
    }

    fn now(self) -> u64 {
        nanos(self.0.elapsed())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An entry: the value, the flag an invalidation sets when it outdates the load the value came
/// from, and what the entry is aged and weighed by.
struct Slot<V> {
    value: Arc<V>,
    outdated: Arc<AtomicBool>,
    /// When its load began ([`Epoch`] nanoseconds); the entry expires `ttl` after.
    born: u64,
    /// When it was last read, or kept; the entry expires `idle` after.
    read: AtomicU64,
    /// [`Loaded::weight`] when bounded in bytes, else 1. Kept, because the cache asks for it on
    /// every move of the entry.
    weight: u32,
}

/// Weighs a slot by the weight it recorded.
#[derive(Debug, Clone, Copy)]
struct SlotWeight;

impl<V> Weighter<SfId, Arc<Slot<V>>> for SlotWeight {
    fn weight(&self, _: &SfId, slot: &Arc<Slot<V>>) -> u64 {
        u64::from(slot.weight)
    }
}

/// What a read load ends with, as its waiters get it (`None` while it runs).
type Outcome<V> = Option<Result<Arc<V>, Arc<LoadError>>>;

/// The loads of one key running now. They share one flag: an invalidation of the key sets it
/// and forgets them, so loads that begin afterwards get a new one.
struct Running<V> {
    outdated: Arc<AtomicBool>,
    loads: usize,
    /// The read load among them, whose outcome concurrent misses wait for.
    flight: Option<watch::Receiver<Outcome<V>>>,
}

/// A load in progress, registered until it is dropped (finished, failed or cancelled).
struct Load<'a, V> {
    entries: &'a Entries<V>,
    id: SfId,
    outdated: Arc<AtomicBool>,
    /// When it began ([`Epoch`] nanoseconds).
    began: u64,
    /// Where a read load tells its waiters how it ended. Dropped unsent (the load was
    /// cancelled), it wakes them to try again.
    flight: Option<watch::Sender<Outcome<V>>>,
}

impl<V> Drop for Load<'_, V> {
    fn drop(&mut self) {
        let mut running = self
            .entries
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(r) = running.get_mut(&self.id)
            && Arc::ptr_eq(&r.outdated, &self.outdated)
        {
            if self.flight.is_some() {
                // Before the sender drops: a waiter it wakes must not find this load again.
                r.flight = None;
            }
            r.loads -= 1;
            if r.loads == 0 {
                running.remove(&self.id);
            }
        }
    }
}

/// What a miss does next.
enum Turn<'a, V> {
    /// A load finished since the miss: its entry.
    Ready(Arc<V>),
    /// Another caller is loading the key: wait for its outcome.
    Wait(watch::Receiver<Outcome<V>>),
    /// Load it, registered as the key's read load.
    Lead(Load<'a, V>),
}

/// One kind of entry: the entries, the loads running now, and the counters.
///
/// An invalidation drops the key's entry and flags every load of the key already running, so
/// what such a load read before the change is born outdated and a read treats it as a miss.
/// Only running loads are tracked, so a hit costs one lookup and the bookkeeping is as large as
/// the loads in flight, not as the keys ever invalidated.
struct Entries<V> {
    entries: QuickCache<SfId, Arc<Slot<V>>, SlotWeight>,
    bound: Bound,
    /// Lifetime, nanoseconds.
    ttl: u64,
    /// Longest time without a read, nanoseconds.
    idle: Option<u64>,
    epoch: Epoch,
    running: std::sync::Mutex<foldhash::HashMap<SfId, Running<V>>>,
    counters: CacheReads,
}

impl<V: Loaded> Entries<V> {
    fn new(
        bound: Bound,
        ttl: Duration,
        idle: Option<Duration>,
        epoch: Epoch,
        counters: CacheReads,
    ) -> Self {
        Entries {
            entries: bounded(bound, SlotWeight),
            bound,
            ttl: nanos(ttl),
            idle: idle.map(nanos),
            epoch,
            running: Default::default(),
            counters,
        }
    }

    /// Registers a load of `id` that is about to read Salesforce; a read load also gets the
    /// key's flight, for misses to wait on.
    fn register<'a>(
        &'a self,
        running: &mut foldhash::HashMap<SfId, Running<V>>,
        id: &SfId,
        flight: Option<watch::Sender<Outcome<V>>>,
    ) -> Load<'a, V> {
        let r = running.entry(id.clone()).or_insert_with(|| Running {
            outdated: Arc::new(AtomicBool::new(false)),
            loads: 0,
            flight: None,
        });
        r.loads += 1;
        if let Some(tx) = &flight {
            r.flight = Some(tx.subscribe());
        }
        Load {
            entries: self,
            id: id.clone(),
            outdated: r.outdated.clone(),
            began: self.epoch.now(),
            flight,
        }
    }

    /// Registers a load of `id` that nobody waits on (guard facts).
    fn begin(&self, id: &SfId) -> Load<'_, V> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        self.register(&mut running, id, None)
    }

    /// After a miss: wait for the key's read load, take the entry one kept meanwhile, or lead.
    fn turn(&self, id: &SfId) -> Turn<'_, V> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = running.get(id).and_then(|r| r.flight.as_ref()) {
            return Turn::Wait(rx.clone());
        }
        // A load keeps its entry before it leaves the registry, so under the lock this sees
        // every load that finished since the miss.
        if let Some(v) = self.fresh(id) {
            return Turn::Ready(v);
        }
        let (tx, _) = watch::channel(None);
        Turn::Lead(self.register(&mut running, id, Some(tx)))
    }

    /// The entry for `id`, unless there is none, it expired, or an invalidation outdated its
    /// load; such an entry is dropped.
    fn fresh(&self, id: &SfId) -> Option<Arc<V>> {
        let slot = self.entries.get(id)?;
        let now = self.epoch.now();
        let read = slot.read.load(Ordering::Relaxed);
        let idle = self
            .idle
            .is_some_and(|idle| now.saturating_sub(read) >= idle);
        if idle
            || now.saturating_sub(slot.born) >= self.ttl
            || slot.outdated.load(Ordering::Acquire)
        {
            self.entries.remove_if(id, |s| Arc::ptr_eq(s, &slot));
            return None;
        }
        // Stamped at most every 1/64 of the idle time: concurrent hits on one entry rarely
        // write the same cache line, and the entry expires at most that much early.
        if let Some(idle) = self.idle
            && now.saturating_sub(read) > idle >> 6
        {
            slot.read.store(now, Ordering::Relaxed);
        }
        Some(slot.value.clone())
    }

    /// Keeps what `load` read, unless an invalidation has outdated it already (a read would
    /// only drop it).
    fn insert(&self, load: &Load<'_, V>, value: Arc<V>) {
        if load.outdated.load(Ordering::Acquire) {
            return;
        }
        let weight = match self.bound {
            Bound::Entries(_) => 1,
            Bound::Bytes(_) => value.weight(),
        };
        let slot = Slot {
            value,
            outdated: load.outdated.clone(),
            born: load.began,
            read: AtomicU64::new(self.epoch.now()),
            weight,
        };
        self.entries.insert(load.id.clone(), Arc::new(slot));
    }

    /// The entry for `id`, loaded by `load` on a miss. Concurrent misses share one load: every
    /// one gets its outcome, error included. If the caller loading is cancelled, a waiter loads.
    async fn get_or_load(
        &self,
        id: &SfId,
        load: impl Future<Output = Result<V, LoadError>>,
    ) -> Result<Arc<V>, Arc<LoadError>> {
        let c = &self.counters;
        if let Some(e) = self.fresh(id) {
            c.hit();
            return Ok(e);
        }
        c.misses(1);
        loop {
            match self.turn(id) {
                Turn::Ready(e) => {
                    c.coalesced();
                    return Ok(e);
                }
                Turn::Wait(mut rx) => {
                    let outcome = rx
                        .wait_for(Option::is_some)
                        .await
                        .ok()
                        .and_then(|o| (*o).clone());
                    if let Some(outcome) = outcome {
                        c.coalesced();
                        return outcome;
                    }
                    // Its caller was cancelled: try again, perhaps as the one loading.
                }
                Turn::Lead(registered) => {
                    c.load();
                    let result = match load.await {
                        Ok(v) => {
                            let v = Arc::new(v);
                            self.insert(&registered, v.clone());
                            Ok(v)
                        }
                        Err(e) => {
                            c.load_failed();
                            Err(Arc::new(e))
                        }
                    };
                    if let Some(tx) = &registered.flight {
                        tx.send_replace(Some(result.clone()));
                    }
                    return result;
                }
            }
        }
    }

    /// Drops `id` now, and outdates every load of it already running. Misses from now on do not
    /// wait for those loads: they load again.
    fn invalidate(&self, id: &SfId) {
        let running = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.remove(id)
        };
        if let Some(r) = running {
            r.outdated.store(true, Ordering::Release);
        }
        self.entries.remove(id);
    }

    /// Drops every entry and outdates every running load.
    fn invalidate_all(&self) {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        for r in running.into_values() {
            r.outdated.store(true, Ordering::Release);
        }
        self.entries.clear();
    }
}

/// The account of each order seen in a load, for `ttl`, bounded in entries.
struct AccountOf {
    accounts: QuickCache<SfId, (SfId, u64)>,
    ttl: u64,
    epoch: Epoch,
}

impl AccountOf {
    fn get(&self, order: &SfId) -> Option<SfId> {
        let (account, born) = self.accounts.get(order)?;
        if self.epoch.now().saturating_sub(born) >= self.ttl {
            self.accounts.remove_if(order, |(_, b)| *b == born);
            return None;
        }
        Some(account)
    }

    fn insert(&self, order: SfId, account: SfId) {
        self.accounts.insert(order, (account, self.epoch.now()));
    }
}

/// The order cache.
pub struct OrderCache<S> {
    source: S,
    config: CacheConfig,
    orders: Entries<OrderEntry>,
    accounts: Entries<AccountOrders>,
    /// Guard facts, for `guard_max_age` (none when that is zero).
    guards: Option<Entries<GuardEntry>>,
    /// The account of every order seen in a load, for invalidating the list of an order whose
    /// event does not name its account.
    account_of: AccountOf,
    rules: Arc<RulesConfig>,
    /// Stamps the time each entry was loaded, as readers see it.
    clock: Clock,
}

impl<S> std::fmt::Debug for OrderCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("orders", &self.orders.entries.len())
            .field("accounts", &self.accounts.entries.len())
            .finish()
    }
}

impl<S: OrderSource> OrderCache<S> {
    /// A cache loading from `source`.
    pub fn new(
        source: S,
        config: CacheConfig,
        rules: Arc<RulesConfig>,
        metrics: &Metrics,
    ) -> OrderCache<S> {
        let (capacity, ttl, idle) = (config.max_entries, config.ttl, Some(config.idle));
        let half = Bound::Bytes(config.max_bytes / 2);
        let epoch = Epoch::new();
        let counters = |kind| CacheReads::new(metrics, kind);
        OrderCache {
            source,
            orders: Entries::new(half, ttl, idle, epoch, counters(CacheKind::Order)),
            accounts: Entries::new(half, ttl, idle, epoch, counters(CacheKind::AccountOrders)),
            guards: (!config.guard_max_age.is_zero()).then(|| {
                Entries::new(
                    Bound::Entries(capacity),
                    config.guard_max_age,
                    None,
                    epoch,
                    counters(CacheKind::Guard),
                )
            }),
            account_of: AccountOf {
                accounts: bounded(
                    Bound::Entries(capacity.saturating_mul(4)),
                    quick_cache::UnitWeighter,
                ),
                ttl: nanos(ttl),
                epoch,
            },
            rules,
            clock: Clock::system(),
            config,
        }
    }

    /// Stamps entries with `clock`'s time instead of the system clock's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// One order with its items (`record: None` when it does not exist). The load keeps the
    /// order's guard facts too.
    pub async fn order(&self, id: &SfId) -> Result<Arc<OrderEntry>, Arc<LoadError>> {
        self.orders
            .get_or_load(id, async {
                // Registered before Salesforce is read, so that a guard field's change outdates it.
                let guard_load = self.guards.as_ref().map(|g| g.begin(id));
                let loaded_at = Instant::now();
                let loaded_at_ms = self.clock.now_ms();
                let records = self
                    .source
                    .orders(std::slice::from_ref(id))
                    .await
                    .map_err(LoadError)?;
                let record = records
                    .into_iter()
                    .find(|r| record_id(r).as_ref() == Some(id));
                let entry = self.order_entry(id, record, loaded_at, loaded_at_ms);
                if let (Some(guards), Some(load)) = (&self.guards, &guard_load) {
                    let facts = entry.record.as_ref().map(|r| order_facts(r, &self.rules));
                    guards.insert(load, Arc::new(GuardEntry { facts }));
                }
                Ok(entry)
            })
            .await
    }

    /// An order entry from its REST record; the order's account is kept too.
    fn order_entry(
        &self,
        id: &SfId,
        record: Option<Json>,
        loaded_at: Instant,
        loaded_at_ms: i64,
    ) -> OrderEntry {
        let (record, items) = match record {
            Some(Json::Object(mut m)) => {
                m.remove("attributes");
                let items = match m.remove("OrderItems") {
                    Some(Json::Object(mut rel)) => match rel.remove("records") {
                        Some(Json::Array(rs)) => rs.into_iter().filter_map(strip).collect(),
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                };
                if let Some(Ok(account)) =
                    m.get("AccountId").and_then(Json::as_str).map(SfId::parse)
                {
                    self.account_of.insert(id.clone(), account);
                }
                (Some(m), items)
            }
            _ => (None, Vec::new()),
        };
        OrderEntry {
            record,
            items,
            loaded_at,
            loaded_at_ms,
        }
    }

    /// An account's orders, newest first.
    pub async fn account_orders(
        &self,
        account: &SfId,
    ) -> Result<Arc<AccountOrders>, Arc<LoadError>> {
        let limit = self.config.account_orders_limit;
        self.accounts
            .get_or_load(account, async {
                let loaded_at = Instant::now();
                let loaded_at_ms = self.clock.now_ms();
                let records = self
                    .source
                    .account_orders(account, limit)
                    .await
                    .map_err(LoadError)?;
                let truncated = records.len() > limit;
                let mut orders = Vec::with_capacity(records.len().min(limit));
                for r in records.into_iter().take(limit).filter_map(strip) {
                    if let Some(Ok(id)) = r.get("Id").and_then(Json::as_str).map(SfId::parse) {
                        self.account_of.insert(id, account.clone());
                    }
                    orders.push(r);
                }
                Ok(AccountOrders {
                    orders,
                    truncated,
                    loaded_at,
                    loaded_at_ms,
                })
            })
            .await
    }

    /// Drops a key now, and outdates the loads of it already running: what they read before this
    /// moment is not trusted. An order's invalidation returns its account, when a load showed it.
    pub async fn invalidate(&self, key: &CacheKey) -> Option<SfId> {
        match key {
            CacheKey::Order(id) => {
                self.orders.invalidate(id);
                self.account_of.get(id)
            }
            CacheKey::AccountOrders(id) => {
                self.accounts.invalidate(id);
                None
            }
            CacheKey::Guard(id) => {
                if let Some(guards) = &self.guards {
                    guards.invalidate(id);
                }
                None
            }
        }
    }

    /// Guard facts for `ids`: cached facts younger than `SFCDC_GUARD_MAX_AGE` where there are,
    /// one query of the guard fields alone for the rest. The read cache is not filled from it:
    /// it holds only what readers asked for, so a stream of events for orders nobody reads
    /// costs a few dozen bytes an order, not a whole order with its items.
    pub async fn guard_facts(&self, ids: &[SfId]) -> Result<Facts, RestError> {
        let mut facts = Facts::with_capacity_and_hasher(ids.len(), Default::default());
        let mut missing = Vec::new();
        for id in ids {
            if facts.contains_key(id) || missing.contains(id) {
                continue;
            }
            match &self.guards {
                Some(guards) => match guards.fresh(id) {
                    Some(e) => {
                        guards.counters.hit();
                        facts.insert(id.clone(), e.facts.clone());
                    }
                    None => missing.push(id.clone()),
                },
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(facts);
        }
        let counters = self.guards.as_ref().map(|g| &g.counters);
        if let Some(c) = counters {
            c.misses(missing.len() as u64);
            c.load();
        }
        let loads: Vec<_> = match &self.guards {
            Some(guards) => missing.iter().map(|id| guards.begin(id)).collect(),
            None => Vec::new(),
        };
        let records = match self.source.guard_orders(&missing).await {
            Ok(r) => r,
            Err(e) => {
                if let Some(c) = counters {
                    c.load_failed();
                }
                return Err(e);
            }
        };
        let mut by_id: foldhash::HashMap<SfId, TextFields> = records
            .into_iter()
            .filter_map(|r| Some((r.id()?, r)))
            .collect();
        for id in missing {
            let found = by_id.remove(&id).map(|r| order_facts(&r, &self.rules));
            facts.insert(id, found);
        }
        if let Some(guards) = &self.guards {
            for load in &loads {
                let entry = GuardEntry {
                    facts: facts.get(&load.id).cloned().flatten(),
                };
                guards.insert(load, Arc::new(entry));
            }
        }
        Ok(facts)
    }

    /// Drops the guard facts of `ids`, and outdates the loads of them already running, so that
    /// such a load does not bring back what it read before.
    pub async fn forget_guards(&self, ids: &[SfId]) {
        for id in ids {
            self.invalidate(&CacheKey::Guard(id.clone())).await;
        }
    }

    /// Drops every entry (the invalidation backlog overflowed).
    pub async fn invalidate_all(&self) {
        self.orders.invalidate_all();
        self.accounts.invalidate_all();
    }
}

/// The names in their first-seen order, each once.
fn distinct<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for n in names {
        if !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

fn strip(r: Json) -> Option<Map<String, Json>> {
    match r {
        Json::Object(mut m) => {
            m.remove("attributes");
            Some(m)
        }
        _ => None,
    }
}

/// The rules' order lookup through the cache; reconciliation queries go to Salesforce directly.
pub struct CachedLookup<S> {
    cache: Arc<OrderCache<S>>,
    direct: RestLookup,
}

impl<S> CachedLookup<S> {
    /// Guard lookups through `cache`, reconciliation through `direct`.
    pub fn new(cache: Arc<OrderCache<S>>, direct: RestLookup) -> Self {
        CachedLookup { cache, direct }
    }
}

impl<S: OrderSource> OrderLookup for CachedLookup<S> {
    async fn orders(&self, ids: &[SfId]) -> Result<Facts, RestError> {
        self.cache.guard_facts(ids).await
    }

    async fn forget(&self, ids: &[SfId]) {
        self.cache.forget_guards(ids).await;
    }

    async fn modified_since(&self, since_ms: i64) -> Result<Vec<(SfId, OrderFacts)>, RestError> {
        self.direct.modified_since(since_ms).await
    }
}

#[cfg(test)]
mod tests;
