//! The one pure function that turns a step's outcome into a job's next state.
//!
//! Every decision about retries and dead letters is made here, from plain data: the attempt just
//! made, the attempts allowed, and what kind of error (if any) ended it. The worker only carries
//! the decision out. The retry delay grows exponentially from a base to a cap; jitter is applied by
//! the caller from a number it passes in, so this stays deterministic and testable.

use std::time::Duration;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The fulfilment system finished the work.
    Completed,
    /// Submitted (or still running): poll again later. Polls use no attempt.
    Pending,
    /// The order no longer qualifies; nothing to do.
    NoLongerQualifies,
    /// A failure that may pass: a 5xx, a timeout, a dropped connection, Salesforce unavailable.
    Transient,
    /// A failure that will not pass by retrying: the fulfilment system rejected or failed the
    /// order.
    Permanent,
}

/// What happens to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Done; notify.
    Complete,
    /// Poll again after the poll interval; the lease is released meanwhile.
    Poll,
    /// Stop without error; no notification.
    Cancel,
    /// Try a new attempt after `delay`.
    Retry {
        /// Time until the next attempt.
        delay: Duration,
    },
    /// Give up: write the failure to Salesforce, keep the job as a dead letter, notify.
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

/// The next state after attempt `attempt` (1-based) ended with `outcome`. `jitter` in `[0, 1)`
/// spreads retries: the delay is scaled into `[0.5, 1.0)` of its nominal value.
pub fn next(policy: &RetryPolicy, attempt: i32, outcome: StepOutcome, jitter: f64) -> Transition {
    match outcome {
        StepOutcome::Completed => Transition::Complete,
        StepOutcome::Pending => Transition::Poll,
        StepOutcome::NoLongerQualifies => Transition::Cancel,
        StepOutcome::Permanent => Transition::Dead,
        StepOutcome::Transient if attempt >= policy.max_attempts => Transition::Dead,
        StepOutcome::Transient => {
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
    fn every_outcome_at_every_attempt() {
        for attempt in 1..=6 {
            for jitter in [0.0, 0.5, 0.999] {
                assert_eq!(
                    next(&POLICY, attempt, StepOutcome::Completed, jitter),
                    Transition::Complete
                );
                assert_eq!(
                    next(&POLICY, attempt, StepOutcome::Pending, jitter),
                    Transition::Poll
                );
                assert_eq!(
                    next(&POLICY, attempt, StepOutcome::NoLongerQualifies, jitter),
                    Transition::Cancel
                );
                assert_eq!(
                    next(&POLICY, attempt, StepOutcome::Permanent, jitter),
                    Transition::Dead
                );
                let t = next(&POLICY, attempt, StepOutcome::Transient, jitter);
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
    fn delays_double_up_to_the_cap() {
        let d: Vec<u64> = (1..=6).map(|a| POLICY.delay(a).as_secs()).collect();
        assert_eq!(d, [5, 10, 20, 40, 60, 60]);
        assert_eq!(POLICY.delay(0), Duration::from_secs(5));
        assert_eq!(POLICY.delay(i32::MAX), Duration::from_secs(60));
    }
}
