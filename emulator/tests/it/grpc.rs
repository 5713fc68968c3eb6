//! The emulator's Pub/Sub API semantics (reference §2), through a real tonic client over TLS.

use std::time::Duration;

use serde_json::json;
use sfcdc_emulator::EmulatorConfig;
use sfcdc_emulator::proto::{ProducerEvent, PublishRequest, ReplayPreset, TopicRequest};
use tonic::Code;

use crate::common::*;

const ORDERS: &str = "/data/OrderChangeEvent";

#[tokio::test]
async fn missing_or_bad_metadata_is_unauthenticated_with_trailers() {
    let org = Org::start().await;
    let good = org.auth();
    let variants = [
        Auth {
            token: None,
            ..good.clone()
        },
        Auth {
            instance: None,
            ..good.clone()
        },
        Auth {
            tenant: None,
            ..good.clone()
        },
        Auth {
            token: Some("00DHs0000000XyZ!bogus".into()),
            ..good.clone()
        },
        Auth {
            tenant: Some("00D000000000001AAA".into()),
            ..good.clone()
        },
        Auth {
            instance: Some("https://elsewhere.my.salesforce.com".into()),
            ..good.clone()
        },
    ];
    for auth in variants {
        let mut client = org.client_with(auth.clone()).await;
        let err = client
            .get_topic(TopicRequest {
                topic_name: ORDERS.into(),
            })
            .await
            .expect_err(&format!("{auth:?} must be refused"));
        assert_api_error(
            &err,
            Code::Unauthenticated,
            Some("service.auth.error"),
            "GetTopic",
        );
        assert!(
            err.message()
                .starts_with("An authentication exception occurred.")
        );
        let err = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
            .await
            .err()
            .expect("Subscribe refused");
        assert_api_error(
            &err,
            Code::Unauthenticated,
            Some("service.auth.error"),
            "Subscribe",
        );
    }
    // The long tenant form and the 15-character org id are accepted.
    for tenant in [
        format!("core/sfcdc/{}", org.emu.org_id()),
        org.emu.org_id()[..15].to_owned(),
    ] {
        let mut client = org
            .client_with(Auth {
                tenant: Some(tenant),
                ..good.clone()
            })
            .await;
        client
            .get_topic(TopicRequest {
                topic_name: ORDERS.into(),
            })
            .await
            .expect("accepted");
    }
}

#[tokio::test]
async fn get_topic_reports_schema_ids_and_permissions() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let t = client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.topic_name, ORDERS);
    assert_eq!(t.tenant_guid, org.emu.org_id());
    assert_eq!(t.schema_id.len(), 22);
    assert!(t.can_subscribe && !t.can_publish);
    uuid::Uuid::parse_str(&t.rpc_id).expect("rpc_id is a UUID");

    let all = client
        .get_topic(TopicRequest {
            topic_name: "/data/ChangeEvents".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.schema_id, "",
        "multi-entity channels have no single schema"
    );

    let pe = client
        .get_topic(TopicRequest {
            topic_name: "/event/Order_Fulfilment_Requested__e".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(pe.can_publish && pe.can_subscribe);

    let err = client
        .get_topic(TopicRequest {
            topic_name: "/data/AccountChangeEvent".into(),
        })
        .await
        .unwrap_err();
    assert_api_error(&err, Code::NotFound, Some("topic.not.found"), "GetTopic");
    assert!(err.message().contains("/data/AccountChangeEvent not found"));
}

#[tokio::test]
async fn unknown_topic_on_subscribe_is_not_found() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch("/event/Nope__e", ReplayPreset::Latest, vec![], 1),
    )
    .await
    .unwrap();
    let err = sub.error().await;
    assert_api_error(&err, Code::NotFound, Some("topic.not.found"), "Subscribe");
}

#[tokio::test]
async fn demand_is_additive_capped_at_100_and_positions_never_reset() {
    let org = Org::start().await;
    let mut client = org.client().await;
    // Nothing is available after LATEST, so demand accumulates: 60 + 60, capped at 100.
    let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 60))
        .await
        .unwrap();
    sub.live().await;
    sub.send(more(60)).await;
    loop {
        let ka = sub.next().await.unwrap().unwrap();
        assert!(ka.events.is_empty());
        if ka.pending_num_requested == 100 {
            break;
        }
        assert_eq!(
            ka.pending_num_requested, 60,
            "before the second request is read"
        );
    }
    org.emu.bulk(150);
    let mut got = Vec::new();
    let mut last_pending = -1;
    while got.len() < 100 {
        let r = sub.next().await.unwrap().unwrap();
        assert!(r.pending_num_requested <= 100);
        last_pending = r.pending_num_requested;
        got.extend(r.events);
    }
    assert_eq!(got.len(), 100, "never more than the capped demand");
    assert_eq!(last_pending, 0);
    // A later request with another preset and replay id adds demand but does not move the
    // position: delivery continues after the 100th event.
    sub.send(fetch(ORDERS, ReplayPreset::Earliest, vec![0; 8], 5))
        .await;
    let tail = sub.events(5).await;
    let all: Vec<u64> = got
        .iter()
        .chain(&tail)
        .map(|e| replay_u64(&e.replay_id))
        .collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing, no repeats"
    );
    let mut earliest = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 100),
    )
    .await
    .unwrap();
    let reference = earliest.events(100).await;
    assert_eq!(reference[0].replay_id, got[0].replay_id);
    assert_eq!(reference[99].replay_id, got[99].replay_id);
}

#[tokio::test]
async fn non_positive_demand_and_topic_mismatch_are_rejected() {
    let org = Org::start().await;
    let mut client = org.client().await;
    for n in [0, -5] {
        let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], n))
            .await
            .unwrap();
        let err = sub.error().await;
        assert_api_error(
            &err,
            Code::InvalidArgument,
            Some("subscription.fetch.requested.events.invalid"),
            "Subscribe",
        );
        assert!(err.message().contains("must be greater than zero"));
    }
    let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
        .await
        .unwrap();
    sub.send(more(0)).await;
    assert_api_error(
        &sub.error().await,
        Code::InvalidArgument,
        Some("subscription.fetch.requested.events.invalid"),
        "Subscribe",
    );

    let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
        .await
        .unwrap();
    sub.send(fetch(
        "/data/OrderItemChangeEvent",
        ReplayPreset::Latest,
        vec![],
        1,
    ))
    .await;
    assert_api_error(
        &sub.error().await,
        Code::InvalidArgument,
        Some("subscription.fetch.topic.mismatch"),
        "Subscribe",
    );
}

#[tokio::test]
async fn replay_presets_latest_earliest_and_custom() {
    let org = Org::start().await;
    org.emu.bulk(10);
    let mut client = org.client().await;

    let mut earliest = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 100),
    )
    .await
    .unwrap();
    let all = earliest.events(10).await;

    // LATEST sees only what happens after it subscribed.
    let mut latest = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    latest.live().await;
    org.emu.bulk(3);
    let new = latest.events(3).await;
    assert!(replay_u64(&new[0].replay_id) > replay_u64(&all[9].replay_id));

    // CUSTOM starts strictly after the given id.
    let mut custom = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Custom, all[4].replay_id.to_vec(), 100),
    )
    .await
    .unwrap();
    let after = custom.events(8).await;
    assert_eq!(after[0].replay_id, all[5].replay_id);
    assert_eq!(after[7].replay_id, new[2].replay_id);
}

#[tokio::test]
async fn bad_custom_replay_ids_are_rejected() {
    let org = Org::start().await;
    org.emu.bulk(3);
    let mut client = org.client().await;
    let cases: [(Vec<u8>, &str); 3] = [
        (vec![1, 2, 3], "subscription.fetch.replayid.corrupted"),
        (
            u64::MAX.to_be_bytes().to_vec(),
            "subscription.fetch.replayid.corrupted",
        ),
        (vec![], "subscription.fetch.replayid.validation.failed"),
    ];
    for (replay, code) in cases {
        let mut sub = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Custom, replay, 1))
            .await
            .unwrap();
        assert_api_error(
            &sub.error().await,
            Code::InvalidArgument,
            Some(code),
            "Subscribe",
        );
    }
    // A decimal string instead of bytes (a classic client bug) is corrupted too.
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Custom, b"487259".to_vec(), 1),
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
async fn retention_expires_old_replay_ids() {
    let org = Org::start_with(EmulatorConfig {
        retention: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    org.emu.bulk(2);
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 100),
    )
    .await
    .unwrap();
    let old = sub.events(2).await;
    drop(sub);
    // Wait for the retention sweep to purge them (no timing assertion: we poll the outcome).
    eventually("the events to be purged", async || {
        (org.emu.stats().events_retained[ORDERS] == 0).then_some(())
    })
    .await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Custom, old[0].replay_id.to_vec(), 1),
    )
    .await
    .unwrap();
    assert_api_error(
        &sub.error().await,
        Code::InvalidArgument,
        Some("subscription.fetch.replayid.corrupted"),
        "Subscribe",
    );
    // The newest purged id is still a valid position.
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Custom, old[1].replay_id.to_vec(), 1),
    )
    .await
    .unwrap();
    org.emu.bulk(1);
    assert_eq!(sub.events(1).await.len(), 1);
}

#[tokio::test]
async fn keepalive_carries_latest_replay_id_while_events_are_owed() {
    let org = Org::start().await;
    org.emu.bulk(2);
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 10),
    )
    .await
    .unwrap();
    let events = sub.events(2).await;
    let ka = sub.next().await.unwrap().unwrap();
    assert!(ka.events.is_empty());
    assert_eq!(ka.latest_replay_id.len(), 8);
    assert!(replay_u64(&ka.latest_replay_id) >= replay_u64(&events[1].replay_id));
    assert_eq!(ka.pending_num_requested, 8);
    uuid::Uuid::parse_str(&ka.rpc_id).expect("rpc_id");
    // Resuming from a keepalive id loses nothing that comes later.
    org.emu.bulk(1);
    let mut resumed = Sub::open(
        &mut client,
        fetch(
            ORDERS,
            ReplayPreset::Custom,
            ka.latest_replay_id.to_vec(),
            10,
        ),
    )
    .await
    .unwrap();
    assert_eq!(resumed.events(1).await.len(), 1);
}

#[tokio::test]
async fn idle_streams_that_owe_nothing_are_closed() {
    let org = Org::start_with(EmulatorConfig {
        idle_timeout: Duration::from_millis(300),
        ..test_config()
    })
    .await;
    org.emu.bulk(1);
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 1),
    )
    .await
    .unwrap();
    let r = sub.next().await.unwrap().unwrap();
    assert_eq!(r.pending_num_requested, 0);
    let err = sub.error().await;
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no FetchRequest"));
}

#[tokio::test]
async fn ids_schema_ids_and_rpc_ids_on_every_event() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    org.patch_order(&order, json!({"Status": "Approved"})).await;
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch("/data/ChangeEvents", ReplayPreset::Earliest, vec![], 100),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let r = sub.next().await.unwrap().unwrap();
        uuid::Uuid::parse_str(&r.rpc_id).expect("every response carries an rpc_id");
        assert_eq!(r.latest_replay_id, r.events.last().unwrap().replay_id);
        events.extend(r.events);
    }
    let topic_schema = client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .schema_id;
    for e in &events {
        assert_eq!(e.replay_id.len(), 8);
        let ev = e.event.as_ref().unwrap();
        assert_eq!(
            ev.schema_id, topic_schema,
            "each event names its own schema"
        );
        uuid::Uuid::parse_str(&ev.id).expect("event id is a UUID");
    }
    // Ids increase but are not contiguous: the bus is shared with other channels.
    let ids: Vec<u64> = events.iter().map(|e| replay_u64(&e.replay_id)).collect();
    assert!(ids[1] > ids[0] + 1);
}

#[tokio::test]
async fn platform_events_publish_over_grpc_and_stream() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let topic = "/event/Order_Fulfilment_Requested__e";
    let info = client
        .get_topic(TopicRequest {
            topic_name: topic.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let schema_json = org.schema_json(&mut client, &info.schema_id).await;
    let schema = apache_avro::Schema::parse_str(&schema_json).unwrap();
    let record = apache_avro::types::Value::Record(vec![
        (
            "CreatedDate".into(),
            apache_avro::types::Value::Long(1_700_000_000_000),
        ),
        (
            "CreatedById".into(),
            apache_avro::types::Value::String("005Hs00000000WwIAI".into()),
        ),
        (
            "OrderId__c".into(),
            apache_avro::types::Value::Union(
                1,
                Box::new(apache_avro::types::Value::String(
                    "801Hs0000000Q0vIAE".into(),
                )),
            ),
        ),
        (
            "RequestedBy__c".into(),
            apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
        ),
        (
            "Priority__c".into(),
            apache_avro::types::Value::Union(
                1,
                Box::new(apache_avro::types::Value::String("High".into())),
            ),
        ),
    ]);
    let payload = bytes::Bytes::from(encode(&schema, record));

    let mut sub = Sub::open(&mut client, fetch(topic, ReplayPreset::Latest, vec![], 10))
        .await
        .unwrap();
    sub.live().await;
    let resp = client
        .publish(PublishRequest {
            topic_name: topic.into(),
            events: vec![
                ProducerEvent {
                    id: "corr-1".into(),
                    schema_id: info.schema_id.clone(),
                    payload: payload.clone(),
                    headers: vec![],
                },
                ProducerEvent {
                    id: "corr-2".into(),
                    schema_id: "bogus".into(),
                    payload: payload.clone(),
                    headers: vec![],
                },
            ],
            auth_refresh: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 2);
    assert_eq!(resp.results[0].correlation_key, "corr-1");
    assert_eq!(resp.results[0].replay_id.len(), 8);
    assert!(resp.results[0].error.is_none());
    assert!(
        resp.results[1].error.is_some(),
        "unknown schema id fails that event only"
    );
    assert_eq!(resp.schema_id, info.schema_id);

    // PublishStream: one response per request, the topic fixed by the first.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    for i in 0..2 {
        tx.send(PublishRequest {
            topic_name: if i == 0 { topic.into() } else { String::new() },
            events: vec![ProducerEvent {
                id: format!("s{i}"),
                schema_id: info.schema_id.clone(),
                payload: payload.clone(),
                headers: vec![],
            }],
            auth_refresh: String::new(),
        })
        .await
        .unwrap();
    }
    let mut stream = client
        .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..2 {
        let r = stream.message().await.unwrap().unwrap();
        assert_eq!(r.results[0].correlation_key, format!("s{i}"));
    }
    tx.send(PublishRequest {
        topic_name: ORDERS.into(),
        events: vec![],
        auth_refresh: String::new(),
    })
    .await
    .unwrap();
    let err = stream.message().await.unwrap_err();
    assert_api_error(
        &err,
        Code::InvalidArgument,
        Some("publish.topic.mismatch"),
        "PublishStream",
    );

    let events = sub.events(3).await;
    let decoded = decode(&schema_json, &events[0].event.as_ref().unwrap().payload);
    assert_eq!(string(field(&decoded, "OrderId__c")), "801Hs0000000Q0vIAE");
    assert_eq!(events[0].event.as_ref().unwrap().id, "corr-1");

    // CDC channels cannot be published to.
    let resp = client
        .publish(PublishRequest {
            topic_name: ORDERS.into(),
            events: vec![ProducerEvent {
                id: "x".into(),
                schema_id: info.schema_id.clone(),
                payload,
                headers: vec![],
            }],
            auth_refresh: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.results[0]
            .error
            .as_ref()
            .unwrap()
            .msg
            .contains("not allowed")
    );
}

#[tokio::test]
async fn plaintext_mode_serves_without_tls() {
    let org = Org::start_with(EmulatorConfig {
        tls: false,
        ..test_config()
    })
    .await;
    assert!(org.emu.grpc_url().starts_with("http://"));
    assert!(org.emu.instance_url().starts_with("http://"));
    assert!(org.emu.ca_pem().is_none());
    let mut client = org.client().await;
    client
        .get_topic(TopicRequest {
            topic_name: ORDERS.into(),
        })
        .await
        .unwrap();
    let (status, _) = org
        .rest(
            reqwest::Method::GET,
            "/services/data/v60.0/query?q=SELECT+Id+FROM+Order",
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn stats_count_open_subscriptions_and_subscribes_per_topic() {
    let org = Org::start().await;
    org.emu.bulk(3);
    let mut client = org.client().await;
    let mut a = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 3),
    )
    .await
    .unwrap();
    a.events(3).await;
    let b = Sub::open(&mut client, fetch(ORDERS, ReplayPreset::Latest, vec![], 1))
        .await
        .unwrap();
    let stats = eventually("both streams counted", || async {
        let s = org.emu.stats();
        (s.open_subscriptions.get(ORDERS) == Some(&2)).then_some(s)
    })
    .await;
    assert_eq!(stats.subscribes.get(ORDERS), Some(&2));
    assert!(
        !stats
            .open_subscriptions
            .contains_key("/data/OrderItemChangeEvent")
    );
    drop(a);
    drop(b);
    let stats = eventually("the streams closed", || async {
        let s = org.emu.stats();
        (s.open_subscriptions.get(ORDERS) == Some(&0)).then_some(s)
    })
    .await;
    assert_eq!(stats.subscribes.get(ORDERS), Some(&2), "started so far");
    // The control API shows the same.
    let (status, body) = org
        .rest(reqwest::Method::GET, "/emulator/stats", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["subscribes"][ORDERS], 2);
    assert_eq!(body["open_subscriptions"][ORDERS], 0);
}
