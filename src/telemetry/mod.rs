//! Logging set-up: human-readable lines on a terminal, JSON lines otherwise.
//!
//! `SFCDC_LOG_FORMAT` (`text` or `json`) overrides the choice, and `SFCDC_LOG` (or `RUST_LOG`)
//! takes an env-filter directive such as `info,sfcdc=debug`. Both are read like every other
//! setting (the environment over the file named by `SFCDC_CONFIG`), and a bad value stops sfcdc
//! at start naming the variable. Only `main` calls [`init`].
//!
//! **Correlation.** Lines on an event's path carry its channel (the `channel` span of each
//! subscription), replay id and order id; a job step's lines carry the `job` span (job id, order
//! id, and the channel and replay id of the event that created the job). In JSON the span fields
//! appear under `span` and `spans`.
//!
//! **Events.** An operational event that is both logged and counted is one struct of [`events`],
//! whose `emit` writes its line and its metric together; [`metrics`] holds the registry, whose
//! fields nothing outside this module touches.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Env};

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// How sfcdc logs.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// The line format.
    pub format: LogFormat,
    /// `SFCDC_LOG` or `RUST_LOG`, validated; `None` for the command's default.
    pub filter: Option<String>,
}

impl LogSettings {
    /// Reads `SFCDC_LOG_FORMAT` (text on a terminal, JSON otherwise) and `SFCDC_LOG`/`RUST_LOG`.
    pub fn from_env(env: &Env) -> Result<LogSettings, ConfigError> {
        let terminal = if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        };
        let format = env.choice_or(
            "SFCDC_LOG_FORMAT",
            terminal,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        )?;
        let (var, filter) = match (env.get("SFCDC_LOG"), env.get("RUST_LOG")) {
            (Some(f), _) => ("SFCDC_LOG", Some(f)),
            (None, f) => ("RUST_LOG", f),
        };
        if let Some(f) = filter {
            EnvFilter::try_new(f).map_err(|e| {
                ConfigError::new(
                    var,
                    format!("'{f}' is not a log filter such as info,sfcdc=debug: {e}"),
                )
            })?;
        }
        Ok(LogSettings {
            format,
            filter: filter.map(str::to_owned),
        })
    }
}

/// Installs the global subscriber, writing to stderr; `default_filter` applies when no filter
/// is configured.
pub fn init(settings: &LogSettings, default_filter: &str) {
    let filter = settings
        .filter
        .as_deref()
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub mod events;
pub mod health;
pub mod labels;
pub mod metrics;
