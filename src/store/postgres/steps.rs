//! A worker's step updates on PostgreSQL, and the claim made with them, one statement per batch.
//!
//! [`Queue::update_jobs`](crate::store::queue::Queue::update_jobs) receives the writes of many
//! steps at once. Here each round of them (a run in which no job repeats, see
//! [`leased::rounds`]) is ONE statement of fixed text: each kind of change is a data-modifying
//! CTE joining the jobs to `unnest` of array parameters, and a last CTE inserts the deliveries of
//! the jobs whose end it recorded. A fixed text is one prepared statement per connection whatever
//! the batch size (a `VALUES` list of n rows is a new statement for every n: a Parse round trip
//! each, and a Close as well once sqlx's cache of 100 overflows); a single statement is one round
//! trip and a transaction on its own, so a batch of one round (nearly every batch: a step waits
//! for each write before its next) needs no `BEGIN` and no `COMMIT`. A batch of several rounds
//! runs its statements in one transaction.
//!
//! **A claim rides on the batch** ([`Queue::update_jobs_and_claim`](crate::store::queue::Queue::update_jobs_and_claim)):
//! one more CTE leases the
//! next due jobs for the slots the batch's last writes free, so a worker slot moves from one
//! job to the next in one commit instead of two. It is the claim of `queue.rs` word for word
//! (the per-order gate, `FOR UPDATE SKIP LOCKED`), run on the statement's snapshot: it sees the
//! queue as it was before the batch, so a job whose predecessor ends in the same statement still
//! finds it open and waits for the next claim (the gate errs on the safe side), and it skips the
//! jobs the round changes, which a statement must not change twice.
//!
//! The invariants are `leased.rs`'s. Each change names the lease owner and applies only while
//! that owner holds the lease (the fence that keeps a worker which lost its job from writing);
//! the ids returned say which applied. A job's deliveries (the outbox) are written only with its
//! recorded end, in the same statement. The CTEs of a round touch disjoint rows, because no job
//! repeats in a round, so their order does not matter.

use std::collections::HashSet;

use sqlx::{Postgres, Row};

use super::queue::claim_jobs;
use crate::store::leased::{self, EndColumns};
use crate::store::model::job_from_row;
use crate::store::queue::{Applied, Claim, JobChange, JobUpdate};
use crate::store::{JobRow, StoreError};

/// One round of step updates. `$1` is the time; then, per kind, parallel arrays of the changed
/// jobs' ids, lease owners and values: phases `$2..$4` (id, owner, phase); operations `$5..$7`
/// (id, owner, operation); polls `$8..$13` (id, owner, operation, progress, next run, error);
/// ends `$14..$23` (id, owner, state, run_at, error, errors, result, external id, finished at,
/// and 1 when the operation is abandoned); deliveries `$24..$28` (job id, notifier, event,
/// payload, max attempts); the claim `$29..$31` (owner, lease deadline, at most this many:
/// 0 claims nothing). Returns the ids whose lease held as an array (`held_ids`) on every row,
/// and one row per job claimed (none: one row of NULL job columns). The `SET` clauses are those
/// of `PHASE_SET`, `OPERATION_SET`, `POLL_SET` and `END_SET` in `sql.rs`; the claim is
/// `CLAIM_JOBS` (`queue.rs`) minus the jobs of the round itself, since a statement must not
/// change a row twice.
const STEP_UPDATES: &str = concat!(
    "WITH
    phases AS (
        UPDATE sfcdc_jobs AS j SET phase = v.phase, updated_at = $1
        FROM unnest($2::bigint[], $3::text[], $4::text[]) AS v(id, owner, phase)
        WHERE j.id = v.id AND j.lease_owner = v.owner
        RETURNING j.id),
    operations AS (
        UPDATE sfcdc_jobs AS j SET operation_id = v.operation_id, phase = 'submitted',
            submitted_at = coalesce(j.submitted_at, $1), updated_at = $1
        FROM unnest($5::bigint[], $6::text[], $7::text[]) AS v(id, owner, operation_id)
        WHERE j.id = v.id AND j.lease_owner = v.owner
        RETURNING j.id),
    polls AS (
        UPDATE sfcdc_jobs AS j SET state = 'polling', operation_id = v.operation_id,
            progress = coalesce(v.progress, j.progress), polls = j.polls + 1, run_at = v.run_at,
            last_error = coalesce(v.error, j.last_error), phase = 'submitted',
            lease_owner = NULL, lease_until = NULL, submitted_at = coalesce(j.submitted_at, $1),
            updated_at = $1
        FROM unnest($8::bigint[], $9::text[], $10::text[], $11::int[], $12::bigint[], $13::text[])
            AS v(id, owner, operation_id, progress, run_at, error)
        WHERE j.id = v.id AND j.lease_owner = v.owner
        RETURNING j.id),
    ends AS (
        UPDATE sfcdc_jobs AS j SET state = v.state, run_at = coalesce(v.run_at, j.run_at),
            last_error = coalesce(v.error, j.last_error), errors = v.errors,
            result = coalesce(v.result, j.result), external_id = coalesce(v.external_id, j.external_id),
            finished_at = v.finished_at,
            progress = CASE WHEN v.state = 'completed' THEN 100 WHEN v.new_operation = 1 THEN NULL
                ELSE j.progress END,
            generation = j.generation + v.new_operation,
            operation_id = CASE WHEN v.new_operation = 1 THEN NULL ELSE j.operation_id END,
            submitted_at = CASE WHEN v.new_operation = 1 THEN NULL ELSE j.submitted_at END,
            polls = CASE WHEN v.new_operation = 1 THEN 0 ELSE j.polls END,
            phase = CASE WHEN v.new_operation = 1 AND j.phase = 'submitted' THEN 'activating'
                ELSE j.phase END,
            lease_owner = NULL, lease_until = NULL, updated_at = $1
        FROM unnest($14::bigint[], $15::text[], $16::text[], $17::bigint[], $18::text[], $19::text[],
                $20::text[], $21::text[], $22::bigint[], $23::int[])
            AS v(id, owner, state, run_at, error, errors, result, external_id, finished_at, new_operation)
        WHERE j.id = v.id AND j.lease_owner = v.owner
        RETURNING j.id),
    deliveries AS (
        INSERT INTO sfcdc_deliveries
            (job_id, notifier, event, payload, state, attempt, max_attempts, run_at, created_at, updated_at)
        SELECT d.job_id, d.notifier, d.event, d.payload, 'pending', 0, d.max_attempts, $1, $1, $1
        FROM unnest($24::bigint[], $25::text[], $26::text[], $27::text[], $28::int[]) WITH ORDINALITY
            AS d(job_id, notifier, event, payload, max_attempts, n)
        WHERE d.job_id IN (SELECT id FROM ends)
        ORDER BY d.n
        ON CONFLICT DO NOTHING),
    claimed AS (",
    claim_jobs!(
        "$29",
        "$30",
        "$1",
        "$31",
        " AND j.id <> ALL($2) AND j.id <> ALL($5) AND j.id <> ALL($8) AND j.id <> ALL($14)"
    ),
    "),
    held AS (SELECT id FROM phases UNION ALL SELECT id FROM operations
        UNION ALL SELECT id FROM polls UNION ALL SELECT id FROM ends)
    SELECT h.held_ids, c.* FROM (SELECT array(SELECT id FROM held) AS held_ids) AS h
        LEFT JOIN claimed AS c ON true"
);

/// Applies one round (no job twice) and `claim` in one statement on `executor`; the ids whose
/// lease held, and the jobs claimed.
pub(super) async fn apply_round<'e, E>(
    executor: E,
    round: &[JobUpdate],
    claim: Option<&Claim>,
    now_ms: i64,
) -> Result<(HashSet<i64>, Vec<JobRow>), StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let (mut phase_id, mut phase_owner, mut phase) = (vec![], vec![], vec![]);
    let (mut op_id, mut op_owner, mut op) = (vec![], vec![], vec![]);
    let (mut poll_id, mut poll_owner, mut poll_op) = (vec![], vec![], vec![]);
    let (mut poll_progress, mut poll_run_at, mut poll_error) = (vec![], vec![], vec![]);
    let (mut end_id, mut end_owner, mut end_state, mut end_run_at) =
        (vec![], vec![], vec![], vec![]);
    let (mut end_error, mut end_errors, mut end_result) = (vec![], vec![], vec![]);
    let (mut end_external, mut end_finished, mut end_new_op) = (vec![], vec![], vec![]);
    let (mut d_job, mut d_notifier, mut d_event) = (vec![], vec![], vec![]);
    let (mut d_payload, mut d_max) = (vec![], vec![]);
    // One pass, matched exhaustively: a new kind of change cannot go unwritten.
    for u in round {
        let owner = u.owner.as_str();
        match &u.change {
            JobChange::Phase(p) => {
                phase_id.push(u.id);
                phase_owner.push(owner);
                phase.push(*p);
            }
            JobChange::Operation(o) => {
                op_id.push(u.id);
                op_owner.push(owner);
                op.push(o.as_str());
            }
            JobChange::Poll(p) => {
                poll_id.push(u.id);
                poll_owner.push(owner);
                poll_op.push(p.operation_id.as_str());
                poll_progress.push(p.progress);
                poll_run_at.push(p.run_at);
                poll_error.push(p.error.as_deref());
            }
            JobChange::End {
                end,
                errors,
                deliveries,
            } => {
                let EndColumns {
                    state,
                    run_at,
                    error,
                    result,
                    external_id,
                    finished_at,
                    new_operation,
                } = end.columns(now_ms);
                end_id.push(u.id);
                end_owner.push(owner);
                end_state.push(state);
                end_run_at.push(run_at);
                end_error.push(error);
                end_errors.push(errors.as_str());
                end_result.push(result);
                end_external.push(external_id);
                end_finished.push(finished_at);
                end_new_op.push(new_operation);
                for d in deliveries {
                    d_job.push(u.id);
                    d_notifier.push(d.notifier.as_str());
                    d_event.push(d.event.as_str());
                    d_payload.push(d.payload.as_str());
                    d_max.push(d.max_attempts);
                }
            }
        }
    }
    let rows = sqlx::query(STEP_UPDATES)
        .bind(now_ms)
        .bind(phase_id)
        .bind(phase_owner)
        .bind(phase)
        .bind(op_id)
        .bind(op_owner)
        .bind(op)
        .bind(poll_id)
        .bind(poll_owner)
        .bind(poll_op)
        .bind(poll_progress)
        .bind(poll_run_at)
        .bind(poll_error)
        .bind(end_id)
        .bind(end_owner)
        .bind(end_state)
        .bind(end_run_at)
        .bind(end_error)
        .bind(end_errors)
        .bind(end_result)
        .bind(end_external)
        .bind(end_finished)
        .bind(end_new_op)
        .bind(d_job)
        .bind(d_notifier)
        .bind(d_event)
        .bind(d_payload)
        .bind(d_max)
        .bind(claim.map_or("", |c| c.owner.as_str()))
        .bind(now_ms + claim.map_or(0, |c| c.lease_ms))
        .bind(claim.map_or(0, |c| c.limit))
        .fetch_all(executor)
        .await?;
    let held = match rows.first() {
        Some(r) => r.try_get::<Vec<i64>, _>("held_ids")?.into_iter().collect(),
        None => HashSet::new(),
    };
    let mut claimed = Vec::new();
    for r in &rows {
        if r.try_get::<Option<i64>, _>("id")?.is_some() {
            claimed.push(job_from_row(r)?);
        }
    }
    claimed.sort_by_key(|j| j.id);
    Ok((held, claimed))
}

/// Applies a batch and `claim`: one statement when no job repeats in the batch, else one per
/// round in a single transaction, the claim riding on the last. Each update says whether its
/// lease held.
pub(super) async fn update_jobs(
    pool: &sqlx::PgPool,
    updates: &[JobUpdate],
    claim: Option<&Claim>,
    now_ms: i64,
) -> Result<Applied, StoreError> {
    let rounds = leased::rounds(updates, |u| u.id);
    let mut applied = Applied {
        held: Vec::with_capacity(updates.len()),
        claimed: Vec::new(),
    };
    let claim = claim.filter(|c| c.limit > 0);
    match rounds.as_slice() {
        [] if claim.is_none() => {}
        [] | [_] => {
            let round = rounds.first().copied().unwrap_or_default();
            let (ids, claimed) = apply_round(pool, round, claim, now_ms).await?;
            applied
                .held
                .extend(round.iter().map(|u| ids.contains(&u.id)));
            applied.claimed = claimed;
        }
        rounds => {
            let mut tx = super::begin_write(pool).await?;
            for (n, round) in rounds.iter().enumerate() {
                let claim = claim.filter(|_| n + 1 == rounds.len());
                let (ids, claimed) = apply_round(&mut *tx, round, claim, now_ms).await?;
                applied
                    .held
                    .extend(round.iter().map(|u| ids.contains(&u.id)));
                applied.claimed = claimed;
            }
            tx.commit().await?;
        }
    }
    Ok(applied)
}
