//! The emulated Salesforce side as one consistent state: the org, its topics and schemas, and
//! the event bus they publish to.
//!
//! Every mutation goes through [`World::commit`], which merges the transaction's identical changes
//! and encodes them with the entity's current schema and appends each one to its entity channel and to
//! `/data/ChangeEvents`. The whole world sits behind one mutex in the emulator, so a transaction's
//! events are appended together and a subscriber never observes half of one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::bus::{Bus, BusSnapshot, StoredEvent};
use super::model::{FieldDef, FieldType, SObjectDef};
use super::org::{Actor, Change, Org, OrgError};
use super::schema::{EventSchema, FieldValue};

/// The multi-entity CDC channel.
pub const ALL_CHANGES: &str = "/data/ChangeEvents";
/// The fulfilment platform event.
pub const FULFILMENT_EVENT: &str = "Order_Fulfilment_Requested__e";

/// The custom fields of the fulfilment platform event.
pub const FULFILMENT_FIELDS: [(&str, FieldType); 3] = [
    ("OrderId__c", FieldType::Text),
    ("RequestedBy__c", FieldType::Text),
    ("Priority__c", FieldType::Text),
];

/// What a topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind {
    /// `/data/<Entity>ChangeEvent`.
    ChangeEvents {
        /// Object name.
        entity: String,
    },
    /// `/data/ChangeEvents`: every CDC-enabled entity.
    AllChanges,
    /// `/event/<Name>__e`.
    PlatformEvent {
        /// Event API name.
        event: String,
    },
}

/// Channel name of an entity's change events.
pub fn cdc_channel(entity: &str) -> String {
    format!("/data/{entity}ChangeEvent")
}

/// Parses a topic name into what it carries, if the org has it.
pub fn topic_kind(topic: &str) -> Option<TopicKind> {
    if topic == ALL_CHANGES {
        return Some(TopicKind::AllChanges);
    }
    if let Some(entity) = topic
        .strip_prefix("/data/")
        .and_then(|t| t.strip_suffix("ChangeEvent"))
    {
        return super::org::is_cdc_entity(entity).then(|| TopicKind::ChangeEvents {
            entity: entity.to_owned(),
        });
    }
    let event = topic.strip_prefix("/event/")?;
    (event == FULFILMENT_EVENT).then(|| TopicKind::PlatformEvent {
        event: event.to_owned(),
    })
}

/// Every topic of the emulated org.
pub fn all_topics() -> Vec<String> {
    vec![
        cdc_channel("Order"),
        cdc_channel("OrderItem"),
        ALL_CHANGES.to_owned(),
        format!("/event/{FULFILMENT_EVENT}"),
    ]
}

/// The org, its schemas and its bus.
#[derive(Debug)]
pub struct World {
    /// Records and object definitions.
    pub org: Org,
    /// Topic logs.
    pub bus: Bus,
    schemas: HashMap<String, Arc<EventSchema>>,
    current: BTreeMap<String, Arc<EventSchema>>,
    /// Every object definition a change-event schema was built from, oldest first, so old
    /// schema versions can be rebuilt after a restart.
    schema_history: Vec<SObjectDef>,
    corrupt_next: u32,
    /// Order change events still to be sent with wildcard record ids.
    wildcard_next: u32,
    rng: ChaCha8Rng,
}

/// Everything the emulator persists with `--state`.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorldSnapshot {
    org: Org,
    bus: BusSnapshot,
    schema_history: Vec<SObjectDef>,
}

impl World {
    /// A fresh world with deterministic sample data from `seed`.
    pub fn new(seed: u64) -> World {
        let mut world = World {
            org: Org::new(seed),
            bus: Bus::new(seed, all_topics()),
            schemas: HashMap::new(),
            current: BTreeMap::new(),
            schema_history: Vec::new(),
            corrupt_next: 0,
            wildcard_next: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        };
        world.refresh_schemas();
        let pe = EventSchema::platform_event(FULFILMENT_EVENT, &FULFILMENT_FIELDS);
        world.register(pe);
        world
    }

    fn register(&mut self, schema: EventSchema) -> Arc<EventSchema> {
        let schema = Arc::new(schema);
        self.schemas
            .entry(schema.id.clone())
            .or_insert_with(|| schema.clone());
        self.current.insert(schema.entity.clone(), schema.clone());
        schema
    }

    /// Rebuilds the current change-event schemas from the object definitions; old versions stay
    /// served.
    fn refresh_schemas(&mut self) {
        for entity in ["Order", "OrderItem"] {
            let def = self.org.def(entity).expect("CDC entities exist").clone();
            let schema = EventSchema::change_event(&def);
            if !self.schemas.contains_key(&schema.id) {
                self.schema_history.push((*def).clone());
            }
            self.register(schema);
        }
    }

    /// A schema by id, current or historical.
    pub fn schema(&self, id: &str) -> Option<Arc<EventSchema>> {
        self.schemas.get(id).cloned()
    }

    /// The current schema of an entity or platform event.
    pub fn current_schema(&self, entity: &str) -> Option<Arc<EventSchema>> {
        self.current.get(entity).cloned()
    }

    /// The schema id `GetTopic` reports: blank for the multi-entity channel.
    pub fn topic_schema_id(&self, topic: &str) -> Option<String> {
        Some(match topic_kind(topic)? {
            TopicKind::AllChanges => String::new(),
            TopicKind::ChangeEvents { entity } => self.current[&entity].id.clone(),
            TopicKind::PlatformEvent { event } => self.current[&event].id.clone(),
        })
    }

    /// Corrupts the payloads of the next `n` events appended.
    pub fn corrupt_next(&mut self, n: u32) {
        self.corrupt_next += n;
    }

    /// Sends the next `n` Order change events with their record ids as a wildcard (`801*`).
    pub fn wildcard_next(&mut self, n: u32) {
        self.wildcard_next += n;
    }

    fn event_id(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }

    fn maybe_corrupt(&mut self, schema: &EventSchema, payload: Vec<u8>) -> Bytes {
        if self.corrupt_next == 0 {
            return Bytes::from(payload);
        }
        self.corrupt_next -= 1;
        Bytes::from(schema.corrupt(&payload))
    }

    /// Encodes and publishes a transaction's changes, identical ones merged into one event as
    /// Salesforce merges them ([`super::org::merge_identical`]). Returns the events appended to the
    /// entity channels, in order.
    pub fn commit(&mut self, changes: Vec<Change>, now_ms: i64) -> Vec<Arc<StoredEvent>> {
        let changes = super::org::merge_identical(changes);
        let mut out = Vec::with_capacity(changes.len());
        for mut change in changes {
            let entity = change.header.entity_name.clone();
            if entity == "Order" && self.wildcard_next > 0 {
                self.wildcard_next -= 1;
                let prefix: String = change
                    .header
                    .record_ids
                    .first()
                    .map_or("801".into(), |id| id.chars().take(3).collect());
                change.header.record_ids = vec![format!("{prefix}*")];
            }
            let schema = self.current[&entity].clone();
            let encoded = schema.encode_change(&change.header, &change.values);
            let payload = self.maybe_corrupt(&schema, encoded);
            let id = self.event_id();
            if let Some(e) = self.bus.append(
                &cdc_channel(&entity),
                &schema.id,
                payload.clone(),
                id.clone(),
                now_ms,
            ) {
                out.push(e);
            }
            self.bus
                .append(ALL_CHANGES, &schema.id, payload, id, now_ms);
        }
        out
    }

    /// Publishes the fulfilment platform event with its custom field values.
    pub fn publish_fulfilment(
        &mut self,
        fields: BTreeMap<String, FieldValue>,
        user_id: &str,
        now_ms: i64,
    ) -> Arc<StoredEvent> {
        let schema = self.current[FULFILMENT_EVENT].clone();
        let mut values = fields;
        values.insert("CreatedDate".into(), FieldValue::Long(now_ms));
        values.insert("CreatedById".into(), FieldValue::Str(user_id.to_owned()));
        let payload = self.maybe_corrupt(&schema, schema.encode_platform(&values));
        let id = self.event_id();
        self.bus
            .append(
                &format!("/event/{FULFILMENT_EVENT}"),
                &schema.id,
                payload,
                id,
                now_ms,
            )
            .expect("the fulfilment topic exists")
    }

    /// Appends a payload published by a client over gRPC. The payload is not validated, as on
    /// the real bus; the schema id must be one of the topic's.
    pub fn publish_raw(
        &mut self,
        topic: &str,
        schema_id: &str,
        payload: Bytes,
        event_id: Option<String>,
        now_ms: i64,
    ) -> Result<Arc<StoredEvent>, String> {
        let Some(TopicKind::PlatformEvent { event }) = topic_kind(topic) else {
            return Err(format!(
                "Publishing to {topic} is not allowed: only platform events can be published."
            ));
        };
        let schema = match self.schemas.get(schema_id) {
            Some(s) if s.entity == event => s.clone(),
            _ => {
                return Err(format!(
                    "The schema ID {schema_id} is not valid for topic {topic}."
                ));
            }
        };
        let id = event_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| self.event_id());
        let payload = if self.corrupt_next > 0 {
            self.maybe_corrupt(&schema, payload.to_vec())
        } else {
            payload
        };
        Ok(self
            .bus
            .append(topic, schema_id, payload, id, now_ms)
            .expect("platform topics exist"))
    }

    /// Adds a custom text field to Order, as an admin would; the Order schema gets a new id and
    /// later events carry it.
    pub fn add_order_field(&mut self, name: &str) -> Result<String, OrgError> {
        self.org.add_field("Order", FieldDef::custom_text(name))?;
        self.refresh_schemas();
        Ok(self.current["Order"].id.clone())
    }

    /// Plants `n` orders of one account straight into the org, without events (as if made
    /// before any subscription), for reconcile tests and benchmarks: every tenth `Approved`, a
    /// third of those already fulfilled (`WHMCS_Order_ID__c` set), the rest `Draft`. Returns the
    /// approved orders without an external id: the ones a reconcile should give a job.
    pub fn plant_orders(&mut self, n: usize, now_ms: i64) -> Vec<super::ids::SfId> {
        let account = self
            .org
            .pick("Account", |_| true)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut candidates = Vec::new();
        for i in 0..n {
            let approved = i % 10 == 0;
            let fulfilled = approved && i % 30 == 0;
            let mut o = BTreeMap::new();
            o.insert("AccountId".into(), FieldValue::Str(account.clone()));
            o.insert("Name".into(), FieldValue::Str(format!("Planted {i}")));
            o.insert("EffectiveDate".into(), FieldValue::Long(now_ms));
            let status = if approved { "Approved" } else { "Draft" };
            o.insert("Status".into(), FieldValue::Str(status.into()));
            if fulfilled {
                o.insert(
                    "WHMCS_Order_ID__c".into(),
                    FieldValue::Str(format!("WH-{i}")),
                );
            }
            let id = self.org.seed_record("Order", o, now_ms);
            if approved && !fulfilled {
                candidates.push(id);
            }
        }
        candidates
    }

    /// Creates the deterministic sample data: accounts, orders and items, without events (they
    /// predate any subscription).
    pub fn seed_sample_data(&mut self, now_ms: i64) {
        const ACCOUNTS: [(&str, &str, &str); 4] = [
            ("Acme Hosting Ltd", "London", "GB"),
            ("Globex Networks", "Paris", "FR"),
            ("Initech Cloud", "Austin", "US"),
            ("Umbrella Data GmbH", "Berlin", "DE"),
        ];
        const PRODUCTS: [(&str, f64); 4] = [
            ("VPS Small", 12.0),
            ("VPS Large", 48.0),
            ("Managed Backup", 9.5),
            ("Dedicated IP", 3.0),
        ];
        let day = 86_400_000;
        let mut n = 0;
        for (name, city, country) in ACCOUNTS {
            let mut a = BTreeMap::new();
            a.insert("Name".into(), FieldValue::Str(name.into()));
            a.insert("Type".into(), FieldValue::Str("Customer".into()));
            a.insert("BillingCity".into(), FieldValue::Str(city.into()));
            a.insert("BillingCountryCode".into(), FieldValue::Str(country.into()));
            let account = self.org.seed_record("Account", a, now_ms);
            for k in 0..3 {
                n += 1;
                let status = match n % 4 {
                    0 => "Activated",
                    _ => "Draft",
                };
                let mut o = BTreeMap::new();
                o.insert("AccountId".into(), FieldValue::Str(account.to_string()));
                o.insert("Status".into(), FieldValue::Str(status.into()));
                o.insert(
                    "Name".into(),
                    FieldValue::Str(format!("{name} order {}", k + 1)),
                );
                o.insert(
                    "EffectiveDate".into(),
                    FieldValue::Long((now_ms / day - 30 + n) * day),
                );
                o.insert("BillingCity".into(), FieldValue::Str(city.into()));
                o.insert("BillingCountryCode".into(), FieldValue::Str(country.into()));
                o.insert("Type".into(), FieldValue::Str("New".into()));
                if status == "Activated" {
                    o.insert(
                        "Activation_Status__c".into(),
                        FieldValue::Str("Activated".into()),
                    );
                    o.insert(
                        "WHMCS_Order_ID__c".into(),
                        FieldValue::Str(format!("WH-{:05}", 10_000 + n)),
                    );
                }
                let order = self.org.seed_record("Order", o, now_ms);
                let items = 1 + self.rng.random_range(0..3usize);
                for i in 0..items {
                    let (product, price) = PRODUCTS[(n as usize + i) % PRODUCTS.len()];
                    let mut it = BTreeMap::new();
                    it.insert("OrderId".into(), FieldValue::Str(order.to_string()));
                    it.insert("Description".into(), FieldValue::Str(product.into()));
                    it.insert(
                        "Quantity".into(),
                        FieldValue::Double(f64::from(1 + self.rng.random_range(0..3u8))),
                    );
                    it.insert("UnitPrice".into(), FieldValue::Double(price));
                    self.org.seed_record("OrderItem", it, now_ms);
                }
            }
        }
    }

    /// Applies a REST-style mutation and publishes its changes.
    pub fn mutate<T>(
        &mut self,
        now_ms: i64,
        f: impl FnOnce(&mut Org) -> Result<(T, Vec<Change>), OrgError>,
    ) -> Result<T, OrgError> {
        let (out, changes) = f(&mut self.org)?;
        self.commit(changes, now_ms);
        Ok(out)
    }

    /// The actor for changes the emulator makes on its own (bulk generation, faults).
    pub fn internal_actor(&self) -> Actor {
        Actor {
            user_id: self.org.user_id.to_string(),
            origin: "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/".into(),
        }
    }

    /// A persistable copy.
    pub fn snapshot(&self) -> WorldSnapshot {
        WorldSnapshot {
            org: self.org.clone(),
            bus: self.bus.snapshot(),
            schema_history: self.schema_history.clone(),
        }
    }

    /// Rebuilds a world from a snapshot, serving every schema version it had.
    pub fn restore(seed: u64, snap: WorldSnapshot) -> World {
        let mut world = World::new(seed);
        for def in &snap.schema_history {
            world.register(EventSchema::change_event(def));
        }
        world.schema_history = snap.schema_history;
        world.org = snap.org;
        world.refresh_schemas();
        world.bus.restore(snap.bus);
        world
    }
}
