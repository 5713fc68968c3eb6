//! `sfcdc bench`, cache part: what a cached order read costs, in process and over the read API,
//! and how many Salesforce REST calls the cache saves under a mixed workload.
//!
//! The service is assembled as `sfcdc run` assembles it ([`App::build`], [`App::run`]) against
//! the in-process emulator (TLS on loopback), on a fresh SQLite file, with the admin server on an
//! ephemeral loopback port and a read token. The emulator gets [`ORDERS`] new orders, each with
//! [`ITEMS_PER_ORDER`] items, created inside its world; the service catches up on their change
//! events, then every order is read once to warm the cache.
//!
//! 1. **In process**: `OrderCache::order` on random warm ids, each read timed on its own with
//!    `Instant` (so the figures include the clock reads, some 20 to 40 ns).
//! 2. **Over HTTP**: `GET /orders/{id}` with the read token against the admin server, with one
//!    keep-alive connection, then from [`HTTP_TASKS`] concurrent tasks. Each request is timed
//!    from send to the last byte of the body.
//! 3. **Mixed workload**: a seeded sequence of 95% reads and 5% writes, paced at [`MIX_RATE`]
//!    operations per second. Orders are picked from a Zipf distribution (s = 1) over the orders,
//!    in a seeded random rank order: a few orders are hot and every order is read now and then,
//!    as customers look at their recent orders. A write changes `PoNumber` (a customer-facing
//!    field) inside the emulator, so a real change event flows through the subscriber, the rules
//!    and the invalidator; a read goes through the cache. The REST calls of the cached reads are
//!    counted by the emulator. The same reads are then issued without a cache, straight through
//!    the service's [`RestOrderSource`], and counted the same way. A read that returns a
//!    `PoNumber` other than the last one written is counted as stale, with how long after that
//!    write it was.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;

use sfcdc::app::{App, AppError, AppHandle, Settings};
use sfcdc::cache::{OrderSource, RestOrderSource};
use sfcdc::decode::Position;
use sfcdc::sfid::SfId;
use sfcdc::store::Store;
use sfcdc::telemetry::metrics::Metrics;
use sfcdc_emulator::{Emulator, EmulatorConfig};

/// Orders created for the benchmark.
pub const ORDERS: usize = 1_000;
/// Items per order (the read API returns them with the order).
pub const ITEMS_PER_ORDER: usize = 2;
/// Concurrent tasks of the concurrent HTTP run.
pub const HTTP_TASKS: usize = 16;
/// Operations per second of the mixed workload.
pub const MIX_RATE: f64 = 4_000.0;
/// Writes per hundred operations of the mixed workload.
pub const WRITE_PERCENT: u32 = 5;
/// Exponent of the Zipf distribution of the mixed workload.
pub const ZIPF_S: f64 = 1.0;
/// Seed of every random choice.
pub const SEED: u64 = 0x5fcdc;

const CHANNEL: &str = "/data/OrderChangeEvent";
const READ_TOKEN: &str = "sfcdc-bench-read-token-0123456789";
const QUERY: &str = "GET /services/data/{version}/query";

/// Latency of one kind of read.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadLatency {
    /// What was read, and how.
    pub part: String,
    /// Concurrent readers.
    pub concurrency: usize,
    /// Reads made.
    pub reads: usize,
    /// Wall time of all of them.
    pub seconds: f64,
    /// Reads per second (all readers together).
    pub reads_per_second: f64,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Slowest, µs.
    pub max_us: f64,
    /// Share of the reads answered from the cache (none for uncached reads).
    pub hit_ratio: Option<f64>,
}

/// The mixed workload's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MixResult {
    /// How orders were picked.
    pub distribution: String,
    /// Seed of the sequence.
    pub seed: u64,
    /// Operations.
    pub operations: usize,
    /// Reads among them.
    pub reads: usize,
    /// Writes among them (one change event each).
    pub writes: usize,
    /// Pace of the operations, per second.
    pub target_ops_per_second: f64,
    /// Wall time of the cached run.
    pub seconds: f64,
    /// Emulator data API calls during the cached run (its reads, plus any guard lookups of
    /// ingest).
    pub rest_calls_cached: u64,
    /// Emulator data API calls for the same reads without a cache.
    pub rest_calls_uncached: u64,
    /// `1 - cached / uncached`, in percent.
    pub calls_saved_percent: f64,
    /// Hits / (hits + misses) of the order cache during the cached run.
    pub hit_ratio: f64,
    /// Loads of the order cache during the cached run.
    pub cache_loads: u64,
    /// `sfcdc_invalidations_requested_total` during the run (before coalescing).
    pub invalidations_requested: u64,
    /// `sfcdc_cache_invalidations_total{cache="order"}` during the run (after coalescing).
    pub invalidations_applied: u64,
    /// Reads that returned a `PoNumber` older than the last one written.
    pub stale_reads: usize,
    /// The longest such read after the write it did not show, ms.
    pub max_stale_ms: f64,
}

/// Everything the cache benchmark measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheBenchResult {
    /// Orders in the cache.
    pub orders: usize,
    /// Items per order.
    pub items_per_order: usize,
    /// Read latencies: in process, over HTTP, and (for scale) uncached through REST.
    pub latency: Vec<ReadLatency>,
    /// The mixed workload.
    pub mix: MixResult,
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct CacheBenchOptions {
    /// In-process reads.
    pub reads: usize,
    /// HTTP requests of each HTTP run.
    pub http_requests: usize,
    /// Operations of the mixed workload.
    pub operations: usize,
}

impl CacheBenchOptions {
    /// `reads` in-process reads; a tenth of that (at least one) of HTTP requests per run and of
    /// mixed operations.
    pub fn from_reads(reads: usize) -> CacheBenchOptions {
        CacheBenchOptions {
            reads,
            http_requests: (reads / 10).max(1),
            operations: (reads / 10).max(1),
        }
    }
}

/// Sorted latencies, ns.
struct Samples(Vec<u64>);

impl Samples {
    fn latency(
        mut self,
        part: &str,
        concurrency: usize,
        seconds: f64,
        hit_ratio: Option<f64>,
    ) -> ReadLatency {
        self.0.sort_unstable();
        let us: Vec<f64> = self.0.iter().map(|ns| *ns as f64 / 1000.0).collect();
        ReadLatency {
            part: part.to_owned(),
            concurrency,
            reads: us.len(),
            seconds,
            reads_per_second: us.len() as f64 / seconds,
            p50_us: super::percentile(&us, 0.50),
            p99_us: super::percentile(&us, 0.99),
            p999_us: super::percentile(&us, 0.999),
            max_us: us.last().copied().unwrap_or(0.0),
            hit_ratio,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The order cache's counters, read from the service's metrics.
#[derive(Debug, Clone, Copy, Default)]
struct CacheCounts {
    hits: u64,
    misses: u64,
    loads: u64,
    requested: u64,
    applied: u64,
}

impl CacheCounts {
    fn read(m: &Metrics) -> CacheCounts {
        let order = |name| m.value(name, &[("cache", "order")]) as u64;
        CacheCounts {
            hits: order("sfcdc_cache_hits_total"),
            misses: order("sfcdc_cache_misses_total"),
            loads: order("sfcdc_cache_loads_total"),
            requested: m.value("sfcdc_invalidations_requested_total", &[]) as u64,
            applied: order("sfcdc_cache_invalidations_total"),
        }
    }

    fn since(self, before: CacheCounts) -> CacheCounts {
        CacheCounts {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            loads: self.loads - before.loads,
            requested: self.requested - before.requested,
            applied: self.applied - before.applied,
        }
    }

    fn hit_ratio(self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

/// Creates the orders and their items inside the emulator; their ids.
fn create_orders(emu: &Emulator) -> anyhow::Result<Vec<SfId>> {
    emu.with_world(|w| {
        let actor = w.internal_actor();
        let accounts: Vec<String> = w
            .org
            .records_of("Account")
            .map(|r| r.id.to_string())
            .collect();
        anyhow::ensure!(!accounts.is_empty(), "the emulator has no accounts");
        let mut ids = Vec::with_capacity(ORDERS);
        for n in 0..ORDERS {
            let now = sfcdc::clock::now_ms();
            let order = obj(json!({
                "AccountId": accounts[n % accounts.len()].as_str(),
                "EffectiveDate": "2026-01-15",
                "Status": "Draft",
                "Type": "New",
                "Name": format!("Bench order {n}"),
                "PoNumber": "PO-INITIAL",
                "BillingCity": "Lyon",
                "BillingPostalCode": "69001",
                "BillingCountryCode": "FR",
                "Description": "Created by sfcdc bench",
            }));
            let id = w
                .mutate(now, |o| o.create("Order", &order, &actor, now))
                .map_err(|e| anyhow::anyhow!("creating an order: {e}"))?;
            for i in 0..ITEMS_PER_ORDER {
                let item = obj(json!({
                    "OrderId": id.as_str(),
                    "Quantity": (i + 1) as f64,
                    "UnitPrice": 19.5,
                    "Description": format!("Line {}", i + 1),
                }));
                w.mutate(now, |o| o.create("OrderItem", &item, &actor, now))
                    .map_err(|e| anyhow::anyhow!("creating an order item: {e}"))?;
            }
            // The emulator's id, read as the product's.
            ids.push(SfId::parse(id.as_str())?);
        }
        Ok(ids)
    })
}

fn obj(v: Json) -> Map<String, Json> {
    match v {
        Json::Object(m) => m,
        _ => Map::new(),
    }
}

/// Changes an order's `PoNumber` inside the emulator: one change event.
fn write_po_number(emu: &Emulator, id: &SfId, value: &str) -> anyhow::Result<()> {
    let set = obj(json!({ "PoNumber": value }));
    let emulated = sfcdc_emulator::ids::SfId::parse(id.as_str())?;
    emu.with_world(|w| {
        let actor = w.internal_actor();
        let now = sfcdc::clock::now_ms();
        w.mutate(now, |o| {
            o.update("Order", &emulated, &set, &actor, now)
                .map(|c| ((), c))
        })
    })
    .map_err(|e| anyhow::anyhow!("updating order {id}: {e}"))
}

/// Waits until the service has committed every event of the channel and applied every
/// invalidation.
async fn settled(
    emu: &Emulator,
    app: &AppHandle,
    run: &tokio::task::JoinHandle<Result<(), AppError>>,
) -> anyhow::Result<()> {
    let last = emu
        .with_world(|w| w.bus.last(CHANNEL).map(|e| e.replay))
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at = app.sink().store().checkpoint(CHANNEL).await?;
        let caught_up =
            matches!(&at, Some(Position::After(r)) if r.position().is_some_and(|p| p >= last));
        if caught_up && app.invalidations_pending() == 0 {
            break;
        }
        anyhow::ensure!(!run.is_finished(), "the service stopped early");
        anyhow::ensure!(
            Instant::now() < deadline,
            "the service did not catch up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// A Zipf(s) sampler over `n` ranks, each rank mapped to a random order.
struct Zipf {
    cdf: Vec<f64>,
    order_of_rank: Vec<usize>,
}

impl Zipf {
    fn new(n: usize, s: f64, rng: &mut ChaCha8Rng) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        let mut order_of_rank: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order_of_rank.swap(i, rng.random_range(0..=i));
        }
        Zipf { cdf, order_of_rank }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.random_range(0.0..1.0);
        let rank = self
            .cdf
            .partition_point(|c| *c <= u)
            .min(self.cdf.len() - 1);
        self.order_of_rank[rank]
    }

    /// Share of the picks that go to the top `fraction` of orders.
    fn top_share(&self, fraction: f64) -> f64 {
        let k = ((self.cdf.len() as f64 * fraction).ceil() as usize).clamp(1, self.cdf.len());
        self.cdf[k - 1]
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Read(usize),
    Write(usize),
}

/// Runs the cache benchmark and prints its tables.
pub async fn run(options: CacheBenchOptions) -> anyhow::Result<CacheBenchResult> {
    let emu = Emulator::start(EmulatorConfig {
        sample_data: true,
        ..EmulatorConfig::ephemeral()
    })
    .await?;
    let result = run_with(&emu, options).await;
    emu.shutdown().await;
    result
}

async fn run_with(emu: &Emulator, options: CacheBenchOptions) -> anyhow::Result<CacheBenchResult> {
    let dir = tempfile::Builder::new().prefix("sfcdc-bench-").tempdir()?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap_or_default())?;
    let created = Instant::now();
    let ids = create_orders(emu)?;
    println!(
        "Cache: {} orders with {} items each created in the emulator in {:.1} s",
        ids.len(),
        ITEMS_PER_ORDER,
        created.elapsed().as_secs_f64()
    );

    let mut env = super::emulator_env(emu, &ca, CHANNEL);
    env.set("SFCDC_ADMIN_ADDR", "127.0.0.1:0");
    env.set("SFCDC_READ_TOKEN", READ_TOKEN);
    env.set("SFCDC_FULFILMENT_TOKEN", "fulfilment-dev-token");
    env.set("SFCDC_FULFILMENT_URL", emu.fulfilment_url());
    env.set(
        "SFCDC_DATABASE_URL",
        format!("sqlite://{}", dir.path().join("cache.db").display()),
    );
    let settings = Settings::from_env(&env)?;
    let built = App::build(settings.clone()).await?;
    let app = built.handle();
    // Reads without a cache go through the service's own REST client and SELECT.
    let uncached = RestOrderSource::new(app.rest().clone(), &settings.cache, &settings.rules);
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(built.run_until_stopped(cancel.clone()));
    let result = measure(emu, &app, &handle, &ids, &uncached, options).await;
    cancel.cancel();
    let stopped = handle.await;
    let result = result?;
    stopped??;
    Ok(result)
}

async fn measure(
    emu: &Emulator,
    app: &AppHandle,
    handle: &tokio::task::JoinHandle<Result<(), AppError>>,
    ids: &[SfId],
    uncached: &RestOrderSource,
    options: CacheBenchOptions,
) -> anyhow::Result<CacheBenchResult> {
    settled(emu, app, handle).await?;
    let cache = app.cache();
    let metrics = app.metrics();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);

    // Warm every order.
    let warm = Instant::now();
    for id in ids {
        let entry = cache.order(id).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(entry.record.is_some(), "order {id} is missing");
    }
    println!(
        "Warmed {} orders in {:.2} s ({} REST queries so far)",
        ids.len(),
        warm.elapsed().as_secs_f64(),
        emu.stats().calls(QUERY)
    );
    let mut latency = Vec::new();

    // 1. In process.
    let picks: Vec<usize> = (0..options.reads)
        .map(|_| rng.random_range(0..ids.len()))
        .collect();
    let before = CacheCounts::read(metrics);
    let mut samples = Vec::with_capacity(picks.len());
    let mut errors = 0usize;
    let started = Instant::now();
    for &i in &picks {
        let t = Instant::now();
        let entry = cache.order(&ids[i]).await;
        samples.push(nanos(t.elapsed()));
        errors += usize::from(std::hint::black_box(entry).is_err());
    }
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(errors == 0, "{errors} in-process reads failed");
    let counts = CacheCounts::read(metrics).since(before);
    latency.push(Samples(samples).latency(
        "in process: OrderCache::order",
        1,
        seconds,
        Some(counts.hit_ratio()),
    ));

    // 2. Over HTTP.
    let addr = app
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("the admin server does not listen"))?;
    let urls: Arc<Vec<String>> = Arc::new(
        ids.iter()
            .map(|id| format!("http://{addr}/orders/{id}"))
            .collect(),
    );
    let client = sfcdc::salesforce::http::http_client(None).map_err(|e| anyhow::anyhow!(e))?;
    let first = client.get(&urls[0]).bearer_auth(READ_TOKEN).send().await?;
    anyhow::ensure!(
        first.status() == 200,
        "GET /orders/{{id}}: {}",
        first.status()
    );
    let body: Json = first.json().await?;
    anyhow::ensure!(
        body["order"]["Id"] == ids[0].as_str()
            && body["items"].as_array().map(Vec::len) == Some(ITEMS_PER_ORDER),
        "GET /orders/{{id}} answered {body}"
    );
    // Warm the connection (and the server's path) before measuring.
    http_reads(&client, &urls, &picks[..picks.len().min(200)]).await?;
    let http_picks: Vec<usize> = (0..options.http_requests)
        .map(|_| rng.random_range(0..ids.len()))
        .collect();
    let before = CacheCounts::read(metrics);
    let started = Instant::now();
    let samples = http_reads(&client, &urls, &http_picks).await?;
    let seconds = started.elapsed().as_secs_f64();
    let counts = CacheCounts::read(metrics).since(before);
    latency.push(Samples(samples).latency(
        "HTTP: GET /orders/{id}, keep-alive",
        1,
        seconds,
        Some(counts.hit_ratio()),
    ));

    let before = CacheCounts::read(metrics);
    let started = Instant::now();
    let per_task = http_picks.len().div_ceil(HTTP_TASKS);
    let tasks: Vec<_> = http_picks
        .chunks(per_task.max(1))
        .map(|chunk| {
            let (client, urls, chunk) = (client.clone(), urls.clone(), chunk.to_vec());
            tokio::spawn(async move { http_reads(&client, &urls, &chunk).await })
        })
        .collect();
    let concurrency = tasks.len();
    let mut samples = Vec::with_capacity(http_picks.len());
    for t in tasks {
        samples.extend(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let counts = CacheCounts::read(metrics).since(before);
    latency.push(Samples(samples).latency(
        "HTTP: GET /orders/{id}, concurrent",
        concurrency,
        seconds,
        Some(counts.hit_ratio()),
    ));

    // 3. The mixed workload.
    let zipf = Zipf::new(ids.len(), ZIPF_S, &mut rng);
    let ops: Vec<Op> = (0..options.operations)
        .map(|_| {
            let write = rng.random_range(0..100) < WRITE_PERCENT;
            let order = zipf.sample(&mut rng);
            if write {
                Op::Write(order)
            } else {
                Op::Read(order)
            }
        })
        .collect();
    let writes = ops.iter().filter(|o| matches!(o, Op::Write(_))).count();
    let reads = ops.len() - writes;
    let distribution = format!(
        "Zipf s={ZIPF_S} over {} orders (top 1%: {:.0}% of picks, top 10%: {:.0}%)",
        ids.len(),
        zipf.top_share(0.01) * 100.0,
        zipf.top_share(0.10) * 100.0
    );
    settled(emu, app, handle).await?;
    let before = CacheCounts::read(metrics);
    let calls_before = emu.stats().data_api_calls();
    let mut written: Vec<Option<(String, Instant)>> = vec![None; ids.len()];
    let (mut stale, mut max_stale) = (0usize, Duration::ZERO);
    let step = Duration::from_secs_f64(1.0 / MIX_RATE);
    let started = tokio::time::Instant::now();
    for (n, op) in ops.iter().enumerate() {
        let due = started + step.mul_f64(n as f64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        match *op {
            Op::Write(i) => {
                let value = format!("PO-{n:07}");
                write_po_number(emu, &ids[i], &value)?;
                written[i] = Some((value, Instant::now()));
            }
            Op::Read(i) => {
                let entry = cache
                    .order(&ids[i])
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if let Some((value, at)) = &written[i] {
                    let seen = entry
                        .record
                        .as_ref()
                        .and_then(|r| r.get("PoNumber"))
                        .and_then(Json::as_str);
                    if seen != Some(value.as_str()) {
                        stale += 1;
                        max_stale = max_stale.max(at.elapsed());
                    }
                }
            }
        }
    }
    let mix_seconds = started.elapsed().as_secs_f64();
    let rest_calls_cached = emu.stats().data_api_calls() - calls_before;
    settled(emu, app, handle).await?;
    let counts = CacheCounts::read(metrics).since(before);

    // The same reads without a cache: one query each, through the service's REST client.
    let calls_before = emu.stats().data_api_calls();
    let mut samples = Vec::with_capacity(reads);
    let started = Instant::now();
    for op in &ops {
        if let Op::Read(i) = *op {
            let t = Instant::now();
            let records = uncached.orders(std::slice::from_ref(&ids[i])).await?;
            samples.push(nanos(t.elapsed()));
            anyhow::ensure!(records.len() == 1, "order {} is missing", ids[i]);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rest_calls_uncached = emu.stats().data_api_calls() - calls_before;
    latency.push(Samples(samples).latency(
        "no cache: RestOrderSource (1 SOQL query)",
        1,
        seconds,
        None,
    ));

    let mix = MixResult {
        distribution,
        seed: SEED,
        operations: ops.len(),
        reads,
        writes,
        target_ops_per_second: MIX_RATE,
        seconds: mix_seconds,
        rest_calls_cached,
        rest_calls_uncached,
        calls_saved_percent: if rest_calls_uncached == 0 {
            0.0
        } else {
            (1.0 - rest_calls_cached as f64 / rest_calls_uncached as f64) * 100.0
        },
        hit_ratio: counts.hit_ratio(),
        cache_loads: counts.loads,
        invalidations_requested: counts.requested,
        invalidations_applied: counts.applied,
        stale_reads: stale,
        max_stale_ms: max_stale.as_secs_f64() * 1000.0,
    };
    let result = CacheBenchResult {
        orders: ids.len(),
        items_per_order: ITEMS_PER_ORDER,
        latency,
        mix,
    };
    print(&result);
    Ok(result)
}

/// GETs `urls[i]` for each pick in turn; each request's time, ns.
async fn http_reads(
    client: &reqwest::Client,
    urls: &[String],
    picks: &[usize],
) -> anyhow::Result<Vec<u64>> {
    let mut samples = Vec::with_capacity(picks.len());
    for &i in picks {
        let t = Instant::now();
        let resp = client.get(&urls[i]).bearer_auth(READ_TOKEN).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        samples.push(nanos(t.elapsed()));
        anyhow::ensure!(
            status == 200 && !body.is_empty(),
            "GET {} answered {status}",
            urls[i]
        );
    }
    Ok(samples)
}

fn print(r: &CacheBenchResult) {
    println!();
    println!(
        "{:<42} {:>5} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "cached order read",
        "conc",
        "reads",
        "reads/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "hits"
    );
    for l in &r.latency {
        println!(
            "{:<42} {:>5} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>7}",
            l.part,
            l.concurrency,
            l.reads,
            l.reads_per_second,
            l.p50_us,
            l.p99_us,
            l.p999_us,
            l.max_us,
            l.hit_ratio
                .map_or_else(|| "-".to_owned(), |h| format!("{:.1}%", h * 100.0))
        );
    }
    let m = &r.mix;
    println!();
    println!(
        "Mixed workload: {} operations ({} reads, {} PoNumber writes) at {:.0}/s, seed {:#x};",
        m.operations, m.reads, m.writes, m.target_ops_per_second, m.seed
    );
    println!("  {}", m.distribution);
    println!(
        "{:<10} {:>7} {:>11} {:>12} {:>10} {:>13} {:>12} {:>12} {:>13}",
        "mode",
        "reads",
        "REST calls",
        "calls saved",
        "hit ratio",
        "inval. asked",
        "inval. done",
        "stale reads",
        "max stale ms"
    );
    println!(
        "{:<10} {:>7} {:>11} {:>11.1}% {:>9.1}% {:>13} {:>12} {:>12} {:>13.0}",
        "cached",
        m.reads,
        m.rest_calls_cached,
        m.calls_saved_percent,
        m.hit_ratio * 100.0,
        m.invalidations_requested,
        m.invalidations_applied,
        m.stale_reads,
        m.max_stale_ms
    );
    println!(
        "{:<10} {:>7} {:>11} {:>12} {:>10} {:>13} {:>12} {:>12} {:>13}",
        "no cache", m.reads, m.rest_calls_uncached, "-", "-", "-", "-", "-", "-"
    );
}
