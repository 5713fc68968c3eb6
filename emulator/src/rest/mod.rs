//! The emulated REST API, shaped as Salesforce exposes it, plus the emulator's control API.
//!
//! Salesforce routes: OAuth (`/services/oauth2/token`, `/services/oauth2/userinfo`, the `/id/`
//! identity URL), SOAP `login()`, the versions and resource lists (`/services/data`,
//! `/services/data/vNN.N`), describe (`rest/describe.rs`), records
//! (`/services/data/vNN.N/sobjects/{type}/{id}`), sObject Collections updates
//! (`rest/composite.rs`), queries (`/services/data/vNN.N/query?q=`), Bulk API 2.0 query jobs
//! (`rest/bulk_query.rs`), the limits resource and
//! publishing the fulfilment platform event. Salesforce resources the emulator does not serve
//! answer 501 naming the feature (`rest/unemulated.rs`), other paths 404, and a method a route
//! does not take 405. Errors use the Salesforce shapes: `[{"message":…,"errorCode":…}]` for the
//! data API and `{"error":…,"error_description":…}` for OAuth.
//!
//! Control routes live under `/emulator/`: faults, bulk generation, undelete, and counters of
//! every call, which tests use to prove what a client did or did not call.
//!
//! The same router mounts the systems outside Salesforce: the fulfilment API under `/fulfilment`
//! ([`super::fulfilment`]) and the notification sinks ([`super::sinks`]). They are counted like
//! every route but are not slowed by the `delay` fault, which stands for a slow Salesforce.
//!
//! The `rest_unavailable` fault refuses data API requests (under `/services/data/`) with 503
//! `SERVER_UNAVAILABLE` before they reach their handler; OAuth, SOAP login, the control API and
//! the systems outside Salesforce are spared. A refused request is still counted under its route.
//! Every authenticated data API request takes one from the org's daily allocation and says so in
//! `Sforce-Limit-Info`; past it, the answer is 403 `REQUEST_LIMIT_EXCEEDED` ([`crate::limits`]).

mod bulk_query;
mod composite;
mod describe;
mod unemulated;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::Shared;
use super::auth::{self, TokenRequest, TokenState};
use super::faults::Fault;
use super::org::{Actor, Org, OrgError, now_ms};
use super::soql;
use super::world::{FULFILMENT_EVENT, FULFILMENT_FIELDS};

/// Rows per query page, as Salesforce returns them by default.
const QUERY_PAGE: usize = 2000;

type AppState = Arc<Shared>;

pub(crate) use bulk_query::BulkJobs;

/// A Salesforce data-API error response.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn session() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    fn not_found() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    fn request_limit() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
    }

    fn unavailable() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVER_UNAVAILABLE",
            "The server is temporarily unable to service your request. Please try again later.",
        )
    }
}

impl From<OrgError> for ApiError {
    fn from(e: OrgError) -> Self {
        ApiError {
            status: StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            code: e.error_code(),
            message: e.to_string(),
        }
    }
}

impl From<soql::SoqlError> for ApiError {
    fn from(e: soql::SoqlError) -> Self {
        let status = match e {
            soql::SoqlError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.error_code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!([{"message": self.message, "errorCode": self.code}])),
        )
            .into_response()
    }
}

/// Most bytes of a request body the emulator reads; a longer body is refused with 413.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// Builds the router; every route is counted, Salesforce routes are subject to the delay fault and
/// data API routes to the REST unavailability fault. Every request is read whole before it is
/// routed, and a trailing slash on its path is ignored (`whole_request`).
pub fn router(shared: AppState) -> Router {
    let routes = Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/oauth2/userinfo", get(userinfo))
        .route("/services/Soap/u/{version}", post(soap_login))
        .route("/id/{org}/{user}", get(userinfo))
        .route("/services/data", get(versions))
        .route("/services/data/{version}", get(resources))
        .route("/services/data/{version}/sobjects", get(global_describe))
        .route(
            "/services/data/{version}/sobjects/{sobject}",
            get(sobject_info).post(create),
        )
        .route(
            "/services/data/{version}/sobjects/{sobject}/describe",
            get(sobject_describe),
        )
        .route(
            "/services/data/{version}/sobjects/{sobject}/{id}",
            get(read).patch(update).delete(delete),
        )
        .route(
            "/services/data/{version}/composite",
            get(composite::resources).fallback(unemulated::answer),
        )
        .route(
            "/services/data/{version}/composite/sobjects",
            patch(composite::update)
                .post(composite::create)
                .fallback(unemulated::answer),
        )
        .route(
            "/services/data/{version}/jobs/query",
            post(bulk_query::create)
                .get(bulk_query::list)
                .fallback(unemulated::answer),
        )
        .route(
            "/services/data/{version}/jobs/query/{id}",
            get(bulk_query::status)
                .patch(bulk_query::abort)
                .delete(bulk_query::delete)
                .fallback(unemulated::answer),
        )
        .route(
            "/services/data/{version}/jobs/query/{id}/results",
            get(bulk_query::results).fallback(unemulated::answer),
        )
        .route("/services/data/{version}/limits", get(limits))
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/{cursor}", get(query_more))
        // What Salesforce has under a version and the emulator does not: 501, or 404 for a path
        // Salesforce does not have either.
        .merge(unemulated::routes())
        .route("/emulator/faults", post(post_fault).delete(clear_faults))
        .route("/emulator/bulk", post(post_bulk))
        .route("/emulator/stats", get(get_stats))
        .route("/emulator/info", get(info))
        .route("/emulator/sobjects/{sobject}/{id}/undelete", post(undelete))
        .nest("/fulfilment", super::fulfilment::routes(shared.clone()))
        .merge(super::fulfilment::control_routes())
        .merge(super::sinks::routes())
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            count_and_fault,
        ))
        .with_state(shared);
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(whole_request))
}

/// Runs before routing. Salesforce accepts a trailing slash on its REST paths
/// (`GET …/query/?q=`, `POST …/sobjects/Order/`, `POST /services/Soap/u/62.0/`), so the path is
/// routed without it. And the body is read to its end before any handler answers: an HTTP/2
/// response sent while the client is still sending ends in a stream reset instead of a complete
/// answer, whatever the route (an unknown one included). A method a Salesforce route does not
/// take is answered 405 in Salesforce's error shape.
async fn whole_request(request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Some(uri) = without_trailing_slash(&parts.uri) {
        parts.uri = uri;
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "REQUEST_ENTITY_TOO_LARGE",
            format!("The request body is larger than {MAX_BODY} bytes"),
        )
        .into_response();
    };
    let method = parts.method.clone();
    let salesforce = parts.uri.path().starts_with("/services/");
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await;
    // The router's own 405 has no body; Salesforce's has its error shape.
    if salesforce
        && response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response
            .headers()
            .contains_key(axum::http::header::CONTENT_TYPE)
    {
        let allow = response
            .headers()
            .get(axum::http::header::ALLOW)
            .and_then(|v| v.to_str().ok());
        let mut answer = unemulated::method_not_allowed(&method, allow);
        if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
            answer
                .headers_mut()
                .insert(axum::http::header::ALLOW, allow.clone());
        }
        return answer;
    }
    response
}

/// `uri` without the trailing slashes of its path, if it has any (the root path `/` stays).
fn without_trailing_slash(uri: &axum::http::Uri) -> Option<axum::http::Uri> {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() == path.len() || trimmed.is_empty() {
        return None;
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    axum::http::Uri::from_parts(parts).ok()
}

async fn count_and_fault(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |m| m.as_str().to_owned(),
    );
    shared.stats.count(format!("{} {route}", request.method()));
    let salesforce = !["/emulator/", "/fulfilment", "/hooks/", "/repos/"]
        .iter()
        .any(|p| route.starts_with(p));
    let data_api = route.starts_with("/services/data/");
    // Taken on arrival, so the next N requests to arrive are the ones refused.
    let unavailable = data_api && shared.faults.take_rest_unavailable();
    if salesforce {
        shared.faults.delay().await;
    }
    if unavailable {
        return ApiError::unavailable().into_response();
    }
    if !data_api || bearer(&shared, request.headers()).is_err() {
        return next.run(request).await;
    }
    let (mut response, usage) = match shared.api_usage.take() {
        Ok(usage) => (next.run(request).await, usage),
        Err(usage) => (ApiError::request_limit().into_response(), usage),
    };
    if let Ok(value) = axum::http::HeaderValue::from_str(&usage.header()) {
        response.headers_mut().insert("sforce-limit-info", value);
    }
    response
}

/// Serves the router on `listener`, over TLS when a rustls configuration is given.
pub(super) fn spawn_server(
    shared: AppState,
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let cancel = shared.cancel.clone();
    let tasks = shared.tasks.clone();
    match tls {
        None => {
            shared.tasks.spawn(async move {
                use axum::serve::ListenerExt;
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let serve =
                    axum::serve(listener, router).with_graceful_shutdown(cancel.cancelled_owned());
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "Emulator REST server stopped");
                }
            });
        }
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            shared.tasks.spawn(async move {
                loop {
                    let (tcp, _) = tokio::select! {
                        () = cancel.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(e) => {
                                tracing::warn!(error = %e, "Emulator REST accept failed");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let router = router.clone();
                    let cancel = cancel.clone();
                    tasks.spawn(async move {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await
                        else {
                            return;
                        };
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let service = hyper_util::service::TowerToHyperService::new(router);
                        let builder = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        );
                        let conn = builder.serve_connection_with_upgrades(io, service);
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => {}
                            () = cancel.cancelled() => {
                                conn.as_mut().graceful_shutdown();
                                let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                            }
                        }
                    });
                }
            });
        }
    }
}

/// The access token of a request, if it is valid.
fn bearer(shared: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(ApiError::session)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("OAuth "))
        .ok_or_else(ApiError::session)?
        .trim();
    match shared.tokens.lock().expect("token lock").check(token) {
        TokenState::Valid => Ok(token.to_owned()),
        _ => Err(ApiError::session()),
    }
}

fn actor(shared: &Shared) -> Actor {
    Actor {
        user_id: shared
            .world
            .lock()
            .expect("world lock")
            .org
            .user_id
            .to_string(),
        origin: format!(
            "com/salesforce/api/rest/60.0;client={}",
            shared.credentials.client_id
        ),
    }
}

fn check_version(version: &str) -> Result<(), ApiError> {
    let ok = version
        .strip_prefix('v')
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

async fn token(
    State(shared): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    let Ok(Form(mut req)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body must be application/x-www-form-urlencoded",
        );
    };
    if let Some((id, secret)) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::basic_client)
    {
        req.client_id.get_or_insert(id);
        req.client_secret.get_or_insert(secret);
    }
    let audiences = vec![
        "https://login.salesforce.com".to_owned(),
        "https://test.salesforce.com".to_owned(),
        shared.instance_url.clone(),
        shared.instance_url.replace("127.0.0.1", "localhost"),
    ];
    let username = match auth::authenticate(&shared.credentials, &req, &audiences) {
        Ok(u) => u,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, e.error, &e.description),
    };
    let (access_token, user_id) = shared.issue_session();
    let id_url = format!("{}/id/{}/{}", shared.instance_url, shared.org_id, user_id);
    let issued_at = now_ms().to_string();
    let signature =
        auth::response_signature(&shared.credentials.client_secret, &id_url, &issued_at);
    tracing::debug!(%username, grant = req.grant_type.as_deref().unwrap_or(""), "Emulator issued an access token");
    Json(json!({
        "access_token": access_token,
        "instance_url": shared.instance_url,
        "id": id_url,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
        "scope": "api",
    }))
    .into_response()
}

/// Text of the first element named `name` (any namespace prefix), as an XML parser reads it:
/// entity and character references decoded, CDATA sections taken literally (the official Pub/Sub
/// examples send `<urn:password><![CDATA[…]]></urn:password>`). `None` if there is no such
/// element, or its content is not text.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let local = tag.split_whitespace().next()?.rsplit(':').next()?;
        if local == name && !tag.starts_with('/') && !tag.ends_with('/') {
            return xml_content(&rest[end + 1..]);
        }
    }
    None
}

/// The character data from the start of `body` to the closing tag of its element.
fn xml_content(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>")?;
            out.push_str(&after[..end]);
            rest = &after[end + 3..];
        } else if rest.starts_with("</") {
            return Some(out);
        } else if rest.starts_with('<') {
            // A child element or a comment: not the plain text a login field holds.
            return None;
        } else if let Some(after) = rest.strip_prefix('&') {
            let end = after.find(';')?;
            out.push(xml_reference(&after[..end])?);
            rest = &after[end + 1..];
        } else {
            let next = rest.find(['<', '&'])?;
            out.push_str(&rest[..next]);
            rest = &rest[next..];
        }
    }
}

/// The character an entity or character reference (`amp`, `#60`, `#x3C`) stands for.
fn xml_reference(name: &str) -> Option<char> {
    let code = match name {
        "lt" => return Some('<'),
        "gt" => return Some('>'),
        "amp" => return Some('&'),
        "quot" => return Some('"'),
        "apos" => return Some('\''),
        _ => name.strip_prefix('#')?,
    };
    let n = match code.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => code.parse().ok()?,
    };
    char::from_u32(n)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// SOAP `login()` of the partner API, as the official Java and Python examples and jsforce use
/// it: `sessionId` is an access token, `serverUrl` names the instance. The result's elements come
/// in Salesforce's order, `userInfo`'s included: the official Python example reads them by
/// position (`result[3]` is `serverUrl`, `result[4]` `sessionId`, `userInfo[8]` `organizationId`).
async fn soap_login(
    State(shared): State<AppState>,
    Path(version): Path<String>,
    body: String,
) -> Response {
    let soap = |status: StatusCode, inner: String| {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{inner}</soapenv:Body></soapenv:Envelope>"#
        );
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8")],
            xml,
        )
            .into_response()
    };
    let fault = |code: &str, message: &str| {
        soap(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                r#"<soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{code}: {message}</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode><sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>"#
            ),
        )
    };
    if version.parse::<f64>().is_err() {
        return fault(
            "UNSUPPORTED_API_VERSION",
            "Invalid Api version specified on URL",
        );
    }
    let creds = &shared.credentials;
    let (Some(username), Some(password)) =
        (xml_text(&body, "username"), xml_text(&body, "password"))
    else {
        return fault(
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
        );
    };
    if username != creds.username || password != creds.password {
        return fault(
            "INVALID_LOGIN",
            "Invalid username, password, security token; or user locked out.",
        );
    }
    let (token, user_id) = shared.issue_session();
    let inst = &shared.instance_url;
    let org = &shared.org_id;
    let lifetime = shared
        .tokens
        .lock()
        .expect("token lock")
        .lifetime()
        .as_secs();
    let user = xml_escape(&creds.username);
    soap(
        StatusCode::OK,
        format!(
            "<loginResponse><result><metadataServerUrl>{inst}/services/Soap/m/{version}/{org}</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox><serverUrl>{inst}/services/Soap/u/{version}/{org}</serverUrl><sessionId>{token}</sessionId><userId>{user_id}</userId><userInfo><accessibilityMode>false</accessibilityMode><chatterExternal>false</chatterExternal><currencySymbol>£</currencySymbol><orgAttachmentFileSizeLimit>5242880</orgAttachmentFileSizeLimit><orgDefaultCurrencyIsoCode>GBP</orgDefaultCurrencyIsoCode><orgDefaultCurrencyLocale>en_GB</orgDefaultCurrencyLocale><orgDisallowHtmlAttachments>false</orgDisallowHtmlAttachments><orgHasPersonAccounts>false</orgHasPersonAccounts><organizationId>{org}</organizationId><organizationMultiCurrency>false</organizationMultiCurrency><organizationName>sfcdc emulator</organizationName><profileId>00eHs000000AbCdIAK</profileId><roleId xsi:nil=\"true\"/><sessionSecondsValid>{lifetime}</sessionSecondsValid><userDefaultCurrencyIsoCode xsi:nil=\"true\"/><userEmail>{user}</userEmail><userFullName>sfcdc Integration</userFullName><userId>{user_id}</userId><userLanguage>en_US</userLanguage><userLocale>en_GB</userLocale><userName>{user}</userName><userTimeZone>Europe/London</userTimeZone><userType>Standard</userType><userUiSkin>Theme3</userUiSkin></userInfo></result></loginResponse>"
        ),
    )
}

async fn userinfo(State(shared): State<AppState>, headers: HeaderMap) -> Response {
    if bearer(&shared, &headers).is_err() {
        return (StatusCode::FORBIDDEN, "Bad_OAuth_Token").into_response();
    }
    let user_id = shared
        .world
        .lock()
        .expect("world lock")
        .org
        .user_id
        .to_string();
    let username = &shared.credentials.username;
    let base = &shared.instance_url;
    Json(json!({
        "sub": format!("{base}/id/{}/{user_id}", shared.org_id),
        "user_id": user_id,
        "organization_id": shared.org_id,
        "preferred_username": username,
        "nickname": "sfcdc",
        "name": "sfcdc Integration",
        "email": username,
        "email_verified": true,
        "zoneinfo": "Europe/London",
        "locale": "en_GB",
        "language": "en_US",
        "active": true,
        "user_type": "STANDARD",
        "urls": {
            "rest": format!("{base}/services/data/v{{version}}/"),
            "sobjects": format!("{base}/services/data/v{{version}}/sobjects/"),
            "query": format!("{base}/services/data/v{{version}}/query/"),
        },
    }))
    .into_response()
}

/// The API versions the emulator lists, oldest first (Summer '14 to Spring '26); it answers any
/// `vNN.N` in a path.
const VERSIONS: std::ops::RangeInclusive<u32> = 31..=66;

/// The resources of an API version the emulator serves, as `GET /services/data/vNN.N` lists them.
const RESOURCES: [&str; 4] = ["composite", "limits", "query", "sobjects"];

/// `GET /services/data`: every version with its release name. It needs no session, as in
/// Salesforce.
async fn versions() -> Response {
    let list: Vec<Value> = VERSIONS
        .map(|v| {
            json!({
                "label": release_label(v),
                "url": format!("/services/data/v{v}.0"),
                "version": format!("{v}.0"),
            })
        })
        .collect();
    Json(list).into_response()
}

/// The release an API version shipped in: three a year, 59.0 being Winter '24.
fn release_label(version: u32) -> String {
    let k = i64::from(version) - 59;
    let season = ["Winter", "Spring", "Summer"][k.rem_euclid(3) as usize];
    format!("{season} '{:02}", 24 + k.div_euclid(3))
}

/// `GET /services/data/vNN.N`: the version's resources the emulator serves.
async fn resources(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let list: serde_json::Map<String, Value> = RESOURCES
        .iter()
        .map(|r| {
            (
                (*r).to_owned(),
                json!(format!("/services/data/{version}/{r}")),
            )
        })
        .collect();
    Ok(Json(list).into_response())
}

/// `GET …/limits`: the org's limits the emulator keeps, its daily API requests.
async fn limits(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let usage = shared.api_usage.usage();
    Ok(Json(json!({
        "DailyApiRequests": {"Max": usage.max, "Remaining": usage.remaining()},
    }))
    .into_response())
}

/// `GET …/sobjects`: the global describe.
async fn global_describe(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let world = shared.world.lock().expect("world lock");
    let sobjects: Vec<Value> = describe::Described::all(&world.org)
        .iter()
        .map(|d| d.summary(&version))
        .collect();
    Ok(
        Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": sobjects}))
            .into_response(),
    )
}

/// `GET …/sobjects/{type}`: the object's basic information. The emulator keeps no list of
/// recently viewed records, so `recentItems` is empty.
async fn sobject_info(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, sobject)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let world = shared.world.lock().expect("world lock");
    let d = describe::Described::find(&world.org, &sobject).ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({"objectDescribe": d.summary(&version), "recentItems": []})).into_response())
}

/// `GET …/sobjects/{type}/describe`: the object's full describe.
async fn sobject_describe(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, sobject)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let world = shared.world.lock().expect("world lock");
    let d = describe::Described::find(&world.org, &sobject).ok_or_else(ApiError::not_found)?;
    Ok(Json(d.describe(&version)).into_response())
}

async fn read(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, sobject, id)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let world = shared.world.lock().expect("world lock");
    let def = world.org.def(&sobject).ok_or_else(ApiError::not_found)?;
    let id = Org::parse_id(&def.name, &id)?;
    let record = world
        .org
        .get(&id)
        .filter(|r| r.sobject == def.name)
        .ok_or_else(ApiError::not_found)?;
    let only: Option<Vec<String>> = params.get("fields").map(|f| {
        f.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(fields) = &only
        && let Some(bad) = fields.iter().find(|f| def.flat_field(f).is_none())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            format!("No such column '{bad}' on sobject of type {}", def.name),
        ));
    }
    Ok(Json(world.org.to_json(record, &version, only.as_deref())).into_response())
}

fn body_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            format!("Unexpected JSON: {e}"),
        )),
    }
}

async fn update(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, sobject, id)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let input = body_object(&body)?;
    let actor = actor(&shared);
    let now = now_ms();
    shared
        .world
        .lock()
        .expect("world lock")
        .mutate(now, |org| {
            let id = Org::parse_id(&sobject, &id)?;
            org.update(&sobject, &id, &input, &actor, now)
                .map(|c| ((), c))
        })?;
    shared.mark_dirty();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, sobject, id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let actor = actor(&shared);
    let now = now_ms();
    shared
        .world
        .lock()
        .expect("world lock")
        .mutate(now, |org| {
            let id = Org::parse_id(&sobject, &id)?;
            org.delete(&sobject, &id, &actor, now).map(|c| ((), c))
        })?;
    shared.mark_dirty();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, sobject)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let input = body_object(&body)?;
    let actor = actor(&shared);
    let now = now_ms();
    if sobject.eq_ignore_ascii_case(FULFILMENT_EVENT) {
        return publish_fulfilment(&shared, &input, &actor, now);
    }
    let id = shared
        .world
        .lock()
        .expect("world lock")
        .mutate(now, |org| org.create(&sobject, &input, &actor, now))?;
    shared.mark_dirty();
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id.as_str(), "success": true, "errors": []})),
    )
        .into_response())
}

fn publish_fulfilment(
    shared: &Shared,
    input: &serde_json::Map<String, Value>,
    actor: &Actor,
    now: i64,
) -> Result<Response, ApiError> {
    let mut fields = BTreeMap::new();
    for (name, raw) in input {
        if name == "attributes" {
            continue;
        }
        let Some((field, ftype)) = FULFILMENT_FIELDS
            .iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(name))
        else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                format!("No such column '{name}' on sobject of type {FULFILMENT_EVENT}"),
            ));
        };
        let value = super::org::json_to_value(field, *ftype, raw)?;
        if !value.is_null() {
            fields.insert((*field).to_owned(), value);
        }
    }
    let event =
        shared
            .world
            .lock()
            .expect("world lock")
            .publish_fulfilment(fields, &actor.user_id, now);
    shared.mark_dirty();
    let id = super::ids::generate("e00", "Hs", event.replay);
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id.as_str(), "success": true, "errors": []})),
    )
        .into_response())
}

#[derive(Deserialize)]
struct QueryParams {
    q: Option<String>,
}

async fn query(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path(version): Path<String>,
    Query(params): Query<QueryParams>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let q = params.q.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string is required in the q parameter",
        )
    })?;
    let parsed = soql::parse(&q)?;
    let rows: Vec<Value> = {
        let world = shared.world.lock().expect("world lock");
        let result = soql::run(&world.org, &parsed)?;
        if parsed.count {
            let n = result.rows.len();
            return Ok(Json(json!({"totalSize": n, "done": true, "records": []})).into_response());
        }
        result.to_json(&world.org, &version)
    };
    Ok(Json(page(&shared, &version, rows, 0)).into_response())
}

async fn query_more(
    State(shared): State<AppState>,
    headers: HeaderMap,
    Path((version, cursor)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    bearer(&shared, &headers)?;
    check_version(&version)?;
    let (key, offset) = cursor
        .rsplit_once('-')
        .and_then(|(k, o)| o.parse::<usize>().ok().map(|o| (k.to_owned(), o)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
            )
        })?;
    let rows = shared
        .cursors
        .lock()
        .expect("cursor lock")
        .get(&key)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_QUERY_LOCATOR",
                "invalid query locator",
            )
        })?;
    Ok(Json(page_of(&version, &key, &rows, offset)).into_response())
}

/// The first page of a result; the full result is kept for `nextRecordsUrl` when it is longer.
fn page(shared: &Shared, version: &str, rows: Vec<Value>, offset: usize) -> Value {
    if rows.len() <= QUERY_PAGE {
        return json!({"totalSize": rows.len(), "done": true, "records": rows});
    }
    let key = super::ids::generate("01g", "Hs", shared.next_cursor()).to_string();
    let rows = Arc::new(rows);
    let out = page_of(version, &key, &rows, offset);
    shared
        .cursors
        .lock()
        .expect("cursor lock")
        .insert(key, rows);
    out
}

fn page_of(version: &str, key: &str, rows: &[Value], offset: usize) -> Value {
    let end = (offset + QUERY_PAGE).min(rows.len());
    let records: Vec<Value> = rows.get(offset..end).unwrap_or_default().to_vec();
    let mut out = json!({"totalSize": rows.len(), "done": end >= rows.len(), "records": records});
    if end < rows.len() {
        out["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{key}-{end}"));
    }
    out
}

async fn post_fault(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    let fault: Fault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not a fault: {e}")})),
            )
                .into_response();
        }
    };
    match super::inject(&shared, fault) {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn clear_faults(State(shared): State<AppState>) -> Response {
    shared.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkRequest {
    count: usize,
}

async fn post_bulk(State(shared): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: BulkRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("expected {{\"count\": N}}: {e}")})),
            )
                .into_response();
        }
    };
    if req.count > 5_000_000 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "count must be at most 5000000"})),
        )
            .into_response();
    }
    let shared2 = shared.clone();
    let report =
        tokio::task::spawn_blocking(move || super::bulk::generate(&shared2.world, req.count)).await;
    shared.mark_dirty();
    match report {
        Ok(r) => Json(r).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn get_stats(State(shared): State<AppState>) -> Response {
    Json(super::stats_snapshot(&shared)).into_response()
}

async fn info(State(shared): State<AppState>) -> Response {
    let world = shared.world.lock().expect("world lock");
    let schemas: BTreeMap<String, String> = ["Order", "OrderItem", FULFILMENT_EVENT]
        .iter()
        .filter_map(|e| {
            world
                .current_schema(e)
                .map(|s| (e.to_string(), s.id.clone()))
        })
        .collect();
    Json(json!({
        "org_id": shared.org_id,
        "user_id": world.org.user_id.as_str(),
        "instance_url": shared.instance_url,
        "client_id": shared.credentials.client_id,
        "username": shared.credentials.username,
        "topics": super::world::all_topics(),
        "schemas": schemas,
        "high_water_replay_id": hex::encode(world.bus.encode_replay(world.bus.high_water())),
    }))
    .into_response()
}

async fn undelete(
    State(shared): State<AppState>,
    Path((sobject, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let now = now_ms();
    let mut world = shared.world.lock().expect("world lock");
    let actor = world.internal_actor();
    world.mutate(now, |org| {
        let id = Org::parse_id(&sobject, &id)?;
        org.undelete(&sobject, &id, &actor, now).map(|c| ((), c))
    })?;
    drop(world);
    shared.mark_dirty();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_text_reads_cdata_entities_and_character_references() {
        let login = |user: &str, password: &str| {
            format!(
                "<urn:login><urn:username>{user}</urn:username>\n<urn:password>{password}</urn:password></urn:login>"
            )
        };
        let xml = login("<![CDATA[a&b@x.test]]>", "<![CDATA[p</w>&amp;]]>");
        assert_eq!(xml_text(&xml, "username").as_deref(), Some("a&b@x.test"));
        assert_eq!(xml_text(&xml, "password").as_deref(), Some("p</w>&amp;"));
        let xml = login("a&amp;b", "&lt;p&#38;&#x3E;&quot;&apos;");
        assert_eq!(xml_text(&xml, "username").as_deref(), Some("a&b"));
        assert_eq!(xml_text(&xml, "password").as_deref(), Some("<p&>\"'"));
        // Text and CDATA sections mix, as in any XML text node.
        let xml = login("x<![CDATA[<y>]]>z", "");
        assert_eq!(xml_text(&xml, "username").as_deref(), Some("x<y>z"));
        assert_eq!(xml_text(&xml, "password").as_deref(), Some(""));
        for bad in [
            login("a&nope;", "p"),
            login("<![CDATA[never closed", "p"),
            login("<b>child</b>", "p"),
            "<urn:username>unterminated".to_owned(),
        ] {
            assert_eq!(xml_text(&bad, "username"), None, "{bad}");
        }
        assert_eq!(xml_text("<login/>", "username"), None);
    }

    #[test]
    fn versions_are_named_after_their_release() {
        assert_eq!(release_label(31), "Summer '14");
        assert_eq!(release_label(59), "Winter '24");
        assert_eq!(release_label(60), "Spring '24");
        assert_eq!(release_label(62), "Winter '25");
        assert_eq!(release_label(66), "Spring '26");
    }

    #[test]
    fn only_trailing_slashes_are_trimmed() {
        let trim = |s: &str| {
            without_trailing_slash(&s.parse().unwrap()).map(|u: axum::http::Uri| u.to_string())
        };
        assert_eq!(
            trim("/services/data/v62.0/query/?q=SELECT+Id").as_deref(),
            Some("/services/data/v62.0/query?q=SELECT+Id")
        );
        assert_eq!(
            trim("https://h:1/services/Soap/u/62.0//").as_deref(),
            Some("https://h:1/services/Soap/u/62.0")
        );
        assert_eq!(trim("/services/data"), None);
        assert_eq!(trim("/"), None);
        assert_eq!(trim("/?q=1"), None);
    }
}
