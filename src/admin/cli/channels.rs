//! `sfcdc channels`: who holds each configured channel, at which generation and until when, where
//! its checkpoint stands and how old it is, and this instance's role (by `SFCDC_INSTANCE_ID`).
//! Times are judged by the database's clock, as the leases are.

use super::{OutputFormat, open_store, print_table};
use crate::config::Env;
use crate::fleet::FleetConfig;
use crate::source::SourceConfig;
use crate::store::Store;
use crate::store::lease::{Leases, channel_views};

/// Runs `sfcdc channels`.
pub async fn run_channels(format: OutputFormat) -> anyhow::Result<()> {
    let env = Env::load()?;
    let channels = SourceConfig::from_env(&env)?.channels;
    let me = FleetConfig::from_env(&env)?.instance_id;
    let store = open_store().await?;
    let leases = store.leases().await?;
    let checkpoints = store.checkpoints().await?;
    let views = channel_views(
        &channels,
        &me,
        &leases,
        &checkpoints,
        crate::clock::now_ms(),
    );
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        OutputFormat::Table => {
            println!("instance: {me}");
            print_table(
                &[
                    "CHANNEL",
                    "HOLDER",
                    "GENERATION",
                    "LEASE EXPIRES IN",
                    "CHECKPOINT",
                    "AGE",
                    "ROLE",
                ],
                views
                    .iter()
                    .map(|v| {
                        vec![
                            v.channel.clone(),
                            v.holder.clone().unwrap_or_else(|| "-".into()),
                            v.generation.to_string(),
                            v.lease_expires_in_seconds
                                .map_or_else(|| "-".into(), |s| format!("{s:.1}s")),
                            v.checkpoint.clone().unwrap_or_else(|| "-".into()),
                            v.checkpoint_age_seconds
                                .map_or_else(|| "-".into(), |s| format!("{s:.0}s")),
                            v.role.to_owned(),
                        ]
                    })
                    .collect(),
            );
        }
    }
    Ok(())
}
