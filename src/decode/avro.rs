//! A fast Avro binary decoder driven by a plan compiled once per writer schema.
//!
//! apache-avro parses and validates the schema JSON; [`Plan::compile`] then turns it into a tree
//! of decoding operations with named references resolved, so decoding an event is a single pass
//! over the bytes with no schema lookups, no name comparisons and no string allocation for field
//! names (records share their field names with the plan). Strings are `CompactString`s, inline up
//! to 24 bytes, so most values allocate nothing. Unions are unwrapped: a value is the branch's
//! value, `Null` for the null branch. A record keeps only its non-null values (most fields of a
//! change event are null), gathered in a per-thread scratch list and moved into one allocation
//! of their exact size per record.
//!
//! Decoding is strict where apache-avro's generic reader is lenient: running out of bytes, a
//! union or enum index out of range, a negative or oversized length, invalid UTF-8 and trailing
//! bytes after the datum are all typed errors. Nothing here panics on input.
//!
//! [`project`] compiles a second plan over the same tree that decodes only chosen top-level
//! fields and skips the rest without allocating, keeping every check above but UTF-8 of what it
//! skips. [`header`] reads a change event's `ChangeEventHeader` (the first top-level field)
//! straight into typed fields, with the same checks; both the full decode
//! ([`Plan::decode_change`]) and the projection ([`Projection::decode_change`]) can use it.

pub mod header;
pub mod project;

pub use header::{Header, HeaderPlan};
pub use project::Projection;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use apache_avro::Schema;
use bytes::Bytes;
use compact_str::CompactString;

use super::bitmap;

/// Why a payload or schema could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvroError {
    /// The payload ended in the middle of a value.
    #[error("payload ends early (needed {needed} more bytes at offset {offset})")]
    Eof {
        /// Offset of the read.
        offset: usize,
        /// Bytes missing.
        needed: usize,
    },
    /// A varint is longer than 10 bytes or overflows.
    #[error("malformed variable-length integer at offset {0}")]
    BadVarint(usize),
    /// An `int` is out of the 32-bit range.
    #[error("int out of range at offset {0}")]
    IntRange(usize),
    /// A length prefix is negative or larger than what remains.
    #[error("invalid length {len} at offset {offset}")]
    BadLength {
        /// Offset of the length.
        offset: usize,
        /// The length read.
        len: i64,
    },
    /// Text is not UTF-8.
    #[error("string at offset {0} is not valid UTF-8")]
    Utf8(usize),
    /// A union branch that does not exist.
    #[error("union branch {index} at offset {offset} does not exist (the union has {branches})")]
    UnionIndex {
        /// Offset of the index.
        offset: usize,
        /// The index read.
        index: i64,
        /// Number of branches.
        branches: usize,
    },
    /// An enum symbol that does not exist.
    #[error("enum index {index} at offset {offset} does not exist ({symbols} symbols)")]
    EnumIndex {
        /// Offset of the index.
        offset: usize,
        /// The index read.
        index: i64,
        /// Number of symbols.
        symbols: usize,
    },
    /// Too many items for an array or map.
    #[error("collection at offset {0} is implausibly large")]
    TooLarge(usize),
    /// A boolean byte other than 0 or 1.
    #[error("invalid boolean at offset {0}")]
    BadBoolean(usize),
    /// Bytes left after the datum.
    #[error("{0} trailing bytes after the datum")]
    Trailing(usize),
    /// The schema cannot be compiled.
    #[error("unsupported schema: {0}")]
    Schema(String),
}

/// A decoded value. Unions are unwrapped to their branch's value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`
    #[default]
    Null,
    /// `boolean`
    Boolean(bool),
    /// `int` (and `date`, `time-millis`)
    Int(i32),
    /// `long` (and the timestamp logical types); never converted to a float.
    Long(i64),
    /// `float`
    Float(f32),
    /// `double`
    Double(f64),
    /// `bytes`, `fixed`, `decimal`
    Bytes(Bytes),
    /// `string` (and `uuid`)
    String(CompactString),
    /// `array`
    Array(Vec<Value>),
    /// `map`
    Map(Vec<(CompactString, Value)>),
    /// `enum`: the symbol.
    Enum(Arc<str>),
    /// `record`
    Record(Record),
}

impl Value {
    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of a string or enum value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Enum(s) => Some(s),
            _ => None,
        }
    }

    /// The nested record, if this is one.
    pub fn as_record(&self) -> Option<&Record> {
        match self {
            Value::Record(r) => Some(r),
            _ => None,
        }
    }
}

/// A decoded record: the values of its fields that are not null, names shared with the plan.
#[derive(Clone, PartialEq)]
pub struct Record {
    plan: Arc<RecordPlan>,
    /// `(position, value)` of each field that is not `Null`, in position order. Most fields of
    /// a change event are null: they take no room here (a dense list of a 45-field event was
    /// 1.8 KB), and [`Record::get`] and [`Record::iter`] give them back as `Null`.
    values: Vec<(u32, Value)>,
}

/// What a field that is not in a record's list holds.
static NULL: Value = Value::Null;

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Record {
    /// The record's full Avro name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// A field's value by name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let position = *self.plan.index.get(name)?;
        Some(match self.find(position) {
            Ok(i) => &self.values[i].1,
            Err(_) => &NULL,
        })
    }

    /// Where the value at `position` is in the list, or would be.
    fn find(&self, position: usize) -> Result<usize, usize> {
        self.values
            .binary_search_by_key(&position, |(p, _)| *p as usize)
    }

    /// `(name, value)` of every field, in schema order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        let mut set = self.values.iter().peekable();
        self.plan.fields.iter().enumerate().map(move |(i, f)| {
            let v = match set.next_if(|(p, _)| *p as usize == i) {
                Some((_, v)) => v,
                None => &NULL,
            };
            (&*f.name, v)
        })
    }

    /// `(name, value)` of the fields that are not `Null`, in schema order.
    pub fn iter_set(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().filter_map(|(p, v)| {
            let f = self.plan.fields.get(*p as usize)?;
            Some((&*f.name, v))
        })
    }

    /// Takes the value at `position`, leaving `Null`.
    pub(crate) fn take(&mut self, position: usize) -> Value {
        match self.find(position) {
            Ok(i) => self.values.remove(i).1,
            Err(_) => Value::Null,
        }
    }

    /// Number of fields (null or not).
    pub fn len(&self) -> usize {
        self.plan.fields.len()
    }

    /// Whether the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.plan.fields.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(Arc<[Arc<str>]>),
    Array(Box<Op>),
    Map(Box<Op>),
    Union(Box<[Op]>),
    /// A two-branch union with `null`, the shape of nearly every Salesforce field: decoded
    /// without a branch lookup.
    Nullable {
        null_index: i64,
        inner: Box<Op>,
    },
    Record(Arc<RecordPlan>),
}

/// The decoding plan of one record type.
#[derive(Debug, PartialEq)]
pub struct RecordPlan {
    name: String,
    fields: Vec<FieldPlan>,
    index: foldhash::HashMap<Arc<str>, usize>,
}

impl RecordPlan {
    /// Position of a field.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Field names in order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| &*f.name)
    }

    /// The plan of a record-typed field (through a union), if it is one.
    pub fn nested(&self, position: usize) -> Option<&Arc<RecordPlan>> {
        fn record_of(op: &Op) -> Option<&Arc<RecordPlan>> {
            match op {
                Op::Record(r) => Some(r),
                Op::Union(branches) => branches.iter().find_map(record_of),
                Op::Nullable { inner, .. } => record_of(inner),
                _ => None,
            }
        }
        record_of(&self.fields.get(position)?.op)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FieldPlan {
    name: Arc<str>,
    op: Op,
}

/// A compiled top-level record schema.
#[derive(Debug, Clone)]
pub struct Plan {
    root: Arc<RecordPlan>,
}

struct Compiler<'a> {
    named: HashMap<String, &'a Schema>,
    done: HashMap<String, Arc<RecordPlan>>,
    in_progress: Vec<String>,
}

impl<'a> Compiler<'a> {
    fn collect(&mut self, schema: &'a Schema) {
        match schema {
            Schema::Record(r) => {
                self.named.insert(r.name.fullname(None), schema);
                self.named.entry(r.name.name().to_owned()).or_insert(schema);
                for f in &r.fields {
                    self.collect(&f.schema);
                }
            }
            Schema::Enum(e) => {
                self.named.insert(e.name.fullname(None), schema);
                self.named.entry(e.name.name().to_owned()).or_insert(schema);
            }
            Schema::Fixed(f) => {
                self.named.insert(f.name.fullname(None), schema);
                self.named.entry(f.name.name().to_owned()).or_insert(schema);
            }
            Schema::Union(u) => u.variants().iter().for_each(|v| self.collect(v)),
            Schema::Array(a) => self.collect(&a.items),
            Schema::Map(m) => self.collect(&m.types),
            _ => {}
        }
    }

    fn op(&mut self, schema: &'a Schema) -> Result<Op, AvroError> {
        Ok(match schema {
            Schema::Null => Op::Null,
            Schema::Boolean => Op::Boolean,
            Schema::Int | Schema::Date | Schema::TimeMillis => Op::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Op::Long,
            Schema::Float => Op::Float,
            Schema::Double => Op::Double,
            Schema::Bytes | Schema::BigDecimal => Op::Bytes,
            Schema::String => Op::String,
            Schema::Uuid(apache_avro::schema::UuidSchema::String) => Op::String,
            Schema::Uuid(apache_avro::schema::UuidSchema::Bytes) => Op::Bytes,
            Schema::Uuid(apache_avro::schema::UuidSchema::Fixed(f)) => Op::Fixed(f.size),
            Schema::Fixed(f) => Op::Fixed(f.size),
            Schema::Duration(_) => Op::Fixed(12),
            Schema::Decimal(d) => match &d.inner {
                apache_avro::schema::InnerDecimalSchema::Fixed(f) => Op::Fixed(f.size),
                apache_avro::schema::InnerDecimalSchema::Bytes => Op::Bytes,
            },
            Schema::Enum(e) => Op::Enum(e.symbols.iter().map(|s| Arc::from(s.as_str())).collect()),
            Schema::Array(a) => Op::Array(Box::new(self.op(&a.items)?)),
            Schema::Map(m) => Op::Map(Box::new(self.op(&m.types)?)),
            Schema::Union(u) => {
                let mut branches = u
                    .variants()
                    .iter()
                    .map(|v| self.op(v))
                    .collect::<Result<Vec<_>, _>>()?;
                match branches.iter().position(|b| *b == Op::Null) {
                    Some(null_index) if branches.len() == 2 => Op::Nullable {
                        null_index: null_index as i64,
                        inner: Box::new(branches.swap_remove(1 - null_index)),
                    },
                    _ => Op::Union(branches.into_boxed_slice()),
                }
            }
            Schema::Record(r) => Op::Record(self.record(r)?),
            Schema::Ref { name } => {
                let full = name.fullname(None);
                let target = self
                    .named
                    .get(&full)
                    .or_else(|| self.named.get(name.name()))
                    .copied()
                    .ok_or_else(|| AvroError::Schema(format!("unknown type {full}")))?;
                self.op(target)?
            }
        })
    }

    fn record(
        &mut self,
        r: &'a apache_avro::schema::RecordSchema,
    ) -> Result<Arc<RecordPlan>, AvroError> {
        let full = r.name.fullname(None);
        if let Some(done) = self.done.get(&full) {
            return Ok(done.clone());
        }
        if self.in_progress.contains(&full) {
            return Err(AvroError::Schema(format!("recursive record {full}")));
        }
        self.in_progress.push(full.clone());
        let mut fields = Vec::with_capacity(r.fields.len());
        let mut index =
            foldhash::HashMap::with_capacity_and_hasher(r.fields.len(), Default::default());
        for (i, f) in r.fields.iter().enumerate() {
            let name: Arc<str> = Arc::from(f.name.as_str());
            index.insert(name.clone(), i);
            fields.push(FieldPlan {
                name,
                op: self.op(&f.schema)?,
            });
        }
        self.in_progress.pop();
        let plan = Arc::new(RecordPlan {
            name: full.clone(),
            fields,
            index,
        });
        self.done.insert(full, plan.clone());
        Ok(plan)
    }
}

impl Plan {
    /// Compiles a parsed schema; the top level must be a record.
    pub fn compile(schema: &Schema) -> Result<Plan, AvroError> {
        let Schema::Record(r) = schema else {
            return Err(AvroError::Schema("the top level is not a record".into()));
        };
        let mut c = Compiler {
            named: HashMap::new(),
            done: HashMap::new(),
            in_progress: Vec::new(),
        };
        c.collect(schema);
        Ok(Plan { root: c.record(r)? })
    }

    /// The top-level record plan.
    pub fn root(&self) -> &Arc<RecordPlan> {
        &self.root
    }

    /// Decodes one datum, which must use every byte of `payload`.
    pub fn decode(&self, payload: &Bytes) -> Result<Record, AvroError> {
        whole(payload, |r| r.record(&self.root))
    }

    /// Decodes one datum whose first top-level field is a change event header, read with
    /// `header` (bitmaps expanded over `layout`) instead of into the record, whose first slot
    /// is then `Null`. It fails exactly when [`Plan::decode`] does.
    pub fn decode_change(
        &self,
        header: &HeaderPlan,
        layout: &bitmap::FieldLayout,
        payload: &Bytes,
    ) -> Result<(Header, Record), AvroError> {
        let mut h = Header::default();
        let record = whole(payload, |r| {
            r.change_record(&self.root, header, layout, &mut h)
        })?;
        Ok((h, record))
    }
}

/// Reads one datum from `payload` with `read`, which must use every byte of it.
fn whole<T>(
    payload: &Bytes,
    read: impl FnOnce(&mut Reader<'_>) -> Step<T>,
) -> Result<T, AvroError> {
    let mut r = Reader::new(payload);
    let value = read(&mut r).map_err(|Stop| r.take_error())?;
    if r.pos != payload.len() {
        return Err(AvroError::Trailing(payload.len() - r.pos));
    }
    Ok(value)
}

/// Most items accepted in one array or map whose items can be zero bytes long.
const MAX_ZERO_WIDTH_ITEMS: i64 = 1 << 20;

/// Decoding stopped; the reason is in [`Reader::error`]. Keeping the error out of the hot
/// `Result`s lets `Result<Value, Stop>` be as small as a `Value`.
struct Stop;

type Step<T> = Result<T, Stop>;

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    error: Option<AvroError>,
    /// The values of the records being decoded, nested ones above their parents: each record
    /// moves its own off the top into a list of exactly their size when it ends, so a record
    /// costs one allocation, none when all its fields are null. Kept per thread between
    /// datums (see [`Reader::new`]).
    scratch: Vec<(u32, Value)>,
}

thread_local! {
    /// The [`Reader::scratch`] of the last datum this thread decoded, empty, for the next.
    static SCRATCH: std::cell::Cell<Vec<(u32, Value)>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The most scratch entries kept between datums (a record this wide is rare).
const SCRATCH_KEPT: usize = 1 << 12;

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader {
            buf,
            pos: 0,
            error: None,
            scratch: SCRATCH.take(),
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        let mut scratch = std::mem::take(&mut self.scratch);
        if scratch.capacity() <= SCRATCH_KEPT {
            // Values left by a datum that failed halfway are dropped here.
            scratch.clear();
            SCRATCH.set(scratch);
        }
    }
}

impl Reader<'_> {
    #[cold]
    fn fail(&mut self, e: AvroError) -> Stop {
        self.error = Some(e);
        Stop
    }

    fn take_error(&mut self) -> AvroError {
        self.error.take().unwrap_or(AvroError::Eof {
            offset: self.pos,
            needed: 0,
        })
    }

    fn eof(&mut self, needed: usize) -> Stop {
        let offset = self.pos;
        self.fail(AvroError::Eof { offset, needed })
    }

    fn byte(&mut self) -> Step<u8> {
        match self.buf.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.eof(1)),
        }
    }

    fn end_of(&mut self, n: usize) -> Step<usize> {
        match self.pos.checked_add(n).filter(|&e| e <= self.buf.len()) {
            Some(end) => Ok(end),
            None => {
                let needed = n.saturating_sub(self.buf.len() - self.pos);
                Err(self.eof(needed))
            }
        }
    }

    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let start = self.pos;
        let end = self.end_of(n)?;
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    /// A shared slice of the next `n` bytes (no copy).
    fn slice(&mut self, n: usize) -> Step<Bytes> {
        let start = self.pos;
        let end = self.end_of(n)?;
        self.pos = end;
        Ok(self.buf.slice(start..end))
    }

    #[inline(always)]
    fn long(&mut self) -> Step<i64> {
        // Fast path: one-byte varints (union indexes, small lengths) are the common case.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
        }
        self.long_slow()
    }

    /// A varint of more than one byte (or none): the bytes are scanned in the slice, with no
    /// check per byte of what is left.
    fn long_slow(&mut self) -> Step<i64> {
        let start = self.pos;
        let buf: &[u8] = self.buf;
        let rest = buf.get(start..).unwrap_or_default();
        let mut n: u64 = 0;
        for (k, &b) in rest.iter().take(10).enumerate() {
            if k == 9 && b > 1 {
                return Err(self.fail(AvroError::BadVarint(start)));
            }
            n |= u64::from(b & 0x7f) << (7 * k);
            if b & 0x80 == 0 {
                self.pos = start + k + 1;
                return Ok(((n >> 1) as i64) ^ -((n & 1) as i64));
            }
        }
        // Every byte left continues the varint: it runs past the end.
        self.pos = buf.len();
        Err(self.eof(1))
    }

    fn int(&mut self) -> Step<i32> {
        let at = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| self.fail(AvroError::IntRange(at)))
    }

    fn len(&mut self) -> Step<usize> {
        let at = self.pos;
        let len = self.long()?;
        if len < 0 || len as u64 > (self.buf.len() - self.pos) as u64 {
            return Err(self.fail(AvroError::BadLength { offset: at, len }));
        }
        Ok(len as usize)
    }

    fn string(&mut self) -> Step<CompactString> {
        let at = self.pos;
        let n = self.len()?;
        let bytes = self.take(n)?;
        // Strings of up to 24 bytes (ids, picklist values, most names) are stored inline: no
        // allocation, no reference count.
        CompactString::from_utf8(bytes).map_err(|_| self.fail(AvroError::Utf8(at)))
    }

    fn record(&mut self, plan: &Arc<RecordPlan>) -> Step<Record> {
        let start = self.scratch.len();
        for (i, f) in plan.fields.iter().enumerate() {
            let v = self.field(&f.op)?;
            self.set(i, v);
        }
        Ok(self.finish(plan, start))
    }

    /// Keeps the value of the field at `position` of the record being decoded, unless it is
    /// `Null`.
    #[inline(always)]
    fn set(&mut self, position: usize, v: Value) {
        if !v.is_null() {
            self.scratch.push((position as u32, v));
        }
    }

    /// The record of `plan` whose values were kept from `start` of the scratch on.
    fn finish(&mut self, plan: &Arc<RecordPlan>, start: usize) -> Record {
        Record {
            plan: plan.clone(),
            values: self.scratch.drain(start..).collect(),
        }
    }

    /// A top-level record whose first field is a change event header, read into `out`.
    fn change_record(
        &mut self,
        plan: &Arc<RecordPlan>,
        header: &HeaderPlan,
        layout: &bitmap::FieldLayout,
        out: &mut Header,
    ) -> Step<Record> {
        let start = self.scratch.len();
        for (i, f) in plan.fields.iter().enumerate() {
            if i == 0 {
                // Its slot stays `Null`.
                self.header(header, layout, out)?;
            } else {
                let v = self.field(&f.op)?;
                self.set(i, v);
            }
        }
        Ok(self.finish(plan, start))
    }

    /// One field of a record.
    #[inline(always)]
    fn field(&mut self, op: &Op) -> Step<Value> {
        // Nearly every field is a nullable union, and most are null: decide that here without
        // a call.
        match op {
            Op::Nullable { null_index, inner } => self.nullable(*null_index, inner),
            op => self.value(op),
        }
    }

    /// A `["null", T]` union: the common case is decided here without a branch lookup.
    #[inline(always)]
    fn nullable(&mut self, null_index: i64, inner: &Op) -> Step<Value> {
        if self.branch(2)? as i64 == null_index {
            Ok(Value::Null)
        } else {
            self.value(inner)
        }
    }

    /// Reads a union's branch index, which must be below `branches`.
    fn branch(&mut self, branches: usize) -> Step<usize> {
        let at = self.pos;
        let index = self.long()?;
        match usize::try_from(index) {
            Ok(i) if i < branches => Ok(i),
            _ => Err(self.fail(AvroError::UnionIndex {
                offset: at,
                index,
                branches,
            })),
        }
    }

    /// Reads an enum's symbol index, which must be below `symbols`.
    fn symbol(&mut self, symbols: usize) -> Step<usize> {
        let at = self.pos;
        let index = self.long()?;
        match usize::try_from(index) {
            Ok(i) if i < symbols => Ok(i),
            _ => Err(self.fail(AvroError::EnumIndex {
                offset: at,
                index,
                symbols,
            })),
        }
    }

    /// Reads the item count of the next block; `None` at the end of the collection.
    fn block(&mut self, zero_width: bool, total: &mut i64) -> Step<Option<usize>> {
        let at = self.pos;
        let mut count = self.long()?;
        if count == 0 {
            return Ok(None);
        }
        if count < 0 {
            count = match count.checked_neg() {
                Some(c) => c,
                None => return Err(self.fail(AvroError::TooLarge(at))),
            };
            let _block_bytes = self.long()?;
        }
        *total = total.saturating_add(count);
        // Every non-zero-width item takes at least one byte, so the count cannot exceed what is
        // left; zero-width items (nulls) get a fixed ceiling instead.
        let limit = if zero_width {
            MAX_ZERO_WIDTH_ITEMS
        } else {
            (self.buf.len() - self.pos) as i64
        };
        if *total > limit {
            return Err(self.fail(AvroError::TooLarge(at)));
        }
        Ok(Some(count as usize))
    }

    fn value(&mut self, op: &Op) -> Step<Value> {
        Ok(match op {
            Op::Null => Value::Null,
            Op::Boolean => {
                let at = self.pos;
                match self.byte()? {
                    0 => Value::Boolean(false),
                    1 => Value::Boolean(true),
                    _ => return Err(self.fail(AvroError::BadBoolean(at))),
                }
            }
            Op::Int => Value::Int(self.int()?),
            Op::Long => Value::Long(self.long()?),
            Op::Float => Value::Float(f32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            Op::Double => Value::Double(f64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            Op::Bytes => {
                let n = self.len()?;
                Value::Bytes(self.slice(n)?)
            }
            Op::String => Value::String(self.string()?),
            Op::Fixed(n) => Value::Bytes(self.slice(*n)?),
            Op::Enum(symbols) => Value::Enum(symbols[self.symbol(symbols.len())?].clone()),
            Op::Union(branches) => {
                let branch = self.branch(branches.len())?;
                self.value(&branches[branch])?
            }
            Op::Nullable { null_index, inner } => self.nullable(*null_index, inner)?,
            Op::Record(plan) => Value::Record(self.record(plan)?),
            Op::Array(item) => {
                let zero = matches!(**item, Op::Null);
                let mut out = Vec::new();
                let mut total = 0;
                while let Some(n) = self.block(zero, &mut total)? {
                    out.reserve(n);
                    for _ in 0..n {
                        out.push(self.value(item)?);
                    }
                }
                Value::Array(out)
            }
            Op::Map(item) => {
                let mut out = Vec::new();
                let mut total = 0;
                // Every map entry has a key of at least one byte.
                while let Some(n) = self.block(false, &mut total)? {
                    out.reserve(n);
                    for _ in 0..n {
                        let k = self.string()?;
                        out.push((k, self.value(item)?));
                    }
                }
                Value::Map(out)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Plan {
        Plan::compile(&Schema::parse_str(json).unwrap()).unwrap()
    }

    const SIMPLE: &str = r#"{"type":"record","name":"R","fields":[
        {"name":"s","type":"string"},
        {"name":"n","type":["null","long"]},
        {"name":"a","type":{"type":"array","items":"string"}},
        {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
        {"name":"d","type":["null","double"]},
        {"name":"b","type":"boolean"}]}"#;

    #[test]
    fn decodes_every_shape_salesforce_uses() {
        let p = plan(SIMPLE);
        // s="hi", n=union1 long 1709303151782928388, a=["x"], e=Y, d=null, b=true
        let mut buf = vec![0x04, b'h', b'i', 0x02];
        sfcdc_emulator::avro::long(&mut buf, 1_709_303_151_782_928_388);
        buf.extend([0x02, 0x02, b'x', 0x00, 0x02, 0x00, 0x01]);
        let r = p.decode(&Bytes::from(buf)).unwrap();
        assert_eq!(r.get("s"), Some(&Value::String("hi".into())));
        assert_eq!(r.get("n"), Some(&Value::Long(1_709_303_151_782_928_388)));
        assert_eq!(
            r.get("a"),
            Some(&Value::Array(vec![Value::String("x".into())]))
        );
        assert_eq!(r.get("e").and_then(Value::as_str), Some("Y"));
        assert_eq!(r.get("d"), Some(&Value::Null));
        assert_eq!(r.get("b"), Some(&Value::Boolean(true)));
    }

    #[test]
    fn malformed_input_is_a_typed_error_never_a_panic() {
        let p = plan(SIMPLE);
        let good = {
            let mut b = vec![
                0x04, b'h', b'i', 0x02, 0x02, 0x02, 0x02, b'x', 0x00, 0x02, 0x00, 0x01,
            ];
            b.shrink_to_fit();
            b
        };
        let d = |b: &[u8]| p.decode(&Bytes::copy_from_slice(b));
        assert!(d(&good).is_ok());
        for cut in 0..good.len() {
            assert!(d(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(d(&trailing), Err(AvroError::Trailing(1)));
        assert!(matches!(
            d(&[0x01]),
            Err(AvroError::BadLength { len: -1, .. })
        ));
        assert!(matches!(
            d(&[0xFE, 0x01, 0x00]),
            Err(AvroError::BadLength { len: 127, .. })
        ));
        let mut bad_union = good.clone();
        bad_union[3] = 0x04;
        assert!(matches!(
            d(&bad_union),
            Err(AvroError::UnionIndex { index: 2, .. })
        ));
        assert!(matches!(d(&[0xFF; 12]), Err(AvroError::BadVarint(0))));
        assert!(matches!(d(&[0x02, 0xC3, 0x28]), Err(AvroError::Utf8(0))));
    }

    #[test]
    fn huge_counts_do_not_allocate_or_spin() {
        let p = plan(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"null"}}]}"#,
        );
        let mut buf = Vec::new();
        sfcdc_emulator::avro::long(&mut buf, i64::MAX / 2);
        let buf = Bytes::from(buf);
        assert!(matches!(p.decode(&buf), Err(AvroError::TooLarge(0))));
        let p = plan(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":{"type":"array","items":"string"}}]}"#,
        );
        assert!(matches!(p.decode(&buf), Err(AvroError::TooLarge(0))));
    }

    #[test]
    fn recursive_schemas_are_refused() {
        let s = Schema::parse_str(
            r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#,
        )
        .unwrap();
        assert!(matches!(Plan::compile(&s), Err(AvroError::Schema(_))));
    }
}
