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
//! invalidated may finish afterwards with what it read before the change; every invalidation is
//! therefore stamped, and an entry whose load started before its key's last stamp is treated as
//! a miss. Only customer-facing fields invalidate (`SFCDC_CUSTOMER_FIELDS`), so the read API
//! shows only the fields it is configured to (`SFCDC_ORDER_READ_FIELDS`,
//! `SFCDC_ORDER_ITEM_READ_FIELDS`): an entry may hold a stale activation status, which no reader
//! sees.
//!
//! **Guard lookups** ([`CachedLookup`]) keep their own facts (status, activation status, external
//! id, account) from every load, for `SFCDC_GUARD_MAX_AGE`, and load every other order of a batch
//! in one SOQL query, so a burst of events for one order costs one REST read. Customer-facing
//! invalidations do not touch these facts; an event that changes a guard field does, at once and
//! before the lookup of its batch ([`OrderLookup::forget`]). The guard is a filter, not the last
//! word: the worker reads the order again, uncached, before it submits anything.

pub mod http;
pub mod invalidate;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use prometheus_client::metrics::counter::Counter;
use secrecy::SecretString;
use serde_json::{Map, Value as Json};

use crate::config::{ConfigError, Env};
use crate::rules::{Facts, OrderFacts, RulesConfig};
use crate::salesforce::{OrderLookup, RestError, RestLookup, SalesforceRest};
use crate::sfid::SfId;
use crate::telemetry::metrics::Metrics;

/// The default order fields of the read API.
pub const DEFAULT_ORDER_READ_FIELDS: &str = "OrderNumber,Name,AccountId,Status,Type,EffectiveDate,EndDate,PoNumber,PoDate,Description,TotalAmount,BillingAddress,ShippingAddress,ActivatedDate";

/// The default order item fields of the read API.
pub const DEFAULT_ORDER_ITEM_READ_FIELDS: &str = "Product2Id,PricebookEntryId,Quantity,UnitPrice,ListPrice,TotalPrice,ServiceDate,EndDate,Description";

/// Ids per guard query (the SOQL text stays far below Salesforce's 100,000-character limit).
const IDS_PER_QUERY: usize = 200;

/// Cache settings.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// `SFCDC_CACHE_MAX_ENTRIES`: orders held (account lists count separately, as many again).
    pub max_entries: u64,
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
        let read_token = env.secret("SFCDC_READ_TOKEN");
        if read_token
            .as_ref()
            .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).trim().len() < 16)
        {
            return Err(ConfigError::new(
                "SFCDC_READ_TOKEN",
                "is too short: use at least 16 characters",
            ));
        }
        let positive = |var: &str, default: Duration| -> Result<Duration, ConfigError> {
            let d = env.duration_or(var, default)?;
            if d.is_zero() {
                return Err(ConfigError::new(var, "must be longer than zero"));
            }
            Ok(d)
        };
        Ok(CacheConfig {
            max_entries: env.int_or("SFCDC_CACHE_MAX_ENTRIES", 10_000, 1..=10_000_000)?,
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
    list_select: String,
}

impl RestOrderSource {
    /// Reads the configured read fields plus the fields the rules guard on.
    pub fn new(rest: Arc<SalesforceRest>, config: &CacheConfig, rules: &RulesConfig) -> Self {
        let mut order_fields = vec!["Id".to_owned()];
        for f in config.order_fields.iter().chain([
            &"AccountId".to_owned(),
            &"Status".to_owned(),
            &rules.activation_field,
            &rules.external_id_field,
        ]) {
            if !order_fields.contains(f) {
                order_fields.push(f.clone());
            }
        }
        let mut item_fields = vec!["Id".to_owned()];
        item_fields.extend(config.item_fields.iter().filter(|f| *f != "Id").cloned());
        let list_fields: Vec<&str> = std::iter::once("Id")
            .chain(
                config
                    .order_fields
                    .iter()
                    .map(String::as_str)
                    .filter(|f| *f != "Id"),
            )
            .collect();
        RestOrderSource {
            rest,
            order_select: format!(
                "SELECT {}, (SELECT {} FROM OrderItems ORDER BY Id) FROM Order",
                order_fields.join(", "),
                item_fields.join(", ")
            ),
            list_select: format!("SELECT {} FROM Order", list_fields.join(", ")),
        }
    }
}

impl OrderSource for RestOrderSource {
    async fn orders(&self, ids: &[SfId]) -> Result<Vec<Json>, RestError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|id| format!("'{id}'")).collect();
            let soql = format!("{} WHERE Id IN ({})", self.order_select, list.join(", "));
            out.extend(self.rest.query(&soql).await?);
        }
        Ok(out)
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

/// An order's guard facts, with when their load started.
#[derive(Debug)]
struct GuardEntry {
    facts: Option<OrderFacts>,
    loaded_at: Instant,
}

/// Pre-resolved counters of one cache (no label lookup on the read path).
#[derive(Debug, Clone)]
struct Counters {
    hits: Counter,
    misses: Counter,
    coalesced: Counter,
    loads: Counter,
    load_errors: Counter,
}

impl Counters {
    fn new(metrics: &Metrics, cache: &str) -> Counters {
        let label = crate::telemetry::metrics::CacheLabel {
            cache: cache.to_owned(),
        };
        Counters {
            hits: metrics.cache_hits.get_or_create(&label).clone(),
            misses: metrics.cache_misses.get_or_create(&label).clone(),
            coalesced: metrics.cache_coalesced_waits.get_or_create(&label).clone(),
            loads: metrics.cache_loads.get_or_create(&label).clone(),
            load_errors: metrics.cache_load_errors.get_or_create(&label).clone(),
        }
    }
}

/// The order cache.
pub struct OrderCache<S> {
    source: S,
    config: CacheConfig,
    orders: Cache<SfId, Arc<OrderEntry>>,
    accounts: Cache<SfId, Arc<AccountOrders>>,
    /// The account of every order seen in a load, for invalidating the list of an order whose
    /// event does not name its account.
    account_of: Cache<SfId, SfId>,
    /// Guard facts, for `guard_max_age` (none when that is zero).
    guards: Option<Cache<SfId, Arc<GuardEntry>>>,
    /// When each key was last invalidated.
    stamps: Cache<CacheKey, Instant>,
    rules: Arc<RulesConfig>,
    order_counters: Counters,
    account_counters: Counters,
}

impl<S> std::fmt::Debug for OrderCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderCache")
            .field("orders", &self.orders.entry_count())
            .field("accounts", &self.accounts.entry_count())
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
        OrderCache {
            source,
            guards: (!config.guard_max_age.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(config.max_entries)
                    .time_to_live(config.guard_max_age)
                    .build()
            }),
            rules,
            orders: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .time_to_idle(config.idle)
                .build(),
            accounts: Cache::builder()
                .max_capacity(config.max_entries)
                .time_to_live(config.ttl)
                .time_to_idle(config.idle)
                .build(),
            account_of: Cache::builder()
                .max_capacity(config.max_entries.saturating_mul(4))
                .time_to_live(config.ttl)
                .build(),
            // A stamp only matters while a load that began before it may still finish, and no
            // entry outlives the TTL.
            stamps: Cache::builder()
                .max_capacity(config.max_entries.saturating_mul(4))
                .time_to_live(config.ttl)
                .build(),
            order_counters: Counters::new(metrics, "order"),
            account_counters: Counters::new(metrics, "account_orders"),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Whether an entry loaded from `loaded_at` predates its key's last invalidation.
    async fn outdated(&self, key: &CacheKey, loaded_at: Instant) -> bool {
        self.stamps.get(key).await.is_some_and(|t| t >= loaded_at)
    }

    /// One order with its items (`record: None` when it does not exist).
    pub async fn order(&self, id: &SfId) -> Result<Arc<OrderEntry>, Arc<LoadError>> {
        let c = &self.order_counters;
        if let Some(e) = self.orders.get(id).await {
            if !self
                .outdated(&CacheKey::Order(id.clone()), e.loaded_at)
                .await
            {
                c.hits.inc();
                return Ok(e);
            }
            self.orders.invalidate(id).await;
        }
        c.misses.inc();
        let ran = AtomicBool::new(false);
        let result = self
            .orders
            .try_get_with_by_ref(id, async {
                ran.store(true, Ordering::Relaxed);
                c.loads.inc();
                let loaded_at = Instant::now();
                let loaded_at_ms = crate::clock::now_ms();
                let records = self
                    .source
                    .orders(std::slice::from_ref(id))
                    .await
                    .map_err(LoadError)?;
                let record = records
                    .into_iter()
                    .find(|r| record_id(r).as_ref() == Some(id));
                Ok(Arc::new(
                    self.order_entry(Some(id), record, loaded_at, loaded_at_ms)
                        .await,
                ))
            })
            .await;
        if !ran.load(Ordering::Relaxed) {
            c.coalesced.inc();
        } else if result.is_err() {
            c.load_errors.inc();
        }
        result
    }

    async fn order_entry(
        &self,
        id: Option<&SfId>,
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
                self.remember_account(&m).await;
                (Some(m), items)
            }
            _ => (None, Vec::new()),
        };
        if let (Some(guards), Some(id)) = (&self.guards, id) {
            let entry = GuardEntry {
                facts: record.as_ref().map(|r| order_facts(r, &self.rules)),
                loaded_at,
            };
            guards.insert(id.clone(), Arc::new(entry)).await;
        }
        OrderEntry {
            record,
            items,
            loaded_at,
            loaded_at_ms,
        }
    }

    async fn remember_account(&self, order: &Map<String, Json>) {
        let id = order.get("Id").and_then(Json::as_str).map(SfId::parse);
        let account = order
            .get("AccountId")
            .and_then(Json::as_str)
            .map(SfId::parse);
        if let (Some(Ok(id)), Some(Ok(account))) = (id, account) {
            self.account_of.insert(id, account).await;
        }
    }

    /// An account's orders, newest first.
    pub async fn account_orders(
        &self,
        account: &SfId,
    ) -> Result<Arc<AccountOrders>, Arc<LoadError>> {
        let c = &self.account_counters;
        if let Some(e) = self.accounts.get(account).await {
            if !self
                .outdated(&CacheKey::AccountOrders(account.clone()), e.loaded_at)
                .await
            {
                c.hits.inc();
                return Ok(e);
            }
            self.accounts.invalidate(account).await;
        }
        c.misses.inc();
        let ran = AtomicBool::new(false);
        let limit = self.config.account_orders_limit;
        let result = self
            .accounts
            .try_get_with_by_ref(account, async {
                ran.store(true, Ordering::Relaxed);
                c.loads.inc();
                let loaded_at = Instant::now();
                let loaded_at_ms = crate::clock::now_ms();
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
                Ok(Arc::new(AccountOrders {
                    orders,
                    truncated,
                    loaded_at,
                    loaded_at_ms,
                }))
            })
            .await;
        if !ran.load(Ordering::Relaxed) {
            c.coalesced.inc();
        } else if result.is_err() {
            c.load_errors.inc();
        }
        result
    }

    /// Drops a key now and stamps it, so a load that began before this moment is not trusted.
    /// An order's invalidation without an account finds the account from what the cache saw.
    pub async fn invalidate(&self, key: &CacheKey) -> Option<SfId> {
        self.stamps.insert(key.clone(), Instant::now()).await;
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
    /// one query for the rest.
    pub async fn guard_facts(&self, ids: &[SfId]) -> Result<Facts, RestError> {
        let c = &self.order_counters;
        let mut facts = Facts::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            if facts.contains_key(id) || missing.contains(id) {
                continue;
            }
            let cached = match &self.guards {
                Some(guards) => guards.get(id).await,
                None => None,
            };
            match cached {
                Some(e)
                    if !self
                        .outdated(&CacheKey::Guard(id.clone()), e.loaded_at)
                        .await =>
                {
                    c.hits.inc();
                    facts.insert(id.clone(), e.facts.clone());
                }
                _ => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(facts);
        }
        c.misses.inc_by(missing.len() as u64);
        c.loads.inc();
        let loaded_at = Instant::now();
        let loaded_at_ms = crate::clock::now_ms();
        let records = match self.source.orders(&missing).await {
            Ok(r) => r,
            Err(e) => {
                c.load_errors.inc();
                return Err(e);
            }
        };
        let mut by_id: std::collections::HashMap<SfId, Json> = records
            .into_iter()
            .filter_map(|r| Some((record_id(&r)?, r)))
            .collect();
        for id in missing {
            let record = by_id.remove(&id);
            let entry = self
                .order_entry(Some(&id), record, loaded_at, loaded_at_ms)
                .await;
            facts.insert(
                id.clone(),
                entry.record.as_ref().map(|r| order_facts(r, &self.rules)),
            );
            // Fresher than anything a reader holds: the read cache takes it too.
            self.orders.insert(id, Arc::new(entry)).await;
        }
        Ok(facts)
    }

    /// Drops the guard facts of `ids`, and stamps them so that a load already running does not
    /// bring back what it read before.
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

    /// Entries held: (orders, account lists).
    pub fn entry_counts(&self) -> (u64, u64) {
        (self.orders.entry_count(), self.accounts.entry_count())
    }
}

fn record_id(r: &Json) -> Option<SfId> {
    SfId::parse(r.get("Id")?.as_str()?).ok()
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

fn order_facts(r: &Map<String, Json>, rules: &RulesConfig) -> OrderFacts {
    let text = |k: &str| r.get(k).and_then(Json::as_str).map(str::to_owned);
    OrderFacts {
        status: text("Status"),
        activation: text(&rules.activation_field),
        external_id: text(&rules.external_id_field),
        account_id: text("AccountId"),
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
