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

/// [`decode_all`] for many events: each schema fetched once.
async fn decode_cached(org: &Org, client: &mut Client, events: &[ConsumerEvent]) -> Vec<Decoded> {
    let mut schemas = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let ev = e.event.as_ref().unwrap();
        if !schemas.contains_key(&ev.schema_id) {
            let json = org.schema_json(client, &ev.schema_id).await;
            let schema = apache_avro::Schema::parse_str(&json).unwrap();
            schemas.insert(ev.schema_id.clone(), schema);
        }
        let schema = &schemas[&ev.schema_id];
        let mut reader = &ev.payload[..];
        let value = try_decode(schema, &mut reader).expect("payload decodes");
        assert!(reader.is_empty(), "trailing bytes after the datum");
        out.push(Decoded {
            value,
            schema: schema.clone(),
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
    let approval_events = report.approved - report.mass_approved + report.mass_approvals;
    assert!(
        (50..=150).contains(&approval_events),
        "about 10% approvals: {report:?}"
    );
    assert!(
        report.created > 100 && report.address_changes > 300,
        "{report:?}"
    );
    assert!(
        report.mass_approvals > 0 && report.mass_approved >= 2 * report.mass_approvals,
        "a share of merged mass approvals: {report:?}"
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
    // Every approval the report counts is on the wire, each order in exactly one event; a mass
    // approval is one event listing its orders, with identical changes and one transaction.
    let d = decode_cached(&org, &mut client, &events).await;
    let approvals: Vec<&Decoded> = d
        .iter()
        .filter(|e| {
            e.change_type() == "UPDATE" && e.bitmap("changedFields").contains(&"Status".to_string())
        })
        .collect();
    assert_eq!(approvals.len(), approval_events);
    let mut on_the_wire = Vec::new();
    let mut merged = 0;
    for a in &approvals {
        assert_eq!(string(field(&a.value, "Status")), "Approved");
        assert_eq!(field(a.header(), "sequenceNumber"), &Avro::Int(1));
        let ids = strings(field(a.header(), "recordIds"));
        if ids.len() > 1 {
            merged += 1;
            assert!((2..=5).contains(&ids.len()), "{ids:?}");
            let mut changed = a.bitmap("changedFields");
            changed.sort();
            assert_eq!(changed, ["LastModifiedDate", "Status"]);
        }
        on_the_wire.extend(ids);
    }
    assert_eq!(merged, report.mass_approvals);
    assert_eq!(
        on_the_wire, report.approved_ids,
        "the same orders, in order"
    );
    let distinct: std::collections::BTreeSet<&String> = on_the_wire.iter().collect();
    assert_eq!(distinct.len(), report.approved, "each order approved once");
    // Every approved order reads Approved.
    let sample = &report.approved_ids[..report.approved_ids.len().min(50)];
    let listed = sample
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let r = org
        .query(&format!(
            "SELECT Id FROM Order WHERE Status = 'Approved' AND Id IN ({listed})"
        ))
        .await;
    assert_eq!(r["totalSize"], sample.len());
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
        body["created"].as_u64().unwrap() + body["approved"].as_u64().unwrap()
            - body["mass_approved"].as_u64().unwrap()
            + body["mass_approvals"].as_u64().unwrap()
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

/// sObject Collections create (`POST …/composite/sobjects`): one transaction, a save result
/// with the new id per record, one CREATE event each sharing the transaction key with rising
/// sequence numbers; with `allOrNone`, one bad record fails them all and nothing is written.
#[tokio::test]
async fn a_collection_create_is_one_transaction_of_create_events() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let account = org.first_account().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    sub.live().await;
    let order = |name: &str| {
        json!({"attributes": {"type": "Order"}, "AccountId": account, "EffectiveDate": "2024-06-01",
               "Status": "Draft", "Name": name})
    };
    let path = "/services/data/v62.0/composite/sobjects";
    let (status, results) = org
        .rest(
            reqwest::Method::POST,
            path,
            Some(json!({"allOrNone": true, "records": [order("A"), {"attributes": {"type": "Order"}, "Name": "no account"}]})),
        )
        .await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(
        results[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    let (status, results) = org
        .rest(
            reqwest::Method::POST,
            path,
            Some(json!({"records": [order("B"), order("C"), {"attributes": {"type": "Order"}, "id": "801Hs0000000Q0vIAE"}]})),
        )
        .await;
    assert_eq!(status, 200, "{results}");
    let ids: Vec<String> = results.as_array().unwrap()[..2]
        .iter()
        .map(|r| {
            assert_eq!(r["success"], true, "{r}");
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(results[2]["errors"][0]["fields"], json!(["Id"]));
    let events = sub.events(2).await;
    let d = decode_all(&org, &mut client, &events).await;
    for (i, e) in d.iter().enumerate() {
        assert_eq!(e.change_type(), "CREATE");
        assert_eq!(strings(field(e.header(), "recordIds")), [ids[i].clone()]);
        assert_eq!(
            field(e.header(), "sequenceNumber"),
            &Avro::Int(i as i32 + 1)
        );
    }
    assert_eq!(
        field(d[0].header(), "transactionKey"),
        field(d[1].header(), "transactionKey")
    );
}

/// The most a collection create holds, 200 records of mixed objects with `allOrNone`, is one
/// transaction: 200 save results in order, the Orders' CREATE events numbered 1 to 200 under one
/// transaction key (the Account has no change events). A record more is refused whole.
#[tokio::test]
async fn a_collection_create_of_200_records_is_one_transaction() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let account = org.first_account().await;
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    sub.live().await;
    let path = "/services/data/v62.0/composite/sobjects";
    let before = org.emu.stats().events_retained.get(ORDERS).copied();
    let mut records: Vec<_> = (0..199)
        .map(|i| {
            json!({"attributes": {"type": "Order"}, "AccountId": account, "EffectiveDate": "2024-06-01",
                   "Status": "Draft", "Name": format!("Collection order {i}")})
        })
        .collect();
    records.insert(
        100,
        json!({"attributes": {"type": "Account"}, "Name": "Collection account"}),
    );
    let mut too_many = records.clone();
    too_many.push(records[0].clone());
    let (status, body) = org
        .rest(
            reqwest::Method::POST,
            path,
            Some(json!({"allOrNone": true, "records": too_many})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "EXCEEDED_ID_LIMIT");
    assert_eq!(
        org.emu.stats().events_retained.get(ORDERS).copied(),
        before,
        "nothing written"
    );

    let (status, results) = org
        .rest(
            reqwest::Method::POST,
            path,
            Some(json!({"allOrNone": true, "records": records})),
        )
        .await;
    assert_eq!(status, 200, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 200);
    let ids: Vec<String> = results
        .iter()
        .map(|r| {
            assert_eq!(
                (r["success"].as_bool(), r["errors"].as_array().map(Vec::len)),
                (Some(true), Some(0)),
                "{r}"
            );
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(ids[100].starts_with("001"), "{}", ids[100]);
    let order_ids: Vec<&String> = ids.iter().filter(|id| id.starts_with("801")).collect();
    assert_eq!(order_ids.len(), 199);
    let mut events = sub.events(100).await;
    sub.send(more(100)).await;
    events.extend(sub.events(99).await);
    let d = decode_cached(&org, &mut client, &events).await;
    let key = field(d[0].header(), "transactionKey").clone();
    for (i, e) in d.iter().enumerate() {
        assert_eq!(e.change_type(), "CREATE");
        assert_eq!(
            strings(field(e.header(), "recordIds")),
            [order_ids[i].clone()]
        );
        assert_eq!(
            field(e.header(), "sequenceNumber"),
            &Avro::Int(i as i32 + 1)
        );
        assert_eq!(field(e.header(), "transactionKey"), &key);
    }
}

/// sObject Collections update (`PATCH …/composite/sobjects`, as jsforce's multi-record `update`
/// and simple-salesforce's `restful("composite/sobjects", method="PATCH")` send it): one
/// transaction, one save result per record, and the same change to several records is one change
/// event whose `recordIds` lists them all.
#[tokio::test]
async fn a_collection_update_answers_per_record_and_merges_identical_changes() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let ids = [
        org.create_order(json!({})).await,
        org.create_order(json!({})).await,
        org.create_order(json!({})).await,
        org.create_order(json!({})).await,
    ];
    let mut sub = Sub::open(
        &mut client,
        fetch(ORDERS, ReplayPreset::Latest, vec![], 100),
    )
    .await
    .unwrap();
    sub.live().await;
    let record = |id: &str, fields: serde_json::Value| {
        let mut r = json!({"attributes": {"type": "Order"}, "id": id});
        r.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        r
    };
    let body = json!({
        "allOrNone": false,
        "records": [
            record(&ids[0], json!({"Status": "Approved"})),
            record(&ids[1], json!({"Description": "changed alone"})),
            record(&ids[2], json!({"Status": "Approved"})),
            record("not-an-id", json!({"Status": "Approved"})),
            record(&ids[3], json!({"Status": "Approved"})),
            record(&ids[1], json!({"Nope__c": 1})),
        ],
    });
    let (status, results) = org
        .rest(
            reqwest::Method::PATCH,
            "/services/data/v62.0/composite/sobjects",
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{results}");
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 6);
    for (i, id) in [(0, &ids[0]), (1, &ids[1]), (2, &ids[2]), (4, &ids[3])] {
        assert_eq!(
            results[i],
            json!({"id": id, "success": true, "errors": []}),
            "{i}"
        );
    }
    assert_eq!(results[3]["success"], false);
    assert_eq!(results[3]["errors"][0]["statusCode"], "MALFORMED_ID");
    assert_eq!(results[3]["errors"][0]["fields"], json!(["Id"]));
    assert!(results[3].get("id").is_none());
    assert_eq!(results[5]["errors"][0]["statusCode"], "INVALID_FIELD");
    assert_eq!(results[5]["errors"][0]["fields"], json!(["Nope__c"]));

    let events = sub.events(2).await;
    let d = decode_all(&org, &mut client, &events).await;
    let merged = d[0].header();
    assert_eq!(
        strings(field(merged, "recordIds")),
        [ids[0].clone(), ids[2].clone(), ids[3].clone()]
    );
    assert_eq!(d[0].change_type(), "UPDATE");
    let mut changed = d[0].bitmap("changedFields");
    changed.sort();
    assert_eq!(changed, ["LastModifiedDate", "Status"]);
    assert_eq!(field(merged, "sequenceNumber"), &Avro::Int(1));
    let alone = d[1].header();
    assert_eq!(strings(field(alone, "recordIds")), [ids[1].clone()]);
    assert_eq!(field(alone, "sequenceNumber"), &Avro::Int(2));
    assert_eq!(
        string(field(merged, "transactionKey")),
        string(field(alone, "transactionKey")),
        "one transaction"
    );
    for id in [&ids[0], &ids[2], &ids[3]] {
        let (_, rec) = org
            .rest(
                reqwest::Method::GET,
                &format!("/services/data/v62.0/sobjects/Order/{id}"),
                None,
            )
            .await;
        assert_eq!(rec["Status"], "Approved");
    }

    // All or none: one invalid record fails them all, and nothing changes or is published.
    let before = org.emu.stats().events_retained[ORDERS];
    let (status, results) = org
        .rest(
            reqwest::Method::PATCH,
            "/services/data/v62.0/composite/sobjects/",
            Some(json!({"allOrNone": true, "records": [
                record(&ids[1], json!({"Status": "Approved"})),
                record(&ids[2], json!({"Status": "Exploded"})),
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{results}");
    assert_eq!(
        results[0],
        json!({"success": false, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []}]})
    );
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    );
    assert_eq!(org.emu.stats().events_retained[ORDERS], before);
    let (_, rec) = org
        .rest(
            reqwest::Method::GET,
            &format!("/services/data/v62.0/sobjects/Order/{}", ids[1]),
            None,
        )
        .await;
    assert_eq!(rec["Status"], "Draft");

    // More than 200 records is refused whole.
    let many: Vec<_> = (0..201)
        .map(|_| record(&ids[0], json!({"Description": "x"})))
        .collect();
    let (status, body) = org
        .rest(
            reqwest::Method::PATCH,
            "/services/data/v62.0/composite/sobjects",
            Some(json!({"records": many})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "EXCEEDED_ID_LIMIT");
}

/// Deleting an order deletes its items in the same transaction: one DELETE event for the items,
/// listing them all, as Salesforce merges identical changes.
#[tokio::test]
async fn deleting_an_order_publishes_one_merged_delete_for_its_items() {
    let org = Org::start().await;
    let mut client = org.client().await;
    let order = org.create_order(json!({})).await;
    let mut items = Vec::new();
    for _ in 0..3 {
        let (status, created) = org
            .rest(
                reqwest::Method::POST,
                "/services/data/v62.0/sobjects/OrderItem",
                Some(json!({"OrderId": order, "Quantity": 1, "UnitPrice": 5})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        items.push(created["id"].as_str().unwrap().to_owned());
    }
    let mut sub = Sub::open(
        &mut client,
        fetch(
            "/data/OrderItemChangeEvent",
            ReplayPreset::Latest,
            vec![],
            10,
        ),
    )
    .await
    .unwrap();
    sub.live().await;
    let (status, _) = org
        .rest(
            reqwest::Method::DELETE,
            &format!("/services/data/v62.0/sobjects/Order/{order}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let events = sub.events(1).await;
    let d = decode_all(&org, &mut client, &events).await;
    assert_eq!(d[0].change_type(), "DELETE");
    assert_eq!(strings(field(d[0].header(), "recordIds")), items);
    assert_eq!(field(d[0].header(), "sequenceNumber"), &Avro::Int(2));
    // Nothing else follows on the item channel.
    let next = tokio::time::timeout(std::time::Duration::from_millis(600), sub.next())
        .await
        .ok()
        .and_then(|r| r.ok().flatten());
    assert!(
        next.as_ref().is_none_or(|r| r.events.is_empty()),
        "{next:?}"
    );
}
