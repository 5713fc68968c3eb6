//! Console sessions and the failed-login limit, held in memory.
//!
//! A login exchanges a token for a session: a random secret in an `HttpOnly`, `SameSite=Strict`
//! cookie, a public id for the audit trail and the page header, a role, a CSRF token that every
//! state-changing form carries, and an expiry (`SFCDC_CONSOLE_SESSION_TTL`). Only the secret's
//! SHA-256 digest is kept, so the table holds nothing a cookie could be rebuilt from, and a
//! lookup compares digests. Logout ends a session at once; a restart ends them all.
//!
//! Failed logins are counted per client address in a fixed window: past the limit, that address
//! is refused until the window ends, whatever it sends. Both tables are bounded, so a flood of
//! logins or addresses cannot grow memory without end.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::auth::Role;

/// Failed logins an address may make per window.
pub const MAX_FAILURES: u32 = 5;
/// The failed-login window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Most sessions held at once.
const MAX_SESSIONS: usize = 10_000;
/// Most addresses whose failures are counted at once.
const MAX_ADDRESSES: usize = 10_000;

/// A logged-in console user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The public id: in the audit trail and the page header, never a credential.
    pub id: String,
    /// What the session may do.
    pub role: Role,
    /// The token every state-changing form must carry.
    pub csrf: String,
    /// When it ends, epoch ms.
    pub expires_ms: i64,
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, given: &str) -> bool {
        self.csrf.as_bytes().ct_eq(given.as_bytes()).into()
    }
}

/// Why a login was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginRefused {
    /// Too many failures from this address: try again after this many seconds.
    TooMany(u64),
    /// Too many sessions are open.
    Full,
}

/// The session table and the failure counts.
pub struct Sessions {
    ttl: Duration,
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<HashMap<IpAddr, (u32, i64)>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// 244 random bits as 64 hex digits.
fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Sessions {
    /// Sessions that last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `role`; returns the cookie's secret and the session.
    pub fn create(&self, role: Role, now_ms: i64) -> Result<(String, Session), LoginRefused> {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires_ms > now_ms);
            if map.len() >= MAX_SESSIONS {
                return Err(LoginRefused::Full);
            }
        }
        let secret = random_hex();
        let session = Session {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            role,
            csrf: random_hex(),
            expires_ms: now_ms.saturating_add(self.ttl.as_millis() as i64),
        };
        map.insert(digest(&secret), session.clone());
        Ok((secret, session))
    }

    /// The live session whose cookie secret is `secret`; an expired one is removed.
    pub fn get(&self, secret: &str, now_ms: i64) -> Option<Session> {
        let key = digest(secret);
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&key) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session whose cookie secret is `secret`.
    pub fn end(&self, secret: &str) {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&digest(secret));
    }

    /// Whether `addr` may try to log in now.
    pub fn may_try(&self, addr: IpAddr, now_ms: i64) -> Result<(), LoginRefused> {
        let window = FAILURE_WINDOW.as_millis() as i64;
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&addr) {
            Some((n, start)) if *n >= MAX_FAILURES && now_ms < start + window => Err(
                LoginRefused::TooMany(((start + window - now_ms) as u64).div_ceil(1000)),
            ),
            _ => Ok(()),
        }
    }

    /// Counts a failed login from `addr`.
    pub fn failed(&self, addr: IpAddr, now_ms: i64) {
        let window = FAILURE_WINDOW.as_millis() as i64;
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ADDRESSES {
            map.retain(|_, (_, start)| now_ms < *start + window);
        }
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&addr) {
            // Still full of live windows: count this one in the oldest's place.
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, s))| *s).map(|(a, _)| *a) {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(addr).or_insert((0, now_ms));
        if now_ms >= entry.1 + window {
            *entry = (0, now_ms);
        }
        entry.0 += 1;
    }

    /// Forgets `addr`'s failures (a successful login).
    pub fn succeeded(&self, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_end_and_keep_no_secret() {
        let s = Sessions::new(Duration::from_secs(60));
        let (secret, session) = s.create(Role::Viewer, 1_000).unwrap();
        assert_eq!(secret.len(), 64);
        assert_ne!(session.csrf, secret);
        assert!(!secret.contains(&session.id));
        assert_eq!(s.get(&secret, 1_000), Some(session.clone()));
        assert_eq!(s.get(&secret, 60_999).map(|x| x.role), Some(Role::Viewer));
        assert_eq!(s.get(&secret, 61_000), None, "expired");
        let (secret, _) = s.create(Role::Operator, 1_000).unwrap();
        s.end(&secret);
        assert_eq!(s.get(&secret, 1_001), None, "logged out");
        assert_eq!(s.get("made-up", 1_001), None);
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches("x"));
    }

    #[test]
    fn failed_logins_are_limited_per_address_for_a_window() {
        let s = Sessions::new(Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.may_try(a, 0), Ok(()));
            s.failed(a, 0);
        }
        assert_eq!(s.may_try(a, 1_000), Err(LoginRefused::TooMany(299)));
        assert_eq!(s.may_try(b, 1_000), Ok(()), "another address");
        assert_eq!(s.may_try(a, 300_000), Ok(()), "the window ended");
        s.failed(a, 300_000);
        assert_eq!(s.may_try(a, 300_001), Ok(()), "a new window");
        s.succeeded(a);
        assert_eq!(s.may_try(a, 300_002), Ok(()));
    }
}
