//! The console's forms (every `POST` but login and logout): retry and cancel of jobs and
//! deliveries, re-drive, checkpoint reset, and bulk actions.
//!
//! Each checks, in this order: a live session (403 otherwise), the form's CSRF token (403), the
//! input (400), then hands the action to [`crate::api::actions`], which refuses a viewer (403)
//! and records every attempt in the audit trail. A success redirects (303) to the page of what
//! changed; a refusal answers with its status and the reason.

use std::collections::HashMap;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use maud::html;

use super::session::Session;
use super::views::{Section, link, notice, page};
use super::{
    DELIVERY, JOB, QUARANTINED, Target, Ui, error_page, html_page, not_logged_in, record_id,
};
use crate::api::actions::{Actor, Bulk, describe};

type Fields = Form<HashMap<String, String>>;

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(|v| v.trim()).unwrap_or("")
}

/// The session and its actor, if the form carries the session's CSRF token.
fn checked(
    ui: &Ui,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    back: &str,
) -> Result<(Session, Actor), Box<Response>> {
    let Some((_, who)) = ui.session(headers) else {
        return Err(Box::new(not_logged_in(true)));
    };
    if !who.csrf_matches(field(form, "csrf")) {
        tracing::warn!(session = %who.id, "Console form refused: missing or wrong CSRF token");
        return Err(Box::new(error_page(
            &who,
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong; reload the page and try again.",
            back,
        )));
    }
    let actor = Actor {
        role: who.role,
        session: Some(who.id.clone()),
        via: "console",
    };
    Ok((who, actor))
}

/// An action on record `raw` of `t`: the session, its actor, the record's id and the page to go
/// back to; or the page saying why not (no session, a bad CSRF token, not an id).
fn acting_on(
    ui: &Ui,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    raw: &str,
    t: &Target,
) -> Result<(Session, Actor, i64, String), Box<Response>> {
    let back = format!("/console/{}/{raw}", t.list);
    let (who, actor) = checked(ui, headers, form, &back)?;
    let id = record_id(&who, raw, t)?;
    Ok((who, actor, id, back))
}

/// The answer to an action: a redirect to `to` on success, the reason otherwise.
fn answer<T>(
    who: &Session,
    r: Result<T, crate::api::ApiError>,
    to: String,
    back: &str,
) -> Response {
    match r {
        Ok(_) => axum::response::IntoResponse::into_response(Redirect::to(&to)),
        Err(e) => error_page(who, e.status(), e.reason(), back),
    }
}

pub(super) async fn retry_job(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Fields,
) -> Response {
    let (who, actor, id, back) = match acting_on(&ui, &headers, &f, &raw, &JOB) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let r = ui.admin.retry_job(&actor, id).await;
    answer(&who, r, format!("/console/jobs/{id}?done=retried"), &back)
}

pub(super) async fn cancel_job(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Fields,
) -> Response {
    let (who, actor, id, back) = match acting_on(&ui, &headers, &f, &raw, &JOB) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let reason = match crate::api::operator_reason(Some(field(&f, "reason"))) {
        Ok(r) => r,
        Err(e) => return error_page(&who, StatusCode::BAD_REQUEST, &e, &back),
    };
    let r = ui.admin.cancel_job(&actor, id, &reason).await;
    answer(&who, r, format!("/console/jobs/{id}?done=cancelled"), &back)
}

pub(super) async fn retry_delivery(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Fields,
) -> Response {
    let (who, actor, id, back) = match acting_on(&ui, &headers, &f, &raw, &DELIVERY) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let r = ui.admin.retry_delivery(&actor, id).await;
    answer(
        &who,
        r,
        format!("/console/deliveries/{id}?done=delivery-retried"),
        &back,
    )
}

pub(super) async fn cancel_delivery(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Fields,
) -> Response {
    let (who, actor, id, back) = match acting_on(&ui, &headers, &f, &raw, &DELIVERY) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let r = ui.admin.cancel_delivery(&actor, id).await;
    answer(
        &who,
        r,
        format!("/console/deliveries/{id}?done=delivery-cancelled"),
        &back,
    )
}

pub(super) async fn redrive(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Fields,
) -> Response {
    let (who, actor, id, back) = match acting_on(&ui, &headers, &f, &raw, &QUARANTINED) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let r = ui.admin.redrive(&actor, id).await;
    answer(
        &who,
        r,
        format!("/console/quarantine/{id}?done=redriven"),
        &back,
    )
}

pub(super) async fn reset(State(ui): State<Ui>, headers: HeaderMap, Form(f): Fields) -> Response {
    let channel = field(&f, "channel").to_owned();
    let back = link("/console/channel", &[("channel", &channel)]);
    let (who, actor) = match checked(&ui, &headers, &f, &back) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Some(to) = crate::api::parse_position(field(&f, "to")) else {
        return error_page(
            &who,
            StatusCode::BAD_REQUEST,
            "Resume from earliest, latest, or a replay id in hex.",
            &back,
        );
    };
    let r = ui.admin.reset_checkpoint(&actor, &channel, &to).await;
    answer(
        &who,
        r,
        link(
            "/console/channel",
            &[("channel", &channel), ("done", "reset")],
        ),
        &back,
    )
}

pub(super) async fn bulk(State(ui): State<Ui>, headers: HeaderMap, Form(f): Fields) -> Response {
    let (who, actor) = match checked(&ui, &headers, &f, "/console/jobs") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let query = match super::pages::job_query(&f) {
        Ok(q) => q,
        Err(e) => return error_page(&who, StatusCode::BAD_REQUEST, &e, "/console/jobs"),
    };
    let action = match field(&f, "action") {
        "retry" => Bulk::Retry,
        "cancel" => Bulk::Cancel,
        _ => {
            return error_page(
                &who,
                StatusCode::BAD_REQUEST,
                "Use retry or cancel.",
                "/console/jobs",
            );
        }
    };
    let reason = match crate::api::operator_reason(Some(field(&f, "reason"))) {
        Ok(r) => r,
        Err(e) => return error_page(&who, StatusCode::BAD_REQUEST, &e, "/console/jobs"),
    };
    match ui.admin.bulk(&actor, action, &query, &reason).await {
        Ok(o) => {
            let verb = match action {
                Bulk::Retry => "retried",
                Bulk::Cancel => "cancelled",
            };
            let back = super::pages::query_link("/console/jobs", &query, &[]);
            let body = html! {
                (notice("ok", &format!("{} jobs matched {}: {} {verb}, {} left as they were.", o.matched, describe(&query), o.changed, o.refused)))
                p { a #back href=(back) { "Back to the jobs" } }
            };
            html_page(
                StatusCode::OK,
                page("Bulk action done", Section::Jobs, &who, false, body),
            )
        }
        Err(e) => error_page(&who, e.status(), e.reason(), "/console/jobs"),
    }
}
