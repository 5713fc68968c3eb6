//! The worker end to end: `sfcdc run` against the emulator's Salesforce, fulfilment system,
//! webhook sink and GitHub stand-in. Approvals become jobs; jobs write `Activating`, submit,
//! poll, write the outcome back and notify; failures retry, dead-letter, and come back through
//! the admin API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sfcdc::store::queue::{DeliveryFilter, DeliveryState, Queue};
use sfcdc::store::{AnyStore, JobFilter, JobRow, JobState, Store};

use crate::common::*;

const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
const READ_TOKEN: &str = "read-token-for-tests-0123456789";

/// Settings that run the worker against `org`'s fulfilment system, with quick polls and
/// retries, both notifiers, and `extra` on top.
pub(crate) fn worker_env(org: &Org, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("SFCDC_CHANNELS".into(), ORDERS.into()),
        ("SFCDC_FULFILMENT_URL".into(), org.emu.fulfilment_url()),
        (
            "SFCDC_FULFILMENT_TOKEN".into(),
            "fulfilment-dev-token".into(),
        ),
        ("SFCDC_POLL_INTERVAL".into(), "20ms".into()),
        ("SFCDC_POLL_MAX_INTERVAL".into(), "80ms".into()),
        ("SFCDC_RETRY_BASE".into(), "20ms".into()),
        ("SFCDC_RETRY_MAX".into(), "60ms".into()),
        ("SFCDC_WORKER_IDLE_POLL".into(), "20ms".into()),
        ("SFCDC_HTTP_TIMEOUT".into(), "2s".into()),
        ("SFCDC_JOB_LEASE".into(), "8s".into()),
        ("SFCDC_WEBHOOK_URL".into(), org.emu.webhook_url("orders")),
        ("SFCDC_WEBHOOK_SECRET".into(), "webhook-dev-secret".into()),
        ("SFCDC_GITHUB_REPO".into(), "acme/provisioning".into()),
        ("SFCDC_GITHUB_TOKEN".into(), "github-dev-token".into()),
        ("SFCDC_GITHUB_API_URL".into(), org.emu.github_api_url()),
        ("SFCDC_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("SFCDC_READ_TOKEN".into(), READ_TOKEN.into()),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).into(), (*v).into()));
    }
    env
}

/// The environment of an `sfcdc run` process with the worker, on a SQLite file in `dir`, and
/// that file's URL.
pub(crate) fn binary_worker_env(
    org: &Org,
    dir: &std::path::Path,
    extra: &[(&str, &str)],
) -> (Vec<(String, String)>, String) {
    let url = format!("sqlite://{}", dir.join("sfcdc.db").display());
    let mut env = binary_env(org, dir, &url);
    env.extend(worker_env(org, extra));
    (env, url)
}

async fn start(org: &Org, extra: &[(&str, &str)]) -> Running {
    start_in(org, tempfile::tempdir().unwrap(), extra).await
}

async fn start_in(org: &Org, dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Running {
    let env = worker_env(org, extra);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_app(org, dir, &pairs).await
}

fn store(r: &Running) -> Arc<AnyStore> {
    r.app.sink().store().clone()
}

pub(crate) async fn jobs_of(store: &AnyStore, order: &str) -> Vec<JobRow> {
    let mut jobs = store
        .jobs(&JobFilter {
            order_id: Some(order.into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    jobs.sort_by_key(|j| j.id);
    jobs
}

/// The only job of `order`, once it is in `state`.
pub(crate) async fn job_in(store: &AnyStore, order: &str, state: JobState) -> JobRow {
    eventually(
        &format!("the job of {order} to be {}", state.as_str()),
        || async {
            jobs_of(store, order)
                .await
                .into_iter()
                .find(|j| j.state == state)
        },
    )
    .await
}

async fn order(org: &Org, id: &str) -> Value {
    let (status, body) = org
        .rest(
            reqwest::Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn an_approval_is_fulfilled_asynchronously_written_back_and_notified() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| {
        c.latency_ms = 3_600_000;
        c.progress_steps = 100;
    });
    let d = drafts(&org).await;
    let r = start(&org, &[]).await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;

    // Submitted, and polling with the worker free: the order says Activating meanwhile.
    let polling = job_in(&store, &d[0], JobState::Polling).await;
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        "Activating"
    );
    assert!(polling.lease_owner.is_none());
    let op = polling.operation_id.clone().unwrap();
    // Progress reported by the fulfilment system is stored on the job.
    assert!(org.emu.fulfilment().advance(&op, 40));
    eventually("progress 40 on the job", || async {
        let j = store.job(polling.id).await.unwrap().unwrap();
        (j.progress == Some(40)).then_some(())
    })
    .await;
    assert!(org.emu.fulfilment().complete(&op));
    let done = job_in(&store, &d[0], JobState::Completed).await;

    // Activated and the external id are written back, after Activating.
    let o = order(&org, &d[0]).await;
    assert_eq!(o["Activation_Status__c"], "Activated");
    let external = o["WHMCS_Order_ID__c"].as_str().unwrap().to_owned();
    assert!(external.starts_with("WH-"), "{external}");
    assert_eq!(done.external_id.as_deref(), Some(external.as_str()));
    assert_eq!((done.progress, done.attempt), (Some(100), 1));
    assert!(done.polls >= 2, "polled while pending: {}", done.polls);

    // One submission, under the job's key.
    let ops = org.emu.fulfilment().operations();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].idempotency_key, done.key);
    assert_eq!(ops[0].submissions, 1);

    // The write-backs produced change events, and none made a job.
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    assert_eq!(jobs_of(&store, &d[0]).await.len(), 1);

    // Both notifiers heard about it once, each in its own shape.
    let hooks = eventually("the webhook", || async {
        let h = org.emu.hooks();
        (!h.is_empty()).then_some(h)
    })
    .await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].signature_valid, Some(true));
    assert_eq!(hooks[0].body["event"], "job.completed");
    assert_eq!(hooks[0].body["order_id"], d[0].as_str());
    assert_eq!(hooks[0].body["external_id"], external.as_str());
    let dispatches = eventually("the dispatch", || async {
        let d = org.emu.dispatches();
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dispatches.len(), 1);
    assert_eq!(
        dispatches[0].event_type.as_deref(),
        Some("sfcdc-provisioning")
    );
    assert_eq!(dispatches[0].client_payload["job_id"], done.id);
    assert!(dispatches[0].client_payload.as_object().unwrap().len() <= 10);
    let delivered = eventually("both deliveries recorded", || async {
        let d = store
            .deliveries(&DeliveryFilter {
                job_id: Some(done.id),
                state: Some(DeliveryState::Delivered),
                ..DeliveryFilter::default()
            })
            .await
            .unwrap();
        (d.len() == 2).then_some(d)
    })
    .await;
    assert!(delivered.iter().all(|d| d.attempt == 1));
    assert_eq!(
        r.metric("sfcdc_job_steps_total", &[("outcome", "completed")]),
        1.0
    );
    r.stop().await;
}

#[tokio::test]
async fn a_platform_event_for_a_draft_order_is_fulfilled_and_written_back() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    let channels = format!("{ORDERS},{PE}");
    let r = start(&org, &[("SFCDC_CHANNELS", &channels)]).await;
    let store = store(&r);
    // The event asks for fulfilment whatever the status: the order stays a Draft throughout.
    publish_fulfilment(&org, &d[0]).await;
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.trigger_kind, "platform_event");
    assert_eq!(done.trigger_status, "Draft");
    let o = order(&org, &d[0]).await;
    assert_eq!(o["Status"], "Draft");
    assert_eq!(o["Activation_Status__c"], "Activated");
    assert_eq!(o["WHMCS_Order_ID__c"], done.external_id.as_deref().unwrap());
    let ops = org.emu.fulfilment().operations();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].order_id, d[0]);
    // A second request for the same order is refused by the guards it now fails.
    publish_fulfilment(&org, &d[0]).await;
    caught_up(&org, store.as_ref(), &[ORDERS, PE]).await;
    assert_eq!(jobs_of(&store, &d[0]).await.len(), 1);
    assert_eq!(org.emu.fulfilment().operations().len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn an_approval_withdrawn_before_the_worker_runs_is_cancelled_with_its_reason() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    // Approved, then back to Draft before sfcdc runs: the approval still makes its job (the
    // event says Approved), and the worker's recheck finds the order a Draft again.
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    org.patch_order(&d[0], json!({"Status": "Draft"})).await;
    let r = start(&org, &[]).await;
    let store = store(&r);
    let cancelled = job_in(&store, &d[0], JobState::Cancelled).await;
    assert_eq!(cancelled.trigger_kind, "status_change");
    let reason = cancelled.last_error.unwrap();
    assert!(
        reason.contains("status is now Draft, not a trigger status"),
        "{reason}"
    );
    assert!(org.emu.fulfilment().operations().is_empty());
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        json!(null)
    );
    r.stop().await;
}

#[tokio::test]
async fn synchronous_fulfilment_completes_in_one_step() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.sync_rate = 1.0);
    let d = drafts(&org).await;
    let r = start(&org, &[]).await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.polls, 0, "nothing to poll");
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        "Activated"
    );
    assert_eq!(org.emu.fulfilment().stats().operations_created, 1);
    r.stop().await;
}

#[tokio::test]
async fn an_org_without_the_error_field_still_gets_its_completion() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.sync_rate = 1.0);
    let d = drafts(&org).await;
    let r = start(&org, &[("SFCDC_ERROR_FIELD", "No_Such_Field__c")]).await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.external_id.as_deref(), Some("WH-000001"));
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        "Activated"
    );
    r.stop().await;
}

#[tokio::test]
async fn a_5xx_storm_dead_letters_the_job_and_an_operator_retry_succeeds() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| {
        c.error_rate = 1.0;
        c.sync_rate = 1.0;
    });
    let d = drafts(&org).await;
    let r = start(&org, &[("SFCDC_MAX_ATTEMPTS", "3")]).await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let dead = job_in(&store, &d[0], JobState::Dead).await;
    assert_eq!(dead.attempt, 3);
    assert!(
        dead.last_error.as_deref().unwrap().contains("503"),
        "{dead:?}"
    );
    let history: Vec<Value> = serde_json::from_str(&dead.errors).unwrap();
    assert_eq!(history.len(), 3, "one error per attempt");
    assert_eq!(org.emu.fulfilment().stats().operations_created, 0);
    // The failure is written back, and the dead letter is announced.
    let o = order(&org, &d[0]).await;
    assert_eq!(o["Activation_Status__c"], "Failed");
    assert!(o["Provisioning_Error__c"].as_str().unwrap().contains("503"));
    eventually("the dead-letter webhook", || async {
        org.emu
            .hooks()
            .iter()
            .any(|h| h.body["event"] == "job.dead")
            .then_some(())
    })
    .await;

    // The admin API guards and explains.
    let path = format!("/jobs/{}/retry", dead.id);
    assert_eq!(call(&r, reqwest::Method::POST, &path, None).await.0, 401);
    assert_eq!(
        call(
            &r,
            reqwest::Method::POST,
            &path,
            Some("wrong-token-wrong-token")
        )
        .await
        .0,
        401
    );
    let (status, body) = call(
        &r,
        reqwest::Method::POST,
        "/jobs/abc/retry",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("abc"));
    let (status, _) = call(
        &r,
        reqwest::Method::POST,
        "/jobs/999999/retry",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    // Reads need a token too: the viewer's or the operator's; the viewer may not change.
    let (status, body) = call(&r, reqwest::Method::GET, "/jobs?state=dead", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(
        &r,
        reqwest::Method::GET,
        &format!("/jobs/{}", dead.id),
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = call(&r, reqwest::Method::POST, &path, Some(READ_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("SFCDC_ADMIN_TOKEN"),
        "{body}"
    );
    let (status, body) = call(
        &r,
        reqwest::Method::GET,
        "/jobs?state=deadish",
        Some(READ_TOKEN),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    for token in [READ_TOKEN, ADMIN_TOKEN] {
        let (status, body) = call(&r, reqwest::Method::GET, "/jobs?state=dead", Some(token)).await;
        assert_eq!((status, body.as_array().unwrap().len()), (200, 1));
    }

    // The storm passes; a manual retry succeeds.
    org.emu.fulfilment().update(|c| c.error_rate = 0.0);
    let (status, body) = call(&r, reqwest::Method::POST, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "available");
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.id, dead.id);
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        "Activated"
    );
    let (status, _) = call(&r, reqwest::Method::POST, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 409, "a completed job cannot be retried");
    r.stop().await;
}

#[tokio::test]
async fn operations_that_time_out_are_abandoned_and_resubmitted_under_a_new_key() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.latency_ms = 3_600_000);
    let d = drafts(&org).await;
    let r = start(
        &org,
        &[("SFCDC_MAX_ATTEMPTS", "2"), ("SFCDC_POLL_TIMEOUT", "200ms")],
    )
    .await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let dead = job_in(&store, &d[0], JobState::Dead).await;
    assert!(
        dead.last_error
            .as_deref()
            .unwrap()
            .contains("did not finish"),
        "{dead:?}"
    );
    let keys: Vec<String> = org
        .emu
        .fulfilment()
        .operations()
        .into_iter()
        .map(|o| o.idempotency_key)
        .collect();
    assert_eq!(keys, [dead.key.clone(), format!("{}/1", dead.key)]);

    org.emu.fulfilment().update(|c| c.latency_ms = 0);
    store
        .retry_job(dead.id, sfcdc::clock::now_ms())
        .await
        .unwrap();
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.operation_key(), format!("{}/2", dead.key));
    assert_eq!(org.emu.fulfilment().operations().len(), 3);
    r.stop().await;
}

#[tokio::test]
async fn polls_wait_for_the_services_clock_and_the_timeout_is_judged_by_it() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.latency_ms = 3_600_000);
    let d = drafts(&org).await;
    let clock = sfcdc::clock::Clock::manual(sfcdc::clock::now_ms());
    let env = worker_env(&org, &[("SFCDC_POLL_TIMEOUT", "1h")]);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = run_app_at(&org, tempfile::tempdir().unwrap(), &pairs, clock.clone()).await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    // Submitted; its first poll is due 20 ms later by the service's clock, which stands still.
    let polling = job_in(&store, &d[0], JobState::Polling).await;
    assert_eq!(org.emu.fulfilment().stats().polls, 0);
    // Two hours later by that clock: one poll finds the operation still pending and past the
    // hour it was allowed, so it is abandoned and the job retried.
    clock.advance(Duration::from_secs(2 * 3600));
    let retrying = job_in(&store, &d[0], JobState::Retryable).await;
    assert_eq!(retrying.id, polling.id);
    assert_eq!(
        org.emu.fulfilment().stats().polls,
        1,
        "exactly the one poll the clock allowed"
    );
    // The retry is scheduled by the same clock, a little after the failure: not due yet.
    assert!(retrying.run_at > clock.now_ms(), "{retrying:?}");
    let error = retrying.last_error.unwrap();
    assert!(error.contains("did not finish within 1h"), "{error}");
    assert_eq!(org.emu.fulfilment().operations().len(), 1);
    r.stop().await;
}

#[tokio::test]
async fn jobs_of_one_order_run_in_order_while_many_orders_run_at_once() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| {
        c.latency_ms = 50;
        c.progress_steps = 2;
    });
    let orders = drafts(&org).await;
    let orders = &orders[..orders.len().min(12)];
    let r = start(&org, &[("SFCDC_WORKER_CONCURRENCY", "8")]).await;
    let store = store(&r);
    // Each order is approved, then immediately reactivated: two jobs, the second created while
    // the first is still open.
    for o in orders {
        org.patch_order(o, json!({"Status": "Approved"})).await;
        org.patch_order(o, json!({"Status": "Reactivate"})).await;
    }
    for o in orders {
        let jobs = eventually("both jobs of an order to finish", || async {
            let jobs = jobs_of(&store, o).await;
            (jobs.len() == 2 && jobs.iter().all(|j| !j.state.is_open())).then_some(jobs)
        })
        .await;
        // The first fulfilled the order; the second ran only after it, found it Activated and
        // cancelled itself. Had they overlapped, both would have submitted.
        assert_eq!(jobs[0].state, JobState::Completed, "{jobs:?}");
        assert_eq!(jobs[1].state, JobState::Cancelled, "{jobs:?}");
        assert!(
            jobs[1].last_error.as_deref().unwrap().contains("Activated"),
            "{jobs:?}"
        );
        assert!(jobs[1].updated_at >= jobs[0].finished_at.unwrap());
    }
    let per_order: BTreeMap<String, usize> =
        org.emu
            .fulfilment()
            .operations()
            .into_iter()
            .fold(BTreeMap::new(), |mut m, op| {
                *m.entry(op.order_id).or_insert(0) += 1;
                m
            });
    assert_eq!(per_order.len(), orders.len());
    assert!(per_order.values().all(|n| *n == 1), "{per_order:?}");
    r.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_step_is_replaced_without_a_second_submission() {
    let org = Org::start().await;
    // Submits and polls hang long enough to kill the process inside them.
    org.emu.fulfilment().update(|c| {
        c.latency_ms = 3_600_000;
        c.submit_delay_ms = 60_000;
    });
    let d = drafts(&org).await;
    let dir = tempfile::tempdir().unwrap();
    // Killed well within its HTTP timeout, the worker never records a failure.
    let (env, url) = binary_worker_env(
        &org,
        dir.path(),
        &[("SFCDC_HTTP_TIMEOUT", "1500ms"), ("SFCDC_JOB_LEASE", "6s")],
    );
    let log = dir.path().join("run.log");
    let store = AnyStore::open(&url).await.unwrap();

    let mut first = spawn_run(&env, &log);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    // The fulfilment system has the operation; the worker has not heard back.
    eventually("the submission", || async {
        (org.emu.fulfilment().stats().operations_created == 1).then_some(())
    })
    .await;
    sigkill(&mut first).await;

    // The next process takes over once the lease expires and resubmits under the same key:
    // the fulfilment system answers with the first operation.
    org.emu.fulfilment().update(|c| {
        c.submit_delay_ms = 0;
        c.poll_delay_ms = 60_000;
    });
    let mut second = spawn_run(&env, &log);
    let polling = job_in(&store, &d[0], JobState::Polling).await;
    let ops = org.emu.fulfilment().operations();
    assert_eq!(ops.len(), 1, "one operation");
    assert_eq!(ops[0].submissions, 2, "the same key, submitted twice");
    assert_eq!(
        polling.operation_id.as_deref(),
        Some(ops[0].operation_id.as_str())
    );
    // Now it dies in the middle of a poll.
    let before = org.emu.fulfilment().stats().polls;
    eventually("a poll in flight", || async {
        (org.emu.fulfilment().stats().polls > before).then_some(())
    })
    .await;
    sigkill(&mut second).await;

    org.emu.fulfilment().update(|c| c.poll_delay_ms = 0);
    assert!(org.emu.fulfilment().complete(&ops[0].operation_id));
    let third = spawn_run(&env, &log);
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.attempt, 1, "a resumed step is not a new attempt");
    let ops = org.emu.fulfilment().operations();
    assert_eq!(
        (ops.len(), ops[0].submissions),
        (1, 2),
        "no further submission"
    );
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        "Activated"
    );
    signal(third.pid(), "TERM");
    let mut third = third;
    assert_eq!(third.0.wait().await.unwrap().code(), Some(0));
}

async fn sigkill(p: &mut Proc) {
    p.0.start_kill().unwrap();
    assert!(
        p.0.wait().await.unwrap().code().is_none(),
        "killed by a signal"
    );
}

#[tokio::test]
async fn a_failing_notifier_is_retried_on_its_own() {
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.sync_rate = 1.0);
    org.emu.fail_hook("orders", 503, Some(2));
    let d = drafts(&org).await;
    let r = start(&org, &[]).await;
    let store = store(&r);
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    let done = job_in(&store, &d[0], JobState::Completed).await;
    let deliveries = eventually("both deliveries", || async {
        let d = store
            .deliveries(&DeliveryFilter {
                job_id: Some(done.id),
                ..DeliveryFilter::default()
            })
            .await
            .unwrap();
        d.iter()
            .all(|d| d.state == DeliveryState::Delivered)
            .then_some(d)
    })
    .await;
    let by_notifier: BTreeMap<&str, i32> = deliveries
        .iter()
        .map(|d| (d.notifier.as_str(), d.attempt))
        .collect();
    assert_eq!(by_notifier, BTreeMap::from([("github", 1), ("webhook", 3)]));
    assert_eq!(org.emu.dispatches().len(), 1, "GitHub heard once");
    let answered: Vec<u16> = org.emu.hooks().iter().map(|h| h.answered).collect();
    assert_eq!(answered, [503, 503, 204]);
    let job = store.job(done.id).await.unwrap().unwrap();
    assert_eq!(job, done, "the job is untouched by its deliveries");

    // A receiver that refuses for good dead-letters its delivery only; an operator re-drives it.
    org.emu.fail_hook("orders", 410, None);
    org.patch_order(&d[1], json!({"Status": "Approved"})).await;
    let second = job_in(&store, &d[1], JobState::Completed).await;
    let dead = eventually("the dead webhook delivery", || async {
        store
            .deliveries(&DeliveryFilter {
                job_id: Some(second.id),
                state: Some(DeliveryState::Dead),
                ..DeliveryFilter::default()
            })
            .await
            .unwrap()
            .pop()
    })
    .await;
    assert_eq!((dead.notifier.as_str(), dead.attempt), ("webhook", 1));
    org.emu.clear_hook_failure("orders");
    let path = format!("/deliveries/{}/retry", dead.id);
    let (status, body) = call(&r, reqwest::Method::POST, &path, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    eventually("the re-driven delivery", || async {
        let d = store.delivery(dead.id).await.unwrap().unwrap();
        (d.state == DeliveryState::Delivered).then_some(())
    })
    .await;
    r.stop().await;
}

/// The fulfilment client against the emulator: batch status while it is offered, one by one
/// after the system answers that it has none.
#[tokio::test]
async fn pending_operations_are_polled_in_batches_when_the_system_offers_it() {
    use sfcdc::worker::fulfilment::{Fulfilment, HttpFulfilment, OpStatus, Submitted};
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.latency_ms = 3_600_000);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, org.emu.ca_pem().unwrap()).unwrap();
    let http = sfcdc::salesforce::http::http_client(Some(&ca)).unwrap();
    let client = HttpFulfilment::new(
        http,
        &org.emu.fulfilment_url(),
        Some("fulfilment-dev-token".to_owned().into()),
        Duration::from_secs(5),
    );
    let d = drafts(&org).await;
    let mut ids = Vec::new();
    for (n, order) in d.iter().take(3).enumerate() {
        let body = json!({"Id": order, "OrderNumber": format!("0000{n}")});
        let Submitted::Accepted(op) = client.submit(&format!("key-{n}"), &body).await.unwrap()
        else {
            panic!("asynchronous")
        };
        ids.push(op.operation_id);
    }
    assert!(org.emu.fulfilment().complete(&ids[1]));
    let mut asked: Vec<&str> = ids.iter().map(String::as_str).collect();
    asked.push("op_unknown");
    let ops = client
        .poll_many(&asked)
        .await
        .unwrap()
        .expect("batch status");
    let states: Vec<(String, OpStatus)> = ops
        .into_iter()
        .map(|o| (o.operation_id, o.status))
        .collect();
    assert_eq!(
        states,
        [
            (ids[0].clone(), OpStatus::Pending),
            (ids[1].clone(), OpStatus::Completed),
            (ids[2].clone(), OpStatus::Pending),
        ]
    );
    let stats = org.emu.fulfilment().stats();
    assert_eq!((stats.batch_polls, stats.batch_polled_operations), (1, 3));

    org.emu.fulfilment().update(|c| c.batch = false);
    assert!(client.poll_many(&asked).await.unwrap().is_none());
    assert!(!client.batch_supported(), "remembered: no batch status");
    let one = client.poll(&ids[1]).await.unwrap().unwrap();
    assert_eq!(one.status, OpStatus::Completed);
    assert_eq!(client.poll("op_unknown").await.unwrap(), None);
    // A repeated key is the same operation.
    let again = client.submit("key-0", &json!({"Id": d[0]})).await.unwrap();
    assert!(matches!(again, Submitted::Accepted(op) if op.operation_id == ids[0]));
}

/// Salesforce through which the first write of `Activated` is applied, and then nothing more
/// happens: the worker is as good as dead between its write-back and the record of it.
struct DyingOrders {
    rest: Arc<sfcdc::salesforce::SalesforceRest>,
    dies: bool,
    died: std::sync::atomic::AtomicBool,
}

impl sfcdc::worker::Orders for DyingOrders {
    async fn read(
        &self,
        id: &sfcdc::sfid::SfId,
    ) -> Result<Option<Value>, sfcdc::salesforce::RestError> {
        sfcdc::worker::Orders::read(&self.rest, id).await
    }

    async fn update(
        &self,
        id: &sfcdc::sfid::SfId,
        fields: &Value,
    ) -> Result<(), sfcdc::salesforce::RestError> {
        sfcdc::worker::Orders::update(&self.rest, id, fields).await?;
        if self.dies && fields["Activation_Status__c"] == "Activated" {
            self.died.store(true, std::sync::atomic::Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_worker_that_dies_after_writing_back_a_synchronous_completion_is_completed_not_cancelled()
{
    let org = Org::start().await;
    org.emu.fulfilment().update(|c| c.sync_rate = 1.0);
    // The service ingests (no fulfilment URL: it runs no worker); the workers run here.
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_CHANNELS", ORDERS)],
    )
    .await;
    let store = store(&r);
    let env = worker_env(
        &org,
        &[("SFCDC_HTTP_TIMEOUT", "500ms"), ("SFCDC_JOB_LEASE", "2s")],
    );
    let env = sfcdc::config::Env::from_pairs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let config = sfcdc::worker::WorkerConfig::from_env(&env)
        .unwrap()
        .unwrap();
    let http = sfcdc::salesforce::http::http_client(Some(&r.dir.path().join("ca.pem"))).unwrap();
    let worker = |orders: Arc<DyingOrders>| {
        let fulfilment = sfcdc::worker::fulfilment::HttpFulfilment::new(
            http.clone(),
            &config.fulfilment_url,
            config.fulfilment_token.clone(),
            config.http_timeout,
        );
        let worker = sfcdc::worker::Worker::new(
            store.clone(),
            fulfilment,
            orders,
            config.clone(),
            Arc::new(sfcdc::rules::RulesConfig::defaults()),
            r.app.metrics().clone(),
        );
        let cancel = tokio_util::sync::CancellationToken::new();
        (
            tokio::spawn(worker.run(http.clone(), cancel.clone())),
            cancel,
        )
    };
    let orders = |dies| {
        Arc::new(DyingOrders {
            rest: r.app.rest().clone(),
            dies,
            died: false.into(),
        })
    };
    let dying = orders(true);
    let (first, stop_first) = worker(dying.clone());

    let d = drafts(&org).await;
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    eventually("the write-back", async || {
        dying
            .died
            .load(std::sync::atomic::Ordering::SeqCst)
            .then_some(())
    })
    .await;
    stop_first.cancel();
    first.abort();
    assert_eq!(
        order(&org, &d[0]).await["Activation_Status__c"],
        "Activated"
    );

    // The next worker takes the job when the lease expires. It finds the operation recorded
    // and polls it, rather than finding `Activated` and cancelling the job as someone else's.
    let (second, stop_second) = worker(orders(false));
    let done = job_in(&store, &d[0], JobState::Completed).await;
    assert_eq!(done.external_id.as_deref(), Some("WH-000001"));
    assert_eq!(org.emu.fulfilment().operations().len(), 1);
    stop_second.cancel();
    second.await.unwrap();
    r.stop().await;
}
