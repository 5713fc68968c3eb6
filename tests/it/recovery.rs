//! Recovery of approvals the stream did not deliver: `sfcdc reconcile` (SOQL and Bulk API 2.0),
//! and its guarantees beside a running service: exactly one job per approval, whichever signal
//! comes first, and nothing new when run again.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sfcdc::store::recovery::Recoveries;
use sfcdc::store::{AnyStore, JobState, Store};

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
    // From the `latest` preset the stream delivers only what happens once it is open: an
    // approval made before that and after the reconcile's query would reach neither side.
    live(store.as_ref(), &[ORDERS]).await;
    // Approvals keep arriving while the reconcile scans: both sides may see these.
    let d = drafts(&org).await;
    let during: Vec<String> = d.into_iter().take(6).collect();
    let url = format!("sqlite://{}", r.dir.path().join("sfcdc.db").display());
    let (summary, ()) = tokio::join!(reconcile(&org, r.dir.path(), &url, &["--all"]), async {
        for id in &during {
            org.patch_order(id, json!({"Status": "Approved"})).await;
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        }
    });
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

/// The store's recovery requests for `reason`, oldest first.
async fn recoveries_for(
    store: &AnyStore,
    reason: &str,
) -> Vec<sfcdc::store::recovery::RecoveryRow> {
    let mut rows: Vec<_> = store
        .recoveries(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.reason == reason)
        .collect();
    rows.reverse();
    rows
}

/// Runs the service from the latest position, with `extra` settings, and waits until its
/// order channel is live: a change made after this is streamed.
async fn run_live(org: &Org, extra: &[(&str, &str)]) -> (Running, std::sync::Arc<AnyStore>) {
    let mut env = vec![("SFCDC_REPLAY_PRESET", "latest")];
    env.extend_from_slice(extra);
    let r = run_app(org, tempfile::tempdir().unwrap(), &env).await;
    let store = r.app.store().clone();
    live(store.as_ref(), &[ORDERS]).await;
    (r, store)
}

/// Waits until `order` has exactly one job.
async fn one_job(store: &AnyStore, order: &str, what: &str) {
    eventually(what, async || {
        (jobs_of(store, order).await.len() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn approvals_made_while_down_past_retention_each_get_one_job_with_no_operator_action() {
    let org = Org::start().await;
    let (r, store) = run_live(&org, &[]).await;
    let streamed = approve(&org, 1).await;
    one_job(&store, &streamed[0], "the streamed approval's job").await;
    let (_, dir) = r.stop().await;

    // Down: approvals and other changes, then the retained events expire.
    let lost = approve(&org, 3).await;
    org.create_order(json!({})).await;
    org.patch_order(&streamed[0], json!({"Description": "edited while down"}))
        .await;
    org.fault(json!({"kind": "expire_events"})).await;

    let r = run_app(&org, dir, &[]).await;
    let store = r.app.store().clone();
    for id in &lost {
        one_job(&store, id, "a job for each approval lost with the events").await;
    }
    let done = eventually("the recovery recorded as finished", async || {
        recoveries_for(&store, "replay_lost")
            .await
            .into_iter()
            .find(|r| r.finished_at.is_some())
    })
    .await;
    assert_eq!(done.channel.as_deref(), Some(ORDERS));
    assert!(done.created >= Some(3), "{done:?}");
    assert!(
        done.since_ms.is_some(),
        "the window starts at the last commit"
    );
    for id in lost.iter().chain(&streamed) {
        assert_eq!(jobs_of(&store, id).await.len(), 1, "{id}");
    }
    assert_eq!(
        r.metric("sfcdc_replay_recoveries_total", &[("reason", "earliest")]),
        1.0
    );
    assert_eq!(
        r.metric(
            "sfcdc_reconcile_jobs_created_total",
            &[("reason", "replay_lost")]
        ),
        done.created.unwrap() as f64
    );
    r.stop().await;
}

#[tokio::test]
async fn the_first_start_backfills_once() {
    let org = Org::start().await;
    let before = approve(&org, 3).await;
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_REPLAY_PRESET", "latest"), ("SFCDC_BACKFILL", "all")],
    )
    .await;
    let store = r.app.store().clone();
    for id in &before {
        one_job(&store, id, "a backfilled job").await;
        assert_eq!(jobs_of(&store, id).await[0].trigger_kind, "reconcile");
    }
    let backfills = eventually("the backfill recorded as finished", async || {
        let rows = recoveries_for(&store, "backfill").await;
        rows.iter().all(|r| r.finished_at.is_some()).then_some(rows)
    })
    .await;
    assert_eq!(backfills.len(), 1);
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let (_, dir) = r.stop().await;

    // Not the first start any more: no second backfill.
    let r = run_app(&org, dir, &[("SFCDC_BACKFILL", "all")]).await;
    let store = r.app.store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    assert_eq!(recoveries_for(&store, "backfill").await.len(), 1);
    assert_eq!(
        r.metric(
            "sfcdc_reconcile_jobs_created_total",
            &[("reason", "backfill")]
        ),
        0.0
    );
    r.stop().await;
}

#[tokio::test]
async fn one_collections_update_approving_many_orders_is_one_event_and_one_job_each() {
    let org = Org::start().await;
    let (r, store) = run_live(&org, &[]).await;
    let events_before = org.sequence(ORDERS).len();
    let picked: Vec<String> = drafts(&org).await.into_iter().take(5).collect();
    let records: Vec<Value> = picked
        .iter()
        .map(|id| json!({"attributes": {"type": "Order"}, "id": id, "Status": "Approved"}))
        .collect();
    let (status, body) = org
        .rest(
            reqwest::Method::PATCH,
            "/services/data/v60.0/composite/sobjects",
            Some(json!({"allOrNone": true, "records": records})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        org.sequence(ORDERS).len(),
        events_before + 1,
        "identical changes in one transaction make one change event"
    );
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    for id in &picked {
        let jobs = jobs_of(&store, id).await;
        assert_eq!(jobs.len(), 1, "{id}: {jobs:?}");
        assert_eq!(jobs[0].trigger_kind, "status_change");
    }
    r.stop().await;
}

#[tokio::test]
async fn a_gap_overflow_reaching_past_the_window_asks_for_a_scan_from_the_last_commit() {
    let org = Org::start().await;
    // A window too short to cover anything: only the scan from the last commit can.
    let (r, store) = run_live(&org, &[("SFCDC_RECONCILE_WINDOW", "1ms")]).await;
    let streamed = approve(&org, 1).await;
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let last = store
        .last_commit(ORDERS)
        .await
        .unwrap()
        .expect("a last commit");
    org.fault(json!({"kind": "gap", "change_type": "GAP_OVERFLOW"}))
        .await;
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let scan = eventually("the overflow's scan finished", async || {
        recoveries_for(&store, "gap_overflow")
            .await
            .into_iter()
            .find(|r| r.finished_at.is_some())
    })
    .await;
    assert_eq!(
        scan.since_ms,
        Some(last - 300_000),
        "the last commit less the margin"
    );
    assert_eq!(scan.channel.as_deref(), Some(ORDERS));
    assert_eq!(jobs_of(&store, &streamed[0]).await.len(), 1);
    assert_eq!(
        r.metric("sfcdc_gap_overflows_total", &[("channel", ORDERS)]),
        1.0
    );
    r.stop().await;
}

#[tokio::test]
async fn the_periodic_check_runs_once_per_period_across_instances() {
    let org = Org::start().await;
    // Approved before the service ran, and never streamed (it starts at the latest position).
    let missed = approve(&org, 2).await;
    let extra = [
        ("SFCDC_REPLAY_PRESET", "latest"),
        ("SFCDC_RECONCILE_EVERY", "1h"),
    ];
    let a = run_app(&org, tempfile::tempdir().unwrap(), &extra).await;
    let store = a.app.store().clone();
    // A second instance on the same file, with its own id.
    let dir = a.dir.path().to_owned();
    let mut env = org.subscriber_env(&dir, &[]);
    for (k, v) in extra.iter().chain(&[
        ("SFCDC_INSTANCE_ID", "second"),
        ("SFCDC_ADMIN_ADDR", "off"),
        ("SFCDC_CHANNELS", ORDERS),
    ]) {
        env.set(k, *v);
    }
    env.set(
        "SFCDC_DATABASE_URL",
        format!("sqlite://{}", dir.join("sfcdc.db").display()),
    );
    let second = sfcdc::app::App::build(sfcdc::app::Settings::from_env(&env).unwrap())
        .await
        .unwrap();
    let b_metrics = second.handle().metrics().clone();
    let stop_b = tokio_util::sync::CancellationToken::new();
    let b = tokio::spawn(second.run_until_stopped(stop_b.clone()));

    let periodic = eventually("the periodic check finished", async || {
        let rows = recoveries_for(&store, "periodic").await;
        (!rows.is_empty() && rows.iter().all(|r| r.finished_at.is_some())).then_some(rows)
    })
    .await;
    assert_eq!(periodic.len(), 1, "one check per period for the store");
    for id in &missed {
        assert_eq!(jobs_of(&store, id).await.len(), 1, "{id}");
    }
    let created = |m: &sfcdc::telemetry::metrics::Metrics| {
        metric_value(
            &m.render(),
            "sfcdc_reconcile_jobs_created_total",
            &[("reason", "periodic")],
        )
    };
    assert_eq!(
        created(a.app.metrics()) + created(&b_metrics),
        periodic[0].created.unwrap() as f64,
        "counted once, by the instance that ran it"
    );
    assert!(periodic[0].created.unwrap() >= 2);
    stop_b.cancel();
    b.await.unwrap().unwrap();
    a.stop().await;
}

/// Plants `n` orders straight into the org (no events): every tenth approved, a third of those
/// already fulfilled (an external id); the rest drafts. Returns the approved ones without an
/// external id: the candidates.
fn plant_orders(org: &Org, n: usize) -> BTreeSet<String> {
    let now = sfcdc::clock::now_ms();
    org.emu
        .with_world(|w| w.plant_orders(n, now))
        .into_iter()
        .map(|id| id.to_string())
        .collect()
}

#[tokio::test]
async fn reconcile_over_bulk_api_finds_exactly_the_planted_candidates_among_100k_orders() {
    let org = Org::start().await;
    let planted = plant_orders(&org, 100_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sfcdc.db").display());
    let summary = reconcile(&org, dir.path(), &url, &["--all"]).await;
    assert_eq!(summary["via"], "bulk", "{summary}");
    assert_eq!(summary["created"], planted.len(), "{summary}");
    let store = AnyStore::open(&url).await.unwrap();
    let with_jobs: BTreeSet<String> = jobs_by_order(&store).await.into_keys().collect();
    assert_eq!(with_jobs, planted, "the planted candidates and no others");
    eprintln!(
        "reconcile via Bulk API 2.0: {} orders in the org, {} scanned, {} created in {:.2} s \
         ({} orders/s), peak RSS {} MiB",
        100_000 + 12,
        summary["scanned"],
        summary["created"],
        summary["seconds"].as_f64().unwrap_or_default(),
        summary["orders_per_second"],
        summary["peak_rss_bytes"].as_u64().unwrap_or_default() / (1 << 20)
    );
    // Again: everything has its job.
    let again = reconcile(&org, dir.path(), &url, &["--all"]).await;
    assert_eq!(again["created"], 0, "{again}");
}

#[tokio::test]
async fn a_failed_bulk_query_job_fails_the_reconcile_with_its_name_and_a_rerun_completes() {
    let org = Org::start().await;
    let planted = plant_orders(&org, 30_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sfcdc.db").display());
    org.fault(json!({"kind": "bulk_fail"})).await;
    let env = binary_env(&org, dir.path(), &url);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args(["reconcile", "--all"])
        .env_clear()
        .envs(env)
        .output()
        .await
        .unwrap();
    crate::common::logs::keep("reconcile-bulk-fail", &out.stderr);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Bulk API 2.0 query job 750") && stderr.contains("Failed"),
        "{stderr}"
    );
    let summary = reconcile(&org, dir.path(), &url, &["--all"]).await;
    assert_eq!(summary["created"], planted.len(), "{summary}");
}

#[tokio::test]
async fn wildcard_record_ids_are_reconciled_not_quarantined() {
    let org = Org::start().await;
    let (r, store) = run_live(&org, &[]).await;
    let order = drafts(&org).await.remove(0);
    org.fault(json!({"kind": "wildcard_ids", "count": 1})).await;
    org.patch_order(&order, json!({"Status": "Approved"})).await;
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let jobs = eventually("the wildcard's reconciled job", async || {
        let jobs = jobs_of(&store, &order).await;
        (!jobs.is_empty()).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].trigger_kind, "overflow");
    assert!(store.quarantined(true).await.unwrap().is_empty());
    assert_eq!(
        r.metric("sfcdc_wildcard_record_ids_total", &[("channel", ORDERS)]),
        1.0
    );
    r.stop().await;
}
