//! The emulated `eventbus.v1.PubSub` service (reference §2).
//!
//! Every RPC checks the `accesstoken`, `instanceurl` and `tenantid` metadata first. Errors carry
//! the trailers real clients key their retry logic on (`error-code`, `rpc-id`, `type`) and a
//! description ending in ` rpcId: <uuid>`.
//!
//! A Subscribe stream is one task running the state machine of §2.4: demand (`num_requested`)
//! is additive and capped at 100; events are sent only while demand is outstanding; when demand
//! is outstanding and nothing is available, an empty keepalive with `latest_replay_id` is sent
//! every keepalive interval; when nothing is owed and the client sends nothing for the idle
//! timeout, the stream is closed. The replay preset and id are read from the first request only.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::Shared;
use super::auth::TokenState;
use super::bus::ReplayError;
use super::org::now_ms;
use super::world::topic_kind;
use crate::proto::pub_sub_server::PubSub;
use crate::proto::{
    ConsumerEvent, ErrorCode, FetchRequest, FetchResponse, ManagedFetchRequest,
    ManagedFetchResponse, ProducerEvent, PublishRequest, PublishResponse, PublishResult,
    ReplayPreset, SchemaInfo, SchemaRequest, TopicInfo, TopicRequest,
};

/// Most events a client may have outstanding on one stream.
pub const MAX_PENDING: i32 = 100;
/// Payload bytes per FetchResponse, below gRPC's 4 MB default message limit.
const MAX_RESPONSE_BYTES: usize = 3 * 1024 * 1024;
/// Largest event accepted by Publish.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// The `error-code` prefix of every Pub/Sub API error.
pub const ERROR_CODE_PREFIX: &str = "sfdc.platform.eventbus.grpc.";

fn new_rpc_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Builds an error status the way the Pub/Sub API sends it.
pub fn api_error(code: Code, error_code: Option<&str>, message: &str, rpc: &str) -> Status {
    let rpc_id = new_rpc_id();
    let mut md = MetadataMap::new();
    if let Some(ec) = error_code
        && let Ok(v) = MetadataValue::try_from(format!("{ERROR_CODE_PREFIX}{ec}"))
    {
        md.insert("error-code", v);
    }
    if let Ok(v) = MetadataValue::try_from(rpc_id.as_str()) {
        md.insert("rpc-id", v);
    }
    if let Ok(v) = MetadataValue::try_from(rpc) {
        md.insert("type", v);
    }
    Status::with_metadata(code, format!("{message} rpcId: {rpc_id}"), md)
}

fn auth_error(rpc: &str) -> Status {
    api_error(
        Code::Unauthenticated,
        Some("service.auth.error"),
        "An authentication exception occurred. Provide valid authentication via metadata headers.",
        rpc,
    )
}

fn unavailable(rpc: &str) -> Status {
    api_error(
        Code::Internal,
        Some("service.unavailable"),
        "The service is unavailable. Try again later.",
        rpc,
    )
}

/// The emulated PubSub service.
#[derive(Clone)]
pub struct PubSubService {
    shared: Arc<Shared>,
}

impl PubSubService {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        PubSubService { shared }
    }

    /// Checks the three required metadata headers.
    fn authorize(&self, md: &MetadataMap, rpc: &str) -> Result<String, Status> {
        self.shared.stats.count(format!("grpc {rpc}"));
        let header = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
        let (Some(token), Some(instance), Some(tenant)) = (
            header("accesstoken"),
            header("instanceurl"),
            header("tenantid"),
        ) else {
            return Err(auth_error(rpc));
        };
        let token_ok =
            self.shared.tokens.lock().expect("token lock").check(token) == TokenState::Valid;
        if !token_ok || !self.shared.same_instance(instance) || !self.shared.is_tenant(tenant) {
            return Err(auth_error(rpc));
        }
        Ok(token.to_owned())
    }

    fn token_still_valid(&self, token: &str) -> bool {
        self.shared.tokens.lock().expect("token lock").check(token) == TokenState::Valid
    }

    fn topic_not_found(&self, topic: &str, rpc: &str) -> Status {
        api_error(
            Code::NotFound,
            Some("topic.not.found"),
            &format!(
                "The topic information for org CORE/prod/{} and topic {topic} not found. Ensure the topic name is correct and that the topic exists.",
                self.shared.org_id
            ),
            rpc,
        )
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl PubSub for PubSubService {
    type SubscribeStream = BoxStream<FetchResponse>;
    type PublishStreamStream = BoxStream<PublishResponse>;
    type ManagedSubscribeStream = BoxStream<ManagedFetchResponse>;

    async fn subscribe(
        &self,
        request: Request<Streaming<FetchRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let token = self.authorize(request.metadata(), "Subscribe")?;
        self.shared.faults.delay().await;
        if self.shared.faults.refusing() {
            return Err(unavailable("Subscribe"));
        }
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            service: self.clone(),
            token,
            inbound: request.into_inner(),
            tx,
        };
        let cancel = self.shared.cancel.child_token();
        self.shared.tasks.spawn(async move {
            tokio::select! {
                () = session.run() => {}
                () = cancel.cancelled() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_schema(
        &self,
        request: Request<SchemaRequest>,
    ) -> Result<Response<SchemaInfo>, Status> {
        self.authorize(request.metadata(), "GetSchema")?;
        self.shared.faults.delay().await;
        let id = request.into_inner().schema_id;
        if id.trim().is_empty() {
            return Err(api_error(
                Code::InvalidArgument,
                Some("schema.validation.failed"),
                "Schema validation failed. The schema ID can't be blank.",
                "GetSchema",
            ));
        }
        let schema = self.shared.world.lock().expect("world lock").schema(&id);
        match schema {
            Some(s) => Ok(Response::new(SchemaInfo {
                schema_json: s.json.clone(),
                schema_id: s.id.clone(),
                rpc_id: new_rpc_id(),
            })),
            None => Err(api_error(
                Code::NotFound,
                Some("schema.not.found"),
                &format!("The schema {id} was not found."),
                "GetSchema",
            )),
        }
    }

    async fn get_topic(
        &self,
        request: Request<TopicRequest>,
    ) -> Result<Response<TopicInfo>, Status> {
        self.authorize(request.metadata(), "GetTopic")?;
        self.shared.faults.delay().await;
        let topic = request.into_inner().topic_name;
        if topic.trim().is_empty() {
            return Err(api_error(
                Code::InvalidArgument,
                Some("topic.validation.empty"),
                "The topic name can't be blank.",
                "GetTopic",
            ));
        }
        let Some(kind) = topic_kind(&topic) else {
            return Err(self.topic_not_found(&topic, "GetTopic"));
        };
        let schema_id = self
            .shared
            .world
            .lock()
            .expect("world lock")
            .topic_schema_id(&topic)
            .unwrap_or_default();
        Ok(Response::new(TopicInfo {
            topic_name: topic,
            tenant_guid: self.shared.org_id.clone(),
            can_publish: matches!(kind, super::world::TopicKind::PlatformEvent { .. }),
            can_subscribe: true,
            schema_id,
            rpc_id: new_rpc_id(),
        }))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        self.authorize(request.metadata(), "Publish")?;
        self.shared.faults.delay().await;
        let req = request.into_inner();
        publish_one(&self.shared, req, "Publish").map(Response::new)
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        let token = self.authorize(request.metadata(), "PublishStream")?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let service = self.clone();
        let cancel = self.shared.cancel.child_token();
        self.shared.tasks.spawn(async move {
            let mut topic: Option<String> = None;
            loop {
                let next = tokio::select! {
                    m = inbound.message() => m,
                    () = cancel.cancelled() => return,
                };
                let req = match next {
                    Ok(Some(r)) => r,
                    Ok(None) | Err(_) => return,
                };
                if !service.token_still_valid(&token) {
                    let _ = tx.send(Err(auth_error("PublishStream"))).await;
                    return;
                }
                let fixed = topic.get_or_insert_with(|| req.topic_name.clone());
                if !req.topic_name.is_empty() && req.topic_name != *fixed {
                    let _ = tx
                        .send(Err(api_error(
                            Code::InvalidArgument,
                            Some("publish.topic.mismatch"),
                            "The topic name in the publish request doesn't match the topic of the stream.",
                            "PublishStream",
                        )))
                        .await;
                    return;
                }
                let req = PublishRequest {
                    topic_name: fixed.clone(),
                    ..req
                };
                service.shared.faults.delay().await;
                let result = publish_one(&service.shared, req, "PublishStream");
                let end = result.is_err();
                if tx.send(result).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn managed_subscribe(
        &self,
        request: Request<Streaming<ManagedFetchRequest>>,
    ) -> Result<Response<Self::ManagedSubscribeStream>, Status> {
        self.authorize(request.metadata(), "ManagedSubscribe")?;
        Err(api_error(
            Code::Unimplemented,
            Some("managed.subscription.developer.name.not.found"),
            "Managed subscriptions are not available in the sfcdc emulator; use Subscribe.",
            "ManagedSubscribe",
        ))
    }
}

/// Publishes one request's events to a platform-event topic.
fn publish_one(shared: &Shared, req: PublishRequest, rpc: &str) -> Result<PublishResponse, Status> {
    let topic = req.topic_name;
    if topic.trim().is_empty() {
        return Err(api_error(
            Code::InvalidArgument,
            Some("publish.topic.validation.empty"),
            "The topic name can't be blank.",
            rpc,
        ));
    }
    if topic_kind(&topic).is_none() {
        return Err(api_error(
            Code::NotFound,
            Some("topic.not.found"),
            &format!(
                "The topic information for org CORE/prod/{} and topic {topic} not found. Ensure the topic name is correct and that the topic exists.",
                shared.org_id
            ),
            rpc,
        ));
    }
    if req.events.is_empty() {
        return Err(api_error(
            Code::InvalidArgument,
            Some("publish.event.count.invalid"),
            "The publish request must contain at least one event.",
            rpc,
        ));
    }
    let now = now_ms();
    let mut world = shared.world.lock().expect("world lock");
    let schema_id = world.topic_schema_id(&topic).unwrap_or_default();
    let mut results = Vec::with_capacity(req.events.len());
    for ev in req.events {
        let correlation_key = if ev.id.is_empty() {
            new_rpc_id()
        } else {
            ev.id.clone()
        };
        let outcome = if ev.payload.len() > MAX_EVENT_BYTES {
            Err("The event exceeds the maximum size of 1 MB.".to_owned())
        } else {
            world.publish_raw(
                &topic,
                &ev.schema_id,
                ev.payload,
                Some(correlation_key.clone()),
                now,
            )
        };
        results.push(match outcome {
            Ok(stored) => PublishResult {
                replay_id: stored.replay_bytes.clone(),
                error: None,
                correlation_key,
            },
            Err(msg) => PublishResult {
                replay_id: Bytes::new(),
                error: Some(crate::proto::Error {
                    code: ErrorCode::Publish as i32,
                    msg,
                }),
                correlation_key,
            },
        });
    }
    drop(world);
    shared.mark_dirty();
    Ok(PublishResponse {
        results,
        schema_id,
        rpc_id: new_rpc_id(),
    })
}

/// One Subscribe stream.
struct Session {
    service: PubSubService,
    token: String,
    inbound: Streaming<FetchRequest>,
    tx: mpsc::Sender<Result<FetchResponse, Status>>,
}

impl Session {
    async fn fail(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }

    async fn run(mut self) {
        let shared = self.service.shared.clone();
        let first = match self.inbound.message().await {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let topic = first.topic_name.clone();
        if topic.trim().is_empty() {
            return self
                .fail(api_error(
                    Code::InvalidArgument,
                    Some("topic.validation.empty"),
                    "The topic name can't be blank.",
                    "Subscribe",
                ))
                .await;
        }
        if topic_kind(&topic).is_none() {
            return self
                .fail(self.service.topic_not_found(&topic, "Subscribe"))
                .await;
        }
        if first.num_requested <= 0 {
            return self.fail(requested_invalid()).await;
        }
        // Counted from here until the stream ends, however it ends.
        let _open = shared.stats.subscribed(&topic);
        let (position, mut notify) = {
            let world = shared.world.lock().expect("world lock");
            let bus = &world.bus;
            let position = match ReplayPreset::try_from(first.replay_preset) {
                Ok(ReplayPreset::Latest) => Ok(bus.high_water()),
                Ok(ReplayPreset::Earliest) => Ok(bus.earliest(&topic)),
                Ok(ReplayPreset::Custom) if first.replay_id.is_empty() => Err(api_error(
                    Code::InvalidArgument,
                    Some("subscription.fetch.replayid.validation.failed"),
                    "The Replay ID validation failed. A replay ID is required with the CUSTOM replay preset.",
                    "Subscribe",
                )),
                Ok(ReplayPreset::Custom) => bus.custom_position(&topic, &first.replay_id).map_err(|e| {
                    let why = match e {
                        ReplayError::Malformed => "is malformed",
                        ReplayError::Unknown => "does not refer to an event of this topic",
                        ReplayError::Expired => "is outside the retention window",
                    };
                    api_error(
                        Code::InvalidArgument,
                        Some("subscription.fetch.replayid.corrupted"),
                        &format!("The Replay ID validation failed: the replay ID {why}. Ensure that the replay_id field value in FetchRequest is valid and refers to an event that is within the retention window."),
                        "Subscribe",
                    )
                }),
                Err(_) => Err(api_error(Code::InvalidArgument, Some("subscription.fetch.replay.preset.invalid"), "The replay preset is not valid.", "Subscribe")),
            };
            (position, bus.watch(&topic).expect("topic exists"))
        };
        let mut position = match position {
            Ok(p) => p,
            Err(status) => return self.fail(status).await,
        };
        let mut pending = first.num_requested.min(MAX_PENDING);
        let keepalive = shared.keepalive;
        let idle = shared.idle_timeout;
        let mut last_response = Instant::now();
        let mut last_activity = Instant::now();

        loop {
            if pending > 0 {
                notify.borrow_and_update();
                let batch = {
                    let world = shared.world.lock().expect("world lock");
                    world
                        .bus
                        .read_after(&topic, position, pending as usize, MAX_RESPONSE_BYTES)
                };
                if !batch.is_empty() {
                    let (allowed, disconnect) = shared.faults.take_events(batch.len());
                    let batch = &batch[..allowed];
                    if !batch.is_empty() {
                        position = batch.last().expect("non-empty").replay;
                        pending -= batch.len() as i32;
                        let response = FetchResponse {
                            events: batch
                                .iter()
                                .map(|e| ConsumerEvent {
                                    event: Some(ProducerEvent {
                                        id: e.event_id.clone(),
                                        schema_id: e.schema_id.clone(),
                                        payload: e.payload.clone(),
                                        headers: Vec::new(),
                                    }),
                                    replay_id: e.replay_bytes.clone(),
                                })
                                .collect(),
                            latest_replay_id: batch.last().expect("non-empty").replay_bytes.clone(),
                            rpc_id: new_rpc_id(),
                            pending_num_requested: pending,
                        };
                        shared.stats.add_delivered(batch.len() as u64);
                        shared.faults.delay().await;
                        if self.tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                        last_response = Instant::now();
                    }
                    if disconnect {
                        return self.fail(unavailable("Subscribe")).await;
                    }
                    continue;
                }
            }
            let keepalive_at = last_response + keepalive;
            let idle_at = last_response.max(last_activity) + idle;
            tokio::select! {
                msg = self.inbound.message() => {
                    let req = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) | Err(_) => return,
                    };
                    last_activity = Instant::now();
                    if !self.service.token_still_valid(&self.token) {
                        return self.fail(auth_error("Subscribe")).await;
                    }
                    if !req.topic_name.is_empty() && req.topic_name != topic {
                        return self.fail(api_error(
                            Code::InvalidArgument,
                            Some("subscription.fetch.topic.mismatch"),
                            &format!("The topic name {} in the fetch request doesn't match the subscribed topic {topic}.", req.topic_name),
                            "Subscribe",
                        )).await;
                    }
                    if req.num_requested <= 0 {
                        return self.fail(requested_invalid()).await;
                    }
                    pending = pending.saturating_add(req.num_requested).min(MAX_PENDING);
                }
                changed = notify.changed(), if pending > 0 => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(keepalive_at), if pending > 0 => {
                    let latest = {
                        let world = shared.world.lock().expect("world lock");
                        // Only when nothing is available: the counter may lie beyond the last
                        // event sent, never before an unsent one.
                        if !world.bus.read_after(&topic, position, 1, usize::MAX).is_empty() {
                            continue;
                        }
                        world.bus.encode_replay(world.bus.high_water())
                    };
                    shared.faults.delay().await;
                    let response = FetchResponse {
                        events: Vec::new(),
                        latest_replay_id: latest,
                        rpc_id: new_rpc_id(),
                        pending_num_requested: pending,
                    };
                    if self.tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                    shared.stats.count("grpc keepalive".to_owned());
                    last_response = Instant::now();
                }
                () = tokio::time::sleep_until(idle_at), if pending == 0 => {
                    return self.fail(api_error(
                        Code::Unavailable,
                        None,
                        &format!("The stream was closed because no FetchRequest arrived within {} while no events were owed.", humantime::format_duration(idle)),
                        "Subscribe",
                    )).await;
                }
            }
        }
    }
}

fn requested_invalid() -> Status {
    api_error(
        Code::InvalidArgument,
        Some("subscription.fetch.requested.events.invalid"),
        "The requested number of events in a fetch request must be greater than zero.",
        "Subscribe",
    )
}

/// Clamps a keepalive interval to the documented bound.
pub fn valid_keepalive(d: Duration) -> bool {
    d > Duration::ZERO && d <= Duration::from_secs(270)
}
