//! Bulk generation of realistic order change events, for benchmarks and soak tests.
//!
//! Events go through the org model exactly like REST changes (so records, bitmaps and schemas
//! stay consistent) but without HTTP round trips, and the world lock is taken per chunk so
//! subscribers keep streaming while a large backlog is generated. The mix is about 30% creates,
//! 10% status updates to `Approved` (each of a different order still Draft when it is approved,
//! so each is a provisioning trigger), and 60% address changes. One approval event in five is a
//! mass approval: two to five drafts approved in one transaction, which Salesforce reports as one
//! change event listing every order, as a list-view mass action or a Data Loader batch would.
//!
//! The [`BulkReport`] counts what was committed, nothing else: benchmarks and tests expect one
//! provisioning job per order in `approved_ids`, and [`BulkReport::events`] is the number of
//! events appended to `/data/OrderChangeEvent`.

use std::sync::Mutex;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ids::SfId;
use super::org::{Actor, Org, OrgError, UpdateItem, now_ms};
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

/// Takes up to `k` random orders from `drafts` that are still Draft in the org (a REST client
/// may have deleted or approved one since the list was made); the others leave the list.
fn take_drafts(org: &Org, drafts: &mut Vec<SfId>, k: usize, rng: &mut ChaCha8Rng) -> Vec<SfId> {
    let mut out = Vec::with_capacity(k.min(drafts.len()));
    while out.len() < k && !drafts.is_empty() {
        let id = drafts.swap_remove(rng.random_range(0..drafts.len()));
        if org
            .get(&id)
            .is_some_and(|r| r.text("Status") == Some("Draft"))
        {
            out.push(id);
        }
    }
    out
}

/// Approves `ids` in one transaction: one order alone, or several as a mass approval, whose
/// identical changes Salesforce (and [`World::commit`]) merges into one change event listing
/// them all. Counted in `report` once committed.
fn approve(
    w: &mut World,
    ids: &[SfId],
    actor: &Actor,
    now: i64,
    report: &mut BulkReport,
) -> Result<(), OrgError> {
    let input = obj(json!({"Status": "Approved"}));
    match ids {
        [] => return Ok(()),
        [id] => w.mutate(now, |org| {
            org.update("Order", id, &input, actor, now).map(|c| ((), c))
        })?,
        _ => {
            let items: Vec<UpdateItem> = ids
                .iter()
                .map(|id| UpdateItem {
                    sobject: "Order".into(),
                    id: Some(id.to_string()),
                    input: input.clone(),
                })
                .collect();
            w.mutate(now, |org| {
                let (outcomes, changes) = org.update_many(&items, true, actor, now);
                match outcomes.into_iter().find_map(Result::err) {
                    Some(e) => Err(e),
                    None => Ok(((), changes)),
                }
            })?;
            report.mass_approvals += 1;
            report.mass_approved += ids.len();
        }
    }
    report.approved += ids.len();
    report.approved_ids.extend(ids.iter().map(SfId::to_string));
    Ok(())
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
                let ids = take_drafts(&w.org, &mut drafts, k, &mut rng);
                approve(&mut w, &ids, &actor, now, &mut report)
            } else if roll < 10 && !drafts.is_empty() {
                let ids = take_drafts(&w.org, &mut drafts, 1, &mut rng);
                approve(&mut w, &ids, &actor, now, &mut report)
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
                let street = format!("{} High Street", rng.random_range(1..400));
                let input = obj(
                    json!({"BillingStreet": street, "BillingCity": city, "BillingPostalCode": postcode}),
                );
                let done = w.mutate(now, |org| {
                    org.update("Order", id, &input, &actor, now)
                        .map(|c| ((), c))
                });
                if done.is_ok() {
                    report.address_changes += 1;
                }
                done
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_orders_still_draft_are_taken_for_approval() {
        let mut world = World::new(7);
        world.seed_sample_data(0);
        let actor = world.internal_actor();
        let mut drafts: Vec<SfId> = world
            .org
            .records_of("Order")
            .filter(|r| r.text("Status") == Some("Draft"))
            .map(|r| r.id.clone())
            .collect();
        assert!(drafts.len() >= 3, "{drafts:?}");
        // Since the list was made, a client approved one order and deleted another.
        let (approved, deleted) = (drafts[0].clone(), drafts[1].clone());
        let input = obj(json!({"Status": "Approved"}));
        world
            .mutate(1, |org| {
                org.update("Order", &approved, &input, &actor, 1)
                    .map(|c| ((), c))
            })
            .unwrap();
        world
            .mutate(2, |org| {
                org.delete("Order", &deleted, &actor, 2).map(|c| ((), c))
            })
            .unwrap();
        let still = drafts.len() - 2;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let taken = take_drafts(&world.org, &mut drafts, usize::MAX, &mut rng);
        assert_eq!(taken.len(), still);
        assert!(!taken.contains(&approved) && !taken.contains(&deleted));
        assert!(drafts.is_empty());

        // Approving them is one mass approval, counted once committed; nothing is counted for
        // an approval that fails.
        let mut report = BulkReport::default();
        approve(&mut world, &taken, &actor, 3, &mut report).unwrap();
        assert_eq!(
            (report.approved, report.mass_approvals, report.mass_approved),
            (still, 1, still)
        );
        assert!(approve(&mut world, &[deleted], &actor, 4, &mut report).is_err());
        assert_eq!(report.approved, still);
        assert_eq!(report.approved_ids.len(), still);
    }
}
