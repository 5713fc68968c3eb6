//! Channel liveness, the half of `/readyz` the store cannot answer.
//!
//! Each configured channel has one [`ChannelHealth`], written by its subscription (a stream
//! opened, a message received — event or keepalive —, a batch committed, a permanent stop) and
//! read by the admin API. A channel is ready when it has had a live stream within the keepalive
//! bound (`SFCDC_STREAM_TIMEOUT`): the server sends a keepalive at least every 270 s while events
//! are owed, so a channel silent for longer is not streaming, whatever the reason. A channel that
//! stopped for good (unknown topic, no permission) is never ready again and says why.
//!
//! In a fleet each channel also has a role. The instance holding its lease (the leader) is judged
//! as above. A standby is ready (it is healthy and able to take over), unless nobody in the fleet
//! has held the channel for longer than the bound: then every instance says so.
//!
//! Writes are single atomic stores on the hot path; nothing here blocks a stream.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One channel's liveness.
#[derive(Debug)]
pub struct ChannelHealth {
    name: Arc<str>,
    /// Epoch ms of the last sign of a live stream; 0 before the first.
    live_at_ms: AtomicI64,
    /// Epoch ms of the last committed position; 0 before the first commit of this process.
    committed_at_ms: AtomicI64,
    /// Why the channel stopped for good, if it did.
    stopped: Mutex<Option<String>>,
    /// This instance's part in the channel, once the fleet has decided it.
    role: Mutex<Role>,
}

/// An instance's part in a channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    /// Not decided yet (or no fleet: a lone subscriber).
    Unknown,
    /// This instance holds the lease and subscribes.
    Leader {
        /// The lease generation it holds.
        generation: i64,
    },
    /// Another instance holds it, or nobody does; this one stands by.
    Standby {
        /// The holder, if the lease is held.
        holder: Option<String>,
        /// Since when nobody has held it (epoch ms), if nobody does.
        unheld_since_ms: Option<i64>,
    },
}

impl ChannelHealth {
    fn new(name: &str) -> ChannelHealth {
        ChannelHealth {
            name: Arc::from(name),
            live_at_ms: AtomicI64::new(0),
            committed_at_ms: AtomicI64::new(0),
            stopped: Mutex::new(None),
            role: Mutex::new(Role::Unknown),
        }
    }

    /// Records this instance's part in the channel.
    pub fn set_role(&self, role: Role) {
        *self.role.lock().unwrap_or_else(|p| p.into_inner()) = role;
    }

    /// This instance's part in the channel.
    pub fn role(&self) -> Role {
        self.role.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The channel's topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A stream opened or delivered a message.
    pub fn live(&self, now_ms: i64) {
        self.live_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// A batch (or a keepalive's position) committed.
    pub fn committed(&self, now_ms: i64) {
        self.committed_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The channel stopped for good.
    pub fn stopped(&self, reason: impl Into<String>) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
    }

    /// Epoch ms of the last commit in this process, if any.
    pub fn committed_at_ms(&self) -> Option<i64> {
        Some(self.committed_at_ms.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    fn status(&self, bound: Duration, now_ms: i64) -> ChannelStatus {
        let live_at = Some(self.live_at_ms.load(Ordering::Relaxed)).filter(|t| *t > 0);
        let live_age_seconds = live_at.map(|t| (now_ms - t).max(0) as f64 / 1000.0);
        let stopped = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let role = self.role();
        let problem = match (&stopped, live_age_seconds, &role) {
            (Some(reason), _, _) => Some(format!("stopped for good: {reason}")),
            (
                None,
                _,
                Role::Standby {
                    unheld_since_ms: Some(since),
                    ..
                },
            ) if (now_ms - since) as f64 / 1000.0 > bound.as_secs_f64() => Some(format!(
                "has been held by no instance of the fleet for {:.0} s (bound {} s, SFCDC_STREAM_TIMEOUT)",
                (now_ms - since) as f64 / 1000.0,
                bound.as_secs()
            )),
            (None, _, Role::Standby { .. }) => None,
            (None, None, _) => Some("has not had a live stream yet".to_owned()),
            (None, Some(age), _) if age > bound.as_secs_f64() => Some(format!(
                "has had no live stream for {age:.0} s (bound {} s, SFCDC_STREAM_TIMEOUT)",
                bound.as_secs()
            )),
            (None, Some(_), _) => None,
        };
        ChannelStatus {
            channel: self.name.to_string(),
            role,
            ready: problem.is_none(),
            live_age_seconds,
            problem,
        }
    }
}

/// One channel's answer in `/readyz`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelStatus {
    /// The topic name.
    pub channel: String,
    /// This instance's part in it.
    #[serde(flatten)]
    pub role: Role,
    /// Whether it had a live stream within the bound (a leader), or is held by some instance
    /// (a standby).
    pub ready: bool,
    /// Seconds since the last sign of a live stream, if there was one.
    pub live_age_seconds: Option<f64>,
    /// Why it is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Every configured channel's liveness.
#[derive(Debug)]
pub struct Liveness {
    channels: Vec<Arc<ChannelHealth>>,
    bound: Duration,
}

impl Liveness {
    /// Liveness for `channels`, ready while live within `bound`.
    pub fn new(channels: &[String], bound: Duration) -> Liveness {
        Liveness {
            channels: channels
                .iter()
                .map(|c| Arc::new(ChannelHealth::new(c)))
                .collect(),
            bound,
        }
    }

    /// The entry of `channel`; a channel outside the configured set (as `sfcdc tail` runs) gets
    /// a detached entry that no readiness check reads.
    pub fn channel(&self, channel: &str) -> Arc<ChannelHealth> {
        self.channels
            .iter()
            .find(|c| c.name() == channel)
            .cloned()
            .unwrap_or_else(|| Arc::new(ChannelHealth::new(channel)))
    }

    /// Every configured channel.
    pub fn channels(&self) -> &[Arc<ChannelHealth>] {
        &self.channels
    }

    /// Each channel's readiness at `now_ms`, in configuration order.
    pub fn statuses(&self, now_ms: i64) -> Vec<ChannelStatus> {
        self.channels
            .iter()
            .map(|c| c.status(self.bound, now_ms))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liveness() -> Liveness {
        Liveness::new(
            &["/data/OrderChangeEvent".into(), "/event/X__e".into()],
            Duration::from_secs(300),
        )
    }

    #[test]
    fn a_channel_is_ready_only_while_live_within_the_bound() {
        let l = liveness();
        let now = 1_000_000_000;
        let s = l.statuses(now);
        assert!(s.iter().all(|c| !c.ready));
        assert_eq!(
            s[0].problem.as_deref(),
            Some("has not had a live stream yet")
        );

        l.channel("/data/OrderChangeEvent").live(now - 299_000);
        l.channel("/event/X__e").live(now - 301_000);
        let s = l.statuses(now);
        assert!(s[0].ready, "{s:?}");
        assert_eq!(s[0].live_age_seconds, Some(299.0));
        assert!(!s[1].ready);
        assert_eq!(
            s[1].problem.as_deref(),
            Some("has had no live stream for 301 s (bound 300 s, SFCDC_STREAM_TIMEOUT)")
        );
    }

    #[test]
    fn a_stopped_channel_is_never_ready_and_says_why() {
        let l = liveness();
        let c = l.channel("/event/X__e");
        c.live(10);
        c.stopped("topic not found");
        let s = l.statuses(10);
        assert!(!s[1].ready);
        assert_eq!(
            s[1].problem.as_deref(),
            Some("stopped for good: topic not found")
        );
    }

    #[test]
    fn an_unconfigured_channel_gets_a_detached_entry() {
        let l = liveness();
        l.channel("/data/Other").live(5);
        assert_eq!(l.channels().len(), 2);
        assert!(l.statuses(5).iter().all(|c| !c.ready));
    }
}
