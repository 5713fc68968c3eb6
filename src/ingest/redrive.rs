//! Re-drive of quarantined events: decode a quarantined event again with its schema (fetched
//! anew if needed), evaluate it with the same rules and lookups as live ingest, and commit its
//! jobs together with the entry's resolution in one transaction. An event that still fails
//! keeps its entry, with the new reason and one more attempt; a transient failure (no login, no
//! schema, an outage) changes nothing.

use std::sync::Arc;

use super::IngestSink;
use crate::salesforce::OrderLookup;
use crate::salesforce::auth::Authenticator;
use crate::source::schemas::SchemaRegistry;
use crate::store::{Store, StoreError};

/// Why a quarantined event could not be re-driven.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// No such entry.
    #[error("there is no quarantined event {0}")]
    NotFound(i64),
    /// The entry was re-driven before.
    #[error("quarantined event {0} was already resolved")]
    AlreadyResolved(i64),
    /// It still fails; the reason is recorded on the entry.
    #[error("quarantined event {id} still fails: {reason}")]
    StillFails {
        /// The entry.
        id: i64,
        /// Why.
        reason: String,
    },
    /// A transient error; try again.
    #[error("could not re-drive quarantined event {id} now: {reason}")]
    Transient {
        /// The entry.
        id: i64,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Re-drives quarantined events through an ingest sink.
pub struct Redriver<S: Store, L: OrderLookup> {
    sink: Arc<IngestSink<S, L>>,
    schemas: Arc<SchemaRegistry>,
    auth: Arc<Authenticator>,
}

impl<S: Store, L: OrderLookup> Redriver<S, L> {
    /// A re-drive through `sink`, resolving schemas with `schemas` and logging in with `auth`.
    pub fn new(
        sink: Arc<IngestSink<S, L>>,
        schemas: Arc<SchemaRegistry>,
        auth: Arc<Authenticator>,
    ) -> Self {
        Redriver {
            sink,
            schemas,
            auth,
        }
    }

    /// Decodes and evaluates a quarantined event again; on success its jobs are created and the
    /// entry resolved in one transaction. The answer says what happened.
    pub async fn redrive(&self, id: i64) -> Result<String, RedriveError> {
        let store = self.sink.store();
        let entry = store
            .quarantine_entry(id)
            .await?
            .ok_or(RedriveError::NotFound(id))?;
        if entry.state == "resolved" {
            return Err(RedriveError::AlreadyResolved(id));
        }
        let now = self.sink.clock().now_ms();
        let still_fails = |reason: String| async move {
            store.quarantine_retry_failed(id, &reason, now).await?;
            Err::<String, _>(RedriveError::StillFails { id, reason })
        };
        if self.auth.session().await.is_err() {
            return Err(RedriveError::Transient {
                id,
                reason: "cannot log in to Salesforce".into(),
            });
        }
        let resolved =
            self.schemas
                .get(&entry.schema_id)
                .await
                .map_err(|s| RedriveError::Transient {
                    id,
                    reason: s.message().to_owned(),
                })?;
        let channel: Arc<str> = Arc::from(entry.channel.as_str());
        let payload = bytes::Bytes::from(entry.payload.clone());
        // In full, not projected: a re-drive is rare, and whatever made the event fail, no
        // field of it is left out of a second look.
        let body = match resolved.as_ref() {
            Ok(schema) => schema.decode(&channel, &payload),
            Err(e) => Err(e.clone()),
        };
        let body = match body {
            Ok(b) => b,
            Err(e) => return still_fails(e.to_string()).await,
        };
        let event = crate::decode::DecodedEvent {
            replay_id: crate::decode::ReplayId::from_hex(&entry.replay_id).unwrap_or_default(),
            schema_id: Arc::from(entry.schema_id.as_str()),
            event_id: entry.event_id.clone(),
            payload,
            body,
        };
        let mut prepared = self
            .sink
            .prepare(&channel, std::slice::from_ref(&event), &[])
            .await
            .map_err(|e| RedriveError::Transient {
                id,
                reason: e.to_string(),
            })?;
        if let Some(q) = prepared.batch.quarantine.first() {
            return still_fails(q.reason.clone()).await;
        }
        prepared.batch.channel = entry.channel.clone();
        prepared.batch.resolve_quarantine = vec![id];
        prepared.batch.now_ms = now;
        self.sink.send_invalidations(&prepared.invalidations);
        let outcome = self
            .sink
            .commit_prepared(&channel, prepared)
            .await
            .map_err(|e| RedriveError::Transient {
                id,
                reason: e.to_string(),
            })?;
        Ok(format!(
            "quarantined event {id} resolved: {} job(s) created, {} duplicate(s) suppressed",
            outcome.created.len(),
            outcome.duplicate_events.len() + outcome.duplicate_approvals.len()
        ))
    }
}
