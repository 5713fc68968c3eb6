//! The lease conformance suite, run on SQLite and on PostgreSQL: one holder per channel, a
//! generation that rises on every takeover, expiry by the database's clock, fenced commits, and
//! operator resets that fence the holder out.

use std::time::Duration;

use sfcdc::decode::{Position, ReplayId};
use sfcdc::store::lease::{Fence, Leases, TakeoverReason};
use sfcdc::store::{Store, StoreBatch, StoreError};

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
    // The deposed holder's batch (which would move the checkpoint back) is refused whole.
    let err = s
        .commit_batch(&batch(Some(a.fence.clone()), 3))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Fenced { generation: 1, .. }),
        "{err}"
    );
    assert_eq!(
        s.checkpoint(CH).await.unwrap(),
        Some(Position::After(ReplayId::new(vec![0, 0, 0, 0, 0, 0, 0, 5])))
    );
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
