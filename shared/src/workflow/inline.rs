//! The pipeline run to completion in one process: the CLI's `sync`, `plan`, `approve`,
//! `rollback` and `resume`, and the benchmark. The requests go to in-process queues that are
//! drained at once through the same steps the Lambda functions and `ritmo serve` run
//! ([`plan_revision`], [`handle_apply_request`], [`approve_plan`]), so the rules (policies,
//! pins, approval, staleness) are the pipeline's, never a copy of them.

use serde::Serialize;
use uuid::Uuid;

use super::apply::{ApplyRequestOutcome, handle_apply_request, handle_apply_request_of};
use super::plan::{PlanOptions, PlanRequestOutcome, plan_revision};
use super::requests::{ApproveOutcome, admit_manual_sync, approve_plan};
use crate::Result;
use crate::apply::ApplyReport;
use crate::message::PlanRequest;
use crate::queue::LocalReceivers;
use crate::services::Services;
use crate::store::RunStatus;

/// Rounds of draining the queues: a plan, its apply, and a replan when the apply found the
/// target moved; more would mean a target that keeps moving under us.
const MAX_ROUNDS: usize = 4;

/// What draining the in-process queues did, in order.
#[derive(Debug, Default, Serialize)]
pub struct Drained {
    pub plans: Vec<PlanRequestOutcome>,
    pub applies: Vec<ApplyRequestOutcome>,
    /// The approval given on the caller's behalf (`ritmo gitops sync --auto-approve`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApproveOutcome>,
    /// A step that failed (its error chain; secrets never included).
    pub error: Option<String>,
}

impl Drained {
    /// The last applied report, when the work ended applied.
    pub fn applied(&self) -> Option<&ApplyReport> {
        match self.applies.last() {
            Some(ApplyRequestOutcome::Applied { report }) => Some(report),
            _ => None,
        }
    }

    /// Whether a step failed or a plan was refused.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self.plans.iter().any(|plan| match plan {
                PlanRequestOutcome::Failed { .. } => true,
                PlanRequestOutcome::Previewed { status, .. } => *status == RunStatus::Failed,
                _ => false,
            })
    }

    /// The run that waits for approval, when the work stopped there.
    pub fn pending(&self) -> Option<Uuid> {
        if self.applied().is_some() {
            return None;
        }
        self.plans.iter().rev().find_map(|plan| match plan {
            PlanRequestOutcome::Planned {
                sync_id,
                status: RunStatus::PendingApproval,
                ..
            } => Some(*sync_id),
            PlanRequestOutcome::Skipped {
                reason:
                    super::SkipReason::InProgress {
                        sync_id,
                        status: RunStatus::PendingApproval,
                    },
                ..
            } => Some(*sync_id),
            _ => None,
        })
    }

    /// The last run recorded and how it ended: `succeeded` when its apply went through.
    pub fn last_run(&self) -> Option<(Uuid, RunStatus)> {
        if let Some(report) = self.applied() {
            return Some((report.sync_id, RunStatus::Succeeded));
        }
        self.plans.iter().rev().find_map(|plan| match plan {
            PlanRequestOutcome::Planned {
                sync_id, status, ..
            } => Some((*sync_id, *status)),
            PlanRequestOutcome::Failed { sync_id, .. } => Some((*sync_id, RunStatus::Failed)),
            _ => None,
        })
    }

    /// The last plan outcome: the one that decided how the work ended.
    pub fn last_plan(&self) -> Option<&PlanRequestOutcome> {
        self.plans.last()
    }
}

/// Handles what was queued, plans then applies, until both queues are empty: every plan with
/// `options` (a replan after a stale apply reads the way the first plan did).
pub async fn drain(
    services: &Services,
    receivers: &mut LocalReceivers,
    options: PlanOptions,
) -> Drained {
    let mut drained = Drained::default();
    drain_into(services, receivers, options, &mut drained, &|_| {}).await;
    drained
}

/// Called with each plan outcome as soon as the plan is recorded, before its apply starts.
/// The CLI renders the plan meanwhile: the apply mostly waits on the database, so the
/// listing of a large first sync is mostly hidden behind it.
pub type OnPlanned<'a> = &'a (dyn Fn(&PlanRequestOutcome) + Sync);

async fn drain_into(
    services: &Services,
    receivers: &mut LocalReceivers,
    options: PlanOptions,
    drained: &mut Drained,
    on_planned: OnPlanned<'_>,
) {
    for _ in 0..MAX_ROUNDS {
        let mut handled = false;
        while let Ok(request) = receivers.plans.try_recv() {
            handled = true;
            match plan_revision(services, &request, options).await {
                Ok(outcome) => {
                    on_planned(&outcome);
                    drained.plans.push(outcome);
                }
                Err(error) => {
                    drained.error = Some(crate::telemetry::error_chain(&error));
                    return;
                }
            }
        }
        while let Ok(request) = receivers.applies.try_recv() {
            handled = true;
            let recorded = drained.plans.iter().find_map(|outcome| match outcome {
                PlanRequestOutcome::Planned {
                    sync_id, detail, ..
                } if *sync_id == request.sync_id => detail.plan.as_deref(),
                _ => None,
            });
            let outcome = match recorded {
                Some(plan) => handle_apply_request_of(services, &request, plan).await,
                None => handle_apply_request(services, &request).await,
            };
            match outcome {
                Ok(outcome) => drained.applies.push(outcome),
                Err(error) => {
                    drained.error = Some(crate::telemetry::error_chain(&error));
                    return;
                }
            }
        }
        if !handled {
            return;
        }
    }
}

/// Who runs a sync in-process, and whether they approve what would wait for approval.
#[derive(Debug, Clone)]
pub struct InlineSync {
    pub options: PlanOptions,
    /// Approve a plan that waits for approval as `actor` (`--auto-approve`).
    pub auto_approve: bool,
    pub actor: String,
}

/// One sync of `request` to its end in this process: plan, then (unless previewing or waiting
/// for approval) apply, re-planning when the apply finds the target moved.
pub async fn sync_inline(
    services: &Services,
    receivers: &mut LocalReceivers,
    request: &PlanRequest,
    sync: &InlineSync,
) -> Result<Drained> {
    sync_inline_with(services, receivers, request, sync, &|_| {}).await
}

/// [`sync_inline`], calling `on_planned` with every plan outcome before what follows it.
pub async fn sync_inline_with(
    services: &Services,
    receivers: &mut LocalReceivers,
    request: &PlanRequest,
    sync: &InlineSync,
    on_planned: OnPlanned<'_>,
) -> Result<Drained> {
    if !sync.options.preview {
        admit_manual_sync(services, request, sync.options).await?;
        services.queues.send_plan(request).await?;
        let mut drained = Drained::default();
        drain_into(services, receivers, sync.options, &mut drained, on_planned).await;
        if sync.auto_approve
            && drained.error.is_none()
            && let Some(sync_id) = drained.pending()
        {
            let approval = approve_plan(services, sync_id, &sync.actor).await?;
            drained.approval = Some(approval);
            drain_into(services, receivers, sync.options, &mut drained, on_planned).await;
        }
        return Ok(drained);
    }
    // A preview queues nothing: it is one plan step, and there is nothing after it.
    let outcome = plan_revision(services, request, sync.options).await?;
    on_planned(&outcome);
    Ok(Drained {
        plans: vec![outcome],
        ..Drained::default()
    })
}
