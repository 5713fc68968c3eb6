//! `sfcdc demo`: the emulator and the service in one process, a scripted story, a summary.
//!
//! The story exercises what sfcdc exists for: approvals become exactly one job each; a second
//! signal for the same approval (the fulfilment platform event, a gap event, a replay after a
//! crash) is suppressed; non-trigger and internal changes create nothing; a blocked order is
//! skipped by its guard; a corrupt event is quarantined while the stream goes on; a dropped
//! stream reconnects; a crash mid-stream resumes from the stored checkpoint; approvals whose
//! events expired while sfcdc was down are recovered by a reconcile of the lost window; and one
//! mass update approving several orders (one merged change event) makes a job for each. Meanwhile the
//! worker runs every job through the emulator's fulfilment system: it writes `Activating`,
//! submits, polls the progress, writes `Activated` and the external id back (whose change
//! events create no job), and notifies a webhook and a GitHub `repository_dispatch`.
//! Everything runs on loopback with a temporary SQLite file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use sfcdc::app::{App, AppHandle, Settings};
use sfcdc::config::Env;
use sfcdc::decode::Position;
use sfcdc::store::Store;
use sfcdc::telemetry::metrics::Metrics;
use sfcdc_emulator::{Emulator, EmulatorConfig};

/// Flags of `sfcdc demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the SQLite file and print where it is.
    #[arg(long)]
    pub keep: bool,
    /// Put the database under this directory instead of the system temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What the demo ended with: the figures of its summary.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// Events received over both service runs.
    pub events_seen: u64,
    /// Jobs in the store.
    pub jobs_created: i64,
    /// Orders the story approved (each should have exactly one job).
    pub approved_orders: Vec<String>,
    /// Duplicates suppressed (replayed events and second signals).
    pub duplicates: u64,
    /// Open quarantine entries.
    pub quarantined: i64,
    /// Checkpoint per channel (hex replay id).
    pub checkpoints: BTreeMap<String, String>,
    /// Jobs completed by the worker.
    pub jobs_completed: usize,
    /// Orders whose write-back reads `Activated` with an external id: order → external id.
    pub activated: BTreeMap<String, String>,
    /// Webhook notifications received (with a valid signature).
    pub webhooks: usize,
    /// `repository_dispatch` notifications received.
    pub dispatches: usize,
}

struct Story {
    emu: Emulator,
    http: reqwest::Client,
    token: String,
}

impl Story {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.instance_url())
    }

    async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: HTTP {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn query_ids(&self, soql: &str) -> anyhow::Result<Vec<String>> {
        let resp = self
            .http
            .get(self.url("/services/data/v60.0/query"))
            .query(&[("q", soql)])
            .bearer_auth(&self.token)
            .send()
            .await?;
        let v: Value = resp.json().await?;
        Ok(v["records"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| r["Id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn patch(&self, id: &str, body: Value) -> anyhow::Result<()> {
        self.rest(
            reqwest::Method::PATCH,
            &format!("/services/data/v60.0/sobjects/Order/{id}"),
            Some(body),
        )
        .await
        .map(|_| ())
    }

    async fn fault(&self, fault: Value) -> anyhow::Result<()> {
        let resp = self
            .http
            .post(self.url("/emulator/faults"))
            .json(&fault)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "fault {fault}: HTTP {}",
            resp.status()
        );
        Ok(())
    }
}

/// The read API token of the demo's service.
const DEMO_READ_TOKEN: &str = "demo-read-token-0123456789";

/// Step 11: concurrent cached reads of one order cost one Salesforce call, and a change event
/// makes the next read show the change. Returns the step's text.
async fn cached_reads(story: &Story, app: &AppHandle, order: &str) -> anyhow::Result<String> {
    const READERS: usize = 200;
    let addr = app
        .admin_addr()
        .ok_or_else(|| anyhow::anyhow!("the admin server is off"))?;
    let url = format!("http://{addr}/orders/{order}");
    let read = || async {
        let resp = story
            .http
            .get(&url)
            .bearer_auth(DEMO_READ_TOKEN)
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "GET {url}: HTTP {}",
            resp.status()
        );
        Ok::<Value, anyhow::Error>(resp.json().await?)
    };
    let loads = || {
        metric_sum(
            &[app.metrics()],
            "sfcdc_cache_loads_total",
            Some(("cache", "order")),
        )
    };
    // Start cold, as after a restart or an eviction.
    let id = sfcdc::sfid::SfId::parse(order)?;
    app.cache()
        .invalidate(&sfcdc::cache::CacheKey::Order(id))
        .await;
    let before = loads();
    let answers = futures_util::future::join_all((0..READERS).map(|_| read())).await;
    for a in &answers {
        if let Err(e) = a {
            anyhow::bail!("cached read failed: {e}");
        }
    }
    let cold = loads() - before;
    story
        .rest(
            reqwest::Method::PATCH,
            &format!("/services/data/v60.0/sobjects/Order/{order}"),
            Some(json!({"PoNumber": "PO-DEMO-2"})),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if read().await?["order"]["PoNumber"] == "PO-DEMO-2" {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the change never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(format!(
        "{READERS} concurrent cold reads of {order} through GET /orders/{{id}}: {cold} Salesforce call{}; \
         changed its PO number: the change event invalidated it and the next read showed it",
        if cold == 1 { "" } else { "s" }
    ))
}

/// Numbers the story's steps as they are told.
#[derive(Default)]
struct Steps(usize);

impl Steps {
    fn say(&mut self, text: &str) {
        self.0 += 1;
        println!("  {:>2}. {text}", self.0);
    }
}

/// Waits until every channel's checkpoint has reached the emulator's last event on it.
async fn caught_up<S: Store>(emu: &Emulator, store: &S, channels: &[String]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    loop {
        let stored: BTreeMap<String, Position> = store
            .checkpoints()
            .await?
            .into_iter()
            .map(|c| (c.channel, c.position))
            .collect();
        let done = channels.iter().all(|ch| {
            let last = emu.with_world(|w| w.bus.last(ch).map(|e| e.replay));
            match (last, stored.get(ch)) {
                (None, _) => true,
                (Some(last), Some(Position::After(r))) => r.position().is_some_and(|p| p >= last),
                _ => false,
            }
        });
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the service did not catch up within 45 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn metric_sum(metrics: &[&Metrics], name: &str, label: Option<(&str, &str)>) -> u64 {
    metrics
        .iter()
        .flat_map(|m| m.render().lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.starts_with('#') && l.split(['{', ' ']).next() == Some(name))
        .filter(|l| label.is_none_or(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn skips(metrics: &[&Metrics]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in metrics {
        for line in m
            .render()
            .lines()
            .filter(|l| l.starts_with("sfcdc_rule_skips_total{"))
        {
            let reason = line
                .split("reason=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_owned();
            let n = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            *out.entry(reason).or_insert(0) += n;
        }
    }
    out
}

/// Follows the job of `order` until it finishes; returns the progress values it showed.
async fn watch_progress(store: Arc<sfcdc::store::AnyStore>, order: String) -> Vec<i32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<i32> = Vec::new();
    while tokio::time::Instant::now() < deadline {
        let filter = sfcdc::store::JobFilter {
            order_id: Some(order.clone()),
            ..Default::default()
        };
        if let Ok(jobs) = store.jobs(&filter).await
            && let Some(job) = jobs.last()
        {
            if let Some(p) = job.progress
                && seen.last() != Some(&p)
            {
                seen.push(p);
            }
            if !job.state.is_open() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    seen
}

/// The change events on `channel` after `after` that name any of `orders`: how many of them
/// each lists (decoded with each event's writer schema).
fn events_naming(
    emu: &Emulator,
    channel: &str,
    after: u64,
    orders: &[String],
) -> anyhow::Result<Vec<usize>> {
    let topic: Arc<str> = Arc::from(channel);
    emu.with_world(|w| {
        let mut named = Vec::new();
        for e in w.bus.read_after(channel, after, usize::MAX, usize::MAX) {
            let schema = w
                .schema(&e.schema_id)
                .ok_or_else(|| anyhow::anyhow!("unknown schema {}", e.schema_id))?;
            let compiled = sfcdc::decode::CompiledSchema::compile(&schema.id, &schema.json)?;
            if let sfcdc::decode::EventBody::Change(c) = compiled.decode(&topic, &e.payload)? {
                let n = c
                    .record_ids
                    .iter()
                    .filter(|id| orders.iter().any(|o| o == id.as_str()))
                    .count();
                if n > 0 {
                    named.push(n);
                }
            }
        }
        Ok(named)
    })
}

/// Waits until the recovery of a lost replay position finished; returns the jobs it created.
async fn recovered<S: Store>(store: &S) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = store
            .recoveries(10)
            .await?
            .into_iter()
            .find(|r| r.reason == "replay_lost" && r.finished_at.is_some());
        if let Some(r) = done {
            return Ok(r.created.unwrap_or(0));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the lost replay position was not recovered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until no job is open; returns how many completed.
async fn all_fulfilled<S: Store>(store: &S) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = store.jobs(&sfcdc::store::JobFilter::default()).await?;
        if jobs.iter().all(|j| !j.state.is_open()) {
            return Ok(jobs
                .iter()
                .filter(|j| j.state == sfcdc::store::JobState::Completed)
                .count());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the worker did not finish the jobs within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` signed webhooks and `n` dispatches have arrived.
async fn notified(emu: &Emulator, n: usize) -> anyhow::Result<(usize, usize)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let webhooks = emu
            .hooks()
            .iter()
            .filter(|h| h.signature_valid == Some(true) && h.answered < 300)
            .count();
        let dispatches = emu.dispatches().iter().filter(|d| d.answered < 300).count();
        if (webhooks >= n && dispatches >= n) || tokio::time::Instant::now() > deadline {
            return Ok((webhooks, dispatches));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The approved orders that read `Activated` with an external id.
async fn activated_orders(
    story: &Story,
    approved: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for id in approved {
        let o = story
            .rest(
                reqwest::Method::GET,
                &format!("/services/data/v60.0/sobjects/Order/{id}"),
                None,
            )
            .await?;
        if o["Activation_Status__c"] == "Activated"
            && let Some(x) = o["WHMCS_Order_ID__c"].as_str()
        {
            out.insert(id.clone(), x.to_owned());
        }
    }
    Ok(out)
}

/// Runs the demo and prints its summary.
pub async fn run(options: DemoArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let dir = match &options.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new()
                .prefix("sfcdc-demo-")
                .tempdir_in(d)?
        }
        None => tempfile::Builder::new().prefix("sfcdc-demo-").tempdir()?,
    };
    let db = dir.path().join("sfcdc.db");
    let emu = Emulator::start(EmulatorConfig {
        keepalive: Duration::from_millis(500),
        fulfilment: sfcdc_emulator::fulfilment::FulfilmentConfig {
            latency_ms: 1200,
            progress_steps: 4,
            ..Default::default()
        },
        ..EmulatorConfig::ephemeral()
    })
    .await?;
    let ca = dir.path().join("emulator-ca.pem");
    std::fs::write(&ca, emu.ca_pem().unwrap_or_default())?;
    let mut env = Env::from_pairs([
        ("SF_AUTH", "client-credentials"),
        ("SF_CLIENT_ID", emu.credentials().client_id.as_str()),
        ("SF_CLIENT_SECRET", emu.credentials().client_secret.as_str()),
        ("SFCDC_REPLAY_PRESET", "earliest"),
        ("SFCDC_RECONNECT_MIN", "100ms"),
        ("SFCDC_RECONNECT_MAX", "1s"),
        ("SFCDC_ADMIN_ADDR", "127.0.0.1:0"),
        ("SFCDC_FULFILMENT_TOKEN", "fulfilment-dev-token"),
        ("SFCDC_POLL_INTERVAL", "100ms"),
        ("SFCDC_POLL_MAX_INTERVAL", "200ms"),
        ("SFCDC_WORKER_IDLE_POLL", "50ms"),
        ("SFCDC_HTTP_TIMEOUT", "2s"),
        ("SFCDC_JOB_LEASE", "8s"),
        ("SFCDC_WEBHOOK_SECRET", "webhook-dev-secret"),
        ("SFCDC_GITHUB_REPO", "acme/provisioning"),
        ("SFCDC_GITHUB_TOKEN", "github-dev-token"),
        ("SFCDC_READ_TOKEN", DEMO_READ_TOKEN),
    ]);
    env.set("SFCDC_FULFILMENT_URL", emu.fulfilment_url());
    env.set("SFCDC_WEBHOOK_URL", emu.webhook_url("provisioning"));
    env.set("SFCDC_GITHUB_API_URL", emu.github_api_url());
    env.set("SF_LOGIN_URL", emu.instance_url());
    env.set("SFCDC_PUBSUB_ENDPOINT", emu.grpc_url());
    env.set("SFCDC_CA_CERT", ca.display().to_string());
    env.set("SFCDC_DATABASE_URL", format!("sqlite://{}", db.display()));
    let settings = Settings::from_env(&env)?;
    let channels = settings.source.channels.clone();

    println!(
        "sfcdc demo: the emulator and the service in one process, on SQLite at {}",
        db.display()
    );
    println!("  channels: {}", channels.join(", "));
    let http = sfcdc::salesforce::http::http_client(Some(&ca)).map_err(|e| anyhow::anyhow!(e))?;
    let story = Story {
        token: emu.issue_token(),
        emu,
        http,
    };

    let mut steps = Steps::default();
    let account = story
        .query_ids("SELECT Id FROM Account LIMIT 1")
        .await?
        .remove(0);
    let new_order = async |name: String| -> anyhow::Result<String> {
        let body = json!({"AccountId": account, "EffectiveDate": "2026-12-01", "Status": "Draft", "Name": name, "BillingCity": "Leeds"});
        let v = story
            .rest(
                reqwest::Method::POST,
                "/services/data/v60.0/sobjects/Order",
                Some(body),
            )
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_owned())
    };

    // Before the first run: the position of an earlier run, then approvals made while it was
    // down, whose events expire (down longer than the retention window).
    let mut lost = Vec::new();
    for i in 1..=2 {
        lost.push(new_order(format!("Approved while down {i}")).await?);
    }
    let earlier = story
        .emu
        .with_world(|w| w.bus.last(&channels[0]).map(|e| e.replay_bytes.clone()));
    if let Some(r) = earlier {
        sfcdc::store::AnyStore::open(&format!("sqlite://{}", db.display()))
            .await?
            .set_checkpoint(
                &channels[0],
                &Position::After(sfcdc::decode::ReplayId(r)),
                sfcdc::clock::now_ms(),
            )
            .await?;
    }
    for id in &lost {
        story.patch(id, json!({"Status": "Approved"})).await?;
    }
    story.fault(json!({"kind": "expire_events"})).await?;

    // First run of the service.
    let app = App::build(settings.clone()).await?;
    let first = app.handle();
    let cancel = CancellationToken::new();
    let run1 = tokio::spawn(app.run_until_stopped(cancel.clone()));

    let drafts = story
        .query_ids("SELECT Id FROM Order WHERE Status = 'Draft' ORDER BY CreatedDate")
        .await?;
    let activated = story
        .query_ids("SELECT Id FROM Order WHERE Status = 'Activated'")
        .await?;
    anyhow::ensure!(
        drafts.len() >= 9 && !activated.is_empty(),
        "the emulator's sample data is missing"
    );
    let recovered = recovered(first.sink().store().as_ref()).await?;
    steps.say(&format!(
        "Started from an earlier run's position whose events had expired, with 2 orders approved \
         meanwhile: the rejected replay id was recovered by reconciling the window from the last \
         commit, {recovered} jobs"
    ));
    let mut approved = Vec::new();

    let mut created = Vec::new();
    for i in 1..=3 {
        created.push(new_order(format!("Demo order {i}")).await?);
    }
    for id in drafts.iter().take(3) {
        story.patch(id, json!({"Status": "Approved"})).await?;
        approved.push(id.clone());
    }
    steps.say("Seeded 3 new orders and approved 3 draft orders: 3 jobs");
    let watcher = tokio::spawn(watch_progress(
        first.sink().store().clone(),
        approved[0].clone(),
    ));
    story
        .patch(&created[0], json!({"Status": "Approved"}))
        .await?;
    story
        .patch(&created[0], json!({"Status": "Approved"}))
        .await?;
    approved.push(created[0].clone());
    steps.say(&format!(
        "Approved order {} twice: the second save changes no status",
        created[0]
    ));
    story.rest(
        reqwest::Method::POST,
        "/services/data/v60.0/sobjects/Order_Fulfilment_Requested__e",
        Some(json!({"OrderId__c": approved[0], "RequestedBy__c": "ops@example.com", "Priority__c": "High"})),
    )
    .await?;
    steps.say(&format!(
        "Published the fulfilment platform event for {}, already approved: no second job",
        approved[0]
    ));
    story
        .patch(
            &drafts[3],
            json!({"Activation_Status__c": "Pending", "WHMCS_Order_ID__c": ""}),
        )
        .await?;
    steps.say(&format!(
        "Changed only internal fields on {}: no job, no cache invalidation",
        drafts[3]
    ));
    story
        .patch(&activated[0], json!({"Status": "Approved"}))
        .await?;
    steps.say(&format!(
        "Approved {}, whose activation status is Activated: skipped by the guard",
        activated[0]
    ));
    story
        .fault(json!({"kind": "disconnect_after", "events": 1}))
        .await?;
    story.fault(json!({"kind": "corrupt_next"})).await?;
    story
        .patch(
            &drafts[4],
            json!({"Description": "this change event arrives corrupt"}),
        )
        .await?;
    story
        .patch(&drafts[5], json!({"Status": "Approved"}))
        .await?;
    approved.push(drafts[5].clone());
    steps.say(
        "Dropped a stream mid-batch and sent a corrupt event: reconnected, the event quarantined",
    );
    caught_up(&story.emu, first.sink().store().as_ref(), &channels).await?;
    let mass = &drafts[6..9];
    let before_mass = story
        .emu
        .with_world(|w| w.bus.last(&channels[0]).map_or(0, |e| e.replay));
    let records: Vec<Value> = mass
        .iter()
        .map(|id| json!({"attributes": {"type": "Order"}, "id": id, "Status": "Approved"}))
        .collect();
    story
        .rest(
            reqwest::Method::PATCH,
            "/services/data/v60.0/composite/sobjects",
            Some(json!({"allOrNone": true, "records": records})),
        )
        .await?;
    approved.extend(mass.iter().cloned());
    let merged = events_naming(&story.emu, &channels[0], before_mass, mass)?;
    steps.say(&format!(
        "Approved 3 draft orders in one sObject Collections update: {} change event{} naming them ({}), a job each",
        merged.len(),
        if merged.len() == 1 { "" } else { "s" },
        merged
            .iter()
            .map(|n| format!("{n} records"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    caught_up(&story.emu, first.sink().store().as_ref(), &channels).await?;

    // A crash: the service stops mid-stream without committing what it holds; the next run
    // resumes from the stored checkpoint.
    story.fault(json!({"kind": "delay", "ms": 50})).await?;
    story
        .patch(&created[1], json!({"Status": "Approved"}))
        .await?;
    approved.push(created[1].clone());
    story
        .patch(&created[2], json!({"Status": "Approved"}))
        .await?;
    approved.push(created[2].clone());
    tokio::time::sleep(Duration::from_millis(120)).await;
    run1.abort();
    let _ = run1.await;
    story.fault(json!({"kind": "delay", "ms": 0})).await?;
    // Replay the stretch before the crash, as a lost tail would be replayed.
    let stored = first.sink().store().checkpoint(&channels[0]).await?;
    let rewind = story.emu.with_world(|w| {
        let events = w.bus.read_after(&channels[0], 0, usize::MAX, usize::MAX);
        events
            .len()
            .checked_sub(6)
            .and_then(|i| events.get(i))
            .map(|e| e.replay_bytes.clone())
    });
    if let (Some(Position::After(_)), Some(r)) = (&stored, rewind) {
        first
            .sink()
            .store()
            .set_checkpoint(
                &channels[0],
                &Position::After(sfcdc::decode::ReplayId(r)),
                sfcdc::clock::now_ms(),
            )
            .await?;
    }
    steps.say("Crashed the service mid-stream and rewound its checkpoint, as a lost tail after a crash would",
    );
    let app = App::build(settings).await?;
    let second = app.handle();
    let cancel2 = CancellationToken::new();
    let run2 = tokio::spawn(app.run_until_stopped(cancel2.clone()));
    story
        .fault(json!({"kind": "gap", "change_type": "GAP_UPDATE", "record_id": approved[1]}))
        .await?;
    steps.say(&format!(
        "Restarted; replayed events are recognised. A GAP_UPDATE for {} re-reads it: no second job",
        approved[1]
    ));
    let store_for_wait =
        sfcdc::store::AnyStore::open(&format!("sqlite://{}", db.display())).await?;
    caught_up(&story.emu, &store_for_wait, &channels).await?;
    let fulfilled = all_fulfilled(&store_for_wait).await?;
    let progress_seen = watcher.await.unwrap_or_default();
    let watched = progress_seen
        .iter()
        .map(|p| format!("{p}%"))
        .collect::<Vec<_>>()
        .join(" → ");
    steps.say(&format!(
            "The worker ran every job: Activating, submitted, polled ({watched}), then Activated and the external id written back"
        ),
    );
    let (webhooks, dispatches) = notified(&story.emu, fulfilled).await?;
    steps.say(&format!(
        "Notified: {webhooks} signed webhooks and {dispatches} repository_dispatch events"
    ));
    // The write-backs are change events too: the service reads them, and they make no job.
    caught_up(&story.emu, &store_for_wait, &channels).await?;
    approved.extend(lost);
    let activated = activated_orders(&story, &approved).await?;
    steps.say(&cached_reads(&story, &second, &approved[0]).await?);
    cancel2.cancel();
    run2.await??;
    cancel.cancel();

    // The summary.
    let store = second.sink().store();
    let counts = store.counts().await?;
    let jobs = store.jobs(&sfcdc::store::JobFilter::default()).await?;
    let metrics = [first.metrics().as_ref(), second.metrics().as_ref()];
    let skips = skips(&metrics);
    let duplicates = skips.get("duplicate_event").copied().unwrap_or(0)
        + skips.get("duplicate_approval").copied().unwrap_or(0);
    let report = DemoReport {
        events_seen: metric_sum(&metrics, "sfcdc_events_received_total", None),
        jobs_created: jobs.len() as i64,
        approved_orders: approved,
        duplicates,
        quarantined: counts.quarantined,
        checkpoints: store
            .checkpoints()
            .await?
            .into_iter()
            .map(|c| {
                let p = match c.position {
                    Position::After(r) => r.to_hex(),
                    Position::Earliest => "earliest".into(),
                    Position::Latest => "latest".into(),
                };
                (c.channel, p)
            })
            .collect(),
        jobs_completed: fulfilled,
        activated,
        webhooks,
        dispatches,
    };
    println!();
    println!("Summary");
    println!("  events seen              {}", report.events_seen);
    println!(
        "  jobs created             {}  (one per approved order: {})",
        report.jobs_created,
        report.approved_orders.len()
    );
    let second = skips.get("duplicate_approval").copied().unwrap_or(0);
    println!(
        "  duplicates suppressed    {}  ({} replayed, {} second signal{} for an approval)",
        report.duplicates,
        skips.get("duplicate_event").copied().unwrap_or(0),
        second,
        if second == 1 { "" } else { "s" }
    );
    println!("  skipped, by reason");
    for (reason, n) in skips.iter().filter(|(r, _)| !r.starts_with("duplicate")) {
        println!("    {reason:<24}{n}");
    }
    println!(
        "  jobs completed           {}  (Activated with an external id: {})",
        report.jobs_completed,
        report.activated.len()
    );
    for (order, external) in &report.activated {
        println!("    {order}  {external}");
    }
    let f = story.emu.fulfilment().stats();
    println!(
        "  fulfilment               {} operations, {} polls, {} batch polls",
        f.operations_created, f.polls, f.batch_polls
    );
    println!(
        "  notifications            {} webhooks, {} dispatches",
        report.webhooks, report.dispatches
    );
    println!("  quarantined events       {}", report.quarantined);
    for q in store.quarantined(true).await? {
        println!("    #{} {} {}: {}", q.id, q.channel, q.replay_id, q.reason);
    }
    println!("  checkpoints");
    for (ch, p) in &report.checkpoints {
        println!("    {ch:<44}{p}");
    }
    if options.keep {
        let kept = dir.keep();
        println!(
            "  database                 {} (kept)",
            kept.join("sfcdc.db").display()
        );
    }
    println!("  finished in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
