//! Channel leases on SQLite. The lease lives in the same file as everything else, so a second
//! process on the file stands by behind the first, as a second instance would on PostgreSQL.
//! "Now" is the machine's clock read by SQLite (every process on the file shares the machine).
//! Each operation is one `BEGIN IMMEDIATE` transaction: SQLite's single writer orders them.

use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, begin_write};
use crate::store::StoreError;
use crate::store::lease::{Fence, LeaseRow, Leases, Takeover, takeover_reason};

/// The database's clock, epoch ms, as an SQL expression to splice into statements.
macro_rules! now {
    () => {
        "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    };
}

/// The lease check a fenced batch makes first, inside its write transaction.
pub(crate) async fn check_fence(
    tx: &mut Transaction<'static, Sqlite>,
    channel: &str,
    fence: &Fence,
) -> Result<(), StoreError> {
    let held = sqlx::query(
        "SELECT 1 FROM sfcdc_leases WHERE channel = $1 AND holder = $2 AND generation = $3",
    )
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
/// rises and the lease is released), so a running holder cannot overwrite the change.
pub(crate) async fn revoke(
    tx: &mut Transaction<'static, Sqlite>,
    channel: &str,
) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "UPDATE sfcdc_leases SET holder = NULL, generation = generation + 1, expires_at = ",
        now!(),
        "
         WHERE channel = $1"
    ))
    .bind(channel)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Leases for SqliteStore {
    async fn acquire(
        &self,
        channel: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<Takeover>, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let now: i64 = sqlx::query_scalar(concat!("SELECT ", now!()))
            .fetch_one(&mut *tx)
            .await?;
        let previous = sqlx::query(
            "SELECT holder, generation, expires_at FROM sfcdc_leases WHERE channel = $1",
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
        sqlx::query(
            "INSERT INTO sfcdc_leases (channel, holder, generation, expires_at, acquired_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (channel) DO UPDATE SET holder = excluded.holder,
                 generation = excluded.generation, expires_at = excluded.expires_at,
                 acquired_at = excluded.acquired_at",
        )
        .bind(channel)
        .bind(holder)
        .bind(generation)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&mut *tx)
        .await?;
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
            " + $4
             WHERE channel = $1 AND holder = $2 AND generation = $3"
        ))
        .bind(channel)
        .bind(&fence.holder)
        .bind(fence.generation)
        .bind(ttl_ms)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, channel: &str, fence: &Fence) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE sfcdc_leases SET holder = NULL, expires_at = ",
            now!(),
            "
             WHERE channel = $1 AND holder = $2 AND generation = $3"
        ))
        .bind(channel)
        .bind(&fence.holder)
        .bind(fence.generation)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT channel, holder, generation, expires_at, ",
            now!(),
            " AS read_at
             FROM sfcdc_leases ORDER BY channel"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(lease_from_row).collect())
    }

    async fn heartbeat(&self, instance: &str, ttl_ms: i64) -> Result<usize, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        sqlx::query(concat!(
            "INSERT INTO sfcdc_instances (id, seen_at) VALUES ($1, ",
            now!(),
            ")
             ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at"
        ))
        .bind(instance)
        .execute(&mut *tx)
        .await?;
        // Instances gone for ten lease lifetimes are forgotten.
        sqlx::query(concat!(
            "DELETE FROM sfcdc_instances WHERE seen_at < ",
            now!(),
            " - 10 * $1"
        ))
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
        let live: i64 = sqlx::query_scalar(concat!(
            "SELECT count(*) FROM sfcdc_instances WHERE seen_at > ",
            now!(),
            " - $1"
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
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

/// A lease row as read.
pub(crate) fn lease_from_row(r: &sqlx::sqlite::SqliteRow) -> LeaseRow {
    LeaseRow {
        channel: r.get("channel"),
        holder: r.get("holder"),
        generation: r.get("generation"),
        expires_at: r.get("expires_at"),
        read_at: r.get("read_at"),
    }
}
