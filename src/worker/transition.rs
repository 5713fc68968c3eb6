//! The one pure function that turns a failed attempt into its next state.
//!
//! Every decision about retries and dead letters, for jobs and outbox deliveries alike, is made
//! here from plain data: the attempt just made, the attempts allowed, and the [`ErrorKind`] that
//! ended it. The worker only carries the decision out. The retry delay grows exponentially from a
//! base to a cap; jitter is a number the caller passes in, so this stays deterministic and
//! testable.

use std::time::Duration;

/// What kind of error ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A failure that may pass: a 5xx, a timeout, a dropped connection, Salesforce unavailable.
    Transient,
    /// A failure that will not pass by retrying: the fulfilment system rejected or failed the
    /// order, a receiver refused the notification.
    Permanent,
}

impl ErrorKind {
    /// [`ErrorKind::Transient`] when `transient`, else [`ErrorKind::Permanent`].
    pub fn of(transient: bool) -> ErrorKind {
        if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        }
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Try a new attempt after `delay`.
    Retry {
        /// Time until the next attempt.
        delay: Duration,
    },
    /// Give up: keep it as a dead letter (a job also writes the failure to Salesforce and
    /// notifies).
    Dead,
}

/// The retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts a job gets (`SFCDC_MAX_ATTEMPTS`).
    pub max_attempts: i32,
    /// Delay before the second attempt (`SFCDC_RETRY_BASE`).
    pub base: Duration,
    /// Longest delay (`SFCDC_RETRY_MAX`).
    pub cap: Duration,
}

impl RetryPolicy {
    /// The delay after attempt `attempt` (1-based), before jitter: base · 2^(attempt-1), capped.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = (attempt.max(1) - 1).min(30) as u32;
        self.base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.cap)
    }
}

/// The next state after attempt `attempt` (1-based) failed with an error of `kind`. `jitter` in
/// `[0, 1)` spreads retries: the delay is scaled into `[0.5, 1.0)` of its nominal value.
pub fn next(policy: &RetryPolicy, attempt: i32, kind: ErrorKind, jitter: f64) -> Transition {
    match kind {
        ErrorKind::Permanent => Transition::Dead,
        ErrorKind::Transient if attempt >= policy.max_attempts => Transition::Dead,
        ErrorKind::Transient => {
            let nominal = policy.delay(attempt);
            let factor = 0.5 + jitter.clamp(0.0, 1.0) / 2.0;
            Transition::Retry {
                delay: nominal.mul_f64(factor),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_secs(5),
        cap: Duration::from_secs(60),
    };

    #[test]
    fn every_kind_at_every_attempt() {
        for attempt in 1..=6 {
            for jitter in [0.0, 0.5, 0.999] {
                assert_eq!(
                    next(&POLICY, attempt, ErrorKind::Permanent, jitter),
                    Transition::Dead
                );
                let t = next(&POLICY, attempt, ErrorKind::Transient, jitter);
                if attempt >= POLICY.max_attempts {
                    assert_eq!(t, Transition::Dead, "attempt {attempt}");
                } else {
                    let Transition::Retry { delay } = t else {
                        panic!("attempt {attempt}: {t:?}")
                    };
                    let nominal = POLICY.delay(attempt);
                    assert!(
                        delay >= nominal / 2 && delay < nominal,
                        "attempt {attempt}: {delay:?} vs {nominal:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn kinds_come_from_the_transient_flag() {
        assert_eq!(ErrorKind::of(true), ErrorKind::Transient);
        assert_eq!(ErrorKind::of(false), ErrorKind::Permanent);
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let d: Vec<u64> = (1..=6).map(|a| POLICY.delay(a).as_secs()).collect();
        assert_eq!(d, [5, 10, 20, 40, 60, 60]);
        assert_eq!(POLICY.delay(0), Duration::from_secs(5));
        assert_eq!(POLICY.delay(i32::MAX), Duration::from_secs(60));
    }
}
