//! Fault injection: the failures sfcdc must survive, on demand.
//!
//! A [`Fault`] is the same value whether it comes from the command line (`--fault
//! disconnect-after=50`) or from the control API (`POST /emulator/faults` with
//! `{"kind":"disconnect_after","events":50}`), so both paths inject exactly the same thing.
//! Faults that change data (gap events, a schema change, corrupt payloads, long replay ids) act on
//! the world when injected; faults that change the service's behaviour are held here and read by
//! the gRPC and REST layers.

use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::schema::ChangeType;

/// One fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// After `events` more events are delivered (over all subscriptions), end the stream that
    /// delivered the last one with `INTERNAL` / `service.unavailable`. One-shot.
    DisconnectAfter {
        /// Events to deliver first.
        events: u64,
    },
    /// Refuse new subscriptions with `service.unavailable` for `seconds`.
    RefuseSubscriptions {
        /// How long.
        seconds: f64,
    },
    /// Expire every issued access token now.
    ExpireTokens,
    /// Corrupt the payload of the next `count` events (default 1).
    CorruptNext {
        /// How many events.
        #[serde(default = "one")]
        count: u32,
    },
    /// Emit a gap event on the Order channel: `GAP_CREATE`, `GAP_UPDATE`, `GAP_DELETE`,
    /// `GAP_UNDELETE` (for `record_id`, or an existing order) or `GAP_OVERFLOW` (no record id).
    Gap {
        /// The gap change type.
        change_type: ChangeType,
        /// The order it concerns.
        #[serde(default)]
        record_id: Option<String>,
    },
    /// Add a custom text field to Order, so later events carry a new schema id.
    SchemaChange {
        /// Field API name (default `Fulfilment_Notes__c`).
        #[serde(default)]
        field: Option<String>,
    },
    /// Delay every gRPC and REST response by `ms` (0 switches it off).
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Emit 10-byte replay ids (8-byte big-endian plus two zero bytes) from now on.
    LongReplayIds {
        /// On or off.
        #[serde(default = "yes")]
        enabled: bool,
    },
    /// Purge every event now, as if the retention window had passed: stored replay ids become
    /// expired.
    ExpireEvents,
    /// Answer the next `count` data API requests (under `/services/data/`) with 503
    /// `SERVER_UNAVAILABLE` without performing them (default 1). OAuth, SOAP login, the control
    /// API and the systems outside Salesforce are unaffected. Injecting again sets the remaining
    /// count rather than adding to it, so a count of 0 disarms.
    RestUnavailable {
        /// How many requests.
        #[serde(default = "one")]
        count: u32,
    },
    /// Emit the next `count` Order change events (default 1) with `recordIds` given as the key
    /// prefix and a wildcard (`801*`), as Salesforce does when it knows which kind of record
    /// changed but not which ones.
    WildcardIds {
        /// How many events.
        #[serde(default = "one")]
        count: u32,
    },
    /// The next Bulk API 2.0 query job ends `Failed`, with an error message.
    BulkFail,
    /// The next Bulk API 2.0 query job stays `InProgress` for `seconds` (or until aborted);
    /// without `seconds`, until aborted.
    BulkStall {
        /// How long; `None` for as long as it takes to abort it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<f64>,
    },
    /// Set the org's daily API request allocation to `max`, and what has been used of it to
    /// `used` when given: past the allocation, data API requests are refused with 403
    /// `REQUEST_LIMIT_EXCEEDED` ([`crate::limits`]). Clearing faults restores the default
    /// allocation and leaves the usage.
    ApiLimit {
        /// The allocation (Salesforce's `DailyApiRequests.Max`).
        max: u64,
        /// Requests already used in the window.
        #[serde(default)]
        used: Option<u64>,
    },
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl FromStr for Fault {
    type Err = String;

    /// Parses the command-line form: `name` or `name=value`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        let need = |what: &str| {
            value.ok_or_else(|| format!("fault '{name}' needs a value: {name}={what}"))
        };
        let num = |what: &str| -> Result<u64, String> {
            need(what)?.parse().map_err(|_| {
                format!(
                    "fault '{name}': '{}' is not a whole number",
                    value.unwrap_or_default()
                )
            })
        };
        Ok(match name {
            "disconnect-after" => Fault::DisconnectAfter {
                events: num("EVENTS")?,
            },
            "refuse-subscriptions" => Fault::RefuseSubscriptions {
                seconds: humantime::parse_duration(need("DURATION")?)
                    .map_err(|e| format!("fault '{name}': {e}"))?
                    .as_secs_f64(),
            },
            "expire-tokens" => Fault::ExpireTokens,
            "corrupt-next" => Fault::CorruptNext {
                count: value.map_or(Ok(1), |_| num("COUNT").map(|n| n as u32))?,
            },
            "gap" => {
                let v = need("GAP_UPDATE[:ORDER_ID]")?;
                let (ct, id) = match v.split_once(':') {
                    Some((c, i)) => (c, Some(i.to_owned())),
                    None => (v, None),
                };
                let change_type = ChangeType::from_symbol(ct)
                    .filter(|c| c.is_gap())
                    .ok_or_else(|| format!("fault 'gap': '{ct}' is not one of GAP_CREATE, GAP_UPDATE, GAP_DELETE, GAP_UNDELETE, GAP_OVERFLOW"))?;
                Fault::Gap {
                    change_type,
                    record_id: id,
                }
            }
            "schema-change" => Fault::SchemaChange {
                field: value.map(str::to_owned),
            },
            "delay" => Fault::Delay {
                ms: humantime::parse_duration(need("DURATION")?)
                    .map_err(|e| format!("fault '{name}': {e}"))?
                    .as_millis() as u64,
            },
            "long-replay-ids" => Fault::LongReplayIds {
                enabled: value.is_none_or(|v| v != "off" && v != "false"),
            },
            "expire-events" => Fault::ExpireEvents,
            "wildcard-ids" => Fault::WildcardIds {
                count: value.map_or(Ok(1), |_| num("COUNT").map(|n| n as u32))?,
            },
            "bulk-fail" => Fault::BulkFail,
            "bulk-stall" => Fault::BulkStall {
                seconds: value
                    .map(|v| {
                        humantime::parse_duration(v)
                            .map(|d| d.as_secs_f64())
                            .map_err(|e| format!("fault '{name}': {e}"))
                    })
                    .transpose()?,
            },
            "rest-unavailable" => Fault::RestUnavailable {
                count: value.map_or(Ok(1), |_| num("COUNT").map(|n| n as u32))?,
            },
            "api-limit" => {
                let v = need("MAX or USED/MAX")?;
                let whole = |s: &str| {
                    s.trim().parse::<u64>().map_err(|_| {
                        format!("fault 'api-limit': '{v}' is not MAX or USED/MAX in whole numbers")
                    })
                };
                match v.split_once('/') {
                    Some((used, max)) => Fault::ApiLimit {
                        max: whole(max)?,
                        used: Some(whole(used)?),
                    },
                    None => Fault::ApiLimit {
                        max: whole(v)?,
                        used: None,
                    },
                }
            }
            other => {
                return Err(format!(
                    "unknown fault '{other}'; known: disconnect-after=N, refuse-subscriptions=DURATION, expire-tokens, corrupt-next[=N], gap=GAP_TYPE[:ID], schema-change[=FIELD], delay=DURATION, long-replay-ids[=off], expire-events, wildcard-ids[=N], bulk-fail, bulk-stall[=DURATION], rest-unavailable[=N], api-limit=[USED/]MAX"
                ));
            }
        })
    }
}

/// A fault from the command line, optionally injected after a delay (`SPEC@DURATION`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// The fault.
    pub fault: Fault,
    /// When to inject it, after start.
    pub after: Duration,
}

impl FromStr for ScheduledFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (spec, after) = match s.rsplit_once('@') {
            Some((spec, d)) => (
                spec,
                humantime::parse_duration(d).map_err(|e| format!("'{d}' after '@': {e}"))?,
            ),
            None => (s, Duration::ZERO),
        };
        Ok(ScheduledFault {
            fault: spec.parse()?,
            after,
        })
    }
}

/// What "for ever" means for a fault given a duration too long to add to the clock.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A fault's duration in seconds, as given on the control API: a non-negative number; one too
/// large for the clock is as good as for ever.
pub fn duration(seconds: f64) -> Result<Duration, String> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(format!(
            "seconds must be a non-negative number, got {seconds}"
        ));
    }
    Ok(Duration::try_from_secs_f64(seconds).map_or(FOREVER, |d| d.min(FOREVER)))
}

/// What happens to the next Bulk API 2.0 query job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BulkFault {
    /// It ends `Failed`.
    Fail,
    /// It stays `InProgress` this long, or (`None`) until it is aborted.
    Stall(Option<Duration>),
}

/// Fault state read by the service layers.
#[derive(Debug, Default)]
pub struct FaultState {
    disconnect_remaining: Mutex<Option<u64>>,
    refuse_until: Mutex<Option<Instant>>,
    delay_ms: AtomicU64,
    rest_unavailable: AtomicU32,
    bulk: Mutex<Option<BulkFault>>,
}

impl FaultState {
    /// Arms the one-shot disconnect.
    pub fn arm_disconnect(&self, events: u64) {
        *self.disconnect_remaining.lock().expect("fault lock") = Some(events);
    }

    /// Takes up to `wanted` events from the disconnect budget. Returns how many may be sent and
    /// whether the stream must end after sending them.
    pub fn take_events(&self, wanted: usize) -> (usize, bool) {
        let mut guard = self.disconnect_remaining.lock().expect("fault lock");
        match *guard {
            None => (wanted, false),
            Some(remaining) => {
                let n = (wanted as u64).min(remaining);
                let left = remaining - n;
                if left == 0 {
                    *guard = None;
                    (n as usize, true)
                } else {
                    *guard = Some(left);
                    (n as usize, false)
                }
            }
        }
    }

    /// Refuses subscriptions until `for_` from now.
    pub fn refuse_for(&self, for_: Duration) {
        *self.refuse_until.lock().expect("fault lock") = Instant::now()
            .checked_add(for_)
            .or_else(|| Instant::now().checked_add(FOREVER));
    }

    /// Whether new subscriptions are being refused.
    pub fn refusing(&self) -> bool {
        self.refuse_until
            .lock()
            .expect("fault lock")
            .is_some_and(|t| Instant::now() < t)
    }

    /// Sets the response delay.
    pub fn set_delay(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Sleeps for the configured response delay, if any.
    pub async fn delay(&self) {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Sets how many more data API requests are refused (0 disarms).
    pub fn set_rest_unavailable(&self, count: u32) {
        self.rest_unavailable.store(count, Ordering::Relaxed);
    }

    /// Takes one refusal from the REST unavailability budget: whether this data API request must
    /// be answered 503. Concurrent callers consume exactly the budget between them.
    pub fn take_rest_unavailable(&self) -> bool {
        self.rest_unavailable
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Arms a fault for the next Bulk API 2.0 query job.
    pub fn arm_bulk(&self, fault: BulkFault) {
        *self.bulk.lock().expect("fault lock") = Some(fault);
    }

    /// Takes the fault armed for the next Bulk API 2.0 query job, if any.
    pub fn take_bulk(&self) -> Option<BulkFault> {
        self.bulk.lock().expect("fault lock").take()
    }

    /// Clears every behavioural fault.
    pub fn clear(&self) {
        *self.disconnect_remaining.lock().expect("fault lock") = None;
        *self.refuse_until.lock().expect("fault lock") = None;
        self.delay_ms.store(0, Ordering::Relaxed);
        self.rest_unavailable.store(0, Ordering::Relaxed);
        *self.bulk.lock().expect("fault lock") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_and_json_forms_agree() {
        let cases = [
            (
                "disconnect-after=50",
                r#"{"kind":"disconnect_after","events":50}"#,
            ),
            (
                "refuse-subscriptions=2s",
                r#"{"kind":"refuse_subscriptions","seconds":2.0}"#,
            ),
            ("expire-tokens", r#"{"kind":"expire_tokens"}"#),
            ("corrupt-next", r#"{"kind":"corrupt_next"}"#),
            (
                "gap=GAP_OVERFLOW",
                r#"{"kind":"gap","change_type":"GAP_OVERFLOW"}"#,
            ),
            (
                "schema-change=Foo__c",
                r#"{"kind":"schema_change","field":"Foo__c"}"#,
            ),
            ("delay=250ms", r#"{"kind":"delay","ms":250}"#),
            ("long-replay-ids", r#"{"kind":"long_replay_ids"}"#),
            ("expire-events", r#"{"kind":"expire_events"}"#),
            ("wildcard-ids=2", r#"{"kind":"wildcard_ids","count":2}"#),
            ("bulk-fail", r#"{"kind":"bulk_fail"}"#),
            ("bulk-stall=2s", r#"{"kind":"bulk_stall","seconds":2.0}"#),
            ("bulk-stall", r#"{"kind":"bulk_stall"}"#),
            ("rest-unavailable", r#"{"kind":"rest_unavailable"}"#),
            (
                "rest-unavailable=3",
                r#"{"kind":"rest_unavailable","count":3}"#,
            ),
            ("api-limit=100", r#"{"kind":"api_limit","max":100}"#),
            (
                "api-limit=100/100",
                r#"{"kind":"api_limit","max":100,"used":100}"#,
            ),
        ];
        for (cli, json) in cases {
            let a: Fault = cli.parse().unwrap();
            let b: Fault = serde_json::from_str(json).unwrap();
            assert_eq!(a, b, "{cli}");
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(
            "gap=UPDATE"
                .parse::<Fault>()
                .unwrap_err()
                .contains("GAP_UPDATE")
        );
        assert!(
            "disconnect-after"
                .parse::<Fault>()
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            "explode"
                .parse::<Fault>()
                .unwrap_err()
                .contains("unknown fault")
        );
        assert!(
            "api-limit=lots"
                .parse::<Fault>()
                .unwrap_err()
                .contains("USED/MAX")
        );
        let s: ScheduledFault = "expire-tokens@30s".parse().unwrap();
        assert_eq!(s.after, Duration::from_secs(30));
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"delay","ms":1,"x":2}"#).is_err());
    }

    #[test]
    fn durations_too_long_for_the_clock_mean_for_ever_and_never_panic() {
        assert_eq!(duration(1.5), Ok(Duration::from_millis(1500)));
        assert_eq!(duration(1e300), Ok(FOREVER));
        assert_eq!(duration(f64::INFINITY), Ok(FOREVER));
        assert!(duration(-1.0).is_err());
        assert!(duration(f64::NAN).is_err());
        let f = FaultState::default();
        f.refuse_for(Duration::MAX);
        assert!(f.refusing());
        f.clear();
        assert!(!f.refusing());
    }

    #[test]
    fn disconnect_budget_is_one_shot() {
        let f = FaultState::default();
        assert_eq!(f.take_events(100), (100, false));
        f.arm_disconnect(150);
        assert_eq!(f.take_events(100), (100, false));
        assert_eq!(f.take_events(100), (50, true));
        assert_eq!(f.take_events(100), (100, false));
    }

    #[test]
    fn rest_unavailable_budget_is_set_shared_and_cleared() {
        let f = FaultState::default();
        assert!(!f.take_rest_unavailable());
        f.set_rest_unavailable(5);
        f.set_rest_unavailable(2);
        assert!(f.take_rest_unavailable());
        assert!(f.take_rest_unavailable());
        assert!(!f.take_rest_unavailable(), "injecting again sets, not adds");
        f.set_rest_unavailable(3);
        f.clear();
        assert!(!f.take_rest_unavailable());
        // Concurrent requests consume exactly the budget.
        f.set_rest_unavailable(50);
        let taken: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..20).filter(|_| f.take_rest_unavailable()).count()))
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(taken, 50);
        assert!(!f.take_rest_unavailable());
    }
}
