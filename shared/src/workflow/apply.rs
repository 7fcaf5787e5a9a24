//! The applier: one apply request → the stored plan applied in one transaction, or, when the
//! target moved on since the plan, the run superseded and a fresh plan request queued.

use std::borrow::Cow;

use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::apply::{self, ApplyOutcome, ApplyReport};
use crate::message::{ApplyRequest, PlanRequest};
use crate::metrics::{Metric, MetricsBatch};
use crate::notify::Event;
use crate::plan::Plan;
use crate::services::Services;
use crate::store::{RunRecord, RunStatus, Store, StoreError, Trigger};
use crate::{Error, Result, telemetry};

/// What the applier did with one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyRequestOutcome {
    Applied {
        report: ApplyReport,
    },
    /// The target's generation moved since the plan: nothing applied, the run is
    /// `superseded`, and `replan` was queued.
    Superseded {
        sync_id: Uuid,
        target: String,
        planned_generation: i64,
        current_generation: i64,
        replan: PlanRequest,
    },
    /// The run had already finished (a redelivered message): nothing done.
    AlreadyFinished {
        sync_id: Uuid,
        status: RunStatus,
    },
}

/// Applies the plan stored for `request.sync_id`. Retryable errors (database trouble) change
/// nothing and may be retried; permanent ones have been recorded on the run by `apply`.
pub async fn handle_apply_request(
    services: &Services,
    request: &ApplyRequest,
) -> Result<ApplyRequestOutcome> {
    apply_request(services, request, None).await
}

/// [`handle_apply_request`] for a run this process planned and recorded itself (the CLI's
/// inline sync), given the plan it recorded: the same steps, without reading back and
/// decoding what it just wrote (at 10,000 creates, 9 MB of JSON and a sixth of the sync's CPU).
pub(super) async fn handle_apply_request_of(
    services: &Services,
    request: &ApplyRequest,
    recorded: &Plan,
) -> Result<ApplyRequestOutcome> {
    apply_request(services, request, Some(recorded)).await
}

async fn apply_request(
    services: &Services,
    request: &ApplyRequest,
    recorded: Option<&Plan>,
) -> Result<ApplyRequestOutcome> {
    let sync_id = request.sync_id;
    let (run, plan) = {
        let store = services.database().await?;
        let run = store
            .run(sync_id)
            .await?
            .ok_or(StoreError::RunNotFound(sync_id))?;
        let plan = match recorded {
            Some(plan) => Some(Cow::Borrowed(plan)),
            None => store.load_plan(sync_id).await?.map(Cow::Owned),
        };
        (run, plan)
    };
    let span = telemetry::sync_span(
        &run.target,
        Some(&sync_id.to_string()),
        run.commit.as_deref(),
        run.trigger.as_str(),
    );
    async move {
        let Some(plan) = plan else {
            if run.status.is_finished() {
                return Ok(ApplyRequestOutcome::AlreadyFinished {
                    sync_id,
                    status: run.status,
                });
            }
            return Err(Error::Internal(format!(
                "sync run `{sync_id}` is `{}` and has no stored plan",
                run.status
            )));
        };
        let outcome = {
            let mut store = services.database().await?;
            apply::apply_plan(&mut store, sync_id, &plan).await
        };
        let metrics = MetricsBatch::new(&run.target).property("sync_id", sync_id.to_string());
        match outcome {
            Ok(ApplyOutcome::Applied(report)) => {
                let total = chrono::Utc::now() - run.started_at;
                tracing::info!(
                    created = report.created,
                    updated = report.updated,
                    deleted = report.deleted,
                    generation = report.generation,
                    "applied"
                );
                metrics
                    .put(Metric::SyncSucceeded, 1.0)
                    .put_duration(Metric::SyncDuration, total.to_std().unwrap_or_default())
                    .put_duration(Metric::ApplyDuration, report.duration)
                    .put(Metric::ResourcesCreated, report.created as f64)
                    .put(Metric::ResourcesUpdated, report.updated as f64)
                    .put(Metric::ResourcesDeleted, report.deleted as f64)
                    .property("commit", report.commit.clone().unwrap_or_default())
                    .emit_to(&services.metrics);
                retain_history(services, report.generation).await;
                let event = Event::SyncSucceeded {
                    target: run.target.clone(),
                    sync_id,
                    commit: report.commit.clone(),
                    counts: crate::notify::Counts {
                        create: report.created,
                        update: report.updated,
                        delete: report.deleted,
                        unchanged: report.unchanged,
                    },
                };
                super::announce::announce(services, &event).await;
                Ok(ApplyRequestOutcome::Applied { report })
            }
            Ok(ApplyOutcome::Stale {
                planned_generation,
                current_generation,
            }) => {
                let replan = replan_request(&run);
                tracing::info!(
                    planned_generation,
                    current_generation,
                    "plan superseded: the target moved on; a fresh plan is requested"
                );
                metrics
                    .put(Metric::PlanStale, 1.0)
                    .emit_to(&services.metrics);
                services.queues.send_plan(&replan).await?;
                Ok(ApplyRequestOutcome::Superseded {
                    sync_id,
                    target: run.target.clone(),
                    planned_generation,
                    current_generation,
                    replan,
                })
            }
            Ok(ApplyOutcome::AlreadyFinished { status }) => {
                if status == RunStatus::Superseded {
                    // The first delivery may have died between superseding the run and queueing
                    // its fresh plan; queueing it again is harmless (same deduplication id).
                    services.queues.send_plan(&replan_request(&run)).await?;
                }
                tracing::info!(%status, "apply request for a finished run ignored");
                Ok(ApplyRequestOutcome::AlreadyFinished { sync_id, status })
            }
            Err(error) => {
                if !error.is_retryable() {
                    tracing::warn!(error = %crate::telemetry::error_chain(&error), "apply failed");
                    metrics
                        .put(Metric::SyncFailed, 1.0)
                        .emit_to(&services.metrics);
                    let event = Event::SyncFailed {
                        target: run.target.clone(),
                        sync_id: Some(sync_id),
                        revision: run.revision.clone(),
                        error: crate::telemetry::error_chain(&error),
                        diagnostics: Vec::new(),
                    };
                    super::announce::announce(services, &event).await;
                }
                Err(error.into())
            }
        }
    }
    .instrument(span)
    .await
}

/// Prunes old runs (see `workflow::prune_history`); retention never fails a sync.
async fn retain_history(services: &Services, generation: i64) {
    match services.database().await {
        Ok(store) => prune_history(&store, generation, services.settings.history_limit).await,
        Err(error) => {
            tracing::warn!(error = %crate::telemetry::error_chain(&error), "cannot prune sync run history")
        }
    }
}

/// Applied runs between two history prunes: pruning scans the run table, so it runs every
/// tenth generation rather than after every run (a target then holds at most its limit plus
/// the runs since the last prune).
pub const PRUNE_EVERY: i64 = 10;

/// Deletes finished runs beyond `limit` (default 100) per target every [`PRUNE_EVERY`]
/// generations. Revisions, the audit trail, are never pruned; nor is a target's last applied
/// run. A failure is logged, never returned: retention must not fail a sync.
async fn prune_history(store: &Store, generation: i64, limit: Option<u32>) {
    if generation % PRUNE_EVERY != 0 {
        return;
    }
    let keep = i64::from(limit.unwrap_or(crate::config::DEFAULT_HISTORY_LIMIT));
    match store.prune_history(keep).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, keep, "old sync runs pruned"),
        Err(error) => tracing::warn!(error = %error, "cannot prune sync run history"),
    }
}

/// The plan request that replaces a superseded run. Deterministic for a given run, so a
/// redelivered apply request queues the same message (and the queue drops the copy):
/// branch-following runs re-read the head under a delivery id naming the run; the others ask
/// again at the run's start time (a rollback becomes a manual sync, which plans the pin).
fn replan_request(run: &RunRecord) -> PlanRequest {
    // A rollback's replan is a manual sync, which plans the pin.
    let trigger = match run.trigger {
        Trigger::Rollback | Trigger::Unknown => Trigger::Manual,
        other => other,
    };
    let mut request = PlanRequest::new(run.target.clone(), trigger, run.started_at)
        .with_delivery_id(format!("superseded:{}", run.id));
    if let Some(actor) = &run.actor {
        request = request.with_actor(actor.clone());
    }
    // A selective sync stays selective, or its replan would apply what the person left out;
    // an override of the sync windows stays one.
    if let Some(selected) = &run.selected {
        request = request.with_only(selected.clone());
    }
    if run.window_override_by.is_some() {
        request = request.with_override_window(true);
    }
    request
}
