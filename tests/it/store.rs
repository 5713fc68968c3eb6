//! The store conformance suite: every test runs against SQLite (a fresh file) and PostgreSQL (a
//! fresh schema in `SFCDC_TEST_POSTGRES_URL`). Without that variable the PostgreSQL half is
//! skipped, loudly.

use std::future::Future;

use sfcdc::decode::{Position, ReplayId};
use sfcdc::rules::SkipReason;
use sfcdc::store::postgres::PgStore;
use sfcdc::store::sqlite::SqliteStore;
use sfcdc::store::{JobFilter, JobState, NewJob, NewQuarantine, NewTrigger, Store, StoreBatch};

use crate::common::{fresh_schema, postgres_url};

/// A fresh SQLite store in a temporary directory (kept alive by the returned guard).
pub async fn sqlite() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/sfcdc.db").display()
    );
    let store = SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// A fresh PostgreSQL store in its own schema.
pub async fn postgres(url: &str) -> PgStore {
    let schema = fresh_schema(url).await;
    let store = PgStore::connect(url, Some(&schema)).await.unwrap();
    store.migrate().await.unwrap();
    store
}

macro_rules! conformance {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$name(store).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(url) = crate::common::postgres_url() {
                    super::$name(super::postgres(&url).await).await;
                }
            }
        }
    };
}

fn trigger(key: &str, order: &str, skipped: Option<SkipReason>) -> NewTrigger {
    NewTrigger {
        key: key.into(),
        order_id: order.into(),
        skipped,
    }
}

fn job(key: &str, order: &str, status: &str) -> NewJob {
    NewJob {
        key: key.into(),
        order_id: order.into(),
        account_id: Some("001Hs0000000Q0vIAE".into()),
        trigger_status: status.into(),
        trigger_kind: "status_change".into(),
        channel: "/data/OrderChangeEvent".into(),
        replay_id: vec![0, 0, 0, 0, 0, 0, 1, 2],
        event_id: "e1".into(),
        payload: "{}".into(),
        max_attempts: 5,
    }
}

fn batch(replay: u8) -> StoreBatch {
    StoreBatch {
        channel: "/data/OrderChangeEvent".into(),
        checkpoint: Some(ReplayId::new(vec![0, 0, 0, 0, 0, 0, 0, replay, 0, 0])),
        now_ms: 1_700_000_000_000 + i64::from(replay),
        ..StoreBatch::default()
    }
}

async fn migrations_are_idempotent<S: Store>(store: S) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.jobs(&JobFilter::default()).await.unwrap().is_empty());
}
conformance!(migrations_are_idempotent);

async fn checkpoints_keep_exact_bytes_and_presets<S: Store>(store: S) {
    let ch = "/data/OrderChangeEvent";
    assert_eq!(store.checkpoint(ch).await.unwrap(), None);
    store.commit_batch(&batch(7)).await.unwrap();
    let Some(Position::After(r)) = store.checkpoint(ch).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        r.as_bytes(),
        [0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
        "10-byte ids are kept as they are"
    );
    store
        .set_checkpoint(ch, &Position::Earliest, 1)
        .await
        .unwrap();
    assert_eq!(
        store.checkpoint(ch).await.unwrap(),
        Some(Position::Earliest)
    );
    store
        .set_checkpoint("/event/X__e", &Position::Latest, 1)
        .await
        .unwrap();
    let all = store.checkpoints().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].channel, "/data/OrderChangeEvent");
    assert_eq!(all[1].position, Position::Latest);
    // A committed batch replaces a preset with a position.
    store.commit_batch(&batch(9)).await.unwrap();
    assert!(matches!(
        store.checkpoint(ch).await.unwrap(),
        Some(Position::After(_))
    ));
    // A keepalive-only batch moves the checkpoint and nothing else.
    let mut ka = batch(11);
    ka.channel = "/event/X__e".into();
    store.commit_batch(&ka).await.unwrap();
    assert!(matches!(
        store.checkpoint("/event/X__e").await.unwrap(),
        Some(Position::After(_))
    ));
}
conformance!(checkpoints_keep_exact_bytes_and_presets);

async fn replayed_triggers_never_create_a_second_job<S: Store>(store: S) {
    let mut b = batch(1);
    b.triggers = vec![
        trigger("cdc:t1:1:A", "A", None),
        trigger("cdc:t2:1:B", "B", Some(SkipReason::ActivationBlocking)),
    ];
    b.jobs = vec![job("cdc:t1:1:A", "A", "Approved")];
    let first = store.commit_batch(&b).await.unwrap();
    assert_eq!(first.created.len(), 1);
    assert_eq!(first.created[0].1, "cdc:t1:1:A");
    assert!(first.duplicate_events.is_empty());

    // The same batch again (a replay): nothing new.
    let again = store.commit_batch(&b).await.unwrap();
    assert!(again.created.is_empty());
    assert_eq!(again.duplicate_events.len(), 2);

    // A replay of the skipped trigger that now requests a job is still a replay.
    let mut late = batch(2);
    late.triggers = vec![trigger("cdc:t2:1:B", "B", None)];
    late.jobs = vec![job("cdc:t2:1:B", "B", "Approved")];
    let out = store.commit_batch(&late).await.unwrap();
    assert!(out.created.is_empty());
    assert_eq!(out.duplicate_events, ["cdc:t2:1:B"]);
    assert_eq!(store.jobs(&JobFilter::default()).await.unwrap().len(), 1);
}
conformance!(replayed_triggers_never_create_a_second_job);

/// Batches of every size write exactly their own rows, whatever the size of the batch before:
/// a large one (several statements), then smaller ones, then one of a single approval.
async fn batches_of_any_size_write_exactly_their_rows<S: Store>(store: S) {
    let mut total_jobs = 0;
    let mut total_triggers = 0;
    for (round, size) in [600usize, 37, 5, 300, 1].into_iter().enumerate() {
        let mut b = batch(round as u8 + 1);
        for i in 0..size {
            let order = format!("801{round:02}{i:013}");
            let key = format!("cdc:r{round}:{i}:{order}");
            // Every third trigger is skipped, the others make a job each.
            if i % 3 == 2 {
                b.triggers
                    .push(trigger(&key, &order, Some(SkipReason::StatusNotTrigger)));
            } else {
                b.triggers.push(trigger(&key, &order, None));
                let mut j = job(&key, &order, "Approved");
                j.payload = format!("{{\"n\":{i}}}");
                b.jobs.push(j);
            }
        }
        let out = store.commit_batch(&b).await.unwrap();
        let mut created: Vec<String> = out.created.iter().map(|(_, key)| key.clone()).collect();
        let mut expected: Vec<String> = b.jobs.iter().map(|j| j.key.clone()).collect();
        created.sort();
        expected.sort();
        assert_eq!(created, expected, "round {round}: {size} triggers");
        assert!(out.duplicate_events.is_empty());
        total_jobs += b.jobs.len();
        total_triggers += size;
        let jobs = store.jobs(&JobFilter::default()).await.unwrap();
        assert_eq!(jobs.len(), total_jobs);
        let counts = store.counts().await.unwrap();
        let triggers: i64 = counts.triggers.iter().map(|(_, n)| n).sum();
        assert_eq!(triggers as usize, total_triggers);
    }
    // Each job kept its own row's values.
    let jobs = store.jobs(&JobFilter::default()).await.unwrap();
    assert!(jobs.iter().all(|j| j.key.ends_with(&j.order_id)
        && j.max_attempts == 5
        && j.run_at == 1_700_000_000_000 + i64::from(j.key.as_bytes()[5] - b'0') + 1
        && j.channel == "/data/OrderChangeEvent"
        && j.account_id.as_deref() == Some("001Hs0000000Q0vIAE")));
    // Ids follow the rows' order within a batch.
    let mut by_id: Vec<_> = jobs
        .iter()
        .filter(|j| j.key.starts_with("cdc:r0:"))
        .collect();
    by_id.sort_by_key(|j| j.id);
    let order: Vec<usize> = by_id
        .iter()
        .map(|j| j.key.split(':').nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
}
conformance!(batches_of_any_size_write_exactly_their_rows);

async fn recorded_triggers_and_open_approvals_can_be_looked_up<S: Store>(store: S) {
    let mut b = batch(1);
    b.triggers = vec![
        trigger("cdc:t1:1:A", "A", None),
        trigger("cdc:t2:1:B", "B", Some(SkipReason::ActivationBlocking)),
    ];
    b.jobs = vec![job("cdc:t1:1:A", "A", "Approved")];
    store.commit_batch(&b).await.unwrap();
    let keys = ["cdc:t1:1:A", "cdc:t2:1:B", "cdc:t9:1:C"].map(String::from);
    assert_eq!(
        store.known_triggers(&keys).await.unwrap(),
        ["cdc:t1:1:A", "cdc:t2:1:B"].map(String::from).into()
    );
    assert!(store.known_triggers(&[]).await.unwrap().is_empty());
    let orders = ["A", "B"].map(String::from);
    assert_eq!(
        store.open_approvals(&orders).await.unwrap(),
        [("A".to_owned(), "Approved".to_owned())].into()
    );
}
conformance!(recorded_triggers_and_open_approvals_can_be_looked_up);

async fn the_recovery_log_keeps_requests_until_finished_and_the_last_commit<S: Store>(store: S) {
    use sfcdc::store::recovery::NewRecovery;
    assert_eq!(
        store.last_commit("/data/OrderChangeEvent").await.unwrap(),
        None
    );
    // A batch keeps the commit time of its last event, and asks for a scan with its commit.
    let mut b = batch(1);
    b.last_event_ms = Some(1_700_000_000_000);
    let overflow = NewRecovery {
        reason: "gap_overflow".into(),
        channel: Some("/data/OrderChangeEvent".into()),
        since_ms: Some(1_699_999_700_000),
        once_key: Some("gap_overflow:/data/OrderChangeEvent:0a".into()),
        requested_ms: 5,
    };
    b.recoveries = vec![overflow.clone()];
    store.commit_batch(&b).await.unwrap();
    assert_eq!(
        store.last_commit("/data/OrderChangeEvent").await.unwrap(),
        Some(1_700_000_000_000)
    );
    // A keepalive (no events) keeps it; a replayed overflow asks for nothing new.
    let mut k = batch(2);
    k.recoveries = vec![overflow.clone()];
    store.commit_batch(&k).await.unwrap();
    assert_eq!(
        store.last_commit("/data/OrderChangeEvent").await.unwrap(),
        Some(1_700_000_000_000)
    );
    let lost = NewRecovery {
        reason: "replay_lost".into(),
        once_key: None,
        since_ms: None,
        requested_ms: 9,
        ..overflow.clone()
    };
    assert!(store.request_recovery(&lost).await.unwrap());
    assert!(
        store.request_recovery(&lost).await.unwrap(),
        "no key: every request counts"
    );
    assert!(!store.request_recovery(&overflow).await.unwrap());
    let pending = store.pending_recoveries().await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|r| r.reason.as_str())
            .collect::<Vec<_>>(),
        ["gap_overflow", "replay_lost", "replay_lost"]
    );
    assert_eq!(pending[0].since_ms, Some(1_699_999_700_000));
    assert_eq!(pending[1].since_ms, None);
    store
        .fail_recovery(pending[0].id, "REST down")
        .await
        .unwrap();
    store
        .finish_recovery(pending[1].id, 20, 100, 3)
        .await
        .unwrap();
    // A second finish (another instance that ran it too) does not overwrite the first.
    store
        .finish_recovery(pending[1].id, 30, 100, 0)
        .await
        .unwrap();
    let pending = store.pending_recoveries().await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].last_error.as_deref(), Some("REST down"));
    let history = store.recoveries(10).await.unwrap();
    assert_eq!(history.len(), 3);
    let finished = history.iter().find(|r| r.finished_at.is_some()).unwrap();
    assert_eq!((finished.scanned, finished.created), (Some(100), Some(3)));
    assert_eq!(store.last_requested("replay_lost").await.unwrap(), Some(9));
    assert_eq!(store.last_requested("periodic").await.unwrap(), None);
}
conformance!(the_recovery_log_keeps_requests_until_finished_and_the_last_commit);

async fn one_open_job_per_approval_but_new_statuses_get_their_own<S: Store>(store: S) {
    let mut b = batch(1);
    // The CDC signal and the platform event for the same approval, in one batch.
    b.triggers = vec![
        trigger("cdc:t1:1:A", "A", None),
        trigger("pe:e9:A", "A", None),
    ];
    b.jobs = vec![
        job("cdc:t1:1:A", "A", "Approved"),
        job("pe:e9:A", "A", "Approved"),
    ];
    let out = store.commit_batch(&b).await.unwrap();
    assert_eq!(out.created.len(), 1);
    assert_eq!(out.duplicate_approvals, ["pe:e9:A"]);
    // A gap re-read later, in another batch: still the same approval.
    let mut g = batch(2);
    g.triggers = vec![trigger("gap:t3:1:A", "A", None)];
    g.jobs = vec![job("gap:t3:1:A", "A", "Approved")];
    assert_eq!(
        store.commit_batch(&g).await.unwrap().duplicate_approvals,
        ["gap:t3:1:A"]
    );
    // Reactivate is a new approval: a new job, queued behind the first.
    let mut r = batch(3);
    r.triggers = vec![trigger("cdc:t4:1:A", "A", None)];
    r.jobs = vec![job("cdc:t4:1:A", "A", "Reactivate")];
    assert_eq!(store.commit_batch(&r).await.unwrap().created.len(), 1);
    let jobs = store
        .jobs(&JobFilter {
            order_id: Some("A".into()),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].trigger_status, "Reactivate", "newest first");
    assert!(jobs[0].id > jobs[1].id);
    assert_eq!(jobs[1].state, JobState::Available);
    assert_eq!(jobs[1].replay_id, "0000000000000102");
    assert_eq!(jobs[1].max_attempts, 5);
    let available = store
        .jobs(&JobFilter {
            state: Some(JobState::Available),
            limit: Some(1),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(available.len(), 1);
    assert!(
        store
            .jobs(&JobFilter {
                state: Some(JobState::Dead),
                ..JobFilter::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.jobs, [("available".to_string(), 2)]);
    assert!(counts.triggers.contains(&("job".to_string(), 4)));
}
conformance!(one_open_job_per_approval_but_new_statuses_get_their_own);

async fn quarantine_keeps_bad_events_once_and_can_resolve_them<S: Store>(store: S) {
    let bad = NewQuarantine {
        channel: "/data/OrderChangeEvent".into(),
        replay_id: vec![0, 0, 0, 0, 0, 0, 0, 5],
        schema_id: "abc".into(),
        event_id: "ev".into(),
        payload: vec![0xFE, 0x01, 0x00],
        reason: "payload does not decode".into(),
        kind: "payload".into(),
    };
    let mut b = batch(5);
    b.quarantine = vec![bad.clone()];
    assert_eq!(store.commit_batch(&b).await.unwrap().quarantined, 1);
    assert_eq!(
        store.commit_batch(&b).await.unwrap().quarantined,
        0,
        "a replayed bad event is kept once"
    );
    let rows = store.quarantined(true).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.payload, bad.payload);
    assert_eq!(row.replay_id, "0000000000000005");
    assert_eq!(row.state, "open");
    store
        .quarantine_retry_failed(row.id, "still broken", 2)
        .await
        .unwrap();
    let again = store.quarantine_entry(row.id).await.unwrap().unwrap();
    assert_eq!((again.attempts, again.reason.as_str()), (1, "still broken"));
    let mut fix = StoreBatch {
        channel: row.channel.clone(),
        resolve_quarantine: vec![row.id],
        now_ms: 3,
        ..StoreBatch::default()
    };
    fix.triggers = vec![trigger("pe:ev:A", "A", None)];
    fix.jobs = vec![job("pe:ev:A", "A", "Approved")];
    assert_eq!(store.commit_batch(&fix).await.unwrap().created.len(), 1);
    assert!(store.quarantined(true).await.unwrap().is_empty());
    assert_eq!(store.quarantined(false).await.unwrap()[0].state, "resolved");
    assert_eq!(store.quarantine_entry(999).await.unwrap(), None);
    assert_eq!(store.counts().await.unwrap().quarantined, 0);
}
conformance!(quarantine_keeps_bad_events_once_and_can_resolve_them);

/// Two stores on one database (two processes, in effect) racing on the same approval.
async fn concurrent_writers_make_one_job<S: Store, F: Future<Output = S>>(a: S, second: F) {
    let b = second.await;
    let mut tasks = Vec::new();
    for (i, store) in [std::sync::Arc::new(a), std::sync::Arc::new(b)]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut created = 0;
            for n in 0..20u8 {
                let mut batch = batch(n);
                // Instance i sees the CDC event, the other the platform event, for each order.
                let key = if i == 0 {
                    format!("cdc:t{n}:1:O{n}")
                } else {
                    format!("pe:e{n}:O{n}")
                };
                batch.triggers = vec![trigger(&key, &format!("O{n}"), None)];
                batch.jobs = vec![job(&key, &format!("O{n}"), "Approved")];
                created += store.commit_batch(&batch).await.unwrap().created.len();
            }
            created
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 20, "one job per order across both writers");
}

#[tokio::test]
async fn concurrent_writers_sqlite() {
    let (a, dir) = sqlite().await;
    let url = format!(
        "sqlite://{}",
        dir.path().join("nested/dir/sfcdc.db").display()
    );
    concurrent_writers_make_one_job(a, async move { SqliteStore::connect(&url).await.unwrap() })
        .await;
}

#[tokio::test]
async fn concurrent_writers_postgres() {
    let Some(url) = postgres_url() else { return };
    let schema = fresh_schema(&url).await;
    let a = PgStore::connect(&url, Some(&schema)).await.unwrap();
    a.migrate().await.unwrap();
    concurrent_writers_make_one_job(a, async move {
        let b = PgStore::connect(&url, Some(&schema)).await.unwrap();
        b.migrate().await.unwrap();
        b
    })
    .await;
}

#[tokio::test]
async fn bad_urls_are_refused_with_the_variable_name_and_no_password() {
    let err = sfcdc::store::AnyStore::open("mysql://root:hunter2@db/x")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("SFCDC_DATABASE_URL") && !err.contains("hunter2"),
        "{err}"
    );
    let err = sfcdc::store::AnyStore::open("sqlite://:memory:")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("file"), "{err}");
}

async fn the_audit_trail_keeps_every_action_newest_first<S: Store>(store: S) {
    use sfcdc::store::audit::NewAudit;
    assert!(store.audit_trail(10, None).await.unwrap().is_empty());
    let entry = |i: i64, outcome: &str| NewAudit {
        at_ms: 1_700_000_000_000 + i,
        role: "operator".into(),
        session: (i % 2 == 0).then(|| format!("s{i}")),
        via: "console".into(),
        action: "job.retry".into(),
        target: format!("job {i}"),
        outcome: outcome.into(),
        detail: (outcome != "ok").then(|| "the job is completed: <b>no</b>".into()),
    };
    let mut ids = Vec::new();
    for i in 1..=5 {
        let outcome = if i == 3 { "refused" } else { "ok" };
        ids.push(store.record_audit(&entry(i, outcome)).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let all = store.audit_trail(10, None).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0].target, "job 5");
    assert_eq!(all[4].target, "job 1");
    let refused = all.iter().find(|a| a.outcome == "refused").unwrap();
    assert_eq!(refused.target, "job 3");
    assert_eq!(
        refused.detail.as_deref(),
        Some("the job is completed: <b>no</b>"),
        "kept as given"
    );
    assert_eq!(all[1].session.as_deref(), Some("s4"));
    assert_eq!(all[0].session, None);
    assert_eq!(all[0].at, 1_700_000_000_005);
    // Paging: older than an id, at most a limit.
    let page = store.audit_trail(2, Some(all[1].id)).await.unwrap();
    let targets: Vec<&str> = page.iter().map(|a| a.target.as_str()).collect();
    assert_eq!(targets, ["job 3", "job 2"]);
}
conformance!(the_audit_trail_keeps_every_action_newest_first);

async fn the_console_finds_jobs_by_error_text_a_page_at_a_time<
    S: Store + sfcdc::store::queue::Queue,
>(
    store: S,
) {
    use sfcdc::store::insight::JobQuery;
    use sfcdc::store::queue::{JobChange, JobEnd, JobUpdate};
    const T0: i64 = 1_700_000_000_000;
    let mut b = batch(1);
    b.now_ms = T0;
    for i in 0..5 {
        let (key, order) = (format!("k{i}"), format!("801Hs00000000{i}"));
        b.triggers.push(trigger(&key, &order, None));
        b.jobs.push(job(&key, &order, "Approved"));
    }
    b.triggers.push(trigger(
        "skipped",
        "801Hs00000000X",
        Some(SkipReason::StatusUnchanged),
    ));
    store.commit_batch(&b).await.unwrap();
    // Three jobs die, with different errors; one of them at a later minute.
    let claimed = store.claim_jobs("w", 5, T0, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let errors = [
        "HTTP 503: 50% of <script>",
        "timeout after 30s",
        "HTTP 503 again",
    ];
    for (j, error) in claimed.iter().zip(errors) {
        let now = if error == "timeout after 30s" {
            T0 + 120_000
        } else {
            T0 + 1
        };
        let update = JobUpdate {
            id: j.id,
            owner: "w".into(),
            change: JobChange::End {
                end: JobEnd::Dead {
                    error: error.into(),
                },
                errors: j.errors_with(error, now),
                deliveries: vec![],
            },
        };
        assert_eq!(store.update_jobs(&[update], now).await.unwrap(), [true]);
    }
    let dead = JobQuery {
        state: Some(JobState::Dead),
        ..JobQuery::default()
    };
    let (page, total) = store.job_page(&dead, 2, 0).await.unwrap();
    assert_eq!((page.len(), total), (2, 3));
    let (rest, _) = store.job_page(&dead, 2, 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert!(
        page[0].id > page[1].id && page[1].id > rest[0].id,
        "newest first"
    );
    // Error text: any case, a substring, and `%` or `_` match only themselves.
    let by_error = |e: &str| JobQuery {
        error: Some(e.into()),
        ..JobQuery::default()
    };
    assert_eq!(
        store
            .job_page(&by_error("http 503"), 10, 0)
            .await
            .unwrap()
            .1,
        2
    );
    assert_eq!(store.job_page(&by_error("50%"), 10, 0).await.unwrap().1, 1);
    assert_eq!(store.job_page(&by_error("5_3"), 10, 0).await.unwrap().1, 0);
    assert_eq!(
        store
            .job_page(&by_error("<SCRIPT>"), 10, 0)
            .await
            .unwrap()
            .1,
        1
    );
    let one_order = JobQuery {
        order_id: Some("801Hs000000004".into()),
        ..JobQuery::default()
    };
    assert_eq!(store.job_page(&one_order, 10, 0).await.unwrap().1, 1);
    assert_eq!(store.job_ids(&dead, 10).await.unwrap().len(), 3);
    assert_eq!(store.job_ids(&dead, 2).await.unwrap().len(), 2);
    assert_eq!(
        store
            .job_ids(&JobQuery::default(), 100)
            .await
            .unwrap()
            .len(),
        5
    );
    // Throughput: six events in the first minute; two jobs finished then, one two minutes on.
    let minutes = store.throughput(T0 - 60_000).await.unwrap();
    let at = |m: i64| {
        minutes
            .iter()
            .find(|x| x.at_ms == (T0 + m * 60_000) / 60_000 * 60_000)
    };
    assert_eq!(at(0).map(|m| (m.events, m.finished)), Some((6, 2)));
    assert_eq!(at(2).map(|m| (m.events, m.finished)), Some((0, 1)));
    assert!(store.throughput(T0 + 600_000).await.unwrap().is_empty());
    assert_eq!(
        store.channel_events(T0 - 1).await.unwrap(),
        [("/data/OrderChangeEvent".to_owned(), 6)]
    );
}
conformance!(the_console_finds_jobs_by_error_text_a_page_at_a_time);
