//! The fulfilment system's async-action protocol, client side.
//!
//! **Submit** `POST {base}/orders` with the order as the body and `Idempotency-Key: <key>`:
//! `200`/`201` means the work finished synchronously; `202` returns an `operation_id` (and maybe a
//! status URL). A repeated key returns the first operation, which is what makes a resumed or
//! retried submit safe. **Poll** `GET {base}/operations/{id}`, or, when the system offers it,
//! `GET {base}/operations?ids=a,b` for many at once; a system without batch status answers that
//! route 404 (or 405/501), after which this client polls one by one.
//!
//! Every failure is classified here once: [`CallError::transient`] failures (transport errors,
//! timeouts, 408, 429, 5xx, and 401/403, which an operator fixes by rotating a token) may pass by
//! retrying; any other 4xx will not. Nothing here retries: the caller decides, through
//! [`super::transition`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value as Json;

/// Ids per batch status request.
pub const BATCH_MAX: usize = 100;

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    /// Still running.
    Pending,
    /// Done, with a result.
    Completed,
    /// Done, with an error.
    Failed,
}

/// The error of a failed operation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OpError {
    /// A machine-readable code.
    #[serde(default)]
    pub code: String,
    /// What happened.
    #[serde(default)]
    pub message: String,
    /// Whether a new attempt may succeed (absent means no).
    #[serde(default)]
    pub retryable: bool,
}

/// An operation as the fulfilment system reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Operation {
    /// Its id.
    pub operation_id: String,
    /// Where it stands.
    pub status: OpStatus,
    /// Progress 0–100.
    #[serde(default)]
    pub progress: Option<i32>,
    /// The result, once completed.
    #[serde(default)]
    pub result: Option<Json>,
    /// The error, once failed.
    #[serde(default)]
    pub error: Option<OpError>,
}

impl Operation {
    /// Progress clamped to 0–100.
    pub fn progress(&self) -> Option<i32> {
        self.progress.map(|p| p.clamp(0, 100))
    }
}

/// A call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// Whether retrying later may help.
    pub transient: bool,
    /// What happened (never contains the token).
    pub message: String,
}

impl CallError {
    fn transport(what: &str, e: reqwest::Error) -> CallError {
        let kind = if e.is_timeout() {
            "timed out"
        } else {
            "failed"
        };
        CallError {
            transient: true,
            message: format!("fulfilment {what} {kind}: {}", e.without_url()),
        }
    }

    /// Classifies a non-success response.
    fn status(what: &str, status: u16, body: &str) -> CallError {
        let transient = matches!(status, 401 | 403 | 408 | 429) || status >= 500;
        let detail = serde_json::from_str::<Json>(body)
            .ok()
            .and_then(|b| {
                let e = b.get("error")?;
                Some(format!(
                    "{}: {}",
                    e.get("code").and_then(Json::as_str).unwrap_or("error"),
                    e.get("message").and_then(Json::as_str).unwrap_or("")
                ))
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        CallError {
            transient,
            message: format!("fulfilment {what} answered {status}: {detail}"),
        }
    }

    fn unexpected(what: &str, e: impl std::fmt::Display) -> CallError {
        CallError {
            transient: true,
            message: format!("fulfilment {what} returned an unexpected body: {e}"),
        }
    }
}

/// What a submit returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// `200`/`201`: finished synchronously (or a repeated key whose operation is finished).
    Finished(Operation),
    /// `202`: accepted; poll the operation.
    Accepted(Operation),
}

/// The fulfilment system, as the worker sees it.
pub trait Fulfilment: Send + Sync + 'static {
    /// Submits `order` under `key`.
    fn submit(
        &self,
        key: &str,
        order: &Json,
    ) -> impl Future<Output = Result<Submitted, CallError>> + Send;

    /// One operation; `Ok(None)` if the system does not know it.
    fn poll(&self, id: &str) -> impl Future<Output = Result<Option<Operation>, CallError>> + Send;

    /// Many operations at once (at most [`BATCH_MAX`]); `Ok(None)` when the system has no batch
    /// status. Unknown ids are absent from the answer.
    fn poll_many(
        &self,
        ids: &[&str],
    ) -> impl Future<Output = Result<Option<Vec<Operation>>, CallError>> + Send;
}

/// The fulfilment system over HTTP.
pub struct HttpFulfilment {
    http: reqwest::Client,
    base: String,
    token: Option<SecretString>,
    timeout: Duration,
    batch: AtomicBool,
}

impl HttpFulfilment {
    /// A client of the system at `base` (`SFCDC_FULFILMENT_URL`).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        token: Option<SecretString>,
        timeout: Duration,
    ) -> Self {
        HttpFulfilment {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            timeout,
            batch: AtomicBool::new(true),
        }
    }

    /// Whether batch status is (still believed to be) available.
    pub fn batch_supported(&self) -> bool {
        self.batch.load(Ordering::Relaxed)
    }

    fn request(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let rb = rb.timeout(self.timeout);
        match &self.token {
            Some(t) => rb.bearer_auth(t.expose_secret()),
            None => rb,
        }
    }

    async fn read(what: &str, resp: reqwest::Response) -> Result<(u16, String), CallError> {
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| CallError::transport(what, e))?;
        Ok((status, body))
    }
}

impl Fulfilment for HttpFulfilment {
    async fn submit(&self, key: &str, order: &Json) -> Result<Submitted, CallError> {
        let resp = self
            .request(self.http.post(format!("{}/orders", self.base)))
            .header("Idempotency-Key", key)
            .json(order)
            .send()
            .await
            .map_err(|e| CallError::transport("submit", e))?;
        let (status, body) = Self::read("submit", resp).await?;
        submit_answer(status, &body)
    }

    async fn poll(&self, id: &str) -> Result<Option<Operation>, CallError> {
        let mut url = reqwest::Url::parse(&format!("{}/operations/", self.base))
            .map_err(|e| CallError::unexpected("poll", e))?;
        url.path_segments_mut()
            .map_err(|_| CallError::unexpected("poll", "base URL cannot have a path"))?
            .pop_if_empty()
            .push(id);
        let resp = self
            .request(self.http.get(url))
            .send()
            .await
            .map_err(|e| CallError::transport("poll", e))?;
        let (status, body) = Self::read("poll", resp).await?;
        poll_answer(status, &body)
    }

    async fn poll_many(&self, ids: &[&str]) -> Result<Option<Vec<Operation>>, CallError> {
        if !self.batch_supported() {
            return Ok(None);
        }
        let resp = self
            .request(self.http.get(format!("{}/operations", self.base)))
            .query(&[("ids", ids.join(","))])
            .send()
            .await
            .map_err(|e| CallError::transport("batch poll", e))?;
        let (status, body) = Self::read("batch poll", resp).await?;
        let answer = batch_answer(status, &body)?;
        if answer.is_none() {
            tracing::info!(
                status,
                "The fulfilment system has no batch status; polling operations one by one"
            );
            self.batch.store(false, Ordering::Relaxed);
        }
        Ok(answer)
    }
}

/// A submit's answer: `200`/`201` finished, `202` accepted, anything else a [`CallError`].
pub fn submit_answer(status: u16, body: &str) -> Result<Submitted, CallError> {
    match status {
        200..=202 => {
            let op: Operation =
                serde_json::from_str(body).map_err(|e| CallError::unexpected("submit", e))?;
            Ok(if status == 202 {
                Submitted::Accepted(op)
            } else {
                Submitted::Finished(op)
            })
        }
        _ => Err(CallError::status("submit", status, body)),
    }
}

/// A poll's answer: the operation, `None` for a 404 (unknown to the system).
pub fn poll_answer(status: u16, body: &str) -> Result<Option<Operation>, CallError> {
    match status {
        200 => serde_json::from_str(body)
            .map(Some)
            .map_err(|e| CallError::unexpected("poll", e)),
        404 => Ok(None),
        _ => Err(CallError::status("poll", status, body)),
    }
}

/// A batch poll's answer: the operations, `None` when the system has no batch status (404, 405
/// or 501).
pub fn batch_answer(status: u16, body: &str) -> Result<Option<Vec<Operation>>, CallError> {
    #[derive(Deserialize)]
    struct Batch {
        operations: Vec<Operation>,
    }
    match status {
        200 => serde_json::from_str::<Batch>(body)
            .map(|b| Some(b.operations))
            .map_err(|e| CallError::unexpected("batch poll", e)),
        404 | 405 | 501 => Ok(None),
        _ => Err(CallError::status("batch poll", status, body)),
    }
}

/// The external id in a completed operation's result: `external_id`, else `id`.
pub fn external_id(result: &Json) -> Option<String> {
    ["external_id", "id"]
        .iter()
        .find_map(|k| match result.get(*k)? {
            Json::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        for (status, transient) in [
            (400, false),
            (401, true),
            (403, true),
            (404, false),
            (408, true),
            (409, false),
            (422, false),
            (429, true),
            (500, true),
            (503, true),
        ] {
            assert_eq!(
                CallError::status("submit", status, "").transient,
                transient,
                "{status}"
            );
        }
        let e = CallError::status(
            "submit",
            422,
            r#"{"error":{"code":"invalid_request","message":"no Id"}}"#,
        );
        assert_eq!(
            e.message,
            "fulfilment submit answered 422: invalid_request: no Id"
        );
    }

    #[test]
    fn operations_parse_with_optional_parts() {
        let op: Operation = serde_json::from_str(
            r#"{"operation_id":"op_1","status":"failed","progress":140,"error":{"code":"rejected","message":"no stock"}}"#,
        )
        .unwrap();
        assert_eq!(op.status, OpStatus::Failed);
        assert_eq!(op.progress(), Some(100));
        assert!(!op.error.unwrap().retryable);
        let op: Operation =
            serde_json::from_str(r#"{"operation_id":"op_2","status":"pending"}"#).unwrap();
        assert_eq!((op.progress(), op.result), (None, None));
    }

    #[test]
    fn the_external_id_is_found_in_the_result() {
        let j = |s: &str| serde_json::from_str::<Json>(s).unwrap();
        assert_eq!(
            external_id(&j(r#"{"external_id":"WH-1","id":"x"}"#)).as_deref(),
            Some("WH-1")
        );
        assert_eq!(external_id(&j(r#"{"id":42}"#)).as_deref(), Some("42"));
        assert_eq!(external_id(&j(r#"{"external_id":" "}"#)), None);
        assert_eq!(external_id(&j("null")), None);
    }
}
