//! The lease conformance suite, run on SQLite and on PostgreSQL: one holder per channel, a
//! generation that rises on every takeover, expiry by the database's clock, fenced commits, and
//! operator resets that fence the holder out.

use std::time::Duration;

use sfcdc::decode::{Position, ReplayId};
use sfcdc::store::lease::{Fence, Leases, TakeoverReason};
use sfcdc::store::{JobFilter, NewJob, NewTrigger, Store, StoreBatch, StoreError};

const CH: &str = "/data/OrderChangeEvent";

macro_rules! lease_conformance {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (store, _dir) = crate::store::sqlite().await;
                super::$name(store).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(url) = crate::common::postgres_url() {
                    super::$name(crate::store::postgres(&url).await).await;
                }
            }
        }
    };
}

fn batch(fence: Option<Fence>, replay: u8) -> StoreBatch {
    StoreBatch {
        channel: CH.into(),
        checkpoint: Some(ReplayId::new(vec![0, 0, 0, 0, 0, 0, 0, replay])),
        now_ms: 1,
        fence,
        ..StoreBatch::default()
    }
}

async fn one_holder_at_a_time_and_each_takeover_raises_the_generation<S: Store + Leases>(s: S) {
    let a = s.acquire(CH, "a", 60_000).await.unwrap().expect("free");
    assert_eq!(a.reason, TakeoverReason::First);
    assert_eq!(a.fence.generation, 1);
    assert!(s.acquire(CH, "b", 60_000).await.unwrap().is_none(), "held");
    assert!(s.renew(CH, &a.fence, 60_000).await.unwrap());
    let rows = s.leases().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].holder.as_deref(), Some("a"));
    assert!(rows[0].is_live());
    // Released: the next holder takes it at once, one generation up.
    assert!(s.release(CH, &a.fence).await.unwrap());
    assert!(!s.renew(CH, &a.fence, 60_000).await.unwrap(), "released");
    let b = s.acquire(CH, "b", 60_000).await.unwrap().expect("released");
    assert_eq!(
        (b.reason, b.fence.generation),
        (TakeoverReason::Released, 2)
    );
    // The old holder can neither renew nor release what it lost.
    assert!(!s.renew(CH, &a.fence, 60_000).await.unwrap());
    assert!(!s.release(CH, &a.fence).await.unwrap());
    // Other channels are independent.
    let other = s
        .acquire("/event/X__e", "a", 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.fence.generation, 1);
}
lease_conformance!(one_holder_at_a_time_and_each_takeover_raises_the_generation);

async fn an_expired_lease_is_taken_over_by_the_databases_clock<S: Store + Leases>(s: S) {
    let a = s.acquire(CH, "a", 50).await.unwrap().unwrap();
    // The expiry is judged by the database: wait it out in real time.
    let mut taken = None;
    for _ in 0..100 {
        if let Some(t) = s.acquire(CH, "b", 60_000).await.unwrap() {
            taken = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = taken.expect("the lease expires");
    assert_eq!(
        (b.reason, b.fence.generation),
        (TakeoverReason::Expired, a.fence.generation + 1)
    );
    assert!(!s.renew(CH, &a.fence, 60_000).await.unwrap());
}
lease_conformance!(an_expired_lease_is_taken_over_by_the_databases_clock);

async fn a_deposed_holder_commits_nothing<S: Store + Leases>(s: S) {
    let a = s.acquire(CH, "a", 60_000).await.unwrap().unwrap();
    s.commit_batch(&batch(Some(a.fence.clone()), 1))
        .await
        .unwrap();
    assert!(s.release(CH, &a.fence).await.unwrap());
    let b = s.acquire(CH, "b", 60_000).await.unwrap().unwrap();
    s.commit_batch(&batch(Some(b.fence.clone()), 5))
        .await
        .unwrap();
    // The deposed holder's batch (which would move the checkpoint back) is refused whole: its
    // checkpoint, its triggers and its job.
    let mut late = batch(Some(a.fence.clone()), 3);
    late.triggers = vec![NewTrigger {
        key: "cdc:t9:1:801Hs0000000Q0vIAE".into(),
        order_id: "801Hs0000000Q0vIAE".into(),
        skipped: None,
    }];
    late.jobs = vec![NewJob {
        key: "cdc:t9:1:801Hs0000000Q0vIAE".into(),
        order_id: "801Hs0000000Q0vIAE".into(),
        account_id: None,
        trigger_status: "Approved".into(),
        trigger_kind: "status_change".into(),
        channel: CH.into(),
        replay_id: vec![0, 0, 0, 0, 0, 0, 0, 3],
        event_id: "e9".into(),
        payload: "{}".into(),
        max_attempts: 5,
    }];
    let err = s.commit_batch(&late).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { generation: 1, .. }),
        "{err}"
    );
    assert_eq!(
        s.checkpoint(CH).await.unwrap(),
        Some(Position::After(ReplayId::new(vec![0, 0, 0, 0, 0, 0, 0, 5])))
    );
    assert!(s.jobs(&JobFilter::default()).await.unwrap().is_empty());
    let keys = vec![late.triggers[0].key.clone()];
    assert!(s.known_triggers(&keys).await.unwrap().is_empty());
    // The holder's own batch with the same rows is written.
    late.fence = Some(b.fence.clone());
    let out = s.commit_batch(&late).await.unwrap();
    assert_eq!(out.created.len(), 1);
    // A batch for a channel nobody leased is refused too when fenced, and written when not.
    let stray = Fence {
        holder: "a".into(),
        generation: 1,
    };
    let mut other = batch(Some(stray), 7);
    other.channel = "/data/Other".into();
    assert!(matches!(
        s.commit_batch(&other).await,
        Err(StoreError::Fenced { .. })
    ));
    other.fence = None;
    s.commit_batch(&other).await.unwrap();
}
lease_conformance!(a_deposed_holder_commits_nothing);

async fn an_operator_reset_fences_the_holder_out<S: Store + Leases>(s: S) {
    let a = s.acquire(CH, "a", 60_000).await.unwrap().unwrap();
    s.commit_batch(&batch(Some(a.fence.clone()), 9))
        .await
        .unwrap();
    s.set_checkpoint(CH, &Position::Earliest, 2).await.unwrap();
    // The running holder's next commit cannot overwrite the reset.
    assert!(matches!(
        s.commit_batch(&batch(Some(a.fence.clone()), 10)).await,
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(s.checkpoint(CH).await.unwrap(), Some(Position::Earliest));
    // The channel is free at once, one generation up.
    let next = s.acquire(CH, "b", 60_000).await.unwrap().unwrap();
    assert_eq!(
        (next.reason, next.fence.generation),
        (TakeoverReason::Released, 3)
    );
}
lease_conformance!(an_operator_reset_fences_the_holder_out);

async fn heartbeats_count_the_live_instances<S: Store + Leases>(s: S) {
    assert_eq!(s.heartbeat("a", 60_000).await.unwrap(), 1);
    assert_eq!(s.heartbeat("b", 60_000).await.unwrap(), 2);
    assert_eq!(s.heartbeat("a", 60_000).await.unwrap(), 2);
    s.leave("b").await.unwrap();
    assert_eq!(s.heartbeat("a", 60_000).await.unwrap(), 1);
}
lease_conformance!(heartbeats_count_the_live_instances);

/// An instance stopped (SIGSTOP, a frozen VM) in the middle of a fenced commit holds a share
/// lock on its lease row, and a takeover locks that row: the server must end the stopped
/// session, or the lease can never be taken over, however long ago it expired.
#[tokio::test]
async fn a_paused_holders_open_commit_does_not_keep_the_lease_from_a_standby() {
    use sfcdc::store::postgres::PgStore;
    let Some(url) = crate::common::postgres_url() else {
        return;
    };
    let schema = crate::common::fresh_schema(&url).await;
    let paused = PgStore::connect_with(&url, Some(&schema), Duration::from_millis(300))
        .await
        .unwrap();
    paused.migrate().await.unwrap();
    let standby = PgStore::connect(&url, Some(&schema)).await.unwrap();
    let a = paused.acquire(CH, "a", 200).await.unwrap().unwrap();
    // The holder's commit began and checked its fence, then the process stopped.
    let mut open = paused.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sfcdc_leases WHERE channel = $1 FOR SHARE")
        .bind(CH)
        .fetch_one(&mut *open)
        .await
        .unwrap();
    let taken = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(t) = standby.acquire(CH, "b", 60_000).await.unwrap() {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the standby takes the expired lease once the stopped session is ended");
    assert_eq!(
        (taken.reason, taken.fence.generation),
        (TakeoverReason::Expired, a.fence.generation + 1)
    );
    // Woken, the stopped holder finds its transaction gone, and commits nothing.
    assert!(open.commit().await.is_err());
    let err = paused
        .commit_batch(&batch(Some(a.fence), 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
}
