//! `sfcdc bench --report`: every benchmark's headline figures in one table (and one JSON
//! document), with the machine they were measured on.
//!
//! Each row is a metric, the backend or variant it was measured on, a value with its unit, and
//! notes saying what the value includes. A part that did not run (PostgreSQL without a URL) is a
//! row without a value that says why. The JSON document carries the same rows, each with a
//! stable `key`, and every figure of every part under `details`.

use serde::Serialize;

use super::{BenchOptions, BenchReport, BenchResult};

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// `linux`, …
    pub os: &'static str,
    /// `x86_64`, …
    pub arch: &'static str,
    /// `release` or `debug`.
    pub profile: &'static str,
    /// sfcdc's version.
    pub sfcdc_version: &'static str,
    /// `rustc --version` of the rustc on PATH (not necessarily the one that built sfcdc).
    pub rustc: Option<String>,
    /// The commit: `SFCDC_GIT_COMMIT`, else `git rev-parse HEAD` in the current directory.
    pub git_commit: Option<String>,
    /// The 1-minute load average when the report started (other work on a shared machine).
    pub load_average_start: Option<f64>,
    /// The same when it ended.
    pub load_average_end: Option<f64>,
}

/// The 1-minute load average (Linux).
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

impl Machine {
    /// This machine, `load_average_start` having been read when the report started.
    pub fn detect(load_average_start: Option<f64>) -> Machine {
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            sfcdc_version: env!("CARGO_PKG_VERSION"),
            rustc: command_line("rustc", &["--version"]),
            git_commit: std::env::var("SFCDC_GIT_COMMIT")
                .ok()
                .filter(|c| !c.is_empty())
                .or_else(|| command_line("git", &["rev-parse", "HEAD"])),
            load_average_start,
            load_average_end: load_average(),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Stable identifier, e.g. `ingest.sqlite.events_per_second`.
    pub key: String,
    /// What was measured.
    pub metric: String,
    /// The backend or variant.
    pub variant: String,
    /// The figure (none when the part was skipped).
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// What the figure includes, or why it is missing.
    pub notes: String,
}

impl Row {
    fn new(key: String, metric: &str, variant: &str, value: f64, unit: &str) -> Row {
        Row {
            key,
            metric: metric.to_owned(),
            variant: variant.to_owned(),
            value: Some(value),
            unit: unit.to_owned(),
            notes: String::new(),
        }
    }

    fn skipped(key: String, metric: &str, variant: &str, unit: &str, why: &str) -> Row {
        Row {
            value: None,
            notes: format!("skipped: {why}"),
            ..Row::new(key, metric, variant, 0.0, unit)
        }
    }

    fn notes(mut self, notes: impl Into<String>) -> Row {
        self.notes = notes.into();
        self
    }
}

/// The sizes the report ran with.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// Events of the ingest runs.
    pub ingest_events: usize,
    /// Events of the backlog catch-up.
    pub backlog_events: usize,
    /// Events per FetchRequest.
    pub batch_size: u32,
    /// Jobs of each worker and queue run.
    pub jobs: usize,
    /// Worker concurrency.
    pub concurrency: usize,
    /// In-process cache reads.
    pub cache_reads: usize,
    /// Handovers per signal in the failover part.
    pub failover_runs: usize,
    /// Whether PostgreSQL was measured.
    pub postgres: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// With what sizes.
    pub sizes: Sizes,
    /// Wall time of the whole report, s.
    pub seconds: f64,
    /// The table.
    pub rows: Vec<Row>,
    /// Every figure of every part.
    pub details: BenchReport,
}

const NO_POSTGRES: &str =
    "no PostgreSQL URL (--postgres, SFCDC_BENCH_POSTGRES_URL or SFCDC_TEST_POSTGRES_URL)";

const BACKENDS: [(&str, &str); 2] = [("sqlite", "SQLite"), ("postgres", "PostgreSQL")];

fn why_missing(backend: &str, options: &BenchOptions) -> &'static str {
    if backend == "postgres" && options.postgres.is_none() {
        NO_POSTGRES
    } else {
        "not run"
    }
}

/// `1234567.8` → `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

/// A value as the table shows it, by unit.
fn format_value(value: Option<f64>, unit: &str) -> String {
    let Some(v) = value else {
        return "-".to_owned();
    };
    match unit {
        u if u.ends_with("/s") => thousands(v),
        "MiB" => format!("{v:.0}"),
        "%" => format!("{v:.1}"),
        _ if v.abs() >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}

fn ingest_rows(
    rows: &mut Vec<Row>,
    part: &str,
    metric: &str,
    results: &[BenchResult],
    options: &BenchOptions,
) {
    for (backend, name) in BACKENDS {
        let key = |what: &str| format!("{part}.{backend}.{what}");
        let Some(r) = results.iter().find(|r| r.backend == backend) else {
            rows.push(Row::skipped(
                key("events_per_second"),
                metric,
                name,
                "events/s",
                why_missing(backend, options),
            ));
            continue;
        };
        let mut notes = format!(
            "{} events from EARLIEST in {:.1} s; commit p50 {:.1} ms, p99 {:.1} ms; {} jobs",
            thousands(r.events as f64),
            r.seconds,
            r.commit_p50_ms,
            r.commit_p99_ms,
            thousands(r.jobs as f64)
        );
        if r.reconnects > 0 {
            notes.push_str(&format!(
                "; DISTURBED: {} reconnects (see the log)",
                r.reconnects
            ));
        }
        if part == "backlog" {
            rows.push(
                Row::new(key("seconds"), metric, name, r.seconds, "s").notes(format!(
                    "until the checkpoint reached the last of {} events",
                    thousands(r.events as f64)
                )),
            );
        }
        rows.push(
            Row::new(
                key("events_per_second"),
                metric,
                name,
                r.events_per_second,
                "events/s",
            )
            .notes(notes),
        );
    }
}

fn decode_rows(rows: &mut Vec<Row>, report: &BenchReport) {
    let Some(d) = &report.decode else {
        return;
    };
    let mut previous = "";
    for p in &d.paths {
        let mut notes = format!("{}; {:.0} ns/event", p.includes, p.ns_per_event);
        if let Some(cpu) = p.events_per_cpu_second {
            notes.push_str(&format!("; {} events per CPU-second", thousands(cpu)));
        }
        let metric = if p.set == "mix" {
            "decode, mix"
        } else {
            "decode, 1 event"
        };
        if p.set != previous {
            let set = if p.set == "mix" {
                format!(
                    "{} payloads of {:.0} B on average",
                    thousands(d.payloads as f64),
                    d.mean_payload_bytes
                )
            } else {
                format!("the representative UPDATE, {} B", d.representative_bytes)
            };
            notes.push_str(&format!(
                "; {set}, {} fields, 1 core, fastest of {}",
                d.schema_fields, d.rounds
            ));
            previous = &p.set;
        }
        rows.push(
            Row::new(
                format!("decode.{}.{}.events_per_second", p.set, p.path),
                metric,
                &p.label,
                p.events_per_second,
                "events/s",
            )
            .notes(notes),
        );
    }
}

fn worker_rows(rows: &mut Vec<Row>, report: &BenchReport, options: &BenchOptions) {
    if options.jobs == 0 {
        return;
    }
    for (backend, name) in BACKENDS {
        let results: Vec<_> = report
            .worker
            .iter()
            .filter(|r| r.backend == backend)
            .collect();
        if results.is_empty() {
            rows.push(Row::skipped(
                format!("worker.{backend}.sync.jobs_per_second"),
                "worker",
                name,
                "jobs/s",
                why_missing(backend, options),
            ));
        }
        for r in results {
            let (metric, mode) = r.mode.split_once(", ").unwrap_or(("worker", &r.mode));
            let slug: String = mode
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
                .split('_')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            let notes = if metric == "worker" {
                format!(
                    "concurrency {}; instant Salesforce and fulfilment stand-ins: sfcdc's own \
                     cost per job",
                    options.concurrency
                )
            } else {
                "the queue alone: claim and complete 64 at a time".to_owned()
            };
            rows.push(
                Row::new(
                    format!("{metric}.{backend}.{slug}.jobs_per_second"),
                    metric,
                    &format!("{name}, {mode}"),
                    r.jobs_per_second,
                    "jobs/s",
                )
                .notes(format!("{} jobs; {notes}", thousands(r.jobs as f64))),
            );
        }
    }
}

fn cache_rows(rows: &mut Vec<Row>, report: &BenchReport) {
    let Some(c) = &report.cache else {
        return;
    };
    let parts = [
        ("in process: ", "in_process", "in process, hit"),
        (
            "HTTP: GET /orders/{id}, keep-alive",
            "http",
            "HTTP, 1 client",
        ),
        (
            "HTTP: GET /orders/{id}, concurrent",
            "http_concurrent",
            "HTTP",
        ),
        ("no cache: ", "uncached", "no cache, 1 SOQL query"),
    ];
    for (prefix, key, name) in parts {
        let Some(l) = c.latency.iter().find(|l| l.part.starts_with(prefix)) else {
            continue;
        };
        let name = if l.concurrency > 1 {
            format!("{name}, {} clients", l.concurrency)
        } else {
            name.to_owned()
        };
        rows.push(
            Row::new(
                format!("cache.{key}.p99_us"),
                "cache read p99",
                &name,
                l.p99_us,
                "µs",
            )
            .notes(format!(
                "p50 {:.2} µs, {} reads/s over {} reads{}",
                l.p50_us,
                thousands(l.reads_per_second),
                thousands(l.reads as f64),
                l.hit_ratio
                    .map_or_else(String::new, |h| format!(", {:.1}% hits", h * 100.0))
            )),
        );
    }
    let m = &c.mix;
    rows.push(
        Row::new(
            "cache.mix.rest_calls_saved_percent".into(),
            "cache: REST calls saved",
            "mixed workload",
            m.calls_saved_percent,
            "%",
        )
        .notes(format!(
            "{} instead of {} calls; {} ops, {}% writes, Zipf s=1 over {} orders; {} stale reads",
            m.rest_calls_cached,
            m.rest_calls_uncached,
            thousands(m.operations as f64),
            super::cache::WRITE_PERCENT,
            c.orders,
            m.stale_reads
        )),
    );
}

fn failover_rows(rows: &mut Vec<Row>, report: &BenchReport, options: &BenchOptions) {
    if options.failover_runs == 0 {
        return;
    }
    let empty = super::failover::FailoverBenchResult::default();
    let f = report.failover.as_ref().unwrap_or(&empty);
    let ttl = super::failover::LEASE_TTL.as_secs_f64();
    for (signal, metric, variant) in [
        (
            "sigterm",
            "failover after SIGTERM",
            "PostgreSQL, lease released".to_owned(),
        ),
        (
            "sigkill",
            "failover after SIGKILL",
            format!("PostgreSQL, lease expired (TTL {ttl} s)"),
        ),
    ] {
        let Some(h) = f.handover.iter().find(|h| h.signal == signal) else {
            let why = format!(
                "{}: handovers are measured on PostgreSQL only",
                why_missing("postgres", options)
            );
            rows.push(Row::skipped(
                format!("failover.{signal}.median_ms"),
                metric,
                &variant,
                "ms",
                &why,
            ));
            continue;
        };
        let runs = h.taken_ms.len();
        let expected = if signal == "sigkill" {
            format!(
                "; expected between the TTL less a renewal interval and the TTL plus one ({:.1} \
                 to {:.1} s)",
                ttl * 2.0 / 3.0,
                ttl * 4.0 / 3.0
            )
        } else {
            String::new()
        };
        rows.push(
            Row::new(
                format!("failover.{signal}.median_ms"),
                metric,
                &format!("{variant}, median"),
                h.taken_median_ms,
                "ms",
            )
            .notes(format!(
                "2 sfcdc run processes, {runs} runs: from the signal to the standby holding the \
                 lease (its acquired_at, database clock); its stream open after a median {:.0} ms",
                h.subscribed_median_ms
            )),
        );
        rows.push(
            Row::new(
                format!("failover.{signal}.max_ms"),
                metric,
                &format!("{variant}, max"),
                h.taken_max_ms,
                "ms",
            )
            .notes(format!(
                "the slowest of {runs} runs; its stream open after at most {:.0} ms{expected}",
                h.subscribed_max_ms
            )),
        );
    }
    for (backend, name) in BACKENDS {
        let key = format!("fencing.{backend}.ratio");
        let variant = format!("{name}, fenced / unfenced commits");
        let Some(r) = f.fencing.iter().find(|r| r.backend == backend) else {
            rows.push(Row::skipped(
                key,
                "fencing cost",
                &variant,
                "×",
                why_missing(backend, options),
            ));
            continue;
        };
        rows.push(
            Row::new(key, "fencing cost", &variant, r.ratio, "×").notes(format!(
                "throughput at the median commit: p50 fenced {:.3} ms, unfenced {:.3} ms; mean \
                 {} / {} commits/s ({:.2}); {} commits of {} triggers and jobs per mode, \
                 interleaved, one committer",
                r.fenced_p50_ms,
                r.unfenced_p50_ms,
                thousands(r.fenced_per_second),
                thousands(r.unfenced_per_second),
                r.mean_ratio,
                thousands(r.commits as f64),
                r.jobs_per_commit
            )),
        );
    }
}

fn memory_rows(rows: &mut Vec<Row>, report: &BenchReport) {
    let total_events = report.preloads.last().map_or(0, |p| p.total_events);
    rows.push(
        Row::new(
            "memory.peak_rss_mib".into(),
            "peak RSS",
            "whole process",
            report.peak_rss_mib,
            "MiB",
        )
        .notes(if total_events > 0 {
            format!(
                "VmHWM: sfcdc and the in-process emulator holding {} events",
                thousands(total_events as f64)
            )
        } else {
            "VmHWM of the process".to_owned()
        }),
    );
    if total_events > 0 {
        let log: f64 = report.preloads.iter().map(|p| p.rss_added_mib).sum();
        rows.push(
            Row::new(
                "memory.emulator_event_log_mib".into(),
                "RSS",
                "emulator event log",
                log,
                "MiB",
            )
            .notes(format!(
                "kept by the emulator for {} preloaded events (not sfcdc)",
                thousands(total_events as f64)
            )),
        );
    }
    if let Some(m) = &report.service {
        let variant = format!("sfcdc run alone, {} events", thousands(m.events as f64));
        let notes = format!(
            "SQLite, worker on, emulator in its own process; {} jobs; {:.0} s",
            thousands(m.jobs as f64),
            m.seconds
        );
        rows.push(
            Row::new(
                "memory.service.peak_rss_mib".into(),
                "service peak RSS",
                &variant,
                m.peak_mib,
                "MiB",
            )
            .notes(format!("VmHWM of the sfcdc run process; {notes}")),
        );
        rows.push(
            Row::new(
                "memory.service.steady_rss_mib".into(),
                "service steady RSS",
                &variant,
                m.steady_mib,
                "MiB",
            )
            .notes(format!(
                "median VmRSS sampled every 50 ms after the first tenth of the run; {notes}"
            )),
        );
        rows.push(
            Row::new(
                "cpu.service.worker_on.us_per_event".into(),
                "CPU per event, service",
                &variant,
                m.cpu_us_per_event(),
                "us",
            )
            .notes(format!(
                "user+system time of sfcdc run over the events, jobs and write-backs; {notes}"
            )),
        );
    }
    if let Some(m) = &report.service_ingest {
        let variant = format!(
            "sfcdc run alone, worker off, {} events",
            thousands(m.events as f64)
        );
        let notes = format!(
            "SQLite, emulator in its own process; {} jobs created; peak RSS {:.0} MiB",
            thousands(m.jobs as f64),
            m.peak_mib
        );
        rows.push(
            Row::new(
                "ingest.service.events_per_second".into(),
                "ingest, service",
                &variant,
                m.ingest_events_per_second,
                "events/s",
            )
            .notes(format!(
                "from start to the checkpoint at the preloaded events' last (up to a million); {notes}"
            )),
        );
        rows.push(
            Row::new(
                "cpu.service.ingest.us_per_event".into(),
                "CPU per event, service",
                &variant,
                m.cpu_us_per_event(),
                "us",
            )
            .notes(format!("user+system time of sfcdc run; {notes}")),
        );
        rows.push(
            Row::new(
                "cpu.emulator.ingest.us_per_event".into(),
                "CPU per event, emulator",
                &variant,
                m.emulator_cpu_us_per_event(),
                "us",
            )
            .notes(format!(
                "user+system time of sfcdc emulator over the same run (the stream, the lookups): \
                 it shares the cores with the service; {notes}"
            )),
        );
    }
    for (part, results) in [("ingest", &report.ingest), ("backlog", &report.backlog)] {
        for r in results {
            let Some(growth) = r.rss_peak_growth_mib else {
                continue;
            };
            let name = if r.backend == "sqlite" {
                "SQLite"
            } else {
                "PostgreSQL"
            };
            rows.push(
                Row::new(
                    format!("memory.{part}.{}.rss_growth_mib", r.backend),
                    "RSS growth, pipeline",
                    &format!("{part}, {name}"),
                    growth,
                    "MiB",
                )
                .notes(format!(
                    "peak during the {} events run minus RSS before it ({:.0} MiB), emulator \
                     serving included; a lower bound: memory freed earlier is reused first",
                    thousands(r.events as f64),
                    r.rss_before_mib
                )),
            );
        }
    }
}

/// The ratio to the reference Node client, or one line saying why it was skipped.
fn node_rows(rows: &mut Vec<Row>, details: &BenchReport) {
    let metric = "sfcdc tail / Node client";
    match &details.node {
        None => {}
        Some(Err(why)) => rows.push(Row::skipped(
            "node.ratio.events_per_second".into(),
            metric,
            "events/s, same stream",
            "x",
            why,
        )),
        Some(Ok(c)) => {
            let notes = format!(
                "medians of {} alternated runs over {} events: Node {} events/s, {:.2} s CPU, \
                 {:.0} MiB; sfcdc tail --format none {} events/s, {:.2} s CPU, {:.0} MiB",
                c.rounds,
                thousands(c.events as f64),
                thousands(c.node_events_per_second),
                c.node_cpu_seconds,
                c.node_peak_mib,
                thousands(c.sfcdc_events_per_second),
                c.sfcdc_cpu_seconds,
                c.sfcdc_peak_mib
            );
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            for (key, variant, value) in [
                (
                    "events_per_second",
                    "events/s, same stream",
                    ratio(c.sfcdc_events_per_second, c.node_events_per_second),
                ),
                (
                    "cpu_per_event",
                    "less CPU per event",
                    ratio(c.node_cpu_seconds, c.sfcdc_cpu_seconds),
                ),
                (
                    "peak_rss",
                    "less peak memory",
                    ratio(c.node_peak_mib, c.sfcdc_peak_mib),
                ),
            ] {
                rows.push(
                    Row::new(format!("node.ratio.{key}"), metric, variant, value, "x")
                        .notes(notes.clone()),
                );
            }
        }
    }
}

impl Report {
    /// The rows of a finished run.
    pub fn new(
        details: BenchReport,
        options: &BenchOptions,
        machine: Machine,
        seconds: f64,
    ) -> Report {
        let mut rows = Vec::new();
        decode_rows(&mut rows, &details);
        if !options.skip_ingest {
            ingest_rows(&mut rows, "ingest", "ingest", &details.ingest, options);
        }
        if options.backlog > 0 {
            let metric = format!(
                "backlog catch-up, {} events",
                thousands(options.backlog.max(options.events) as f64)
            );
            ingest_rows(&mut rows, "backlog", &metric, &details.backlog, options);
        }
        worker_rows(&mut rows, &details, options);
        cache_rows(&mut rows, &details);
        failover_rows(&mut rows, &details, options);
        memory_rows(&mut rows, &details);
        node_rows(&mut rows, &details);
        Report {
            machine,
            sizes: Sizes {
                ingest_events: if options.skip_ingest {
                    0
                } else {
                    options.events
                },
                backlog_events: options.backlog,
                batch_size: options.batch_size,
                jobs: options.jobs,
                concurrency: options.concurrency,
                cache_reads: options.reads,
                failover_runs: options.failover_runs,
                postgres: options.postgres.is_some(),
            },
            seconds,
            rows,
            details,
        }
    }

    /// The table: a line about the machine, then aligned columns.
    pub fn table(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "sfcdc {} bench report: {} cores, {} {}, {} build, {}, commit {}, {:.0} s, load \
             average {} at the start, {} at the end\n\n",
            m.sfcdc_version,
            m.cores,
            m.os,
            m.arch,
            m.profile,
            m.rustc.as_deref().unwrap_or("rustc unknown"),
            m.git_commit
                .as_deref()
                .map_or("unknown", |c| &c[..c.len().min(12)]),
            self.seconds,
            m.load_average_start
                .map_or_else(|| "?".to_owned(), |l| format!("{l:.1}")),
            m.load_average_end
                .map_or_else(|| "?".to_owned(), |l| format!("{l:.1}")),
        );
        let header = ["metric", "backend/variant", "value", "unit", "notes"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.metric.clone(),
                    r.variant.clone(),
                    format_value(r.value, &r.unit),
                    r.unit.clone(),
                    r.notes.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut line = |cells: [&str; 5]| {
            let pad = |s: &str, w: usize| " ".repeat(w.saturating_sub(s.chars().count()));
            let [metric, variant, value, unit, notes] = cells;
            out.push_str(&format!(
                "{metric}{}  {variant}{}  {}{value}  {unit}{}  {notes}",
                pad(metric, widths[0]),
                pad(variant, widths[1]),
                pad(value, widths[2]),
                pad(unit, widths[3]),
            ));
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(header);
        let rules = widths.map(|w| "-".repeat(w));
        line([&rules[0], &rules[1], &rules[2], &rules[3], &rules[4]]);
        for row in &cells {
            line([&row[0], &row[1], &row[2], &row[3], &row[4]]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Preload;
    use crate::bench::worker::WorkerBenchResult;

    fn options(postgres: bool) -> BenchOptions {
        BenchOptions {
            events: 1_000,
            postgres: postgres.then(|| "postgres://x".to_owned()),
            batch_size: 100,
            jobs: 10,
            concurrency: 4,
            skip_ingest: false,
            reads: 0,
            decode: false,
            backlog: 5_000,
            failover_runs: 0,
            node_events: 0,
        }
    }

    fn ingest(backend: &str, events: usize, seconds: f64) -> BenchResult {
        BenchResult {
            backend: backend.to_owned(),
            events,
            seconds,
            events_per_second: events as f64 / seconds,
            commit_p50_ms: 1.5,
            commit_p99_ms: 4.25,
            commits: 9,
            jobs: 100,
            rss_before_mib: 50.0,
            rss_peak_growth_mib: Some(12.0),
            reconnects: 0,
        }
    }

    fn machine() -> Machine {
        Machine {
            cores: 2,
            os: "linux",
            arch: "x86_64",
            profile: "release",
            sfcdc_version: "0.1.0",
            rustc: Some("rustc 1.95.0".into()),
            git_commit: Some("0123456789abcdef".into()),
            load_average_start: Some(0.5),
            load_average_end: None,
        }
    }

    fn details() -> BenchReport {
        BenchReport {
            ingest: vec![ingest("sqlite", 1_000, 0.5)],
            backlog: vec![ingest("sqlite", 5_000, 2.0)],
            worker: vec![WorkerBenchResult {
                backend: "sqlite".into(),
                mode: "worker, sync".into(),
                jobs: 10,
                seconds: 0.01,
                jobs_per_second: 1_000.0,
            }],
            preloads: vec![Preload {
                events: 5_000,
                total_events: 5_000,
                approvals: 500,
                seconds: 0.1,
                rss_added_mib: 7.0,
            }],
            peak_rss_mib: 99.0,
            ..BenchReport::default()
        }
    }

    #[test]
    fn without_postgres_its_rows_say_they_were_skipped() {
        let report = Report::new(details(), &options(false), machine(), 3.0);
        let keys: Vec<&str> = report.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "ingest.sqlite.events_per_second",
                "ingest.postgres.events_per_second",
                "backlog.sqlite.seconds",
                "backlog.sqlite.events_per_second",
                "backlog.postgres.events_per_second",
                "worker.sqlite.sync.jobs_per_second",
                "worker.postgres.sync.jobs_per_second",
                "memory.peak_rss_mib",
                "memory.emulator_event_log_mib",
                "memory.ingest.sqlite.rss_growth_mib",
                "memory.backlog.sqlite.rss_growth_mib",
            ]
        );
        let pg = &report.rows[1];
        assert_eq!(pg.value, None);
        assert!(
            pg.notes.starts_with("skipped: no PostgreSQL URL"),
            "{}",
            pg.notes
        );
        assert_eq!(report.rows[0].value, Some(2_000.0));
        assert_eq!(report.rows[2].metric, "backlog catch-up, 5,000 events");
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let table = Report::new(details(), &options(false), machine(), 3.0).table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("2 cores") && lines[0].contains("commit 0123456789ab"));
        assert!(lines[0].ends_with("load average 0.5 at the start, ? at the end"));
        assert_eq!(lines[1], "");
        let header = lines[2];
        assert!(header.starts_with("metric  "));
        let value_end = header.find("value").unwrap() + "value".len();
        let unit_at = header.find("unit").unwrap();
        for line in &lines[4..] {
            // Values are right-aligned under the header's "value", units start together.
            let (before, after) = line.split_at(unit_at);
            assert!(before.ends_with("  "), "{line}");
            assert!(!before[..value_end].ends_with(' '), "{line}");
            assert!(!after.starts_with(' '), "{line}");
        }
        let sqlite = lines
            .iter()
            .find(|l| l.starts_with("ingest ") && l.contains("SQLite"))
            .unwrap();
        assert!(sqlite.contains(" 2,000  events/s  1,000 events from EARLIEST in 0.5 s"));
        let pg = lines.iter().find(|l| l.contains("PostgreSQL")).unwrap();
        assert!(pg.contains("  -  events/s  skipped: "), "{pg}");
    }

    #[test]
    fn json_has_stable_field_names() {
        let report = Report::new(details(), &options(true), machine(), 3.0);
        let json = serde_json::to_value(&report).unwrap();
        for field in ["machine", "sizes", "seconds", "rows", "details"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["machine"]["cores"], 2);
        assert_eq!(json["sizes"]["postgres"], true);
        let row = &json["rows"][0];
        for field in ["key", "metric", "variant", "value", "unit", "notes"] {
            assert!(row.get(field).is_some(), "{field}");
        }
        // A backend that was asked for but did not run is "not run", not "no URL".
        let pg = json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "ingest.postgres.events_per_second")
            .unwrap();
        assert_eq!(pg["value"], serde_json::Value::Null);
        assert_eq!(pg["notes"], "skipped: not run");
    }

    fn failover() -> crate::bench::failover::FailoverBenchResult {
        use crate::bench::failover::{Fencing, Handover};
        let handover = |signal: &str, taken: f64| Handover {
            signal: signal.into(),
            lease_ttl_s: 2.0,
            taken_ms: vec![taken; 5],
            subscribed_ms: vec![taken + 10.0; 5],
            taken_median_ms: taken,
            taken_max_ms: taken * 1.5,
            subscribed_median_ms: taken + 10.0,
            subscribed_max_ms: taken * 1.5 + 10.0,
        };
        crate::bench::failover::FailoverBenchResult {
            handover: vec![handover("sigterm", 30.0), handover("sigkill", 2_100.0)],
            fencing: vec![Fencing {
                backend: "sqlite".into(),
                commits: 2_000,
                jobs_per_commit: 10,
                fenced_per_second: 1_900.0,
                unfenced_per_second: 2_000.0,
                ratio: 0.95,
                mean_ratio: 0.9,
                fenced_p50_ms: 0.5,
                unfenced_p50_ms: 0.475,
            }],
        }
    }

    #[test]
    fn failover_rows_without_postgres_say_so_and_keep_the_sqlite_fencing() {
        let options = BenchOptions {
            failover_runs: 5,
            ..options(false)
        };
        let details = BenchReport {
            failover: Some(crate::bench::failover::FailoverBenchResult {
                handover: Vec::new(),
                ..failover()
            }),
            ..details()
        };
        let report = Report::new(details, &options, machine(), 3.0);
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| r.key.starts_with("failover.") || r.key.starts_with("fencing."))
            .collect();
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "failover.sigterm.median_ms",
                "failover.sigkill.median_ms",
                "fencing.sqlite.ratio",
                "fencing.postgres.ratio",
            ]
        );
        for r in [rows[0], rows[1], rows[3]] {
            assert_eq!(r.value, None);
            assert!(
                r.notes.starts_with("skipped: no PostgreSQL URL"),
                "{}",
                r.notes
            );
        }
        assert!(
            rows[0]
                .notes
                .ends_with("handovers are measured on PostgreSQL only")
        );
        assert_eq!(rows[2].value, Some(0.95));
        let table = report.table();
        let fencing = table
            .lines()
            .find(|l| l.starts_with("fencing cost") && l.contains("SQLite"))
            .unwrap();
        assert!(fencing.contains(" 0.95  × "), "{fencing}");
        assert!(
            fencing.contains(
                "  throughput at the median commit: p50 fenced 0.500 ms, unfenced 0.475 ms; mean \
                 1,900 / 2,000 commits/s (0.90); 2,000 commits of 10"
            ),
            "{fencing}"
        );
    }

    #[test]
    fn the_node_comparison_gives_three_ratios_or_one_skipped_line() {
        let comparison = crate::bench::node::NodeComparison {
            events: 100_000,
            rounds: 3,
            node_events_per_second: 25_000.0,
            node_cpu_seconds: 4.0,
            node_peak_mib: 128.0,
            sfcdc_events_per_second: 250_000.0,
            sfcdc_cpu_seconds: 0.25,
            sfcdc_peak_mib: 16.0,
        };
        let measured = BenchReport {
            node: Some(Ok(comparison)),
            ..details()
        };
        let report = Report::new(measured, &options(false), machine(), 3.0);
        let row = |key: &str| report.rows.iter().find(|r| r.key == key).unwrap();
        assert_eq!(row("node.ratio.events_per_second").value, Some(10.0));
        assert_eq!(row("node.ratio.cpu_per_event").value, Some(16.0));
        assert_eq!(row("node.ratio.peak_rss").value, Some(8.0));
        let skipped = BenchReport {
            node: Some(Err("node is not installed".into())),
            ..details()
        };
        let report = Report::new(skipped, &options(false), machine(), 3.0);
        let skipped: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| r.key.starts_with("node."))
            .collect();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].value, None);
        assert!(skipped[0].notes.contains("node is not installed"));
        assert!(report.table().contains("node is not installed"));
    }

    #[test]
    fn failover_rows_give_the_median_and_the_max_per_signal() {
        let options = BenchOptions {
            failover_runs: 5,
            ..options(true)
        };
        let details = BenchReport {
            failover: Some(failover()),
            ..details()
        };
        let report = Report::new(details, &options, machine(), 3.0);
        let row = |key: &str| report.rows.iter().find(|r| r.key == key).unwrap();
        assert_eq!(row("failover.sigterm.median_ms").value, Some(30.0));
        assert_eq!(row("failover.sigterm.max_ms").value, Some(45.0));
        assert_eq!(row("failover.sigkill.median_ms").value, Some(2_100.0));
        assert_eq!(row("failover.sigkill.max_ms").value, Some(3_150.0));
        let kill = row("failover.sigkill.max_ms");
        assert_eq!(kill.variant, "PostgreSQL, lease expired (TTL 2 s), max");
        assert!(kill.notes.contains("(1.3 to 2.7 s)"), "{}", kill.notes);
        assert!(
            row("failover.sigterm.median_ms")
                .notes
                .starts_with("2 sfcdc run processes, 5 runs:")
        );
        // PostgreSQL was asked for, but its fencing did not run.
        assert_eq!(row("fencing.postgres.ratio").notes, "skipped: not run");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["sizes"]["failover_runs"], 5);
        assert_eq!(
            json["details"]["failover"]["handover"][0]["signal"],
            "sigterm"
        );
    }

    #[test]
    fn values_are_formatted_by_unit() {
        assert_eq!(format_value(Some(1_234_567.8), "events/s"), "1,234,568");
        assert_eq!(format_value(Some(999.0), "jobs/s"), "999");
        assert_eq!(format_value(Some(12.345), "µs"), "12.35");
        assert_eq!(format_value(Some(241.4), "MiB"), "241");
        assert_eq!(format_value(Some(96.54), "%"), "96.5");
        assert_eq!(format_value(None, "s"), "-");
        assert_eq!(thousands(-1_000.0), "-1,000");
    }
}
