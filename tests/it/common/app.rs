//! The service under test: `App` built and run in this process against an emulator (on a SQLite
//! file in a temporary directory), or `sfcdc run` as a child process; and the waits and reads
//! the tests share (caught up, jobs by order, draft orders, publishing the fulfilment event).

use std::collections::BTreeMap;
use std::process::Stdio;

use serde_json::{Value, json};
use sfcdc::app::{App, AppHandle, Settings};
use sfcdc::clock::Clock;
use sfcdc::decode::Position;
use sfcdc::store::{JobFilter, Store};
use tokio_util::sync::CancellationToken;

use super::{Org, PATIENCE, eventually, metric_value};

pub const ORDERS: &str = "/data/OrderChangeEvent";
pub const PE: &str = "/event/Order_Fulfilment_Requested__e";

/// A running `App` against an emulator, on a SQLite file.
pub struct Running {
    pub app: AppHandle,
    pub cancel: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), sfcdc::app::AppError>>,
    pub dir: tempfile::TempDir,
}

impl Running {
    pub async fn stop(self) -> (AppHandle, tempfile::TempDir) {
        self.cancel.cancel();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("stops")
            .expect("task")
            .expect("clean stop");
        (self.app, self.dir)
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.app.metrics().render(), name, labels)
    }
}

pub async fn run_app(org: &Org, dir: tempfile::TempDir, extra: &[(&str, &str)]) -> Running {
    run_app_at(org, dir, extra, Clock::system()).await
}

/// [`run_app`], with the service judging time by `clock`.
pub async fn run_app_at(
    org: &Org,
    dir: tempfile::TempDir,
    extra: &[(&str, &str)],
    clock: Clock,
) -> Running {
    let mut env = org.subscriber_env(dir.path(), extra);
    env.set(
        "SFCDC_DATABASE_URL",
        format!("sqlite://{}", dir.path().join("sfcdc.db").display()),
    );
    if env.get("SFCDC_REPLAY_PRESET").is_none() {
        env.set("SFCDC_REPLAY_PRESET", "earliest");
    }
    if env.get("SFCDC_CHANNELS").is_none() || extra.iter().all(|(k, _)| *k != "SFCDC_CHANNELS") {
        env.set("SFCDC_CHANNELS", format!("{ORDERS},{PE}"));
    }
    let mut settings = Settings::from_env(&env).expect("settings");
    settings.clock = clock;
    let built = App::build(settings).await.expect("app builds");
    let app = built.handle();
    let cancel = CancellationToken::new();
    let handle = tokio::spawn(built.run_until_stopped(cancel.clone()));
    Running {
        app,
        cancel,
        handle,
        dir,
    }
}

/// Waits until every listed channel has stored a position: its stream is open, so a change made
/// now is delivered even from the `latest` preset.
pub async fn live<S: Store>(store: &S, channels: &[&str]) {
    eventually("the service to be live", async || {
        // A store another process is still migrating has no tables yet: not live yet.
        let stored = store.checkpoints().await.ok()?;
        channels
            .iter()
            .all(|ch| stored.iter().any(|c| c.channel == *ch))
            .then_some(())
    })
    .await;
}

/// Waits until every listed channel's checkpoint reaches the emulator's last event on it.
pub async fn caught_up<S: Store>(org: &Org, store: &S, channels: &[&str]) {
    eventually("the service to catch up", async || {
        // A store another process is still migrating has no tables yet: not caught up yet.
        let stored: BTreeMap<String, Position> = store
            .checkpoints()
            .await
            .ok()?
            .into_iter()
            .map(|c| (c.channel, c.position))
            .collect();
        let done = channels.iter().all(|ch| {
            let last = org.emu.with_world(|w| w.bus.last(ch).map(|e| e.replay));
            match (last, stored.get(*ch)) {
                (None, _) => true,
                (Some(last), Some(Position::After(r))) => r.position().is_some_and(|p| p >= last),
                _ => false,
            }
        });
        done.then_some(())
    })
    .await;
}

pub async fn jobs_by_order<S: Store>(store: &S) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for j in store.jobs(&JobFilter::default()).await.unwrap() {
        *out.entry(j.order_id).or_insert(0) += 1;
    }
    out
}

pub async fn drafts(org: &Org) -> Vec<String> {
    let r = org
        .query("SELECT Id FROM Order WHERE Status = 'Draft' ORDER BY CreatedDate")
        .await;
    r["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["Id"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn publish_fulfilment(org: &Org, order: &str) {
    let (status, body) = org
        .rest(
            reqwest::Method::POST,
            "/services/data/v60.0/sobjects/Order_Fulfilment_Requested__e",
            Some(json!({"OrderId__c": order})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

pub struct Proc(pub tokio::process::Child);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.id().expect("running") as i32
    }
}

pub fn signal(pid: i32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn binary_env(org: &Org, dir: &std::path::Path, db_url: &str) -> Vec<(String, String)> {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, org.emu.ca_pem().unwrap()).unwrap();
    vec![
        ("SFCDC_PUBSUB_ENDPOINT".into(), org.emu.grpc_url()),
        ("SFCDC_CA_CERT".into(), ca.display().to_string()),
        ("SF_AUTH".into(), "client-credentials".into()),
        ("SF_LOGIN_URL".into(), org.emu.instance_url().into()),
        ("SF_CLIENT_ID".into(), "sfcdc-demo".into()),
        ("SF_CLIENT_SECRET".into(), "sfcdc-demo-secret".into()),
        ("SFCDC_CHANNELS".into(), ORDERS.into()),
        ("SFCDC_REPLAY_PRESET".into(), "earliest".into()),
        ("SFCDC_RECONNECT_MIN".into(), "50ms".into()),
        ("SFCDC_RECONNECT_MAX".into(), "500ms".into()),
        ("SFCDC_DATABASE_URL".into(), db_url.into()),
        // Debug lines too: the secret scan reads them (tests/secrets_in_logs.rs).
        ("SFCDC_LOG".into(), "info,sfcdc=debug".into()),
        ("SFCDC_LOG_FORMAT".into(), "json".into()),
        ("SFCDC_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
    ]
}

/// Starts `sfcdc run`, its stderr appended to `log`, which lives among the suite's kept logs
/// (for the secret scan) and is linked at `log`.
pub fn spawn_run(env: &[(String, String)], log: &std::path::Path) -> Proc {
    if !log.exists() {
        let kept = crate::common::logs::child_log("run");
        std::fs::File::create(&kept).unwrap();
        std::os::unix::fs::symlink(&kept, log).unwrap();
    }
    let log = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    Proc(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
            .arg("run")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("sfcdc run starts"),
    )
}

/// `method path` with `token` as a bearer token: the status and the body (JSON, or text).
pub async fn call(
    r: &Running,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let addr = r.app.admin_addr().expect("the admin API listens");
    let mut req = reqwest::Client::new().request(method, format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("admin call");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}
