//! Every log line the test suite produces, kept for the secret scan (`tests/secrets_in_logs.rs`).
//!
//! [`init`] installs one process-wide subscriber at debug level for sfcdc (so the scan sees the
//! lines a production debug session would print) writing JSON lines to
//! `$CARGO_TARGET_TMPDIR/test-logs/in-process-<pid>.log`; child processes write their stderr to
//! files from [`child_log`] in the same folder. The folder is only ever appended to here; the
//! scan reads it and clears it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

/// Where the suite's logs go.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs")
}

/// Installs the suite's log subscriber, once per process.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::fs::create_dir_all(dir()).expect("create the test log folder");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir().join(format!("in-process-{}.log", std::process::id())))
            .expect("open the test log");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,sfcdc=debug"))
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init();
    });
}

/// A fresh file for a child process's stderr, named after `what`.
pub fn child_log(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir()).expect("create the test log folder");
    dir().join(format!(
        "child-{}-{}-{what}.log",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Keeps output a child printed (and the test captured) for the scan.
pub fn keep(what: &str, output: &[u8]) {
    std::fs::write(child_log(what), output).expect("write a child's output");
}
