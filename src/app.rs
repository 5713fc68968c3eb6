//! The service, assembled: settings → [`App::build`] → [`App::run_until_stopped`].
//!
//! [`Settings`] reads and validates every variable at start, so a bad value stops sfcdc before
//! it connects anywhere, with a message naming the variable. [`App::build`] composes the
//! components, each from its own settings and the shared [`Deps`] (metrics, store, login, REST):
//! the subscriber and its ingest sink, the order cache and its invalidator, the worker, the admin
//! API. Nothing runs yet. [`App::run_until_stopped`] consumes the app: it spawns every long-lived
//! task on one root [`TaskTracker`], subscribes until the shutdown token fires, then lets every
//! channel commit what it holds and every task finish. An [`AppHandle`], cloneable and taken
//! before the run, reaches the running parts (store, metrics, cache, re-drive) from tests, the
//! demo and the operator commands.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::AdminConfig;
use crate::cache::invalidate::Invalidator;
use crate::cache::{CacheConfig, CachedLookup, OrderCache, RestOrderSource};
use crate::clock::Clock;
use crate::config::{ConfigError, Env};
pub use crate::deps::Deps;
use crate::fleet::notify::Hearers;
use crate::fleet::{Fleet, FleetConfig};
use crate::ingest::IngestSink;
use crate::ingest::redrive::{RedriveError, Redriver};
use crate::reconcile::recovery::Recovery;
use crate::reconcile::{ReconcileConfig, Reconciler};
use crate::rules::RulesConfig;
use crate::salesforce::auth::AuthConfig;
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
    /// The console's sessions.
    pub console: crate::console::ConsoleConfig,
    /// The order cache and its read API.
    pub cache: CacheConfig,
    /// `SFCDC_SHUTDOWN_TIMEOUT`: how long a shutdown may take to commit the batches in hand and
    /// record the job steps in flight before the process exits anyway.
    pub shutdown_timeout: std::time::Duration,
    /// The time every component judges by: the system clock, unless a test sets a manual one.
    pub clock: Clock,
    /// This instance in a fleet: its id and the lease lifetime.
    pub fleet: FleetConfig,
    /// Reconcile scans: the Bulk API threshold, the backfill, the periodic check.
    pub reconcile: ReconcileConfig,
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
            console: crate::console::ConsoleConfig::from_env(env)?,
            cache: CacheConfig::from_env(env)?,
            shutdown_timeout: env.positive_duration_or(
                "SFCDC_SHUTDOWN_TIMEOUT",
                std::time::Duration::from_secs(30),
            )?,
            clock: Clock::system(),
            fleet: FleetConfig::from_env(env)?,
            reconcile: ReconcileConfig::from_env(env)?,
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

/// Opens (and migrates) the store and prepares the login and the REST client. Nothing connects to
/// Salesforce yet.
pub async fn deps(settings: &Settings) -> Result<Deps, AppError> {
    let store =
        AnyStore::open_with(&settings.database_url, settings.fleet.idle_in_transaction()).await?;
    Ok(Deps::build(
        store,
        settings.source.ca_cert.as_deref(),
        settings.auth.clone(),
        &settings.api_version,
        settings.rules.clone(),
        settings.clock.clone(),
    )?)
}

/// A reconciler over `deps`, as `sfcdc reconcile` and the service's recoveries run it.
pub fn reconciler(settings: &Settings, deps: &Deps) -> Reconciler {
    Reconciler::new(
        deps.rest.clone(),
        deps.store.clone(),
        deps.rules.clone(),
        deps.metrics.clone(),
        settings.reconcile.clone(),
        settings.max_attempts,
        deps.clock.clone(),
    )
}

/// The ingest side: the order cache the guards read through, its invalidator, the sink and the
/// subscriber that feeds it. Built alone by commands that evaluate events without serving (the
/// quarantine re-drive), and as part of [`App`].
pub struct Ingest {
    /// The subscriber.
    pub source: Source<RunSink>,
    /// Its sink.
    pub sink: Arc<RunSink>,
    /// The order cache (guard lookups and the read API).
    pub cache: Arc<RunCache>,
    /// Coalesces the cache invalidations that commits ask for.
    pub invalidator: Invalidator,
    /// Holds the channels' leases and runs each channel under its lease.
    pub fleet: Fleet<CachedLookup<RestOrderSource>>,
    store: Arc<AnyStore>,
}

impl Ingest {
    /// Composes the ingest side from `settings` and `deps`.
    pub fn build(settings: &Settings, deps: &Deps) -> Result<Ingest, AppError> {
        let cache = Arc::new(
            OrderCache::new(
                RestOrderSource::new(deps.rest.clone(), &settings.cache, &deps.rules),
                settings.cache.clone(),
                deps.rules.clone(),
                &deps.metrics,
            )
            .with_clock(deps.clock.clone()),
        );
        let invalidator = Invalidator::new(settings.cache.invalidation_window);
        let lookup = Arc::new(CachedLookup::new(
            cache.clone(),
            RestLookup::new(deps.rest.clone(), deps.rules.clone()),
        ));
        let mut sink = IngestSink::new(
            deps.store.clone(),
            lookup,
            deps.rules.clone(),
            deps.metrics.clone(),
            Some(invalidator.clone()),
            settings.max_attempts,
        )
        .with_clock(deps.clock.clone())
        .with_recovery_margin(settings.reconcile.margin);
        if matches!(*deps.store, AnyStore::Postgres(_)) {
            sink = sink.with_broadcast(&settings.fleet.instance_id);
        }
        let sink = Arc::new(sink);
        let source = Source::new(
            settings.source.clone(),
            deps.auth.clone(),
            sink.clone(),
            deps.metrics.clone(),
        )?
        .with_projection(deps.rules.event_fields())
        .with_clock(deps.clock.clone());
        let fleet = Fleet::new(
            settings.fleet.clone(),
            deps.store.clone(),
            sink.clone(),
            deps.metrics.clone(),
            settings.source.channels.len(),
        );
        Ok(Ingest {
            source,
            sink,
            cache,
            invalidator,
            fleet,
            store: deps.store.clone(),
        })
    }

    /// Runs every channel under its lease until `stop` (or until every channel failed for
    /// good), with the cache invalidator and the fleet's listener spawned on `tracker`; the
    /// invalidator applies what is pending once `stop` fires, and the leases are released.
    pub async fn run(
        self,
        tracker: &TaskTracker,
        stop: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> Result<(), SourceError> {
        let hearers = Hearers {
            me: self.fleet.config().instance_id.clone(),
            released: self.fleet.released().clone(),
            jobs: self.sink.jobs_created().clone(),
            cache: self.cache.clone(),
            invalidator: self.invalidator.clone(),
            metrics: metrics.clone(),
        };
        tracker.spawn(crate::fleet::notify::listen(
            self.store.clone(),
            hearers,
            stop.clone(),
        ));
        tracker.spawn(self.invalidator.run(self.cache, metrics, stop.clone()));
        self.fleet.run(&self.source, stop).await
    }

    /// The re-drive of quarantined events through this sink.
    pub fn redriver(&self, deps: &Deps) -> Redriver<AnyStore, CachedLookup<RestOrderSource>> {
        Redriver::new(
            self.sink.clone(),
            self.source.schemas().clone(),
            deps.auth.clone(),
        )
    }
}

/// The quarantine re-drive, as the admin API asks for it.
struct AdminRedrive(Arc<Redriver<AnyStore, CachedLookup<RestOrderSource>>>);

impl crate::api::actions::Redrive for AdminRedrive {
    fn redrive(
        &self,
        id: i64,
    ) -> futures_util::future::BoxFuture<'_, Result<String, crate::api::ApiError>> {
        use axum::http::StatusCode;
        Box::pin(async move {
            self.0.redrive(id).await.map_err(|e| {
                let status = match &e {
                    RedriveError::NotFound(_) => StatusCode::NOT_FOUND,
                    RedriveError::AlreadyResolved(_) | RedriveError::StillFails { .. } => {
                        StatusCode::CONFLICT
                    }
                    RedriveError::Transient { .. } | RedriveError::Store(_) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                crate::api::ApiError::new(status, e.to_string())
            })
        })
    }
}

/// The admin API, bound but not serving yet.
struct AdminServer {
    listener: tokio::net::TcpListener,
    routes: axum::Router,
}

impl AdminServer {
    /// Binds `SFCDC_ADMIN_ADDR` (a bad address fails the start, naming the variable) and builds
    /// the routes: the admin API and the order read API.
    async fn bind(
        settings: &Settings,
        deps: &Deps,
        ingest: &Ingest,
    ) -> Result<Option<AdminServer>, AppError> {
        let Some(addr) = settings.admin.addr else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            ConfigError::new("SFCDC_ADMIN_ADDR", format!("cannot listen on {addr}: {e}"))
        })?;
        let access = crate::api::auth::Access::new(
            settings.cache.read_token.as_ref(),
            settings.admin.token.as_ref(),
            settings.admin.metrics_token.as_ref(),
        );
        let state =
            crate::api::AdminState::new(deps.store.clone(), deps.metrics.clone(), access.clone())
                .with_liveness(ingest.source.liveness().clone())
                .with_clock(deps.clock.clone())
                .with_channels(
                    settings.source.channels.clone(),
                    settings.fleet.instance_id.clone(),
                )
                .with_redrive(Arc::new(AdminRedrive(Arc::new(ingest.redriver(deps)))))
                .with_openapi(<crate::cache::http::ReadApi as utoipa::OpenApi>::openapi());
        let routes = crate::api::router(state.clone())
            .merge(crate::console::router(state, &settings.console))
            .merge(crate::cache::http::router(ingest.cache.clone(), access));
        Ok(Some(AdminServer { listener, routes }))
    }
}

/// The assembled service.
pub struct App {
    ingest: Ingest,
    recovery: Recovery,
    worker: Option<RunWorker>,
    admin: Option<AdminServer>,
    http: reqwest::Client,
    handle: AppHandle,
}

/// A cloneable view of an [`App`], taken before it runs and valid while it runs: the store,
/// metrics, cache and re-drive.
#[derive(Clone)]
pub struct AppHandle {
    metrics: Arc<Metrics>,
    sink: Arc<RunSink>,
    cache: Arc<RunCache>,
    invalidator: Invalidator,
    admin_addr: Option<std::net::SocketAddr>,
    rest: Arc<SalesforceRest>,
    redriver: Arc<Redriver<AnyStore, CachedLookup<RestOrderSource>>>,
}

impl App {
    /// Composes every component from `settings`. Nothing is subscribed or served yet; the admin
    /// address is bound, so a port in use fails here.
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        let deps = deps(&settings).await?;
        let ingest = Ingest::build(&settings, &deps)?;
        let worker = settings.worker.clone().map(|config| {
            config
                .build(&deps)
                .with_wake(ingest.sink.jobs_created().clone())
        });
        let recovery = Recovery::new(
            Arc::new(reconciler(&settings, &deps).with_wake(ingest.sink.jobs_created().clone())),
            &settings.fleet.instance_id,
            settings.fleet.lease_ttl,
            ingest.sink.recovery_requested().clone(),
        );
        // Before any channel commits a position: the first start is the one without any.
        recovery.plan_backfill().await?;
        let admin = AdminServer::bind(&settings, &deps, &ingest).await?;
        let handle = AppHandle {
            metrics: deps.metrics.clone(),
            sink: ingest.sink.clone(),
            cache: ingest.cache.clone(),
            invalidator: ingest.invalidator.clone(),
            admin_addr: admin.as_ref().and_then(|a| a.listener.local_addr().ok()),
            rest: deps.rest.clone(),
            redriver: Arc::new(ingest.redriver(&deps)),
        };
        Ok(App {
            ingest,
            recovery,
            worker,
            admin,
            http: deps.http,
            handle,
        })
    }

    /// A handle on the parts of this app, usable while it runs.
    pub fn handle(&self) -> AppHandle {
        self.handle.clone()
    }

    /// Runs until `shutdown`: subscribes, runs the worker, the invalidator and the admin API,
    /// each a task of one root tracker. Then lets every channel commit what it holds and every
    /// job step record its outcome, and waits for every task.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), AppError> {
        tracing::info!("sfcdc running");
        let App {
            ingest,
            recovery,
            worker,
            admin,
            http,
            handle,
        } = self;
        let tracker = TaskTracker::new();
        // Whatever ends the subscriber (a shutdown, an error, or this future being dropped)
        // stops the rest too.
        let stop = shutdown.child_token();
        let _stop_on_drop = stop.clone().drop_guard();
        if let Some(admin) = admin {
            tracing::info!(addr = ?handle.admin_addr, "Admin API listening");
            tracker.spawn(crate::api::serve(
                admin.listener,
                admin.routes,
                stop.clone(),
            ));
        }
        match worker {
            Some(w) => {
                tracker.spawn(w.run(http, stop.clone()));
            }
            None => {
                tracing::warn!("SFCDC_FULFILMENT_URL is not set: jobs are stored but not run");
            }
        }
        tracker.spawn(recovery.run(stop.clone()));
        let result = ingest
            .run(&tracker, stop.clone(), handle.metrics.clone())
            .await;
        tracker.close();
        stop.cancel();
        tracker.wait().await;
        result?;
        tracing::info!("sfcdc stopped cleanly");
        Ok(())
    }
}

impl AppHandle {
    /// The metrics of this instance.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Arc<AnyStore> {
        self.sink.store()
    }

    /// The ingest sink.
    pub fn sink(&self) -> &Arc<RunSink> {
        &self.sink
    }

    /// The order cache.
    pub fn cache(&self) -> &Arc<RunCache> {
        &self.cache
    }

    /// The Salesforce REST client.
    pub fn rest(&self) -> &Arc<SalesforceRest> {
        &self.rest
    }

    /// Cache invalidations waiting for their coalescing window to close.
    pub fn invalidations_pending(&self) -> usize {
        self.invalidator.pending()
    }

    /// Where the admin API listens, if it does.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin_addr
    }

    /// Decodes and evaluates a quarantined event again (see [`Redriver::redrive`]).
    pub async fn redrive(&self, id: i64) -> Result<String, RedriveError> {
        self.redriver.redrive(id).await
    }
}
