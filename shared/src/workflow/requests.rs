//! What people ask for (through the API, the CLI or `ritmo serve`): a manual sync, approving
//! a plan that waits, rolling back to an earlier commit, suspending a target, resuming after a
//! rollback or a suspension.

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::plan::{PlanOptions, plan_revision};
use crate::config::TargetSettings;
use crate::git::{self, GitCache, GitError, RepoLocation};
use crate::message::{ApplyRequest, PlanRequest, Trigger};
use crate::model::Revision;
use crate::services::Services;
use crate::source::incremental;
use crate::source::spec::{is_commit_id, revision, source_spec};
use crate::store::{RunStatus, StoreError, TargetState};
use crate::{Error, Result};

/// How an approval ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApproveOutcome {
    /// Approved and queued for the applier.
    Approved { sync_id: Uuid, target: String },
    /// Refused: the target was synced since this plan was made, so applying it would undo
    /// that sync. The run is now `superseded`; request a new plan.
    Stale {
        sync_id: Uuid,
        target: String,
        planned_generation: Option<i64>,
        current_generation: i64,
    },
    /// The run is not waiting for approval (already approved, applied, failed, or never
    /// needed it).
    NotPending { sync_id: Uuid, status: RunStatus },
}

/// What a person asks of a manual sync (`POST /api/v1/gitops/sync`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManualSync {
    /// One target, or every configured target when `None`.
    pub target: Option<String>,
    pub actor: Option<String>,
    pub dry_run: bool,
    /// Apply only these changes (`KIND/NAME`); needs `target`.
    pub only: Option<Vec<String>>,
    /// Sync although the target's sync windows are closed to manual syncs.
    pub override_window: bool,
}

impl ManualSync {
    /// A plain manual sync of `target`.
    pub fn of(target: &str) -> ManualSync {
        ManualSync {
            target: Some(target.to_string()),
            ..ManualSync::default()
        }
    }
}

/// Queues a manual plan request for `sync.target`, or for every configured target when
/// `None`; an unknown target is `Error::Store(StoreError::UnknownTarget)`. Every request is
/// admitted ([`admit_manual_sync`]) before any is queued: a refusal queues and writes nothing.
pub async fn request_sync(services: &Services, sync: &ManualSync) -> Result<Vec<PlanRequest>> {
    if sync.only.is_some() && sync.target.is_none() {
        return Err(Error::InvalidRequest(
            "`only` names resources of one target: give `target` too".to_string(),
        ));
    }
    let target = sync.target.as_deref();
    let actor = sync.actor.clone();
    let dry_run = sync.dry_run;
    let names: Vec<&str> = match target {
        Some(name) => vec![
            services
                .settings
                .target(name)
                .ok_or_else(|| StoreError::UnknownTarget(name.to_string()))?
                .name
                .as_str(),
        ],
        None => services
            .settings
            .targets
            .iter()
            .map(|t| t.name.as_str())
            .collect(),
    };
    let now = Utc::now();
    let requests: Vec<PlanRequest> = names
        .into_iter()
        .map(|name| {
            let mut request = PlanRequest::new(name, Trigger::Manual, now);
            if dry_run {
                request = request.with_dry_run(true);
            }
            if let Some(actor) = &actor {
                request = request.with_actor(actor.clone());
            }
            if let Some(only) = &sync.only {
                request = request.with_only(only.clone());
            }
            request.with_override_window(sync.override_window)
        })
        .collect();
    for request in &requests {
        admit_manual_sync(services, request, PlanOptions::default()).await?;
    }
    services.queues.send_plans(&requests).await?;
    Ok(requests)
}

/// What a manual sync must pass before anything is queued or written, so that a refusal
/// leaves stored data untouched:
/// - the target's sync windows must allow manual syncs now (`manual_sync: true`), or the
///   request override them (`Error::WindowClosed` otherwise); dry runs are never held;
/// - a selection (`only`) must be well formed, match changes of the plan and leave no
///   reference dangling (`Error::Selection`), checked on a preview of the plan the planner
///   will make (which checks it again: the branch may move in between).
///
/// Requests of other triggers pass: automatic ones wait for their windows in the planner.
pub async fn admit_manual_sync(
    services: &Services,
    request: &PlanRequest,
    options: PlanOptions,
) -> Result<()> {
    if !matches!(request.trigger, Trigger::Manual | Trigger::Cli) || options.preview {
        return Ok(());
    }
    let target = services
        .settings
        .target(&request.target)
        .ok_or_else(|| StoreError::UnknownTarget(request.target.clone()))?;
    let windows = &target.controls.windows;
    let now = Utc::now();
    if !request.is_dry_run()
        && !target.dry_run
        && !request.overrides_window()
        && !crate::windows::allows_manual(windows, now)
    {
        return Err(Error::WindowClosed {
            target: target.name.clone(),
            next_opening: crate::windows::next_opening(windows, now),
        });
    }
    if request.only.is_some() {
        let preview = PlanOptions {
            preview: true,
            ..options
        };
        plan_revision(services, request, preview).await?;
    }
    Ok(())
}

/// Approves run `sync_id`, waiting for approval, and queues it for the applier; refuses (and
/// supersedes the run) when the target's generation moved since the plan was made.
pub async fn approve_plan(
    services: &Services,
    sync_id: Uuid,
    actor: &str,
) -> Result<ApproveOutcome> {
    approve_plan_with(services, sync_id, actor, false).await
}

/// [`approve_plan`]; with `override_window`, also a run waiting for its target's sync window
/// (`waiting_for_window`) is applied now, and the run records who overrode the window.
pub async fn approve_plan_with(
    services: &Services,
    sync_id: Uuid,
    actor: &str,
    override_window: bool,
) -> Result<ApproveOutcome> {
    let store = services.database().await?;
    let run = store
        .run(sync_id)
        .await?
        .ok_or(StoreError::RunNotFound(sync_id))?;
    let approvable = run.status == RunStatus::PendingApproval
        || (override_window && run.status == RunStatus::WaitingForWindow);
    if !approvable {
        return Ok(ApproveOutcome::NotPending {
            sync_id,
            status: run.status,
        });
    }
    let target = store
        .target(&run.target)
        .await?
        .ok_or_else(|| StoreError::UnknownTarget(run.target.clone()))?;
    if run.base_generation != Some(target.generation) {
        if let Some(plan) = store.load_plan(sync_id).await? {
            store
                .record_plan(sync_id, &plan, RunStatus::Superseded)
                .await?;
        }
        tracing::info!(%sync_id, target = %run.target, "approval refused: the plan is stale");
        return Ok(ApproveOutcome::Stale {
            sync_id,
            target: run.target,
            planned_generation: run.base_generation,
            current_generation: target.generation,
        });
    }
    let approved = if override_window {
        store.override_window(sync_id, actor).await?
    } else {
        store.approve_run(sync_id, actor).await?
    };
    if !approved {
        let status = store
            .run(sync_id)
            .await?
            .map_or(run.status, |now| now.status);
        return Ok(ApproveOutcome::NotPending { sync_id, status });
    }
    drop(store);
    services
        .queues
        .send_apply(&ApplyRequest::new(sync_id, &run.target))
        .await?;
    tracing::info!(%sync_id, target = %run.target, %actor, "plan approved");
    Ok(ApproveOutcome::Approved {
        sync_id,
        target: run.target,
    })
}

/// Pins `target` at `to` (a commit id, or the id of a sync run whose commit to go back to) and
/// queues a rollback plan of that commit. Automatic syncs leave the target there until
/// [`resume`].
///
/// The commit must be on the target's branch (its head or an ancestor), checked in the
/// repository before anything is written: a pin on a commit that does not exist would stop the
/// target's syncs until someone resumes it. Otherwise `Error::Git(GitError::CommitNotFound)`
/// and nothing is pinned or queued.
pub async fn rollback(
    services: &Services,
    target: &str,
    to: &str,
    actor: &str,
) -> Result<PlanRequest> {
    let settings = services
        .settings
        .target(target)
        .ok_or_else(|| StoreError::UnknownTarget(target.to_string()))?;
    let to = to.trim();
    let requested = if let Ok(sync_id) = Uuid::parse_str(to) {
        let store = services.database().await?;
        let run = store
            .run(sync_id)
            .await?
            .ok_or(StoreError::RunNotFound(sync_id))?;
        if run.target != target {
            return Err(Error::InvalidRequest(format!(
                "sync run `{sync_id}` belongs to target `{}`, not `{target}`",
                run.target
            )));
        }
        run.commit.ok_or_else(|| {
            Error::InvalidRequest(format!(
                "sync run `{sync_id}` has no commit to roll back to"
            ))
        })?
    } else if is_commit_id(to) {
        to.to_ascii_lowercase()
    } else {
        return Err(Error::InvalidRequest(format!(
            "cannot roll back to `{to}`: give a commit id (hex) or a sync run id"
        )));
    };
    // Read without holding the database: fetching may take a while.
    let commit = commit_on_branch(services, settings, &requested).await?;
    let store = services.database().await?;
    store.ensure_target(&new_target(settings)).await?;
    store.set_pin(target, Some(&commit)).await?;
    drop(store);
    let request = PlanRequest::new(target, Trigger::Rollback, Utc::now())
        .with_revision(revision(&settings.branch, &commit))
        .with_actor(actor);
    services.queues.send_plan(&request).await?;
    tracing::info!(%target, %commit, %actor, "target pinned for rollback");
    Ok(request)
}

/// The full id of `commit` (full or abbreviated) when it is the head of `target`'s branch or
/// one of its ancestors, reading the repository as the planner does (a remote one fetched
/// into the target's cache, deepening a shallow history as far as needed).
async fn commit_on_branch(
    services: &Services,
    target: &TargetSettings,
    commit: &str,
) -> Result<String> {
    let not_on_branch = || {
        Error::Git(GitError::CommitNotFound {
            location: format!("branch {} of {}", target.branch, target.repo_url),
            commit: commit.to_string(),
        })
    };
    let source = source_spec(&services.settings, target, false).await?;
    // The commit first, then the head: a head read second is at least as new as the commit.
    let found = match incremental::locate(&source, Some(commit)).await {
        Ok(found) => found,
        Err(Error::Git(GitError::CommitNotFound { .. })) => return Err(not_on_branch()),
        Err(error) => return Err(error),
    };
    let head = incremental::locate(&source, None).await?;
    let (Revision::Commit { commit: found, .. }, Revision::Commit { commit: head, .. }) =
        (found.revision().clone(), head.revision().clone())
    else {
        return Err(Error::Internal(format!(
            "target `{}` located no commit on branch `{}`",
            target.name, target.branch
        )));
    };
    let repository = match &source.location {
        RepoLocation::Local(path) => path.clone(),
        RepoLocation::Remote(_) => GitCache::new(&source.cache_dir).repository_path(),
    };
    let ancestor = found.clone();
    let reachable =
        tokio::task::spawn_blocking(move || git::is_ancestor(&repository, &ancestor, &head))
            .await
            .map_err(|join| Error::Internal(format!("the commit check stopped: {join}")))?;
    match reachable {
        Ok(true) => Ok(found),
        // Not reached from the head: another branch, or a commit force-pushed away that a
        // cache still holds (a shallow history that cannot answer is the same answer).
        Ok(false) | Err(GitError::DiffBaseUnavailable { .. }) => Err(not_on_branch()),
        Err(error) => Err(error.into()),
    }
}

/// Suspends automatic syncs of `target` (webhook, schedule and self-heal), recording `actor`
/// and the time; manual syncs still run. Returns the target's row.
pub async fn suspend(services: &Services, target: &str, actor: &str) -> Result<TargetState> {
    let settings = services
        .settings
        .target(target)
        .ok_or_else(|| StoreError::UnknownTarget(target.to_string()))?;
    let state = {
        let store = services.database().await?;
        store.ensure_target(&new_target(settings)).await?;
        store.set_suspended(target, true, Some(actor)).await?
    };
    tracing::info!(%target, %actor, "automatic syncs suspended");
    let event = crate::notify::Event::Suspended {
        target: target.to_string(),
        actor: actor.to_string(),
        applied_commit: state.last_applied_commit.clone(),
    };
    super::announce::announce(services, &event).await;
    Ok(state)
}

/// Unpins and un-suspends `target` and queues a fresh plan of its branch head. A target the
/// bootstrap file suspends (`sync.suspended: true`, `RITMO_GITOPS_SUSPENDED`) is refused: the
/// database's flag is not what holds it.
pub async fn resume(services: &Services, target: &str, actor: &str) -> Result<()> {
    let settings = services
        .settings
        .target(target)
        .ok_or_else(|| StoreError::UnknownTarget(target.to_string()))?;
    if settings.controls.suspended {
        return Err(Error::InvalidRequest(format!(
            "target `{target}` is suspended by its settings (`sync.suspended: true` in the \
             bootstrap file, or RITMO_GITOPS_SUSPENDED=true): remove that and redeploy to resume"
        )));
    }
    {
        let store = services.database().await?;
        store.ensure_target(&new_target(settings)).await?;
        store.set_pin(target, None).await?;
        store.set_suspended(target, false, None).await?;
    }
    services
        .queues
        .send_plan(&PlanRequest::new(target, Trigger::Manual, Utc::now()).with_actor(actor))
        .await?;
    tracing::info!(%target, %actor, "automatic syncs resumed");
    Ok(())
}

fn new_target(settings: &TargetSettings) -> crate::store::NewTarget {
    crate::store::NewTarget {
        name: settings.name.clone(),
        repo_url: settings.repo_url.clone(),
        branch: settings.branch.clone(),
        path: settings.path.clone(),
    }
}
