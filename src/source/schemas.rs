//! The schema registry: `GetSchema` once per schema id, parsed and compiled once, kept for good.
//!
//! Schema ids name immutable schema versions, so a compiled schema never expires. Concurrent
//! misses for one id share a single `GetSchema` call (moka's `try_get_with`). A schema the server
//! does not know, or one that does not compile, is remembered as such: its events are
//! quarantined without asking again. Transient errors are not remembered: the caller's stream
//! ends and the next attempt asks again.
//!
//! A registry built [with a projection](SchemaRegistry::with_projection) compiles each schema's
//! projected plan too, once, next to the full one: the subscription decodes through it, and
//! whoever shares the registry (the quarantine re-drive) can still decode in full.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tonic::{Code, Status};

use super::connect::Client;
use crate::decode::{CompiledSchema, DecodeError};
use crate::proto::SchemaRequest;

/// A compiled schema, or why the events naming it cannot be decoded.
pub type Resolved = Arc<Result<Arc<CompiledSchema>, DecodeError>>;

/// Compiled schemas by id.
pub struct SchemaRegistry {
    client: Client,
    cache: moka::future::Cache<String, Resolved>,
    fetches: AtomicU64,
    /// The body fields the projected plans keep; `None`: no projection.
    projection: Option<Vec<String>>,
}

impl SchemaRegistry {
    /// An empty registry.
    pub fn new(client: Client) -> Self {
        SchemaRegistry {
            client,
            cache: moka::future::Cache::builder().max_capacity(10_000).build(),
            fetches: AtomicU64::new(0),
            projection: None,
        }
    }

    /// Compiles every schema with a projection keeping these top-level body fields
    /// ([`CompiledSchema::with_projection`]).
    pub fn with_projection(mut self, fields: Vec<String>) -> Self {
        self.projection = Some(fields);
        self
    }

    /// `GetSchema` calls made so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The compiled schema for `id`. `Err` is a transient server error.
    pub async fn get(&self, id: &str) -> Result<Resolved, Status> {
        if id.is_empty() {
            return Ok(Arc::new(Err(DecodeError::UnknownSchema(String::new()))));
        }
        if let Some(hit) = self.cache.get(id).await {
            return Ok(hit);
        }
        self.cache
            .try_get_with(id.to_owned(), self.fetch(id))
            .await
            .map_err(|e: Arc<Status>| (*e).clone())
    }

    async fn fetch(&self, id: &str) -> Result<Resolved, Status> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let mut client = self.client.clone();
        match client
            .get_schema(SchemaRequest {
                schema_id: id.to_owned(),
            })
            .await
        {
            Ok(info) => {
                let info = info.into_inner();
                let compiled = CompiledSchema::compile(id, &info.schema_json).map(|c| {
                    Arc::new(match &self.projection {
                        Some(fields) => c.with_projection(fields),
                        None => c,
                    })
                });
                if let Err(e) = &compiled {
                    tracing::error!(schema_id = id, error = %e, "Schema does not compile; its events will be quarantined");
                }
                Ok(Arc::new(compiled))
            }
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                tracing::error!(schema_id = id, error = %status.message(), "Schema unknown to the server; its events will be quarantined");
                Ok(Arc::new(Err(DecodeError::UnknownSchema(id.to_owned()))))
            }
            Err(status) => Err(status),
        }
    }
}
