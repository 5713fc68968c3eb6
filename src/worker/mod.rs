//! The worker pool: runs provisioning jobs against the fulfilment system and writes the outcome
//! back to Salesforce.
//!
//! A job runs as a series of short **steps**, each under a lease ([`crate::store::queue`]):
//! the first re-reads the order, re-checks the guards, writes `Activating` and submits; later
//! steps poll the operation until it finishes, then write `Activated` and the external id (or the
//! failure) and notify. Between polls the job holds no worker and no lease, so a thousand pending
//! operations cost a thousand rows, not a thousand tasks; and a long fulfilment never meets a job
//! timeout, because a step only ever waits for one HTTP call at a time.
//!
//! **Crash safety.** Everything a step learns is written before the next side effect that
//! depends on it: the phase before `Activating` is written, the operation id before the next
//! poll. A worker that dies mid-step loses its lease; the next worker resumes from what was
//! written, re-submitting (when no operation was recorded) under the same idempotency key, which
//! the fulfilment system answers with the first operation. So a job is submitted once per
//! operation generation, whoever runs it.
//!
//! **Throughput.** One writer applies every step's updates in batches, each one transaction (one
//! statement on PostgreSQL); before it takes a batch it lets the steps it just answered run up to
//! their next write, so that a batch carries the writes of every busy slot. A slot (one of
//! `SFCDC_WORKER_CONCURRENCY`) goes from job to job without a claim of its own: a step's last write
//! (the outcome, or the release until the next poll) hands its slot to the writer, whose batch
//! claims the slots' next jobs in the same transaction. A dispatcher claims as many due jobs as
//! there are free slots, in one statement: at start, when jobs are created after an idle spell, and
//! for slots a claim found nothing for. Pending operations claimed together are polled with one
//! batch request when the system offers it.

pub mod deliver;
pub mod fulfilment;
pub mod notify;
mod step;
pub mod transition;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value as Json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::fulfilment::{BATCH_MAX, Fulfilment};
use self::notify::Notifier;
use self::transition::RetryPolicy;
use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::deps::Deps;
use crate::rules::RulesConfig;
use crate::salesforce::{RestError, SalesforceRest};
use crate::sfid::SfId;
use crate::store::AnyStore;
use crate::store::JobRow;
use crate::store::queue::{Claim, JobUpdate, Queue};
use crate::telemetry::metrics::Metrics;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// `SFCDC_FULFILMENT_URL`: the fulfilment system's base URL.
    pub fulfilment_url: String,
    /// `SFCDC_FULFILMENT_TOKEN`: its bearer token, if it wants one.
    pub fulfilment_token: Option<SecretString>,
    /// `SFCDC_WORKER_CONCURRENCY`: job steps in flight at once.
    pub concurrency: usize,
    /// `SFCDC_JOB_LEASE`: how long a step may hold a job before another worker may take it.
    pub lease: Duration,
    /// `SFCDC_POLL_INTERVAL` and `SFCDC_POLL_MAX_INTERVAL`: the poll backoff.
    pub poll: RetryPolicy,
    /// `SFCDC_POLL_TIMEOUT`: an operation pending longer than this is abandoned (an attempt).
    pub poll_timeout: Duration,
    /// `SFCDC_MAX_ATTEMPTS`, `SFCDC_RETRY_BASE`, `SFCDC_RETRY_MAX`: the retry policy.
    pub retry: RetryPolicy,
    /// `SFCDC_HTTP_TIMEOUT`: bound on each fulfilment and notifier request.
    pub http_timeout: Duration,
    /// `SFCDC_FAILURE_STATUS`: the activation status written when a job fails for good.
    pub failure_status: String,
    /// `SFCDC_ERROR_FIELD`: the Order field that receives the failure message.
    pub error_field: String,
    /// `SFCDC_RETENTION`: finished jobs and deliveries older than this are purged.
    pub retention: Duration,
    /// The notifiers (`SFCDC_WEBHOOK_*`, `SFCDC_GITHUB_*`).
    pub notifiers: Vec<Notifier>,
    /// `SFCDC_DELIVERY_MAX_ATTEMPTS` (with the retry delays): the delivery retry policy.
    pub delivery_retry: RetryPolicy,
    /// How often an idle worker looks for due jobs (it is also woken when jobs are created).
    pub idle_poll: Duration,
}

/// Triggers are kept at least this long, beyond the Pub/Sub API's 72-hour retention, so no
/// replayable event can find its trigger purged.
pub const MIN_TRIGGER_RETENTION: Duration = Duration::from_secs(4 * 24 * 3600);

impl WorkerConfig {
    /// The worker of `sfcdc run`: the store's queue, the fulfilment system over HTTPS, and
    /// Salesforce REST for order reads and write-backs.
    pub fn build(
        self,
        deps: &Deps,
    ) -> Worker<AnyStore, fulfilment::HttpFulfilment, Arc<SalesforceRest>> {
        let fulfilment = fulfilment::HttpFulfilment::new(
            deps.http.clone(),
            &self.fulfilment_url,
            self.fulfilment_token.clone(),
            self.http_timeout,
        );
        Worker::new(
            deps.store.clone(),
            fulfilment,
            deps.rest.clone(),
            self,
            deps.rules.clone(),
            deps.metrics.clone(),
        )
        .with_clock(deps.clock.clone())
    }

    /// Reads the worker variables; `None` when `SFCDC_FULFILMENT_URL` is unset (no worker).
    pub fn from_env(env: &Env) -> Result<Option<WorkerConfig>, ConfigError> {
        let Some(url) = env.http_url("SFCDC_FULFILMENT_URL")? else {
            return Ok(None);
        };
        let http_timeout = env.duration_or("SFCDC_HTTP_TIMEOUT", Duration::from_secs(30))?;
        let lease = env.duration_or("SFCDC_JOB_LEASE", Duration::from_secs(300))?;
        // A step makes up to four calls (read, Activating, submit, outcome), each bounded by the
        // HTTP timeout; the lease must outlast them or another worker takes the job mid-step.
        if lease < http_timeout * 4 {
            return Err(ConfigError::new(
                "SFCDC_JOB_LEASE",
                "must be at least four SFCDC_HTTP_TIMEOUTs (a step makes up to four calls)",
            ));
        }
        let positive = |key: &str, default: Duration| env.positive_duration_or(key, default);
        let poll_base = positive("SFCDC_POLL_INTERVAL", Duration::from_secs(2))?;
        let poll_cap = positive("SFCDC_POLL_MAX_INTERVAL", Duration::from_secs(60))?.max(poll_base);
        let retry_base = positive("SFCDC_RETRY_BASE", Duration::from_secs(10))?;
        let retry_cap = positive("SFCDC_RETRY_MAX", Duration::from_secs(600))?.max(retry_base);
        let field = |key: &str, default: &str| {
            env.parse_or(key, default.to_owned(), |s| {
                if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    Ok(s.to_owned())
                } else {
                    Err("expected a field API name (letters, digits and underscores)".into())
                }
            })
        };
        Ok(Some(WorkerConfig {
            fulfilment_url: url.trim_end_matches('/').to_owned(),
            fulfilment_token: env.secret("SFCDC_FULFILMENT_TOKEN"),
            concurrency: env.int_or("SFCDC_WORKER_CONCURRENCY", 32, 1..=1024)? as usize,
            lease,
            poll: RetryPolicy {
                max_attempts: i32::MAX,
                base: poll_base,
                cap: poll_cap,
            },
            poll_timeout: positive("SFCDC_POLL_TIMEOUT", Duration::from_secs(3600))?,
            retry: RetryPolicy {
                max_attempts: env.int_or("SFCDC_MAX_ATTEMPTS", 8, 1..=100)? as i32,
                base: retry_base,
                cap: retry_cap,
            },
            http_timeout,
            failure_status: env.parse_or("SFCDC_FAILURE_STATUS", "Failed".to_owned(), |s| {
                Ok(s.to_owned())
            })?,
            error_field: field("SFCDC_ERROR_FIELD", "Provisioning_Error__c")?,
            retention: positive("SFCDC_RETENTION", Duration::from_secs(7 * 24 * 3600))?,
            notifiers: Notifier::from_env(env)?,
            delivery_retry: RetryPolicy {
                max_attempts: env.int_or("SFCDC_DELIVERY_MAX_ATTEMPTS", 10, 1..=100)? as i32,
                base: retry_base,
                cap: retry_cap,
            },
            idle_poll: positive("SFCDC_WORKER_IDLE_POLL", Duration::from_millis(250))?,
        }))
    }
}

/// The Salesforce side of a job: read the order, write the outcome.
pub trait Orders: Send + Sync + 'static {
    /// The order as REST returns it; `None` if it does not exist.
    fn read(&self, id: &SfId) -> impl Future<Output = Result<Option<Json>, RestError>> + Send;

    /// Updates fields of the order.
    fn update(
        &self,
        id: &SfId,
        fields: &Json,
    ) -> impl Future<Output = Result<(), RestError>> + Send;
}

impl Orders for SalesforceRest {
    async fn read(&self, id: &SfId) -> Result<Option<Json>, RestError> {
        self.get("Order", id).await
    }

    async fn update(&self, id: &SfId, fields: &Json) -> Result<(), RestError> {
        self.patch("Order", id, fields).await
    }
}

impl<T: Orders> Orders for Arc<T> {
    async fn read(&self, id: &SfId) -> Result<Option<Json>, RestError> {
        (**self).read(id).await
    }

    async fn update(&self, id: &SfId, fields: &Json) -> Result<(), RestError> {
        (**self).update(id, fields).await
    }
}

/// A step's request to the writer, and where the answer goes.
struct WriteRequest {
    update: JobUpdate,
    /// The step's slot, handed on with its last write: the writer claims the slot's next job in
    /// the same statement, or frees the slot when none is due.
    slot: Option<OwnedSemaphorePermit>,
    reply: oneshot::Sender<Result<bool, String>>,
}

/// Updates most one writer transaction applies.
const WRITE_BATCH: usize = 256;

/// How many times the writer lets the tasks ready to run go first before it takes a batch,
/// while their writes keep arriving (see [`coalesce`]).
const COALESCE_YIELDS: usize = 4;

/// The worker pool.
pub struct Worker<Q: Queue, F: Fulfilment, O: Orders> {
    /// Shared with the steps once it runs.
    inner: Inner<Q, F, O>,
    writes: mpsc::Receiver<WriteRequest>,
}

struct Inner<Q, F, O> {
    queue: Arc<Q>,
    fulfilment: F,
    orders: O,
    config: WorkerConfig,
    rules: Arc<RulesConfig>,
    metrics: Arc<Metrics>,
    /// Where step updates go.
    writer: mpsc::Sender<WriteRequest>,
    /// This worker's name in leases.
    name: String,
    /// Distinguishes this worker's claims, so a re-claim by the same process still fences.
    claims: AtomicU64,
    /// Jobs were created (or became due): look now.
    wake: Arc<Notify>,
    /// Deliveries were written: send now.
    deliveries: Arc<Notify>,
    /// Claims, polls, timeouts and retries are judged by it.
    clock: Clock,
}

impl<Q: Queue, F: Fulfilment, O: Orders> Worker<Q, F, O> {
    /// A pool that runs `queue`'s jobs against `fulfilment`, writing to `orders`.
    pub fn new(
        queue: Arc<Q>,
        fulfilment: F,
        orders: O,
        config: WorkerConfig,
        rules: Arc<RulesConfig>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (writer, writes) = mpsc::channel(4 * config.concurrency.max(WRITE_BATCH));
        let name = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Worker {
            inner: Inner {
                queue,
                fulfilment,
                orders,
                config,
                rules,
                metrics,
                writer,
                name,
                claims: AtomicU64::new(0),
                wake: Arc::new(Notify::new()),
                deliveries: Arc::new(Notify::new()),
                clock: Clock::system(),
            },
            writes,
        }
    }

    /// Judges time by `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.inner.clock = clock;
        self
    }

    /// Wakes the worker when notified (pass the ingest sink's job signal).
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.inner.wake = wake;
        self
    }

    /// Runs until `cancel`, then lets the steps in flight finish and write their outcome.
    pub async fn run(self, http: reqwest::Client, cancel: CancellationToken) {
        let Worker { inner, writes } = self;
        let inner = Arc::new(inner);
        tracing::info!(
            worker = %inner.name,
            concurrency = inner.config.concurrency,
            notifiers = inner.config.notifiers.len(),
            "Worker started"
        );
        let steps = TaskTracker::new();
        let writer = tokio::spawn(write_loop(
            Arc::downgrade(&inner),
            writes,
            steps.clone(),
            cancel.clone(),
        ));
        let background = TaskTracker::new();
        if !inner.config.notifiers.is_empty() {
            background.spawn(deliver::run(
                deliver::Deliverer {
                    queue: inner.queue.clone(),
                    notifiers: inner.config.notifiers.clone(),
                    http,
                    timeout: inner.config.http_timeout,
                    lease: inner.config.lease,
                    retry: inner.config.delivery_retry,
                    idle: inner.config.idle_poll,
                    metrics: inner.metrics.clone(),
                    name: format!("{}-d", inner.name),
                    wake: inner.deliveries.clone(),
                    clock: inner.clock.clone(),
                },
                cancel.clone(),
            ));
        }
        background.spawn(retention_loop(
            inner.queue.clone(),
            inner.clock.clone(),
            inner.config.retention,
            cancel.clone(),
        ));
        background.close();

        dispatch(&inner, &steps, &cancel).await;
        steps.close();
        steps.wait().await;
        background.wait().await;
        // Every step has answered (and the writer holds no strong reference between batches);
        // dropping the last sender ends the writer.
        drop(inner);
        let _ = writer.await;
        tracing::info!("Worker stopped");
    }
}

/// Claims due jobs into free slots until cancelled. Slots seldom come back here while jobs are
/// due: a step hands its slot on with its last write, which claims the slot's next job.
async fn dispatch<Q: Queue, F: Fulfilment, O: Orders>(
    inner: &Arc<Inner<Q, F, O>>,
    steps: &TaskTracker,
    cancel: &CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(inner.config.concurrency));
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = cancel.cancelled() => return,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let owner = inner.claim_owner();
        let now = inner.clock.now_ms();
        let jobs = match inner
            .queue
            .claim_jobs(&owner, permits.len() as i64, now, inner.lease_ms())
            .await
        {
            Ok(jobs) => {
                failures = 0;
                jobs
            }
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(250 * 2u64.pow(failures.min(6)));
                tracing::warn!(error = %e, retry_in = ?pause, "Could not claim jobs");
                drop(permits);
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = cancel.cancelled() => return,
                }
            }
        };
        if jobs.is_empty() {
            drop(permits);
            tokio::select! {
                () = tokio::time::sleep(inner.config.idle_poll) => {}
                () = inner.wake.notified() => {}
                () = cancel.cancelled() => return,
            }
            continue;
        }
        launch(inner, steps, cancel, jobs, &owner, permits);
    }
}

/// Starts claimed jobs, one slot each: a fresh job's step on its own, jobs with an operation
/// polled together (one batch status request). Slots beyond the jobs are freed.
fn launch<Q: Queue, F: Fulfilment, O: Orders>(
    inner: &Arc<Inner<Q, F, O>>,
    steps: &TaskTracker,
    cancel: &CancellationToken,
    jobs: Vec<JobRow>,
    owner: &str,
    mut slots: Vec<OwnedSemaphorePermit>,
) {
    // Every claim asks for at most as many jobs as it has slots.
    debug_assert!(jobs.len() <= slots.len());
    slots.truncate(jobs.len());
    let (polling, fresh): (Vec<JobRow>, Vec<JobRow>) =
        jobs.into_iter().partition(|j| j.operation_id.is_some());
    let mut polling_slots = slots.split_off(fresh.len());
    for (job, slot) in fresh.into_iter().zip(slots) {
        let (inner, owner) = (inner.clone(), owner.to_owned());
        steps.spawn(async move { inner.start(job, &owner, slot).await });
    }
    for chunk in chunks(polling, BATCH_MAX) {
        let held: Vec<_> = polling_slots.drain(..chunk.len()).collect();
        let (inner, owner, cancel) = (inner.clone(), owner.to_owned(), cancel.clone());
        steps.spawn(async move { inner.poll_all(chunk, held, &owner, &cancel).await });
    }
}

fn chunks(mut jobs: Vec<JobRow>, size: usize) -> Vec<Vec<JobRow>> {
    let mut out = Vec::new();
    while jobs.len() > size {
        let rest = jobs.split_off(size);
        out.push(std::mem::replace(&mut jobs, rest));
    }
    if !jobs.is_empty() {
        out.push(jobs);
    }
    out
}

/// Applies step updates in batches, answering each step with whether its lease held. The slots
/// handed on with a batch's last writes get their next jobs from a claim in the same statement
/// (none once a shutdown began), which start here; the slots left over are freed.
async fn write_loop<Q: Queue, F: Fulfilment, O: Orders>(
    inner: Weak<Inner<Q, F, O>>,
    mut writes: mpsc::Receiver<WriteRequest>,
    steps: TaskTracker,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        coalesce(&writes).await;
        if writes.recv_many(&mut batch, WRITE_BATCH).await == 0 {
            return;
        }
        // The steps that wrote hold the worker; between batches the writer does not, so the
        // channel closes once they are gone.
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut updates = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut slots = Vec::new();
        for request in batch.drain(..) {
            updates.push(request.update);
            replies.push(request.reply);
            slots.extend(request.slot);
        }
        let claim = Claim {
            owner: inner.claim_owner(),
            limit: if cancel.is_cancelled() {
                0
            } else {
                slots.len() as i64
            },
            lease_ms: inner.lease_ms(),
        };
        let now = inner.clock.now_ms();
        match inner
            .queue
            .update_jobs_and_claim(&updates, &claim, now)
            .await
        {
            Ok(applied) => {
                launch(
                    &inner,
                    &steps,
                    &cancel,
                    applied.claimed,
                    &claim.owner,
                    slots,
                );
                for (reply, held) in replies.into_iter().zip(applied.held) {
                    let _ = reply.send(Ok(held));
                }
            }
            Err(e) => {
                // The steps give up; their leases expire and the jobs resume from what was
                // written before.
                drop(slots);
                tracing::error!(error = %e, updates = updates.len(), "Could not write job updates");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Lets the steps a batch just answered (and the jobs it claimed) run up to their next write
/// before the writer takes the next batch, so that their writes join it. Without this, a step
/// answered at once writes again a moment after the writer has taken the writes that queued
/// during the last statement, and waits a whole batch behind them: the steps split into two
/// groups whose batches alternate, each half the size, with twice the statements and commits
/// (`--worker-only` on PostgreSQL: 916 statements for 30,000 writes, 472 with this). The writer
/// yields while writes keep arriving, a few times at most; a step that waits on HTTP costs it
/// one pass of the scheduler.
async fn coalesce(writes: &mpsc::Receiver<WriteRequest>) {
    let mut queued = writes.len();
    for _ in 0..COALESCE_YIELDS {
        if queued >= WRITE_BATCH {
            return;
        }
        tokio::task::yield_now().await;
        let now = writes.len();
        if now > 0 && now == queued {
            return;
        }
        queued = now;
    }
}

impl<Q: Queue, F: Fulfilment, O: Orders> Inner<Q, F, O> {
    /// Writes one update through the writer; `Ok(false)` if the lease was lost. A step's last
    /// write hands its `slot` on.
    async fn write(
        &self,
        update: JobUpdate,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<bool, String> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(WriteRequest {
                update,
                slot,
                reply,
            })
            .await
            .map_err(|_| "the writer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the writer has stopped".to_owned())?
    }

    /// A new lease holder's name: this worker's, and a number that tells its claims apart.
    fn claim_owner(&self) -> String {
        let claim = self.claims.fetch_add(1, Ordering::Relaxed);
        format!("{}/{claim}", self.name)
    }

    /// How long a claim holds a job.
    fn lease_ms(&self) -> i64 {
        self.config.lease.as_millis() as i64
    }
}

/// Purges finished work older than `retention`, hourly.
async fn retention_loop<Q: Queue>(
    queue: Arc<Q>,
    clock: Clock,
    retention: Duration,
    cancel: CancellationToken,
) {
    let every = (retention / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600));
    loop {
        let now = clock.now_ms();
        let cutoff = now - retention.as_millis() as i64;
        let trigger_cutoff = now - retention.max(MIN_TRIGGER_RETENTION).as_millis() as i64;
        match queue.purge(cutoff, trigger_cutoff).await {
            Ok(p) if p.jobs + p.deliveries + p.triggers > 0 => tracing::info!(
                jobs = p.jobs,
                deliveries = p.deliveries,
                triggers = p.triggers,
                "Purged finished work past its retention"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Retention purge failed; the next run retries"),
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = cancel.cancelled() => return,
        }
    }
}
