//! Cached order reads end to end: `sfcdc run` against the emulator, whose call statistics count
//! every REST query the cache makes. Reads go through the real read API over HTTP, or through
//! the service's cache in process where a thousand concurrent callers are wanted.

use std::time::Duration;

use serde_json::{Map, Value, json};
use sfcdc::cache::CacheKey;
use sfcdc::sfid::SfId;
use sfcdc::store::Store;

use crate::common::*;

const READ_TOKEN: &str = "read-token-for-tests-0123456789";
const QUERY: &str = "GET /services/data/{version}/query";

async fn start(org: &Org, extra: &[(&str, &str)]) -> Running {
    let mut env = vec![("SFCDC_CHANNELS", ORDERS), ("SFCDC_READ_TOKEN", READ_TOKEN)];
    env.extend_from_slice(extra);
    let r = run_app(org, tempfile::tempdir().unwrap(), &env).await;
    settled(org, &r).await;
    r
}

/// Waits until the service has taken every event and applied every invalidation.
async fn settled(org: &Org, r: &Running) {
    caught_up(org, r.app.sink().store().as_ref(), &[ORDERS]).await;
    tokio::time::timeout(PATIENCE, async {
        while r.app.invalidations_pending() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("invalidations applied");
}

fn queries(org: &Org) -> u64 {
    org.emu.stats().calls(QUERY)
}

async fn get(r: &Running, path: &str, token: Option<&str>) -> (u16, Value) {
    let addr = r.app.admin_addr().expect("admin listens");
    let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("admin answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Updates an order inside the emulator, `n` times in one go: the events are published
/// together, as a burst.
fn update_order(org: &Org, id: &str, n: usize, fields: impl Fn(usize) -> Value) {
    let id = sfcdc_emulator::ids::SfId::parse(id).unwrap();
    org.emu.with_world(|w| {
        let actor = w.internal_actor();
        for i in 0..n {
            let set: Map<String, Value> = fields(i).as_object().unwrap().clone();
            let now = sfcdc::clock::now_ms();
            w.mutate(now, |o| {
                o.update("Order", &id, &set, &actor, now).map(|c| ((), c))
            })
            .expect("update");
        }
    });
}

#[tokio::test]
async fn a_thousand_concurrent_reads_of_a_cold_key_make_one_rest_call() {
    let org = Org::start().await;
    let order = org.create_order(json!({"PoNumber": "PO-1"})).await;
    let r = start(&org, &[]).await;
    let id = SfId::parse(&order).unwrap();
    r.app.cache().invalidate(&CacheKey::Order(id.clone())).await;

    let before = queries(&org);
    let reads: Vec<_> = (0..1000)
        .map(|_| {
            let (app, id) = (r.app.clone(), id.clone());
            tokio::spawn(async move { app.cache().order(&id).await })
        })
        .collect();
    for read in reads {
        let entry = read.await.unwrap().expect("read");
        assert_eq!(entry.record.as_ref().unwrap()["PoNumber"], "PO-1");
    }
    assert_eq!(queries(&org) - before, 1, "1,000 readers, one REST call");
    let coalesced = r.metric("sfcdc_cache_coalesced_waits_total", &[("cache", "order")]);
    let hits = r.metric("sfcdc_cache_hits_total", &[("cache", "order")]);
    assert!(coalesced > 0.0, "readers waited for the one load");
    assert!(coalesced + hits >= 999.0);

    // The same over HTTP, for another cold order.
    let other = org.create_order(json!({"PoNumber": "PO-2"})).await;
    settled(&org, &r).await;
    r.app
        .cache()
        .invalidate(&CacheKey::Order(SfId::parse(&other).unwrap()))
        .await;
    let before = queries(&org);
    let path = format!("/orders/{other}");
    let answers =
        futures_util::future::join_all((0..100).map(|_| get(&r, &path, Some(READ_TOKEN)))).await;
    assert!(answers.iter().all(|(s, b)| *s == 200 && *b == answers[0].1));
    assert_eq!(queries(&org) - before, 1, "100 HTTP readers, one REST call");
    r.stop().await;
}

#[tokio::test]
async fn the_read_api_shows_the_configured_fields_of_orders_and_account_lists() {
    let org = Org::start().await;
    let account = org.first_account().await;
    let order = org
        .create_order(json!({"PoNumber": "PO-7", "BillingCity": "Lyon"}))
        .await;
    let (status, item) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/OrderItem",
            Some(json!({"OrderId": order, "Quantity": 3.0, "UnitPrice": 9.5})),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    let r = start(&org, &[]).await;

    let (status, body) = get(&r, &format!("/orders/{order}"), Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    let o = &body["order"];
    assert_eq!(o["Id"], order);
    assert_eq!(o["PoNumber"], "PO-7");
    assert_eq!(o["AccountId"], account);
    assert_eq!(o["BillingAddress"]["city"], "Lyon");
    assert_eq!(o["TotalAmount"], 28.5);
    assert!(o.get("Activation_Status__c").is_none(), "not a read field");
    assert!(o.get("attributes").is_none());
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["Id"], item["id"]);
    assert_eq!(items[0]["Quantity"], 3.0);
    assert!(body["loaded_at"].as_str().unwrap().ends_with('Z'));

    // The 15-character form of an id is the same order, from the same entry.
    let before = queries(&org);
    let (status, again) = get(&r, &format!("/orders/{}", &order[..15]), Some(READ_TOKEN)).await;
    assert_eq!((status, &again["order"]), (200, o));
    assert_eq!(queries(&org), before);

    let (status, list) = get(&r, &format!("/accounts/{account}/orders"), Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["account_id"], account);
    let orders = list["orders"].as_array().unwrap();
    assert!(orders.iter().any(|x| x["Id"] == order));
    assert!(orders.iter().all(|x| x["AccountId"] == account));

    // A new order of the account shows in its list: the CREATE names the account.
    let newer = org.create_order(json!({"PoNumber": "PO-8"})).await;
    settled(&org, &r).await;
    let (_, list) = get(&r, &format!("/accounts/{account}/orders"), Some(READ_TOKEN)).await;
    assert!(
        list["orders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["Id"] == newer)
    );

    let (status, missing) = get(&r, "/orders/801000000000999AAA", Some(READ_TOKEN)).await;
    assert_eq!(status, 404, "{missing}");
    r.stop().await;
}

#[tokio::test]
async fn a_change_event_makes_the_next_read_return_the_new_value() {
    let org = Org::start().await;
    let order = org.create_order(json!({"PoNumber": "PO-1"})).await;
    let r = start(&org, &[]).await;
    let path = format!("/orders/{order}");
    let (_, first) = get(&r, &path, Some(READ_TOKEN)).await;
    assert_eq!(first["order"]["PoNumber"], "PO-1");

    let before = queries(&org);
    org.patch_order(&order, json!({"PoNumber": "PO-2"})).await;
    settled(&org, &r).await;
    let (_, next) = get(&r, &path, Some(READ_TOKEN)).await;
    assert_eq!(next["order"]["PoNumber"], "PO-2");
    let (_, again) = get(&r, &path, Some(READ_TOKEN)).await;
    assert_eq!(again["order"]["PoNumber"], "PO-2");
    assert_eq!(queries(&org) - before, 1, "one reload after the change");
    r.stop().await;
}

#[tokio::test]
async fn a_burst_of_a_hundred_events_for_one_order_is_one_invalidation() {
    let org = Org::start().await;
    let order = org.create_order(json!({"PoNumber": "PO-0"})).await;
    // A window far longer than the burst takes to arrive, so the test does not depend on speed.
    let r = start(&org, &[("SFCDC_INVALIDATION_WINDOW", "2s")]).await;
    let requested = || r.metric("sfcdc_invalidations_requested_total", &[]);
    let applied = || r.metric("sfcdc_cache_invalidations_total", &[("cache", "order")]);
    let (requested0, applied0) = (requested(), applied());

    update_order(
        &org,
        &order,
        100,
        |i| json!({"PoNumber": format!("PO-{}", i + 1)}),
    );
    settled(&org, &r).await;
    assert_eq!(requested() - requested0, 100.0, "every event asked");
    assert_eq!(applied() - applied0, 1.0, "one invalidation applied");
    let (_, body) = get(&r, &format!("/orders/{order}"), Some(READ_TOKEN)).await;
    assert_eq!(body["order"]["PoNumber"], "PO-100");
    r.stop().await;
}

#[tokio::test]
async fn internal_only_changes_do_not_invalidate() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let r = start(&org, &[]).await;
    let path = format!("/orders/{order}");
    get(&r, &path, Some(READ_TOKEN)).await;
    let requested0 = r.metric("sfcdc_invalidations_requested_total", &[]);
    let before = queries(&org);

    update_order(&org, &order, 3, |i| {
        let status = ["Activating", "Activated", "Activating"][i];
        json!({ "Activation_Status__c": status })
    });
    settled(&org, &r).await;
    assert_eq!(
        r.metric("sfcdc_invalidations_requested_total", &[]),
        requested0
    );
    get(&r, &path, Some(READ_TOKEN)).await;
    assert_eq!(queries(&org), before, "still served from the cache");
    r.stop().await;
}

#[tokio::test]
async fn guard_lookups_for_a_burst_on_one_order_cost_one_rest_read() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    // Small batches, so that without the cache each batch would read the order again; a
    // freshness bound far longer than the burst takes, so the test does not depend on speed.
    let r = start(
        &org,
        &[("SFCDC_BATCH_SIZE", "5"), ("SFCDC_GUARD_MAX_AGE", "60s")],
    )
    .await;
    let before = queries(&org);
    // Fifty status changes; the twenty-five to Approved need the guard fields, which an UPDATE
    // that does not change them does not carry.
    update_order(
        &org,
        &order,
        50,
        |i| json!({"Status": if i % 2 == 0 { "Approved" } else { "Draft" }}),
    );
    settled(&org, &r).await;
    assert_eq!(queries(&org) - before, 1, "one REST read for the burst");
    let jobs = r
        .app
        .sink()
        .store()
        .jobs(&sfcdc::store::JobFilter::default())
        .await
        .unwrap();
    assert_eq!(jobs.iter().filter(|j| j.order_id == order).count(), 1);
    r.stop().await;
}

#[tokio::test]
async fn refused_requests_never_reach_salesforce() {
    let org = Org::start().await;
    let account = org.first_account().await;
    let order = org.create_order(json!({})).await;
    let r = start(&org, &[]).await;
    let before = queries(&org);
    let cases = [
        (
            format!("/orders/{order}"),
            None,
            401,
            "Authorization: Bearer",
        ),
        (
            format!("/orders/{order}"),
            Some("not-the-read-token-at-all"),
            401,
            "SFCDC_READ_TOKEN",
        ),
        (
            format!("/orders/{order}"),
            Some(ADMIN_LIKE),
            401,
            "SFCDC_READ_TOKEN",
        ),
        (
            "/orders/not-an-id".into(),
            Some(READ_TOKEN),
            400,
            "15 or 18",
        ),
        (
            "/orders/801000000000001AAB".into(),
            Some(READ_TOKEN),
            400,
            "checksum",
        ),
        (
            format!("/orders/{account}"),
            Some(READ_TOKEN),
            400,
            "begin with 801",
        ),
        (
            format!("/accounts/{order}/orders"),
            Some(READ_TOKEN),
            400,
            "begin with 001",
        ),
        (
            // 18 characters once decoded: 001000000'OR'1'='1
            "/accounts/001000000%27OR%271%27%3D%271/orders".into(),
            Some(READ_TOKEN),
            400,
            "letters and digits",
        ),
    ];
    for (path, token, status, says) in cases {
        let (got, body) = get(&r, &path, token).await;
        assert_eq!(got, status, "{path}: {body}");
        let reason = body["error"].as_str().unwrap_or_default();
        assert!(reason.contains(says), "{path}: {reason}");
    }
    assert_eq!(queries(&org), before, "no upstream call");
    r.stop().await;
}

const ADMIN_LIKE: &str = "admin-token-for-tests-0123456789";

#[tokio::test]
async fn reads_are_refused_when_no_read_token_is_configured() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_CHANNELS", ORDERS)],
    )
    .await;
    let (status, body) = get(&r, &format!("/orders/{order}"), Some(READ_TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("SFCDC_READ_TOKEN"));
    r.stop().await;
}

#[tokio::test]
async fn a_failed_load_is_an_error_for_its_readers_and_is_not_cached() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let r = start(&org, &[]).await;
    let path = format!("/orders/{order}");
    org.fault(json!({"kind": "rest_unavailable", "count": 1}))
        .await;
    let before = queries(&org);
    let (status, body) = get(&r, &path, Some(READ_TOKEN)).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["error"].as_str().unwrap();
    assert!(reason.contains("SERVER_UNAVAILABLE"), "{reason}");
    assert!(reason.contains("try again"), "{reason}");
    let (status, body) = get(&r, &path, Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queries(&org) - before, 2, "the error was not cached");
    assert_eq!(
        r.metric("sfcdc_cache_load_errors_total", &[("cache", "order")]),
        1.0
    );
    r.stop().await;
}

#[tokio::test]
async fn a_guard_field_change_drops_the_cached_facts_for_later_batches_too() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let channels = format!("{ORDERS},{PE}");
    let r = start(
        &org,
        &[
            ("SFCDC_CHANNELS", &channels),
            ("SFCDC_GUARD_MAX_AGE", "60s"),
        ],
    )
    .await;
    let store = r.app.sink().store().clone();
    let before = queries(&org);
    // The approval reads the guard facts (activation empty) and makes the job.
    update_order(&org, &order, 1, |_| json!({"Status": "Approved"}));
    settled(&org, &r).await;
    // A change of the activation status alone needs no lookup, but makes those facts stale.
    update_order(
        &org,
        &order,
        1,
        |_| json!({"Activation_Status__c": "Activated"}),
    );
    settled(&org, &r).await;
    // The platform event for the order, in a later batch on another channel, reads it again.
    let (status, body) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/Order_Fulfilment_Requested__e",
            Some(json!({ "OrderId__c": order })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    caught_up(&org, store.as_ref(), &[ORDERS, PE]).await;
    assert_eq!(queries(&org) - before, 2, "the stale facts were not used");
    assert_eq!(
        r.metric(
            "sfcdc_rule_skips_total",
            &[("channel", PE), ("reason", "activation_blocking")]
        ),
        1.0
    );
    r.stop().await;
}
