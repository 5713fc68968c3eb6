//! A sink that records every batch in memory, for tests of the subscriber: slowness and commit
//! failures can be injected, and checkpoints are kept in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sfcdc::decode::Position;
use sfcdc::decode::{DecodedEvent, FailedEvent, ReplayId};
use sfcdc::source::sink::{Batch, Sink, SinkError, SinkErrorKind};

/// Records every batch in memory, with optional slowness and failure injection: for tests.
#[derive(Debug, Default)]
pub struct MemorySink {
    batches: Mutex<Vec<Batch>>,
    checkpoints: Mutex<HashMap<String, ReplayId>>,
    delay: Mutex<Duration>,
    fail_next: AtomicUsize,
    fail_kind: Mutex<Option<SinkErrorKind>>,
    notify: tokio::sync::Notify,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every commit take `d` (a slow sink).
    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().expect("sink lock") = d;
    }

    /// Makes the next `n` commits fail with a retryable error.
    pub fn fail_next(&self, n: usize) {
        self.fail_next_with(n, SinkErrorKind::Retryable);
    }

    /// Makes the next `n` commits fail with an error of `kind`.
    pub fn fail_next_with(&self, n: usize, kind: SinkErrorKind) {
        *self.fail_kind.lock().expect("sink lock") = Some(kind);
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Sets a stored position, as a previous run would have left it.
    pub fn set_checkpoint(&self, channel: &str, replay_id: ReplayId) {
        self.checkpoints
            .lock()
            .expect("sink lock")
            .insert(channel.to_owned(), replay_id);
    }

    /// A copy of every committed batch.
    pub fn batches(&self) -> Vec<Batch> {
        self.batches.lock().expect("sink lock").clone()
    }

    /// Every committed decoded event, in commit order.
    pub fn events(&self) -> Vec<DecodedEvent> {
        self.batches().into_iter().flat_map(|b| b.events).collect()
    }

    /// Every committed failed event, in commit order.
    pub fn failed(&self) -> Vec<FailedEvent> {
        self.batches().into_iter().flat_map(|b| b.failed).collect()
    }

    /// Replay ids of every committed event, decoded or failed, in commit order.
    pub fn replay_ids(&self) -> Vec<ReplayId> {
        let mut out = Vec::new();
        for b in self.batches() {
            let mut ids: Vec<ReplayId> = b
                .events
                .iter()
                .map(|e| e.replay_id.clone())
                .chain(b.failed.iter().map(|f| f.replay_id.clone()))
                .collect();
            ids.sort_by_key(|r| r.position());
            out.extend(ids);
        }
        out
    }

    /// The stored position of a channel.
    pub fn stored(&self, channel: &str) -> Option<ReplayId> {
        self.checkpoints
            .lock()
            .expect("sink lock")
            .get(channel)
            .cloned()
    }

    /// Waits until at least `n` events (decoded or failed) have been committed.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.notify.notified();
            if self
                .batches
                .lock()
                .expect("sink lock")
                .iter()
                .map(Batch::len)
                .sum::<usize>()
                >= n
            {
                return;
            }
            notified.await;
        }
    }

    /// Waits until a keepalive checkpoint has been committed.
    pub async fn wait_for_keepalive(&self) -> Batch {
        loop {
            let notified = self.notify.notified();
            if let Some(b) = self
                .batches
                .lock()
                .expect("sink lock")
                .iter()
                .find(|b| b.keepalive)
            {
                return b.clone();
            }
            notified.await;
        }
    }
}

impl Sink for MemorySink {
    type Staged = Batch;

    async fn stage(&self, batch: Batch) -> Result<Batch, SinkError> {
        Ok(batch)
    }

    async fn checkpoint(&self, channel: &str) -> Result<Option<Position>, SinkError> {
        Ok(self.stored(channel).map(Position::After))
    }

    async fn commit(&self, staged: Vec<Batch>) -> Result<(), SinkError> {
        let delay = *self.delay.lock().expect("sink lock");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let kind = self
                .fail_kind
                .lock()
                .expect("sink lock")
                .unwrap_or(SinkErrorKind::Retryable);
            return Err(SinkError::new(
                kind,
                "committing",
                "injected commit failure",
            ));
        }
        for batch in staged {
            self.checkpoints
                .lock()
                .expect("sink lock")
                .insert(batch.channel.to_string(), batch.replay_id.clone());
            self.batches.lock().expect("sink lock").push(batch);
        }
        self.notify.notify_waiters();
        Ok(())
    }
}
