//! Where the worker's notifications land: a webhook sink (`POST /hooks/{name}`) and a stand-in
//! for GitHub's `repository_dispatch` (`POST /repos/{owner}/{repo}/dispatches`), both on the
//! REST port, with control routes under `/emulator/hooks` and `/emulator/dispatches`.
//!
//! Both record every request they receive, in arrival order, whatever they answer (an injected
//! failure, a refusal or success), together with the status they answered, so tests can prove
//! what a client sent, how often, and what it was told.
//!
//! Webhooks are signed the way the client signs them: `X-Sfcdc-Timestamp: <unix seconds>` and
//! `X-Sfcdc-Signature: sha256=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>`.
//! With a secret configured, a request whose signature is missing or wrong is answered `401`;
//! without one, every request is accepted and `signature_valid` is absent. The sink checks no
//! freshness window on the timestamp (that is a receiver's policy; the record keeps it).
//!
//! The dispatch stand-in answers as api.github.com does: `401 Bad credentials` for a missing or
//! wrong token (`Bearer` or `token` scheme), `400 Problems parsing JSON` for a body that is not
//! JSON, `422` for an `event_type` that is missing or not 1 to 100 characters, or a
//! `client_payload` that is not an object of at most 10 top-level properties, and `204` with an
//! empty body on success.
//!
//! Faults: a failure armed for one hook (or for dispatches) answers the next `count` requests
//! (or every request until cleared) with its status before any check, and is recorded too.
//!
//! Invariants: records are kept in memory only, at most [`MAX_RECORDS`] of each kind (the oldest
//! are dropped first); signatures are compared in constant time; no client input panics.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;

use super::Shared;
use super::clock::now_ms;

/// Records kept per kind; older ones are dropped.
pub const MAX_RECORDS: usize = 100_000;

/// The request headers a hook record keeps (lowercase), when present.
const KEPT_HEADERS: [&str; 4] = [
    "content-type",
    "x-sfcdc-signature",
    "x-sfcdc-timestamp",
    "user-agent",
];

const GITHUB_DOCS: &str = "https://docs.github.com/rest";
const DISPATCH_DOCS: &str =
    "https://docs.github.com/rest/repos/repos#create-a-repository-dispatch-event";

/// The most top-level properties GitHub accepts in `client_payload`.
const MAX_PAYLOAD_KEYS: usize = 10;

/// One request received by a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRecord {
    /// The hook's name (the last path segment).
    pub name: String,
    /// Arrival time, epoch milliseconds.
    pub received_at: i64,
    /// `content-type`, `x-sfcdc-signature`, `x-sfcdc-timestamp` and `user-agent`, when present.
    pub headers: BTreeMap<String, String>,
    /// The body: its JSON value if it parses, else its text.
    pub body: Value,
    /// Whether the signature verified; absent when the sink has no secret.
    pub signature_valid: Option<bool>,
    /// The status the sink answered.
    pub answered: u16,
}

/// One `repository_dispatch` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchRecord {
    /// Repository owner from the path.
    pub owner: String,
    /// Repository name from the path.
    pub repo: String,
    /// `event_type` if the body had a string one.
    pub event_type: Option<String>,
    /// `client_payload` as given (`null` when absent).
    pub client_payload: Value,
    /// Arrival time, epoch milliseconds.
    pub received_at: i64,
    /// The status the stand-in answered.
    pub answered: u16,
}

/// An armed failure: answer `status` to the next `remaining` requests (`None`: until cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The status answered.
    pub status: u16,
    /// Requests left to fail; `None` fails until cleared.
    pub remaining: Option<u32>,
}

impl Failure {
    /// An armed failure, or none when `count` is zero. A status that cannot be a final answer
    /// (outside 200..=599) becomes 500.
    fn arm(status: u16, count: Option<u32>) -> Option<Failure> {
        let status = if (200..=599).contains(&status) {
            status
        } else {
            tracing::warn!(
                status,
                "Emulator sink failure status out of range; using 500"
            );
            500
        };
        (count != Some(0)).then_some(Failure {
            status,
            remaining: count,
        })
    }

    /// Consumes one failure from `slot`, if armed; returns the status to answer.
    fn take(slot: &mut Option<Failure>) -> Option<u16> {
        let f = slot.as_mut()?;
        let status = f.status;
        if let Some(n) = &mut f.remaining {
            *n = n.saturating_sub(1);
            if *n == 0 {
                *slot = None;
            }
        }
        Some(status)
    }
}

#[derive(Default)]
struct Records {
    hooks: VecDeque<HookRecord>,
    hook_failures: HashMap<String, Failure>,
    dispatches: VecDeque<DispatchRecord>,
    dispatch_failure: Option<Failure>,
}

/// The webhook sink and the dispatch stand-in: their secrets, records and armed failures.
pub struct Sinks {
    webhook_secret: Option<String>,
    github_token: String,
    state: Mutex<Records>,
}

fn push<T>(records: &mut VecDeque<T>, record: T) {
    if records.len() >= MAX_RECORDS {
        records.pop_front();
    }
    records.push_back(record);
}

impl Sinks {
    /// Sinks that verify webhooks with `webhook_secret` (if any) and accept `github_token`.
    pub fn new(webhook_secret: Option<String>, github_token: String) -> Sinks {
        Sinks {
            webhook_secret: webhook_secret.filter(|s| !s.is_empty()),
            github_token,
            state: Mutex::new(Records::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // Every update is a single step, so a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every webhook request, in arrival order.
    pub fn hooks(&self) -> Vec<HookRecord> {
        self.lock().hooks.iter().cloned().collect()
    }

    /// Every dispatch request, in arrival order.
    pub fn dispatches(&self) -> Vec<DispatchRecord> {
        self.lock().dispatches.iter().cloned().collect()
    }

    /// Makes the next `count` requests to hook `name` (all, when `None`) answer `status`.
    pub fn fail_hook(&self, name: &str, status: u16, count: Option<u32>) {
        let mut state = self.lock();
        match Failure::arm(status, count) {
            Some(f) => state.hook_failures.insert(name.to_owned(), f),
            None => state.hook_failures.remove(name),
        };
    }

    /// Disarms the failure of hook `name`.
    pub fn clear_hook_failure(&self, name: &str) {
        self.lock().hook_failures.remove(name);
    }

    /// Makes the next `count` dispatches (all, when `None`) answer `status`.
    pub fn fail_dispatches(&self, status: u16, count: Option<u32>) {
        self.lock().dispatch_failure = Failure::arm(status, count);
    }

    /// Disarms the dispatch failure.
    pub fn clear_dispatch_failure(&self) {
        self.lock().dispatch_failure = None;
    }

    /// Receives one webhook request; returns the status answered.
    fn receive_hook(&self, name: &str, headers: &HeaderMap, body: &[u8]) -> StatusCode {
        let signature_valid = self
            .webhook_secret
            .as_deref()
            .map(|secret| signature_valid(secret, headers, body));
        let mut state = self.lock();
        let mut slot = state.hook_failures.get(name).copied();
        let injected = Failure::take(&mut slot);
        match slot {
            Some(f) => state.hook_failures.insert(name.to_owned(), f),
            None => state.hook_failures.remove(name),
        };
        let answered = match (injected, signature_valid) {
            (Some(s), _) => StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            (None, Some(false)) => StatusCode::UNAUTHORIZED,
            (None, _) => StatusCode::NO_CONTENT,
        };
        let kept = KEPT_HEADERS
            .iter()
            .filter_map(|h| {
                let v = headers.get(*h)?;
                Some((
                    (*h).to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ))
            })
            .collect();
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        push(
            &mut state.hooks,
            HookRecord {
                name: name.to_owned(),
                received_at: now_ms(),
                headers: kept,
                body,
                signature_valid,
                answered: answered.as_u16(),
            },
        );
        answered
    }

    /// Receives one dispatch; returns the status answered and GitHub's error body, if any.
    fn receive_dispatch(
        &self,
        owner: &str,
        repo: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (StatusCode, Option<Value>) {
        let parsed: Result<Value, _> = serde_json::from_slice(body);
        let (event_type, client_payload) = match &parsed {
            Ok(v) => (
                v.get("event_type")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                v.get("client_payload").cloned().unwrap_or(Value::Null),
            ),
            Err(_) => (None, Value::Null),
        };
        let mut state = self.lock();
        let outcome = match Failure::take(&mut state.dispatch_failure) {
            Some(s) => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let message = status.canonical_reason().unwrap_or("Server Error");
                (status, Some(github_error(message, GITHUB_DOCS)))
            }
            None if !self.github_authorized(headers) => (
                StatusCode::UNAUTHORIZED,
                Some(github_error("Bad credentials", GITHUB_DOCS)),
            ),
            None => match parsed.as_ref().map(check_dispatch) {
                Err(_) => (
                    StatusCode::BAD_REQUEST,
                    Some(github_error("Problems parsing JSON", DISPATCH_DOCS)),
                ),
                Ok(Err(message)) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(github_error(&message, DISPATCH_DOCS)),
                ),
                Ok(Ok(())) => (StatusCode::NO_CONTENT, None),
            },
        };
        push(
            &mut state.dispatches,
            DispatchRecord {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
                event_type,
                client_payload,
                received_at: now_ms(),
                answered: outcome.0.as_u16(),
            },
        );
        outcome
    }

    fn github_authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| {
                scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token")
            })
            .is_some_and(|(_, token)| {
                !self.github_token.is_empty() && token.trim() == self.github_token
            })
    }
}

/// Whether the `X-Sfcdc-Signature` of a request is the HMAC of its timestamp and body.
pub fn signature_valid(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) =
        (header("x-sfcdc-timestamp"), header("x-sfcdc-signature"))
    else {
        return false;
    };
    let Some(hex_sig) = signature.strip_prefix("sha256=") else {
        return false;
    };
    if hex_sig.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The value of `X-Sfcdc-Signature` for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length, so the error arm is never taken.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// GitHub's checks of a dispatch body; the message of a `422`.
fn check_dispatch(body: &Value) -> Result<(), String> {
    let Value::Object(map) = body else {
        return Err("Invalid request.\n\nThe request body must be a JSON object.".into());
    };
    match map.get("event_type") {
        None | Some(Value::Null) => return Err("event_type is missing".into()),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if !(1..=100).contains(&n) {
                return Err(format!(
                    "event_type must be between 1 and 100 characters; {n} were supplied."
                ));
            }
        }
        Some(_) => return Err("event_type must be a string".into()),
    }
    match map.get("client_payload") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(p)) if p.len() > MAX_PAYLOAD_KEYS => Err(format!(
            "No more than {MAX_PAYLOAD_KEYS} properties are allowed; {} were supplied.",
            p.len()
        )),
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err("client_payload must be an object".into()),
    }
}

fn github_error(message: &str, docs: &str) -> Value {
    json!({"message": message, "documentation_url": docs})
}

/// Encodes `name` as one URL path segment.
pub fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

type AppState = Arc<Shared>;

/// The sink routes and their control routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/hooks/{name}", post(hook))
        .route("/repos/{owner}/{repo}/dispatches", post(dispatch))
        .route("/emulator/hooks", axum::routing::get(list_hooks))
        .route(
            "/emulator/hooks/{name}/fail",
            put(put_hook_failure).delete(delete_hook_failure),
        )
        .route("/emulator/dispatches", axum::routing::get(list_dispatches))
        .route(
            "/emulator/dispatches/fail",
            put(put_dispatch_failure).delete(delete_dispatch_failure),
        )
}

fn control_error(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": message.into()})),
    )
        .into_response()
}

async fn hook(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(Path(name)) = name else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match shared.sinks.receive_hook(&name, &headers, &body) {
        StatusCode::NO_CONTENT => StatusCode::NO_CONTENT.into_response(),
        StatusCode::UNAUTHORIZED => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid or missing signature"})),
        )
            .into_response(),
        status => (status, Json(json!({"error": "injected failure"}))).into_response(),
    }
}

async fn dispatch(
    State(shared): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(Path((owner, repo))) = path else {
        return (
            StatusCode::NOT_FOUND,
            Json(github_error("Not Found", GITHUB_DOCS)),
        )
            .into_response();
    };
    match shared
        .sinks
        .receive_dispatch(&owner, &repo, &headers, &body)
    {
        (status, Some(error)) => (status, Json(error)).into_response(),
        (status, None) => status.into_response(),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    name: Option<String>,
}

async fn list_hooks(
    State(shared): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return control_error("the query string could not be parsed");
    };
    let records: Vec<HookRecord> = shared
        .sinks
        .hooks()
        .into_iter()
        .filter(|r| q.name.as_ref().is_none_or(|n| *n == r.name))
        .collect();
    Json(records).into_response()
}

async fn list_dispatches(State(shared): State<AppState>) -> Response {
    Json(shared.sinks.dispatches()).into_response()
}

/// Body of `PUT /emulator/.../fail`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    #[serde(default = "default_fail_status")]
    status: u16,
    #[serde(default)]
    count: Option<u32>,
}

fn default_fail_status() -> u16 {
    503
}

/// The failure a control request arms, or why it is refused.
fn parse_fail(body: &[u8]) -> Result<FailRequest, String> {
    let req: FailRequest = serde_json::from_slice(body)
        .map_err(|e| format!("expected {{\"status\": 200..=599, \"count\": N or null}}: {e}"))?;
    if !(200..=599).contains(&req.status) {
        return Err(format!(
            "status must be within 200..=599, got {}",
            req.status
        ));
    }
    Ok(req)
}

fn armed(status: u16, count: Option<u32>) -> Response {
    Json(json!({"status": status, "count": count})).into_response()
}

async fn put_hook_failure(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(Path(name)) = name else {
        return control_error("bad hook name");
    };
    match parse_fail(&body) {
        Ok(req) => {
            shared.sinks.fail_hook(&name, req.status, req.count);
            armed(req.status, req.count)
        }
        Err(e) => control_error(e),
    }
}

async fn delete_hook_failure(
    State(shared): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(name)) = name else {
        return control_error("bad hook name");
    };
    shared.sinks.clear_hook_failure(&name);
    StatusCode::NO_CONTENT.into_response()
}

async fn put_dispatch_failure(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    match parse_fail(&body) {
        Ok(req) => {
            shared.sinks.fail_dispatches(req.status, req.count);
            armed(req.status, req.count)
        }
        Err(e) => control_error(e),
    }
}

async fn delete_dispatch_failure(State(shared): State<AppState>) -> Response {
    shared.sinks.clear_dispatch_failure();
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_down_and_disarm() {
        let mut slot = Failure::arm(503, Some(2));
        assert_eq!(Failure::take(&mut slot), Some(503));
        assert_eq!(Failure::take(&mut slot), Some(503));
        assert_eq!(Failure::take(&mut slot), None);
        let mut forever = Failure::arm(500, None);
        for _ in 0..10 {
            assert_eq!(Failure::take(&mut forever), Some(500));
        }
        assert_eq!(Failure::arm(503, Some(0)), None);
        assert_eq!(Failure::arm(42, None).map(|f| f.status), Some(500));
    }

    #[test]
    fn signatures_verify_only_with_the_right_secret_timestamp_and_body() {
        let body = br#"{"a":1}"#;
        let mut h = HeaderMap::new();
        h.insert("x-sfcdc-timestamp", "1700000000".parse().unwrap());
        h.insert(
            "x-sfcdc-signature",
            sign("s", "1700000000", body).parse().unwrap(),
        );
        assert!(signature_valid("s", &h, body));
        assert!(!signature_valid("t", &h, body));
        assert!(!signature_valid("s", &h, br#"{"a":2}"#));
        let upper = sign("s", "1700000000", body)
            .to_uppercase()
            .replace("SHA256=", "sha256=");
        h.insert("x-sfcdc-signature", upper.parse().unwrap());
        assert!(!signature_valid("s", &h, body));
        h.remove("x-sfcdc-signature");
        assert!(!signature_valid("s", &h, body));
    }

    #[test]
    fn dispatch_bodies_are_checked_as_github_does() {
        assert!(check_dispatch(&json!({"event_type": "provisioned"})).is_ok());
        assert!(check_dispatch(&json!({"event_type": "x", "client_payload": {"a": 1}})).is_ok());
        assert_eq!(
            check_dispatch(&json!({})).unwrap_err(),
            "event_type is missing"
        );
        assert!(check_dispatch(&json!({"event_type": ""})).is_err());
        assert!(check_dispatch(&json!({"event_type": "x".repeat(101)})).is_err());
        assert!(check_dispatch(&json!({"event_type": 3})).is_err());
        assert!(check_dispatch(&json!({"event_type": "x", "client_payload": [1]})).is_err());
        let eleven: serde_json::Map<String, Value> =
            (0..11).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(
            check_dispatch(&json!({"event_type": "x", "client_payload": eleven})).unwrap_err(),
            "No more than 10 properties are allowed; 11 were supplied."
        );
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("orders-1_a.b~"), "orders-1_a.b~");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
