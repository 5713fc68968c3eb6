//! Event schemas the emulator serves through `GetSchema`, and the encoder that writes events with
//! them.
//!
//! A schema is built from an object definition (change events) or a field list (platform
//! events), rendered to the exact JSON shape Salesforce serves (reference §5.2, §5.3), and
//! identified by a 22-character id derived from a hash of that JSON, so the same schema always has
//! the same id and any change to it gives a new one. A schema is immutable once built; the
//! emulator keeps every version it ever used, because old events keep pointing at theirs.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

use super::avro;
use super::bitmap::{self, FieldLayout};
use super::model::{ADDRESS_COMPONENTS, FieldType, SObjectDef};

/// The `changeType` of a change event: the symbols of the ChangeEventHeader's `ChangeType` enum,
/// in the order the schema declares them (the order fixes each symbol's Avro index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeType {
    /// A record was created.
    Create,
    /// A record was updated.
    Update,
    /// A record was deleted.
    Delete,
    /// A record came back from the recycle bin.
    Undelete,
    /// A create the org could not describe as an event.
    GapCreate,
    /// An update the org could not describe as an event.
    GapUpdate,
    /// A delete the org could not describe as an event.
    GapDelete,
    /// An undelete the org could not describe as an event.
    GapUndelete,
    /// A transaction with more than 100,000 changes; the rest of them are not published.
    GapOverflow,
}

impl ChangeType {
    /// Every change type, in the schema's symbol order.
    pub const ALL: [ChangeType; 9] = [
        ChangeType::Create,
        ChangeType::Update,
        ChangeType::Delete,
        ChangeType::Undelete,
        ChangeType::GapCreate,
        ChangeType::GapUpdate,
        ChangeType::GapDelete,
        ChangeType::GapUndelete,
        ChangeType::GapOverflow,
    ];

    /// The Avro enum symbol, e.g. `GAP_UPDATE`.
    pub fn symbol(self) -> &'static str {
        match self {
            ChangeType::Create => "CREATE",
            ChangeType::Update => "UPDATE",
            ChangeType::Delete => "DELETE",
            ChangeType::Undelete => "UNDELETE",
            ChangeType::GapCreate => "GAP_CREATE",
            ChangeType::GapUpdate => "GAP_UPDATE",
            ChangeType::GapDelete => "GAP_DELETE",
            ChangeType::GapUndelete => "GAP_UNDELETE",
            ChangeType::GapOverflow => "GAP_OVERFLOW",
        }
    }

    /// The change type of an Avro enum symbol.
    pub fn from_symbol(symbol: &str) -> Option<ChangeType> {
        ChangeType::ALL.into_iter().find(|c| c.symbol() == symbol)
    }

    /// The Avro enum index, which is what the payload carries.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether this is a `GAP_*` type.
    pub fn is_gap(self) -> bool {
        !matches!(
            self,
            ChangeType::Create | ChangeType::Update | ChangeType::Delete | ChangeType::Undelete
        )
    }
}

impl std::fmt::Display for ChangeType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A value of one field in the emulator's records and events.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum FieldValue {
    /// No value.
    Null,
    /// Text, ids and picklists.
    Str(String),
    /// Integers, dates and date-times (epoch milliseconds).
    Long(i64),
    /// Doubles and currency.
    Double(f64),
    /// Checkboxes.
    Bool(bool),
}

impl FieldValue {
    /// Whether this is [`FieldValue::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, FieldValue::Null)
    }

    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number as a double, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::Double(d) => Some(*d),
            FieldValue::Long(l) => Some(*l as f64),
            _ => None,
        }
    }
}

/// The Avro primitive a field is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    String,
    Long,
    Int,
    Double,
    Boolean,
}

impl Primitive {
    fn of(t: FieldType) -> Primitive {
        match t {
            FieldType::Id
            | FieldType::Reference
            | FieldType::Text
            | FieldType::Picklist
            | FieldType::TextArea => Primitive::String,
            FieldType::DateTime | FieldType::Date => Primitive::Long,
            FieldType::Int => Primitive::Int,
            FieldType::Double | FieldType::Currency => Primitive::Double,
            FieldType::Boolean => Primitive::Boolean,
            FieldType::Address => unreachable!("addresses are records"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Primitive::String => "string",
            Primitive::Long => "long",
            Primitive::Int => "int",
            Primitive::Double => "double",
            Primitive::Boolean => "boolean",
        }
    }

    /// Writes `v`; a value of the wrong shape was rejected before it reached a record.
    fn write(self, buf: &mut Vec<u8>, v: &FieldValue) {
        match (self, v) {
            (Primitive::String, FieldValue::Str(s)) => avro::string(buf, s),
            (Primitive::Long | Primitive::Int, FieldValue::Long(l)) => avro::long(buf, *l),
            (Primitive::Long | Primitive::Int, FieldValue::Double(d)) => avro::long(buf, *d as i64),
            (Primitive::Double, FieldValue::Double(d)) => avro::double(buf, *d),
            (Primitive::Double, FieldValue::Long(l)) => avro::double(buf, *l as f64),
            (Primitive::Boolean, FieldValue::Bool(b)) => avro::boolean(buf, *b),
            (p, v) => unreachable!("value {v:?} stored in a {p:?} field"),
        }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Scalar {
        name: String,
        primitive: Primitive,
        nullable: bool,
    },
    Address {
        name: String,
    },
}

/// Whether events of a schema are change events or platform events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `<Entity>ChangeEvent`, with a ChangeEventHeader at position 0.
    ChangeEvent,
    /// `<Name>__e`.
    PlatformEvent,
}

/// One immutable event schema.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The 22-character schema id.
    pub id: String,
    /// The Avro schema JSON, exactly as `GetSchema` serves it.
    pub json: String,
    /// The entity (`Order`) or event (`Order_Fulfilment_Requested__e`) name.
    pub entity: String,
    /// Change event or platform event.
    pub kind: SchemaKind,
    slots: Vec<Slot>,
    layout: FieldLayout,
}

/// The ChangeEventHeader of one change event.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeHeader {
    /// API name of the object.
    pub entity_name: String,
    /// Ids of the changed records (empty for `GAP_OVERFLOW`).
    pub record_ids: Vec<String>,
    /// Kind of change.
    pub change_type: ChangeType,
    /// `com/salesforce/api/<api>/<ver>;client=<client>`.
    pub change_origin: String,
    /// Id of the transaction.
    pub transaction_key: String,
    /// 1-based position within the transaction.
    pub sequence_number: i32,
    /// Commit time, epoch milliseconds.
    pub commit_timestamp: i64,
    /// System change number of the commit.
    pub commit_number: i64,
    /// Id of the user who committed.
    pub commit_user: String,
    /// Changed field paths (`Status`, `BillingAddress.City`).
    pub changed: Vec<String>,
    /// Field paths explicitly set to null.
    pub nulled: Vec<String>,
}

fn schema_id(json: &str) -> String {
    let digest = Sha256::digest(json.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

fn header_json() -> Json {
    let symbols: Vec<&str> = ChangeType::ALL.iter().map(|c| c.symbol()).collect();
    json!({"type":"record","name":"ChangeEventHeader","fields":[
        {"name":"entityName","type":"string"},
        {"name":"recordIds","type":{"type":"array","items":"string"}},
        {"name":"changeType","type":{"type":"enum","name":"ChangeType","namespace":"","symbols":symbols}},
        {"name":"changeOrigin","type":"string"},
        {"name":"transactionKey","type":"string"},
        {"name":"sequenceNumber","type":"int"},
        {"name":"commitTimestamp","type":"long"},
        {"name":"commitNumber","type":"long"},
        {"name":"commitUser","type":"string"},
        {"name":"nulledFields","type":{"type":"array","items":"string"}},
        {"name":"diffFields","type":{"type":"array","items":"string"}},
        {"name":"changedFields","type":{"type":"array","items":"string"}}]})
}

fn address_json() -> Json {
    let fields: Vec<Json> = ADDRESS_COMPONENTS
        .iter()
        .map(|(name, _, t)| json!({"name": name, "type": ["null", Primitive::of(*t).name()], "default": null}))
        .collect();
    json!({"type":"record","name":"Address","fields":fields})
}

fn address_children() -> Vec<String> {
    ADDRESS_COMPONENTS
        .iter()
        .map(|(n, _, _)| n.to_string())
        .collect()
}

impl EventSchema {
    /// The change-event schema of an object: the header, then every CDC field in definition
    /// order, all nullable.
    pub fn change_event(def: &SObjectDef) -> EventSchema {
        let mut fields = vec![
            json!({"name":"ChangeEventHeader","type":header_json(),"doc":"Data:ComplexValueType"}),
        ];
        let mut slots = Vec::new();
        let mut layout = FieldLayout::new();
        layout.push("ChangeEventHeader", Some(vec![]));
        let mut address_defined = false;
        for f in def.fields.iter().filter(|f| f.cdc) {
            if f.ftype == FieldType::Address {
                let ty = if address_defined {
                    json!(["null", "Address"])
                } else {
                    address_defined = true;
                    json!(["null", address_json()])
                };
                fields.push(
                    json!({"name": f.name, "type": ty, "doc": f.avro_doc(), "default": null}),
                );
                slots.push(Slot::Address {
                    name: f.name.clone(),
                });
                layout.push(f.name.clone(), Some(address_children()));
            } else {
                let primitive = Primitive::of(f.ftype);
                fields.push(json!({"name": f.name, "type": ["null", primitive.name()], "doc": f.avro_doc(), "default": null}));
                slots.push(Slot::Scalar {
                    name: f.name.clone(),
                    primitive,
                    nullable: true,
                });
                layout.push(f.name.clone(), None);
            }
        }
        let json = json!({"type":"record","name":format!("{}ChangeEvent", def.name),"namespace":"com.sforce.eventbus","fields":fields}).to_string();
        EventSchema {
            id: schema_id(&json),
            json,
            entity: def.name.clone(),
            kind: SchemaKind::ChangeEvent,
            slots,
            layout,
        }
    }

    /// A platform-event schema: `CreatedDate` and `CreatedById` (required), then the custom
    /// fields as nullable unions (reference §5.3).
    pub fn platform_event(name: &str, custom: &[(&str, FieldType)]) -> EventSchema {
        let mut fields = vec![
            json!({"name":"CreatedDate","type":"long","doc":"CreatedDate:DateTime"}),
            json!({"name":"CreatedById","type":"string","doc":"CreatedBy:EntityId"}),
        ];
        let mut slots = vec![
            Slot::Scalar {
                name: "CreatedDate".into(),
                primitive: Primitive::Long,
                nullable: false,
            },
            Slot::Scalar {
                name: "CreatedById".into(),
                primitive: Primitive::String,
                nullable: false,
            },
        ];
        let mut layout = FieldLayout::new();
        layout.push("CreatedDate", None);
        layout.push("CreatedById", None);
        for (i, (field, t)) in custom.iter().enumerate() {
            let primitive = Primitive::of(*t);
            let doc = format!("{}:00N5g00000Pe{i:03}", t.avro_doc());
            fields.push(json!({"name": field, "type": ["null", primitive.name()], "doc": doc, "default": null}));
            slots.push(Slot::Scalar {
                name: (*field).to_owned(),
                primitive,
                nullable: true,
            });
            layout.push(*field, None);
        }
        let json =
            json!({"type":"record","name":name,"namespace":"com.sforce.eventbus","fields":fields})
                .to_string();
        EventSchema {
            id: schema_id(&json),
            json,
            entity: name.to_owned(),
            kind: SchemaKind::PlatformEvent,
            slots,
            layout,
        }
    }

    /// Field names the bitmaps of this schema index.
    pub fn layout(&self) -> &FieldLayout {
        &self.layout
    }

    /// Names of the top-level fields after the header, in order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| match s {
            Slot::Scalar { name, .. } | Slot::Address { name } => name.as_str(),
        })
    }

    /// Encodes a change event. `values` maps field paths (`Status`, `BillingAddress.City`) to
    /// values; every field without an entry is written as null, as Salesforce does for fields
    /// an UPDATE did not touch.
    pub fn encode_change(
        &self,
        header: &ChangeHeader,
        values: &BTreeMap<String, FieldValue>,
    ) -> Vec<u8> {
        debug_assert_eq!(self.kind, SchemaKind::ChangeEvent);
        let mut buf = Vec::with_capacity(256 + values.len() * 16);
        avro::string(&mut buf, &header.entity_name);
        avro::string_array(&mut buf, &header.record_ids);
        avro::long(&mut buf, header.change_type.index() as i64);
        avro::string(&mut buf, &header.change_origin);
        avro::string(&mut buf, &header.transaction_key);
        avro::long(&mut buf, i64::from(header.sequence_number));
        avro::long(&mut buf, header.commit_timestamp);
        avro::long(&mut buf, header.commit_number);
        avro::string(&mut buf, &header.commit_user);
        let paths = |v: &[String]| -> Vec<String> {
            bitmap::encode(&self.layout, v.iter().map(String::as_str))
        };
        avro::string_array(&mut buf, &paths(&header.nulled));
        avro::string_array::<&str>(&mut buf, &[]);
        avro::string_array(&mut buf, &paths(&header.changed));
        for slot in &self.slots {
            match slot {
                Slot::Scalar {
                    name, primitive, ..
                } => write_nullable(&mut buf, *primitive, values.get(name)),
                Slot::Address { name } => {
                    let prefix = format!("{name}.");
                    // The nested record is present when any component has an entry, even a
                    // nulled one; only the components with values are non-null inside it.
                    let present: BTreeMap<&str, &FieldValue> = values
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&prefix))
                        .map(|(k, v)| (&k[prefix.len()..], v))
                        .collect();
                    if present.is_empty() {
                        avro::union_branch(&mut buf, 0);
                        continue;
                    }
                    avro::union_branch(&mut buf, 1);
                    for (component, _, t) in ADDRESS_COMPONENTS {
                        write_nullable(&mut buf, Primitive::of(t), present.get(component).copied());
                    }
                }
            }
        }
        buf
    }

    /// A corrupt version of a payload of this schema, that every Avro decoder rejects: the
    /// first string field declares 127 bytes but far fewer follow. (A merely truncated datum is
    /// not enough: some decoders read a missing union index as 0, that is, as null.)
    pub fn corrupt(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        if self.kind == SchemaKind::PlatformEvent {
            // CreatedDate (a long) comes before the first string, CreatedById.
            avro::long(&mut out, 1);
        }
        avro::long(&mut out, 127);
        out.extend_from_slice(&payload[..payload.len().min(16)]);
        out
    }

    /// Encodes a platform event from its field values; `CreatedDate` and `CreatedById` must be
    /// present.
    pub fn encode_platform(&self, values: &BTreeMap<String, FieldValue>) -> Vec<u8> {
        debug_assert_eq!(self.kind, SchemaKind::PlatformEvent);
        let mut buf = Vec::with_capacity(128);
        for slot in &self.slots {
            if let Slot::Scalar {
                name,
                primitive,
                nullable,
            } = slot
            {
                let v = values.get(name);
                if *nullable {
                    write_nullable(&mut buf, *primitive, v);
                } else {
                    primitive.write(&mut buf, v.unwrap_or(&FieldValue::Null));
                }
            }
        }
        buf
    }
}

fn write_nullable(buf: &mut Vec<u8>, primitive: Primitive, v: Option<&FieldValue>) {
    match v {
        None | Some(FieldValue::Null) => avro::union_branch(buf, 0),
        Some(v) => {
            avro::union_branch(buf, 1);
            primitive.write(buf, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;

    #[test]
    fn order_schema_has_the_reference_shape_and_a_stable_id() {
        let s = EventSchema::change_event(&model::order());
        assert_eq!(s.id.len(), 22);
        assert_eq!(s.id, EventSchema::change_event(&model::order()).id);
        let parsed = apache_avro::Schema::parse_str(&s.json).expect("valid Avro");
        let apache_avro::Schema::Record(r) = parsed else {
            panic!("record expected")
        };
        assert_eq!(
            r.name.fullname(None),
            "com.sforce.eventbus.OrderChangeEvent"
        );
        assert_eq!(r.fields[9].name, "Status");
        assert_eq!(r.fields[14].name, "BillingAddress");
        assert_eq!(r.fields[29].name, "LastModifiedDate");
        assert!(s.json.contains(r#""type":["null","Address"]"#));
    }

    #[test]
    fn change_types_carry_their_symbol_and_index() {
        for (i, c) in ChangeType::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i);
            assert_eq!(ChangeType::from_symbol(c.symbol()), Some(c));
            assert_eq!(c.is_gap(), c.symbol().starts_with("GAP_"));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.symbol())
            );
        }
        assert_eq!(ChangeType::from_symbol("gap_update"), None);
    }

    #[test]
    fn adding_a_field_changes_the_id() {
        let mut def = model::order();
        let before = EventSchema::change_event(&def).id;
        def.fields.push(model::FieldDef::custom_text("Extra__c"));
        assert_ne!(before, EventSchema::change_event(&def).id);
    }
}
