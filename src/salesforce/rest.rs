//! The Salesforce REST API: queries, record reads and updates, with the current session.
//!
//! A request rejected for its session (401) logs in again (sharing the login with every other
//! caller) and is retried once. Errors say whether retrying later can help: a 5xx, a transport
//! failure or the org's exhausted daily API request limit can, a malformed query cannot. [`RestLookup`] backs the rules' lookup seam with SOQL,
//! reading many orders in one query.

use std::future::Future;
use std::sync::Arc;

use secrecy::ExposeSecret;
use serde::de::{DeserializeOwned, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;

use crate::config::{ConfigError, Env};
use crate::rules::{Facts, OrderFacts, RulesConfig};
use crate::salesforce::auth::{AuthError, Authenticator};
use crate::sfid::SfId;

/// Ids per `Id IN (…)` query: keeps URLs well under Salesforce's 16 KB limit.
const IDS_PER_QUERY: usize = 100;

/// A REST call that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// Logging in failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Salesforce answered with an error.
    #[error("Salesforce REST {status}: {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// `errorCode`.
        code: String,
        /// `message`.
        message: String,
    },
    /// The org's daily API request limit is used up (403 `REQUEST_LIMIT_EXCEEDED`): every REST
    /// call fails until an admin raises the limit or the 24-hour window frees requests.
    #[error(
        "Salesforce REST 403: REQUEST_LIMIT_EXCEEDED: the org's daily API request limit is exhausted ({message}); backing off until requests are free again"
    )]
    RequestLimit {
        /// `message`.
        message: String,
    },
    /// The request did not complete.
    #[error("Salesforce REST request failed: {0}")]
    Transport(String),
}

impl RestError {
    /// Whether retrying later may help.
    pub fn is_retryable(&self) -> bool {
        match self {
            RestError::Auth(a) => a.is_retryable(),
            RestError::Api { status, .. } => *status >= 500 || *status == 429 || *status == 401,
            RestError::RequestLimit { .. } | RestError::Transport(_) => true,
        }
    }
}

/// `SF_API_VERSION`.
pub fn api_version(env: &Env) -> Result<String, ConfigError> {
    env.parse_or("SF_API_VERSION", "60.0".to_owned(), |s| {
        let v = s.trim_start_matches('v');
        match v.split_once('.') {
            Some((a, b))
                if !a.is_empty()
                    && a.chars().chain(b.chars()).all(|c| c.is_ascii_digit())
                    && !b.is_empty() =>
            {
                Ok(v.to_owned())
            }
            _ => Err("expected a version such as 60.0".into()),
        }
    })
}

/// A REST client bound to the current session.
pub struct SalesforceRest {
    auth: Arc<Authenticator>,
    version: String,
}

impl SalesforceRest {
    /// A client for API version `version` (e.g. `60.0`).
    pub fn new(auth: Arc<Authenticator>, version: String) -> Self {
        SalesforceRest { auth, version }
    }

    async fn send(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RestError> {
        let mut session = self.auth.session().await?;
        for attempt in 0..2 {
            let base = format!("{}/services/data/v{}", session.instance_url, self.version);
            let resp = build(self.auth.http(), &base)
                .bearer_auth(session.access_token.expose_secret())
                .send()
                .await
                .map_err(|e| RestError::Transport(e.without_url().to_string()))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                session = self.auth.refresh(session.generation).await?;
                continue;
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn error(resp: reqwest::Response) -> RestError {
        let status = resp.status().as_u16();
        let body: Json = resp.json().await.unwrap_or(Json::Null);
        match api_error(status, &body) {
            RestError::Api {
                status: 403,
                code,
                message,
            } if code == "REQUEST_LIMIT_EXCEEDED" => RestError::RequestLimit { message },
            e => e,
        }
    }

    /// Runs a SOQL query page by page: memory holds one page (at most 2,000 records), however
    /// many match.
    pub fn query_pages(&self, soql: &str) -> QueryPages<'_> {
        QueryPages {
            rest: self,
            state: PageState::First(soql.to_owned()),
        }
    }

    /// `SELECT count() FROM …`: how many records match, without reading them.
    pub async fn count(&self, soql: &str) -> Result<u64, RestError> {
        let resp = self
            .send(|http, base| http.get(format!("{base}/query")).query(&[("q", soql)]))
            .await?;
        let page: Json = self.page(resp).await?;
        Ok(page.get("totalSize").and_then(Json::as_u64).unwrap_or(0))
    }

    /// Sends a request built on the REST base URL and returns the raw answer (the Bulk API
    /// client reads headers and CSV bodies); a rejected session is logged in again once.
    pub(crate) async fn request(
        &self,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, RestError> {
        let resp = self.send(build).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(Self::error(resp).await)
        }
    }

    /// Runs a SOQL query and returns every record, following `nextRecordsUrl`, each read
    /// straight into a `T`: a JSON tree, or only what a caller needs (such as [`TextFields`]).
    pub async fn query<T: DeserializeOwned>(&self, soql: &str) -> Result<Vec<T>, RestError> {
        let resp = self
            .send(|http, base| http.get(format!("{base}/query")).query(&[("q", soql)]))
            .await?;
        let mut records = Vec::new();
        let mut page: Page<T> = self.page(resp).await?;
        loop {
            records.append(&mut page.records);
            let Some(next) = page.next_records_url else {
                return Ok(records);
            };
            let resp = self
                .send(|http, base| {
                    let root = base.split("/services/").next().unwrap_or(base);
                    http.get(format!("{root}{next}"))
                })
                .await?;
            page = self.page(resp).await?;
        }
    }

    /// Runs `select` (a `SELECT … FROM …` without `WHERE`) for these record ids, in chunks that
    /// keep the query URL short; each record is read into a `T`, as by [`SalesforceRest::query`].
    pub async fn query_by_ids<T: DeserializeOwned>(
        &self,
        select: &str,
        ids: &[SfId],
    ) -> Result<Vec<T>, RestError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let list: Vec<String> = chunk.iter().map(|id| format!("'{id}'")).collect();
            let soql = format!("{select} WHERE Id IN ({})", list.join(", "));
            out.extend(self.query(&soql).await?);
        }
        Ok(out)
    }

    async fn page<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, RestError> {
        if !resp.status().is_success() {
            return Err(Self::error(resp).await);
        }
        resp.json().await.map_err(|e| {
            RestError::Transport(format!("unexpected query response: {}", e.without_url()))
        })
    }

    /// Reads one record; `None` if it does not exist.
    pub async fn get(&self, sobject: &str, id: &SfId) -> Result<Option<Json>, RestError> {
        let resp = self
            .send(|http, base| http.get(format!("{base}/sobjects/{sobject}/{id}")))
            .await?;
        match resp.status() {
            s if s.is_success() => resp
                .json()
                .await
                .map(Some)
                .map_err(|e| RestError::Transport(e.without_url().to_string())),
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::error(resp).await),
        }
    }

    /// Updates fields of one record.
    pub async fn patch(&self, sobject: &str, id: &SfId, fields: &Json) -> Result<(), RestError> {
        let resp = self
            .send(|http, base| {
                http.patch(format!("{base}/sobjects/{sobject}/{id}"))
                    .json(fields)
            })
            .await?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Self::error(resp).await)
        }
    }
}

/// A SOQL query read page by page ([`SalesforceRest::query_pages`]).
pub struct QueryPages<'a> {
    rest: &'a SalesforceRest,
    state: PageState,
}

enum PageState {
    First(String),
    Next(String),
    Done,
}

impl QueryPages<'_> {
    /// The next page of records; `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Json>>, RestError> {
        let resp = match std::mem::replace(&mut self.state, PageState::Done) {
            PageState::First(soql) => {
                self.rest
                    .send(|http, base| http.get(format!("{base}/query")).query(&[("q", &soql)]))
                    .await?
            }
            PageState::Next(next) => {
                self.rest
                    .send(|http, base| {
                        let root = base.split("/services/").next().unwrap_or(base);
                        http.get(format!("{root}{next}"))
                    })
                    .await?
            }
            PageState::Done => return Ok(None),
        };
        let page: Page<Json> = self.rest.page(resp).await?;
        if let Some(next) = page.next_records_url {
            self.state = PageState::Next(next);
        }
        Ok(Some(page.records))
    }
}

/// The [`RestError::Api`] of an error answer: Salesforce sends a list of `{errorCode, message}`
/// (sometimes one bare object); anything else gives `UNKNOWN`.
pub fn api_error(status: u16, body: &Json) -> RestError {
    let first = body.get(0).unwrap_or(body);
    RestError::Api {
        status,
        code: first
            .get("errorCode")
            .and_then(Json::as_str)
            .unwrap_or("UNKNOWN")
            .to_owned(),
        message: first
            .get("message")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned(),
    }
}

/// Where the rules get the order facts an event does not carry.
pub trait OrderLookup: Send + Sync + 'static {
    /// The facts of these orders now (`None` for an order that does not exist).
    fn orders(&self, ids: &[SfId]) -> impl Future<Output = Result<Facts, RestError>> + Send;

    /// Says that facts about these orders read before now are out of date (an event changed
    /// their guard fields). A lookup without a cache has nothing to forget.
    fn forget(&self, ids: &[SfId]) -> impl Future<Output = ()> + Send {
        let _ = ids;
        std::future::ready(())
    }

    /// Orders modified since `since_ms` (epoch ms), for reconciliation after an overflow.
    fn modified_since(
        &self,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<(SfId, OrderFacts)>, RestError>> + Send;
}

/// Order facts over SOQL.
pub struct RestLookup {
    rest: Arc<SalesforceRest>,
    rules: Arc<RulesConfig>,
}

impl RestLookup {
    /// A lookup that reads the fields `rules` guard on.
    pub fn new(rest: Arc<SalesforceRest>, rules: Arc<RulesConfig>) -> Self {
        RestLookup { rest, rules }
    }

    fn select(&self) -> String {
        format!(
            "SELECT Id, Status, AccountId, {}, {} FROM Order",
            self.rules.activation_field, self.rules.external_id_field
        )
    }

    fn facts(&self, r: &TextFields) -> Option<(SfId, OrderFacts)> {
        Some((r.id()?, order_facts(r, &self.rules)))
    }
}

/// Reads one page of a query's answer: its records, and the `nextRecordsUrl` of the next page
/// if any.
pub fn parse_page<T: DeserializeOwned>(
    body: &[u8],
) -> Result<(Vec<T>, Option<String>), serde_json::Error> {
    let page: Page<T> = serde_json::from_slice(body)?;
    Ok((page.records, page.next_records_url))
}

/// One page of a query's answer.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    records: Vec<T>,
    #[serde(rename = "nextRecordsUrl")]
    next_records_url: Option<String>,
}

/// The `Id` of a REST record.
pub fn record_id(r: &Json) -> Option<SfId> {
    r.as_object()?.id()
}

/// A record's fields read as text, whichever form the record was read in.
pub trait RecordFields {
    /// The field's value, if it is a string.
    fn text(&self, name: &str) -> Option<&str>;

    /// The record's `Id`, if it is a valid one.
    fn id(&self) -> Option<SfId> {
        SfId::parse(self.text("Id")?).ok()
    }
}

impl RecordFields for serde_json::Map<String, Json> {
    fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Json::as_str)
    }
}

/// The string-valued fields of a REST record, read straight from the answer: nested objects
/// (its `attributes`, related records), numbers, booleans and nulls are skipped as they are
/// parsed. All a guard decides on, without a JSON tree for each record (parsing the guard
/// lookups' answers into trees was 4.5% of `sfcdc run`'s instructions).
#[derive(Debug, Clone, Default)]
pub struct TextFields(Vec<(String, String)>);

impl TextFields {
    /// The string fields of a JSON record, read as an answer's records are (nothing for anything
    /// but an object).
    pub fn from_json(record: &Json) -> TextFields {
        TextFields::deserialize(record).unwrap_or_default()
    }
}

impl RecordFields for TextFields {
    fn text(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<'de> Deserialize<'de> for TextFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TextFields, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = TextFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a record (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextFields, A::Error> {
                let mut fields = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let Text(value) = map.next_value()?;
                    // A repeated name: the last value counts, as in a JSON tree.
                    fields.retain(|(k, _)| *k != name);
                    if let Some(value) = value {
                        fields.push((name, value));
                    }
                }
                Ok(TextFields(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A field's value when it is a string; anything else is read past.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_none<E>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
                Text::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(Value)
    }
}

/// What the rules guard on, from an Order record.
pub fn order_facts(r: &impl RecordFields, rules: &RulesConfig) -> OrderFacts {
    let text = |k: &str| r.text(k).map(str::to_owned);
    OrderFacts {
        status: text("Status"),
        activation: text(&rules.activation_field),
        external_id: text(&rules.external_id_field),
        account_id: text("AccountId"),
    }
}

/// A SOQL date-time literal (UTC, whole seconds).
pub fn soql_datetime(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.format(&f).unwrap_or_default()
}

impl OrderLookup for RestLookup {
    async fn orders(&self, ids: &[SfId]) -> Result<Facts, RestError> {
        let mut facts: Facts = ids.iter().map(|id| (id.clone(), None)).collect();
        for r in self
            .rest
            .query_by_ids::<TextFields>(&self.select(), ids)
            .await?
        {
            if let Some((id, f)) = self.facts(&r) {
                facts.insert(id, Some(f));
            }
        }
        Ok(facts)
    }

    async fn modified_since(&self, since_ms: i64) -> Result<Vec<(SfId, OrderFacts)>, RestError> {
        let soql = format!(
            "{} WHERE LastModifiedDate > {} ORDER BY LastModifiedDate",
            self.select(),
            soql_datetime(since_ms)
        );
        Ok(self
            .rest
            .query::<TextFields>(&soql)
            .await?
            .iter()
            .filter_map(|r| self.facts(r))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_read_as_text_fields_keeps_the_string_fields_of_each_record() {
        let body = br#"{"totalSize": 2, "done": false, "nextRecordsUrl": "/services/data/v60.0/query/01g-2000",
            "records": [
                {"attributes": {"type": "Order", "url": "/x"}, "Id": "801000000000001AAA",
                 "Status": "Activated", "Provisioning_Status__c": null, "TotalAmount": 58.5,
                 "IsReductionOrder": false, "OrderItems": {"records": [{"Id": "802000000000001AAA"}]},
                 "Tags": ["a", "b"], "Note": "line\nbreak \u00e9", "Status": "Draft"},
                {"Id": "801000000000002AAA"}
            ]}"#;
        let (records, next) = parse_page::<TextFields>(body).unwrap();
        assert_eq!(next.as_deref(), Some("/services/data/v60.0/query/01g-2000"));
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(r.id().unwrap().as_str(), "801000000000001AAA");
        // A repeated name counts once, with its last value, as in a JSON tree.
        assert_eq!(r.text("Status"), Some("Draft"));
        assert_eq!(r.text("Note"), Some("line\nbreak \u{e9}"));
        for skipped in [
            "attributes",
            "Provisioning_Status__c",
            "TotalAmount",
            "IsReductionOrder",
            "OrderItems",
            "Tags",
        ] {
            assert_eq!(r.text(skipped), None, "{skipped}");
        }
        let tree: Json = serde_json::from_slice(body).unwrap();
        let from_tree = TextFields::from_json(&tree["records"][0]);
        for (name, value) in tree["records"][0].as_object().unwrap() {
            assert_eq!(r.text(name), value.as_str());
            assert_eq!(from_tree.text(name), value.as_str());
        }
        assert!(
            parse_page::<TextFields>(br#"{"done": true}"#)
                .unwrap()
                .0
                .is_empty()
        );
        assert!(parse_page::<TextFields>(br#"{"records": [1]}"#).is_err());
    }

    #[test]
    fn soql_datetimes_are_utc_whole_seconds() {
        assert_eq!(soql_datetime(1_709_303_151_999), "2024-03-01T14:25:51Z");
    }

    #[test]
    fn the_api_version_is_validated() {
        assert_eq!(api_version(&Env::default()).unwrap(), "60.0");
        assert_eq!(
            api_version(&Env::from_pairs([("SF_API_VERSION", "v63.0")])).unwrap(),
            "63.0"
        );
        assert_eq!(
            api_version(&Env::from_pairs([("SF_API_VERSION", "latest")]))
                .unwrap_err()
                .var,
            "SF_API_VERSION"
        );
    }
}
