//! The console's page frame and the small pieces every page uses: state badges, times and
//! ages, query strings, pretty JSON and hex dumps.
//!
//! Every value reaches the page through a maud interpolation, which escapes it: text that came
//! from outside (payloads, errors, delivery bodies, reasons) shows as text, never as markup.

use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::api::auth::Role;

/// The sections in the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The overview.
    Overview,
    /// Jobs.
    Jobs,
    /// Deliveries.
    Deliveries,
    /// Quarantined events.
    Quarantine,
    /// Channels.
    Channels,
    /// The audit trail.
    Audit,
}

const SECTIONS: [(Section, &str, &str); 6] = [
    (Section::Overview, "/console", "Overview"),
    (Section::Jobs, "/console/jobs", "Jobs"),
    (Section::Deliveries, "/console/deliveries", "Deliveries"),
    (Section::Quarantine, "/console/quarantine", "Quarantine"),
    (Section::Channels, "/console/channels", "Channels"),
    (Section::Audit, "/console/audit", "Audit"),
];

/// Seconds between live refreshes of a list or the overview.
pub const REFRESH_SECONDS: u32 = 4;

/// A whole page: the frame around `body`. A `live` page refreshes its `#live` region.
pub fn page(title: &str, section: Section, who: &Session, live: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sfcdc" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body data-live=[live.then_some(REFRESH_SECONDS)] {
                header {
                    a.brand href="/console" { "sfcdc" }
                    nav {
                        @for (s, href, name) in SECTIONS {
                            a.on[s == section] href=(href) { (name) }
                        }
                    }
                    div.who {
                        span #live-status {}
                        span.role { (who.role.as_str()) }
                        span.mono title="session id" { (who.id) }
                        form method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page outside a session: the login form or an error before login.
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · sfcdc" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body { main { (body) } }
        }
    }
}

/// Whether `who` sees action buttons.
pub fn operator(who: &Session) -> bool {
    who.role >= Role::Operator
}

/// A state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    html! { span.state.(state.replace(' ', "-")) { (state) } }
}

/// An epoch-ms time as RFC 3339 (UTC).
pub fn time(ms: i64) -> String {
    crate::clock::rfc3339(ms)
}

/// An optional time, or a dash.
pub fn time_or_dash(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), time)
}

/// A duration in seconds, short: `42s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Percent-encodes a query value (everything but the unreserved characters).
pub fn enc(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `path?k=v&…` with the non-empty pairs, encoded.
pub fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", q.join("&"))
    }
}

/// Stored JSON text, pretty-printed (or as it is, if it is not JSON).
pub fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_owned())
}

/// Most bytes a hex view shows (the download has them all).
pub const HEX_VIEW_MAX: usize = 64 * 1024;

/// A classic hex dump: offset, sixteen bytes in hex, and their printable ASCII.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "{:08x}  {:<47}  |{ascii}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    out
}

/// A notice above a page's content.
pub fn notice(kind: &str, text: &str) -> Markup {
    html! { div.notice.(kind) role="status" { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let s = Session {
            id: "<id>".into(),
            role: Role::Viewer,
            csrf: "\"><script>".into(),
            expires_ms: 0,
        };
        let html = page(
            "<script>alert(1)</script>",
            Section::Jobs,
            &s,
            true,
            html! { p { (badge("<img src=x onerror=alert(1)>")) } },
        )
        .into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;\""));
    }

    #[test]
    fn links_encode_their_values() {
        assert_eq!(
            link(
                "/console/jobs",
                &[("state", "dead"), ("order", ""), ("error", "a&b c/%")]
            ),
            "/console/jobs?state=dead&error=a%26b%20c%2F%25"
        );
        assert_eq!(link("/x", &[]), "/x");
    }

    #[test]
    fn hex_dumps_show_offsets_bytes_and_text() {
        let d = hex_dump(b"<script>\x00\x01abcdefghijk");
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000000  3c 73 63"));
        assert!(lines[0].ends_with("|<script>..abcdef|"));
        assert!(lines[1].starts_with("00000010  67"));
    }

    #[test]
    fn ages_are_short() {
        assert_eq!(age(5.2), "5s");
        assert_eq!(age(303.0), "5m 3s");
        assert_eq!(age(7_800.0), "2h 10m");
        assert_eq!(age(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
        assert_eq!(age(-3.0), "0s");
    }
}
