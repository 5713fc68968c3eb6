//! The API's contract: an OpenAPI 3.1 document generated from the handlers' own annotations
//! (`#[utoipa::path]` on each handler, `ToSchema` on each row type), served at `/openapi.json`.
//!
//! The document covers every JSON endpoint of the admin server (the order reads are merged in
//! from `cache::http`), its role (a bearer token: the viewer's or the operator's), and its error
//! shape (`{"error": "…"}` for every 4xx and 5xx). The query parameters are documented by the
//! structs below; the handlers accept exactly those names (the tests compare them), so the
//! contract and the code cannot drift apart unnoticed.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use crate::store::JobState;
use crate::store::queue::DeliveryState;

/// Every error: a status and a reason that says what to fix.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, and what is accepted.
    pub error: String,
}

/// The errors every read can answer (a viewer's or an operator's token).
#[derive(IntoResponses)]
#[allow(dead_code)] // described in the document, never built
pub enum ReadErrors {
    /// A bad id, parameter or body.
    #[response(
        status = 400,
        description = "A bad id, parameter or body; the reason says what to fix"
    )]
    BadRequest(ErrorBody),
    /// No token, or a wrong one.
    #[response(status = 401, description = "No token, or one that is neither role's")]
    Unauthorized(ErrorBody),
    /// No role's token is configured.
    #[response(status = 403, description = "No role's token is configured")]
    Forbidden(ErrorBody),
    /// The store is unavailable.
    #[response(status = 503, description = "The store is unavailable")]
    Unavailable(ErrorBody),
}

/// The errors every change can answer (the operator's token).
#[derive(IntoResponses)]
#[allow(dead_code)] // described in the document, never built
pub enum ChangeErrors {
    /// A bad id, parameter or body.
    #[response(
        status = 400,
        description = "A bad id, parameter or body; the reason says what to fix"
    )]
    BadRequest(ErrorBody),
    /// No token, or a wrong one.
    #[response(status = 401, description = "No token, or one that is neither role's")]
    Unauthorized(ErrorBody),
    /// A viewer asked, or no operator token is configured.
    #[response(
        status = 403,
        description = "A viewer asked for a change, or SFCDC_ADMIN_TOKEN is not set"
    )]
    Forbidden(ErrorBody),
    /// The store is unavailable.
    #[response(status = 503, description = "The store is unavailable")]
    Unavailable(ErrorBody),
}

/// `/healthz`.
#[derive(Debug, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `/readyz`.
#[derive(Debug, ToSchema)]
pub struct Ready {
    /// `ready` or `not ready`.
    pub status: String,
    /// `ok` or `unreachable`.
    pub store: String,
    /// Each channel's liveness and this instance's role in it.
    #[schema(value_type = Vec<Object>)]
    pub channels: Vec<serde_json::Value>,
    /// Why it is not ready.
    pub error: Option<String>,
}

/// The optional body of a cancel (`null` or none at all is no reason).
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why, for the record (at most 500 characters).
    #[schema(max_length = 500)]
    pub reason: Option<String>,
}

/// A checkpoint reset, and its answer.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// A configured channel, e.g. `/data/OrderChangeEvent`.
    #[schema(pattern = r"^/(data|event)/[A-Za-z0-9_]+$")]
    pub channel: String,
    /// `earliest`, `latest`, or a replay id in hex.
    #[schema(pattern = r"^(earliest|latest|([0-9a-fA-F]{2})+)$")]
    pub to: String,
}

/// What a re-drive did.
#[derive(Debug, ToSchema)]
pub struct Redriven {
    /// The entry.
    pub id: i64,
    /// What came of it.
    pub outcome: String,
}

/// `GET /jobs` parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// Only jobs in this state.
    #[param(inline)]
    pub state: Option<JobState>,
    /// Only jobs of this order.
    pub order_id: Option<String>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /deliveries` parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this state.
    #[param(inline)]
    pub state: Option<DeliveryState>,
    /// Only this job's.
    pub job_id: Option<i64>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Which quarantined events.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum QuarantineState {
    /// Not re-driven yet (the default).
    Open,
    /// Resolved ones too.
    All,
}

/// `GET /quarantine` parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QuarantineQuery {
    /// `open` (default) or `all`.
    #[param(inline)]
    pub state: Option<QuarantineState>,
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// `GET /audit` parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only entries older than this one (the next page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

/// The bearer scheme every guarded operation names.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "SFCDC_READ_TOKEN (viewer: reads) or SFCDC_ADMIN_TOKEN (operator: reads and changes)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The admin API's document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sfcdc admin API",
        description = "Health, metrics, jobs, deliveries, channels, quarantined events, the audit trail and cached order reads of one sfcdc instance. Only /healthz, /readyz and (unless SFCDC_METRICS_TOKEN is set) /metrics answer without a bearer token; every error is JSON {\"error\": \"…\"}."
    ),
    paths(
        super::healthz,
        super::readyz,
        super::metrics,
        super::list_jobs,
        super::show_job,
        super::retry_job,
        super::cancel_job,
        super::list_deliveries,
        super::show_delivery,
        super::retry_delivery,
        super::cancel_delivery,
        super::list_channels,
        super::reset_channel,
        super::list_quarantine,
        super::show_quarantine,
        super::redrive_quarantine,
        super::list_audit,
        super::serve_openapi,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

/// The document as JSON, with `extra` merged in.
pub fn document(extra: Option<utoipa::openapi::OpenApi>) -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    if let Some(extra) = extra {
        doc.merge(extra);
    }
    doc.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "The OpenAPI document does not serialize");
        "{}".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a parameter struct documents.
    fn names<P: IntoParams>() -> Vec<String> {
        P::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn documented_parameters_are_the_accepted_ones() {
        assert_eq!(names::<JobsQuery>(), super::super::JOB_PARAMS);
        assert_eq!(names::<DeliveriesQuery>(), super::super::DELIVERY_PARAMS);
        assert_eq!(names::<QuarantineQuery>(), super::super::QUARANTINE_PARAMS);
        assert_eq!(names::<AuditQuery>(), super::super::AUDIT_PARAMS);
    }

    #[test]
    fn every_route_is_documented_with_its_security_and_errors() {
        let doc: serde_json::Value = serde_json::from_str(&document(None)).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/jobs",
            "/jobs/{id}",
            "/jobs/{id}/retry",
            "/jobs/{id}/cancel",
            "/deliveries",
            "/deliveries/{id}",
            "/deliveries/{id}/retry",
            "/deliveries/{id}/cancel",
            "/channels",
            "/channels/reset",
            "/quarantine",
            "/quarantine/{id}",
            "/quarantine/{id}/redrive",
            "/audit",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(p), "{p} is not documented");
        }
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                let open = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
                if !open {
                    assert_eq!(
                        op["security"],
                        serde_json::json!([{"bearer": []}]),
                        "{method} {path}"
                    );
                    assert!(op["responses"].get("401").is_some(), "{method} {path}");
                }
            }
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
