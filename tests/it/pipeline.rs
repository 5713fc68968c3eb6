//! `sfcdc run` end to end through the emulator: rules and guards, exactly one job per approval
//! under every kind of repetition, quarantine, two processes on one PostgreSQL, SIGTERM, and a
//! SIGKILL crash loop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use serde_json::json;
use sfcdc::app::Settings;
use sfcdc::decode::Position;
use sfcdc::store::sqlite::SqliteStore;
use sfcdc::store::{JobFilter, Store};

use crate::common::*;

#[tokio::test]
async fn every_signal_for_an_approval_makes_exactly_one_job() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    let r = run_app(&org, tempfile::tempdir().unwrap(), &[]).await;
    // Two approvals; the platform event for the first; a gap event for the second.
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    org.patch_order(&d[1], json!({"Status": "Approved"})).await;
    publish_fulfilment(&org, &d[0]).await;
    org.fault(json!({"kind": "gap", "change_type": "GAP_UPDATE", "record_id": d[1]}))
        .await;
    // A platform event alone is a trigger too.
    publish_fulfilment(&org, &d[2]).await;
    // A CREATE already approved needs no lookup.
    let created = org.create_order(json!({"Status": "Approved"})).await;
    // Reactivate is a new approval of an order: a second, legitimate job.
    org.patch_order(&d[0], json!({"Status": "Reactivate"}))
        .await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS, PE]).await;
    let jobs = jobs_by_order(store.as_ref()).await;
    let expected = BTreeMap::from([
        (d[0].clone(), 2),
        (d[1].clone(), 1),
        (d[2].clone(), 1),
        (created, 1),
    ]);
    assert_eq!(jobs, expected);
    assert_eq!(
        r.metric(
            "sfcdc_rule_skips_total",
            &[("reason", "duplicate_approval")]
        ),
        2.0
    );
    // The platform event is attributed to the status the order has when it is read: either
    // approval, but the two jobs are one per status.
    let statuses: BTreeSet<String> = store
        .jobs(&JobFilter {
            order_id: Some(d[0].clone()),
            ..JobFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.trigger_status)
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["Approved".to_string(), "Reactivate".to_string()])
    );
    r.stop().await;
}

#[tokio::test]
async fn guards_read_what_the_event_does_not_carry() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    // Set the guard fields before the service starts, so no event carries them later.
    org.patch_order(&d[0], json!({"WHMCS_Order_ID__c": "WH-1"}))
        .await;
    org.patch_order(&d[1], json!({"Activation_Status__c": "Activating"}))
        .await;
    org.patch_order(&d[2], json!({"Activation_Status__c": "Deactivated"}))
        .await;
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_REPLAY_PRESET", "latest")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let queries_before = org.emu.stats().calls("GET /services/data/{version}/query");
    for id in &d[..3] {
        org.patch_order(id, json!({"Status": "Approved"})).await;
    }
    // An approval that clears the external id in the same change carries it: no read needed
    // for that field, and the job is created.
    org.patch_order(
        &d[3],
        json!({"WHMCS_Order_ID__c": "WH-4", "Activation_Status__c": "Pending"}),
    )
    .await;
    org.patch_order(
        &d[3],
        json!({"Status": "Approved", "WHMCS_Order_ID__c": null, "Activation_Status__c": null}),
    )
    .await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let jobs = jobs_by_order(store.as_ref()).await;
    assert_eq!(jobs.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![d[2].clone(), d[3].clone()];
        v.sort();
        v
    });
    assert_eq!(
        r.metric(
            "sfcdc_rule_skips_total",
            &[("reason", "external_id_present")]
        ),
        1.0
    );
    assert_eq!(
        r.metric(
            "sfcdc_rule_skips_total",
            &[("reason", "activation_blocking")]
        ),
        1.0
    );
    let queries = org.emu.stats().calls("GET /services/data/{version}/query") - queries_before;
    assert!(
        (1..=3).contains(&queries),
        "guard reads are batched, and only for events that need them: {queries}"
    );
    r.stop().await;
}

#[tokio::test]
async fn replays_after_a_checkpoint_reset_create_nothing() {
    let org = Org::start().await;
    let report = org.emu.bulk(300);
    let r = run_app(&org, tempfile::tempdir().unwrap(), &[]).await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let first = jobs_by_order(store.as_ref()).await;
    assert_eq!(first.len(), report.approved);
    assert!(first.values().all(|n| *n == 1));
    let (_, dir) = r.stop().await;
    store
        .set_checkpoint(ORDERS, &Position::Earliest, 0)
        .await
        .unwrap();
    let r = run_app(&org, dir, &[]).await;
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    assert_eq!(
        jobs_by_order(store.as_ref()).await,
        first,
        "a full replay adds nothing"
    );
    assert_eq!(
        r.metric("sfcdc_rule_skips_total", &[("reason", "duplicate_event")]),
        report.approved as f64
    );
    assert_eq!(r.metric("sfcdc_jobs_created_total", &[]), 0.0);
    r.stop().await;
}

#[tokio::test]
async fn a_gap_overflow_reconciles_recently_modified_orders() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    let r = run_app(&org, tempfile::tempdir().unwrap(), &[]).await;
    // Approve an order without any change event (as if lost in an overflowing transaction).
    let lost = d[0].clone();
    org.emu.with_world(|w| {
        let actor = w.internal_actor();
        let id = sfcdc_emulator::ids::SfId::parse(&lost).unwrap();
        let now = sfcdc::clock::now_ms();
        w.org
            .update(
                "Order",
                &id,
                json!({"Status": "Approved"}).as_object().unwrap(),
                &actor,
                now,
            )
            .unwrap();
    });
    org.fault(json!({"kind": "gap", "change_type": "GAP_OVERFLOW"}))
        .await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    assert_eq!(
        jobs_by_order(store.as_ref()).await,
        BTreeMap::from([(lost, 1)])
    );
    assert_eq!(r.metric("sfcdc_gap_overflows_total", &[]), 1.0);
    r.stop().await;
}

#[tokio::test]
async fn bad_events_are_quarantined_and_can_be_re_driven() {
    let org = Org::start().await;
    let d = drafts(&org).await;
    let r = run_app(&org, tempfile::tempdir().unwrap(), &[]).await;
    org.fault(json!({"kind": "corrupt_next"})).await;
    org.patch_order(&d[0], json!({"Status": "Approved"})).await;
    publish_fulfilment(&org, "not-an-order-id").await;
    org.patch_order(&d[1], json!({"Status": "Approved"})).await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS, PE]).await;
    let q = store.quarantined(true).await.unwrap();
    assert_eq!(
        q.iter().map(|e| e.kind.as_str()).collect::<BTreeSet<_>>(),
        BTreeSet::from(["payload", "rule"])
    );
    assert_eq!(
        jobs_by_order(store.as_ref())
            .await
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        [d[1].clone()],
        "the stream went on"
    );

    // Neither can be fixed by retrying: the entries say so and stay open.
    for e in &q {
        let err = r.app.redrive(e.id).await.unwrap_err().to_string();
        assert!(err.contains("still fails"), "{err}");
    }
    let again = store.quarantined(true).await.unwrap();
    assert!(again.iter().all(|e| e.attempts == 1));

    // The command does the same while the service runs: it serves nothing, so the admin
    // address the service holds is no obstacle.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("sqlite://{}", r.dir.path().join("sfcdc.db").display());
    let mut env = binary_env(&org, r.dir.path(), &url);
    env.retain(|(k, _)| k != "SFCDC_ADMIN_ADDR");
    env.push((
        "SFCDC_ADMIN_ADDR".into(),
        taken.local_addr().unwrap().to_string(),
    ));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args(["quarantine", "retry", &q[0].id.to_string()])
        .env_clear()
        .envs(env)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("still fails"), "{stderr}");
    let entry = store.quarantine_entry(q[0].id).await.unwrap().unwrap();
    assert_eq!(entry.attempts, 2);

    // An entry whose payload is good (say, quarantined by a bug since fixed) is resolved and
    // its job created in one transaction.
    let good = org.emu.with_world(|w| {
        w.bus
            .read_after(ORDERS, 0, usize::MAX, usize::MAX)
            .into_iter()
            .rfind(|e| !e.payload.is_empty() && e.payload.len() > 100)
            .unwrap()
    });
    store
        .commit_batch(&sfcdc::store::StoreBatch {
            channel: ORDERS.into(),
            quarantine: vec![sfcdc::store::NewQuarantine {
                channel: ORDERS.into(),
                replay_id: vec![9, 9, 9, 9, 9, 9, 9, 9],
                schema_id: good.schema_id.clone(),
                event_id: good.event_id.clone(),
                payload: good.payload.to_vec(),
                reason: "a bug".into(),
                kind: "rule".into(),
            }],
            now_ms: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let entry = store
        .quarantined(true)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.reason == "a bug")
        .unwrap();
    let msg = r.app.redrive(entry.id).await.unwrap();
    assert!(msg.contains("resolved"), "{msg}");
    assert_eq!(
        store
            .quarantine_entry(entry.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "resolved"
    );
    assert!(
        r.app
            .redrive(entry.id)
            .await
            .unwrap_err()
            .to_string()
            .contains("already resolved")
    );
    r.stop().await;
}

// ----- the binary -----

#[tokio::test]
async fn sigterm_finishes_the_batch_in_hand_and_exits_zero() {
    let org = Org::start().await;
    let report = org.emu.bulk(2000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sfcdc.db").display());
    let env = binary_env(&org, dir.path(), &url);
    let mut p = spawn_run(&env, &dir.path().join("run.log"));
    let store = SqliteStore::connect(&url).await.unwrap();
    eventually("it to start committing", async || {
        let committing =
            store.migrate().await.is_ok() && store.checkpoint(ORDERS).await.unwrap().is_some();
        committing.then_some(())
    })
    .await;
    signal(p.pid(), "TERM");
    let status = tokio::time::timeout(PATIENCE, p.0.wait())
        .await
        .expect("it stops")
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(dir.path().join("run.log")).unwrap()
    );
    // Resume to the end: every approval has its one job.
    let mut p = spawn_run(&env, &dir.path().join("run.log"));
    caught_up(&org, &store, &[ORDERS]).await;
    signal(p.pid(), "TERM");
    assert_eq!(p.0.wait().await.unwrap().code(), Some(0));
    let jobs = jobs_by_order(&store).await;
    assert_eq!(
        jobs.keys().cloned().collect::<BTreeSet<_>>(),
        report.approved_ids.iter().cloned().collect()
    );
    assert!(jobs.values().all(|n| *n == 1));
}

#[tokio::test]
async fn bad_configuration_fails_at_start_and_names_the_variable() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "SF_AUTH"),
        (
            &[("SF_AUTH", "password"), ("SF_CLIENT_ID", "x")],
            "SF_CLIENT_SECRET",
        ),
        (
            &[
                ("SF_AUTH", "token"),
                ("SF_ACCESS_TOKEN", "t"),
                ("SF_INSTANCE_URL", "https://x"),
                ("SFCDC_DATABASE_URL", "mysql://u:hunter2@h/db"),
            ],
            "SFCDC_DATABASE_URL",
        ),
        (
            &[
                ("SF_AUTH", "token"),
                ("SF_ACCESS_TOKEN", "t"),
                ("SF_INSTANCE_URL", "https://x"),
                ("SFCDC_MAX_ATTEMPTS", "0"),
            ],
            "SFCDC_MAX_ATTEMPTS",
        ),
    ];
    for (env, var) in cases {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
            .arg("run")
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "a configuration error exits 2");
        crate::common::logs::keep("run-bad-config", &out.stderr);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[tokio::test]
async fn two_processes_on_one_postgres_make_one_job_per_approval() {
    let Some(pg) = postgres_url() else {
        return;
    };
    let db = fresh_database(&pg).await;
    let org = Org::start().await;
    let first = org.emu.bulk(1500);
    let dir = tempfile::tempdir().unwrap();
    let env = binary_env(&org, dir.path(), &db);
    let mut a = spawn_run(&env, &dir.path().join("a.log"));
    let mut b = spawn_run(&env, &dir.path().join("b.log"));
    // One holds the channel's lease and the other stands by; half-way, the platform event for
    // some approvals comes too.
    let second = org.emu.bulk(1500);
    for id in first.approved_ids.iter().take(20) {
        publish_fulfilment(&org, id).await;
    }
    let store = sfcdc::store::postgres::PgStore::connect(&db, None)
        .await
        .unwrap();
    caught_up(&org, &store, &[ORDERS]).await;
    signal(a.pid(), "TERM");
    signal(b.pid(), "TERM");
    assert_eq!(
        a.0.wait().await.unwrap().code(),
        Some(0),
        "{}",
        std::fs::read_to_string(dir.path().join("a.log")).unwrap()
    );
    assert_eq!(
        b.0.wait().await.unwrap().code(),
        Some(0),
        "{}",
        std::fs::read_to_string(dir.path().join("b.log")).unwrap()
    );
    let jobs = jobs_by_order(&store).await;
    let expected: BTreeSet<String> = first
        .approved_ids
        .iter()
        .chain(&second.approved_ids)
        .cloned()
        .collect();
    assert_eq!(jobs.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(jobs.values().all(|n| *n == 1), "no approval has two jobs");
}

#[tokio::test]
async fn sigkill_at_random_points_never_loses_or_duplicates_a_job() {
    let org = Org::start().await;
    let mut approved: BTreeSet<String> = org.emu.bulk(3000).approved_ids.into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sfcdc.db").display());
    let mut env = binary_env(&org, dir.path(), &url);
    env.push(("SFCDC_BATCH_SIZE".into(), "50".into()));
    let log = dir.path().join("run.log");
    let seed: u64 = std::env::var("SFCDC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("crash loop seed: {seed} (set SFCDC_CRASH_SEED to repeat)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let store = SqliteStore::connect(&url).await.unwrap();
    for round in 0..20 {
        let mut p = spawn_run(&env, &log);
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        p.0.start_kill().unwrap();
        let status = p.0.wait().await.unwrap();
        assert!(status.code().is_none(), "round {round}: killed by a signal");
        // More events arrive while it is down.
        approved.extend(org.emu.bulk(rng.random_range(50..300)).approved_ids);
    }
    let mut p = spawn_run(&env, &log);
    caught_up(&org, &store, &[ORDERS]).await;
    signal(p.pid(), "TERM");
    assert_eq!(
        p.0.wait().await.unwrap().code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let jobs = jobs_by_order(&store).await;
    let duplicated: Vec<_> = jobs.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = approved
        .iter()
        .filter(|id| !jobs.contains_key(*id))
        .collect();
    let unexpected: Vec<_> = jobs.keys().filter(|id| !approved.contains(*id)).collect();
    assert!(
        duplicated.is_empty() && missing.is_empty() && unexpected.is_empty(),
        "seed {seed}: duplicated {duplicated:?}, missing {missing:?}, unexpected {unexpected:?}"
    );
    assert!(approved.len() > 300);
}

/// What `sfcdc demo` (one of the binary's tools) printed: its numbered story, then its summary.
#[cfg(feature = "tools")]
struct DemoOutput(String);

#[cfg(feature = "tools")]
impl DemoOutput {
    /// The rest of the summary line that starts with `label`, trimmed.
    fn line(&self, label: &str) -> &str {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix("  ")?.strip_prefix(label))
            .unwrap_or_else(|| panic!("no '{label}' line in:\n{}", self.0))
            .trim()
    }

    /// The number that line starts with.
    fn number(&self, label: &str) -> usize {
        let line = self.line(label);
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("'{label}' is followed by no number: {line}"))
    }

    /// The indented lines under the summary line that starts with `label`, trimmed.
    fn section(&self, label: &str) -> Vec<&str> {
        self.0
            .lines()
            .skip_while(|l| !l.strip_prefix("  ").is_some_and(|l| l.starts_with(label)))
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(str::trim)
            .collect()
    }
}

#[cfg(feature = "tools")]
#[tokio::test]
async fn the_demo_tells_its_story_and_every_approval_has_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sfcdc"))
        .args(["demo", "--keep", "--dir"])
        .arg(dir.path())
        .env_clear()
        .output()
        .await
        .unwrap();
    crate::common::logs::keep("demo", &out.stderr);
    let demo = DemoOutput(String::from_utf8_lossy(&out.stdout).into_owned());
    assert!(
        out.status.success(),
        "{}\n{}",
        demo.0,
        String::from_utf8_lossy(&out.stderr)
    );
    // "jobs created N  (one per approved order: M)"
    let approved: usize = demo
        .line("jobs created")
        .rsplit(": ")
        .next()
        .and_then(|m| m.trim_end_matches(')').parse().ok())
        .expect("the number of approved orders");
    // Every approved order that reads Activated with an external id, one a line; the demo
    // lists only approved orders, so as many as were approved means every one of them.
    let activated: BTreeMap<String, String> = demo
        .section("jobs completed")
        .into_iter()
        .map(|l| {
            let (order, external) = l.split_once(char::is_whitespace).unwrap();
            (order.to_owned(), external.trim().to_owned())
        })
        .collect();
    assert_eq!(
        activated.len(),
        approved,
        "every approved order reads Activated with an external id: {}",
        demo.0
    );
    assert!(activated.values().all(|x| !x.is_empty()));
    // One job per approved order, no more: the kept database holds them.
    let database = demo
        .line("database")
        .strip_suffix(" (kept)")
        .expect("the database is kept");
    let store = SqliteStore::connect(&format!("sqlite://{database}"))
        .await
        .unwrap();
    let mut with_jobs: Vec<String> = store
        .jobs(&JobFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.order_id)
        .collect();
    with_jobs.sort();
    assert_eq!(
        with_jobs,
        activated.keys().cloned().collect::<Vec<_>>(),
        "one job per approved order, no more"
    );
    assert_eq!(demo.number("quarantined events"), 1);
    // The platform event and the gap event for approved orders, and the approval of an
    // activated order, are each suppressed: as duplicates, or (once the worker has written
    // Activating) by the guard.
    let blocked = demo
        .section("skipped, by reason")
        .into_iter()
        .find_map(|l| l.strip_prefix("activation_blocking"))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    assert!(
        demo.number("duplicates suppressed") + blocked >= 3,
        "{}",
        demo.0
    );
    assert!(blocked >= 1, "{}", demo.0);
    assert!(
        demo.section("checkpoints")
            .iter()
            .any(|l| l.split_whitespace().next() == Some(ORDERS)),
        "{}",
        demo.0
    );
    // The whole loop: every job fulfilled, written back and announced, and the write-backs'
    // change events made no job (the job list above is still one per approval).
    assert_eq!(demo.number("jobs completed"), approved);
    let notified: Vec<usize> = demo
        .line("notifications")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(
        notified,
        [approved, approved],
        "webhooks and dispatches: {}",
        demo.line("notifications")
    );
    // Step 9 shows the progress the first job went through: "polled (25% → 50% → …)".
    let progress: Vec<i32> = demo
        .0
        .split_once("polled (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(seen, _)| {
            seen.split(" → ")
                .filter_map(|p| p.trim_end_matches('%').parse().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        progress.iter().any(|p| (1..100).contains(p)),
        "progress while pending: {progress:?}"
    );
}

#[test]
fn the_sample_configuration_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sfcdc.env");
    let env = sfcdc::config::Env::layered(std::collections::HashMap::from([(
        "SFCDC_CONFIG".to_string(),
        path.to_string(),
    )]))
    .unwrap();
    let settings = Settings::from_env(&env).expect("the sample validates");
    assert_eq!(settings.database_url, "sqlite://./data/sfcdc.db");
    assert_eq!(settings.source.channels.len(), 3);
}

/// An approval that arrives while the org's daily API request limit is exhausted is not lost:
/// every REST call answers 403 `REQUEST_LIMIT_EXCEEDED`, so the guard lookup fails, the batch is
/// retried from the last commit and nothing is committed; the error says the limit is
/// exhausted. Once the limit is raised, the job appears, once.
#[tokio::test]
async fn an_approval_while_the_api_limit_is_exhausted_waits_for_the_limit_and_makes_its_job() {
    use sfcdc_emulator::faults::Fault;
    const READ_TOKEN: &str = "read-token-for-tests-0123456789";
    let org = Org::start().await;
    let order = org.create_order(json!({})).await;
    let r = run_app(
        &org,
        tempfile::tempdir().unwrap(),
        &[("SFCDC_CHANNELS", ORDERS), ("SFCDC_READ_TOKEN", READ_TOKEN)],
    )
    .await;
    let store = r.app.sink().store().clone();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    let committed = async || {
        store
            .checkpoints()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.channel == ORDERS)
            .map(|c| c.position)
    };
    let before = committed().await;

    org.emu
        .inject(Fault::ApiLimit {
            max: 1,
            used: Some(1),
        })
        .unwrap();
    let id = sfcdc_emulator::ids::SfId::parse(&order).unwrap();
    org.emu.with_world(|w| {
        let actor = w.internal_actor();
        let now = sfcdc::clock::now_ms();
        let set = json!({"Status": "Approved"}).as_object().unwrap().clone();
        w.mutate(now, |o| {
            o.update("Order", &id, &set, &actor, now).map(|c| ((), c))
        })
        .expect("approve");
    });

    // The batch is retried, again and again, and nothing is committed.
    eventually("the batch to be retried", async || {
        (r.metric("sfcdc_reconnects_total", &[("reason", "commit_failed")]) >= 2.0).then_some(())
    })
    .await;
    assert!(jobs_by_order(store.as_ref()).await.is_empty());
    assert_eq!(committed().await, before, "the checkpoint stays put");
    // The service says why, here through its own read of the order.
    let addr = r.app.admin_addr().expect("admin listens");
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/orders/{order}"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    let reason = body["error"].as_str().unwrap();
    assert!(
        reason.contains("REQUEST_LIMIT_EXCEEDED")
            && reason.contains("daily API request limit is exhausted"),
        "{reason}"
    );

    // The limit is raised: the approval's job appears, once.
    org.emu
        .inject(Fault::ApiLimit {
            max: 15_000,
            used: None,
        })
        .unwrap();
    caught_up(&org, store.as_ref(), &[ORDERS]).await;
    assert_eq!(
        jobs_by_order(store.as_ref()).await,
        BTreeMap::from([(order.clone(), 1)])
    );
    r.stop().await;
}
