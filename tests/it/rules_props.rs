//! Properties of the rules and the store together, over any sequence of order changes: status
//! changes to and from trigger statuses, guard-field changes, fulfilment platform events and gap
//! events, for a few orders, delivered in batches of any size, and delivered again.
//!
//! - No sequence yields two open jobs for one (order, trigger status). No worker runs here, so
//!   every job stays open: at most one job per (order, trigger status) in all.
//! - Keys are stable under replay: delivering every event again (as after a checkpoint reset or
//!   a crash) creates nothing, and a fresh store fed the same events in other batch sizes ends
//!   with the same job keys.
//!
//! Events are written by the emulator's encoder and decoded by sfcdc's decoder. The order facts
//! the guards read come from a narrow lookup seam answering with each order's final state, as a
//! subscriber catching up on a backlog would read it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use sfcdc::decode::{CompiledSchema, DecodedEvent, ReplayId};
use sfcdc::ingest::IngestSink;
use sfcdc::rules::{Facts, OrderFacts, RulesConfig};
use sfcdc::salesforce::{OrderLookup, RestError};
use sfcdc::sfid::SfId;
use sfcdc::source::sink::{Batch, Sink};
use sfcdc::store::{AnyStore, JobFilter, JobRow, Store};
use sfcdc::telemetry::metrics::Metrics;
use sfcdc_emulator::org::Actor;
use sfcdc_emulator::schema::{ChangeType, FieldValue};
use sfcdc_emulator::world::{FULFILMENT_EVENT, World};

const ORDERS: &str = "/data/OrderChangeEvent";
const ORDER_COUNT: usize = 3;

/// One change to one of the orders.
#[derive(Debug, Clone)]
enum Step {
    Status(usize, &'static str),
    Activation(usize, Option<&'static str>),
    ExternalId(usize, Option<&'static str>),
    Publish(usize),
    Gap(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let order = 0..ORDER_COUNT;
    prop_oneof![
        4 => (order.clone(), proptest::sample::select(vec!["Approved", "Reactivate", "Draft", "Activated", "Cancelled"]))
            .prop_map(|(o, s)| Step::Status(o, s)),
        1 => (order.clone(), proptest::option::of(proptest::sample::select(vec!["Activating", "Activated", "Deactivated"])))
            .prop_map(|(o, a)| Step::Activation(o, a)),
        1 => (order.clone(), proptest::option::of(Just("WH-000042")))
            .prop_map(|(o, x)| Step::ExternalId(o, x)),
        2 => order.clone().prop_map(Step::Publish),
        1 => order.prop_map(Step::Gap),
    ]
}

/// The emulated org after `steps`, and the orders they touched.
fn play(steps: &[Step]) -> (World, Vec<sfcdc_emulator::ids::SfId>) {
    let mut world = World::new(7);
    world.seed_sample_data(1_700_000_000_000);
    let actor = Actor {
        user_id: world.org.user_id.to_string(),
        origin: "test".into(),
    };
    let drafts: Vec<_> = world
        .org
        .records_of("Order")
        .filter(|r| r.text("Status") == Some("Draft"))
        .map(|r| r.id.clone())
        .take(ORDER_COUNT)
        .collect();
    assert_eq!(drafts.len(), ORDER_COUNT);
    for (n, s) in steps.iter().enumerate() {
        let now = 1_700_000_100_000 + n as i64 * 1_000;
        let patch = |id: usize, body: serde_json::Value, world: &mut World| {
            let id = drafts[id].clone();
            // A rejected change (the same value again, say) publishes nothing: fine.
            let _ = world.mutate(now, |o| {
                o.update("Order", &id, body.as_object().unwrap(), &actor, now)
                    .map(|c| ((), c))
            });
        };
        match s {
            Step::Status(o, status) => patch(*o, json!({ "Status": status }), &mut world),
            Step::Activation(o, a) => patch(*o, json!({ "Activation_Status__c": a }), &mut world),
            Step::ExternalId(o, x) => patch(*o, json!({ "WHMCS_Order_ID__c": x }), &mut world),
            Step::Publish(o) => {
                let fields = BTreeMap::from([(
                    "OrderId__c".to_string(),
                    FieldValue::Str(drafts[*o].as_str().to_owned()),
                )]);
                world.publish_fulfilment(fields, "005Hs00000000AAAAA", now);
            }
            Step::Gap(o) => {
                let change = world.org.gap(
                    "Order",
                    ChangeType::GapUpdate,
                    Some(&drafts[*o]),
                    &actor,
                    now,
                );
                world.commit(vec![change], now);
            }
        }
    }
    (world, drafts)
}

/// Every event of `topic`, decoded by sfcdc.
fn events(world: &World, topic: &str) -> Vec<DecodedEvent> {
    let mut compiled: HashMap<String, CompiledSchema> = HashMap::new();
    world
        .bus
        .read_after(topic, 0, usize::MAX, usize::MAX)
        .into_iter()
        .map(|e| {
            let schema = compiled.entry(e.schema_id.clone()).or_insert_with(|| {
                let s = world.schema(&e.schema_id).unwrap();
                CompiledSchema::compile(&s.id, &s.json).unwrap()
            });
            DecodedEvent {
                replay_id: ReplayId(e.replay_bytes.clone()),
                schema_id: schema.id.clone(),
                event_id: e.event_id.clone(),
                payload: e.payload.clone(),
                body: schema.decode(&Arc::from(topic), &e.payload).unwrap(),
            }
        })
        .collect()
}

/// The guards' lookup seam: each order as it ended.
struct FinalState(HashMap<SfId, OrderFacts>);

impl FinalState {
    fn of(world: &World, orders: &[sfcdc_emulator::ids::SfId]) -> FinalState {
        let text = |r: &sfcdc_emulator::org::Record, f: &str| {
            r.text(f).filter(|s| !s.is_empty()).map(str::to_owned)
        };
        FinalState(
            orders
                .iter()
                .map(|id| {
                    let r = world.org.get(id).unwrap();
                    let facts = OrderFacts {
                        status: text(r, "Status"),
                        activation: text(r, "Activation_Status__c"),
                        external_id: text(r, "WHMCS_Order_ID__c"),
                        account_id: text(r, "AccountId"),
                    };
                    (SfId::parse(id.as_str()).unwrap(), facts)
                })
                .collect(),
        )
    }
}

impl OrderLookup for FinalState {
    async fn orders(&self, ids: &[SfId]) -> Result<Facts, RestError> {
        Ok(ids
            .iter()
            .map(|id| (id.clone(), self.0.get(id).cloned()))
            .collect())
    }

    async fn modified_since(&self, _: i64) -> Result<Vec<(SfId, OrderFacts)>, RestError> {
        Ok(Vec::new())
    }
}

/// Delivers every event of both channels to `store`, `size` events per batch.
async fn deliver(
    store: &Arc<AnyStore>,
    lookup: &Arc<FinalState>,
    channels: &[(&str, Vec<DecodedEvent>)],
    size: usize,
) {
    let sink = IngestSink::new(
        store.clone(),
        lookup.clone(),
        Arc::new(RulesConfig::defaults()),
        Arc::new(Metrics::new()),
        None,
        8,
    );
    for (channel, events) in channels {
        for chunk in events.chunks(size) {
            let batch = Batch {
                channel: Arc::from(*channel),
                events: chunk.to_vec(),
                failed: Vec::new(),
                replay_id: chunk.last().unwrap().replay_id.clone(),
                keepalive: false,
            };
            let staged = sink.stage(batch).await.unwrap();
            sink.commit(vec![staged]).await.unwrap();
        }
    }
}

async fn jobs(store: &AnyStore) -> Vec<JobRow> {
    store.jobs(&JobFilter::default()).await.unwrap()
}

async fn sqlite(dir: &tempfile::TempDir, name: &str) -> Arc<AnyStore> {
    let url = format!("sqlite://{}", dir.path().join(name).display());
    Arc::new(AnyStore::open(&url).await.unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn no_sequence_makes_two_open_jobs_for_one_approval_and_replays_change_nothing(
        steps in proptest::collection::vec(step(), 1..30),
        first in 1usize..7,
        second in 1usize..7,
    ) {
        let (world, orders) = play(&steps);
        let pe = format!("/event/{FULFILMENT_EVENT}");
        let channels = [(ORDERS, events(&world, ORDERS)), (pe.as_str(), events(&world, &pe))];
        let lookup = Arc::new(FinalState::of(&world, &orders));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = sqlite(&dir, "a.db").await;
            deliver(&store, &lookup, &channels, first).await;
            let made = jobs(&store).await;
            let mut per_approval: BTreeMap<(String, String), usize> = BTreeMap::new();
            for j in &made {
                *per_approval.entry((j.order_id.clone(), j.trigger_status.clone())).or_default() += 1;
            }
            prop_assert!(
                per_approval.values().all(|n| *n == 1),
                "two open jobs for one approval: {per_approval:?} after {steps:?}"
            );
            let keys: BTreeSet<String> = made.iter().map(|j| j.key.clone()).collect();

            // Everything again, in other batches: nothing new.
            deliver(&store, &lookup, &channels, second).await;
            let again: BTreeSet<String> = jobs(&store).await.into_iter().map(|j| j.key).collect();
            prop_assert_eq!(&again, &keys, "a replay changed the jobs");

            // A fresh store, other batches: the same keys.
            let fresh = sqlite(&dir, "b.db").await;
            deliver(&fresh, &lookup, &channels, second).await;
            let other: BTreeSet<String> = jobs(&fresh).await.into_iter().map(|j| j.key).collect();
            prop_assert_eq!(&other, &keys, "keys depend on how events were batched");
            Ok(())
        })?;
    }
}
