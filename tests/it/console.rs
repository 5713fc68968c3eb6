//! The admin server as an outsider meets it: which routes answer without a token, what the
//! viewer and the operator may do, the audit trail of operator actions, and the console.

use serde_json::Value;
use sfcdc::store::{JobState, Store};

use crate::common::*;

/// The suite's tokens, which the secret scan (`tests/secrets_in_logs.rs`) looks for.
pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";
pub(crate) const READ_TOKEN: &str = "read-token-for-tests-0123456789";

/// A service with both tokens, on a SQLite file, against a fresh emulator.
pub(crate) async fn service(org: &Org, extra: &[(&str, &str)]) -> Running {
    let mut env = vec![
        ("SFCDC_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SFCDC_READ_TOKEN", READ_TOKEN),
        ("SFCDC_CHANNELS", ORDERS),
    ];
    env.extend_from_slice(extra);
    run_app(org, tempfile::tempdir().unwrap(), &env).await
}

#[tokio::test]
async fn only_the_probes_and_metrics_answer_without_a_token() {
    let org = Org::start().await;
    let r = service(&org, &[]).await;
    live(&**r.app.store(), &[ORDERS]).await;
    use reqwest::Method as M;
    for open in ["/healthz", "/readyz", "/metrics"] {
        let (status, body) = call(&r, M::GET, open, None).await;
        assert!(status == 200 || status == 503, "{open}: {status} {body}");
    }
    let reads = [
        "/jobs",
        "/jobs/1",
        "/deliveries",
        "/deliveries/1",
        "/channels",
        "/quarantine",
        "/quarantine/1",
        "/orders/801000000000001",
        "/accounts/001000000000001/orders",
        "/audit",
        "/openapi.json",
    ];
    let changes = [
        "/jobs/1/retry",
        "/jobs/1/cancel",
        "/deliveries/1/retry",
        "/deliveries/1/cancel",
    ];
    for path in reads {
        let (status, body) = call(&r, M::GET, path, None).await;
        assert_eq!(status, 401, "GET {path} without a token: {body}");
        let (status, body) = call(&r, M::GET, path, Some("not-a-token-not-a-token")).await;
        assert_eq!(status, 401, "GET {path} with a wrong token: {body}");
        for token in [READ_TOKEN, ADMIN_TOKEN] {
            let (status, body) = call(&r, M::GET, path, Some(token)).await;
            assert!(
                status != 401 && status != 403,
                "GET {path} with a token: {status} {body}"
            );
        }
    }
    for path in changes {
        let (status, body) = call(&r, M::POST, path, None).await;
        assert_eq!(status, 401, "POST {path} without a token: {body}");
        let (status, body) = call(&r, M::POST, path, Some(READ_TOKEN)).await;
        assert_eq!(status, 403, "POST {path} as a viewer: {body}");
        let (status, body) = call(&r, M::POST, path, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 404, "POST {path} as the operator: {body}");
    }
    // The contract covers the order reads too, merged from their module.
    let (status, doc) = call(&r, M::GET, "/openapi.json", Some(READ_TOKEN)).await;
    assert_eq!(status, 200);
    for path in ["/jobs", "/orders/{id}", "/accounts/{id}/orders", "/audit"] {
        assert!(doc["paths"].get(path).is_some(), "{path} in {doc}");
    }
    // The channel view and the quarantine read as the CLI shows them.
    let (status, body) = call(&r, M::GET, "/channels", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["channel"], ORDERS);
    assert_eq!(body[0]["role"], "holder");
    let (status, body) = call(&r, M::GET, "/quarantine?state=all", Some(READ_TOKEN)).await;
    assert_eq!((status, body.as_array().map(Vec::len)), (200, Some(0)));
    let (status, body) = call(&r, M::GET, "/quarantine?state=bad", Some(READ_TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    // The console: its pages need a session, and by default the session cookie is Secure.
    // (A bearer token is no session: both land on the login form.)
    for token in [None, Some(ADMIN_TOKEN)] {
        let (status, page) = call(&r, M::GET, "/console/jobs", token).await;
        assert_eq!(status, 200);
        assert!(page.as_str().unwrap().contains("name=\"token\""), "{page}");
    }
    let mut browser = Browser::new(&r);
    let (status, set) = browser.login(READ_TOKEN).await;
    assert_eq!(status, 303);
    assert!(set.contains("; Secure"), "{set}");
    r.stop().await;
}

#[tokio::test]
async fn metrics_need_their_own_token_when_one_is_set() {
    let org = Org::start().await;
    let metrics = "metrics-token-for-tests-0123456789";
    let r = service(&org, &[("SFCDC_METRICS_TOKEN", metrics)]).await;
    use reqwest::Method as M;
    assert_eq!(call(&r, M::GET, "/metrics", None).await.0, 401);
    assert_eq!(call(&r, M::GET, "/metrics", Some(READ_TOKEN)).await.0, 401);
    assert_eq!(call(&r, M::GET, "/metrics", Some(metrics)).await.0, 200);
    assert_eq!(call(&r, M::GET, "/healthz", None).await.0, 200);
    // The metrics token reads nothing else.
    assert_eq!(call(&r, M::GET, "/jobs", Some(metrics)).await.0, 401);
    let _ = r.app.store().backend();
    r.stop().await;
}

/// Plants a dead job for `order` in the running service's store, as a worker would leave it.
pub(crate) async fn plant_dead_job(r: &Running, order: &str, error: &str) -> i64 {
    use sfcdc::store::queue::{JobChange, JobEnd, JobUpdate, Queue};
    use sfcdc::store::{NewJob, NewTrigger, StoreBatch};
    let store = r.app.store();
    let now = sfcdc::clock::now_ms();
    let key = format!("planted:{order}");
    let batch = StoreBatch {
        channel: ORDERS.into(),
        triggers: vec![NewTrigger {
            key: key.clone(),
            order_id: order.into(),
            skipped: None,
        }],
        jobs: vec![NewJob {
            key,
            order_id: order.into(),
            account_id: None,
            trigger_status: "Approved".into(),
            trigger_kind: "status_change".into(),
            channel: ORDERS.into(),
            replay_id: vec![0, 0, 0, 0, 0, 0, 0x12, 0x34],
            event_id: "planted-event".into(),
            payload: "{}".into(),
            max_attempts: 3,
        }],
        now_ms: now,
        ..StoreBatch::default()
    };
    let id = store.commit_batch(&batch).await.unwrap().created[0].0;
    let job = store
        .claim_jobs("planter", 50, now + 1, 60_000)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.id == id)
        .expect("the planted job is claimable");
    let update = JobUpdate {
        id,
        owner: "planter".into(),
        change: JobChange::End {
            end: JobEnd::Dead {
                error: error.into(),
            },
            errors: job.errors_with(error, now + 2),
            deliveries: vec![],
        },
    };
    assert_eq!(store.update_jobs(&[update], now + 2).await.unwrap(), [true]);
    id
}

#[tokio::test]
async fn operator_actions_are_in_the_audit_trail_without_a_token() {
    use reqwest::Method as M;
    use sfcdc::store::audit::Audit;
    let org = Org::start().await;
    let r = service(&org, &[]).await;
    live(&**r.app.store(), &[ORDERS]).await;
    let id = plant_dead_job(&r, "801Hs00000AUDIT1", "HTTP 503").await;
    let retry = format!("/jobs/{id}/retry");
    assert_eq!(call(&r, M::POST, &retry, Some(ADMIN_TOKEN)).await.0, 200);
    let (status, body) = call(&r, M::POST, &retry, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 409, "{body}");
    let cancel = format!("/jobs/{id}/cancel");
    assert_eq!(call(&r, M::POST, &cancel, Some(ADMIN_TOKEN)).await.0, 200);
    let (status, body) = call(&r, M::POST, "/quarantine/99/redrive", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    let addr = r.app.admin_addr().unwrap();
    let reset = reqwest::Client::new()
        .post(format!("http://{addr}/channels/reset"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"channel": ORDERS, "to": "earliest"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    let bad = reqwest::Client::new()
        .post(format!("http://{addr}/channels/reset"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"channel": ORDERS, "to": "yesterday"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let (status, trail) = call(&r, M::GET, "/audit", Some(READ_TOKEN)).await;
    assert_eq!(status, 200, "{trail}");
    let got: Vec<(String, String, String)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_owned(),
                a["target"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let job = format!("job {id}");
    let expected = [
        ("checkpoint.reset", ORDERS, "ok"),
        ("quarantine.redrive", "quarantined event 99", "refused"),
        ("job.cancel", job.as_str(), "ok"),
        ("job.retry", job.as_str(), "refused"),
        ("job.retry", job.as_str(), "ok"),
    ]
    .map(|(a, t, o)| (a.to_owned(), t.to_owned(), o.to_owned()));
    assert_eq!(got, expected);
    for entry in trail.as_array().unwrap() {
        assert_eq!(entry["role"], "operator");
        assert_eq!(entry["via"], "api");
        assert!(!entry.to_string().contains(ADMIN_TOKEN));
    }
    // The command line records its own actions, and `sfcdc audit` shows them all.
    let (_, dir) = r.stop().await;
    let db = format!("sqlite://{}", dir.path().join("sfcdc.db").display());
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
            .args(args)
            .env_clear()
            .env("SFCDC_DATABASE_URL", &db)
            .env("USER", "alice")
            .output()
            .unwrap()
    };
    let out = cli(&["jobs", "retry", &id.to_string()]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&["audit", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let trail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trail.as_array().unwrap().len(), 6);
    assert_eq!(trail[0]["action"], "job.retry");
    assert_eq!(trail[0]["via"], "cli");
    assert_eq!(trail[0]["session"], "alice");
    assert_eq!(trail[0]["outcome"], "ok");
    let out = cli(&["audit"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(table.lines().count(), 7, "{table}");
    let store = sfcdc::store::AnyStore::open(&db).await.unwrap();
    assert_eq!(store.audit_trail(100, None).await.unwrap().len(), 6);
}

/// A console user: a client that keeps its session cookie and follows no redirect.
pub(crate) struct Browser {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl Browser {
    pub(crate) fn new(r: &Running) -> Browser {
        Browser {
            base: format!("http://{}", r.app.admin_addr().unwrap()),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    /// Logs in with `token`: the status and the Set-Cookie header.
    pub(crate) async fn login(&mut self, token: &str) -> (u16, String) {
        let resp = self
            .client
            .post(format!("{}/console/login", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let set = resp
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if let Some(pair) = set.split(';').next().filter(|p| p.contains('=')) {
            self.cookie = Some(pair.to_owned());
        }
        (status, set)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> (u16, String, reqwest::header::HeaderMap) {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.text().await.unwrap(), headers)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let (s, b, _) = self
            .send(self.client.get(format!("{}{path}", self.base)))
            .await;
        (s, b)
    }

    pub(crate) async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let (s, b, h) = self
            .send(self.client.post(format!("{}{path}", self.base)).form(form))
            .await;
        let location = h
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (s, b, location)
    }

    /// The CSRF token of the page at `path`.
    pub(crate) async fn csrf(&self, path: &str) -> String {
        let (_, page) = self.get(path).await;
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &page[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

#[tokio::test]
async fn console_sessions_csrf_roles_and_escaping() {
    let org = Org::start().await;
    let r = service(&org, &[("SFCDC_ADMIN_INSECURE_COOKIES", "true")]).await;
    live(&**r.app.store(), &[ORDERS]).await;
    let hostile = "<script>alert('x')</script> & \"quotes\"";
    let id = plant_dead_job(&r, "801Hs00000CONSOL", hostile).await;

    // Without a session: the login form, and changes are refused.
    let mut anon = Browser::new(&r);
    let (status, _) = anon.get("/console").await;
    assert_eq!(status, 303);
    let (status, page) = anon.get("/console/login").await;
    assert_eq!(status, 200);
    assert!(page.contains("name=\"token\""));
    let (status, _, _) = anon
        .post(&format!("/console/jobs/{id}/retry"), &[("csrf", "x")])
        .await;
    assert_eq!(status, 403);
    let (status, _) = anon.login("wrong-token-wrong-token").await;
    assert_eq!(status, 401);

    // The operator: a session cookie with the right attributes, the overview, the job.
    let mut op = Browser::new(&r);
    let (status, set) = op.login(ADMIN_TOKEN).await;
    assert_eq!(status, 303, "{set}");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "SFCDC_ADMIN_INSECURE_COOKIES leaves it off"
    );
    assert!(!set.contains(ADMIN_TOKEN));
    let (status, page) = op.get("/console").await;
    assert_eq!(status, 200);
    assert!(page.contains(ORDERS) && page.contains("<svg"), "{page}");
    let (status, page) = op.get(&format!("/console/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script>alert"), "escaped");
    assert!(
        page.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;quotes&quot;"),
        "{page}"
    );
    assert!(
        page.contains("id=\"retry\""),
        "the operator sees the button"
    );
    let (status, page) = op.get("/console/jobs?state=dead&error=SCRIPT").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("data-job=\"{id}\"")), "{page}");
    let (status, _) = op.get("/console/jobs?state=deadish").await;
    assert_eq!(status, 400);
    // A form without its CSRF token changes nothing.
    let (status, _, _) = op.post(&format!("/console/jobs/{id}/retry"), &[]).await;
    assert_eq!(status, 403);
    let csrf = op.csrf(&format!("/console/jobs/{id}")).await;
    let (status, _, location) = op
        .post(&format!("/console/jobs/{id}/retry"), &[("csrf", &csrf)])
        .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("/console/jobs/{id}?done=retried").as_str())
    );
    let job = sfcdc::store::queue::Queue::job(&**r.app.store(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, sfcdc::store::JobState::Available);

    // The viewer: no buttons, and a forged POST (with the viewer's own CSRF token) is refused.
    let mut viewer = Browser::new(&r);
    assert_eq!(viewer.login(READ_TOKEN).await.0, 303);
    let (status, page) = viewer.get(&format!("/console/jobs/{id}")).await;
    assert_eq!(status, 200);
    assert!(!page.contains("id=\"cancel\"") && !page.contains("id=\"retry\""));
    let (_, page) = viewer.get("/console/jobs").await;
    assert!(!page.contains("bulk-retry"));
    let csrf = viewer.csrf("/console").await;
    let (status, _, _) = viewer
        .post(&format!("/console/jobs/{id}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 403);
    let job = sfcdc::store::queue::Queue::job(&**r.app.store(), id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, sfcdc::store::JobState::Available, "unchanged");
    let trail = sfcdc::store::audit::Audit::audit_trail(&**r.app.store(), 10, None)
        .await
        .unwrap();
    assert_eq!(trail[0].action, "job.cancel");
    assert_eq!(
        (trail[0].role.as_str(), trail[0].outcome.as_str()),
        ("viewer", "refused")
    );
    assert_eq!(trail[1].action, "job.retry");
    assert_eq!(trail[1].via, "console");
    assert!(trail[1].session.as_deref().is_some_and(|s| s.len() == 12));

    // Logout ends the session.
    let csrf = op.csrf("/console").await;
    let (status, _, _) = op.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    assert_eq!(op.get("/console").await.0, 303, "back to the login form");

    // Failed logins are limited per address.
    let mut guesser = Browser::new(&r);
    for _ in 0..5 {
        assert_eq!(guesser.login("guess-guess-guess-guess").await.0, 401);
    }
    let (status, _) = guesser.login(ADMIN_TOKEN).await;
    assert_eq!(status, 429, "even the right token waits out the window");
    r.stop().await;
}

#[tokio::test]
async fn console_bulk_actions_and_checkpoint_resets_confirm_then_act() {
    use sfcdc::store::audit::Audit;
    use sfcdc::store::queue::Queue;
    let org = Org::start().await;
    let r = service(&org, &[("SFCDC_ADMIN_INSECURE_COOKIES", "true")]).await;
    live(&**r.app.store(), &[ORDERS]).await;
    let store = r.app.store().clone();
    let a = plant_dead_job(&r, "801Hs00000BULK01", "fulfilment said 503").await;
    let b = plant_dead_job(&r, "801Hs00000BULK02", "fulfilment said 503").await;
    let c = plant_dead_job(&r, "801Hs00000BULK03", "bad address").await;
    let mut op = Browser::new(&r);
    assert_eq!(op.login(ADMIN_TOKEN).await.0, 303);

    // Every page answers.
    for page in [
        "/console",
        "/console/jobs",
        "/console/deliveries",
        "/console/deliveries?state=dead",
        "/console/quarantine?state=all",
        "/console/channels",
        "/console/audit",
        "/console/assets/console.css",
        "/console/assets/console.js",
    ] {
        assert_eq!(op.get(page).await.0, 200, "{page}");
    }
    assert_eq!(op.get("/console/jobs/999999").await.0, 404);
    assert_eq!(op.get("/console/deliveries/abc").await.0, 400);
    assert_eq!(op.get("/console/channel?channel=/data/Nope").await.0, 404);

    // A bulk retry states its count first, then retries exactly what matches.
    let (status, page) = op
        .get("/console/jobs/bulk?action=retry&state=dead&error=503")
        .await;
    assert_eq!(status, 200);
    assert!(
        page.contains("Retry 2 jobs matching state=dead error~"),
        "{page}"
    );
    let csrf = op.csrf("/console/jobs").await;
    let (status, page, _) = op
        .post(
            "/console/jobs/bulk",
            &[
                ("csrf", &csrf),
                ("action", "retry"),
                ("state", "dead"),
                ("error", "503"),
                ("order", ""),
            ],
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("2 jobs matched"), "{page}");
    for (id, state) in [
        (a, JobState::Available),
        (b, JobState::Available),
        (c, JobState::Dead),
    ] {
        assert_eq!(store.job(id).await.unwrap().unwrap().state, state);
    }
    let (status, _, _) = op
        .post(
            "/console/jobs/bulk",
            &[("csrf", &csrf), ("action", "explode")],
        )
        .await;
    assert_eq!(status, 400);

    // A checkpoint reset says what it replays, then goes through the fenced reset.
    let (status, page) = op
        .get(&format!(
            "/console/channel/reset?channel={ORDERS}&to=earliest"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("replay every event"), "{page}");
    let (status, page) = op
        .get(&format!(
            "/console/channel/reset?channel={ORDERS}&to=latest"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("sfcdc reconcile --since"), "{page}");
    let (status, _, location) = op
        .post(
            "/console/channel/reset",
            &[("csrf", &csrf), ("channel", ORDERS), ("to", "earliest")],
        )
        .await;
    assert_eq!(status, 303);
    assert!(location.contains("done=reset"), "{location}");
    let trail = store.audit_trail(10, None).await.unwrap();
    assert_eq!(trail[0].action, "checkpoint.reset");
    assert_eq!(trail[0].detail.as_deref(), Some("to earliest"));
    assert_eq!(trail[1].action, "jobs.bulk_retry");
    assert_eq!(
        trail[1].detail.as_deref(),
        Some("2 matched, 2 changed, 0 refused")
    );
    assert_eq!(trail[1].target, "state=dead error~\"503\"");
    // The viewer may not even see the confirmations.
    let mut viewer = Browser::new(&r);
    assert_eq!(viewer.login(READ_TOKEN).await.0, 303);
    assert_eq!(
        viewer
            .get("/console/jobs/bulk?action=cancel&state=dead")
            .await
            .0,
        403
    );
    r.stop().await;
}
