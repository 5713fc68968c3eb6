//! The cache invalidations one instance tells the rest of the fleet, as `NOTIFY` payloads: the
//! orders (with their account when known) whose cached reads a commit made stale, and the orders
//! whose guard facts it made stale. Each payload stays under `NOTIFY`'s size limit; a commit that
//! touches more is told in several. Receivers ignore their own (`from`) and anything they cannot
//! parse (a newer or older sender), logging it.

use serde::{Deserialize, Serialize};

use crate::rules::Invalidation;
use crate::sfid::SfId;

/// The largest payload produced, in bytes (`NOTIFY` takes 8000, less the schema prefix).
pub const MAX_PAYLOAD: usize = 7_000;

/// One payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The sending instance.
    pub from: String,
    /// Orders to invalidate, with their account when the event named it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orders: Vec<(String, Option<String>)>,
    /// Orders whose guard facts to forget.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<String>,
}

impl Notice {
    /// The invalidations it carries.
    pub fn invalidations(&self) -> Vec<Invalidation> {
        self.orders
            .iter()
            .filter_map(|(o, a)| {
                Some(Invalidation::Order {
                    order_id: SfId::parse(o).ok()?,
                    account_id: a.clone(),
                })
            })
            .collect()
    }

    /// The orders whose guard facts it forgets.
    pub fn guard_ids(&self) -> Vec<SfId> {
        self.guards
            .iter()
            .filter_map(|g| SfId::parse(g).ok())
            .collect()
    }
}

/// The payloads that tell the fleet about `invalidations` and `forgets`: none when there is
/// nothing to tell.
pub fn notices(from: &str, invalidations: &[Invalidation], forgets: &[SfId]) -> Vec<String> {
    let mut out = Vec::new();
    let fresh = || Notice {
        from: from.to_owned(),
        ..Notice::default()
    };
    let mut current = fresh();
    // An entry costs at most this many bytes once encoded (ids are 18 characters).
    const ENTRY: usize = 64;
    let mut size = from.len() + 64;
    let mut flush = |current: &mut Notice, size: &mut usize| {
        if !(current.orders.is_empty() && current.guards.is_empty()) {
            out.push(serde_json::to_string(current).unwrap_or_default());
        }
        *current = fresh();
        *size = from.len() + 64;
    };
    for inv in invalidations {
        let Invalidation::Order {
            order_id,
            account_id,
        } = inv;
        if size + ENTRY > MAX_PAYLOAD {
            flush(&mut current, &mut size);
        }
        current
            .orders
            .push((order_id.to_string(), account_id.clone()));
        size += ENTRY;
    }
    for id in forgets {
        if size + ENTRY > MAX_PAYLOAD {
            flush(&mut current, &mut size);
        }
        current.guards.push(id.to_string());
        size += ENTRY;
    }
    flush(&mut current, &mut size);
    out
}

/// Parses a payload.
pub fn parse(payload: &str) -> Result<Notice, serde_json::Error> {
    serde_json::from_str(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> SfId {
        SfId::parse(&format!("801Hs{:010}", n)).unwrap()
    }

    #[test]
    fn what_a_commit_changed_round_trips_in_payloads_under_the_limit() {
        assert!(notices("a", &[], &[]).is_empty());
        let invalidations: Vec<Invalidation> = (0..500)
            .map(|n| Invalidation::Order {
                order_id: id(n),
                account_id: (n % 2 == 0).then(|| "001Hs0000000Q0vIAE".to_owned()),
            })
            .collect();
        let forgets: Vec<SfId> = (0..300).map(id).collect();
        let payloads = notices("instance-1", &invalidations, &forgets);
        assert!(payloads.len() > 1, "split");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let parsed: Vec<Notice> = payloads.iter().map(|p| parse(p).unwrap()).collect();
        assert!(parsed.iter().all(|n| n.from == "instance-1"));
        let back: Vec<Invalidation> = parsed.iter().flat_map(Notice::invalidations).collect();
        assert_eq!(back, invalidations);
        let guards: Vec<SfId> = parsed.iter().flat_map(Notice::guard_ids).collect();
        assert_eq!(guards, forgets);
    }
}
