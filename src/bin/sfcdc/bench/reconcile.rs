//! Reconcile throughput and memory: `sfcdc reconcile --all` as a child process against an
//! in-process emulator holding N planted orders (every tenth approved, a third of those already
//! fulfilled), once reading over SOQL pages and once through a Bulk API 2.0 query job, each on a
//! fresh SQLite file. The child reports its own rate (orders scanned per second, creating the
//! missing jobs) and peak RSS (`VmHWM`), so the figure is sfcdc's alone. Two org sizes, a tenth
//! and the whole, show whether memory grows with the org.

use std::process::Stdio;

use anyhow::Context;
use sfcdc_emulator::{Emulator, EmulatorConfig};

/// One reconcile run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReconcileRun {
    /// Orders in the org.
    pub orders: usize,
    /// `soql` or `bulk`.
    pub via: String,
    /// Orders read (the approved ones).
    pub scanned: u64,
    /// Jobs created.
    pub created: u64,
    /// Orders read per second.
    pub orders_per_second: f64,
    /// The child's peak RSS, MiB.
    pub peak_rss_mib: f64,
}

/// Runs `sfcdc reconcile --all` reading via SOQL (`bulk == false`) or Bulk API 2.0.
async fn reconcile(
    emu: &Emulator,
    dir: &std::path::Path,
    ca: &std::path::Path,
    orders: usize,
    bulk: bool,
) -> anyhow::Result<ReconcileRun> {
    let exe = std::env::current_exe()?;
    let db = dir.join(format!("reconcile-{orders}-{bulk}.db"));
    let out = tokio::process::Command::new(exe)
        .args(["reconcile", "--all", "--format", "json"])
        .env_clear()
        .env("SFCDC_PUBSUB_ENDPOINT", emu.grpc_url())
        .env("SFCDC_CA_CERT", ca)
        .env("SF_AUTH", "client-credentials")
        .env("SF_LOGIN_URL", emu.instance_url())
        .env("SF_CLIENT_ID", &emu.credentials().client_id)
        .env("SF_CLIENT_SECRET", &emu.credentials().client_secret)
        .env("SFCDC_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("SFCDC_BULK_THRESHOLD", if bulk { "1" } else { "100000000" })
        .env("SFCDC_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .await
        .context("running sfcdc reconcile")?;
    anyhow::ensure!(out.status.success(), "sfcdc reconcile failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(ReconcileRun {
        orders,
        via: v["via"].as_str().unwrap_or_default().to_owned(),
        scanned: v["scanned"].as_u64().unwrap_or_default(),
        created: v["created"].as_u64().unwrap_or_default(),
        orders_per_second: v["orders_per_second"].as_f64().unwrap_or_default(),
        peak_rss_mib: v["peak_rss_bytes"].as_f64().unwrap_or_default() / 1_048_576.0,
    })
}

/// Runs the reconcile benchmark over `orders` orders (and a tenth as many first); prints each
/// run.
pub async fn run(orders: usize) -> anyhow::Result<Vec<ReconcileRun>> {
    let dir = tempfile::Builder::new()
        .prefix("sfcdc-bench-reconcile-")
        .tempdir()?;
    let ca = dir.path().join("ca.pem");
    let mut runs = Vec::new();
    println!("Reconcile: sfcdc reconcile --all against planted orders (every tenth approved)");
    for size in [orders / 10, orders] {
        let emu = Emulator::start(EmulatorConfig::ephemeral()).await?;
        std::fs::write(&ca, emu.ca_pem().unwrap_or_default())?;
        let now = sfcdc::clock::now_ms();
        emu.with_world(|w| w.plant_orders(size, now));
        for bulk in [false, true] {
            let r = reconcile(&emu, dir.path(), &ca, size, bulk).await?;
            println!(
                "  {:>8} orders via {:<4}: {:>6} scanned, {:>6} jobs, {:>8.0} orders/s, peak RSS {:.1} MiB",
                r.orders, r.via, r.scanned, r.created, r.orders_per_second, r.peak_rss_mib
            );
            runs.push(r);
        }
        emu.shutdown().await;
    }
    Ok(runs)
}
