//! Recovery of approvals the stream did not deliver: `sfcdc reconcile` (SOQL and Bulk API 2.0),
//! and its guarantees beside a running service: exactly one job per approval, whichever signal
//! comes first, and nothing new when run again.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sfcdc::store::{AnyStore, JobState};

use super::worker::jobs_of;
use crate::common::*;

/// Runs `sfcdc reconcile` with `args` against `org`, on the SQLite file at `url`; its JSON
/// summary.
async fn reconcile(org: &Org, dir: &std::path::Path, url: &str, args: &[&str]) -> Value {
    let env = binary_env(org, dir, url);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .arg("reconcile")
        .args(args)
        .args(["--format", "json"])
        .env_clear()
        .envs(env)
        .output()
        .await
        .unwrap();
    crate::common::logs::keep("reconcile", &out.stderr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Approves `n` draft orders over REST; their ids.
async fn approve(org: &Org, n: usize) -> Vec<String> {
    let d = drafts(org).await;
    let picked: Vec<String> = d.into_iter().take(n).collect();
    for id in &picked {
        org.patch_order(id, json!({"Status": "Approved"})).await;
    }
    picked
}

#[tokio::test]
async fn reconcile_creates_the_missing_jobs_once_and_a_dry_run_writes_nothing() {
    let org = Org::start().await;
    let approved = approve(&org, 4).await;
    // One approved order already fulfilled elsewhere: the guard skips it.
    org.patch_order(&approved[3], json!({"WHMCS_Order_ID__c": "WH-77"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sfcdc.db").display());

    let dry = reconcile(&org, dir.path(), &url, &["--all", "--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["via"], "soql");
    let would: BTreeSet<String> = dry["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = approved[..3].iter().cloned().collect();
    assert!(expected.is_subset(&would), "{dry}");
    assert!(!would.contains(&approved[3]), "{dry}");
    let store = AnyStore::open(&url).await.unwrap();
    assert!(
        jobs_of(&store, &approved[0]).await.is_empty(),
        "a dry run writes nothing"
    );

    let first = reconcile(&org, dir.path(), &url, &["--all"]).await;
    assert_eq!(first["created"], dry["created"], "{first}");
    assert!(first["skipped_by_guard"].as_u64().unwrap() >= 1, "{first}");
    for id in &approved[..3] {
        let jobs = jobs_of(&store, id).await;
        assert_eq!(jobs.len(), 1, "{id}");
        assert_eq!(jobs[0].trigger_kind, "reconcile");
        assert_eq!(jobs[0].state, JobState::Available);
    }
    assert!(jobs_of(&store, &approved[3]).await.is_empty());

    // Again: the same states give the same keys, and nothing is new.
    let again = reconcile(&org, dir.path(), &url, &["--all"]).await;
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["existing"], first["created"], "{again}");
    // A narrow window sees only recent changes.
    let recent = reconcile(&org, dir.path(), &url, &["--since", "1h", "--dry-run"]).await;
    assert_eq!(recent["created"], 0, "{recent}");
}

#[tokio::test]
async fn a_reconcile_beside_the_running_service_makes_one_job_per_approval() {
    let org = Org::start().await;
    // Approvals before the service ever ran: the stream starts at the latest position.
    let before = approve(&org, 3).await;
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_REPLAY_PRESET", "latest")],
    )
    .await;
    let store = r.app.store().clone();
    // Approvals while the service runs, then the reconcile: both sides see these.
    let d = drafts(&org).await;
    let during: Vec<String> = d.into_iter().take(3).collect();
    for id in &during {
        org.patch_order(id, json!({"Status": "Approved"})).await;
    }
    let url = format!("sqlite://{}", r.dir.path().join("sfcdc.db").display());
    let summary = reconcile(&org, r.dir.path(), &url, &["--all"]).await;
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    for id in before.iter().chain(&during) {
        let jobs = jobs_of(&store, id).await;
        assert_eq!(jobs.len(), 1, "{id}: {jobs:?} ({summary})");
    }
    // The approvals made before the service: the reconcile made their jobs.
    for id in &before {
        assert_eq!(jobs_of(&store, id).await[0].trigger_kind, "reconcile");
    }
    r.stop().await;
}
