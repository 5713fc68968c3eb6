//! One step of a job: what it does, in order, and how its outcome becomes the job's next state.
//!
//! A fresh step ([`Inner::start`]) re-reads the order, re-checks the guards, records the phase,
//! writes `Activating` and submits. A polling step ([`Inner::poll_all`]) asks for the state of
//! one or many operations. Both end in a [`Flow`], which [`Inner::conclude`] turns into the job's
//! update (a failure is retried or dead-lettered as [`transition::next`] decides): finished work
//! is written back to Salesforce first, then recorded with its notifications in one transaction.

use serde_json::{Value as Json, json};

use super::fulfilment::{Fulfilment, OpStatus, Operation, Submitted};
use super::notify::{JobEvent, summary};
use super::transition::{self, ErrorKind, Transition};
use super::{Inner, Orders};
use crate::rules::{OrderFacts, TriggerKind, recheck};
use crate::sfid::SfId;
use crate::store::JobRow;
use crate::store::queue::{JobChange, JobEnd, JobUpdate, NewDelivery, PollUpdate, Queue};
use crate::telemetry::events::{InternalEvent, JobLeaseLost, JobStepEnded, StepEnd};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One operation's status read: the operation, `None` when the system does not know it.
type Polled = Result<Option<Operation>, super::fulfilment::CallError>;

/// Salesforce's limit on a Text(255) field.
const ERROR_FIELD_MAX: usize = 255;

/// How a step's work ended, before it is recorded.
#[derive(Debug)]
pub(super) enum Flow {
    /// The operation is still running (or its status could not be read): poll again.
    Pending {
        operation_id: String,
        progress: Option<i32>,
        error: Option<String>,
    },
    /// The operation finished with a result.
    Completed(Operation),
    /// The result is written back to Salesforce: record the completion.
    WrittenBack {
        result: Json,
        external_id: Option<String>,
    },
    /// The order no longer qualifies.
    Cancel(String),
    /// The step failed.
    Fail {
        error: String,
        transient: bool,
        /// The operation is gone (failed or timed out); a retry submits a new one.
        new_operation: bool,
    },
    /// Another worker (or an operator) has the job now: write nothing.
    LeaseLost,
}

impl Flow {
    fn fail(error: impl Into<String>, transient: bool) -> Flow {
        Flow::Fail {
            error: error.into(),
            transient,
            new_operation: false,
        }
    }

    /// The flow of an operation's reported state.
    fn of(op: Operation) -> Flow {
        match op.status {
            OpStatus::Pending => Flow::Pending {
                progress: op.progress(),
                operation_id: op.operation_id,
                error: None,
            },
            OpStatus::Completed => Flow::Completed(op),
            OpStatus::Failed => {
                let e = op.error.unwrap_or_else(|| super::fulfilment::OpError {
                    code: "unknown".into(),
                    message: "no error given".into(),
                    retryable: false,
                });
                Flow::Fail {
                    error: format!(
                        "fulfilment operation {} failed: {}: {}",
                        op.operation_id, e.code, e.message
                    ),
                    transient: e.retryable,
                    new_operation: true,
                }
            }
        }
    }
}

/// The guard facts in an order record.
fn facts(rules: &crate::rules::RulesConfig, order: &Json) -> OrderFacts {
    let text = |f: &str| {
        order
            .get(f)
            .and_then(Json::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    OrderFacts {
        status: text("Status"),
        activation: text(&rules.activation_field),
        external_id: text(&rules.external_id_field),
        account_id: text("AccountId"),
    }
}

/// The span of one job's step: every line it logs names the job, its order, and the channel
/// and replay id of the event that created it.
fn job_span(job: &JobRow) -> tracing::Span {
    tracing::info_span!(
        "job",
        job_id = job.id,
        order_id = %job.order_id,
        channel = %job.channel,
        replay_id = %job.replay_id
    )
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl<Q: Queue, F: Fulfilment, O: Orders> Inner<Q, F, O> {
    /// A step of a job with no operation yet: check, mark, submit.
    pub(super) async fn start(&self, job: JobRow, owner: &str, slot: OwnedSemaphorePermit) {
        async {
            let flow = self.submit(&job, owner).await;
            self.conclude(&job, owner, flow, slot).await;
        }
        .instrument(job_span(&job))
        .await
    }

    async fn submit(&self, job: &JobRow, owner: &str) -> Flow {
        let Ok(id) = SfId::parse(&job.order_id) else {
            return Flow::Cancel(format!("'{}' is not a Salesforce id", job.order_id));
        };
        let order = match self.orders.read(&id).await {
            Ok(Some(order)) => order,
            Ok(None) => return Flow::Cancel("the order no longer exists".into()),
            Err(e) => return Flow::fail(format!("reading the order: {e}"), e.is_retryable()),
        };
        let facts = facts(&self.rules, &order);
        // The job's own trigger kind says what it still needs (a platform event needs no
        // trigger status); a phase means an earlier step of this operation may have written
        // `Activating`.
        let kind = TriggerKind::from_name(&job.trigger_kind);
        if let Err(reason) = recheck(&self.rules, kind, &facts, job.phase.is_some()) {
            return Flow::Cancel(reason);
        }
        if job.phase.is_none()
            && let Err(flow) = self
                .record(job, owner, JobChange::Phase("activating"))
                .await
        {
            return flow;
        }
        if facts.activation.as_deref() != Some("Activating") {
            let fields = json!({ &self.rules.activation_field: "Activating" });
            if let Err(e) = self.orders.update(&id, &fields).await {
                return Flow::fail(format!("writing Activating: {e}"), e.is_retryable());
            }
        }
        match self.fulfilment.submit(&job.operation_key(), &order).await {
            Ok(Submitted::Finished(op) | Submitted::Accepted(op)) => {
                tracing::info!(job_id = job.id, order_id = %job.order_id, operation_id = %op.operation_id, "Submitted");
                if op.status == OpStatus::Completed {
                    // Recorded before the outcome is written back: a step that dies between the
                    // write-back and its record resumes by polling this operation, instead of
                    // finding `Activated` and taking it for someone else's.
                    let change = JobChange::Operation(op.operation_id.clone());
                    if let Err(flow) = self.record(job, owner, change).await {
                        return flow;
                    }
                }
                Flow::of(op)
            }
            Err(e) => Flow::fail(e.message, e.transient),
        }
    }

    /// Records progress in the middle of a step; `Err` is how the step ends when it cannot
    /// (its lease is gone, or the store failed).
    async fn record(&self, job: &JobRow, owner: &str, change: JobChange) -> Result<(), Flow> {
        let update = JobUpdate {
            id: job.id,
            owner: owner.to_owned(),
            change,
        };
        match self.write(update, None).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Flow::LeaseLost),
            Err(e) => Err(Flow::fail(e, true)),
        }
    }

    /// A step of jobs whose operations are pending, a slot each: one batch status request when
    /// possible. A shutdown abandons the status reads (they change nothing; each operation stays
    /// recorded on its job and is polled again after the restart), but not the outcomes already
    /// read.
    pub(super) async fn poll_all(
        &self,
        jobs: Vec<JobRow>,
        slots: Vec<OwnedSemaphorePermit>,
        owner: &str,
        cancel: &CancellationToken,
    ) {
        let polled = tokio::select! {
            biased;
            () = cancel.cancelled() => {
                tracing::info!(jobs = jobs.len(), "Shutdown: status reads abandoned; the operations stay recorded on their jobs");
                return;
            }
            polled = self.read_operations(&jobs) => polled,
        };
        let steps = jobs
            .iter()
            .zip(polled)
            .zip(slots)
            .map(|((job, polled), slot)| {
                self.conclude_poll(job, owner, polled, slot)
                    .instrument(job_span(job))
            });
        futures_util::future::join_all(steps).await;
    }

    /// Each job's operation as the fulfilment system reports it, in `jobs` order.
    async fn read_operations(&self, jobs: &[JobRow]) -> Vec<Polled> {
        let ids: Vec<&str> = jobs
            .iter()
            .filter_map(|j| j.operation_id.as_deref())
            .collect();
        let batch = if jobs.len() > 1 {
            self.fulfilment.poll_many(&ids).await
        } else {
            Ok(None)
        };
        match batch {
            Ok(Some(ops)) => {
                let mut by_id: std::collections::HashMap<String, Operation> = ops
                    .into_iter()
                    .map(|op| (op.operation_id.clone(), op))
                    .collect();
                jobs.iter()
                    .map(|job| Ok(job.operation_id.as_deref().and_then(|id| by_id.remove(id))))
                    .collect()
            }
            Ok(None) => {
                let polls = jobs.iter().map(|job| {
                    self.fulfilment
                        .poll(job.operation_id.as_deref().unwrap_or_default())
                });
                futures_util::future::join_all(polls).await
            }
            Err(e) => jobs.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn conclude_poll(
        &self,
        job: &JobRow,
        owner: &str,
        polled: Polled,
        slot: OwnedSemaphorePermit,
    ) {
        let operation_id = job.operation_id.clone().unwrap_or_default();
        let flow = match polled {
            Ok(Some(op)) => Flow::of(op),
            Ok(None) => Flow::Fail {
                error: format!("the fulfilment system does not know operation {operation_id}"),
                transient: true,
                new_operation: true,
            },
            // Status reads are retried at the poll pace, within the poll timeout.
            Err(e) => Flow::Pending {
                operation_id: operation_id.clone(),
                progress: None,
                error: Some(e.message),
            },
        };
        let timeout_ms = self.config.poll_timeout.as_millis() as i64;
        let flow = match flow {
            Flow::Pending { .. }
                if job
                    .submitted_at
                    .is_some_and(|at| self.clock.now_ms() - at > timeout_ms) =>
            {
                Flow::Fail {
                    error: format!(
                        "operation {operation_id} did not finish within {}",
                        humantime::format_duration(self.config.poll_timeout)
                    ),
                    transient: true,
                    new_operation: true,
                }
            }
            flow => flow,
        };
        self.conclude(job, owner, flow, slot).await;
    }

    /// Records a step's flow: writes the outcome to Salesforce where there is one, then updates
    /// the job (with its notifications) in one transaction, which hands the step's `slot` on to
    /// the job's successor (see `write_loop`).
    async fn conclude(&self, job: &JobRow, owner: &str, flow: Flow, slot: OwnedSemaphorePermit) {
        let now = self.clock.now_ms();
        let mut flow = flow;
        let (change, end) = loop {
            break match flow {
                Flow::Completed(op) => {
                    flow = self.write_back_completion(job, op).await;
                    continue;
                }
                Flow::LeaseLost => return self.lease_lost(job),
                Flow::Pending {
                    operation_id,
                    progress,
                    error,
                } => {
                    let delay = self.config.poll.delay(job.polls + 1);
                    if let Some(error) = &error {
                        tracing::warn!(job_id = job.id, %error, "Could not read the operation's status; polling again");
                    }
                    let update = PollUpdate {
                        operation_id,
                        progress,
                        run_at: now + delay.as_millis() as i64,
                        error,
                    };
                    (JobChange::Poll(update), StepEnd::Poll { poll_in: delay })
                }
                Flow::Cancel(reason) => {
                    let change = JobChange::End {
                        errors: job.errors_with(&reason, now),
                        end: JobEnd::Cancelled {
                            reason: reason.clone(),
                        },
                        deliveries: vec![],
                    };
                    (change, StepEnd::Cancelled { reason })
                }
                Flow::WrittenBack {
                    result,
                    external_id,
                } => {
                    let s = summary(job, JobEvent::Completed, external_id.as_deref(), None, now);
                    let ended = StepEnd::Completed {
                        external_id: external_id.clone(),
                        latency_seconds: (now - job.created_at).max(0) as f64 / 1000.0,
                    };
                    let change = JobChange::End {
                        end: JobEnd::Completed {
                            result: result.to_string(),
                            external_id,
                        },
                        errors: job.errors.clone(),
                        deliveries: self.deliveries_for(&s, JobEvent::Completed),
                    };
                    (change, ended)
                }
                Flow::Fail {
                    error,
                    transient,
                    new_operation,
                } => {
                    let kind = ErrorKind::of(transient);
                    match transition::next(&self.config.retry, job.attempt, kind, rand::random()) {
                        Transition::Retry { delay } => {
                            let change = JobChange::End {
                                errors: job.errors_with(&error, now),
                                end: JobEnd::Retry {
                                    run_at: now + delay.as_millis() as i64,
                                    error: error.clone(),
                                    new_operation,
                                },
                                deliveries: vec![],
                            };
                            let ended = StepEnd::Retry {
                                attempt: job.attempt,
                                error,
                                retry_in: delay,
                            };
                            (change, ended)
                        }
                        Transition::Dead => {
                            // The recorded error notes a failed write-back.
                            let error = self.write_back_failure(job, error).await;
                            let s = summary(job, JobEvent::Dead, None, Some(&error), now);
                            let change = JobChange::End {
                                errors: job.errors_with(&error, now),
                                deliveries: self.deliveries_for(&s, JobEvent::Dead),
                                end: JobEnd::Dead {
                                    error: error.clone(),
                                },
                            };
                            let ended = StepEnd::Dead {
                                attempt: job.attempt,
                                error,
                            };
                            (change, ended)
                        }
                    }
                }
            };
        };
        // Deliveries were written with the step: wake the delivery loop once they are.
        let notifies =
            matches!(&change, JobChange::End { deliveries, .. } if !deliveries.is_empty());
        let update = JobUpdate {
            id: job.id,
            owner: owner.to_owned(),
            change,
        };
        match self.write(update, Some(slot)).await {
            Ok(true) => {
                // Logged once recorded: a step whose write failed or lost its lease runs again.
                JobStepEnded {
                    job_id: job.id,
                    order_id: &job.order_id,
                    end,
                }
                .emit(&self.metrics);
                if notifies {
                    self.deliveries.notify_one();
                }
            }
            Ok(false) => self.lease_lost(job),
            Err(error) => {
                tracing::error!(job_id = job.id, %error, "Could not record the job step; it resumes when its lease expires");
            }
        }
    }

    /// Writes `Activated` and the external id: [`Flow::WrittenBack`], or the flow to record
    /// instead when the write failed.
    async fn write_back_completion(&self, job: &JobRow, op: Operation) -> Flow {
        let external_id = op.result.as_ref().and_then(super::fulfilment::external_id);
        let Ok(id) = SfId::parse(&job.order_id) else {
            return Flow::Cancel(format!("'{}' is not a Salesforce id", job.order_id));
        };
        let mut fields = json!({
            &self.rules.activation_field: "Activated",
            &self.config.error_field: Json::Null,
        });
        if let Some(x) = &external_id {
            fields[&self.rules.external_id_field] = json!(x);
        } else {
            tracing::warn!(
                job_id = job.id,
                "The fulfilment result has no external_id; writing Activated only"
            );
        }
        match self.update_order(&id, fields).await {
            Ok(()) => Flow::WrittenBack {
                result: op.result.unwrap_or(Json::Null),
                external_id,
            },
            // The operation stays completed; the next poll sees it again and retries the write.
            Err(e) if e.is_retryable() => Flow::Pending {
                operation_id: op.operation_id,
                progress: Some(100),
                error: Some(format!("writing the outcome to Salesforce: {e}")),
            },
            Err(e) => Flow::fail(
                format!(
                    "Salesforce refused the outcome (operation {} completed): {e}",
                    op.operation_id
                ),
                false,
            ),
        }
    }

    /// Writes `fields` (which include the error field) to the order; an org without the error
    /// field answers 400, and gets the other fields alone.
    async fn update_order(
        &self,
        id: &SfId,
        mut fields: Json,
    ) -> Result<(), crate::salesforce::RestError> {
        match self.orders.update(id, &fields).await {
            Err(crate::salesforce::RestError::Api { status: 400, .. }) => {
                if let Some(f) = fields.as_object_mut() {
                    f.remove(&self.config.error_field);
                }
                self.orders.update(id, &fields).await
            }
            other => other,
        }
    }

    /// Writes the failure status and message to the order, best effort; returns the error to
    /// record, noting a failed write-back.
    async fn write_back_failure(&self, job: &JobRow, error: String) -> String {
        let Ok(id) = SfId::parse(&job.order_id) else {
            return error;
        };
        let fields = json!({
            &self.rules.activation_field: self.config.failure_status,
            &self.config.error_field: truncate(&error, ERROR_FIELD_MAX),
        });
        match self.update_order(&id, fields).await {
            Ok(()) => error,
            Err(e) => format!("{error} (and writing the failure to Salesforce failed: {e})"),
        }
    }

    fn deliveries_for(&self, summary: &Json, event: JobEvent) -> Vec<NewDelivery> {
        self.config
            .notifiers
            .iter()
            .map(|n| NewDelivery {
                notifier: n.name().to_owned(),
                event: event.as_str().to_owned(),
                payload: n.body(summary),
                max_attempts: self.config.delivery_retry.max_attempts,
            })
            .collect()
    }

    fn lease_lost(&self, job: &JobRow) {
        JobLeaseLost { job_id: job.id }.emit(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_states_map_to_flows() {
        let op = |status, error: Option<super::super::fulfilment::OpError>| Operation {
            operation_id: "op_1".into(),
            status,
            progress: Some(40),
            result: None,
            error,
        };
        assert!(matches!(
            Flow::of(op(OpStatus::Pending, None)),
            Flow::Pending {
                progress: Some(40),
                ..
            }
        ));
        assert!(matches!(
            Flow::of(op(OpStatus::Completed, None)),
            Flow::Completed(_)
        ));
        let failed = Flow::of(op(
            OpStatus::Failed,
            Some(super::super::fulfilment::OpError {
                code: "rejected".into(),
                message: "no stock".into(),
                retryable: false,
            }),
        ));
        let Flow::Fail {
            error,
            transient,
            new_operation,
        } = failed
        else {
            panic!("{failed:?}")
        };
        assert!(!transient && new_operation);
        assert_eq!(
            error,
            "fulfilment operation op_1 failed: rejected: no stock"
        );
    }

    #[test]
    fn facts_come_from_the_configured_fields() {
        let rules = crate::rules::RulesConfig::defaults();
        let f = facts(
            &rules,
            &json!({"Status": "Approved", "Activation_Status__c": "", "WHMCS_Order_ID__c": "WH-1", "AccountId": "001"}),
        );
        assert_eq!(f.status.as_deref(), Some("Approved"));
        assert_eq!(f.activation, None, "an empty picklist is no value");
        assert_eq!(f.external_id.as_deref(), Some("WH-1"));
        assert_eq!(truncate("é".repeat(300).as_str(), 255).chars().count(), 255);
    }
}
