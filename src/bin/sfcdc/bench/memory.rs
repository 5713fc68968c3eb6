//! Resident memory of this process, from `/proc/self/status` through
//! [`process_memory`] (Linux; zero elsewhere).
//!
//! The peak (`VmHWM`) can be reset (`5` written to `/proc/self/clear_refs`), so one part of a
//! benchmark can be measured on its own: the RSS just before it, and the peak while it ran. The
//! process-wide peak is kept across resets.

use std::sync::atomic::{AtomicU64, Ordering};

use sfcdc::telemetry::metrics::process_memory;

/// The highest `VmHWM` seen before a reset, bytes.
static PEAK_BEFORE_RESETS: AtomicU64 = AtomicU64::new(0);

fn rss() -> u64 {
    process_memory().map_or(0, |(rss, _)| rss)
}

fn peak() -> u64 {
    process_memory().map_or(0, |(_, peak)| peak)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Resident memory now, MiB.
pub fn current_mib() -> f64 {
    mib(rss())
}

/// The peak since the process started, across resets, MiB.
pub fn process_peak_mib() -> f64 {
    mib(peak().max(PEAK_BEFORE_RESETS.load(Ordering::Relaxed)))
}

/// Resets the peak to the current RSS; whether the kernel allowed it.
fn reset_peak() -> bool {
    PEAK_BEFORE_RESETS.fetch_max(peak(), Ordering::Relaxed);
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Measures how far RSS rises above its current level while a part of a benchmark runs.
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    before: u64,
    reset: bool,
}

impl Growth {
    /// Notes the current RSS and resets the peak.
    pub fn start() -> Growth {
        let before = rss();
        Growth {
            before,
            reset: reset_peak(),
        }
    }

    /// RSS when measuring started, MiB.
    pub fn before_mib(&self) -> f64 {
        mib(self.before)
    }

    /// The peak since [`Growth::start`] minus the RSS then, MiB (none when the peak could not
    /// be reset).
    pub fn peak_growth_mib(&self) -> Option<f64> {
        self.reset.then(|| mib(peak().saturating_sub(self.before)))
    }

    /// RSS now minus the RSS then, MiB (what stays resident, such as a preloaded event log).
    pub fn retained_mib(&self) -> f64 {
        current_mib() - self.before_mib()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_sees_memory_touched_after_start() {
        if current_mib() == 0.0 {
            return; // not Linux
        }
        let growth = Growth::start();
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        if let Some(g) = growth.peak_growth_mib() {
            assert!(g >= 32.0, "{g} MiB");
        }
        drop(block);
        assert!(process_peak_mib() >= growth.before_mib());
    }
}
