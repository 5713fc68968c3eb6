//! `sfcdc bench`: the whole ingest pipeline against a preloaded emulator, and the worker pool
//! (see [`worker`]), on SQLite and on PostgreSQL.
//!
//! The emulator (in this process, TLS on loopback, as in the demo) is preloaded with N order
//! change events (about 10% approvals). The pipeline then subscribes from EARLIEST and runs until
//! its checkpoint reaches the last event: decoding, rules with batched REST guard lookups, and one
//! store transaction per batch. Reported: events per second, the p50 and p99 of the per-batch
//! commit time (rules, lookups and the transaction), jobs created, and the process's peak RSS
//! (which includes the emulator and its event log).
//!
//! Then the order cache (see [`cache`]): read latency in process and over the read API, and the
//! REST calls it saves under a mixed workload.

pub mod cache;
pub mod worker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Env;
use crate::emulator::{Emulator, EmulatorConfig};
use crate::ingest::IngestSink;
use crate::rules::RulesConfig;
use crate::salesforce::{RestLookup, SalesforceRest};
use crate::sink::{Batch, Sink, SinkError};
use crate::source::auth::{AuthConfig, Authenticator};
use crate::source::{Source, SourceConfig, Start, connect};
use crate::store::{AnyStore, Position, Store};
use crate::telemetry::metrics::Metrics;

/// Options of `sfcdc bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events to preload.
    pub events: usize,
    /// PostgreSQL URL for the second run (none: SQLite only).
    pub postgres: Option<String>,
    /// Events per FetchRequest.
    pub batch_size: u32,
    /// Jobs for the worker benchmark (0: skip it).
    pub jobs: usize,
    /// Worker concurrency.
    pub concurrency: usize,
    /// Skip the ingest benchmark.
    pub skip_ingest: bool,
    /// In-process reads for the cache benchmark (0: skip it).
    pub reads: usize,
}

/// Everything a benchmark run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BenchReport {
    /// The ingest pipeline, per backend.
    pub ingest: Vec<BenchResult>,
    /// The worker and the queue, per backend and mode.
    pub worker: Vec<worker::WorkerBenchResult>,
    /// The order cache (none when skipped).
    pub cache: Option<cache::CacheBenchResult>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
}

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Events processed.
    pub events: usize,
    /// Wall time from subscribe to caught up.
    pub seconds: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// Median per-batch commit time, ms.
    pub commit_p50_ms: f64,
    /// 99th percentile per-batch commit time, ms.
    pub commit_p99_ms: f64,
    /// Commits (several batches commit together when the store is the slower side).
    pub commits: usize,
    /// Jobs created.
    pub jobs: usize,
}

/// Records how long each commit of the wrapped sink takes.
struct Timed<S> {
    inner: S,
    durations: Mutex<Vec<f64>>,
}

impl<S: Sink> Sink for Timed<S> {
    type Staged = S::Staged;

    async fn checkpoint(&self, channel: &str) -> Result<Option<Start>, SinkError> {
        self.inner.checkpoint(channel).await
    }

    async fn stage(&self, batch: Batch) -> Result<S::Staged, SinkError> {
        self.inner.stage(batch).await
    }

    async fn commit(&self, staged: Vec<S::Staged>) -> Result<(), SinkError> {
        let started = Instant::now();
        let result = self.inner.commit(staged).await;
        self.durations
            .lock()
            .expect("durations lock")
            .push(started.elapsed().as_secs_f64() * 1000.0);
        result
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident set size of this process, in MiB (Linux; 0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn run_one(
    emu: &Emulator,
    ca: &std::path::Path,
    database_url: &str,
    backend: &str,
    options: &BenchOptions,
) -> anyhow::Result<BenchResult> {
    const CHANNEL: &str = "/data/OrderChangeEvent";
    let mut env = Env::from_pairs([
        ("SF_AUTH", "client-credentials"),
        ("SF_CLIENT_ID", emu.credentials().client_id.as_str()),
        ("SF_CLIENT_SECRET", emu.credentials().client_secret.as_str()),
        ("SFCDC_REPLAY_PRESET", "earliest"),
        ("SFCDC_CHANNELS", CHANNEL),
    ]);
    env.set("SF_LOGIN_URL", emu.instance_url());
    env.set("SFCDC_PUBSUB_ENDPOINT", emu.grpc_url());
    env.set("SFCDC_CA_CERT", ca.display().to_string());
    env.set("SFCDC_BATCH_SIZE", options.batch_size.to_string());
    let source_config = SourceConfig::from_env(&env)?;
    let metrics = Arc::new(Metrics::new());
    let http = connect::http_client(Some(ca)).map_err(|e| anyhow::anyhow!(e))?;
    let auth = Arc::new(Authenticator::new(
        AuthConfig::from_env(&env)?,
        http,
        metrics.clone(),
    ));
    auth.session().await?;
    let store = Arc::new(AnyStore::open(database_url).await?);
    let rules = Arc::new(RulesConfig::defaults());
    let rest = Arc::new(SalesforceRest::new(auth.clone(), "60.0".into()));
    let lookup = Arc::new(RestLookup::new(rest, rules.clone()));
    let sink = Arc::new(Timed {
        inner: IngestSink::new(store.clone(), lookup, rules, metrics.clone(), None, 8),
        durations: Mutex::new(Vec::new()),
    });
    let source = Source::new(source_config, auth, sink.clone(), metrics)?;
    let last = emu
        .with_world(|w| w.bus.last(CHANNEL).map(|e| e.replay))
        .unwrap_or(0);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let run = {
        let cancel = cancel.clone();
        async move { source.run(cancel).await }
    };
    let handle = tokio::spawn(run);
    loop {
        if let Some(Position::After(r)) = store.checkpoint(CHANNEL).await?
            && r.position().is_some_and(|p| p >= last)
        {
            break;
        }
        anyhow::ensure!(!handle.is_finished(), "the pipeline stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    cancel.cancel();
    handle.await??;
    let mut durations = sink.durations.lock().expect("durations lock").clone();
    durations.sort_by(f64::total_cmp);
    let jobs = store
        .counts()
        .await?
        .jobs
        .iter()
        .map(|(_, n)| *n as usize)
        .sum();
    Ok(BenchResult {
        backend: backend.to_owned(),
        events: options.events,
        seconds,
        events_per_second: options.events as f64 / seconds,
        commit_p50_ms: percentile(&durations, 0.50),
        commit_p99_ms: percentile(&durations, 0.99),
        commits: durations.len(),
        jobs,
    })
}

/// Creates a fresh schema, hands `run` a URL that selects it on every pooled connection, and
/// drops the schema afterwards.
async fn in_fresh_schema<T, F, Fut>(url: &str, run: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let schema = format!(
        "sfcdc_bench_{}_{}",
        std::process::id(),
        crate::clock::now_ms()
    );
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await?;
    let sep = if url.contains('?') { '&' } else { '?' };
    let result = run(format!("{url}{sep}options=-c%20search_path%3D{schema}")).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&admin)
    .await?;
    result
}

/// Runs the benchmarks and prints their tables.
pub async fn run(options: BenchOptions) -> anyhow::Result<BenchReport> {
    let mut report = BenchReport::default();
    if !options.skip_ingest {
        report.ingest = run_ingest(&options).await?;
    }
    if options.jobs > 0 {
        report.worker = run_worker(&options).await?;
    }
    if options.reads > 0 {
        println!();
        report.cache = Some(cache::run(cache::CacheBenchOptions::from_reads(options.reads)).await?);
    }
    report.peak_rss_mib = peak_rss_mib();
    println!(
        "peak RSS {:.0} MiB (this process: the pipeline and the emulator with its event log)",
        report.peak_rss_mib
    );
    Ok(report)
}

/// The worker and queue benchmarks on each backend.
async fn run_worker(options: &BenchOptions) -> anyhow::Result<Vec<worker::WorkerBenchResult>> {
    println!(
        "Worker: {} jobs, concurrency {}, instant Salesforce and fulfilment stand-ins",
        options.jobs, options.concurrency
    );
    let dir = tempfile::Builder::new().prefix("sfcdc-bench-").tempdir()?;
    let runs = std::sync::atomic::AtomicUsize::new(0);
    let sqlite = || {
        let n = runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = format!("sqlite://{}", dir.path().join(format!("w{n}.db")).display());
        async move { Ok(AnyStore::open(&url).await?) }
    };
    let mut results =
        worker::run_backend("sqlite", options.jobs, options.concurrency, sqlite).await?;
    if let Some(url) = &options.postgres {
        let pg = in_fresh_schema(url, |with_schema| async move {
            let schema_url = with_schema;
            let open = || {
                let url = schema_url.clone();
                async move {
                    let store = AnyStore::open(&url).await?;
                    // Each measurement starts from empty tables.
                    if let AnyStore::Postgres(pg) = &store {
                        sqlx::query("TRUNCATE sfcdc_jobs, sfcdc_triggers, sfcdc_deliveries")
                            .execute(pg.pool())
                            .await?;
                    }
                    Ok(store)
                }
            };
            worker::run_backend("postgres", options.jobs, options.concurrency, open).await
        })
        .await?;
        results.extend(pg);
    }
    println!();
    println!(
        "{:<10} {:<32} {:>8} {:>9} {:>10}",
        "backend", "mode", "jobs", "seconds", "jobs/s"
    );
    for r in &results {
        println!(
            "{:<10} {:<32} {:>8} {:>9.2} {:>10.0}",
            r.backend, r.mode, r.jobs, r.seconds, r.jobs_per_second
        );
    }
    Ok(results)
}

/// The ingest benchmark on each backend.
async fn run_ingest(options: &BenchOptions) -> anyhow::Result<Vec<BenchResult>> {
    let emu = Emulator::start(EmulatorConfig {
        sample_data: true,
        ..EmulatorConfig::ephemeral()
    })
    .await?;
    let dir = tempfile::Builder::new().prefix("sfcdc-bench-").tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap_or_default())?;
    let preload = Instant::now();
    let report = emu.bulk(options.events);
    println!(
        "Preloaded {} order change events ({} approvals) in {:.1} s",
        report.events(),
        report.approved,
        preload.elapsed().as_secs_f64()
    );
    let mut results = vec![
        run_one(
            &emu,
            &ca,
            &format!("sqlite://{}", dir.path().join("bench.db").display()),
            "sqlite",
            options,
        )
        .await?,
    ];
    if let Some(url) = &options.postgres {
        let emu = &emu;
        let ca = &ca;
        let result = in_fresh_schema(url, |with_schema| async move {
            run_one(emu, ca, &with_schema, "postgres", options).await
        })
        .await?;
        results.push(result);
    }
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>13} {:>12} {:>12} {:>8} {:>7}",
        "backend", "events", "seconds", "events/s", "commit p50", "commit p99", "commits", "jobs"
    );
    for r in &results {
        println!(
            "{:<10} {:>9} {:>9.2} {:>13.0} {:>9.2} ms {:>9.2} ms {:>8} {:>7}",
            r.backend,
            r.events,
            r.seconds,
            r.events_per_second,
            r.commit_p50_ms,
            r.commit_p99_ms,
            r.commits,
            r.jobs
        );
    }
    Ok(results)
}
