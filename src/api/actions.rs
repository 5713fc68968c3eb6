//! The operator actions, one implementation for every front end of the admin server (the JSON
//! API and the console): each checks its input, acts through the store, and records an entry in
//! the audit trail, whether the action went through or was refused.
//!
//! The trail names the actor by role and, for the console, the session's public id; a token or
//! a session cookie never reaches it. A trail entry that cannot be written is logged as an
//! error and does not undo the action, which has already happened.

use std::sync::Arc;

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use serde::Serialize;

use super::auth::Role;
use super::{AdminState, ApiError};
use crate::decode::Position;
use crate::store::audit::{Audit, NewAudit};
use crate::store::insight::{Insights, JobQuery};
use crate::store::queue::{DeliveryRow, Queue};
use crate::store::{JobRow, Store};

/// Re-drives a quarantined event through the ingest side; the app wires it in. The answer says
/// what came of it, the error why not (404 unknown, 409 resolved or still failing, 503 for now).
pub trait Redrive: Send + Sync + 'static {
    /// Decodes and evaluates quarantined event `id` again.
    fn redrive(&self, id: i64) -> BoxFuture<'_, Result<String, ApiError>>;
}

/// Who asks for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The role the request authenticated as.
    pub role: Role,
    /// The console session's public id (never its cookie).
    pub session: Option<String>,
    /// `api` or `console`.
    pub via: &'static str,
}

impl Actor {
    /// A bearer-token caller of the JSON API.
    pub fn api(role: Role) -> Actor {
        Actor {
            role,
            session: None,
            via: "api",
        }
    }
}

/// Most jobs one bulk action touches.
pub const BULK_LIMIT: i64 = 10_000;

/// What a bulk action did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BulkOutcome {
    /// Jobs that matched the filter.
    pub matched: usize,
    /// Jobs the action changed.
    pub changed: usize,
    /// Jobs it did not change (their state did not allow it, or changed meanwhile).
    pub refused: usize,
}

/// A bulk action over jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bulk {
    /// Retry every matching job that can be retried.
    Retry,
    /// Cancel every matching job that is open.
    Cancel,
}

impl AdminState {
    /// Records `action` on `target` by `actor`, with how `result` ended.
    async fn audit<T>(
        &self,
        actor: &Actor,
        action: &str,
        target: String,
        result: &Result<T, ApiError>,
        detail: impl FnOnce(&T) -> Option<String>,
    ) {
        let (outcome, detail) = match result {
            Ok(v) => ("ok", detail(v)),
            Err(e) if e.status().is_client_error() => ("refused", Some(e.reason().to_owned())),
            Err(e) => ("failed", Some(e.reason().to_owned())),
        };
        let entry = NewAudit {
            at_ms: self.clock.now_ms(),
            role: actor.role.as_str().to_owned(),
            session: actor.session.clone(),
            via: actor.via.to_owned(),
            action: action.to_owned(),
            target,
            outcome: outcome.to_owned(),
            detail,
        };
        match self.store.record_audit(&entry).await {
            Ok(_) => tracing::info!(
                action,
                target = %entry.target,
                role = %entry.role,
                via = actor.via,
                outcome,
                "Operator action"
            ),
            Err(e) => tracing::error!(
                error = %e,
                action,
                target = %entry.target,
                "Operator action not recorded in the audit trail"
            ),
        }
    }

    /// The operator role, or 403 (recorded) for a viewer.
    async fn operator(&self, actor: &Actor, action: &str, target: &str) -> Result<(), ApiError> {
        if actor.role >= Role::Operator {
            return Ok(());
        }
        let refused: Result<(), ApiError> = Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the viewer role may only read; changes need the operator (SFCDC_ADMIN_TOKEN)",
        ));
        self.audit(actor, action, target.to_owned(), &refused, |_| None)
            .await;
        refused
    }

    /// Puts a dead, cancelled or retryable job back to work.
    pub async fn retry_job(&self, actor: &Actor, id: i64) -> Result<JobRow, ApiError> {
        let target = format!("job {id}");
        self.operator(actor, "job.retry", &target).await?;
        let r = self
            .store
            .retry_job(id, self.clock.now_ms())
            .await
            .map_err(ApiError::from);
        self.audit(actor, "job.retry", target, &r, |j| {
            Some(format!("{}, key {}", j.state.as_str(), j.operation_key()))
        })
        .await;
        r
    }

    /// Cancels an open job, with `reason` (already checked) on record.
    pub async fn cancel_job(
        &self,
        actor: &Actor,
        id: i64,
        reason: &str,
    ) -> Result<JobRow, ApiError> {
        let target = format!("job {id}");
        self.operator(actor, "job.cancel", &target).await?;
        let r = self
            .store
            .cancel_job(id, reason, self.clock.now_ms())
            .await
            .map_err(ApiError::from);
        self.audit(actor, "job.cancel", target, &r, |_| Some(reason.to_owned()))
            .await;
        r
    }

    /// Sends a dead or cancelled delivery again.
    pub async fn retry_delivery(&self, actor: &Actor, id: i64) -> Result<DeliveryRow, ApiError> {
        let target = format!("delivery {id}");
        self.operator(actor, "delivery.retry", &target).await?;
        let r = self
            .store
            .retry_delivery(id, self.clock.now_ms())
            .await
            .map_err(ApiError::from);
        self.audit(actor, "delivery.retry", target, &r, |_| None)
            .await;
        r
    }

    /// Stops a pending delivery.
    pub async fn cancel_delivery(&self, actor: &Actor, id: i64) -> Result<DeliveryRow, ApiError> {
        let target = format!("delivery {id}");
        self.operator(actor, "delivery.cancel", &target).await?;
        let r = self
            .store
            .cancel_delivery(id, self.clock.now_ms())
            .await
            .map_err(ApiError::from);
        self.audit(actor, "delivery.cancel", target, &r, |_| None)
            .await;
        r
    }

    /// Decodes and evaluates a quarantined event again.
    pub async fn redrive(&self, actor: &Actor, id: i64) -> Result<String, ApiError> {
        let target = format!("quarantined event {id}");
        self.operator(actor, "quarantine.redrive", &target).await?;
        let r = match &self.redriver {
            Some(redriver) => redriver.redrive(id).await,
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "re-drive is not available in this process; use sfcdc quarantine retry",
            )),
        };
        self.audit(actor, "quarantine.redrive", target, &r, |s| Some(s.clone()))
            .await;
        r
    }

    /// Sets where `channel` resumes; its holder is fenced out (see `Store::set_checkpoint`).
    pub async fn reset_checkpoint(
        &self,
        actor: &Actor,
        channel: &str,
        to: &Position,
    ) -> Result<(), ApiError> {
        let target = channel.to_owned();
        self.operator(actor, "checkpoint.reset", &target).await?;
        let r = if self.fleet.0.iter().any(|c| c == channel) {
            self.store
                .set_checkpoint(channel, to, self.clock.now_ms())
                .await
                .map_err(ApiError::from)
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("'{channel}' is not a configured channel (SFCDC_CHANNELS)"),
            ))
        };
        self.audit(actor, "checkpoint.reset", target, &r, |_| {
            Some(format!("to {}", position_name(to)))
        })
        .await;
        r
    }

    /// Retries or cancels every job `query` matches (at most [`BULK_LIMIT`]); one entry in the
    /// trail for the whole action.
    pub async fn bulk(
        &self,
        actor: &Actor,
        action: Bulk,
        query: &JobQuery,
        reason: &str,
    ) -> Result<BulkOutcome, ApiError> {
        let name = match action {
            Bulk::Retry => "jobs.bulk_retry",
            Bulk::Cancel => "jobs.bulk_cancel",
        };
        let target = describe(query);
        self.operator(actor, name, &target).await?;
        let r = self.bulk_apply(action, query, reason).await;
        self.audit(actor, name, target, &r, |o| {
            Some(format!(
                "{} matched, {} changed, {} refused",
                o.matched, o.changed, o.refused
            ))
        })
        .await;
        r
    }

    async fn bulk_apply(
        &self,
        action: Bulk,
        query: &JobQuery,
        reason: &str,
    ) -> Result<BulkOutcome, ApiError> {
        let ids = self.store.job_ids(query, BULK_LIMIT).await?;
        let mut out = BulkOutcome {
            matched: ids.len(),
            ..BulkOutcome::default()
        };
        for id in ids {
            let now = self.clock.now_ms();
            let r = match action {
                Bulk::Retry => self.store.retry_job(id, now).await.map(|_| ()),
                Bulk::Cancel => self.store.cancel_job(id, reason, now).await.map(|_| ()),
            };
            match r {
                Ok(()) => out.changed += 1,
                Err(crate::store::queue::ActionError::Store(e)) => return Err(e.into()),
                Err(_) => out.refused += 1,
            }
        }
        Ok(out)
    }
}

/// A position as an operator writes it: `earliest`, `latest` or the replay id in hex.
pub fn position_name(p: &Position) -> String {
    match p {
        Position::Earliest => "earliest".into(),
        Position::Latest => "latest".into(),
        Position::After(r) => r.to_hex(),
    }
}

/// A job filter in words, for the trail: `state=dead order=801… error~"timeout"`.
pub fn describe(q: &JobQuery) -> String {
    let mut parts = Vec::new();
    if let Some(s) = q.state {
        parts.push(format!("state={}", s.as_str()));
    }
    if let Some(o) = &q.order_id {
        parts.push(format!("order={o}"));
    }
    if let Some(e) = &q.error {
        parts.push(format!("error~{e:?}"));
    }
    if parts.is_empty() {
        "all jobs".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A shared re-drive.
pub type SharedRedrive = Arc<dyn Redrive>;
