//! Channel leases: which instance may subscribe to a channel and commit for it.
//!
//! A lease row per channel names its holder (an instance id), a generation that rises on every
//! takeover (the fencing token), and an expiry. Expiry is judged by the database's clock
//! (`now()` on PostgreSQL; the file's machine on SQLite), never by comparing instances' clocks.
//!
//! **Fencing.** A holder commits with the [`Fence`] it acquired: [`crate::store::Store::commit_batch`]
//! checks, inside the batch's own transaction, that the channel's lease still names that holder
//! at that generation, and refuses the whole batch otherwise ([`StoreError::Fenced`]). A takeover
//! raises the generation, so a paused, partitioned or deposed holder can never commit after
//! another instance took its channel; on PostgreSQL the check holds a share lock on the lease
//! row, so a takeover waits for a commit in flight instead of racing it. A holder stopped in the
//! middle of such a commit would keep that lock, so PostgreSQL ends a session idle inside a
//! transaction after [`idle_in_transaction`] of the TTL.
//!
//! **Instances** also record a heartbeat, so each can tell how many share the channels and take
//! no more than its fair share.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use super::StoreError;

/// How long a lease lasts without renewal when `SFCDC_LEASE_TTL` does not say.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// How long a PostgreSQL session may sit idle inside a transaction, for leases of `ttl`: half of
/// it. sfcdc waits on nothing but the database inside a transaction, so such a session belongs to
/// a paused or hung process, and the server ends it with its locks (the share lock a fenced
/// commit holds on the lease row). A holder renews every third of the TTL, so its lease runs at
/// least two thirds of the TTL past any pause: the locks go before the lease, and a standby's
/// takeover does not wait on them.
pub const fn idle_in_transaction(ttl: Duration) -> Duration {
    Duration::from_nanos((ttl.as_nanos() / 2) as u64)
}

/// The right to commit for a channel: the holder and the generation it acquired.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The instance id.
    pub holder: String,
    /// The lease generation it holds.
    pub generation: i64,
}

/// Why a lease changed hands: the `reason` of `sfcdc_lease_takeovers_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TakeoverReason {
    /// Nobody had held the channel.
    First,
    /// The holder's lease expired (a crash, a pause, a partition).
    Expired,
    /// The holder let it go (a graceful stop, rebalancing, or an operator's checkpoint reset).
    Released,
}

impl TakeoverReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TakeoverReason::First => "first",
            TakeoverReason::Expired => "expired",
            TakeoverReason::Released => "released",
        }
    }
}

/// A lease taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// What to commit with.
    pub fence: Fence,
    /// Why it was free.
    pub reason: TakeoverReason,
}

/// A channel's lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    /// The channel.
    pub channel: String,
    /// Its holder; `None` once released.
    pub holder: Option<String>,
    /// The fencing token.
    pub generation: i64,
    /// When the lease ends, epoch ms by the database's clock.
    pub expires_at: i64,
    /// The database's clock when the row was read, epoch ms.
    pub read_at: i64,
}

impl LeaseRow {
    /// Whether a holder's lease runs at the time it was read.
    pub fn is_live(&self) -> bool {
        self.holder.is_some() && self.expires_at > self.read_at
    }
}

/// One configured channel as the fleet sees it: `sfcdc channels`, `GET /channels` and the
/// console show it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    /// The topic.
    pub channel: String,
    /// The lease holder, if the lease is live.
    pub holder: Option<String>,
    /// The lease generation (0: never leased).
    pub generation: i64,
    /// Seconds until the lease expires (negative: expired that long ago), if leased.
    pub lease_expires_in_seconds: Option<f64>,
    /// The stored checkpoint's replay id (hex), or its preset.
    pub checkpoint: Option<String>,
    /// Seconds since the checkpoint was written.
    pub checkpoint_age_seconds: Option<f64>,
    /// `holder`, `standby`, or `unheld` for the asking instance.
    pub role: &'static str,
}

/// The view of each of `channels` from instance `me`, out of the stored leases and checkpoints.
/// Ages are judged by the database's clock when the leases were read (`now_ms` if none is).
pub fn channel_views(
    channels: &[String],
    me: &str,
    leases: &[LeaseRow],
    checkpoints: &[super::Checkpoint],
    now_ms: i64,
) -> Vec<ChannelView> {
    use crate::decode::Position;
    let now = leases.first().map_or(now_ms, |l| l.read_at);
    channels
        .iter()
        .map(|channel| {
            let lease = leases.iter().find(|l| &l.channel == channel);
            let checkpoint = checkpoints.iter().find(|c| &c.channel == channel);
            let holder = lease.filter(|l| l.is_live()).and_then(|l| l.holder.clone());
            let role = match &holder {
                Some(h) if h == me => "holder",
                Some(_) => "standby",
                None => "unheld",
            };
            ChannelView {
                channel: channel.clone(),
                holder,
                generation: lease.map_or(0, |l| l.generation),
                lease_expires_in_seconds: lease.map(|l| (l.expires_at - l.read_at) as f64 / 1000.0),
                checkpoint: checkpoint.map(|c| match &c.position {
                    Position::After(r) => r.to_hex(),
                    Position::Earliest => "earliest".to_owned(),
                    Position::Latest => "latest".to_owned(),
                }),
                checkpoint_age_seconds: checkpoint
                    .map(|c| ((now - c.updated_at).max(0)) as f64 / 1000.0),
                role,
            }
        })
        .collect()
}

/// What the previous holder left, and whether `holder` may take the lease now.
pub(crate) fn takeover_reason(
    previous: Option<(Option<String>, i64, i64)>,
    holder: &str,
    now: i64,
) -> Option<TakeoverReason> {
    match previous {
        None => Some(TakeoverReason::First),
        Some((None, _, _)) => Some(TakeoverReason::Released),
        // An earlier run of this instance id (a restart with the same id) left it.
        Some((Some(h), _, _)) if h == holder => Some(TakeoverReason::Released),
        Some((Some(_), _, expires_at)) if expires_at <= now => Some(TakeoverReason::Expired),
        Some(_) => None,
    }
}

/// Leases and instance heartbeats, on both backends; one conformance suite checks them.
pub trait Leases: Send + Sync + 'static {
    /// Takes `channel` for `holder` for `ttl_ms` when nobody holds it, its holder released it,
    /// or its lease expired; `None` while another holder's lease runs.
    fn acquire(
        &self,
        channel: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<Option<Takeover>, StoreError>> + Send;

    /// Extends the lease `fence` holds by `ttl_ms` from now; false when it is no longer held at
    /// that generation (another instance took it, or an operator reset the channel).
    fn renew(
        &self,
        channel: &str,
        fence: &Fence,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Lets the lease go, so another instance can take it at once (PostgreSQL also announces it
    /// with `NOTIFY sfcdc_leases`); false when it was not held at that generation.
    fn release(
        &self,
        channel: &str,
        fence: &Fence,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every channel's lease, by channel.
    fn leases(&self) -> impl Future<Output = Result<Vec<LeaseRow>, StoreError>> + Send;

    /// Records that `instance` is alive and returns how many instances were seen within
    /// `ttl_ms` (itself included).
    fn heartbeat(
        &self,
        instance: &str,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Removes `instance`'s heartbeat (a graceful stop).
    fn leave(&self, instance: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_free_when_absent_released_expired_or_left_by_the_same_id() {
        let r = |p, now| takeover_reason(p, "me", now);
        assert_eq!(r(None, 10), Some(TakeoverReason::First));
        assert_eq!(r(Some((None, 3, 99)), 10), Some(TakeoverReason::Released));
        assert_eq!(
            r(Some((Some("me".into()), 3, 99)), 10),
            Some(TakeoverReason::Released)
        );
        assert_eq!(
            r(Some((Some("other".into()), 3, 10)), 10),
            Some(TakeoverReason::Expired)
        );
        assert_eq!(r(Some((Some("other".into()), 3, 11)), 10), None);
    }
}
