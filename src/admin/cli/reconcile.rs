//! `sfcdc reconcile`: find every approved order without a job and create the job. It reads the
//! same configuration as the service and is safe beside it (see `crate::reconcile`). On a
//! terminal a progress bar shows the counts and an ETA; otherwise each page is a log line. The
//! summary is printed either way, or as JSON with `--format json`.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::OutputFormat;
use crate::config::Env;
use crate::reconcile::{Counts, Progress, Scope, Summary};
use crate::telemetry::events::ReconcileReason;

/// Flags of `sfcdc reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Orders modified since this time: RFC 3339 (2026-12-01T00:00:00Z) or a duration back from
    /// now (96h).
    #[arg(long, conflicts_with = "all")]
    pub since: Option<String>,
    /// Every approved order, however old.
    #[arg(long)]
    pub all: bool,
    /// Say what would be created; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
}

/// The scope `--since`/`--all` name, at `now_ms`.
pub fn scope(args: &ReconcileArgs, now_ms: i64) -> Result<Scope, String> {
    match (&args.since, args.all) {
        (_, true) => Ok(Scope::All),
        (None, false) => Err("say which orders: --since <time or duration> or --all".into()),
        (Some(s), false) => {
            if let Ok(t) =
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            {
                return Ok(Scope::Since((t.unix_timestamp_nanos() / 1_000_000) as i64));
            }
            humantime::parse_duration(s)
                .map(|d| Scope::Since(now_ms - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
                .map_err(|_| {
                    format!("--since {s:?}: expected an RFC 3339 time or a duration such as 96h")
                })
        }
    }
}

/// A progress bar on a terminal, log lines elsewhere.
struct Shown {
    bar: Option<ProgressBar>,
}

impl Progress for Shown {
    fn page(&self, c: &Counts, matched: u64) {
        let line = format!(
            "{} jobs created, {} already had one, {} skipped by the guards ({} candidates)",
            c.created, c.existing, c.skipped_by_guard, c.candidates
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(matched.max(c.scanned));
                bar.set_position(c.scanned);
                bar.set_message(line);
            }
            None => tracing::info!(
                scanned = c.scanned,
                matched,
                created = c.created,
                existing = c.existing,
                skipped_by_guard = c.skipped_by_guard,
                "Reconcile progress"
            ),
        }
    }
}

/// Runs `sfcdc reconcile`.
pub async fn run_reconcile(args: ReconcileArgs) -> anyhow::Result<()> {
    let env = Env::load()?;
    let settings = crate::app::Settings::from_env(&env)?;
    let scope = scope(&args, settings.clock.now_ms()).map_err(anyhow::Error::msg)?;
    let deps = crate::app::deps(&settings).await?;
    let reconciler = crate::app::reconciler(&settings, &deps);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} orders scanned, ETA {eta}: {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    let shown = Shown { bar };
    let summary = reconciler
        .run(scope, ReconcileReason::Manual, args.dry_run, &shown)
        .await?;
    if let Some(bar) = &shown.bar {
        bar.finish_and_clear();
    }
    print(&summary, args.format)
}

fn print(s: &Summary, format: OutputFormat) -> anyhow::Result<()> {
    let rate = s.counts.scanned as f64 / s.seconds.max(1e-9);
    let peak = crate::telemetry::metrics::process_memory().map(|(_, peak)| peak);
    match format {
        OutputFormat::Json => {
            let mut v = serde_json::to_value(s)?;
            v["orders_per_second"] = serde_json::json!(rate.round());
            v["peak_rss_bytes"] = serde_json::json!(peak);
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        OutputFormat::Table => {
            let verb = if s.dry_run { "would create" } else { "created" };
            println!(
                "reconcile ({}, via {}): {} orders matched, {} scanned, {} candidates; {verb} {} jobs, {} already had one, {} skipped by the guards; {:.1} s ({:.0} orders/s{})",
                s.reason,
                s.via,
                s.matched,
                s.counts.scanned,
                s.counts.candidates,
                s.counts.created,
                s.counts.existing,
                s.counts.skipped_by_guard,
                s.seconds,
                rate,
                peak.map_or(String::new(), |b| format!(
                    ", peak RSS {:.1} MiB",
                    b as f64 / 1048576.0
                ))
            );
            for order in &s.jobs {
                println!("  {verb}: {order}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(since: Option<&str>, all: bool) -> ReconcileArgs {
        ReconcileArgs {
            since: since.map(str::to_owned),
            all,
            dry_run: false,
            format: OutputFormat::Table,
        }
    }

    #[test]
    fn since_takes_a_time_or_a_duration_and_one_scope_is_required() {
        let now = 1_800_000_000_000;
        assert_eq!(scope(&args(None, true), now), Ok(Scope::All));
        assert_eq!(
            scope(&args(Some("96h"), false), now),
            Ok(Scope::Since(now - 96 * 3_600_000))
        );
        assert_eq!(
            scope(&args(Some("2026-12-01T00:00:00Z"), false), now),
            Ok(Scope::Since(1_796_083_200_000))
        );
        assert!(
            scope(&args(None, false), now)
                .unwrap_err()
                .contains("--all")
        );
        assert!(
            scope(&args(Some("yesterday"), false), now)
                .unwrap_err()
                .contains("--since")
        );
    }
}
