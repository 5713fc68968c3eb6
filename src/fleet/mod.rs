//! Several instances on one store: one fenced subscriber per channel, the others standing by.
//!
//! For each configured channel, every instance runs a leader loop (`lead`): it takes the
//! channel's lease when it is free (never held, released, or expired by the database's clock),
//! subscribes under it, and renews it every third of `SFCDC_LEASE_TTL`. Its commits carry the
//! lease as a fence, checked in the commit's own transaction, so an instance that lost the
//! lease (paused past its TTL, partitioned, deposed by an operator's reset) can never commit
//! again: its next commit is refused, it stops subscribing, and it stands by. Nothing is lost,
//! because the new holder resumes from the last fenced commit.
//!
//! **Failover.** A graceful stop commits what is in hand, then releases its leases; on
//! PostgreSQL the release is announced with `NOTIFY`, so a standby takes over at once. After a
//! crash a standby takes over when the lease expires: within the TTL plus one renewal interval.
//! A holder stopped in the middle of a commit (SIGSTOP, a frozen VM) would keep its lock on the
//! lease row and block the takeover, so on PostgreSQL the server ends any session idle inside a
//! transaction for half the TTL ([`lease::idle_in_transaction`]), before the lease expires.
//!
//! **Spreading.** Instances record heartbeats; each takes at most its fair share of the channels
//! (the channel count divided by the live instances, rounded up), and one holding more than its
//! share releases one channel per renewal, so a new instance gets its share without a flap. A
//! channel nobody has held for two renewal intervals is taken by anyone, share or not.
//!
//! On SQLite the lease lives in the same file, so a second process on it stands by too.

pub mod notify;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};
use crate::ingest::IngestSink;
use crate::salesforce::OrderLookup;
use crate::source::subscription::ChannelError;
use crate::source::{Source, SourceError};
use crate::store::AnyStore;
use crate::store::lease::{self, Fence, Leases};
use crate::telemetry::events::{InternalEvent, LeaseLost, LeaseReleased, LeaseTaken};
use crate::telemetry::health::Role;
use crate::telemetry::metrics::Metrics;

/// Fleet settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// `SFCDC_INSTANCE_ID`: this instance's name in leases, logs and `sfcdc channels`.
    pub instance_id: String,
    /// `SFCDC_LEASE_TTL`: how long a lease lasts without renewal.
    pub lease_ttl: Duration,
}

impl FleetConfig {
    /// Reads `SFCDC_INSTANCE_ID` (default: the host name and the process id) and
    /// `SFCDC_LEASE_TTL` (default 15 s).
    pub fn from_env(env: &Env) -> Result<FleetConfig, ConfigError> {
        let instance_id = env.parse_or("SFCDC_INSTANCE_ID", default_instance_id(), |s| {
            let s = s.trim();
            if s.is_empty() || s.len() > 200 || s.chars().any(char::is_control) {
                Err("expected a name of 1 to 200 printable characters".into())
            } else {
                Ok(s.to_owned())
            }
        })?;
        let lease_ttl = env.positive_duration_or("SFCDC_LEASE_TTL", lease::DEFAULT_LEASE_TTL)?;
        if lease_ttl < Duration::from_millis(300) {
            return Err(ConfigError::new(
                "SFCDC_LEASE_TTL",
                "expected at least 300ms (leases are renewed every third of it)",
            ));
        }
        Ok(FleetConfig {
            instance_id,
            lease_ttl,
        })
    }

    /// How long a PostgreSQL session may sit idle inside a transaction before the server ends
    /// it, for this TTL ([`lease::idle_in_transaction`]).
    pub fn idle_in_transaction(&self) -> Duration {
        lease::idle_in_transaction(self.lease_ttl)
    }

    /// How often a held lease is renewed (and a standby looks again): a third of the TTL.
    pub fn renew_every(&self) -> Duration {
        self.lease_ttl / 3
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The host name and the process id: unique per process on a host, readable in a listing.
fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "sfcdc".to_owned());
    format!("{host}-{}", std::process::id())
}

/// What the leader loops of one instance share: how many channels and instances there are, and
/// which channels this instance holds (in the order it took them).
#[derive(Debug)]
struct Share {
    channels: usize,
    live_instances: AtomicUsize,
    held: Mutex<BTreeMap<u64, String>>,
    next: AtomicU64,
}

impl Share {
    fn new(channels: usize) -> Share {
        Share {
            channels,
            live_instances: AtomicUsize::new(1),
            held: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    fn fair(&self) -> usize {
        let live = self.live_instances.load(Ordering::Relaxed).max(1);
        self.channels.div_ceil(live)
    }

    fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn take(&self, channel: &str) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, channel.to_owned());
        n
    }

    fn drop_held(&self, n: u64) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&n);
    }

    /// Whether the channel taken as `n` should go: this instance holds more than its share and
    /// `n` is the one it took last.
    fn surplus(&self, n: u64) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.len() > self.fair() && held.keys().next_back() == Some(&n)
    }
}

/// Everything a leader loop needs.
pub struct Fleet<L: OrderLookup> {
    config: FleetConfig,
    store: Arc<AnyStore>,
    sink: Arc<IngestSink<AnyStore, L>>,
    metrics: Arc<Metrics>,
    /// Woken when a lease is released somewhere (PostgreSQL `NOTIFY`).
    released: Arc<Notify>,
    share: Arc<Share>,
}

impl<L: OrderLookup> Fleet<L> {
    /// A fleet member committing through `sink` to `store`.
    pub fn new(
        config: FleetConfig,
        store: Arc<AnyStore>,
        sink: Arc<IngestSink<AnyStore, L>>,
        metrics: Arc<Metrics>,
        channels: usize,
    ) -> Self {
        Fleet {
            config,
            store,
            sink,
            metrics,
            released: Arc::new(Notify::new()),
            share: Arc::new(Share::new(channels)),
        }
    }

    /// Notified when another instance releases a lease.
    pub fn released(&self) -> &Arc<Notify> {
        &self.released
    }

    /// This instance's settings.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Runs every configured channel of `source` under its lease until `stop`, then releases
    /// what it holds. Returns the channels that failed for good.
    pub async fn run(
        &self,
        source: &Source<IngestSink<AnyStore, L>>,
        stop: CancellationToken,
    ) -> Result<(), SourceError> {
        let refresher_stop = stop.child_token();
        let _refresher_guard = refresher_stop.clone().drop_guard();
        let refresher = source.auth().spawn_refresher(refresher_stop);
        let heartbeat = self.heartbeat(stop.child_token());
        let leaders = futures_util::future::join_all(
            source
                .channels()
                .iter()
                .map(|channel| self.lead(source, Arc::from(channel.as_str()), stop.clone())),
        );
        let (results, ()) = tokio::join!(leaders, heartbeat);
        refresher.abort();
        let failed: Vec<(String, String)> = source
            .channels()
            .iter()
            .zip(results)
            .filter_map(|(c, r)| r.err().map(|e| (c.clone(), e.to_string())))
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Channels(failed))
        }
    }

    /// Records this instance's heartbeat and learns the fleet's size.
    async fn count_instances(&self) {
        match self
            .store
            .heartbeat(&self.config.instance_id, self.config.ttl_ms())
            .await
        {
            Ok(live) => self.share.live_instances.store(live, Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "Could not record this instance's heartbeat"),
        }
    }

    /// Records this instance's heartbeat every renewal interval. On `stop` it leaves the fleet
    /// at once, before its leases are released, so the instances that take them over count
    /// the fleet without it.
    async fn heartbeat(&self, stop: CancellationToken) {
        loop {
            self.count_instances().await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.config.renew_every()) => {}
            }
        }
        if let Err(e) = self.store.leave(&self.config.instance_id).await {
            tracing::debug!(error = %e, "Could not remove this instance's heartbeat");
        }
    }

    /// Whether this instance should try to take `channel` now: it is under its fair share (by
    /// a fresh count of the fleet), or nobody has held the channel for two renewal intervals.
    async fn may_take(&self, channel: &str) -> bool {
        if self.share.held() < self.share.fair() {
            return true;
        }
        // At its share by the last count: an instance may have left since.
        self.count_instances().await;
        if self.share.held() < self.share.fair() {
            return true;
        }
        let grace = 2 * i64::try_from(self.config.renew_every().as_millis()).unwrap_or(0);
        match self.store.leases().await {
            Ok(rows) => rows
                .iter()
                .find(|r| r.channel == channel)
                .is_none_or(|r| !r.is_live() && r.read_at - r.expires_at > grace),
            Err(_) => false,
        }
    }

    /// Marks `channel` as standing by, with what the lease table says of it.
    async fn stand_by(&self, source: &Source<IngestSink<AnyStore, L>>, channel: &str) {
        let health = source.liveness().channel(channel);
        let role = match self.store.leases().await {
            Ok(rows) => match rows.into_iter().find(|r| r.channel == channel) {
                Some(r) if r.is_live() => Role::Standby {
                    holder: r.holder,
                    unheld_since_ms: None,
                },
                Some(r) => Role::Standby {
                    holder: None,
                    unheld_since_ms: Some(r.expires_at),
                },
                None => Role::Standby {
                    holder: None,
                    unheld_since_ms: None,
                },
            },
            Err(_) => return,
        };
        health.set_role(role);
    }

    /// One channel's leader loop: take the lease when free, subscribe under it, stand by when
    /// it is gone; release it on `stop`.
    async fn lead(
        &self,
        source: &Source<IngestSink<AnyStore, L>>,
        channel: Arc<str>,
        stop: CancellationToken,
    ) -> Result<(), ChannelError> {
        let me = &self.config.instance_id;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let taken = if self.may_take(&channel).await {
                match self.store.acquire(&channel, me, self.config.ttl_ms()).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(channel = %channel, error = %e, "Could not read the channel's lease; trying again");
                        None
                    }
                }
            } else {
                None
            };
            let Some(takeover) = taken else {
                self.stand_by(source, &channel).await;
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = self.released.notified() => {}
                    () = tokio::time::sleep(self.config.renew_every()) => {}
                }
                continue;
            };
            let fence = takeover.fence.clone();
            LeaseTaken {
                channel: &channel,
                instance: me,
                generation: fence.generation,
                reason: takeover.reason,
            }
            .emit(&self.metrics);
            let n = self.share.take(&channel);
            source.liveness().channel(&channel).set_role(Role::Leader {
                generation: fence.generation,
            });
            self.sink.set_fence(&channel, Some(fence.clone()));
            let ended = self.hold(source, &channel, &fence, n, &stop).await;
            self.sink.set_fence(&channel, None);
            self.share.drop_held(n);
            match ended {
                Held::Lost(why) => LeaseLost {
                    channel: &channel,
                    generation: fence.generation,
                    why: &why,
                }
                .emit(&self.metrics),
                Held::Stopped | Held::Surplus => {
                    let why = if matches!(ended, Held::Stopped) {
                        "shutting down"
                    } else {
                        "more than this instance's fair share"
                    };
                    match self.store.release(&channel, &fence).await {
                        Ok(_) => LeaseReleased {
                            channel: &channel,
                            generation: fence.generation,
                            why,
                        }
                        .emit(&self.metrics),
                        Err(e) => {
                            tracing::warn!(channel = %channel, error = %e, "Could not release the lease; it expires on its own");
                        }
                    }
                    if matches!(ended, Held::Stopped) {
                        return Ok(());
                    }
                    // Give the others a renewal interval to take it.
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        () = tokio::time::sleep(self.config.renew_every()) => {}
                    }
                }
                Held::Failed(e) => {
                    let _ = self.store.release(&channel, &fence).await;
                    source.liveness().channel(&channel).stopped(e.to_string());
                    tracing::error!(channel = %channel, error = %e, "Channel stopped for good; the other channels go on");
                    return Err(e);
                }
            }
        }
    }

    /// Subscribes under `fence` and renews it until the subscription ends, the lease is lost,
    /// `stop` fires, or the channel is surplus to this instance's share.
    async fn hold(
        &self,
        source: &Source<IngestSink<AnyStore, L>>,
        channel: &Arc<str>,
        fence: &Fence,
        n: u64,
        stop: &CancellationToken,
    ) -> Held {
        let subscription = stop.child_token();
        let run = source.subscribe(channel, subscription.clone());
        tokio::pin!(run);
        let renew_every = self.config.renew_every();
        let mut unrenewed_since = tokio::time::Instant::now();
        loop {
            tokio::select! {
                ended = &mut run => {
                    return match ended {
                        Ok(()) if stop.is_cancelled() => Held::Stopped,
                        Ok(()) => Held::Lost("the subscription ended".into()),
                        Err(ChannelError::Fenced(e)) => Held::Lost(e.to_string()),
                        Err(e) => Held::Failed(e),
                    };
                }
                () = tokio::time::sleep(renew_every) => {
                    match self.store.renew(channel, fence, self.config.ttl_ms()).await {
                        Ok(true) => unrenewed_since = tokio::time::Instant::now(),
                        Ok(false) => {
                            subscription.cancel();
                            let _ = run.await;
                            return Held::Lost("another instance holds the lease now".into());
                        }
                        Err(e) => {
                            tracing::warn!(channel = %channel, error = %e, "Could not renew the lease");
                            // Past the TTL another instance may hold it: stop before committing.
                            if unrenewed_since.elapsed() >= self.config.lease_ttl {
                                subscription.cancel();
                                let _ = run.await;
                                return Held::Lost("the lease could not be renewed within its TTL".into());
                            }
                        }
                    }
                    if self.share.surplus(n) {
                        subscription.cancel();
                        let _ = run.await;
                        return Held::Surplus;
                    }
                }
            }
        }
    }
}

/// How holding a lease ended.
enum Held {
    /// `stop` fired: release it.
    Stopped,
    /// More than this instance's share: release it for another.
    Surplus,
    /// Another instance (or an operator) has it now, or it could not be renewed.
    Lost(String),
    /// The channel failed for good.
    Failed(ChannelError),
}
