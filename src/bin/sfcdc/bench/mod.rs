//! `sfcdc bench`: the whole ingest pipeline against a preloaded emulator, and the worker pool
//! (see [`worker`]), on SQLite and on PostgreSQL.
//!
//! The emulator (in this process, TLS on loopback, as in the demo) is preloaded with N order
//! change events (about 10% approvals). The pipeline, built as `sfcdc run` builds its ingest side
//! (`app::Ingest`: the same settings, cached guard lookups and invalidator), then subscribes from
//! EARLIEST and runs until its checkpoint reaches the last event: decoding, rules with batched
//! REST guard lookups, and one store transaction per batch. Reported: events per second, the p50
//! and p99 of the commit time (from the service's own `sfcdc_batch_commit_seconds` histogram,
//! interpolated within its buckets), jobs created, and the process's peak RSS (which includes the
//! emulator and its event log), with how far RSS rose during each run. [`service`] measures the
//! service's memory alone, with the emulator in another process.
//!
//! The backlog catch-up (`--report`) is the same run over a larger backlog: the emulator is
//! topped up to `backlog` events and a fresh store subscribes from EARLIEST again.
//!
//! Then the order cache (see [`cache`]): read latency in process and over the read API, and the
//! REST calls it saves under a mixed workload. [`failover`] times the handover between two
//! `sfcdc run` processes on PostgreSQL and what fenced commits cost. [`decode`] times the decoder
//! against apache-avro, and [`report`] puts everything in one table.

pub mod cache;
pub mod decode;
pub mod failover;
pub mod memory;
pub mod node;
pub mod reconcile;
pub mod report;
pub mod service;
pub mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use sfcdc::app::{Ingest, Settings};
use sfcdc::config::Env;
use sfcdc::decode::Position;
use sfcdc::store::{AnyStore, Store};
use sfcdc::telemetry::metrics::Metrics;
use sfcdc_emulator::{Emulator, EmulatorConfig};

/// Flags of `sfcdc bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Order change events to preload (about 10% approvals).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,
    /// Also run on this PostgreSQL database (default: SFCDC_BENCH_POSTGRES_URL or
    /// SFCDC_TEST_POSTGRES_URL when set).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Events per FetchRequest (1 to 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub batch_size: u32,
    /// Jobs for the worker benchmark (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Worker concurrency in the worker benchmark.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Only the worker benchmark.
    #[arg(long, conflicts_with_all = ["cache_only", "failover_only"])]
    pub worker_only: bool,
    /// In-process reads in the cache benchmark; its HTTP runs and its mixed workload each make
    /// a tenth as many (0 skips it).
    #[arg(long, default_value_t = 200_000)]
    pub reads: usize,
    /// Only the cache benchmark.
    #[arg(long, conflicts_with = "failover_only")]
    pub cache_only: bool,
    /// Handovers per signal (SIGTERM, SIGKILL) in the failover benchmark of `--report` and
    /// `--failover-only` (0 skips it, fencing included).
    #[arg(long, default_value_t = 5)]
    pub failover_runs: usize,
    /// Only the failover benchmark: handovers on PostgreSQL, fenced against unfenced commits.
    #[arg(long)]
    pub failover_only: bool,
    /// Run every benchmark (decode next to apache-avro, ingest, backlog catch-up, worker, cache,
    /// failover, memory) and end with one table of the results.
    #[arg(long, conflicts_with_all = ["worker_only", "cache_only", "failover_only"])]
    pub report: bool,
    /// Events of the backlog catch-up in `--report` (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Orders in the org of the reconcile benchmark (`--report`, `--reconcile-only`); a run
    /// over a tenth as many comes first.
    #[arg(long, default_value_t = 100_000)]
    pub reconcile_orders: usize,
    /// Only the reconcile benchmark.
    #[arg(long, conflicts_with_all = ["worker_only", "cache_only", "report"])]
    pub reconcile_only: bool,
    /// Only the decode benchmark: the full decode, the ingest projection and apache-avro on
    /// the mix of order change events and on one event.
    #[arg(long, conflicts_with_all = ["worker_only", "cache_only", "failover_only", "report", "reconcile_only", "service_only"])]
    pub decode_only: bool,
    /// Only the service memory run (`sfcdc run` as a child over `--backlog` events; past a
    /// million, the emulator is fed 250,000 at a time).
    #[arg(long, conflicts_with_all = ["worker_only", "cache_only", "report", "reconcile_only"])]
    pub service_only: bool,
    /// Run the service memory run with the worker off: ingest alone.
    #[arg(long, requires = "service_only")]
    pub no_worker: bool,
    /// Run the service memory run on this PostgreSQL database instead of a fresh SQLite file
    /// (it must be empty: the run counts every job in it).
    #[arg(long, value_name = "URL", requires = "service_only")]
    pub service_database: Option<String>,
    /// Write the service memory run's samples (seconds, RSS MiB, checkpoint position) to this
    /// CSV file, for `scripts/plot_rss.py`.
    #[arg(long, value_name = "FILE")]
    pub rss_csv: Option<PathBuf>,
    /// Events of the stream `--report` reads with the reference Node client and with `sfcdc
    /// tail` (0 skips it; it needs Node.js and npm, and installs the client from npm).
    #[arg(long, default_value_t = 100_000)]
    pub node_events: usize,
    /// Print the results as JSON as well.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sfcdc bench`.
pub async fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let postgres = args
        .postgres
        .or_else(|| std::env::var("SFCDC_BENCH_POSTGRES_URL").ok())
        .or_else(|| std::env::var("SFCDC_TEST_POSTGRES_URL").ok())
        .filter(|u| !u.is_empty());
    let options = BenchOptions {
        events: args.events,
        postgres,
        batch_size: args.batch_size,
        jobs: if args.cache_only || args.failover_only {
            0
        } else {
            args.jobs
        },
        concurrency: args.concurrency as usize,
        skip_ingest: args.worker_only || args.cache_only || args.failover_only,
        reads: if args.worker_only || args.failover_only {
            0
        } else {
            args.reads
        },
        decode: args.report,
        backlog: if args.report { args.backlog } else { 0 },
        failover_runs: if args.report || args.failover_only {
            args.failover_runs
        } else {
            0
        },
        node_events: if args.report { args.node_events } else { 0 },
    };
    if args.decode_only {
        let corpus = decode::Corpus::build(decode::REPORT_BULK_EVENTS)?;
        let result = decode::run(&corpus, decode::REPORT_BUDGET)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&result)?);
        }
        return Ok(());
    }
    if args.service_only {
        let memory = service::run(
            args.backlog,
            !args.no_worker,
            args.rss_csv.as_deref(),
            args.service_database.as_deref(),
        )
        .await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&memory)?);
        }
        return Ok(());
    }
    if args.reconcile_only {
        let runs = reconcile::run(args.reconcile_orders).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&runs)?);
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    let load_at_start = report::load_average();
    let results = run(options.clone()).await?;
    if args.report && args.reconcile_orders > 0 {
        reconcile::run(args.reconcile_orders).await?;
    }
    if args.report {
        let machine = report::Machine::detect(load_at_start);
        let seconds = started.elapsed().as_secs_f64();
        let report = report::Report::new(results, &options, machine, seconds);
        println!();
        print!("{}", report.table());
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

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
    /// Time sfcdc's decoder against apache-avro.
    pub decode: bool,
    /// Events of the backlog catch-up (0: skip it).
    pub backlog: usize,
    /// Handovers per signal in the failover benchmark (0: skip it, fencing included).
    pub failover_runs: usize,
    /// Events of the comparison with the reference Node client (0: skip it).
    pub node_events: usize,
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
    /// The decoder next to apache-avro (none when skipped).
    pub decode: Option<decode::DecodeBenchResult>,
    /// The backlog catch-up, per backend.
    pub backlog: Vec<BenchResult>,
    /// The emulator's preloads, in order.
    pub preloads: Vec<Preload>,
    /// Peak resident memory of the process, MiB.
    pub peak_rss_mib: f64,
    /// The service alone, out of process, over the backlog with the worker on (report only).
    pub service: Option<service::ServiceMemory>,
    /// The same with the worker off: ingest alone (report only).
    pub service_ingest: Option<service::ServiceMemory>,
    /// Handovers and fencing (none when skipped).
    pub failover: Option<failover::FailoverBenchResult>,
    /// The reference Node client next to `sfcdc tail`, or why it was skipped (none when not
    /// asked for).
    pub node: Option<node::Outcome>,
}

/// Events appended to the emulator before an ingest run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preload {
    /// Events appended.
    pub events: usize,
    /// Events in the emulator afterwards.
    pub total_events: usize,
    /// Approvals among the appended events.
    pub approvals: usize,
    /// Time to generate them.
    pub seconds: f64,
    /// RSS the emulator kept for them (its event log and org records), MiB.
    pub rss_added_mib: f64,
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
    /// RSS just before the run, MiB.
    pub rss_before_mib: f64,
    /// The peak RSS during the run minus `rss_before_mib` (none where the peak cannot be reset).
    /// A lower bound: memory that earlier parts freed but the allocator kept is reused first.
    pub rss_peak_growth_mib: Option<f64>,
    /// Times the subscriber reconnected (a failed commit, a dropped stream): a disturbed run.
    pub reconnects: u64,
}

/// `sfcdc_reconnects_total`, every channel and reason.
/// The settings that subscribe to `channel` of `emu` from EARLIEST, trusting its CA at `ca`.
fn emulator_env(emu: &Emulator, ca: &std::path::Path, channel: &str) -> Env {
    let mut env = Env::from_pairs([
        ("SF_AUTH", "client-credentials"),
        ("SF_CLIENT_ID", emu.credentials().client_id.as_str()),
        ("SF_CLIENT_SECRET", emu.credentials().client_secret.as_str()),
        ("SFCDC_REPLAY_PRESET", "earliest"),
        ("SFCDC_CHANNELS", channel),
    ]);
    env.set("SF_LOGIN_URL", emu.instance_url());
    env.set("SFCDC_PUBSUB_ENDPOINT", emu.grpc_url());
    env.set("SFCDC_CA_CERT", ca.display().to_string());
    env
}

fn reconnects(metrics: &Metrics) -> u64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("sfcdc_reconnects_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The `q` quantile (0 to 1) of a Prometheus histogram, in ms, from the text exposition of
/// `metrics`: `family`'s `_bucket` series, interpolated linearly within the bucket as
/// Prometheus's `histogram_quantile` does. 0 when nothing was observed.
fn histogram_quantile_ms(metrics: &Metrics, family: &str, q: f64) -> f64 {
    let prefix = format!("{family}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse::<f64>().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let Some(&(_, total)) = buckets.last() else {
        return 0.0;
    };
    if total == 0.0 {
        return 0.0;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower * 1000.0;
            }
            let within = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return (lower + (le - lower) * within) * 1000.0;
        }
        (lower, below) = (le, count);
    }
    lower * 1000.0
}

async fn run_one(
    bench: &IngestBench,
    database_url: &str,
    backend: &str,
    batch_size: u32,
) -> anyhow::Result<BenchResult> {
    const CHANNEL: &str = "/data/OrderChangeEvent";
    let (emu, events) = (&bench.emu, bench.events);
    let rss = memory::Growth::start();
    let mut env = emulator_env(emu, &bench.ca, CHANNEL);
    env.set("SFCDC_BATCH_SIZE", batch_size.to_string());
    env.set("SFCDC_DATABASE_URL", database_url);
    env.set("SFCDC_ADMIN_ADDR", "off");
    // Built as `sfcdc run` builds its ingest side: the same settings, lookups and cache.
    let settings = Settings::from_env(&env)?;
    let deps = sfcdc::app::deps(&settings).await?;
    deps.auth.session().await?;
    let ingest = Ingest::build(&settings, &deps)?;
    let (store, metrics) = (deps.store.clone(), deps.metrics.clone());
    let last = emu
        .with_world(|w| w.bus.last(CHANNEL).map(|e| e.replay))
        .unwrap_or(0);
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let started = Instant::now();
    let handle = {
        let (cancel, tracker, metrics) = (cancel.clone(), tracker.clone(), metrics.clone());
        tokio::spawn(async move { ingest.run(&tracker, cancel, metrics).await })
    };
    loop {
        // The pipeline rides out a database restart (and counts a reconnect); so does the poll.
        match store.checkpoint(CHANNEL).await {
            Ok(Some(Position::After(r))) if r.position().is_some_and(|p| p >= last) => break,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Reading the checkpoint failed; polling on"),
        }
        anyhow::ensure!(!handle.is_finished(), "the pipeline stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    cancel.cancel();
    handle.await??;
    tracker.close();
    tracker.wait().await;
    let commits =
        metrics.value("sfcdc_batch_commit_seconds_count", &[("channel", CHANNEL)]) as usize;
    let jobs = store
        .counts()
        .await?
        .jobs
        .iter()
        .map(|(_, n)| *n as usize)
        .sum();
    Ok(BenchResult {
        backend: backend.to_owned(),
        events,
        seconds,
        events_per_second: events as f64 / seconds,
        commit_p50_ms: histogram_quantile_ms(&metrics, "sfcdc_batch_commit_seconds", 0.50),
        commit_p99_ms: histogram_quantile_ms(&metrics, "sfcdc_batch_commit_seconds", 0.99),
        commits,
        jobs,
        rss_before_mib: rss.before_mib(),
        rss_peak_growth_mib: rss.peak_growth_mib(),
        reconnects: reconnects(&metrics),
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
        sfcdc::clock::now_ms()
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
    if options.decode {
        let corpus = decode::Corpus::build(decode::REPORT_BULK_EVENTS)?;
        report.decode = Some(decode::run(&corpus, decode::REPORT_BUDGET)?);
        println!();
    }
    if !options.skip_ingest || options.backlog > 0 {
        let mut bench = IngestBench::start().await?;
        if !options.skip_ingest {
            report.preloads.push(bench.preload(options.events));
            report.ingest = bench.run("Ingest", &options).await?;
        }
        if options.backlog > 0 {
            if options.backlog > bench.events {
                report
                    .preloads
                    .push(bench.preload(options.backlog - bench.events));
            }
            println!();
            report.backlog = bench.run("Backlog catch-up", &options).await?;
        }
        bench.emu.shutdown().await;
    }
    if options.backlog > 0 {
        println!();
        report.service_ingest = Some(service::run(options.backlog, false, None, None).await?);
        println!();
        report.service = Some(service::run(options.backlog, true, None, None).await?);
    }
    if options.jobs > 0 {
        println!();
        report.worker = run_worker(&options).await?;
    }
    if options.reads > 0 {
        println!();
        report.cache = Some(cache::run(cache::CacheBenchOptions::from_reads(options.reads)).await?);
    }
    if options.failover_runs > 0 {
        println!();
        report.failover =
            Some(failover::run(options.postgres.as_deref(), options.failover_runs).await?);
    }
    if options.node_events > 0 {
        println!();
        let outcome = node::run(options.node_events, 3).await;
        if let Err(why) = &outcome {
            println!("The reference Node client: SKIPPED: {why}");
        }
        report.node = Some(outcome);
    }
    report.peak_rss_mib = memory::process_peak_mib();
    println!();
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
        async move { Ok((AnyStore::open(&url).await?, url)) }
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
                    Ok((store, url))
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

/// The in-process emulator the ingest runs read from, and the events preloaded into it.
struct IngestBench {
    emu: Emulator,
    dir: tempfile::TempDir,
    ca: PathBuf,
    events: usize,
    runs: usize,
}

impl IngestBench {
    async fn start() -> anyhow::Result<IngestBench> {
        let emu = Emulator::start(EmulatorConfig {
            sample_data: true,
            ..EmulatorConfig::ephemeral()
        })
        .await?;
        let dir = tempfile::Builder::new().prefix("sfcdc-bench-").tempdir()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, emu.ca_pem().unwrap_or_default())?;
        Ok(IngestBench {
            emu,
            dir,
            ca,
            events: 0,
            runs: 0,
        })
    }

    /// Appends `n` order change events.
    fn preload(&mut self, n: usize) -> Preload {
        let rss = memory::Growth::start();
        let started = Instant::now();
        let report = self.emu.bulk(n);
        self.events += report.events();
        let preload = Preload {
            events: report.events(),
            total_events: self.events,
            approvals: report.approved,
            seconds: started.elapsed().as_secs_f64(),
            rss_added_mib: rss.retained_mib(),
        };
        println!(
            "Preloaded {} order change events ({} approvals) in {:.1} s, {} in all; RSS +{:.0} MiB",
            preload.events, preload.approvals, preload.seconds, self.events, preload.rss_added_mib
        );
        preload
    }

    /// Subscribes from EARLIEST with a fresh store on each backend; prints a table.
    async fn run(
        &mut self,
        title: &str,
        options: &BenchOptions,
    ) -> anyhow::Result<Vec<BenchResult>> {
        self.runs += 1;
        let file = self.dir.path().join(format!("bench{}.db", self.runs));
        let this = &*self;
        let mut results = vec![
            run_one(
                this,
                &format!("sqlite://{}", file.display()),
                "sqlite",
                options.batch_size,
            )
            .await?,
        ];
        if let Some(url) = &options.postgres {
            let result = in_fresh_schema(url, |with_schema| async move {
                run_one(this, &with_schema, "postgres", options.batch_size).await
            })
            .await?;
            results.push(result);
        }
        println!(
            "{title}: {} events from EARLIEST, batch size {}",
            self.events, options.batch_size
        );
        println!(
            "{:<10} {:>9} {:>9} {:>13} {:>12} {:>12} {:>8} {:>7} {:>9} {:>10}",
            "backend",
            "events",
            "seconds",
            "events/s",
            "commit p50",
            "commit p99",
            "commits",
            "jobs",
            "RSS +MiB",
            "reconnects"
        );
        for r in &results {
            println!(
                "{:<10} {:>9} {:>9.2} {:>13.0} {:>9.2} ms {:>9.2} ms {:>8} {:>7} {:>9} {:>10}",
                r.backend,
                r.events,
                r.seconds,
                r.events_per_second,
                r.commit_p50_ms,
                r.commit_p99_ms,
                r.commits,
                r.jobs,
                r.rss_peak_growth_mib
                    .map_or_else(|| "-".to_owned(), |g| format!("{g:.0}")),
                r.reconnects
            );
        }
        Ok(results)
    }
}
