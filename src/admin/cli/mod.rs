//! The product's operator commands: the clap types and the run functions of `sfcdc run` (the
//! service), `tail`, `checkpoints`, `jobs`, `deliveries`, `quarantine` and `audit`. Every change
//! they make is recorded in the audit trail. The binary's top-level
//! parser embeds these types and calls these functions; nothing here knows of it.
//!
//! Every command reads the same configuration as the service. The store commands open the store
//! directly, so they work while the service is down; what they change takes effect at the
//! service's next claim or start. Errors are `anyhow` here, at the edge: the binary turns them
//! into a message and an exit code.

mod audit;
mod channels;
mod checkpoints;
mod jobs;
mod quarantine;
mod reconcile;

use clap::Args;

pub use crate::store::lease::ChannelView;
pub use audit::run_audit;
pub use channels::run_channels;
pub use checkpoints::{CheckpointsCommand, run_checkpoints};
pub use jobs::{DeliveriesCommand, JobsCommand, run_deliveries, run_jobs};
pub use quarantine::{QuarantineCommand, run_quarantine};
pub use reconcile::{ReconcileArgs, run_reconcile};

/// Runs `sfcdc run` until `shutdown`.
pub async fn run_service(shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let env = crate::config::Env::load()?;
    let settings = crate::app::Settings::from_env(&env)?;
    let bound = settings.shutdown_timeout;
    let app = crate::app::App::build(settings).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = app.run_until_stopped(cancel.clone());
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => result?,
        () = shutdown => {
            tracing::info!(timeout = ?bound, "Shutdown requested: committing the batches in hand and recording the job steps in flight");
            cancel.cancel();
            match tokio::time::timeout(bound, run).await {
                Ok(result) => result?,
                Err(_) => {
                    // Nothing is lost: an uncommitted batch is delivered again after the last
                    // committed replay id, and an unrecorded job step resumes when its lease
                    // expires, resubmitting under the same idempotency key.
                    tracing::error!(timeout = ?bound, "Shutdown did not finish within SFCDC_SHUTDOWN_TIMEOUT; exiting with work in flight, which resumes from the store on the next start");
                    anyhow::bail!(
                        "shutdown did not finish within SFCDC_SHUTDOWN_TIMEOUT ({}); work in flight resumes on the next start",
                        humantime::format_duration(bound)
                    );
                }
            }
        }
    }
    Ok(())
}

/// Flags of `sfcdc tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic, e.g. /data/OrderChangeEvent.
    pub channel: String,
    /// Where to start: earliest, latest, or a replay id in hex.
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
    /// `json`: one JSON line per event; `none`: count them and print a summary.
    #[arg(long, value_enum, default_value_t)]
    pub format: crate::admin::tail::TailFormat,
}

impl TailArgs {
    /// The start position `--from` names.
    pub fn start(&self) -> Result<crate::decode::Position, String> {
        position("--from", &self.from)
    }
}

/// The position `earliest`, `latest` or a replay id in hex names; the error names `flag`.
fn position(flag: &str, s: &str) -> Result<crate::decode::Position, String> {
    use crate::decode::Position;
    match s {
        "earliest" => Ok(Position::Earliest),
        "latest" => Ok(Position::Latest),
        hex => crate::decode::ReplayId::from_hex(hex)
            .ok()
            .filter(|r| !r.is_empty())
            .map(Position::After)
            .ok_or_else(|| {
                format!("{flag}: '{hex}' is not earliest, latest or a replay id in hex")
            }),
    }
}

/// Runs `sfcdc tail` until `--count` events, `shutdown`, or a permanent failure.
pub async fn run_tail(
    args: TailArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let start = args.start().map_err(|e| anyhow::anyhow!(e))?;
    crate::admin::tail::run(&args.channel, start, args.count, args.format, shutdown).await
}

/// How admin commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
}

/// Opens the store `SFCDC_DATABASE_URL` names (through the configuration, as `run` does).
async fn open_store() -> anyhow::Result<crate::store::AnyStore> {
    let env = crate::config::Env::load()?;
    let url = crate::app::database_url(&env)?;
    Ok(crate::store::AnyStore::open(&url).await?)
}

/// A stored millisecond timestamp as RFC 3339.
fn iso(ms: i64) -> String {
    crate::clock::rfc3339(ms)
}

/// Prints `rows` under `headers` in aligned columns.
fn print_table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}
