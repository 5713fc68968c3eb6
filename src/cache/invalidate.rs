//! Coalesced invalidation: what change events ask the cache to forget, applied once per key and
//! window.
//!
//! [`Invalidator::request`] is called by ingest as a batch is staged, before it commits (Salesforce
//! already holds what the events report, and so a checkpoint never passes an event whose
//! invalidation is not at least pending). It never blocks and never
//! waits for the cache: it records each key in a pending set under a short lock and returns. The
//! first request for a key opens its window (`SFCDC_INVALIDATION_WINDOW`); requests for the same
//! key within the window join it; when the window closes, the flush task invalidates the key once.
//! So a burst of a hundred events for one order costs one invalidation, and readers see a change
//! at most one window after it is committed.
//!
//! The pending set is bounded: past [`MAX_PENDING`] keys, the next flush drops every entry
//! instead, which is always safe.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldhash::HashSet;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CacheKey, OrderCache, OrderSource};
use crate::rules::Invalidation;
use crate::sfid::SfId;
use crate::telemetry::events::{CacheInvalidations, CacheKind};
use crate::telemetry::metrics::Metrics;

/// Keys pending at once before a flush drops everything instead.
pub const MAX_PENDING: usize = 100_000;

/// A pending key: an order whose account may be unknown yet, or an account list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pending {
    Order(SfId),
    Account(SfId),
}

#[derive(Debug, Default)]
struct State {
    /// The pending keys.
    keys: HashSet<Pending>,
    /// The same keys with when their windows close, in that order (the window is fixed, so
    /// arrival order is closing order).
    closing: VecDeque<(Instant, Pending)>,
    /// Keys taken for the flush running now.
    applying: usize,
    /// Too many keys: drop everything at the next flush.
    overflow: bool,
}

impl State {
    /// Takes the keys whose windows closed by `now`, or every key.
    fn take(&mut self, now: Instant, all: bool) -> Vec<Pending> {
        let mut due = Vec::new();
        while let Some((closes, _)) = self.closing.front() {
            if !all && *closes > now {
                break;
            }
            if let Some((_, key)) = self.closing.pop_front() {
                self.keys.remove(&key);
                due.push(key);
            }
        }
        self.applying = due.len();
        due
    }
}

/// The handle ingest holds: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Invalidator {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    window: Duration,
}

impl Invalidator {
    /// An invalidator coalescing over `window`. Nothing is applied until [`Invalidator::run`]
    /// runs.
    pub fn new(window: Duration) -> Invalidator {
        Invalidator {
            state: Arc::default(),
            wake: Arc::new(Notify::new()),
            window,
        }
    }

    /// Asks for these invalidations; returns at once.
    pub fn request(&self, invalidations: &[Invalidation]) {
        if invalidations.is_empty() {
            return;
        }
        let closes = Instant::now() + self.window;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for inv in invalidations {
                let Invalidation::Order {
                    order_id,
                    account_id,
                } = inv;
                let account = account_id.as_deref().and_then(|a| SfId::parse(a).ok());
                for key in std::iter::once(Pending::Order(order_id.clone()))
                    .chain(account.map(Pending::Account))
                {
                    if state.keys.len() >= MAX_PENDING {
                        state.overflow = true;
                        break;
                    }
                    if state.keys.insert(key.clone()) {
                        state.closing.push_back((closes, key));
                    }
                }
            }
        }
        self.wake.notify_one();
    }

    /// Keys not applied yet: waiting for their window to close, or being applied.
    pub fn pending(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.keys.len() + state.applying
    }

    /// Applies invalidations to `cache` as their windows close, until `cancel`; then applies
    /// what is pending at once.
    pub async fn run<S: OrderSource>(
        self,
        cache: Arc<OrderCache<S>>,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        let orders = CacheInvalidations::new(&metrics, CacheKind::Order);
        let accounts = CacheInvalidations::new(&metrics, CacheKind::AccountOrders);
        loop {
            let next = {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.closing.front().map(|(closes, _)| *closes)
            };
            let stopping = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = self.wake.notified(), if next.is_none() => false,
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => false,
            };
            let now = Instant::now();
            let (due, overflow) = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let overflow = std::mem::take(&mut state.overflow);
                (state.take(now, stopping || overflow), overflow)
            };
            if overflow {
                tracing::warn!(
                    pending = MAX_PENDING,
                    "Too many invalidations pending; dropping every cached order"
                );
                cache.invalidate_all().await;
            }
            let mut accounts_done: HashSet<SfId> = due
                .iter()
                .filter_map(|key| match key {
                    Pending::Account(a) => Some(a.clone()),
                    Pending::Order(_) => None,
                })
                .collect();
            for key in due {
                match key {
                    Pending::Order(id) => {
                        orders.applied();
                        // The event did not name the account: the cache knows it if it holds
                        // a list with this order in it.
                        if let Some(account) = cache.invalidate(&CacheKey::Order(id)).await
                            && !accounts_done.contains(&account)
                        {
                            cache
                                .invalidate(&CacheKey::AccountOrders(account.clone()))
                                .await;
                            accounts.applied();
                            accounts_done.insert(account);
                        }
                    }
                    Pending::Account(id) => {
                        cache.invalidate(&CacheKey::AccountOrders(id)).await;
                        accounts.applied();
                    }
                }
            }
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .applying = 0;
            if stopping {
                return;
            }
        }
    }
}
