//! Time as the service sees it: epoch milliseconds, the unit every stored time uses.
//!
//! Every component that stamps or compares times (the worker's claims, polls, timeouts and
//! retries; ingest's batches; the cache's load times; a channel's liveness and replay-id age; the
//! admin API's actions and scrapes) reads a [`Clock`] it was built with, never the system clock
//! directly. In production that is [`Clock::system`]. A test builds the service with
//! [`Clock::manual`] and moves time itself, so time-driven behaviour is tested without sleeping.
//! Waiting (a sleep, a timeout, a coalescing window) stays on tokio's clock, which a test pauses
//! with `tokio::time::pause`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of the current time.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// `None`: the system clock; `Some`: a manual clock's current time.
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that reads `start_ms` until [`Clock::advance`] or [`Clock::set`] moves it. Clones
    /// share it.
    pub fn manual(start_ms: i64) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicI64::new(start_ms))),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    /// Moves a manual clock forward by `by`; the system clock cannot be moved (false).
    pub fn advance(&self, by: Duration) -> bool {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.manual
            .as_ref()
            .map(|t| t.fetch_add(by, Ordering::SeqCst))
            .is_some()
    }

    /// Sets a manual clock to `ms`; the system clock cannot be set (false).
    pub fn set(&self, ms: i64) -> bool {
        self.manual
            .as_ref()
            .map(|t| t.store(ms, Ordering::SeqCst))
            .is_some()
    }
}

/// The system clock in epoch milliseconds, for one-shot operator commands that run outside the
/// service (the service's components read their [`Clock`]).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Epoch milliseconds as RFC 3339 in UTC, e.g. `2026-11-23T09:30:00.250Z`.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(rfc3339(1_700_000_000_250), "2023-11-14T22:13:20.250Z");
    }

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = Clock::manual(1_000);
        let shared = clock.clone();
        assert_eq!(shared.now_ms(), 1_000);
        assert!(clock.advance(Duration::from_secs(90)));
        assert_eq!(shared.now_ms(), 91_000);
        assert!(shared.set(5));
        assert_eq!(clock.now_ms(), 5);
        let system = Clock::system();
        assert!(!system.advance(Duration::from_secs(1)));
        assert!((system.now_ms() - now_ms()).abs() < 60_000);
    }
}
