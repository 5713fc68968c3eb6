//! The org's daily API request allocation, counted as Salesforce counts it.
//!
//! Every authenticated call to the data API (`/services/data/vNN.N/…`) takes one request from the
//! allocation, and its answer carries `Sforce-Limit-Info: api-usage=<used>/<max>`. Once the
//! allocation is used up, calls are refused with 403 `REQUEST_LIMIT_EXCEEDED` (and are not
//! counted) until the 24-hour window that began with the first counted call ends, or the
//! allocation is raised (the `api_limit` fault). The versions list, OAuth, SOAP login and the
//! control API are not counted, as in Salesforce. The default is a Developer Edition org's
//! 15,000 requests; `--fault api-limit=[USED/]MAX` or the control API set another.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A Developer Edition org's daily API requests.
pub const DEFAULT_DAILY_API_REQUESTS: u64 = 15_000;

/// A full sandbox's daily API requests: what [`crate::EmulatorConfig::ephemeral`] gives tests,
/// the demo and the benchmarks, which make more calls than a Developer Edition org allows.
pub const SANDBOX_DAILY_API_REQUESTS: u64 = 5_000_000;

/// How long usage accumulates before it starts again from zero.
const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The allocation and what has been used of it.
#[derive(Debug)]
pub struct ApiUsage {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    max: u64,
    used: u64,
    since: Instant,
}

/// Usage at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Requests counted in the window.
    pub used: u64,
    /// The allocation.
    pub max: u64,
}

impl Usage {
    /// The `Sforce-Limit-Info` header value.
    pub fn header(self) -> String {
        format!("api-usage={}/{}", self.used, self.max)
    }

    /// Requests left in the window.
    pub fn remaining(self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

impl Default for ApiUsage {
    fn default() -> Self {
        ApiUsage::new(DEFAULT_DAILY_API_REQUESTS)
    }
}

impl ApiUsage {
    /// An allocation of `max` requests, none used.
    pub fn new(max: u64) -> Self {
        ApiUsage {
            state: Mutex::new(State {
                max,
                used: 0,
                since: Instant::now(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut s = self.state.lock().expect("api usage lock");
        if s.since.elapsed() >= WINDOW {
            s.used = 0;
            s.since = Instant::now();
        }
        s
    }

    /// Takes one request: `Ok` with the usage counting it, or `Err` with the usage when the
    /// allocation is used up (the request is not counted).
    pub fn take(&self) -> Result<Usage, Usage> {
        let mut s = self.state();
        if s.used >= s.max {
            return Err(Usage {
                used: s.used,
                max: s.max,
            });
        }
        s.used += 1;
        Ok(Usage {
            used: s.used,
            max: s.max,
        })
    }

    /// The usage now.
    pub fn usage(&self) -> Usage {
        let s = self.state();
        Usage {
            used: s.used,
            max: s.max,
        }
    }

    /// Sets the allocation, and the usage when given.
    pub fn set(&self, max: u64, used: Option<u64>) {
        let mut s = self.state();
        s.max = max;
        if let Some(used) = used {
            s.used = used;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_until_the_allocation_is_used_up() {
        let u = ApiUsage::new(2);
        assert_eq!(u.take(), Ok(Usage { used: 1, max: 2 }));
        assert_eq!(u.take().map(Usage::header).as_deref(), Ok("api-usage=2/2"));
        assert_eq!(u.take(), Err(Usage { used: 2, max: 2 }));
        assert_eq!(u.usage().remaining(), 0);
        u.set(3, None);
        assert_eq!(u.take(), Ok(Usage { used: 3, max: 3 }));
        u.set(10, Some(0));
        assert_eq!(u.usage(), Usage { used: 0, max: 10 });
        assert_eq!(ApiUsage::default().usage().max, 15_000);
    }
}
