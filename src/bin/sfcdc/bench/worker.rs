//! `sfcdc bench --worker`: jobs per second through the worker pool, and what the per-order gate
//! costs, on SQLite and on PostgreSQL.
//!
//! The store is real (a fresh SQLite file, a fresh PostgreSQL schema); Salesforce and the
//! fulfilment system are in-process stand-ins that answer at once, so the figures are the
//! worker's own cost: claims, the guard re-check, the phase write, the outcome with its
//! transaction, and the scheduling between them. Two modes: `sync` (submit answers `201`) and
//! `async` (submit answers `202`, and the first poll finds the operation done). Notifications are
//! off; each notifier adds one row per job to the completion transaction.
//!
//! The gate is measured on the queue alone: claim 64 due jobs and complete them, until none is
//! left, with the gate, without it, and with the gate when every order has four jobs (so a claim
//! can take only one job per order). The product has no claim without the gate: the bench runs
//! its own copy of the claim statement, minus the gate, through a pool of its own on the same
//! database ([`UngatedClaim`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use sfcdc::config::Env;
use sfcdc::rules::RulesConfig;
use sfcdc::salesforce::RestError;
use sfcdc::sfid::SfId;
use sfcdc::store::queue::{JobChange, JobEnd, JobUpdate, Queue};
use sfcdc::store::{AnyStore, NewJob, NewTrigger, Store, StoreBatch};
use sfcdc::telemetry::metrics::Metrics;
use sfcdc::worker::fulfilment::{CallError, Fulfilment, OpStatus, Operation, Submitted};
use sfcdc::worker::{Orders, Worker, WorkerConfig};

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerBenchResult {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// What ran: `worker sync`, `worker async`, `queue gated`, …
    pub mode: String,
    /// Jobs completed.
    pub jobs: usize,
    /// Wall time.
    pub seconds: f64,
    /// Jobs per second.
    pub jobs_per_second: f64,
}

/// The product's job claim (`Queue::claim_jobs`, `CLAIM_JOBS` in src/store/sqlite/queue.rs and
/// src/store/postgres/queue.rs) minus the per-order gate, its `NOT EXISTS` clause: the same lease,
/// attempt and state changes, the same order and limit, the same columns returned, and on
/// PostgreSQL the same `FOR UPDATE SKIP LOCKED` and `id = ANY(ARRAY(…))`. `$1` owner, `$2` lease
/// deadline, `$3` now, `$4` at most this many. Keep it in step with the product's statement, or
/// the row measures something else.
macro_rules! claim_ungated {
    ($picked:literal, $lock:literal, $close:literal) => {
        concat!(
            "UPDATE sfcdc_jobs SET lease_owner = $1, lease_until = $2, updated_at = $3,
        attempt = CASE WHEN state IN ('available', 'retryable') THEN attempt + 1 ELSE attempt END,
        state = CASE WHEN state IN ('available', 'retryable') THEN 'running' ELSE state END
    WHERE id ",
            $picked,
            "
        SELECT j.id FROM sfcdc_jobs j
        WHERE j.state IN ('available', 'running', 'polling', 'retryable') AND j.run_at <= $3
            AND (j.lease_until IS NULL OR j.lease_until < $3)
        ORDER BY j.run_at, j.id LIMIT $4",
            $lock,
            $close,
            "
    RETURNING id, job_key, order_id, account_id, trigger_status, trigger_kind, state, attempt,
        max_attempts, run_at, lease_owner, lease_until, operation_id, phase, submitted_at, polls, generation, progress,
        result, external_id, last_error, errors, source_channel, source_replay_id, source_event_id, payload, created_at,
        updated_at, finished_at"
        )
    };
}

/// A claim without the per-order gate, through the bench's own pool on the store's database.
enum UngatedClaim {
    /// A SQLite file, opened with the store's per-connection settings.
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL database (the URL selects the bench's schema).
    Postgres(sqlx::PgPool),
}

impl UngatedClaim {
    /// Opens a pool of one connection on `url`, the database `store` was opened on.
    async fn open(store: &AnyStore, url: &str) -> anyhow::Result<UngatedClaim> {
        Ok(match store {
            AnyStore::Sqlite(_) => {
                // The settings of the store's connections that bear on a write: a claim that
                // waited for fsync or for the lock differently would not compare.
                let options: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
                let options = options
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .pragma("wal_autocheckpoint", "16000");
                UngatedClaim::Sqlite(
                    sqlx::sqlite::SqlitePoolOptions::new()
                        .max_connections(1)
                        .connect_with(options)
                        .await?,
                )
            }
            AnyStore::Postgres(_) => UngatedClaim::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await?,
            ),
        })
    }

    /// Leases up to `limit` due jobs for `owner`; their ids, in id order.
    async fn claim(
        &self,
        owner: &str,
        limit: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> anyhow::Result<Vec<i64>> {
        match self {
            UngatedClaim::Sqlite(pool) => {
                let statement = claim_ungated!("IN (", "", ")");
                claim_on(pool, statement, owner, limit, now_ms, lease_ms).await
            }
            UngatedClaim::Postgres(pool) => {
                let statement = claim_ungated!("= ANY(ARRAY(", " FOR UPDATE SKIP LOCKED", "))");
                claim_on(pool, statement, owner, limit, now_ms, lease_ms).await
            }
        }
    }
}

/// Runs a claim `statement` on `pool`; the ids it leased, in id order.
async fn claim_on<DB>(
    pool: &sqlx::Pool<DB>,
    statement: &'static str,
    owner: &str,
    limit: i64,
    now_ms: i64,
    lease_ms: i64,
) -> anyhow::Result<Vec<i64>>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    use sqlx::Row;
    let mut conn = pool.acquire().await?;
    let rows = sqlx::query(statement)
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    // `id` is the first column returned.
    let mut ids = rows
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// Salesforce, answering at once: every order is approved and not yet activated.
struct InstantOrders;

impl Orders for InstantOrders {
    async fn read(&self, id: &SfId) -> Result<Option<Json>, RestError> {
        Ok(Some(json!({"Id": id.as_str(), "Status": "Approved"})))
    }

    async fn update(&self, _id: &SfId, _fields: &Json) -> Result<(), RestError> {
        Ok(())
    }
}

/// A fulfilment system that finishes at once (`sync`) or by the first poll.
struct InstantFulfilment {
    asynchronous: bool,
    seq: AtomicU64,
}

fn completed(id: String) -> Operation {
    Operation {
        result: Some(json!({ "external_id": format!("WH-{id}") })),
        operation_id: id,
        status: OpStatus::Completed,
        progress: Some(100),
        error: None,
    }
}

impl Fulfilment for InstantFulfilment {
    async fn submit(&self, _key: &str, _order: &Json) -> Result<Submitted, CallError> {
        let id = self.seq.fetch_add(1, Ordering::Relaxed).to_string();
        Ok(if self.asynchronous {
            Submitted::Accepted(Operation {
                operation_id: id,
                status: OpStatus::Pending,
                progress: Some(0),
                result: None,
                error: None,
            })
        } else {
            Submitted::Finished(completed(id))
        })
    }

    async fn poll(&self, id: &str) -> Result<Option<Operation>, CallError> {
        Ok(Some(completed(id.to_owned())))
    }

    async fn poll_many(&self, ids: &[&str]) -> Result<Option<Vec<Operation>>, CallError> {
        Ok(Some(
            ids.iter().map(|id| completed((*id).to_owned())).collect(),
        ))
    }
}

/// Inserts `jobs` jobs over `jobs / per_order` orders, as ingest would.
async fn preload(store: &AnyStore, jobs: usize, per_order: usize) -> anyhow::Result<()> {
    let now = sfcdc::clock::now_ms();
    let all: Vec<(String, String)> = (0..jobs)
        .map(|n| {
            let order = sfcdc::sfid::generate("801", "Hs", (n / per_order) as u64);
            (format!("bench:{n}"), order.as_str().to_owned())
        })
        .collect();
    for (c, chunk) in all.chunks(500).enumerate() {
        let batch = StoreBatch {
            channel: "/data/OrderChangeEvent".into(),
            triggers: chunk
                .iter()
                .map(|(key, order)| NewTrigger {
                    key: key.clone(),
                    order_id: order.clone(),
                    skipped: None,
                })
                .collect(),
            jobs: chunk
                .iter()
                .enumerate()
                .map(|(i, (key, order))| NewJob {
                    key: key.clone(),
                    order_id: order.clone(),
                    account_id: None,
                    // One open job per order and status: several jobs of an order differ in it.
                    trigger_status: format!("Approved{}", (c * 500 + i) % per_order),
                    trigger_kind: "status_change".into(),
                    channel: "/data/OrderChangeEvent".into(),
                    replay_id: vec![0; 8],
                    event_id: key.clone(),
                    payload: "{}".into(),
                    max_attempts: 3,
                })
                .collect(),
            now_ms: now,
            ..StoreBatch::default()
        };
        store.commit_batch(&batch).await?;
    }
    Ok(())
}

fn worker_config(concurrency: usize) -> anyhow::Result<WorkerConfig> {
    let concurrency = concurrency.to_string();
    let env = Env::from_pairs([
        ("SFCDC_FULFILMENT_URL", "http://127.0.0.1:9/unused"),
        ("SFCDC_WORKER_CONCURRENCY", concurrency.as_str()),
        ("SFCDC_POLL_INTERVAL", "1ms"),
        ("SFCDC_POLL_MAX_INTERVAL", "1ms"),
        ("SFCDC_WORKER_IDLE_POLL", "5ms"),
    ]);
    WorkerConfig::from_env(&env)?.ok_or_else(|| anyhow::anyhow!("the worker is configured"))
}

/// Runs `jobs` jobs through a worker pool; the time from start to the last completion.
async fn run_worker(
    store: Arc<AnyStore>,
    jobs: usize,
    concurrency: usize,
    asynchronous: bool,
) -> anyhow::Result<f64> {
    let metrics = Arc::new(Metrics::new());
    let worker = Worker::new(
        store,
        InstantFulfilment {
            asynchronous,
            seq: AtomicU64::new(0),
        },
        InstantOrders,
        worker_config(concurrency)?,
        Arc::new(RulesConfig::defaults()),
        metrics.clone(),
    );
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let http = sfcdc::salesforce::http::http_client(None).map_err(|e| anyhow::anyhow!(e))?;
    let task = tokio::spawn(worker.run(http, cancel.clone()));
    let completed = || metrics.value("sfcdc_job_steps_total", &[("outcome", "completed")]);
    let deadline = Instant::now() + Duration::from_secs(600);
    while completed() < jobs as f64 {
        anyhow::ensure!(Instant::now() < deadline, "the worker stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    cancel.cancel();
    task.await?;
    Ok(seconds)
}

/// Claims and completes every due job, 64 at a time, through the product's gated claim, or
/// through `ungated` when given; the time it took.
async fn drain_queue(
    store: &AnyStore,
    ungated: Option<&UngatedClaim>,
) -> anyhow::Result<(usize, f64)> {
    let started = Instant::now();
    let mut done = 0;
    loop {
        let now = sfcdc::clock::now_ms();
        let jobs: Vec<i64> = match ungated {
            None => store
                .claim_jobs("bench", 64, now, 60_000)
                .await?
                .into_iter()
                .map(|j| j.id)
                .collect(),
            Some(claim) => claim.claim("bench", 64, now, 60_000).await?,
        };
        if jobs.is_empty() {
            return Ok((done, started.elapsed().as_secs_f64()));
        }
        let updates: Vec<JobUpdate> = jobs
            .iter()
            .map(|&id| JobUpdate {
                id,
                owner: "bench".into(),
                change: JobChange::End {
                    end: JobEnd::Completed {
                        result: "{}".into(),
                        external_id: None,
                    },
                    errors: "[]".into(),
                    deliveries: Vec::new(),
                },
            })
            .collect();
        store.update_jobs(&updates, now).await?;
        done += jobs.len();
    }
}

/// Every measurement on one backend; `open` gives a fresh, empty store each time, with the URL it
/// was opened on.
pub async fn run_backend<F, Fut>(
    backend: &str,
    jobs: usize,
    concurrency: usize,
    open: F,
) -> anyhow::Result<Vec<WorkerBenchResult>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(AnyStore, String)>>,
{
    let mut out = Vec::new();
    let result = |mode: &str, jobs: usize, seconds: f64| WorkerBenchResult {
        backend: backend.to_owned(),
        mode: mode.to_owned(),
        jobs,
        seconds,
        jobs_per_second: jobs as f64 / seconds,
    };
    for asynchronous in [false, true] {
        let store = Arc::new(open().await?.0);
        preload(&store, jobs, 1).await?;
        let seconds = run_worker(store, jobs, concurrency, asynchronous).await?;
        let mode = if asynchronous {
            "worker, async (submit, 1 poll)"
        } else {
            "worker, sync"
        };
        out.push(result(mode, jobs, seconds));
    }
    for (mode, gated, per_order) in [
        ("queue, gate", true, 1),
        ("queue, no gate", false, 1),
        ("queue, gate, 4 jobs/order", true, 4),
    ] {
        let (store, url) = open().await?;
        preload(&store, jobs, per_order).await?;
        let ungated = if gated {
            None
        } else {
            Some(UngatedClaim::open(&store, &url).await?)
        };
        let (done, seconds) = drain_queue(&store, ungated.as_ref()).await?;
        anyhow::ensure!(done == jobs, "{mode}: drained {done} of {jobs}");
        out.push(result(mode, done, seconds));
    }
    Ok(out)
}
