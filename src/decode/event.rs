//! Decoded events: change events with their header and field names, and platform events.
//!
//! A [`CompiledSchema`] is built once per schema id from the JSON `GetSchema` returns: the
//! decoding plan, the bitmap layout, and the positions of the ChangeEventHeader fields. Every
//! event is decoded with the schema its own `schema_id` names, never the topic's. When the
//! header has Salesforce's shape (it always has), it is read straight into the
//! [`ChangeEvent`]'s typed fields ([`avro::header`](super::avro::header)); otherwise it
//! decodes as a generic record that is then taken apart. Both ways give the same event or the
//! same error: payload faults first, then the header's meaning (`changeType`,
//! `sequenceNumber`), then its bitmaps.
//!
//! A schema compiled [with a projection](CompiledSchema::with_projection) also holds a plan that
//! decodes only the header and the named body fields ([`avro::project`](super::avro::project)):
//! the ingest path reads events through it ([`CompiledSchema::decode_projected`]), while
//! `sfcdc tail` and the quarantine re-drive decode in full ([`CompiledSchema::decode`]). Both
//! give the same header, the same field names and, for every field the projected record holds,
//! the same value; a projected record holds no other field ([`Record::get`] answers `None`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use compact_str::CompactString;
use serde::Serialize;

use super::ChangeType;
use super::avro::{AvroError, Header, HeaderPlan, Plan, Projection, Record, Value};
use super::bitmap::{self, BitmapError, FieldLayout, FieldName};

/// A replay id: opaque bytes, stored and sent back exactly as received (8 or 10 bytes in
/// practice). Only its display is numeric.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct ReplayId(pub Bytes);

impl ReplayId {
    /// Wraps raw bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        ReplayId(bytes.into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex of the bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
        hex::decode(s).map(|b| ReplayId(Bytes::from(b)))
    }

    /// The first 8 bytes as a big-endian number, for display and ordering in logs.
    pub fn position(&self) -> Option<u64> {
        self.0
            .get(..8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ReplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayId({})", self.to_hex())
    }
}

/// Where a channel's stream starts: strictly after a replay id, or at one of the two presets.
/// The one position type of the subscriber, its sink and the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "replay_id", rename_all = "snake_case")]
pub enum Position {
    /// Strictly after this replay id.
    After(ReplayId),
    /// From the earliest retained event (the preset, or `checkpoints reset --to earliest`).
    Earliest,
    /// From new events only (the preset, or `checkpoints reset --to latest`).
    Latest,
}

/// Where a channel with no stored position starts (`SFCDC_REPLAY_PRESET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayPreset {
    /// Only events published from now on.
    Latest,
    /// Every retained event.
    Earliest,
}

/// What to do when the server rejects the stored replay id (`SFCDC_REPLAY_RECOVERY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayRecovery {
    /// Resubscribe from the earliest retained event (replays; downstream keys deduplicate).
    Earliest,
    /// Resubscribe from now (skips whatever was missed).
    Latest,
    /// Stop the channel.
    Fail,
}

impl ReplayRecovery {
    /// The setting's name, for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ReplayRecovery::Earliest => "earliest",
            ReplayRecovery::Latest => "latest",
            ReplayRecovery::Fail => "fail",
        }
    }
}

impl fmt::Display for ReplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ReplayId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// Why one event could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The schema JSON is not valid Avro.
    #[error("invalid schema: {0}")]
    Schema(String),
    /// The payload does not match its schema.
    #[error("payload does not decode: {0}")]
    Payload(#[from] AvroError),
    /// A header field is missing or of the wrong type.
    #[error("ChangeEventHeader.{0} is missing or has the wrong type")]
    Header(&'static str),
    /// A header bitmap is malformed.
    #[error("bitmap: {0}")]
    Bitmap(#[from] BitmapError),
    /// The schema this event names does not exist.
    #[error("schema {0} is unknown to the server")]
    UnknownSchema(String),
}

impl DecodeError {
    /// A short, fixed label for metrics and the quarantine's `kind` (the same names as
    /// telemetry's `QuarantineKind`, which a test keeps in step).
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Schema(_) => "schema",
            DecodeError::Payload(_) => "payload",
            DecodeError::Header(_) => "header",
            DecodeError::Bitmap(_) => "bitmap",
            DecodeError::UnknownSchema(_) => "unknown_schema",
        }
    }
}

/// A change event (reference §3).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// `entityName`.
    pub entity: CompactString,
    /// `recordIds` (empty for `GAP_OVERFLOW`).
    pub record_ids: Vec<CompactString>,
    /// `changeType`.
    pub change_type: ChangeType,
    /// `changeOrigin`.
    pub change_origin: CompactString,
    /// `transactionKey`.
    pub transaction_key: CompactString,
    /// `sequenceNumber`.
    pub sequence_number: i32,
    /// `commitTimestamp`, epoch milliseconds.
    pub commit_timestamp: i64,
    /// `commitNumber`: an integer that can exceed 2^53.
    pub commit_number: i64,
    /// `commitUser`.
    pub commit_user: CompactString,
    /// `changedFields`, as names (`Parent.Child` for compound fields).
    pub changed_fields: Vec<FieldName>,
    /// `nulledFields`, as names.
    pub nulled_fields: Vec<FieldName>,
    /// `diffFields`, as names.
    pub diff_fields: Vec<FieldName>,
    /// The record's field values (the header slot is `Null`).
    pub fields: Record,
}

impl ChangeEvent {
    /// Whether a field is in `changedFields` (or, for compound fields, any component is).
    pub fn changed(&self, field: &str) -> bool {
        self.changed_fields.iter().any(|f| {
            &**f == field
                || (f.len() > field.len()
                    && f.starts_with(field)
                    && f.as_bytes()[field.len()] == b'.')
        })
    }

    /// Whether a field is in `nulledFields`.
    pub fn nulled(&self, field: &str) -> bool {
        self.nulled_fields.iter().any(|f| &**f == field)
    }

    /// A field's value if the event really carries it: changed (with its new value) or nulled
    /// (as `Null`). `None` means the event says nothing about the field.
    pub fn carried(&self, field: &str) -> Option<&Value> {
        if self.nulled(field) {
            return Some(&Value::Null);
        }
        if self.changed(field) || self.change_type == ChangeType::Create {
            return self.fields.get(field);
        }
        None
    }
}

/// A platform event.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformEvent {
    /// The topic it arrived on.
    pub topic: Arc<str>,
    /// The event's fields (`CreatedDate`, `CreatedById`, custom fields).
    pub fields: Record,
}

/// The body of a decoded event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// A change event.
    Change(ChangeEvent),
    /// A platform event.
    Platform(PlatformEvent),
}

/// One decoded event with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedEvent {
    /// Replay id, exactly as received.
    pub replay_id: ReplayId,
    /// Schema the payload was decoded with.
    pub schema_id: Arc<str>,
    /// `ProducerEvent.id` (a UUID).
    pub event_id: String,
    /// The raw payload (a shared slice, not a copy), kept so that an event the rules cannot
    /// handle can be quarantined whole.
    pub payload: Bytes,
    /// The event.
    pub body: EventBody,
}

impl DecodedEvent {
    /// When Salesforce committed the event (epoch ms): a change event's `commitTimestamp`, a
    /// platform event's `CreatedDate`, if it has one.
    pub fn commit_ms(&self) -> Option<i64> {
        match &self.body {
            EventBody::Change(c) => Some(c.commit_timestamp),
            EventBody::Platform(p) => match p.fields.get("CreatedDate") {
                Some(Value::Long(ms)) => Some(*ms),
                _ => None,
            },
        }
    }
}

/// One event that could not be decoded, kept whole for quarantine.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedEvent {
    /// Replay id, exactly as received.
    pub replay_id: ReplayId,
    /// Schema id the event named.
    pub schema_id: String,
    /// `ProducerEvent.id`.
    pub event_id: String,
    /// The raw payload.
    pub payload: Bytes,
    /// Why it failed.
    pub error: DecodeError,
}

#[derive(Debug, Clone, Copy)]
struct HeaderPositions {
    entity: usize,
    record_ids: usize,
    change_type: usize,
    change_origin: usize,
    transaction_key: usize,
    sequence_number: usize,
    commit_timestamp: usize,
    commit_number: usize,
    commit_user: usize,
    nulled: usize,
    diff: usize,
    changed: usize,
}

/// The top-level fields decoding itself reads, kept by every projection: the change event
/// header, and a platform event's `CreatedDate` ([`DecodedEvent::commit_ms`]).
pub const DECODER_FIELDS: [&str; 2] = ["ChangeEventHeader", "CreatedDate"];

/// Everything needed to decode events of one schema id.
#[derive(Debug)]
pub struct CompiledSchema {
    /// The schema id.
    pub id: Arc<str>,
    plan: Plan,
    layout: FieldLayout,
    header: Option<HeaderPositions>,
    /// How to read the header straight into typed fields, when it has Salesforce's shape
    /// ([`avro::header`](super::avro::header)); without it the header decodes as a generic
    /// record and [`CompiledSchema::event`] takes it apart.
    typed_header: Option<HeaderPlan>,
    /// The plan of [`CompiledSchema::decode_projected`], when one was asked for.
    projection: Option<Projection>,
}

impl CompiledSchema {
    /// Parses and compiles schema JSON.
    pub fn compile(id: &str, json: &str) -> Result<CompiledSchema, DecodeError> {
        let schema =
            apache_avro::Schema::parse_str(json).map_err(|e| DecodeError::Schema(e.to_string()))?;
        let plan = Plan::compile(&schema)?;
        let layout = super::schema::field_layout(&schema)
            .ok_or_else(|| DecodeError::Schema("not a record".into()))?;
        let root = plan.root();
        let header = match root.position("ChangeEventHeader") {
            Some(0) => {
                let h = root.nested(0).ok_or(DecodeError::Header("(record)"))?;
                let p = |name: &'static str| h.position(name).ok_or(DecodeError::Header(name));
                Some(HeaderPositions {
                    entity: p("entityName")?,
                    record_ids: p("recordIds")?,
                    change_type: p("changeType")?,
                    change_origin: p("changeOrigin")?,
                    transaction_key: p("transactionKey")?,
                    sequence_number: p("sequenceNumber")?,
                    commit_timestamp: p("commitTimestamp")?,
                    commit_number: p("commitNumber")?,
                    commit_user: p("commitUser")?,
                    nulled: p("nulledFields")?,
                    diff: p("diffFields")?,
                    changed: p("changedFields")?,
                })
            }
            _ => None,
        };
        let typed_header = header.and_then(|_| HeaderPlan::compile(root));
        Ok(CompiledSchema {
            id: Arc::from(id),
            plan,
            layout,
            header,
            typed_header,
            projection: None,
        })
    }

    /// Adds a projection that keeps the named top-level fields (and [`DECODER_FIELDS`]) and
    /// skips the others, for [`CompiledSchema::decode_projected`]. Names this schema lacks are
    /// ignored.
    ///
    /// Platform events are projected like change events, with the same names: the rules read
    /// one field of them (the fulfilment event's order field) and decoding reads `CreatedDate`,
    /// so `CreatedById` and any other custom field are skipped. They are small, but one plan
    /// for every schema keeps a single rule (decode what is read) and a single tested path.
    pub fn with_projection<S: AsRef<str>>(mut self, fields: &[S]) -> Self {
        let names = DECODER_FIELDS
            .into_iter()
            .chain(fields.iter().map(AsRef::as_ref));
        self.projection = Some(Projection::compile(&self.plan, names));
        self
    }

    /// The top-level fields [`CompiledSchema::decode_projected`] keeps, in schema order (`None`
    /// without a projection: it decodes every field).
    pub fn projected_fields(&self) -> Option<Vec<&str>> {
        self.projection
            .as_ref()
            .map(|p| p.root().field_names().collect())
    }

    /// The same schema with its header decoded as a generic record, as a schema whose header
    /// has another shape is: the reference the typed header is tested against.
    #[cfg(test)]
    pub(crate) fn with_generic_header(mut self) -> Self {
        self.typed_header = None;
        self
    }

    /// Whether the header is read typed.
    #[cfg(test)]
    pub(crate) fn has_typed_header(&self) -> bool {
        self.typed_header.is_some()
    }

    /// Whether events of this schema are change events.
    pub fn is_change_event(&self) -> bool {
        self.header.is_some()
    }

    /// The bitmap layout.
    pub fn layout(&self) -> &FieldLayout {
        &self.layout
    }

    /// Decodes one payload in full: every field of the body.
    pub fn decode(&self, topic: &Arc<str>, payload: &Bytes) -> Result<EventBody, DecodeError> {
        match &self.typed_header {
            Some(h) => {
                let (header, fields) = self.plan.decode_change(h, &self.layout, payload)?;
                Self::change_event(header, fields)
            }
            None => self.event(topic, self.plan.decode(payload)?),
        }
    }

    /// Decodes one payload with the projection: the header in full, the body's projected fields
    /// only (see [`CompiledSchema::with_projection`]). Without a projection, the same as
    /// [`CompiledSchema::decode`]. It fails exactly when the full decode does, except for
    /// invalid UTF-8 in a skipped field, which is not looked at.
    pub fn decode_projected(
        &self,
        topic: &Arc<str>,
        payload: &Bytes,
    ) -> Result<EventBody, DecodeError> {
        match (&self.projection, &self.typed_header) {
            (Some(p), Some(h)) => {
                let (header, fields) = p.decode_change(h, &self.layout, payload)?;
                Self::change_event(header, fields)
            }
            (Some(p), None) => self.event(topic, p.decode(payload)?),
            (None, _) => self.decode(topic, payload),
        }
    }

    /// The event from a header read typed ([`avro::header`](super::avro::header)): the checks on
    /// meaning the Avro decoder left, in the order [`CompiledSchema::event`] makes them.
    fn change_event(h: Header, fields: Record) -> Result<EventBody, DecodeError> {
        let change_type = h.change_type.ok_or(DecodeError::Header("changeType"))?;
        let sequence_number =
            i32::try_from(h.sequence_number).map_err(|_| DecodeError::Header("sequenceNumber"))?;
        Ok(EventBody::Change(ChangeEvent {
            entity: h.entity,
            record_ids: h.record_ids,
            change_type,
            change_origin: h.change_origin,
            transaction_key: h.transaction_key,
            sequence_number,
            commit_timestamp: h.commit_timestamp,
            commit_number: h.commit_number,
            commit_user: h.commit_user,
            changed_fields: h.changed_fields?,
            nulled_fields: h.nulled_fields?,
            diff_fields: h.diff_fields?,
            fields,
        }))
    }

    /// The event from its decoded top-level record (full or projected: the header is the first
    /// field of both), when the header has no typed plan or this is a platform event.
    fn event(&self, topic: &Arc<str>, mut record: Record) -> Result<EventBody, DecodeError> {
        let Some(h) = self.header else {
            return Ok(EventBody::Platform(PlatformEvent {
                topic: topic.clone(),
                fields: record,
            }));
        };
        let Value::Record(mut header) = record.take(0) else {
            return Err(DecodeError::Header("(record)"));
        };
        let string = |v: Value, name: &'static str| match v {
            Value::String(s) => Ok(s),
            _ => Err(DecodeError::Header(name)),
        };
        let strings = |v: Value, name: &'static str| match v {
            Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s),
                    _ => Err(DecodeError::Header(name)),
                })
                .collect::<Result<Vec<_>, _>>(),
            _ => Err(DecodeError::Header(name)),
        };
        let long = |v: Value, name: &'static str| match v {
            Value::Long(n) => Ok(n),
            Value::Int(n) => Ok(i64::from(n)),
            _ => Err(DecodeError::Header(name)),
        };
        let change_type = match header.take(h.change_type) {
            Value::Enum(s) => {
                ChangeType::from_symbol(&s).ok_or(DecodeError::Header("changeType"))?
            }
            Value::String(s) => {
                ChangeType::from_symbol(&s).ok_or(DecodeError::Header("changeType"))?
            }
            _ => return Err(DecodeError::Header("changeType")),
        };
        let bitmap_items = |v: Value, name: &'static str| match v {
            Value::Array(items) if items.iter().all(|i| matches!(i, Value::String(_))) => Ok(items),
            _ => Err(DecodeError::Header(name)),
        };
        let nulled = bitmap_items(header.take(h.nulled), "nulledFields")?;
        let diff = bitmap_items(header.take(h.diff), "diffFields")?;
        let changed = bitmap_items(header.take(h.changed), "changedFields")?;
        // Expanded straight from the decoded items, without a list of their strings first.
        let names = |items: Vec<Value>| -> Result<_, BitmapError> {
            bitmap::decode(&self.layout, items.iter().filter_map(Value::as_str))
        };
        Ok(EventBody::Change(ChangeEvent {
            entity: string(header.take(h.entity), "entityName")?,
            record_ids: strings(header.take(h.record_ids), "recordIds")?,
            change_type,
            change_origin: string(header.take(h.change_origin), "changeOrigin")?,
            transaction_key: string(header.take(h.transaction_key), "transactionKey")?,
            sequence_number: i32::try_from(long(header.take(h.sequence_number), "sequenceNumber")?)
                .map_err(|_| DecodeError::Header("sequenceNumber"))?,
            commit_timestamp: long(header.take(h.commit_timestamp), "commitTimestamp")?,
            commit_number: long(header.take(h.commit_number), "commitNumber")?,
            commit_user: string(header.take(h.commit_user), "commitUser")?,
            changed_fields: names(changed)?,
            nulled_fields: names(nulled)?,
            diff_fields: names(diff)?,
            fields: record,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema of reference §3.5's real payload: the header, then 49 nullable fields of
    /// which #7 is a long and #13 a string (the rest are never set in that payload).
    fn real_payload_schema() -> String {
        let mut fields = vec![r#"{"name":"ChangeEventHeader","type":{"type":"record","name":"ChangeEventHeader","fields":[
            {"name":"entityName","type":"string"},{"name":"recordIds","type":{"type":"array","items":"string"}},
            {"name":"changeType","type":{"type":"enum","name":"ChangeType","namespace":"","symbols":["CREATE","UPDATE","DELETE","UNDELETE","GAP_CREATE","GAP_UPDATE","GAP_DELETE","GAP_UNDELETE","GAP_OVERFLOW"]}},
            {"name":"changeOrigin","type":"string"},{"name":"transactionKey","type":"string"},{"name":"sequenceNumber","type":"int"},
            {"name":"commitTimestamp","type":"long"},{"name":"commitNumber","type":"long"},{"name":"commitUser","type":"string"},
            {"name":"nulledFields","type":{"type":"array","items":"string"}},{"name":"diffFields","type":{"type":"array","items":"string"}},
            {"name":"changedFields","type":{"type":"array","items":"string"}}]}}"#
            .to_string()];
        for i in 1..=49 {
            let t = if i == 7 { "long" } else { "string" };
            fields.push(format!(
                r#"{{"name":"F{i}","type":["null","{t}"],"default":null}}"#
            ));
        }
        format!(
            r#"{{"type":"record","name":"ActionVente__ChangeEvent","namespace":"com.sforce.eventbus","fields":[{}]}}"#,
            fields.join(",")
        )
    }

    #[test]
    fn the_real_payload_of_reference_3_5_decodes() {
        let hex = concat!(
            "1c416374696f6e56656e74655f5f63022461323141553030303030304653433559414f000268636f6d2f73616c657366",
            "6f7263652f6170692f736f61702f36302e303b636c69656e743d53666463496e7465726e616c4150492f483030303031",
            "3938332d346664662d623263662d336630392d32326266643265333131373302b0e6c1a6bf638880d1f7a08ad5b82f24",
            "303035354a3030303030314438394d5141530000020c3078323038300000000000000002b0e6c1a6bf63000000000002",
            "106172737472617374000000000000000000000000000000000000000000000000000000000000000000000000"
        );
        let payload = Bytes::from(hex::decode(hex).unwrap());
        assert_eq!(payload.len(), 237);
        let schema =
            CompiledSchema::compile("i6_JU3VTbNhRZYbMVlV-xQ", &real_payload_schema()).unwrap();
        let EventBody::Change(e) = schema.decode(&Arc::from("/data/X__chn"), &payload).unwrap()
        else {
            panic!("a change event")
        };
        assert_eq!(e.entity, "ActionVente__c");
        assert_eq!(e.record_ids, ["a21AU000000FSC5YAO"]);
        assert_eq!(e.change_type, ChangeType::Update);
        assert_eq!(
            e.change_origin,
            "com/salesforce/api/soap/60.0;client=SfdcInternalAPI/"
        );
        assert_eq!(e.transaction_key, "00001983-4fdf-b2cf-3f09-22bfd2e31173");
        assert_eq!(e.sequence_number, 1);
        assert_eq!(e.commit_timestamp, 1_709_303_151_000);
        assert_eq!(e.commit_number, 1_709_303_151_782_928_388);
        assert_eq!(e.commit_user, "0055J000001D89MQAS");
        let changed: Vec<&str> = e.changed_fields.iter().map(|f| &**f).collect();
        assert_eq!(changed, ["F7", "F13"]);
        assert_eq!(e.fields.get("F7"), Some(&Value::Long(1_709_303_151_000)));
        assert_eq!(e.fields.get("F13"), Some(&Value::String("arstrast".into())));
        let set: Vec<&str> = e
            .fields
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            set,
            ["F7", "F13"],
            "exactly the changed fields carry values"
        );
        let replay = ReplayId::new(vec![0, 0, 0, 0, 0, 7, 0x6f, 0x5b, 0, 0]);
        assert_eq!(replay.position(), Some(487_259));
        assert_eq!(replay.to_hex(), "0000000000076f5b0000");
    }

    #[test]
    fn carried_values_distinguish_unchanged_from_nulled() {
        let schema = CompiledSchema::compile("x", &real_payload_schema()).unwrap();
        let mut payload = hex::decode(concat!(
            "1c416374696f6e56656e74655f5f63022461323141553030303030304653433559414f000268636f6d2f73616c657366",
            "6f7263652f6170692f736f61702f36302e303b636c69656e743d53666463496e7465726e616c4150492f483030303031",
            "3938332d346664662d623263662d336630392d32326266643265333131373302b0e6c1a6bf638880d1f7a08ad5b82f24",
            "303035354a3030303030314438394d5141530000020c3078323038300000000000000002b0e6c1a6bf63000000000002",
            "106172737472617374000000000000000000000000000000000000000000000000000000000000000000000000"
        ))
        .unwrap();
        // nulledFields [] -> ["0x04"] (F2): the array byte 0x00 after commitUser becomes a block.
        let at = payload.windows(2).position(|w| w == [0x00, 0x00]).unwrap();
        payload.splice(at..at + 1, [0x02, 0x08, b'0', b'x', b'0', b'4', 0x00]);
        let EventBody::Change(e) = schema
            .decode(&Arc::from("/t"), &Bytes::from(payload))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(e.carried("F2"), Some(&Value::Null));
        assert_eq!(e.carried("F13"), Some(&Value::String("arstrast".into())));
        assert_eq!(
            e.carried("F3"),
            None,
            "unchanged: the event says nothing about it"
        );
    }
}
