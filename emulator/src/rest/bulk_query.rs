//! Bulk API 2.0 query jobs: `/services/data/vNN.N/jobs/query`.
//!
//! `POST jobs/query` with `{"operation": "query", "query": SOQL}` (and optionally
//! `columnDelimiter`, `lineEnding`, `contentType`) creates a job: 200 with its job info, state
//! `UploadComplete`. `GET jobs/query/{id}` reads it: `InProgress` from the second look until it
//! has run (a moment after creation, or as long as a `bulk-stall` fault says), then
//! `JobComplete` with `numberRecordsProcessed`, or `Failed` with an `errorMessage` (the
//! `bulk-fail` fault), or `Aborted` (`PATCH jobs/query/{id}` with `{"state": "Aborted"}`). A
//! job moves along when it is looked at, so a client has to poll, as with Salesforce.
//! `GET jobs/query` lists the jobs; `DELETE jobs/query/{id}` removes one that is not
//! `InProgress`. `GET jobs/query/{id}/results[?maxRecords=N&locator=L]` answers CSV as
//! Salesforce writes it (a header row, every value double-quoted, an empty field for null) with
//! the `Sforce-Locator` header naming the next page (the literal `null` on the last) and
//! `Sforce-NumberOfRecords`.
//!
//! The results are a snapshot of the org taken when the job completes: the query runs then, and
//! its rows are rendered once into one compact CSV buffer with an end offset per row. A page is a
//! slice of that buffer behind the header, so a large result (100k orders and more) is held once,
//! with no per-row allocation, however many pages are read, and later changes to the org do not
//! show in it.
//!
//! What Bulk API 2.0 refuses fails at creation with a 400, as there: aggregates (`count()`,
//! `COUNT(Id)`), `GROUP BY`, `OFFSET`, `TYPEOF`, parent-to-child subqueries (`INVALIDJOB`), and
//! compound address fields (`API_ERROR`, "Selecting compound data not supported in Bulk
//! Query"); so does SOQL that is not valid. SOQL that Bulk accepts but the emulator's SOQL
//! engine does not answer (`OR`, parent fields such as `Account.Name`, …) is a 501
//! `NOT_IMPLEMENTED`, as is `queryAll`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};

use super::{ApiError, AppState, bearer, body_object, check_version};
use crate::faults::BulkFault;
use crate::model::FieldType;
use crate::org::{Org, format_datetime, now_ms, value_to_json};
use crate::soql;

/// How long a job runs before it completes, unless a fault stalls it.
const RUN_TIME: Duration = Duration::from_millis(50);

/// Rows per results page when the client does not say.
const DEFAULT_PAGE: usize = 50_000;

/// The most rows a results page may hold.
const MAX_PAGE: usize = 1_000_000;

/// The column delimiters Bulk API 2.0 offers, by name.
const DELIMITERS: [(&str, u8); 6] = [
    ("COMMA", b','),
    ("TAB", b'\t'),
    ("PIPE", b'|'),
    ("SEMICOLON", b';'),
    ("CARET", b'^'),
    ("BACKQUOTE", b'`'),
];

/// Where a query job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    fn name(self) -> &'static str {
        match self {
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    fn is_final(self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

/// How a job writes its CSV: the column delimiter (by name and byte) and the line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CsvFormat {
    delimiter: (&'static str, u8),
    crlf: bool,
}

impl CsvFormat {
    fn line_ending(self) -> &'static str {
        if self.crlf { "\r\n" } else { "\n" }
    }
}

/// A completed job's results: the header line, then every row's line in one buffer, with the
/// offset where each row ends.
#[derive(Debug)]
struct Snapshot {
    header: Bytes,
    rows: Bytes,
    ends: Vec<usize>,
}

impl Snapshot {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where row `i` starts in `rows` (`len()` gives the end of the buffer).
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            i => self.ends[i - 1],
        }
    }

    /// The header and rows `from..to`, as one CSV body.
    fn page(&self, from: usize, to: usize) -> Bytes {
        let rows = self.rows.slice(self.start(from)..self.start(to));
        let mut body = BytesMut::with_capacity(self.header.len() + rows.len());
        body.extend_from_slice(&self.header);
        body.extend_from_slice(&rows);
        body.freeze()
    }
}

/// Runs the job's query over the org as it is now and renders the rows.
fn snapshot(
    org: &Org,
    query: &soql::Query,
    format: CsvFormat,
) -> Result<Snapshot, soql::SoqlError> {
    let result = soql::run(org, query)?;
    let def = org
        .def(&query.object)
        .ok_or_else(|| soql::SoqlError::InvalidType(query.object.clone()))?;
    let columns: Vec<(&str, FieldType)> = result
        .fields()
        .iter()
        .map(|f| {
            let ftype = def.flat_field(f).map_or(FieldType::Text, |(_, t)| t);
            (f.as_str(), ftype)
        })
        .collect();
    let (_, delimiter) = format.delimiter;
    let eol = format.line_ending();
    let mut header = BytesMut::new();
    for (i, (name, _)) in columns.iter().enumerate() {
        if i > 0 {
            header.extend_from_slice(&[delimiter]);
        }
        push_quoted(&mut header, name);
    }
    header.extend_from_slice(eol.as_bytes());
    let mut rows = BytesMut::with_capacity(result.rows.len() * (columns.len() * 12 + 2));
    let mut ends = Vec::with_capacity(result.rows.len());
    for row in &result.rows {
        for (i, (name, ftype)) in columns.iter().enumerate() {
            if i > 0 {
                rows.extend_from_slice(&[delimiter]);
            }
            push_cell(&mut rows, value_to_json(*ftype, row.record.get(name)));
        }
        rows.extend_from_slice(eol.as_bytes());
        ends.push(rows.len());
    }
    Ok(Snapshot {
        header: header.freeze(),
        rows: rows.freeze(),
        ends,
    })
}

fn push_quoted(out: &mut BytesMut, s: &str) {
    out.extend_from_slice(b"\"");
    for (i, part) in s.split('"').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\"\"");
        }
        out.extend_from_slice(part.as_bytes());
    }
    out.extend_from_slice(b"\"");
}

/// One CSV field: the value double-quoted, null as nothing.
fn push_cell(out: &mut BytesMut, v: Value) {
    match v {
        Value::Null => {}
        Value::String(s) => push_quoted(out, &s),
        other => push_quoted(out, &other.to_string()),
    }
}

/// One query job.
#[derive(Debug)]
pub(crate) struct BulkJob {
    id: String,
    object: String,
    query: soql::Query,
    api_version: String,
    created_by: String,
    created_ms: i64,
    modified_ms: i64,
    state: JobState,
    /// When it completes (or fails), unless aborted first; never, for a stall without end.
    done_at: Option<Instant>,
    fail: bool,
    polled: bool,
    format: CsvFormat,
    error: Option<String>,
    results: Option<Arc<Snapshot>>,
}

/// The emulator's query jobs, by id.
pub(crate) type BulkJobs = std::sync::Mutex<BTreeMap<String, BulkJob>>;

/// Which of Salesforce's job info shapes to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// The answer to `POST jobs/query`.
    Created,
    /// An entry of `GET jobs/query`.
    Listed,
    /// `GET jobs/query/{id}`.
    Full,
}

impl BulkJob {
    fn info(&self, view: View) -> Value {
        let mut v = json!({
            "id": self.id,
            "operation": "query",
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": format_datetime(self.created_ms),
            "systemModstamp": format_datetime(self.modified_ms),
            "state": self.state.name(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version.trim_start_matches('v').parse::<f64>().unwrap_or(60.0),
        });
        if view != View::Created {
            v["jobType"] = json!("V2Query");
        }
        v["lineEnding"] = json!(if self.format.crlf { "CRLF" } else { "LF" });
        v["columnDelimiter"] = json!(self.format.delimiter.0);
        if view == View::Full {
            v["numberRecordsProcessed"] = json!(self.results.as_ref().map_or(0, |r| r.len()));
            v["retries"] = json!(0);
            v["totalProcessingTime"] = json!(if self.state.is_final() {
                (self.modified_ms - self.created_ms).max(0)
            } else {
                0
            });
            if let Some(e) = &self.error {
                v["errorMessage"] = json!(e);
            }
        }
        v
    }
}

fn invalid_job(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALIDJOB", message)
}

fn invalid_state(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALIDJOBSTATE", message)
}

fn job_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

/// A text property of a request body, if given.
fn text<'a>(
    body: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid_job(format!(
            "InvalidJob : {key} must be a string, got {other}"
        ))),
    }
}

/// The error for SOQL the emulator's engine does not answer: a 400 for what Bulk API 2.0
/// refuses too, a 501 for what Bulk would run.
fn unsupported(construct: &str) -> ApiError {
    let refused_by_bulk = ["GROUP BY", "OFFSET", "TYPEOF"].contains(&construct)
        || [
            "COUNT(",
            "COUNT_DISTINCT(",
            "SUM(",
            "AVG(",
            "MIN(",
            "MAX(",
            "FIELDS(",
        ]
        .iter()
        .any(|f| {
            construct
                .to_ascii_uppercase()
                .starts_with(&format!("FUNCTIONS ({f}"))
        });
    if refused_by_bulk {
        invalid_job(format!(
            "InvalidJob : {construct} is not supported by Bulk API 2.0 query"
        ))
    } else {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!("Bulk API 2.0 query with SOQL {construct} is not emulated"),
        )
    }
}

fn soql_error(e: soql::SoqlError) -> ApiError {
    match e {
        soql::SoqlError::Unsupported(construct) => unsupported(&construct),
        other => invalid_job(format!("InvalidJob : {other}")),
    }
}

/// `POST …/jobs/query`.
pub(super) async fn create(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let body = body_object(&body)?;
    match text(&body, "operation")? {
        Some("query") => {}
        Some("queryAll") => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED",
                "Bulk API 2.0 queryAll (deleted and archived records) is not emulated",
            ));
        }
        _ => {
            return Err(invalid_job(
                "InvalidJob : operation must be query or queryAll",
            ));
        }
    }
    if text(&body, "contentType")?.is_some_and(|c| c != "CSV") {
        return Err(invalid_job(
            "InvalidJob : contentType must be CSV, the only format of query jobs",
        ));
    }
    let delimiter = match text(&body, "columnDelimiter")? {
        None => DELIMITERS[0],
        Some(name) => *DELIMITERS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| {
                invalid_job(format!(
                    "InvalidJob : columnDelimiter must be one of COMMA, TAB, PIPE, SEMICOLON, CARET or BACKQUOTE, got {name}"
                ))
            })?,
    };
    let crlf = match text(&body, "lineEnding")? {
        None | Some("LF") => false,
        Some("CRLF") => true,
        Some(other) => {
            return Err(invalid_job(format!(
                "InvalidJob : lineEnding must be LF or CRLF, got {other}"
            )));
        }
    };
    let text = text(&body, "query")?
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| invalid_job("InvalidJob : query is required"))?;
    let query = soql::parse(text).map_err(soql_error)?;
    if query.count {
        return Err(invalid_job(
            "InvalidJob : Aggregate queries are not supported by Bulk API 2.0: COUNT()",
        ));
    }
    if query
        .select
        .iter()
        .any(|s| matches!(s, soql::SelectItem::Subquery(_)))
    {
        return Err(invalid_job(
            "InvalidJob : Parent-to-child relationship queries are not supported by Bulk API 2.0",
        ));
    }
    let (id, object, created_by) = {
        let world = shared.world.lock().expect("world lock");
        // The object and fields are checked now, as Salesforce checks them at creation.
        let fields = soql::check(&world.org, &query).map_err(soql_error)?;
        let def = world.org.def(&query.object).ok_or_else(|| {
            invalid_job(format!(
                "InvalidJob : Unable to find object: {}",
                query.object
            ))
        })?;
        if fields.iter().any(|f| {
            def.flat_field(f)
                .is_some_and(|(_, t)| t == FieldType::Address)
        }) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "API_ERROR",
                "Selecting compound data not supported in Bulk Query",
            ));
        }
        (
            crate::ids::generate("750", "Hs", shared.next_cursor()).to_string(),
            def.name.clone(),
            world.org.user_id.to_string(),
        )
    };
    let now = Instant::now();
    let (done_at, fail) = match shared.faults.take_bulk() {
        Some(BulkFault::Fail) => (now.checked_add(RUN_TIME), true),
        Some(BulkFault::Stall(Some(d))) => (now.checked_add(d), false),
        Some(BulkFault::Stall(None)) => (None, false),
        None => (now.checked_add(RUN_TIME), false),
    };
    let now = now_ms();
    let job = BulkJob {
        id: id.clone(),
        object,
        query,
        api_version: version,
        created_by,
        created_ms: now,
        modified_ms: now,
        state: JobState::UploadComplete,
        done_at,
        fail,
        polled: false,
        format: CsvFormat { delimiter, crlf },
        error: None,
        results: None,
    };
    let info = job.info(View::Created);
    shared.bulk_jobs.lock().expect("bulk lock").insert(id, job);
    Ok(Json(info).into_response())
}

/// Moves a job along: `InProgress` from its second look on, then complete (with its snapshot)
/// or failed when its time has come.
fn advance(shared: &crate::Shared, job: &mut BulkJob) {
    if job.state.is_final() {
        return;
    }
    if job.done_at.is_none_or(|t| Instant::now() < t) {
        if job.polled && job.state != JobState::InProgress {
            job.state = JobState::InProgress;
            job.modified_ms = now_ms();
        }
        job.polled = true;
        return;
    }
    job.modified_ms = now_ms();
    if job.fail {
        job.state = JobState::Failed;
        job.error = Some("InternalServerError : the query job failed (bulk-fail fault)".into());
        return;
    }
    let world = shared.world.lock().expect("world lock");
    match snapshot(&world.org, &job.query, job.format) {
        Ok(results) => {
            job.results = Some(Arc::new(results));
            job.state = JobState::JobComplete;
        }
        Err(e) => {
            // The org changed under the job (say, a field it reads was removed).
            job.state = JobState::Failed;
            job.error = Some(format!("InvalidQuery : {e}"));
        }
    }
}

fn with_job<T>(
    shared: &crate::Shared,
    id: &str,
    f: impl FnOnce(&mut BulkJob) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let mut jobs = shared.bulk_jobs.lock().expect("bulk lock");
    let job = jobs.get_mut(id).ok_or_else(job_not_found)?;
    advance(shared, job);
    f(job)
}

/// `GET …/jobs/query/{id}`.
pub(super) async fn status(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    with_job(&shared, &id, |job| {
        Ok(Json(job.info(View::Full)).into_response())
    })
}

/// `PATCH …/jobs/query/{id}` with `{"state": "Aborted"}`.
pub(super) async fn abort(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let body = body_object(&body)?;
    if text(&body, "state")? != Some("Aborted") {
        return Err(invalid_state(
            "InvalidJobState : a query job's state can only be set to Aborted",
        ));
    }
    with_job(&shared, &id, |job| {
        if job.state.is_final() {
            return Err(invalid_state(format!(
                "InvalidJobState : Job {} is already {}",
                job.id,
                job.state.name()
            )));
        }
        job.state = JobState::Aborted;
        job.modified_ms = now_ms();
        Ok(Json(job.info(View::Full)).into_response())
    })
}

/// `DELETE …/jobs/query/{id}`: a job in any state but `InProgress`.
pub(super) async fn delete(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let mut jobs = shared.bulk_jobs.lock().expect("bulk lock");
    let job = jobs.get_mut(&id).ok_or_else(job_not_found)?;
    advance(&shared, job);
    if job.state == JobState::InProgress {
        return Err(invalid_state(format!(
            "InvalidJobState : Job {id} is InProgress: abort it before deleting it"
        )));
    }
    jobs.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET …/jobs/query`.
pub(super) async fn list(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let mut jobs = shared.bulk_jobs.lock().expect("bulk lock");
    let records: Vec<Value> = jobs
        .values_mut()
        .map(|job| {
            advance(&shared, job);
            job.info(View::Listed)
        })
        .collect();
    Ok(Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response())
}

/// `GET …/jobs/query/{id}/results`.
pub(super) async fn results(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, id)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    // `maxRecords` and `locator`, the first of each; read by hand, so that no query string is
    // refused otherwise than Salesforce refuses it.
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (max_records, locator) = (param("maxRecords"), param("locator"));
    let max = match max_records {
        None => DEFAULT_PAGE,
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=MAX_PAGE).contains(m))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALIDREQUEST",
                    format!("maxRecords must be a whole number from 1 to {MAX_PAGE}, got '{m}'"),
                )
            })?,
    };
    let bad_locator = |l: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALIDLOCATOR",
            format!("Invalid locator: {l}"),
        )
    };
    let offset = match locator {
        None | Some("") => 0,
        Some(l) => decode_locator(l).ok_or_else(|| bad_locator(l))?,
    };
    let snapshot = with_job(&shared, &id, |job| match (&job.results, job.state) {
        (Some(r), JobState::JobComplete) => Ok(r.clone()),
        _ => Err(invalid_state(format!(
            "InvalidJobState : Job {} is {}: results are available once it is JobComplete",
            job.id,
            job.state.name()
        ))),
    })?;
    if offset > snapshot.len() {
        return Err(bad_locator(locator.unwrap_or_default()));
    }
    let end = offset.saturating_add(max).min(snapshot.len());
    let locator = if end < snapshot.len() {
        encode_locator(end)
    } else {
        "null".to_owned()
    };
    let mut response = (StatusCode::OK, snapshot.page(offset, end)).into_response();
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv"),
    );
    if let Ok(v) = HeaderValue::from_str(&locator) {
        h.insert("Sforce-Locator", v);
    }
    h.insert("Sforce-NumberOfRecords", HeaderValue::from(end - offset));
    Ok(response)
}

/// An opaque locator for the row at `offset`: like Salesforce's, base64 without padding.
fn encode_locator(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(offset.to_string())
}

fn decode_locator(l: &str) -> Option<usize> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(l)
        .ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(values: &[Value]) -> String {
        let mut out = BytesMut::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(b",");
            }
            push_cell(&mut out, v.clone());
        }
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn csv_values_are_quoted_and_null_is_empty() {
        let line = cells(&[
            json!("a\"b,c"),
            Value::Null,
            json!(12.5),
            json!(true),
            json!("two\nlines"),
            json!("\"\""),
        ]);
        assert_eq!(
            line,
            "\"a\"\"b,c\",,\"12.5\",\"true\",\"two\nlines\",\"\"\"\"\"\""
        );
    }

    #[test]
    fn locators_round_trip_and_garbage_is_refused() {
        assert_eq!(encode_locator(10_000), "MTAwMDA");
        for n in [0, 1, 99, 10_000, usize::MAX] {
            assert_eq!(decode_locator(&encode_locator(n)), Some(n));
        }
        for bad in ["zz", "!!", "", "LTE", "MTAwMDA=", "YWJj"] {
            assert_eq!(decode_locator(bad), None, "{bad}");
        }
    }

    #[test]
    fn pages_are_cut_at_row_ends() {
        let s = Snapshot {
            header: Bytes::from_static(b"\"Id\"\n"),
            rows: Bytes::from_static(b"\"a\"\n\"bb\"\n\"ccc\"\n"),
            ends: vec![4, 9, 15],
        };
        assert_eq!(&s.page(0, 3)[..], b"\"Id\"\n\"a\"\n\"bb\"\n\"ccc\"\n");
        assert_eq!(&s.page(1, 2)[..], b"\"Id\"\n\"bb\"\n");
        assert_eq!(&s.page(3, 3)[..], b"\"Id\"\n");
    }

    #[test]
    fn bulk_refuses_what_it_refuses_and_the_rest_is_not_emulated() {
        for refused in [
            "GROUP BY",
            "OFFSET",
            "TYPEOF",
            "functions (COUNT(…))",
            "functions (fields(…))",
        ] {
            assert_eq!(
                unsupported(refused).status,
                StatusCode::BAD_REQUEST,
                "{refused}"
            );
        }
        for other in [
            "OR",
            "parent relationship fields (Account.Name)",
            "functions (toLabel(…))",
        ] {
            assert_eq!(
                unsupported(other).status,
                StatusCode::NOT_IMPLEMENTED,
                "{other}"
            );
        }
    }
}
