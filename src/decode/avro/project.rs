//! Projected decoding: decode only the top-level fields a consumer reads, skip the rest.
//!
//! A [`Projection`] is compiled once per writer schema from a [`Plan`] and a set of top-level
//! field names. Decoding walks every byte of the datum in schema order, exactly as
//! [`Plan::decode`] does, but builds values only for the kept fields; a skipped field is read
//! without allocating (a string or bytes is a length and an offset advance, a record, union,
//! array or map recurses). The result is a [`Record`] that holds only the kept fields:
//! [`Record::get`] answers `None` for a skipped one, never a made-up `Null`.
//!
//! **Strictness.** Skipping keeps every structural check of the full decode, in the same order,
//! so a payload the full decode rejects for its structure is rejected here with the same error
//! at the same offset: the datum running out early, malformed or overlong varints, `int`s out of
//! range, negative or oversized string, bytes and block lengths, union and enum indexes out of
//! range, booleans other than 0 and 1, implausibly large collections, and trailing bytes after
//! the datum. The one check a skipped value drops is **UTF-8 validity**: the text of a skipped
//! string (or map key) is never looked at. So a payload whose only fault is invalid UTF-8 in a
//! skipped field decodes here and fails [`Plan::decode`] with [`AvroError::Utf8`]; in a kept
//! field it fails both the same way. Nothing here panics on input.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::bitmap::FieldLayout;
use super::{
    AvroError, FieldPlan, Header, HeaderPlan, Op, Plan, Reader, Record, RecordPlan, Step, whole,
};

/// What a projection does with one top-level field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Decode it.
    Keep,
    /// Skip it.
    Skip,
    /// Skip a `["null", T]` union, which is most often null: one byte, this one, decided here.
    SkipNullable(u8),
}

/// A plan that decodes some top-level fields of a record schema and skips the others.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The writer schema's top-level record: every field is read, in order.
    source: Arc<RecordPlan>,
    /// Per field of `source`: what to do with it.
    actions: Box<[Action]>,
    /// The record the kept fields decode into (same name, kept fields in schema order).
    out: Arc<RecordPlan>,
}

impl Projection {
    /// Compiles a projection of `plan` that keeps the top-level fields named in `keep`. Names
    /// the schema does not have are ignored: the field is then absent from decoded records, as
    /// it would be from a full decode.
    pub fn compile<'a>(plan: &Plan, keep: impl IntoIterator<Item = &'a str>) -> Projection {
        let source = plan.root().clone();
        let wanted: Vec<&str> = keep.into_iter().collect();
        let actions: Box<[Action]> = source
            .fields
            .iter()
            .map(|f| match &f.op {
                _ if wanted.contains(&&*f.name) => Action::Keep,
                // The zigzag varint of the null branch's index (0 or 1) is one byte: 0 or 2.
                Op::Nullable { null_index, .. } => Action::SkipNullable(*null_index as u8 * 2),
                _ => Action::Skip,
            })
            .collect();
        let fields: Vec<FieldPlan> = source
            .fields
            .iter()
            .zip(actions.iter())
            .filter(|(_, a)| **a == Action::Keep)
            .map(|(f, _)| f.clone())
            .collect();
        let index: HashMap<Arc<str>, usize> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let out = Arc::new(RecordPlan {
            name: source.name.clone(),
            fields,
            index,
        });
        Projection {
            source,
            actions,
            out,
        }
    }

    /// The plan of the records this projection decodes into: the kept fields only.
    pub fn root(&self) -> &Arc<RecordPlan> {
        &self.out
    }

    /// Decodes the kept fields of one datum, which must use every byte of `payload`.
    pub fn decode(&self, payload: &Bytes) -> Result<Record, AvroError> {
        whole(payload, |r| r.projected(self, None))
    }

    /// Decodes the kept fields of one datum whose first top-level field is a change event
    /// header (which must be kept), read with `header` as
    /// [`Plan::decode_change`](super::Plan::decode_change) does. It fails exactly when
    /// [`Projection::decode`] does.
    pub fn decode_change(
        &self,
        header: &HeaderPlan,
        layout: &FieldLayout,
        payload: &Bytes,
    ) -> Result<(Header, Record), AvroError> {
        let mut h = Header::default();
        let record = whole(payload, |r| {
            r.projected(self, Some((header, layout, &mut h)))
        })?;
        Ok((h, record))
    }
}

/// A header to read typed at the first field, with its layout and where it goes.
type HeaderOut<'h> = Option<(&'h HeaderPlan, &'h FieldLayout, &'h mut Header)>;

impl Reader<'_> {
    fn projected(&mut self, p: &Projection, mut header: HeaderOut<'_>) -> Step<Record> {
        let start = self.scratch.len();
        // Position in the projected record of the next kept field.
        let mut kept = 0;
        let mut fields = p.source.fields.iter().zip(p.actions.iter());
        if let Some((plan, layout, out)) = header.as_mut()
            && let Some((_, action)) = fields.next()
        {
            // Its slot, if kept, stays `Null`.
            self.header(plan, layout, out)?;
            kept += usize::from(*action == Action::Keep);
        }
        for (f, action) in fields {
            match (action, &f.op) {
                // Most fields of an event are skipped nulls: one byte compared, no call.
                (Action::SkipNullable(null), op) => {
                    if self.buf.get(self.pos) == Some(null) {
                        self.pos += 1;
                    } else {
                        self.skip(op)?;
                    }
                }
                (Action::Skip, op) => self.skip(op)?,
                (Action::Keep, op) => {
                    let v = self.field(op)?;
                    self.set(kept, v);
                    kept += 1;
                }
            }
        }
        Ok(self.finish(&p.out, start))
    }

    /// Moves past `n` bytes.
    fn advance(&mut self, n: usize) -> Step<()> {
        self.pos = self.end_of(n)?;
        Ok(())
    }

    /// Moves past a string or bytes: its length, checked as [`Reader::len`] does, then its
    /// bytes, unread (so not checked for UTF-8).
    fn skip_bytes(&mut self) -> Step<()> {
        let n = self.len()?;
        self.advance(n)
    }

    /// Moves past one value of `op`, with every check [`Reader::value`] makes but UTF-8.
    fn skip(&mut self, op: &Op) -> Step<()> {
        match op {
            Op::Null => {}
            Op::Boolean => {
                let at = self.pos;
                if self.byte()? > 1 {
                    return Err(self.fail(AvroError::BadBoolean(at)));
                }
            }
            Op::Int => {
                self.int()?;
            }
            Op::Long => {
                self.long()?;
            }
            Op::Float => self.advance(4)?,
            Op::Double => self.advance(8)?,
            Op::Bytes | Op::String => self.skip_bytes()?,
            Op::Fixed(n) => self.advance(*n)?,
            Op::Enum(symbols) => {
                self.symbol(symbols.len())?;
            }
            Op::Union(branches) => {
                let branch = self.branch(branches.len())?;
                self.skip(&branches[branch])?
            }
            Op::Nullable { null_index, inner } => {
                if self.branch(2)? as i64 != *null_index {
                    self.skip(inner)?
                }
            }
            Op::Record(plan) => {
                for f in &plan.fields {
                    self.skip(&f.op)?;
                }
            }
            Op::Array(item) => {
                let zero = matches!(**item, Op::Null);
                let mut total = 0;
                while let Some(n) = self.block(zero, &mut total)? {
                    for _ in 0..n {
                        self.skip(item)?;
                    }
                }
            }
            Op::Map(item) => {
                let mut total = 0;
                while let Some(n) = self.block(false, &mut total)? {
                    for _ in 0..n {
                        self.skip_bytes()?;
                        self.skip(item)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
