//! `sfcdc checkpoints …`: list every channel's stored position, or set where a channel resumes.
//! A reset goes through the channel's lease: in the same transaction it fences the holder out
//! (the lease's generation rises and it is released), so a running instance cannot overwrite the
//! new position with its next commit. It stops subscribing, and whichever instance takes the
//! channel next resumes from the reset.

use clap::Subcommand;

use super::{OutputFormat, iso, open_store, print_table};

/// `sfcdc checkpoints …`
#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// List every channel's stored position.
    List {
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Set where a channel resumes; safe while the service runs (its holder is fenced out).
    Reset {
        /// The channel.
        channel: String,
        /// earliest, latest, or a replay id in hex.
        #[arg(long, default_value = "latest")]
        to: String,
    },
}

/// Runs `sfcdc checkpoints …`.
pub async fn run_checkpoints(cmd: CheckpointsCommand) -> anyhow::Result<()> {
    use crate::decode::Position;
    use crate::store::Store;
    let store = open_store().await?;
    match cmd {
        CheckpointsCommand::List { format } => {
            let cps = store.checkpoints().await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&cps)?),
                OutputFormat::Table => print_table(
                    &["CHANNEL", "POSITION", "REPLAY ID", "UPDATED"],
                    cps.iter()
                        .map(|c| {
                            let (kind, replay) = match &c.position {
                                Position::After(r) => ("after".to_owned(), r.to_hex()),
                                Position::Earliest => ("earliest".to_owned(), String::new()),
                                Position::Latest => ("latest".to_owned(), String::new()),
                            };
                            vec![c.channel.clone(), kind, replay, iso(c.updated_at)]
                        })
                        .collect(),
                ),
            }
        }
        CheckpointsCommand::Reset { channel, to } => {
            let position = super::position("--to", &to).map_err(anyhow::Error::msg)?;
            if !(channel.starts_with("/data/") || channel.starts_with("/event/")) {
                anyhow::bail!("'{channel}' is not a topic name such as /data/OrderChangeEvent");
            }
            let r = store
                .set_checkpoint(&channel, &position, crate::clock::now_ms())
                .await
                .map_err(anyhow::Error::from);
            super::audit::audited(&store, "checkpoint.reset", channel.clone(), r, |_| {
                Some(format!("to {to}"))
            })
            .await?;
            println!("{channel}: the next run resumes at {to}");
        }
    }
    Ok(())
}
