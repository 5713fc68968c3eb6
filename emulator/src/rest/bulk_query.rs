//! Bulk API 2.0 query jobs: `/services/data/vNN.N/jobs/query`.
//!
//! `POST jobs/query` with `{"operation": "query", "query": SOQL}` creates a job (200, its job
//! info, state `UploadComplete`); `GET jobs/query/{id}` reads it: `InProgress` until it has run
//! (a moment after creation, or as long as a `bulk-stall` fault says), then `JobComplete` with
//! `numberRecordsProcessed`, or `Failed` with an `errorMessage` (the `bulk-fail` fault), or
//! `Aborted` (`PATCH jobs/query/{id}` with `{"state": "Aborted"}`). `GET jobs/query` lists the
//! jobs; `DELETE jobs/query/{id}` removes one. `GET jobs/query/{id}/results[?maxRecords=N
//! &locator=L]` answers CSV as Salesforce writes it (a header row, every value double-quoted,
//! an empty field for null, LF line endings) with the `Sforce-Locator` header naming the next
//! page (`null` on the last) and `Sforce-NumberOfRecords`.
//!
//! The results are a snapshot of the org when the job completes: each row is rendered to its
//! CSV line once then, and pages are cut from those lines on request, so a large result is held
//! once, compactly, however many pages are read. Queries Bulk API 2.0 refuses (`count()`,
//! parent-to-child subqueries) fail at creation with 400 `INVALIDJOB`, as do unparsable ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, bearer, check_version};
use crate::faults::BulkFault;
use crate::org::{format_datetime, now_ms};
use crate::soql;

/// How long a job runs before it completes, unless a fault stalls it.
const RUN_TIME: Duration = Duration::from_millis(50);

/// Rows per results page when the client does not say.
const DEFAULT_PAGE: usize = 50_000;

/// The most rows a results page may hold.
const MAX_PAGE: usize = 1_000_000;

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

/// A completed job's results: the CSV header and one CSV line per row.
#[derive(Debug)]
struct Snapshot {
    header: String,
    lines: Vec<String>,
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
    /// When it completes (or fails), unless aborted first.
    done_at: Instant,
    fail: bool,
    polled: bool,
    error: Option<String>,
    results: Option<Arc<Snapshot>>,
}

/// The emulator's query jobs, by id.
pub(crate) type BulkJobs = std::sync::Mutex<BTreeMap<String, BulkJob>>;

impl BulkJob {
    fn info(&self) -> Value {
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
            "jobType": "V2Query",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
            "numberRecordsProcessed": self.results.as_ref().map_or(0, |r| r.lines.len()),
            "retries": 0,
            "totalProcessingTime": if self.state.is_final() { 50 } else { 0 },
        });
        if let Some(e) = &self.error {
            v["errorMessage"] = json!(e);
        }
        v
    }
}

fn invalid_job(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALIDJOB", message)
}

fn job_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
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
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", e.to_string()))?;
    let operation = body.get("operation").and_then(Value::as_str);
    if !matches!(operation, Some("query" | "queryAll")) {
        return Err(invalid_job(
            "InvalidJob : operation must be query or queryAll",
        ));
    }
    if operation == Some("queryAll") {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            "Bulk API 2.0 queryAll (deleted and archived records) is not emulated",
        ));
    }
    let text = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| invalid_job("InvalidJob : query is required"))?;
    let query = soql::parse(text).map_err(|e| invalid_job(format!("InvalidJob : {e}")))?;
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
    let (id, created_by) = {
        let world = shared.world.lock().expect("world lock");
        // Fields and the object are checked now, as Salesforce checks them at creation.
        soql::run(&world.org, &query).map_err(|e| invalid_job(format!("InvalidJob : {e}")))?;
        (
            crate::ids::generate("750", "Hs", shared.next_cursor()).to_string(),
            world.org.user_id.to_string(),
        )
    };
    let (done_at, fail) = match shared.faults.take_bulk() {
        Some(BulkFault::Fail) => (Instant::now() + RUN_TIME, true),
        Some(BulkFault::Stall(d)) => (Instant::now() + d, false),
        None => (Instant::now() + RUN_TIME, false),
    };
    let now = now_ms();
    let job = BulkJob {
        id: id.clone(),
        object: query.object.clone(),
        query,
        api_version: version,
        created_by,
        created_ms: now,
        modified_ms: now,
        state: JobState::UploadComplete,
        done_at,
        fail,
        polled: false,
        error: None,
        results: None,
    };
    let info = job.info();
    shared.bulk_jobs.lock().expect("bulk lock").insert(id, job);
    Ok(Json(info).into_response())
}

/// Moves a job along: `InProgress` once it has been looked at, then complete (with its
/// snapshot) or failed when its time has come.
fn advance(shared: &crate::Shared, job: &mut BulkJob) {
    if job.state.is_final() {
        return;
    }
    if Instant::now() < job.done_at {
        if job.polled {
            job.state = JobState::InProgress;
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
    match soql::run(&world.org, &job.query) {
        Ok(result) => {
            let mut header: Option<Vec<String>> = None;
            let mut lines = Vec::with_capacity(result.rows.len());
            result.render_each(&world.org, &job.api_version, |record| {
                let mut cells = Vec::new();
                flatten("", &record, &mut cells);
                if header.is_none() {
                    header = Some(cells.iter().map(|(k, _)| k.clone()).collect());
                }
                lines.push(csv_line(cells.iter().map(|(_, v)| v)));
            });
            let header = header
                .unwrap_or_else(|| job.query.fields().into_iter().map(str::to_owned).collect());
            let header = header
                .iter()
                .map(|h| quote(h))
                .collect::<Vec<_>>()
                .join(",");
            job.results = Some(Arc::new(Snapshot { header, lines }));
            job.state = JobState::JobComplete;
        }
        Err(e) => {
            job.state = JobState::Failed;
            job.error = Some(format!("InvalidQuery : {e}"));
        }
    }
}

/// A rendered record's fields in order, nested relationship records as `Parent.Field`, the
/// `attributes` left out.
fn flatten(prefix: &str, record: &Value, out: &mut Vec<(String, Value)>) {
    let Value::Object(fields) = record else {
        return;
    };
    for (k, v) in fields {
        if k == "attributes" {
            continue;
        }
        let name = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(_) => flatten(&name, v, out),
            other => out.push((name, other.clone())),
        }
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// One CSV line: values double-quoted, null as an empty field.
fn csv_line<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    values
        .map(|v| match v {
            Value::Null => String::new(),
            Value::String(s) => quote(s),
            other => quote(&other.to_string()),
        })
        .collect::<Vec<_>>()
        .join(",")
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
    with_job(&shared, &id, |job| Ok(Json(job.info()).into_response()))
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
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", e.to_string()))?;
    if body.get("state").and_then(Value::as_str) != Some("Aborted") {
        return Err(invalid_job(
            "InvalidJob : a query job's state can only be set to Aborted",
        ));
    }
    with_job(&shared, &id, |job| {
        if job.state.is_final() {
            return Err(invalid_job(format!(
                "InvalidJob : Job {} is already {}",
                job.id,
                job.state.name()
            )));
        }
        job.state = JobState::Aborted;
        job.modified_ms = now_ms();
        Ok(Json(job.info()).into_response())
    })
}

/// `DELETE …/jobs/query/{id}`.
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
    if !job.state.is_final() {
        return Err(invalid_job(format!(
            "InvalidJob : Job {id} is {}: abort it before deleting it",
            job.state.name()
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
            job.info()
        })
        .collect();
    Ok(Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response())
}

/// `maxRecords` and `locator`.
#[derive(Debug, Deserialize)]
pub(super) struct ResultsParams {
    #[serde(rename = "maxRecords")]
    max_records: Option<String>,
    locator: Option<String>,
}

/// `GET …/jobs/query/{id}/results`.
pub(super) async fn results(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, id)): Path<(String, String)>,
    Query(params): Query<ResultsParams>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let max = match params.max_records.as_deref() {
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
    let offset = match params.locator.as_deref() {
        None | Some("") => 0,
        Some(l) => decode_locator(l).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALIDLOCATOR",
                format!("Invalid locator: {l}"),
            )
        })?,
    };
    let snapshot = with_job(&shared, &id, |job| match (&job.results, job.state) {
        (Some(r), JobState::JobComplete) => Ok(r.clone()),
        _ => Err(invalid_job(format!(
            "InvalidJob : Job {} is {}: results are available once it is JobComplete",
            job.id,
            job.state.name()
        ))),
    })?;
    if offset > snapshot.lines.len() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALIDLOCATOR",
            "Invalid locator: past the last record",
        ));
    }
    let end = (offset + max).min(snapshot.lines.len());
    let page = &snapshot.lines[offset..end];
    let mut body = String::with_capacity(
        snapshot.header.len() + 1 + page.iter().map(|l| l.len() + 1).sum::<usize>(),
    );
    body.push_str(&snapshot.header);
    body.push('\n');
    for line in page {
        body.push_str(line);
        body.push('\n');
    }
    let locator = if end < snapshot.lines.len() {
        encode_locator(end)
    } else {
        "null".to_owned()
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv"),
    );
    if let Ok(v) = HeaderValue::from_str(&locator) {
        h.insert("Sforce-Locator", v);
    }
    h.insert("Sforce-NumberOfRecords", HeaderValue::from(page.len()));
    Ok(response)
}

/// An opaque locator for the row at `offset`.
fn encode_locator(offset: usize) -> String {
    let mut m = Map::new();
    m.insert("o".into(), json!(offset));
    hex::encode(Value::Object(m).to_string())
}

fn decode_locator(l: &str) -> Option<usize> {
    let bytes = hex::decode(l).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("o")?.as_u64().and_then(|o| usize::try_from(o).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_values_are_quoted_and_null_is_empty() {
        let line = csv_line(
            [
                json!("a\"b,c"),
                Value::Null,
                json!(12.5),
                json!(true),
                json!(""),
            ]
            .iter(),
        );
        assert_eq!(line, r#""a""b,c",,"12.5","true","""#);
    }

    #[test]
    fn locators_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_locator(&encode_locator(10_000)), Some(10_000));
        assert_eq!(decode_locator("zz"), None);
        assert_eq!(decode_locator(&hex::encode("[1]")), None);
    }

    #[test]
    fn relationship_fields_flatten_to_dotted_names() {
        let mut out = Vec::new();
        flatten(
            "",
            &json!({"attributes": {}, "Id": "1", "Account": {"attributes": {}, "Name": "Acme"}}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                ("Id".to_owned(), json!("1")),
                ("Account.Name".to_owned(), json!("Acme"))
            ]
        );
    }
}
