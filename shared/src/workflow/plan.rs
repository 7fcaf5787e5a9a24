//! The plan step of a sync: one plan request → one recorded sync run (or nothing, when the
//! request is a duplicate of work done or under way, or a preview), and an apply request when
//! the plan may go ahead. The Lambda planner, `ritmo serve` and the CLI all run it.
//!
//! Every read goes through `incremental`: the commit (the branch head, or a rollback's, a pin's
//! or a manual revision's) is fetched into the target's cache, then planned from the files
//! changed since the last applied commit when that is safe, else from the whole tree. The scan
//! mode is logged on the run's span (`scan`) and carried by the run's metrics (`scan`,
//! `scan_reason`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::TargetSettings;
use crate::diagnostic::{self, Diagnostic};
use crate::manifest::Limits;
use crate::message::{ApplyRequest, PlanRequest};
use crate::metrics::{Metric, MetricsBatch};
use crate::model::Revision;
use crate::notify::Event;
use crate::plan::{Plan, Summary};
use crate::services::Services;
use crate::source::incremental::{self, ScanMode, ScanOptions};
use crate::source::spec::{self as source, commit_of};
use crate::store::{NewRun, NewTarget, RunStatus, StoreError, TargetState, Trigger};
use crate::{Error, Result, telemetry};

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
    /// The service is switched off (`gitops.enabled: false`, `RITMO_GITOPS_ENABLED=false`):
    /// nothing is planned or applied.
    Disabled,
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
        #[serde(skip)]
        detail: Box<PlanDetail>,
    },
    /// A run was recorded as failed (validation errors, or a repository that cannot be read
    /// for a reason retrying will not fix).
    Failed {
        target: String,
        sync_id: Uuid,
        error: String,
        diagnostics: Vec<Diagnostic>,
        #[serde(skip)]
        detail: Box<PlanDetail>,
    },
    /// A preview ([`PlanOptions::preview`]): planned, nothing written. `status` is what a
    /// recorded run would have become (`failed` when the repository cannot be planned).
    Previewed {
        target: String,
        status: RunStatus,
        revision: Option<String>,
        summary: Summary,
        approval_reason: Option<String>,
        #[serde(skip)]
        detail: Box<PlanDetail>,
    },
}

impl PlanRequestOutcome {
    /// What the plan read and found, when it got that far.
    pub fn detail(&self) -> Option<&PlanDetail> {
        match self {
            PlanRequestOutcome::Skipped { .. } => None,
            PlanRequestOutcome::Planned { detail, .. }
            | PlanRequestOutcome::Failed { detail, .. }
            | PlanRequestOutcome::Previewed { detail, .. } => Some(detail),
        }
    }
}

/// How a caller runs a plan request besides what the message says. The Lambda planner and
/// `ritmo serve` use the default; the CLI previews (`plan`, `sync --dry-run`) and reads working
/// trees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Plan without writing anything: no target row, no run, no bookkeeping, no apply request,
    /// no notification. The outcome is [`PlanRequestOutcome::Previewed`].
    pub preview: bool,
    /// Read the files on disk instead of a commit (a pre-commit check of a checkout).
    pub worktree: bool,
    /// Scan the whole tree even when an incremental plan would be safe.
    pub full: bool,
}

/// What a plan read and found, for the caller that renders it (the CLI); not serialised.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDetail {
    /// The commit read (or the working tree); `None` when the source could not be read.
    pub revision: Option<Revision>,
    /// `None` when the repository could not be planned (validation errors, unreadable source).
    /// Shared, so a caller can render it while its apply runs.
    pub plan: Option<Arc<Plan>>,
    /// Every diagnostic of the read and of the plan, in order.
    pub diagnostics: Vec<Diagnostic>,
    /// How the repository was read; `None` when it was not read.
    pub mode: Option<ScanMode>,
    /// Time spent in each stage of the read, fetching first (`fetch`, `diff`, `parse`, …).
    pub stages: Vec<(&'static str, Duration)>,
}

/// Plans `request` (see the module docs for the rules). A retryable error (network, database)
/// records nothing, so the message can simply be retried; a permanent one after the target is
/// known is recorded as a failed run and returned as [`PlanRequestOutcome::Failed`].
///
/// A pull request's preview is then posted to the target's repository on its forge; a post
/// that fails for a passing reason fails the request, so the queue retries it (planning again
/// writes nothing, and the comment is edited in place).
pub async fn handle_plan_request(
    services: &Services,
    request: &PlanRequest,
) -> Result<PlanRequestOutcome> {
    let outcome = plan_revision(services, request, PlanOptions::default()).await?;
    if let PlanRequestOutcome::Previewed { detail, .. } = &outcome {
        super::publish::publish_preview(
            services,
            request,
            detail.plan.as_deref(),
            &detail.diagnostics,
        )
        .await?;
    }
    Ok(outcome)
}

/// [`handle_plan_request`] with `options`: the one planning path every entry point runs.
pub async fn plan_revision(
    services: &Services,
    request: &PlanRequest,
    options: PlanOptions,
) -> Result<PlanRequestOutcome> {
    let target = services
        .settings
        .target(&request.target)
        .ok_or_else(|| StoreError::UnknownTarget(request.target.clone()))?;
    let trigger = request.trigger.known();
    let span = telemetry::sync_span(
        &target.name,
        None,
        request.revision.as_deref().and_then(commit_of),
        trigger.as_str(),
    );
    // A pull request's preview is a preview whoever runs it and however often the message is
    // delivered: nothing is recorded, so there is no run for an applier to apply.
    let options = PlanOptions {
        preview: options.preview || request.is_preview(),
        ..options
    };
    let planning = Planning {
        services,
        target,
        trigger,
        request,
        options,
        dry_run: request.is_dry_run() || target.dry_run,
        started: Instant::now(),
    };
    planning.run().instrument(span).await
}

/// Whether a trigger is automatic (follows the branch) rather than asked for by a person.
fn follows_branch(trigger: Trigger) -> bool {
    matches!(trigger, Trigger::Webhook | Trigger::Schedule)
}

/// The status a recorded plan gets: what may happen next is decided here and nowhere else.
fn decide(plan: &Plan, dry_run: bool, already_applied: bool, auto_apply: bool) -> RunStatus {
    if plan.has_errors() {
        RunStatus::Failed
    } else if dry_run {
        RunStatus::Planned
    } else if already_applied && !plan.has_changes() {
        RunStatus::Succeeded
    } else if plan.approval_reason.is_some() || !auto_apply {
        RunStatus::PendingApproval
    } else {
        RunStatus::Planned
    }
}

/// What the sync windows do to a plan request.
#[derive(Debug, Default, Clone, Copy)]
struct WindowVerdict {
    /// The plan waits for a window (`waiting_for_window`).
    holds: bool,
    /// A person applies it despite closed windows; the run records who.
    overridden: bool,
}

/// Why a request was admitted no further, or the target's state to plan against.
enum Admission {
    Skip(SkipReason),
    Plan(Box<TargetState>),
}

/// A failure after the target is known, recorded as a failed run (unless previewing).
struct Failure {
    revision: Option<String>,
    error: String,
    detail: PlanDetail,
}

/// One plan request on its way: admit → locate → plan → decide → record → dispatch.
struct Planning<'a> {
    services: &'a Services,
    target: &'a TargetSettings,
    trigger: Trigger,
    request: &'a PlanRequest,
    options: PlanOptions,
    dry_run: bool,
    started: Instant,
}

impl Planning<'_> {
    async fn run(&self) -> Result<PlanRequestOutcome> {
        let state = match self.admit().await? {
            Admission::Skip(reason) => return Ok(self.skipped(reason)),
            Admission::Plan(state) => state,
        };
        match self.read_and_record(&state).await {
            Ok(outcome) => Ok(outcome),
            Err(error) if error.is_retryable() => Err(error),
            // A preview of a selection is how a manual sync is admitted: a refusal there is the
            // caller's to report, and nothing is recorded.
            Err(error @ Error::Selection(_)) if self.options.preview => Err(error),
            Err(error) => {
                let failure = Failure {
                    revision: self.request.revision.clone(),
                    error: crate::telemetry::error_chain(&error),
                    detail: PlanDetail {
                        revision: None,
                        plan: None,
                        diagnostics: Vec::new(),
                        mode: None,
                        stages: Vec::new(),
                    },
                };
                self.fail(failure).await
            }
        }
    }

    fn skipped(&self, reason: SkipReason) -> PlanRequestOutcome {
        tracing::info!(?reason, "plan request skipped");
        PlanRequestOutcome::Skipped {
            target: self.target.name.clone(),
            reason,
        }
    }

    /// The policies that stop a request before anything is read: the service switched off,
    /// a suspended target, a pin that branch-following syncs must not undo.
    async fn admit(&self) -> Result<Admission> {
        if !self.services.settings.enabled {
            return Ok(Admission::Skip(SkipReason::Disabled));
        }
        let state = {
            let store = self.services.database().await?;
            let registration = NewTarget {
                name: self.target.name.clone(),
                repo_url: self.target.repo_url.clone(),
                branch: self.target.branch.clone(),
                path: self.target.path.clone(),
            };
            if self.options.preview {
                store
                    .target(&self.target.name)
                    .await?
                    .unwrap_or_else(|| TargetState::unregistered(&registration))
            } else {
                store.ensure_target(&registration).await?
            }
        };
        if (state.suspended || self.target.controls.suspended)
            && matches!(
                self.trigger,
                Trigger::Webhook | Trigger::Schedule | Trigger::Drift
            )
        {
            return Ok(Admission::Skip(SkipReason::Suspended));
        }
        if let Some(pinned) = &state.pinned_commit
            && follows_branch(self.trigger)
        {
            return Ok(Admission::Skip(SkipReason::Pinned {
                pinned_commit: pinned.clone(),
            }));
        }
        Ok(Admission::Plan(Box::new(state)))
    }

    /// Which commit to read: a rollback's, an explicit manual revision, the pin, else the head.
    /// Webhook and schedule requests read the head even when they name a commit, so a late
    /// request never takes the target back to an older commit.
    fn commit_to_read(&self, state: &TargetState) -> Option<String> {
        let requested = self.request.revision.as_deref().and_then(commit_of);
        if self.request.is_preview() {
            return requested.map(str::to_owned);
        }
        match self.trigger {
            Trigger::Rollback | Trigger::Manual | Trigger::Cli if requested.is_some() => {
                requested.map(str::to_owned)
            }
            Trigger::Webhook | Trigger::Schedule => None,
            _ => state.pinned_commit.clone(),
        }
    }

    /// A dry run asked for explicitly, and a preview, always plan; the other requests are
    /// checked against the work done or under way (dry runs of a dry-run target against its
    /// dry runs).
    fn checks_duplicates(&self) -> bool {
        !self.request.is_dry_run() && !self.options.preview
    }

    async fn read_and_record(&self, state: &TargetState) -> Result<PlanRequestOutcome> {
        let requested = self.request.revision.as_deref().and_then(commit_of);
        if self.checks_duplicates()
            && let Some(commit) = requested
            && let Some(reason) =
                already_done(self.services, self.target, self.trigger, state, commit).await?
        {
            return Ok(self.skipped(reason));
        }
        let source =
            source::source_spec(&self.services.settings, self.target, self.options.worktree)
                .await?;
        let commit = self.commit_to_read(state);
        let located = match (self.request.pull_request.as_deref(), commit.as_deref()) {
            (Some(pull), Some(commit)) => {
                incremental::locate_pull_request(&source, commit, &pull.head_ref).await?
            }
            (_, commit) => incremental::locate(&source, commit).await?,
        };
        let commit = located.revision().commit().unwrap_or_default().to_string();
        tracing::Span::current().record("commit", commit.as_str());
        if self.checks_duplicates()
            && Some(commit.as_str()) != requested
            && let Some(reason) =
                already_done(self.services, self.target, self.trigger, state, &commit).await?
        {
            return Ok(self.skipped(reason));
        }

        let checks = self.services.checks().await?;
        let store = self.services.database().await?;
        let scan = ScanOptions {
            // A drift request exists to restore Git's state over rows changed outside a sync:
            // it reads everything, whatever the store says about drift by the time it runs.
            full: self.options.full || self.trigger == Trigger::Drift,
            preview: self.options.preview,
            target_changed: (&state.repo_url, &state.branch, &state.path)
                != (
                    &self.target.repo_url,
                    &self.target.branch,
                    &self.target.path,
                ),
        };
        let planned = incremental::plan_located(
            &store,
            self.target,
            &source,
            checks,
            &Limits::default(),
            scan,
            located,
        )
        .await?;
        drop(store);
        tracing::Span::current().record("scan", planned.mode.to_string().as_str());
        tracing::info!(
            scan = %planned.mode,
            fetch_ms = planned.fetch.as_millis() as u64,
            "repository read"
        );
        let checked = planned.checked;
        let mode = Some(planned.mode);
        let mut stages = vec![("fetch", planned.fetch)];
        stages.extend(planned.stages);
        let Some(mut plan) = planned.plan.filter(|_| !checked.has_errors()) else {
            return self
                .fail(Failure {
                    revision: Some(checked.revision.to_string()),
                    error: "the repository has validation errors".to_string(),
                    detail: PlanDetail {
                        revision: Some(checked.revision),
                        plan: None,
                        diagnostics: checked.diagnostics,
                        mode,
                        stages,
                    },
                })
                .await;
        };
        // Approval by branch (`sync.require_approval_for_branches`). A rollback is exempt: the
        // person who asked for it is the approver, and it must not wait during an incident.
        if plan.approval_reason.is_none() && self.trigger != Trigger::Rollback {
            plan.approval_reason = self.services.settings.branch_approval(self.target);
        }
        if let Some(only) = &self.request.only {
            plan = super::selective::narrow(self.services, plan, only).await?;
        }
        let already_applied = plan.base.commit.as_deref() == Some(commit.as_str());
        let status = decide(&plan, self.dry_run, already_applied, self.target.auto_apply);
        let windows = self.windows();
        let status = if status == RunStatus::Planned && windows.holds {
            RunStatus::WaitingForWindow
        } else {
            status
        };
        let mut diagnostics = checked.diagnostics;
        diagnostics.extend(plan.diagnostics.iter().cloned());
        diagnostics
            .extend(super::controls::unowned_warnings(self.services, &self.target.name).await?);
        if status == RunStatus::Failed {
            return self
                .fail(Failure {
                    revision: Some(plan.revision.to_string()),
                    error: "the plan has errors".to_string(),
                    detail: PlanDetail {
                        revision: Some(plan.revision.clone()),
                        plan: Some(Arc::new(plan)),
                        diagnostics,
                        mode,
                        stages,
                    },
                })
                .await;
        }
        let detail = PlanDetail {
            revision: Some(plan.revision.clone()),
            plan: Some(Arc::new(plan)),
            diagnostics,
            mode,
            stages,
        };
        if self.options.preview {
            return Ok(self.previewed(status, detail));
        }
        let overridden_by = windows.overridden.then(|| {
            self.request
                .actor
                .clone()
                .unwrap_or_else(|| "unknown".to_string())
        });
        self.record(status, &commit, detail, overridden_by.as_deref())
            .await
    }

    /// What the target's sync windows do to this request now. Automatic syncs wait for them;
    /// a manual sync waits only when it reached the planner without being admitted (the
    /// windows closed in between: `admit_manual_sync` refuses it otherwise), unless the
    /// windows allow manual syncs or the person overrode them. Rollbacks and dry runs pass.
    fn windows(&self) -> WindowVerdict {
        let windows = &self.target.controls.windows;
        let now = chrono::Utc::now();
        match self.trigger {
            Trigger::Webhook | Trigger::Schedule | Trigger::Drift => WindowVerdict {
                holds: !crate::windows::allows(windows, now),
                overridden: false,
            },
            Trigger::Manual | Trigger::Cli if !self.dry_run => {
                let closed = !crate::windows::allows_manual(windows, now);
                let overrides = self.request.overrides_window();
                WindowVerdict {
                    holds: closed && !overrides,
                    overridden: closed && overrides,
                }
            }
            _ => WindowVerdict::default(),
        }
    }

    fn previewed(&self, status: RunStatus, detail: PlanDetail) -> PlanRequestOutcome {
        let plan = detail.plan.as_deref();
        PlanRequestOutcome::Previewed {
            target: self.target.name.clone(),
            status,
            revision: plan.map(|plan| plan.revision.to_string()),
            summary: plan.map(Plan::summary).unwrap_or_default(),
            approval_reason: plan.and_then(|plan| self.approval_reason(plan)),
            detail: Box::new(detail),
        }
    }

    /// Why the plan waits for a person: its own reason, else the target's `auto_apply: false`.
    fn approval_reason(&self, plan: &Plan) -> Option<String> {
        plan.approval_reason
            .clone()
            .or_else(|| (!self.target.auto_apply).then(|| "auto_apply is off".to_string()))
    }

    fn new_run(&self, revision: Option<String>) -> NewRun {
        NewRun {
            target: self.target.name.clone(),
            trigger: self.trigger,
            actor: self.request.actor.clone().or_else(|| {
                self.request
                    .delivery_id
                    .as_ref()
                    .map(|delivery| format!("webhook:{delivery}"))
            }),
            revision,
            dry_run: self.dry_run,
        }
    }

    /// Records the run and its plan, then sends it on: to the applier, or to the people who
    /// must approve it.
    async fn record(
        &self,
        status: RunStatus,
        commit: &str,
        detail: PlanDetail,
        window_overridden_by: Option<&str>,
    ) -> Result<PlanRequestOutcome> {
        let Some(plan) = detail.plan.as_ref() else {
            return Err(Error::Internal("a recorded plan has no plan".into()));
        };
        if self.request.is_preview() {
            return Err(Error::Internal(
                "a pull request preview reached the recording step: it is never recorded".into(),
            ));
        }
        let sync_id = {
            let store = self.services.database().await?;
            let sync_id = store
                .begin_run(&self.new_run(Some(plan.revision.to_string())))
                .await?;
            tracing::Span::current().record("sync_id", tracing::field::display(sync_id));
            let overridden = match window_overridden_by {
                Some(actor) => {
                    tracing::info!(%actor, "manual sync despite closed sync windows");
                    store.record_window_override(sync_id, actor).await
                }
                None => Ok(()),
            };
            let recorded = match overridden {
                Ok(()) => store.record_plan(sync_id, plan, status).await,
                Err(error) => Err(error),
            };
            if let Err(error) = recorded {
                // Leave no run stuck in `planning`: the retry records a new one.
                let reason = format!(
                    "planning was interrupted: {}",
                    crate::telemetry::error_chain(&error)
                );
                if let Err(fail) = store.fail_run(sync_id, &reason, &[]).await {
                    tracing::warn!(error = %crate::telemetry::error_chain(&fail), "could not mark the run failed");
                }
                return Err(error.into());
            }
            sync_id
        };
        let apply = status == RunStatus::Planned && !self.dry_run;
        if apply {
            self.services
                .queues
                .send_apply(&ApplyRequest::new(sync_id, &self.target.name))
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
        self.metrics(commit, detail.mode.as_ref(), &detail.diagnostics)
            .put_duration(Metric::PlanDuration, self.started.elapsed())
            .property("sync_id", sync_id.to_string())
            .emit_to(&self.services.metrics);
        let approval_reason = self.approval_reason(plan);
        if status == RunStatus::WaitingForWindow {
            let event = Event::WaitingForWindow {
                target: self.target.name.clone(),
                sync_id,
                revision: plan.revision.to_string(),
                next_opening: crate::windows::next_opening(
                    &self.target.controls.windows,
                    chrono::Utc::now(),
                ),
                counts: crate::notify::Counts {
                    create: summary.create,
                    update: summary.update,
                    delete: summary.delete,
                    unchanged: summary.unchanged,
                },
            };
            super::announce::announce(self.services, &event).await;
        }
        if status == RunStatus::PendingApproval {
            let event = Event::PendingApproval {
                target: self.target.name.clone(),
                sync_id,
                revision: plan.revision.to_string(),
                reason: approval_reason.clone(),
                summary: summary.to_string(),
                counts: crate::notify::Counts {
                    create: summary.create,
                    update: summary.update,
                    delete: summary.delete,
                    unchanged: summary.unchanged,
                },
            };
            super::announce::announce(self.services, &event).await;
        }
        Ok(PlanRequestOutcome::Planned {
            target: self.target.name.clone(),
            sync_id,
            status,
            revision: plan.revision.to_string(),
            summary,
            apply_enqueued: apply,
            approval_reason,
            detail: Box::new(detail),
        })
    }

    /// The one failure path: a failed run with its reason and diagnostics (none written when
    /// previewing), the failure metric and the on-call notification.
    async fn fail(&self, failure: Failure) -> Result<PlanRequestOutcome> {
        let Failure {
            revision,
            error,
            detail,
        } = failure;
        let errors = detail
            .diagnostics
            .iter()
            .filter(|d| d.severity == diagnostic::Severity::Error)
            .count();
        let first = first_errors(&detail.diagnostics);
        if first.is_empty() {
            tracing::warn!(errors, %error, "plan failed");
        } else {
            tracing::warn!(errors, first_errors = %first, %error, "plan failed");
        }
        if self.options.preview {
            return Ok(PlanRequestOutcome::Previewed {
                target: self.target.name.clone(),
                status: RunStatus::Failed,
                revision,
                summary: Summary::default(),
                approval_reason: None,
                detail: Box::new(PlanDetail {
                    plan: None,
                    ..detail
                }),
            });
        }
        let sync_id = {
            let store = self.services.database().await?;
            let sync_id = store.begin_run(&self.new_run(revision.clone())).await?;
            tracing::Span::current().record("sync_id", tracing::field::display(sync_id));
            store.fail_run(sync_id, &error, &detail.diagnostics).await?;
            sync_id
        };
        let commit = revision.as_deref().and_then(commit_of).unwrap_or_default();
        self.metrics(commit, detail.mode.as_ref(), &detail.diagnostics)
            .put(Metric::SyncFailed, 1.0)
            .put_duration(Metric::PlanDuration, self.started.elapsed())
            .property("sync_id", sync_id.to_string())
            .emit_to(&self.services.metrics);
        let event = Event::SyncFailed {
            target: self.target.name.clone(),
            sync_id: Some(sync_id),
            revision,
            error: error.clone(),
            diagnostics: detail
                .diagnostics
                .iter()
                .filter(|d| d.severity == diagnostic::Severity::Error)
                .map(ToString::to_string)
                .collect(),
        };
        super::announce::announce(self.services, &event).await;
        Ok(PlanRequestOutcome::Failed {
            target: self.target.name.clone(),
            sync_id,
            error,
            diagnostics: detail.diagnostics.clone(),
            detail: Box::new(detail),
        })
    }

    /// The run's metrics, with the commit and how the repository was read.
    fn metrics(
        &self,
        commit: &str,
        mode: Option<&ScanMode>,
        diagnostics: &[Diagnostic],
    ) -> MetricsBatch {
        let mut metrics = MetricsBatch::new(&self.target.name).property("commit", commit);
        match mode {
            Some(ScanMode::Incremental { .. }) => metrics = metrics.property("scan", "incremental"),
            Some(ScanMode::Full { reason }) => {
                metrics = metrics
                    .property("scan", "full")
                    .property("scan_reason", reason.to_string())
            }
            None => {}
        }
        let errors = diagnostics
            .iter()
            .filter(|d| d.severity == diagnostic::Severity::Error)
            .count();
        metrics.push(Metric::ValidationErrors, errors as f64);
        metrics
    }
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
    let store = services.database().await?;
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

/// How many errors a failed plan's log line names.
const LOGGED_ERRORS: usize = 3;

/// The first [`LOGGED_ERRORS`] errors as `path:line:column code message`, `; `-separated (and
/// how many more there are), so the log line alone says what to fix.
fn first_errors(diagnostics: &[Diagnostic]) -> String {
    let errors: Vec<&Diagnostic> = diagnostics
        .iter()
        .filter(|d| d.severity == diagnostic::Severity::Error)
        .collect();
    let mut text = errors
        .iter()
        .take(LOGGED_ERRORS)
        .map(|d| {
            if d.path.is_empty() {
                format!("{} {}", d.code, d.message)
            } else {
                format!(
                    "{}:{}:{} {} {}",
                    d.path, d.line, d.column, d.code, d.message
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > LOGGED_ERRORS {
        text.push_str(&format!("; and {} more", errors.len() - LOGGED_ERRORS));
    }
    text
}
