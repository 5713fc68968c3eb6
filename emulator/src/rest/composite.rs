//! sObject Collections: `PATCH /services/data/vNN.N/composite/sobjects` (update) and `POST` on
//! the same path (create), with `{"allOrNone": bool, "records": [{"attributes": {"type": …},
//! "id": …, field: value, …}]}` (no `id` on create).
//!
//! Up to 200 records, of any objects, updated in one transaction ([`Org::update_many`]). The
//! answer is 200 with one save result per record, in order: `{"id", "success": true, "errors":
//! []}`, or `{"success": false, "errors": [{"statusCode", "message", "fields"}]}`. With
//! `allOrNone`, one invalid record fails them all, the valid ones with
//! `ALL_OR_NONE_OPERATION_ROLLED_BACK`, and nothing is written. A request that is not well formed
//! is a 400 in the data API's error shape. The transaction's identical changes make one change
//! event listing every record ([`crate::org::merge_identical`]).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState, actor, bearer, body_object, check_version};
use crate::ids::SfId;
use crate::org::{Actor, Change, Org, OrgError, UpdateItem, now_ms};

/// Most records one collection request may hold.
const MAX_RECORDS: usize = 200;

/// `GET …/composite`: the composite resources the emulator serves.
pub(super) async fn resources(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    Ok(
        Json(json!({"sobjects": format!("/services/data/{version}/composite/sobjects")}))
            .into_response(),
    )
}

/// `PATCH …/composite/sobjects`: update up to 200 records in one transaction.
pub(super) async fn update(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    collection(&shared, &headers, &version, &body, Org::update_many)
}

/// `POST …/composite/sobjects`: create up to 200 records in one transaction; each gets a
/// CREATE change event, sharing the transaction key with rising sequence numbers.
pub(super) async fn create(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    collection(&shared, &headers, &version, &body, Org::create_many)
}

/// What a collection call does to the org: each record's outcome, and the changes.
type Apply =
    fn(&mut Org, &[UpdateItem], bool, &Actor, i64) -> (Vec<Result<SfId, OrgError>>, Vec<Change>);

/// Reads a collection request, applies it in one transaction, and answers a save result per
/// record, in order.
fn collection(
    shared: &AppState,
    headers: &HeaderMap,
    version: &str,
    body: &[u8],
    apply: Apply,
) -> Result<Response, ApiError> {
    bearer(shared, headers)?;
    check_version(version)?;
    let request = body_object(body)?;
    let all_or_none = match request.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "JSON_PARSER_ERROR",
                format!("Cannot deserialize instance of boolean from {other} for allOrNone"),
            ));
        }
    };
    let Some(Value::Array(records)) = request.get("records") else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body must have a records array",
        ));
    };
    if records.len() > MAX_RECORDS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            format!(
                "record limit reached. cannot submit more than {MAX_RECORDS} records into this call"
            ),
        ));
    }
    let items = records
        .iter()
        .map(item)
        .collect::<Result<Vec<_>, ApiError>>()?;
    let actor = actor(shared);
    let now = now_ms();
    let outcomes = shared
        .world
        .lock()
        .expect("world lock")
        .mutate(now, |org| {
            Ok::<_, OrgError>(apply(org, &items, all_or_none, &actor, now))
        })?;
    shared.mark_dirty();
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(id) => json!({"id": id.as_str(), "success": true, "errors": []}),
            Err(e) => json!({
                "success": false,
                "errors": [{"statusCode": e.error_code(), "message": e.to_string(), "fields": e.fields()}],
            }),
        })
        .collect();
    Ok((StatusCode::OK, Json(results)).into_response())
}

/// One record of the request: its `attributes.type`, its `id` and the fields to set.
fn item(record: &Value) -> Result<UpdateItem, ApiError> {
    let Value::Object(fields) = record else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "Each record must be a JSON object",
        ));
    };
    let sobject = fields
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut id = None;
    let mut input = Map::new();
    for (name, value) in fields {
        if name == "attributes" {
            continue;
        }
        if name.eq_ignore_ascii_case("id") {
            id = value.as_str().map(str::to_owned);
            continue;
        }
        input.insert(name.clone(), value.clone());
    }
    Ok(UpdateItem { sobject, id, input })
}
