//! The subscriber against the emulator: start positions, flow control, keepalives, and every
//! fault, each checked against the emulator's own event sequence.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sfcdc::decode::{ChangeType, EventBody, ReplayId};
use sfcdc::source::sink::SinkErrorKind;
use sfcdc_emulator::EmulatorConfig;

use crate::common::*;

const ORDERS: &str = "/data/OrderChangeEvent";

fn sink() -> Arc<MemorySink> {
    Arc::new(MemorySink::new())
}

#[tokio::test]
async fn start_positions_latest_earliest_and_stored() {
    let org = Org::start().await;
    org.emu.bulk(5);
    let all5 = org.sequence(ORDERS);

    // No stored position, default preset: only what comes after subscribing.
    let latest = org.subscribe(&[], sink()).await;
    tokio::time::timeout(PATIENCE, latest.sink.wait_for_keepalive())
        .await
        .expect("live");
    org.emu.bulk(3);
    latest.wait_for(3).await;
    let all8 = org.sequence(ORDERS);
    assert_eq!(committed(&latest.sink), all8[5..]);
    latest.stop().await.unwrap();

    let earliest = org
        .subscribe(&[("SFCDC_REPLAY_PRESET", "earliest")], sink())
        .await;
    earliest.wait_for(8).await;
    assert_eq!(committed(&earliest.sink), all8);
    assert_eq!(earliest.sink.stored(ORDERS).unwrap().to_hex(), all8[7]);
    earliest.stop().await.unwrap();

    // A stored position wins over the preset and resumes strictly after it.
    let stored = sink();
    stored.set_checkpoint(ORDERS, ReplayId::from_hex(&all5[3]).unwrap());
    let resumed = org
        .subscribe(&[("SFCDC_REPLAY_PRESET", "earliest")], stored)
        .await;
    resumed.wait_for(4).await;
    assert_eq!(committed(&resumed.sink), all8[4..]);
    resumed.stop().await.unwrap();
}

#[tokio::test]
async fn ten_byte_replay_ids_are_stored_and_resumed_exactly() {
    let org = Org::start().await;
    org.fault(json!({"kind": "long_replay_ids"})).await;
    org.emu.bulk(4);
    let s = org
        .subscribe(&[("SFCDC_REPLAY_PRESET", "earliest")], sink())
        .await;
    s.wait_for(4).await;
    let stored = s.sink.stored(ORDERS).unwrap();
    assert_eq!(stored.as_bytes().len(), 10);
    assert_eq!(stored.to_hex(), org.sequence(ORDERS)[3]);
    s.stop().await.unwrap();

    let again = sink();
    again.set_checkpoint(ORDERS, stored);
    let s = org.subscribe(&[], again).await;
    org.emu.bulk(2);
    s.wait_for(2).await;
    assert_eq!(committed(&s.sink), org.sequence(ORDERS)[4..]);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_sink_bounds_what_is_in_flight_and_causes_no_error() {
    let org = Org::start().await;
    // Three windows' worth, so that the window is what bounds the events in flight.
    let window = sfcdc::source::subscription::WINDOW_BATCHES * 20;
    let total = 3 * window;
    org.emu.bulk(total as usize);
    let slow = sink();
    slow.set_delay(Duration::from_millis(15));
    let s = org
        .subscribe(
            &[
                ("SFCDC_REPLAY_PRESET", "earliest"),
                ("SFCDC_BATCH_SIZE", "20"),
            ],
            slow,
        )
        .await;
    let mut peak = 0i64;
    tokio::time::timeout(PATIENCE, async {
        loop {
            let delivered = org.emu.stats().events_delivered as i64;
            let done = s.sink.replay_ids().len() as i64;
            peak = peak.max(delivered - done);
            if done >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("all events arrive");
    // Delivered but uncommitted events never exceed the window of batches.
    assert!(peak <= window, "peak in flight {peak}, window {window}");
    assert!(peak > 0);
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    assert_eq!(s.metric("sfcdc_reconnects_total", &[]), 0.0);
    // What queues behind the slow commits may be staged together, never beyond the window.
    assert!(s.sink.batches().iter().all(|b| b.len() as i64 <= window));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn keepalives_checkpoint_their_latest_replay_id() {
    let org = Org::start().await;
    org.emu.bulk(2);
    let s = org.subscribe(&[], sink()).await;
    let ka = tokio::time::timeout(PATIENCE, s.sink.wait_for_keepalive())
        .await
        .expect("a keepalive");
    assert!(ka.events.is_empty() && ka.failed.is_empty());
    assert_eq!(ka.replay_id.as_bytes().len(), 8);
    assert!(
        ka.replay_id.position().unwrap()
            >= ReplayId::from_hex(&org.sequence(ORDERS)[1])
                .unwrap()
                .position()
                .unwrap()
    );
    assert!(s.sink.stored(ORDERS).is_some());
    assert!(
        s.metric(
            "sfcdc_last_message_timestamp_seconds",
            &[("channel", ORDERS)]
        ) > 0.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_watchdog_reconnects_a_silent_stream() {
    // Keepalives only every 60 s, watchdog at 300 ms. (With no stored position and no event or
    // keepalive yet, a reconnect starts from the preset again; earliest loses nothing.)
    let org = Org::start_with(EmulatorConfig::ephemeral()).await;
    let s = org
        .subscribe(
            &[
                ("SFCDC_STREAM_TIMEOUT", "300ms"),
                ("SFCDC_REPLAY_PRESET", "earliest"),
            ],
            sink(),
        )
        .await;
    eventually("the watchdog to fire", async || {
        (s.metric("sfcdc_reconnects_total", &[("reason", "watchdog")]) >= 1.0).then_some(())
    })
    .await;
    org.emu.bulk(2);
    s.wait_for(2).await;
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_disconnect_mid_batch_loses_and_duplicates_nothing() {
    let org = Org::start().await;
    org.emu.bulk(500);
    org.fault(json!({"kind": "disconnect_after", "events": 137}))
        .await;
    let s = org
        .subscribe(
            &[
                ("SFCDC_REPLAY_PRESET", "earliest"),
                ("SFCDC_BATCH_SIZE", "50"),
            ],
            sink(),
        )
        .await;
    s.wait_for(500).await;
    assert_eq!(
        committed(&s.sink),
        org.sequence(ORDERS),
        "exactly the emulator's sequence"
    );
    assert_eq!(
        s.metric(
            "sfcdc_reconnects_total",
            &[("reason", "service_unavailable")]
        ),
        1.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn service_unavailable_backs_off_until_it_recovers() {
    let org = Org::start().await;
    org.emu.bulk(10);
    org.fault(json!({"kind": "refuse_subscriptions", "seconds": 0.5}))
        .await;
    let s = org
        .subscribe(&[("SFCDC_REPLAY_PRESET", "earliest")], sink())
        .await;
    s.wait_for(10).await;
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    assert!(
        s.metric(
            "sfcdc_reconnects_total",
            &[("reason", "service_unavailable")]
        ) >= 1.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn expired_tokens_are_refreshed_and_the_stream_resumes_exactly() {
    let org = Org::start().await;
    org.emu.bulk(100);
    let s = org
        .subscribe(&[("SFCDC_REPLAY_PRESET", "earliest")], sink())
        .await;
    s.wait_for(100).await;
    org.fault(json!({"kind": "expire_tokens"})).await;
    org.emu.bulk(250);
    s.wait_for(350).await;
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    assert!(s.metric("sfcdc_auth_refreshes_total", &[]) >= 1.0);
    assert!(s.metric("sfcdc_reconnects_total", &[("reason", "auth")]) >= 1.0);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn corrupt_events_are_quarantined_whole_and_the_stream_goes_on() {
    let org = Org::start().await;
    org.fault(json!({"kind": "corrupt_next", "count": 2})).await;
    org.emu.bulk(10);
    let s = org
        .subscribe(&[("SFCDC_REPLAY_PRESET", "earliest")], sink())
        .await;
    s.wait_for(10).await;
    let failed = s.sink.failed();
    assert_eq!(failed.len(), 2);
    assert_eq!(s.sink.events().len(), 8);
    for f in &failed {
        assert!(!f.payload.is_empty(), "the raw bytes are kept");
        assert_eq!(f.schema_id.len(), 22);
        assert_eq!(f.error.kind(), "payload");
    }
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    assert_eq!(
        s.metric("sfcdc_events_quarantined_total", &[("reason", "payload")]),
        2.0
    );
    s.stop().await.unwrap();
}

async fn expired_position(org: &Org) -> ReplayId {
    org.emu.bulk(5);
    let old = ReplayId::from_hex(&org.sequence(ORDERS)[2]).unwrap();
    org.fault(json!({"kind": "expire_events"})).await;
    org.emu.bulk(3);
    old
}

#[tokio::test]
async fn a_rejected_replay_id_with_recovery_earliest_replays_what_is_retained() {
    let org = Org::start().await;
    let old = expired_position(&org).await;
    let stored = sink();
    stored.set_checkpoint(ORDERS, old);
    let s = org
        .subscribe(&[("SFCDC_REPLAY_RECOVERY", "earliest")], stored)
        .await;
    s.wait_for(3).await;
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    assert_eq!(
        s.metric("sfcdc_replay_recoveries_total", &[("reason", "earliest")]),
        1.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_rejected_replay_id_with_recovery_latest_skips_to_new_events() {
    let org = Org::start().await;
    let old = expired_position(&org).await;
    let retained = org.sequence(ORDERS);
    let stored = sink();
    stored.set_checkpoint(ORDERS, old);
    let s = org
        .subscribe(&[("SFCDC_REPLAY_RECOVERY", "latest")], stored)
        .await;
    tokio::time::timeout(PATIENCE, s.sink.wait_for_keepalive())
        .await
        .expect("live after recovery");
    org.emu.bulk(2);
    s.wait_for(2).await;
    let got = committed(&s.sink);
    assert_eq!(got, org.sequence(ORDERS)[retained.len()..]);
    assert_eq!(
        s.metric("sfcdc_replay_recoveries_total", &[("reason", "latest")]),
        1.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_rejected_replay_id_with_recovery_fail_stops_the_channel() {
    let org = Org::start().await;
    let old = expired_position(&org).await;
    let stored = sink();
    stored.set_checkpoint(ORDERS, old);
    let s = org
        .subscribe(&[("SFCDC_REPLAY_RECOVERY", "fail")], stored)
        .await;
    let err = s.finished().await.unwrap_err().to_string();
    assert!(
        err.contains(ORDERS)
            && err.contains("SFCDC_REPLAY_RECOVERY=fail")
            && err.contains("sfcdc reconcile --"),
        "{err}"
    );
}

#[tokio::test]
async fn a_schema_change_mid_stream_decodes_each_event_with_its_own_schema() {
    let org = Org::start().await;
    let s = org.subscribe(&[], sink()).await;
    tokio::time::timeout(PATIENCE, s.sink.wait_for_keepalive())
        .await
        .expect("live");
    let order = org.create_order(json!({})).await;
    org.fault(json!({"kind": "schema_change", "field": "Fulfilment_Notes__c"}))
        .await;
    org.patch_order(
        &order,
        json!({"Fulfilment_Notes__c": "rack 4", "WHMCS_Order_ID__c": "WH-9"}),
    )
    .await;
    s.wait_for(2).await;
    let events = s.sink.events();
    assert_ne!(events[0].schema_id, events[1].schema_id);
    let EventBody::Change(c) = &events[1].body else {
        panic!()
    };
    assert_eq!(
        c.fields.get("Fulfilment_Notes__c").and_then(|v| v.as_str()),
        Some("rack 4")
    );
    assert_eq!(
        c.fields.get("WHMCS_Order_ID__c").and_then(|v| v.as_str()),
        Some("WH-9")
    );
    assert!(c.changed("Fulfilment_Notes__c") && c.changed("WHMCS_Order_ID__c"));
    assert_eq!(s.schemas.fetches(), 2, "one GetSchema per schema id");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn gap_events_decode_with_their_change_types() {
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let s = org.subscribe(&[], sink()).await;
    tokio::time::timeout(PATIENCE, s.sink.wait_for_keepalive())
        .await
        .expect("live");
    org.fault(json!({"kind": "gap", "change_type": "GAP_UPDATE", "record_id": order}))
        .await;
    org.fault(json!({"kind": "gap", "change_type": "GAP_OVERFLOW"}))
        .await;
    s.wait_for(2).await;
    let kinds: Vec<(ChangeType, Vec<String>)> = s
        .sink
        .events()
        .iter()
        .map(|e| match &e.body {
            EventBody::Change(c) => (
                c.change_type,
                c.record_ids.iter().map(|r| r.to_string()).collect(),
            ),
            EventBody::Platform(_) => panic!("change events only"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (ChangeType::GapUpdate, vec![order]),
            (ChangeType::GapOverflow, vec![])
        ]
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_channel_fails_alone_and_names_itself() {
    let org = Org::start().await;
    let channels =
        "/data/OrderChangeEvent,/data/NopeChangeEvent,/event/Order_Fulfilment_Requested__e";
    let s = org
        .subscribe(
            &[
                ("SFCDC_CHANNELS", channels),
                ("SFCDC_REPLAY_PRESET", "earliest"),
            ],
            sink(),
        )
        .await;
    org.emu.bulk(3);
    let order = org.create_order(json!({})).await;
    let (status, _) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/Order_Fulfilment_Requested__e",
            Some(json!({"OrderId__c": order, "Priority__c": "High"})),
        )
        .await;
    assert_eq!(status, 201);
    s.wait_for(5).await;
    let platform: Vec<_> = s
        .sink
        .events()
        .into_iter()
        .filter(|e| matches!(e.body, EventBody::Platform(_)))
        .collect();
    assert_eq!(platform.len(), 1);
    let EventBody::Platform(p) = &platform[0].body else {
        unreachable!()
    };
    assert_eq!(&*p.topic, "/event/Order_Fulfilment_Requested__e");
    assert_eq!(
        p.fields.get("OrderId__c").and_then(|v| v.as_str()),
        Some(order.as_str())
    );
    let err = s.stop().await.unwrap_err().to_string();
    assert!(
        err.contains("/data/NopeChangeEvent") && err.contains("not found"),
        "{err}"
    );
    assert!(!err.contains("/data/OrderChangeEvent:"), "{err}");
}

#[tokio::test]
async fn failed_commits_resume_from_the_last_committed_batch() {
    let org = Org::start().await;
    org.emu.bulk(60);
    let flaky = sink();
    flaky.fail_next(2);
    let s = org
        .subscribe(
            &[
                ("SFCDC_REPLAY_PRESET", "earliest"),
                ("SFCDC_BATCH_SIZE", "10"),
            ],
            flaky,
        )
        .await;
    s.wait_for(60).await;
    assert_eq!(committed(&s.sink), org.sequence(ORDERS));
    assert!(s.metric("sfcdc_reconnects_total", &[("reason", "commit_failed")]) >= 1.0);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_commit_failure_retrying_cannot_mend_stops_the_channel_and_commits_nothing_more() {
    for (kind, says) in [
        (SinkErrorKind::Permanent, "the sink cannot go on"),
        (SinkErrorKind::Fenced, "may no longer commit"),
    ] {
        let org = Org::start().await;
        org.emu.bulk(30);
        let broken = sink();
        broken.fail_next_with(1, kind);
        let s = org
            .subscribe(
                &[
                    ("SFCDC_REPLAY_PRESET", "earliest"),
                    ("SFCDC_BATCH_SIZE", "10"),
                ],
                broken,
            )
            .await;
        let sink = s.sink.clone();
        let err = s.finished().await.unwrap_err().to_string();
        assert!(
            err.contains(ORDERS) && err.contains(says) && err.contains("injected commit failure"),
            "{kind:?}: {err}"
        );
        assert!(sink.replay_ids().is_empty(), "{kind:?}: nothing committed");
    }
}

/// Runs `sfcdc tail` with `args` against `org`, logging in with a password.
async fn tail(org: &Org, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, org.emu.ca_pem().unwrap()).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .arg("tail")
        .args(args)
        .env_clear()
        .env("SFCDC_PUBSUB_ENDPOINT", org.emu.grpc_url())
        .env("SFCDC_CA_CERT", &ca)
        .env("SF_AUTH", "password")
        .env("SF_LOGIN_URL", org.emu.instance_url())
        .env("SF_CLIENT_ID", "sfcdc-demo")
        .env("SF_CLIENT_SECRET", "sfcdc-demo-secret")
        .env("SF_USERNAME", "demo@sfcdc.test")
        .env("SF_PASSWORD", "sfcdc-demo-password")
        .output();
    let out = tokio::time::timeout(PATIENCE, out)
        .await
        .expect("tail finishes")
        .unwrap();
    crate::common::logs::keep("tail", &out.stderr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn sfcdc_tail_format_none_counts_what_decodes_and_what_does_not() {
    let org = Org::start().await;
    org.emu.bulk(6);
    org.fault(json!({"kind": "corrupt_next", "count": 1})).await;
    org.emu.bulk(2);
    let dir = tempfile::tempdir().unwrap();
    let out = tail(
        &org,
        dir.path(),
        &[
            ORDERS, "--from", "earliest", "--count", "8", "--format", "none",
        ],
    )
    .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("8 events (1 undecodable) in "),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("events/s"), "{stdout}");
}

#[tokio::test]
async fn sfcdc_tail_prints_one_json_line_per_event() {
    let org = Org::start().await;
    org.emu.bulk(4);
    let dir = tempfile::tempdir().unwrap();
    let out = tail(
        &org,
        dir.path(),
        &[ORDERS, "--from", "earliest", "--count", "3"],
    )
    .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let seq = org.sequence(ORDERS);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["replay_id"], seq[i]);
        for key in [
            "schema_id",
            "change_type",
            "entity",
            "record_ids",
            "changed_fields",
            "nulled_fields",
            "diff_fields",
            "fields",
        ] {
            assert!(l.get(key).is_some(), "{key} in {l}");
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("sfcdc-demo-secret") && !stderr.contains("password=demo"),
        "{stderr}"
    );

    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args(["tail", ORDERS])
        .env_clear()
        .env("SFCDC_BATCH_SIZE", "500")
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    crate::common::logs::keep("tail-bad-config", &bad.stderr);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SFCDC_BATCH_SIZE"));
}
