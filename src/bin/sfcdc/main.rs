//! The `sfcdc` binary: parses the command line, starts logging, runs the chosen job, and maps
//! the outcome to an exit code. The product (the service and the operator commands, whose
//! arguments and run functions are in `sfcdc::admin::cli`) lives in the library; the binary owns
//! only the top-level parser and the developer tools, as modules of its own: `emulator` (a
//! stand-in Salesforce org), `demo` (a scripted story) and `bench` (the measurements). They and
//! the crates only they use come with the default `tools` feature; without it
//! (`--no-default-features`) the binary is the lean one operators deploy, with every product
//! command and none of the tools.

#[cfg(feature = "tools")]
mod bench;
#[cfg(feature = "tools")]
mod demo;
#[cfg(feature = "tools")]
mod emulator;

use clap::{Parser, Subcommand};
use sfcdc::admin::cli as admin;
use sfcdc::telemetry;

/// sfcdc: Salesforce change data capture to provisioning jobs.
#[derive(Debug, Parser)]
#[command(name = "sfcdc", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a stand-in Salesforce org on loopback: Pub/Sub API (gRPC), REST and OAuth.
    #[cfg(feature = "tools")]
    Emulator(Box<emulator::EmulatorArgs>),
    /// Print one channel's events as JSON lines (a debugging tool; reads the same configuration
    /// as `run`, and stores no position).
    Tail(admin::TailArgs),
    /// Run the service: subscribe, apply the rules, store jobs and checkpoints.
    Run,
    /// Run the emulator and the service together through a scripted story, then summarise.
    #[cfg(feature = "tools")]
    Demo(demo::DemoArgs),
    /// Measure the ingest pipeline end to end against a preloaded emulator, the worker, and the
    /// order cache.
    #[cfg(feature = "tools")]
    Bench(bench::BenchArgs),
    /// Show who holds each channel in the fleet, its lease, its checkpoint and its age.
    Channels {
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: admin::OutputFormat,
    },
    /// Inspect or reset the stored channel positions.
    #[command(subcommand)]
    Checkpoints(admin::CheckpointsCommand),
    /// Inspect, re-drive and cancel provisioning jobs.
    #[command(subcommand)]
    Jobs(admin::JobsCommand),
    /// Inspect, re-drive and cancel notification deliveries.
    #[command(subcommand)]
    Deliveries(admin::DeliveriesCommand),
    /// Inspect and re-drive quarantined events.
    #[command(subcommand)]
    Quarantine(admin::QuarantineCommand),
    /// Find every approved order without a job and create the job (safe beside the service).
    Reconcile(admin::ReconcileArgs),
    /// Show the trail of operator actions (API, console and command line), newest first.
    Audit {
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: admin::OutputFormat,
    },
}

impl Command {
    /// The log filter when none is configured.
    fn default_log_filter(&self) -> &'static str {
        match self {
            // The demo prints a story and the bench its tables; their logs stay quiet unless
            // asked for.
            #[cfg(feature = "tools")]
            Command::Demo(_) | Command::Bench(_) => "warn",
            _ => "info",
        }
    }
}

/// Resolves on SIGINT or SIGTERM: the only place sfcdc listens to OS signals.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Logging reads the same configuration as everything else; a configuration file that cannot
    // be read is reported by the command that needs it, so logging falls back to the process
    // environment alone.
    let env = sfcdc::config::Env::load().unwrap_or_else(|_| {
        sfcdc::config::Env::from_pairs(
            std::env::vars()
                .collect::<Vec<_>>()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    });
    let logs = match telemetry::LogSettings::from_env(&env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("sfcdc: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    telemetry::init(&logs, cli.command.default_log_filter());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sfcdc: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            #[cfg(feature = "tools")]
            Command::Emulator(args) => emulator::run_emulator(*args, shutdown_signal()).await,
            Command::Tail(args) => admin::run_tail(args, shutdown_signal()).await,
            // The service runs as a task on the runtime's worker threads, not on this thread
            // inside `block_on`: a future polled by `block_on` runs only on the main thread, so
            // each of its wake-ups from a worker crosses threads, and no worker can take its work
            // over. The subscriptions were such futures (over 300,000 events out of process,
            // alternated five times: 92-98k -> 103-108k events/s, 10.6-11.5 -> 9.6-10.3 us of CPU
            // per event).
            Command::Run => on_worker(admin::run_service(shutdown_signal())).await,
            #[cfg(feature = "tools")]
            Command::Bench(args) => bench::run_bench(args).await,
            #[cfg(feature = "tools")]
            Command::Demo(args) => demo::run(args).await,
            Command::Channels { format } => admin::run_channels(format).await,
            Command::Checkpoints(cmd) => admin::run_checkpoints(cmd).await,
            Command::Jobs(cmd) => admin::run_jobs(cmd).await,
            Command::Deliveries(cmd) => admin::run_deliveries(cmd).await,
            Command::Quarantine(cmd) => admin::run_quarantine(cmd).await,
            Command::Reconcile(args) => admin::run_reconcile(args).await,
            Command::Audit { limit, format } => admin::run_audit(limit, format).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sfcdc: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// Runs `command` as a task on the runtime's worker threads and waits for it; a panic in it
/// goes on unwinding here, as it would have on this thread.
async fn on_worker<F>(command: F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    match tokio::spawn(command).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow::anyhow!("the command's task was cancelled: {e}")),
    }
}

/// 2 when a setting is wrong (restarting cannot help: a supervisor should stop trying), 1 for
/// anything else.
fn exit_code(e: &anyhow::Error) -> u8 {
    let config = e.chain().any(|cause| {
        cause.downcast_ref::<sfcdc::config::ConfigError>().is_some()
            || matches!(
                cause.downcast_ref::<sfcdc::app::AppError>(),
                Some(sfcdc::app::AppError::Config(_))
            )
    });
    if config { 2 } else { 1 }
}
