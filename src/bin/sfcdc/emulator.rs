//! `sfcdc emulator`: a stand-in Salesforce org on loopback (Pub/Sub API over gRPC, REST, OAuth,
//! the fulfilment system and the notification sinks), from the `sfcdc-emulator` crate, configured
//! by flags and run until a signal. It prints where everything listens and the credentials it
//! accepts, then serves until `shutdown` resolves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use sfcdc_emulator::auth::Credentials;
use sfcdc_emulator::faults::ScheduledFault;
use sfcdc_emulator::fulfilment::FulfilmentConfig;
use sfcdc_emulator::{Emulator, EmulatorConfig};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Flags of `sfcdc emulator`.
#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// gRPC (Pub/Sub API) listen address.
    #[arg(long, default_value = "127.0.0.1:7443")]
    pub grpc_addr: SocketAddr,
    /// REST, OAuth and control API listen address.
    #[arg(long, default_value = "127.0.0.1:7444")]
    pub rest_addr: SocketAddr,
    /// Write the generated CA certificate (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    pub ca_out: Option<PathBuf>,
    /// Serve gRPC and REST without TLS.
    #[arg(long)]
    pub plaintext: bool,
    /// Seed of the sample data and generated ids.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the org, the event log and issued tokens in this file across restarts.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Interval of keepalive FetchResponses while events are owed (at most 270s).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub keepalive: Duration,
    /// Close a Subscribe stream that owes nothing after this long without a FetchRequest.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// How long events are retained for replay.
    #[arg(long, default_value = "72h", value_parser = duration)]
    pub retention: Duration,
    /// Lifetime of issued access tokens.
    #[arg(long, default_value = "2h", value_parser = duration)]
    pub token_lifetime: Duration,
    /// Connected App consumer key accepted by the token endpoint.
    #[arg(long, default_value = "sfcdc-demo")]
    pub client_id: String,
    /// Connected App consumer secret.
    #[arg(long, default_value = "sfcdc-demo-secret")]
    pub client_secret: String,
    /// User name for the password and JWT bearer grants.
    #[arg(long, default_value = "demo@sfcdc.test")]
    pub username: String,
    /// Password for the password grant.
    #[arg(long, default_value = "sfcdc-demo-password")]
    pub password: String,
    /// PEM RSA public key that verifies JWT bearer assertions (the grant is refused without it).
    #[arg(long, value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// Inject a fault: SPEC or SPEC@DELAY, e.g. disconnect-after=50, corrupt-next,
    /// gap=GAP_OVERFLOW, expire-tokens@30s. Repeatable.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<ScheduledFault>,
    /// Append this many generated order change events at start.
    #[arg(long, default_value_t = 0)]
    pub bulk: usize,
    /// Start with an empty org (no sample accounts and orders).
    #[arg(long)]
    pub no_sample_data: bool,
    /// How long a fulfilment operation stays pending.
    #[arg(long, default_value = "1500ms", value_parser = duration)]
    pub fulfilment_latency: Duration,
    /// Steps in which a pending operation's progress rises (at least 1).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub fulfilment_progress_steps: u32,
    /// Probability (0 to 1) that a fulfilment operation fails.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub fulfilment_failure_rate: f64,
    /// Probability (0 to 1) that a fulfilment request is answered 503.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub fulfilment_error_rate: f64,
    /// Probability (0 to 1) that a fulfilment operation completes synchronously (201).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub fulfilment_sync_rate: f64,
    /// Bearer token the fulfilment API requires ("" accepts requests without one).
    #[arg(long, default_value = "fulfilment-dev-token", value_name = "T")]
    pub fulfilment_token: String,
    /// Turn off batch status polling (GET /fulfilment/operations?ids= answers 404).
    #[arg(long)]
    pub fulfilment_no_batch: bool,
    /// Secret that webhook signatures are verified with ("" accepts unsigned webhooks).
    #[arg(long, default_value = "webhook-dev-secret", value_name = "SECRET")]
    pub webhook_secret: String,
    /// Token the GitHub repository_dispatch stand-in accepts.
    #[arg(long, default_value = "github-dev-token", value_name = "T")]
    pub github_token: String,
}

impl EmulatorArgs {
    /// Builds the emulator configuration, reading the JWT public key if one is given.
    pub fn into_config(self) -> anyhow::Result<EmulatorConfig> {
        let jwt_public_key = match &self.jwt_public_key {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--jwt-public-key {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(EmulatorConfig {
            grpc_addr: self.grpc_addr,
            rest_addr: self.rest_addr,
            tls: !self.plaintext,
            ca_out: self.ca_out,
            seed: self.seed,
            state: self.state,
            keepalive: self.keepalive,
            idle_timeout: self.idle_timeout,
            retention: self.retention,
            token_lifetime: self.token_lifetime,
            credentials: Credentials {
                client_id: self.client_id,
                client_secret: self.client_secret,
                username: self.username,
                password: self.password,
                jwt_public_key,
            },
            faults: self.faults,
            bulk: self.bulk,
            sample_data: !self.no_sample_data,
            fulfilment: FulfilmentConfig {
                latency_ms: u64::try_from(self.fulfilment_latency.as_millis()).unwrap_or(u64::MAX),
                progress_steps: self.fulfilment_progress_steps,
                failure_rate: self.fulfilment_failure_rate,
                error_rate: self.fulfilment_error_rate,
                sync_rate: self.fulfilment_sync_rate,
                batch: !self.fulfilment_no_batch,
                token: Some(self.fulfilment_token).filter(|t| !t.is_empty()),
                ..FulfilmentConfig::default()
            },
            webhook_secret: Some(self.webhook_secret).filter(|s| !s.is_empty()),
            github_token: self.github_token,
        })
    }
}

/// Runs `sfcdc emulator` until `shutdown` resolves.
pub async fn run_emulator(
    args: EmulatorArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let ca_out = args.ca_out.clone();
    let config = args.into_config()?;
    let (webhook_secret, github_token) =
        (config.webhook_secret.clone(), config.github_token.clone());
    let emulator = Emulator::start(config).await?;
    let creds = emulator.credentials().clone();
    let ca = match (&ca_out, emulator.ca_pem()) {
        (Some(p), Some(_)) => p.display().to_string(),
        (None, Some(_)) => "not written (use --ca-out FILE)".to_owned(),
        (_, None) => "none (plaintext)".to_owned(),
    };
    // One write, whose failure (a reader that went away) is not the emulator's problem: the
    // banner is for people and scripts that read its first line.
    use std::fmt::Write as _;
    let mut banner = String::new();
    let _ = writeln!(
        banner,
        "sfcdc emulator ready: grpc={} rest={} ca={}",
        emulator.grpc_url(),
        emulator.instance_url(),
        ca
    );
    let _ = writeln!(banner, "  Pub/Sub API (gRPC):  {}", emulator.grpc_url());
    let _ = writeln!(banner, "  REST, OAuth, login:  {}", emulator.instance_url());
    let _ = writeln!(
        banner,
        "  Control API:         {}/emulator/",
        emulator.instance_url()
    );
    let fulfilment = emulator.fulfilment().config();
    let _ = writeln!(
        banner,
        "  Fulfilment API:      {} (token {}; {}ms latency, {} progress steps, batch status {})",
        emulator.fulfilment_url(),
        fulfilment.token.as_deref().unwrap_or("none"),
        fulfilment.latency_ms,
        fulfilment.progress_steps,
        if fulfilment.batch { "on" } else { "off" }
    );
    let _ = writeln!(
        banner,
        "  Webhook sink:        {}/hooks/{{name}} (secret {})",
        emulator.instance_url(),
        webhook_secret
            .as_deref()
            .unwrap_or("none: unsigned requests accepted")
    );
    let _ = writeln!(
        banner,
        "  GitHub API:          {}/repos/{{owner}}/{{repo}}/dispatches (token {})",
        emulator.github_api_url(),
        github_token
    );
    let _ = writeln!(banner, "  CA certificate:      {ca}");
    let _ = writeln!(banner, "  Org id:              {}", emulator.org_id());
    let _ = writeln!(
        banner,
        "  client credentials:  client id {} / secret {}",
        creds.client_id, creds.client_secret
    );
    let _ = writeln!(
        banner,
        "  password login:      user {} / password {}",
        creds.username, creds.password
    );
    let _ = writeln!(
        banner,
        "  jwt bearer:          {}",
        if creds.jwt_public_key.is_some() {
            "enabled (--jwt-public-key)"
        } else {
            "disabled (pass --jwt-public-key FILE)"
        }
    );
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
    drop(out);
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}
