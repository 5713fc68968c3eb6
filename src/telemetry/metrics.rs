//! Prometheus metrics, owned by each running service instance (not process-global), so tests
//! that run several instances in one process see only their own counts.
//!
//! Labels are fixed and low-cardinality: a channel name, or a value of a closed enum. Nothing
//! user-supplied or secret ever becomes a label. The fields are private to `telemetry`: the
//! events of [`super::events`] write them, and the admin API's scrape sets its gauges through
//! the `observe_*` functions.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{
    CacheKind, DeliveryOutcome, NotifierKind, QuarantineKind, ReconcileReason, ReconnectReason,
    StepOutcome,
};
use crate::decode::ReplayRecovery;
use crate::rules::SkipReason;
use crate::store::lease::TakeoverReason;
use crate::store::queue::DeliveryState;
use crate::store::{JobState, StateCounts};

/// Labels for per-channel metrics. The name is shared, so a lookup allocates nothing.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ChannelLabel {
    channel: Arc<str>,
}

impl ChannelLabel {
    pub(super) fn new(channel: &Arc<str>) -> ChannelLabel {
        ChannelLabel {
            channel: channel.clone(),
        }
    }
}

/// Labels for per-channel metrics with a reason from the closed set `R`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(super) struct ChannelReason<R> {
    channel: Arc<str>,
    reason: R,
}

impl<R> ChannelReason<R> {
    pub(super) fn new(channel: &Arc<str>, reason: R) -> ChannelReason<R> {
        ChannelReason {
            channel: channel.clone(),
            reason,
        }
    }
}

impl<R: EncodeLabelValue + Copy> EncodeLabelSet for ChannelReason<R> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("channel", &*self.channel).encode(encoder.encode_label())?;
        ("reason", self.reason).encode(encoder.encode_label())
    }
}

/// Labels for job outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) outcome: StepOutcome,
}

/// Labels for delivery outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NotifierOutcome {
    pub(super) notifier: NotifierKind,
    pub(super) outcome: DeliveryOutcome,
}

/// Labels for a count of rows in one state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Labels for reconcile counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReconcileLabel {
    pub(super) reason: ReconcileReason,
}

/// Labels for cache metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CacheLabel {
    pub(super) cache: CacheKind,
}

/// Every metric sfcdc exports.
pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    /// Events received, per channel.
    pub(super) events_received: Family<ChannelLabel, Counter>,
    /// Events decoded, per channel.
    pub(super) events_decoded: Family<ChannelLabel, Counter>,
    /// Events quarantined, per channel and reason.
    pub(super) events_quarantined: Family<ChannelReason<QuarantineKind>, Counter>,
    /// Stream reconnects, per channel and reason.
    pub(super) reconnects: Family<ChannelReason<ReconnectReason>, Counter>,
    /// Replay-id recoveries applied, per channel and policy.
    pub(super) replay_recoveries: Family<ChannelReason<ReplayRecovery>, Counter>,
    /// Logins after the first one.
    pub(super) auth_refreshes: Counter,
    /// Events received but not yet committed, per channel.
    pub(super) inflight_events: Family<ChannelLabel, Gauge>,
    /// Seconds a batch commit took, per channel.
    pub(super) batch_commit_seconds: Family<ChannelLabel, Histogram>,
    /// Unix time of the last live message (event or keepalive), per channel.
    pub(super) last_message_timestamp: Family<ChannelLabel, Gauge>,
    /// Provisioning jobs created, per channel.
    pub(super) jobs_created: Family<ChannelLabel, Counter>,
    /// Events (or records of them) that created no job, per channel and reason.
    pub(super) rule_skips: Family<ChannelReason<SkipReason>, Counter>,
    /// `GAP_OVERFLOW` events received, per channel.
    pub(super) gap_overflows: Family<ChannelLabel, Counter>,
    /// Change events whose record ids were a wildcard, per channel.
    pub(super) wildcard_events: Family<ChannelLabel, Counter>,
    /// Cache invalidations the rules asked for (before coalescing).
    pub(super) invalidations_requested: Counter,
    /// Job steps ended, by outcome (`completed`, `cancelled`, `dead`, `retry`, `poll`).
    pub(super) job_steps: Family<OutcomeLabel, Counter>,
    /// Seconds from a job's creation to its completion.
    pub(super) job_latency_seconds: Histogram,
    /// Job steps whose lease was lost to another worker (or an operator's cancel).
    pub(super) job_leases_lost: Counter,
    /// Delivery attempts, by notifier and outcome.
    pub(super) deliveries: Family<NotifierOutcome, Counter>,
    /// Reads answered from the cache.
    pub(super) cache_hits: Family<CacheLabel, Counter>,
    /// Reads that found no usable entry.
    pub(super) cache_misses: Family<CacheLabel, Counter>,
    /// Misses that waited for another caller's load instead of loading.
    pub(super) cache_coalesced_waits: Family<CacheLabel, Counter>,
    /// Loads from Salesforce.
    pub(super) cache_loads: Family<CacheLabel, Counter>,
    /// Loads that failed.
    pub(super) cache_load_errors: Family<CacheLabel, Counter>,
    /// Invalidations applied (after coalescing).
    pub(super) cache_invalidations: Family<CacheLabel, Counter>,
    /// Job steps that scheduled a retry.
    pub(super) job_retries: Counter,
    /// Jobs dead-lettered.
    pub(super) job_dead_letters: Counter,
    /// Jobs by state, read from the store at scrape time.
    jobs_in_state: Family<StateLabel, Gauge>,
    /// Deliveries by state, read from the store at scrape time.
    deliveries_in_state: Family<StateLabel, Gauge>,
    /// Seconds since a channel's position last moved (an event batch or a keepalive's position
    /// committed), at scrape time.
    replay_id_age_seconds: Family<ChannelLabel, Gauge<f64, AtomicU64>>,
    /// 1 when a channel had a live stream within `SFCDC_STREAM_TIMEOUT`, at scrape time.
    channel_ready: Family<ChannelLabel, Gauge>,
    /// 1 when the store answered the scrape's queries.
    store_up: Gauge,
    /// Resident memory of the process, in bytes.
    resident_memory_bytes: Gauge,
    /// Peak resident memory of the process, in bytes.
    peak_resident_memory_bytes: Gauge,
    /// 1 while this instance holds a channel's lease.
    pub(super) channel_leader: Family<ChannelLabel, Gauge>,
    /// The generation of the lease this instance holds (or last held) for a channel.
    pub(super) lease_generation: Family<ChannelLabel, Gauge>,
    /// Leases this instance took, per channel and why the lease was free.
    pub(super) lease_takeovers: Family<ChannelReason<TakeoverReason>, Counter>,
    /// Leases this instance lost while it held them (taken over, reset, or unrenewable).
    pub(super) lease_lost: Family<ChannelLabel, Counter>,
    /// Times this instance dropped its whole cache because it may have missed invalidations.
    pub(super) cache_broadcast_resets: Counter,
    /// Jobs created by reconcile scans, by why the scan ran.
    pub(super) reconcile_jobs_created: Family<ReconcileLabel, Counter>,
    /// Orders reconcile scans read, by why the scan ran.
    pub(super) reconcile_orders_scanned: Family<ReconcileLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Commit times: fine below 10 ms, where a healthy store's commits fall, so quantiles read from
/// the buckets are close to exact.
fn commit_histogram() -> Histogram {
    Histogram::new([
        0.00025, 0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005,
        0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sfcdc");
        let m = Metrics {
            registry: std::sync::Mutex::new(Registry::default()),
            events_received: Family::default(),
            events_decoded: Family::default(),
            events_quarantined: Family::default(),
            reconnects: Family::default(),
            replay_recoveries: Family::default(),
            auth_refreshes: Counter::default(),
            inflight_events: Family::default(),
            batch_commit_seconds: Family::new_with_constructor(commit_histogram),
            last_message_timestamp: Family::default(),
            jobs_created: Family::default(),
            rule_skips: Family::default(),
            gap_overflows: Family::default(),
            wildcard_events: Family::default(),
            invalidations_requested: Counter::default(),
            job_steps: Family::default(),
            job_latency_seconds: Histogram::new([
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            job_leases_lost: Counter::default(),
            deliveries: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_coalesced_waits: Family::default(),
            cache_loads: Family::default(),
            cache_load_errors: Family::default(),
            cache_invalidations: Family::default(),
            job_retries: Counter::default(),
            job_dead_letters: Counter::default(),
            jobs_in_state: Family::default(),
            deliveries_in_state: Family::default(),
            replay_id_age_seconds: Family::default(),
            channel_ready: Family::default(),
            store_up: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            peak_resident_memory_bytes: Gauge::default(),
            channel_leader: Family::default(),
            lease_generation: Family::default(),
            lease_takeovers: Family::default(),
            lease_lost: Family::default(),
            cache_broadcast_resets: Counter::default(),
            reconcile_jobs_created: Family::default(),
            reconcile_orders_scanned: Family::default(),
        };
        registry.register(
            "events_received",
            "Events received from the Pub/Sub API",
            m.events_received.clone(),
        );
        registry.register("events_decoded", "Events decoded", m.events_decoded.clone());
        registry.register(
            "events_quarantined",
            "Events that could not be processed and were quarantined",
            m.events_quarantined.clone(),
        );
        registry.register(
            "reconnects",
            "Subscription reconnects by reason",
            m.reconnects.clone(),
        );
        registry.register(
            "replay_recoveries",
            "Invalid stored replay ids replaced by SFCDC_REPLAY_RECOVERY",
            m.replay_recoveries.clone(),
        );
        registry.register(
            "auth_refreshes",
            "Salesforce logins after the first",
            m.auth_refreshes.clone(),
        );
        registry.register(
            "inflight_events",
            "Events received and not yet committed",
            m.inflight_events.clone(),
        );
        registry.register(
            "batch_commit_seconds",
            "Time to commit one batch",
            m.batch_commit_seconds.clone(),
        );
        registry.register(
            "last_message_timestamp_seconds",
            "Unix time of the last event or keepalive",
            m.last_message_timestamp.clone(),
        );
        registry.register(
            "jobs_created",
            "Provisioning jobs created",
            m.jobs_created.clone(),
        );
        registry.register(
            "rule_skips",
            "Events or records that created no job, by reason",
            m.rule_skips.clone(),
        );
        registry.register(
            "gap_overflows",
            "GAP_OVERFLOW events received (a reconciliation ran)",
            m.gap_overflows.clone(),
        );
        registry.register(
            "wildcard_record_ids",
            "Change events naming their records by a wildcard (a reconciliation ran)",
            m.wildcard_events.clone(),
        );
        registry.register(
            "invalidations_requested",
            "Cache invalidations the rules asked for, before coalescing",
            m.invalidations_requested.clone(),
        );
        registry.register(
            "job_steps",
            "Job steps ended, by outcome",
            m.job_steps.clone(),
        );
        registry.register(
            "job_latency_seconds",
            "Time from a job's creation to its completion",
            m.job_latency_seconds.clone(),
        );
        registry.register(
            "job_leases_lost",
            "Job steps whose lease was lost to another worker or a cancel",
            m.job_leases_lost.clone(),
        );
        registry.register(
            "deliveries",
            "Notification delivery attempts, by notifier and outcome",
            m.deliveries.clone(),
        );
        registry.register(
            "cache_hits",
            "Reads answered from the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Reads that found no usable cache entry",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_coalesced_waits",
            "Cache misses that waited for another caller's load",
            m.cache_coalesced_waits.clone(),
        );
        registry.register(
            "cache_loads",
            "Cache loads from Salesforce",
            m.cache_loads.clone(),
        );
        registry.register(
            "cache_load_errors",
            "Cache loads that failed",
            m.cache_load_errors.clone(),
        );
        registry.register(
            "cache_invalidations",
            "Cache invalidations applied, after coalescing",
            m.cache_invalidations.clone(),
        );
        registry.register(
            "job_retries",
            "Job steps that failed and scheduled a retry",
            m.job_retries.clone(),
        );
        registry.register(
            "job_dead_letters",
            "Jobs dead-lettered after their last attempt or a permanent error",
            m.job_dead_letters.clone(),
        );
        registry.register(
            "jobs_in_state",
            "Jobs in the store, by state (read at scrape time)",
            m.jobs_in_state.clone(),
        );
        registry.register(
            "deliveries_in_state",
            "Notification deliveries in the store, by state (read at scrape time)",
            m.deliveries_in_state.clone(),
        );
        registry.register(
            "replay_id_age_seconds",
            "Seconds since the channel's committed replay id last moved",
            m.replay_id_age_seconds.clone(),
        );
        registry.register(
            "channel_ready",
            "1 when the channel had a live stream within SFCDC_STREAM_TIMEOUT",
            m.channel_ready.clone(),
        );
        registry.register(
            "store_up",
            "1 when the store answered the last scrape",
            m.store_up.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the process",
            m.resident_memory_bytes.clone(),
        );
        registry.register(
            "process_peak_resident_memory_bytes",
            "Peak resident memory of the process",
            m.peak_resident_memory_bytes.clone(),
        );
        registry.register(
            "channel_leader",
            "1 while this instance holds the channel's lease and subscribes",
            m.channel_leader.clone(),
        );
        registry.register(
            "lease_generation",
            "Generation of the channel lease this instance holds or last held",
            m.lease_generation.clone(),
        );
        registry.register(
            "lease_takeovers",
            "Channel leases this instance took, by why the lease was free",
            m.lease_takeovers.clone(),
        );
        registry.register(
            "lease_lost",
            "Channel leases this instance lost while holding them",
            m.lease_lost.clone(),
        );
        registry.register(
            "cache_broadcast_resets",
            "Whole-cache drops after the invalidation broadcast was interrupted",
            m.cache_broadcast_resets.clone(),
        );
        registry.register(
            "reconcile_jobs_created",
            "Jobs created by reconcile scans (non-zero: approvals the stream did not deliver)",
            m.reconcile_jobs_created.clone(),
        );
        registry.register(
            "reconcile_orders_scanned",
            "Orders read by reconcile scans",
            m.reconcile_orders_scanned.clone(),
        );
        *m.registry.lock().expect("registry lock") = registry;
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Creates a channel's series at zero, so that they are exported (and rates can be taken)
    /// before its first event.
    pub fn declare_channel(&self, channel: &str) {
        let label = ChannelLabel::new(&Arc::from(channel));
        let _ = self.events_received.get_or_create(&label);
        let _ = self.events_decoded.get_or_create(&label);
        let _ = self.inflight_events.get_or_create(&label);
        let _ = self.batch_commit_seconds.get_or_create(&label);
        let _ = self.jobs_created.get_or_create(&label);
        let _ = self.channel_ready.get_or_create(&label);
        let _ = self.channel_leader.get_or_create(&label);
        let _ = self.lease_lost.get_or_create(&label);
    }

    /// At scrape time: whether the store answered, and its rows by state (every state is set;
    /// one absent from the counts reads 0).
    pub fn observe_store(&self, up: bool, counts: Option<&StateCounts>) {
        self.store_up.set(i64::from(up));
        if let Some(counts) = counts {
            let jobs = JobState::ALL.map(JobState::as_str);
            set_states(&self.jobs_in_state, &jobs, &counts.jobs);
            let deliveries = DeliveryState::ALL.map(DeliveryState::as_str);
            set_states(&self.deliveries_in_state, &deliveries, &counts.deliveries);
        }
    }

    /// At scrape time: whether a channel is ready, and the age of its position in seconds when
    /// known.
    pub fn observe_channel(&self, channel: &str, ready: bool, position_age: Option<f64>) {
        let label = ChannelLabel::new(&Arc::from(channel));
        self.channel_ready
            .get_or_create(&label)
            .set(i64::from(ready));
        if let Some(age) = position_age {
            self.replay_id_age_seconds.get_or_create(&label).set(age);
        }
    }

    /// At scrape time: the process's resident and peak memory (Linux; elsewhere the gauges
    /// stay 0).
    pub fn observe_memory(&self) {
        if let Some((rss, peak)) = process_memory() {
            self.resident_memory_bytes.set(rss as i64);
            self.peak_resident_memory_bytes.set(peak as i64);
        }
    }

    /// The sum of the series of `name` that carry every label of `labels` (see
    /// [`sample_sum`]). For tests and benchmarks.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample_sum(&self.render(), name, labels)
    }
}

/// In a Prometheus text rendering, the sum of the samples named `name` (as rendered, e.g.
/// `sfcdc_jobs_created_total`) that carry every label of `labels`; 0 when there are none.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sets each state's gauge in `family` from `counts`; states absent from `counts` read 0.
fn set_states(family: &Family<StateLabel, Gauge>, all: &[&'static str], counts: &[(String, i64)]) {
    for &state in all {
        let n = counts
            .iter()
            .find(|(s, _)| s == state)
            .map_or(0, |(_, n)| *n);
        family.get_or_create(&StateLabel { state }).set(n);
    }
}

/// Resident and peak resident memory in bytes, from `/proc/self/status` (`VmRSS`, `VmHWM`).
pub fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}
