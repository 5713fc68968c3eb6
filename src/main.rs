//! The `sfcdc` binary: parses the command line, starts logging, runs the chosen job, and maps
//! the outcome to an exit code. Everything else lives in the library.

use clap::Parser;
use sfcdc::cli::{Cli, Command};
use sfcdc::telemetry;

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
    // The demo prints a story; its logs stay quiet unless asked for.
    let default_filter = if matches!(cli.command, Command::Demo(_) | Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    telemetry::init(&logs, default_filter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sfcdc: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Emulator(args) => sfcdc::cli::run_emulator(*args, shutdown_signal()).await,
            Command::Tail(args) => sfcdc::admin::cli::run_tail(args, shutdown_signal()).await,
            Command::Run => sfcdc::admin::cli::run_service(shutdown_signal()).await,
            Command::Bench(args) => sfcdc::cli::run_bench(args).await,
            Command::Demo(args) => sfcdc::demo::run(sfcdc::demo::DemoOptions {
                keep: args.keep,
                dir: args.dir,
            })
            .await
            .map(|_| ()),
            Command::Checkpoints(cmd) => sfcdc::admin::cli::run_checkpoints(cmd).await,
            Command::Jobs(cmd) => sfcdc::admin::cli::run_jobs(cmd).await,
            Command::Deliveries(cmd) => sfcdc::admin::cli::run_deliveries(cmd).await,
            Command::Quarantine(cmd) => sfcdc::admin::cli::run_quarantine(cmd).await,
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
