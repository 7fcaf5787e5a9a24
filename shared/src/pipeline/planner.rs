//! The planner: one plan request → one recorded sync run (or nothing, when the request is a
//! duplicate of work done or under way), and an apply request when the plan may go ahead.
//!
//! Every read goes through `incremental`: the commit (the branch head, or a rollback's, a pin's
//! or a manual revision's) is fetched into the target's cache, then planned from the files
//! changed since the last applied commit when that is safe, else from the whole tree. The scan
//! mode is logged on the run's span (`scan`) and carried by the run's metrics (`scan`,
//! `scan_reason`).

use std::time::Instant;

use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use super::source::{self, commit_of};
use crate::config::TargetSettings;
use crate::diagnostic::{self, Diagnostic};
use crate::incremental::{self, ScanMode};
use crate::manifest::Limits;
use crate::message::{self, ApplyRequest, PlanRequest};
use crate::metrics::{Metric, MetricsBatch};
use crate::notify::{self, Event};
use crate::plan::Summary;
use crate::services::Services;
use crate::store::{NewRun, NewTarget, RunStatus, StoreError, TargetState, Trigger};
use crate::{Result, telemetry};

/// Why a plan request did nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum SkipReason {
    /// The commit is already applied and nothing drifted.
    AlreadyApplied { commit: String },
    /// A run for this commit is planned, applying or waiting for approval.
    InProgress { sync_id: Uuid, status: RunStatus },
    /// A rollback pinned the target; automatic syncs wait until it is resumed.
    Pinned { pinned_commit: String },
    /// Automatic syncs of the target are suspended.
    Suspended,
}

/// What the planner did with one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PlanRequestOutcome {
    /// Nothing recorded, nothing queued.
    Skipped {
        target: String,
        #[serde(flatten)]
        reason: SkipReason,
    },
    /// A run was recorded: `status` is `planned` (dry run, or queued for the applier when
    /// `apply_enqueued`), `pending_approval`, or `succeeded` (nothing to change).
    Planned {
        target: String,
        sync_id: Uuid,
        status: RunStatus,
        revision: String,
        summary: Summary,
        apply_enqueued: bool,
        approval_reason: Option<String>,
    },
    /// A run was recorded as failed (validation errors, or a repository that cannot be read
    /// for a reason retrying will not fix).
    Failed {
        target: String,
        sync_id: Uuid,
        error: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// Plans `request` (see the module docs for the rules). A retryable error (network, database)
/// records nothing, so the message can simply be retried; a permanent one after the target is
/// known is recorded as a failed run and returned as [`PlanRequestOutcome::Failed`].
pub async fn handle_plan_request(
    services: &Services,
    request: &PlanRequest,
) -> Result<PlanRequestOutcome> {
    let target = services
        .settings
        .target(&request.target)
        .ok_or_else(|| StoreError::UnknownTarget(request.target.clone()))?;
    let trigger = store_trigger(request.trigger);
    let span = telemetry::sync_span(
        &target.name,
        "",
        request
            .revision
            .as_deref()
            .and_then(commit_of)
            .unwrap_or(""),
        trigger.as_str(),
    );
    plan_request(services, target, trigger, request)
        .instrument(span)
        .await
}

fn store_trigger(trigger: message::Trigger) -> Trigger {
    match trigger {
        message::Trigger::Webhook => Trigger::Webhook,
        message::Trigger::Schedule => Trigger::Schedule,
        message::Trigger::Manual => Trigger::Manual,
        message::Trigger::Drift => Trigger::Drift,
        message::Trigger::Rollback => Trigger::Rollback,
        message::Trigger::Unknown => {
            tracing::warn!("a plan request with an unknown trigger is handled as manual");
            Trigger::Manual
        }
    }
}

/// Whether a trigger is automatic (follows the branch) rather than asked for by a person.
fn follows_branch(trigger: Trigger) -> bool {
    matches!(trigger, Trigger::Webhook | Trigger::Schedule)
}

async fn plan_request(
    services: &Services,
    target: &TargetSettings,
    trigger: Trigger,
    request: &PlanRequest,
) -> Result<PlanRequestOutcome> {
    let started = Instant::now();
    let dry_run = request.is_dry_run() || target.dry_run;
    let requested = request.revision.as_deref().and_then(commit_of);
    let skipped = |reason| {
        tracing::info!(?reason, "plan request skipped");
        Ok(PlanRequestOutcome::Skipped {
            target: target.name.clone(),
            reason,
        })
    };

    let state = {
        let store = super::store(services).await?;
        store
            .ensure_target(&NewTarget {
                name: target.name.clone(),
                repo_url: target.repo_url.clone(),
                branch: target.branch.clone(),
                path: target.path.clone(),
            })
            .await?
    };
    if state.suspended
        && matches!(
            trigger,
            Trigger::Webhook | Trigger::Schedule | Trigger::Drift
        )
    {
        return skipped(SkipReason::Suspended);
    }
    if let Some(pinned) = &state.pinned_commit
        && follows_branch(trigger)
    {
        return skipped(SkipReason::Pinned {
            pinned_commit: pinned.clone(),
        });
    }

    // Which commit to read: a rollback's, an explicit manual revision, the pin, else the head.
    // Webhook and schedule requests read the head even when they name a commit, so a late
    // request never takes the target back to an older commit.
    let read_commit: Option<String> = match trigger {
        Trigger::Rollback | Trigger::Manual | Trigger::Cli if requested.is_some() => {
            requested.map(str::to_owned)
        }
        Trigger::Webhook | Trigger::Schedule => None,
        _ => state.pinned_commit.clone(),
    };

    // A dry run asked for explicitly always plans; the other requests are checked against
    // the work done or under way (dry runs of a dry-run target against its dry runs).
    let checks_duplicates = !request.is_dry_run();
    if checks_duplicates
        && let Some(commit) = requested
        && let Some(outcome) = already_done(services, target, trigger, &state, commit).await?
    {
        return skipped(outcome);
    }

    let source = match source::source_spec(&services.settings, target).await {
        Ok(source) => source,
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            return record_failure(services, target, trigger, request, dry_run, &error).await;
        }
    };
    let limits = Limits::default();
    let located = match incremental::locate(&source, read_commit.as_deref()).await {
        Ok(located) => located,
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            return record_failure(services, target, trigger, request, dry_run, &error).await;
        }
    };
    let commit = located.revision().commit().unwrap_or_default().to_string();
    tracing::Span::current().record("commit", commit.as_str());
    if checks_duplicates
        && Some(commit.as_str()) != requested
        && let Some(outcome) = already_done(services, target, trigger, &state, &commit).await?
    {
        return skipped(outcome);
    }

    // A drift request exists to restore Git's state over rows changed outside a sync: it reads
    // everything, whatever the store says about drift by the time it runs.
    let full = trigger == Trigger::Drift;
    let checks = match services.checks().await {
        Ok(checks) => checks,
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            return record_failure(services, target, trigger, request, dry_run, &error).await;
        }
    };
    let store = super::store(services).await?;
    let planned =
        incremental::plan_located(&store, target, &source, checks, &limits, full, located).await;
    let planned = match planned {
        Ok(planned) => planned,
        Err(error) if error.is_retryable() => return Err(error),
        Err(error) => {
            drop(store);
            return record_failure(services, target, trigger, request, dry_run, &error).await;
        }
    };
    let scan = planned.mode.to_string();
    tracing::Span::current().record("scan", scan.as_str());
    tracing::info!(
        scan = %planned.mode,
        fetch_ms = planned.fetch.as_millis() as u64,
        "repository read"
    );
    let checked = planned.checked;
    let run = NewRun {
        target: target.name.clone(),
        trigger,
        actor: request.actor.clone().or_else(|| {
            request
                .delivery_id
                .as_ref()
                .map(|delivery| format!("webhook:{delivery}"))
        }),
        revision: Some(checked.revision.to_string()),
        dry_run,
    };
    let (scan_mode, scan_reason) = match &planned.mode {
        ScanMode::Incremental { .. } => ("incremental", String::new()),
        ScanMode::Full { reason } => ("full", reason.to_string()),
    };
    let mut metrics = MetricsBatch::new(&target.name)
        .property("commit", commit.as_str())
        .property("scan", scan_mode);
    if !scan_reason.is_empty() {
        metrics = metrics.property("scan_reason", scan_reason);
    }
    let errors = checked
        .diagnostics
        .iter()
        .filter(|d| d.severity == diagnostic::Severity::Error)
        .count();
    metrics.push(Metric::ValidationErrors, errors as f64);

    let Some(mut plan) = planned.plan.filter(|_| !checked.has_errors()) else {
        let sync_id = store.begin_run(&run).await?;
        tracing::Span::current().record("sync_id", sync_id.to_string().as_str());
        let error = "the repository has validation errors".to_string();
        store
            .fail_run(sync_id, &error, &checked.diagnostics)
            .await?;
        drop(store);
        tracing::warn!(errors, "plan failed: the repository has validation errors");
        metrics
            .put(Metric::SyncFailed, 1.0)
            .put_duration(Metric::PlanDuration, started.elapsed())
            .property("sync_id", sync_id.to_string())
            .emit_to(&services.metrics);
        announce_failure(
            services,
            target,
            sync_id,
            Some(checked.revision.to_string()),
            &error,
            &checked.diagnostics,
        )
        .await;
        return Ok(PlanRequestOutcome::Failed {
            target: target.name.clone(),
            sync_id,
            error,
            diagnostics: checked.diagnostics,
        });
    };

    let sync_id = store.begin_run(&run).await?;
    tracing::Span::current().record("sync_id", sync_id.to_string().as_str());
    let nothing_to_do = !plan.has_changes() && plan.base.commit.as_deref() == Some(&commit);
    // Approval by branch (`sync.require_approval_for_branches`). A rollback is exempt: the
    // person who asked for it is the approver, and it must not wait during an incident.
    if plan.approval_reason.is_none() && trigger != Trigger::Rollback {
        plan.approval_reason = services.settings.branch_approval(target);
    }
    let status = if plan.has_errors() {
        RunStatus::Failed
    } else if dry_run {
        RunStatus::Planned
    } else if nothing_to_do {
        RunStatus::Succeeded
    } else if plan.approval_reason.is_some() || !target.auto_apply {
        RunStatus::PendingApproval
    } else {
        RunStatus::Planned
    };
    let recorded = store.record_plan(sync_id, &plan, status).await;
    if let Err(error) = recorded {
        // Leave no run stuck in `planning`: the retry records a new one.
        let reason = format!("planning was interrupted: {}", super::error_chain(&error));
        if let Err(fail) = store.fail_run(sync_id, &reason, &[]).await {
            tracing::warn!(error = %super::error_chain(&fail), "could not mark the run failed");
        }
        return Err(error.into());
    }
    if status == RunStatus::Failed {
        let error = "the plan has errors".to_string();
        store.fail_run(sync_id, &error, &[]).await?;
        drop(store);
        metrics
            .put(Metric::SyncFailed, 1.0)
            .put_duration(Metric::PlanDuration, started.elapsed())
            .property("sync_id", sync_id.to_string())
            .emit_to(&services.metrics);
        announce_failure(
            services,
            target,
            sync_id,
            Some(plan.revision.to_string()),
            &error,
            &plan.diagnostics,
        )
        .await;
        return Ok(PlanRequestOutcome::Failed {
            target: target.name.clone(),
            sync_id,
            error,
            diagnostics: plan.diagnostics,
        });
    }
    drop(store);

    let apply = status == RunStatus::Planned && !dry_run;
    if apply {
        services
            .queues
            .send_apply(&ApplyRequest::new(sync_id, &target.name))
            .await?;
    }
    let summary = plan.summary();
    tracing::info!(
        status = %status,
        create = summary.create,
        update = summary.update,
        delete = summary.delete,
        unchanged = summary.unchanged,
        apply_enqueued = apply,
        "planned"
    );
    metrics
        .put_duration(Metric::PlanDuration, started.elapsed())
        .property("sync_id", sync_id.to_string())
        .emit_to(&services.metrics);
    if status == RunStatus::PendingApproval {
        let event = Event::PendingApproval {
            target: target.name.clone(),
            sync_id,
            revision: plan.revision.to_string(),
            reason: plan
                .approval_reason
                .clone()
                .or_else(|| (!target.auto_apply).then(|| "auto_apply is off".to_string())),
            summary: summary.to_string(),
        };
        notify::notify(services, &event).await;
    }
    Ok(PlanRequestOutcome::Planned {
        target: target.name.clone(),
        sync_id,
        status,
        revision: plan.revision.to_string(),
        summary,
        apply_enqueued: apply,
        approval_reason: plan.approval_reason,
    })
}

/// Whether `commit` needs no new run: already applied (for branch-following triggers, with no
/// drift to repair), or a run for it is open. An open `planned` run gets its apply request sent
/// again, in case the first send was lost (the apply queue drops the duplicate).
async fn already_done(
    services: &Services,
    target: &TargetSettings,
    trigger: Trigger,
    state: &TargetState,
    commit: &str,
) -> Result<Option<SkipReason>> {
    let store = super::store(services).await?;
    if follows_branch(trigger)
        && state.last_applied_commit.as_deref() == Some(commit)
        && store.drift(&target.name).await?.is_empty()
    {
        return Ok(Some(SkipReason::AlreadyApplied {
            commit: commit.to_string(),
        }));
    }
    let Some(open) = store
        .open_run_for_commit(&target.name, commit, target.dry_run)
        .await?
    else {
        return Ok(None);
    };
    drop(store);
    if open.status == RunStatus::Planned && !target.dry_run {
        services
            .queues
            .send_apply(&ApplyRequest::new(open.id, &target.name))
            .await?;
    }
    Ok(Some(SkipReason::InProgress {
        sync_id: open.id,
        status: open.status,
    }))
}

/// Records a run that failed before planning for a reason a retry will not fix.
async fn record_failure(
    services: &Services,
    target: &TargetSettings,
    trigger: Trigger,
    request: &PlanRequest,
    dry_run: bool,
    error: &crate::Error,
) -> Result<PlanRequestOutcome> {
    let reason = super::error_chain(error);
    let store = super::store(services).await?;
    let sync_id = store
        .begin_run(&NewRun {
            target: target.name.clone(),
            trigger,
            actor: request.actor.clone(),
            revision: request.revision.clone(),
            dry_run,
        })
        .await?;
    store.fail_run(sync_id, &reason, &[]).await?;
    drop(store);
    tracing::warn!(%sync_id, error = %reason, "plan failed");
    MetricsBatch::new(&target.name)
        .put(Metric::SyncFailed, 1.0)
        .property("sync_id", sync_id.to_string())
        .emit_to(&services.metrics);
    announce_failure(
        services,
        target,
        sync_id,
        request.revision.clone(),
        &reason,
        &[],
    )
    .await;
    Ok(PlanRequestOutcome::Failed {
        target: target.name.clone(),
        sync_id,
        error: reason,
        diagnostics: Vec::new(),
    })
}

/// Tells the people on call that run `sync_id` failed (best effort, see `notify`).
async fn announce_failure(
    services: &Services,
    target: &TargetSettings,
    sync_id: Uuid,
    revision: Option<String>,
    error: &str,
    diagnostics: &[Diagnostic],
) {
    let event = Event::SyncFailed {
        target: target.name.clone(),
        sync_id: Some(sync_id),
        revision,
        error: error.to_string(),
        diagnostics: diagnostics
            .iter()
            .filter(|d| d.severity == diagnostic::Severity::Error)
            .map(ToString::to_string)
            .collect(),
    };
    notify::notify(services, &event).await;
}
