//! Configuration: environment variables, optionally layered over a file named by `SFCDC_CONFIG`.
//!
//! The file uses the same names as the environment, one `NAME=value` per line (`#` starts a
//! comment; values may be quoted), so every setting has exactly one name wherever it is set; the
//! environment wins over the file. [`Env`] is the merged view; each component's `…Config::from_env`
//! validates its variables and fails with a [`ConfigError`] that names the variable and the accepted
//! values. Secrets are wrapped in `SecretString` as soon as they are read and never appear in an
//! error message.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// A setting with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    /// The variable.
    pub var: String,
    /// What is wrong, and what is accepted. Never contains a secret's value.
    pub reason: String,
}

impl ConfigError {
    /// An error for `var`.
    pub fn new(var: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The merged configuration source.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// The longest duration a setting accepts. A century outlasts any sensible timeout, and keeps
/// what sfcdc computes from a setting (deadlines, `4 × SFCDC_HTTP_TIMEOUT`, milliseconds as
/// `i64`) far from overflowing, which a duration such as `300000000000y` would not. Years of
/// 365.25 days, as the duration syntax counts them, so `100y` is accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Names of variables whose values are secret: never echoed in errors.
pub const SECRET_VARS: [&str; 9] = [
    "SF_CLIENT_SECRET",
    "SF_PASSWORD",
    "SF_ACCESS_TOKEN",
    "SFCDC_ADMIN_TOKEN",
    "SFCDC_READ_TOKEN",
    "SFCDC_METRICS_TOKEN",
    "SFCDC_FULFILMENT_TOKEN",
    "SFCDC_WEBHOOK_SECRET",
    "SFCDC_GITHUB_TOKEN",
];

impl Env {
    /// The process environment, over the file named by `SFCDC_CONFIG` if set.
    pub fn load() -> Result<Env, ConfigError> {
        let process: HashMap<String, String> = std::env::vars().collect();
        Env::layered(process)
    }

    /// `overrides` over the file it names in `SFCDC_CONFIG`, if any.
    pub fn layered(overrides: HashMap<String, String>) -> Result<Env, ConfigError> {
        let mut vars = HashMap::new();
        if let Some(path) = overrides.get("SFCDC_CONFIG").filter(|p| !p.is_empty()) {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("SFCDC_CONFIG", format!("cannot read {path}: {e}"))
            })?;
            vars = parse_file(&text).map_err(|(line, reason)| {
                ConfigError::new("SFCDC_CONFIG", format!("{path} line {line}: {reason}"))
            })?;
        }
        vars.extend(overrides);
        Ok(Env { vars })
    }

    /// A fixed set of variables (tests, the demo).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// Sets a variable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }

    /// A variable's value; empty values count as unset.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// A required variable.
    pub fn require(&self, key: &str, why: &str) -> Result<&str, ConfigError> {
        self.get(key)
            .ok_or_else(|| ConfigError::new(key, format!("is required {why}")))
    }

    /// A secret variable, wrapped at once.
    pub fn secret(&self, key: &str) -> Option<SecretString> {
        self.get(key).map(|v| SecretString::from(v.to_owned()))
    }

    /// A secret token of at least `min_len` characters (surrounding whitespace aside).
    pub fn token(&self, key: &str, min_len: usize) -> Result<Option<SecretString>, ConfigError> {
        let token = self.secret(key);
        if token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().len() < min_len)
        {
            return Err(ConfigError::new(
                key,
                format!("is too short: use at least {min_len} characters"),
            ));
        }
        Ok(token)
    }

    /// An `http://` or `https://` URL with a host.
    pub fn http_url(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(url) = self.get(key) else {
            return Ok(None);
        };
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(Some(url.to_owned()))
            }
            _ => Err(ConfigError::new(
                key,
                format!("'{url}' is not valid: expected an http(s):// URL"),
            )),
        }
    }

    /// A required secret.
    pub fn require_secret(&self, key: &str, why: &str) -> Result<SecretString, ConfigError> {
        self.secret(key)
            .ok_or_else(|| ConfigError::new(key, format!("is required {why}")))
    }

    /// A value parsed by `parse`, or `default` when unset. Errors name the variable and, unless
    /// it is secret, the bad value.
    pub fn parse_or<T>(
        &self,
        key: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => parse(raw.trim()).map_err(|reason| {
                if SECRET_VARS.contains(&key) {
                    ConfigError::new(key, reason)
                } else {
                    ConfigError::new(key, format!("'{raw}' is not valid: {reason}"))
                }
            }),
        }
    }

    /// A duration such as `30s`, `250ms` or `2h`, of at most [`MAX_DURATION`].
    pub fn duration_or(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse_or(key, default, |s| {
            let d = humantime::parse_duration(s)
                .map_err(|e| format!("{e}; use a duration such as 30s, 250ms or 2h"))?;
            if d > MAX_DURATION {
                return Err("must be at most 100 years".into());
            }
            Ok(d)
        })
    }

    /// A duration longer than zero.
    pub fn positive_duration_or(
        &self,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration_or(key, default)?;
        if d.is_zero() {
            return Err(ConfigError::new(key, "must be more than zero"));
        }
        Ok(d)
    }

    /// An integer within `range`.
    pub fn int_or(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        self.parse_or(key, default, |s| {
            let n: u64 = s.parse().map_err(|_| {
                format!(
                    "expected a whole number from {} to {}",
                    range.start(),
                    range.end()
                )
            })?;
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!("must be from {} to {}", range.start(), range.end()))
            }
        })
    }

    /// A size in bytes such as `16MiB`, `512KiB` or `1000000`, within `range`.
    pub fn bytes_or(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        self.parse_or(key, default, |s| {
            let n = s
                .parse::<bytesize::ByteSize>()
                .map_err(|_| "expected a size such as 16MiB, 512KiB or 1000000".to_owned())?
                .as_u64();
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "must be from {} to {}",
                    bytesize::ByteSize::b(*range.start()).display().iec(),
                    bytesize::ByteSize::b(*range.end()).display().iec()
                ))
            }
        })
    }

    /// One of a fixed set of words.
    pub fn choice_or<T: Copy>(
        &self,
        key: &str,
        default: T,
        choices: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        self.parse_or(key, default, |s| {
            choices
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(s))
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                    format!("accepted values are {}", names.join(", "))
                })
        })
    }

    /// A path that must exist.
    pub fn existing_file(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(p) => {
                let path = PathBuf::from(p);
                if path.is_file() {
                    Ok(Some(path))
                } else {
                    Err(ConfigError::new(
                        key,
                        format!("'{p}' is not a readable file"),
                    ))
                }
            }
        }
    }
}

/// Parses `NAME=value` lines.
pub fn parse_file(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err((i + 1, "expected NAME=value".into()));
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err((i + 1, format!("'{k}' is not a variable name")));
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            // An unquoted value ends at a comment.
            v.split(" #").next().unwrap_or(v).trim_end()
        };
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_or_without_a_unit_and_errors_name_the_variable() {
        let env = Env::from_pairs([
            ("A", "16MiB"),
            ("B", "512 KiB"),
            ("C", "1000"),
            ("D", "lots"),
        ]);
        let range = 1..=u64::MAX;
        assert_eq!(env.bytes_or("A", 0, range.clone()).unwrap(), 16 << 20);
        assert_eq!(env.bytes_or("B", 0, range.clone()).unwrap(), 512 << 10);
        assert_eq!(env.bytes_or("C", 0, range.clone()).unwrap(), 1000);
        assert_eq!(env.bytes_or("UNSET", 7, range).unwrap(), 7);
        let e = env.bytes_or("D", 0, 1..=10).unwrap_err().to_string();
        assert!(e.contains('D') && e.contains("lots"), "{e}");
        let e = env.bytes_or("A", 0, 1..=1024).unwrap_err().to_string();
        assert!(e.contains("1 KiB") || e.contains("1.0 KiB"), "{e}");
    }

    #[test]
    fn the_file_format_reads_what_the_sample_uses() {
        let vars = parse_file(
            "# comment\n\nSFCDC_BATCH_SIZE=50\nexport SF_AUTH=password # trailing comment\nSF_PASSWORD=\"p#ss word\"\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(vars["SFCDC_BATCH_SIZE"], "50");
        assert_eq!(vars["SF_AUTH"], "password");
        assert_eq!(vars["SF_PASSWORD"], "p#ss word");
        assert_eq!(vars["EMPTY"], "");
        assert_eq!(parse_file("oops").unwrap_err().0, 1);
        assert_eq!(parse_file("A=1\nBAD NAME=2").unwrap_err().0, 2);
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sfcdc.env");
        std::fs::write(&file, "SFCDC_BATCH_SIZE=50\nSF_AUTH=password\n").unwrap();
        let env = Env::layered(HashMap::from([
            ("SFCDC_CONFIG".to_string(), file.display().to_string()),
            ("SF_AUTH".to_string(), "token".to_string()),
        ]))
        .unwrap();
        assert_eq!(env.get("SFCDC_BATCH_SIZE"), Some("50"));
        assert_eq!(env.get("SF_AUTH"), Some("token"));
        let missing = Env::layered(HashMap::from([(
            "SFCDC_CONFIG".to_string(),
            "/nope/sfcdc.env".to_string(),
        )]))
        .unwrap_err();
        assert_eq!(missing.var, "SFCDC_CONFIG");
    }

    #[test]
    fn errors_name_the_variable_and_hide_secrets() {
        let env = Env::from_pairs([
            ("SFCDC_BATCH_SIZE", "500"),
            ("SF_PASSWORD", "hunter2"),
            ("X_DUR", "soon"),
        ]);
        let e = env.int_or("SFCDC_BATCH_SIZE", 100, 1..=100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SFCDC_BATCH_SIZE: '500' is not valid: must be from 1 to 100"
        );
        let e = env
            .parse_or("SF_PASSWORD", 0, |_| Err::<u8, _>("bad".into()))
            .unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
        assert!(
            env.duration_or("X_DUR", Duration::ZERO)
                .unwrap_err()
                .to_string()
                .contains("30s")
        );
        let e = env
            .choice_or("SFCDC_BATCH_SIZE", 1, &[("one", 1), ("two", 2)])
            .unwrap_err();
        assert!(e.reason.contains("one, two"));
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        let env = Env::from_pairs([
            ("GOOD", "https://example.com/base/"),
            ("PLAIN", "http://127.0.0.1:8080"),
            ("FTP", "ftp://example.com"),
            ("NO_HOST", "http://"),
            ("WORDS", "not a url"),
        ]);
        assert_eq!(
            env.http_url("GOOD").unwrap().as_deref(),
            Some("https://example.com/base/")
        );
        assert!(env.http_url("PLAIN").unwrap().is_some());
        assert_eq!(env.http_url("UNSET").unwrap(), None);
        for bad in ["FTP", "NO_HOST", "WORDS"] {
            let e = env.http_url(bad).unwrap_err();
            assert_eq!(e.var, bad);
            assert!(e.reason.ends_with("expected an http(s):// URL"), "{e}");
        }
    }

    #[test]
    fn tokens_have_a_minimum_length_and_stay_secret() {
        let env = Env::from_pairs([("SHORT", "  abc  "), ("LONG", "0123456789abcdef")]);
        let e = env.token("SHORT", 16).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SHORT: is too short: use at least 16 characters"
        );
        assert!(env.token("LONG", 16).unwrap().is_some());
        assert!(env.token("UNSET", 16).unwrap().is_none());
    }
}
