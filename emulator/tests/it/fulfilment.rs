//! The world downstream of Salesforce, over real HTTPS on loopback: the fulfilment API
//! (submit, idempotent replays, polling, batch status, faults, control API), the webhook sink,
//! the GitHub `repository_dispatch` stand-in, and the Order fields the worker writes back.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sfcdc_emulator::fulfilment::{FulfilmentConfig, OperationStatus};
use sfcdc_emulator::proto::ReplayPreset;
use sfcdc_emulator::sinks::sign;

use crate::common::*;

const TOKEN: &str = "fulfilment-dev-token";
const SECRET: &str = "webhook-dev-secret";
const GITHUB: &str = "github-dev-token";

async fn start(configure: impl FnOnce(&mut FulfilmentConfig)) -> Org {
    let mut config = test_config();
    configure(&mut config.fulfilment);
    Org::start_with(config).await
}

/// An Order as the worker reads it over REST.
async fn some_order(org: &Org) -> Value {
    let r = org
        .query("SELECT Id, OrderNumber, Status FROM Order LIMIT 1")
        .await;
    r["records"][0].clone()
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("HTTP call");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// `POST /fulfilment/orders` with the dev token.
async fn submit(org: &Org, key: &str, order: &Value) -> Answer {
    send(
        org.http
            .post(format!("{}/orders", org.emu.fulfilment_url()))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", key)
            .json(order),
    )
    .await
}

async fn fget(org: &Org, url: &str) -> Answer {
    send(org.http.get(url).bearer_auth(TOKEN)).await
}

async fn poll(org: &Org, id: &str) -> Answer {
    fget(
        org,
        &format!("{}/operations/{id}", org.emu.fulfilment_url()),
    )
    .await
}

/// Polls until the operation is no longer pending; returns every representation seen.
async fn poll_until_done(org: &Org, url: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let a = fget(org, url).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let done = a.body["status"] != "pending";
        seen.push(a.body);
        if done {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation still pending: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert_eq!(a.body["error"]["code"], code, "{}", a.body);
    assert!(a.body["error"]["message"].is_string(), "{}", a.body);
}

#[tokio::test]
async fn emulator_fulfil_async_submit_progresses_to_completion() {
    let org = start(|c| c.latency_ms = 800).await;
    let order = some_order(&org).await;
    let id = order["Id"].as_str().unwrap();

    let a = submit(&org, "approval-1", &order).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let op = a.body["operation_id"].as_str().unwrap().to_owned();
    assert!(op.starts_with("op_") && op.len() == 27, "{op}");
    assert_eq!(a.body["status"], "pending");
    assert_eq!(a.body["progress"], 0);
    assert_eq!(a.body["result"], Value::Null);
    assert_eq!(a.body["error"], Value::Null);
    let url = format!("{}/fulfilment/operations/{op}", org.emu.instance_url());
    assert_eq!(a.body["status_url"], url);
    assert_eq!(a.headers["location"].to_str().unwrap(), url);

    let seen = poll_until_done(&org, &url).await;
    let progress: Vec<u64> = seen
        .iter()
        .map(|v| v["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    for v in &seen[..seen.len() - 1] {
        assert_eq!(v["status"], "pending");
        let p = v["progress"].as_u64().unwrap();
        assert!(p < 100 && p % 25 == 0, "{p}");
        assert_eq!(v["result"], Value::Null);
    }
    let done = seen.last().unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert_eq!(done["error"], Value::Null);
    assert_eq!(done["operation_id"], op.as_str());
    let result = &done["result"];
    assert_eq!(result["external_id"], "WH-000001");
    assert_eq!(result["order_id"], id);
    assert_eq!(result["order_number"], order["OrderNumber"]);
    let at = result["provisioned_at"].as_str().unwrap();
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .expect("provisioned_at is RFC 3339");
    assert!(at.ends_with('Z'), "{at}");

    // The in-process handle and the control API tell the same story.
    let stats = org.emu.fulfilment().stats();
    assert_eq!(stats.submit_requests, 1);
    assert_eq!(stats.operations_created, 1);
    assert_eq!(stats.polls, seen.len() as u64);
    assert_eq!((stats.completed, stats.failed), (1, 0));
    let ops = org.emu.fulfilment().operations();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].operation_id, op);
    assert_eq!(ops[0].idempotency_key, "approval-1");
    assert_eq!(ops[0].order_id, id);
    assert_eq!(ops[0].status, OperationStatus::Completed);
    assert_eq!(ops[0].submissions, 1);
    assert_eq!(ops[0].external_id.as_deref(), Some("WH-000001"));
    let listed = send(org.http.get(org.url("/emulator/fulfilment/operations"))).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body[0]["operation_id"], op.as_str());
    assert_eq!(listed.body[0]["status"], "completed");
    assert_eq!(listed.body[0]["progress"], 100);
    assert!(listed.body[0]["created_at"].is_string());

    // A second order gets the next external id.
    let second = submit(&org, "approval-2", &json!({"Id": "801Hs00000000XYZ"})).await;
    assert_eq!(second.status, 202);
    let done = poll_until_done(&org, second.body["status_url"].as_str().unwrap()).await;
    let last = done.last().unwrap();
    assert_eq!(last["result"]["external_id"], "WH-000002");
    assert_eq!(last["result"]["order_number"], Value::Null);
}

#[tokio::test]
async fn emulator_fulfil_repeated_key_returns_the_first_operation() {
    // Zero latency: the creating answer says pending, every later look sees it done.
    let org = start(|c| c.latency_ms = 0).await;
    let order = some_order(&org).await;
    let first = submit(&org, "k-1", &order).await;
    assert_eq!(first.status, 202);
    assert_eq!(first.body["status"], "pending");
    let op = first.body["operation_id"].clone();

    // The body of a repeat is ignored, even an invalid one.
    let again = submit(&org, "k-1", &json!({"Id": "801Hs0000000OTHER"})).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["operation_id"], op);
    assert_eq!(again.body["status"], "completed");
    assert_eq!(again.body["result"]["order_id"], order["Id"]);
    let junk = send(
        org.http
            .post(format!("{}/orders", org.emu.fulfilment_url()))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "k-1")
            .body("not json"),
    )
    .await;
    assert_eq!(junk.status, 200);
    assert_eq!(junk.body["operation_id"], op);

    let stats = org.emu.fulfilment().stats();
    assert_eq!(stats.operations_created, 1);
    assert_eq!(stats.idempotent_replays, 2);
    assert_eq!(stats.submit_requests, 3);
    assert_eq!(org.emu.fulfilment().operations()[0].submissions, 3);

    // A replay while the operation is still pending answers 202 and points at it again.
    org.emu.fulfilment().update(|c| c.latency_ms = 600_000);
    let slow = submit(&org, "k-2", &order).await;
    assert_eq!(slow.status, 202);
    let replay = submit(&org, "k-2", &order).await;
    assert_eq!(replay.status, 202, "{}", replay.body);
    assert_eq!(replay.body["operation_id"], slow.body["operation_id"]);
    assert_eq!(replay.body["status"], "pending");
    assert_eq!(replay.headers["location"], slow.headers["location"]);
    assert_eq!(org.emu.fulfilment().stats().operations_created, 2);

    // Concurrent first submissions of one key still create one operation.
    let key = "k-race";
    let calls: Vec<_> = (0..8).map(|_| submit(&org, key, &order)).collect();
    let answers = futures_util::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| a.body["operation_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(org.emu.fulfilment().stats().operations_created, 3);
}

#[tokio::test]
async fn emulator_fulfil_sync_operations_answer_201_finished() {
    let org = start(|c| c.sync_rate = 1.0).await;
    let order = some_order(&org).await;
    let a = submit(&org, "sync-1", &order).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["status"], "completed");
    assert_eq!(a.body["progress"], 100);
    assert_eq!(a.body["result"]["external_id"], "WH-000001");
    assert_eq!(a.body["result"]["order_id"], order["Id"]);
    assert_eq!(
        a.headers["location"].to_str().unwrap(),
        a.body["status_url"]
    );
    let again = submit(&org, "sync-1", &order).await;
    assert_eq!(again.status, 200);
    assert!(!again.headers.contains_key("location"));
    assert_eq!(again.body["operation_id"], a.body["operation_id"]);
}

#[tokio::test]
async fn emulator_fulfil_failure_rate_one_fails_with_an_error() {
    let org = start(|c| {
        c.failure_rate = 1.0;
        c.latency_ms = 0;
    })
    .await;
    let order = some_order(&org).await;
    let id = order["Id"].as_str().unwrap();
    let a = submit(&org, "f-1", &order).await;
    assert_eq!(a.status, 202);
    let done = poll(&org, a.body["operation_id"].as_str().unwrap()).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["status"], "failed", "{}", done.body);
    assert_eq!(done.body["progress"], 100);
    assert_eq!(done.body["result"], Value::Null);
    assert_eq!(done.body["error"]["code"], "rejected");
    let message = done.body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("fulfilment rejected order {id}: ")),
        "{message}"
    );
    let stats = org.emu.fulfilment().stats();
    assert_eq!((stats.completed, stats.failed), (0, 1));
    assert_eq!(org.emu.fulfilment().operations()[0].external_id, None);
}

#[tokio::test]
async fn emulator_fulfil_injected_errors_have_no_side_effects() {
    let org = start(|c| c.error_rate = 1.0).await;
    let order = some_order(&org).await;
    for _ in 0..3 {
        let a = submit(&org, "e-1", &order).await;
        assert_error(&a, 503, "unavailable");
    }
    // Before authentication, too.
    let anon = send(
        org.http
            .get(format!("{}/operations/op_x", org.emu.fulfilment_url())),
    )
    .await;
    assert_eq!(anon.status, 503);
    let stats = org.emu.fulfilment().stats();
    assert_eq!(stats.errors_injected, 4);
    assert_eq!(stats.operations_created, 0);
    assert_eq!(stats.submit_requests, 0);
    assert_eq!(stats.unauthorized, 0);
    assert!(org.emu.fulfilment().operations().is_empty());

    // Once the errors stop, the same key creates its operation for the first time.
    org.emu.fulfilment().update(|c| c.error_rate = 0.0);
    let a = submit(&org, "e-1", &order).await;
    assert_eq!(a.status, 202);
    assert_eq!(org.emu.fulfilment().stats().idempotent_replays, 0);
}

#[tokio::test]
async fn emulator_fulfil_batch_status_in_the_order_asked() {
    let org = start(|c| c.latency_ms = 0).await;
    let mut ops = Vec::new();
    for i in 0..3 {
        let a = submit(
            &org,
            &format!("b-{i}"),
            &json!({"Id": format!("801Hs0000000B0{i}")}),
        )
        .await;
        assert_eq!(a.status, 202);
        ops.push(a.body["operation_id"].as_str().unwrap().to_owned());
    }
    let base = org.emu.fulfilment_url();
    let ids = format!("{},op_unknown,{},{}", ops[0], ops[2], ops[1]);
    let a = fget(&org, &format!("{base}/operations?ids={ids}")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let got: Vec<&str> = a.body["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [&ops[0], &ops[2], &ops[1]]);
    assert!(
        a.body["operations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["status"] == "completed" && o["result"]["external_id"].is_string())
    );

    let many: Vec<String> = (0..101).map(|i| format!("op_{i:024}")).collect();
    let a = fget(&org, &format!("{base}/operations?ids={}", many.join(","))).await;
    assert_error(&a, 400, "invalid_request");
    let a = fget(
        &org,
        &format!("{base}/operations?ids={}", many[..100].join(",")),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["operations"], json!([]));
    assert_error(
        &fget(&org, &format!("{base}/operations?ids=")).await,
        400,
        "invalid_request",
    );
    assert_error(
        &fget(&org, &format!("{base}/operations")).await,
        400,
        "invalid_request",
    );

    let stats = org.emu.fulfilment().stats();
    assert_eq!(stats.batch_polls, 2);
    assert_eq!(stats.batch_polled_operations, 3);
    assert_eq!(stats.polls, 0);
}

#[tokio::test]
async fn emulator_fulfil_batch_disabled_answers_404() {
    let org = start(|c| c.batch = false).await;
    let a = submit(&org, "nb-1", &json!({"Id": "801Hs0000000NB1"})).await;
    let op = a.body["operation_id"].as_str().unwrap();
    let b = fget(
        &org,
        &format!("{}/operations?ids={op}", org.emu.fulfilment_url()),
    )
    .await;
    assert_error(&b, 404, "not_found");
    assert_eq!(b.body["error"]["message"], "batch status is not supported");
    assert_eq!(poll(&org, op).await.status, 200);
    assert_eq!(org.emu.fulfilment().stats().batch_polls, 0);

    // Turned back on at run time.
    org.emu.fulfilment().update(|c| c.batch = true);
    let b = fget(
        &org,
        &format!("{}/operations?ids={op}", org.emu.fulfilment_url()),
    )
    .await;
    assert_eq!(b.status, 200);
}

#[tokio::test]
async fn emulator_fulfil_rejects_bad_requests_without_creating_anything() {
    let org = Org::start().await;
    let orders = format!("{}/orders", org.emu.fulfilment_url());
    let order = json!({"Id": "801Hs0000000BAD"});

    // No token, a wrong token, a wrong scheme.
    let a = send(
        org.http
            .post(&orders)
            .header("Idempotency-Key", "x")
            .json(&order),
    )
    .await;
    assert_error(&a, 401, "unauthorized");
    assert!(
        a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let a = send(
        org.http
            .post(&orders)
            .bearer_auth("nope")
            .header("Idempotency-Key", "x")
            .json(&order),
    )
    .await;
    assert_error(&a, 401, "unauthorized");
    let a = send(
        org.http
            .post(&orders)
            .basic_auth("u", Some(TOKEN))
            .header("Idempotency-Key", "x")
            .json(&order),
    )
    .await;
    assert_error(&a, 401, "unauthorized");
    let a = send(
        org.http
            .get(format!("{}/operations/op_x", org.emu.fulfilment_url())),
    )
    .await;
    assert_error(&a, 401, "unauthorized");

    // No key, an empty key, a key too long.
    let a = send(org.http.post(&orders).bearer_auth(TOKEN).json(&order)).await;
    assert_error(&a, 400, "invalid_request");
    let a = submit(&org, "", &order).await;
    assert_error(&a, 400, "invalid_request");
    let a = submit(&org, &"k".repeat(256), &order).await;
    assert_error(&a, 400, "invalid_request");

    // Bodies without a string Id.
    for body in [
        json!({}),
        json!({"Id": 7}),
        json!({"Id": ""}),
        json!(["801"]),
    ] {
        let a = submit(&org, "body", &body).await;
        assert_error(&a, 400, "invalid_request");
    }
    let a = send(
        org.http
            .post(&orders)
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "body")
            .body("{"),
    )
    .await;
    assert_error(&a, 400, "invalid_request");

    // Unknown operations and routes.
    assert_error(
        &poll(&org, "op_000000000000000000000000").await,
        404,
        "not_found",
    );
    assert_error(
        &fget(&org, &format!("{}/nowhere", org.emu.fulfilment_url())).await,
        404,
        "not_found",
    );

    let stats = org.emu.fulfilment().stats();
    assert_eq!(stats.unauthorized, 4);
    assert_eq!(stats.operations_created, 0);
    assert_eq!(stats.submit_requests, 8);
    assert!(org.emu.fulfilment().operations().is_empty());

    // A key of exactly 255 characters is fine, and so is a body with a key that failed before.
    assert_eq!(submit(&org, &"k".repeat(255), &order).await.status, 202);
    assert_eq!(submit(&org, "body", &order).await.status, 202);

    // Without a configured token, no Authorization header is needed.
    org.emu.fulfilment().update(|c| c.token = None);
    let a = send(
        org.http
            .post(&orders)
            .header("Idempotency-Key", "anon")
            .json(&order),
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.body);
}

#[tokio::test]
async fn emulator_fulfil_control_api_merges_and_validates() {
    let org = Org::start().await;
    let control = org.url("/emulator/fulfilment");
    let a = send(org.http.get(&control)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["config"]["latency_ms"], 200);
    assert_eq!(a.body["config"]["progress_steps"], 4);
    assert_eq!(a.body["config"]["batch"], true);
    assert_eq!(a.body["config"]["token"], TOKEN);
    assert_eq!(a.body["stats"]["operations_created"], 0);
    assert_eq!(a.body["stats"]["unauthorized"], 0);

    for bad in [
        json!({"failure_rate": 1.5}),
        json!({"error_rate": -0.1}),
        json!({"sync_rate": 2}),
        json!({"progress_steps": 0}),
        json!({"latency_ms": -1}),
        json!({"no_such_field": true}),
        json!("latency"),
    ] {
        let a = send(org.http.put(&control).json(&bad)).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.body);
        assert!(a.body["error"]["message"].is_string());
    }
    assert_eq!(org.emu.fulfilment().config().latency_ms, 200);

    let a = send(
        org.http
            .put(&control)
            .json(&json!({"failure_rate": 0.25, "batch": false})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["failure_rate"], 0.25);
    assert_eq!(a.body["batch"], false);
    assert_eq!(a.body["latency_ms"], 200);
    assert_eq!(a.body["token"], TOKEN);
    let config = org.emu.fulfilment().config();
    assert_eq!(config.failure_rate, 0.25);
    assert!(!config.batch);
    assert_eq!(config.progress_steps, 4);

    // In-process changes show through the control API.
    org.emu.fulfilment().set_config(FulfilmentConfig {
        latency_ms: 0,
        ..FulfilmentConfig::default()
    });
    let a = send(org.http.get(&control)).await;
    assert_eq!(a.body["config"]["latency_ms"], 0);
    assert_eq!(a.body["config"]["failure_rate"], 0.0);
}

fn signed(req: reqwest::RequestBuilder, secret: &str, body: &str) -> reqwest::RequestBuilder {
    let ts = "1700000000";
    req.header("content-type", "application/json")
        .header("user-agent", "sfcdc-test")
        .header("x-sfcdc-timestamp", ts)
        .header("x-sfcdc-signature", sign(secret, ts, body.as_bytes()))
        .body(body.to_owned())
}

#[tokio::test]
async fn emulator_fulfil_webhook_verifies_signatures() {
    let org = Org::start().await;
    let url = org.emu.webhook_url("orders");
    assert_eq!(url, format!("{}/hooks/orders", org.emu.instance_url()));
    let body = r#"{"event":"order.provisioned","order_id":"801"}"#;

    assert_eq!(
        send(signed(org.http.post(&url), SECRET, body)).await.status,
        204
    );
    let bad = send(signed(org.http.post(&url), "wrong", body)).await;
    assert_eq!(bad.status, 401);
    let missing = send(org.http.post(&url).body("plain text")).await;
    assert_eq!(missing.status, 401);
    // A good signature over a different body is a bad one.
    let ts = "1700000000";
    let tampered = send(
        org.http
            .post(&url)
            .header("x-sfcdc-timestamp", ts)
            .header("x-sfcdc-signature", sign(SECRET, ts, b"{}"))
            .body(body),
    )
    .await;
    assert_eq!(tampered.status, 401);
    send(signed(
        org.http.post(org.emu.webhook_url("other")),
        SECRET,
        "{}",
    ))
    .await;

    let records = org.emu.hooks();
    assert_eq!(records.len(), 5);
    let ok = &records[0];
    assert_eq!(ok.name, "orders");
    assert_eq!(ok.signature_valid, Some(true));
    assert_eq!(ok.answered, 204);
    assert_eq!(
        ok.body,
        json!({"event": "order.provisioned", "order_id": "801"})
    );
    assert_eq!(ok.headers["content-type"], "application/json");
    assert_eq!(ok.headers["user-agent"], "sfcdc-test");
    assert_eq!(ok.headers["x-sfcdc-timestamp"], ts);
    assert!(ok.headers["x-sfcdc-signature"].starts_with("sha256="));
    assert!(ok.received_at > 1_700_000_000_000);
    assert_eq!(
        records[1..4]
            .iter()
            .map(|r| (r.signature_valid, r.answered))
            .collect::<Vec<_>>(),
        [(Some(false), 401); 3]
    );
    assert_eq!(records[2].body, json!("plain text"));
    assert!(!records[2].headers.contains_key("x-sfcdc-signature"));

    let listed = send(org.http.get(org.url("/emulator/hooks?name=orders"))).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body.as_array().unwrap().len(), 4);
    assert_eq!(listed.body[0]["signature_valid"], true);
    assert_eq!(listed.body[0]["answered"], 204);
    let all = send(org.http.get(org.url("/emulator/hooks"))).await;
    assert_eq!(all.body.as_array().unwrap().len(), 5);
    assert_eq!(all.body[4]["name"], "other");

    // Without a secret, anything is accepted and nothing is judged.
    let open = Org::start_with(sfcdc_emulator::EmulatorConfig {
        webhook_secret: None,
        ..test_config()
    })
    .await;
    let a = send(open.http.post(open.emu.webhook_url("orders")).body("x")).await;
    assert_eq!(a.status, 204);
    assert_eq!(open.emu.hooks()[0].signature_valid, None);
}

#[tokio::test]
async fn emulator_fulfil_webhook_failures_count_down() {
    let org = Org::start().await;
    let url = org.emu.webhook_url("orders");
    let hit = |name: &'static str| {
        let url = org.emu.webhook_url(name);
        let req = signed(org.http.post(url), SECRET, "{}");
        async move { send(req).await.status }
    };

    let armed = send(
        org.http
            .put(org.url("/emulator/hooks/orders/fail"))
            .json(&json!({"status": 503, "count": 2})),
    )
    .await;
    assert_eq!(armed.status, 200, "{}", armed.body);
    assert_eq!(hit("other").await, 204, "other hooks are unaffected");
    assert_eq!(hit("orders").await, 503);
    assert_eq!(hit("orders").await, 503);
    assert_eq!(hit("orders").await, 204);

    // Without a count: until cleared.
    let armed = send(
        org.http
            .put(org.url("/emulator/hooks/orders/fail"))
            .json(&json!({"status": 500, "count": null})),
    )
    .await;
    assert_eq!(armed.status, 200);
    for _ in 0..3 {
        assert_eq!(hit("orders").await, 500);
    }
    let cleared = send(org.http.delete(org.url("/emulator/hooks/orders/fail"))).await;
    assert_eq!(cleared.status, 204);
    assert_eq!(hit("orders").await, 204);

    // The in-process handle does the same; an injected failure wins over a bad signature.
    org.emu.fail_hook("orders", 429, Some(1));
    let unsigned = send(org.http.post(&url).body("{}")).await;
    assert_eq!(unsigned.status, 429);
    assert_eq!(send(org.http.post(&url).body("{}")).await.status, 401);
    org.emu.fail_hook("orders", 502, None);
    assert_eq!(hit("orders").await, 502);
    org.emu.clear_hook_failure("orders");
    assert_eq!(hit("orders").await, 204);

    for bad in [
        json!({"status": 100}),
        json!({"status": 503, "count": -1}),
        json!({"x": 1}),
    ] {
        let a = send(
            org.http
                .put(org.url("/emulator/hooks/orders/fail"))
                .json(&bad),
        )
        .await;
        assert_eq!(a.status, 400, "{bad}");
    }

    let answered: Vec<u16> = org
        .emu
        .hooks()
        .iter()
        .filter(|r| r.name == "orders")
        .map(|r| r.answered)
        .collect();
    assert_eq!(
        answered,
        [503, 503, 204, 500, 500, 500, 204, 429, 401, 502, 204]
    );
    assert!(
        org.emu
            .hooks()
            .iter()
            .filter(|r| r.answered == 503)
            .all(|r| r.signature_valid == Some(true))
    );
}

async fn dispatch(org: &Org, auth: Option<&str>, body: &Value) -> Answer {
    let mut req = org.http.post(format!(
        "{}/repos/acme/provisioning/dispatches",
        org.emu.github_api_url()
    ));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    send(
        req.header("accept", "application/vnd.github+json")
            .json(body),
    )
    .await
}

#[tokio::test]
async fn emulator_fulfil_github_dispatch_behaves_like_github() {
    let org = Org::start().await;
    let good = json!({"event_type": "order-provisioned", "client_payload": {"order_id": "801", "external_id": "WH-000001"}});
    let a = dispatch(&org, Some(&format!("Bearer {GITHUB}")), &good).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(a.body, json!(""));
    let a = dispatch(
        &org,
        Some(&format!("token {GITHUB}")),
        &json!({"event_type": "x"}),
    )
    .await;
    assert_eq!(a.status, 204);

    for auth in [None, Some("Bearer wrong"), Some(GITHUB)] {
        let a = dispatch(&org, auth, &good).await;
        assert_eq!(a.status, 401, "{auth:?}");
        assert_eq!(a.body["message"], "Bad credentials");
        assert_eq!(a.body["documentation_url"], "https://docs.github.com/rest");
    }

    let bearer = format!("Bearer {GITHUB}");
    let eleven: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("k{i}"), json!(i))).collect();
    let a = dispatch(
        &org,
        Some(&bearer),
        &json!({"event_type": "x", "client_payload": eleven}),
    )
    .await;
    assert_eq!(a.status, 422);
    assert_eq!(
        a.body["message"],
        "No more than 10 properties are allowed; 11 were supplied."
    );
    assert!(a.body["documentation_url"].is_string());
    let ten: serde_json::Map<String, Value> =
        (0..10).map(|i| (format!("k{i}"), json!(i))).collect();
    let a = dispatch(
        &org,
        Some(&bearer),
        &json!({"event_type": "x", "client_payload": ten}),
    )
    .await;
    assert_eq!(a.status, 204);
    for bad in [
        json!({"client_payload": {}}),
        json!({"event_type": ""}),
        json!({"event_type": "e".repeat(101)}),
        json!({"event_type": 1}),
        json!({"event_type": "x", "client_payload": "text"}),
    ] {
        let a = dispatch(&org, Some(&bearer), &bad).await;
        assert_eq!(a.status, 422, "{bad}: {}", a.body);
    }
    let a = dispatch(&org, Some(&bearer), &json!({})).await;
    assert_eq!(a.body["message"], "event_type is missing");
    let a = send(
        org.http
            .post(format!(
                "{}/repos/acme/provisioning/dispatches",
                org.emu.github_api_url()
            ))
            .header("authorization", &bearer)
            .body("{not json"),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["message"], "Problems parsing JSON");

    // Fault injection, over HTTP and in process.
    let armed = send(
        org.http
            .put(org.url("/emulator/dispatches/fail"))
            .json(&json!({"status": 502, "count": 1})),
    )
    .await;
    assert_eq!(armed.status, 200);
    assert_eq!(dispatch(&org, Some(&bearer), &good).await.status, 502);
    assert_eq!(dispatch(&org, Some(&bearer), &good).await.status, 204);
    org.emu.fail_dispatches(503, None);
    assert_eq!(dispatch(&org, Some(&bearer), &good).await.status, 503);
    assert_eq!(dispatch(&org, None, &good).await.status, 503);
    let cleared = send(org.http.delete(org.url("/emulator/dispatches/fail"))).await;
    assert_eq!(cleared.status, 204);
    assert_eq!(dispatch(&org, Some(&bearer), &good).await.status, 204);
    org.emu.fail_dispatches(500, Some(1));
    org.emu.clear_dispatch_failure();
    assert_eq!(dispatch(&org, Some(&bearer), &good).await.status, 204);

    let records = org.emu.dispatches();
    let answered: Vec<u16> = records.iter().map(|r| r.answered).collect();
    assert_eq!(
        answered,
        [
            204, 204, 401, 401, 401, 422, 204, 422, 422, 422, 422, 422, 422, 400, 502, 204, 503,
            503, 204, 204
        ]
    );
    let first = &records[0];
    assert_eq!(
        (first.owner.as_str(), first.repo.as_str()),
        ("acme", "provisioning")
    );
    assert_eq!(first.event_type.as_deref(), Some("order-provisioned"));
    assert_eq!(first.client_payload["external_id"], "WH-000001");
    assert!(first.received_at > 1_700_000_000_000);
    assert_eq!(records[1].client_payload, Value::Null);
    let listed = send(org.http.get(org.url("/emulator/dispatches"))).await;
    assert_eq!(listed.body.as_array().unwrap().len(), records.len());
    assert_eq!(listed.body[0]["event_type"], "order-provisioned");
}

#[tokio::test]
async fn emulator_fulfil_write_back_fields_emit_change_events() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let id = org.create_order(json!({})).await;
    let mut sub = Sub::open(
        &mut client,
        fetch("/data/OrderChangeEvent", ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    sub.live().await;

    let message = "fulfilment rejected order: the billing account is on hold";
    org.patch_order(
        &id,
        json!({"Activation_Status__c": "Failed", "Provisioning_Error__c": message}),
    )
    .await;
    for status in ["Activating", "Activated", "Deactivated"] {
        org.patch_order(&id, json!({"Activation_Status__c": status}))
            .await;
    }
    let (status, rec) = org
        .rest(
            Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rec["Activation_Status__c"], "Deactivated");
    assert_eq!(rec["Provisioning_Error__c"], message);

    let events = sub.events(4).await;
    let ev = events[0].event.as_ref().unwrap();
    let json = org.schema_json(&mut client, &ev.schema_id).await;
    let schema = apache_avro::Schema::parse_str(&json).unwrap();
    let value = decode(&json, &ev.payload);
    let header = field(&value, "ChangeEventHeader");
    assert_eq!(strings(field(header, "recordIds")), vec![id.clone()]);
    let changed = bitmap_names(&schema, &strings(field(header, "changedFields")));
    for f in [
        "Activation_Status__c",
        "Provisioning_Error__c",
        "LastModifiedDate",
    ] {
        assert!(changed.iter().any(|c| c == f), "{f} not in {changed:?}");
    }
    assert_eq!(string(field(&value, "Activation_Status__c")), "Failed");
    assert_eq!(string(field(&value, "Provisioning_Error__c")), message);
    assert!(json.contains("00N5g00000Sfcd4"), "the field has its own id");

    // A Text(255) field holds 255 characters and refuses 256.
    org.patch_order(&id, json!({"Provisioning_Error__c": "e".repeat(255)}))
        .await;
    let (status, body) = org
        .rest(
            Method::PATCH,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            Some(json!({"Provisioning_Error__c": "e".repeat(256)})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "STRING_TOO_LONG");
}

#[tokio::test]
async fn emulator_fulfil_operations_survive_a_restart_with_state() {
    let dir = tempfile::tempdir().unwrap();
    let config = || sfcdc_emulator::EmulatorConfig {
        state: Some(dir.path().join("org.json")),
        ..test_config()
    };
    let org = Org::start_with(config()).await;
    org.emu.fulfilment().update(|c| c.latency_ms = 0);
    let first = submit(&org, "persist-1", &json!({"Id": "801Hs0000000P01"})).await;
    assert_eq!(first.status, 202);
    let op = first.body["operation_id"].as_str().unwrap().to_owned();
    assert_eq!(
        org.emu.stats().calls("POST /fulfilment/orders"),
        1,
        "fulfilment calls are counted by route"
    );
    let Org { emu, .. } = org;
    emu.shutdown().await;

    let org = Org::start_with(config()).await;
    let a = poll(&org, &op).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["result"]["external_id"], "WH-000001");
    assert_eq!(
        a.body["status_url"],
        format!("{}/operations/{op}", org.emu.fulfilment_url()),
        "URLs follow the new port"
    );
    let again = submit(&org, "persist-1", &json!({"Id": "801Hs0000000P01"})).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["operation_id"], op.as_str());
    let next = submit(&org, "persist-2", &json!({"Id": "801Hs0000000P02"})).await;
    assert_ne!(next.body["operation_id"], op.as_str());
    let done = poll_until_done(&org, next.body["status_url"].as_str().unwrap()).await;
    assert_eq!(
        done.last().unwrap()["result"]["external_id"],
        "WH-000002",
        "the external id sequence continues"
    );
    assert_eq!(org.emu.fulfilment().operations()[0].submissions, 2);
}
