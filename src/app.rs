//! The service, assembled: settings → [`App::build`] → [`App::run`].
//!
//! [`Settings`] reads and validates every variable at start, so a bad value stops sfcdc before
//! it connects anywhere, with a message naming the variable. [`App::build`] opens the store (and
//! migrates it), prepares the login, the REST client and the subscriber; [`App::run`] subscribes
//! until its cancellation token fires, then lets every channel commit what it holds and returns.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::admin::AdminConfig;
use crate::cache::invalidate::Invalidator;
use crate::cache::{CacheConfig, CachedLookup, OrderCache, RestOrderSource};
use crate::config::{ConfigError, Env};
use crate::ingest::IngestSink;
use crate::rules::RulesConfig;
use crate::salesforce::auth::{AuthConfig, Authenticator};
use crate::salesforce::{RestLookup, SalesforceRest};
use crate::source::{Source, SourceConfig, SourceError};
use crate::store::{AnyStore, StoreError};
use crate::telemetry::metrics::Metrics;
use crate::worker::fulfilment::HttpFulfilment;
use crate::worker::{Worker, WorkerConfig};

/// The default database: a SQLite file under `./data`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/sfcdc.db";

/// Every setting of `sfcdc run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Subscriber settings.
    pub source: SourceConfig,
    /// Login settings.
    pub auth: AuthConfig,
    /// Rule settings.
    pub rules: RulesConfig,
    /// `SFCDC_DATABASE_URL`.
    pub database_url: String,
    /// `SF_API_VERSION`.
    pub api_version: String,
    /// `SFCDC_MAX_ATTEMPTS`: attempts a job gets before it is dead-lettered.
    pub max_attempts: i32,
    /// The worker, when `SFCDC_FULFILMENT_URL` is set.
    pub worker: Option<WorkerConfig>,
    /// The admin HTTP API.
    pub admin: AdminConfig,
    /// The order cache and its read API.
    pub cache: CacheConfig,
    /// `SFCDC_SHUTDOWN_TIMEOUT`: how long a shutdown may take to commit the batches in hand and
    /// record the job steps in flight before the process exits anyway.
    pub shutdown_timeout: std::time::Duration,
}

impl Settings {
    /// Reads and validates every setting.
    pub fn from_env(env: &Env) -> Result<Settings, ConfigError> {
        Ok(Settings {
            source: SourceConfig::from_env(env)?,
            auth: AuthConfig::from_env(env)?,
            rules: RulesConfig::from_env(env)?,
            database_url: database_url(env)?,
            api_version: crate::salesforce::rest::api_version(env)?,
            max_attempts: env.int_or("SFCDC_MAX_ATTEMPTS", 8, 1..=100)? as i32,
            worker: WorkerConfig::from_env(env)?,
            admin: AdminConfig::from_env(env)?,
            cache: CacheConfig::from_env(env)?,
            shutdown_timeout: env.positive_duration_or(
                "SFCDC_SHUTDOWN_TIMEOUT",
                std::time::Duration::from_secs(30),
            )?,
        })
    }
}

/// `SFCDC_DATABASE_URL`, checked for its scheme.
pub fn database_url(env: &Env) -> Result<String, ConfigError> {
    env.parse_or("SFCDC_DATABASE_URL", DEFAULT_DATABASE_URL.to_owned(), |s| {
        if s.starts_with("sqlite:")
            || s.starts_with("postgres://")
            || s.starts_with("postgresql://")
        {
            Ok(s.to_owned())
        } else {
            Err("expected sqlite://PATH or postgres://USER@HOST/DB".into())
        }
    })
    .map_err(|e| ConfigError::new(&e.var, crate::store::redact_url(&e.reason)))
}

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The subscriber failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The pipeline's sink in `sfcdc run`.
pub type RunSink = IngestSink<AnyStore, CachedLookup<RestOrderSource>>;

/// The order cache in `sfcdc run`.
pub type RunCache = OrderCache<RestOrderSource>;

/// The worker in `sfcdc run`.
pub type RunWorker = Worker<AnyStore, HttpFulfilment, Arc<SalesforceRest>>;

/// The assembled service.
pub struct App {
    source: Source<RunSink>,
    sink: Arc<RunSink>,
    metrics: Arc<Metrics>,
    auth: Arc<Authenticator>,
    rest: Arc<SalesforceRest>,
    http: reqwest::Client,
    worker: std::sync::Mutex<Option<RunWorker>>,
    admin: std::sync::Mutex<Option<tokio::net::TcpListener>>,
    admin_addr: Option<std::net::SocketAddr>,
    admin_token: Option<secrecy::SecretString>,
    cache: Arc<RunCache>,
    invalidator: Invalidator,
}

impl App {
    /// Opens the store, prepares the login and the subscriber. Nothing is subscribed yet.
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(AnyStore::open(&settings.database_url).await?);
        let http = crate::salesforce::http::http_client(settings.source.ca_cert.as_deref())
            .map_err(|e| ConfigError::new("SFCDC_CA_CERT", e))?;
        let auth = Arc::new(Authenticator::new(
            settings.auth.clone(),
            http.clone(),
            metrics.clone(),
        ));
        let rest = Arc::new(SalesforceRest::new(
            auth.clone(),
            settings.api_version.clone(),
        ));
        let rules = Arc::new(settings.rules.clone());
        let worker = settings.worker.clone().map(|config| {
            let fulfilment = HttpFulfilment::new(
                http.clone(),
                &config.fulfilment_url,
                config.fulfilment_token.clone(),
                config.http_timeout,
            );
            Worker::new(
                store.clone(),
                fulfilment,
                rest.clone(),
                config,
                rules.clone(),
                metrics.clone(),
            )
        });
        let admin = match settings.admin.addr {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                ConfigError::new("SFCDC_ADMIN_ADDR", format!("cannot listen on {addr}: {e}"))
            })?),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let cache = Arc::new(OrderCache::new(
            RestOrderSource::new(rest.clone(), &settings.cache, &rules),
            settings.cache.clone(),
            rules.clone(),
            &metrics,
        ));
        let invalidator = Invalidator::new(settings.cache.invalidation_window);
        let lookup = Arc::new(CachedLookup::new(
            cache.clone(),
            RestLookup::new(rest.clone(), rules.clone()),
        ));
        let sink = Arc::new(IngestSink::new(
            store,
            lookup,
            rules,
            metrics.clone(),
            Some(invalidator.clone()),
            settings.max_attempts,
        ));
        let source = Source::new(
            settings.source.clone(),
            auth.clone(),
            sink.clone(),
            metrics.clone(),
        )?;
        let worker = worker.map(|w| w.with_wake(sink.jobs_created().clone()));
        Ok(App {
            source,
            sink,
            metrics,
            auth,
            rest,
            http,
            worker: std::sync::Mutex::new(worker),
            admin: std::sync::Mutex::new(admin),
            admin_addr,
            admin_token: settings.admin.token.clone(),
            cache,
            invalidator,
        })
    }

    /// The metrics of this instance.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The sink (and through it, the store).
    pub fn sink(&self) -> &Arc<RunSink> {
        &self.sink
    }

    /// The login.
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The REST client.
    pub fn rest(&self) -> &Arc<SalesforceRest> {
        &self.rest
    }

    /// The subscriber.
    pub fn source(&self) -> &Source<RunSink> {
        &self.source
    }

    /// The order cache.
    pub fn cache(&self) -> &Arc<RunCache> {
        &self.cache
    }

    /// Cache invalidations waiting for their coalescing window to close.
    pub fn invalidations_pending(&self) -> usize {
        self.invalidator.pending()
    }

    /// Where the admin API listens, if it does.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    /// Runs until `cancel`: subscribes, runs the worker and serves the admin API. Then lets
    /// every channel commit what it holds and every job step record its outcome. Runs once.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), AppError> {
        tracing::info!("sfcdc running");
        // Whatever ends the subscriber (a cancel, an error, or this future being dropped) stops
        // the rest too.
        let stop = cancel.child_token();
        let _stop_on_drop = stop.clone().drop_guard();
        let admin = self
            .admin
            .lock()
            .expect("admin lock")
            .take()
            .map(|listener| {
                tracing::info!(addr = ?self.admin_addr, "Admin API listening");
                let state = crate::admin::AdminState::new(
                    self.sink.store().clone(),
                    self.metrics.clone(),
                    self.admin_token.as_ref(),
                )
                .with_liveness(self.source.liveness().clone());
                let routes = crate::admin::router(state)
                    .merge(crate::cache::http::router(self.cache.clone()));
                tokio::spawn(crate::admin::serve(listener, routes, stop.clone()))
            });
        let invalidations = tokio::spawn(self.invalidator.clone().run(
            self.cache.clone(),
            self.metrics.clone(),
            stop.clone(),
        ));
        let worker = match self.worker.lock().expect("worker lock").take() {
            Some(w) => Some(tokio::spawn(w.run(self.http.clone(), stop.clone()))),
            None => {
                tracing::warn!("SFCDC_FULFILMENT_URL is not set: jobs are stored but not run");
                None
            }
        };
        let result = self.source.run(stop.clone()).await;
        stop.cancel();
        for task in [worker, admin, Some(invalidations)].into_iter().flatten() {
            let _ = task.await;
        }
        result?;
        tracing::info!("sfcdc stopped cleanly");
        Ok(())
    }
}

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

impl App {
    /// Decodes and evaluates a quarantined event again; on success its jobs are created and the
    /// entry resolved in one transaction.
    pub async fn redrive(&self, id: i64) -> Result<String, RedriveError> {
        use crate::store::Store;
        let store = self.sink.store();
        let entry = store
            .quarantine_entry(id)
            .await?
            .ok_or(RedriveError::NotFound(id))?;
        if entry.state == "resolved" {
            return Err(RedriveError::AlreadyResolved(id));
        }
        let now = crate::clock::now_ms();
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
        let resolved = self
            .source
            .schemas()
            .get(&entry.schema_id)
            .await
            .map_err(|s| RedriveError::Transient {
                id,
                reason: s.message().to_owned(),
            })?;
        let channel: Arc<str> = Arc::from(entry.channel.as_str());
        let payload = bytes::Bytes::from(entry.payload.clone());
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
