//! The emulator suite's secret scan: every log line its integration tests produced (collected
//! by `tests/it/common/logs.rs`) is searched for the secrets the emulator is configured with —
//! client secret, password, the JWT test key, access tokens it issues, the fulfilment token, the
//! webhook secret, the GitHub token. Any hit fails the run. An outside system that logs a
//! credential it was handed would teach the wrong habit to anyone who copies it.
//!
//! Cargo runs this target after `it` (targets run in name order), so `cargo test` scans the logs
//! of the run it belongs to; the logs are removed after a clean scan. Run alone, with no logs
//! to read, it fails and says to run the whole suite.

use std::path::{Path, PathBuf};

/// Each configured secret, by what it is (the name is what a report prints, never the value).
const SECRETS: [(&str, &str); 7] = [
    ("client secret (--client-secret)", "sfcdc-demo-secret"),
    ("password (--password)", "sfcdc-demo-password"),
    (
        "fulfilment token (--fulfilment-token)",
        "fulfilment-dev-token",
    ),
    ("webhook secret (--webhook-secret)", "webhook-dev-secret"),
    ("GitHub token (--github-token)", "github-dev-token"),
    ("private key (the JWT test key)", "PRIVATE KEY"),
    (
        "private key body (the JWT test key)",
        "MIIEvAIBADANBgkqhkiG",
    ),
];

/// What a line gives away, if anything: the name of the first secret found in it.
fn leak(line: &str) -> Option<&'static str> {
    if let Some((name, _)) = SECRETS.iter().find(|(_, value)| line.contains(value)) {
        return Some(name);
    }
    // Access tokens are issued at run time, in Salesforce's shape `<org id>!AQ<token>`.
    let token_char = |c: char| c.is_ascii_alphanumeric() || c == '.';
    line.match_indices("!AQ")
        .any(|(i, _)| line[i + 3..].chars().take_while(|c| token_char(*c)).count() >= 20)
        .then_some("access token (issued by the emulator)")
}

fn logs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulator-test-logs")
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn no_configured_secret_appears_in_any_log_line_of_the_suite() {
    let dir = logs_dir();
    let files = log_files(&dir);
    assert!(
        !files.is_empty(),
        "no logs of the emulator's integration suite in {}: run its whole suite \
         (cargo test -p sfcdc-emulator), which runs the `it` target first",
        dir.display()
    );
    let mut lines = 0usize;
    let mut debug_lines = 0usize;
    let mut leaks = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            lines += 1;
            debug_lines += usize::from(line.contains("\"DEBUG\""));
            if let Some(what) = leak(line) {
                leaks.push(format!("{}:{}: {what}", file.display(), n + 1));
            }
        }
    }
    eprintln!(
        "secret scan: {lines} lines ({debug_lines} at debug) in {} files, {} leaks",
        files.len(),
        leaks.len()
    );
    assert!(
        debug_lines > 0,
        "the suite logged nothing at debug level: the scan would miss the chattiest lines"
    );
    assert!(
        leaks.is_empty(),
        "secrets in the test suite's logs (kept in {}):\n{}",
        dir.display(),
        leaks.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_scan_finds_each_kind_of_secret() {
    for (name, value) in SECRETS {
        let line = format!(r#"{{"level":"DEBUG","fields":{{"message":"x {value} y"}}}}"#);
        assert_eq!(leak(&line), Some(name));
    }
    let token = "00DHs000000abcdE!AQ4AQHm0xTxhk6lF2v4V0c9.QqvD9S1uO3W3BhNzHm";
    assert!(leak(&format!("Authorization: Bearer {token}")).is_some());
    assert_eq!(leak("token refreshed for org 00DHs000000abcdE"), None);
    assert_eq!(leak("!AQ short"), None);
    assert_eq!(
        leak(r#"{"message":"Logged in to Salesforce","generation":2}"#),
        None
    );
}
