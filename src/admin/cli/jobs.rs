//! `sfcdc jobs …` and `sfcdc deliveries …`: the operator controls on the command line, the
//! same operations as the admin HTTP API, run directly against the store (so they work while
//! the service is down). Changes take effect at the service's next claim.

use clap::Subcommand;

use super::audit::audited;
use super::{OutputFormat, iso, open_store, print_table};
use crate::api::{delivery_states, job_states, operator_reason};
use crate::store::queue::{DeliveryFilter, DeliveryRow, DeliveryState, Queue};
use crate::store::{JobFilter, JobRow, JobState, Store};

/// `sfcdc jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs in this state: available, running, polling, retryable, completed, cancelled, dead.
        #[arg(long)]
        state: Option<String>,
        /// Only jobs of this order.
        #[arg(long)]
        order: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Show one job: progress, attempts, the operation, the error history and its deliveries.
    Show {
        /// The job id.
        id: i64,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Put a dead, cancelled or retryable job back to work with fresh attempts (and a new
    /// fulfilment request).
    Retry {
        /// The job id.
        id: i64,
    },
    /// Cancel an open job (a worker in the middle of a step loses it).
    Cancel {
        /// The job id.
        id: i64,
        /// Why, for the record.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `sfcdc deliveries …`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List notification deliveries, newest first.
    List {
        /// Only deliveries in this state: pending, delivered, dead, cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Only this job's.
        #[arg(long)]
        job: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: OutputFormat,
    },
    /// Show one delivery, with what it sends and its error history.
    Show {
        /// The delivery id.
        id: i64,
    },
    /// Send a dead or cancelled delivery again, with fresh attempts.
    Retry {
        /// The delivery id.
        id: i64,
    },
    /// Stop a pending delivery.
    Cancel {
        /// The delivery id.
        id: i64,
    },
}

fn job_state(s: &str) -> anyhow::Result<JobState> {
    JobState::parse(s)
        .ok_or_else(|| anyhow::anyhow!("--state: '{s}' is not one of {}", job_states()))
}

fn delivery_state(s: &str) -> anyhow::Result<DeliveryState> {
    DeliveryState::parse(s)
        .ok_or_else(|| anyhow::anyhow!("--state: '{s}' is not one of {}", delivery_states()))
}

/// Runs `sfcdc jobs …`.
pub async fn run_jobs(cmd: JobsCommand) -> anyhow::Result<()> {
    match cmd {
        JobsCommand::List {
            state,
            order,
            limit,
            format,
        } => {
            let state = state.as_deref().map(job_state).transpose()?;
            let store = open_store().await?;
            let filter = JobFilter {
                state,
                order_id: order,
                limit: Some(limit),
            };
            let jobs = store.jobs(&filter).await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&jobs)?),
                OutputFormat::Table => print_jobs(&jobs),
            }
        }
        JobsCommand::Show { id, format } => {
            let store = open_store().await?;
            let job = store
                .job(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("there is no job {id}"))?;
            let deliveries = store
                .deliveries(&DeliveryFilter {
                    job_id: Some(id),
                    ..DeliveryFilter::default()
                })
                .await?;
            match format {
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"job": job, "deliveries": deliveries})
                    )?
                ),
                OutputFormat::Table => print_job(&job, &deliveries),
            }
        }
        JobsCommand::Retry { id } => {
            let store = open_store().await?;
            let job = store
                .retry_job(id, crate::clock::now_ms())
                .await
                .map_err(anyhow::Error::from);
            let job = audited(&store, "job.retry", format!("job {id}"), job, |j| {
                Some(format!("{}, key {}", j.state.as_str(), j.operation_key()))
            })
            .await?;
            println!(
                "job {id} is {} again: up to {} attempts, new idempotency key {}",
                job.state.as_str(),
                job.max_attempts,
                job.operation_key()
            );
        }
        JobsCommand::Cancel { id, reason } => {
            let reason = operator_reason(reason.as_deref()).map_err(anyhow::Error::msg)?;
            let store = open_store().await?;
            let r = store
                .cancel_job(id, &reason, crate::clock::now_ms())
                .await
                .map_err(anyhow::Error::from);
            audited(&store, "job.cancel", format!("job {id}"), r, |_| {
                Some(reason.clone())
            })
            .await?;
            println!("job {id} cancelled");
        }
    }
    Ok(())
}

fn print_jobs(jobs: &[JobRow]) {
    print_table(
        &[
            "ID",
            "STATE",
            "ORDER",
            "STATUS",
            "ATTEMPT",
            "PROGRESS",
            "CREATED",
            "LAST ERROR",
        ],
        jobs.iter()
            .map(|j| {
                vec![
                    j.id.to_string(),
                    j.state.as_str().to_owned(),
                    j.order_id.clone(),
                    j.trigger_status.clone(),
                    format!("{}/{}", j.attempt, j.max_attempts),
                    j.progress.map(|p| format!("{p}%")).unwrap_or_default(),
                    iso(j.created_at),
                    j.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
}

fn print_job(j: &JobRow, deliveries: &[DeliveryRow]) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let time = |v: Option<i64>| v.map(iso).unwrap_or_else(|| "-".into());
    let rows = [
        ("job", j.id.to_string()),
        ("key", j.key.clone()),
        ("state", j.state.as_str().to_owned()),
        ("order", j.order_id.clone()),
        ("account", opt(&j.account_id)),
        (
            "trigger",
            format!("{} ({})", j.trigger_status, j.trigger_kind),
        ),
        ("attempts", format!("{} of {}", j.attempt, j.max_attempts)),
        (
            "progress",
            j.progress
                .map(|p| format!("{p}%"))
                .unwrap_or_else(|| "-".into()),
        ),
        ("phase", opt(&j.phase)),
        ("operation", opt(&j.operation_id)),
        ("idempotency key", j.operation_key()),
        ("polls", j.polls.to_string()),
        ("submitted", time(j.submitted_at)),
        ("next run", iso(j.run_at)),
        (
            "lease",
            match (&j.lease_owner, j.lease_until) {
                (Some(o), Some(u)) => format!("{o} until {}", iso(u)),
                _ => "-".into(),
            },
        ),
        ("external id", opt(&j.external_id)),
        ("result", opt(&j.result)),
        ("last error", opt(&j.last_error)),
        (
            "source",
            format!("{} replay {} event {}", j.channel, j.replay_id, j.event_id),
        ),
        ("created", iso(j.created_at)),
        ("updated", iso(j.updated_at)),
        ("finished", time(j.finished_at)),
    ];
    for (k, v) in rows {
        println!("{k:>16}  {v}");
    }
    let history: Vec<serde_json::Value> = serde_json::from_str(&j.errors).unwrap_or_default();
    println!("\nerror history ({}):", history.len());
    for e in &history {
        println!(
            "  {}  attempt {}  {}",
            e["at"].as_i64().map(iso).unwrap_or_default(),
            e["attempt"],
            e["error"].as_str().unwrap_or_default()
        );
    }
    println!("\ndeliveries ({}):", deliveries.len());
    for d in deliveries {
        println!(
            "  {}  {} {}  {}  attempt {}/{}  {}",
            d.id,
            d.notifier,
            d.event,
            d.state.as_str(),
            d.attempt,
            d.max_attempts,
            d.last_error.clone().unwrap_or_default()
        );
    }
}

/// Runs `sfcdc deliveries …`.
pub async fn run_deliveries(cmd: DeliveriesCommand) -> anyhow::Result<()> {
    let store = open_store().await?;
    match cmd {
        DeliveriesCommand::List {
            state,
            job,
            limit,
            format,
        } => {
            let state = state.as_deref().map(delivery_state).transpose()?;
            let rows = store
                .deliveries(&DeliveryFilter {
                    state,
                    job_id: job,
                    limit: Some(limit),
                })
                .await?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Table => print_table(
                    &[
                        "ID",
                        "JOB",
                        "NOTIFIER",
                        "EVENT",
                        "STATE",
                        "ATTEMPT",
                        "CREATED",
                        "LAST ERROR",
                    ],
                    rows.iter()
                        .map(|d| {
                            vec![
                                d.id.to_string(),
                                d.job_id.to_string(),
                                d.notifier.clone(),
                                d.event.clone(),
                                d.state.as_str().to_owned(),
                                format!("{}/{}", d.attempt, d.max_attempts),
                                iso(d.created_at),
                                d.last_error.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                ),
            }
        }
        DeliveriesCommand::Show { id } => {
            let d = store
                .delivery(id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("there is no delivery {id}"))?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        DeliveriesCommand::Retry { id } => {
            let d = store
                .retry_delivery(id, crate::clock::now_ms())
                .await
                .map_err(anyhow::Error::from);
            let d = audited(
                &store,
                "delivery.retry",
                format!("delivery {id}"),
                d,
                |_| None,
            )
            .await?;
            println!(
                "delivery {id} ({} for job {}) is pending again with {} attempts",
                d.notifier, d.job_id, d.max_attempts
            );
        }
        DeliveriesCommand::Cancel { id } => {
            let r = store
                .cancel_delivery(id, crate::clock::now_ms())
                .await
                .map_err(anyhow::Error::from);
            audited(
                &store,
                "delivery.cancel",
                format!("delivery {id}"),
                r,
                |_| None,
            )
            .await?;
            println!("delivery {id} cancelled");
        }
    }
    Ok(())
}
