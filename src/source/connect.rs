//! The gRPC channel to the Pub/Sub API and the metadata every call carries.
//!
//! Trust is the webpki roots plus the optional `SFCDC_CA_CERT` ([`read_ca`]), as for HTTPS. The
//! channel sends HTTP/2 keepalive pings and connects lazily, so a channel outage surfaces as a
//! stream error that the subscription retries, never as a start-up failure.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::proto::pub_sub_client::PubSubClient;
use crate::salesforce::auth::Authenticator;
use crate::salesforce::http::read_ca;

/// The largest FetchResponse accepted: 100 events of up to 1 MB each, plus framing.
pub const MAX_MESSAGE_BYTES: usize = 110 * 1024 * 1024;

/// A Pub/Sub API client whose calls carry the current session's metadata.
pub type Client = PubSubClient<InterceptedService<Channel, AuthMetadata>>;

/// Adds `accesstoken`, `instanceurl` and `tenantid` from the current session to every call.
#[derive(Clone)]
pub struct AuthMetadata {
    auth: Arc<Authenticator>,
}

impl tonic::service::Interceptor for AuthMetadata {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let Some(session) = self.auth.current() else {
            return Err(Status::unauthenticated("not logged in to Salesforce yet"));
        };
        let md = req.metadata_mut();
        let value = |s: &str| {
            MetadataValue::try_from(s).map_err(|_| Status::internal("session values must be ASCII"))
        };
        md.insert("accesstoken", value(session.access_token.expose_secret())?);
        md.insert("instanceurl", value(&session.instance_url)?);
        md.insert("tenantid", value(&session.org_id)?);
        Ok(req)
    }
}

/// The gRPC channel: TLS for `https://` endpoints, plaintext for `http://`.
pub fn grpc_channel(endpoint: &str, ca: Option<&Path>) -> Result<Channel, String> {
    let mut ep = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("SFCDC_PUBSUB_ENDPOINT {endpoint}: {e}"))?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // HTTP/2 frames of up to 256 KiB from the server (the protocol's default is 16 KiB): a
        // response of 100 events (about 60 KB here) arrives as one DATA frame instead of four,
        // with fewer reads and wake-ups on both sides of the stream's round trip (alternated over
        // 300,000 events: 2-5% more events/s, 3-6% less CPU per event on each side).
        .max_frame_size(256 * 1024)
        .tcp_nodelay(true);
    if endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = read_ca(ca)? {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        ep = ep
            .tls_config(tls)
            .map_err(|e| format!("TLS for {endpoint}: {e}"))?;
    }
    Ok(ep.connect_lazy())
}

/// A client on `channel` that authenticates with `auth`'s current session.
pub fn client(channel: Channel, auth: Arc<Authenticator>) -> Client {
    PubSubClient::with_interceptor(channel, AuthMetadata { auth })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(4 * 1024 * 1024)
}
