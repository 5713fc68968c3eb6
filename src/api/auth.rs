//! Who may call the admin server, and for what.
//!
//! Two roles, each a bearer token: the **viewer** (`SFCDC_READ_TOKEN`) reads jobs, deliveries and
//! orders; the **operator** (`SFCDC_ADMIN_TOKEN`) does everything a viewer does, plus changes.
//! Only the probes (`/healthz`, `/readyz`) answer without a token, and `/metrics` unless
//! `SFCDC_METRICS_TOKEN` is set. Tokens are held as SHA-256 digests and every configured digest
//! is compared in constant time (`subtle`), whatever the request sends, so neither the timing
//! nor the order of the checks tells which token came close; a token never appears in an answer
//! or a log line. Without the header, or with a token that is none of them, the answer
//! is 401; a viewer asking for a change, or a role whose token is not configured, gets 403 with
//! the variable to set.

use axum::http::{HeaderMap, StatusCode, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads.
    Viewer,
    /// Reads and changes.
    Operator,
}

impl Role {
    /// The role's name, for answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.trim().as_bytes()).into()
}

/// Equal-length digests, compared in constant time.
fn same(a: &Digest32, b: &Digest32) -> bool {
    a.ct_eq(b).into()
}

/// The admin server's tokens.
#[derive(Clone, Default)]
pub struct Access {
    viewer: Option<Digest32>,
    operator: Option<Digest32>,
    metrics: Option<Digest32>,
}

impl Access {
    /// The viewer (`SFCDC_READ_TOKEN`), operator (`SFCDC_ADMIN_TOKEN`) and metrics
    /// (`SFCDC_METRICS_TOKEN`) tokens; an unset one grants nothing.
    pub fn new(
        viewer: Option<&SecretString>,
        operator: Option<&SecretString>,
        metrics: Option<&SecretString>,
    ) -> Access {
        let d = |t: Option<&SecretString>| t.map(|t| digest(t.expose_secret()));
        Access {
            viewer: d(viewer),
            operator: d(operator),
            metrics: d(metrics),
        }
    }

    fn bearer(headers: &HeaderMap) -> Option<Digest32> {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(digest)
    }

    /// The role of the request's token, which must allow at least `need`.
    pub fn require(&self, headers: &HeaderMap, need: Role) -> Result<Role, ApiError> {
        let wanted = match need {
            Role::Viewer => "SFCDC_READ_TOKEN (viewer) or SFCDC_ADMIN_TOKEN (operator)",
            Role::Operator => "SFCDC_ADMIN_TOKEN (operator)",
        };
        let configured = match need {
            Role::Viewer => self.viewer.is_some() || self.operator.is_some(),
            Role::Operator => self.operator.is_some(),
        };
        if !configured {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("this is disabled: set {wanted}"),
            ));
        }
        let Some(given) = Self::bearer(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("this needs a token: send Authorization: Bearer <{wanted}>"),
            ));
        };
        // Both are compared, whichever matches.
        let operator = self.operator.as_ref().is_some_and(|d| same(d, &given));
        let viewer = self.viewer.as_ref().is_some_and(|d| same(d, &given));
        let role = match (operator, viewer) {
            (true, _) => Role::Operator,
            (false, true) => Role::Viewer,
            (false, false) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("the bearer token is not {wanted}"),
                ));
            }
        };
        if role < need {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "the {} token may only read; changes need {wanted}",
                    role.as_str()
                ),
            ));
        }
        Ok(role)
    }

    /// The role a token given outside a header (the console's login form) grants, if any; both
    /// tokens are compared in constant time, whichever matches.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let given = digest(token);
        let operator = self.operator.as_ref().is_some_and(|d| same(d, &given));
        let viewer = self.viewer.as_ref().is_some_and(|d| same(d, &given));
        match (operator, viewer) {
            (true, _) => Some(Role::Operator),
            (false, true) => Some(Role::Viewer),
            (false, false) => None,
        }
    }

    /// Whether any role can log in at all.
    pub fn any_role(&self) -> bool {
        self.viewer.is_some() || self.operator.is_some()
    }

    /// Whether `/metrics` may be read: always, unless `SFCDC_METRICS_TOKEN` is set.
    pub fn metrics(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.metrics else {
            return Ok(());
        };
        match Self::bearer(headers) {
            Some(given) if same(expected, &given) => Ok(()),
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the bearer token is not SFCDC_METRICS_TOKEN",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "metrics need a token: send Authorization: Bearer <SFCDC_METRICS_TOKEN>",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn the_operator_does_what_a_viewer_does_and_a_viewer_cannot_change() {
        let (read, admin) = (
            secret("read-token-0123456789"),
            secret("admin-token-0123456789"),
        );
        let a = Access::new(Some(&read), Some(&admin), None);
        let status = |r: Result<Role, ApiError>| r.map_err(|e| e.status());
        assert_eq!(
            status(a.require(&with(Some("read-token-0123456789")), Role::Viewer)),
            Ok(Role::Viewer)
        );
        assert_eq!(
            status(a.require(&with(Some("admin-token-0123456789")), Role::Viewer)),
            Ok(Role::Operator)
        );
        assert_eq!(
            status(a.require(&with(Some("read-token-0123456789")), Role::Operator)),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(a.require(&with(None), Role::Viewer)),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(a.require(&with(Some("guess")), Role::Viewer)),
            Err(StatusCode::UNAUTHORIZED)
        );
        // Metrics stay open without their own token.
        assert!(a.metrics(&with(None)).is_ok());
    }

    #[test]
    fn without_tokens_nothing_but_the_probes_and_metrics_answers() {
        let a = Access::new(None, None, None);
        for need in [Role::Viewer, Role::Operator] {
            let e = a.require(&with(Some("anything")), need).unwrap_err();
            assert_eq!(e.status(), StatusCode::FORBIDDEN);
        }
        let m = secret("metrics-token-0123456789");
        let a = Access::new(None, None, Some(&m));
        assert!(a.metrics(&with(Some("metrics-token-0123456789"))).is_ok());
        assert_eq!(
            a.metrics(&with(None)).unwrap_err().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
