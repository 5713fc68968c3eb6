//! What an instance hears from the rest of the fleet on PostgreSQL: a released lease wakes its
//! standing-by leader loops, new or re-driven jobs wake its idle worker, and the cache
//! invalidations decided by a channel's holder reach its cache (its own are skipped: it applied
//! them already). The poll intervals stay as the fallback for anything missed.
//!
//! **A dropped connection.** Signals sent while the listening connection was down are lost, and
//! there is no telling which: the instance drops its whole cache (`CacheBroadcastReset`, a log
//! line and `sfcdc_cache_broadcast_resets_total`), wakes its leader loops and worker to look for
//! themselves, and listens again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cache::invalidate::Invalidator;
use crate::cache::{OrderCache, OrderSource, broadcast};
use crate::store::AnyStore;
use crate::store::postgres::notify::{CACHE, JOBS, LEASES, Signal};
use crate::telemetry::events::{CacheBroadcastReset, InternalEvent};
use crate::telemetry::metrics::Metrics;

/// Where the signals go.
pub struct Hearers<S: OrderSource> {
    /// This instance's id: its own cache notices are skipped.
    pub me: String,
    /// Standing-by leader loops.
    pub released: Arc<Notify>,
    /// The idle worker.
    pub jobs: Arc<Notify>,
    /// The cache, dropped whole after a lost connection.
    pub cache: Arc<OrderCache<S>>,
    /// The invalidations of other instances, coalesced like this one's.
    pub invalidator: Invalidator,
    /// For the reset count.
    pub metrics: Arc<Metrics>,
}

impl<S: OrderSource> Hearers<S> {
    async fn hear(&self, signal: Signal) {
        match signal.channel.as_str() {
            LEASES => self.released.notify_waiters(),
            JOBS => self.jobs.notify_one(),
            CACHE => match broadcast::parse(&signal.payload) {
                Ok(notice) if notice.from == self.me => {}
                Ok(notice) => {
                    self.invalidator.request(&notice.invalidations());
                    let guards = notice.guard_ids();
                    if !guards.is_empty() {
                        self.cache.forget_guards(&guards).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Ignoring a cache notice this version cannot read");
                }
            },
            _ => {}
        }
    }

    async fn reset(&self, why: &str) {
        CacheBroadcastReset { why }.emit(&self.metrics);
        self.cache.invalidate_all().await;
        self.released.notify_waiters();
        self.jobs.notify_one();
    }
}

/// Listens until `stop` (nothing to do on SQLite: instances on one file share no cache and
/// find leases and jobs by polling).
pub async fn listen<S: OrderSource>(
    store: Arc<AnyStore>,
    hearers: Hearers<S>,
    stop: CancellationToken,
) {
    let AnyStore::Postgres(pg) = &*store else {
        return;
    };
    let mut first = true;
    loop {
        let listening = tokio::select! {
            () = stop.cancelled() => return,
            l = pg.listen() => l,
        };
        let mut listener = match listening {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "Cannot listen for the fleet's signals; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if !first {
            hearers.reset("listening again after an error").await;
        }
        first = false;
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                n = listener.recv() => n,
            };
            match next {
                Ok(Some(signal)) => hearers.hear(signal).await,
                // The connection dropped; the next receive reconnects.
                Ok(None) => hearers.reset("the listening connection dropped").await,
                Err(e) => {
                    tracing::warn!(error = %e, "Listening for the fleet's signals failed");
                    break;
                }
            }
        }
    }
}
