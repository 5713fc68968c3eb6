//! The operator console at `/console` on the admin server: server-rendered HTML pages over the
//! same store and operator actions as the JSON API, for people in a browser.
//!
//! **Access.** A login form exchanges the viewer or operator token for a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` unless `SFCDC_ADMIN_INSECURE_COOKIES`), which lasts
//! `SFCDC_CONSOLE_SESSION_TTL` or until logout. Failed logins are limited per client address.
//! Every state-changing form carries the session's CSRF token, and every action goes through
//! [`crate::api::actions`], which refuses a viewer (403) and records the attempt in the audit
//! trail under the session's public id. A viewer's pages show no action buttons.
//!
//! **Rendering.** Pages are maud templates compiled into the binary, as are the stylesheet and
//! the one small script (live refresh); there is no CDN and no build step. Every interpolated
//! value is HTML-escaped, and a Content-Security-Policy allows only the console's own script
//! and style, so text from outside (payloads, errors, delivery bodies) can only ever show as
//! text. Every page works without JavaScript; with it, lists and the overview refresh their
//! `#live` region every few seconds, keeping filters and scroll position.

mod chart;
mod forms;
mod pages;
pub mod session;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};

use crate::api::AdminState;
use crate::config::{ConfigError, Env};
use session::{LoginRefused, Session, Sessions};

/// The session cookie's name.
const COOKIE: &str = "sfcdc_session";

/// Console settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// `SFCDC_CONSOLE_SESSION_TTL`: how long a login lasts.
    pub session_ttl: Duration,
    /// `SFCDC_ADMIN_INSECURE_COOKIES`: leave `Secure` off the session cookie (plain-HTTP
    /// loopback only).
    pub insecure_cookies: bool,
}

impl ConsoleConfig {
    /// Reads `SFCDC_CONSOLE_SESSION_TTL` (default 8h) and `SFCDC_ADMIN_INSECURE_COOKIES`
    /// (default false).
    pub fn from_env(env: &Env) -> Result<ConsoleConfig, ConfigError> {
        let session_ttl =
            env.positive_duration_or("SFCDC_CONSOLE_SESSION_TTL", Duration::from_secs(8 * 3600))?;
        if session_ttl > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::new(
                "SFCDC_CONSOLE_SESSION_TTL",
                "must be at most 30d",
            ));
        }
        let insecure_cookies = env.choice_or(
            "SFCDC_ADMIN_INSECURE_COOKIES",
            false,
            &[
                ("true", true),
                ("1", true),
                ("yes", true),
                ("false", false),
                ("0", false),
                ("no", false),
            ],
        )?;
        Ok(ConsoleConfig {
            session_ttl,
            insecure_cookies,
        })
    }
}

/// What the console's handlers share.
#[derive(Clone)]
struct Ui {
    admin: AdminState,
    sessions: Arc<Sessions>,
    secure: bool,
}

impl Ui {
    fn now(&self) -> i64 {
        self.admin.clock().now_ms()
    }

    /// The session the request's cookie names, with the cookie's secret.
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let secret = cookie(headers, COOKIE)?;
        let s = self.sessions.get(&secret, self.now())?;
        Some((secret, s))
    }
}

/// A cookie's value from the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The console's routes, to merge into the admin router.
pub fn router(admin: AdminState, config: &ConsoleConfig) -> Router {
    let ui = Ui {
        admin,
        sessions: Arc::new(Sessions::new(config.session_ttl)),
        secure: !config.insecure_cookies,
    };
    Router::new()
        .route("/console", get(pages::overview))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/jobs", get(pages::jobs))
        .route(
            "/console/jobs/bulk",
            get(pages::bulk_confirm).post(forms::bulk),
        )
        .route("/console/jobs/{id}", get(pages::job))
        .route("/console/jobs/{id}/retry", post(forms::retry_job))
        .route("/console/jobs/{id}/cancel", post(forms::cancel_job))
        .route("/console/deliveries", get(pages::deliveries))
        .route("/console/deliveries/{id}", get(pages::delivery))
        .route(
            "/console/deliveries/{id}/retry",
            post(forms::retry_delivery),
        )
        .route(
            "/console/deliveries/{id}/cancel",
            post(forms::cancel_delivery),
        )
        .route("/console/quarantine", get(pages::quarantine))
        .route("/console/quarantine/{id}", get(pages::quarantined))
        .route("/console/quarantine/{id}/payload", get(pages::payload))
        .route("/console/quarantine/{id}/redrive", post(forms::redrive))
        .route("/console/channels", get(pages::channels))
        .route("/console/channel", get(pages::channel))
        .route(
            "/console/channel/reset",
            get(pages::reset_confirm).post(forms::reset),
        )
        .route("/console/audit", get(pages::audit))
        .layer(axum::middleware::map_response(guard_headers))
        .with_state(ui)
}

/// Headers on every console answer: no caching of what an operator saw, no framing, and only
/// the console's own script and style.
async fn guard_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

/// A page answer.
fn html_page(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// An error page inside the console frame, with a way back.
/// A kind of record a page shows or an action acts on: its list's path under `/console` and its
/// noun.
struct Target {
    list: &'static str,
    noun: &'static str,
}

const JOB: Target = Target {
    list: "jobs",
    noun: "job",
};
const DELIVERY: Target = Target {
    list: "deliveries",
    noun: "delivery",
};
const QUARANTINED: Target = Target {
    list: "quarantine",
    noun: "quarantine",
};

/// The id in a record's path, or the page saying it is not one (400, back to the list).
fn record_id(who: &Session, raw: &str, t: &Target) -> Result<i64, Box<Response>> {
    raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Box::new(error_page(
            who,
            StatusCode::BAD_REQUEST,
            &format!("That is not a {} id.", t.noun),
            &format!("/console/{}", t.list),
        ))
    })
}

fn error_page(who: &Session, status: StatusCode, reason: &str, back: &str) -> Response {
    let title = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not possible now",
        s if s.is_client_error() => "Bad request",
        _ => "Something failed",
    };
    html_page(
        status,
        views::page(
            title,
            views::Section::Overview,
            who,
            false,
            html! {
                (views::notice("bad", reason))
                p { a href=(back) { "Back" } }
            },
        ),
    )
}

/// A request outside a live session: back to the login form (a read), or 403 (a change).
fn not_logged_in(change: bool) -> Response {
    if change {
        html_page(
            StatusCode::FORBIDDEN,
            views::bare(
                "Not logged in",
                html! {
                    div.login.card {
                        h1 { "Not logged in" }
                        p { "Your session has ended. Log in again, then repeat the action." }
                        p { a href="/console/login" { "Log in" } }
                    }
                },
            ),
        )
    } else {
        Redirect::to("/console/login").into_response()
    }
}

fn login_page(status: StatusCode, problem: Option<&str>) -> Response {
    html_page(
        status,
        views::bare(
            "Log in",
            html! {
                div.login.card {
                    h1 { "sfcdc console" }
                    @if let Some(p) = problem { (views::notice("bad", p)) }
                    form method="post" action="/console/login" {
                        label for="token" { "Token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button type="submit" { "Log in" }
                    }
                    p.muted {
                        "The viewer token (SFCDC_READ_TOKEN) reads; the operator token (SFCDC_ADMIN_TOKEN) also acts."
                    }
                }
            },
        ),
    )
}

async fn login_form(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    if ui.session(&headers).is_some() {
        return Redirect::to("/console").into_response();
    }
    login_page(StatusCode::OK, None)
}

async fn login(
    State(ui): State<Ui>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let now = ui.now();
    let addr = peer.ip();
    if let Err(LoginRefused::TooMany(wait)) = ui.sessions.may_try(addr, now) {
        tracing::warn!(client = %addr, "Console login refused: too many failed logins");
        let mut r = login_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Too many failed logins from your address; try again in {wait} s."
            )),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if !ui.admin.access().any_role() {
        return login_page(
            StatusCode::FORBIDDEN,
            Some("The console is disabled: set SFCDC_READ_TOKEN or SFCDC_ADMIN_TOKEN."),
        );
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let Some(role) = ui.admin.access().role_of(token) else {
        ui.sessions.failed(addr, now);
        tracing::warn!(client = %addr, "Console login failed: not a configured token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some(
                "That is neither the viewer token (SFCDC_READ_TOKEN) nor the operator token (SFCDC_ADMIN_TOKEN).",
            ),
        );
    };
    match ui.sessions.create(role, now) {
        Ok((secret, session)) => {
            ui.sessions.succeeded(addr);
            tracing::info!(session = %session.id, role = role.as_str(), client = %addr, "Console login");
            let cookie = format!(
                "{COOKIE}={secret}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
                ui.sessions.ttl().as_secs(),
                if ui.secure { "; Secure" } else { "" }
            );
            let mut r = Redirect::to("/console").into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(_) => login_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("Too many sessions are open; try again later."),
        ),
    }
}

async fn logout(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let Some((secret, who)) = ui.session(&headers) else {
        return Redirect::to("/console/login").into_response();
    };
    if !who.csrf_matches(form.get("csrf").map(String::as_str).unwrap_or("")) {
        return error_page(
            &who,
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong; reload the page and try again.",
            "/console",
        );
    }
    ui.sessions.end(&secret);
    tracing::info!(session = %who.id, "Console logout");
    let cookie = format!(
        "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if ui.secure { "; Secure" } else { "" }
    );
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_name_the_variable() {
        let c = ConsoleConfig::from_env(&Env::default()).unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(8 * 3600));
        assert!(!c.insecure_cookies);
        let c = ConsoleConfig::from_env(&Env::from_pairs([
            ("SFCDC_CONSOLE_SESSION_TTL", "15m"),
            ("SFCDC_ADMIN_INSECURE_COOKIES", "1"),
        ]))
        .unwrap();
        assert_eq!(c.session_ttl, Duration::from_secs(900));
        assert!(c.insecure_cookies);
        for (k, v) in [
            ("SFCDC_CONSOLE_SESSION_TTL", "0s"),
            ("SFCDC_CONSOLE_SESSION_TTL", "90d"),
            ("SFCDC_CONSOLE_SESSION_TTL", "soon"),
            ("SFCDC_ADMIN_INSECURE_COOKIES", "maybe"),
        ] {
            assert_eq!(
                ConsoleConfig::from_env(&Env::from_pairs([(k, v)]))
                    .unwrap_err()
                    .var,
                k
            );
        }
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sfcdc_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
