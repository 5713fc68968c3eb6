//! The emulated org's records, and the change events every mutation produces.
//!
//! Each mutation (create, update, delete, undelete) is one transaction: it validates its input
//! the way Salesforce REST does, applies it with the derived fields (`StatusCode`, `OrderNumber`,
//! `TotalAmount`, audit fields), and returns the [`Change`]s the transaction produced, in sequence
//! order. A change is what the Pub/Sub API will carry: in an UPDATE only the fields that changed
//! have values (nulled ones are listed in `nulled`), `LastModifiedDate` is always among them, and
//! address components are addressed as `BillingAddress.City`. The org does no I/O; the emulator
//! encodes and publishes the changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::ids::{self, SfId};
use super::model::{self, FieldType, SObjectDef, address_component};
use super::schema::ChangeType;
use super::schema::{ChangeHeader, FieldValue};

/// Instance tag used in every generated id of the emulated org.
const INSTANCE: &str = "Hs";

/// One record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 18-character id.
    pub id: SfId,
    /// Object API name.
    pub sobject: String,
    /// Values by flat field name; absent means null.
    pub fields: BTreeMap<String, FieldValue>,
    /// In the recycle bin.
    pub deleted: bool,
}

impl Record {
    /// The value of a flat field, `Null` when unset. `IsDeleted` is whether the record is in the
    /// recycle bin, and `SystemModstamp` falls back to `LastModifiedDate` for records written
    /// before it was kept: system fields always have a value, as in Salesforce.
    pub fn get(&self, field: &str) -> &FieldValue {
        const DELETED: FieldValue = FieldValue::Bool(true);
        const LIVE: FieldValue = FieldValue::Bool(false);
        match field {
            "IsDeleted" if self.deleted => &DELETED,
            "IsDeleted" => &LIVE,
            "SystemModstamp" => self
                .fields
                .get(field)
                .or_else(|| self.fields.get("LastModifiedDate"))
                .unwrap_or(&FieldValue::Null),
            _ => self.fields.get(field).unwrap_or(&FieldValue::Null),
        }
    }

    /// The text of a field, if set.
    pub fn text(&self, field: &str) -> Option<&str> {
        self.get(field).as_str()
    }
}

/// Who makes a change, and through which API.
#[derive(Debug, Clone)]
pub struct Actor {
    /// User id, the event's `commitUser`.
    pub user_id: String,
    /// The event's `changeOrigin`.
    pub origin: String,
}

/// The context of one transaction: its key, who commits it, and when.
struct Tx<'a> {
    key: String,
    actor: &'a Actor,
    now: i64,
}

/// One change event, before encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Header fields.
    pub header: ChangeHeader,
    /// Values by field path (`Status`, `BillingAddress.City`); missing paths are null.
    pub values: BTreeMap<String, FieldValue>,
}

/// A checked record of a collection update: its object, its id and its typed values.
type PlannedUpdate = (Arc<SObjectDef>, SfId, Vec<(String, FieldValue)>);

/// A checked record to create: its object and its typed values.
type PlannedCreate = (Arc<SObjectDef>, Vec<(String, FieldValue)>);

/// One record of a collection update ([`Org::update_many`]): its object and id as the request
/// names them, and the fields to set.
#[derive(Debug, Clone)]
pub struct UpdateItem {
    /// The object (`attributes.type`).
    pub sobject: String,
    /// The record id, if the request gave one.
    pub id: Option<String>,
    /// The fields to set, REST-shaped.
    pub input: Map<String, Json>,
}

/// Merges the identical changes of one transaction into one change event whose `recordIds` lists
/// every record, as Salesforce does when the same change is made to several records of one object
/// type in one transaction (setting the same fields to the same values, deleting records, …).
/// The merged event takes the place of the first of them; sequence numbers are renumbered.
pub fn merge_identical(changes: Vec<Change>) -> Vec<Change> {
    let mut merged: Vec<Change> = Vec::with_capacity(changes.len());
    for change in changes {
        match merged.iter_mut().find(|m| same_change(m, &change)) {
            Some(m) => m.header.record_ids.extend(change.header.record_ids),
            None => merged.push(change),
        }
    }
    for (i, change) in merged.iter_mut().enumerate() {
        change.header.sequence_number = i as i32 + 1;
    }
    merged
}

/// Whether two changes of one transaction are the same change (to different records).
fn same_change(a: &Change, b: &Change) -> bool {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let (x, y) = (&a.header, &b.header);
    x.entity_name == y.entity_name
        && x.change_type == y.change_type
        && x.change_origin == y.change_origin
        && x.transaction_key == y.transaction_key
        && x.commit_user == y.commit_user
        && x.commit_timestamp == y.commit_timestamp
        && sorted(&x.changed) == sorted(&y.changed)
        && sorted(&x.nulled) == sorted(&y.nulled)
        && a.values == b.values
}

/// Why a mutation was refused; each maps to a Salesforce REST error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrgError {
    /// `NOT_FOUND`.
    #[error("The requested resource does not exist")]
    NotFound,
    /// `NOT_FOUND` for an object type the org does not have.
    #[error("The requested resource does not exist")]
    UnknownObject(String),
    /// `MALFORMED_ID`.
    #[error("{sobject} ID: id value of incorrect type: {id}")]
    MalformedId {
        /// Object name.
        sobject: String,
        /// The id as given.
        id: String,
    },
    /// `INVALID_FIELD`.
    #[error("No such column '{field}' on sobject of type {sobject}")]
    InvalidField {
        /// Object name.
        sobject: String,
        /// Field as given.
        field: String,
    },
    /// `INVALID_FIELD_FOR_INSERT_UPDATE`.
    #[error("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", .0.join(", "))]
    NotWritable(Vec<String>),
    /// `JSON_PARSER_ERROR`.
    #[error("Cannot deserialize instance of {expected} from {got} value for field {field}")]
    BadValue {
        /// Field name.
        field: String,
        /// Expected type.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// `REQUIRED_FIELD_MISSING`.
    #[error("Required fields are missing: [{}]", .0.join(", "))]
    RequiredMissing(Vec<String>),
    /// `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`.
    #[error("{field}: bad value for restricted picklist field: {value}")]
    RestrictedPicklist {
        /// Field name.
        field: String,
        /// The rejected value.
        value: String,
    },
    /// `FIELD_INTEGRITY_EXCEPTION`.
    #[error("{field}: id value of incorrect type or record not found: {value}")]
    BadReference {
        /// Field name.
        field: String,
        /// The id given.
        value: String,
    },
    /// `STRING_TOO_LONG`: a text value longer than its field allows.
    #[error("{field}: data value too large: {value} (max length={max})")]
    StringTooLong {
        /// Field name.
        field: String,
        /// The rejected value.
        value: String,
        /// The field's length.
        max: usize,
    },
    /// `DUPLICATE_VALUE` (adding a field that exists).
    #[error("duplicate value found: {0} already exists")]
    Duplicate(String),
    /// `MISSING_ARGUMENT`: a record of a collection update without an id.
    #[error("Id not specified in an update call")]
    MissingId,
    /// `INVALID_FIELD`: an id given on create.
    #[error("cannot specify Id in an insert call")]
    IdOnCreate,
    /// `INVALID_TYPE`: a record of a collection names no object the org has.
    #[error("sObject type '{0}' is not supported.")]
    InvalidType(String),
    /// `ENTITY_IS_DELETED`: the record is in the recycle bin.
    #[error("entity is deleted")]
    EntityIsDeleted,
    /// `INVALID_CROSS_REFERENCE_KEY`: no record has the id.
    #[error("invalid cross reference id")]
    InvalidCrossReference,
    /// `ALL_OR_NONE_OPERATION_ROLLED_BACK`: a valid record of an all-or-none collection whose other
    /// records were not all valid.
    #[error(
        "Record rolled back because not all records were valid and the request was using AllOrNone header"
    )]
    RolledBack,
}

impl OrgError {
    /// The Salesforce `errorCode`.
    pub fn error_code(&self) -> &'static str {
        match self {
            OrgError::NotFound | OrgError::UnknownObject(_) => "NOT_FOUND",
            OrgError::MalformedId { .. } => "MALFORMED_ID",
            OrgError::InvalidField { .. } => "INVALID_FIELD",
            OrgError::NotWritable(_) => "INVALID_FIELD_FOR_INSERT_UPDATE",
            OrgError::BadValue { .. } => "JSON_PARSER_ERROR",
            OrgError::RequiredMissing(_) => "REQUIRED_FIELD_MISSING",
            OrgError::RestrictedPicklist { .. } => "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            OrgError::BadReference { .. } => "FIELD_INTEGRITY_EXCEPTION",
            OrgError::StringTooLong { .. } => "STRING_TOO_LONG",
            OrgError::Duplicate(_) => "DUPLICATE_VALUE",
            OrgError::MissingId => "MISSING_ARGUMENT",
            OrgError::IdOnCreate => "INVALID_FIELD",
            OrgError::InvalidType(_) => "INVALID_TYPE",
            OrgError::EntityIsDeleted => "ENTITY_IS_DELETED",
            OrgError::InvalidCrossReference => "INVALID_CROSS_REFERENCE_KEY",
            OrgError::RolledBack => "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        }
    }

    /// The fields the error is about, as a save result's `errors[].fields` lists them.
    pub fn fields(&self) -> Vec<String> {
        match self {
            OrgError::MalformedId { .. } | OrgError::MissingId | OrgError::IdOnCreate => {
                vec!["Id".into()]
            }
            OrgError::InvalidField { field, .. }
            | OrgError::BadValue { field, .. }
            | OrgError::RestrictedPicklist { field, .. }
            | OrgError::BadReference { field, .. }
            | OrgError::StringTooLong { field, .. } => vec![field.clone()],
            OrgError::NotWritable(fields) | OrgError::RequiredMissing(fields) => fields.clone(),
            _ => Vec::new(),
        }
    }

    /// The HTTP status Salesforce answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            OrgError::NotFound | OrgError::UnknownObject(_) => 404,
            _ => 400,
        }
    }
}

/// The org: object definitions, records, and the counters behind generated values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Org {
    /// The org id (18 characters).
    pub org_id: SfId,
    /// The integration user the emulator's credentials log in as.
    pub user_id: SfId,
    defs: BTreeMap<String, Arc<SObjectDef>>,
    records: HashMap<SfId, Record>,
    id_counters: BTreeMap<String, u64>,
    autonumbers: BTreeMap<String, u64>,
    last_commit_number: i64,
    rng_seed: u64,
    rng_draws: u64,
}

pub use super::clock::now_ms;

impl Org {
    /// An empty org whose ids derive from `seed`.
    pub fn new(seed: u64) -> Org {
        let mut defs = BTreeMap::new();
        for def in [model::account(), model::order(), model::order_item()] {
            defs.insert(def.name.clone(), Arc::new(def));
        }
        let tag = seed % 3844;
        Org {
            org_id: ids::generate("00D", INSTANCE, 1_000 + tag),
            user_id: ids::generate("005", INSTANCE, 2_000 + tag),
            defs,
            records: HashMap::new(),
            id_counters: BTreeMap::new(),
            autonumbers: BTreeMap::new(),
            last_commit_number: 0,
            rng_seed: seed,
            rng_draws: 0,
        }
    }

    /// A deterministic random number generator for this org's next draw.
    fn rng(&mut self) -> ChaCha8Rng {
        self.rng_draws += 1;
        ChaCha8Rng::seed_from_u64(
            self.rng_seed
                .wrapping_mul(0x9E37_79B9)
                .wrapping_add(self.rng_draws),
        )
    }

    /// Every object definition, by name.
    pub fn defs(&self) -> impl Iterator<Item = &Arc<SObjectDef>> {
        self.defs.values()
    }

    /// Definition of an object.
    pub fn def(&self, sobject: &str) -> Option<&Arc<SObjectDef>> {
        self.defs
            .values()
            .find(|d| d.name.eq_ignore_ascii_case(sobject))
    }

    fn require_def(&self, sobject: &str) -> Result<Arc<SObjectDef>, OrgError> {
        self.def(sobject)
            .cloned()
            .ok_or_else(|| OrgError::UnknownObject(sobject.to_owned()))
    }

    /// A live record of the given object.
    fn require_live(&self, def: &SObjectDef, id: &SfId) -> Result<(), OrgError> {
        match self.get(id) {
            Some(r) if r.sobject == def.name => Ok(()),
            _ => Err(OrgError::NotFound),
        }
    }

    /// Adds a custom field to an object, as an admin would in Setup.
    pub fn add_field(&mut self, sobject: &str, field: model::FieldDef) -> Result<(), OrgError> {
        let def = Arc::make_mut(
            self.defs
                .get_mut(sobject)
                .ok_or_else(|| OrgError::UnknownObject(sobject.to_owned()))?,
        );
        if def.field(&field.name).is_some() {
            return Err(OrgError::Duplicate(field.name));
        }
        // Custom fields are kept sorted by name after the standard ones, so a new field can
        // shift the positions of the custom fields after it.
        let first_custom = def
            .fields
            .iter()
            .position(|f| f.name.ends_with("__c"))
            .unwrap_or(def.fields.len());
        let offset = def.fields[first_custom..]
            .iter()
            .position(|f| !f.name.ends_with("__c") || f.name > field.name)
            .unwrap_or(def.fields.len() - first_custom);
        def.fields.insert(first_custom + offset, field);
        Ok(())
    }

    /// A live (not deleted) record.
    pub fn get(&self, id: &SfId) -> Option<&Record> {
        self.records.get(id).filter(|r| !r.deleted)
    }

    /// Live records of one object.
    pub fn records_of<'a>(&'a self, sobject: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records
            .values()
            .filter(move |r| !r.deleted && r.sobject == sobject)
    }

    /// Number of live records of one object.
    pub fn count(&self, sobject: &str) -> usize {
        self.records_of(sobject).count()
    }

    fn next_id(&mut self, sobject: &str) -> SfId {
        let prefix = self.defs[sobject].key_prefix.clone();
        let n = self.id_counters.entry(prefix.clone()).or_insert(0);
        *n += 1;
        ids::generate(&prefix, INSTANCE, 100_000 + *n)
    }

    fn next_autonumber(&mut self, field: &str, width: usize) -> String {
        let n = self.autonumbers.entry(field.to_owned()).or_insert(99);
        *n += 1;
        format!("{:0width$}", *n)
    }

    fn header(
        &mut self,
        tx: &Tx<'_>,
        sobject: &str,
        ids: Vec<String>,
        ct: ChangeType,
        seq: i32,
    ) -> ChangeHeader {
        let (actor, now) = (tx.actor, tx.now);
        // Real commit numbers are system change numbers around 1.7e18: beyond f64 precision.
        let candidate = now.saturating_mul(1_000_000);
        self.last_commit_number = candidate.max(self.last_commit_number + 1);
        ChangeHeader {
            entity_name: sobject.to_owned(),
            record_ids: ids,
            change_type: ct,
            change_origin: actor.origin.clone(),
            transaction_key: tx.key.clone(),
            sequence_number: seq,
            commit_timestamp: now,
            commit_number: self.last_commit_number,
            commit_user: actor.user_id.clone(),
            changed: Vec::new(),
            nulled: Vec::new(),
        }
    }

    /// Starts a transaction: a fresh transaction key for `actor` at `now`.
    fn begin<'a>(&mut self, actor: &'a Actor, now: i64) -> Tx<'a> {
        Tx {
            key: self.transaction_key(),
            actor,
            now,
        }
    }

    fn transaction_key(&mut self) -> String {
        let mut rng = self.rng();
        let a: u32 = rng.random();
        let b: u16 = rng.random();
        let c: u16 = rng.random();
        let d: u16 = rng.random();
        let e: u64 = rng.random::<u64>() & 0xFFFF_FFFF_FFFF;
        format!("{a:08x}-{b:04x}-{c:04x}-{d:04x}-{e:012x}")
    }

    /// Resolves an id given in a URL or body; 15-character ids are accepted.
    pub fn parse_id(sobject: &str, id: &str) -> Result<SfId, OrgError> {
        SfId::parse(id).map_err(|_| OrgError::MalformedId {
            sobject: sobject.to_owned(),
            id: id.to_owned(),
        })
    }

    /// Converts client input to typed values, checking names, writability and types.
    fn typed_input(
        &self,
        def: &SObjectDef,
        input: &Map<String, Json>,
        creating: bool,
    ) -> Result<Vec<(String, FieldValue)>, OrgError> {
        let mut out = Vec::with_capacity(input.len());
        let mut not_writable = Vec::new();
        for (name, raw) in input {
            if name == "attributes" {
                continue;
            }
            let Some((flat, ftype)) = def.flat_field(name) else {
                return Err(OrgError::InvalidField {
                    sobject: def.name.clone(),
                    field: name.clone(),
                });
            };
            if !def.writable(&flat, creating) {
                not_writable.push(flat);
                continue;
            }
            let value = json_to_value(&flat, ftype, raw)?;
            if let FieldValue::Str(s) = &value
                && let Some(max) = def.field(&flat).and_then(|f| f.length)
                && s.chars().count() > max
            {
                return Err(OrgError::StringTooLong {
                    field: flat,
                    value: s.clone(),
                    max,
                });
            }
            if let Some(picklist) = model::picklist(&def.name, &flat)
                && picklist.restricted
                && let FieldValue::Str(s) = &value
                && !picklist.values.contains(&s.as_str())
            {
                return Err(OrgError::RestrictedPicklist {
                    field: flat,
                    value: s.clone(),
                });
            }
            if ftype == FieldType::Reference
                && let FieldValue::Str(s) = &value
            {
                let id = SfId::parse(s).map_err(|_| OrgError::BadReference {
                    field: flat.clone(),
                    value: s.clone(),
                })?;
                out.push((flat, FieldValue::Str(id.to_string())));
                continue;
            }
            out.push((flat, value));
        }
        if !not_writable.is_empty() {
            return Err(OrgError::NotWritable(not_writable));
        }
        Ok(out)
    }

    fn check_parent(
        &self,
        field: &str,
        values: &[(String, FieldValue)],
        sobject: &str,
    ) -> Result<(), OrgError> {
        if let Some((_, FieldValue::Str(id))) = values.iter().find(|(n, _)| n == field) {
            let exists = SfId::parse(id)
                .ok()
                .and_then(|id| self.get(&id))
                .is_some_and(|r| r.sobject == sobject);
            if !exists {
                return Err(OrgError::BadReference {
                    field: field.to_owned(),
                    value: id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Creates a record from REST-shaped input; returns its id and the transaction's changes.
    pub fn create(
        &mut self,
        sobject: &str,
        input: &Map<String, Json>,
        actor: &Actor,
        now: i64,
    ) -> Result<(SfId, Vec<Change>), OrgError> {
        let (def, values) = self.plan_create(sobject, input)?;
        let tx = self.begin(actor, now);
        let mut changes = Vec::new();
        let id = self.apply_create(&tx, &def, values, &mut changes);
        Ok((id, changes))
    }

    /// Creates many records in one transaction, as sObject Collections does: each record is
    /// checked first, then the valid ones are written (all of them, or with `all_or_none` none if
    /// any is invalid, the valid ones failing as rolled back). Returns each record's outcome, in
    /// order, and the transaction's changes: one CREATE each, sharing the transaction key.
    pub fn create_many(
        &mut self,
        items: &[UpdateItem],
        all_or_none: bool,
        actor: &Actor,
        now: i64,
    ) -> (Vec<Result<SfId, OrgError>>, Vec<Change>) {
        let planned: Vec<_> = items
            .iter()
            .map(|item| {
                if item.id.is_some() {
                    return Err(OrgError::IdOnCreate);
                }
                self.plan_create(&item.sobject, &item.input)
            })
            .collect();
        if all_or_none && planned.iter().any(Result::is_err) {
            let outcomes = planned
                .into_iter()
                .map(|p| Err(p.err().unwrap_or(OrgError::RolledBack)))
                .collect();
            return (outcomes, Vec::new());
        }
        let tx = self.begin(actor, now);
        let mut changes = Vec::new();
        let outcomes = planned
            .into_iter()
            .map(|p| p.map(|(def, values)| self.apply_create(&tx, &def, values, &mut changes)))
            .collect();
        (outcomes, changes)
    }

    /// Checks a record to create: its object, its values, its required fields and its parent.
    fn plan_create(
        &self,
        sobject: &str,
        input: &Map<String, Json>,
    ) -> Result<PlannedCreate, OrgError> {
        let def = self.require_def(sobject)?;
        let values = self.typed_input(&def, input, true)?;
        let missing: Vec<String> = model::required_on_create(&def.name)
            .iter()
            .filter(|r| !values.iter().any(|(n, v)| n == *r && !v.is_null()))
            .map(|r| r.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(OrgError::RequiredMissing(missing));
        }
        match def.name.as_str() {
            "Order" => self.check_parent("AccountId", &values, "Account")?,
            "OrderItem" => self.check_parent("OrderId", &values, "Order")?,
            _ => {}
        }
        Ok((def, values))
    }

    /// Writes a checked record within `tx`, adding its changes; its new id.
    fn apply_create(
        &mut self,
        tx: &Tx<'_>,
        def: &SObjectDef,
        values: Vec<(String, FieldValue)>,
        changes: &mut Vec<Change>,
    ) -> SfId {
        let (actor, now) = (tx.actor, tx.now);
        let id = self.next_id(&def.name);
        let mut fields: BTreeMap<String, FieldValue> =
            values.into_iter().filter(|(_, v)| !v.is_null()).collect();
        fields.insert("Id".into(), FieldValue::Str(id.to_string()));
        let user = FieldValue::Str(actor.user_id.clone());
        stamp_created(&mut fields, &user, now);
        fields.entry("OwnerId".into()).or_insert(user);
        match def.name.as_str() {
            "Order" => {
                let number = self.next_autonumber("Order.OrderNumber", 8);
                fields.insert("OrderNumber".into(), FieldValue::Str(number));
                fields.insert("TotalAmount".into(), FieldValue::Double(0.0));
                fields.insert("IsReductionOrder".into(), FieldValue::Bool(false));
                derive_order_fields(&mut fields, None, actor, now);
            }
            "OrderItem" => {
                let number = self.next_autonumber("OrderItem.OrderItemNumber", 10);
                fields.insert("OrderItemNumber".into(), FieldValue::Str(number));
                fields.remove("OwnerId");
                if let Some(p) = fields.get("UnitPrice").cloned() {
                    fields.insert("ListPrice".into(), p);
                }
                derive_item_total(&mut fields);
            }
            _ => {}
        }
        let record = Record {
            id: id.clone(),
            sobject: def.name.clone(),
            fields,
            deleted: false,
        };
        let mut header = self.header(tx, &def.name, vec![id.to_string()], ChangeType::Create, 1);
        header.changed.clear();
        let values = cdc_values(
            def,
            record
                .fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.as_str(), v)),
        );
        if is_cdc_entity(&def.name) {
            changes.push(Change { header, values });
        }
        let parent = (def.name == "OrderItem")
            .then(|| record.text("OrderId").map(str::to_owned))
            .flatten();
        self.records.insert(id.clone(), record);
        if let Some(order_id) = parent {
            self.rollup_order_total(tx, &order_id, changes);
        }
        id
    }

    /// Updates many records in one transaction, as sObject Collections does: each record is
    /// checked first, then the valid ones are written (all of them, or with `all_or_none` none if
    /// any is invalid, the valid ones failing as rolled back). Returns each record's outcome, in
    /// order, and the transaction's changes; identical ones are merged when they are committed
    /// ([`merge_identical`]).
    pub fn update_many(
        &mut self,
        items: &[UpdateItem],
        all_or_none: bool,
        actor: &Actor,
        now: i64,
    ) -> (Vec<Result<SfId, OrgError>>, Vec<Change>) {
        let planned: Vec<_> = items.iter().map(|item| self.plan_update(item)).collect();
        if all_or_none && planned.iter().any(Result::is_err) {
            let outcomes = planned
                .into_iter()
                .map(|p| Err(p.err().unwrap_or(OrgError::RolledBack)))
                .collect();
            return (outcomes, Vec::new());
        }
        let tx = self.begin(actor, now);
        let mut changes = Vec::new();
        let outcomes = planned
            .into_iter()
            .map(|p| {
                p.map(|(def, id, values)| {
                    self.apply_update(&tx, &def, &id, values, 1, &mut changes);
                    if def.name == "OrderItem"
                        && let Some(order_id) = self.records[&id].text("OrderId").map(str::to_owned)
                    {
                        self.rollup_order_total(&tx, &order_id, &mut changes);
                    }
                    id
                })
            })
            .collect();
        (outcomes, changes)
    }

    /// Checks one record of a collection update: its object, its id and its values.
    fn plan_update(&self, item: &UpdateItem) -> Result<PlannedUpdate, OrgError> {
        let def = self
            .def(&item.sobject)
            .cloned()
            .ok_or_else(|| OrgError::InvalidType(item.sobject.clone()))?;
        let raw = item.id.as_deref().ok_or(OrgError::MissingId)?;
        let id = Org::parse_id(&def.name, raw)?;
        if !id.as_str().starts_with(&def.key_prefix) {
            return Err(OrgError::MalformedId {
                sobject: def.name.clone(),
                id: raw.to_owned(),
            });
        }
        match self.records.get(&id) {
            Some(r) if r.deleted => return Err(OrgError::EntityIsDeleted),
            Some(_) => {}
            None => return Err(OrgError::InvalidCrossReference),
        }
        let values = self.typed_input(&def, &item.input, false)?;
        Ok((def, id, values))
    }

    /// Updates a record from REST-shaped input (PATCH semantics).
    pub fn update(
        &mut self,
        sobject: &str,
        id: &SfId,
        input: &Map<String, Json>,
        actor: &Actor,
        now: i64,
    ) -> Result<Vec<Change>, OrgError> {
        let def = self.require_def(sobject)?;
        self.require_live(&def, id)?;
        let values = self.typed_input(&def, input, false)?;
        let tx = self.begin(actor, now);
        let mut changes = Vec::new();
        self.apply_update(&tx, &def, id, values, 1, &mut changes);
        if def.name == "OrderItem"
            && let Some(order_id) = self.records[id].text("OrderId").map(str::to_owned)
        {
            self.rollup_order_total(&tx, &order_id, &mut changes);
        }
        Ok(changes)
    }

    /// Applies typed values to a live record and appends the UPDATE change it produces.
    fn apply_update(
        &mut self,
        tx: &Tx<'_>,
        def: &SObjectDef,
        id: &SfId,
        values: Vec<(String, FieldValue)>,
        seq: i32,
        changes: &mut Vec<Change>,
    ) {
        let (actor, now) = (tx.actor, tx.now);
        let record = self
            .records
            .get(id)
            .expect("caller checked the record exists");
        let before = record.fields.clone();
        let mut after = before.clone();
        for (name, v) in values {
            if v.is_null() {
                after.remove(&name);
            } else {
                after.insert(name, v);
            }
        }
        after.insert("LastModifiedDate".into(), FieldValue::Long(now));
        after.insert(
            "LastModifiedById".into(),
            FieldValue::Str(actor.user_id.clone()),
        );
        after.insert("SystemModstamp".into(), FieldValue::Long(now));
        match def.name.as_str() {
            "Order" => {
                derive_order_fields(&mut after, Some(&before), actor, now);
            }
            "OrderItem" => derive_item_total(&mut after),
            _ => {}
        }
        // LastModifiedDate is written by every update, so it is always a changed field, even when
        // the clock has not moved since the previous write.
        let mut changed_flat: Vec<&str> = vec!["LastModifiedDate"];
        for key in before.keys().chain(after.keys()) {
            if before.get(key) != after.get(key) && !changed_flat.contains(&key.as_str()) {
                changed_flat.push(key);
            }
        }
        let mut header = self.header(tx, &def.name, vec![id.to_string()], ChangeType::Update, seq);
        let mut event_values = BTreeMap::new();
        for flat in &changed_flat {
            let Some(path) = cdc_path(def, flat) else {
                continue;
            };
            let new = after.get(*flat).cloned().unwrap_or(FieldValue::Null);
            if new.is_null() {
                header.nulled.push(path.clone());
            }
            header.changed.push(path.clone());
            event_values.insert(path, new);
        }
        self.records.get_mut(id).expect("exists").fields = after;
        if is_cdc_entity(&def.name) {
            changes.push(Change {
                header,
                values: event_values,
            });
        }
    }

    /// Recomputes an order's `TotalAmount` from its items; a change is an UPDATE in the same
    /// transaction, as a roll-up summary is.
    fn rollup_order_total(&mut self, tx: &Tx<'_>, order_id: &str, changes: &mut Vec<Change>) {
        let Ok(id) = SfId::parse(order_id) else {
            return;
        };
        if self.get(&id).is_none() {
            return;
        }
        let total: f64 = self
            .records_of("OrderItem")
            .filter(|r| r.text("OrderId") == Some(order_id))
            .filter_map(|r| r.get("TotalPrice").as_f64())
            .sum();
        if self.records[&id].get("TotalAmount").as_f64() == Some(total) {
            return;
        }
        let def = self.defs["Order"].clone();
        let seq = changes.len() as i32 + 1;
        self.apply_update(
            tx,
            &def,
            &id,
            vec![("TotalAmount".into(), FieldValue::Double(total))],
            seq,
            changes,
        );
    }

    /// Moves a record to the recycle bin; deleting an order deletes its items in the same
    /// transaction.
    pub fn delete(
        &mut self,
        sobject: &str,
        id: &SfId,
        actor: &Actor,
        now: i64,
    ) -> Result<Vec<Change>, OrgError> {
        let def = self.require_def(sobject)?;
        self.require_live(&def, id)?;
        let tx = self.begin(actor, now);
        let mut doomed = vec![id.clone()];
        if def.name == "Order" {
            let mut items: Vec<SfId> = self
                .records_of("OrderItem")
                .filter(|r| r.text("OrderId") == Some(id.as_str()))
                .map(|r| r.id.clone())
                .collect();
            // In creation order, whatever order the records are kept in.
            items.sort();
            doomed.extend(items);
        }
        let mut changes = Vec::new();
        for (i, rid) in doomed.into_iter().enumerate() {
            let r = self.records.get_mut(&rid).expect("live record");
            r.deleted = true;
            r.fields
                .insert("SystemModstamp".into(), FieldValue::Long(now));
            let entity = r.sobject.clone();
            let header = self.header(
                &tx,
                &entity,
                vec![rid.to_string()],
                ChangeType::Delete,
                i as i32 + 1,
            );
            if is_cdc_entity(&entity) {
                changes.push(Change {
                    header,
                    values: BTreeMap::new(),
                });
            }
        }
        if def.name == "OrderItem"
            && let Some(order_id) = self.records[id].text("OrderId").map(str::to_owned)
        {
            self.rollup_order_total(&tx, &order_id, &mut changes);
        }
        Ok(changes)
    }

    /// Restores a record from the recycle bin.
    pub fn undelete(
        &mut self,
        sobject: &str,
        id: &SfId,
        actor: &Actor,
        now: i64,
    ) -> Result<Vec<Change>, OrgError> {
        let def = self.require_def(sobject)?;
        let r = self
            .records
            .get_mut(id)
            .filter(|r| r.deleted && r.sobject == def.name)
            .ok_or(OrgError::NotFound)?;
        r.deleted = false;
        r.fields
            .insert("SystemModstamp".into(), FieldValue::Long(now));
        let tx = self.begin(actor, now);
        let header = self.header(
            &tx,
            &def.name,
            vec![id.to_string()],
            ChangeType::Undelete,
            1,
        );
        let mut changes = Vec::new();
        if is_cdc_entity(&def.name) {
            changes.push(Change {
                header,
                values: BTreeMap::new(),
            });
        }
        Ok(changes)
    }

    /// A gap event: the header only. `GAP_OVERFLOW` carries no record ids.
    pub fn gap(
        &mut self,
        sobject: &str,
        ct: ChangeType,
        id: Option<&SfId>,
        actor: &Actor,
        now: i64,
    ) -> Change {
        let ids = match (ct, id) {
            (ChangeType::GapOverflow, _) | (_, None) => Vec::new(),
            (_, Some(id)) => vec![id.to_string()],
        };
        let tx = self.begin(actor, now);
        Change {
            header: self.header(&tx, sobject, ids, ct, 1),
            values: BTreeMap::new(),
        }
    }

    /// Any live record of an object, chosen by the org's seeded generator.
    pub fn pick(&mut self, sobject: &str, filter: impl Fn(&Record) -> bool) -> Option<SfId> {
        let mut ids: Vec<SfId> = self
            .records_of(sobject)
            .filter(|r| filter(r))
            .map(|r| r.id.clone())
            .collect();
        if ids.is_empty() {
            return None;
        }
        ids.sort();
        let index = self.rng().random_range(0..ids.len());
        Some(ids.swap_remove(index))
    }

    /// Renders a record as Salesforce REST does: `attributes`, every field (null when unset),
    /// compound addresses as objects. `only` limits the fields.
    pub fn to_json(&self, record: &Record, api_version: &str, only: Option<&[String]>) -> Json {
        let def = &self.defs[&record.sobject];
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            serde_json::json!({"type": record.sobject, "url": format!("/services/data/{api_version}/sobjects/{}/{}", record.sobject, record.id)}),
        );
        let mut put = |name: &str, ftype: FieldType| {
            let v = if ftype == FieldType::Address {
                address_json(record, name)
            } else {
                value_to_json(ftype, record.get(name))
            };
            out.insert(name.to_owned(), v);
        };
        match only {
            Some(fields) => {
                for f in fields {
                    if let Some((flat, ftype)) = def.flat_field(f) {
                        put(&flat, ftype);
                    }
                }
            }
            None => {
                for f in &def.fields {
                    put(&f.name, f.ftype);
                }
                for (flat, ftype) in def.flat_address_fields() {
                    put(&flat, ftype);
                }
            }
        }
        Json::Object(out)
    }

    /// Inserts a record directly, without events: for sample data and bulk generation.
    pub fn seed_record(
        &mut self,
        sobject: &str,
        values: BTreeMap<String, FieldValue>,
        now: i64,
    ) -> SfId {
        let id = self.next_id(sobject);
        let mut fields = values;
        fields.insert("Id".into(), FieldValue::Str(id.to_string()));
        let user = FieldValue::Str(self.user_id.to_string());
        stamp_created(&mut fields, &user, now);
        if sobject != "OrderItem" {
            fields.entry("OwnerId".into()).or_insert(user);
        }
        match sobject {
            "Order" => {
                let n = self.next_autonumber("Order.OrderNumber", 8);
                fields.insert("OrderNumber".into(), FieldValue::Str(n));
                fields
                    .entry("TotalAmount".into())
                    .or_insert(FieldValue::Double(0.0));
                fields.insert("IsReductionOrder".into(), FieldValue::Bool(false));
                let status = fields
                    .get("Status")
                    .and_then(|s| s.as_str())
                    .unwrap_or("Draft")
                    .to_owned();
                fields.insert(
                    "StatusCode".into(),
                    FieldValue::Str(model::order_status_code(&status).into()),
                );
            }
            "OrderItem" => {
                let n = self.next_autonumber("OrderItem.OrderItemNumber", 10);
                fields.insert("OrderItemNumber".into(), FieldValue::Str(n));
                if let Some(p) = fields.get("UnitPrice").cloned() {
                    fields.insert("ListPrice".into(), p);
                }
                derive_item_total(&mut fields);
            }
            _ => {}
        }
        self.records.insert(
            id.clone(),
            Record {
                id: id.clone(),
                sobject: sobject.to_owned(),
                fields,
                deleted: false,
            },
        );
        if sobject == "OrderItem"
            && let Some(order) = self.records[&id]
                .text("OrderId")
                .and_then(|o| SfId::parse(o).ok())
        {
            let total: f64 = self
                .records_of("OrderItem")
                .filter(|r| r.text("OrderId") == Some(order.as_str()))
                .filter_map(|r| r.get("TotalPrice").as_f64())
                .sum();
            if let Some(o) = self.records.get_mut(&order) {
                o.fields
                    .insert("TotalAmount".into(), FieldValue::Double(total));
            }
        }
        id
    }
}

/// Writes the audit fields of a record created by `user` at `now`.
fn stamp_created(fields: &mut BTreeMap<String, FieldValue>, user: &FieldValue, now: i64) {
    for (f, v) in [
        ("CreatedDate", FieldValue::Long(now)),
        ("CreatedById", user.clone()),
        ("LastModifiedDate", FieldValue::Long(now)),
        ("LastModifiedById", user.clone()),
        ("SystemModstamp", FieldValue::Long(now)),
    ] {
        fields.insert(f.into(), v);
    }
}

/// Whether the org has change data capture enabled for an object.
pub fn is_cdc_entity(sobject: &str) -> bool {
    matches!(sobject, "Order" | "OrderItem")
}

/// The change-event path of a flat field, or `None` if the field is not in change events.
fn cdc_path(def: &SObjectDef, flat: &str) -> Option<String> {
    if let Some(f) = def.field(flat) {
        return f.cdc.then(|| f.name.clone());
    }
    address_component(def, flat).map(|(compound, component)| format!("{compound}.{component}"))
}

/// Maps flat values to change-event paths, dropping fields that are not in change events.
fn cdc_values<'a>(
    def: &SObjectDef,
    values: impl Iterator<Item = (&'a str, &'a FieldValue)>,
) -> BTreeMap<String, FieldValue> {
    values
        .filter_map(|(k, v)| cdc_path(def, k).map(|p| (p, v.clone())))
        .collect()
}

fn derive_order_fields(
    fields: &mut BTreeMap<String, FieldValue>,
    before: Option<&BTreeMap<String, FieldValue>>,
    actor: &Actor,
    now: i64,
) {
    let status = fields
        .get("Status")
        .and_then(FieldValue::as_str)
        .unwrap_or("Draft")
        .to_owned();
    fields.insert(
        "StatusCode".into(),
        FieldValue::Str(model::order_status_code(&status).into()),
    );
    let was = before
        .and_then(|b| b.get("Status"))
        .and_then(FieldValue::as_str);
    if status == "Activated" && was != Some("Activated") {
        fields.insert("ActivatedDate".into(), FieldValue::Long(now));
        fields.insert(
            "ActivatedById".into(),
            FieldValue::Str(actor.user_id.clone()),
        );
    }
}

fn derive_item_total(fields: &mut BTreeMap<String, FieldValue>) {
    let q = fields.get("Quantity").and_then(FieldValue::as_f64);
    let p = fields.get("UnitPrice").and_then(FieldValue::as_f64);
    if let (Some(q), Some(p)) = (q, p) {
        fields.insert(
            "TotalPrice".into(),
            FieldValue::Double((q * p * 100.0).round() / 100.0),
        );
    }
}

fn address_json(record: &Record, compound: &str) -> Json {
    let prefix = model::address_prefix(compound);
    let mut obj = Map::new();
    let mut any = false;
    for (cdc, flat, ftype) in model::ADDRESS_COMPONENTS {
        let Some(flat) = flat else {
            continue;
        };
        let v = record.get(&format!("{prefix}{flat}"));
        any |= !v.is_null();
        let mut key = cdc.to_owned();
        key[..1].make_ascii_lowercase();
        obj.insert(key, value_to_json(ftype, v));
    }
    if any { Json::Object(obj) } else { Json::Null }
}

/// Formats epoch milliseconds as Salesforce REST does: `2024-01-15T10:20:30.000+0000`.
pub fn format_datetime(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    t.format(&f).unwrap_or_default()
}

/// Formats epoch milliseconds at 00:00 UTC as `YYYY-MM-DD`.
pub fn format_date(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]");
    t.format(&f).unwrap_or_default()
}

/// Parses a Salesforce or RFC 3339 date-time (`Z`, `+00:00` or `+0000`) to epoch milliseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    // RFC 3339 wants `+00:00`; Salesforce writes `+0000`.
    let bytes = s.as_bytes();
    let compact_offset = bytes.len() > 5
        && matches!(bytes[bytes.len() - 5], b'+' | b'-')
        && bytes[bytes.len() - 4..].iter().all(u8::is_ascii_digit);
    let normalised = if compact_offset {
        format!("{}:{}", &s[..s.len() - 2], &s[s.len() - 2..])
    } else {
        s.to_owned()
    };
    let t =
        time::OffsetDateTime::parse(&normalised, &time::format_description::well_known::Rfc3339)
            .ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Parses `YYYY-MM-DD` to epoch milliseconds at 00:00 UTC.
pub fn parse_date(s: &str) -> Option<i64> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &f).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

/// Converts a JSON value given for a field to its typed value.
pub fn json_to_value(field: &str, ftype: FieldType, raw: &Json) -> Result<FieldValue, OrgError> {
    let bad = |expected: &'static str| OrgError::BadValue {
        field: field.to_owned(),
        expected,
        got: match raw {
            Json::String(_) => "VALUE_STRING".into(),
            Json::Number(_) => "VALUE_NUMBER".into(),
            Json::Bool(_) => "VALUE_BOOLEAN".into(),
            Json::Array(_) => "START_ARRAY".into(),
            Json::Object(_) => "START_OBJECT".into(),
            Json::Null => "VALUE_NULL".into(),
        },
    };
    if raw.is_null() {
        return Ok(FieldValue::Null);
    }
    Ok(match ftype {
        FieldType::Id
        | FieldType::Reference
        | FieldType::Text
        | FieldType::Picklist
        | FieldType::TextArea => {
            FieldValue::Str(raw.as_str().ok_or_else(|| bad("string"))?.to_owned())
        }
        FieldType::DateTime => FieldValue::Long(
            raw.as_str()
                .and_then(parse_datetime)
                .ok_or_else(|| bad("datetime"))?,
        ),
        FieldType::Date => FieldValue::Long(
            raw.as_str()
                .and_then(parse_date)
                .ok_or_else(|| bad("date"))?,
        ),
        FieldType::Double | FieldType::Currency => {
            FieldValue::Double(raw.as_f64().ok_or_else(|| bad("double"))?)
        }
        FieldType::Int => FieldValue::Long(raw.as_i64().ok_or_else(|| bad("int"))?),
        FieldType::Boolean => FieldValue::Bool(raw.as_bool().ok_or_else(|| bad("boolean"))?),
        FieldType::Address => return Err(bad("address components")),
    })
}

/// Converts a typed value to REST JSON.
pub fn value_to_json(ftype: FieldType, v: &FieldValue) -> Json {
    match (ftype, v) {
        (_, FieldValue::Null) => Json::Null,
        (FieldType::DateTime, FieldValue::Long(ms)) => Json::String(format_datetime(*ms)),
        (FieldType::Date, FieldValue::Long(ms)) => Json::String(format_date(*ms)),
        (_, FieldValue::Str(s)) => Json::String(s.clone()),
        (_, FieldValue::Long(l)) => Json::from(*l),
        (_, FieldValue::Double(d)) => {
            serde_json::Number::from_f64(*d).map_or(Json::Null, Json::Number)
        }
        (_, FieldValue::Bool(b)) => Json::Bool(*b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actor(org: &Org) -> Actor {
        Actor {
            user_id: org.user_id.to_string(),
            origin: "com/salesforce/api/rest/60.0;client=test".into(),
        }
    }

    fn obj(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    fn setup() -> (Org, Actor, SfId) {
        let mut org = Org::new(7);
        let a = actor(&org);
        let (acct, _) = org
            .create("Account", &obj(json!({"Name": "Acme"})), &a, 1_000)
            .unwrap();
        (org, a, acct)
    }

    #[test]
    fn create_emits_every_populated_field_and_no_changed_fields() {
        let (mut org, a, acct) = setup();
        let (id, changes) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft", "BillingCity": "Paris"})), &a, 2_000)
            .unwrap();
        assert_eq!(changes.len(), 1);
        let c = &changes[0];
        assert_eq!(c.header.change_type, ChangeType::Create);
        assert_eq!(c.header.record_ids, [id.to_string()]);
        assert!(c.header.changed.is_empty());
        assert_eq!(c.values["Status"], FieldValue::Str("Draft".into()));
        assert_eq!(
            c.values["BillingAddress.City"],
            FieldValue::Str("Paris".into())
        );
        assert_eq!(c.values["StatusCode"], FieldValue::Str("Draft".into()));
        assert_eq!(
            c.values["EffectiveDate"],
            FieldValue::Long(1_709_251_200_000)
        );
        assert!(!c.values.contains_key("Id"));
    }

    #[test]
    fn update_carries_only_changes_and_lists_nulled_fields() {
        let (mut org, a, acct) = setup();
        let (id, _) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft", "Description": "x"})), &a, 2_000)
            .unwrap();
        let changes = org
            .update(
                "Order",
                &id,
                &obj(json!({"Status": "Approved", "Description": null, "BillingCity": "Lyon"})),
                &a,
                3_000,
            )
            .unwrap();
        let c = &changes[0];
        assert_eq!(c.header.change_type, ChangeType::Update);
        let mut changed = c.header.changed.clone();
        changed.sort();
        assert_eq!(
            changed,
            [
                "BillingAddress.City",
                "Description",
                "LastModifiedDate",
                "Status"
            ]
        );
        assert_eq!(c.header.nulled, ["Description"]);
        assert_eq!(c.values["LastModifiedDate"], FieldValue::Long(3_000));
        assert!(!c.values.contains_key("AccountId"));
    }

    #[test]
    fn rest_validation_matches_salesforce_error_codes() {
        let (mut org, a, acct) = setup();
        let e = org
            .create("Order", &obj(json!({"AccountId": acct.as_str()})), &a, 1)
            .unwrap_err();
        assert_eq!(e.error_code(), "REQUIRED_FIELD_MISSING");
        let e = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Bogus"})), &a, 1)
            .unwrap_err();
        assert_eq!(e.error_code(), "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");
        let e = org
            .create("Account", &obj(json!({"Name": "x", "Nope__c": 1})), &a, 1)
            .unwrap_err();
        assert_eq!(e.error_code(), "INVALID_FIELD");
        let e = org
            .create("Account", &obj(json!({"Name": 5})), &a, 1)
            .unwrap_err();
        assert_eq!(e.error_code(), "JSON_PARSER_ERROR");
        let e = org
            .update(
                "Account",
                &acct,
                &obj(json!({"CreatedDate": "2024-01-01T00:00:00Z"})),
                &a,
                1,
            )
            .unwrap_err();
        assert_eq!(e.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
        // Provisioning_Error__c is a Text(255): lengths count characters, not bytes.
        let (order, _) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft"})), &a, 1)
            .unwrap();
        let fits = obj(
            json!({"Provisioning_Error__c": "é".repeat(255), "Activation_Status__c": "Failed"}),
        );
        assert!(org.update("Order", &order, &fits, &a, 2).is_ok());
        let e = org
            .update(
                "Order",
                &order,
                &obj(json!({"Provisioning_Error__c": "e".repeat(256)})),
                &a,
                3,
            )
            .unwrap_err();
        assert_eq!(e.error_code(), "STRING_TOO_LONG");
        assert_eq!(e.http_status(), 400);
    }

    #[test]
    fn item_changes_roll_up_to_the_order_in_the_same_transaction() {
        let (mut org, a, acct) = setup();
        let (order, _) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft"})), &a, 2_000)
            .unwrap();
        let (_, changes) = org
            .create(
                "OrderItem",
                &obj(json!({"OrderId": order.as_str(), "Quantity": 2.0, "UnitPrice": 10.5})),
                &a,
                3_000,
            )
            .unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].header.entity_name, "OrderItem");
        assert_eq!(changes[1].header.entity_name, "Order");
        assert_eq!(changes[1].header.sequence_number, 2);
        assert_eq!(
            changes[0].header.transaction_key,
            changes[1].header.transaction_key
        );
        assert_eq!(changes[1].values["TotalAmount"], FieldValue::Double(21.0));
    }

    #[test]
    fn delete_and_undelete_emit_header_only_events() {
        let (mut org, a, acct) = setup();
        let (order, _) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft"})), &a, 2_000)
            .unwrap();
        let del = org.delete("Order", &order, &a, 3_000).unwrap();
        assert_eq!(del[0].header.change_type, ChangeType::Delete);
        assert!(del[0].values.is_empty());
        assert!(org.get(&order).is_none());
        let und = org.undelete("Order", &order, &a, 4_000).unwrap();
        assert_eq!(und[0].header.change_type, ChangeType::Undelete);
        assert!(org.get(&order).is_some());
    }

    #[test]
    fn a_collection_update_is_one_transaction_whose_identical_changes_merge() {
        let (mut org, a, acct) = setup();
        let order = |org: &mut Org| {
            org.create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft"})), &a, 2_000)
                .unwrap()
                .0
        };
        let ids: Vec<SfId> = (0..4).map(|_| order(&mut org)).collect();
        let item = |id: &SfId, input: Json| UpdateItem {
            sobject: "Order".into(),
            id: Some(id.to_string()),
            input: obj(input),
        };
        let items = vec![
            item(&ids[0], json!({"Status": "Approved"})),
            item(&ids[1], json!({"Description": "other"})),
            item(&ids[2], json!({"Status": "Approved"})),
            UpdateItem {
                sobject: "Widget__c".into(),
                ..item(&ids[3], json!({}))
            },
            item(&ids[3], json!({"Status": "Approved"})),
        ];
        let (outcomes, changes) = org.update_many(&items, false, &a, 3_000);
        assert_eq!(outcomes[0].as_ref().unwrap(), &ids[0]);
        assert_eq!(outcomes[3], Err(OrgError::InvalidType("Widget__c".into())));
        assert!(outcomes.iter().filter(|o| o.is_ok()).count() == 4);
        assert_eq!(changes.len(), 4);
        assert!(
            changes
                .iter()
                .all(|c| c.header.transaction_key == changes[0].header.transaction_key)
        );
        let merged = merge_identical(changes);
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0].header.record_ids,
            [ids[0].to_string(), ids[2].to_string(), ids[3].to_string()]
        );
        assert_eq!(merged[1].header.record_ids, [ids[1].to_string()]);
        let seqs: Vec<i32> = merged.iter().map(|c| c.header.sequence_number).collect();
        assert_eq!(seqs, [1, 2]);

        // All or none: one invalid record, and nothing is written.
        let items = vec![
            item(&ids[1], json!({"Status": "Activated"})),
            item(&ids[2], json!({"Status": "Exploded"})),
        ];
        let (outcomes, changes) = org.update_many(&items, true, &a, 4_000);
        assert_eq!(outcomes[0], Err(OrgError::RolledBack));
        assert_eq!(
            outcomes[1].as_ref().unwrap_err().error_code(),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        );
        assert!(changes.is_empty());
        assert_eq!(org.get(&ids[1]).unwrap().text("Status"), Some("Draft"));

        // Ids: missing, malformed, another object's, unknown, deleted.
        org.delete("Order", &ids[3], &a, 5_000).unwrap();
        let unknown = ids::generate("801", "Hs", 999_999);
        let items = vec![
            UpdateItem {
                id: None,
                ..item(&ids[0], json!({}))
            },
            UpdateItem {
                id: Some("nope".into()),
                ..item(&ids[0], json!({}))
            },
            UpdateItem {
                id: Some(acct.to_string()),
                ..item(&ids[0], json!({}))
            },
            item(&unknown, json!({})),
            item(&ids[3], json!({})),
        ];
        let (outcomes, _) = org.update_many(&items, false, &a, 6_000);
        let codes: Vec<&str> = outcomes
            .iter()
            .map(|o| o.as_ref().unwrap_err().error_code())
            .collect();
        assert_eq!(
            codes,
            [
                "MISSING_ARGUMENT",
                "MALFORMED_ID",
                "MALFORMED_ID",
                "INVALID_CROSS_REFERENCE_KEY",
                "ENTITY_IS_DELETED"
            ]
        );
    }

    #[test]
    fn deleting_an_order_merges_its_items_deletions() {
        let (mut org, a, acct) = setup();
        let (order, _) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft"})), &a, 2_000)
            .unwrap();
        let items: Vec<String> = (0..2)
            .map(|_| {
                org.create(
                    "OrderItem",
                    &obj(json!({"OrderId": order.as_str(), "Quantity": 1.0, "UnitPrice": 2.0})),
                    &a,
                    3_000,
                )
                .unwrap()
                .0
                .to_string()
            })
            .collect();
        let merged = merge_identical(org.delete("Order", &order, &a, 4_000).unwrap());
        let shape: Vec<(&str, ChangeType, usize)> = merged
            .iter()
            .map(|c| {
                (
                    c.header.entity_name.as_str(),
                    c.header.change_type,
                    c.header.sequence_number as usize,
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("Order", ChangeType::Delete, 1),
                ("OrderItem", ChangeType::Delete, 2)
            ]
        );
        assert_eq!(merged[1].header.record_ids, items);
    }

    #[test]
    fn commit_numbers_increase_and_exceed_f64_precision() {
        let (mut org, a, acct) = setup();
        let c1 = org
            .update(
                "Account",
                &acct,
                &obj(json!({"Phone": "1"})),
                &a,
                1_709_303_151_782,
            )
            .unwrap();
        assert!(c1.is_empty(), "Account has no change events in this org");
        let (o, c) = org
            .create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft"})), &a, 1_709_303_151_782)
            .unwrap();
        let c2 = org
            .update(
                "Order",
                &o,
                &obj(json!({"Status": "Approved"})),
                &a,
                1_709_303_151_782,
            )
            .unwrap();
        assert!(c[0].header.commit_number > 1 << 53);
        assert!(c2[0].header.commit_number > c[0].header.commit_number);
    }

    #[test]
    fn dates_round_trip_in_salesforce_formats() {
        assert_eq!(
            format_datetime(1_709_303_151_000),
            "2024-03-01T14:25:51.000+0000"
        );
        assert_eq!(
            parse_datetime("2024-03-01T14:25:51.000+0000"),
            Some(1_709_303_151_000)
        );
        assert_eq!(
            parse_datetime("2024-03-01T14:25:51Z"),
            Some(1_709_303_151_000)
        );
        assert_eq!(
            parse_datetime("2024-03-01T15:25:51+01:00"),
            Some(1_709_303_151_000)
        );
        assert_eq!(parse_date("2024-03-01"), Some(1_709_251_200_000));
        assert_eq!(format_date(1_709_251_200_000), "2024-03-01");
    }

    #[test]
    fn added_custom_fields_are_sorted_among_custom_fields() {
        let mut org = Org::new(1);
        org.add_field("Order", model::FieldDef::custom_text("Fulfilment_Notes__c"))
            .unwrap();
        let names: Vec<&str> = org
            .def("Order")
            .unwrap()
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .filter(|n| n.ends_with("__c"))
            .collect();
        assert_eq!(
            names,
            [
                "Activation_Status__c",
                "Fulfilment_Notes__c",
                "Provisioning_Error__c",
                "WHMCS_Order_ID__c"
            ]
        );
        assert!(
            org.add_field("Order", model::FieldDef::custom_text("Fulfilment_Notes__c"))
                .is_err()
        );
    }
}
