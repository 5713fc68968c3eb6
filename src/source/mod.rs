//! The Pub/Sub API subscriber: one resilient subscription per channel.
//!
//! [`Source`] logs in (`salesforce::auth`), opens one gRPC channel ([`connect`]), and runs one
//! [`subscription`] task per topic in `SFCDC_CHANNELS`, each feeding the [`Sink`]. Schemas are
//! fetched once per id and shared by all channels ([`schemas`]). A channel that fails for good (an
//! unknown topic, no permission, `SFCDC_REPLAY_RECOVERY=fail`) stops with an error naming it; the
//! others go on.
//!
//! Invariant: a channel's position only moves when the sink has committed, so any restart, stream
//! error or reconnect resumes exactly after the last committed event.

pub mod connect;
pub mod schemas;
pub mod sink;
pub mod subscription;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::connect::Client;
use self::schemas::SchemaRegistry;
use self::sink::Sink;
use crate::clock::Clock;
use crate::config::{ConfigError, Env};
use crate::decode::{Position, ReplayPreset, ReplayRecovery};
use crate::salesforce::auth::Authenticator;
use crate::telemetry::health::Liveness;
use crate::telemetry::metrics::Metrics;

/// The default channels: both order CDC channels and the fulfilment platform event.
pub const DEFAULT_CHANNELS: &str =
    "/data/OrderChangeEvent,/data/OrderItemChangeEvent,/event/Order_Fulfilment_Requested__e";

/// Subscriber settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `SFCDC_PUBSUB_ENDPOINT`.
    pub endpoint: String,
    /// `SFCDC_CA_CERT`: an extra trust root (PEM).
    pub ca_cert: Option<PathBuf>,
    /// `SFCDC_CHANNELS`.
    pub channels: Vec<String>,
    /// `SFCDC_REPLAY_PRESET`.
    pub replay_preset: ReplayPreset,
    /// `SFCDC_REPLAY_RECOVERY`.
    pub replay_recovery: ReplayRecovery,
    /// `SFCDC_BATCH_SIZE`: events requested at a time (at most 100).
    pub batch_size: u32,
    /// `SFCDC_STREAM_TIMEOUT`: reconnect when nothing (event or keepalive) arrives for this long
    /// while events are owed. The server sends keepalives within 270 s.
    pub stream_timeout: Duration,
    /// `SFCDC_RECONNECT_MIN`: first reconnect delay.
    pub reconnect_min: Duration,
    /// `SFCDC_RECONNECT_MAX`: reconnect delay cap.
    pub reconnect_max: Duration,
}

impl SourceConfig {
    /// Reads the `SFCDC_*` subscriber variables.
    pub fn from_env(env: &Env) -> Result<SourceConfig, ConfigError> {
        let endpoint = env.parse_or(
            "SFCDC_PUBSUB_ENDPOINT",
            "https://api.pubsub.salesforce.com:7443".to_owned(),
            |s| {
                let with_scheme = if s.contains("://") {
                    s.to_owned()
                } else {
                    format!("https://{s}")
                };
                let uri: tonic::codegen::http::Uri =
                    with_scheme.parse().map_err(|e| format!("{e}"))?;
                if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
                    return Err("expected https://host:port".into());
                }
                Ok(with_scheme.trim_end_matches('/').to_owned())
            },
        )?;
        let channels = env.parse_or("SFCDC_CHANNELS", split_channels(DEFAULT_CHANNELS), |s| {
            let channels = split_channels(s);
            if channels.is_empty() {
                return Err("no channel given".into());
            }
            if let Some(bad) = channels
                .iter()
                .find(|c| !(c.starts_with("/data/") || c.starts_with("/event/")) || c.len() < 8)
            {
                return Err(format!(
                    "'{bad}' is not a topic name such as /data/OrderChangeEvent or /event/Name__e"
                ));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = channels.iter().find(|c| !seen.insert(c.as_str())) {
                return Err(format!("'{dup}' is listed twice"));
            }
            Ok(channels)
        })?;
        let stream_timeout = env.duration_or("SFCDC_STREAM_TIMEOUT", Duration::from_secs(300))?;
        if stream_timeout.is_zero() {
            return Err(ConfigError::new(
                "SFCDC_STREAM_TIMEOUT",
                "must be greater than zero",
            ));
        }
        let reconnect_min = env.duration_or("SFCDC_RECONNECT_MIN", Duration::from_millis(500))?;
        let reconnect_max = env.duration_or("SFCDC_RECONNECT_MAX", Duration::from_secs(30))?;
        if reconnect_max < reconnect_min {
            return Err(ConfigError::new(
                "SFCDC_RECONNECT_MAX",
                "must not be smaller than SFCDC_RECONNECT_MIN",
            ));
        }
        Ok(SourceConfig {
            endpoint,
            ca_cert: env.existing_file("SFCDC_CA_CERT")?,
            channels,
            replay_preset: env.choice_or(
                "SFCDC_REPLAY_PRESET",
                ReplayPreset::Latest,
                &[
                    ("latest", ReplayPreset::Latest),
                    ("earliest", ReplayPreset::Earliest),
                ],
            )?,
            replay_recovery: env.choice_or(
                "SFCDC_REPLAY_RECOVERY",
                ReplayRecovery::Earliest,
                &[
                    ("earliest", ReplayRecovery::Earliest),
                    ("latest", ReplayRecovery::Latest),
                    ("fail", ReplayRecovery::Fail),
                ],
            )?,
            batch_size: env.int_or("SFCDC_BATCH_SIZE", 100, 1..=100)? as u32,
            stream_timeout,
            reconnect_min,
            reconnect_max,
        })
    }
}

fn split_channels(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why the subscriber stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connection set-up failed (bad endpoint or trust root).
    #[error("cannot set up the Pub/Sub API connection: {0}")]
    Setup(String),
    /// Some channels failed for good; the others ran until shutdown or their own failure.
    #[error("{}", .0.iter().map(|(c, e)| format!("channel {c}: {e}")).collect::<Vec<_>>().join("; "))]
    Channels(Vec<(String, String)>),
}

/// The subscriber.
pub struct Source<S: Sink> {
    config: Arc<SourceConfig>,
    auth: Arc<Authenticator>,
    client: Client,
    schemas: Arc<SchemaRegistry>,
    sink: Arc<S>,
    metrics: Arc<Metrics>,
    liveness: Arc<Liveness>,
    clock: Clock,
}

impl<S: Sink> Source<S> {
    /// Builds the subscriber; nothing connects until [`Source::run`].
    pub fn new(
        config: SourceConfig,
        auth: Arc<Authenticator>,
        sink: Arc<S>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SourceError> {
        let channel = connect::grpc_channel(&config.endpoint, config.ca_cert.as_deref())
            .map_err(SourceError::Setup)?;
        let client = connect::client(channel, auth.clone());
        let schemas = Arc::new(SchemaRegistry::new(client.clone()));
        let liveness = Arc::new(Liveness::new(&config.channels, config.stream_timeout));
        for channel in &config.channels {
            metrics.declare_channel(channel);
        }
        Ok(Source {
            liveness,
            config: Arc::new(config),
            auth,
            client,
            schemas,
            sink,
            metrics,
            clock: Clock::system(),
        })
    }

    /// Decodes events through a projection that keeps only these top-level body fields (the
    /// rules' [`event_fields`](crate::rules::RulesConfig::event_fields)) and skips the rest.
    /// Without it (`sfcdc tail`) every field is decoded. Call it before [`Source::schemas`]:
    /// it starts a fresh schema registry.
    pub fn with_projection(mut self, fields: Vec<String>) -> Self {
        self.schemas = Arc::new(SchemaRegistry::new(self.client.clone()).with_projection(fields));
        self
    }

    /// Stamps each channel's liveness with `clock`'s time instead of the system clock's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The schema registry (shared by every channel).
    pub fn schemas(&self) -> &Arc<SchemaRegistry> {
        &self.schemas
    }

    /// Every configured channel's liveness, for `/readyz`.
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    fn channel_task(
        &self,
        channel: &str,
        start: Option<Position>,
    ) -> subscription::Subscription<S> {
        subscription::Subscription {
            health: self.liveness.channel(channel),
            channel: Arc::from(channel),
            config: self.config.clone(),
            client: self.client.clone(),
            auth: self.auth.clone(),
            schemas: self.schemas.clone(),
            sink: self.sink.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            start_override: start,
        }
    }

    /// The login the subscriptions share.
    pub fn auth(&self) -> &Arc<Authenticator> {
        &self.auth
    }

    /// The configured channels.
    pub fn channels(&self) -> &[String] {
        &self.config.channels
    }

    /// Subscribes to one channel until `cancel` or a failure retrying cannot mend (including a
    /// commit refused because this instance no longer holds the channel), resuming from the
    /// stored position. The caller runs the login refresher.
    pub async fn subscribe(
        &self,
        channel: &str,
        cancel: CancellationToken,
    ) -> Result<(), subscription::ChannelError> {
        self.channel_task(channel, None).run(cancel).await
    }

    /// Runs one channel until `cancel` or a permanent failure; `start` overrides the stored
    /// position (as `sfcdc tail --from` does).
    pub async fn run_channel(
        &self,
        channel: &str,
        start: Option<Position>,
        cancel: CancellationToken,
    ) -> Result<(), SourceError> {
        self.channel_task(channel, start)
            .run(cancel)
            .await
            .map_err(|e| SourceError::Channels(vec![(channel.to_owned(), e.to_string())]))
    }

    /// Runs every configured channel until `cancel`. Returns the channels that failed for good.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), SourceError> {
        let refresher_cancel = cancel.child_token();
        // Dropped with this future (graceful end or abort): the refresher stops too.
        let _refresher_guard = refresher_cancel.clone().drop_guard();
        let refresher = self.auth.spawn_refresher(refresher_cancel);
        let mut tasks = tokio::task::JoinSet::new();
        for channel in &self.config.channels {
            let task = self.channel_task(channel, None);
            let cancel = cancel.child_token();
            let name = channel.clone();
            tasks.spawn(async move { (name, task.run(cancel).await) });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((channel, Err(e))) => {
                    tracing::error!(channel = %channel, error = %e, "Channel stopped for good; the other channels go on");
                    self.liveness.channel(&channel).stopped(e.to_string());
                    failed.push((channel, e.to_string()));
                }
                Err(e) => failed.push(("(task)".into(), e.to_string())),
            }
        }
        refresher.abort();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Channels(failed))
        }
    }
}
