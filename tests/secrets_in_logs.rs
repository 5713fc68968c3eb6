//! The secret scan: every log line the integration suite produced (in process, and from every
//! `sfcdc` child process, collected by `tests/it/common/logs.rs`) is searched for the secrets the
//! suite configures — client secret, password, private key, access tokens, admin and read
//! tokens, the metrics token, the fulfilment token, the webhook secret, the GitHub token. Any hit fails the run.
//!
//! Cargo runs this target after `it` (targets run in name order), so `cargo test` scans the logs
//! of the run it belongs to; the logs are removed after a clean scan. Run alone, with no logs
//! to read, it fails and says to run the whole suite.

use std::path::{Path, PathBuf};

/// Each configured secret, by what it is (the name is what a report prints, never the value).
const SECRETS: [(&str, &str); 10] = [
    ("client secret (SF_CLIENT_SECRET)", "sfcdc-demo-secret"),
    ("password (SF_PASSWORD)", "sfcdc-demo-password"),
    (
        "admin token (SFCDC_ADMIN_TOKEN)",
        "admin-token-for-tests-0123456789",
    ),
    (
        "read token (SFCDC_READ_TOKEN)",
        "read-token-for-tests-0123456789",
    ),
    (
        "metrics token (SFCDC_METRICS_TOKEN)",
        "metrics-token-for-tests-0123456789",
    ),
    (
        "fulfilment token (SFCDC_FULFILMENT_TOKEN)",
        "fulfilment-dev-token",
    ),
    (
        "webhook secret (SFCDC_WEBHOOK_SECRET)",
        "webhook-dev-secret",
    ),
    ("GitHub token (SFCDC_GITHUB_TOKEN)", "github-dev-token"),
    ("private key (SF_PRIVATE_KEY)", "PRIVATE KEY"),
    ("private key body (SF_PRIVATE_KEY)", "MIIEvAIBADANBgkqhkiG"),
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
        .then_some("access token (SF_ACCESS_TOKEN or a login's session)")
}

fn logs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs")
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
    let in_process = files
        .iter()
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("in-process-"))
        })
        .count();
    assert!(
        in_process > 0 && files.len() > in_process,
        "no logs of the integration suite in {}: run the whole suite (cargo test), which runs \
         the `it` target first",
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
