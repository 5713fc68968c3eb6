//! What an operator sees and relies on: `/readyz` naming the channel that has no live stream,
//! `/metrics` covering every family it documents, and shutdowns on SIGTERM that lose neither a
//! batch being staged nor an operation being polled, bounded by `SFCDC_SHUTDOWN_TIMEOUT`.

use std::time::Duration;

use serde_json::{Value, json};
use sfcdc::clock::Clock;
use sfcdc::decode::Position;
use sfcdc::store::{AnyStore, JobState, Store};
use sfcdc_emulator::EmulatorConfig;

use super::worker::{binary_worker_env, job_in, jobs_of};
use crate::common::*;

const MISSING: &str = "/event/Not_Enabled__e";

async fn get(url: String) -> (u16, String) {
    let resp = reqwest::get(&url).await.expect("admin answers");
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn readyz_names_the_channel_without_a_live_stream_and_recovers_with_it() {
    let org = Org::start().await;
    let channels = format!("{ORDERS},{MISSING}");
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[
            ("SFCDC_CHANNELS", channels.as_str()),
            ("SFCDC_STREAM_TIMEOUT", "1s"),
        ],
    )
    .await;
    let readyz = format!("http://{}/readyz", r.app.admin_addr().unwrap());

    // A topic that does not exist stops for good: never ready, and /readyz says which and why.
    let body: Value = eventually("the missing topic to be reported", async || {
        let (status, body) = get(readyz.clone()).await;
        let body: Value = serde_json::from_str(&body).unwrap();
        let orders_live = body["channels"][0]["ready"] == true;
        let missing_stopped = body["channels"][1]["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("stopped for good"));
        (status == 503 && orders_live && missing_stopped).then_some(body)
    })
    .await;
    assert_eq!(body["store"], "ok");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(MISSING) && error.contains("topic not found"),
        "{error}"
    );
    assert!(!error.contains(ORDERS), "{error}");
    r.cancel.cancel();
    let ended = r.handle.await.unwrap().unwrap_err().to_string();
    assert!(ended.contains(MISSING), "{ended}");

    // One live channel: ready; its stream lost and refused beyond the bound: not ready, named;
    // the stream back: ready again.
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_CHANNELS", ORDERS), ("SFCDC_STREAM_TIMEOUT", "1s")],
    )
    .await;
    let readyz = format!("http://{}/readyz", r.app.admin_addr().unwrap());
    eventually("ready", async || {
        (get(readyz.clone()).await.0 == 200).then_some(())
    })
    .await;
    org.fault(json!({"kind": "refuse_subscriptions", "seconds": 600.0}))
        .await;
    org.fault(json!({"kind": "disconnect_after", "events": 1}))
        .await;
    let d = drafts(&org).await;
    org.patch_order(&d[0], json!({"PoNumber": "PO-READY-1"}))
        .await;
    let body = eventually("not ready", async || {
        let (status, body) = get(readyz.clone()).await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        body.contains(&format!("channel {ORDERS} has had no live stream for")),
        "{body}"
    );
    org.emu.clear_faults();
    eventually("ready again", async || {
        (get(readyz.clone()).await.0 == 200).then_some(())
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn the_replay_id_age_is_measured_by_the_services_clock() {
    // A keepalive commits its position and so restarts the age: with the tests' 200 ms
    // keepalive one could land between two reads below, on a loaded machine.
    let org = Org::start_with(EmulatorConfig {
        keepalive: Duration::from_secs(60),
        ..test_config()
    })
    .await;
    let clock = Clock::manual(sfcdc::clock::now_ms());
    let r = run_app_at(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_CHANNELS", ORDERS)],
        clock.clone(),
    )
    .await;
    let d = drafts(&org).await;
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    caught_up(&org, r.app.store().as_ref(), &[ORDERS]).await;
    let url = format!("http://{}/metrics", r.app.admin_addr().unwrap());
    let age = async || {
        let (status, text) = get(url.clone()).await;
        assert_eq!(status, 200);
        metric_value(&text, "sfcdc_replay_id_age_seconds", &[("channel", ORDERS)])
    };
    // Nothing moves the clock but the test: the age is exact.
    assert_eq!(age().await, 0.0);
    clock.advance(Duration::from_secs(90));
    assert_eq!(age().await, 90.0);
    clock.advance(Duration::from_millis(500));
    assert_eq!(age().await, 90.5);
    r.stop().await;
}

#[tokio::test]
async fn metrics_cover_channels_jobs_deliveries_cache_and_memory() {
    let org = Org::start().await;
    let dir = tempfile::tempdir().unwrap();
    // No fulfilment system: the job stays available, so the state gauge is exact.
    let channels = format!("{ORDERS},/data/OrderItemChangeEvent");
    let r = run_app(&org, dir, &[("SFCDC_CHANNELS", channels.as_str())]).await;
    let d = drafts(&org).await;
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    eventually("the job", async || {
        (!jobs_of(&store, &d[0]).await.is_empty()).then_some(())
    })
    .await;
    let (status, text) = get(format!("http://{}/metrics", r.app.admin_addr().unwrap())).await;
    assert_eq!(status, 200);
    let m = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    let ch = [("channel", ORDERS)];
    assert!(m("sfcdc_events_received_total", &ch) >= 1.0, "{text}");
    assert!(m("sfcdc_events_decoded_total", &ch) >= 1.0);
    assert!(m("sfcdc_batch_commit_seconds_count", &ch) >= 1.0);
    assert_eq!(m("sfcdc_inflight_events", &ch), 0.0);
    assert_eq!(m("sfcdc_channel_ready", &ch), 1.0);
    let age = m("sfcdc_replay_id_age_seconds", &ch);
    assert!((0.0..60.0).contains(&age), "a fresh position: {age}");
    assert_eq!(m("sfcdc_jobs_in_state", &[("state", "available")]), 1.0);
    assert_eq!(m("sfcdc_jobs_in_state", &[("state", "dead")]), 0.0);
    assert!(text.contains("sfcdc_deliveries_in_state{state=\"pending\"} 0"));
    assert_eq!(m("sfcdc_store_up", &[]), 1.0);
    assert!(m("sfcdc_process_resident_memory_bytes", &[]) > 1e6);
    assert!(
        m("sfcdc_process_peak_resident_memory_bytes", &[])
            >= m("sfcdc_process_resident_memory_bytes", &[])
    );
    // The guard lookup for the approval went through the cache.
    assert!(m("sfcdc_cache_loads_total", &[("cache", "guard")]) >= 1.0);
    // A configured channel's series exist from the start, and unlabelled families are exported
    // before their first count.
    for family in [
        "sfcdc_events_received_total",
        "sfcdc_jobs_created_total",
        "sfcdc_channel_ready",
    ] {
        let series = format!("{family}{{channel=\"/data/OrderItemChangeEvent\"}}");
        assert!(text.contains(&series), "{series} is exported");
    }
    for family in [
        "sfcdc_auth_refreshes",
        "sfcdc_job_latency_seconds",
        "sfcdc_job_retries",
        "sfcdc_job_dead_letters",
        "sfcdc_invalidations_requested",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} is exported"
        );
    }
    r.stop().await;
}

fn stopped_log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("run.log")).unwrap_or_default()
}

#[tokio::test]
async fn sigterm_while_a_batch_waits_on_its_lookup_commits_the_batch_first() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sfcdc.db").display());
    let env = binary_env(&org, dir.path(), &url);
    let store = AnyStore::open(&url).await.unwrap();
    let mut p = spawn_run(&env, &dir.path().join("run.log"));
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    job_in(&store, &d[0], JobState::Available).await;

    // Salesforce slows down: the next approval's guard lookup is in flight when SIGTERM lands.
    let queries = || {
        org.emu
            .stats()
            .calls
            .iter()
            .filter(|(route, _)| route.ends_with("/query"))
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    let before = queries();
    org.fault(json!({"kind": "delay", "ms": 1500})).await;
    org.patch_order(&d[1], json!({"Status": "Approved"})).await;
    eventually("the guard lookup in flight", async || {
        (queries() > before).then_some(())
    })
    .await;
    signal(p.pid(), "TERM");
    let status = p.0.wait().await.unwrap();
    assert_eq!(status.code(), Some(0), "{}", stopped_log(dir.path()));

    // The batch committed before the process exited: its job exists and the position covers
    // the event, with nothing left to replay.
    assert_eq!(jobs_of(&store, &d[1]).await.len(), 1);
    let last = org.emu.with_world(|w| w.bus.last(ORDERS).map(|e| e.replay));
    match store.checkpoint(ORDERS).await.unwrap() {
        Some(Position::After(r)) => assert_eq!(r.position(), last),
        other => panic!("position {other:?}"),
    }
}

#[tokio::test]
async fn sigterm_during_a_poll_keeps_the_operation_and_a_hung_submit_is_bounded() {
    let org = Org::start().await;
    // Polls hang far beyond the HTTP timeout of the test.
    org.emu.fulfilment().update(|c| {
        c.latency_ms = 3_600_000;
        c.poll_delay_ms = 600_000;
    });
    let d = drafts(&org).await;
    let dir = tempfile::tempdir().unwrap();
    let (env, url) = binary_worker_env(
        &org,
        dir.path(),
        &[
            ("SFCDC_HTTP_TIMEOUT", "3s"),
            ("SFCDC_JOB_LEASE", "12s"),
            ("SFCDC_SHUTDOWN_TIMEOUT", "1s"),
        ],
    );
    let store = AnyStore::open(&url).await.unwrap();
    let log = dir.path().join("run.log");

    let mut p = spawn_run(&env, &log);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let polling = job_in(&store, &d[0], JobState::Polling).await;
    let before = org.emu.fulfilment().stats().polls;
    eventually("a poll in flight", async || {
        (org.emu.fulfilment().stats().polls > before).then_some(())
    })
    .await;
    // The hung status read is abandoned at once: waiting for it would outlast the 1 s shutdown
    // bound (the HTTP timeout is 3 s) and exit non-zero.
    signal(p.pid(), "TERM");
    assert_eq!(
        p.0.wait().await.unwrap().code(),
        Some(0),
        "{}",
        stopped_log(dir.path())
    );
    let kept = jobs_of(&store, &d[0]).await.remove(0);
    assert_eq!(kept.state, JobState::Polling);
    assert_eq!(
        kept.operation_id, polling.operation_id,
        "the operation is kept"
    );

    // A submit that hangs is not abandoned (its answer would be lost) but the wait is bounded by
    // SFCDC_SHUTDOWN_TIMEOUT: the process exits non-zero and says so; the job resumes under the
    // same key once its lease expires, with no second operation.
    org.emu.fulfilment().update(|c| {
        c.poll_delay_ms = 0;
        c.submit_delay_ms = 600_000;
    });
    let mut p = spawn_run(&env, &log);
    org.patch_order(&d[1], json!({"Status": "Approved"})).await;
    eventually("a submit in flight", async || {
        (org.emu.fulfilment().stats().operations_created >= 2).then_some(())
    })
    .await;
    signal(p.pid(), "TERM");
    assert_eq!(p.0.wait().await.unwrap().code(), Some(1));
    assert!(
        stopped_log(dir.path()).contains("did not finish within SFCDC_SHUTDOWN_TIMEOUT"),
        "{}",
        stopped_log(dir.path())
    );

    org.emu.fulfilment().update(|c| {
        c.submit_delay_ms = 0;
        c.latency_ms = 0;
    });
    let ops = org.emu.fulfilment().operations();
    for op in &ops {
        org.emu.fulfilment().complete(&op.operation_id);
    }
    let p = spawn_run(&env, &log);
    for order in &d[..2] {
        job_in(&store, order, JobState::Completed).await;
    }
    let ops = org.emu.fulfilment().operations();
    assert_eq!(ops.len(), 2, "one operation per order: {ops:?}");
    signal(p.pid(), "TERM");
    let mut p = p;
    assert_eq!(p.0.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn an_unreachable_store_makes_readyz_fail_and_store_up_zero() {
    let org = Org::start().await;
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_CHANNELS", ORDERS)],
    )
    .await;
    let admin = r.app.admin_addr().unwrap();
    eventually("ready", async || {
        (get(format!("http://{admin}/readyz")).await.0 == 200).then_some(())
    })
    .await;
    // The store goes away (its connections closed for good): not ready, and said so.
    let AnyStore::Sqlite(sqlite) = r.app.sink().store().as_ref() else {
        panic!("run_app uses SQLite");
    };
    sqlite.close().await;
    let (status, body) = get(format!("http://{admin}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["store"], "unreachable");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("not ready: the store is unreachable"),
        "{body}"
    );
    let (status, text) = get(format!("http://{admin}/metrics")).await;
    assert_eq!(status, 200, "metrics are served without the store");
    assert_eq!(metric_value(&text, "sfcdc_store_up", &[]), 0.0);
    assert!(metric_value(&text, "sfcdc_process_resident_memory_bytes", &[]) > 0.0);
    r.cancel.cancel();
    let _ = r.handle.await;
}
