//! Channel leases on PostgreSQL, shared by every instance of a fleet. "Now" is the server's
//! `clock_timestamp()`, so instances whose clocks drift still agree on expiry. Taking a lease locks
//! its row (`FOR UPDATE`) and a fenced batch holds a share lock on it, so a takeover and a commit
//! in flight are ordered: the commit lands first, or it finds the new generation and is refused. A
//! commit whose process stopped holds that lock until the server ends its idle session
//! (`idle_in_transaction_session_timeout`, set at connection, see `PgStore::connect_with`).
//! Releasing a lease announces it on the `sfcdc_leases` channel (`NOTIFY`), so a standby takes over
//! at once instead of waiting for the expiry.

use sqlx::{Postgres, Row, Transaction};

use super::{PgStore, begin_write, notify};
use crate::store::StoreError;
use crate::store::lease::{Fence, LeaseRow, Leases, Takeover, takeover_reason};

/// The database's clock, epoch ms, as an SQL expression to splice into statements.
macro_rules! now {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

/// The lease check a fenced batch makes first, holding the lease row until the commit.
pub(crate) async fn check_fence(
    tx: &mut Transaction<'static, Postgres>,
    channel: &str,
    fence: &Fence,
) -> Result<(), StoreError> {
    let held = sqlx::query(concat!(
        "SELECT 1 FROM sfcdc_leases WHERE channel = $1 AND holder = $2 AND generation = $3",
        " FOR SHARE"
    ))
    .bind(channel)
    .bind(&fence.holder)
    .bind(fence.generation)
    .fetch_optional(&mut **tx)
    .await?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced {
            channel: channel.to_owned(),
            generation: fence.generation,
        }),
    }
}

/// An operator's change of `channel`'s position: whoever holds it is fenced out (the generation
/// rises and the lease is released), and the standbys hear of it.
pub(crate) async fn revoke(
    tx: &mut Transaction<'static, Postgres>,
    scope: &str,
    channel: &str,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "UPDATE sfcdc_leases SET holder = NULL, generation = generation + 1, expires_at = ",
        now!(),
        " WHERE channel = $1"
    ))
    .bind(channel)
    .execute(&mut **tx)
    .await?;
    notify::send(tx, scope, notify::LEASES, channel).await
}

impl Leases for PgStore {
    async fn acquire(
        &self,
        channel: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<Takeover>, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let now: i64 = sqlx::query_scalar(concat!("SELECT ", now!()))
            .fetch_one(&mut *tx)
            .await?;
        let previous = sqlx::query(
            "SELECT holder, generation, expires_at FROM sfcdc_leases WHERE channel = $1 FOR UPDATE",
        )
        .bind(channel)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| {
            (
                r.get::<Option<String>, _>(0),
                r.get::<i64, _>(1),
                r.get::<i64, _>(2),
            )
        });
        let generation = previous.as_ref().map_or(0, |p| p.1) + 1;
        let Some(reason) = takeover_reason(previous, holder, now) else {
            return Ok(None);
        };
        // A first lease raced by another instance inserts nothing here: that one has it.
        let taken = sqlx::query(
            "INSERT INTO sfcdc_leases (channel, holder, generation, expires_at, acquired_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (channel) DO UPDATE SET holder = excluded.holder,
                 generation = excluded.generation, expires_at = excluded.expires_at,
                 acquired_at = excluded.acquired_at
             WHERE sfcdc_leases.generation = $3 - 1",
        )
        .bind(channel)
        .bind(holder)
        .bind(generation)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if taken.rows_affected() != 1 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some(Takeover {
            fence: Fence {
                holder: holder.to_owned(),
                generation,
            },
            reason,
        }))
    }

    async fn renew(&self, channel: &str, fence: &Fence, ttl_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE sfcdc_leases SET expires_at = ",
            now!(),
            " + $4 WHERE channel = $1 AND holder = $2 AND generation = $3"
        ))
        .bind(channel)
        .bind(&fence.holder)
        .bind(fence.generation)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, channel: &str, fence: &Fence) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        let done = sqlx::query(concat!(
            "UPDATE sfcdc_leases SET holder = NULL, expires_at = ",
            now!(),
            " WHERE channel = $1 AND holder = $2 AND generation = $3"
        ))
        .bind(channel)
        .bind(&fence.holder)
        .bind(fence.generation)
        .execute(&mut *tx)
        .await?;
        let released = done.rows_affected() == 1;
        if released {
            notify::send(&mut tx, self.scope(), notify::LEASES, channel).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT channel, holder, generation, expires_at, ",
            now!(),
            " AS read_at FROM sfcdc_leases ORDER BY channel"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| LeaseRow {
                channel: r.get("channel"),
                holder: r.get("holder"),
                generation: r.get("generation"),
                expires_at: r.get("expires_at"),
                read_at: r.get("read_at"),
            })
            .collect())
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: i64) -> Result<usize, StoreError> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query(concat!(
            "INSERT INTO sfcdc_instances (id, seen_at) VALUES ($1, ",
            now!(),
            ") ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at"
        ))
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        // Instances gone for ten lease lifetimes are forgotten.
        sqlx::query(concat!(
            "DELETE FROM sfcdc_instances WHERE seen_at < ",
            now!(),
            " - 10 * $1::bigint"
        ))
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        let live: i64 = sqlx::query_scalar(concat!(
            "SELECT count(*) FROM sfcdc_instances WHERE seen_at > ",
            now!(),
            " - $1::bigint"
        ))
        .bind(ttl_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(live.max(1) as usize)
    }

    async fn leave(&self, instance: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sfcdc_instances WHERE id = $1")
            .bind(instance)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
