//! The subset of SOQL the emulator answers, parsed and evaluated against the org.
//!
//! Supported: `SELECT item, ... FROM Object [WHERE cond [AND cond]...] [ORDER BY f [ASC|DESC]]
//! [LIMIT n]`, and `SELECT count() FROM Object [WHERE ...]`, whose answer is the number of matching
//! records in `totalSize` with no records, where a condition is `field op literal` (`=`, `!=`, `<`, `<=`, `>`, `>=`) or
//! `field IN (literal, ...)`, and a literal is a quoted string, a number, `true`/`false`/`null`,
//! a date (`2024-01-15`) or a date-time (`2024-01-15T10:00:00Z`). That covers what sfcdc sends:
//! by `Id`, by `Id IN (...)`, by `AccountId`, and by `LastModifiedDate >`.
//!
//! A select item is a field, or a parent-to-child relationship subquery
//! `(SELECT f, ... FROM Relationship [WHERE ...] [ORDER BY ...] [LIMIT n])` with its own field
//! list, conditions, order and limit, applied per parent record. The relationships are the rows
//! of [`CHILD_RELATIONSHIPS`] (today `Order.OrderItems`); any other name is `INVALID_TYPE`, as in
//! Salesforce. In the result, each parent carries the relationship as `null` when it has no live
//! children, else as `{"totalSize", "done": true, "records"}` with the children rendered like
//! top-level records. Subqueries do not nest.
//!
//! Valid SOQL beyond this subset is refused with [`SoqlError::Unsupported`] (501
//! `NOT_IMPLEMENTED`, naming the construct) where the parser recognises it: `OR`, `NOT`, `LIKE`,
//! `INCLUDES`/`EXCLUDES`, parenthesised conditions, semi-joins, nested subqueries, functions
//! (`COUNT(Id)`, `FIELDS(ALL)`, `toLabel(…)`, …), parent relationship fields (`Account.Name`),
//! date literals (`TODAY`, `LAST_N_DAYS:30`), `ORDER BY` on several fields or with `NULLS`, and the
//! `GROUP BY`, `HAVING`, `WITH`, `USING SCOPE`, `OFFSET`, `FOR` and `TYPEOF` clauses. Text that is
//! not SOQL is a `MALFORMED_QUERY` error, as in Salesforce. Neither is ever a silently wrong
//! answer.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::ids::SfId;
use super::model::FieldType;
use super::org::{Org, Record, parse_date, parse_datetime};
use super::schema::FieldValue;

/// A parent-to-child relationship a subquery can name in its `FROM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildRelationship {
    /// The parent object.
    pub parent: &'static str,
    /// The relationship name, as written in the subquery's `FROM` and keyed in the result.
    pub name: &'static str,
    /// The child object.
    pub child: &'static str,
    /// The child's lookup field holding the parent's id.
    pub field: &'static str,
    /// Whether deleting the parent deletes its children.
    pub cascade_delete: bool,
}

/// Every child relationship the emulator answers subqueries on.
pub const CHILD_RELATIONSHIPS: &[ChildRelationship] = &[ChildRelationship {
    parent: "Order",
    name: "OrderItems",
    child: "OrderItem",
    field: "OrderId",
    cascade_delete: true,
}];

/// The relationship `name` (case-insensitive) of the object `parent`.
pub fn child_relationship(parent: &str, name: &str) -> Option<&'static ChildRelationship> {
    CHILD_RELATIONSHIPS
        .iter()
        .find(|r| r.parent.eq_ignore_ascii_case(parent) && r.name.eq_ignore_ascii_case(name))
}

/// A parsed query, or a relationship subquery within one.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The select list, as written; empty for `count()`.
    pub select: Vec<SelectItem>,
    /// `SELECT count()`: the answer is how many records match, not the records.
    pub count: bool,
    /// Object name; for a subquery, the relationship name.
    pub object: String,
    /// Conditions, all of which must hold.
    pub conditions: Vec<Condition>,
    /// Sort field and whether descending.
    pub order_by: Option<(String, bool)>,
    /// Row limit (per parent record, in a subquery).
    pub limit: Option<usize>,
}

impl Query {
    /// The plain fields of the select list, as written.
    pub fn fields(&self) -> Vec<&str> {
        self.select
            .iter()
            .filter_map(|item| match item {
                SelectItem::Field(f) => Some(f.as_str()),
                SelectItem::Subquery(_) => None,
            })
            .collect()
    }
}

/// One item of a select list.
#[derive(Debug, Clone, PartialEq)]
pub enum SelectItem {
    /// A field name.
    Field(String),
    /// A parent-to-child relationship subquery.
    Subquery(Query),
}

/// One WHERE condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Field name.
    pub field: String,
    /// Operator.
    pub op: Op,
    /// Right-hand side (several for `IN`).
    pub values: Vec<Literal>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `IN (...)`
    In,
}

/// A literal in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`
    Str(String),
    /// A number.
    Num(f64),
    /// `true` / `false`
    Bool(bool),
    /// `null`
    Null,
    /// A date or date-time, as epoch milliseconds.
    Time(i64),
}

/// A query the emulator cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoqlError {
    /// Text that is not SOQL (`MALFORMED_QUERY`).
    #[error("{0}")]
    Malformed(String),
    /// Valid SOQL the emulator does not answer (`NOT_IMPLEMENTED`, HTTP 501), naming the
    /// construct.
    #[error("SOQL {0} is not emulated")]
    Unsupported(String),
    /// `INVALID_TYPE`.
    #[error("sObject type '{0}' is not supported.")]
    InvalidType(String),
    /// `INVALID_TYPE` for a subquery's `FROM` that names no child relationship of the parent.
    #[error(
        "Didn't understand relationship '{0}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names."
    )]
    UnknownRelationship(String),
    /// `INVALID_FIELD`.
    #[error(
        "No such column '{field}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name."
    )]
    InvalidField {
        /// Field as written.
        field: String,
        /// Object.
        object: String,
    },
}

impl SoqlError {
    /// The Salesforce `errorCode`.
    pub fn error_code(&self) -> &'static str {
        match self {
            SoqlError::Malformed(_) => "MALFORMED_QUERY",
            SoqlError::Unsupported(_) => "NOT_IMPLEMENTED",
            SoqlError::InvalidType(_) | SoqlError::UnknownRelationship(_) => "INVALID_TYPE",
            SoqlError::InvalidField { .. } => "INVALID_FIELD",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Sym(&'static str),
}

fn tokenize(q: &str) -> Result<Vec<Token>, SoqlError> {
    let mut out = Vec::new();
    let chars: Vec<char> = q.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(SoqlError::Malformed("unterminated string literal".into())),
                    Some('\\') => {
                        let escaped = chars
                            .get(i + 1)
                            .ok_or_else(|| SoqlError::Malformed("unterminated escape".into()))?;
                        s.push(*escaped);
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if matches!(c, ',' | '(' | ')' | '=' | '<' | '>' | '!') {
            let next = chars.get(i + 1).copied();
            let sym = match (c, next) {
                ('!', Some('=')) => "!=",
                ('<', Some('=')) => "<=",
                ('>', Some('=')) => ">=",
                ('<', Some('>')) => "!=",
                (',', _) => ",",
                ('(', _) => "(",
                (')', _) => ")",
                ('=', _) => "=",
                ('<', _) => "<",
                ('>', _) => ">",
                _ => return Err(SoqlError::Malformed(format!("unexpected character '{c}'"))),
            };
            i += sym.len();
            out.push(Token::Sym(sym));
        } else if c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '+') {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-' | ':' | '+'))
            {
                i += 1;
            }
            out.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            return Err(SoqlError::Malformed(format!("unexpected character '{c}'")));
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            Err(SoqlError::Malformed(format!("expected {kw}")))
        }
    }

    fn symbol(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Token::Sym(s)) if *s == sym) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, SoqlError> {
        match self.next() {
            Some(Token::Word(w)) if w.chars().next().is_some_and(|c| c.is_alphabetic()) => Ok(w),
            _ => Err(SoqlError::Malformed(format!("expected {what}"))),
        }
    }

    fn literal(&mut self) -> Result<Literal, SoqlError> {
        match self.next() {
            Some(Token::Str(s)) => Ok(Literal::Str(s)),
            Some(Token::Word(w)) => {
                if w.eq_ignore_ascii_case("true") {
                    Ok(Literal::Bool(true))
                } else if w.eq_ignore_ascii_case("false") {
                    Ok(Literal::Bool(false))
                } else if w.eq_ignore_ascii_case("null") {
                    Ok(Literal::Null)
                } else if let Some(t) = parse_datetime(&w) {
                    Ok(Literal::Time(t))
                } else if let Some(d) = parse_date(&w) {
                    Ok(Literal::Time(d))
                } else if let Ok(n) = w.parse::<f64>() {
                    Ok(Literal::Num(n))
                } else if is_date_literal(&w) {
                    Err(SoqlError::Unsupported(format!("date literals ({w})")))
                } else {
                    Err(SoqlError::Malformed(format!("unexpected token: '{w}'")))
                }
            }
            _ => Err(SoqlError::Malformed("expected a literal".into())),
        }
    }
}

/// Parses a query of the supported subset.
pub fn parse(q: &str) -> Result<Query, SoqlError> {
    let mut p = Parser {
        tokens: tokenize(q)?,
        pos: 0,
    };
    let query = p.query(false)?;
    if let Some(t) = p.peek() {
        return Err(SoqlError::Malformed(format!("unexpected token: {t:?}")));
    }
    Ok(query)
}

/// The clause keywords of SOQL the emulator does not answer, as they start a clause.
const UNSUPPORTED_CLAUSES: [(&str, &str); 8] = [
    ("GROUP", "GROUP BY"),
    ("HAVING", "HAVING"),
    ("WITH", "WITH"),
    ("USING", "USING SCOPE"),
    ("OFFSET", "OFFSET"),
    ("FOR", "FOR VIEW, FOR REFERENCE and FOR UPDATE"),
    ("UPDATE", "UPDATE TRACKING and UPDATE VIEWSTAT"),
    ("NULLS", "NULLS FIRST and NULLS LAST"),
];

/// Whether `w` is a SOQL date literal (`TODAY`, `LAST_N_DAYS:30`, `THIS_FISCAL_QUARTER`, …).
fn is_date_literal(w: &str) -> bool {
    let name = w.split(':').next().unwrap_or(w).to_ascii_uppercase();
    matches!(name.as_str(), "TODAY" | "YESTERDAY" | "TOMORROW")
        || ["LAST_", "NEXT_", "THIS_", "N_"]
            .iter()
            .any(|p| name.starts_with(p))
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
}

impl Parser {
    /// A query up to its end or to the `)` closing it; `nested` inside a subquery.
    fn query(&mut self, nested: bool) -> Result<Query, SoqlError> {
        self.expect_keyword("SELECT")?;
        let mut select = Vec::new();
        let count = !nested && self.count_function();
        if !count {
            loop {
                if self.symbol("(") {
                    if nested {
                        return Err(SoqlError::Unsupported(
                            "nested relationship subqueries".into(),
                        ));
                    }
                    let sub = self.query(true)?;
                    if !self.symbol(")") {
                        return Err(self.unexpected("expected ) to close subquery"));
                    }
                    select.push(SelectItem::Subquery(sub));
                } else {
                    let field = self.ident("a field name")?;
                    if field.eq_ignore_ascii_case("TYPEOF") {
                        return Err(SoqlError::Unsupported("TYPEOF".into()));
                    }
                    if matches!(self.peek(), Some(Token::Sym("("))) {
                        return Err(self.function(&field));
                    }
                    select.push(SelectItem::Field(field));
                }
                if !self.symbol(",") {
                    break;
                }
            }
        }
        self.expect_keyword("FROM")?;
        let object = self.ident(if nested {
            "a relationship name"
        } else {
            "an object name"
        })?;
        let mut conditions = Vec::new();
        if self.keyword("WHERE") {
            loop {
                conditions.push(self.condition()?);
                if self.keyword("OR") {
                    return Err(SoqlError::Unsupported("OR".into()));
                }
                if !self.keyword("AND") {
                    break;
                }
            }
        }
        let mut order_by = None;
        if self.keyword("ORDER") {
            self.expect_keyword("BY")?;
            let f = self.ident("a field name")?;
            if matches!(self.peek(), Some(Token::Sym("("))) {
                return Err(self.function(&f));
            }
            let desc = if self.keyword("DESC") {
                true
            } else {
                self.keyword("ASC");
                false
            };
            if matches!(self.peek(), Some(Token::Sym(","))) {
                return Err(SoqlError::Unsupported("ORDER BY on several fields".into()));
            }
            order_by = Some((f, desc));
        }
        let mut limit = None;
        if self.keyword("LIMIT") {
            match self.next() {
                Some(Token::Word(w)) => {
                    limit = Some(
                        w.parse()
                            .map_err(|_| SoqlError::Malformed(format!("bad LIMIT: {w}")))?,
                    )
                }
                _ => return Err(SoqlError::Malformed("expected a number after LIMIT".into())),
            }
        }
        if let Some(e) = self.unsupported_clause() {
            return Err(e);
        }
        Ok(Query {
            select,
            count,
            object,
            conditions,
            order_by,
            limit,
        })
    }

    /// The error for a query that goes on where this parser stops: a clause it does not answer,
    /// or text that is not SOQL.
    fn unexpected(&self, expected: &str) -> SoqlError {
        self.unsupported_clause()
            .unwrap_or_else(|| SoqlError::Malformed(expected.to_owned()))
    }

    /// [`SoqlError::Unsupported`] if the next token starts a clause the emulator does not answer.
    fn unsupported_clause(&self) -> Option<SoqlError> {
        let Some(Token::Word(w)) = self.peek() else {
            return None;
        };
        UNSUPPORTED_CLAUSES
            .iter()
            .find(|(kw, _)| w.eq_ignore_ascii_case(kw))
            .map(|(_, clause)| SoqlError::Unsupported((*clause).to_owned()))
    }

    /// The error for `name(`: a function call, which the emulator does not answer, except a
    /// `count()` that does not stand alone, which is not SOQL.
    fn function(&self, name: &str) -> SoqlError {
        let empty = matches!(self.tokens.get(self.pos + 1), Some(Token::Sym(")")));
        let closed = self.tokens[self.pos..]
            .iter()
            .any(|t| matches!(t, Token::Sym(")")));
        if !closed {
            SoqlError::Malformed(format!("expected ) to close {name}("))
        } else if name.eq_ignore_ascii_case("count") && empty {
            SoqlError::Malformed("count() must be the only item of the select list".into())
        } else {
            SoqlError::Unsupported(format!("functions ({name}(…))"))
        }
    }
    /// `count()` as the whole select list.
    fn count_function(&mut self) -> bool {
        let is_count = matches!(
            self.tokens.get(self.pos..self.pos + 4),
            Some([Token::Word(w), Token::Sym("("), Token::Sym(")"), Token::Word(from)])
                if w.eq_ignore_ascii_case("count") && from.eq_ignore_ascii_case("FROM")
        );
        if is_count {
            self.pos += 3;
        }
        is_count
    }

    /// One `field op literal` or `field IN (literal, ...)`.
    fn condition(&mut self) -> Result<Condition, SoqlError> {
        if matches!(self.peek(), Some(Token::Sym("("))) {
            return Err(SoqlError::Unsupported("parenthesised conditions".into()));
        }
        if self.keyword("NOT") {
            return Err(SoqlError::Unsupported("NOT".into()));
        }
        let field = self.ident("a field name")?;
        if matches!(self.peek(), Some(Token::Sym("("))) {
            return Err(self.function(&field));
        }
        for op in ["LIKE", "INCLUDES", "EXCLUDES"] {
            if self.keyword(op) {
                return Err(SoqlError::Unsupported(op.into()));
            }
        }
        if self.keyword("NOT") {
            return Err(SoqlError::Unsupported("NOT IN".into()));
        }
        let (op, values) = if self.keyword("IN") {
            if !self.symbol("(") {
                return Err(SoqlError::Malformed("expected ( after IN".into()));
            }
            if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("SELECT")) {
                return Err(SoqlError::Unsupported("semi-joins (IN (SELECT …))".into()));
            }
            let mut values = vec![self.literal()?];
            while self.symbol(",") {
                values.push(self.literal()?);
            }
            if !self.symbol(")") {
                return Err(SoqlError::Malformed("expected ) to close IN".into()));
            }
            (Op::In, values)
        } else {
            let op = match self.next() {
                Some(Token::Sym("=")) => Op::Eq,
                Some(Token::Sym("!=")) => Op::Ne,
                Some(Token::Sym("<")) => Op::Lt,
                Some(Token::Sym("<=")) => Op::Le,
                Some(Token::Sym(">")) => Op::Gt,
                Some(Token::Sym(">=")) => Op::Ge,
                _ => {
                    return Err(SoqlError::Malformed(format!(
                        "expected an operator after {field}"
                    )));
                }
            };
            (op, vec![self.literal()?])
        };
        Ok(Condition { field, op, values })
    }
}

/// A condition with its literals in the form records are compared in, computed once per query
/// instead of once per record and literal: ids in their 18-character form (15-character literals
/// match too), other text lower-cased (text compares case-insensitively).
fn normalized(c: &Condition, ftype: FieldType) -> Condition {
    let id = matches!(ftype, FieldType::Id | FieldType::Reference);
    let mut values: Vec<Literal> = c
        .values
        .iter()
        .map(|l| match l {
            Literal::Str(b) if id => {
                Literal::Str(super::ids::to_18(b).unwrap_or_else(|_| b.clone()))
            }
            Literal::Str(b) => Literal::Str(b.to_lowercase()),
            other => other.clone(),
        })
        .collect();
    if c.op == Op::In {
        // Text literals last and sorted, so [`holds`] finds a text value by binary search.
        values.sort_by(|a, b| match (a, b) {
            (Literal::Str(x), Literal::Str(y)) => x.cmp(y),
            (Literal::Str(_), _) => Ordering::Greater,
            (_, Literal::Str(_)) => Ordering::Less,
            _ => Ordering::Equal,
        });
    }
    Condition {
        field: c.field.clone(),
        op: c.op,
        values,
    }
}

/// Compares a record's value with a [`normalized`] literal.
fn compare(v: &FieldValue, lit: &Literal, ftype: FieldType) -> Option<Ordering> {
    match (v, lit) {
        (FieldValue::Null, Literal::Null) => Some(Ordering::Equal),
        (FieldValue::Null, _) | (_, Literal::Null) => None,
        (FieldValue::Str(a), Literal::Str(b)) => {
            if matches!(ftype, FieldType::Id | FieldType::Reference) {
                Some(a.as_str().cmp(b.as_str()))
            } else {
                Some(a.to_lowercase().cmp(b))
            }
        }
        (FieldValue::Long(a), Literal::Time(b)) => Some(a.cmp(b)),
        (FieldValue::Long(a), Literal::Num(b)) => (*a as f64).partial_cmp(b),
        (FieldValue::Double(a), Literal::Num(b)) => a.partial_cmp(b),
        (FieldValue::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn holds(record: &Record, field: &str, ftype: FieldType, c: &Condition) -> bool {
    let v = record.get(field);
    match (c.op, v) {
        (Op::In, FieldValue::Str(a)) => {
            let key = if matches!(ftype, FieldType::Id | FieldType::Reference) {
                std::borrow::Cow::Borrowed(a.as_str())
            } else {
                std::borrow::Cow::Owned(a.to_lowercase())
            };
            c.values
                .binary_search_by(|l| match l {
                    Literal::Str(b) => b.as_str().cmp(key.as_ref()),
                    _ => Ordering::Less,
                })
                .is_ok()
        }
        (Op::In, _) => c
            .values
            .iter()
            .any(|l| compare(v, l, ftype) == Some(Ordering::Equal)),
        (Op::Ne, _) => compare(v, &c.values[0], ftype) != Some(Ordering::Equal),
        (op, _) => compare(v, &c.values[0], ftype).is_some_and(|o| match op {
            Op::Eq => o == Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Ne | Op::In => unreachable!("handled above"),
        }),
    }
}

/// One query level resolved against its object: canonical names, ready to evaluate.
#[derive(Debug)]
struct Plan {
    /// The plain fields, canonical, in select order: what [`Org::to_json`] renders.
    fields: Vec<String>,
    /// The select list, canonical.
    columns: Vec<Column>,
    conditions: Vec<(String, FieldType, Condition)>,
    order_by: Option<(String, bool)>,
    limit: Option<usize>,
}

#[derive(Debug)]
enum Column {
    Field(String),
    Children(&'static ChildRelationship, Plan),
}

impl Plan {
    /// Resolves `q` against the object `object`; `nested` for a subquery's own select list.
    fn resolve(org: &Org, object: &str, q: &Query, nested: bool) -> Result<Plan, SoqlError> {
        let def = org
            .def(object)
            .ok_or_else(|| SoqlError::InvalidType(object.to_owned()))?;
        let resolve = |f: &str| {
            def.flat_field(f).ok_or_else(|| {
                // `Account.Name`: a path through one of the object's lookups.
                let through_lookup = f.split_once('.').is_some_and(|(rel, _)| {
                    def.fields.iter().any(|d| {
                        d.ftype == FieldType::Reference
                            && d.name
                                .strip_suffix("Id")
                                .is_some_and(|r| r.eq_ignore_ascii_case(rel))
                    })
                });
                if through_lookup {
                    SoqlError::Unsupported(format!("parent relationship fields ({f})"))
                } else {
                    SoqlError::InvalidField {
                        field: f.to_owned(),
                        object: def.name.clone(),
                    }
                }
            })
        };
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for item in &q.select {
            match item {
                SelectItem::Field(f) => {
                    let (name, _) = resolve(f)?;
                    fields.push(name.clone());
                    columns.push(Column::Field(name));
                }
                SelectItem::Subquery(_) if nested => {
                    return Err(SoqlError::Unsupported(
                        "nested relationship subqueries".into(),
                    ));
                }
                SelectItem::Subquery(sub) => {
                    let rel = child_relationship(&def.name, &sub.object)
                        .ok_or_else(|| SoqlError::UnknownRelationship(sub.object.clone()))?;
                    if columns
                        .iter()
                        .any(|c| matches!(c, Column::Children(r, _) if r.name == rel.name))
                    {
                        return Err(SoqlError::Malformed(format!(
                            "duplicate relationship selected: {}",
                            rel.name
                        )));
                    }
                    columns.push(Column::Children(
                        rel,
                        Plan::resolve(org, rel.child, sub, true)?,
                    ));
                }
            }
        }
        let conditions = q
            .conditions
            .iter()
            .map(|c| resolve(&c.field).map(|(name, t)| (name, t, normalized(c, t))))
            .collect::<Result<Vec<_>, _>>()?;
        let order_by = match &q.order_by {
            Some((f, desc)) => Some((resolve(f)?.0, *desc)),
            None => None,
        };
        Ok(Plan {
            fields,
            columns,
            conditions,
            order_by,
            limit: q.limit,
        })
    }

    /// The candidates that meet every condition, sorted and limited.
    fn select<'a>(&self, candidates: impl Iterator<Item = &'a Record>) -> Vec<&'a Record> {
        let mut rows: Vec<&Record> = candidates
            .filter(|r| self.conditions.iter().all(|(f, t, c)| holds(r, f, *t, c)))
            .collect();
        // Unordered queries come back in id order, which is creation order here.
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some((name, desc)) = &self.order_by {
            rows.sort_by(|a, b| {
                let o = cmp_values(a.get(name), b.get(name));
                if *desc { o.reverse() } else { o }
            });
        }
        if let Some(n) = self.limit {
            rows.truncate(n);
        }
        rows
    }

    fn has_children(&self) -> bool {
        self.columns
            .iter()
            .any(|c| matches!(c, Column::Children(..)))
    }

    /// Renders one record as Salesforce REST does: the fields through [`Org::to_json`], each
    /// relationship (with `children`, in select order) as `null` or a nested query result.
    fn render(
        &self,
        org: &Org,
        api_version: &str,
        record: &Record,
        children: &[Vec<&Record>],
    ) -> Json {
        let rendered = org.to_json(record, api_version, Some(&self.fields));
        if !self.has_children() {
            return rendered;
        }
        let Json::Object(mut base) = rendered else {
            return rendered;
        };
        let mut out = Map::new();
        if let Some(attributes) = base.remove("attributes") {
            out.insert("attributes".into(), attributes);
        }
        let mut children = children.iter();
        for column in &self.columns {
            match column {
                Column::Field(name) => {
                    if let Some(v) = base.remove(name) {
                        out.insert(name.clone(), v);
                    }
                }
                Column::Children(rel, plan) => {
                    let rows = children.next().map(Vec::as_slice).unwrap_or_default();
                    let v = if rows.is_empty() {
                        Json::Null
                    } else {
                        serde_json::json!({
                            "totalSize": rows.len(),
                            "done": true,
                            "records": rows
                                .iter()
                                .map(|r| plan.render(org, api_version, r, &[]))
                                .collect::<Vec<_>>(),
                        })
                    };
                    out.insert(rel.name.to_owned(), v);
                }
            }
        }
        Json::Object(out)
    }
}

/// One record of a result, with its children.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// The record.
    pub record: &'a Record,
    /// The selected children of each relationship subquery, in select order.
    pub children: Vec<Vec<&'a Record>>,
}

/// The answer to a query: the matching records, in order, and how to render them.
#[derive(Debug)]
pub struct QueryResult<'a> {
    /// The matching records, sorted and limited.
    pub rows: Vec<Row<'a>>,
    plan: Plan,
}

impl QueryResult<'_> {
    /// The records rendered as in a REST query response's `records`.
    pub fn to_json(&self, org: &Org, api_version: &str) -> Vec<Json> {
        self.rows
            .iter()
            .map(|row| {
                self.plan
                    .render(org, api_version, row.record, &row.children)
            })
            .collect()
    }
}

impl QueryResult<'_> {
    /// Renders the records one at a time, as in a REST query response's `records`, so a large
    /// result is never rendered whole.
    pub fn render_each(&self, org: &Org, api_version: &str, mut f: impl FnMut(Json)) {
        for row in &self.rows {
            f(self
                .plan
                .render(org, api_version, row.record, &row.children));
        }
    }

    /// The plain fields of the select list, canonical, in select order.
    pub fn fields(&self) -> &[String] {
        &self.plan.fields
    }
}

/// Checks a query against the org without running it; the plain fields of its select list,
/// canonical, in select order.
pub fn check(org: &Org, q: &Query) -> Result<Vec<String>, SoqlError> {
    Ok(Plan::resolve(org, &q.object, q, false)?.fields)
}

/// Runs a query; returns the matching records (in order) with their subqueries' children.
pub fn run<'a>(org: &'a Org, q: &Query) -> Result<QueryResult<'a>, SoqlError> {
    let plan = Plan::resolve(org, &q.object, q, false)?;
    let def = org
        .def(&q.object)
        .ok_or_else(|| SoqlError::InvalidType(q.object.clone()))?;
    // A condition on Id names the candidates directly; otherwise every record is a candidate.
    let by_id = plan
        .conditions
        .iter()
        .find(|(f, _, c)| f == "Id" && matches!(c.op, Op::Eq | Op::In));
    let records = match by_id {
        Some((_, _, c)) => plan.select(
            c.values
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => SfId::parse(s).ok(),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|id| org.get(&id))
                .filter(|r| r.sobject == def.name),
        ),
        None => plan.select(org.records_of(&def.name)),
    };
    let mut rows: Vec<Row<'a>> = records
        .into_iter()
        .map(|record| Row {
            record,
            children: Vec::new(),
        })
        .collect();
    for column in &plan.columns {
        let Column::Children(rel, sub) = column else {
            continue;
        };
        // One pass over the live children, grouped by parent.
        let mut by_parent: HashMap<&str, Vec<&Record>> = HashMap::new();
        if !rows.is_empty() {
            for child in org.records_of(rel.child) {
                if let Some(parent) = child.text(rel.field) {
                    by_parent.entry(parent).or_default().push(child);
                }
            }
        }
        for row in &mut rows {
            let candidates = by_parent.get(row.record.id.as_str()).into_iter().flatten();
            row.children.push(sub.select(candidates.copied()));
        }
    }
    Ok(QueryResult { rows, plan })
}

/// Nulls sort first, as in SOQL's default `NULLS FIRST` for ascending order.
fn cmp_values(a: &FieldValue, b: &FieldValue) -> Ordering {
    match (a, b) {
        (FieldValue::Null, FieldValue::Null) => Ordering::Equal,
        (FieldValue::Null, _) => Ordering::Less,
        (_, FieldValue::Null) => Ordering::Greater,
        (FieldValue::Str(x), FieldValue::Str(y)) => x.cmp(y),
        (FieldValue::Long(x), FieldValue::Long(y)) => x.cmp(y),
        (FieldValue::Bool(x), FieldValue::Bool(y)) => x.cmp(y),
        (x, y) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::org::Actor;
    use serde_json::json;

    #[test]
    fn parses_the_shapes_sfcdc_sends() {
        let q = parse("SELECT Id, Status FROM Order WHERE Id = '801Hs00000000AbCDE'").unwrap();
        assert_eq!(q.fields(), ["Id", "Status"]);
        assert_eq!(q.object, "Order");
        assert_eq!(q.conditions[0].op, Op::Eq);
        let q = parse("select Id from Order where Id in ('a','b') and Status != 'Draft' order by CreatedDate desc limit 5").unwrap();
        assert_eq!(q.conditions.len(), 2);
        assert_eq!(q.conditions[0].values.len(), 2);
        assert_eq!(q.order_by, Some(("CreatedDate".into(), true)));
        assert_eq!(q.limit, Some(5));
        let q = parse("SELECT Id FROM Order WHERE LastModifiedDate > 2024-03-01T14:25:51.000+0000")
            .unwrap();
        assert_eq!(q.conditions[0].values, [Literal::Time(1_709_303_151_000)]);
        let q = parse("SELECT Id FROM Order WHERE LastModifiedDate >= 2024-03-01T14:25:51Z AND TotalAmount > 10.5").unwrap();
        assert_eq!(q.conditions[1].values, [Literal::Num(10.5)]);
        let q = parse(r"SELECT Id FROM Account WHERE Name = 'O\'Brien'").unwrap();
        assert_eq!(q.conditions[0].values, [Literal::Str("O'Brien".into())]);
    }

    #[test]
    fn parses_count() {
        let q = parse("select COUNT() from Order where Status = 'Draft' limit 3").unwrap();
        assert!(q.count);
        assert!(q.select.is_empty());
        assert_eq!((q.object.as_str(), q.conditions.len()), ("Order", 1));
        assert_eq!(q.limit, Some(3));
        assert!(!parse("SELECT Id FROM Order").unwrap().count);
        for bad in [
            "SELECT count(), Id FROM Order",
            "SELECT Id, count() FROM Order",
            "SELECT count( FROM Order",
            "SELECT count() Order",
            "SELECT Id, (SELECT count() FROM OrderItems) FROM Order",
        ] {
            assert!(matches!(parse(bad), Err(SoqlError::Malformed(_))), "{bad}");
        }
        let (org, _, _) = sample_org();
        let q = parse("SELECT count() FROM OrderItem WHERE Quantity >= 2").unwrap();
        assert_eq!(
            run(&org, &q).unwrap().rows.len(),
            2,
            "deleted items do not count"
        );
    }

    #[test]
    fn rejects_what_it_cannot_answer() {
        for bad in [
            "",
            "SELECT FROM Order",
            "SELECT Id Order",
            "SELECT Id FROM Order WHERE Id = 'unterminated",
            "SELECT Id FROM Order LIMIT x",
            "SELECT Id FROM Order WHERE Id IN 'a'",
            "SELECT Id FROM Order; DELETE",
            "SELECT Id, (SELECT Id FROM OrderItems FROM Order",
            "SELECT Id, (SELECT Id FROM OrderItems)) FROM Order",
            "SELECT Id, () FROM Order",
            "SELECT Id, (Id FROM OrderItems) FROM Order",
            "SELECT Id FROM Order (SELECT Id FROM OrderItems)",
            "SELECT Id FROM Order WHERE CreatedDate > SOON",
        ] {
            assert!(matches!(parse(bad), Err(SoqlError::Malformed(_))), "{bad}");
        }
        // Valid SOQL beyond the subset: refused as not emulated, naming the construct.
        for (valid, construct) in [
            ("SELECT Id FROM Order WHERE Id = 'x' OR Id = 'y'", "OR"),
            (
                "SELECT Id, (SELECT Id FROM OrderItems WHERE Id = 'a' OR Id = 'b') FROM Order",
                "OR",
            ),
            (
                "SELECT Id FROM Order WHERE Id IN (SELECT OrderId FROM OrderItem)",
                "semi-joins",
            ),
            ("SELECT Id FROM Order WHERE Id NOT IN ('a')", "NOT IN"),
            ("SELECT Id FROM Order WHERE NOT Status = 'Draft'", "NOT"),
            ("SELECT Id FROM Account WHERE Name LIKE 'Acme%'", "LIKE"),
            (
                "SELECT Id FROM Order WHERE (Status = 'Draft')",
                "parenthesised",
            ),
            ("SELECT COUNT(Id) FROM Order", "functions (COUNT"),
            (
                "SELECT FIELDS(ALL) FROM Order LIMIT 200",
                "functions (FIELDS",
            ),
            (
                "SELECT Id, toLabel(Status) FROM Order",
                "functions (toLabel",
            ),
            (
                "SELECT Id FROM Order WHERE CALENDAR_YEAR(CreatedDate) = 2024",
                "functions",
            ),
            (
                "SELECT Id FROM Order WHERE CreatedDate = TODAY",
                "date literals",
            ),
            (
                "SELECT Id FROM Order WHERE CreatedDate > LAST_N_DAYS:30",
                "date literals",
            ),
            ("SELECT Status FROM Order GROUP BY Status", "GROUP BY"),
            ("SELECT Id FROM Order WITH SECURITY_ENFORCED", "WITH"),
            ("SELECT Id FROM Order USING SCOPE mine", "USING SCOPE"),
            ("SELECT Id FROM Order LIMIT 5 OFFSET 10", "OFFSET"),
            ("SELECT Id FROM Order LIMIT 1 FOR UPDATE", "FOR"),
            ("SELECT Id FROM Order ORDER BY Name NULLS LAST", "NULLS"),
            ("SELECT Id FROM Order ORDER BY Name, Id", "several fields"),
            (
                "SELECT TYPEOF Owner WHEN User THEN Name END FROM Order",
                "TYPEOF",
            ),
            (
                "SELECT Id, (SELECT Id FROM OrderItems GROUP BY Id) FROM Order",
                "GROUP BY",
            ),
        ] {
            let err = parse(valid).unwrap_err();
            assert!(
                matches!(&err, SoqlError::Unsupported(c) if c.contains(construct)),
                "{valid}: {err:?}"
            );
            assert_eq!(err.error_code(), "NOT_IMPLEMENTED");
            assert!(err.to_string().ends_with(" is not emulated"), "{err}");
        }
        let (org, _, _) = sample_org();
        let err = query(&org, "SELECT Id, Account.Name FROM Order").unwrap_err();
        assert_eq!(
            err,
            SoqlError::Unsupported("parent relationship fields (Account.Name)".into())
        );
        let err = query(&org, "SELECT Id FROM Order WHERE Nope.Name = 'x'").unwrap_err();
        assert_eq!(err.error_code(), "INVALID_FIELD");
    }

    #[test]
    fn parses_relationship_subqueries() {
        let q = parse("SELECT Id, Status, TotalAmount, (SELECT Id, Product2Id, Quantity, UnitPrice, TotalPrice FROM OrderItems) FROM Order WHERE Id = '801Hs00000000AbCDE'").unwrap();
        assert_eq!(q.fields(), ["Id", "Status", "TotalAmount"]);
        assert_eq!(q.object, "Order");
        assert_eq!(q.conditions.len(), 1);
        let SelectItem::Subquery(sub) = &q.select[3] else {
            panic!("{:?}", q.select[3]);
        };
        assert_eq!(sub.object, "OrderItems");
        assert_eq!(
            sub.fields(),
            ["Id", "Product2Id", "Quantity", "UnitPrice", "TotalPrice"]
        );
        assert!(sub.conditions.is_empty());
        assert_eq!((&sub.order_by, sub.limit), (&None, None));

        let q = parse("select Id, Name, (select Id from OrderItems where Quantity >= 2 and Description != null order by Id desc limit 10), AccountId from Order where AccountId = '001Hs00000000AbCDE' limit 3").unwrap();
        assert_eq!(q.fields(), ["Id", "Name", "AccountId"]);
        assert_eq!(q.limit, Some(3));
        assert_eq!(q.conditions[0].field, "AccountId");
        let SelectItem::Subquery(sub) = &q.select[2] else {
            panic!("{:?}", q.select[2]);
        };
        assert_eq!(sub.fields(), ["Id"]);
        assert_eq!(sub.conditions.len(), 2);
        assert_eq!(sub.conditions[0].op, Op::Ge);
        assert_eq!(sub.conditions[0].values, [Literal::Num(2.0)]);
        assert_eq!(sub.conditions[1].values, [Literal::Null]);
        assert_eq!(sub.order_by, Some(("Id".into(), true)));
        assert_eq!(sub.limit, Some(10));

        let q = parse("SELECT (SELECT Id FROM OrderItems) FROM Order").unwrap();
        assert!(q.fields().is_empty());
    }

    #[test]
    fn rejects_nested_subqueries() {
        let err =
            parse("SELECT Id, (SELECT Id, (SELECT Id FROM OrderItems) FROM OrderItems) FROM Order")
                .unwrap_err();
        assert!(matches!(err, SoqlError::Unsupported(_)), "{err:?}");
        assert_eq!(err.error_code(), "NOT_IMPLEMENTED");
        // A nested query built by hand is refused by the evaluator too.
        let (org, _, _) = sample_org();
        let inner = parse("SELECT Id, (SELECT Id FROM OrderItems) FROM OrderItems").unwrap();
        let mut q = parse("SELECT Id FROM Order").unwrap();
        q.select.push(SelectItem::Subquery(inner));
        assert!(matches!(run(&org, &q), Err(SoqlError::Unsupported(_))));
    }

    fn actor(org: &Org) -> Actor {
        Actor {
            user_id: org.user_id.to_string(),
            origin: "com/salesforce/api/rest/60.0;client=test".into(),
        }
    }

    fn obj(v: Json) -> Map<String, Json> {
        v.as_object().unwrap().clone()
    }

    /// An account with two orders: the first with two items (and a third, deleted), the
    /// second with none.
    fn sample_org() -> (Org, [SfId; 2], [SfId; 2]) {
        let mut org = Org::new(7);
        let a = actor(&org);
        let (acct, _) = org
            .create("Account", &obj(json!({"Name": "Acme"})), &a, 1_000)
            .unwrap();
        let order = |org: &mut Org| {
            org.create("Order", &obj(json!({"AccountId": acct.as_str(), "EffectiveDate": "2024-03-01", "Status": "Draft", "BillingCity": "Paris"})), &a, 2_000)
                .unwrap()
                .0
        };
        let with_items = order(&mut org);
        let empty = order(&mut org);
        let product = crate::ids::generate("01t", "Hs", 1);
        let item = |org: &mut Org, qty: f64, price: f64| {
            org.create(
                "OrderItem",
                &obj(json!({"OrderId": with_items.as_str(), "Product2Id": product.as_str(), "Quantity": qty, "UnitPrice": price})),
                &a,
                3_000,
            )
            .unwrap()
            .0
        };
        let first = item(&mut org, 2.0, 10.5);
        let deleted = item(&mut org, 1.0, 99.0);
        let second = item(&mut org, 3.0, 1.0);
        org.delete("OrderItem", &deleted, &a, 4_000).unwrap();
        (org, [with_items, empty], [first, second])
    }

    fn query(org: &Org, q: &str) -> Result<Vec<Json>, SoqlError> {
        Ok(run(org, &parse(q)?)?.to_json(org, "60.0"))
    }

    #[test]
    fn in_lists_match_15_and_18_character_ids_and_text_in_any_case() {
        let (org, [with_items, empty], [first, second]) = sample_org();
        let ids = |rows: Vec<Json>| -> Vec<String> {
            rows.iter()
                .map(|r| r["Id"].as_str().unwrap().to_owned())
                .collect()
        };
        // Ids: 15-character literals match, in any order, with unknown ids and duplicates.
        let short = &with_items.as_str()[..15];
        let q = format!(
            "SELECT Id FROM Order WHERE Id IN ('{empty}', '001000000000000AAA', '{short}', '{empty}')"
        );
        assert_eq!(
            ids(query(&org, &q).unwrap()),
            [with_items.to_string(), empty.to_string()]
        );
        // A reference field, on a candidate set not chosen by Id.
        let q = format!(
            "SELECT Id FROM OrderItem WHERE OrderId IN ('{}')",
            &with_items.as_str()[..15]
        );
        assert_eq!(
            ids(query(&org, &q).unwrap()),
            [first.to_string(), second.to_string()]
        );
        // Text compares without regard to case, in an IN list as with `=`.
        let q = "SELECT Id FROM Order WHERE Status IN ('activated', 'DRAFT') AND BillingCity IN ('paris')";
        assert_eq!(
            ids(query(&org, q).unwrap()),
            [with_items.to_string(), empty.to_string()]
        );
        let q = "SELECT Id FROM Order WHERE Status IN ('Activated')";
        assert!(query(&org, q).unwrap().is_empty());
        let q = "SELECT Id FROM Order WHERE Status = 'draft' AND Id IN ('{empty}')"
            .replace("{empty}", empty.as_str());
        assert_eq!(ids(query(&org, &q).unwrap()), [empty.to_string()]);
    }

    #[test]
    fn subquery_returns_each_order_with_its_live_items() {
        let (org, [order, _], [first, second]) = sample_org();
        let rows = query(&org, &format!("SELECT Id, Status, TotalAmount, (SELECT Id, Product2Id, Quantity, UnitPrice, TotalPrice FROM OrderItems) FROM Order WHERE Id = '{order}'")).unwrap();
        assert_eq!(rows.len(), 1);
        let row = rows[0].as_object().unwrap();
        let keys: Vec<&str> = row.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["attributes", "Id", "Status", "TotalAmount", "OrderItems"]
        );
        assert_eq!(row["Id"], json!(order.as_str()));
        assert_eq!(row["TotalAmount"], json!(24.0));
        let items = &row["OrderItems"];
        assert_eq!(items["totalSize"], json!(2));
        assert_eq!(items["done"], json!(true));
        let records = items["records"].as_array().unwrap();
        assert_eq!(records.len(), 2);
        let first_json = records[0].as_object().unwrap();
        let keys: Vec<&str> = first_json.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "attributes",
                "Id",
                "Product2Id",
                "Quantity",
                "UnitPrice",
                "TotalPrice"
            ]
        );
        assert_eq!(
            first_json["attributes"],
            json!({"type": "OrderItem", "url": format!("/services/data/60.0/sobjects/OrderItem/{first}")})
        );
        assert_eq!(first_json["Quantity"], json!(2.0));
        assert_eq!(first_json["TotalPrice"], json!(21.0));
        assert_eq!(records[1]["Id"], json!(second.as_str()));
        // Children render exactly as the same record does at the top level.
        let top = query(&org, &format!("SELECT Id, Product2Id, Quantity, UnitPrice, TotalPrice FROM OrderItem WHERE Id = '{first}'")).unwrap();
        assert_eq!(records[0], top[0]);
    }

    #[test]
    fn subquery_is_null_without_children_and_honours_its_own_clauses() {
        let (org, [with_items, empty], [first, second]) = sample_org();
        let acct = org
            .get(&with_items)
            .unwrap()
            .text("AccountId")
            .unwrap()
            .to_owned();
        let rows = query(&org, &format!("SELECT Id, BillingAddress, (SELECT Id FROM OrderItems ORDER BY Id DESC LIMIT 10) FROM Order WHERE AccountId = '{acct}'")).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["Id"], json!(with_items.as_str()));
        assert_eq!(rows[0]["BillingAddress"]["city"], json!("Paris"));
        let ids: Vec<&Json> = rows[0]["OrderItems"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["Id"])
            .collect();
        assert_eq!(ids, [&json!(second.as_str()), &json!(first.as_str())]);
        assert_eq!(rows[1]["Id"], json!(empty.as_str()));
        assert!(rows[1].as_object().unwrap().contains_key("OrderItems"));
        assert_eq!(rows[1]["OrderItems"], Json::Null);

        let rows = query(&org, &format!("SELECT Id, (SELECT Id FROM orderitems LIMIT 1) FROM Order WHERE Id = '{with_items}'")).unwrap();
        assert_eq!(rows[0]["OrderItems"]["totalSize"], json!(1));
        assert_eq!(
            rows[0]["OrderItems"]["records"][0]["Id"],
            json!(first.as_str())
        );
        let rows = query(&org, &format!("SELECT Id, (SELECT Id, Quantity FROM OrderItems WHERE Quantity > 2) FROM Order WHERE Id = '{with_items}'")).unwrap();
        assert_eq!(rows[0]["OrderItems"]["totalSize"], json!(1));
        assert_eq!(
            rows[0]["OrderItems"]["records"][0]["Id"],
            json!(second.as_str())
        );
        let rows = query(&org, &format!("SELECT Id, (SELECT Id FROM OrderItems WHERE Quantity > 5) FROM Order WHERE Id = '{with_items}'")).unwrap();
        assert_eq!(rows[0]["OrderItems"], Json::Null);
    }

    #[test]
    fn subquery_errors_mirror_salesforce() {
        let (org, _, _) = sample_org();
        let err = query(&org, "SELECT Id, (SELECT Id FROM Foo) FROM Order").unwrap_err();
        assert_eq!(err, SoqlError::UnknownRelationship("Foo".into()));
        assert_eq!(err.error_code(), "INVALID_TYPE");
        assert!(
            err.to_string()
                .starts_with("Didn't understand relationship 'Foo' in FROM part of query call."),
            "{err}"
        );
        // The relationship belongs to Order only.
        let err = query(&org, "SELECT Id, (SELECT Id FROM OrderItems) FROM Account").unwrap_err();
        assert_eq!(err.error_code(), "INVALID_TYPE");
        let err = query(&org, "SELECT Id, (SELECT Nope FROM OrderItems) FROM Order").unwrap_err();
        assert_eq!(
            err,
            SoqlError::InvalidField {
                field: "Nope".into(),
                object: "OrderItem".into()
            }
        );
        let err = query(
            &org,
            "SELECT Id, (SELECT Id FROM OrderItems ORDER BY Nope) FROM Order",
        )
        .unwrap_err();
        assert_eq!(err.error_code(), "INVALID_FIELD");
        let err = query(
            &org,
            "SELECT Id, (SELECT Id FROM OrderItems), (SELECT Id FROM orderitems) FROM Order",
        )
        .unwrap_err();
        assert_eq!(err.error_code(), "MALFORMED_QUERY");
    }

    #[test]
    fn queries_without_subqueries_render_as_before() {
        let (org, [order, _], _) = sample_org();
        let rows = query(
            &org,
            &format!("SELECT Id, Status, BillingCity FROM Order WHERE Id = '{order}'"),
        )
        .unwrap();
        let record = org.get(&order).unwrap();
        let fields = [
            "Id".to_owned(),
            "Status".to_owned(),
            "BillingCity".to_owned(),
        ];
        assert_eq!(rows, [org.to_json(record, "60.0", Some(&fields))]);
    }
}
