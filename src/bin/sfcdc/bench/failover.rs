//! `sfcdc bench`, failover part: what running as a fleet costs. How long a channel goes without
//! a subscriber when its holder stops, and what a fenced commit costs against an unfenced one.
//!
//! **Handover** (PostgreSQL only). Two `sfcdc run` children of this executable
//! (`SFCDC_INSTANCE_ID` `bench-a` and `bench-b`, `SFCDC_LEASE_TTL` [`LEASE_TTL`], one channel, no
//! worker) run on a fresh scratch database against the in-process emulator. Once one holds the
//! channel's lease and is subscribed, and the other stands by, the holder is stopped: SIGTERM (it
//! commits what it holds, releases the lease and announces it with `NOTIFY`) or SIGKILL (the
//! lease is left to expire). The runs alternate between the two signals, and the stopped
//! instance is started again before the next one. A handover is timed from the signal to the
//! moment the standby acquired the lease (the lease row's `acquired_at`, by the database's clock
//! on this machine), and, for the record, to the moment its Subscribe stream opened (the
//! emulator's count of streams, polled every 2 ms). When the holder last renewed decides when an
//! unrenewed lease expires, so each SIGKILL waits another fraction of a renewal interval after
//! the pair settled, and the kills fall at different points of the renewal cycle.
//!
//! **Fencing** (SQLite and PostgreSQL). One committer on a fresh SQLite file and a fresh
//! PostgreSQL schema commits batches of [`JOBS_PER_BATCH`] triggers and jobs with a checkpoint
//! (a batch of 100 events at the ingest mix's 10% approvals), with the channel's lease as the
//! fence and without, interleaved commit by commit (fenced, unfenced, unfenced, fenced, …) so
//! that a busy moment on a shared machine or a growing table weighs on both alike. Each commit
//! is timed on its own. A fenced commit first reads the lease row in its own transaction (`FOR
//! SHARE` on PostgreSQL); what that costs is the ratio of the two throughputs at the median
//! commit time (unfenced p50 over fenced p50). The mean throughputs (commits over the sum of
//! their times) are reported too, but on a shared machine a few commits stalled by other work
//! (tens of ms, where a commit takes a fraction of one) weigh on them: over seven runs here
//! their ratio ranged from 0.81 to 1.04 on PostgreSQL, the medians' from 0.89 to 0.99.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::Row;
use tokio::process::{Child, Command};

use sfcdc::decode::ReplayId;
use sfcdc::store::lease::{Fence, Leases};
use sfcdc::store::{AnyStore, NewJob, NewTrigger, Store, StoreBatch};
use sfcdc_emulator::{Emulator, EmulatorConfig};

const CHANNEL: &str = "/data/OrderChangeEvent";
/// The lease lifetime of the handover runs (renewed every third of it).
pub const LEASE_TTL: Duration = Duration::from_secs(2);
/// Commits per mode (fenced, unfenced) and backend in the fencing comparison.
pub const FENCE_COMMITS: usize = 2_000;
/// Triggers and jobs in each committed batch.
pub const JOBS_PER_BATCH: usize = 10;
/// How long the fleet may take to settle (both started, one subscribed) before a run.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// How long a handover may take before the run is abandoned as broken.
const HANDOVER_LIMIT: Duration = Duration::from_secs(30);
/// The two instance ids.
const NAMES: [&str; 2] = ["bench-a", "bench-b"];

/// Everything the failover part measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverBenchResult {
    /// Handover per signal (empty without PostgreSQL).
    pub handover: Vec<Handover>,
    /// Fenced against unfenced commits, per backend.
    pub fencing: Vec<Fencing>,
}

/// Handovers after one signal.
#[derive(Debug, Clone, Serialize)]
pub struct Handover {
    /// `sigterm` or `sigkill`.
    pub signal: String,
    /// `SFCDC_LEASE_TTL`, seconds.
    pub lease_ttl_s: f64,
    /// From the signal to the standby holding the lease, ms, per run.
    pub taken_ms: Vec<f64>,
    /// From the signal to the standby's Subscribe stream, ms, per run.
    pub subscribed_ms: Vec<f64>,
    /// Median of `taken_ms`.
    pub taken_median_ms: f64,
    /// Largest of `taken_ms`.
    pub taken_max_ms: f64,
    /// Median of `subscribed_ms`.
    pub subscribed_median_ms: f64,
    /// Largest of `subscribed_ms`.
    pub subscribed_max_ms: f64,
}

/// Fenced against unfenced commits on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct Fencing {
    /// `sqlite` or `postgres`.
    pub backend: String,
    /// Commits per mode.
    pub commits: usize,
    /// Triggers and jobs per commit.
    pub jobs_per_commit: usize,
    /// Fenced commits per second (commits over the sum of their times).
    pub fenced_per_second: f64,
    /// Unfenced commits per second (the same).
    pub unfenced_per_second: f64,
    /// Fenced over unfenced throughput at the median commit time: `unfenced_p50_ms /
    /// fenced_p50_ms`.
    pub ratio: f64,
    /// `fenced_per_second / unfenced_per_second`.
    pub mean_ratio: f64,
    /// Median time of a fenced commit, ms.
    pub fenced_p50_ms: f64,
    /// Median time of an unfenced commit, ms.
    pub unfenced_p50_ms: f64,
}

/// The signal of a handover run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

impl Stop {
    fn key(self) -> &'static str {
        match self {
            Stop::Term => "sigterm",
            Stop::Kill => "sigkill",
        }
    }
}

/// Runs the handovers (`runs` per signal; none without `postgres`) and the fencing comparison;
/// prints and returns what it measured.
pub async fn run(postgres: Option<&str>, runs: usize) -> anyhow::Result<FailoverBenchResult> {
    let mut result = FailoverBenchResult::default();
    match postgres {
        None => println!(
            "Failover: SKIPPED, no PostgreSQL URL (--postgres, SFCDC_BENCH_POSTGRES_URL or \
             SFCDC_TEST_POSTGRES_URL): no handover figures, and fencing on SQLite only"
        ),
        Some(url) => {
            println!(
                "Failover: 2 sfcdc run processes on a fresh PostgreSQL database, 1 channel, \
                 SFCDC_LEASE_TTL {} s, {runs} runs per signal",
                LEASE_TTL.as_secs_f64()
            );
            result.handover = handover(url, runs).await?;
        }
    }
    println!(
        "Fencing: {FENCE_COMMITS} commits of {JOBS_PER_BATCH} triggers and jobs per mode, \
         fenced and unfenced interleaved"
    );
    let dir = tempfile::Builder::new()
        .prefix("sfcdc-bench-fence-")
        .tempdir()?;
    let file = dir.path().join("fence.db");
    result
        .fencing
        .push(fencing(&format!("sqlite://{}", file.display()), "sqlite").await?);
    if let Some(url) = postgres {
        let pg = super::in_fresh_schema(url, |with_schema| async move {
            fencing(&with_schema, "postgres").await
        })
        .await?;
        result.fencing.push(pg);
    }
    print(&result);
    Ok(result)
}

fn print(r: &FailoverBenchResult) {
    if !r.handover.is_empty() {
        println!();
        println!(
            "{:<9} {:>13} {:>10} {:>17} {:>14}",
            "signal", "taken median", "taken max", "subscribed median", "subscribed max"
        );
        for h in &r.handover {
            println!(
                "{:<9} {:>10.1} ms {:>7.1} ms {:>14.1} ms {:>11.1} ms",
                h.signal.to_uppercase(),
                h.taken_median_ms,
                h.taken_max_ms,
                h.subscribed_median_ms,
                h.subscribed_max_ms
            );
        }
    }
    println!();
    println!(
        "{:<10} {:>8} {:>12} {:>14} {:>7} {:>11} {:>13} {:>10}",
        "backend",
        "commits",
        "fenced p50",
        "unfenced p50",
        "ratio",
        "fenced/s",
        "unfenced/s",
        "mean ratio"
    );
    for f in &r.fencing {
        println!(
            "{:<10} {:>8} {:>9.3} ms {:>11.3} ms {:>7.3} {:>11.0} {:>13.0} {:>10.3}",
            f.backend,
            f.commits,
            f.fenced_p50_ms,
            f.unfenced_p50_ms,
            f.ratio,
            f.fenced_per_second,
            f.unfenced_per_second,
            f.mean_ratio
        );
    }
}

/// The median and the largest of `values` (0 when empty).
pub fn median_max(values: &[f64]) -> (f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    (median, sorted.last().copied().unwrap_or(0.0))
}

/// `url` with its database (the path) replaced by `name`; the query string is kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A database of its own on the server of `url`, dropped by [`Scratch::drop_it`].
struct Scratch {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(url: &str) -> anyhow::Result<Scratch> {
        let name = format!(
            "sfcdc_bench_failover_{}_{}",
            std::process::id(),
            sfcdc::clock::now_ms()
        );
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .context("creating the scratch database")?;
        Ok(Scratch {
            admin,
            url: with_database(url, &name),
            name,
        })
    }

    async fn drop_it(self) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await?;
        Ok(())
    }
}

/// The channel's lease as the database has it now.
struct Lease {
    holder: Option<String>,
    generation: i64,
    acquired_at_ms: i64,
    live: bool,
}

/// The database's clock, epoch ms.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

async fn lease(pool: &sqlx::PgPool) -> Option<Lease> {
    // Before the first instance has migrated, there is no table: no lease yet.
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT holder, generation, acquired_at, expires_at > {DB_NOW} AS live \
         FROM sfcdc_leases WHERE channel = $1"
    )))
    .bind(CHANNEL)
    .fetch_optional(pool)
    .await
    .ok()??;
    Some(Lease {
        holder: row.get("holder"),
        generation: row.get("generation"),
        acquired_at_ms: row.get("acquired_at"),
        live: row.get("live"),
    })
}

/// Whether `instance` has recorded a heartbeat at or after `since_ms` (database clock).
async fn seen_since(pool: &sqlx::PgPool, instance: &str, since_ms: i64) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT seen_at FROM sfcdc_instances WHERE id = $1")
        .bind(instance)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .is_some_and(|seen| seen >= since_ms)
}

async fn db_now_ms(pool: &sqlx::PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("SELECT {DB_NOW}")))
            .fetch_one(pool)
            .await?,
    )
}

fn wall_ms() -> i64 {
    sfcdc::clock::now_ms()
}

/// One `sfcdc run` child: its process and when it was started (database clock).
struct Instance {
    name: &'static str,
    child: Option<Child>,
    started_ms: i64,
}

/// The two instances, their settings and the scratch database.
struct Pair<'a> {
    exe: &'a Path,
    env: Vec<(String, String)>,
    dir: &'a Path,
    pool: sqlx::PgPool,
    emu: &'a Emulator,
    instances: [Instance; 2],
}

impl Pair<'_> {
    async fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let name = self.instances[i].name;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let started_ms = db_now_ms(&self.pool).await?;
        let child = Command::new(self.exe)
            .arg("run")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("SFCDC_INSTANCE_ID", name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting sfcdc run")?;
        self.instances[i].child = Some(child);
        self.instances[i].started_ms = started_ms;
        Ok(())
    }

    fn subscribes(&self) -> u64 {
        self.emu
            .stats()
            .subscribes
            .get(CHANNEL)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until one instance holds the lease and is subscribed (one open stream), and the
    /// other is running and has recorded a heartbeat; then a second more, so the standby is
    /// listening for the release. Returns the holder's index and its generation.
    async fn settled(&mut self) -> anyhow::Result<(usize, i64)> {
        let started = Instant::now();
        loop {
            for i in &mut self.instances {
                if let Some(child) = &mut i.child
                    && let Some(status) = child.try_wait()?
                {
                    anyhow::bail!(
                        "{} exited by itself ({status}); see its log in the bench's directory",
                        i.name
                    );
                }
            }
            if let Some(l) = lease(&self.pool).await
                && l.live
                && let Some(h) = NAMES.iter().position(|n| l.holder.as_deref() == Some(n))
            {
                let other = &self.instances[1 - h];
                let open = self.emu.stats().open_subscriptions.get(CHANNEL).copied();
                if open == Some(1) && seen_since(&self.pool, other.name, other.started_ms).await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    // Still the same holder after the pause.
                    if let Some(again) = lease(&self.pool).await
                        && again.live
                        && again.generation == l.generation
                    {
                        return Ok((h, l.generation));
                    }
                    continue;
                }
            }
            anyhow::ensure!(
                started.elapsed() < SETTLE_LIMIT,
                "the two instances did not settle within {} s",
                SETTLE_LIMIT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the holder with `stop` and times the handover; restarts it. Returns (lease taken,
    /// subscribed) in ms after the signal.
    async fn handover(&mut self, stop: Stop, phase: Duration) -> anyhow::Result<(f64, f64)> {
        let (holder, generation) = self.settled().await?;
        tokio::time::sleep(phase).await;
        let standby = NAMES[1 - holder];
        let subscribes = self.subscribes();
        let mut child = self.instances[holder]
            .child
            .take()
            .context("the holder runs")?;
        let pid = child.id().context("the holder's pid")?;
        let signalled_ms = wall_ms();
        let signalled = Instant::now();
        match stop {
            Stop::Kill => child.start_kill()?,
            Stop::Term => {
                let status = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await?;
                anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
            }
        }
        let (mut taken, mut subscribed) = (None, None);
        while taken.is_none() || subscribed.is_none() {
            if subscribed.is_none() && self.subscribes() > subscribes {
                subscribed = Some(signalled.elapsed().as_secs_f64() * 1000.0);
            }
            if taken.is_none()
                && let Some(l) = lease(&self.pool).await
                && l.generation > generation
                && l.live
                && l.holder.as_deref() == Some(standby)
            {
                taken = Some((l.acquired_at_ms - signalled_ms).max(0) as f64);
            }
            anyhow::ensure!(
                signalled.elapsed() < HANDOVER_LIMIT,
                "no handover within {} s of {}",
                HANDOVER_LIMIT.as_secs(),
                stop.key().to_uppercase()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("the stopped instance did not exit within 30 s")??;
        if stop == Stop::Term {
            anyhow::ensure!(
                status.success(),
                "{} exited with {status} on SIGTERM",
                NAMES[holder]
            );
        }
        self.start(holder).await?;
        Ok((taken.unwrap_or(0.0), subscribed.unwrap_or(0.0)))
    }
}

/// `runs` handovers per signal, alternating, on a fresh database on the server of `url`.
async fn handover(url: &str, runs: usize) -> anyhow::Result<Vec<Handover>> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("sfcdc-bench-failover-")
        .tempdir()?;
    let emu = Emulator::start(EmulatorConfig {
        sample_data: true,
        ..EmulatorConfig::ephemeral()
    })
    .await?;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap_or_default())?;
    let scratch = Scratch::create(url).await?;
    let measured = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&scratch.url)
            .await?;
        let env: Vec<(String, String)> = [
            ("SFCDC_PUBSUB_ENDPOINT", emu.grpc_url()),
            ("SFCDC_CA_CERT", ca.display().to_string()),
            ("SF_AUTH", "client-credentials".into()),
            ("SF_LOGIN_URL", emu.instance_url().to_owned()),
            ("SF_CLIENT_ID", emu.credentials().client_id.clone()),
            ("SF_CLIENT_SECRET", emu.credentials().client_secret.clone()),
            ("SFCDC_CHANNELS", CHANNEL.into()),
            ("SFCDC_REPLAY_PRESET", "latest".into()),
            ("SFCDC_DATABASE_URL", scratch.url.clone()),
            ("SFCDC_ADMIN_ADDR", "off".into()),
            ("SFCDC_LEASE_TTL", format!("{}ms", LEASE_TTL.as_millis())),
            ("SFCDC_LOG", "info".into()),
            ("SFCDC_LOG_FORMAT", "text".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut pair = Pair {
            exe: &exe,
            env,
            dir: dir.path(),
            pool,
            emu: &emu,
            instances: NAMES.map(|name| Instance {
                name,
                child: None,
                started_ms: 0,
            }),
        };
        pair.start(0).await?;
        pair.start(1).await?;
        let renew = LEASE_TTL / 3;
        let mut times: Vec<(Stop, f64, f64)> = Vec::new();
        for run in 0..runs {
            for stop in [Stop::Term, Stop::Kill] {
                let phase = match stop {
                    Stop::Term => Duration::ZERO,
                    Stop::Kill => renew.mul_f64((run as f64 + 0.5) / runs as f64),
                };
                let (taken, subscribed) = pair.handover(stop, phase).await?;
                println!(
                    "  run {}/{runs} {:<8} lease taken after {taken:>7.1} ms, subscribed after \
                     {subscribed:>7.1} ms",
                    run + 1,
                    stop.key().to_uppercase()
                );
                times.push((stop, taken, subscribed));
            }
        }
        for i in &mut pair.instances {
            if let Some(mut c) = i.child.take() {
                let _ = c.kill().await;
            }
        }
        Ok::<_, anyhow::Error>(
            [Stop::Term, Stop::Kill]
                .into_iter()
                .map(|stop| {
                    let taken: Vec<f64> =
                        times.iter().filter(|t| t.0 == stop).map(|t| t.1).collect();
                    let subscribed: Vec<f64> =
                        times.iter().filter(|t| t.0 == stop).map(|t| t.2).collect();
                    let (taken_median_ms, taken_max_ms) = median_max(&taken);
                    let (subscribed_median_ms, subscribed_max_ms) = median_max(&subscribed);
                    Handover {
                        signal: stop.key().into(),
                        lease_ttl_s: LEASE_TTL.as_secs_f64(),
                        taken_ms: taken,
                        subscribed_ms: subscribed,
                        taken_median_ms,
                        taken_max_ms,
                        subscribed_median_ms,
                        subscribed_max_ms,
                    }
                })
                .collect(),
        )
    }
    .await;
    emu.shutdown().await;
    let dropped = scratch.drop_it().await;
    let result = measured?;
    dropped?;
    Ok(result)
}

/// A batch of `JOBS_PER_BATCH` triggers and jobs with the checkpoint at `seq`.
fn fence_batch(seq: u64, fence: Option<&Fence>) -> StoreBatch {
    let now = sfcdc::clock::now_ms();
    let keys: Vec<(String, String)> = (0..JOBS_PER_BATCH as u64)
        .map(|j| {
            let n = seq * JOBS_PER_BATCH as u64 + j;
            let order = sfcdc::sfid::generate("801", "Fb", n);
            (format!("fence:{n}"), order.as_str().to_owned())
        })
        .collect();
    StoreBatch {
        channel: CHANNEL.into(),
        checkpoint: Some(ReplayId::new(seq.to_be_bytes().to_vec())),
        triggers: keys
            .iter()
            .map(|(key, order)| NewTrigger {
                key: key.clone(),
                order_id: order.clone(),
                skipped: None,
            })
            .collect(),
        jobs: keys
            .iter()
            .map(|(key, order)| NewJob {
                key: key.clone(),
                order_id: order.clone(),
                account_id: None,
                trigger_status: "Approved".into(),
                trigger_kind: "status_change".into(),
                channel: CHANNEL.into(),
                replay_id: seq.to_be_bytes().to_vec(),
                event_id: key.clone(),
                payload: "{}".into(),
                max_attempts: 3,
            })
            .collect(),
        now_ms: now,
        fence: fence.cloned(),
        last_event_ms: Some(now),
        ..StoreBatch::default()
    }
}

/// Fenced against unfenced commits on the store at `url`.
async fn fencing(url: &str, backend: &str) -> anyhow::Result<Fencing> {
    let store = AnyStore::open(url).await?;
    let fence = store
        .acquire(CHANNEL, "bench", 3_600_000)
        .await?
        .context("the bench's lease")?
        .fence;
    let mut seq = 0u64;
    // Warm the connections and the statement caches.
    for _ in 0..50 {
        seq += 1;
        store.commit_batch(&fence_batch(seq, Some(&fence))).await?;
        seq += 1;
        store.commit_batch(&fence_batch(seq, None)).await?;
    }
    let (mut fenced, mut unfenced) = (
        Vec::with_capacity(FENCE_COMMITS),
        Vec::with_capacity(FENCE_COMMITS),
    );
    for i in 0..2 * FENCE_COMMITS {
        // F U U F: neither mode always goes first.
        let with_fence = matches!(i % 4, 0 | 3);
        seq += 1;
        let batch = fence_batch(seq, with_fence.then_some(&fence));
        let started = Instant::now();
        store.commit_batch(&batch).await?;
        let took = started.elapsed().as_secs_f64();
        if with_fence {
            fenced.push(took);
        } else {
            unfenced.push(took);
        }
    }
    let per_second = |times: &[f64]| times.len() as f64 / times.iter().sum::<f64>();
    let (fenced_per_second, unfenced_per_second) = (per_second(&fenced), per_second(&unfenced));
    let (fenced_p50_ms, unfenced_p50_ms) = (
        median_max(&fenced).0 * 1000.0,
        median_max(&unfenced).0 * 1000.0,
    );
    Ok(Fencing {
        backend: backend.to_owned(),
        commits: FENCE_COMMITS,
        jobs_per_commit: JOBS_PER_BATCH,
        fenced_per_second,
        unfenced_per_second,
        ratio: unfenced_p50_ms / fenced_p50_ms,
        mean_ratio: fenced_per_second / unfenced_per_second,
        fenced_p50_ms,
        unfenced_p50_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "x"),
            "postgresql://u:p@h/x?sslmode=disable"
        );
    }

    #[test]
    fn median_and_max() {
        assert_eq!(median_max(&[]), (0.0, 0.0));
        assert_eq!(median_max(&[3.0, 1.0, 2.0]), (2.0, 3.0));
        assert_eq!(median_max(&[4.0, 1.0, 2.0, 3.0]), (2.5, 4.0));
    }

    #[test]
    fn a_fence_batch_holds_its_jobs_and_checkpoint() {
        let fence = Fence {
            holder: "bench".into(),
            generation: 3,
        };
        let b = fence_batch(7, Some(&fence));
        assert_eq!(b.jobs.len(), JOBS_PER_BATCH);
        assert_eq!(b.triggers.len(), JOBS_PER_BATCH);
        assert_eq!(b.checkpoint.as_ref().and_then(ReplayId::position), Some(7));
        assert_eq!(b.fence, Some(fence));
        let keys: std::collections::BTreeSet<_> = b.jobs.iter().map(|j| &j.order_id).collect();
        assert_eq!(keys.len(), JOBS_PER_BATCH, "one order per job");
        assert!(fence_batch(8, None).fence.is_none());
    }
}
