//! Notifiers: who hears about a job that completed or was dead-lettered, and how.
//!
//! A job's final update writes one outbox delivery per configured notifier, with the exact body
//! to send, in the same transaction (see [`crate::store::queue`]); the delivery loop in
//! [`super::deliver`] then sends each on its own schedule, so one failing receiver never delays
//! or repeats another. Receivers may see a delivery more than once (a crash after sending and
//! before recording it); `X-Sfcdc-Delivery` (webhook) and the `delivery` key (GitHub) identify a
//! notification, for deduplication.
//!
//! **Webhook.** A JSON `POST` signed with HMAC-SHA256: `X-Sfcdc-Timestamp: <unix seconds>` and
//! `X-Sfcdc-Signature: sha256=<hex(HMAC(secret, "<timestamp>.<body>"))>`. A receiver recomputes
//! the HMAC over the raw body bytes, compares in constant time, and rejects timestamps more than
//! five minutes old (replays).
//!
//! **GitHub `repository_dispatch`.** `POST {api}/repos/{owner}/{repo}/dispatches` with
//! `event_type` and a `client_payload` of at most ten top-level keys (GitHub's limit), so the
//! same summary fits both notifiers.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value as Json, json};
use sha2::Sha256;

use crate::config::{ConfigError, Env};
use crate::store::JobRow;

/// GitHub's limit on `client_payload` keys.
pub const GITHUB_MAX_KEYS: usize = 10;

/// A configured notifier.
#[derive(Debug, Clone)]
pub enum Notifier {
    /// A signed JSON POST.
    Webhook {
        /// Where to.
        url: String,
        /// The HMAC key.
        secret: SecretString,
    },
    /// A GitHub `repository_dispatch`.
    GitHub {
        /// The API base (`https://api.github.com`, or a GitHub Enterprise `/api/v3` URL).
        api_url: String,
        /// `owner/repo`.
        repo: String,
        /// A token allowed to dispatch to the repository.
        token: SecretString,
        /// The `event_type` workflows listen for.
        event_type: String,
    },
}

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Whether retrying later may help.
    pub transient: bool,
    /// What happened.
    pub message: String,
}

/// The job events that notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// Fulfilment finished and Salesforce was told.
    Completed,
    /// Out of attempts, or failed for good.
    Dead,
}

impl JobEvent {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobEvent::Completed => "completed",
            JobEvent::Dead => "dead",
        }
    }
}

/// The ten-key summary of a job's outcome that every notifier sends.
pub fn summary(
    job: &JobRow,
    event: JobEvent,
    external_id: Option<&str>,
    error: Option<&str>,
    now_ms: i64,
) -> Json {
    json!({
        "event": format!("job.{}", event.as_str()),
        "delivery": format!("{}:{}", job.key, event.as_str()),
        "job_id": job.id,
        "order_id": job.order_id,
        "account_id": job.account_id,
        "trigger_status": job.trigger_status,
        "external_id": external_id,
        "error": error,
        "attempts": job.attempt,
        "finished_at": crate::clock::rfc3339(now_ms),
    })
}

impl Notifier {
    /// Reads the notifier variables: a webhook when `SFCDC_WEBHOOK_URL` is set, GitHub when
    /// `SFCDC_GITHUB_REPO` is set.
    pub fn from_env(env: &Env) -> Result<Vec<Notifier>, ConfigError> {
        let mut out = Vec::new();
        if let Some(url) = env.http_url("SFCDC_WEBHOOK_URL")? {
            out.push(Notifier::Webhook {
                url,
                secret: env.require_secret(
                    "SFCDC_WEBHOOK_SECRET",
                    "when SFCDC_WEBHOOK_URL is set (webhooks are always signed)",
                )?,
            });
        }
        if let Some(repo) = env.get("SFCDC_GITHUB_REPO") {
            let valid = repo.split('/').count() == 2
                && repo.split('/').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                });
            if !valid {
                return Err(ConfigError::new(
                    "SFCDC_GITHUB_REPO",
                    format!("'{repo}' is not valid: expected OWNER/REPO"),
                ));
            }
            let api_url = env
                .http_url("SFCDC_GITHUB_API_URL")?
                .unwrap_or_else(|| "https://api.github.com".to_owned());
            let event_type = env.parse_or(
                "SFCDC_GITHUB_EVENT_TYPE",
                "sfcdc-provisioning".to_owned(),
                |s| {
                    if s.len() <= 100 {
                        Ok(s.to_owned())
                    } else {
                        Err("GitHub allows at most 100 characters".into())
                    }
                },
            )?;
            out.push(Notifier::GitHub {
                api_url: api_url.trim_end_matches('/').to_owned(),
                repo: repo.to_owned(),
                token: env.require_secret("SFCDC_GITHUB_TOKEN", "when SFCDC_GITHUB_REPO is set")?,
                event_type,
            });
        }
        Ok(out)
    }

    /// The stored name (the delivery's `notifier`).
    pub fn name(&self) -> &'static str {
        match self {
            Notifier::Webhook { .. } => "webhook",
            Notifier::GitHub { .. } => "github",
        }
    }

    /// The body this notifier sends for `summary`.
    pub fn body(&self, summary: &Json) -> String {
        match self {
            Notifier::Webhook { .. } => summary.to_string(),
            Notifier::GitHub { event_type, .. } => {
                json!({"event_type": event_type, "client_payload": summary}).to_string()
            }
        }
    }

    /// Sends a stored body.
    pub async fn send(
        &self,
        http: &reqwest::Client,
        body: &str,
        timeout: Duration,
    ) -> Result<(), SendError> {
        let request = match self {
            Notifier::Webhook { url, secret } => {
                // The receiver checks this against its own clock: always the real time.
                let ts = crate::clock::now_ms() / 1000;
                let (ts_header, signature) = sign(secret.expose_secret().as_bytes(), ts, body);
                http.post(url)
                    .header("X-Sfcdc-Timestamp", ts_header)
                    .header("X-Sfcdc-Signature", signature)
                    .header("X-Sfcdc-Delivery", delivery_id(body))
            }
            Notifier::GitHub {
                api_url,
                repo,
                token,
                ..
            } => http
                .post(format!("{api_url}/repos/{repo}/dispatches"))
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
        };
        let resp = request
            .header("Content-Type", "application/json")
            .timeout(timeout)
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| SendError {
                transient: true,
                message: format!("{} request failed: {}", self.name(), e.without_url()),
            })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(());
        }
        let rate_limited = resp
            .headers()
            .get("x-ratelimit-remaining")
            .is_some_and(|v| v == "0");
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        Err(SendError {
            transient: matches!(status, 408 | 425 | 429) || status >= 500 || rate_limited,
            message: format!("{} answered {status}: {text}", self.name()),
        })
    }
}

/// `(timestamp header, signature header)` for a webhook body sent at `ts` (unix seconds).
pub fn sign(secret: &[u8], ts: i64, body: &str) -> (String, String) {
    let ts = ts.to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    (ts, signature)
}

/// The `delivery` key of a summary body, for the webhook's dedup header.
fn delivery_id(body: &str) -> String {
    serde_json::from_str::<Json>(body)
        .ok()
        .and_then(|b| b.get("delivery").and_then(Json::as_str).map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JobState;

    fn job() -> JobRow {
        JobRow {
            id: 7,
            key: "cdc:abc:801".into(),
            order_id: "801Hs00000AbCdEIAZ".into(),
            account_id: Some("001Hs00000AbCdEIAZ".into()),
            trigger_status: "Approved".into(),
            trigger_kind: "status_change".into(),
            state: JobState::Running,
            attempt: 2,
            max_attempts: 8,
            run_at: 0,
            lease_owner: None,
            lease_until: None,
            operation_id: None,
            phase: None,
            submitted_at: None,
            polls: 0,
            generation: 0,
            progress: None,
            result: None,
            external_id: None,
            last_error: None,
            errors: "[]".into(),
            channel: "/data/OrderChangeEvent".into(),
            replay_id: "00".into(),
            event_id: "e".into(),
            payload: "{}".into(),
            created_at: 0,
            updated_at: 0,
            finished_at: None,
        }
    }

    #[test]
    fn the_summary_fits_github_client_payload() {
        let s = summary(&job(), JobEvent::Completed, Some("WH-1"), None, 0);
        assert_eq!(s.as_object().unwrap().len(), GITHUB_MAX_KEYS);
        assert_eq!(s["event"], "job.completed");
        assert_eq!(s["delivery"], "cdc:abc:801:completed");
        let gh = Notifier::GitHub {
            api_url: "https://api.github.com".into(),
            repo: "o/r".into(),
            token: SecretString::from("t".to_owned()),
            event_type: "sfcdc-provisioning".into(),
        };
        let body: Json = serde_json::from_str(&gh.body(&s)).unwrap();
        assert_eq!(body["event_type"], "sfcdc-provisioning");
        assert_eq!(body["client_payload"], s);
        assert_eq!(delivery_id(&gh.body(&s)), "");
        assert_eq!(delivery_id(&s.to_string()), "cdc:abc:801:completed");
    }

    #[test]
    fn signatures_match_a_known_vector() {
        // printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let (ts, sig) = sign(b"secret", 1_700_000_000, r#"{"a":1}"#);
        assert_eq!(ts, "1700000000");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(br#"1700000000.{"a":1}"#);
        assert_eq!(
            sig,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_eq!(sig.len(), "sha256=".len() + 64);
    }

    #[test]
    fn notifier_settings_are_validated_by_name() {
        let err = |pairs: &[(&str, &str)]| {
            Notifier::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        assert_eq!(
            err(&[("SFCDC_WEBHOOK_URL", "https://x.test/h")]).var,
            "SFCDC_WEBHOOK_SECRET"
        );
        assert_eq!(
            err(&[
                ("SFCDC_WEBHOOK_URL", "ftp://x"),
                ("SFCDC_WEBHOOK_SECRET", "s")
            ])
            .var,
            "SFCDC_WEBHOOK_URL"
        );
        assert_eq!(
            err(&[("SFCDC_GITHUB_REPO", "just-a-name")]).var,
            "SFCDC_GITHUB_REPO"
        );
        assert_eq!(
            err(&[("SFCDC_GITHUB_REPO", "o/r")]).var,
            "SFCDC_GITHUB_TOKEN"
        );
        let secret_value = "hunter2-secret";
        let e = err(&[
            ("SFCDC_GITHUB_REPO", "o/r"),
            ("SFCDC_GITHUB_TOKEN", secret_value),
            ("SFCDC_GITHUB_API_URL", "not a url"),
        ]);
        assert_eq!(e.var, "SFCDC_GITHUB_API_URL");
        assert!(!e.to_string().contains(secret_value));
        let ok = Notifier::from_env(&Env::from_pairs([
            ("SFCDC_WEBHOOK_URL", "https://x.test/h"),
            ("SFCDC_WEBHOOK_SECRET", "s"),
            ("SFCDC_GITHUB_REPO", "acme/provisioning"),
            ("SFCDC_GITHUB_TOKEN", "t"),
        ]))
        .unwrap();
        let names: Vec<&str> = ok.iter().map(Notifier::name).collect();
        assert_eq!(names, ["webhook", "github"]);
    }
}
