//! The reference Node client next to `sfcdc tail`, inside the report: runs
//! `scripts/thirdparty/compare_node.sh` (the same emulator stream read from EARLIEST by pozil's
//! Node Pub/Sub client, which decodes and counts, and by `sfcdc tail --format none`, alternated
//! three times) with this very binary, and reads the medians it prints on its `RESULT` line.
//! Without Node.js, npm or the script (a binary installed away from its source tree), the report
//! says the comparison was skipped and why.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;
use tokio::process::Command;

/// Medians of the alternated runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeComparison {
    /// Events in the stream.
    pub events: usize,
    /// Rounds alternated.
    pub rounds: usize,
    /// The Node client's median events/s.
    pub node_events_per_second: f64,
    /// Its median CPU seconds (user and system).
    pub node_cpu_seconds: f64,
    /// Its median peak RSS, MiB.
    pub node_peak_mib: f64,
    /// `sfcdc tail --format none`'s median events/s.
    pub sfcdc_events_per_second: f64,
    /// Its median CPU seconds.
    pub sfcdc_cpu_seconds: f64,
    /// Its median peak RSS, MiB.
    pub sfcdc_peak_mib: f64,
}

/// Why the comparison did not run, or its figures.
pub type Outcome = Result<NodeComparison, String>;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/thirdparty/compare_node.sh")
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Runs the comparison over `events` events, `rounds` times; `Err` says why it was skipped.
pub async fn run(events: usize, rounds: usize) -> Outcome {
    let script = script();
    if !script.is_file() {
        return Err(format!("{} is not here", script.display()));
    }
    for program in ["node", "npm", "bc", "time"] {
        if !on_path(program) {
            return Err(format!("{program} is not installed"));
        }
    }
    println!("The reference Node client: {events} events, {rounds} rounds (compare_node.sh)");
    compare(&script, events, rounds)
        .await
        .map_err(|e| format!("compare_node.sh failed: {e:#}"))
}

async fn compare(script: &Path, events: usize, rounds: usize) -> anyhow::Result<NodeComparison> {
    let exe = std::env::current_exe()?;
    let out = Command::new("bash")
        .arg(script)
        .args([events.to_string(), rounds.to_string()])
        .env("SFCDC_BIN", exe)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running it")?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    anyhow::ensure!(out.status.success(), "it exited with {}", out.status);
    parse(&text, events, rounds)
}

/// Reads `RESULT node_eps=.. node_cpu=.. node_mib=.. sfcdc_eps=.. sfcdc_cpu=.. sfcdc_mib=..`.
fn parse(text: &str, events: usize, rounds: usize) -> anyhow::Result<NodeComparison> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("no RESULT line")?;
    let value = |key: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("no {key} in the RESULT line"))?
            .parse::<f64>()
            .with_context(|| format!("{key} is not a number"))
    };
    Ok(NodeComparison {
        events,
        rounds,
        node_events_per_second: value("node_eps")?,
        node_cpu_seconds: value("node_cpu")?,
        node_peak_mib: value("node_mib")?,
        sfcdc_events_per_second: value("sfcdc_eps")?,
        sfcdc_cpu_seconds: value("sfcdc_cpu")?,
        sfcdc_peak_mib: value("sfcdc_mib")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_line_is_read_and_a_missing_figure_is_an_error() {
        let text = "round 1\nmedian ...\nRESULT node_eps=25696 node_cpu=3.95 node_mib=127.8 \
                    sfcdc_eps=226876 sfcdc_cpu=0.28 sfcdc_mib=17.9\n";
        let c = parse(text, 100_000, 3).unwrap();
        assert_eq!(c.node_events_per_second, 25696.0);
        assert_eq!(c.sfcdc_cpu_seconds, 0.28);
        assert_eq!(c.sfcdc_peak_mib, 17.9);
        let e = parse("RESULT node_eps=1", 1, 1).unwrap_err().to_string();
        assert!(e.contains("node_cpu"), "{e}");
        assert!(parse("no result", 1, 1).is_err());
    }
}
