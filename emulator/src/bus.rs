//! The emulated event bus: one append-only log per topic, with replay ids and retention.
//!
//! Replay ids come from one counter shared by every topic, as on the real multiplexed bus: they
//! increase but are not contiguous within a topic, and a keepalive's `latest_replay_id` (the
//! counter's current value) may lie beyond the last event a subscriber saw. Positions are plain
//! numbers compared with `>`, so resuming from any id a client was ever given, an event's or a
//! keepalive's, is exact.
//!
//! A CUSTOM position is valid when it is at most the counter (otherwise it is unknown) and not
//! older than the newest event retention has purged from that topic (otherwise it has expired).
//!
//! Allocation of an id and the append happen under the one lock that also guards reads, so a
//! reader never sees a counter value whose event is not yet in its topic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// One event in a topic's log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Numeric position (the first 8 bytes of the replay id).
    pub replay: u64,
    /// Replay id bytes exactly as delivered: 8 bytes, or 10 in long-id mode.
    #[serde(with = "serde_bytes_b64")]
    pub replay_bytes: Bytes,
    /// Schema the payload was written with.
    pub schema_id: String,
    /// Avro payload.
    #[serde(with = "serde_bytes_b64")]
    pub payload: Bytes,
    /// Event UUID (`ProducerEvent.id`).
    pub event_id: String,
    /// Append time, epoch milliseconds.
    pub appended_ms: i64,
}

mod serde_bytes_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug)]
struct TopicLog {
    events: VecDeque<Arc<StoredEvent>>,
    /// Replay of the newest purged event; positions below it have expired.
    floor: u64,
    notify: watch::Sender<u64>,
}

impl TopicLog {
    fn new() -> Self {
        TopicLog {
            events: VecDeque::new(),
            floor: 0,
            notify: watch::Sender::new(0),
        }
    }
}

/// Why a CUSTOM replay id cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// Not 8 or 10 bytes.
    Malformed,
    /// Beyond any id the bus has issued.
    Unknown,
    /// Older than the retention window.
    Expired,
}

/// Everything the bus persists across restarts.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BusSnapshot {
    high_water: u64,
    long_ids: bool,
    topics: BTreeMap<String, (u64, Vec<StoredEvent>)>,
}

/// All topics' logs and the shared replay counter.
#[derive(Debug)]
pub struct Bus {
    high_water: u64,
    long_ids: bool,
    topics: BTreeMap<String, TopicLog>,
    rng: ChaCha8Rng,
}

impl Bus {
    /// A bus with the given topics, all empty. The counter starts at a seed-dependent value.
    pub fn new(seed: u64, topics: impl IntoIterator<Item = String>) -> Bus {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_B005);
        Bus {
            high_water: 1_000 + rng.random_range(0..1_000),
            long_ids: false,
            topics: topics.into_iter().map(|t| (t, TopicLog::new())).collect(),
            rng,
        }
    }

    /// Whether a topic exists.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The newest id the bus has issued.
    pub fn high_water(&self) -> u64 {
        self.high_water
    }

    /// Encodes a position as replay id bytes in the current id mode.
    pub fn encode_replay(&self, replay: u64) -> Bytes {
        encode_replay(replay, self.long_ids)
    }

    /// Switches 10-byte replay ids on or off for events appended from now on.
    pub fn set_long_ids(&mut self, on: bool) {
        self.long_ids = on;
    }

    /// Appends an event, allocating its replay id, and wakes the topic's subscribers.
    pub fn append(
        &mut self,
        topic: &str,
        schema_id: &str,
        payload: Bytes,
        event_id: String,
        now_ms: i64,
    ) -> Option<Arc<StoredEvent>> {
        let step = self.rng.random_range(1..=4);
        let log = self.topics.get_mut(topic)?;
        self.high_water += step;
        let event = Arc::new(StoredEvent {
            replay: self.high_water,
            replay_bytes: encode_replay(self.high_water, self.long_ids),
            schema_id: schema_id.to_owned(),
            payload,
            event_id,
            appended_ms: now_ms,
        });
        log.events.push_back(event.clone());
        log.notify.send_replace(self.high_water);
        Some(event)
    }

    /// A receiver that changes whenever the topic gets an event.
    pub fn watch(&self, topic: &str) -> Option<watch::Receiver<u64>> {
        self.topics.get(topic).map(|l| l.notify.subscribe())
    }

    /// Up to `max` events after `position`, stopping before `max_bytes` of payload is exceeded
    /// (at least one event is returned when any is available).
    pub fn read_after(
        &self,
        topic: &str,
        position: u64,
        max: usize,
        max_bytes: usize,
    ) -> Vec<Arc<StoredEvent>> {
        let Some(log) = self.topics.get(topic) else {
            return Vec::new();
        };
        let start = log.events.partition_point(|e| e.replay <= position);
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in log.events.range(start..).take(max) {
            bytes += e.payload.len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e.clone());
        }
        out
    }

    /// The newest event of a topic.
    pub fn last(&self, topic: &str) -> Option<Arc<StoredEvent>> {
        self.topics.get(topic)?.events.back().cloned()
    }

    /// Position of EARLIEST: just before the oldest retained event.
    pub fn earliest(&self, topic: &str) -> u64 {
        self.topics.get(topic).map_or(0, |l| l.floor)
    }

    /// Validates the replay id of a CUSTOM subscription and returns its position.
    pub fn custom_position(&self, topic: &str, replay_id: &[u8]) -> Result<u64, ReplayError> {
        let position = decode_replay(replay_id).ok_or(ReplayError::Malformed)?;
        if position > self.high_water {
            return Err(ReplayError::Unknown);
        }
        if position < self.earliest(topic) {
            return Err(ReplayError::Expired);
        }
        Ok(position)
    }

    /// Drops events appended before `cutoff_ms`. Returns how many were purged.
    pub fn purge_before(&mut self, cutoff_ms: i64) -> usize {
        let mut purged = 0;
        for log in self.topics.values_mut() {
            while log
                .events
                .front()
                .is_some_and(|e| e.appended_ms < cutoff_ms)
            {
                let e = log.events.pop_front().expect("front exists");
                log.floor = e.replay;
                purged += 1;
            }
        }
        purged
    }

    /// Number of retained events per topic.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.topics
            .iter()
            .map(|(t, l)| (t.clone(), l.events.len()))
            .collect()
    }

    /// A copy of the log for persistence.
    pub fn snapshot(&self) -> BusSnapshot {
        BusSnapshot {
            high_water: self.high_water,
            long_ids: self.long_ids,
            topics: self
                .topics
                .iter()
                .map(|(t, l)| {
                    (
                        t.clone(),
                        (l.floor, l.events.iter().map(|e| (**e).clone()).collect()),
                    )
                })
                .collect(),
        }
    }

    /// Restores a persisted log; topics unknown to this bus are dropped.
    pub fn restore(&mut self, snap: BusSnapshot) {
        self.high_water = self.high_water.max(snap.high_water);
        self.long_ids = snap.long_ids;
        for (topic, (floor, events)) in snap.topics {
            if let Some(log) = self.topics.get_mut(&topic) {
                log.floor = floor;
                log.events = events.into_iter().map(Arc::new).collect();
                let tip = log.events.back().map_or(0, |e| e.replay);
                log.notify.send_replace(tip);
            }
        }
    }
}

/// Encodes a position: 8 bytes big-endian, plus two zero bytes in long-id mode (as seen from
/// real orgs).
pub fn encode_replay(replay: u64, long: bool) -> Bytes {
    let mut v = replay.to_be_bytes().to_vec();
    if long {
        v.extend_from_slice(&[0, 0]);
    }
    Bytes::from(v)
}

/// Reads the position of an 8- or 10-byte replay id.
pub fn decode_replay(bytes: &[u8]) -> Option<u64> {
    match bytes.len() {
        8 | 10 => Some(u64::from_be_bytes(bytes[..8].try_into().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus() -> Bus {
        Bus::new(1, ["/a".to_string(), "/b".to_string()])
    }

    #[test]
    fn ids_increase_across_topics_and_reads_start_strictly_after() {
        let mut b = bus();
        let e1 = b
            .append("/a", "s", Bytes::from_static(b"1"), "u1".into(), 0)
            .unwrap();
        let e2 = b
            .append("/b", "s", Bytes::from_static(b"2"), "u2".into(), 0)
            .unwrap();
        let e3 = b
            .append("/a", "s", Bytes::from_static(b"3"), "u3".into(), 0)
            .unwrap();
        assert!(e1.replay < e2.replay && e2.replay < e3.replay);
        let after_e1 = b.read_after("/a", e1.replay, 100, usize::MAX);
        assert_eq!(after_e1.len(), 1);
        assert_eq!(after_e1[0].replay, e3.replay);
        // A keepalive id (from another topic) is a valid position too.
        assert_eq!(b.custom_position("/a", &e2.replay_bytes), Ok(e2.replay));
        assert_eq!(b.read_after("/a", e2.replay, 100, usize::MAX).len(), 1);
    }

    #[test]
    fn custom_positions_are_validated() {
        let mut b = bus();
        let e1 = b.append("/a", "s", Bytes::new(), "u".into(), 10).unwrap();
        let e2 = b.append("/a", "s", Bytes::new(), "u".into(), 20).unwrap();
        assert_eq!(
            b.custom_position("/a", &[1, 2, 3]),
            Err(ReplayError::Malformed)
        );
        assert_eq!(
            b.custom_position("/a", &encode_replay(b.high_water() + 1, false)),
            Err(ReplayError::Unknown)
        );
        assert_eq!(b.purge_before(15), 1);
        assert_eq!(
            b.custom_position("/a", &encode_replay(e1.replay - 1, false)),
            Err(ReplayError::Expired)
        );
        // The newest purged id is still a valid position: nothing after it is lost.
        assert_eq!(b.custom_position("/a", &e1.replay_bytes), Ok(e1.replay));
        assert_eq!(b.earliest("/a"), e1.replay);
        assert_eq!(
            b.read_after("/a", b.earliest("/a"), 10, usize::MAX)[0].replay,
            e2.replay
        );
    }

    #[test]
    fn long_ids_have_ten_bytes_and_the_same_position() {
        let mut b = bus();
        b.set_long_ids(true);
        let e = b.append("/a", "s", Bytes::new(), "u".into(), 0).unwrap();
        assert_eq!(e.replay_bytes.len(), 10);
        assert_eq!(&e.replay_bytes[8..], &[0, 0]);
        assert_eq!(decode_replay(&e.replay_bytes), Some(e.replay));
    }

    #[test]
    fn reads_respect_the_byte_budget_but_always_make_progress() {
        let mut b = bus();
        for _ in 0..3 {
            b.append("/a", "s", Bytes::from(vec![0u8; 100]), "u".into(), 0);
        }
        assert_eq!(b.read_after("/a", 0, 10, 250).len(), 2);
        assert_eq!(b.read_after("/a", 0, 10, 10).len(), 1);
    }
}
