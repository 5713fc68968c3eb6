//! `sfcdc quarantine …`: list the events that could not be processed, and re-drive one through
//! the ingest side of the service (decode, rules, lookups, one store transaction) after a fix or
//! an upgrade. A re-drive that succeeds creates its jobs and resolves the entry together.

use clap::Subcommand;

use super::{OutputFormat, iso, open_store, print_table};

/// `sfcdc quarantine …`
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined events.
    List {
        /// Include resolved ones.
        #[arg(long)]
        all: bool,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Decode and evaluate a quarantined event again (after a fix or an upgrade).
    Retry {
        /// The quarantine entry id.
        id: i64,
    },
}

/// Runs `sfcdc quarantine …`.
pub async fn run_quarantine(cmd: QuarantineCommand) -> anyhow::Result<()> {
    use crate::store::Store;
    match cmd {
        QuarantineCommand::List { all, format } => {
            let store = open_store().await?;
            let rows = store.quarantined(!all).await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Table => print_table(
                    &[
                        "ID",
                        "STATE",
                        "CHANNEL",
                        "REPLAY ID",
                        "KIND",
                        "ATTEMPTS",
                        "QUARANTINED",
                        "REASON",
                    ],
                    rows.iter()
                        .map(|q| {
                            vec![
                                q.id.to_string(),
                                q.state.clone(),
                                q.channel.clone(),
                                q.replay_id.clone(),
                                q.kind.clone(),
                                q.attempts.to_string(),
                                iso(q.created_at),
                                q.reason.clone(),
                            ]
                        })
                        .collect(),
                ),
            }
        }
        QuarantineCommand::Retry { id } => {
            let env = crate::config::Env::load()?;
            let settings = crate::app::Settings::from_env(&env)?;
            // Only the ingest side: no admin server, worker or subscription.
            let deps = crate::app::deps(&settings).await?;
            let ingest = crate::app::Ingest::build(&settings, &deps)?;
            let outcome = ingest
                .redriver(&deps)
                .redrive(id)
                .await
                .map_err(anyhow::Error::from);
            let target = format!("quarantined event {id}");
            let outcome = super::audit::audited(
                &deps.store,
                "quarantine.redrive",
                target,
                outcome,
                |o: &String| Some(o.clone()),
            )
            .await?;
            println!("{outcome}");
        }
    }
    Ok(())
}
