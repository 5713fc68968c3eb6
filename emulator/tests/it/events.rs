//! Change events as a client sees them: decoded with apache-avro from the schema GetSchema
//! serves, header filled, unchanged fields null, bitmaps decoded field by field.

use apache_avro::types::Value as Avro;
use serde_json::json;
use sfcdc_emulator::proto::{ConsumerEvent, ReplayPreset};

use crate::common::*;

const ORDERS: &str = "/data/OrderChangeEvent";

struct Decoded {
    value: Avro,
    schema: apache_avro::Schema,
}

impl Decoded {
    fn header(&self) -> &Avro {
        field(&self.value, "ChangeEventHeader")
    }

    fn change_type(&self) -> String {
        match field(self.header(), "changeType") {
            Avro::Enum(_, s) => s.clone(),
            other => panic!("changeType {other:?}"),
        }
    }

    fn bitmap(&self, name: &str) -> Vec<String> {
        bitmap_names(&self.schema, &strings(field(self.header(), name)))
    }

    fn raw_bitmap(&self, name: &str) -> Vec<String> {
        strings(field(self.header(), name))
    }

    /// Names of the top-level fields (after the header) that are not null.
    fn non_null(&self) -> Vec<String> {
        let Avro::Record(fields) = &self.value else {
            panic!()
        };
        fields
            .iter()
            .skip(1)
            .filter(|(_, v)| !matches!(v, Avro::Union(0, _) | Avro::Null))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

async fn decode_all(org: &Org, client: &mut Client, events: &[ConsumerEvent]) -> Vec<Decoded> {
    let mut out = Vec::new();
    for e in events {
        let ev = e.event.as_ref().unwrap();
        let json = org.schema_json(client, &ev.schema_id).await;
        out.push(Decoded {
            value: decode(&json, &ev.payload),
            schema: apache_avro::Schema::parse_str(&json).unwrap(),
        });
    }
    out
}

#[tokio::test]
async fn create_update_delete_undelete_round_trip_through_avro() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    sub.live().await;

    let id = org
        .create_order(json!({"BillingCity": "Leeds", "Description": "first"}))
        .await;
    org.patch_order(&id, json!({"Status": "Approved", "BillingCity": "York", "BillingPostalCode": "YO1 7HH", "Description": null})).await;
    let (status, _) = org
        .rest(
            reqwest::Method::DELETE,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let resp = org
        .http
        .post(org.url(&format!("/emulator/sobjects/Order/{id}/undelete")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);

    let (status, _) = org
        .rest(
            reqwest::Method::PATCH,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            Some(json!({"PoNumber": null})),
        )
        .await;
    assert_eq!(status, 204, "nulling an unset field is a no-op change");
    let events = sub.events(5).await;
    let d = decode_all(&org, &mut client, &events).await;
    assert_eq!(d[4].change_type(), "UPDATE");
    assert_eq!(d[4].bitmap("changedFields"), ["LastModifiedDate"]);
    assert!(
        string(field(d[1].header(), "changeOrigin"))
            .starts_with("com/salesforce/api/rest/60.0;client=sfcdc-demo")
    );
    assert_eq!(
        d.iter().map(Decoded::change_type).collect::<Vec<_>>(),
        ["CREATE", "UPDATE", "DELETE", "UNDELETE", "UPDATE"]
    );

    for e in &d {
        let h = e.header();
        assert_eq!(string(field(h, "entityName")), "Order");
        assert_eq!(strings(field(h, "recordIds")), std::slice::from_ref(&id));
        assert!(string(field(h, "changeOrigin")).starts_with("com/salesforce/api/"));
        assert_eq!(string(field(h, "transactionKey")).len(), 36);
        assert_eq!(field(h, "sequenceNumber"), &Avro::Int(1));
        let Avro::Long(ts) = field(h, "commitTimestamp") else {
            panic!()
        };
        assert!(*ts > 1_600_000_000_000);
        let Avro::Long(n) = field(h, "commitNumber") else {
            panic!()
        };
        assert!(
            *n > 1 << 53,
            "commit numbers exceed f64 precision, as in real orgs"
        );
        assert_eq!(string(field(h, "commitUser")).len(), 18);
        assert!(strings(field(h, "diffFields")).is_empty());
    }

    // CREATE: populated fields have values, changedFields is empty.
    let create = &d[0];
    assert!(create.raw_bitmap("changedFields").is_empty());
    assert_eq!(string(field(&create.value, "Status")), "Draft");
    assert_eq!(
        string(field(field(&create.value, "BillingAddress"), "City")),
        "Leeds"
    );
    assert!(create.non_null().contains(&"OrderNumber".to_string()));

    // UPDATE: only what changed is non-null, and the bitmaps say exactly that.
    let update = &d[1];
    let mut changed = update.bitmap("changedFields");
    changed.sort();
    assert_eq!(
        changed,
        [
            "BillingAddress.City",
            "BillingAddress.PostalCode",
            "Description",
            "LastModifiedDate",
            "Status"
        ]
    );
    assert_eq!(update.bitmap("nulledFields"), ["Description"]);
    let mut non_null = update.non_null();
    non_null.sort();
    assert_eq!(non_null, ["BillingAddress", "LastModifiedDate", "Status"]);
    let address = field(&update.value, "BillingAddress");
    assert_eq!(string(field(address, "City")), "York");
    assert_eq!(string(field(address, "PostalCode")), "YO1 7HH");
    assert_eq!(field(address, "Street"), &Avro::Null);
    for raw in update.raw_bitmap("changedFields") {
        let hex = raw.rsplit("0x").next().unwrap();
        assert_eq!(hex.len() % 2, 0, "even digit count: {raw}");
        assert_eq!(hex, hex.to_uppercase(), "upper case: {raw}");
    }
    assert!(
        update.raw_bitmap("changedFields")[0].starts_with("0x"),
        "top-level element first"
    );

    // DELETE and UNDELETE carry the header only.
    assert!(d[2].non_null().is_empty());
    assert!(d[3].non_null().is_empty());
}

#[tokio::test]
async fn the_all_changes_channel_mixes_entities_each_with_its_schema() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch("/data/ChangeEvents", ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    sub.live().await;
    let order = org.create_order(json!({})).await;
    let (status, _) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/OrderItem",
            Some(json!({"OrderId": order, "Quantity": 3.0, "UnitPrice": 10.0})),
        )
        .await;
    assert_eq!(status, 201);
    let events = sub.events(3).await;
    let d = decode_all(&org, &mut client, &events).await;
    let entities: Vec<&str> = d
        .iter()
        .map(|e| string(field(e.header(), "entityName")))
        .collect();
    assert_eq!(entities, ["Order", "OrderItem", "Order"]);
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_ref().unwrap().schema_id.as_str())
        .collect();
    assert_ne!(ids[0], ids[1], "each event carries its own entity's schema");
    // The roll-up of TotalAmount is a second change in the item's transaction.
    assert_eq!(field(d[2].header(), "sequenceNumber"), &Avro::Int(2));
    assert_eq!(
        d[2].bitmap("changedFields"),
        ["TotalAmount", "LastModifiedDate"]
    );
    assert_eq!(field(&d[2].value, "TotalAmount"), &Avro::Double(30.0));
    assert_eq!(
        string(field(d[1].header(), "transactionKey")),
        string(field(d[2].header(), "transactionKey"))
    );
}

#[tokio::test]
async fn platform_events_published_over_rest_carry_created_fields() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let topic = "/event/Order_Fulfilment_Requested__e";
    let mut sub = Sub::open(&mut client, fetch(topic, ReplayPreset::Latest, vec![], 10))
        .await
        .unwrap();
    sub.live().await;
    let order = org.create_order(json!({})).await;
    let (status, body) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/Order_Fulfilment_Requested__e",
            Some(json!({"OrderId__c": order, "RequestedBy__c": "ops@example.com", "Priority__c": "High"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["id"].as_str().unwrap().starts_with("e00"));
    assert_eq!(body["success"], true);
    let events = sub.events(1).await;
    let ev = events[0].event.as_ref().unwrap();
    let json = org.schema_json(&mut client, &ev.schema_id).await;
    let v = decode(&json, &ev.payload);
    assert!(matches!(field(&v, "CreatedDate"), Avro::Long(t) if *t > 1_600_000_000_000));
    assert_eq!(string(field(&v, "CreatedById")).len(), 18);
    assert_eq!(string(field(&v, "OrderId__c")), order);
    assert_eq!(string(field(&v, "Priority__c")), "High");

    let (status, body) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/Order_Fulfilment_Requested__e",
            Some(json!({"Bogus__c": 1})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
}

#[tokio::test]
async fn bulk_generation_mixes_creates_approvals_and_address_changes() {
    let org = Org::start().await;
    let report = org.emu.bulk(1000);
    assert_eq!(report.events(), 1000);
    assert!(
        (50..=150).contains(&report.approved),
        "about 10% approvals: {report:?}"
    );
    assert!(
        report.created > 100 && report.address_changes > 300,
        "{report:?}"
    );

    let mut client = org.client().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Earliest, vec![], 100),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    while events.len() < 1000 {
        sub.send(more(100)).await;
        events.extend(sub.events(100).await);
    }
    assert_eq!(
        hex::encode(&events[999].replay_id),
        report.last_replay_id.clone().unwrap()
    );
    let d = decode_all(&org, &mut client, &events[..200]).await;
    let approvals: Vec<&Decoded> = d
        .iter()
        .filter(|e| {
            e.change_type() == "UPDATE" && e.bitmap("changedFields").contains(&"Status".to_string())
        })
        .collect();
    assert!(!approvals.is_empty());
    for a in approvals {
        assert_eq!(string(field(&a.value, "Status")), "Approved");
        let id = &strings(field(a.header(), "recordIds"))[0];
        assert!(report.approved_ids.contains(id));
    }
    let control = org
        .http
        .post(org.url("/emulator/bulk"))
        .json(&json!({"count": 50}))
        .send()
        .await
        .unwrap();
    assert_eq!(control.status(), 200);
    let body: serde_json::Value = control.json().await.unwrap();
    assert_eq!(
        body["created"].as_u64().unwrap()
            + body["approved"].as_u64().unwrap()
            + body["address_changes"].as_u64().unwrap(),
        50
    );
}

#[tokio::test]
async fn stats_name_the_last_replay_id_of_each_topic() {
    let org = Org::start().await;
    let report = org.emu.bulk(20);
    let resp = org
        .http
        .get(org.url("/emulator/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stats: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(stats["events_retained"][ORDERS], 20);
    assert_eq!(
        stats["last_replay_ids"][ORDERS].as_str(),
        report.last_replay_id.as_deref()
    );
    // A topic without events has no last replay id.
    assert!(stats["last_replay_ids"]["/event/Order_Fulfilment_Requested__e"].is_null());
    assert_eq!(
        org.emu.stats().last_replay_ids.get(ORDERS),
        report.last_replay_id.as_ref()
    );
}
