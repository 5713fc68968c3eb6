//! The contract between a subscription and what it feeds.
//!
//! For every FetchResponse the subscription hands a [`Sink`] one [`Batch`]: the decoded events,
//! the events that failed to decode (with their raw bytes and the reason), and the replay id to
//! resume after. A keepalive becomes a batch with no events whose replay id is the keepalive's
//! `latest_replay_id`. The sink's `commit` must record everything durably, the replay id with it,
//! before returning: the subscription asks the server for more only after that.
//!
//! A failed stage or commit says what the subscription should do next ([`SinkErrorKind`]): back
//! off and resume from the last committed position, stop the channel, or step down because this
//! instance may no longer commit for it. The cause is kept as the error's source, not flattened.

use std::future::Future;
use std::sync::Arc;

use crate::decode::{DecodedEvent, FailedEvent, ReplayId};
use crate::decode::{Position, ReplayRecovery};

/// What one FetchResponse delivered.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The channel (topic name).
    pub channel: Arc<str>,
    /// Decoded events, in replay order.
    pub events: Vec<DecodedEvent>,
    /// Events that could not be decoded, in replay order.
    pub failed: Vec<FailedEvent>,
    /// The position to resume after once this batch is committed.
    pub replay_id: ReplayId,
    /// True for a keepalive checkpoint (no events).
    pub keepalive: bool,
}

impl Batch {
    /// Decoded and failed events together.
    pub fn len(&self) -> usize {
        self.events.len() + self.failed.len()
    }

    /// Appends the next batch of the same channel: its events follow, its position wins. The
    /// result is what one larger response would have delivered.
    pub fn absorb_later(&mut self, later: Batch) {
        self.events.extend(later.events);
        self.failed.extend(later.failed);
        self.replay_id = later.replay_id;
        self.keepalive &= later.keepalive;
    }

    /// Whether the batch carries no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a subscription does after its sink failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    /// Worth retrying (a database or Salesforce outage): back off, then resume from the last
    /// committed position.
    Retryable,
    /// Retrying cannot help (stored data sfcdc cannot read, a broken invariant): the channel
    /// stops with the error, and readiness names it.
    Permanent,
    /// This instance may no longer commit for the channel (another instance holds it now): stop
    /// subscribing to it without committing anything more.
    Fenced,
}

impl SinkErrorKind {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            SinkErrorKind::Retryable => "retryable",
            SinkErrorKind::Permanent => "permanent",
            SinkErrorKind::Fenced => "fenced",
        }
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed stage or commit: what to do next, what was being done, and why.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {cause}")]
pub struct SinkError {
    kind: SinkErrorKind,
    context: &'static str,
    #[source]
    cause: Cause,
}

impl SinkError {
    /// A failure of `context` caused by `cause`, of the given kind.
    pub fn new(kind: SinkErrorKind, context: &'static str, cause: impl Into<Cause>) -> Self {
        SinkError {
            kind,
            context,
            cause: cause.into(),
        }
    }

    /// A failure worth retrying.
    pub fn retryable(context: &'static str, cause: impl Into<Cause>) -> Self {
        Self::new(SinkErrorKind::Retryable, context, cause)
    }

    /// A failure retrying cannot mend.
    pub fn permanent(context: &'static str, cause: impl Into<Cause>) -> Self {
        Self::new(SinkErrorKind::Permanent, context, cause)
    }

    /// What the subscription should do.
    pub fn kind(&self) -> SinkErrorKind {
        self.kind
    }
}

/// Where batches go.
///
/// Each batch is first staged (the sink's preparation, which may read other systems) and then
/// committed. Staging of one batch may overlap the commit of the one before; commits happen
/// strictly in order. Consecutive batches of a channel may be staged as one
/// ([`Batch::absorb_later`]) and committed as one group.
pub trait Sink: Send + Sync + 'static {
    /// A batch made ready to commit.
    type Staged: Send + 'static;

    /// Where a channel resumes, if a position is stored.
    fn checkpoint(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send;

    /// Prepares a batch for its commit.
    fn stage(&self, batch: Batch) -> impl Future<Output = Result<Self::Staged, SinkError>> + Send;

    /// Durably records staged batches, in order and all together (one transaction when the
    /// sink has transactions), and advances the channel's position past the last of them.
    /// Several batches arrive together when commits are slower than the stream: group commit.
    fn commit(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The channel's stored position was rejected (its events expired, or it is not valid) and
    /// `policy` decides what happens next: the sink notes what the jump loses (for `earliest`
    /// and `latest`, durably, so it can be recovered) and returns where the lost window starts
    /// (epoch ms), when it knows. A sink that keeps nothing to recover with knows nothing.
    fn position_lost(
        &self,
        channel: &str,
        policy: ReplayRecovery,
    ) -> impl Future<Output = Result<Option<i64>, SinkError>> + Send {
        let _ = (channel, policy);
        std::future::ready(Ok(None))
    }
}

impl<S: Sink> Sink for Arc<S> {
    type Staged = S::Staged;

    fn checkpoint(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Option<Position>, SinkError>> + Send {
        (**self).checkpoint(channel)
    }

    fn stage(&self, batch: Batch) -> impl Future<Output = Result<Self::Staged, SinkError>> + Send {
        (**self).stage(batch)
    }

    fn commit(
        &self,
        staged: Vec<Self::Staged>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).commit(staged)
    }

    fn position_lost(
        &self,
        channel: &str,
        policy: ReplayRecovery,
    ) -> impl Future<Output = Result<Option<i64>, SinkError>> + Send {
        (**self).position_lost(channel, policy)
    }
}
