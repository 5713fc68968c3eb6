//! Every log line the emulator's test suite produces, kept for its secret scan
//! (`emulator/tests/secrets_in_logs.rs`).
//!
//! [`init`] installs one process-wide subscriber at debug level for the emulator, writing JSON
//! lines to `$CARGO_TARGET_TMPDIR/emulator-test-logs/in-process-<pid>.log`. The folder is not
//! sfcdc's (`test-logs`), so each crate's scan reads exactly its own suite's lines, whichever
//! order the crates' tests run in. It is only ever appended to here; the scan reads and clears it.

use std::path::PathBuf;
use std::sync::{Mutex, Once};

/// Where the suite's logs go.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulator-test-logs")
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
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,sfcdc_emulator=debug",
            ))
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init();
    });
}
