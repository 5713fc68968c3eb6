//! Cached order reads: the read API's orders and account order lists, and the rules' guard
//! lookups, served from moka and kept fresh by change events.
//!
//! **Coalescing.** Concurrent misses for one key share one Salesforce call (moka's
//! `try_get_with`): the first caller loads, the others wait for its result. A failed load is not
//! cached; every waiter gets the same error, and the next read tries again.
//!
//! **Freshness.** Entries live for `SFCDC_CACHE_TTL`, or `SFCDC_CACHE_IDLE` without a read.
//! Change events invalidate them through the [`invalidate::Invalidator`], which coalesces a burst
//! for one key into one invalidation. A load that was already running when its key was
//! invalidated may finish afterwards with what it read before the change; the loads running are
//! therefore registered per key, an invalidation flags those of its key, and an entry from a
//! flagged load is treated as a miss. Only customer-facing fields invalidate (`SFCDC_CUSTOMER_FIELDS`), so the read API
//! shows only the fields it is configured to (`SFCDC_ORDER_READ_FIELDS`,
//! `SFCDC_ORDER_ITEM_READ_FIELDS`): an entry may hold a stale activation status, which no reader
//! sees.
//!
//! **Bounds.** Orders and account lists are bounded in bytes (`SFCDC_CACHE_MAX_BYTES`, half
//! each, by an estimate of what each entry holds), guard facts and the account of each order read
//! in entries (`SFCDC_CACHE_MAX_ENTRIES`); moka evicts the least useful entries past the bound.
//! Nothing is kept per invalidation: the registry of running loads is as large as the loads.
//!
//! **Guard lookups** ([`CachedLookup`]) keep their own facts (status, activation status, external
//! id, account) from every load, for `SFCDC_GUARD_MAX_AGE`, and load every other order of a batch
//! in one SOQL query of those fields alone, so a burst of events for one order costs one REST
//! read, and the stream fills no read cache entry. Customer-facing invalidations do not touch these facts; an event that changes a guard field does, at once and
//! before the lookup of its batch ([`OrderLookup::forget`]). The guard is a filter, not the last
//! word: the worker reads the order again, uncached, before it submits anything.

pub mod broadcast;
pub mod http;
pub mod invalidate;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use secrecy::SecretString;
use serde_json::{Map, Value as Json};

use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::rules::{Facts, OrderFacts, RulesConfig};
use crate::salesforce::rest::{order_facts, record_id};
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
    /// estimate of [`weight`]; each kind gets half.
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
    ) -> impl Future<Output = Result<Vec<Json>, RestError>> + Send;

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

    async fn guard_orders(&self, ids: &[SfId]) -> Result<Vec<Json>, RestError> {
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

/// About what moka keeps for each entry besides the value (key, timer and order nodes, hash).
const ENTRY_OVERHEAD: usize = 160;

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

/// An entry, and the flag an invalidation sets when it outdates the load the entry came from.
struct Slot<V> {
    value: Arc<V>,
    outdated: Arc<AtomicBool>,
}

impl<V> Clone for Slot<V> {
    fn clone(&self) -> Self {
        Slot {
            value: self.value.clone(),
            outdated: self.outdated.clone(),
        }
    }
}

/// The loads of one key running now. They share one flag: an invalidation of the key sets it
/// and forgets it, so loads that begin afterwards get a new one.
struct Running {
    outdated: Arc<AtomicBool>,
    loads: usize,
}

/// A load in progress, registered until it is dropped (finished, failed or cancelled).
struct Load<'a, V> {
    entries: &'a Entries<V>,
    id: SfId,
    outdated: Arc<AtomicBool>,
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
            r.loads -= 1;
            if r.loads == 0 {
                running.remove(&self.id);
            }
        }
    }
}

/// One kind of entry: the entries, the loads running now, and the counters.
///
/// An invalidation drops the key's entry and flags every load of the key already running, so
/// what such a load read before the change is born outdated and a read treats it as a miss.
/// Only running loads are tracked, so a hit costs one lookup and the bookkeeping is as large as
/// the loads in flight, not as the keys ever invalidated.
struct Entries<V> {
    entries: Cache<SfId, Slot<V>>,
    running: std::sync::Mutex<std::collections::HashMap<SfId, Running>>,
    counters: CacheReads,
}

impl<V: Loaded> Entries<V> {
    fn new(
        bound: Bound,
        ttl: Duration,
        idle: Option<Duration>,
        metrics: &Metrics,
        kind: CacheKind,
    ) -> Self {
        let mut entries = Cache::builder().time_to_live(ttl);
        entries = match bound {
            Bound::Entries(n) => entries.max_capacity(n),
            Bound::Bytes(n) => entries
                .max_capacity(n)
                .weigher(|_: &SfId, s: &Slot<V>| s.value.weight()),
        };
        if let Some(idle) = idle {
            entries = entries.time_to_idle(idle);
        }
        Entries {
            entries: entries.build(),
            running: Default::default(),
            counters: CacheReads::new(metrics, kind),
        }
    }

    /// Registers a load of `id` that is about to read Salesforce.
    fn begin(&self, id: &SfId) -> Load<'_, V> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let r = running.entry(id.clone()).or_insert_with(|| Running {
            outdated: Arc::new(AtomicBool::new(false)),
            loads: 0,
        });
        r.loads += 1;
        Load {
            entries: self,
            id: id.clone(),
            outdated: r.outdated.clone(),
        }
    }

    /// The entry for `id`, unless there is none or an invalidation outdated its load.
    async fn fresh(&self, id: &SfId) -> Option<Arc<V>> {
        let slot = self.entries.get(id).await?;
        if slot.outdated.load(Ordering::Acquire) {
            self.entries.invalidate(id).await;
            return None;
        }
        Some(slot.value)
    }

    /// Keeps what `load` read.
    async fn insert(&self, load: &Load<'_, V>, value: Arc<V>) {
        let slot = Slot {
            value,
            outdated: load.outdated.clone(),
        };
        self.entries.insert(load.id.clone(), slot).await;
    }

    /// The entry for `id`, loaded by `load` on a miss; concurrent misses share one load.
    async fn get_or_load(
        &self,
        id: &SfId,
        load: impl Future<Output = Result<V, LoadError>>,
    ) -> Result<Arc<V>, Arc<LoadError>> {
        let c = &self.counters;
        if let Some(e) = self.fresh(id).await {
            c.hit();
            return Ok(e);
        }
        c.misses(1);
        let ran = AtomicBool::new(false);
        let registered = self.begin(id);
        let result = self
            .entries
            .try_get_with_by_ref(id, async {
                ran.store(true, Ordering::Relaxed);
                c.load();
                load.await.map(|v| Slot {
                    value: Arc::new(v),
                    outdated: registered.outdated.clone(),
                })
            })
            .await;
        drop(registered);
        if !ran.load(Ordering::Relaxed) {
            c.coalesced();
        } else if result.is_err() {
            c.load_failed();
        }
        result.map(|slot| slot.value)
    }

    /// Drops `id` now, and outdates every load of it already running.
    async fn invalidate(&self, id: &SfId) {
        let running = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.remove(id)
        };
        if let Some(r) = running {
            r.outdated.store(true, Ordering::Release);
        }
        self.entries.invalidate(id).await;
    }

    /// Drops every entry and outdates every running load.
    fn invalidate_all(&self) {
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()));
        for r in running.into_values() {
            r.outdated.store(true, Ordering::Release);
        }
        self.entries.invalidate_all();
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
    account_of: Cache<SfId, SfId>,
    rules: Arc<RulesConfig>,
    /// Stamps the time each entry was loaded, as readers see it.
    clock: Clock,
}

impl<S> std::fmt::Debug for OrderCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("orders", &self.orders.entries.entry_count())
            .field("accounts", &self.accounts.entries.entry_count())
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
        OrderCache {
            source,
            orders: Entries::new(half, ttl, idle, metrics, CacheKind::Order),
            accounts: Entries::new(half, ttl, idle, metrics, CacheKind::AccountOrders),
            guards: (!config.guard_max_age.is_zero()).then(|| {
                Entries::new(
                    Bound::Entries(capacity),
                    config.guard_max_age,
                    None,
                    metrics,
                    CacheKind::Guard,
                )
            }),
            account_of: Cache::builder()
                .max_capacity(capacity.saturating_mul(4))
                .time_to_live(ttl)
                .build(),
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
        let guard_load = self.guards.as_ref().map(|g| g.begin(id));
        self.orders
            .get_or_load(id, async {
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
                let entry = self.order_entry(id, record, loaded_at, loaded_at_ms).await;
                if let (Some(guards), Some(load)) = (&self.guards, &guard_load) {
                    let facts = entry.record.as_ref().map(|r| order_facts(r, &self.rules));
                    guards.insert(load, Arc::new(GuardEntry { facts })).await;
                }
                Ok(entry)
            })
            .await
    }

    /// An order entry from its REST record; the order's account is kept too.
    async fn order_entry(
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
                    self.account_of.insert(id.clone(), account).await;
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
                        self.account_of.insert(id, account.clone()).await;
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
                self.orders.invalidate(id).await;
                self.account_of.get(id).await
            }
            CacheKey::AccountOrders(id) => {
                self.accounts.invalidate(id).await;
                None
            }
            CacheKey::Guard(id) => {
                if let Some(guards) = &self.guards {
                    guards.invalidate(id).await;
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
        let mut facts = Facts::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            if facts.contains_key(id) || missing.contains(id) {
                continue;
            }
            match &self.guards {
                Some(guards) => match guards.fresh(id).await {
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
        let mut by_id: std::collections::HashMap<SfId, Json> = records
            .into_iter()
            .filter_map(|r| Some((record_id(&r)?, r)))
            .collect();
        for id in missing {
            let found = by_id
                .remove(&id)
                .as_ref()
                .and_then(Json::as_object)
                .map(|r| order_facts(r, &self.rules));
            facts.insert(id, found);
        }
        if let Some(guards) = &self.guards {
            for load in &loads {
                let entry = GuardEntry {
                    facts: facts.get(&load.id).cloned().flatten(),
                };
                guards.insert(load, Arc::new(entry)).await;
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
