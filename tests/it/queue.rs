//! The queue conformance suite: claims, leases, the per-order gate, step updates, the outbox and
//! the operator actions, on SQLite and PostgreSQL alike. Times are explicit epoch-ms values, never
//! the wall clock.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sfcdc::store::queue::{
    ActionError, Claim, DeliveryEnd, DeliveryFilter, DeliveryState, DeliveryUpdate, JobChange,
    JobEnd, JobUpdate, NewDelivery, PollUpdate, Queue,
};
use sfcdc::store::{JobRow, JobState, NewJob, NewTrigger, Store, StoreBatch};

use super::store::{postgres, sqlite};

/// The time jobs are created at.
const T0: i64 = 1_700_000_000_000;
const LEASE: i64 = 60_000;

/// Creates jobs `(key, order, status)` at `T0`; returns their ids in order.
async fn create<S: Store>(store: &S, jobs: &[(&str, &str, &str)]) -> Vec<i64> {
    let batch = StoreBatch {
        channel: "/data/OrderChangeEvent".into(),
        triggers: jobs
            .iter()
            .map(|(k, o, _)| NewTrigger {
                key: (*k).into(),
                order_id: (*o).into(),
                skipped: None,
            })
            .collect(),
        jobs: jobs
            .iter()
            .map(|(k, o, s)| NewJob {
                key: (*k).into(),
                order_id: (*o).into(),
                account_id: None,
                trigger_status: (*s).into(),
                trigger_kind: "status_change".into(),
                channel: "/data/OrderChangeEvent".into(),
                replay_id: vec![1, 2, 3],
                event_id: "e".into(),
                payload: "{}".into(),
                max_attempts: 3,
            })
            .collect(),
        now_ms: T0,
        ..StoreBatch::default()
    };
    let out = store.commit_batch(&batch).await.unwrap();
    assert_eq!(out.created.len(), jobs.len());
    out.created.iter().map(|(id, _)| *id).collect()
}

fn update(job: &JobRow, owner: &str, change: JobChange) -> JobUpdate {
    JobUpdate {
        id: job.id,
        owner: owner.into(),
        change,
    }
}

fn end(job: &JobRow, owner: &str, end: JobEnd, deliveries: Vec<NewDelivery>) -> JobUpdate {
    let errors = match &end {
        JobEnd::Dead { error } | JobEnd::Retry { error, .. } => job.errors_with(error, T0),
        JobEnd::Cancelled { reason } => job.errors_with(reason, T0),
        JobEnd::Completed { .. } => job.errors.clone(),
    };
    update(
        job,
        owner,
        JobChange::End {
            end,
            errors,
            deliveries,
        },
    )
}

fn completed() -> JobEnd {
    JobEnd::Completed {
        result: r#"{"external_id":"WH-1"}"#.into(),
        external_id: Some("WH-1".into()),
    }
}

fn ids(jobs: &[JobRow]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

async fn jobs_of_one_order_run_one_at_a_time_in_creation_order<S: Store + Queue>(store: S) {
    let id = create(
        &store,
        &[
            ("k1", "ORDER_A", "Approved"),
            ("k2", "ORDER_B", "Approved"),
            ("k3", "ORDER_A", "Reactivate"),
        ],
    )
    .await;
    let claimed = store.claim_jobs("w1", 10, T0, LEASE).await.unwrap();
    assert_eq!(
        ids(&claimed),
        [id[0], id[1]],
        "the second job of ORDER_A waits"
    );
    let a = &claimed[0];
    assert_eq!((a.state, a.attempt), (JobState::Running, 1));
    assert_eq!(a.lease_owner.as_deref(), Some("w1"));
    assert_eq!(a.lease_until, Some(T0 + LEASE));
    assert!(
        store
            .claim_jobs("w2", 10, T0, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased jobs are not claimed twice"
    );

    let held = store
        .update_jobs(&[end(a, "w1", completed(), vec![])], T0 + 1)
        .await
        .unwrap();
    assert_eq!(held, [true]);
    let next = store.claim_jobs("w2", 10, T0 + 1, LEASE).await.unwrap();
    assert_eq!(
        ids(&next),
        [id[2]],
        "ORDER_A's next job runs once the first is done"
    );
    let done = store.job(id[0]).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.external_id.as_deref(), Some("WH-1"));
    assert_eq!(done.progress, Some(100));
    assert_eq!(done.finished_at, Some(T0 + 1));
    assert!(done.lease_owner.is_none());
}
conformance!(jobs_of_one_order_run_one_at_a_time_in_creation_order);

async fn an_expired_lease_passes_the_job_on_and_fences_the_old_worker<S: Store + Queue>(store: S) {
    create(&store, &[("k1", "ORDER_A", "Approved")]).await;
    let first = store.claim_jobs("w1", 1, T0, 1_000).await.unwrap();
    let job = &first[0];
    assert!(
        store
            .update_jobs(
                &[update(job, "w1", JobChange::Phase("activating"))],
                T0 + 10
            )
            .await
            .unwrap()[0]
    );
    // w1 dies; after its lease expires w2 takes over the same attempt, phase intact.
    let second = store.claim_jobs("w2", 1, T0 + 1_001, LEASE).await.unwrap();
    assert_eq!(ids(&second), [job.id]);
    assert_eq!(second[0].attempt, 1, "a resumed step is the same attempt");
    assert_eq!(second[0].phase.as_deref(), Some("activating"));
    // w1 wakes up: every write it tries is refused.
    let stale = store
        .update_jobs(
            &[
                update(job, "w1", JobChange::Phase("activating")),
                end(job, "w1", completed(), vec![]),
            ],
            T0 + 1_002,
        )
        .await
        .unwrap();
    assert_eq!(stale, [false, false]);
    assert_eq!(
        store.job(job.id).await.unwrap().unwrap().state,
        JobState::Running
    );
}
conformance!(an_expired_lease_passes_the_job_on_and_fences_the_old_worker);

async fn polling_releases_the_job_until_the_next_poll<S: Store + Queue>(store: S) {
    create(&store, &[("k1", "ORDER_A", "Approved")]).await;
    let job = store
        .claim_jobs("w1", 1, T0, LEASE)
        .await
        .unwrap()
        .remove(0);
    let poll = |at: i64, progress: Option<i32>| {
        JobChange::Poll(PollUpdate {
            operation_id: "op_1".into(),
            progress,
            run_at: at,
            error: None,
        })
    };
    assert!(
        store
            .update_jobs(&[update(&job, "w1", poll(T0 + 500, Some(0)))], T0 + 1)
            .await
            .unwrap()[0]
    );
    let polling = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(polling.state, JobState::Polling);
    assert_eq!(polling.operation_id.as_deref(), Some("op_1"));
    assert_eq!(polling.phase.as_deref(), Some("submitted"));
    assert_eq!((polling.submitted_at, polling.polls), (Some(T0 + 1), 1));
    assert!(polling.lease_owner.is_none(), "polling frees the worker");
    assert!(
        store
            .claim_jobs("w2", 1, T0 + 499, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "not due before its next poll"
    );
    let again = store
        .claim_jobs("w2", 1, T0 + 500, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!((again.state, again.attempt), (JobState::Polling, 1));
    store
        .update_jobs(
            &[update(&again, "w2", poll(T0 + 2_000, Some(50)))],
            T0 + 600,
        )
        .await
        .unwrap();
    let j = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(
        (j.progress, j.polls, j.submitted_at),
        (Some(50), 2, Some(T0 + 1))
    );
}
conformance!(polling_releases_the_job_until_the_next_poll);

async fn a_retry_with_a_new_operation_changes_the_idempotency_key<S: Store + Queue>(store: S) {
    create(&store, &[("k1", "ORDER_A", "Approved")]).await;
    let job = store
        .claim_jobs("w1", 1, T0, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.operation_key(), "k1");
    store
        .update_jobs(
            &[update(
                &job,
                "w1",
                JobChange::Poll(PollUpdate {
                    operation_id: "op_1".into(),
                    progress: None,
                    run_at: T0,
                    error: None,
                }),
            )],
            T0,
        )
        .await
        .unwrap();
    let job = store
        .claim_jobs("w1", 1, T0, LEASE)
        .await
        .unwrap()
        .remove(0);
    let retry = JobEnd::Retry {
        run_at: T0 + 100,
        error: "operation timed out".into(),
        new_operation: true,
    };
    store
        .update_jobs(&[end(&job, "w1", retry, vec![])], T0 + 1)
        .await
        .unwrap();
    let j = store.job(job.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Retryable);
    assert_eq!(
        (j.operation_id.as_deref(), j.polls, j.generation),
        (None, 0, 1)
    );
    assert_eq!(
        j.phase.as_deref(),
        Some("activating"),
        "Salesforce still says Activating"
    );
    assert_eq!(j.operation_key(), "k1/1");
    assert_eq!(j.last_error.as_deref(), Some("operation timed out"));
    let history: serde_json::Value = serde_json::from_str(&j.errors).unwrap();
    assert_eq!(history[0]["attempt"], 1);

    // A transient submit failure keeps the key: the same request is retried.
    let job = store
        .claim_jobs("w1", 1, T0 + 100, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.attempt, 2);
    let retry = JobEnd::Retry {
        run_at: T0 + 200,
        error: "503".into(),
        new_operation: false,
    };
    store
        .update_jobs(&[end(&job, "w1", retry, vec![])], T0 + 101)
        .await
        .unwrap();
    assert_eq!(
        store.job(job.id).await.unwrap().unwrap().operation_key(),
        "k1/1"
    );
}
conformance!(a_retry_with_a_new_operation_changes_the_idempotency_key);

fn deliveries() -> Vec<NewDelivery> {
    ["webhook", "github"]
        .into_iter()
        .map(|n| NewDelivery {
            notifier: n.into(),
            event: "completed".into(),
            payload: r#"{"job_id":1}"#.into(),
            max_attempts: 4,
        })
        .collect()
}

async fn completion_writes_its_deliveries_and_each_has_its_own_fate<S: Store + Queue>(store: S) {
    create(&store, &[("k1", "ORDER_A", "Approved")]).await;
    let job = store
        .claim_jobs("w1", 1, T0, LEASE)
        .await
        .unwrap()
        .remove(0);
    store
        .update_jobs(&[end(&job, "w1", completed(), deliveries())], T0 + 1)
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("d1", 10, T0 + 1, LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|d| d.attempt == 1 && d.job_id == job.id));
    assert!(
        store
            .claim_deliveries("d2", 10, T0 + 1, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let (hook, gh) = (&claimed[0], &claimed[1]);
    assert_eq!(hook.notifier, "webhook");
    let held = store
        .end_deliveries(
            &[
                DeliveryUpdate {
                    id: hook.id,
                    owner: "d1".into(),
                    end: DeliveryEnd::Delivered,
                    errors: hook.errors.clone(),
                },
                DeliveryUpdate {
                    id: gh.id,
                    owner: "d1".into(),
                    end: DeliveryEnd::Retry {
                        run_at: T0 + 1_000,
                        error: "503".into(),
                    },
                    errors: r#"[{"error":"503"}]"#.into(),
                },
                DeliveryUpdate {
                    id: gh.id,
                    owner: "someone else".into(),
                    end: DeliveryEnd::Delivered,
                    errors: "[]".into(),
                },
            ],
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(held, [true, true, false]);
    let hook = store.delivery(hook.id).await.unwrap().unwrap();
    assert_eq!(
        (hook.state, hook.delivered_at),
        (DeliveryState::Delivered, Some(T0 + 2))
    );
    let gh_row = store.delivery(gh.id).await.unwrap().unwrap();
    assert_eq!(gh_row.state, DeliveryState::Pending);
    assert_eq!(gh_row.last_error.as_deref(), Some("503"));
    assert!(
        store
            .claim_deliveries("d1", 10, T0 + 999, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries("d1", 10, T0 + 1_000, LEASE)
        .await
        .unwrap();
    assert_eq!((again.len(), again[0].attempt), (1, 2));
    store
        .end_deliveries(
            &[DeliveryUpdate {
                id: gh.id,
                owner: "d1".into(),
                end: DeliveryEnd::Dead {
                    error: "422".into(),
                },
                errors: "[]".into(),
            }],
            T0 + 1_001,
        )
        .await
        .unwrap();
    let dead = store
        .deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Dead),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(ids_of(&dead), [gh.id]);
    assert_eq!(
        store.job(job.id).await.unwrap().unwrap().state,
        JobState::Completed,
        "a delivery's fate never touches the job"
    );
    // Operators re-drive and cancel.
    let retried = store.retry_delivery(gh.id, T0 + 2_000).await.unwrap();
    assert_eq!(
        (retried.state, retried.attempt),
        (DeliveryState::Pending, 0)
    );
    assert!(matches!(
        store.retry_delivery(hook.id, T0).await,
        Err(ActionError::WrongState { .. })
    ));
    let cancelled = store.cancel_delivery(gh.id, T0 + 2_001).await.unwrap();
    assert_eq!(cancelled.state, DeliveryState::Cancelled);
    assert!(matches!(
        store.cancel_delivery(gh.id, T0).await,
        Err(ActionError::WrongState { .. })
    ));
    assert!(matches!(
        store.retry_delivery(999_999, T0).await,
        Err(ActionError::NotFound("delivery"))
    ));
    let of_job = store
        .deliveries(&DeliveryFilter {
            job_id: Some(job.id),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(of_job.len(), 2);
}
conformance!(completion_writes_its_deliveries_and_each_has_its_own_fate);

fn ids_of(d: &[sfcdc::store::queue::DeliveryRow]) -> Vec<i64> {
    d.iter().map(|d| d.id).collect()
}

async fn operators_retry_dead_jobs_and_cancel_open_ones<S: Store + Queue>(store: S) {
    let id = create(
        &store,
        &[("k1", "ORDER_A", "Approved"), ("k2", "ORDER_B", "Approved")],
    )
    .await;
    let jobs = store.claim_jobs("w1", 2, T0, LEASE).await.unwrap();
    let dead = JobEnd::Dead {
        error: "fulfilment rejected the order".into(),
    };
    store
        .update_jobs(&[end(&jobs[0], "w1", dead, deliveries())], T0 + 1)
        .await
        .unwrap();
    assert!(matches!(
        store.cancel_job(id[0], "no", T0).await,
        Err(ActionError::WrongState { .. })
    ));
    let retried = store.retry_job(id[0], T0 + 5).await.unwrap();
    assert_eq!(
        (
            retried.state,
            retried.attempt,
            retried.generation,
            retried.run_at
        ),
        (JobState::Available, 0, 1, T0 + 5)
    );
    assert!(retried.finished_at.is_none());
    assert!(matches!(
        store.retry_job(id[0], T0).await,
        Err(ActionError::WrongState { .. })
    ));

    // Cancelling a running job fences its worker.
    let cancelled = store
        .cancel_job(id[1], "operator: duplicate order", T0 + 6)
        .await
        .unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(
        cancelled.last_error.as_deref(),
        Some("operator: duplicate order")
    );
    let late = store
        .update_jobs(&[end(&jobs[1], "w1", completed(), deliveries())], T0 + 7)
        .await
        .unwrap();
    assert_eq!(late, [false]);
    let of_b = store
        .deliveries(&DeliveryFilter {
            job_id: Some(id[1]),
            ..DeliveryFilter::default()
        })
        .await
        .unwrap();
    assert!(of_b.is_empty(), "a fenced completion writes no deliveries");
    assert!(matches!(
        store.retry_job(424_242, T0).await,
        Err(ActionError::NotFound("job"))
    ));
}
conformance!(operators_retry_dead_jobs_and_cancel_open_ones);

async fn retention_purges_finished_work_but_keeps_dead_letters<S: Store + Queue>(store: S) {
    create(
        &store,
        &[
            ("k1", "ORDER_A", "Approved"),
            ("k2", "ORDER_B", "Approved"),
            ("k3", "ORDER_C", "Approved"),
        ],
    )
    .await;
    let jobs = store.claim_jobs("w1", 3, T0, LEASE).await.unwrap();
    let dead = JobEnd::Dead {
        error: "rejected".into(),
    };
    store
        .update_jobs(
            &[
                end(&jobs[0], "w1", completed(), deliveries()),
                end(&jobs[1], "w1", dead, vec![]),
            ],
            T0 + 10,
        )
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries("d", 10, T0 + 10, LEASE)
        .await
        .unwrap();
    let updates: Vec<DeliveryUpdate> = claimed
        .iter()
        .map(|d| DeliveryUpdate {
            id: d.id,
            owner: "d".into(),
            end: DeliveryEnd::Delivered,
            errors: "[]".into(),
        })
        .collect();
    store.end_deliveries(&updates, T0 + 20).await.unwrap();
    assert_eq!(
        store.purge(T0 + 10, T0).await.unwrap(),
        sfcdc::store::queue::Purged {
            jobs: 0,
            deliveries: 0,
            triggers: 0
        },
        "nothing is older than the cut-off yet"
    );
    let purged = store.purge(T0 + 1_000, T0).await.unwrap();
    assert_eq!((purged.jobs, purged.deliveries, purged.triggers), (1, 2, 0));
    let purged = store.purge(T0 + 1_000, T0 + 1).await.unwrap();
    assert_eq!(purged.triggers, 3, "triggers go on their own, longer clock");
    let left: HashSet<JobState> = store
        .jobs(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|j| j.state)
        .collect();
    assert_eq!(left, HashSet::from([JobState::Dead, JobState::Running]));
}
conformance!(retention_purges_finished_work_but_keeps_dead_letters);

/// Several claimers on one database (several workers, or several instances): no job is ever
/// held twice, and each order's jobs still run in creation order.
async fn concurrent_claimers_never_share_a_job<S: Store + Queue>(store: S) {
    let mut spec = Vec::new();
    for n in 0..120 {
        let order = format!("ORDER_{}", n % 30);
        let status = ["Approved", "Reactivate", "Approved2", "Approved3"][n / 30];
        spec.push((format!("k{n}"), order, status.to_owned()));
    }
    let refs: Vec<(&str, &str, &str)> = spec
        .iter()
        .map(|(k, o, s)| (k.as_str(), o.as_str(), s.as_str()))
        .collect();
    create(&store, &refs).await;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut done = Vec::new();
            let mut idle = 0;
            while idle < 20 {
                let jobs = store.claim_jobs(&owner, 7, T0 + 1, LEASE).await.unwrap();
                if jobs.is_empty() {
                    idle += 1;
                    tokio::task::yield_now().await;
                    continue;
                }
                idle = 0;
                let seq = SEQ.fetch_add(1, Ordering::SeqCst);
                let updates: Vec<JobUpdate> = jobs
                    .iter()
                    .map(|j| end(j, &owner, completed(), vec![]))
                    .collect();
                let held = store.update_jobs(&updates, T0 + 2).await.unwrap();
                assert!(held.iter().all(|h| *h));
                done.extend(jobs.into_iter().map(|j| (j.order_id, j.id, seq)));
            }
            done
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<i64> = all.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(
        (all.len(), unique.len()),
        (120, 120),
        "each job ran exactly once"
    );
    // Claims of one order were strictly sequential, in creation order. Sorted by (order, claim),
    // neighbours of one order share a claim only if that claim took both; otherwise the later
    // claim must hold the later job.
    all.sort_by_key(|(order, _, seq)| (order.clone(), *seq));
    for pair in all.windows(2) {
        if pair[0].0 == pair[1].0 {
            assert!(
                pair[0].1 < pair[1].1 && pair[0].2 < pair[1].2,
                "(order, job id, claim): one claim took two jobs of the order, or a later claim \
                 took an earlier job: {pair:?}"
            );
        }
    }
    let left = store.claim_jobs("late", 1000, T0 + 3, LEASE).await.unwrap();
    assert!(left.is_empty());
}
conformance!(concurrent_claimers_never_share_a_job);

fn poll_change(operation: &str, run_at: i64) -> JobChange {
    JobChange::Poll(PollUpdate {
        operation_id: operation.into(),
        progress: Some(10),
        run_at,
        error: None,
    })
}

/// One batch of every kind of change, as the worker's writer sends it: each row is written
/// only by its lease holder, the refused ones change nothing (not even their deliveries), and
/// a job changed twice in the batch gets both changes in order.
async fn a_mixed_batch_applies_the_held_writes_and_refuses_the_others<S: Store + Queue>(store: S) {
    let id = create(
        &store,
        &[
            ("k1", "ORDER_A", "Approved"),
            ("k2", "ORDER_B", "Approved"),
            ("k3", "ORDER_C", "Approved"),
            ("k4", "ORDER_D", "Approved"),
            ("k5", "ORDER_E", "Approved"),
        ],
    )
    .await;
    let w1 = store.claim_jobs("w1", 3, T0, LEASE).await.unwrap();
    let w2 = store.claim_jobs("w2", 2, T0, LEASE).await.unwrap();
    assert_eq!((ids(&w1), ids(&w2)), (id[..3].to_vec(), id[3..].to_vec()));
    let (a, b, c) = (&w1[0], &w1[1], &w1[2]);
    let (d, e) = (&w2[0], &w2[1]);
    let batch = [
        update(a, "w1", JobChange::Phase("activating")),
        update(b, "w1", JobChange::Operation("op_b".into())),
        update(c, "w1", poll_change("op_c", T0 + 500)),
        end(d, "w2", completed(), deliveries()),
        // w1 does not hold e: refused, and its deliveries are not written.
        end(e, "w1", completed(), deliveries()),
        update(d, "w1", JobChange::Phase("activating")),
        // a again: applied after its phase, in a round of its own.
        end(a, "w1", completed(), deliveries()),
    ];
    let held = store.update_jobs(&batch, T0 + 1).await.unwrap();
    assert_eq!(held, [true, true, true, true, false, false, true]);

    let job = |id| {
        let store = &store;
        async move { store.job(id).await.unwrap().unwrap() }
    };
    let a = job(a.id).await;
    assert_eq!(
        (a.state, a.phase.as_deref(), a.progress),
        (JobState::Completed, Some("activating"), Some(100))
    );
    let b = job(b.id).await;
    assert_eq!(
        (b.state, b.operation_id.as_deref(), b.phase.as_deref()),
        (JobState::Running, Some("op_b"), Some("submitted"))
    );
    assert_eq!(
        (b.submitted_at, b.lease_owner.as_deref()),
        (Some(T0 + 1), Some("w1")),
        "a recorded operation keeps the lease"
    );
    let c = job(c.id).await;
    assert_eq!(
        (c.state, c.operation_id.as_deref(), c.run_at, c.polls),
        (JobState::Polling, Some("op_c"), T0 + 500, 1)
    );
    assert!(c.lease_owner.is_none());
    let d = job(d.id).await;
    assert_eq!(
        (d.state, d.phase.as_deref(), d.external_id.as_deref()),
        (JobState::Completed, None, Some("WH-1")),
        "w1's phase for d was refused"
    );
    let e = job(e.id).await;
    assert_eq!(
        (e.state, e.lease_owner.as_deref(), e.finished_at),
        (JobState::Running, Some("w2"), None),
        "e is w2's and untouched"
    );
    let mut sent: Vec<i64> = store
        .deliveries(&DeliveryFilter::default())
        .await
        .unwrap()
        .iter()
        .map(|x| x.job_id)
        .collect();
    sent.sort_unstable();
    let mut want = vec![a.id, a.id, d.id, d.id];
    want.sort_unstable();
    assert_eq!(sent, want, "deliveries only for the recorded ends");
}
conformance!(a_mixed_batch_applies_the_held_writes_and_refuses_the_others);

/// A worker whose leases all expired and went to another sends a batch of every kind of
/// change: nothing of it is written, and its jobs read exactly as the new holder left them.
async fn a_fenced_off_owners_batch_writes_nothing<S: Store + Queue>(store: S) {
    create(
        &store,
        &[
            ("k1", "ORDER_A", "Approved"),
            ("k2", "ORDER_B", "Approved"),
            ("k3", "ORDER_C", "Approved"),
            ("k4", "ORDER_D", "Approved"),
        ],
    )
    .await;
    let stale = store.claim_jobs("w1", 4, T0, 1_000).await.unwrap();
    assert_eq!(stale.len(), 4);
    let taken = store.claim_jobs("w2", 4, T0 + 1_001, LEASE).await.unwrap();
    assert_eq!(ids(&taken), ids(&stale), "w2 took every job over");
    let before = store.jobs(&Default::default()).await.unwrap();
    let retry = JobEnd::Retry {
        run_at: T0 + 5_000,
        error: "late".into(),
        new_operation: true,
    };
    let batch = [
        update(&stale[0], "w1", JobChange::Phase("activating")),
        update(&stale[1], "w1", JobChange::Operation("op_1".into())),
        update(&stale[2], "w1", poll_change("op_2", T0 + 2_000)),
        end(&stale[3], "w1", completed(), deliveries()),
        // A second round, for the same jobs.
        end(&stale[0], "w1", retry, vec![]),
        end(&stale[1], "w1", completed(), deliveries()),
    ];
    let held = store.update_jobs(&batch, T0 + 1_002).await.unwrap();
    assert_eq!(held, [false; 6]);
    assert_eq!(store.jobs(&Default::default()).await.unwrap(), before);
    assert!(
        store
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.update_jobs(&[], T0 + 1_003).await.unwrap(),
        Vec::<bool>::new(),
        "an empty batch is no error"
    );
}
conformance!(a_fenced_off_owners_batch_writes_nothing);

fn claim(owner: &str, limit: i64) -> Claim {
    Claim {
        owner: owner.into(),
        limit,
        lease_ms: LEASE,
    }
}

/// A batch of step writes claims the next due jobs for the slots it frees, in the same
/// transaction: leased as a claim leases them, in claim order, behind the per-order gate.
async fn a_batch_of_step_writes_claims_the_next_due_jobs<S: Store + Queue>(store: S) {
    let id = create(
        &store,
        &[
            ("k1", "ORDER_A", "Approved"),
            ("k2", "ORDER_B", "Approved"),
            ("k3", "ORDER_C", "Approved"),
            ("k4", "ORDER_A", "Reactivate"),
            ("k5", "ORDER_D", "Approved"),
        ],
    )
    .await;
    let first = store.claim_jobs("w1", 1, T0, LEASE).await.unwrap();
    assert_eq!(ids(&first), [id[0]]);
    let a1 = &first[0];

    // A mid-step write keeps ORDER_A's first job open: its second job is not due.
    let applied = store
        .update_jobs_and_claim(
            &[update(a1, "w1", JobChange::Phase("activating"))],
            &claim("w2", 2),
            T0 + 1,
        )
        .await
        .unwrap();
    assert_eq!(applied.held, [true]);
    assert_eq!(
        ids(&applied.claimed),
        [id[1], id[2]],
        "claim order, at most 2"
    );
    for j in &applied.claimed {
        assert_eq!((j.state, j.attempt), (JobState::Running, 1));
        assert_eq!(j.lease_owner.as_deref(), Some("w2"));
        assert_eq!(j.lease_until, Some(T0 + 1 + LEASE));
        assert_eq!(store.job(j.id).await.unwrap().unwrap(), *j, "as stored");
    }
    let applied = store
        .update_jobs_and_claim(
            &[update(a1, "w1", JobChange::Operation("op_1".into()))],
            &claim("w3", 10),
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(
        (applied.held, ids(&applied.claimed)),
        (vec![true], vec![id[4]]),
        "ORDER_A's second job waits while the first is open"
    );

    // The first job ends: its successor is claimed by this batch or, at the latest, by the
    // next claim (PostgreSQL claims from the queue as it was before the batch).
    let applied = store
        .update_jobs_and_claim(
            &[end(a1, "w1", completed(), vec![])],
            &claim("w4", 10),
            T0 + 3,
        )
        .await
        .unwrap();
    assert_eq!(applied.held, [true]);
    let later = store.claim_jobs("w5", 10, T0 + 4, LEASE).await.unwrap();
    let mut successor = applied.claimed.clone();
    successor.extend(later);
    assert_eq!(ids(&successor), [id[3]], "claimed once, in one of the two");
    assert_eq!(
        store.job(a1.id).await.unwrap().unwrap().state,
        JobState::Completed
    );

    // Nothing due: the batch's writes apply, and the claim finds nothing.
    let b = &store.job(id[1]).await.unwrap().unwrap();
    let applied = store
        .update_jobs_and_claim(
            &[end(b, "w2", completed(), deliveries())],
            &claim("w6", 5),
            T0 + 5,
        )
        .await
        .unwrap();
    assert_eq!((applied.held, applied.claimed), (vec![true], vec![]));
    assert_eq!(
        store
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .len(),
        2,
        "the outbox is written with the end, as without a claim"
    );
    // A claim of nothing is a plain batch.
    let c = &store.job(id[2]).await.unwrap().unwrap();
    let applied = store
        .update_jobs_and_claim(
            &[end(c, "w2", completed(), vec![])],
            &claim("w7", 0),
            T0 + 6,
        )
        .await
        .unwrap();
    assert_eq!((applied.held, applied.claimed), (vec![true], vec![]));
}
conformance!(a_batch_of_step_writes_claims_the_next_due_jobs);

/// The claim that rides on a batch is a claim like any other: it takes no job another worker
/// holds, and a fenced-off owner's batch still writes nothing, whatever it claims; a job the
/// batch releases is claimed once, never twice.
async fn a_claim_with_a_batch_takes_no_held_job_and_fences_as_before<S: Store + Queue>(store: S) {
    let id = create(
        &store,
        &[
            ("k1", "ORDER_A", "Approved"),
            ("k2", "ORDER_B", "Approved"),
            ("k3", "ORDER_C", "Approved"),
            ("k4", "ORDER_D", "Approved"),
        ],
    )
    .await;
    let stale = store.claim_jobs("w1", 2, T0, 1_000).await.unwrap();
    assert_eq!(ids(&stale), id[..2]);
    let taken = store.claim_jobs("w2", 1, T0 + 1_001, LEASE).await.unwrap();
    assert_eq!(ids(&taken), [id[0]], "w2 took A over");
    let before = store.job(id[0]).await.unwrap().unwrap();
    // w1 writes for both: A is w2's now (refused); B's lease expired but nobody took it, so
    // w1 still holds it (the fence is the owner), and its release applies.
    let batch = [
        end(&stale[0], "w1", completed(), deliveries()),
        update(&stale[1], "w1", poll_change("op_b", T0 + 1_002)),
    ];
    let applied = store
        .update_jobs_and_claim(&batch, &claim("w3", 10), T0 + 1_002)
        .await
        .unwrap();
    assert_eq!(applied.held, [false, true]);
    assert_eq!(store.job(id[0]).await.unwrap().unwrap(), before);
    assert!(
        store
            .deliveries(&DeliveryFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let claimed: HashSet<i64> = ids(&applied.claimed).into_iter().collect();
    assert!(!claimed.contains(&id[0]), "w2's job is not claimed");
    assert!(claimed.contains(&id[2]) && claimed.contains(&id[3]));
    // B, released by the batch and due at once, is claimed by it or by the next claim: once.
    let later = store.claim_jobs("w4", 10, T0 + 1_003, LEASE).await.unwrap();
    let b_claims = applied
        .claimed
        .iter()
        .chain(&later)
        .filter(|j| j.id == id[1])
        .count();
    assert_eq!(b_claims, 1);
    let b = store.job(id[1]).await.unwrap().unwrap();
    assert_eq!(
        (b.state, b.operation_id.as_deref(), b.polls),
        (JobState::Polling, Some("op_b"), 1),
        "the release applied before B was claimed again"
    );
}
conformance!(a_claim_with_a_batch_takes_no_held_job_and_fences_as_before);
