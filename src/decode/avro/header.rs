//! Typed decoding of a change event's `ChangeEventHeader`: the header record read straight into
//! a [`Header`], the typed fields the rules read, with no [`Value`] tree in between.
//!
//! A [`HeaderPlan`] is compiled once per writer schema, and only when the header is a plain
//! record whose twelve fields have the shapes Salesforce gives them (strings, arrays of strings,
//! an enum for `changeType`, `int` or `long` numbers), in any order, with any extra fields.
//! Any other shape has no plan, and the caller decodes the header as a generic record instead.
//!
//! **Strictness.** Reading a header makes every check the generic decode makes, in the same
//! order: lengths, UTF-8 (the header is always kept, so its strings are always checked), block
//! counts, enum indexes, `int` ranges. A payload therefore fails here exactly where and how it
//! fails [`Plan::decode`](super::Plan::decode). What the values *mean* is not the Avro
//! decoder's to judge: a symbol that is no [`ChangeType`], a `sequenceNumber` beyond 32 bits or
//! a malformed bitmap is recorded in the [`Header`], and the caller turns it into an error only
//! after the whole datum decoded, as it does for a generic header.
//!
//! **Allocation.** Strings of up to 24 bytes stay inline. The bitmap arrays are expanded into
//! names (shared with the layout) element by element as they are read, with no list of their
//! strings; an empty array allocates nothing. An extra field is decoded and dropped.

use compact_str::CompactString;

use super::{AvroError, Op, Reader, RecordPlan, Step, Value};
use crate::decode::ChangeType;
use crate::decode::bitmap::{BitmapError, Expander, FieldLayout, FieldName};

/// A decoded `ChangeEventHeader`, with the checks on meaning still to make (see the module doc).
#[derive(Debug)]
pub struct Header {
    /// `entityName`.
    pub entity: CompactString,
    /// `recordIds`.
    pub record_ids: Vec<CompactString>,
    /// `changeType`; `None` when the symbol is not one of [`ChangeType`]'s.
    pub change_type: Option<ChangeType>,
    /// `changeOrigin`.
    pub change_origin: CompactString,
    /// `transactionKey`.
    pub transaction_key: CompactString,
    /// `sequenceNumber`, as read (an `int` or a `long`).
    pub sequence_number: i64,
    /// `commitTimestamp`.
    pub commit_timestamp: i64,
    /// `commitNumber`.
    pub commit_number: i64,
    /// `commitUser`.
    pub commit_user: CompactString,
    /// `nulledFields`, expanded.
    pub nulled_fields: Bitmap,
    /// `diffFields`, expanded.
    pub diff_fields: Bitmap,
    /// `changedFields`, expanded.
    pub changed_fields: Bitmap,
}

/// An expanded bitmap array, or the error of its first malformed element.
pub type Bitmap = Result<Vec<FieldName>, BitmapError>;

impl Default for Header {
    fn default() -> Self {
        Header {
            entity: CompactString::default(),
            record_ids: Vec::new(),
            change_type: None,
            change_origin: CompactString::default(),
            transaction_key: CompactString::default(),
            sequence_number: 0,
            commit_timestamp: 0,
            commit_number: 0,
            commit_user: CompactString::default(),
            nulled_fields: Ok(Vec::new()),
            diff_fields: Ok(Vec::new()),
            changed_fields: Ok(Vec::new()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    Entity,
    Origin,
    TransactionKey,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Sequence,
    Timestamp,
    Commit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    Nulled,
    Diff,
    Changed,
}

/// How one field of the header is read.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    /// A `string` into a text field.
    Text(Text),
    /// An `int` (`int: true`, range-checked as [`Reader::int`] does) or a `long` into a number.
    Number { into: Number, int: bool },
    /// `recordIds`: an array of strings.
    RecordIds,
    /// A bitmap: an array of strings, expanded as read.
    Bitmap(Names),
    /// `changeType`: the enum's symbol indexes mapped to change types once.
    ChangeType(Box<[Option<ChangeType>]>),
    /// A field the header has no place for: decoded with every check, then dropped.
    Other(Op),
}

/// How to read the header of one writer schema (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderPlan {
    reads: Box<[Read]>,
}

impl HeaderPlan {
    /// The plan for the header that is the first field of the top-level record `root`, or
    /// `None` when that field is not a plain record (a union, say), or one of the header's
    /// twelve fields is missing or has a shape other than Salesforce's.
    pub fn compile(root: &RecordPlan) -> Option<HeaderPlan> {
        let Op::Record(header) = &root.fields.first()?.op else {
            return None;
        };
        let strings = |op: &Op| matches!(op, Op::Array(item) if **item == Op::String);
        let mut reads = Vec::with_capacity(header.fields.len());
        for f in &header.fields {
            let read = match (&*f.name, &f.op) {
                ("entityName", Op::String) => Read::Text(Text::Entity),
                ("changeOrigin", Op::String) => Read::Text(Text::Origin),
                ("transactionKey", Op::String) => Read::Text(Text::TransactionKey),
                ("commitUser", Op::String) => Read::Text(Text::User),
                ("sequenceNumber", op @ (Op::Int | Op::Long)) => Read::Number {
                    into: Number::Sequence,
                    int: *op == Op::Int,
                },
                ("commitTimestamp", op @ (Op::Int | Op::Long)) => Read::Number {
                    into: Number::Timestamp,
                    int: *op == Op::Int,
                },
                ("commitNumber", op @ (Op::Int | Op::Long)) => Read::Number {
                    into: Number::Commit,
                    int: *op == Op::Int,
                },
                ("recordIds", op) if strings(op) => Read::RecordIds,
                ("nulledFields", op) if strings(op) => Read::Bitmap(Names::Nulled),
                ("diffFields", op) if strings(op) => Read::Bitmap(Names::Diff),
                ("changedFields", op) if strings(op) => Read::Bitmap(Names::Changed),
                ("changeType", Op::Enum(symbols)) => {
                    Read::ChangeType(symbols.iter().map(|s| ChangeType::from_symbol(s)).collect())
                }
                (
                    "entityName" | "changeOrigin" | "transactionKey" | "commitUser"
                    | "sequenceNumber" | "commitTimestamp" | "commitNumber" | "recordIds"
                    | "nulledFields" | "diffFields" | "changedFields" | "changeType",
                    _,
                ) => return None,
                (_, op) => Read::Other(op.clone()),
            };
            reads.push(read);
        }
        // Each of the twelve once (Avro field names are unique).
        let known = reads
            .iter()
            .filter(|r| !matches!(r, Read::Other(_)))
            .count();
        (known == 12).then(|| HeaderPlan {
            reads: reads.into_boxed_slice(),
        })
    }
}

impl<'a> Reader<'a> {
    /// A string's text, borrowed from the payload: the checks of [`Reader::string`], no copy.
    fn text(&mut self) -> Step<&'a str> {
        let at = self.pos;
        let n = self.len()?;
        let start = self.pos;
        self.pos = self.end_of(n)?;
        let buf: &'a [u8] = self.buf;
        std::str::from_utf8(&buf[start..self.pos]).map_err(|_| self.fail(AvroError::Utf8(at)))
    }

    /// An array of strings, each handed to `each` as it is read: the checks of
    /// [`Reader::value`] on `Op::Array(Op::String)`.
    fn texts(&mut self, mut each: impl FnMut(&'a str)) -> Step<()> {
        let mut total = 0;
        while let Some(n) = self.block(false, &mut total)? {
            for _ in 0..n {
                each(self.text()?);
            }
        }
        Ok(())
    }

    /// Reads a header with `plan` into `out`, expanding its bitmaps over `layout`.
    pub(super) fn header(
        &mut self,
        plan: &HeaderPlan,
        layout: &FieldLayout,
        out: &mut Header,
    ) -> Step<()> {
        for read in &plan.reads {
            match read {
                Read::Text(t) => {
                    let s = CompactString::from(self.text()?);
                    match t {
                        Text::Entity => out.entity = s,
                        Text::Origin => out.change_origin = s,
                        Text::TransactionKey => out.transaction_key = s,
                        Text::User => out.commit_user = s,
                    }
                }
                Read::Number { into, int } => {
                    let v = if *int {
                        i64::from(self.int()?)
                    } else {
                        self.long()?
                    };
                    match into {
                        Number::Sequence => out.sequence_number = v,
                        Number::Timestamp => out.commit_timestamp = v,
                        Number::Commit => out.commit_number = v,
                    }
                }
                Read::RecordIds => {
                    let mut ids = Vec::new();
                    self.texts(|s| ids.push(CompactString::from(s)))?;
                    out.record_ids = ids;
                }
                Read::Bitmap(which) => {
                    let mut names = Expander::new(layout);
                    self.texts(|s| names.push(s))?;
                    let names = names.finish();
                    match which {
                        Names::Nulled => out.nulled_fields = names,
                        Names::Diff => out.diff_fields = names,
                        Names::Changed => out.changed_fields = names,
                    }
                }
                Read::ChangeType(types) => {
                    let i = self.symbol(types.len())?;
                    out.change_type = types.get(i).copied().flatten();
                }
                Read::Other(op) => {
                    let _: Value = self.value(op)?;
                }
            }
        }
        Ok(())
    }
}
