//! Logging set-up: human-readable lines on a terminal, JSON lines otherwise.
//!
//! `SFCDC_LOG_FORMAT` (`text` or `json`) overrides the choice, and `SFCDC_LOG` (or `RUST_LOG`)
//! takes an env-filter directive such as `info,sfcdc=debug`. Only `main` calls [`init`].

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Reads `SFCDC_LOG_FORMAT`, falling back to text on a terminal and JSON otherwise.
    pub fn from_env() -> Result<LogFormat, String> {
        match std::env::var("SFCDC_LOG_FORMAT").ok().as_deref() {
            None | Some("") => Ok(if std::io::stderr().is_terminal() {
                LogFormat::Text
            } else {
                LogFormat::Json
            }),
            Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!(
                "SFCDC_LOG_FORMAT: '{other}' is not one of: text, json"
            )),
        }
    }
}

/// Installs the global subscriber, writing to stderr; `default_filter` applies when neither
/// `SFCDC_LOG` nor `RUST_LOG` is set.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = std::env::var("SFCDC_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|d| EnvFilter::try_new(d).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub mod health;
pub mod metrics;
