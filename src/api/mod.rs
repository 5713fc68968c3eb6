//! The admin HTTP API on `SFCDC_ADMIN_ADDR`: health, metrics, the channels and quarantined
//! events, and the operator controls of jobs and outbox deliveries (the same operations as
//! `sfcdc jobs …` and `sfcdc deliveries …`).
//!
//! **Nothing but the probes answers without a token** (see [`auth`]): reads need the viewer
//! token (`SFCDC_READ_TOKEN`) or the operator token (`SFCDC_ADMIN_TOKEN`), changes the operator
//! token, and `/metrics` its own token when `SFCDC_METRICS_TOKEN` is set. **Bad requests get a reason**: every error is JSON `{"error": "…"}` with a
//! 4xx status that says what to fix; path ids, query parameters and bodies are parsed here,
//! never by an extractor that would answer in its own words. The server is plain HTTP and binds
//! to loopback by default: put it behind a TLS-terminating proxy to expose it.

pub mod actions;
pub mod auth;
pub mod openapi;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::store::queue::{ActionError, DeliveryFilter, DeliveryState, Queue};
use crate::store::{AnyStore, JobFilter, JobState, Store};
use crate::telemetry::health::Liveness;
use crate::telemetry::metrics::Metrics;

/// The default admin address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9180";

/// Most rows a list returns.
const MAX_LIMIT: i64 = 1000;

/// The query parameters each list accepts (and `openapi` documents).
const JOB_PARAMS: &[&str] = &["state", "order_id", "limit"];
const DELIVERY_PARAMS: &[&str] = &["state", "job_id", "limit"];
const QUARANTINE_PARAMS: &[&str] = &["state", "limit"];
const AUDIT_PARAMS: &[&str] = &["limit", "before"];

/// Admin settings.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `SFCDC_ADMIN_ADDR`; `None` when set to `off`.
    pub addr: Option<SocketAddr>,
    /// `SFCDC_ADMIN_TOKEN`: the operator role (reads and changes).
    pub token: Option<SecretString>,
    /// `SFCDC_METRICS_TOKEN`: when set, `/metrics` needs it.
    pub metrics_token: Option<SecretString>,
}

impl AdminConfig {
    /// Reads `SFCDC_ADMIN_ADDR` and `SFCDC_ADMIN_TOKEN`.
    pub fn from_env(env: &Env) -> Result<AdminConfig, ConfigError> {
        let addr = env.parse_or("SFCDC_ADMIN_ADDR", Some(default_addr()), |s| {
            if s.eq_ignore_ascii_case("off") {
                Ok(None)
            } else {
                s.parse()
                    .map(Some)
                    .map_err(|_| "expected HOST:PORT such as 127.0.0.1:9180, or off".to_owned())
            }
        })?;
        let token = env.token("SFCDC_ADMIN_TOKEN", 16)?;
        let metrics_token = env.token("SFCDC_METRICS_TOKEN", 16)?;
        Ok(AdminConfig {
            addr,
            token,
            metrics_token,
        })
    }
}

fn default_addr() -> SocketAddr {
    DEFAULT_ADDR.parse().expect("the default address parses")
}

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The store.
    pub store: Arc<AnyStore>,
    /// The metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Who may do what.
    access: auth::Access,
    /// The channels' liveness; `None` when no subscriber runs in this process.
    liveness: Option<Arc<Liveness>>,
    /// Ages and operator actions are judged by it.
    clock: Clock,
    /// The configured channels and this instance's id, for the channel views.
    fleet: Arc<(Vec<String>, String)>,
    /// The re-drive of quarantined events, when the ingest side runs in this process.
    redriver: Option<actions::SharedRedrive>,
    /// The OpenAPI document served at `/openapi.json`.
    openapi: Arc<String>,
}

impl AdminState {
    /// State for a server guarded by `access`.
    pub fn new(store: Arc<AnyStore>, metrics: Arc<Metrics>, access: auth::Access) -> Self {
        AdminState {
            store,
            metrics,
            access,
            liveness: None,
            clock: Clock::system(),
            fleet: Arc::new((Vec::new(), String::new())),
            redriver: None,
            openapi: Arc::new(openapi::document(None)),
        }
    }

    /// Serves the API's document with `extra` (the routes other modules merge in) at
    /// `/openapi.json`.
    pub fn with_openapi(mut self, extra: utoipa::openapi::OpenApi) -> Self {
        self.openapi = Arc::new(openapi::document(Some(extra)));
        self
    }

    /// Re-drives quarantined events with `redriver`.
    pub fn with_redrive(mut self, redriver: actions::SharedRedrive) -> Self {
        self.redriver = Some(redriver);
        self
    }

    /// Who may do what.
    pub fn access(&self) -> &auth::Access {
        &self.access
    }

    /// The channels' liveness, when a subscriber runs in this process.
    pub fn liveness(&self) -> Option<&Arc<Liveness>> {
        self.liveness.as_ref()
    }

    /// The time operator actions and ages are judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The configured `channels`, seen from instance `instance_id` (`GET /channels`).
    pub fn with_channels(mut self, channels: Vec<String>, instance_id: String) -> Self {
        self.fleet = Arc::new((channels, instance_id));
        self
    }

    /// Makes `/readyz` and `/metrics` report these channels.
    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// Judges ages and stamps operator actions with `clock`'s time.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The operator behind the request's token (401 or 403 otherwise).
    fn authorize(&self, headers: &HeaderMap) -> Result<actions::Actor, ApiError> {
        self.access
            .require(headers, auth::Role::Operator)
            .map(actions::Actor::api)
    }

    /// Checks that the request's token may read.
    fn may_read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.access.require(headers, auth::Role::Viewer).map(|_| ())
    }
}

/// An error answer: a status and a reason.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    /// An answer with `status` and `reason`.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> ApiError {
        ApiError(status, reason.into())
    }

    /// The answer's status.
    pub fn status(&self) -> StatusCode {
        self.0
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            ActionError::WrongState { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
            ActionError::Store(e) => e.into(),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "Admin request failed in the store");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; try again".into(),
        )
    }
}

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jobs", get(list_jobs))
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}", get(show_delivery))
        .route("/deliveries/{id}/retry", post(retry_delivery))
        .route("/deliveries/{id}/cancel", post(cancel_delivery))
        .route("/channels", get(list_channels))
        .route("/quarantine", get(list_quarantine))
        .route("/quarantine/{id}", get(show_quarantine))
        .route("/quarantine/{id}/redrive", post(redrive_quarantine))
        .route("/channels/reset", post(reset_channel))
        .route("/audit", get(list_audit))
        .route("/openapi.json", get(serve_openapi))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see the README's admin API section".into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: reads are GET, changes are POST".into(),
            )
        })
        .with_state(state)
}

/// Serves `router` on `listener` until `cancel`.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, cancel: CancellationToken) {
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "The admin server failed");
    }
}

#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "The process is up", body = openapi::Health)))]
async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// How long a probe or a scrape waits for the store: an unreachable database would otherwise
/// hold the request for the pool's whole acquire timeout, beyond any prober's patience.
const STORE_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A store query bounded by [`STORE_PROBE_TIMEOUT`].
async fn probe<T>(
    query: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, String> {
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, query).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(STORE_PROBE_TIMEOUT)
        )),
    }
}

/// Ready when the store answers and every channel had a live stream within the keepalive
/// bound; otherwise 503 naming what fails.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "The store answers and every channel is live", body = openapi::Ready),
        (status = 503, description = "Not ready; `error` says why", body = openapi::Ready)))]
async fn readyz(State(s): State<AdminState>) -> Response {
    let now = s.clock.now_ms();
    let channels = s
        .liveness
        .as_ref()
        .map(|l| l.statuses(now))
        .unwrap_or_default();
    let mut problems: Vec<String> = channels
        .iter()
        .filter_map(|c| {
            c.problem
                .as_ref()
                .map(|p| format!("channel {} {p}", c.channel))
        })
        .collect();
    let store = match probe(s.store.checkpoints()).await {
        Ok(_) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "Not ready: the store is unreachable");
            problems.insert(0, "the store is unreachable".to_owned());
            "unreachable"
        }
    };
    let ready = problems.is_empty();
    let mut body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "store": store,
        "channels": channels,
    });
    if !ready {
        body["error"] = format!("not ready: {}", problems.join("; ")).into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Refreshes the figures read at scrape time (rows by state, channel ages, memory), then
/// renders every metric.
#[utoipa::path(get, path = "/metrics", tag = "probes", security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text (OpenMetrics)", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "SFCDC_METRICS_TOKEN is set and was not sent", body = openapi::ErrorBody)))]
async fn metrics(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(e) = s.access.metrics(&headers) {
        return e.into_response();
    }
    let m = &s.metrics;
    m.observe_memory();
    let now = s.clock.now_ms();
    let counts = probe(s.store.state_counts()).await;
    let checkpoints = probe(s.store.checkpoints()).await;
    m.observe_store(counts.is_ok() && checkpoints.is_ok(), counts.as_ref().ok());
    if let Some(liveness) = &s.liveness {
        let stored = checkpoints.unwrap_or_default();
        for (health, status) in liveness.channels().iter().zip(liveness.statuses(now)) {
            let moved_at = health.committed_at_ms().or_else(|| {
                stored
                    .iter()
                    .find(|c| c.channel == health.name())
                    .map(|c| c.updated_at)
            });
            let age = moved_at.map(|at| (now - at).max(0) as f64 / 1000.0);
            m.observe_channel(health.name(), status.ready, age);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// A positive row id from the path.
fn id(what: &str, raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("'{raw}' is not a {what} id (a positive integer)"),
        )
    })
}

/// Query parameters, refusing any not in `known`.
struct Params(HashMap<String, String>);

impl Params {
    fn new(q: HashMap<String, String>, known: &[&str]) -> Result<Params, ApiError> {
        if let Some(bad) = q.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown query parameter '{bad}'; accepted: {}",
                    known.join(", ")
                ),
            ));
        }
        Ok(Params(q))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &self,
        key: &str,
        f: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        // A typed parameter given empty is a mistake, not an absent filter.
        self.0
            .get(key)
            .map(String::as_str)
            .map(|v| {
                f(v).ok_or_else(|| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("{key}: '{v}' is not valid; expected {expected}"),
                    )
                })
            })
            .transpose()
    }

    fn limit(&self) -> Result<i64, ApiError> {
        Ok(self
            .parse(
                "limit",
                |v| v.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)),
                "a number from 1 to 1000",
            )?
            .unwrap_or(100))
    }
}

/// The job states, for messages: `available, running, …`.
pub(crate) fn job_states() -> String {
    states(&JobState::ALL, JobState::as_str)
}

/// The delivery states, for messages: `pending, delivered, …`.
pub(crate) fn delivery_states() -> String {
    states(&DeliveryState::ALL, DeliveryState::as_str)
}

fn states<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str) -> String {
    all.iter().map(|s| name(*s)).collect::<Vec<_>>().join(", ")
}

#[utoipa::path(get, path = "/jobs", tag = "jobs", security(("bearer" = [])), params(openapi::JobsQuery),
    responses(
        (status = 200, description = "Jobs, newest first", body = Vec<crate::store::JobRow>),
        openapi::ReadErrors))]
async fn list_jobs(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Vec<crate::store::JobRow>> {
    s.may_read(&headers)?;
    let p = Params::new(q, JOB_PARAMS)?;
    let filter = JobFilter {
        state: p.parse("state", JobState::parse, &job_states())?,
        order_id: p.get("order_id").map(str::to_owned),
        limit: Some(p.limit()?),
    };
    Ok(axum::Json(s.store.jobs(&filter).await?))
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = crate::store::JobRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        openapi::ReadErrors))]
async fn show_job(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<crate::store::JobRow> {
    s.may_read(&headers)?;
    let id = id("job", &raw)?;
    let job = s.store.job(id).await?;
    job.map(axum::Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("there is no job {id}")))
}

#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The job id")),
    responses(
        (status = 200, description = "The job, available again with fresh attempts", body = crate::store::JobRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        (status = 409, description = "The action does not apply in the row's state", body = openapi::ErrorBody),
        openapi::ChangeErrors))]
async fn retry_job(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<crate::store::JobRow> {
    let actor = s.authorize(&headers)?;
    let id = id("job", &raw)?;
    Ok(axum::Json(s.retry_job(&actor, id).await?))
}

/// Most characters an operator's cancel reason may have.
const MAX_REASON: usize = 500;

/// The recorded reason of an operator's cancel, from the reason given (if any), trimmed; the
/// error says what to fix. Both front ends (the API and `sfcdc jobs cancel`) use it.
pub(crate) fn operator_reason(reason: Option<&str>) -> Result<String, String> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON => {
            Err(format!("reason: at most {MAX_REASON} characters"))
        }
        Some(r) if !r.trim().is_empty() => Ok(format!("cancelled by an operator: {}", r.trim())),
        _ => Ok("cancelled by an operator".to_owned()),
    }
}

/// The body of a cancel: optional, `{"reason": "…"}`.
fn cancel_reason(body: &Bytes) -> Result<String, ApiError> {
    // No body at all, or `null`, is no reason. Anything else must be the JSON object: a body
    // of only whitespace is not JSON, and an invalid request never acts.
    if body.is_empty() {
        return operator_reason(None).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e));
    }
    let c: Option<openapi::CancelBody> = serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be JSON like {{\"reason\": \"…\"}}: {e}"),
        )
    })?;
    operator_reason(c.and_then(|c| c.reason).as_deref())
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))
}

#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The job id")),
    request_body(content = Option<openapi::CancelBody>, description = "Optional: why"),
    responses(
        (status = 200, description = "The job, cancelled", body = crate::store::JobRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        (status = 409, description = "The action does not apply in the row's state", body = openapi::ErrorBody),
        openapi::ChangeErrors))]
async fn cancel_job(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> ApiResult<crate::store::JobRow> {
    let actor = s.authorize(&headers)?;
    let id = id("job", &raw)?;
    let reason = cancel_reason(&body)?;
    Ok(axum::Json(s.cancel_job(&actor, id, &reason).await?))
}

#[utoipa::path(get, path = "/deliveries", tag = "deliveries", security(("bearer" = [])), params(openapi::DeliveriesQuery),
    responses(
        (status = 200, description = "Deliveries, newest first", body = Vec<crate::store::queue::DeliveryRow>),
        openapi::ReadErrors))]
async fn list_deliveries(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Vec<crate::store::queue::DeliveryRow>> {
    s.may_read(&headers)?;
    let p = Params::new(q, DELIVERY_PARAMS)?;
    let filter = DeliveryFilter {
        state: p.parse("state", DeliveryState::parse, &delivery_states())?,
        job_id: p.parse("job_id", |v| v.parse().ok(), "a job id")?,
        limit: Some(p.limit()?),
    };
    Ok(axum::Json(s.store.deliveries(&filter).await?))
}

#[utoipa::path(get, path = "/deliveries/{id}", tag = "deliveries", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The delivery id")),
    responses(
        (status = 200, description = "The delivery", body = crate::store::queue::DeliveryRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        openapi::ReadErrors))]
async fn show_delivery(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<crate::store::queue::DeliveryRow> {
    s.may_read(&headers)?;
    let id = id("delivery", &raw)?;
    let d = s.store.delivery(id).await?;
    d.map(axum::Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("there is no delivery {id}")))
}

#[utoipa::path(post, path = "/deliveries/{id}/retry", tag = "deliveries", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The delivery id")),
    responses(
        (status = 200, description = "The delivery, pending again", body = crate::store::queue::DeliveryRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        (status = 409, description = "The action does not apply in the row's state", body = openapi::ErrorBody),
        openapi::ChangeErrors))]
async fn retry_delivery(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<crate::store::queue::DeliveryRow> {
    let actor = s.authorize(&headers)?;
    let id = id("delivery", &raw)?;
    Ok(axum::Json(s.retry_delivery(&actor, id).await?))
}

#[utoipa::path(post, path = "/deliveries/{id}/cancel", tag = "deliveries", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The delivery id")),
    responses(
        (status = 200, description = "The delivery, cancelled", body = crate::store::queue::DeliveryRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        (status = 409, description = "The action does not apply in the row's state", body = openapi::ErrorBody),
        openapi::ChangeErrors))]
async fn cancel_delivery(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<crate::store::queue::DeliveryRow> {
    let actor = s.authorize(&headers)?;
    let id = id("delivery", &raw)?;
    Ok(axum::Json(s.cancel_delivery(&actor, id).await?))
}

#[utoipa::path(get, path = "/channels", tag = "channels", security(("bearer" = [])),
    responses(
        (status = 200, description = "Every configured channel", body = Vec<crate::store::lease::ChannelView>),
        openapi::ReadErrors))]
async fn list_channels(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Vec<crate::store::lease::ChannelView>> {
    s.may_read(&headers)?;
    Ok(axum::Json(s.channel_views().await?))
}

impl AdminState {
    /// Every configured channel: its holder, generation, checkpoint and age.
    pub async fn channel_views(
        &self,
    ) -> Result<Vec<crate::store::lease::ChannelView>, crate::store::StoreError> {
        use crate::store::lease::Leases;
        let leases = self.store.leases().await?;
        let checkpoints = self.store.checkpoints().await?;
        let (channels, me) = &*self.fleet;
        Ok(crate::store::lease::channel_views(
            channels,
            me,
            &leases,
            &checkpoints,
            self.clock.now_ms(),
        ))
    }
}

#[utoipa::path(get, path = "/quarantine", tag = "quarantine", security(("bearer" = [])), params(openapi::QuarantineQuery),
    responses(
        (status = 200, description = "Quarantined events, oldest first", body = Vec<crate::store::QuarantineRow>),
        openapi::ReadErrors))]
async fn list_quarantine(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Vec<crate::store::QuarantineRow>> {
    s.may_read(&headers)?;
    let p = Params::new(q, QUARANTINE_PARAMS)?;
    let open_only = p
        .parse(
            "state",
            |v| match v {
                "open" => Some(true),
                "all" => Some(false),
                _ => None,
            },
            "open or all",
        )?
        .unwrap_or(true);
    let limit = p.limit()? as usize;
    let mut rows = s.store.quarantined(open_only).await?;
    rows.truncate(limit);
    Ok(axum::Json(rows))
}

#[utoipa::path(get, path = "/quarantine/{id}", tag = "quarantine", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The entry id")),
    responses(
        (status = 200, description = "The quarantined event", body = crate::store::QuarantineRow),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        openapi::ReadErrors))]
async fn show_quarantine(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<crate::store::QuarantineRow> {
    s.may_read(&headers)?;
    let id = id("quarantined event", &raw)?;
    s.store
        .quarantine_entry(id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("there is no quarantined event {id}"),
            )
        })
}

#[utoipa::path(post, path = "/quarantine/{id}/redrive", tag = "quarantine", security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The entry id")),
    responses(
        (status = 200, description = "Decoded and evaluated again; the entry is resolved", body = openapi::Redriven),
        (status = 400, description = "A bad id, parameter or body; the reason says what to fix", body = openapi::ErrorBody),
        (status = 401, description = "No token, or one that is neither role's", body = openapi::ErrorBody),
        (status = 403, description = "A viewer asked for a change, or SFCDC_ADMIN_TOKEN is not set", body = openapi::ErrorBody),
        (status = 404, description = "No such row", body = openapi::ErrorBody),
        (status = 409, description = "Already resolved, or it still fails (the reason is recorded)", body = openapi::ErrorBody),
        (status = 503, description = "The store, Salesforce or the schema is unavailable for now", body = openapi::ErrorBody)))]
async fn redrive_quarantine(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> ApiResult<serde_json::Value> {
    let actor = s.authorize(&headers)?;
    let id = id("quarantined event", &raw)?;
    let outcome = s.redrive(&actor, id).await?;
    Ok(axum::Json(
        serde_json::json!({ "id": id, "outcome": outcome }),
    ))
}

/// `earliest`, `latest` or a replay id in hex.
pub fn parse_position(s: &str) -> Option<crate::decode::Position> {
    use crate::decode::{Position, ReplayId};
    match s.trim() {
        "earliest" => Some(Position::Earliest),
        "latest" => Some(Position::Latest),
        hex => ReplayId::from_hex(hex)
            .ok()
            .filter(|r| !r.is_empty())
            .map(Position::After),
    }
}

#[utoipa::path(post, path = "/channels/reset", tag = "channels", security(("bearer" = [])),
    request_body = openapi::ResetBody,
    responses(
        (status = 200, description = "The checkpoint is reset and the holder fenced out", body = openapi::ResetBody),
        (status = 404, description = "Not a configured channel", body = openapi::ErrorBody),
        openapi::ChangeErrors))]
async fn reset_channel(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<serde_json::Value> {
    let actor = s.authorize(&headers)?;
    let r: openapi::ResetBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be JSON like {{\"channel\": \"/data/OrderChangeEvent\", \"to\": \"earliest\"}}: {e}"
            ),
        )
    })?;
    let to = parse_position(&r.to).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "to: '{}' is not earliest, latest or a replay id in hex",
                r.to
            ),
        )
    })?;
    s.reset_checkpoint(&actor, &r.channel, &to).await?;
    Ok(axum::Json(serde_json::json!({
        "channel": r.channel,
        "to": actions::position_name(&to),
    })))
}

#[utoipa::path(get, path = "/openapi.json", tag = "contract", security(("bearer" = [])),
    responses(
        (status = 200, description = "This document", content_type = "application/json", body = Object),
        (status = 401, description = "No token, or one that is neither role's", body = openapi::ErrorBody),
        (status = 403, description = "No role's token is configured", body = openapi::ErrorBody)))]
async fn serve_openapi(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(e) = s.may_read(&headers) {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_str().to_owned(),
    )
        .into_response()
}

#[utoipa::path(get, path = "/audit", tag = "audit", security(("bearer" = [])), params(openapi::AuditQuery),
    responses(
        (status = 200, description = "The audit trail, newest first", body = Vec<crate::store::audit::AuditRow>),
        openapi::ReadErrors))]
async fn list_audit(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Vec<crate::store::audit::AuditRow>> {
    use crate::store::audit::Audit;
    s.may_read(&headers)?;
    let p = Params::new(q, AUDIT_PARAMS)?;
    let before = p.parse(
        "before",
        |v| v.parse::<i64>().ok().filter(|n| *n > 0),
        "an audit entry id",
    )?;
    Ok(axum::Json(s.store.audit_trail(p.limit()?, before).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_address_defaults_and_can_be_turned_off() {
        let c = AdminConfig::from_env(&Env::default()).unwrap();
        assert_eq!(c.addr, Some(default_addr()));
        let off = AdminConfig::from_env(&Env::from_pairs([("SFCDC_ADMIN_ADDR", "off")])).unwrap();
        assert_eq!(off.addr, None);
        let bad = AdminConfig::from_env(&Env::from_pairs([("SFCDC_ADMIN_ADDR", "localhost")]))
            .unwrap_err();
        assert_eq!(bad.var, "SFCDC_ADMIN_ADDR");
        let short =
            AdminConfig::from_env(&Env::from_pairs([("SFCDC_ADMIN_TOKEN", "abc")])).unwrap_err();
        assert_eq!(short.var, "SFCDC_ADMIN_TOKEN");
        assert!(!short.to_string().contains("abc"));
    }

    #[test]
    fn cancel_bodies_are_optional_but_checked() {
        assert_eq!(
            cancel_reason(&Bytes::new()).unwrap(),
            "cancelled by an operator"
        );
        assert_eq!(
            cancel_reason(&Bytes::from_static(br#"{"reason":"duplicate"}"#)).unwrap(),
            "cancelled by an operator: duplicate"
        );
        assert_eq!(
            cancel_reason(&Bytes::from_static(b"null")).unwrap(),
            "cancelled by an operator"
        );
        assert_eq!(
            cancel_reason(&Bytes::from_static(b"\n")).unwrap_err().0,
            StatusCode::BAD_REQUEST,
            "whitespace is not JSON"
        );
        assert_eq!(
            cancel_reason(&Bytes::from_static(b"not json"))
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            cancel_reason(&Bytes::from_static(br#"{"why":"x"}"#))
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn operator_reasons_are_trimmed_and_limited() {
        assert_eq!(operator_reason(None).unwrap(), "cancelled by an operator");
        assert_eq!(
            operator_reason(Some("   ")).unwrap(),
            "cancelled by an operator"
        );
        assert_eq!(
            operator_reason(Some("  duplicate \n")).unwrap(),
            "cancelled by an operator: duplicate"
        );
        assert!(operator_reason(Some(&"é".repeat(500))).is_ok());
        assert_eq!(
            operator_reason(Some(&"x".repeat(501))).unwrap_err(),
            "reason: at most 500 characters"
        );
    }

    #[test]
    fn state_lists_name_every_state() {
        assert_eq!(
            job_states(),
            "available, running, polling, retryable, completed, cancelled, dead"
        );
        assert_eq!(delivery_states(), "pending, delivered, dead, cancelled");
    }

    #[test]
    fn ids_must_be_positive_integers() {
        assert_eq!(id("job", "42").unwrap(), 42);
        for bad in ["0", "-1", "abc", "1.5", ""] {
            assert_eq!(
                id("job", bad).unwrap_err().0,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}
