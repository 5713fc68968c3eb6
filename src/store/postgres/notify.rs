//! Signals between instances sharing one PostgreSQL database, over `LISTEN`/`NOTIFY`: a lease
//! released ([`LEASES`]), jobs created or re-driven ([`JOBS`]), cache invalidations ([`CACHE`]).
//!
//! `NOTIFY` is transactional: a signal sent inside a commit is delivered when (and only if) the
//! commit lands. It reaches every session of the database, so each payload is prefixed with the
//! sender's schema and a listener drops the signals of other schemas. A listener that loses its
//! connection cannot know what it missed: [`Listener::recv`] says so (`Ok(None)`), and its user
//! assumes the worst.

use sqlx::postgres::PgListener;
use sqlx::{Postgres, Transaction};

use super::PgStore;
use crate::store::StoreError;

/// A lease was released; the payload is the channel.
pub const LEASES: &str = "sfcdc_leases";
/// Jobs were created, retried or cancelled; wake the workers.
pub const JOBS: &str = "sfcdc_jobs";
/// Cache invalidations decided by a channel's holder; the payload is theirs to define.
pub const CACHE: &str = "sfcdc_cache";

/// Separates the schema from the payload.
const SEP: char = '\u{1f}';

/// The largest payload `NOTIFY` takes is 8000 bytes; this leaves room for the schema prefix.
pub const MAX_PAYLOAD: usize = 7_000;

/// One signal received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// [`LEASES`], [`JOBS`] or [`CACHE`].
    pub channel: String,
    /// What the sender said.
    pub payload: String,
}

/// Sends `payload` on `channel` when `tx` commits.
pub(crate) async fn send(
    tx: &mut Transaction<'static, Postgres>,
    scope: &str,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(format!("{scope}{SEP}{payload}"))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Sends `payload` on `channel` at once (outside a transaction).
pub(crate) async fn send_now(
    store: &PgStore,
    channel: &str,
    payload: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(format!("{}{SEP}{payload}", store.scope))
        .execute(&store.pool)
        .await?;
    Ok(())
}

/// This instance's subscription to the signals of its schema.
pub struct Listener {
    inner: PgListener,
    scope: std::sync::Arc<str>,
}

impl Listener {
    /// The next signal of this schema; `Ok(None)` when the connection was lost (signals sent
    /// meanwhile are gone; the next call reconnects).
    pub async fn recv(&mut self) -> Result<Option<Signal>, StoreError> {
        loop {
            let Some(n) = self.inner.try_recv().await? else {
                return Ok(None);
            };
            let Some((scope, payload)) = n.payload().split_once(SEP) else {
                continue;
            };
            if scope == &*self.scope {
                return Ok(Some(Signal {
                    channel: n.channel().to_owned(),
                    payload: payload.to_owned(),
                }));
            }
        }
    }
}

impl PgStore {
    /// Listens to every signal of this store's schema.
    pub async fn listen(&self) -> Result<Listener, StoreError> {
        let mut inner = PgListener::connect_with(&self.pool).await?;
        inner.listen_all([LEASES, JOBS, CACHE]).await?;
        Ok(Listener {
            inner,
            scope: self.scope.clone(),
        })
    }

    /// The schema signals are scoped to.
    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }
}
