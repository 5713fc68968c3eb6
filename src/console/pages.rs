//! The console's pages (every `GET`): overview, jobs, a job, deliveries, a delivery, the
//! quarantine, a quarantined event and its raw bytes, channels, a channel, the confirmations of
//! a bulk action and a checkpoint reset, and the audit trail.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::views::{
    HEX_VIEW_MAX, Section, age, badge, enc, hex_dump, link, notice, operator, page, pretty, time,
    time_or_dash,
};
use super::{
    DELIVERY, JOB, QUARANTINED, Ui, chart, error_page, html_page, not_logged_in, record_id,
};
use crate::api::actions::{Bulk, describe};
use crate::store::insight::{Insights, JobQuery};
use crate::store::queue::{DeliveryFilter, DeliveryState, Queue};
use crate::store::{JobState, Store, StoreError};

/// Jobs per page.
const PAGE: i64 = 50;

type Params = Query<HashMap<String, String>>;

/// The session, or the way to the login form.
macro_rules! who {
    ($ui:expr, $headers:expr) => {
        match $ui.session(&$headers) {
            Some((_, who)) => who,
            None => return not_logged_in(false),
        }
    };
}

/// A store result, or the page that says the store failed.
macro_rules! load {
    ($who:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return store_failed(&$who, e),
        }
    };
}

fn store_failed(who: &super::Session, e: StoreError) -> Response {
    tracing::error!(error = %e, "Console page failed in the store");
    error_page(
        who,
        StatusCode::SERVICE_UNAVAILABLE,
        "The store is unavailable; try again.",
        "/console",
    )
}

fn param<'a>(q: &'a HashMap<String, String>, k: &str) -> &'a str {
    q.get(k).map(|v| v.trim()).unwrap_or("")
}

/// A page's "done" notice after a redirect (a fixed set of messages; nothing from the query
/// reaches the page but the choice).
fn done_notice(q: &HashMap<String, String>) -> Option<Markup> {
    let text = match param(q, "done") {
        "retried" => {
            "Retried: the job is available again, with fresh attempts and a new idempotency key."
        }
        "cancelled" => "Cancelled.",
        "delivery-retried" => "The delivery is pending again, with fresh attempts.",
        "delivery-cancelled" => "The delivery is cancelled.",
        "redriven" => {
            "Re-driven: the event was decoded and evaluated again, and the entry resolved."
        }
        "reset" => {
            "The checkpoint is reset; the holder was fenced out and the channel resumes from it."
        }
        _ => return None,
    };
    Some(notice("ok", text))
}

/// The job filter of a query string; the error names a bad state.
pub(super) fn job_query(q: &HashMap<String, String>) -> Result<JobQuery, String> {
    let state = match param(q, "state") {
        "" => None,
        s => Some(JobState::parse(s).ok_or_else(|| {
            format!(
                "'{s}' is not a job state; use one of {}",
                crate::api::job_states()
            )
        })?),
    };
    let some = |k: &str| Some(param(q, k).to_owned()).filter(|v| !v.is_empty());
    Ok(JobQuery {
        state,
        order_id: some("order"),
        error: some("error"),
    })
}

fn query_pairs(q: &JobQuery) -> [(&'static str, String); 3] {
    [
        (
            "state",
            q.state.map(|s| s.as_str().to_owned()).unwrap_or_default(),
        ),
        ("order", q.order_id.clone().unwrap_or_default()),
        ("error", q.error.clone().unwrap_or_default()),
    ]
}

pub(super) fn query_link(path: &str, q: &JobQuery, extra: &[(&str, &str)]) -> String {
    let pairs = query_pairs(q);
    let mut all: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    link(path, &all)
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max).collect();
        s.push('…');
        s
    }
}

fn progress(p: Option<i32>) -> Markup {
    html! {
        @if let Some(p) = p {
            span.bar title={ (p) "%" } { span style={ "width:" (p.clamp(0, 100)) "%" } {} }
            " " (p) "%"
        } @else { span.muted { "-" } }
    }
}

/// The overview: channels, jobs and deliveries by state, dead letters, quarantine, throughput.
pub(super) async fn overview(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let who = who!(ui, headers);
    let now = ui.now();
    let store = &ui.admin.store;
    let channels = load!(who, ui.admin.channel_views().await);
    let rates: BTreeMap<String, i64> = load!(who, store.channel_events(now - 5 * 60_000).await)
        .into_iter()
        .collect();
    let open = load!(who, store.quarantined(true).await);
    let counts = load!(who, store.state_counts().await);
    let minutes = load!(who, store.throughput(now - 60 * 60_000).await);
    let liveness = ui
        .admin
        .liveness()
        .map(|l| l.statuses(now))
        .unwrap_or_default();
    let count = |list: &[(String, i64)], state: &str| {
        list.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n)
    };
    let body = html! {
        div #live {
            h2 { "Channels" }
            (channel_table(&channels, &rates, &open, &liveness))
            h2 { "Jobs" }
            div.tiles {
                @for state in JobState::ALL {
                    @let n = count(&counts.jobs, state.as_str());
                    a.tile.alert[state == JobState::Dead && n > 0]
                        href=(link("/console/jobs", &[("state", state.as_str())])) {
                        b { (n) } (state.as_str())
                    }
                }
            }
            h2 { "Dead letters and quarantine" }
            div.tiles {
                @let dead = count(&counts.jobs, "dead");
                a.tile.alert[dead > 0] href="/console/jobs?state=dead" { b { (dead) } "dead jobs" }
                @let dd = count(&counts.deliveries, "dead");
                a.tile.alert[dd > 0] href="/console/deliveries?state=dead" { b { (dd) } "dead deliveries" }
                @let pending = count(&counts.deliveries, "pending");
                a.tile href="/console/deliveries?state=pending" { b { (pending) } "pending deliveries" }
                a.tile.alert[!open.is_empty()] href="/console/quarantine" { b { (open.len()) } "quarantined events" }
            }
            h2 { "Throughput, last hour" }
            (chart::throughput(&chart::window(&minutes, now, 60)))
        }
    };
    html_page(
        StatusCode::OK,
        page("Overview", Section::Overview, &who, true, body),
    )
}

fn channel_table(
    channels: &[crate::store::lease::ChannelView],
    rates: &BTreeMap<String, i64>,
    open: &[crate::store::QuarantineRow],
    liveness: &[crate::telemetry::health::ChannelStatus],
) -> Markup {
    html! {
        table.channels {
            thead { tr {
                th { "Channel" } th { "Role" } th { "Holder" } th.num { "Generation" }
                th { "Checkpoint" } th.num { "Age" } th.num { "Events/min" }
                th.num { "Quarantined" } th { "Stream" }
            } }
            tbody {
                @for c in channels {
                    @let live = liveness.iter().find(|l| l.channel == c.channel);
                    tr {
                        td { a href=(link("/console/channel", &[("channel", &c.channel)])) { code { (c.channel) } } }
                        td { (badge(c.role)) }
                        td.mono { (c.holder.as_deref().unwrap_or("-")) }
                        td.num { (c.generation) }
                        td.mono { (c.checkpoint.as_deref().unwrap_or("-")) }
                        td.num { (c.checkpoint_age_seconds.map(age).unwrap_or_else(|| "-".into())) }
                        td.num { (format!("{:.1}", *rates.get(&c.channel).unwrap_or(&0) as f64 / 5.0)) }
                        td.num { (open.iter().filter(|q| q.channel == c.channel).count()) }
                        td {
                            @match live {
                                Some(l) if l.ready => (badge("ready")),
                                Some(l) => { (badge("not ready")) " " span.muted { (l.problem.as_deref().unwrap_or("")) } },
                                None => span.muted { "-" },
                            }
                        }
                    }
                }
                @if channels.is_empty() {
                    tr { td colspan="9" { span.muted { "No channels are configured in this process." } } }
                }
            }
        }
    }
}

/// The jobs, filtered by state, order and error text, a page at a time.
pub(super) async fn jobs(State(ui): State<Ui>, headers: HeaderMap, Query(q): Params) -> Response {
    let who = who!(ui, headers);
    let query = match job_query(&q) {
        Ok(v) => v,
        Err(e) => return error_page(&who, StatusCode::BAD_REQUEST, &e, "/console/jobs"),
    };
    let page_no: i64 = param(&q, "page")
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let (rows, total) = load!(
        who,
        ui.admin
            .store
            .job_page(&query, PAGE, (page_no - 1) * PAGE)
            .await
    );
    let pages = (total + PAGE - 1) / PAGE;
    let state = query.state.map(JobState::as_str).unwrap_or("");
    let body = html! {
        form.filters method="get" action="/console/jobs" {
            label { "State"
                select name="state" {
                    option value="" selected[state.is_empty()] { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[s.as_str() == state] { (s.as_str()) }
                    }
                }
            }
            label { "Order id" input name="order" value=(query.order_id.as_deref().unwrap_or("")) size="20"; }
            label { "Error contains" input name="error" value=(query.error.as_deref().unwrap_or("")) size="24"; }
            button type="submit" { "Filter" }
            a.button.secondary href="/console/jobs" { "Clear" }
        }
        div #live {
            p { b.count { (total) } " jobs match " span.muted { (describe(&query)) } }
            @if operator(&who) && total > 0 {
                div.actions {
                    a.button #bulk-retry href=(query_link("/console/jobs/bulk", &query, &[("action", "retry")])) { "Retry all " (total) " matching…" }
                    a.button.danger #bulk-cancel href=(query_link("/console/jobs/bulk", &query, &[("action", "cancel")])) { "Cancel all " (total) " matching…" }
                }
            }
            table.jobs {
                thead { tr {
                    th.num { "Job" } th { "State" } th { "Order" } th { "Status" }
                    th.num { "Attempts" } th { "Progress" } th { "Created" } th { "Last error" }
                } }
                tbody {
                    @for j in &rows {
                        tr data-job=(j.id) {
                            td.num { a href={ "/console/jobs/" (j.id) } { (j.id) } }
                            td { (badge(j.state.as_str())) }
                            td.mono { (j.order_id) }
                            td { (j.trigger_status) }
                            td.num { (j.attempt) "/" (j.max_attempts) }
                            td { (progress(j.progress)) }
                            td { (time(j.created_at)) }
                            td.error { (short(j.last_error.as_deref().unwrap_or(""), 160)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" { span.muted { "No jobs match." } } } }
                }
            }
            div.pager {
                @if page_no > 1 {
                    a href=(query_link("/console/jobs", &query, &[("page", &(page_no - 1).to_string())])) { "← Newer" }
                }
                span.muted { "Page " (page_no) " of " (pages.max(1)) }
                @if page_no < pages {
                    a href=(query_link("/console/jobs", &query, &[("page", &(page_no + 1).to_string())])) { "Older →" }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page("Jobs", Section::Jobs, &who, true, body),
    )
}

/// The confirmation of a bulk action: what it will do, to how many jobs.
pub(super) async fn bulk_confirm(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    if !operator(&who) {
        return error_page(
            &who,
            StatusCode::FORBIDDEN,
            "The viewer role may only read; bulk actions need the operator.",
            "/console/jobs",
        );
    }
    let query = match job_query(&q) {
        Ok(v) => v,
        Err(e) => return error_page(&who, StatusCode::BAD_REQUEST, &e, "/console/jobs"),
    };
    let action = match param(&q, "action") {
        "retry" => Bulk::Retry,
        "cancel" => Bulk::Cancel,
        other => {
            return error_page(
                &who,
                StatusCode::BAD_REQUEST,
                &format!("'{other}' is not a bulk action; use retry or cancel"),
                "/console/jobs",
            );
        }
    };
    let (_, total) = load!(who, ui.admin.store.job_page(&query, 1, 0).await);
    let (verb, rule) = match action {
        Bulk::Retry => (
            "Retry",
            "Only dead, cancelled and retryable jobs are retried; the others are left as they are.",
        ),
        Bulk::Cancel => (
            "Cancel",
            "Only open jobs (available, running, polling, retryable) are cancelled; the others are left as they are.",
        ),
    };
    let capped = total.min(crate::api::actions::BULK_LIMIT);
    let pairs = query_pairs(&query);
    let body = html! {
        (notice("warn", &format!("{verb} {capped} jobs matching {}?", describe(&query))))
        p { (rule) }
        @if total > capped { p { "Only the newest " (capped) " of the " (total) " matching jobs are acted on at once." } }
        form method="post" action="/console/jobs/bulk" {
            input type="hidden" name="csrf" value=(who.csrf);
            input type="hidden" name="action" value=(param(&q, "action"));
            @for (k, v) in &pairs { input type="hidden" name=(k) value=(v); }
            @if matches!(action, Bulk::Cancel) {
                p { label { "Reason (optional) " input name="reason" size="40"; } }
            }
            div.actions {
                button.danger[matches!(action, Bulk::Cancel)] #confirm type="submit" { (verb) " " (capped) " jobs" }
                a.button.secondary href=(query_link("/console/jobs", &query, &[])) { "Back" }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page(
            &format!("{verb} matching jobs"),
            Section::Jobs,
            &who,
            false,
            body,
        ),
    )
}

/// One job, as a timeline from its trigger on.
pub(super) async fn job(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let id = match record_id(&who, &raw, &JOB) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Some(j) = load!(who, ui.admin.store.job(id).await) else {
        return error_page(
            &who,
            StatusCode::NOT_FOUND,
            &format!("There is no job {id}."),
            "/console/jobs",
        );
    };
    let deliveries = load!(
        who,
        ui.admin
            .store
            .deliveries(&DeliveryFilter {
                job_id: Some(id),
                ..DeliveryFilter::default()
            })
            .await
    );
    let history: Vec<serde_json::Value> = serde_json::from_str(&j.errors).unwrap_or_default();
    let retryable = matches!(
        j.state,
        JobState::Dead | JobState::Cancelled | JobState::Retryable
    );
    let body = html! {
        @if let Some(n) = done_notice(&q) { (n) }
        div #live {
            p { (badge(j.state.as_str())) " " span.muted { "order " } code { (j.order_id) } }
            @if operator(&who) {
                div.actions {
                    @if retryable {
                        form.inline method="post" action={ "/console/jobs/" (j.id) "/retry" } {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button #retry type="submit" { "Retry" }
                        }
                    }
                    @if j.state.is_open() {
                        form.inline method="post" action={ "/console/jobs/" (j.id) "/cancel" } {
                            input type="hidden" name="csrf" value=(who.csrf);
                            input name="reason" placeholder="reason (optional)" size="28";
                            " "
                            button.danger #cancel type="submit" { "Cancel" }
                        }
                    }
                }
            }
            h2 { "Timeline" }
            ol.timeline {
                li {
                    b { "Triggered" } " " (time(j.created_at)) br;
                    (j.trigger_kind) " to " b { (j.trigger_status) } " on " code { (j.channel) }
                    " at replay id " code { (j.replay_id) } " (event " code { (j.event_id) } ")" br;
                    span.muted { "key " } code { (j.key) }
                }
                @for e in &history {
                    li.error {
                        b { "Attempt " (e["attempt"]) " failed" } " "
                        (e["at"].as_i64().map(time).unwrap_or_default()) br;
                        span.error { (e["error"].as_str().unwrap_or("")) }
                    }
                }
                @if j.operation_id.is_some() || j.phase.is_some() {
                    li {
                        b { "Operation" } " " code { (j.operation_id.as_deref().unwrap_or("not submitted")) }
                        @if let Some(at) = j.submitted_at { " submitted " (time(at)) }
                        br;
                        "phase " (j.phase.as_deref().unwrap_or("-")) ", " (j.polls) " polls, "
                        "idempotency key " code { (j.operation_key()) } br;
                        (progress(j.progress))
                    }
                }
                @if j.external_id.is_some() || j.finished_at.is_some() {
                    li.done[j.state == JobState::Completed] {
                        b { "Finished " (j.state.as_str()) } " " (time_or_dash(j.finished_at)) br;
                        @if let Some(x) = &j.external_id { "written back: external id " code { (x) } }
                    }
                }
                @for d in &deliveries {
                    li.done[d.state == DeliveryState::Delivered] {
                        b { "Notified " (d.notifier) } " of job." (d.event) " "
                        a href={ "/console/deliveries/" (d.id) } { "delivery " (d.id) } " " (badge(d.state.as_str()))
                    }
                }
            }
            h2 { "Details" }
            dl.facts {
                dt { "Attempts" } dd { (j.attempt) " of " (j.max_attempts) }
                dt { "Next run" } dd { (time(j.run_at)) }
                dt { "Lease" } dd { (j.lease_owner.as_deref().unwrap_or("-")) " " (time_or_dash(j.lease_until)) }
                dt { "Account" } dd { code { (j.account_id.as_deref().unwrap_or("-")) } }
                dt { "Last error" } dd.error { (j.last_error.as_deref().unwrap_or("-")) }
                dt { "Updated" } dd { (time(j.updated_at)) }
            }
            @if let Some(r) = &j.result { h2 { "Result" } pre { (pretty(r)) } }
            h2 { "Arguments" }
            pre { (pretty(&j.payload)) }
        }
    };
    html_page(
        StatusCode::OK,
        page(&format!("Job {id}"), Section::Jobs, &who, true, body),
    )
}

/// The outbox deliveries, newest first.
pub(super) async fn deliveries(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let state = match param(&q, "state") {
        "" => None,
        s => match DeliveryState::parse(s) {
            Some(s) => Some(s),
            None => {
                return error_page(
                    &who,
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "'{s}' is not a delivery state; use one of {}",
                        crate::api::delivery_states()
                    ),
                    "/console/deliveries",
                );
            }
        },
    };
    let rows = load!(
        who,
        ui.admin
            .store
            .deliveries(&DeliveryFilter {
                state,
                job_id: None,
                limit: Some(200),
            })
            .await
    );
    let current = state.map(DeliveryState::as_str).unwrap_or("");
    let body = html! {
        form.filters method="get" action="/console/deliveries" {
            label { "State"
                select name="state" {
                    option value="" selected[current.is_empty()] { "any" }
                    @for s in DeliveryState::ALL {
                        option value=(s.as_str()) selected[s.as_str() == current] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        div #live {
            p.muted { "The newest 200." }
            table {
                thead { tr {
                    th.num { "Delivery" } th.num { "Job" } th { "Notifier" } th { "Event" }
                    th { "State" } th.num { "Attempts" } th { "Created" } th { "Last error" }
                } }
                tbody {
                    @for d in &rows {
                        tr {
                            td.num { a href={ "/console/deliveries/" (d.id) } { (d.id) } }
                            td.num { a href={ "/console/jobs/" (d.job_id) } { (d.job_id) } }
                            td { (d.notifier) } td { (d.event) } td { (badge(d.state.as_str())) }
                            td.num { (d.attempt) "/" (d.max_attempts) }
                            td { (time(d.created_at)) }
                            td.error { (short(d.last_error.as_deref().unwrap_or(""), 160)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" { span.muted { "No deliveries." } } } }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page("Deliveries", Section::Deliveries, &who, true, body),
    )
}

/// One delivery, with its body pretty-printed.
pub(super) async fn delivery(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let id = match record_id(&who, &raw, &DELIVERY) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Some(d) = load!(who, ui.admin.store.delivery(id).await) else {
        return error_page(
            &who,
            StatusCode::NOT_FOUND,
            &format!("There is no delivery {id}."),
            "/console/deliveries",
        );
    };
    let history: Vec<serde_json::Value> = serde_json::from_str(&d.errors).unwrap_or_default();
    let body = html! {
        @if let Some(n) = done_notice(&q) { (n) }
        div #live {
            p { (badge(d.state.as_str())) " " (d.notifier) " · " (d.event) " · for "
                a href={ "/console/jobs/" (d.job_id) } { "job " (d.job_id) } }
            @if operator(&who) {
                div.actions {
                    @if matches!(d.state, DeliveryState::Dead | DeliveryState::Cancelled) {
                        form.inline method="post" action={ "/console/deliveries/" (d.id) "/retry" } {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button #retry type="submit" { "Retry" }
                        }
                    }
                    @if d.state == DeliveryState::Pending {
                        form.inline method="post" action={ "/console/deliveries/" (d.id) "/cancel" } {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button.danger #cancel type="submit" { "Cancel" }
                        }
                    }
                }
            }
            dl.facts {
                dt { "Attempts" } dd { (d.attempt) " of " (d.max_attempts) }
                dt { "Next attempt" } dd { (time(d.run_at)) }
                dt { "Created" } dd { (time(d.created_at)) }
                dt { "Delivered" } dd { (time_or_dash(d.delivered_at)) }
                dt { "Last error" } dd.error { (d.last_error.as_deref().unwrap_or("-")) }
            }
            h2 { "Body" }
            pre.body { (pretty(&d.payload)) }
            @if !history.is_empty() {
                h2 { "Errors" }
                ol.timeline {
                    @for e in &history {
                        li.error { (e["at"].as_i64().map(time).unwrap_or_default()) " attempt " (e["attempt"]) br; (e["error"].as_str().unwrap_or("")) }
                    }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page(
            &format!("Delivery {id}"),
            Section::Deliveries,
            &who,
            true,
            body,
        ),
    )
}

/// The quarantined events.
pub(super) async fn quarantine(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let all = param(&q, "state") == "all";
    let rows = load!(who, ui.admin.store.quarantined(!all).await);
    let body = html! {
        form.filters method="get" action="/console/quarantine" {
            label { "Show"
                select name="state" {
                    option value="open" selected[!all] { "open" }
                    option value="all" selected[all] { "all, resolved too" }
                }
            }
            button type="submit" { "Show" }
        }
        div #live {
            p { b.count { (rows.len()) } " " (if all { "quarantined events" } else { "open quarantined events" }) }
            table.quarantine {
                thead { tr {
                    th.num { "Id" } th { "State" } th { "Channel" } th { "Replay id" } th { "Kind" }
                    th.num { "Attempts" } th { "Quarantined" } th { "Reason" }
                } }
                tbody {
                    @for e in &rows {
                        tr {
                            td.num { a href={ "/console/quarantine/" (e.id) } { (e.id) } }
                            td { (badge(&e.state)) }
                            td.mono { (e.channel) }
                            td.mono { (e.replay_id) }
                            td { (e.kind) }
                            td.num { (e.attempts) }
                            td { (time(e.created_at)) }
                            td.reason { (short(&e.reason, 160)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" { span.muted { "Nothing is quarantined." } } } }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page("Quarantine", Section::Quarantine, &who, true, body),
    )
}

/// One quarantined event: its reason, schema id and raw bytes.
pub(super) async fn quarantined(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let id = match record_id(&who, &raw, &QUARANTINED) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Some(e) = load!(who, ui.admin.store.quarantine_entry(id).await) else {
        return error_page(
            &who,
            StatusCode::NOT_FOUND,
            &format!("There is no quarantined event {id}."),
            "/console/quarantine",
        );
    };
    let shown = &e.payload[..e.payload.len().min(HEX_VIEW_MAX)];
    let body = html! {
        @if let Some(n) = done_notice(&q) { (n) }
        p { (badge(&e.state)) " " span.muted { (e.kind) } }
        @if operator(&who) && e.state == "open" {
            div.actions {
                form.inline method="post" action={ "/console/quarantine/" (e.id) "/redrive" } {
                    input type="hidden" name="csrf" value=(who.csrf);
                    button #redrive type="submit" { "Re-drive" }
                }
            }
        }
        h2 { "Reason" }
        p.reason.card { (e.reason) }
        dl.facts {
            dt { "Channel" } dd { code { (e.channel) } }
            dt { "Replay id" } dd { code { (e.replay_id) } }
            dt { "Schema id" } dd { code.schema { (e.schema_id) } }
            dt { "Event id" } dd { code { (e.event_id) } }
            dt { "Re-drive attempts" } dd { (e.attempts) }
            dt { "Quarantined" } dd { (time(e.created_at)) }
            dt { "Updated" } dd { (time(e.updated_at)) }
        }
        h2 { "Payload, " (e.payload.len()) " bytes" }
        p { a.button.secondary href={ "/console/quarantine/" (e.id) "/payload" } download { "Download the raw bytes" } }
        @if shown.len() < e.payload.len() { p.muted { "The first " (shown.len()) " bytes:" } }
        pre.hex { (hex_dump(shown)) }
    };
    html_page(
        StatusCode::OK,
        page(
            &format!("Quarantined event {id}"),
            Section::Quarantine,
            &who,
            false,
            body,
        ),
    )
}

/// A quarantined event's raw bytes, as a download.
pub(super) async fn payload(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Response {
    let who = who!(ui, headers);
    let id = match record_id(&who, &raw, &QUARANTINED) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let Some(e) = load!(who, ui.admin.store.quarantine_entry(id).await) else {
        return error_page(
            &who,
            StatusCode::NOT_FOUND,
            &format!("There is no quarantined event {id}."),
            "/console/quarantine",
        );
    };
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"quarantine-{id}.avro\""),
            ),
        ],
        e.payload,
    )
        .into_response()
}

/// Every configured channel.
pub(super) async fn channels(State(ui): State<Ui>, headers: HeaderMap) -> Response {
    let who = who!(ui, headers);
    let now = ui.now();
    let views = load!(who, ui.admin.channel_views().await);
    let rates: BTreeMap<String, i64> =
        load!(who, ui.admin.store.channel_events(now - 5 * 60_000).await)
            .into_iter()
            .collect();
    let open = load!(who, ui.admin.store.quarantined(true).await);
    let liveness = ui
        .admin
        .liveness()
        .map(|l| l.statuses(now))
        .unwrap_or_default();
    let body = html! {
        div #live {
            (channel_table(&views, &rates, &open, &liveness))
            p.muted { "Age is the time since the checkpoint last moved: the channel's lag behind its stream. Events/min over the last five minutes." }
        }
    };
    html_page(
        StatusCode::OK,
        page("Channels", Section::Channels, &who, true, body),
    )
}

/// One channel: its lease, checkpoint, lag, and (for operators) the reset form.
pub(super) async fn channel(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let name = param(&q, "channel").to_owned();
    let views = load!(who, ui.admin.channel_views().await);
    let Some(c) = views.into_iter().find(|c| c.channel == name) else {
        return error_page(
            &who,
            StatusCode::NOT_FOUND,
            &format!("'{name}' is not a configured channel."),
            "/console/channels",
        );
    };
    let now = ui.now();
    let live = ui
        .admin
        .liveness()
        .and_then(|l| l.statuses(now).into_iter().find(|s| s.channel == name));
    let body = html! {
        @if let Some(n) = done_notice(&q) { (n) }
        div #live {
            dl.facts {
                dt { "Role here" } dd { (badge(c.role)) }
                dt { "Holder" } dd { code { (c.holder.as_deref().unwrap_or("none")) } }
                dt { "Lease generation" } dd { (c.generation) }
                dt { "Lease expires in" } dd { (c.lease_expires_in_seconds.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "-".into())) }
                dt { "Checkpoint" } dd { code { (c.checkpoint.as_deref().unwrap_or("none")) } }
                dt { "Lag (checkpoint age)" } dd { (c.checkpoint_age_seconds.map(age).unwrap_or_else(|| "-".into())) }
                dt { "Stream" } dd {
                    @match &live {
                        Some(l) => { (badge(if l.ready { "ready" } else { "not ready" })) " "
                            (l.live_age_seconds.map(|s| format!("last sign of life {} ago", age(s))).unwrap_or_default()) " "
                            (l.problem.as_deref().unwrap_or("")) },
                        None => span.muted { "not subscribed in this process" },
                    }
                }
            }
        }
        @if operator(&who) {
            h2 { "Reset the checkpoint" }
            form.filters method="get" action="/console/channel/reset" {
                input type="hidden" name="channel" value=(c.channel);
                label { "Resume from"
                    select name="to" {
                        option value="earliest" { "earliest (replay what is retained)" }
                        option value="latest" { "latest (skip to now)" }
                    }
                }
                button type="submit" { "Review…" }
            }
            form.filters method="get" action="/console/channel/reset" {
                input type="hidden" name="channel" value=(c.channel);
                label { "…or after replay id (hex)" input name="to" size="24" pattern="[0-9a-fA-F]+" required; }
                button type="submit" { "Review…" }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page(
            &format!("Channel {name}"),
            Section::Channels,
            &who,
            true,
            body,
        ),
    )
}

/// The confirmation of a checkpoint reset: what will be replayed or skipped.
pub(super) async fn reset_confirm(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let who = who!(ui, headers);
    let name = param(&q, "channel").to_owned();
    let back = link("/console/channel", &[("channel", &name)]);
    if !operator(&who) {
        return error_page(
            &who,
            StatusCode::FORBIDDEN,
            "The viewer role may only read; resets need the operator.",
            &back,
        );
    }
    let Some(to) = crate::api::parse_position(param(&q, "to")) else {
        return error_page(
            &who,
            StatusCode::BAD_REQUEST,
            "Resume from earliest, latest, or a replay id in hex.",
            &back,
        );
    };
    let views = load!(who, ui.admin.channel_views().await);
    let Some(c) = views.into_iter().find(|c| c.channel == name) else {
        return error_page(
            &who,
            StatusCode::NOT_FOUND,
            &format!("'{name}' is not a configured channel."),
            "/console/channels",
        );
    };
    let since = c
        .checkpoint_age_seconds
        .map(|s| time(ui.now() - (s * 1000.0) as i64));
    let from = c.checkpoint.as_deref().unwrap_or("no stored position");
    let what = match &to {
        crate::decode::Position::Earliest => format!(
            "The channel will replay every event Salesforce still retains (up to three days), from the oldest, instead of resuming after {from}. Replays are harmless: an approval that already made a job makes no second one."
        ),
        crate::decode::Position::Latest => format!(
            "The channel will skip every event between its checkpoint ({from}) and now. Approvals in that window get no job unless you then run sfcdc reconcile --since {}.",
            since.as_deref().unwrap_or("the time of the old checkpoint")
        ),
        crate::decode::Position::After(r) => format!(
            "The channel will resume after replay id {}. If that is before its checkpoint ({from}), the events in between are replayed (harmless); if after, they are skipped and need sfcdc reconcile.",
            r.to_hex()
        ),
    };
    let to_name = crate::api::actions::position_name(&to);
    let body = html! {
        (notice("warn", &what))
        p { "The holder is fenced out in the same transaction: its next commit is refused, and whichever instance takes the channel next resumes from the reset." }
        form method="post" action="/console/channel/reset" {
            input type="hidden" name="csrf" value=(who.csrf);
            input type="hidden" name="channel" value=(c.channel);
            input type="hidden" name="to" value=(to_name);
            div.actions {
                button.danger #confirm type="submit" { "Reset " (c.channel) " to " (to_name) }
                a.button.secondary href=(back) { "Back" }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page("Reset the checkpoint", Section::Channels, &who, false, body),
    )
}

/// The audit trail, newest first, a page at a time.
pub(super) async fn audit(State(ui): State<Ui>, headers: HeaderMap, Query(q): Params) -> Response {
    use crate::store::audit::Audit;
    let who = who!(ui, headers);
    let before = param(&q, "before").parse::<i64>().ok().filter(|n| *n > 0);
    let rows = load!(who, ui.admin.store.audit_trail(PAGE, before).await);
    let body = html! {
        div #live {
            table.audit {
                thead { tr {
                    th.num { "Id" } th { "When" } th { "Role" } th { "Session" } th { "Via" }
                    th { "Action" } th { "Target" } th { "Outcome" } th { "Detail" }
                } }
                tbody {
                    @for a in &rows {
                        tr {
                            td.num { (a.id) } td { (time(a.at)) } td { (a.role) }
                            td.mono { (a.session.as_deref().unwrap_or("-")) } td { (a.via) }
                            td.mono { (a.action) } td { (a.target) } td { (badge(&a.outcome)) }
                            td { (a.detail.as_deref().unwrap_or("")) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="9" { span.muted { "No operator action yet." } } } }
                }
            }
            div.pager {
                @if before.is_some() { a href="/console/audit" { "← Newest" } }
                @if rows.len() as i64 == PAGE {
                    @if let Some(last) = rows.last() {
                        a href={ "/console/audit?before=" (enc(&last.id.to_string())) } { "Older →" }
                    }
                }
            }
        }
    };
    html_page(
        StatusCode::OK,
        page("Audit trail", Section::Audit, &who, true, body),
    )
}
