//! Reconciliation: find every order that should have a provisioning job and has none, and create
//! that job. It covers what the stream cannot deliver: approvals made before sfcdc first ran,
//! approvals in a window whose events expired (a lost replay position), changes Salesforce
//! dropped (`GAP_OVERFLOW`) or named only by a wildcard.
//!
//! **Candidates** are orders whose status is a trigger status, read from Salesforce: over SOQL,
//! page by page, or, past `SFCDC_BULK_THRESHOLD` matching records, through a Bulk API 2.0 query
//! job read one CSV page at a time; memory holds one page whatever the size of the org. The same
//! rules as ingest decide ([`rules::reconcile_scan`]: the guards, then a job keyed by the order,
//! its status and the stamp of that state), and each page commits in one transaction like a
//! batch of events, so running reconcile twice creates nothing new, and a reconcile, a change
//! event and a platform event for one approval make one job (one open job per approval; the
//! worker's recheck before submit is the second backstop).
//!
//! **Snapshot consistency.** Each channel's position is noted before the scan starts; changes
//! that land during the scan arrive on the stream after those positions and dedupe by key, so an
//! order approved mid-scan gets exactly one job whichever side sees it first. A scan is safe
//! beside a running service.

pub mod recovery;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::decode::{Position, ReplayId};
use crate::ingest::job_row;
use crate::rules::{self, RulesConfig, Scanned, SkipReason};
use crate::salesforce::bulk::BulkOptions;
use crate::salesforce::rest::{order_facts, record_id, soql_datetime};
use crate::salesforce::{RestError, SalesforceRest};
use crate::store::{AnyStore, NewTrigger, Store, StoreBatch, StoreError};
use crate::telemetry::events::{InternalEvent, ReconcileFinished, ReconcileReason};
use crate::telemetry::metrics::Metrics;

/// How many of the orders given a job a summary lists.
pub const LISTED_ORDERS: usize = 1_000;

/// The channel name reconcile jobs and triggers are recorded under.
pub const RECONCILE_CHANNEL: &str = "reconcile";

/// What the first start scans (`SFCDC_BACKFILL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backfill {
    /// Nothing: only what the stream delivers from the preset on.
    None,
    /// Every approved order without a job.
    All,
    /// Orders modified within this long before the first start.
    Recent(Duration),
}

/// Reconcile settings.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// `SFCDC_BULK_THRESHOLD`: past this many matching orders, read them with Bulk API 2.0.
    pub bulk_threshold: u64,
    /// `SFCDC_BACKFILL`: the first start's scan.
    pub backfill: Backfill,
    /// `SFCDC_RECONCILE_EVERY`: a periodic scan of the recent past (`None`: off).
    pub every: Option<Duration>,
    /// `SFCDC_RECONCILE_MARGIN`: how far before the last committed event a lost window starts.
    pub margin: Duration,
    /// Bulk API 2.0 page size and polling.
    pub bulk: BulkOptions,
}

impl ReconcileConfig {
    /// Reads the reconcile variables.
    pub fn from_env(env: &Env) -> Result<ReconcileConfig, ConfigError> {
        let backfill = env.parse_or("SFCDC_BACKFILL", Backfill::None, |s| match s.trim() {
            "none" | "off" | "" => Ok(Backfill::None),
            "all" => Ok(Backfill::All),
            other => humantime::parse_duration(other)
                .map(Backfill::Recent)
                .map_err(|_| "expected none, all, or a duration such as 30d".to_owned()),
        })?;
        let every = env.parse_or("SFCDC_RECONCILE_EVERY", None, |s| match s.trim() {
            "off" | "none" | "" => Ok(None),
            other => humantime::parse_duration(other)
                .ok()
                .filter(|d| *d >= Duration::from_secs(1))
                .map(Some)
                .ok_or_else(|| "expected off or a duration of at least 1s, such as 24h".to_owned()),
        })?;
        Ok(ReconcileConfig {
            bulk_threshold: env.int_or("SFCDC_BULK_THRESHOLD", 2_000, 1..=100_000_000)?,
            backfill,
            every,
            margin: env.duration_or("SFCDC_RECONCILE_MARGIN", Duration::from_secs(300))?,
            bulk: BulkOptions::default(),
        })
    }
}

/// An order's `LastModifiedDate` as the key of its reconcile trigger: one form whatever the API
/// that read it (REST writes `…000+0000`, Bulk API 2.0's CSV may write `…000Z`), so a scan over
/// SOQL and one over Bulk API 2.0 make the same key for the same state. A value that does not
/// parse is kept as it is.
pub fn stamp(raw: &str) -> String {
    let b = raw.as_bytes();
    // `+hhmm` is RFC 3339's `+hh:mm` without its colon.
    let fixed = match b.len().checked_sub(5).map(|i| (i, b[i])) {
        Some((i, b'+' | b'-')) if raw[i + 1..].bytes().all(|c| c.is_ascii_digit()) => {
            format!("{}:{}", &raw[..i + 3], &raw[i + 3..])
        }
        _ => raw.to_owned(),
    };
    time::OffsetDateTime::parse(&fixed, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .map_or_else(|| raw.to_owned(), crate::clock::rfc3339)
}

/// Which orders a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every approved order.
    All,
    /// Orders modified at or after this time (epoch ms).
    Since(i64),
}

/// Counts of a scan so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Orders read.
    pub scanned: u64,
    /// Orders with a trigger status.
    pub candidates: u64,
    /// Jobs created (with `--dry-run`: that would be).
    pub created: u64,
    /// Candidates that already had their job.
    pub existing: u64,
    /// Candidates the guards refused.
    pub skipped_by_guard: u64,
}

/// What a scan did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Why it ran.
    pub reason: &'static str,
    /// `soql` or `bulk`.
    pub via: &'static str,
    /// The orders that matched, as counted before reading.
    pub matched: u64,
    /// The counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// Each channel's position when the scan started: what changes after it, the stream
    /// delivers.
    pub positions: Vec<(String, Position)>,
    /// The first [`LISTED_ORDERS`] orders that got (or with `--dry-run`, would get) a job;
    /// `counts.created` has them all. Bounded, so a scan of a whole org stays one page in memory.
    pub jobs: Vec<String>,
}

/// Told after each page: what the scan has done so far, and how many orders matched.
pub trait Progress: Send + Sync {
    /// A page was handled.
    fn page(&self, counts: &Counts, matched: u64);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn page(&self, _: &Counts, _: u64) {}
}

/// Why a scan failed. Nothing it committed is undone: a rerun picks up where it stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Salesforce did not answer as expected.
    #[error("reading orders from Salesforce: {0}")]
    Rest(#[from] RestError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs reconcile scans.
pub struct Reconciler {
    rest: Arc<SalesforceRest>,
    store: Arc<AnyStore>,
    rules: Arc<RulesConfig>,
    metrics: Arc<Metrics>,
    config: ReconcileConfig,
    max_attempts: i32,
    clock: Clock,
    /// Woken when jobs are created, so an idle worker in this process starts at once.
    jobs_created: Option<Arc<Notify>>,
}

impl Reconciler {
    /// A reconciler reading Salesforce through `rest` and writing to `store`.
    pub fn new(
        rest: Arc<SalesforceRest>,
        store: Arc<AnyStore>,
        rules: Arc<RulesConfig>,
        metrics: Arc<Metrics>,
        config: ReconcileConfig,
        max_attempts: i32,
        clock: Clock,
    ) -> Self {
        Reconciler {
            rest,
            store,
            rules,
            metrics,
            config,
            max_attempts,
            clock,
            jobs_created: None,
        }
    }

    /// Wakes `jobs_created` when a scan creates jobs.
    pub fn with_wake(mut self, jobs_created: Arc<Notify>) -> Self {
        self.jobs_created = Some(jobs_created);
        self
    }

    /// The settings.
    pub fn config(&self) -> &ReconcileConfig {
        &self.config
    }

    /// The store it writes to.
    pub fn store(&self) -> &Arc<AnyStore> {
        &self.store
    }

    /// The clock it judges time by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn filter(&self, scope: Scope) -> String {
        let statuses: Vec<String> = self
            .rules
            .provision_statuses
            .iter()
            .map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect();
        let mut filter = format!("Status IN ({})", statuses.join(", "));
        if let Scope::Since(ms) = scope {
            filter.push_str(&format!(" AND LastModifiedDate >= {}", soql_datetime(ms)));
        }
        filter
    }

    fn select(&self, scope: Scope) -> String {
        format!(
            "SELECT Id, Status, AccountId, {}, {}, LastModifiedDate FROM Order WHERE {} ORDER BY Id",
            self.rules.activation_field,
            self.rules.external_id_field,
            self.filter(scope)
        )
    }

    /// Scans `scope` and creates the missing jobs (or, with `dry_run`, says which it would).
    pub async fn run(
        &self,
        scope: Scope,
        reason: ReconcileReason,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<Summary, ReconcileError> {
        let started = Instant::now();
        let positions = self
            .store
            .checkpoints()
            .await?
            .into_iter()
            .map(|c| (c.channel, c.position))
            .collect();
        let matched = self
            .rest
            .count(&format!(
                "SELECT count() FROM Order WHERE {}",
                self.filter(scope)
            ))
            .await?;
        let soql = self.select(scope);
        let mut counts = Counts::default();
        let mut jobs = Vec::new();
        let via = if matched > self.config.bulk_threshold {
            let mut results = self.rest.bulk_query(&soql, self.config.bulk).await?;
            while let Some(page) = results.next_page().await? {
                self.page(&page, dry_run, &mut counts, &mut jobs).await?;
                progress.page(&counts, matched);
            }
            "bulk"
        } else {
            let mut pages = self.rest.query_pages(&soql);
            while let Some(page) = pages.next_page().await? {
                self.page(&page, dry_run, &mut counts, &mut jobs).await?;
                progress.page(&counts, matched);
            }
            "soql"
        };
        let elapsed = started.elapsed();
        ReconcileFinished {
            reason,
            via,
            scanned: counts.scanned,
            candidates: counts.candidates,
            created: counts.created,
            existing: counts.existing,
            skipped_by_guard: counts.skipped_by_guard,
            elapsed,
            dry_run,
        }
        .emit(&self.metrics);
        Ok(Summary {
            reason: reason.as_str(),
            via,
            matched,
            counts,
            dry_run,
            seconds: elapsed.as_secs_f64(),
            positions,
            jobs,
        })
    }

    /// Evaluates one page and commits its jobs in one transaction.
    async fn page(
        &self,
        records: &[Json],
        dry_run: bool,
        counts: &mut Counts,
        jobs: &mut Vec<String>,
    ) -> Result<(), ReconcileError> {
        let scanned: Vec<Scanned> = records
            .iter()
            .filter_map(|r| {
                let fields = r.as_object()?;
                Some(Scanned {
                    id: record_id(r)?,
                    facts: order_facts(fields, &self.rules),
                    stamp: stamp(
                        fields
                            .get("LastModifiedDate")
                            .and_then(Json::as_str)
                            .unwrap_or_default(),
                    ),
                })
            })
            .collect();
        counts.scanned += records.len() as u64;
        let decision = rules::reconcile_scan(&self.rules, &scanned);
        counts.candidates += decision.triggers.len() as u64;
        counts.skipped_by_guard += decision
            .skips
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    SkipReason::ActivationBlocking | SkipReason::ExternalIdPresent
                )
            })
            .count() as u64;
        if decision.jobs.is_empty() {
            return Ok(());
        }
        if dry_run {
            let keys: Vec<String> = decision.jobs.iter().map(|j| j.key.clone()).collect();
            let orders: Vec<String> = decision
                .jobs
                .iter()
                .map(|j| j.order_id.to_string())
                .collect();
            let known = self.store.known_triggers(&keys).await?;
            let open = self.store.open_approvals(&orders).await?;
            for j in &decision.jobs {
                let order = j.order_id.to_string();
                if known.contains(&j.key) || open.contains(&(order.clone(), j.status.clone())) {
                    counts.existing += 1;
                } else {
                    counts.created += 1;
                    if jobs.len() < LISTED_ORDERS {
                        jobs.push(order);
                    }
                }
            }
            return Ok(());
        }
        let none = ReplayId::default();
        let batch = StoreBatch {
            channel: RECONCILE_CHANNEL.into(),
            triggers: decision
                .triggers
                .iter()
                .map(|t| NewTrigger {
                    key: t.key.clone(),
                    order_id: t.order_id.to_string(),
                    skipped: t.skipped,
                })
                .collect(),
            jobs: decision
                .jobs
                .iter()
                .map(|j| job_row(j, RECONCILE_CHANNEL, &none, "", self.max_attempts))
                .collect(),
            now_ms: self.clock.now_ms(),
            ..StoreBatch::default()
        };
        let outcome = self.store.commit_batch(&batch).await?;
        counts.created += outcome.created.len() as u64;
        // A job not created had its trigger recorded already, or its approval an open job.
        counts.existing += (decision.jobs.len() - outcome.created.len()) as u64;
        let created: std::collections::HashSet<&str> =
            outcome.created.iter().map(|(_, k)| k.as_str()).collect();
        jobs.extend(
            batch
                .jobs
                .iter()
                .filter(|j| created.contains(j.key.as_str()))
                .map(|j| j.order_id.clone())
                .take(LISTED_ORDERS.saturating_sub(jobs.len())),
        );
        if !outcome.created.is_empty()
            && let Some(wake) = &self.jobs_created
        {
            wake.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::stamp;

    #[test]
    fn stamps_from_rest_and_bulk_are_one_form() {
        let rest = stamp("2024-03-01T14:25:51.000+0000");
        assert_eq!(rest, "2024-03-01T14:25:51.000Z");
        assert_eq!(stamp("2024-03-01T14:25:51.000Z"), rest);
        assert_eq!(stamp("2024-03-01T14:25:51Z"), rest);
        assert_eq!(stamp("2024-03-01T15:25:51.000+0100"), rest);
        assert_eq!(stamp("not a time"), "not a time");
        assert_eq!(stamp(""), "");
    }
}
