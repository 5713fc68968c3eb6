//! sfcdc-emulator: a stand-in Salesforce org on loopback, the outside world sfcdc is tested
//! against (`sfcdc emulator`, `sfcdc demo`, `sfcdc bench` and the test suites start it).
//!
//! It is an outside system and shares nothing with the sfcdc product crate but the wire contract,
//! `proto/pubsub_api.proto`, compiled here by its own `build.rs` ([`proto`]). Everything else it
//! says on the wire it writes with its own code: Avro payloads ([`avro`], [`schema`]), the field
//! bitmaps of change-event headers ([`bitmap`]), change types ([`schema::ChangeType`]),
//! Salesforce ids ([`ids`]) and times ([`clock`]). It depends on no sfcdc crate, so a bug in the
//! product cannot be cancelled out by the same bug here; the product's tests check the two
//! against each other.
//!
//! It serves the Pub/Sub API over gRPC ([`grpc`]) and the REST endpoints sfcdc uses, OAuth
//! included ([`rest`]), both over TLS from a CA generated at start ([`tls`]) unless plaintext is
//! asked for. Behind them is one [`world::World`]: an org of Accounts, Orders and OrderItems
//! whose every change becomes a change event, encoded with the schema `GetSchema` serves and
//! appended to the event bus. Faults ([`faults`]) and bulk generation ([`bulk`]) are reachable from
//! the command line and from a control API under `/emulator/` on the REST port.
//!
//! The same REST port also hosts the world downstream of Salesforce: the fulfilment system orders
//! are provisioned in ([`fulfilment`], under `/fulfilment`), and the notification targets, a
//! webhook sink and a GitHub `repository_dispatch` stand-in ([`sinks`]).
//!
//! Invariants: everything the emulator says about an event (its schema id, replay id, bitmaps)
//! is derived from the same state a client can query, so a faithful client decodes every event
//! exactly; and the emulator never panics on client input.
//!
//! The fidelity rule: for any request shape Salesforce accepts, the emulator answers as Salesforce
//! does, or with a clear `501 NOT_IMPLEMENTED` naming the feature
//! (`[{"errorCode":"NOT_IMPLEMENTED","message":"… is not emulated"}]`), never a 404 or 400 that
//! Salesforce would not give. A path Salesforce has no resource for is a 404 `NOT_FOUND`, as it
//! is there. Unmodified third-party clients (simple-salesforce, jsforce, the Pub/Sub API
//! examples) are the measure: each route has a test that sends what such a client sends, and
//! `scripts/thirdparty/` runs the clients themselves.

pub mod auth;
pub mod avro;
pub mod bitmap;
pub mod bulk;
pub mod bus;
pub mod clock;
pub mod faults;
pub mod fulfilment;
pub mod grpc;
pub mod ids;
pub mod limits;
pub mod model;
pub mod org;
pub mod proto;
pub mod rest;
pub mod schema;
pub mod sinks;
pub mod soql;
pub mod tls;
pub mod world;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::auth::{Credentials, TokenStore};
use self::faults::{Fault, FaultState, ScheduledFault};
use self::fulfilment::{Fulfilment, FulfilmentConfig, FulfilmentSnapshot};
use self::ids::SfId;
use self::limits::ApiUsage;
use self::org::now_ms;
use self::schema::ChangeType;
use self::sinks::{DispatchRecord, HookRecord, Sinks};
use self::tls::TlsMaterial;
use self::world::{World, WorldSnapshot};
use crate::proto::pub_sub_server::PubSubServer;

/// Configuration of one emulator instance.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// gRPC listen address (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// REST listen address.
    pub rest_addr: SocketAddr,
    /// Serve TLS (the default) or plaintext.
    pub tls: bool,
    /// Where to write the CA certificate.
    pub ca_out: Option<PathBuf>,
    /// Seed of the sample data and generated ids.
    pub seed: u64,
    /// File that keeps the org and event log across restarts.
    pub state: Option<PathBuf>,
    /// Interval of keepalive FetchResponses while events are owed (at most 270 s).
    pub keepalive: Duration,
    /// A Subscribe stream that owes nothing is closed after this long without a FetchRequest.
    pub idle_timeout: Duration,
    /// How long events are retained.
    pub retention: Duration,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Accepted credentials.
    pub credentials: Credentials,
    /// Faults to inject, each after its delay.
    pub faults: Vec<ScheduledFault>,
    /// Change events to generate at start.
    pub bulk: usize,
    /// Seed the sample accounts, orders and items (a fresh org only).
    pub sample_data: bool,
    /// The fulfilment system under `/fulfilment`.
    pub fulfilment: FulfilmentConfig,
    /// The secret webhook signatures are verified with; `None` accepts unsigned requests.
    pub webhook_secret: Option<String>,
    /// The token the GitHub `repository_dispatch` stand-in accepts.
    pub github_token: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            grpc_addr: "127.0.0.1:7443".parse().expect("valid address"),
            rest_addr: "127.0.0.1:7444".parse().expect("valid address"),
            tls: true,
            ca_out: None,
            seed: 42,
            state: None,
            keepalive: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(72 * 3600),
            token_lifetime: Duration::from_secs(2 * 3600),
            credentials: Credentials::default(),
            faults: Vec::new(),
            bulk: 0,
            sample_data: true,
            fulfilment: FulfilmentConfig::default(),
            webhook_secret: Some("webhook-dev-secret".to_owned()),
            github_token: "github-dev-token".to_owned(),
        }
    }
}

impl EmulatorConfig {
    /// A configuration for tests: ephemeral ports on loopback, fulfilment operations that take
    /// 200 ms in 4 steps, a full sandbox's daily API allocation (set at start as the `api_limit`
    /// fault, so a test that gives its own faults gets the Developer Edition default), everything
    /// else default.
    pub fn ephemeral() -> Self {
        EmulatorConfig {
            grpc_addr: "127.0.0.1:0".parse().expect("valid address"),
            rest_addr: "127.0.0.1:0".parse().expect("valid address"),
            faults: vec![ScheduledFault {
                fault: Fault::ApiLimit {
                    max: limits::SANDBOX_DAILY_API_REQUESTS,
                    used: None,
                },
                after: Duration::ZERO,
            }],
            fulfilment: FulfilmentConfig {
                latency_ms: 200,
                progress_steps: 4,
                ..FulfilmentConfig::default()
            },
            ..EmulatorConfig::default()
        }
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A setting is out of range.
    #[error("invalid emulator setting {name}: {reason}")]
    Config {
        /// The flag.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A port could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The state file could not be read or written.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The CA certificate could not be written.
    #[error("could not write the CA certificate to {path}: {source}")]
    CaOut {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Call and event counters, exposed at `GET /emulator/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    calls: Mutex<BTreeMap<String, u64>>,
    delivered: AtomicU64,
    /// Per topic: Subscribe streams open now, and Subscribe streams started so far.
    subscriptions: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
}

/// Counts one open Subscribe stream of a topic while it lives.
pub struct OpenSubscription {
    subscriptions: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
    topic: String,
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        let mut s = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((open, _)) = s.get_mut(&self.topic) {
            *open = open.saturating_sub(1);
        }
    }
}

impl Stats {
    /// A Subscribe stream of `topic` started; it counts as open until the guard drops.
    pub fn subscribed(&self, topic: &str) -> OpenSubscription {
        let mut s = self.subscriptions.lock().unwrap_or_else(|p| p.into_inner());
        let (open, total) = s.entry(topic.to_owned()).or_default();
        *open += 1;
        *total += 1;
        OpenSubscription {
            subscriptions: self.subscriptions.clone(),
            topic: topic.to_owned(),
        }
    }
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatsSnapshot {
    /// Calls by `"<protocol> <route>"`, e.g. `"GET /services/data/{version}/sobjects/{sobject}/{id}"`
    /// or `"grpc Subscribe"`.
    pub calls: BTreeMap<String, u64>,
    /// Events delivered to subscribers.
    pub events_delivered: u64,
    /// Events retained per topic.
    pub events_retained: BTreeMap<String, usize>,
    /// Replay id (hex) of the last event retained on each topic that has one: where a subscriber
    /// that has seen everything stands.
    #[serde(default)]
    pub last_replay_ids: BTreeMap<String, String>,
    /// Subscribe streams open now, per topic (a topic with none since start is absent).
    #[serde(default)]
    pub open_subscriptions: BTreeMap<String, u64>,
    /// Subscribe streams started so far, per topic.
    #[serde(default)]
    pub subscribes: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Calls counted under `key`.
    pub fn calls(&self, key: &str) -> u64 {
        self.calls.get(key).copied().unwrap_or(0)
    }

    /// REST calls other than OAuth and the control API: what a cache saves.
    pub fn data_api_calls(&self) -> u64 {
        self.calls
            .iter()
            .filter(|(k, _)| k.contains(" /services/data/"))
            .map(|(_, v)| v)
            .sum()
    }
}

impl Stats {
    /// Counts one call.
    pub fn count(&self, key: String) {
        *self
            .calls
            .lock()
            .expect("stats lock")
            .entry(key)
            .or_insert(0) += 1;
    }

    fn add_delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }
}

/// State shared by the gRPC and REST layers.
pub struct Shared {
    world: Mutex<World>,
    tokens: Mutex<TokenStore>,
    faults: FaultState,
    /// The daily API request allocation and its usage.
    api_usage: ApiUsage,
    stats: Stats,
    credentials: Credentials,
    /// 18-character org id.
    org_id: String,
    instance_url: String,
    keepalive: Duration,
    idle_timeout: Duration,
    dirty: AtomicBool,
    /// Results of long queries, for `nextRecordsUrl`.
    cursors: Mutex<std::collections::HashMap<String, Arc<Vec<serde_json::Value>>>>,
    cursor_seq: AtomicU64,
    /// Bulk API 2.0 query jobs.
    bulk_jobs: rest::BulkJobs,
    /// The fulfilment system.
    fulfilment: Fulfilment,
    /// The webhook sink and the GitHub stand-in.
    sinks: Sinks,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Shared {
    /// Whether a client's `instanceurl` names this emulator (`localhost` and `127.0.0.1` are the
    /// same host; a trailing slash is ignored).
    fn same_instance(&self, given: &str) -> bool {
        let norm = |s: &str| {
            s.trim_end_matches('/')
                .to_ascii_lowercase()
                .replace("://localhost", "://127.0.0.1")
        };
        norm(given) == norm(&self.instance_url)
    }

    /// Whether a `tenantid` names this org: its 15- or 18-character id, or `core/<x>/<id>`.
    fn is_tenant(&self, given: &str) -> bool {
        let id = given.rsplit('/').next().unwrap_or(given);
        if given.contains('/') && !given.to_ascii_lowercase().starts_with("core/") {
            return false;
        }
        SfId::parse(id).is_ok_and(|id| id.as_str() == self.org_id)
    }

    /// Issues an access token for the integration user; returns it with the user id.
    fn issue_session(&self) -> (String, String) {
        let token = self
            .tokens
            .lock()
            .expect("token lock")
            .issue(&self.org_id[..15]);
        self.mark_dirty();
        let user_id = self
            .world
            .lock()
            .expect("world lock")
            .org
            .user_id
            .to_string();
        (token, user_id)
    }

    fn next_cursor(&self) -> u64 {
        self.cursor_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Clears the behavioural faults and restores the default API allocation.
    fn clear_faults(&self) {
        self.faults.clear();
        self.api_usage.set(limits::DEFAULT_DAILY_API_REQUESTS, None);
    }
}

/// What an injected fault did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaultOutcome {
    /// A short description.
    pub applied: String,
    /// The new Order schema id, for a schema change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_id: Option<String>,
    /// Replay id (hex) of an emitted gap event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_id: Option<String>,
}

/// A running emulator. Dropping it stops it.
pub struct Emulator {
    shared: Arc<Shared>,
    grpc_addr: SocketAddr,
    rest_addr: SocketAddr,
    tls: Option<TlsMaterial>,
    state: Option<PathBuf>,
}

impl Emulator {
    /// Starts the emulator: binds both ports, seeds or restores the org, and serves until
    /// [`Emulator::shutdown`] or drop.
    pub async fn start(config: EmulatorConfig) -> Result<Emulator, EmulatorError> {
        if !grpc::valid_keepalive(config.keepalive) {
            return Err(EmulatorError::Config {
                name: "--keepalive",
                reason: format!(
                    "{} is not within (0s, 270s]",
                    humantime::format_duration(config.keepalive)
                ),
            });
        }
        for (name, d) in [
            ("--idle-timeout", config.idle_timeout),
            ("--retention", config.retention),
            ("--token-lifetime", config.token_lifetime),
        ] {
            if d.is_zero() {
                return Err(EmulatorError::Config {
                    name,
                    reason: "must be greater than zero".into(),
                });
            }
        }
        if let Err(e) = config.fulfilment.validate() {
            let name = match e.field {
                "latency_ms" => "--fulfilment-latency",
                "progress_steps" => "--fulfilment-progress-steps",
                "failure_rate" => "--fulfilment-failure-rate",
                "error_rate" => "--fulfilment-error-rate",
                "sync_rate" => "--fulfilment-sync-rate",
                _ => "--fulfilment-token",
            };
            return Err(EmulatorError::Config {
                name,
                reason: e.reason,
            });
        }
        if config.github_token.is_empty() {
            return Err(EmulatorError::Config {
                name: "--github-token",
                reason: "must not be empty".into(),
            });
        }
        // Exactly one crypto provider is compiled in; make it the process default for any
        // rustls user that does not pick one (ignore the error if it was already installed).
        let _ = rustls::crypto::ring::default_provider().install_default();

        let grpc_listener = TcpListener::bind(config.grpc_addr)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let rest_listener = TcpListener::bind(config.rest_addr)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: config.rest_addr,
                source,
            })?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.grpc_addr,
                source,
            })?;
        let rest_addr = rest_listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: config.rest_addr,
                source,
            })?;

        let tls = if config.tls {
            Some(TlsMaterial::generate()?)
        } else {
            None
        };
        if let (Some(path), Some(m)) = (&config.ca_out, &tls) {
            std::fs::write(path, &m.ca_pem).map_err(|source| EmulatorError::CaOut {
                path: path.clone(),
                source,
            })?;
        }

        let (mut world, saved_tokens, saved_fulfilment) = match &config.state {
            Some(path) if path.exists() => load_state(path, config.seed)?,
            _ => (World::new(config.seed), Vec::new(), None),
        };
        if config.sample_data && world.org.count("Account") == 0 {
            world.seed_sample_data(now_ms());
        }
        let mut tokens = TokenStore::new(config.token_lifetime);
        for t in saved_tokens {
            tokens.adopt(t);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let instance_url = format!("{scheme}://127.0.0.1:{}", rest_addr.port());
        let fulfilment = Fulfilment::new(
            config.seed,
            format!("{instance_url}/fulfilment"),
            config.fulfilment.clone(),
            saved_fulfilment,
        );
        let shared = Arc::new(Shared {
            org_id: world.org.org_id.to_string(),
            world: Mutex::new(world),
            tokens: Mutex::new(tokens),
            faults: FaultState::default(),
            api_usage: ApiUsage::default(),
            stats: Stats::default(),
            credentials: config.credentials.clone(),
            instance_url,
            keepalive: config.keepalive,
            idle_timeout: config.idle_timeout,
            dirty: AtomicBool::new(false),
            cursors: Mutex::new(std::collections::HashMap::new()),
            cursor_seq: AtomicU64::new(0),
            bulk_jobs: Default::default(),
            fulfilment,
            sinks: Sinks::new(config.webhook_secret.clone(), config.github_token.clone()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });

        let emulator = Emulator {
            shared: shared.clone(),
            grpc_addr,
            rest_addr,
            tls: tls.clone(),
            state: config.state.clone(),
        };

        // gRPC.
        let mut server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .tcp_nodelay(true);
        if let Some(m) = &tls {
            let identity = tonic::transport::Identity::from_pem(&m.cert_pem, &m.key_pem);
            server = server
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| EmulatorError::Tls(tls::TlsError::Config(e.to_string())))?;
        }
        let service = PubSubServer::new(grpc::PubSubService::new(shared.clone()));
        // Accepted sockets get TCP_NODELAY: small gRPC frames (a FetchRequest, a short batch)
        // must not wait out Nagle's algorithm against delayed ACKs.
        let incoming = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            |s| {
                s.inspect(|tcp| {
                    let _ = tcp.set_nodelay(true);
                })
            },
        );
        let cancel = shared.cancel.clone();
        shared.tasks.spawn(async move {
            if let Err(e) = server
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "Emulator gRPC server stopped");
            }
        });

        // REST.
        let router = rest::router(shared.clone());
        let rustls = match &tls {
            Some(m) => Some(m.server_config(&[b"h2", b"http/1.1"])?),
            None => None,
        };
        rest::spawn_server(shared.clone(), rest_listener, router, rustls);

        // Retention sweeps.
        let retention = config.retention;
        let sweeper = shared.clone();
        shared.tasks.spawn(async move {
            let every = (retention / 20).clamp(Duration::from_millis(100), Duration::from_secs(60));
            loop {
                tokio::select! {
                    () = sweeper.cancel.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let cutoff = now_ms() - retention.as_millis() as i64;
                let purged = sweeper
                    .world
                    .lock()
                    .expect("world lock")
                    .bus
                    .purge_before(cutoff);
                if purged > 0 {
                    tracing::debug!(purged, "Emulator purged events past retention");
                    sweeper.mark_dirty();
                }
            }
        });

        // State persistence.
        if let Some(path) = config.state.clone() {
            let saver = shared.clone();
            shared.tasks.spawn(async move {
                loop {
                    tokio::select! {
                        () = saver.cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    if saver.dirty.swap(false, Ordering::Relaxed)
                        && let Err(e) = save_state(&saver, &path)
                    {
                        tracing::warn!(error = %e, "Emulator could not save its state");
                    }
                }
            });
        }

        // Start-up faults and bulk events.
        if config.bulk > 0 {
            emulator.bulk(config.bulk);
        }
        for scheduled in config.faults {
            if scheduled.after.is_zero() {
                if let Err(e) = emulator.inject(scheduled.fault) {
                    tracing::warn!(error = %e, "Emulator could not inject a start-up fault");
                }
            } else {
                let target = shared.clone();
                let cancel = shared.cancel.clone();
                shared.tasks.spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = tokio::time::sleep(scheduled.after) => {
                            if let Err(e) = inject(&target, scheduled.fault) {
                                tracing::warn!(error = %e, "Emulator could not inject a scheduled fault");
                            }
                        }
                    }
                });
            }
        }
        Ok(emulator)
    }

    /// The gRPC endpoint URL (`https://127.0.0.1:<port>`).
    pub fn grpc_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.grpc_addr.port())
    }

    /// The gRPC listen address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The REST listen address.
    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    /// The instance URL (REST base), which is also the login URL.
    pub fn instance_url(&self) -> &str {
        &self.shared.instance_url
    }

    /// The CA certificate (PEM) when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|m| m.ca_pem.as_str())
    }

    /// The 18-character org id.
    pub fn org_id(&self) -> &str {
        &self.shared.org_id
    }

    /// The accepted credentials.
    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// Issues an access token directly, as a completed OAuth flow would.
    pub fn issue_token(&self) -> String {
        self.shared.issue_session().0
    }

    /// Injects a fault now.
    pub fn inject(&self, fault: Fault) -> Result<FaultOutcome, String> {
        inject(&self.shared, fault)
    }

    /// Clears the behavioural faults (disconnect, refusal, delay, REST unavailability) and
    /// restores the default API allocation (the usage stays).
    pub fn clear_faults(&self) {
        self.shared.clear_faults();
    }

    /// The data API requests used in the current window, and the allocation.
    pub fn api_usage(&self) -> limits::Usage {
        self.shared.api_usage.usage()
    }

    /// Appends `n` realistic order change events without REST round trips.
    pub fn bulk(&self, n: usize) -> bulk::BulkReport {
        let report = bulk::generate(&self.shared.world, n);
        self.shared.mark_dirty();
        report
    }

    /// A copy of the call and event counters.
    pub fn stats(&self) -> StatsSnapshot {
        stats_snapshot(&self.shared)
    }

    /// The fulfilment system: its configuration, counters and operations.
    pub fn fulfilment(&self) -> &Fulfilment {
        &self.shared.fulfilment
    }

    /// The fulfilment API's base URL (`<instance_url>/fulfilment`).
    pub fn fulfilment_url(&self) -> String {
        self.shared.fulfilment.base_url().to_owned()
    }

    /// The URL of webhook `name` (`<instance_url>/hooks/<name>`).
    pub fn webhook_url(&self, name: &str) -> String {
        format!(
            "{}/hooks/{}",
            self.shared.instance_url,
            sinks::path_segment(name)
        )
    }

    /// Every webhook request received, in arrival order.
    pub fn hooks(&self) -> Vec<HookRecord> {
        self.shared.sinks.hooks()
    }

    /// Makes the next `count` requests to webhook `name` (every one, when `None`) answer
    /// `status`. A count of zero disarms.
    pub fn fail_hook(&self, name: &str, status: u16, count: Option<u32>) {
        self.shared.sinks.fail_hook(name, status, count);
    }

    /// Disarms the failure of webhook `name`.
    pub fn clear_hook_failure(&self, name: &str) {
        self.shared.sinks.clear_hook_failure(name);
    }

    /// The GitHub API base URL: the instance URL, to which clients append
    /// `/repos/{owner}/{repo}/dispatches`.
    pub fn github_api_url(&self) -> String {
        self.shared.instance_url.clone()
    }

    /// Every `repository_dispatch` request received, in arrival order.
    pub fn dispatches(&self) -> Vec<DispatchRecord> {
        self.shared.sinks.dispatches()
    }

    /// Makes the next `count` dispatches (every one, when `None`) answer `status`.
    pub fn fail_dispatches(&self, status: u16, count: Option<u32>) {
        self.shared.sinks.fail_dispatches(status, count);
    }

    /// Disarms the dispatch failure.
    pub fn clear_dispatch_failure(&self) {
        self.shared.sinks.clear_dispatch_failure();
    }

    /// Runs `f` with the world locked: for tests and the demo, which act on the org directly.
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let out = f(&mut self.shared.world.lock().expect("world lock"));
        self.shared.mark_dirty();
        out
    }

    /// Stops serving, waits for the servers to finish, and saves the state file.
    pub async fn shutdown(self) {
        self.shared.cancel.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("Emulator tasks did not stop within 5s");
        }
        if let Some(path) = &self.state
            && let Err(e) = save_state(&self.shared, path)
        {
            tracing::warn!(error = %e, "Emulator could not save its state");
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

fn stats_snapshot(shared: &Shared) -> StatsSnapshot {
    let world = shared.world.lock().expect("world lock");
    let events_retained = world.bus.counts();
    let last_replay_ids = events_retained
        .keys()
        .filter_map(|t| Some((t.clone(), hex::encode(&world.bus.last(t)?.replay_bytes))))
        .collect();
    let subscriptions = shared
        .stats
        .subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    StatsSnapshot {
        calls: shared.stats.calls.lock().expect("stats lock").clone(),
        events_delivered: shared.stats.delivered.load(Ordering::Relaxed),
        events_retained,
        last_replay_ids,
        open_subscriptions: subscriptions
            .iter()
            .map(|(t, (o, _))| (t.clone(), *o))
            .collect(),
        subscribes: subscriptions
            .iter()
            .map(|(t, (_, n))| (t.clone(), *n))
            .collect(),
    }
}

fn inject(shared: &Shared, fault: Fault) -> Result<FaultOutcome, String> {
    let outcome = |s: String| FaultOutcome {
        applied: s,
        schema_id: None,
        replay_id: None,
    };
    tracing::info!(?fault, "Emulator injecting fault");
    let result = match fault {
        Fault::DisconnectAfter { events } => {
            shared.faults.arm_disconnect(events);
            outcome(format!(
                "the stream delivering event {events} from now ends with service.unavailable"
            ))
        }
        Fault::RefuseSubscriptions { seconds } => {
            shared.faults.refuse_for(faults::duration(seconds)?);
            outcome(format!("new subscriptions are refused for {seconds}s"))
        }
        Fault::ExpireTokens => {
            let n = shared.tokens.lock().expect("token lock").expire_all();
            outcome(format!("{n} tokens expired"))
        }
        Fault::WildcardIds { count } => {
            shared
                .world
                .lock()
                .expect("world lock")
                .wildcard_next(count);
            outcome(format!(
                "the next {count} Order change event(s) will name their records 801*"
            ))
        }
        Fault::BulkFail => {
            shared.faults.arm_bulk(faults::BulkFault::Fail);
            outcome("the next Bulk API 2.0 query job will fail".into())
        }
        Fault::BulkStall { seconds } => {
            let stall = seconds.map(faults::duration).transpose()?;
            shared.faults.arm_bulk(faults::BulkFault::Stall(stall));
            outcome(match seconds {
                Some(s) => format!("the next Bulk API 2.0 query job stays InProgress for {s}s"),
                None => "the next Bulk API 2.0 query job stays InProgress until aborted".into(),
            })
        }
        Fault::CorruptNext { count } => {
            shared.world.lock().expect("world lock").corrupt_next(count);
            outcome(format!("the next {count} event payload(s) will be corrupt"))
        }
        Fault::Gap {
            change_type,
            record_id,
        } => {
            if !change_type.is_gap() {
                return Err(format!("{change_type} is not a gap change type"));
            }
            let mut world = shared.world.lock().expect("world lock");
            let id = match (&record_id, change_type) {
                (_, ChangeType::GapOverflow) => None,
                (Some(id), _) => Some(SfId::parse(id).map_err(|e| format!("record_id: {e}"))?),
                (None, _) => Some(
                    world
                        .org
                        .pick("Order", |_| true)
                        .ok_or("the org has no orders")?,
                ),
            };
            let actor = world.internal_actor();
            let change = world
                .org
                .gap("Order", change_type, id.as_ref(), &actor, now_ms());
            let events = world.commit(vec![change], now_ms());
            let mut o = outcome(format!("{change_type} emitted"));
            o.replay_id = events.first().map(|e| hex::encode(&e.replay_bytes));
            o
        }
        Fault::SchemaChange { field } => {
            let name = field.unwrap_or_else(|| "Fulfilment_Notes__c".to_owned());
            if !name.ends_with("__c")
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!(
                    "{name:?} is not a custom field API name (letters, digits, underscores, ending in __c)"
                ));
            }
            let id = shared
                .world
                .lock()
                .expect("world lock")
                .add_order_field(&name)
                .map_err(|e| e.to_string())?;
            let mut o = outcome(format!("Order gained field {name}"));
            o.schema_id = Some(id);
            o
        }
        Fault::Delay { ms } => {
            shared.faults.set_delay(ms);
            outcome(format!("responses are delayed by {ms}ms"))
        }
        Fault::LongReplayIds { enabled } => {
            shared
                .world
                .lock()
                .expect("world lock")
                .bus
                .set_long_ids(enabled);
            outcome(format!(
                "10-byte replay ids {}",
                if enabled { "on" } else { "off" }
            ))
        }
        Fault::ExpireEvents => {
            let n = shared
                .world
                .lock()
                .expect("world lock")
                .bus
                .purge_before(i64::MAX);
            outcome(format!("{n} events purged"))
        }
        Fault::RestUnavailable { count } => {
            shared.faults.set_rest_unavailable(count);
            outcome(format!(
                "the next {count} data API request(s) answer 503 SERVER_UNAVAILABLE"
            ))
        }
        Fault::ApiLimit { max, used } => {
            shared.api_usage.set(max, used);
            let usage = shared.api_usage.usage();
            outcome(format!(
                "the daily API allocation is {max} requests, {} used",
                usage.used
            ))
        }
    };
    shared.mark_dirty();
    Ok(result)
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    world: WorldSnapshot,
    tokens: Vec<String>,
    /// Absent in files written before the fulfilment system existed.
    #[serde(default)]
    fulfilment: Option<FulfilmentSnapshot>,
}

type LoadedState = (World, Vec<String>, Option<FulfilmentSnapshot>);

fn load_state(path: &PathBuf, seed: u64) -> Result<LoadedState, EmulatorError> {
    let err = |reason: String| EmulatorError::State {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let state: StateFile =
        serde_json::from_str(&text).map_err(|e| err(format!("not a valid state file: {e}")))?;
    Ok((
        World::restore(seed, state.world),
        state.tokens,
        state.fulfilment,
    ))
}

fn save_state(shared: &Shared, path: &PathBuf) -> std::io::Result<()> {
    let state = StateFile {
        world: shared.world.lock().expect("world lock").snapshot(),
        tokens: shared.tokens.lock().expect("token lock").valid_tokens(),
        fulfilment: Some(shared.fulfilment.snapshot()),
    };
    let json = serde_json::to_vec(&state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}
