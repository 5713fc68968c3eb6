//! `sfcdc audit`: the trail of operator actions, newest first, from the admin API, the console
//! and these commands; and the recording of this command line's own actions in it.
//!
//! An action taken here is recorded as role `cli`, with the operating-system user (`$USER`) as
//! its session, after it ran, with its outcome: the command line holds the store itself, so no
//! token is involved.

use super::{OutputFormat, iso, open_store, print_table};
use crate::store::AnyStore;
use crate::store::audit::{Audit, NewAudit};

/// Runs `sfcdc audit`.
pub async fn run_audit(limit: i64, format: OutputFormat) -> anyhow::Result<()> {
    if !(1..=10_000).contains(&limit) {
        anyhow::bail!("--limit: must be from 1 to 10000");
    }
    let store = open_store().await?;
    let rows = store.audit_trail(limit, None).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputFormat::Table => print_table(
            &[
                "ID", "AT", "ROLE", "SESSION", "VIA", "ACTION", "TARGET", "OUTCOME", "DETAIL",
            ],
            rows.iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        iso(a.at),
                        a.role.clone(),
                        a.session.clone().unwrap_or_else(|| "-".into()),
                        a.via.clone(),
                        a.action.clone(),
                        a.target.clone(),
                        a.outcome.clone(),
                        a.detail.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        ),
    }
    Ok(())
}

/// Records this command line's `action` on `target`, with how `result` ended, and hands the
/// result back. A trail that cannot be written is reported on stderr; the action stands.
pub(super) async fn audited<T>(
    store: &AnyStore,
    action: &str,
    target: String,
    result: anyhow::Result<T>,
    detail: impl FnOnce(&T) -> Option<String>,
) -> anyhow::Result<T> {
    let (outcome, detail) = match &result {
        Ok(v) => ("ok", detail(v)),
        Err(e) => ("refused", Some(format!("{e:#}"))),
    };
    let entry = NewAudit {
        at_ms: crate::clock::now_ms(),
        role: "cli".into(),
        session: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        via: "cli".into(),
        action: action.into(),
        target,
        outcome: outcome.into(),
        detail,
    };
    if let Err(e) = store.record_audit(&entry).await {
        eprintln!("sfcdc: the action was not recorded in the audit trail: {e}");
    }
    result
}
