//! Every fault the emulator can inject, through its control API.

use std::time::{Duration, Instant};

use apache_avro::types::Value as Avro;
use serde_json::json;
use sfcdc_emulator::EmulatorConfig;
use sfcdc_emulator::proto::{ReplayPreset, SchemaRequest, TopicRequest};
use tonic::Code;

use crate::common::*;

const ORDERS: &str = "/data/OrderChangeEvent";

#[tokio::test]
async fn disconnect_after_n_events_ends_the_stream_mid_batch() {
    let org = Org::start().await;
    org.emu.bulk(20);
    org.fault(json!({"kind": "disconnect_after", "events": 7}))
        .await;
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 7, "the batch of 10 is cut at 7");
    let err = sub.error().await;
    assert_api_error(
        &err,
        Code::Internal,
        Some("service.unavailable"),
        "Subscribe",
    );
    assert!(
        err.message()
            .starts_with("The service is unavailable. Try again later.")
    );
    // One-shot: resuming after the last event received gets the rest.
    let last = first.events.last().unwrap().replay_id.clone();
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Custom, last.to_vec(), 100),
    )
    .await
    .unwrap();
    assert_eq!(sub.events(13).await.len(), 13);
}

#[tokio::test]
async fn refused_subscriptions_are_service_unavailable_until_the_window_ends() {
    let org = Org::start().await;
    org.fault(json!({"kind": "refuse_subscriptions", "seconds": 0.5}))
        .await;
    let mut client = org.client().await;
    let err = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
        .await
        .err()
        .unwrap();
    assert_api_error(
        &err,
        Code::Internal,
        Some("service.unavailable"),
        "Subscribe",
    );
    // Other RPCs still work.
    client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap();
    eventually("subscriptions to be accepted again", async || {
        let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
            .await
            .ok()?;
        sub.live().await;
        Some(())
    })
    .await;
}

#[tokio::test]
async fn expired_tokens_fail_the_next_fetch_and_every_new_call() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
        .await
        .unwrap();
    sub.live().await;
    let out = org.fault(json!({"kind": "expire_tokens"})).await;
    assert!(out["applied"].as_str().unwrap().contains("expired"));
    sub.send(more(1)).await;
    assert_api_error(
        &sub.error().await,
        Code::Unauthenticated,
        Some("service.auth.error"),
        "Subscribe",
    );
    let err = client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap_err();
    assert_api_error(
        &err,
        Code::Unauthenticated,
        Some("service.auth.error"),
        "GetTopic",
    );
    let (status, body) = org
        .rest(
            reqwest::Method::GET,
            "/services/data/v60.0/query?q=SELECT+Id+FROM+Order",
            None,
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");
    // A fresh login works again.
    let fresh = org.emu.issue_token();
    let mut client = org
        .client_with(Auth {
            token: Some(fresh),
            ..org.auth()
        })
        .await;
    client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn tokens_expire_after_their_lifetime() {
    let org = Org::start_with(EmulatorConfig {
        token_lifetime: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let mut client = org.client().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn corrupt_next_event_fails_to_decode_and_the_stream_goes_on() {
    let org = Org::start().await;
    org.fault(json!({"kind": "corrupt_next"})).await;
    org.emu.bulk(2);
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let events = sub.events(2).await;
    let bad = events[0].event.as_ref().unwrap();
    let json = org.schema_json(&mut client, &bad.schema_id).await;
    let schema = apache_avro::Schema::parse_str(&json).unwrap();
    assert!(
        try_decode(&schema, &mut &bad.payload[..]).is_err(),
        "corrupt payload must not decode"
    );
    let good = events[1].event.as_ref().unwrap();
    decode(&json, &good.payload);
}

#[tokio::test]
async fn gap_events_carry_the_header_only() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let mut client = org.client().await;
    let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 10))
        .await
        .unwrap();
    sub.live().await;
    let out = org
        .fault(json!({"kind": "gap", "change_type": "GAP_UPDATE", "record_id": order}))
        .await;
    assert!(out["replay_id"].is_string());
    org.fault(json!({"kind": "gap", "change_type": "GAP_OVERFLOW"}))
        .await;
    let events = sub.events(2).await;
    let mut kinds = Vec::new();
    for e in &events {
        let ev = e.event.as_ref().unwrap();
        let v = decode(
            &org.schema_json(&mut client, &ev.schema_id).await,
            &ev.payload,
        );
        let h = field(&v, "ChangeEventHeader");
        let Avro::Enum(_, kind) = field(h, "changeType") else {
            panic!()
        };
        kinds.push((kind.clone(), strings(field(h, "recordIds"))));
        assert_eq!(field(h, "sequenceNumber"), &Avro::Int(1));
        assert!(strings(field(h, "changedFields")).is_empty());
        let Avro::Record(fields) = &v else { panic!() };
        assert!(
            fields
                .iter()
                .skip(1)
                .all(|(_, v)| matches!(v, Avro::Union(0, _))),
            "no field data"
        );
    }
    assert_eq!(
        kinds,
        [
            ("GAP_UPDATE".to_string(), vec![order]),
            ("GAP_OVERFLOW".to_string(), vec![])
        ]
    );
}

#[tokio::test]
async fn schema_change_mid_stream_gives_a_new_schema_id_and_both_are_served() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let mut client = org.client().await;
    let before = client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .schema_id;
    let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 10))
        .await
        .unwrap();
    sub.live().await;
    org.patch_order(&order, json!({"Description": "before"}))
        .await;
    let out = org
        .fault(json!({"kind": "schema_change", "field": "Fulfilment_Notes__c"}))
        .await;
    let after = out["schema_id"].as_str().unwrap().to_owned();
    assert_ne!(after, before);
    org.patch_order(
        &order,
        json!({"Fulfilment_Notes__c": "hello", "WHMCS_Order_ID__c": "WH-1"}),
    )
    .await;
    let events = sub.events(2).await;
    assert_eq!(events[0].event.as_ref().unwrap().schema_id, before);
    assert_eq!(events[1].event.as_ref().unwrap().schema_id, after);
    let new_json = org.schema_json(&mut client, &after).await;
    let v = decode(&new_json, &events[1].event.as_ref().unwrap().payload);
    assert_eq!(string(field(&v, "Fulfilment_Notes__c")), "hello");
    assert_eq!(string(field(&v, "WHMCS_Order_ID__c")), "WH-1");
    // The old schema stays served, and positions shifted: decoding the new event with the old
    // schema would misread it, which is why clients must use each event's schema id.
    let old_json = org.schema_json(&mut client, &before).await;
    decode(&old_json, &events[0].event.as_ref().unwrap().payload);
    let old = apache_avro::Schema::parse_str(&old_json).unwrap();
    let new = apache_avro::Schema::parse_str(&new_json).unwrap();
    let pos = |s: &apache_avro::Schema| field_position(s, "WHMCS_Order_ID__c");
    assert_ne!(pos(&old), pos(&new));
    assert_eq!(
        client
            .get_topic(TopicRequest {
                topic_name: ORDERS.into()
            })
            .await
            .unwrap()
            .into_inner()
            .schema_id,
        after
    );
    let err = client
        .get_schema(SchemaRequest {
            schema_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_api_error(
        &err,
        Code::InvalidArgument,
        Some("schema.validation.failed"),
        "GetSchema",
    );
    assert!(
        err.message()
            .starts_with("Schema validation failed. The schema ID can't be blank.")
    );
}

#[tokio::test]
async fn delay_slows_every_response() {
    let org = Org::start().await;
    let mut client = org.client().await;
    org.fault(json!({"kind": "delay", "ms": 300})).await;
    // A lower bound only: the server sleeps before answering, so this cannot flake.
    let started = Instant::now();
    client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    org.rest(
        reqwest::Method::GET,
        "/services/data/v60.0/query?q=SELECT+Id+FROM+Account",
        None,
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let resp = org
        .http
        .delete(org.url("/emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn long_replay_ids_have_ten_bytes_and_resume_exactly() {
    let org = Org::start().await;
    org.fault(json!({"kind": "long_replay_ids"})).await;
    org.emu.bulk(3);
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let events = sub.events(3).await;
    for e in &events {
        assert_eq!(e.replay_id.len(), 10);
        assert_eq!(&e.replay_id[8..], &[0, 0]);
    }
    let mut resumed = Sub::open(
        &mut client,
        fetch(
            ORDERS,
            ReplayPreset::Custom,
            events[0].replay_id.to_vec(),
            10,
        ),
    )
    .await
    .unwrap();
    let rest = resumed.events(2).await;
    assert_eq!(rest[0].replay_id, events[1].replay_id);
}

#[tokio::test]
async fn expire_events_makes_stored_replay_ids_expired() {
    let org = Org::start().await;
    org.emu.bulk(3);
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let events = sub.events(3).await;
    drop(sub);
    org.fault(json!({"kind": "expire_events"})).await;
    let mut sub = Sub::open(
        &mut client,
        fetch(
            ORDERS,
            ReplayPreset::Custom,
            events[0].replay_id.to_vec(),
            1,
        ),
    )
    .await
    .unwrap();
    assert_api_error(
        &sub.error().await,
        Code::InvalidArgument,
        Some("subscription.fetch.replayid.corrupted"),
        "Subscribe",
    );
}

#[tokio::test]
async fn rest_unavailable_refuses_the_next_data_api_calls_but_not_oauth() {
    let org = Org::start().await;
    let order = org.create_order(json!({"Description": "before"})).await;
    let before = org.emu.stats();
    let out = org
        .fault(json!({"kind": "rest_unavailable", "count": 2}))
        .await;
    assert!(out["applied"].as_str().unwrap().contains("503"));
    let query = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account";
    let (status, body) = org.rest(reqwest::Method::GET, query, None).await;
    assert_eq!(status, 503);
    assert_eq!(body[0]["errorCode"], "SERVER_UNAVAILABLE");
    assert_eq!(
        body[0]["message"],
        "The server is temporarily unable to service your request. Please try again later."
    );
    // OAuth is not the data API: a login during the fault works and consumes nothing.
    let creds = org.emu.credentials();
    let resp = org
        .http
        .post(org.url("/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", creds.client_id.as_str()),
            ("client_secret", creds.client_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let token: serde_json::Value = resp.json().await.unwrap();
    assert!(token["access_token"].is_string());
    // The refused request is not performed.
    let (status, body) = org
        .rest(
            reqwest::Method::PATCH,
            &format!("/services/data/v60.0/sobjects/Order/{order}"),
            Some(json!({"Description": "refused"})),
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(body[0]["errorCode"], "SERVER_UNAVAILABLE");
    let (status, body) = org.rest(reqwest::Method::GET, query, None).await;
    assert_eq!(status, 200, "the third call succeeds: {body}");
    assert!(body["totalSize"].as_u64().unwrap() > 0);
    // Refused calls still reached the server and are counted under their routes.
    let after = org.emu.stats();
    let delta = |key: &str| after.calls(key) - before.calls(key);
    assert_eq!(after.data_api_calls() - before.data_api_calls(), 3);
    assert_eq!(delta("GET /services/data/{version}/query"), 2);
    assert_eq!(
        delta("PATCH /services/data/{version}/sobjects/{sobject}/{id}"),
        1
    );
    assert_eq!(delta("POST /services/oauth2/token"), 1);
    let (status, body) = org
        .rest(
            reqwest::Method::GET,
            &format!("/services/data/v60.0/sobjects/Order/{order}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["Description"], "before");
}

#[tokio::test]
async fn clearing_faults_ends_rest_unavailability() {
    let org = Org::start().await;
    org.fault(json!({"kind": "rest_unavailable", "count": 5}))
        .await;
    let query = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account";
    assert_eq!(org.rest(reqwest::Method::GET, query, None).await.0, 503);
    let resp = org
        .http
        .delete(org.url("/emulator/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(org.rest(reqwest::Method::GET, query, None).await.0, 200);
}

/// `wildcard-ids=N`: the next N Order change events, as subscribers receive them over gRPC on the
/// entity channel and on `/data/ChangeEvents`, name their records by the key prefix and a
/// wildcard (`801*`), a merged event included; other entities' events do not use up the count,
/// and the events after it name their records again.
#[tokio::test]
async fn wildcard_ids_name_the_next_order_changes_by_their_key_prefix() {
    let org = Org::start().await;
    let a = org.create_order(json!({})).await;
    let b = org.create_order(json!({})).await;
    let mut client = org.client().await;
    let mut orders = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    orders.live().await;
    let mut all_client = org.client().await;
    let mut all = Sub::open(
        &mut all_client,
        fetch("/data/ChangeEvents", ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    all.live().await;
    let outcome = org.fault(json!({"kind": "wildcard_ids", "count": 2})).await;
    assert!(
        outcome["applied"].as_str().unwrap().contains("801*"),
        "{outcome}"
    );

    // An item: its own event keeps its id; the order's roll-up is the first wildcard.
    let (status, item) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/OrderItem",
            Some(json!({"OrderId": a, "Quantity": 2.0, "UnitPrice": 5.0})),
        )
        .await;
    assert_eq!(status, 201, "{item}");
    // A mass approval, merged into one event: the second.
    let (status, saved) = org
        .rest(
            reqwest::Method::PATCH,
            "/services/data/v60.0/composite/sobjects",
            Some(json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Order"}, "id": a, "Status": "Approved"},
                {"attributes": {"type": "Order"}, "id": b, "Status": "Approved"},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{saved}");
    // The count is spent: ids again.
    org.patch_order(&a, json!({"Description": "named again"}))
        .await;

    let record_ids = async |client: &mut Client, sub: &mut Sub, n: usize| {
        let events = sub.events(n).await;
        let mut out = Vec::new();
        for e in &events {
            let ev = e.event.as_ref().unwrap();
            let schema = org.schema_json(client, &ev.schema_id).await;
            let v = decode(&schema, &ev.payload);
            let h = field(&v, "ChangeEventHeader");
            out.push((
                string(field(h, "entityName")).to_owned(),
                strings(field(h, "recordIds")),
                match field(h, "changeType") {
                    Avro::Enum(_, s) => s.clone(),
                    other => panic!("changeType {other:?}"),
                },
            ));
        }
        out
    };
    let wild = vec!["801*".to_owned()];
    let on_orders = record_ids(&mut client, &mut orders, 3).await;
    assert_eq!(
        on_orders,
        [
            ("Order".to_owned(), wild.clone(), "UPDATE".to_owned()),
            ("Order".to_owned(), wild.clone(), "UPDATE".to_owned()),
            ("Order".to_owned(), vec![a.clone()], "UPDATE".to_owned()),
        ]
    );
    let on_all = record_ids(&mut all_client, &mut all, 4).await;
    assert_eq!(
        on_all[0],
        (
            "OrderItem".to_owned(),
            vec![item["id"].as_str().unwrap().to_owned()],
            "CREATE".to_owned()
        )
    );
    assert_eq!(
        on_all[1..],
        on_orders[..],
        "the same events on both channels"
    );
}
