//! Salesforce authentication: the four `SF_AUTH` methods, the org id, and token refresh.
//!
//! [`Authenticator`] holds the current [`Session`]. A login is single-flight: callers that saw a
//! token rejected ask for a refresh naming the generation they saw, and only the first of them
//! logs in again; the rest get the new session. When the token lifetime is known
//! (`SF_SESSION_TIMEOUT`, or `expires_in` in the token response), a background task refreshes it
//! before it expires. Secrets live in `SecretString`s, and no error or log line carries one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};
use crate::telemetry::events::{InternalEvent, LoggedIn};
use crate::telemetry::metrics::Metrics;

/// How sfcdc logs in (`SF_AUTH`).
#[derive(Clone)]
pub enum AuthMethod {
    /// OAuth 2.0 client credentials.
    ClientCredentials {
        /// `SF_CLIENT_ID`.
        client_id: String,
        /// `SF_CLIENT_SECRET`.
        client_secret: SecretString,
    },
    /// OAuth 2.0 JWT bearer with an RS256 assertion.
    JwtBearer {
        /// `SF_CLIENT_ID` (the assertion's `iss`).
        client_id: String,
        /// `SF_USERNAME` (the assertion's `sub`).
        username: String,
        /// PEM private key from `SF_PRIVATE_KEY_FILE`.
        private_key: SecretString,
        /// `SF_JWT_AUDIENCE` (the assertion's `aud`).
        audience: String,
    },
    /// OAuth 2.0 username-password.
    Password {
        /// `SF_CLIENT_ID`.
        client_id: String,
        /// `SF_CLIENT_SECRET`.
        client_secret: SecretString,
        /// `SF_USERNAME`.
        username: String,
        /// `SF_PASSWORD` (with the security token appended if the org needs one).
        password: SecretString,
    },
    /// A token obtained elsewhere; it cannot be refreshed.
    Token {
        /// `SF_ACCESS_TOKEN`.
        access_token: SecretString,
        /// `SF_INSTANCE_URL`.
        instance_url: String,
    },
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl AuthMethod {
    /// The `SF_AUTH` value.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::ClientCredentials { .. } => "client-credentials",
            AuthMethod::JwtBearer { .. } => "jwt-bearer",
            AuthMethod::Password { .. } => "password",
            AuthMethod::Token { .. } => "token",
        }
    }
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `SF_LOGIN_URL`: where the token endpoint lives.
    pub login_url: String,
    /// `SF_AUTH` and its credentials.
    pub method: AuthMethod,
    /// `SF_ORG_ID`; read from userinfo when absent.
    pub org_id: Option<String>,
    /// `SF_SESSION_TIMEOUT`: token lifetime, when known, for refresh before expiry.
    pub session_timeout: Option<Duration>,
}

/// The JWT bearer assertion's default audience for a login URL. Salesforce accepts only
/// `https://login.salesforce.com`, `https://test.salesforce.com` (sandboxes) or an Experience
/// Cloud site URL as `aud`, also when the token is requested from a My Domain URL; any other
/// login URL (an emulator, a site) is its own audience.
fn jwt_audience(login_url: &str) -> String {
    let host = login_url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com".to_owned()
    } else if host.ends_with(".my.salesforce.com") {
        "https://login.salesforce.com".to_owned()
    } else {
        login_url.to_owned()
    }
}

fn url_setting(env: &Env, key: &str, default: &str) -> Result<String, ConfigError> {
    env.parse_or(key, default.to_owned(), |s| {
        if s.starts_with("https://") || s.starts_with("http://") {
            Ok(s.trim_end_matches('/').to_owned())
        } else {
            Err("expected an https:// URL".into())
        }
    })
}

impl AuthConfig {
    /// Reads `SF_*` variables.
    pub fn from_env(env: &Env) -> Result<AuthConfig, ConfigError> {
        let login_url = url_setting(env, "SF_LOGIN_URL", "https://login.salesforce.com")?;
        let kind = env.choice_or(
            "SF_AUTH",
            "",
            &[
                ("client-credentials", "client-credentials"),
                ("jwt-bearer", "jwt-bearer"),
                ("password", "password"),
                ("token", "token"),
            ],
        )?;
        let why = |m: &str| format!("when SF_AUTH={m}");
        let method = match kind {
            "client-credentials" => AuthMethod::ClientCredentials {
                client_id: env.require("SF_CLIENT_ID", &why(kind))?.to_owned(),
                client_secret: env.require_secret("SF_CLIENT_SECRET", &why(kind))?,
            },
            "jwt-bearer" => {
                let path = env.require("SF_PRIVATE_KEY_FILE", &why(kind))?;
                let pem = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new("SF_PRIVATE_KEY_FILE", format!("cannot read {path}: {e}"))
                })?;
                if jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).is_err() {
                    return Err(ConfigError::new(
                        "SF_PRIVATE_KEY_FILE",
                        format!("{path} is not a PEM RSA private key"),
                    ));
                }
                AuthMethod::JwtBearer {
                    client_id: env.require("SF_CLIENT_ID", &why(kind))?.to_owned(),
                    username: env.require("SF_USERNAME", &why(kind))?.to_owned(),
                    private_key: SecretString::from(pem),
                    audience: url_setting(env, "SF_JWT_AUDIENCE", &jwt_audience(&login_url))?,
                }
            }
            "password" => AuthMethod::Password {
                client_id: env.require("SF_CLIENT_ID", &why(kind))?.to_owned(),
                client_secret: env.require_secret("SF_CLIENT_SECRET", &why(kind))?,
                username: env.require("SF_USERNAME", &why(kind))?.to_owned(),
                password: env.require_secret("SF_PASSWORD", &why(kind))?,
            },
            "token" => AuthMethod::Token {
                access_token: env.require_secret("SF_ACCESS_TOKEN", &why(kind))?,
                instance_url: url_setting(env, "SF_INSTANCE_URL", "").and_then(|u| {
                    if u.is_empty() {
                        Err(ConfigError::new(
                            "SF_INSTANCE_URL",
                            "is required when SF_AUTH=token",
                        ))
                    } else {
                        Ok(u)
                    }
                })?,
            },
            _ => {
                return Err(ConfigError::new(
                    "SF_AUTH",
                    "is required; accepted values are client-credentials, jwt-bearer, password, token",
                ));
            }
        };
        let org_id = env.parse_or("SF_ORG_ID", None, |s| {
            crate::sfid::SfId::parse(s)
                .map(|id| Some(id.to_string()))
                .map_err(|e| e.to_string())
        })?;
        let session_timeout = match env.get("SF_SESSION_TIMEOUT") {
            None => None,
            Some(_) => Some(env.duration_or("SF_SESSION_TIMEOUT", Duration::ZERO)?)
                .filter(|d| !d.is_zero()),
        };
        Ok(AuthConfig {
            login_url,
            method,
            org_id,
            session_timeout,
        })
    }
}

/// A logged-in session.
pub struct Session {
    /// The access token.
    pub access_token: SecretString,
    /// Base URL of the org's REST API, as `instanceurl` metadata wants it.
    pub instance_url: String,
    /// The 18-character org id (`tenantid`).
    pub org_id: String,
    /// When the token stops working, if known.
    pub expires_at: Option<Instant>,
    /// Increments with every login.
    pub generation: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("instance_url", &self.instance_url)
            .field("org_id", &self.org_id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Why a login failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Salesforce refused the credentials (permanent until the configuration changes).
    #[error("Salesforce refused the {method} login: {error} ({description})")]
    Rejected {
        /// The auth method.
        method: &'static str,
        /// OAuth `error`.
        error: String,
        /// OAuth `error_description`.
        description: String,
    },
    /// The login endpoint could not be reached or answered oddly (retryable).
    #[error("login to {url} failed: {reason}")]
    Unreachable {
        /// The endpoint, without credentials.
        url: String,
        /// What happened.
        reason: String,
    },
    /// A static token was rejected; there is nothing to refresh it with.
    #[error(
        "the access token was rejected and SF_AUTH=token cannot refresh it; supply a new SF_ACCESS_TOKEN or another SF_AUTH method"
    )]
    CannotRefresh,
    /// The JWT assertion could not be signed.
    #[error("could not sign the JWT assertion: {0}")]
    Sign(String),
}

impl AuthError {
    /// Whether retrying later may help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Unreachable { .. })
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    instance_url: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The userinfo endpoint's answer, as far as sfcdc reads it.
#[derive(Deserialize)]
pub struct UserInfo {
    /// The org the session belongs to.
    pub organization_id: String,
}

/// Reads the token endpoint's answer to a `method` login: the access token, the instance URL
/// (without a trailing `/`) and the lifetime in seconds if given. A 4xx with an OAuth `error` is
/// a refusal; any other failure or an unreadable body is [`AuthError::Unreachable`] (retryable).
pub fn token_response(
    method: &'static str,
    status: reqwest::StatusCode,
    body: &str,
    token_url: &str,
) -> Result<(SecretString, String, Option<u64>), AuthError> {
    let unreachable = |reason: String| AuthError::Unreachable {
        url: token_url.to_owned(),
        reason,
    };
    if !status.is_success() {
        return Err(match serde_json::from_str::<OAuthErrorBody>(body) {
            Ok(e) if status.is_client_error() && !e.error.is_empty() => AuthError::Rejected {
                method,
                error: e.error,
                description: e.error_description,
            },
            _ => unreachable(format!("HTTP {status}")),
        });
    }
    let t: TokenResponse = serde_json::from_str(body)
        .map_err(|e| unreachable(format!("unexpected token response: {e}")))?;
    Ok((
        SecretString::from(t.access_token),
        t.instance_url.trim_end_matches('/').to_owned(),
        t.expires_in,
    ))
}

/// When a session that started at `started` expires: after `expires_in` seconds (the token
/// response's), else after `timeout` (`SF_SESSION_TIMEOUT`); `None` when unknown, or too far
/// away for an `Instant` (a server may send any number).
pub fn session_expiry(
    started: Instant,
    expires_in: Option<u64>,
    timeout: Option<Duration>,
) -> Option<Instant> {
    let lifetime = expires_in.map(Duration::from_secs).or(timeout);
    lifetime.and_then(|l| started.checked_add(l))
}

#[derive(serde::Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

/// Holds the current session and logs in again when asked.
pub struct Authenticator {
    config: AuthConfig,
    http: reqwest::Client,
    current: RwLock<Option<Arc<Session>>>,
    login: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("method", &self.config.method)
            .field("login_url", &self.config.login_url)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator that has not logged in yet.
    pub fn new(config: AuthConfig, http: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        Authenticator {
            config,
            http,
            current: RwLock::new(None),
            login: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The HTTP client used for logins, shared with REST calls.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The current session without logging in; `None` before the first login.
    pub fn current(&self) -> Option<Arc<Session>> {
        self.current.read().expect("session lock").clone()
    }

    /// The current session, logging in first if there is none.
    pub async fn session(&self) -> Result<Arc<Session>, AuthError> {
        if let Some(s) = self.current() {
            return Ok(s);
        }
        self.refresh(0).await
    }

    /// Logs in again because the session of `seen_generation` was rejected or is about to
    /// expire. Concurrent callers share one login: if a newer session exists, it is returned.
    pub async fn refresh(&self, seen_generation: u64) -> Result<Arc<Session>, AuthError> {
        let _guard = self.login.lock().await;
        if let Some(s) = self.current()
            && s.generation > seen_generation
        {
            return Ok(s);
        }
        if seen_generation > 0 && matches!(self.config.method, AuthMethod::Token { .. }) {
            return Err(AuthError::CannotRefresh);
        }
        let session = Arc::new(self.login().await?);
        LoggedIn {
            method: self.config.method.name(),
            org_id: &session.org_id,
            generation: session.generation,
            refresh: seen_generation > 0,
        }
        .emit(&self.metrics);
        *self.current.write().expect("session lock") = Some(session.clone());
        Ok(session)
    }

    async fn login(&self) -> Result<Session, AuthError> {
        let token_url = format!("{}/services/oauth2/token", self.config.login_url);
        let unreachable = |reason: String| AuthError::Unreachable {
            url: token_url.clone(),
            reason,
        };
        let started = Instant::now();
        let (access_token, instance_url, expires_in) = match &self.config.method {
            AuthMethod::Token {
                access_token,
                instance_url,
            } => (access_token.clone(), instance_url.clone(), None),
            method => {
                let form: Vec<(&str, String)> = match method {
                    AuthMethod::ClientCredentials {
                        client_id,
                        client_secret,
                    } => vec![
                        ("grant_type", "client_credentials".into()),
                        ("client_id", client_id.clone()),
                        ("client_secret", client_secret.expose_secret().to_owned()),
                    ],
                    AuthMethod::Password {
                        client_id,
                        client_secret,
                        username,
                        password,
                    } => vec![
                        ("grant_type", "password".into()),
                        ("client_id", client_id.clone()),
                        ("client_secret", client_secret.expose_secret().to_owned()),
                        ("username", username.clone()),
                        ("password", password.expose_secret().to_owned()),
                    ],
                    AuthMethod::JwtBearer {
                        client_id,
                        username,
                        private_key,
                        audience,
                    } => vec![
                        (
                            "grant_type",
                            "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                        ),
                        (
                            "assertion",
                            self.assertion(client_id, username, audience, private_key)?,
                        ),
                    ],
                    AuthMethod::Token { .. } => unreachable!("handled above"),
                };
                let resp = self
                    .http
                    .post(&token_url)
                    .form(&form)
                    .send()
                    .await
                    .map_err(|e| unreachable(e.without_url().to_string()))?;
                let status = resp.status();
                let body = resp
                    .text()
                    .await
                    .map_err(|e| unreachable(e.without_url().to_string()))?;
                token_response(method.name(), status, &body, &token_url)?
            }
        };
        let org_id = match &self.config.org_id {
            Some(id) => id.clone(),
            None => {
                self.org_id_from_userinfo(&instance_url, &access_token)
                    .await?
            }
        };
        Ok(Session {
            access_token,
            instance_url,
            org_id,
            expires_at: session_expiry(started, expires_in, self.config.session_timeout),
            generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
        })
    }

    fn assertion(
        &self,
        client_id: &str,
        username: &str,
        audience: &str,
        key: &SecretString,
    ) -> Result<String, AuthError> {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 300)
            .unwrap_or(300);
        let claims = JwtClaims {
            iss: client_id,
            sub: username,
            aud: audience,
            exp,
        };
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.expose_secret().as_bytes())
            .map_err(|e| AuthError::Sign(e.to_string()))?;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &key,
        )
        .map_err(|e| AuthError::Sign(e.to_string()))
    }

    async fn org_id_from_userinfo(
        &self,
        instance_url: &str,
        token: &SecretString,
    ) -> Result<String, AuthError> {
        // Userinfo lives on the login host and, for tokens, on the instance.
        let base = match self.config.method {
            AuthMethod::Token { .. } => instance_url,
            _ => &self.config.login_url,
        };
        let url = format!("{base}/services/oauth2/userinfo");
        let unreachable = |reason: String| AuthError::Unreachable {
            url: url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(&url)
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(if matches!(self.config.method, AuthMethod::Token { .. }) {
                AuthError::CannotRefresh
            } else {
                AuthError::Rejected {
                    method: self.config.method.name(),
                    error: "userinfo".into(),
                    description: format!("HTTP {status}"),
                }
            });
        }
        if !status.is_success() {
            return Err(unreachable(format!("HTTP {status}")));
        }
        let info: UserInfo = resp.json().await.map_err(|e| {
            unreachable(format!("unexpected userinfo response: {}", e.without_url()))
        })?;
        crate::sfid::SfId::parse(&info.organization_id)
            .map(|id| id.to_string())
            .map_err(|e| unreachable(format!("userinfo organization_id: {e}")))
    }

    /// Refreshes the session before it expires, when its lifetime is known, until `cancel`.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let auth = self.clone();
        tokio::spawn(async move {
            loop {
                let Some(session) = auth.current() else {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                };
                let Some(expires_at) = session.expires_at else {
                    // Unknown lifetime: refreshes happen when a call is rejected.
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(60)) => continue,
                    }
                };
                let now = Instant::now();
                let lifetime = expires_at.saturating_duration_since(now);
                // Refresh at 80% of the remaining lifetime, and never closer than 5 s to expiry.
                let wait = lifetime
                    .mul_f64(0.8)
                    .min(lifetime.saturating_sub(Duration::from_secs(5)));
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                if auth
                    .current()
                    .is_some_and(|s| s.generation != session.generation)
                {
                    continue;
                }
                if let Err(e) = auth.refresh(session.generation).await {
                    tracing::warn!(error = %e, "Could not refresh the Salesforce session before it expires");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_names_its_missing_variables() {
        let e = AuthConfig::from_env(&Env::from_pairs([])).unwrap_err();
        assert_eq!(e.var, "SF_AUTH");
        let e = AuthConfig::from_env(&Env::from_pairs([("SF_AUTH", "magic")])).unwrap_err();
        assert!(
            e.reason
                .contains("client-credentials, jwt-bearer, password, token")
        );
        let e = AuthConfig::from_env(&Env::from_pairs([
            ("SF_AUTH", "client-credentials"),
            ("SF_CLIENT_ID", "x"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "SF_CLIENT_SECRET");
        let e = AuthConfig::from_env(&Env::from_pairs([
            ("SF_AUTH", "token"),
            ("SF_ACCESS_TOKEN", "t"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "SF_INSTANCE_URL");
        let e = AuthConfig::from_env(&Env::from_pairs([
            ("SF_AUTH", "jwt-bearer"),
            ("SF_PRIVATE_KEY_FILE", "/nope"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "SF_PRIVATE_KEY_FILE");
        let e = AuthConfig::from_env(&Env::from_pairs([
            ("SF_AUTH", "password"),
            ("SF_LOGIN_URL", "login.salesforce.com"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "SF_LOGIN_URL");
        let e = AuthConfig::from_env(&Env::from_pairs([
            ("SF_AUTH", "token"),
            ("SF_ACCESS_TOKEN", "t"),
            ("SF_INSTANCE_URL", "https://x.my.salesforce.com"),
            ("SF_ORG_ID", "00Dbad"),
        ]))
        .unwrap_err();
        assert_eq!(e.var, "SF_ORG_ID");
    }

    #[test]
    fn debug_output_carries_no_secret() {
        let c = AuthConfig::from_env(&Env::from_pairs([
            ("SF_AUTH", "password"),
            ("SF_CLIENT_ID", "id"),
            ("SF_CLIENT_SECRET", "s3cret-value"),
            ("SF_USERNAME", "u"),
            ("SF_PASSWORD", "hunter2-value"),
        ]))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret-value") && !shown.contains("hunter2-value"),
            "{shown}"
        );
    }

    #[test]
    fn the_jwt_audience_follows_salesforce_rules_for_my_domain_login_urls() {
        for (login, aud) in [
            (
                "https://login.salesforce.com",
                "https://login.salesforce.com",
            ),
            ("https://test.salesforce.com", "https://test.salesforce.com"),
            (
                "https://acme.my.salesforce.com",
                "https://login.salesforce.com",
            ),
            (
                "https://acme--uat.sandbox.my.salesforce.com",
                "https://test.salesforce.com",
            ),
            ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ] {
            assert_eq!(super::jwt_audience(login), aud, "{login}");
        }
    }
}
