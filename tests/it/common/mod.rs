//! Helpers shared by the integration tests: an emulator on ephemeral ports, a tonic client
//! generated from the same proto, a REST client that trusts the emulator's CA, and a hand-driven
//! Subscribe stream.

#![allow(dead_code)]

pub mod app;
pub mod logs;
pub mod memory_sink;
pub mod pg;
pub mod webdriver;

pub use app::*;
pub use memory_sink::MemorySink;
pub use pg::{fresh_database, fresh_schema, postgres_url};

use std::time::Duration;

use apache_avro::types::Value as Avro;
use serde_json::{Value, json};
use sfcdc::proto::pub_sub_client::PubSubClient;
use sfcdc::proto::{ConsumerEvent, FetchRequest, FetchResponse, ReplayPreset, SchemaRequest};
use sfcdc_emulator::{Emulator, EmulatorConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Request, Status, Streaming};

/// Whether this run is CI's (`CI` set, and not to `false` or `0`): there, a test whose outside
/// system is missing fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// How long a test waits for something that should happen before declaring it lost.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Asks `check` every 20 ms until it answers `Some`, and returns that; fails the test with
/// `what` if [`PATIENCE`] runs out first.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The three Pub/Sub metadata headers.
#[derive(Clone, Debug)]
pub struct Auth {
    pub token: Option<String>,
    pub instance: Option<String>,
    pub tenant: Option<String>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let md = req.metadata_mut();
        for (k, v) in [
            ("accesstoken", &self.token),
            ("instanceurl", &self.instance),
            ("tenantid", &self.tenant),
        ] {
            if let Some(v) = v {
                md.insert(k, MetadataValue::try_from(v.as_str()).expect("ascii"));
            }
        }
        Ok(req)
    }
}

pub type Client = PubSubClient<InterceptedService<Channel, Auth>>;

/// A running emulator with a valid token.
pub struct Org {
    pub emu: Emulator,
    pub token: String,
    pub http: reqwest::Client,
}

impl Org {
    /// An emulator with a short keepalive, so tests can tell when a subscription is live.
    pub async fn start() -> Org {
        Org::start_with(test_config()).await
    }

    pub async fn start_with(config: EmulatorConfig) -> Org {
        logs::init();
        let emu = Emulator::start(config).await.expect("emulator starts");
        let token = emu.issue_token();
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = emu.ca_pem() {
            builder = builder.tls_certs_only([
                reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA parses")
            ]);
        }
        Org {
            emu,
            token,
            http: builder.build().expect("http client"),
        }
    }

    pub fn auth(&self) -> Auth {
        Auth {
            token: Some(self.token.clone()),
            instance: Some(self.emu.instance_url().to_owned()),
            tenant: Some(self.emu.org_id().to_owned()),
        }
    }

    pub async fn channel(&self) -> Channel {
        let mut endpoint = Channel::from_shared(self.emu.grpc_url()).expect("valid url");
        if let Some(ca) = self.emu.ca_pem() {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )
                .expect("tls config");
        }
        endpoint.connect().await.expect("gRPC connects")
    }

    pub async fn client(&self) -> Client {
        self.client_with(self.auth()).await
    }

    pub async fn client_with(&self, auth: Auth) -> Client {
        PubSubClient::with_interceptor(self.channel().await, auth)
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.instance_url())
    }

    /// Sends a REST request with the bearer token; returns the status and the JSON body (or
    /// `Null` when there is none).
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("REST call");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn query(&self, soql: &str) -> Value {
        let resp = self
            .http
            .get(self.url("/services/data/v60.0/query"))
            .query(&[("q", soql)])
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("query");
        assert_eq!(resp.status(), 200, "query {soql}");
        resp.json().await.expect("json")
    }

    pub async fn first_account(&self) -> String {
        let r = self.query("SELECT Id FROM Account LIMIT 1").await;
        r["records"][0]["Id"]
            .as_str()
            .expect("an account")
            .to_owned()
    }

    pub async fn create_order(&self, extra: Value) -> String {
        let mut body = json!({"AccountId": self.first_account().await, "EffectiveDate": "2024-06-01", "Status": "Draft", "Name": "Test order"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, resp) = self
            .rest(
                reqwest::Method::POST,
                "/services/data/v60.0/sobjects/Order",
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "create order: {resp}");
        resp["id"].as_str().expect("id").to_owned()
    }

    pub async fn patch_order(&self, id: &str, body: Value) {
        let (status, resp) = self
            .rest(
                reqwest::Method::PATCH,
                &format!("/services/data/v60.0/sobjects/Order/{id}"),
                Some(body),
            )
            .await;
        assert_eq!(status, 204, "patch order: {resp}");
    }

    pub async fn fault(&self, fault: Value) -> Value {
        let resp = self
            .http
            .post(self.url("/emulator/faults"))
            .json(&fault)
            .send()
            .await
            .expect("fault call");
        assert_eq!(resp.status(), 200, "fault {fault}");
        resp.json().await.expect("json")
    }

    pub async fn schema_json(&self, client: &mut Client, id: &str) -> String {
        client
            .get_schema(SchemaRequest {
                schema_id: id.to_owned(),
            })
            .await
            .expect("GetSchema")
            .into_inner()
            .schema_json
    }
}

/// Ephemeral ports and a 200 ms keepalive.
pub fn test_config() -> EmulatorConfig {
    EmulatorConfig {
        keepalive: Duration::from_millis(200),
        ..EmulatorConfig::ephemeral()
    }
}

pub fn fetch(topic: &str, preset: ReplayPreset, replay_id: Vec<u8>, n: i32) -> FetchRequest {
    FetchRequest {
        topic_name: topic.to_owned(),
        replay_preset: preset as i32,
        replay_id: replay_id.into(),
        num_requested: n,
        auth_refresh: String::new(),
    }
}

/// More demand on an open stream (no topic, as clients usually send it).
pub fn more(n: i32) -> FetchRequest {
    FetchRequest {
        num_requested: n,
        ..FetchRequest::default()
    }
}

/// A Subscribe stream driven by hand.
pub struct Sub {
    pub tx: mpsc::Sender<FetchRequest>,
    pub rx: Streaming<FetchResponse>,
}

impl Sub {
    pub async fn open(client: &mut Client, first: FetchRequest) -> Result<Sub, Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.expect("queue first request");
        let rx = client
            .subscribe(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Sub { tx, rx })
    }

    pub async fn send(&self, req: FetchRequest) {
        self.tx.send(req).await.expect("stream open");
    }

    /// The next response, or the status the stream ended with.
    pub async fn next(&mut self) -> Result<Option<FetchResponse>, Status> {
        tokio::time::timeout(PATIENCE, self.rx.message())
            .await
            .expect("a response or stream end arrives")
    }

    /// Waits for a keepalive: proof that the server has read the first request and is waiting
    /// for events. Only meaningful when nothing is available to deliver.
    pub async fn live(&mut self) {
        let r = self.next().await.expect("no error").expect("stream open");
        assert!(r.events.is_empty(), "expected a keepalive, got events");
    }

    /// Reads responses until `n` events have arrived; panics on errors.
    pub async fn events(&mut self, n: usize) -> Vec<ConsumerEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let r = self.next().await.expect("no error").expect("stream open");
            out.extend(r.events);
        }
        assert_eq!(out.len(), n, "more events than asked for");
        out
    }

    /// Reads until the stream ends with an error, returning it.
    pub async fn error(&mut self) -> Status {
        loop {
            match self.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without an error status"),
                Err(s) => return s,
            }
        }
    }
}

pub fn trailer(status: &Status, key: &str) -> Option<String> {
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Asserts a Pub/Sub API error: gRPC code, `error-code` trailer, `rpc-id` and `type` trailers,
/// and the description suffix.
pub fn assert_api_error(status: &Status, code: tonic::Code, error_code: Option<&str>, rpc: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(
        trailer(status, "error-code"),
        error_code.map(|c| format!("sfdc.platform.eventbus.grpc.{c}")),
        "{status:?}"
    );
    let rpc_id = trailer(status, "rpc-id").expect("rpc-id trailer");
    uuid::Uuid::parse_str(&rpc_id).expect("rpc-id is a UUID");
    assert_eq!(trailer(status, "type").as_deref(), Some(rpc));
    assert!(
        status.message().ends_with(&format!(" rpcId: {rpc_id}")),
        "{}",
        status.message()
    );
}

/// Decodes a payload with its writer schema, using apache-avro (independent of the emulator's
/// encoder).
pub fn decode(schema_json: &str, payload: &[u8]) -> Avro {
    let schema = apache_avro::Schema::parse_str(schema_json).expect("schema parses");
    let mut reader = payload;
    let v = try_decode(&schema, &mut reader).expect("payload decodes");
    assert!(reader.is_empty(), "trailing bytes after the datum");
    v
}

/// Decodes one datum with apache-avro's generic reader.
pub fn try_decode(
    schema: &apache_avro::Schema,
    reader: &mut &[u8],
) -> apache_avro::AvroResult<Avro> {
    apache_avro::reader::datum::GenericDatumReader::builder(schema)
        .build()?
        .read_value(reader)
}

/// Encodes one datum with apache-avro's generic writer.
pub fn encode(schema: &apache_avro::Schema, value: Avro) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .expect("writer")
        .write_value_to_vec(value)
        .expect("value matches the schema")
}

/// A field of a decoded record, with unions unwrapped.
pub fn field<'a>(v: &'a Avro, name: &str) -> &'a Avro {
    let Avro::Record(fields) = v else {
        panic!("not a record: {v:?}")
    };
    let v = &fields
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .1;
    match v {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}

pub fn string(v: &Avro) -> &str {
    match v {
        Avro::String(s) => s,
        other => panic!("not a string: {other:?}"),
    }
}

pub fn strings(v: &Avro) -> Vec<String> {
    match v {
        Avro::Array(items) => items.iter().map(|i| string(i).to_owned()).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

pub fn replay_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// A running `Source` against an emulator, feeding a `MemorySink`.
pub struct Subscriber {
    pub sink: std::sync::Arc<MemorySink>,
    pub metrics: std::sync::Arc<sfcdc::telemetry::metrics::Metrics>,
    pub auth: std::sync::Arc<sfcdc::salesforce::auth::Authenticator>,
    pub schemas: std::sync::Arc<sfcdc::source::schemas::SchemaRegistry>,
    cancel: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), sfcdc::source::SourceError>>,
    _dir: tempfile::TempDir,
}

impl Subscriber {
    /// Stops the subscriber and returns how it ended.
    pub async fn stop(self) -> Result<(), sfcdc::source::SourceError> {
        self.cancel.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("subscriber stops")
            .expect("task")
    }

    /// Waits for the subscriber to end on its own.
    pub async fn finished(self) -> Result<(), sfcdc::source::SourceError> {
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("subscriber ends")
            .expect("task")
    }

    /// Waits until `n` events are committed.
    pub async fn wait_for(&self, n: usize) {
        tokio::time::timeout(PATIENCE, self.sink.wait_for(n))
            .await
            .unwrap_or_else(|_| {
                panic!("{n} events committed; got {}", self.sink.replay_ids().len())
            });
    }

    /// A metric value from the Prometheus rendering (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics.render(), name, labels)
    }
}

/// Finds `name{labels…} value` in a Prometheus text rendering (the sum over matching series).
pub use sfcdc::telemetry::metrics::sample_sum as metric_value;

impl Org {
    /// The configuration a subscriber needs to reach this emulator, plus `extra`.
    pub fn subscriber_env(
        &self,
        dir: &std::path::Path,
        extra: &[(&str, &str)],
    ) -> sfcdc::config::Env {
        let mut env = sfcdc::config::Env::from_pairs([
            ("SFCDC_PUBSUB_ENDPOINT", self.emu.grpc_url().as_str()),
            ("SF_AUTH", "client-credentials"),
            ("SF_LOGIN_URL", self.emu.instance_url()),
            ("SF_CLIENT_ID", "sfcdc-demo"),
            ("SF_CLIENT_SECRET", "sfcdc-demo-secret"),
            ("SFCDC_CHANNELS", "/data/OrderChangeEvent"),
            ("SFCDC_RECONNECT_MIN", "50ms"),
            ("SFCDC_RECONNECT_MAX", "500ms"),
            ("SFCDC_ADMIN_ADDR", "127.0.0.1:0"),
        ]);
        if let Some(ca) = self.emu.ca_pem() {
            let path = dir.join("ca.pem");
            std::fs::write(&path, ca).expect("write CA");
            env.set("SFCDC_CA_CERT", path.display().to_string());
        }
        for (k, v) in extra {
            env.set(k, *v);
        }
        env
    }

    /// Starts a subscriber with `extra` settings feeding `sink`.
    pub async fn subscribe(
        &self,
        extra: &[(&str, &str)],
        sink: std::sync::Arc<MemorySink>,
    ) -> Subscriber {
        use std::sync::Arc;
        let dir = tempfile::tempdir().expect("tempdir");
        let env = self.subscriber_env(dir.path(), extra);
        let config = sfcdc::source::SourceConfig::from_env(&env).expect("source config");
        let auth_config = sfcdc::salesforce::auth::AuthConfig::from_env(&env).expect("auth config");
        let metrics = Arc::new(sfcdc::telemetry::metrics::Metrics::new());
        let http =
            sfcdc::salesforce::http::http_client(config.ca_cert.as_deref()).expect("http client");
        let auth = Arc::new(sfcdc::salesforce::auth::Authenticator::new(
            auth_config,
            http,
            metrics.clone(),
        ));
        let source =
            sfcdc::source::Source::new(config, auth.clone(), sink.clone(), metrics.clone())
                .expect("source");
        let schemas = source.schemas().clone();
        let cancel = tokio_util::sync::CancellationToken::new();
        let token = cancel.clone();
        let handle = tokio::spawn(async move { source.run(token).await });
        Subscriber {
            sink,
            metrics,
            auth,
            schemas,
            cancel,
            handle,
            _dir: dir,
        }
    }

    /// Replay ids (hex) of every event retained on a topic, in order.
    pub fn sequence(&self, topic: &str) -> Vec<String> {
        self.emu.with_world(|w| {
            w.bus
                .read_after(topic, 0, usize::MAX, usize::MAX)
                .iter()
                .map(|e| hex::encode(&e.replay_bytes))
                .collect()
        })
    }
}

/// Hex replay ids of what a sink committed, in order.
pub fn committed(sink: &MemorySink) -> Vec<String> {
    sink.replay_ids().iter().map(|r| r.to_hex()).collect()
}
