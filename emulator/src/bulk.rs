//! Bulk generation of realistic order change events, for benchmarks and soak tests.
//!
//! Events go through the org model exactly like REST changes (so records, bitmaps and schemas
//! stay consistent) but without HTTP round trips, and the world lock is taken per chunk so
//! subscribers keep streaming while a large backlog is generated. The mix is about 30% creates,
//! 10% status updates to `Approved` (each of a different Draft order, so each is a provisioning
//! trigger), and 60% address changes. One approval event in five is a mass approval: two to five
//! drafts approved in one transaction, which Salesforce reports as one change event listing every
//! order, as a list-view mass action or a Data Loader batch would.

use std::sync::Mutex;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ids::SfId;
use super::org::{UpdateItem, now_ms};
use super::world::World;

/// Events generated per lock acquisition.
const CHUNK: usize = 2_000;

const CITIES: [(&str, &str, &str); 8] = [
    ("London", "EC1A 1BB", "GB"),
    ("Paris", "75001", "FR"),
    ("Berlin", "10115", "DE"),
    ("Madrid", "28001", "ES"),
    ("Austin", "78701", "US"),
    ("Toronto", "M5H 2N2", "CA"),
    ("Dublin", "D02 X285", "IE"),
    ("Lisbon", "1100-148", "PT"),
];

/// What a bulk run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkReport {
    /// Order CREATE events.
    pub created: usize,
    /// Orders approved (each by an UPDATE setting `Status` to `Approved`, alone or in a mass
    /// approval).
    pub approved: usize,
    /// Mass approvals: one event each, for several orders.
    pub mass_approvals: usize,
    /// Orders approved in mass approvals (counted in `approved` too).
    pub mass_approved: usize,
    /// Order UPDATE events changing the billing address.
    pub address_changes: usize,
    /// Ids of the approved orders, in order.
    pub approved_ids: Vec<String>,
    /// Replay id (hex) of the last event appended to `/data/OrderChangeEvent`.
    pub last_replay_id: Option<String>,
}

impl BulkReport {
    /// Events appended to `/data/OrderChangeEvent`.
    pub fn events(&self) -> usize {
        self.created + self.approved - self.mass_approved
            + self.mass_approvals
            + self.address_changes
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Appends `n` order change events to the world.
pub fn generate(world: &Mutex<World>, n: usize) -> BulkReport {
    let mut report = BulkReport::default();
    let (mut drafts, mut orders, accounts, seed) = {
        let w = world.lock().expect("world lock");
        let drafts: Vec<SfId> = w
            .org
            .records_of("Order")
            .filter(|r| r.text("Status") == Some("Draft"))
            .map(|r| r.id.clone())
            .collect();
        let orders: Vec<SfId> = w.org.records_of("Order").map(|r| r.id.clone()).collect();
        let accounts: Vec<SfId> = w.org.records_of("Account").map(|r| r.id.clone()).collect();
        (drafts, orders, accounts, w.bus.high_water())
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut done = 0;
    while done < n {
        let mut w = world.lock().expect("world lock");
        let actor = w.internal_actor();
        let end = (done + CHUNK).min(n);
        for _ in done..end {
            let now = now_ms();
            let roll = rng.random_range(0..100);
            let (city, postcode, country) = CITIES[rng.random_range(0..CITIES.len())];
            let result = if roll < 2 && drafts.len() >= 2 {
                let k = rng.random_range(2..=5).min(drafts.len());
                let ids: Vec<SfId> = (0..k)
                    .map(|_| drafts.swap_remove(rng.random_range(0..drafts.len())))
                    .collect();
                let items: Vec<UpdateItem> = ids
                    .iter()
                    .map(|id| UpdateItem {
                        sobject: "Order".into(),
                        id: Some(id.to_string()),
                        input: obj(json!({"Status": "Approved"})),
                    })
                    .collect();
                let done = w.mutate(now, |org| {
                    let (outcomes, changes) = org.update_many(&items, true, &actor, now);
                    match outcomes.into_iter().find_map(Result::err) {
                        Some(e) => Err(e),
                        None => Ok(((), changes)),
                    }
                });
                if done.is_ok() {
                    report.approved += k;
                    report.mass_approvals += 1;
                    report.mass_approved += k;
                    report.approved_ids.extend(ids.iter().map(SfId::to_string));
                }
                done
            } else if roll < 10 && !drafts.is_empty() {
                let id = drafts.swap_remove(rng.random_range(0..drafts.len()));
                report.approved += 1;
                report.approved_ids.push(id.to_string());
                let input = obj(json!({"Status": "Approved"}));
                w.mutate(now, |org| {
                    org.update("Order", &id, &input, &actor, now)
                        .map(|c| ((), c))
                })
            } else if roll < 40 || orders.is_empty() {
                let Some(account) = accounts.get(rng.random_range(0..accounts.len().max(1))) else {
                    break;
                };
                let number = rng.random_range(1000..99_999);
                let input = obj(json!({
                    "AccountId": account.as_str(),
                    "Status": "Draft",
                    "EffectiveDate": super::org::format_date(now),
                    "Name": format!("Bulk order {number}"),
                    "Type": "New",
                    "BillingCity": city,
                    "BillingPostalCode": postcode,
                    "BillingCountryCode": country,
                    "Description": "Generated by the sfcdc emulator",
                }));
                match w.mutate(now, |org| org.create("Order", &input, &actor, now)) {
                    Ok(id) => {
                        report.created += 1;
                        drafts.push(id.clone());
                        orders.push(id);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            } else {
                let id = &orders[rng.random_range(0..orders.len())];
                report.address_changes += 1;
                let street = format!("{} High Street", rng.random_range(1..400));
                let input = obj(
                    json!({"BillingStreet": street, "BillingCity": city, "BillingPostalCode": postcode}),
                );
                w.mutate(now, |org| {
                    org.update("Order", id, &input, &actor, now)
                        .map(|c| ((), c))
                })
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "Bulk generation skipped an event");
            }
        }
        report.last_replay_id = w
            .bus
            .last("/data/OrderChangeEvent")
            .map(|e| hex::encode(&e.replay_bytes));
        done = end;
    }
    report
}
