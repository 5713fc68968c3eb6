//! Projected decoding: decode only the top-level fields a consumer reads, skip the rest.
//!
//! A [`Projection`] is compiled once per writer schema from a [`Plan`] and a set of top-level
//! field names. Decoding walks every byte of the datum in schema order, exactly as
//! [`Plan::decode`] does, but builds values only for the kept fields; a skipped field is read
//! without allocating (a string or bytes is a length and an offset advance, a record, union,
//! array or map recurses). The result is a [`Record`] that holds only the kept fields:
//! [`Record::get`] answers `None` for a skipped one, never a made-up `Null`.
//!
//! The plan is laid out for the common event: consecutive skipped `["null", T]` fields form
//! runs, and a run of nulls is passed by comparing the payload's bytes with the run's null
//! branch bytes, one byte per field, with no dispatch on the fields' types. A skipped value
//! that is there is passed in a form compiled for its type's usual encoding (a string with a
//! one-byte length, a short varint, a fixed width) when it has that form, and by the general
//! skip otherwise. A record whose fields are all such unions (an address) is passed the same
//! way, as a run. The fast forms accept only what the general skip accepts, and anything
//! unusual (and every fault) goes to the general skip from the value's first byte, so errors
//! come from one place.
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

use std::sync::Arc;

use bytes::Bytes;

use super::bitmap::FieldLayout;
use super::{
    AvroError, FieldPlan, Header, HeaderPlan, Op, Plan, Reader, Record, RecordPlan, Step, whole,
};

/// A skip of one value compiled for its common encodings, tried before the general
/// [`Reader::skip`]. It only moves past values that the general skip accepts, to the same
/// offset; anything else (a long varint, a length past the end, a damaged byte) it leaves to
/// the general skip, from the value's first byte, which then fails exactly as the full decode
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fast {
    /// No fast form: always the general skip.
    None,
    /// A `string` or `bytes` whose length is one varint byte.
    Bytes,
    /// A `long` of at most 9 varint bytes (any such varint is well formed).
    Long,
    /// An `int` of at most 4 varint bytes (any such value is in range).
    Int,
    /// A `float`: 4 bytes.
    Float,
    /// A `double`: 8 bytes.
    Double,
    /// A `boolean`: one byte, 0 or 1.
    Boolean,
    /// `null`: nothing.
    Null,
    /// A record skipped as the [`Run`] at this index of [`Projection::records`].
    Record(u16),
}

impl Fast {
    fn of(op: &Op) -> Fast {
        match op {
            Op::Null => Fast::Null,
            Op::Boolean => Fast::Boolean,
            Op::Int => Fast::Int,
            Op::Long => Fast::Long,
            Op::Float => Fast::Float,
            Op::Double => Fast::Double,
            Op::Bytes | Op::String => Fast::Bytes,
            _ => Fast::None,
        }
    }

    /// Where the value of this form that starts at `at` in `buf` ends, if it is of this form
    /// (see the type's doc).
    #[inline(always)]
    fn end(self, buf: &[u8], at: usize, records: &[Run]) -> Option<usize> {
        let end = match self {
            Fast::Bytes => match buf.get(at) {
                // A non-negative length of one byte.
                Some(&b) if b & 0x81 == 0 => at + 1 + usize::from(b >> 1),
                _ => return None,
            },
            Fast::Long | Fast::Int => {
                let most = if self == Fast::Long { 9 } else { 4 };
                let rest = buf.get(at..).unwrap_or_default();
                at + 1 + rest.iter().take(most).position(|&b| b < 0x80)?
            }
            Fast::Float => at + 4,
            Fast::Double => at + 8,
            Fast::Boolean => match buf.get(at) {
                Some(&b) if b <= 1 => at + 1,
                _ => return None,
            },
            Fast::Null => at,
            Fast::None => return None,
            Fast::Record(k) => records.get(usize::from(k))?.end(buf, at)?,
        };
        (end <= buf.len()).then_some(end)
    }
}

/// A record whose fields are all `["null", T]` unions with a fast form of `T` other than a
/// record (an address, a geolocation): skipped as a run of nulls, like the top-level fields.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    /// Per field: the byte of its null branch's index.
    nulls: Box<[u8]>,
    /// Per field: how to skip it when it is not null.
    skips: Box<[Skip]>,
}

impl Run {
    fn of(plan: &RecordPlan) -> Option<Run> {
        let fields = plan
            .fields
            .iter()
            .map(|f| match &f.op {
                Op::Nullable { null_index, inner } => {
                    let (null, skip) = nullable(*null_index, Fast::of(inner));
                    (skip.fast != Fast::None).then_some((null, skip))
                }
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let (nulls, skips): (Vec<u8>, Vec<Skip>) = fields.into_iter().unzip();
        Some(Run {
            nulls: nulls.into_boxed_slice(),
            skips: skips.into_boxed_slice(),
        })
    }

    /// Where the run's record that starts at `at` ends, when every field is null or in its
    /// fast form; `None` otherwise.
    fn end(&self, buf: &[u8], at: usize) -> Option<usize> {
        pass_nullables(&self.nulls, &self.skips, buf, at, 0, &[]).ok()
    }
}

/// Passes the `["null", T]` values from the `i`th of a run (their null bytes `nulls`, their
/// skips `skips`) on, from `pos` in `buf`: the nulls compared with the payload at once, the
/// other values in their [`Fast`] form. `Ok` with where the run ends, or `Err` with the index
/// and the position of the first value that is neither, for the general skip.
#[inline(always)]
fn pass_nullables(
    nulls: &[u8],
    skips: &[Skip],
    buf: &[u8],
    mut pos: usize,
    mut i: usize,
    records: &[Run],
) -> Result<usize, (usize, usize)> {
    loop {
        let same = common_prefix(&nulls[i..], buf.get(pos..).unwrap_or_default());
        pos += same;
        i += same;
        let Some(skip) = skips.get(i) else {
            return Ok(pos);
        };
        let end = if buf.get(pos) == Some(&skip.some) {
            skip.fast.end(buf, pos + 1, records)
        } else {
            None
        };
        match end {
            Some(end) => pos = end,
            None => return Err((i, pos)),
        }
        i += 1;
    }
}

/// The null byte and the skip of a `["null", T]` union whose `T` has the fast form `fast`: the
/// zigzag varint of a branch index (0 or 1) is one byte, 0 or 2.
fn nullable(null_index: i64, fast: Fast) -> (u8, Skip) {
    (
        null_index as u8 * 2,
        Skip {
            some: (1 - null_index) as u8 * 2,
            fast,
        },
    )
}

/// How a skipped top-level field is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Skip {
    /// The byte of the branch index of a `["null", T]` union's other branch (2 or 0); unused
    /// for other fields.
    some: u8,
    /// The fast form of the value: of `T` for such a union, of the field itself otherwise.
    fast: Fast,
}

/// A step of a projection over the writer's top-level fields, in schema order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Decode the field at this position.
    Keep(usize),
    /// Skip the field at this position, which is no `["null", T]` union.
    Skip(usize),
    /// Skip the fields at these positions, a run of consecutive `["null", T]` unions.
    Nullables(std::ops::Range<usize>),
}

/// A plan that decodes some top-level fields of a record schema and skips the others.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The writer schema's top-level record: every field is read, in order.
    source: Arc<RecordPlan>,
    /// The fields of `source` in order: the kept ones one by one, the skipped nullable ones in
    /// runs (the first field is a part of its own, for the header).
    parts: Box<[Part]>,
    /// Per field of `source`: the byte of its null branch's index (0 or 2) when it is a
    /// `["null", T]` union (unused for others). A run of null fields is a run of these bytes in
    /// the payload, compared at once.
    nulls: Box<[u8]>,
    /// Per field of `source`: how to skip it when it is not null.
    skips: Box<[Skip]>,
    /// The records skipped as runs ([`Fast::Record`]).
    records: Box<[Run]>,
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
        let kept: Vec<bool> = source
            .fields
            .iter()
            .map(|f| wanted.contains(&&*f.name))
            .collect();
        let mut parts = Vec::new();
        for (i, (f, &keep)) in source.fields.iter().zip(&kept).enumerate() {
            let nullable = matches!(f.op, Op::Nullable { .. });
            match parts.last_mut() {
                _ if keep => parts.push(Part::Keep(i)),
                _ if !nullable => parts.push(Part::Skip(i)),
                // Runs start after the first field.
                Some(Part::Nullables(run)) if i > 1 => run.end = i + 1,
                _ => parts.push(Part::Nullables(i..i + 1)),
            }
        }
        let mut records = Vec::new();
        let mut fast = |op: &Op| match op {
            Op::Record(plan) if records.len() < usize::from(u16::MAX) => match Run::of(plan) {
                Some(run) => {
                    records.push(run);
                    Fast::Record((records.len() - 1) as u16)
                }
                None => Fast::None,
            },
            op => Fast::of(op),
        };
        let (nulls, skips) = source
            .fields
            .iter()
            .map(|f| match &f.op {
                Op::Nullable { null_index, inner } => nullable(*null_index, fast(inner)),
                op => (
                    0xFF,
                    Skip {
                        some: 0xFF,
                        fast: fast(op),
                    },
                ),
            })
            .unzip::<_, _, Vec<_>, Vec<_>>();
        let fields: Vec<FieldPlan> = source
            .fields
            .iter()
            .zip(&kept)
            .filter(|(_, keep)| **keep)
            .map(|(f, _)| f.clone())
            .collect();
        let index: foldhash::HashMap<Arc<str>, usize> = fields
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
            parts: parts.into_boxed_slice(),
            nulls: nulls.into_boxed_slice(),
            skips: skips.into_boxed_slice(),
            records: records.into_boxed_slice(),
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

/// How many leading bytes `a` and `b` have in common, compared eight at a time.
#[inline(always)]
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"));
    let mut i = 0;
    while i + 8 <= n {
        let differ = word(a, i) ^ word(b, i);
        if differ != 0 {
            return i + (differ.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A header to read typed at the first field, with its layout and where it goes.
type HeaderOut<'h> = Option<(&'h HeaderPlan, &'h FieldLayout, &'h mut Header)>;

impl Reader<'_> {
    fn projected(&mut self, p: &Projection, mut header: HeaderOut<'_>) -> Step<Record> {
        let start = self.scratch.len();
        // Position in the projected record of the next kept field.
        let mut kept = 0;
        let mut parts = p.parts.iter();
        if let Some((plan, layout, out)) = header.as_mut()
            && let Some(part) = parts.next()
        {
            // The first field, a part of its own. Its slot, if kept, stays `Null`.
            self.header(plan, layout, out)?;
            kept += usize::from(matches!(part, Part::Keep(_)));
        }
        for part in parts {
            match part {
                Part::Keep(i) => {
                    let v = self.field(&p.source.fields[*i].op)?;
                    self.set(kept, v);
                    kept += 1;
                }
                Part::Skip(i) => {
                    let op = &p.source.fields[*i].op;
                    match p.skips[*i].fast.end(self.buf, self.pos, &p.records) {
                        Some(end) => self.pos = end,
                        None => self.skip(op)?,
                    }
                }
                Part::Nullables(run) => self.skip_nullables(p, run.clone())?,
            }
        }
        Ok(self.finish(&p.out, start))
    }

    /// Moves past a run of `["null", T]` fields. Most are nulls: the bytes of their null
    /// branches are compared with the payload's at once, and a field that is not null is
    /// skipped in its [`Fast`] form or, failing that, by [`Reader::skip`].
    #[inline(always)]
    fn skip_nullables(&mut self, p: &Projection, run: std::ops::Range<usize>) -> Step<()> {
        let (nulls, skips) = (&p.nulls[run.clone()], &p.skips[run.clone()]);
        let mut i = 0;
        loop {
            match pass_nullables(nulls, skips, self.buf, self.pos, i, &p.records) {
                Ok(end) => {
                    self.pos = end;
                    return Ok(());
                }
                // Field `at` is not a null, nor in its fast form (or the payload ended).
                Err((at, pos)) => {
                    self.pos = pos;
                    self.skip(&p.source.fields[run.start + at].op)?;
                    i = at + 1;
                }
            }
        }
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
