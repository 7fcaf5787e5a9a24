//! `ritmo gitops approve`, `rollback`, `suspend` and `resume`: the pipeline's own operations
//! (`ritmo::workflow::{approve_plan, rollback, resume}`), run in-process against the same
//! database as `ritmo gitops sync`. The plan and apply requests they queue go to in-process
//! queues that this module drains at once through `handle_plan_request` /
//! `handle_apply_request`, so the rules (staleness, pins, approval) are the pipeline's, not a
//! copy of them.

use std::io::Write;

use anyhow::{Context, Result};
use ritmo::config::{Settings, TargetSettings};
use ritmo::metrics::MetricsSink;
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::store::StoreError;
use ritmo::workflow::{
    self, ApplyRequestOutcome, ApproveOutcome, Drained, PlanOptions, PlanRequestOutcome,
};
use serde_json::json;
use uuid::Uuid;

use crate::args::{AdoptArgs, ApproveArgs, DatabaseArgs, Output, ResumeArgs, RollbackArgs};
use crate::render;

const OK: u8 = 0;
const REFUSED: u8 = 1;
const USAGE: u8 = 2;

/// The services of one command: the settings' database (or `--database-url`), in-process
/// queues, metrics dropped (there is no CloudWatch to read them), notifications as configured.
pub async fn connect(
    settings: &Settings,
    database: &DatabaseArgs,
) -> Result<(Services, LocalReceivers)> {
    let mut settings = settings.clone();
    if let Some(url) = &database.database_url {
        settings.database_url = Some(url.clone().into());
    }
    if settings.database_url.is_none()
        && settings.database_secret_id.is_none()
        && settings.database_host.is_none()
    {
        anyhow::bail!(
            "no database: set DATABASE_URL (or DATABASE_SECRET_ARN) or pass --database-url"
        );
    }
    let (queues, receivers) = Queues::local();
    let services = Services::connect(settings, queues, MetricsSink::Disabled)
        .await
        .context("cannot connect to the database")?;
    Ok((services, receivers))
}

/// Makes sure `name` is a target the pipeline knows: configured in the bootstrap file, or
/// registered by an earlier `ritmo gitops sync --repo-path …` (its repository, branch and path
/// are then read back from the database).
async fn known_target(services: &mut Services, name: &str) -> Result<bool> {
    if services.settings.target(name).is_some() {
        return Ok(true);
    }
    let state = services.store.lock().await.target(name).await?;
    let Some(state) = state else {
        return Ok(false);
    };
    services.settings.targets.push(TargetSettings {
        name: state.name,
        repo_url: state.repo_url,
        // `sync --repo-path` without `--branch` reads HEAD and records no branch.
        branch: if state.branch.is_empty() {
            "main".into()
        } else {
            state.branch
        },
        path: state.path,
        interval_secs: 60,
        auto_apply: true,
        dry_run: false,
        self_heal: false,
        controls: Default::default(),
        policy: Default::default(),
        auth: Default::default(),
    });
    Ok(true)
}

/// Who is running the command, as runs and approvals record it.
pub fn actor() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| "cli".into())
}

/// A refusal the person can act on: printed on stderr (or as JSON), exit 1.
fn refuse(output: Output, error: &str, detail: serde_json::Value) -> Result<u8> {
    match output {
        Output::Json => {
            let mut value = json!({ "error": error });
            if let (Some(map), serde_json::Value::Object(extra)) = (value.as_object_mut(), detail) {
                map.extend(extra);
            }
            render::json_line(&mut std::io::stdout().lock(), &value)?;
        }
        Output::Text => eprintln!("error: {error}"),
    }
    Ok(REFUSED)
}

/// Errors of the request itself (an unknown run or target, a bad `--to`) are refusals;
/// the rest (database down, …) are environment problems for `main` to report.
fn refusal(error: &ritmo::Error) -> bool {
    matches!(
        error,
        ritmo::Error::InvalidRequest(_)
            | ritmo::Error::Store(StoreError::RunNotFound(_) | StoreError::UnknownTarget(_))
    )
}

/// The end of an operation's text output: what the drained work did.
fn describe(out: &mut impl Write, drained: &Drained) -> std::io::Result<()> {
    for plan in &drained.plans {
        match plan {
            PlanRequestOutcome::Planned {
                sync_id,
                status,
                revision,
                summary,
                ..
            } => writeln!(
                out,
                "Planned {revision}: {summary} Sync {sync_id} ({status})"
            )?,
            PlanRequestOutcome::Failed { sync_id, error, .. } => {
                writeln!(out, "Plan failed: {error}. Sync {sync_id}")?
            }
            PlanRequestOutcome::Skipped { .. } | PlanRequestOutcome::Previewed { .. } => {
                writeln!(out, "Nothing planned: {}", json!(plan))?
            }
        }
    }
    for apply in &drained.applies {
        match apply {
            ApplyRequestOutcome::Applied { report } => writeln!(
                out,
                "Applied {}: {} created, {} updated, {} deleted (generation {}).",
                report.commit.as_deref().unwrap_or("-"),
                report.created,
                report.updated,
                report.deleted,
                report.generation
            )?,
            ApplyRequestOutcome::Superseded { sync_id, .. } => writeln!(
                out,
                "Sync {sync_id} superseded: the target moved on while it was applied."
            )?,
            ApplyRequestOutcome::AlreadyFinished { sync_id, status } => {
                writeln!(out, "Sync {sync_id} had already finished ({status}).")?
            }
        }
    }
    if let Some(error) = &drained.error {
        writeln!(out, "Failed: {error}")?;
    }
    Ok(())
}

/// `ritmo gitops approve SYNC_ID`.
pub async fn approve(settings: &Settings, output: Output, args: &ApproveArgs) -> Result<u8> {
    let Ok(sync_id) = Uuid::parse_str(args.sync_id.trim()) else {
        // A malformed argument is a usage error, as README.md's exit codes say.
        refuse(
            output,
            &format!(
                "`{}` is not a sync run id (a UUID): `ritmo gitops history` lists them",
                args.sync_id
            ),
            json!({}),
        )?;
        return Ok(USAGE);
    };
    let (services, mut receivers) = connect(settings, &args.database).await?;
    let approved =
        match workflow::approve_plan_with(&services, sync_id, &actor(), args.override_window).await
        {
            Ok(outcome) => outcome,
            Err(error) if refusal(&error) => return refuse(output, &error.to_string(), json!({})),
            Err(error) => return Err(error.into()),
        };
    match &approved {
        ApproveOutcome::Approved { .. } => {}
        ApproveOutcome::Stale {
            target,
            planned_generation,
            current_generation,
            ..
        } => {
            let message = format!(
                "sync {sync_id} is stale: target `{target}` was synced since this plan was made \
                 (planned at generation {}, now {current_generation}); it is now superseded — \
                 run `ritmo gitops sync` for a fresh plan",
                planned_generation.map_or_else(|| "?".to_string(), |g| g.to_string())
            );
            return refuse(output, &message, json!({ "approval": approved }));
        }
        ApproveOutcome::NotPending { status, .. } => {
            let message = format!(
                "sync {sync_id} is not waiting for approval: it is `{}`",
                status.as_str()
            );
            return refuse(output, &message, json!({ "approval": approved }));
        }
    }
    let drained = workflow::drain(&services, &mut receivers, PlanOptions::default()).await;
    let applied = drained.applied().is_some();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => render::json_line(
            &mut out,
            &json!({ "approval": approved, "plans": drained.plans, "applies": drained.applies,
                     "error": drained.error, "applied": applied }),
        )?,
        Output::Text => {
            writeln!(out, "Approved sync {sync_id}.")?;
            describe(&mut out, &drained)?;
        }
    }
    Ok(if applied { OK } else { REFUSED })
}

/// `ritmo gitops rollback --to COMMIT|SYNC_ID [--target T]`.
pub async fn rollback(settings: &Settings, output: Output, args: &RollbackArgs) -> Result<u8> {
    let (mut services, mut receivers) = connect(settings, &args.database).await?;
    if !known_target(&mut services, &args.target).await? {
        return refuse(
            output,
            &format!(
                "unknown target `{}`: configure it, or sync it once with `ritmo gitops sync`",
                args.target
            ),
            json!({}),
        );
    }
    let request = match workflow::rollback(&services, &args.target, &args.to, &actor()).await {
        Ok(request) => request,
        Err(error) if refusal(&error) => return refuse(output, &error.to_string(), json!({})),
        Err(error) => return Err(error.into()),
    };
    let drained = workflow::drain(&services, &mut receivers, PlanOptions::default()).await;
    let pinned = services
        .store
        .lock()
        .await
        .target(&args.target)
        .await?
        .and_then(|target| target.pinned_commit);
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => render::json_line(
            &mut out,
            &json!({ "target": args.target, "pinned_commit": pinned, "request": request,
                     "plans": drained.plans, "applies": drained.applies, "error": drained.error,
                     "applied": drained.applied().is_some() }),
        )?,
        Output::Text => {
            describe(&mut out, &drained)?;
            if let Some(sync_id) = drained.pending() {
                writeln!(out, "Waiting for approval: ritmo gitops approve {sync_id}")?;
            }
            if let Some(pin) = &pinned {
                writeln!(
                    out,
                    "Target {} pinned at {pin}: webhook and schedule syncs are suspended until \
                     `ritmo gitops resume --target {}`.",
                    args.target, args.target
                )?;
            }
        }
    }
    Ok(if drained.failed() { REFUSED } else { OK })
}

/// `ritmo gitops resume [--target T]`.
pub async fn resume(settings: &Settings, output: Output, args: &ResumeArgs) -> Result<u8> {
    let (mut services, mut receivers) = connect(settings, &args.database).await?;
    if !known_target(&mut services, &args.target).await? {
        return refuse(
            output,
            &format!("unknown target `{}`", args.target),
            json!({}),
        );
    }
    let before = services.store.lock().await.target(&args.target).await?;
    let was_pinned = before
        .as_ref()
        .and_then(|target| target.pinned_commit.clone());
    let was_suspended = before.is_some_and(|target| target.suspended);
    match workflow::resume(&services, &args.target, &actor()).await {
        Ok(()) => {}
        Err(error) if refusal(&error) => return refuse(output, &error.to_string(), json!({})),
        Err(error) => return Err(error.into()),
    }
    let drained = workflow::drain(&services, &mut receivers, PlanOptions::default()).await;
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => render::json_line(
            &mut out,
            &json!({ "target": args.target, "was_pinned": was_pinned,
                     "was_suspended": was_suspended, "plans": drained.plans,
                     "applies": drained.applies, "error": drained.error }),
        )?,
        Output::Text => {
            match &was_pinned {
                Some(pin) => writeln!(
                    out,
                    "Target {} unpinned (was at {pin}); automatic syncs resumed.",
                    args.target
                )?,
                None if was_suspended => writeln!(
                    out,
                    "Target {} resumed; automatic syncs are on.",
                    args.target
                )?,
                None => writeln!(
                    out,
                    "Target {} was neither pinned nor suspended; automatic syncs are on.",
                    args.target
                )?,
            }
            describe(&mut out, &drained)?;
            if let Some(sync_id) = drained.pending() {
                writeln!(out, "Waiting for approval: ritmo gitops approve {sync_id}")?;
            }
        }
    }
    Ok(if drained.failed() { REFUSED } else { OK })
}

/// `ritmo gitops suspend [--target T]`.
pub async fn suspend(settings: &Settings, output: Output, args: &ResumeArgs) -> Result<u8> {
    let (mut services, _receivers) = connect(settings, &args.database).await?;
    if !known_target(&mut services, &args.target).await? {
        return refuse(
            output,
            &format!("unknown target `{}`", args.target),
            json!({}),
        );
    }
    let state = match workflow::suspend(&services, &args.target, &actor()).await {
        Ok(state) => state,
        Err(error) if refusal(&error) => return refuse(output, &error.to_string(), json!({})),
        Err(error) => return Err(error.into()),
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => render::json_line(
            &mut out,
            &json!({ "target": args.target, "suspended": true,
                     "suspended_by": state.suspended_by, "suspended_at": state.suspended_at }),
        )?,
        Output::Text => writeln!(
            out,
            "Target {} suspended by {} at {}: webhook, schedule and self-heal syncs are off \
             until `ritmo gitops resume --target {}` (manual syncs still run).",
            args.target,
            state.suspended_by.as_deref().unwrap_or("unknown"),
            state
                .suspended_at
                .map_or_else(|| "an unknown time".to_owned(), |at| at.to_rfc3339()),
            args.target
        )?,
    }
    Ok(OK)
}

/// `ritmo gitops adopt KIND/NAME [--target T]`.
pub async fn adopt(settings: &Settings, output: Output, args: &AdoptArgs) -> Result<u8> {
    let Some((kind, name)) = args.resource.split_once('/') else {
        return refuse(
            output,
            &format!(
                "`{}` is not KIND/NAME: give e.g. plugin/git-scm",
                args.resource
            ),
            json!({}),
        );
    };
    let kind: ritmo::model::Kind = match kind.parse() {
        Ok(kind) => kind,
        Err(error) => return refuse(output, &error.to_string(), json!({})),
    };
    let id = ritmo::model::ResourceId::new(kind, name.to_owned());
    let (mut services, _receivers) = connect(settings, &args.database).await?;
    if !known_target(&mut services, &args.target).await? {
        return refuse(
            output,
            &format!("unknown target `{}`", args.target),
            json!({}),
        );
    }
    let outcome = match workflow::adopt(&services, &args.target, &id).await {
        Ok(outcome) => outcome,
        Err(error) if refusal(&error) => return refuse(output, &error.to_string(), json!({})),
        Err(error) => return Err(error.into()),
    };
    let mut out = std::io::stdout().lock();
    match (output, &outcome) {
        (Output::Json, outcome) => render::json_line(&mut out, outcome)?,
        (
            Output::Text,
            workflow::AdoptOutcome::Adopted {
                target,
                resource,
                commit,
                matches_git,
            },
        ) => {
            writeln!(out, "Target {target} now owns {resource} (at {commit}).")?;
            if *matches_git {
                writeln!(
                    out,
                    "The row already matches Git; it is pruned once Git drops it."
                )?;
            } else {
                writeln!(
                    out,
                    "The row differs from Git: the next sync (`ritmo gitops sync --target \
                     {target}`) updates it to Git's version."
                )?;
            }
        }
    }
    Ok(OK)
}
