//! The fulfilment system the worker provisions orders in: an asynchronous "create, then poll the
//! operation" API under `/fulfilment` on the REST port, with a control API under
//! `/emulator/fulfilment`.
//!
//! `POST /fulfilment/orders` takes a Salesforce order (as read over REST) and an
//! `Idempotency-Key`. The first request with a key creates one operation; every later request with
//! that key gets the same operation back in its current state (`202` while pending, `200` once
//! finished) and creates nothing, whatever its body says. That map from key to operation is how
//! tests prove a client submitted an order exactly once. Operations are polled one at a time
//! (`GET /fulfilment/operations/{id}`) or in batches (`GET /fulfilment/operations?ids=a,b`), and
//! batch polling can be switched off so that clients must fall back.
//!
//! Time model: an operation created at `t0` takes the `latency_ms` configured at that moment. It
//! is `pending` until `t0 + latency`, with `progress` rising in `progress_steps` equal steps
//! (never above 99 while pending), then `completed` or `failed` with progress 100; which of the
//! two is decided at creation (`failure_rate`). State is derived from the clock at each look, so
//! nothing runs in the background. A synchronous operation (`sync_rate`) has zero latency and is
//! answered `201` with its final state. `201` and `202` carry `Location`, the operation's URL.
//! The response that creates an asynchronous operation always says `pending` with progress 0,
//! even with zero latency: the first poll sees it done.
//!
//! Faults: `error_rate` answers any `/fulfilment` request `503` before authentication and before
//! any side effect (no `Retry-After`; clients pick their own back-off). When a token is
//! configured, every `/fulfilment` request needs `Authorization: Bearer <token>` (scheme
//! case-insensitive) or gets `401`.
//!
//! Where the contract is silent: every representation carries `status_url`; a finished operation
//! reports progress 100 whether it completed or failed; `provisioned_at` is `t0 + latency`, not the
//! moment someone looked; batch ids are de-duplicated (first occurrence wins) before the limit of
//! 100 is checked; the operation list of the control API also carries `external_id`. Operation ids
//! and outcomes are drawn from a generator seeded by the emulator's `--seed`, so a replayed
//! scenario produces the same ids. Operations are saved in the `--state` file; counters and the
//! configuration are not (flags decide the configuration at start).
//!
//! Invariants: one key maps to at most one operation, for the emulator's lifetime; an operation's
//! outcome, latency and external id never change after creation; no client input panics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Shared;
use super::clock::now_ms;

/// Most operation ids one batch status request may name.
pub const MAX_BATCH_IDS: usize = 100;

/// Longest accepted `Idempotency-Key`, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// Reasons a failed operation gives, drawn at creation.
const REJECTIONS: [&str; 4] = [
    "no capacity left in the requested region",
    "the billing account is on hold",
    "the product is not provisionable for this account",
    "the customer failed the credit check",
];

/// Behaviour of the fulfilment system. Every field has a default, so a partial JSON object
/// (`{"failure_rate": 0.5}`) is a complete configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FulfilmentConfig {
    /// How long a new asynchronous operation stays pending (default 1500).
    pub latency_ms: u64,
    /// How many equal steps progress rises in while pending (default 4, at least 1).
    pub progress_steps: u32,
    /// Probability that a new operation ends `failed` (default 0).
    pub failure_rate: f64,
    /// Probability that any `/fulfilment` request is answered `503` before it does anything
    /// (default 0).
    pub error_rate: f64,
    /// Probability that a new operation finishes synchronously and is answered `201`
    /// (default 0).
    pub sync_rate: f64,
    /// Whether `GET /fulfilment/operations?ids=` exists (default true); without it, `404`.
    pub batch: bool,
    /// The bearer token every `/fulfilment` request must carry; `None` accepts any request.
    pub token: Option<String>,
    /// How long a submission waits, after its operation exists, before it answers (default 0):
    /// a slow network, or a client that dies before it hears back.
    pub submit_delay_ms: u64,
    /// How long a status request waits, after it is counted, before it answers (default 0).
    pub poll_delay_ms: u64,
}

impl Default for FulfilmentConfig {
    fn default() -> Self {
        FulfilmentConfig {
            latency_ms: 1500,
            progress_steps: 4,
            failure_rate: 0.0,
            error_rate: 0.0,
            sync_rate: 0.0,
            batch: true,
            token: Some("fulfilment-dev-token".to_owned()),
            submit_delay_ms: 0,
            poll_delay_ms: 0,
        }
    }
}

/// A fulfilment setting out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FulfilmentConfigError {
    /// The field, as named in [`FulfilmentConfig`].
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl FulfilmentConfig {
    /// Checks that rates are within [0, 1], steps at least 1 and a token, if any, non-empty.
    pub fn validate(&self) -> Result<(), FulfilmentConfigError> {
        for (field, rate) in [
            ("failure_rate", self.failure_rate),
            ("error_rate", self.error_rate),
            ("sync_rate", self.sync_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(FulfilmentConfigError {
                    field,
                    reason: format!("{rate} is not a probability within [0, 1]"),
                });
            }
        }
        if self.progress_steps < 1 {
            return Err(FulfilmentConfigError {
                field: "progress_steps",
                reason: "must be at least 1".into(),
            });
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(FulfilmentConfigError {
                field: "token",
                reason: "must not be empty (use null to accept requests without a token)".into(),
            });
        }
        Ok(())
    }

    /// This configuration with the fields of `patch` (a JSON object) replacing its own; the
    /// result is validated. Unknown fields are refused.
    pub fn merged(&self, patch: &Value) -> Result<FulfilmentConfig, String> {
        let Value::Object(changes) = patch else {
            return Err("the body must be a JSON object of configuration fields".into());
        };
        let mut current = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => return Err("the configuration could not be represented".into()),
        };
        current.extend(changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        let merged: FulfilmentConfig =
            serde_json::from_value(Value::Object(current)).map_err(|e| e.to_string())?;
        merged.validate().map_err(|e| e.to_string())?;
        Ok(merged)
    }

    /// The nearest valid configuration: rates clamped into [0, 1] (NaN becomes 0), steps at
    /// least 1, an empty token treated as none.
    fn sanitized(mut self) -> FulfilmentConfig {
        for rate in [
            &mut self.failure_rate,
            &mut self.error_rate,
            &mut self.sync_rate,
        ] {
            *rate = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
        }
        self.progress_steps = self.progress_steps.max(1);
        if self.token.as_deref().is_some_and(str::is_empty) {
            self.token = None;
        }
        self
    }
}

/// Where an operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperationStatus {
    /// Still running.
    Pending,
    /// Provisioned; the operation has a result.
    Completed,
    /// Rejected; the operation has an error.
    Failed,
}

/// Counters of what clients did, at `GET /emulator/fulfilment`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FulfilmentStats {
    /// Authenticated `POST /fulfilment/orders`, valid or not.
    pub submit_requests: u64,
    /// Operations created (first use of a key).
    pub operations_created: u64,
    /// Submissions that reused a known key and got its operation back.
    pub idempotent_replays: u64,
    /// `GET /fulfilment/operations/{id}` calls.
    pub polls: u64,
    /// `GET /fulfilment/operations?ids=` calls that were served.
    pub batch_polls: u64,
    /// Operations returned by batch polls, in total.
    pub batch_polled_operations: u64,
    /// Requests answered with an injected `503`.
    pub errors_injected: u64,
    /// Operations completed now (derived from the clock when the counters are read).
    pub completed: u64,
    /// Operations failed now (derived likewise).
    pub failed: u64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: u64,
}

/// One operation as the control API lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationInfo {
    /// `op_` followed by 24 lowercase hex digits.
    pub operation_id: String,
    /// The key of the submission that created it.
    pub idempotency_key: String,
    /// The Salesforce order id it was submitted for.
    pub order_id: String,
    /// Its status now.
    pub status: OperationStatus,
    /// Its progress now, 0 to 100.
    pub progress: u8,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// How many submissions carried its key (1 + replays).
    pub submissions: u64,
    /// The fulfilment system's id for the order, once completed.
    pub external_id: Option<String>,
}

/// How an operation ends, fixed at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Complete { external_id: String },
    Fail { reason: String },
}

/// One operation, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Operation {
    id: String,
    key: String,
    order_id: String,
    order_number: Option<String>,
    /// Epoch milliseconds.
    created_at: i64,
    latency_ms: u64,
    steps: u32,
    outcome: Outcome,
    submissions: u64,
    /// Progress set through the control API, shown while pending if higher than the clock's.
    #[serde(default)]
    progress_floor: u8,
}

impl Operation {
    /// Status and progress at `now` (epoch milliseconds).
    fn phase(&self, now: i64) -> (OperationStatus, u8) {
        let (status, progress) = self.clock_phase(now);
        if status == OperationStatus::Pending {
            (status, progress.max(self.progress_floor).min(99))
        } else {
            (status, progress)
        }
    }

    fn clock_phase(&self, now: i64) -> (OperationStatus, u8) {
        let elapsed = u64::try_from(now.saturating_sub(self.created_at)).unwrap_or(0);
        if elapsed >= self.latency_ms {
            let status = match self.outcome {
                Outcome::Complete { .. } => OperationStatus::Completed,
                Outcome::Fail { .. } => OperationStatus::Failed,
            };
            return (status, 100);
        }
        let steps = u128::from(self.steps.max(1));
        let step = u128::from(elapsed) * steps / u128::from(self.latency_ms);
        let progress = (step * 100 / steps).min(99);
        (OperationStatus::Pending, progress as u8)
    }

    fn external_id(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Complete { external_id } => Some(external_id),
            Outcome::Fail { .. } => None,
        }
    }

    /// The JSON clients see at `now`.
    fn view(&self, now: i64, base_url: &str) -> Value {
        let (status, progress) = self.phase(now);
        let finished = status != OperationStatus::Pending;
        let result = match (&self.outcome, finished) {
            (Outcome::Complete { external_id }, true) => json!({
                "external_id": external_id,
                "order_id": self.order_id,
                "order_number": self.order_number,
                "provisioned_at": rfc3339(self.created_at.saturating_add(
                    i64::try_from(self.latency_ms).unwrap_or(i64::MAX)
                )),
            }),
            _ => Value::Null,
        };
        let error = match (&self.outcome, finished) {
            (Outcome::Fail { reason }, true) => json!({
                "code": "rejected",
                "message": format!("fulfilment rejected order {}: {reason}", self.order_id),
            }),
            _ => Value::Null,
        };
        json!({
            "operation_id": self.id,
            "status": status,
            "progress": progress,
            "status_url": status_url(base_url, &self.id),
            "result": result,
            "error": error,
        })
    }

    fn info(&self, now: i64) -> OperationInfo {
        let (status, progress) = self.phase(now);
        OperationInfo {
            operation_id: self.id.clone(),
            idempotency_key: self.key.clone(),
            order_id: self.order_id.clone(),
            status,
            progress,
            created_at: rfc3339(self.created_at),
            submissions: self.submissions,
            external_id: (status == OperationStatus::Completed)
                .then(|| self.external_id().map(str::to_owned))
                .flatten(),
        }
    }
}

/// The operations the emulator keeps in its `--state` file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FulfilmentSnapshot {
    operations: Vec<Operation>,
    next_external: u64,
}

struct Inner {
    config: FulfilmentConfig,
    /// In creation order.
    ops: Vec<Operation>,
    by_id: HashMap<String, usize>,
    by_key: HashMap<String, usize>,
    /// Last external id handed out (`WH-000001` is 1).
    next_external: u64,
    /// Draws for injected errors.
    fault_rng: ChaCha8Rng,
    stats: FulfilmentStats,
}

/// The fulfilment system: its configuration, operations and counters. Shared by the REST
/// handlers and the in-process handle ([`super::Emulator::fulfilment`]).
pub struct Fulfilment {
    seed: u64,
    base_url: String,
    inner: Mutex<Inner>,
}

/// What a submission produced.
enum Submitted {
    /// A new operation; `sync` when it finished at once.
    Created { view: Value, sync: bool },
    /// A known key's operation.
    Replayed { view: Value, finished: bool },
}

impl Fulfilment {
    /// A fulfilment system answering under `base_url` (`<instance>/fulfilment`), with ids drawn
    /// from `seed`, holding the operations of `restored` if any.
    pub fn new(
        seed: u64,
        base_url: String,
        config: FulfilmentConfig,
        restored: Option<FulfilmentSnapshot>,
    ) -> Fulfilment {
        let snap = restored.unwrap_or_default();
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        for (i, op) in snap.operations.iter().enumerate() {
            by_id.insert(op.id.clone(), i);
            by_key.insert(op.key.clone(), i);
        }
        Fulfilment {
            seed,
            base_url,
            inner: Mutex::new(Inner {
                config: config.sanitized(),
                ops: snap.operations,
                by_id,
                by_key,
                next_external: snap.next_external,
                fault_rng: ChaCha8Rng::seed_from_u64(seed ^ 0xFA17_0000_F00D),
                stats: FulfilmentStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data (every update is a
        // single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base URL of the API (`<instance>/fulfilment`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The current configuration.
    pub fn config(&self) -> FulfilmentConfig {
        self.lock().config.clone()
    }

    /// Replaces the configuration; out-of-range values are clamped to the nearest valid ones.
    /// Operations already created keep their latency and outcome.
    pub fn set_config(&self, config: FulfilmentConfig) {
        self.lock().config = config.sanitized();
    }

    /// Changes the configuration in place, e.g. `f.update(|c| c.failure_rate = 1.0)`.
    pub fn update(&self, f: impl FnOnce(&mut FulfilmentConfig)) {
        let mut inner = self.lock();
        let mut config = inner.config.clone();
        f(&mut config);
        inner.config = config.sanitized();
    }

    /// A copy of the counters, with `completed` and `failed` as of now.
    pub fn stats(&self) -> FulfilmentStats {
        let now = now_ms();
        let inner = self.lock();
        let mut stats = inner.stats.clone();
        for op in &inner.ops {
            match op.phase(now).0 {
                OperationStatus::Completed => stats.completed += 1,
                OperationStatus::Failed => stats.failed += 1,
                OperationStatus::Pending => {}
            }
        }
        stats
    }

    /// Every operation, in creation order, as of now.
    pub fn operations(&self) -> Vec<OperationInfo> {
        let now = now_ms();
        self.lock().ops.iter().map(|op| op.info(now)).collect()
    }

    /// Raises a pending operation's progress to `progress` (capped at 99 while pending), as if
    /// the work had got that far; `false` if there is no such pending operation.
    pub fn advance(&self, id: &str, progress: u8) -> bool {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(&i) = inner.by_id.get(id) else {
            return false;
        };
        let op = &mut inner.ops[i];
        if op.phase(now).0 != OperationStatus::Pending {
            return false;
        }
        op.progress_floor = progress.min(99);
        true
    }

    /// Finishes a pending operation now, with the outcome drawn at its creation; `false` if
    /// there is no such pending operation.
    pub fn complete(&self, id: &str) -> bool {
        let now = now_ms();
        let mut inner = self.lock();
        let Some(&i) = inner.by_id.get(id) else {
            return false;
        };
        let op = &mut inner.ops[i];
        if op.phase(now).0 != OperationStatus::Pending {
            return false;
        }
        op.latency_ms = u64::try_from(now.saturating_sub(op.created_at)).unwrap_or(0);
        true
    }

    /// The operations to save with `--state`.
    pub fn snapshot(&self) -> FulfilmentSnapshot {
        let inner = self.lock();
        FulfilmentSnapshot {
            operations: inner.ops.clone(),
            next_external: inner.next_external,
        }
    }

    /// Whether this request gets an injected `503` (counted).
    fn inject_error(&self) -> bool {
        let mut inner = self.lock();
        let rate = inner.config.error_rate;
        if rate > 0.0 && inner.fault_rng.random::<f64>() < rate {
            inner.stats.errors_injected += 1;
            return true;
        }
        false
    }

    /// Checks the bearer token, counting refusals.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), FulfilError> {
        let mut inner = self.lock();
        let Some(expected) = inner.config.token.as_deref() else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        if given == Some(expected) {
            return Ok(());
        }
        inner.stats.unauthorized += 1;
        Err(FulfilError::unauthorized(given.is_some()))
    }

    /// Handles one submission: the known key's operation, or a new one for `order`.
    fn submit(
        &self,
        key: &str,
        order: Result<OrderRef, FulfilError>,
        now: i64,
    ) -> Result<Submitted, FulfilError> {
        let mut inner = self.lock();
        inner.stats.submit_requests += 1;
        if let Some(&i) = inner.by_key.get(key) {
            inner.stats.idempotent_replays += 1;
            let op = &mut inner.ops[i];
            op.submissions += 1;
            let finished = op.phase(now).0 != OperationStatus::Pending;
            let view = op.view(now, &self.base_url);
            return Ok(Submitted::Replayed { view, finished });
        }
        let order = order?;
        let config = inner.config.clone();
        let seq = inner.ops.len() as u64 + 1;
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed
                .wrapping_mul(0x2545_F491_4F6C_DD1D)
                .wrapping_add(seq),
        );
        let mut id = op_id(&mut rng);
        while inner.by_id.contains_key(&id) {
            id = op_id(&mut rng);
        }
        let sync = rng.random::<f64>() < config.sync_rate;
        let fail = rng.random::<f64>() < config.failure_rate;
        let reason = REJECTIONS[rng.random_range(0..REJECTIONS.len())];
        let outcome = if fail {
            Outcome::Fail {
                reason: reason.to_owned(),
            }
        } else {
            inner.next_external += 1;
            Outcome::Complete {
                external_id: format!("WH-{:06}", inner.next_external),
            }
        };
        let op = Operation {
            id: id.clone(),
            key: key.to_owned(),
            order_id: order.id,
            order_number: order.number,
            created_at: now,
            latency_ms: if sync { 0 } else { config.latency_ms },
            steps: config.progress_steps,
            outcome,
            submissions: 1,
            progress_floor: 0,
        };
        // The creating response of an asynchronous operation always reads pending at 0%.
        let mut view = op.view(now, &self.base_url);
        if !sync {
            view["status"] = json!(OperationStatus::Pending);
            view["progress"] = json!(0);
            view["result"] = Value::Null;
            view["error"] = Value::Null;
        }
        let index = inner.ops.len();
        inner.by_id.insert(id, index);
        inner.by_key.insert(key.to_owned(), index);
        inner.ops.push(op);
        inner.stats.operations_created += 1;
        Ok(Submitted::Created { view, sync })
    }

    /// One operation's representation, counted as a poll.
    fn poll(&self, id: &str, now: i64) -> Option<Value> {
        let mut inner = self.lock();
        inner.stats.polls += 1;
        let i = *inner.by_id.get(id)?;
        Some(inner.ops[i].view(now, &self.base_url))
    }

    /// Representations of the known ones of `ids`, in the order given, counted as a batch poll.
    fn batch(&self, ids: &[&str], now: i64) -> Vec<Value> {
        let mut inner = self.lock();
        let views: Vec<Value> = ids
            .iter()
            .filter_map(|id| inner.by_id.get(*id))
            .map(|&i| inner.ops[i].view(now, &self.base_url))
            .collect();
        inner.stats.batch_polls += 1;
        inner.stats.batch_polled_operations += views.len() as u64;
        views
    }
}

/// `op_` and 24 lowercase hex digits.
fn op_id(rng: &mut ChaCha8Rng) -> String {
    let bytes: [u8; 12] = rng.random();
    format!("op_{}", hex::encode(bytes))
}

fn status_url(base_url: &str, id: &str) -> String {
    format!("{base_url}/operations/{id}")
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

/// The order a submission names.
struct OrderRef {
    id: String,
    number: Option<String>,
}

fn parse_order(body: &[u8]) -> Result<OrderRef, FulfilError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| FulfilError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(FulfilError::invalid("the body must be a JSON object"));
    };
    let id = match map.get("Id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(FulfilError::invalid("\"Id\" must be a non-empty string")),
        None => return Err(FulfilError::invalid("the order has no \"Id\"")),
    };
    let number = map
        .get("OrderNumber")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(OrderRef { id, number })
}

/// An error of the fulfilment API: `{"error": {"code", "message"}}`.
#[derive(Debug)]
struct FulfilError {
    status: StatusCode,
    code: &'static str,
    message: String,
    bearer_challenge: bool,
}

impl FulfilError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        FulfilError {
            status,
            code,
            message: message.into(),
            bearer_challenge: false,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        FulfilError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        FulfilError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn unauthorized(token_given: bool) -> Self {
        let message = if token_given {
            "the bearer token is not valid"
        } else {
            "an Authorization: Bearer token is required"
        };
        FulfilError {
            bearer_challenge: true,
            ..FulfilError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    fn unavailable() -> Self {
        FulfilError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the fulfilment system is temporarily unavailable",
        )
    }
}

impl IntoResponse for FulfilError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.bearer_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fulfilment\""),
            );
        }
        response
    }
}

type AppState = Arc<Shared>;

/// The API, to be nested under `/fulfilment`: every route (and the fallback) passes the
/// injected-error and token checks first.
pub(super) fn routes(shared: AppState) -> Router<AppState> {
    Router::new()
        .route("/orders", post(submit))
        .route("/operations", get(batch_status))
        .route("/operations/{id}", get(operation))
        .fallback(|| async { FulfilError::not_found("no such fulfilment resource") })
        .layer(middleware::from_fn_with_state(shared, guard))
}

/// The control routes under `/emulator/fulfilment`.
pub(super) fn control_routes() -> Router<AppState> {
    Router::new()
        .route("/emulator/fulfilment", get(get_control).put(put_control))
        .route("/emulator/fulfilment/operations", get(list_operations))
        .route(
            "/emulator/fulfilment/operations/{id}/progress",
            post(advance_operation),
        )
        .route(
            "/emulator/fulfilment/operations/{id}/complete",
            post(complete_operation),
        )
}

async fn guard(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let f = &shared.fulfilment;
    if f.inject_error() {
        return FulfilError::unavailable().into_response();
    }
    if let Err(e) = f.authorize(request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, FulfilError> {
    let raw = headers
        .get("idempotency-key")
        .ok_or_else(|| FulfilError::invalid("the Idempotency-Key header is required"))?;
    let key = raw
        .to_str()
        .map_err(|_| FulfilError::invalid("the Idempotency-Key header must be visible ASCII"))?;
    let len = key.chars().count();
    if !(1..=MAX_KEY_LEN).contains(&len) {
        return Err(FulfilError::invalid(format!(
            "the Idempotency-Key must be 1 to {MAX_KEY_LEN} characters, got {len}"
        )));
    }
    Ok(key.to_owned())
}

async fn submit(
    State(shared): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let f = &shared.fulfilment;
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(e) => {
            f.lock().stats.submit_requests += 1;
            return e.into_response();
        }
    };
    let submitted = match f.submit(&key, parse_order(&body), now_ms()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    shared.mark_dirty();
    let delay = f.config().submit_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    // `Location` names the operation on 202 (poll here) and 201 (created here), as HTTP has it;
    // a 200 replay of a finished operation needs no pointer.
    let (status, view) = match submitted {
        Submitted::Created { view, sync: true } => (StatusCode::CREATED, view),
        Submitted::Created { view, sync: false } => (StatusCode::ACCEPTED, view),
        Submitted::Replayed {
            view,
            finished: false,
        } => (StatusCode::ACCEPTED, view),
        Submitted::Replayed {
            view,
            finished: true,
        } => (StatusCode::OK, view),
    };
    let location = view["status_url"]
        .as_str()
        .and_then(|u| HeaderValue::from_str(u).ok());
    let mut response = (status, Json(view)).into_response();
    if let (false, Some(location)) = (status == StatusCode::OK, location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn operation(
    State(shared): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return FulfilError::not_found("no such operation").into_response();
    };
    let view = shared.fulfilment.poll(&id, now_ms());
    poll_delay(&shared.fulfilment).await;
    match view {
        Some(view) => Json(view).into_response(),
        None => FulfilError::not_found(format!("no operation {id}")).into_response(),
    }
}

async fn batch_status(
    State(shared): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let f = &shared.fulfilment;
    if !f.config().batch {
        return FulfilError::not_found("batch status is not supported").into_response();
    }
    let Ok(Query(params)) = query else {
        return FulfilError::invalid("the query string could not be parsed").into_response();
    };
    let mut seen = HashSet::new();
    let ids: Vec<&str> = params
        .get("ids")
        .map(|s| s.as_str())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .filter(|s| seen.insert(*s))
        .collect();
    if ids.is_empty() {
        return FulfilError::invalid("ids must list at least one operation id").into_response();
    }
    if ids.len() > MAX_BATCH_IDS {
        return FulfilError::invalid(format!(
            "at most {MAX_BATCH_IDS} ids per request, got {}",
            ids.len()
        ))
        .into_response();
    }
    let operations = f.batch(&ids, now_ms());
    poll_delay(f).await;
    Json(json!({ "operations": operations })).into_response()
}

/// Waits out the configured `poll_delay_ms`.
async fn poll_delay(f: &Fulfilment) {
    let delay = f.config().poll_delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
}

async fn get_control(State(shared): State<AppState>) -> Response {
    let f = &shared.fulfilment;
    Json(json!({"config": f.config(), "stats": f.stats()})).into_response()
}

async fn put_control(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    let patch: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return FulfilError::invalid(format!("the body is not valid JSON: {e}"))
                .into_response();
        }
    };
    let f = &shared.fulfilment;
    let mut inner = f.lock();
    match inner.config.merged(&patch) {
        Ok(config) => {
            inner.config = config.clone();
            drop(inner);
            tracing::info!(
                latency_ms = config.latency_ms,
                failure_rate = config.failure_rate,
                error_rate = config.error_rate,
                sync_rate = config.sync_rate,
                batch = config.batch,
                "Emulator fulfilment reconfigured"
            );
            Json(config).into_response()
        }
        Err(e) => FulfilError::invalid(e).into_response(),
    }
}

async fn list_operations(State(shared): State<AppState>) -> Response {
    Json(shared.fulfilment.operations()).into_response()
}

/// `POST /emulator/fulfilment/operations/{id}/progress` with `{"progress": 0..=99}`.
async fn advance_operation(
    State(shared): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let progress = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("progress").and_then(Value::as_u64))
        .filter(|p| *p <= 99);
    let Some(progress) = progress else {
        return FulfilError::invalid("the body must be {\"progress\": 0..99}").into_response();
    };
    if shared.fulfilment.advance(&id, progress as u8) {
        shared.mark_dirty();
        StatusCode::NO_CONTENT.into_response()
    } else {
        FulfilError::not_found(format!("no pending operation {id}")).into_response()
    }
}

/// `POST /emulator/fulfilment/operations/{id}/complete`: finish a pending operation now.
async fn complete_operation(State(shared): State<AppState>, Path(id): Path<String>) -> Response {
    if shared.fulfilment.complete(&id) {
        shared.mark_dirty();
        StatusCode::NO_CONTENT.into_response()
    } else {
        FulfilError::not_found(format!("no pending operation {id}")).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(latency_ms: u64, steps: u32) -> Operation {
        Operation {
            id: "op_1".into(),
            key: "k".into(),
            order_id: "801".into(),
            order_number: None,
            created_at: 1_000,
            latency_ms,
            steps,
            outcome: Outcome::Complete {
                external_id: "WH-000001".into(),
            },
            submissions: 1,
            progress_floor: 0,
        }
    }

    #[test]
    fn progress_rises_in_steps_and_stays_below_100_while_pending() {
        let o = op(200, 4);
        let at = |dt: i64| o.phase(1_000 + dt);
        assert_eq!(at(-5), (OperationStatus::Pending, 0));
        assert_eq!(at(0), (OperationStatus::Pending, 0));
        assert_eq!(at(49), (OperationStatus::Pending, 0));
        assert_eq!(at(50), (OperationStatus::Pending, 25));
        assert_eq!(at(120), (OperationStatus::Pending, 50));
        assert_eq!(at(199), (OperationStatus::Pending, 75));
        assert_eq!(at(200), (OperationStatus::Completed, 100));
        let one = op(100, 1);
        assert_eq!(one.phase(1_099), (OperationStatus::Pending, 0));
        let many = op(1_000, 1_000);
        assert_eq!(many.phase(1_999), (OperationStatus::Pending, 99));
        assert_eq!(op(0, 4).phase(1_000), (OperationStatus::Completed, 100));
    }

    #[test]
    fn merge_changes_only_the_given_fields_and_validates() {
        let base = FulfilmentConfig::default();
        let merged = base.merged(&json!({"failure_rate": 0.5})).unwrap();
        assert_eq!(merged.failure_rate, 0.5);
        assert_eq!(merged.latency_ms, base.latency_ms);
        assert_eq!(merged.token, base.token);
        assert_eq!(base.merged(&json!({"token": null})).unwrap().token, None);
        assert!(base.merged(&json!({"error_rate": 1.5})).is_err());
        assert!(base.merged(&json!({"sync_rate": -0.1})).is_err());
        assert!(base.merged(&json!({"progress_steps": 0})).is_err());
        assert!(base.merged(&json!({"latency": 3})).is_err());
        assert!(base.merged(&json!({"token": ""})).is_err());
        assert!(base.merged(&json!([1])).is_err());
    }

    #[test]
    fn sanitizing_clamps_instead_of_failing() {
        let c = FulfilmentConfig {
            failure_rate: f64::NAN,
            error_rate: 3.0,
            sync_rate: -1.0,
            progress_steps: 0,
            token: Some(String::new()),
            ..FulfilmentConfig::default()
        }
        .sanitized();
        assert_eq!((c.failure_rate, c.error_rate, c.sync_rate), (0.0, 1.0, 0.0));
        assert_eq!(c.progress_steps, 1);
        assert_eq!(c.token, None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn ids_and_outcomes_are_deterministic_per_seed() {
        let make = || {
            let f = Fulfilment::new(
                7,
                "https://x/fulfilment".into(),
                FulfilmentConfig {
                    failure_rate: 0.5,
                    ..FulfilmentConfig::default()
                },
                None,
            );
            for i in 0..8 {
                let order = Ok(OrderRef {
                    id: format!("801{i}"),
                    number: None,
                });
                assert!(f.submit(&format!("k{i}"), order, 0).is_ok());
            }
            f.snapshot().operations
        };
        let a = make();
        assert_eq!(a, make());
        assert!(a.iter().all(|o| {
            o.id.len() == 27
                && o.id.starts_with("op_")
                && o.id[3..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        }));
    }

    #[test]
    fn a_known_key_ignores_the_body_and_creates_nothing() {
        let f = Fulfilment::new(1, "u".into(), FulfilmentConfig::default(), None);
        let order = || {
            Ok(OrderRef {
                id: "801A".into(),
                number: Some("00000100".into()),
            })
        };
        assert!(matches!(
            f.submit("k", order(), 0),
            Ok(Submitted::Created { sync: false, .. })
        ));
        let replay = f.submit("k", Err(FulfilError::invalid("bad body")), 10);
        assert!(matches!(
            replay,
            Ok(Submitted::Replayed {
                finished: false,
                ..
            })
        ));
        let s = f.stats();
        assert_eq!((s.operations_created, s.idempotent_replays), (1, 1));
        assert_eq!(f.operations()[0].submissions, 2);
    }

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
