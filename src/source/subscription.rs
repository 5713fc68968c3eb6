//! One channel's subscription: a small state machine around the Subscribe stream.
//!
//! **Flow control.** The first FetchRequest asks for `SFCDC_BATCH_SIZE` (B) events. Each response
//! is decoded and queued for the sink, which stages (lookups) while the commit before commits, and
//! commits whatever is staged together (group commit); batches that queued up while a stage ran
//! are staged together too, with one lookup. More events are requested only as commits complete,
//! keeping `demand + uncommitted ≤ 24B` ([`WINDOW_BATCHES`]) and `demand ≤ B`: memory stays
//! bounded however slow the sink, and the server is never asked for more than it allows.
//!
//! **Position.** It moves only when the sink has committed a batch (or a keepalive's
//! `latest_replay_id`). When a stream ends for any reason, queued commits finish first, then the
//! next stream starts strictly after the last committed replay id: nothing lost, nothing
//! duplicated beyond the batch that was not yet committed.
//!
//! **Reconnect.** The `error-code` trailer decides: an auth error refreshes the session and
//! reconnects at once; a rejected replay id applies `SFCDC_REPLAY_RECOVERY`; an unknown topic or a
//! permission error stops the channel; anything else (service unavailable, a dropped stream, the
//! watchdog) reconnects after a jittered exponential backoff that resets after a healthy stream.

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::Instrument;

use super::SourceConfig;
use super::connect::Client;
use super::schemas::{Resolved, SchemaRegistry};
use super::sink::{Batch, Sink, SinkError, SinkErrorKind};
use crate::clock::Clock;
use crate::decode::{
    DecodeError, DecodedEvent, FailedEvent, Position, ReplayId, ReplayPreset, ReplayRecovery,
};
use crate::proto::{FetchRequest, FetchResponse, ReplayPreset as WirePreset};
use crate::salesforce::auth::{AuthError, Authenticator};
use crate::telemetry::events::{
    BatchCommitted, CommitFailed, EventQuarantined, EventsDecoded, EventsReceived, InternalEvent,
    QuarantineKind, ReconnectReason, Reconnecting, ReplayRecovered, SessionRejected, StreamGauges,
};
use crate::telemetry::health::ChannelHealth;
use crate::telemetry::metrics::Metrics;

/// Events received but not yet committed, plus events requested, stay within this many
/// batches: a group committing, a group staging, the rest in transit or queued, and what queued
/// stages or commits together once the stage or commit before it ends. Each stage and each commit
/// costs a few round trips (to Salesforce for the lookups, to SQLite's thread for each statement)
/// whatever its size, so a slow side works through larger groups instead of falling behind.
/// Twenty-four rather than six (with queued batches staged together and no ping per SQLite
/// acquire; over 300,000 events, alternated, quiet hour): 80-83k -> 101-103k events/s and
/// 12.4-13.2 -> 10.5-10.7 us of CPU per event, for 3-5 MiB more RSS (a batch in flight is at most
/// `SFCDC_BATCH_SIZE` decoded events). Twelve measured 99-101k, forty-eight 103k.
pub const WINDOW_BATCHES: i64 = 24;

/// Most batches staged together, and most staged groups committed in one transaction.
const GROUP_MAX: usize = 24;

/// A stream that lived this long counts as healthy: the next failure backs off from the start.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// The `error-code` prefix of every Pub/Sub API error.
const ERROR_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

/// The first request of a stream that starts at `position`.
fn first_request(position: &Position, topic: &str, n: i32) -> FetchRequest {
    let (preset, replay_id) = match position {
        Position::After(id) => (WirePreset::Custom, id.0.clone()),
        Position::Earliest => (WirePreset::Earliest, bytes::Bytes::new()),
        Position::Latest => (WirePreset::Latest, bytes::Bytes::new()),
    };
    FetchRequest {
        topic_name: topic.to_owned(),
        replay_preset: preset as i32,
        replay_id,
        num_requested: n,
        auth_refresh: String::new(),
    }
}

/// Why a channel stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The topic does not exist or CDC is not enabled for it.
    #[error(
        "topic not found ({0}); check the channel name and that Change Data Capture or the platform event is enabled"
    )]
    NotFound(String),
    /// The user may not subscribe to it.
    #[error("no permission to subscribe ({0})")]
    Permission(String),
    /// The stored replay id was rejected and `SFCDC_REPLAY_RECOVERY=fail`.
    #[error(
        "the stored replay id was rejected ({error}) and SFCDC_REPLAY_RECOVERY=fail; reset the checkpoint to continue, then recover the approvals in the lost window with `{reconcile}`"
    )]
    ReplayRejected {
        /// Salesforce's answer.
        error: String,
        /// The command that recovers the lost window.
        reconcile: String,
    },
    /// Logging in failed for good.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The sink failed in a way retrying cannot mend.
    #[error("the sink cannot go on: {0}")]
    Sink(SinkError),
    /// This instance may no longer commit for the channel: another instance holds it.
    #[error("this instance may no longer commit for the channel: {0}")]
    Fenced(SinkError),
}

impl ChannelError {
    /// A retryable sink failure back (`Ok`), or how one that retrying cannot mend ends the
    /// channel.
    fn from_sink(e: SinkError) -> Result<SinkError, ChannelError> {
        match e.kind() {
            SinkErrorKind::Retryable => Ok(e),
            SinkErrorKind::Permanent => Err(ChannelError::Sink(e)),
            SinkErrorKind::Fenced => Err(ChannelError::Fenced(e)),
        }
    }
}

/// What ended one stream.
#[derive(Debug)]
enum End {
    Cancelled,
    Status(Status),
    Ended,
    Watchdog,
    Commit(SinkError),
}

/// What to do after a stream error.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    RefreshAuth,
    RecoverReplay,
    NotFound,
    Permission,
    Backoff(ReconnectReason),
}

/// The `error-code` trailer without its common prefix.
fn error_code(status: &Status) -> Option<String> {
    status
        .metadata()
        .get("error-code")
        .and_then(|v| v.to_str().ok())
        .map(|c| c.strip_prefix(ERROR_PREFIX).unwrap_or(c).to_owned())
}

fn classify(status: &Status) -> Action {
    let code = error_code(status).unwrap_or_default();
    match code.as_str() {
        "service.auth.error" | "service.auth.refresh.invalid" | "service.auth.headers.invalid" => {
            return Action::RefreshAuth;
        }
        "subscription.fetch.replayid.corrupted"
        | "subscription.fetch.replayid.validation.failed" => return Action::RecoverReplay,
        "topic.not.found" => return Action::NotFound,
        "topic.meta.permission"
        | "subscription.topic.cannot.subscribe"
        | "schema.meta.permission" => return Action::Permission,
        "service.unavailable" => return Action::Backoff(ReconnectReason::ServiceUnavailable),
        _ => {}
    }
    match status.code() {
        Code::Unauthenticated => Action::RefreshAuth,
        Code::NotFound => Action::NotFound,
        Code::PermissionDenied => Action::Permission,
        Code::Unavailable => Action::Backoff(ReconnectReason::Unavailable),
        Code::Internal => Action::Backoff(ReconnectReason::Internal),
        Code::ResourceExhausted => Action::Backoff(ReconnectReason::ResourceExhausted),
        _ => Action::Backoff(ReconnectReason::Other),
    }
}

/// The operator's command that recovers a lost window starting at `since` (epoch ms); every
/// order when the start is unknown.
fn reconcile_command(since: Option<i64>) -> String {
    match since {
        Some(ms) => format!("sfcdc reconcile --since {}", crate::clock::rfc3339(ms)),
        None => "sfcdc reconcile --all".to_owned(),
    }
}

fn describe(status: &Status) -> String {
    match error_code(status) {
        Some(code) => format!("{code}: {}", status.message()),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

/// One channel's subscription loop.
pub struct Subscription<S: Sink> {
    pub(super) channel: Arc<str>,
    pub(super) config: Arc<SourceConfig>,
    pub(super) client: Client,
    pub(super) auth: Arc<Authenticator>,
    pub(super) schemas: Arc<SchemaRegistry>,
    pub(super) sink: Arc<S>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) health: Arc<ChannelHealth>,
    pub(super) clock: Clock,
    pub(super) start_override: Option<Position>,
}

struct Outcome {
    end: End,
    committed: usize,
}

impl<S: Sink> Subscription<S> {
    fn backoff(&self) -> backon::ExponentialBackoff {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.config.reconnect_min)
            .with_max_delay(self.config.reconnect_max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    fn preset(&self) -> Position {
        match self.config.replay_preset {
            ReplayPreset::Latest => Position::Latest,
            ReplayPreset::Earliest => Position::Earliest,
        }
    }

    /// Sleeps, unless cancelled first (then returns false).
    async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// After a failed login: waits out the backoff if retrying can help (`Ok(true)`: try again;
    /// `Ok(false)`: cancelled), or fails the channel.
    async fn login_failed(
        &self,
        e: AuthError,
        backoff: &mut backon::ExponentialBackoff,
        cancel: &CancellationToken,
    ) -> Result<bool, ChannelError> {
        if !e.is_retryable() {
            return Err(e.into());
        }
        let d = backoff.next().unwrap_or(self.config.reconnect_max);
        tracing::warn!(channel = %self.channel, error = %e, retry_in = ?d, "Login failed; retrying");
        Ok(Self::pause(cancel, d).await)
    }

    /// Runs until `cancel` or a permanent failure.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), ChannelError> {
        // Every line of this channel's path (stream, decode, staging, commit) carries it.
        let span = tracing::info_span!("channel", channel = %self.channel);
        self.subscribe(cancel).instrument(span).await
    }

    async fn subscribe(self, cancel: CancellationToken) -> Result<(), ChannelError> {
        let channel = self.channel.clone();
        let mut backoff = self.backoff();
        let mut start = match self.start_override.clone() {
            Some(s) => s,
            None => loop {
                match self.sink.checkpoint(&channel).await {
                    Ok(Some(start)) => break start,
                    Ok(None) => break self.preset(),
                    Err(e) => {
                        let e = ChannelError::from_sink(e)?;
                        let d = backoff.next().unwrap_or(self.config.reconnect_max);
                        tracing::warn!(channel = %channel, error = %e, retry_in = ?d, "Cannot read the stored position");
                        if !Self::pause(&cancel, d).await {
                            return Ok(());
                        }
                    }
                }
            },
        };
        tracing::info!(channel = %channel, start = ?start, "Subscribing");
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let session = match self.auth.session().await {
                Ok(s) => s,
                Err(e) => {
                    if self.login_failed(e, &mut backoff, &cancel).await? {
                        continue;
                    }
                    return Ok(());
                }
            };
            let opened = Instant::now();
            let outcome = self.stream(&mut start, &cancel).await;
            if outcome.committed > 0 || opened.elapsed() >= HEALTHY_AFTER {
                backoff = self.backoff();
            }
            let reason = match outcome.end {
                End::Cancelled => return Ok(()),
                End::Ended => ReconnectReason::StreamEnded,
                End::Watchdog => ReconnectReason::Watchdog,
                End::Commit(e) => {
                    let e = ChannelError::from_sink(e)?;
                    tracing::error!(channel = %channel, error = %e, "Commit failed; resuming from the last committed position");
                    ReconnectReason::CommitFailed
                }
                End::Status(status) => match classify(&status) {
                    Action::RefreshAuth => {
                        SessionRejected {
                            channel: &channel,
                            error: &describe(&status),
                        }
                        .emit(&self.metrics);
                        match self.auth.refresh(session.generation).await {
                            Ok(_) => continue,
                            Err(e) => {
                                if self.login_failed(e, &mut backoff, &cancel).await? {
                                    continue;
                                }
                                return Ok(());
                            }
                        }
                    }
                    Action::RecoverReplay => {
                        let policy = self.config.replay_recovery;
                        let lost_since = match self.sink.position_lost(&channel, policy).await {
                            Ok(since) => since,
                            Err(e) => {
                                let e = ChannelError::from_sink(e)?;
                                tracing::error!(channel = %channel, error = %e, "Could not record the window a rejected replay id loses; retrying");
                                let d = backoff.next().unwrap_or(self.config.reconnect_max);
                                if !Self::pause(&cancel, d).await {
                                    return Ok(());
                                }
                                continue;
                            }
                        };
                        ReplayRecovered {
                            channel: &channel,
                            rejected: &start,
                            policy,
                            error: &describe(&status),
                            lost_since,
                        }
                        .emit(&self.metrics);
                        start = match policy {
                            ReplayRecovery::Earliest => Position::Earliest,
                            ReplayRecovery::Latest => Position::Latest,
                            ReplayRecovery::Fail => {
                                return Err(ChannelError::ReplayRejected {
                                    error: describe(&status),
                                    reconcile: reconcile_command(lost_since),
                                });
                            }
                        };
                        continue;
                    }
                    Action::NotFound => return Err(ChannelError::NotFound(describe(&status))),
                    Action::Permission => return Err(ChannelError::Permission(describe(&status))),
                    Action::Backoff(reason) => {
                        tracing::warn!(channel = %channel, error = %describe(&status), "Stream failed");
                        reason
                    }
                },
            };
            let d = backoff.next().unwrap_or(self.config.reconnect_max);
            Reconnecting {
                channel: &channel,
                reason,
                retry_in: d,
                resume: &start,
            }
            .emit(&self.metrics);
            if !Self::pause(&cancel, d).await {
                return Ok(());
            }
        }
    }

    /// Runs one Subscribe stream; `start` is advanced as batches commit.
    async fn stream(&self, start: &mut Position, cancel: &CancellationToken) -> Outcome {
        let b = self.config.batch_size as i64;
        let (requests, outbound) = mpsc::channel::<FetchRequest>(8);
        let _ = requests.try_send(first_request(start, &self.channel, b as i32));
        let mut client = self.client.clone();
        let mut inbound = match client.subscribe(ReceiverStream::new(outbound)).await {
            Ok(r) => {
                self.health.live(self.clock.now_ms());
                r.into_inner()
            }
            Err(status) => {
                return Outcome {
                    end: End::Status(status),
                    committed: 0,
                };
            }
        };

        let (queue, to_commit) = mpsc::unbounded_channel::<Batch>();
        let (done_tx, mut done) = mpsc::unbounded_channel::<Result<(usize, ReplayId), SinkError>>();
        let mut committer = AbortOnDrop(tokio::spawn(
            commit_loop(
                self.sink.clone(),
                self.metrics.clone(),
                self.channel.clone(),
                to_commit,
                done_tx,
            )
            .in_current_span(),
        ));

        let gauges = StreamGauges::new(&self.metrics, &self.channel);
        let mut demand = b;
        let mut buffered: i64 = 0;
        let mut committed = 0usize;
        let mut last_message = Instant::now();
        let end = loop {
            let watchdog = last_message + self.config.stream_timeout;
            tokio::select! {
                biased;
                () = cancel.cancelled() => break End::Cancelled,
                Some(result) = done.recv() => match result {
                    Ok((n, replay)) => {
                        self.health.committed(self.clock.now_ms());
                        buffered -= n as i64;
                        committed += n;
                        *start = Position::After(replay);
                        gauges.inflight(buffered);
                        top_up(&requests, b, &mut demand, buffered);
                    }
                    Err(e) => break End::Commit(e),
                },
                message = inbound.message() => match message {
                    Ok(Some(response)) => {
                        last_message = Instant::now();
                        let now_ms = self.clock.now_ms();
                        self.health.live(now_ms);
                        gauges.message_at(now_ms);
                        if response.events.is_empty() {
                            // A keepalive: its latest_replay_id is a position, committed in order
                            // after every batch before it.
                            if !response.latest_replay_id.is_empty() {
                                let _ = queue.send(Batch {
                                    channel: self.channel.clone(),
                                    events: Vec::new(),
                                    failed: Vec::new(),
                                    replay_id: ReplayId(response.latest_replay_id),
                                    keepalive: true,
                                });
                            }
                            continue;
                        }
                        let n = response.events.len() as i64;
                        demand = (demand - n).max(0);
                        buffered += n;
                        gauges.inflight(buffered);
                        // Ask for more before decoding: the server prepares the next response
                        // while this one decodes (at most 100 events are ever owed, so each
                        // round trip the request waits on caps the stream's rate).
                        top_up(&requests, b, &mut demand, buffered);
                        match self.decode(response).await {
                            Ok(batch) => {
                                let _ = queue.send(batch);
                            }
                            Err(status) => break End::Status(status),
                        }
                    }
                    Ok(None) => break End::Ended,
                    Err(status) => break End::Status(status),
                },
                () = tokio::time::sleep_until(watchdog), if demand > 0 => {
                    tracing::warn!(channel = %self.channel, timeout = ?self.config.stream_timeout, "Nothing received, not even a keepalive; reconnecting");
                    break End::Watchdog;
                }
            }
        };
        // Stop asking, let every queued batch commit, and resume after the last one.
        drop(requests);
        drop(queue);
        drop(inbound);
        while let Some(result) = done.recv().await {
            match result {
                Ok((n, replay)) => {
                    self.health.committed(self.clock.now_ms());
                    committed += n;
                    *start = Position::After(replay);
                }
                Err(e) => {
                    tracing::warn!(channel = %self.channel, error = %e, "A queued batch did not commit; it will be delivered again")
                }
            }
        }
        let _ = (&mut committer.0).await;
        gauges.inflight(0);
        Outcome { end, committed }
    }

    /// Decodes one response into a batch. `Err` is a transient error fetching a schema: the
    /// stream ends and the response is fetched again.
    async fn decode(&self, response: FetchResponse) -> Result<Batch, Status> {
        let channel = &self.channel;
        EventsReceived {
            channel,
            count: response.events.len(),
        }
        .emit(&self.metrics);
        let mut events = Vec::with_capacity(response.events.len());
        let mut failed = Vec::new();
        let mut last = ReplayId(response.latest_replay_id);
        // The events of a response nearly always share one schema: look it up once per run of
        // events with the same id, not once per event.
        let mut schema: Option<(String, Resolved)> = None;
        for ce in response.events {
            let replay_id = ReplayId(ce.replay_id);
            last = replay_id.clone();
            let Some(ev) = ce.event else {
                failed.push(FailedEvent {
                    replay_id,
                    schema_id: String::new(),
                    event_id: String::new(),
                    payload: bytes::Bytes::new(),
                    error: DecodeError::UnknownSchema("(the event is empty)".into()),
                });
                continue;
            };
            let resolved = match &schema {
                Some((id, resolved)) if *id == ev.schema_id => resolved.clone(),
                _ => {
                    let resolved = self.schemas.get(&ev.schema_id).await?;
                    schema = Some((ev.schema_id.clone(), resolved.clone()));
                    resolved
                }
            };
            // Projected when the source was built with one (`sfcdc run`: only what the rules
            // read), in full otherwise (`sfcdc tail`).
            let decoded = match resolved.as_ref() {
                Ok(schema) => schema
                    .decode_projected(channel, &ev.payload)
                    .map(|body| (schema.id.clone(), body)),
                Err(e) => Err(e.clone()),
            };
            match decoded {
                Ok((schema_id, body)) => events.push(DecodedEvent {
                    replay_id,
                    schema_id,
                    event_id: ev.id,
                    payload: ev.payload,
                    body,
                }),
                Err(error) => {
                    EventQuarantined {
                        channel,
                        replay_id: &replay_id,
                        schema_id: &ev.schema_id,
                        kind: QuarantineKind::from(&error),
                        error: &error,
                    }
                    .emit(&self.metrics);
                    failed.push(FailedEvent {
                        replay_id,
                        schema_id: ev.schema_id,
                        event_id: ev.id,
                        payload: ev.payload,
                        error,
                    });
                }
            }
        }
        EventsDecoded {
            channel,
            count: events.len(),
        }
        .emit(&self.metrics);
        Ok(Batch {
            channel: channel.clone(),
            events,
            failed,
            replay_id: last,
            keepalive: false,
        })
    }
}

/// Aborts a spawned task when dropped: if the stream future is dropped (a crash, an abort),
/// its committer goes with it instead of running on detached.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks for more events when the window allows: demand up to B, and demand plus uncommitted
/// events up to `WINDOW_BATCHES` × B. Small top-ups wait until they are worth a request.
fn top_up(requests: &mpsc::Sender<FetchRequest>, b: i64, demand: &mut i64, buffered: i64) {
    let want = (b - *demand).min(WINDOW_BATCHES * b - buffered - *demand);
    if want > 0
        && (*demand == 0 || want >= (b / 2).max(1))
        && requests
            .try_send(FetchRequest {
                num_requested: want as i32,
                ..FetchRequest::default()
            })
            .is_ok()
    {
        *demand += want;
    }
}

/// Stages batches (the sink's preparation, which may do I/O such as lookups) ahead of the
/// commits, in order, and commits them in order: batch N+1 is staged while batch N commits.
/// Batches queued behind a stage are staged as one, and staged ones queued behind a commit
/// commit as one group.
/// Stops at the first failure; the stream then ends and resumes after the last commit.
async fn commit_loop<S: Sink>(
    sink: Arc<S>,
    metrics: Arc<Metrics>,
    channel: Arc<str>,
    mut batches: mpsc::UnboundedReceiver<Batch>,
    done: mpsc::UnboundedSender<Result<(usize, ReplayId), SinkError>>,
) {
    let (staged_tx, mut staged_rx) =
        mpsc::channel::<(usize, ReplayId, S::Staged)>(WINDOW_BATCHES as usize);
    let stager = {
        let (sink, done) = (sink.clone(), done.clone());
        AbortOnDrop(tokio::spawn(
            async move {
                while let Some(mut batch) = batches.recv().await {
                    // What queued while the last stage ran is staged with it, as one batch: one
                    // lookup for all of it when staging is the slower side.
                    for _ in 1..GROUP_MAX {
                        match batches.try_recv() {
                            Ok(next) => batch.absorb_later(next),
                            Err(_) => break,
                        }
                    }
                    let (n, replay) = (batch.len(), batch.replay_id.clone());
                    match sink.stage(batch).await {
                        Ok(staged) => {
                            if staged_tx.send((n, replay, staged)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = done.send(Err(e));
                            return;
                        }
                    }
                }
            }
            .in_current_span(),
        ))
    };
    while let Some(first) = staged_rx.recv().await {
        // Everything already staged commits together: one transaction instead of several when
        // the sink is the slower side.
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match staged_rx.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let n: usize = group.iter().map(|(n, _, _)| n).sum();
        let replay = group
            .last()
            .map(|(_, r, _)| r.clone())
            .expect("a group has a batch");
        let started = std::time::Instant::now();
        let result = sink
            .commit(group.into_iter().map(|(_, _, s)| s).collect())
            .await;
        let elapsed = started.elapsed();
        match &result {
            Ok(()) => BatchCommitted {
                channel: &channel,
                events: n,
                elapsed,
            }
            .emit(&metrics),
            Err(error) => CommitFailed {
                channel: &channel,
                events: n,
                elapsed,
                error,
            }
            .emit(&metrics),
        }
        let failed = result.is_err();
        if done.send(result.map(|()| (n, replay))).is_err() || failed {
            return;
        }
    }
    drop(stager);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::{MetadataMap, MetadataValue};

    fn status(code: Code, error_code: Option<&str>) -> Status {
        let mut md = MetadataMap::new();
        if let Some(c) = error_code {
            md.insert(
                "error-code",
                MetadataValue::try_from(format!("{ERROR_PREFIX}{c}")).unwrap(),
            );
        }
        Status::with_metadata(code, "x", md)
    }

    #[test]
    fn the_error_code_trailer_decides_the_action() {
        assert_eq!(
            classify(&status(Code::Unauthenticated, Some("service.auth.error"))),
            Action::RefreshAuth
        );
        assert_eq!(
            classify(&status(Code::Unauthenticated, None)),
            Action::RefreshAuth
        );
        assert_eq!(
            classify(&status(
                Code::InvalidArgument,
                Some("subscription.fetch.replayid.corrupted")
            )),
            Action::RecoverReplay
        );
        assert_eq!(
            classify(&status(
                Code::InvalidArgument,
                Some("subscription.fetch.replayid.validation.failed")
            )),
            Action::RecoverReplay
        );
        assert_eq!(
            classify(&status(Code::NotFound, Some("topic.not.found"))),
            Action::NotFound
        );
        assert_eq!(classify(&status(Code::NotFound, None)), Action::NotFound);
        assert_eq!(
            classify(&status(Code::PermissionDenied, None)),
            Action::Permission
        );
        assert_eq!(
            classify(&status(Code::Internal, Some("topic.meta.permission"))),
            Action::Permission
        );
        assert_eq!(
            classify(&status(Code::Internal, Some("service.unavailable"))),
            Action::Backoff(ReconnectReason::ServiceUnavailable)
        );
        assert_eq!(
            classify(&status(Code::Unavailable, None)),
            Action::Backoff(ReconnectReason::Unavailable)
        );
        assert_eq!(
            classify(&status(
                Code::InvalidArgument,
                Some("subscription.fetch.topic.mismatch")
            )),
            Action::Backoff(ReconnectReason::Other)
        );
    }

    #[tokio::test]
    async fn the_window_keeps_demand_and_buffered_events_bounded() {
        let (tx, mut rx) = mpsc::channel(16);
        let b = 100;
        let window = WINDOW_BATCHES * b;
        // Everything asked for has arrived and nothing has committed: ask for one more batch.
        let (mut demand, buffered) = (0, 100);
        top_up(&tx, b, &mut demand, buffered);
        assert_eq!(rx.try_recv().unwrap().num_requested, 100);
        assert_eq!(demand, 100);
        // A full window (every batch of it uncommitted): ask for nothing.
        let (mut demand, buffered) = (0, window);
        top_up(&tx, b, &mut demand, buffered);
        assert!(rx.try_recv().is_err());
        // All but one uncommitted and one in flight: the window is full too.
        let (mut demand, buffered) = (100, window - b);
        top_up(&tx, b, &mut demand, buffered);
        assert!(rx.try_recv().is_err());
        // A small commit frees a little room: not worth a request while demand is outstanding.
        let (mut demand, buffered) = (90, window - b);
        top_up(&tx, b, &mut demand, buffered);
        assert!(rx.try_recv().is_err());
        // Room for half a batch or more: ask, never beyond B outstanding.
        let (mut demand, buffered) = (40, 60);
        top_up(&tx, b, &mut demand, buffered);
        assert_eq!(rx.try_recv().unwrap().num_requested, 60);
        assert_eq!(demand, b);
    }

    /// A sink that records what each stage and commit received.
    #[derive(Default)]
    struct Recorder {
        staged: std::sync::Mutex<Vec<usize>>,
        committed: std::sync::Mutex<Vec<Vec<u8>>>,
    }

    impl Sink for Recorder {
        type Staged = Vec<Vec<u8>>;

        async fn checkpoint(&self, _: &str) -> Result<Option<Position>, SinkError> {
            Ok(None)
        }

        async fn stage(&self, batch: Batch) -> Result<Vec<Vec<u8>>, SinkError> {
            self.staged.lock().unwrap().push(batch.len());
            Ok(batch
                .failed
                .iter()
                .map(|f| f.replay_id.0.to_vec())
                .collect())
        }

        async fn commit(&self, staged: Vec<Vec<Vec<u8>>>) -> Result<(), SinkError> {
            self.committed
                .lock()
                .unwrap()
                .extend(staged.into_iter().flatten());
            Ok(())
        }
    }

    /// A batch of `n` events (undecodable ones: the recorder reads only their replay ids) whose
    /// replay ids run from `first`.
    fn batch(first: u8, n: u8) -> Batch {
        let failed: Vec<FailedEvent> = (first..first + n)
            .map(|i| FailedEvent {
                replay_id: ReplayId(bytes::Bytes::from(vec![i])),
                schema_id: "s".into(),
                event_id: format!("e{i}"),
                payload: bytes::Bytes::new(),
                error: DecodeError::Header("ChangeType"),
            })
            .collect();
        Batch {
            channel: "/data/OrderChangeEvent".into(),
            replay_id: failed.last().expect("n > 0").replay_id.clone(),
            events: Vec::new(),
            failed,
            keepalive: false,
        }
    }

    #[tokio::test]
    async fn batches_queued_behind_a_stage_are_staged_as_one_and_commit_in_order() {
        let sink = Arc::new(Recorder::default());
        let (queue, batches) = mpsc::unbounded_channel();
        // Five batches queued before the stager starts: all of them wait behind one stage.
        for i in 0..5 {
            queue.send(batch(3 * i, 3)).unwrap();
        }
        drop(queue);
        let (done_tx, mut done) = mpsc::unbounded_channel();
        commit_loop(
            sink.clone(),
            Arc::new(Metrics::new()),
            "/data/OrderChangeEvent".into(),
            batches,
            done_tx,
        )
        .await;
        assert_eq!(
            *sink.staged.lock().unwrap(),
            vec![15],
            "one stage of every queued event"
        );
        let every: Vec<Vec<u8>> = (0..15).map(|i| vec![i]).collect();
        assert_eq!(
            *sink.committed.lock().unwrap(),
            every,
            "all of them, in replay order"
        );
        let (n, replay) = done.recv().await.expect("one commit").expect("committed");
        assert_eq!(
            (n, replay.0.to_vec()),
            (15, vec![14]),
            "the position is the last batch's"
        );
        assert!(done.recv().await.is_none(), "nothing more committed");
    }

    #[test]
    fn a_later_batch_appends_its_events_and_takes_the_position() {
        let mut first = batch(0, 2);
        first.absorb_later(batch(2, 3));
        assert_eq!(first.len(), 5);
        let ids: Vec<u8> = first.failed.iter().map(|f| f.replay_id.0[0]).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4]);
        assert_eq!(first.replay_id.0.to_vec(), vec![4]);
        assert!(!first.keepalive);
        let mut keepalive = Batch {
            keepalive: true,
            ..batch(5, 1)
        };
        keepalive.absorb_later(batch(6, 1));
        assert!(
            !keepalive.keepalive,
            "a keepalive followed by events is no longer one"
        );
    }
}
