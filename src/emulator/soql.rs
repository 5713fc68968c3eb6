//! The subset of SOQL the emulator answers, parsed and evaluated against the org.
//!
//! Supported: `SELECT f1, f2 FROM Object [WHERE cond [AND cond]...] [ORDER BY f [ASC|DESC]]
//! [LIMIT n]`, where a condition is `field op literal` (`=`, `!=`, `<`, `<=`, `>`, `>=`) or
//! `field IN (literal, ...)`, and a literal is a quoted string, a number, `true`/`false`/`null`,
//! a date (`2024-01-15`) or a date-time (`2024-01-15T10:00:00Z`). That covers what sfcdc sends:
//! by `Id`, by `Id IN (...)`, by `AccountId`, and by `LastModifiedDate >`. Anything else is a
//! `MALFORMED_QUERY` error rather than a silently wrong answer.

use std::cmp::Ordering;

use super::model::FieldType;
use super::org::{Org, Record, parse_date, parse_datetime};
use super::schema::FieldValue;
use crate::sfid::SfId;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Selected fields, as written.
    pub fields: Vec<String>,
    /// Object name.
    pub object: String,
    /// Conditions, all of which must hold.
    pub conditions: Vec<Condition>,
    /// Sort field and whether descending.
    pub order_by: Option<(String, bool)>,
    /// Row limit.
    pub limit: Option<usize>,
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
    /// Syntax outside the supported subset (`MALFORMED_QUERY`).
    #[error("{0}")]
    Malformed(String),
    /// `INVALID_TYPE`.
    #[error("sObject type '{0}' is not supported.")]
    InvalidType(String),
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
            SoqlError::InvalidType(_) => "INVALID_TYPE",
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
    p.expect_keyword("SELECT")?;
    let mut fields = vec![p.ident("a field name")?];
    while p.symbol(",") {
        fields.push(p.ident("a field name")?);
    }
    p.expect_keyword("FROM")?;
    let object = p.ident("an object name")?;
    let mut conditions = Vec::new();
    if p.keyword("WHERE") {
        loop {
            let field = p.ident("a field name")?;
            let (op, values) = if p.keyword("IN") {
                if !p.symbol("(") {
                    return Err(SoqlError::Malformed("expected ( after IN".into()));
                }
                let mut values = vec![p.literal()?];
                while p.symbol(",") {
                    values.push(p.literal()?);
                }
                if !p.symbol(")") {
                    return Err(SoqlError::Malformed("expected ) to close IN".into()));
                }
                (Op::In, values)
            } else {
                let op = match p.next() {
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
                (op, vec![p.literal()?])
            };
            conditions.push(Condition { field, op, values });
            if p.keyword("OR") {
                return Err(SoqlError::Malformed(
                    "OR is not supported by the emulator".into(),
                ));
            }
            if !p.keyword("AND") {
                break;
            }
        }
    }
    let mut order_by = None;
    if p.keyword("ORDER") {
        p.expect_keyword("BY")?;
        let f = p.ident("a field name")?;
        let desc = if p.keyword("DESC") {
            true
        } else {
            p.keyword("ASC");
            false
        };
        order_by = Some((f, desc));
    }
    let mut limit = None;
    if p.keyword("LIMIT") {
        match p.next() {
            Some(Token::Word(w)) => {
                limit = Some(
                    w.parse()
                        .map_err(|_| SoqlError::Malformed(format!("bad LIMIT: {w}")))?,
                )
            }
            _ => return Err(SoqlError::Malformed("expected a number after LIMIT".into())),
        }
    }
    if let Some(t) = p.peek() {
        return Err(SoqlError::Malformed(format!("unexpected token: {t:?}")));
    }
    Ok(Query {
        fields,
        object,
        conditions,
        order_by,
        limit,
    })
}

fn compare(v: &FieldValue, lit: &Literal, ftype: FieldType) -> Option<Ordering> {
    match (v, lit) {
        (FieldValue::Null, Literal::Null) => Some(Ordering::Equal),
        (FieldValue::Null, _) | (_, Literal::Null) => None,
        (FieldValue::Str(a), Literal::Str(b)) => {
            if matches!(ftype, FieldType::Id | FieldType::Reference) {
                // Ids compare in their 18-character form; 15-character literals match too.
                let b = crate::sfid::to_18(b).unwrap_or_else(|_| b.clone());
                Some(a.cmp(&b))
            } else {
                Some(a.to_lowercase().cmp(&b.to_lowercase()))
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
    match c.op {
        Op::In => c
            .values
            .iter()
            .any(|l| compare(v, l, ftype) == Some(Ordering::Equal)),
        Op::Ne => compare(v, &c.values[0], ftype) != Some(Ordering::Equal),
        op => compare(v, &c.values[0], ftype).is_some_and(|o| match op {
            Op::Eq => o == Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
            Op::Ne | Op::In => unreachable!("handled above"),
        }),
    }
}

/// Runs a query; returns the matching records (in order) and the canonical selected fields.
pub fn run<'a>(org: &'a Org, q: &Query) -> Result<(Vec<&'a Record>, Vec<String>), SoqlError> {
    let def = org
        .def(&q.object)
        .ok_or_else(|| SoqlError::InvalidType(q.object.clone()))?;
    let resolve = |f: &str| {
        def.flat_field(f).ok_or_else(|| SoqlError::InvalidField {
            field: f.to_owned(),
            object: def.name.clone(),
        })
    };
    let fields = q
        .fields
        .iter()
        .map(|f| resolve(f).map(|(name, _)| name))
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = q
        .conditions
        .iter()
        .map(|c| resolve(&c.field).map(|(name, t)| (name, t, c)))
        .collect::<Result<Vec<_>, _>>()?;
    // A condition on Id names the candidates directly; otherwise every record is a candidate.
    let by_id = conditions
        .iter()
        .find(|(f, _, c)| f == "Id" && matches!(c.op, Op::Eq | Op::In));
    let candidates: Box<dyn Iterator<Item = &Record>> = match by_id {
        Some((_, _, c)) => Box::new(
            c.values
                .iter()
                .filter_map(|l| match l {
                    Literal::Str(s) => SfId::parse(s).ok(),
                    _ => None,
                })
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter_map(|id| org.get(&id))
                .filter(|r| r.sobject == def.name)
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        None => Box::new(org.records_of(&def.name)),
    };
    let mut rows: Vec<&Record> = candidates
        .filter(|r| conditions.iter().all(|(f, t, c)| holds(r, f, *t, c)))
        .collect();
    // Unordered queries come back in id order, which is creation order here.
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some((f, desc)) = &q.order_by {
        let (name, _) = resolve(f)?;
        rows.sort_by(|a, b| {
            let o = cmp_values(a.get(&name), b.get(&name));
            if *desc { o.reverse() } else { o }
        });
    }
    if let Some(n) = q.limit {
        rows.truncate(n);
    }
    Ok((rows, fields))
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

    #[test]
    fn parses_the_shapes_sfcdc_sends() {
        let q = parse("SELECT Id, Status FROM Order WHERE Id = '801Hs00000000AbCDE'").unwrap();
        assert_eq!(q.fields, ["Id", "Status"]);
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
    fn rejects_what_it_cannot_answer() {
        for bad in [
            "",
            "SELECT FROM Order",
            "SELECT Id Order",
            "SELECT Id FROM Order WHERE Id = 'x' OR Id = 'y'",
            "SELECT Id FROM Order WHERE Id = 'unterminated",
            "SELECT Id FROM Order LIMIT x",
            "SELECT Id FROM Order WHERE Id IN 'a'",
            "SELECT Id FROM Order; DELETE",
        ] {
            assert!(matches!(parse(bad), Err(SoqlError::Malformed(_))), "{bad}");
        }
    }
}
