//! OAuth for the emulated org: the configured credentials, the three grant types, and the
//! access tokens it has issued.
//!
//! Tokens look like real ones, `<15-character org id>!<random>`, so clients that derive the org
//! id from the token work. Each token has an expiry (the configured lifetime), and the
//! expire-tokens fault invalidates every token at once; an expired or unknown token is refused by
//! REST and by every gRPC call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngExt;
use serde::Deserialize;
use sha2::Sha256;

/// Credentials the emulated org accepts.
#[derive(Clone)]
pub struct Credentials {
    /// Connected App consumer key.
    pub client_id: String,
    /// Connected App consumer secret.
    pub client_secret: String,
    /// Integration user name.
    pub username: String,
    /// Integration user password.
    pub password: String,
    /// PEM public key that verifies JWT bearer assertions; without it that grant is refused.
    pub jwt_public_key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("jwt_public_key", &self.jwt_public_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            client_id: "sfcdc-demo".into(),
            client_secret: "sfcdc-demo-secret".into(),
            username: "demo@sfcdc.test".into(),
            password: "sfcdc-demo-password".into(),
            jwt_public_key: None,
        }
    }
}

/// An OAuth token-endpoint failure, in Salesforce's `{error, error_description}` shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// `error`.
    pub error: &'static str,
    /// `error_description`.
    pub description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            error,
            description: description.into(),
        }
    }
}

/// The form fields of `POST /services/oauth2/token`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    /// Grant type.
    pub grant_type: Option<String>,
    /// Consumer key.
    pub client_id: Option<String>,
    /// Consumer secret.
    pub client_secret: Option<String>,
    /// User name (password grant).
    pub username: Option<String>,
    /// Password, possibly followed by a security token (password grant).
    pub password: Option<String>,
    /// Signed JWT (JWT bearer grant).
    pub assertion: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JwtClaims {
    #[allow(dead_code)]
    iss: String,
    sub: String,
}

#[derive(Debug, Clone)]
struct TokenInfo {
    expires_at: Instant,
}

/// Issued tokens.
#[derive(Debug)]
pub struct TokenStore {
    tokens: HashMap<String, TokenInfo>,
    lifetime: Duration,
}

/// How a token failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Valid.
    Valid,
    /// Issued, but past its lifetime or expired by a fault.
    Expired,
    /// Never issued here.
    Unknown,
}

impl TokenStore {
    /// A store issuing tokens valid for `lifetime`.
    pub fn new(lifetime: Duration) -> Self {
        TokenStore {
            tokens: HashMap::new(),
            lifetime,
        }
    }

    /// Lifetime of issued tokens.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Issues a new token for the org.
    pub fn issue(&mut self, org_id_15: &str) -> String {
        let mut rng = rand::rng();
        let random: [u8; 48] = rng.random();
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let token = format!("{org_id_15}!AQ{}", body.replace(['-', '_'], "."));
        self.tokens.insert(
            token.clone(),
            TokenInfo {
                expires_at: Instant::now() + self.lifetime,
            },
        );
        token
    }

    /// Registers a token carried over from a previous run (`--state`).
    pub fn adopt(&mut self, token: String) {
        self.tokens.insert(
            token,
            TokenInfo {
                expires_at: Instant::now() + self.lifetime,
            },
        );
    }

    /// Checks a token.
    pub fn check(&self, token: &str) -> TokenState {
        match self.tokens.get(token) {
            None => TokenState::Unknown,
            Some(t) if t.expires_at <= Instant::now() => TokenState::Expired,
            Some(_) => TokenState::Valid,
        }
    }

    /// Expires every token now.
    pub fn expire_all(&mut self) -> usize {
        let now = Instant::now();
        for t in self.tokens.values_mut() {
            t.expires_at = now;
        }
        self.tokens.len()
    }

    /// Tokens still valid, for persistence.
    pub fn valid_tokens(&self) -> Vec<String> {
        let now = Instant::now();
        self.tokens
            .iter()
            .filter(|(_, t)| t.expires_at > now)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Checks a token request against the credentials; on success returns the user name the token
/// is for.
pub fn authenticate(
    creds: &Credentials,
    req: &TokenRequest,
    accepted_audiences: &[String],
) -> Result<String, OAuthError> {
    let grant = req.grant_type.as_deref().unwrap_or("");
    let client_ok = |id: &Option<String>, secret: &Option<String>| -> Result<(), OAuthError> {
        if id.as_deref() != Some(creds.client_id.as_str()) {
            return Err(OAuthError::new(
                "invalid_client_id",
                "client identifier invalid",
            ));
        }
        if secret.as_deref() != Some(creds.client_secret.as_str()) {
            return Err(OAuthError::new(
                "invalid_client",
                "invalid client credentials",
            ));
        }
        Ok(())
    };
    match grant {
        "client_credentials" => {
            client_ok(&req.client_id, &req.client_secret)?;
            Ok(creds.username.clone())
        }
        "password" => {
            client_ok(&req.client_id, &req.client_secret)?;
            if req.username.as_deref() != Some(creds.username.as_str())
                || req.password.as_deref() != Some(creds.password.as_str())
            {
                return Err(OAuthError::new("invalid_grant", "authentication failure"));
            }
            Ok(creds.username.clone())
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let assertion = req
                .assertion
                .as_deref()
                .ok_or_else(|| OAuthError::new("invalid_request", "assertion is required"))?;
            let Some(pem) = &creds.jwt_public_key else {
                return Err(OAuthError::new(
                    "invalid_client",
                    "no certificate is configured for this client",
                ));
            };
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
                OAuthError::new(
                    "invalid_client",
                    "the configured certificate is not an RSA public key",
                )
            })?;
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
            validation.set_audience(accepted_audiences);
            validation.set_issuer(&[creds.client_id.as_str()]);
            validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
            validation.leeway = 5;
            let data =
                jsonwebtoken::decode::<JwtClaims>(assertion, &key, &validation).map_err(|e| {
                    use jsonwebtoken::errors::ErrorKind;
                    let description = match e.kind() {
                        ErrorKind::ExpiredSignature => "expired authorization code",
                        ErrorKind::InvalidIssuer => "client identifier invalid",
                        ErrorKind::InvalidAudience => "audience is invalid",
                        _ => "invalid assertion",
                    };
                    OAuthError::new("invalid_grant", description)
                })?;
            if data.claims.sub != creds.username {
                return Err(OAuthError::new(
                    "invalid_grant",
                    "user hasn't approved this consumer",
                ));
            }
            Ok(creds.username.clone())
        }
        "" => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        )),
        _ => Err(OAuthError::new(
            "unsupported_grant_type",
            "grant type not supported",
        )),
    }
}

/// The client id and secret of an `Authorization: Basic` header, which Salesforce's token
/// endpoint accepts in place of the `client_id` and `client_secret` form fields (RFC 6749
/// §2.3.1: each form-urlencoded, joined by `:`, then base64). `None` if the header is not Basic
/// or not well formed.
pub fn basic_client(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(rest.get(..2)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                rest = &rest[2..];
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).ok()
}

/// The `signature` of a token response: HMAC-SHA256 of `id + issued_at`, keyed by the client
/// secret, as Salesforce computes it.
pub fn response_signature(client_secret: &str, id_url: &str, issued_at: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(client_secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(id_url.as_bytes());
    mac.update(issued_at.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(grant: &str) -> TokenRequest {
        TokenRequest {
            grant_type: Some(grant.into()),
            client_id: Some("sfcdc-demo".into()),
            client_secret: Some("sfcdc-demo-secret".into()),
            username: Some("demo@sfcdc.test".into()),
            password: Some("sfcdc-demo-password".into()),
            assertion: None,
        }
    }

    #[test]
    fn grants_check_every_credential() {
        let c = Credentials::default();
        assert!(authenticate(&c, &req("client_credentials"), &[]).is_ok());
        assert!(authenticate(&c, &req("password"), &[]).is_ok());
        let mut bad = req("password");
        bad.password = Some("nope".into());
        assert_eq!(
            authenticate(&c, &bad, &[]).unwrap_err().error,
            "invalid_grant"
        );
        let mut bad = req("client_credentials");
        bad.client_secret = Some("nope".into());
        assert_eq!(
            authenticate(&c, &bad, &[]).unwrap_err().error,
            "invalid_client"
        );
        assert_eq!(
            authenticate(&c, &req("authorization_code"), &[])
                .unwrap_err()
                .error,
            "unsupported_grant_type"
        );
        let jwt = req("urn:ietf:params:oauth:grant-type:jwt-bearer");
        assert_eq!(
            authenticate(&c, &jwt, &[]).unwrap_err().error,
            "invalid_request"
        );
    }

    #[test]
    fn basic_client_credentials_are_decoded_as_rfc_6749_encodes_them() {
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            basic_client(&basic("sfcdc-demo:sfcdc-demo-secret")),
            Some(("sfcdc-demo".into(), "sfcdc-demo-secret".into()))
        );
        // Form-urlencoded parts: a colon in the secret is %3A, a space is +.
        assert_eq!(
            basic_client(&basic("my+app:s%3Acr%C3%A9t")),
            Some(("my app".into(), "s:crét".into()))
        );
        assert_eq!(
            basic_client(&format!("basic  {}", &basic("a:b")[6..])),
            Some(("a".into(), "b".into()))
        );
        for bad in [
            "Bearer abc".to_owned(),
            "Basic !!!".to_owned(),
            basic("no-colon"),
            basic("a:%G0"),
        ] {
            assert_eq!(basic_client(&bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_expire_and_carry_the_org_id() {
        let mut store = TokenStore::new(Duration::from_secs(60));
        let t = store.issue("00DHs0000000AbC");
        assert!(t.starts_with("00DHs0000000AbC!"));
        assert_eq!(store.check(&t), TokenState::Valid);
        assert_eq!(store.check("nope"), TokenState::Unknown);
        store.expire_all();
        assert_eq!(store.check(&t), TokenState::Expired);
    }
}
