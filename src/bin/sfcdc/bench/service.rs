//! The service's own memory and CPU: `sfcdc run` as a child process, against `sfcdc emulator` in
//! another, so what is measured is sfcdc alone (the emulator's event log, about 2 GiB a million
//! events, is not in it). The emulator starts with up to a million order change events (about 10% approvals) and fulfils synchronously; the service subscribes from EARLIEST
//! on a fresh SQLite file with the worker running. A larger run starts with 250,000 and is topped
//! up 250,000 at a time whenever the service is within that many of the last event, and the
//! emulator keeps two minutes of events, so ten million events fit on one machine (its org still
//! grows by every order created, about 3 million then). The run ends when every event is
//! appended, the checkpoint has reached the channel's last event and every job is finished (the
//! write-backs add events of their own, which it also ingests).
//!
//! `VmRSS` is sampled every 50 ms from `/proc/<pid>/status`; the peak is the child's `VmHWM`, and
//! the steady figure the median sample after the first tenth of the run. CPU is the child's user
//! plus system time from `/proc/<pid>/stat`, and the emulator's the same way from the service's
//! start (what serving the stream, the lookups and the fulfilment cost it): the two share the
//! machine's cores, which bounds the ingest rate one machine can show. `--rss-csv` writes every
//! sample (seconds, RSS, checkpoint position), which `scripts/plot_rss.py` draws.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use sfcdc::decode::Position;
use sfcdc::store::{AnyStore, Store};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const CHANNEL: &str = "/data/OrderChangeEvent";

/// The most events preloaded at once; a larger run is fed in [`TOP_UP`]s instead.
const PRELOAD: usize = 1_000_000;

/// Events appended at a time in a run larger than [`PRELOAD`], once the service is within one
/// top-up of the last event.
const TOP_UP: usize = 250_000;

/// How long the emulator keeps events in a run larger than [`PRELOAD`]: at most two top-ups
/// behind, the service needs events about half a minute old, and a longer retention would hold
/// gigabytes in the emulator.
const TOP_UP_RETENTION: &str = "2m";

/// One pass of the watch over the service: a memory sample and a read of its committed position.
/// It bounds the error of the catch-up time (at 100,000 events and 50k events/s, 50 ms is 2.5%).
const PASS: Duration = Duration::from_millis(50);

/// The events the emulator starts with.
fn first_load(events: usize) -> usize {
    if events > PRELOAD { TOP_UP } else { events }
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceMemory {
    /// Events preloaded in the emulator.
    pub events: usize,
    /// `SQLite` or `PostgreSQL`.
    pub backend: &'static str,
    /// Whether the worker ran (off: ingest alone).
    pub worker: bool,
    /// Jobs the service created (and, with the worker on, finished).
    pub jobs: i64,
    /// From the service's start to the last job finished, seconds.
    pub seconds: f64,
    /// The service's peak RSS (`VmHWM`), MiB.
    pub peak_mib: f64,
    /// The median RSS after the first tenth of the run, MiB.
    pub steady_mib: f64,
    /// The service's CPU time (user and system) over the run, seconds.
    pub cpu_seconds: f64,
    /// The emulator's CPU time over the same run (serving the stream, the lookups and the
    /// fulfilment), seconds.
    pub emulator_cpu_seconds: f64,
    /// From the service's start to its checkpoint reaching the preloaded events' last: events
    /// per second of ingest with the worker running beside it.
    pub ingest_events_per_second: f64,
    /// `(seconds since start, RSS MiB, checkpoint position)` every 50 ms (the emulator's
    /// replay numbers are shared by every channel, so a position shows progress, not a count).
    pub samples: Vec<(f64, f64, u64)>,
}

impl ServiceMemory {
    /// CPU microseconds per event taken in (jobs, polls and write-backs included).
    pub fn cpu_us_per_event(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.events.max(1) as f64
    }

    /// The emulator's CPU microseconds per event over the same run.
    pub fn emulator_cpu_us_per_event(&self) -> f64 {
        self.emulator_cpu_seconds * 1e6 / self.events.max(1) as f64
    }
}

/// The user plus system CPU seconds of `pid`, from `/proc/<pid>/stat`.
fn cpu_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // In clock ticks of USER_HZ, which Linux fixes at 100 for what it reports to user space.
    Some(ticks / 100.0)
}

/// `VmRSS` and `VmHWM` of `pid`, MiB.
fn memory_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|k| k / 1024.0)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// The emulator's addresses, read from its first lines.
struct Emulator {
    child: Child,
    grpc: String,
    rest: String,
    fulfilment: String,
}

async fn start_emulator(exe: &Path, ca: &Path, events: usize) -> anyhow::Result<Emulator> {
    // Events older than this are purged: with top-ups, the log holds about two chunks.
    let retention = if events > PRELOAD {
        TOP_UP_RETENTION
    } else {
        "72h"
    };
    let mut child = Command::new(exe)
        .args([
            "emulator",
            "--grpc-addr",
            "127.0.0.1:0",
            "--rest-addr",
            "127.0.0.1:0",
        ])
        .arg("--ca-out")
        .arg(ca)
        .args(["--bulk", &first_load(events).to_string()])
        .args(["--retention", retention])
        .args(["--fulfilment-sync-rate", "1", "--fulfilment-latency", "0s"])
        // A sandbox's daily API allocation: a Developer Edition's 15,000 (the emulator's
        // default) runs out a few thousand jobs in, and the rest would dead-letter.
        .args(["--fault", "api-limit=5000000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sfcdc emulator")?;
    let out = child.stdout.take().context("the emulator's output")?;
    let mut lines = BufReader::new(out).lines();
    let (mut grpc, mut rest, mut fulfilment) = (None, None, None);
    while let Some(line) = lines.next_line().await? {
        let after = |key: &str| {
            line.split_once(key)
                .and_then(|(_, v)| v.split_whitespace().next())
                .map(str::to_owned)
        };
        if line.starts_with("sfcdc emulator ready") {
            grpc = after("grpc=");
            rest = after("rest=");
        } else if line.trim_start().starts_with("Fulfilment API:") {
            fulfilment = after("Fulfilment API:");
        }
        if fulfilment.is_some() {
            break;
        }
    }
    // Keep reading its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Emulator {
        child,
        grpc: grpc.context("the emulator's gRPC address")?,
        rest: rest.context("the emulator's REST address")?,
        fulfilment: fulfilment.context("the emulator's fulfilment address")?,
    })
}

/// The last replay position of `CHANNEL` in the emulator.
async fn last_position(http: &reqwest::Client, rest: &str) -> anyhow::Result<u64> {
    let stats: serde_json::Value = http
        .get(format!("{rest}/emulator/stats"))
        .send()
        .await?
        .json()
        .await?;
    let hex = stats["last_replay_ids"][CHANNEL].as_str().unwrap_or("0");
    Ok(u64::from_str_radix(hex, 16)?)
}

/// The position of the service's checkpoint (0 before its first commit).
async fn committed_position(store: &AnyStore) -> anyhow::Result<u64> {
    Ok(match store.checkpoint(CHANNEL).await? {
        Some(Position::After(r)) => r.position().unwrap_or(0),
        _ => 0,
    })
}

/// Appends `count` events to the emulator (in the background: generating a million takes a
/// while, and the sampling goes on).
fn top_up(
    http: &reqwest::Client,
    rest: &str,
    count: usize,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let (http, url) = (http.clone(), format!("{rest}/emulator/bulk"));
    tokio::spawn(async move {
        let response = http
            .post(url)
            .json(&serde_json::json!({ "count": count }))
            .timeout(Duration::from_secs(600))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the emulator refused a top-up: {}",
            response.status()
        );
        Ok(())
    })
}

/// Whether the service has taken in every event and (with the worker on) finished every job;
/// the jobs if so.
async fn settled(
    store: &AnyStore,
    at: u64,
    last: u64,
    worker: bool,
) -> anyhow::Result<Option<i64>> {
    if at == 0 {
        return Ok(None);
    }
    let counts = store.state_counts().await?;
    // A dead-lettered job means the run measured failures, not the service: stop, saying so.
    for (state, n) in &counts.jobs {
        anyhow::ensure!(
            state != "dead" || *n == 0,
            "{n} jobs dead-lettered: the run is void (see the service's log)"
        );
    }
    let open: &[&str] = if worker {
        &["available", "running", "polling", "retryable"]
    } else {
        &[]
    };
    let unfinished: i64 = counts
        .jobs
        .iter()
        .filter(|(s, _)| open.contains(&s.as_str()))
        .map(|(_, n)| n)
        .sum();
    let all: i64 = counts.jobs.iter().map(|(_, n)| n).sum();
    Ok((at >= last && unfinished == 0 && all > 0).then_some(all))
}

/// Runs the service over `events` events, with the worker on or (ingest alone) off, on a fresh
/// SQLite file or on `database` (an empty PostgreSQL database); prints and returns what it
/// measured, and writes the samples to `csv` when given.
pub async fn run(
    events: usize,
    worker: bool,
    csv: Option<&Path>,
    database: Option<&str>,
) -> anyhow::Result<ServiceMemory> {
    let exe = std::env::current_exe()?;
    let dir = tempfile::Builder::new()
        .prefix("sfcdc-bench-service-")
        .tempdir()?;
    let ca = dir.path().join("ca.pem");
    let preload = Instant::now();
    let mut emu = start_emulator(&exe, &ca, events).await?;
    println!(
        "Service memory: the emulator (its own process) preloaded {} of {events} events in {:.1} s",
        first_load(events),
        preload.elapsed().as_secs_f64()
    );
    let emu_pid = emu.child.id().context("the emulator's pid")?;
    let emu_cpu_before = cpu_of(emu_pid).unwrap_or(0.0);
    let db = dir.path().join("service.db");
    let url = database.map_or_else(|| format!("sqlite://{}", db.display()), str::to_owned);
    let mut service = Command::new(&exe)
        .arg("run")
        .env_clear()
        .env("SFCDC_PUBSUB_ENDPOINT", &emu.grpc)
        .env("SFCDC_CA_CERT", &ca)
        .env("SF_AUTH", "client-credentials")
        .env("SF_LOGIN_URL", &emu.rest)
        .env("SF_CLIENT_ID", "sfcdc-demo")
        .env("SF_CLIENT_SECRET", "sfcdc-demo-secret")
        .env("SFCDC_CHANNELS", CHANNEL)
        .env("SFCDC_REPLAY_PRESET", "earliest")
        .env("SFCDC_DATABASE_URL", &url)
        .env("SFCDC_ADMIN_ADDR", "off")
        // Without a fulfilment URL the service runs no worker: ingest alone.
        .envs(
            [
                ("SFCDC_FULFILMENT_URL", emu.fulfilment.as_str()),
                ("SFCDC_FULFILMENT_TOKEN", "fulfilment-dev-token"),
            ]
            .into_iter()
            .filter(|_| worker),
        )
        .env("SFCDC_LOG", "warn")
        .envs(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("SFCDC_CACHE_")),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting sfcdc run")?;
    let pid = service.id().context("the service's pid")?;
    let started = Instant::now();
    let http = sfcdc::salesforce::http::http_client(Some(&ca)).map_err(anyhow::Error::msg)?;
    // The service creates and migrates the file; wait for it before reading. (PostgreSQL
    // migrations take an advisory lock, so opening beside the service is safe.)
    while database.is_none() && !db.exists() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "the service did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = AnyStore::open(&url).await?;
    // Each sample is written as it is taken, so a run stopped early still leaves its curve.
    let mut csv_out = match csv {
        Some(path) => {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(f, "seconds,rss_mib,checkpoint_position")?;
            Some(f)
        }
        None => None,
    };
    let mut samples = Vec::new();
    let mut peak = 0.0f64;
    let mut next_check = Instant::now();
    let mut appended = first_load(events);
    let mut filling: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let (mut at, mut first_caught_up) = (0u64, None);
    let first_last = last_position(&http, &emu.rest).await?;
    let jobs = loop {
        if let Some((rss, hwm)) = memory_of(pid) {
            let t = started.elapsed().as_secs_f64();
            samples.push((t, rss, at));
            if let Some(f) = &mut csv_out {
                use std::io::Write;
                writeln!(f, "{t:.2},{rss:.2},{at}")?;
                f.flush()?;
            }
            peak = peak.max(hwm);
        }
        anyhow::ensure!(service.try_wait()?.is_none(), "the service stopped early");
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3 * 3600),
            "the service did not finish within 3 hours"
        );
        // The committed position on every pass (a read of the store, which the service does not
        // wait on), so the first catch-up is timed to the pass; the emulator is asked only every
        // half second, so the measuring costs it little.
        at = committed_position(&store).await?;
        if first_caught_up.is_none() && at >= first_last {
            first_caught_up = Some(started.elapsed().as_secs_f64());
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_millis(500);
            let last = last_position(&http, &emu.rest).await?;
            if let Some(f) = filling.take_if(|f| f.is_finished()) {
                f.await??;
            }
            if filling.is_none() && appended < events {
                if last.saturating_sub(at) < TOP_UP as u64 {
                    let n = (events - appended).min(TOP_UP);
                    filling = Some(top_up(&http, &emu.rest, n));
                    appended += n;
                }
            } else if filling.is_none()
                && let Some(jobs) = settled(&store, at, last, worker).await?
            {
                break jobs;
            }
        }
        tokio::time::sleep(PASS).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    if let Some((_, hwm)) = memory_of(pid) {
        peak = peak.max(hwm);
    }
    let cpu_seconds = cpu_of(pid).unwrap_or(0.0);
    let emulator_cpu_seconds = cpu_of(emu_pid).map_or(0.0, |c| c - emu_cpu_before);
    // SIGTERM: the service's own graceful stop.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), service.wait()).await;
    let _ = emu.child.kill().await;
    let mut steady: Vec<f64> = samples
        .iter()
        .filter(|(t, _, _)| *t >= seconds / 10.0)
        .map(|(_, rss, _)| *rss)
        .collect();
    steady.sort_by(f64::total_cmp);
    let steady_mib = steady.get(steady.len() / 2).copied().unwrap_or(0.0);
    let result = ServiceMemory {
        events,
        backend: if database.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        worker,
        jobs,
        seconds,
        peak_mib: peak,
        steady_mib,
        cpu_seconds,
        emulator_cpu_seconds,
        ingest_events_per_second: first_load(events) as f64 / first_caught_up.unwrap_or(seconds),
        samples,
    };
    print(&result);
    if let Some(csv) = csv {
        println!("  samples written to {}", csv.display());
    }
    Ok(result)
}

fn print(r: &ServiceMemory) {
    let worker = if r.worker { "on" } else { "off" };
    println!(
        "sfcdc run alone, {}, worker {worker}: {} events and {} jobs in {:.1} s; peak RSS {:.0} MiB, steady {:.0} MiB",
        r.backend, r.events, r.jobs, r.seconds, r.peak_mib, r.steady_mib
    );
    println!(
        "  ingest {:.0} events/s over the preloaded events; CPU {:.1} s, {:.1} us per event",
        r.ingest_events_per_second,
        r.cpu_seconds,
        r.cpu_us_per_event()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let both = r.cpu_us_per_event() + r.emulator_cpu_us_per_event();
    println!(
        "  the emulator: CPU {:.1} s, {:.1} us per event; together on {cores} cores at most {:.0} events/s",
        r.emulator_cpu_seconds,
        r.emulator_cpu_us_per_event(),
        cores as f64 * 1e6 / both.max(f64::EPSILON)
    );
    let tenth = (r.samples.len() / 10).max(1);
    let line: Vec<String> = r
        .samples
        .iter()
        .step_by(tenth)
        .map(|(t, rss, _)| format!("{t:.0}s {rss:.0}"))
        .collect();
    println!("  RSS over time (s MiB): {}", line.join(", "));
}
