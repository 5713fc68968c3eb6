//! `sfcdc channels`: who holds each configured channel, at which generation and until when, where
//! its checkpoint stands and how old it is, and this instance's role (by `SFCDC_INSTANCE_ID`).
//! Times are judged by the database's clock, as the leases are.

use serde::Serialize;

use super::{OutputFormat, open_store, print_table};
use crate::config::Env;
use crate::decode::Position;
use crate::fleet::FleetConfig;
use crate::source::SourceConfig;
use crate::store::Store;
use crate::store::lease::Leases;

/// One configured channel as the fleet sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// The topic.
    pub channel: String,
    /// The lease holder, if the lease is live.
    pub holder: Option<String>,
    /// The lease generation (0: never leased).
    pub generation: i64,
    /// Seconds until the lease expires (negative: expired that long ago), if leased.
    pub lease_expires_in_seconds: Option<f64>,
    /// The stored checkpoint's replay id (hex), or its preset.
    pub checkpoint: Option<String>,
    /// Seconds since the checkpoint was written.
    pub checkpoint_age_seconds: Option<f64>,
    /// `holder`, `standby`, or `unheld` for the asking instance.
    pub role: &'static str,
}

/// Runs `sfcdc channels`.
pub async fn run_channels(format: OutputFormat) -> anyhow::Result<()> {
    let env = Env::load()?;
    let channels = SourceConfig::from_env(&env)?.channels;
    let me = FleetConfig::from_env(&env)?.instance_id;
    let store = open_store().await?;
    let leases = store.leases().await?;
    let checkpoints = store.checkpoints().await?;
    // The database's clock when the leases were read; the wall clock if nothing is leased yet.
    let now = leases
        .first()
        .map_or_else(crate::clock::now_ms, |l| l.read_at);
    let views: Vec<ChannelView> = channels
        .iter()
        .map(|channel| {
            let lease = leases.iter().find(|l| &l.channel == channel);
            let checkpoint = checkpoints.iter().find(|c| &c.channel == channel);
            let holder = lease.filter(|l| l.is_live()).and_then(|l| l.holder.clone());
            let role = match &holder {
                Some(h) if *h == me => "holder",
                Some(_) => "standby",
                None => "unheld",
            };
            ChannelView {
                channel: channel.clone(),
                holder,
                generation: lease.map_or(0, |l| l.generation),
                lease_expires_in_seconds: lease.map(|l| (l.expires_at - l.read_at) as f64 / 1000.0),
                checkpoint: checkpoint.map(|c| match &c.position {
                    Position::After(r) => r.to_hex(),
                    Position::Earliest => "earliest".to_owned(),
                    Position::Latest => "latest".to_owned(),
                }),
                checkpoint_age_seconds: checkpoint
                    .map(|c| ((now - c.updated_at).max(0)) as f64 / 1000.0),
                role,
            }
        })
        .collect();
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
