//! One function per command: gather settings, call the workflow, render the result.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use ritmo::config::{Settings, TargetSettings};
use ritmo::crypto::CredentialKeys;
use ritmo::crypto::secret_refs::SecretRefChecker;
use ritmo::git::RepoLocation;
use ritmo::manifest::Limits;
use ritmo::message::{PlanRequest, Trigger};
use ritmo::model::Kind;
use ritmo::services::Services;
use ritmo::source::{self, SourceSpec};
use ritmo::store::{DatabaseSettings, RunStatus, Store};
use ritmo::workflow::{self, Drained, InlineSync, PlanOptions, PlanRequestOutcome, SkipReason};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::args::{
    Cli, Command, CredentialArgs, DatabaseArgs, DecryptArgs, ExportArgs, GetArgs, Gitops,
    HistoryArgs, Output, PlanArgs, RotateArgs, SourceArgs, SyncArgs,
};
use crate::render::{self, Style};

const OK: u8 = 0;
const CONFIG_WRONG: u8 = 1;
/// What the command names does not exist (`get job nope`): the input is wrong, as with a
/// configuration error, and README.md documents it so.
const NOT_FOUND: u8 = 1;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    // `init` writes the bootstrap file the other commands load, so it may not exist yet.
    if let Command::Gitops(Gitops::Init(args)) = &cli.command {
        let code = crate::init::run(cli.config.as_deref(), cli.output, args).await?;
        return Ok(ExitCode::from(code));
    }
    let settings = Settings::from_process_env(cli.config.as_deref())
        .context("cannot load the bootstrap configuration")?;
    let ctx = Session {
        settings,
        output: cli.output,
        style: Style::detect(),
    };
    let code = match cli.command {
        Command::Gitops(Gitops::Init(args)) => {
            crate::init::run(cli.config.as_deref(), ctx.output, &args).await?
        }
        Command::Gitops(Gitops::Validate(args)) => validate(&ctx, &args).await?,
        Command::Gitops(Gitops::Plan(args)) => plan(&ctx, &args).await?,
        Command::Gitops(Gitops::Diff(args)) => diff(&ctx, &args).await?,
        Command::Gitops(Gitops::Sync(args)) => sync(&ctx, &args).await?,
        Command::Gitops(Gitops::Status(args)) => status(&ctx, &args).await?,
        Command::Gitops(Gitops::History(args)) => history(&ctx, &args).await?,
        Command::Gitops(Gitops::Export(args)) => export(&ctx, &args).await?,
        Command::Gitops(Gitops::Approve(args)) => {
            crate::ops::approve(&ctx.settings, ctx.output, &args).await?
        }
        Command::Gitops(Gitops::Rollback(args)) => {
            crate::ops::rollback(&ctx.settings, ctx.output, &args).await?
        }
        Command::Gitops(Gitops::Resume(args)) => {
            crate::ops::resume(&ctx.settings, ctx.output, &args).await?
        }
        Command::Gitops(Gitops::Adopt(args)) => {
            crate::ops::adopt(&ctx.settings, ctx.output, &args).await?
        }
        Command::Gitops(Gitops::Suspend(args)) => {
            crate::ops::suspend(&ctx.settings, ctx.output, &args).await?
        }
        Command::Get(args) => get(&ctx, &args).await?,
        Command::EncryptCredential(args) => encrypt_credential(&ctx, &args).await?,
        Command::DecryptCredential(args) => decrypt_credential(&ctx, &args).await?,
        Command::RotateCredentials(args) => rotate_credentials(&ctx, &args).await?,
        Command::Serve(args) => crate::serve::run(ctx.settings, &args).await?,
    };
    Ok(ExitCode::from(code))
}

struct Session {
    settings: Settings,
    output: Output,
    style: Style,
}

impl Session {
    /// The target a command works on. A configured target (bootstrap file, `RITMO_GITOPS_*`)
    /// is used as configured: flags naming another repository, branch or path are refused,
    /// never applied over it. An unconfigured name is an ad-hoc target made from the flags.
    fn target(&self, args: &SourceArgs) -> Result<TargetSettings> {
        let mut target = match self.settings.target(&args.target) {
            Some(configured) => {
                refuse_overrides(configured, args)?;
                configured.clone()
            }
            None => ad_hoc_target(args)?,
        };
        let mut auth_variables = args.auth.as_variables();
        if !auth_variables.is_empty() {
            // The token's value stays in the environment: a flag would land in shell history.
            if let Ok(token) = std::env::var("RITMO_GITOPS_TOKEN") {
                auth_variables.push(("RITMO_GITOPS_TOKEN", token));
            }
            let lookup = |name: &str| {
                auth_variables
                    .iter()
                    .find(|(variable, _)| *variable == name)
                    .map(|(_, value)| value.clone())
            };
            target.auth = ritmo::config::git_auth_from_variables(&lookup)?;
        }
        Ok(target)
    }

    /// Where `target` is read from, as the pipeline reads it.
    async fn source(&self, target: &TargetSettings, worktree: bool) -> Result<SourceSpec> {
        let location = RepoLocation::parse(&target.repo_url)?;
        let is_plain_directory = location
            .local_path()
            .is_some_and(|path| !ritmo::git::is_git_repository(path));
        Ok(SourceSpec {
            worktree: worktree || is_plain_directory,
            location,
            branch: (!target.branch.is_empty()).then(|| target.branch.clone()),
            path: target.path.clone(),
            auth: source::git_auth(&target.auth).await?,
            cache_dir: self.settings.cache_dir.join(&target.name),
        })
    }

    async fn store(&self, args: &DatabaseArgs) -> Result<Store> {
        let mut database = DatabaseSettings::from_settings(&self.settings);
        if let Some(url) = &args.database_url {
            database.url = Some(url.clone().into());
        }
        if database.url.is_none() && database.secret_id.is_none() && database.host.is_none() {
            bail!("no database: set DATABASE_URL (or DATABASE_SECRET_ARN) or pass --database-url");
        }
        let secrets = match &database.secret_id {
            Some(_) => Some(ritmo::crypto::secrets_manager().await),
            None => None,
        };
        Ok(Store::connect_with(&database, secrets.as_ref()).await?)
    }

    fn checks<'a>(
        &'a self,
        keys: &'a CredentialKeys,
        refs: &'a SecretRefChecker,
    ) -> source::Checks<'a> {
        source::Checks {
            keys,
            refs,
            builtin_plugins: &self.settings.builtin_plugins,
        }
    }

    /// The keys that decrypt credential ciphertexts.
    async fn keys(&self) -> Result<CredentialKeys> {
        Ok(ritmo::crypto::credential_keys(&self.settings, None).await?)
    }

    async fn refs(&self) -> SecretRefChecker {
        SecretRefChecker::from_settings(&self.settings).await
    }

    fn out(&self) -> std::io::StdoutLock<'static> {
        std::io::stdout().lock()
    }
}

/// The repository a command line names, as the target stores it.
fn repository_from_flags(args: &SourceArgs) -> Result<Option<String>> {
    Ok(match (&args.repo_path, &args.repo) {
        (Some(path), _) => Some(
            std::fs::canonicalize(path)
                .with_context(|| format!("cannot open repository `{}`", path.display()))?
                .display()
                .to_string(),
        ),
        (None, Some(url)) => Some(RepoLocation::parse(url)?.to_string()),
        (None, None) => None,
    })
}

/// A target only the command line describes.
fn ad_hoc_target(args: &SourceArgs) -> Result<TargetSettings> {
    let Some(url) = repository_from_flags(args)? else {
        bail!(
            "no repository to read: pass --repo-path DIR or --repo URL, or configure target `{}` \
             in the bootstrap file or with RITMO_GITOPS_REPO_URL",
            args.target
        );
    };
    Ok(TargetSettings {
        repo_url: RepoLocation::parse(&url)?.to_string(),
        branch: args.branch.clone().unwrap_or_default(),
        path: args
            .path
            .as_deref()
            .map_or_else(|| "/".into(), ritmo::config::normalise_path),
        ..TargetSettings::new(&args.target)
    })
}

/// Refuses flags that would read another repository, branch or path than the configured
/// target: a sync under its name would overwrite what its owner (the bootstrap file, the
/// environment, the template) set, and prune everything of the other repository.
fn refuse_overrides(configured: &TargetSettings, args: &SourceArgs) -> Result<()> {
    let mut differences = Vec::new();
    if let Some(url) = repository_from_flags(args)? {
        let configured_url = RepoLocation::parse(&configured.repo_url)
            .map(|location| match location.local_path() {
                Some(path) => std::fs::canonicalize(path)
                    .map_or_else(|_| location.to_string(), |p| p.display().to_string()),
                None => location.to_string(),
            })
            .unwrap_or_else(|_| configured.repo_url.clone());
        if url != configured_url {
            differences.push(format!(
                "repository `{url}` (configured: `{configured_url}`)"
            ));
        }
    }
    if let Some(branch) = args.branch.as_ref().filter(|b| **b != configured.branch) {
        differences.push(format!(
            "branch `{branch}` (configured: `{}`)",
            configured.branch
        ));
    }
    if let Some(path) = &args.path {
        let path = ritmo::config::normalise_path(path);
        if path != configured.path {
            differences.push(format!("path `{path}` (configured: `{}`)", configured.path));
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    bail!(
        "target `{}` is configured (bootstrap file or RITMO_GITOPS_*), and this command names {}: \
         drop the flags to use the configured target, or pass `--target NAME` to read it as a \
         target of its own",
        configured.name,
        differences.join(", ")
    )
}

async fn validate(ctx: &Session, args: &SourceArgs) -> Result<u8> {
    let target = ctx.target(args)?;
    let source = ctx.source(&target, args.worktree).await?;
    let limits = Limits::default();
    let progress = crate::progress::start(ctx.output);
    let snapshot = source::read_source(&source, limits).await?;
    if snapshot.files.is_empty() {
        // A wrong --repo-path or --path reads as an empty repository; "0 errors" would pass it.
        let directories: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| format!("{}/", kind.directory()))
            .collect();
        bail!(
            "no resource files in `{}` (path `{}`, {}): looked for {}; check --repo-path and --path",
            source.location,
            target.path,
            snapshot.revision,
            directories.join(", ")
        );
    }
    let files = snapshot.files.len();
    let unchecked = uncommitted_files(&source, &target, &snapshot, &limits);
    let sources = render::Sources::from_files(&snapshot.files);
    let (keys, refs) = (ctx.keys().await?, ctx.refs().await);
    let mut checked = source::check(snapshot, ctx.checks(&keys, &refs), &limits).await;
    ritmo::diagnostic::fill_spans(&mut checked.diagnostics, |path| sources.get(path));
    drop(progress);
    let (errors, warnings) = render::diagnostic_counts(&checked.diagnostics);
    // Thousands of diagnostics or plan lines: one write per buffer, not per line.
    let mut out = std::io::BufWriter::new(ctx.out());
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &json!({
                "revision": checked.revision.to_string(),
                "valid": errors == 0,
                "resources": checked.desired.len(),
                "files": files,
                "uncommitted_files": unchecked,
                "diagnostics": checked.diagnostics,
            }),
        )?,
        Output::Text => {
            render::diagnostics_text(&mut out, ctx.style, &checked.diagnostics, &sources)?;
            writeln!(
                out,
                "{}: {} in {}, {}, {}",
                checked.revision,
                render::count(checked.desired.len(), "resource", "resources"),
                render::count(files, "file", "files"),
                render::count(errors, "error", "errors"),
                render::count(warnings, "warning", "warnings"),
            )?;
            if unchecked > 0 {
                writeln!(
                    out,
                    "note: {} under the config directories {} uncommitted changes and {} not \
                     checked (this read the last commit): pass --worktree to check the files on disk",
                    render::count(unchecked, "file", "files"),
                    if unchecked == 1 { "has" } else { "have" },
                    if unchecked == 1 { "was" } else { "were" },
                )?;
            }
        }
    }
    out.flush()?;
    Ok(if errors > 0 { CONFIG_WRONG } else { OK })
}

/// How many resource files differ between the commit `snapshot` read and the working tree
/// of the same local repository: what a commit-reading validate did not check. 0 when the
/// working tree was read, or cannot be.
fn uncommitted_files(
    source: &SourceSpec,
    target: &TargetSettings,
    snapshot: &ritmo::git::Snapshot,
    limits: &Limits,
) -> usize {
    let Some(dir) = source.location.local_path().filter(|_| !source.worktree) else {
        return 0;
    };
    ritmo::git::uncommitted_files(dir, &target.path, &snapshot.files, limits).unwrap_or(0)
}

/// `ritmo gitops plan`: `sync --dry-run` under another name. Both preview: nothing is written.
async fn plan(ctx: &Session, args: &PlanArgs) -> Result<u8> {
    run_sync(
        ctx,
        args,
        Sync {
            preview: true,
            auto_approve: false,
            full: false,
            diff_only: false,
            only: Vec::new(),
            override_window: false,
        },
    )
    .await
}

/// `ritmo gitops diff`: a plan shown as its field diffs alone.
async fn diff(ctx: &Session, args: &PlanArgs) -> Result<u8> {
    run_sync(
        ctx,
        args,
        Sync {
            preview: true,
            auto_approve: false,
            full: false,
            diff_only: true,
            only: Vec::new(),
            override_window: false,
        },
    )
    .await
}

async fn sync(ctx: &Session, args: &SyncArgs) -> Result<u8> {
    let sync = Sync {
        preview: args.dry_run,
        auto_approve: args.auto_approve,
        full: args.full,
        diff_only: false,
        only: args.only.clone(),
        override_window: args.override_window,
    };
    run_sync(ctx, &args.plan, sync).await
}

/// What `plan` and `sync` ask of the pipeline.
struct Sync {
    preview: bool,
    auto_approve: bool,
    full: bool,
    /// Print only the field diffs (`ritmo gitops diff`).
    diff_only: bool,
    /// `--only`: apply just these changes (`KIND/NAME`, comma lists allowed).
    only: Vec<String>,
    /// `--override-window`: sync although the sync windows are closed to manual syncs.
    override_window: bool,
}

/// Plans (and unless previewing, applies) the target through the pipeline's own steps, run
/// in this process, and renders what happened.
async fn run_sync(ctx: &Session, args: &PlanArgs, sync: Sync) -> Result<u8> {
    let mut target = ctx.target(&args.source)?;
    if args.no_prune {
        target.policy.prune = false;
    }
    let configured = ctx.settings.target(&target.name).is_some();
    let mut settings = ctx.settings.clone();
    settings.targets.retain(|t| t.name != target.name);
    settings.targets.push(target.clone());
    let (services, mut receivers) = crate::ops::connect(&settings, &args.database).await?;
    if !configured && !sync.preview {
        refuse_other_registration(&services, &target).await?;
    }
    let mut request = PlanRequest::new(target.name.clone(), Trigger::Cli, chrono::Utc::now())
        .with_actor(crate::ops::actor());
    if let Some(commit) = &args.commit {
        if !sync.preview {
            bail!(
                "`--commit {commit}` only previews: run `ritmo gitops plan --commit {commit}` \
                 (or `sync --dry-run`); to apply an earlier commit use `ritmo gitops rollback --to`"
            );
        }
        if !(7..=40).contains(&commit.len()) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "`--commit {commit}` is not a commit id: pass 7 to 40 hex digits (`git rev-parse HEAD`)"
            );
        }
        request = request.with_revision(commit.clone());
    }
    if !sync.only.is_empty() {
        request = request.with_only(sync.only.clone());
    }
    let request = request.with_override_window(sync.override_window);
    let inline = InlineSync {
        options: PlanOptions {
            preview: sync.preview,
            worktree: args.source.worktree,
            full: sync.full,
        },
        auto_approve: sync.auto_approve,
        actor: crate::ops::actor(),
    };
    let style = ctx.style.with_diff(!args.no_diff);
    let listing = render::PlanListing::default();
    let list_while_applying = |outcome: &PlanRequestOutcome| {
        if let PlanRequestOutcome::Planned {
            status: RunStatus::Planned,
            detail,
            ..
        } = outcome
            && let Some(plan) = &detail.plan
            && ctx.output == Output::Text
            && !sync.diff_only
        {
            listing.start(style, plan);
        }
    };
    let progress = crate::progress::start(ctx.output);
    let drained = workflow::sync_inline_with(
        &services,
        &mut receivers,
        &request,
        &inline,
        &list_while_applying,
    )
    .await?;
    drop(progress);
    let pinned = services
        .store
        .lock()
        .await
        .target(&target.name)
        .await?
        .and_then(|state| state.pinned_commit);
    let detail = drained.last_plan().and_then(PlanRequestOutcome::detail);
    let sources = match detail {
        Some(detail) => plan_sources(ctx, &target, args.source.worktree, detail).await,
        None => render::Sources::default(),
    };
    let mut out = std::io::BufWriter::new(ctx.out());
    match ctx.output {
        Output::Json => {
            let mut value = sync_json(&target, &drained, sync.preview);
            value["pinned_commit"] = json!(pinned);
            if let Some(detail) = detail {
                let mut diagnostics = detail.diagnostics.clone();
                ritmo::diagnostic::fill_spans(&mut diagnostics, |path| sources.get(path));
                value["diagnostics"] = json!(diagnostics);
            }
            render::json_line(&mut out, &value)?
        }
        Output::Text => {
            let plan = drained
                .last_plan()
                .and_then(PlanRequestOutcome::detail)
                .and_then(|detail| detail.plan.as_ref());
            match plan {
                Some(plan) if sync.diff_only => render::diff_text(&mut out, style, plan)?,
                _ => sync_text(&mut out, style, &target, &drained, &sources, &listing)?,
            }
            if let Some(pin) = pinned {
                writeln!(
                    out,
                    "Target `{name}` is pinned at {pin} by a rollback: syncs read that commit \
                     until `ritmo gitops resume --target {name}` follows the branch again.",
                    name = target.name
                )?;
            }
        }
    }
    out.flush()?;
    let code = if drained.failed() || drained.last_plan().is_some_and(is_refusal) {
        CONFIG_WRONG
    } else {
        OK
    };
    // The process exits next, and the kernel takes its memory back at once: freeing a full
    // sync's 10,000 plans and specs one allocation at a time took 15 ms of the run.
    std::mem::forget(drained);
    Ok(code)
}

/// The files a plan's diagnostics point into, for their snippets: only those files, read
/// again at the commit the plan read (a branch that moved since would show other lines).
async fn plan_sources(
    ctx: &Session,
    target: &TargetSettings,
    worktree: bool,
    detail: &workflow::PlanDetail,
) -> render::Sources {
    let paths: BTreeSet<&str> = detail
        .diagnostics
        .iter()
        .filter(|diagnostic| !diagnostic.path.is_empty())
        .map(|diagnostic| diagnostic.path.as_str())
        .collect();
    let (Some(revision), false) = (&detail.revision, paths.is_empty()) else {
        return render::Sources::default();
    };
    let Ok(source) = ctx.source(target, worktree).await else {
        return render::Sources::default();
    };
    let paths = paths.into_iter().map(str::to_string).collect();
    match source::read_files_at(&source, revision, paths, Limits::default()).await {
        Ok(files) => render::Sources::from_files(&files),
        Err(_) => render::Sources::default(),
    }
}

/// A plan request the pipeline declined for a reason the person must act on.
fn is_refusal(outcome: &PlanRequestOutcome) -> bool {
    matches!(
        outcome,
        PlanRequestOutcome::Skipped {
            reason: SkipReason::Disabled | SkipReason::Suspended,
            ..
        }
    )
}

/// Refuses an ad-hoc run whose repository, branch or path differ from what an earlier run
/// registered under the same name: it would retarget the name and prune the other repository.
async fn refuse_other_registration(services: &Services, target: &TargetSettings) -> Result<()> {
    let Some(stored) = services.store.lock().await.target(&target.name).await? else {
        return Ok(());
    };
    if (&stored.repo_url, &stored.branch, &stored.path)
        == (&target.repo_url, &target.branch, &target.path)
    {
        return Ok(());
    }
    bail!(
        "target `{}` is registered with repository `{}` branch `{}` path `{}`, and this command \
         names repository `{}` branch `{}` path `{}`: pass `--target NAME` to sync it as a target \
         of its own, or configure target `{}` (bootstrap file or RITMO_GITOPS_REPO_URL) to move it",
        target.name,
        stored.repo_url,
        stored.branch,
        stored.path,
        target.repo_url,
        target.branch,
        target.path,
        target.name
    )
}

fn sync_json(target: &TargetSettings, drained: &Drained, preview: bool) -> serde_json::Value {
    let last = drained.last_plan();
    let detail = last.and_then(PlanRequestOutcome::detail);
    let (sync_id, status) = match last {
        Some(PlanRequestOutcome::Planned {
            sync_id, status, ..
        }) => (Some(*sync_id), Some(*status)),
        Some(PlanRequestOutcome::Failed { sync_id, .. }) => {
            (Some(*sync_id), Some(RunStatus::Failed))
        }
        Some(PlanRequestOutcome::Previewed { status, .. }) => (None, Some(*status)),
        Some(PlanRequestOutcome::Skipped { .. }) | None => (None, None),
    };
    let status = match (status, drained.applied()) {
        (_, Some(_)) => Some(RunStatus::Succeeded),
        (status, None) => status,
    };
    let plan = detail.and_then(|detail| detail.plan.as_deref());
    let diagnostics = detail.map_or(&[][..], |detail| &detail.diagnostics[..]);
    let revision = detail.and_then(|detail| detail.revision.as_ref());
    render::plan_json(
        revision,
        plan,
        diagnostics,
        json!({
            "target": target.name,
            "sync_id": sync_id,
            "status": status,
            "dry_run": preview,
            "mode": detail.and_then(|detail| detail.mode.as_ref()),
            "skipped": match last {
                Some(PlanRequestOutcome::Skipped { reason, .. }) => Some(reason),
                _ => None,
            },
            "applied": drained.applied(),
            "approval": drained.approval,
            "partial": plan.and_then(|plan| plan.partial.as_ref()),
            "error": drained.error,
        }),
    )
}

fn sync_text(
    out: &mut impl Write,
    style: Style,
    target: &TargetSettings,
    drained: &Drained,
    sources: &render::Sources,
    listing: &render::PlanListing,
) -> std::io::Result<()> {
    let last = drained.last_plan();
    if let Some(detail) = last.and_then(PlanRequestOutcome::detail) {
        render::diagnostics_text(out, style, &detail.diagnostics, sources)?;
        if let Some(plan) = &detail.plan {
            listing.write(out, style, plan)?;
        }
        if let Some(mode) = &detail.mode {
            writeln!(out, "Scanned: {mode}.")?;
        }
        if let Some((plan, partial)) = detail
            .plan
            .as_ref()
            .and_then(|plan| Some((plan, plan.partial.as_ref()?)))
        {
            let pending: Vec<String> = partial.pending.iter().map(ToString::to_string).collect();
            writeln!(
                out,
                "Selective: {} of {} changes at {}; pending: {}. The last applied commit stays \
                 {} until a plain `ritmo gitops sync` applies the rest.",
                partial.selected.len(),
                partial.total(),
                plan.revision,
                pending.join(", "),
                plan.base.commit.as_deref().unwrap_or("none"),
            )?;
        }
    }
    if let Some(error) = &drained.error {
        return writeln!(out, "Failed: {error}. Nothing more was applied.");
    }
    let name = &target.name;
    let verdict = match (last, drained.applied()) {
        (_, Some(report)) => format!(
            "Applied. Sync {} ({} created, {} updated, {} deleted)",
            report.sync_id, report.created, report.updated, report.deleted
        ),
        (None, None) => "Nothing planned.".to_string(),
        (Some(PlanRequestOutcome::Previewed { status, .. }), None) => match status {
            RunStatus::Failed => "No plan: fix the errors above first.".to_string(),
            RunStatus::PendingApproval => {
                "Dry run: nothing applied (a sync would wait for approval).".to_string()
            }
            _ => "Dry run: nothing applied.".to_string(),
        },
        (Some(PlanRequestOutcome::Failed { sync_id, error, .. }), None) => {
            format!("Failed: {error}; nothing applied. Sync {sync_id}")
        }
        (
            Some(PlanRequestOutcome::Planned {
                sync_id,
                status,
                approval_reason,
                ..
            }),
            None,
        ) => match status {
            RunStatus::Succeeded => format!("Nothing to apply. Sync {sync_id}"),
            RunStatus::PendingApproval => format!(
                "Waiting for approval ({}): nothing applied. Approve with `ritmo gitops approve \
                 {sync_id}`, or rerun with --auto-approve. Sync {sync_id}",
                approval_reason.as_deref().unwrap_or("approval required")
            ),
            RunStatus::Planned => format!("Dry run: nothing applied. Sync {sync_id}"),
            other => format!("Ended as {}. Sync {sync_id}", other.as_str()),
        },
        (Some(PlanRequestOutcome::Skipped { reason, .. }), None) => match reason {
            SkipReason::Disabled => "GitOps is disabled (gitops.enabled: false or \
                                     RITMO_GITOPS_ENABLED=false): nothing planned or applied."
                .to_string(),
            SkipReason::Suspended => {
                format!("Target `{name}` is suspended: nothing planned or applied.")
            }
            SkipReason::Pinned { pinned_commit } => format!(
                "Target `{name}` is pinned at {pinned_commit} by a rollback: `ritmo gitops resume \
                 --target {name}` to follow the branch again."
            ),
            SkipReason::AlreadyApplied { commit } => {
                format!("Nothing to apply: {commit} is applied.")
            }
            SkipReason::InProgress { sync_id, status } => match status {
                RunStatus::PendingApproval => format!(
                    "Sync {sync_id} of this commit waits for approval: `ritmo gitops approve \
                     {sync_id}`, or rerun with --auto-approve."
                ),
                status => format!("Sync {sync_id} of this commit is {status}."),
            },
        },
    };
    writeln!(out, "{verdict}")
}

async fn status(ctx: &Session, args: &DatabaseArgs) -> Result<u8> {
    let store = ctx.store(args).await?;
    let targets = store.targets().await?;
    let mut rows = Vec::new();
    for target in targets {
        let last_run = store
            .runs(Some(&target.name), 1, None)
            .await?
            .into_iter()
            .next();
        let drift = store.drift(&target.name).await?;
        let partial = store.partial_sync(&target.name).await?;
        rows.push((target, last_run, drift, partial));
    }
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => {
            let value: Vec<_> = rows
                .iter()
                .map(|(target, run, drift, partial)| {
                    let window = ctx.settings.target(&target.name).and_then(|t| {
                        ritmo::windows::status(&t.controls.windows, chrono::Utc::now())
                    });
                    json!({
                        "target": target,
                        "last_run": run,
                        "drift": drift,
                        "sync_window": window,
                        "partial_sync": partial,
                    })
                })
                .collect();
            render::json_line(
                &mut out,
                &json!({ "enabled": ctx.settings.enabled, "targets": value }),
            )?;
        }
        Output::Text => {
            if !ctx.settings.enabled {
                writeln!(
                    out,
                    "GitOps is disabled (gitops.enabled: false or RITMO_GITOPS_ENABLED=false): \
                     nothing is polled, planned or applied."
                )?;
            }
            if rows.is_empty() {
                writeln!(out, "No targets yet: run `ritmo gitops sync` first.")?;
            }
            for (target, run, drift, partial) in &rows {
                writeln!(
                    out,
                    "Target {} ({} {} path {})",
                    target.name, target.repo_url, target.branch, target.path
                )?;
                writeln!(
                    out,
                    "  last applied commit: {}   generation: {}",
                    target.last_applied_commit.as_deref().unwrap_or("none"),
                    target.generation
                )?;
                if let Some(partial) = partial {
                    writeln!(
                        out,
                        "  partially synced: {} of {} changes of {} applied by sync {}; pending: \
                         {} (a plain `ritmo gitops sync` applies them)",
                        partial.applied,
                        partial.total,
                        partial.commit.as_deref().unwrap_or("the working tree"),
                        partial.sync_id,
                        partial.pending.join(", ")
                    )?;
                }
                if let Some(pin) = &target.pinned_commit {
                    writeln!(
                        out,
                        "  pinned: {pin} (rollback; webhook and schedule syncs suspended until \
                         `ritmo gitops resume --target {}`)",
                        target.name
                    )?;
                }
                let by_settings = ctx
                    .settings
                    .target(&target.name)
                    .is_some_and(|t| t.controls.suspended);
                if by_settings {
                    writeln!(
                        out,
                        "  suspended: by the settings (sync.suspended / RITMO_GITOPS_SUSPENDED); \
                         automatic syncs are off"
                    )?;
                } else if target.suspended {
                    writeln!(
                        out,
                        "  suspended: by {} at {}; automatic syncs are off until `ritmo gitops \
                         resume --target {}`",
                        target.suspended_by.as_deref().unwrap_or("unknown"),
                        target
                            .suspended_at
                            .map_or_else(|| "an unknown time".to_owned(), |at| at.to_rfc3339()),
                        target.name
                    )?;
                }
                if let Some(window) = ctx
                    .settings
                    .target(&target.name)
                    .and_then(|t| ritmo::windows::status(&t.controls.windows, chrono::Utc::now()))
                {
                    let active = if window.active.is_empty() {
                        "none".to_owned()
                    } else {
                        window.active.join("; ")
                    };
                    match (window.open, window.next_opening) {
                        (true, _) => writeln!(out, "  sync window: open (in effect: {active})")?,
                        (false, Some(at)) => writeln!(
                            out,
                            "  sync window: closed (in effect: {active}); automatic syncs wait \
                             until {} (`ritmo gitops approve SYNC_ID --override-window` applies \
                             a waiting plan now)",
                            at.to_rfc3339()
                        )?,
                        (false, None) => writeln!(
                            out,
                            "  sync window: closed (in effect: {active}); no opening found"
                        )?,
                    }
                }
                match run {
                    Some(run) => writeln!(
                        out,
                        "  last sync: {} {} at {} ({} created, {} updated, {} deleted)",
                        run.id,
                        run.status.as_str(),
                        run.started_at,
                        run.summary.create,
                        run.summary.update,
                        run.summary.delete
                    )?,
                    None => writeln!(out, "  last sync: none")?,
                }
                if drift.is_empty() {
                    writeln!(out, "  drift: none")?;
                } else {
                    writeln!(
                        out,
                        "  drift: {}",
                        render::count(drift.len(), "out-of-band change", "out-of-band changes")
                    )?;
                    for event in drift {
                        writeln!(
                            out,
                            "    {} {}/{} at {}",
                            event.operation, event.kind, event.name, event.detected_at
                        )?;
                    }
                }
            }
        }
    }
    Ok(OK)
}

async fn history(ctx: &Session, args: &HistoryArgs) -> Result<u8> {
    let store = ctx.store(&args.database).await?;
    let runs = store
        .runs(args.target.as_deref(), args.limit, args.before)
        .await?;
    // A full page may have more behind it; the cursor is the oldest start shown.
    let next = (runs.len() as i64 == args.limit)
        .then(|| {
            runs.last().map(|run| {
                run.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            })
        })
        .flatten();
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => render::json_line(&mut out, &json!({ "runs": runs, "next": next }))?,
        Output::Text => {
            for run in &runs {
                write!(
                    out,
                    "{}  {}  {:<16} {:<8} {:<16} {}  +{} ~{} -{}",
                    run.started_at.format("%Y-%m-%d %H:%M:%S"),
                    run.id,
                    run.status.as_str(),
                    run.trigger,
                    run.actor.as_deref().unwrap_or("-"),
                    run.revision.as_deref().unwrap_or("-"),
                    run.summary.create,
                    run.summary.update,
                    run.summary.delete
                )?;
                if let (Some(selected), Some(pending)) = (&run.selected, &run.pending) {
                    write!(
                        out,
                        "  partial: only {} ({} pending)",
                        selected.join(","),
                        pending.len()
                    )?;
                }
                if let Some(by) = &run.window_override_by {
                    write!(out, "  window overridden by {by}")?;
                }
                writeln!(out)?;
            }
            if runs.is_empty() {
                writeln!(out, "No sync runs.")?;
            }
            if let Some(next) = next {
                writeln!(
                    out,
                    "More: ritmo gitops history --limit {} --before {next}",
                    args.limit
                )?;
            }
        }
    }
    Ok(OK)
}

async fn get(ctx: &Session, args: &GetArgs) -> Result<u8> {
    let kind: Kind = args.kind.parse().map_err(|e| anyhow!("{e}"))?;
    let store = ctx.store(&args.database).await?;
    let resources = store.resources(Some(kind), args.name.as_deref()).await?;
    let mut out = ctx.out();
    if args.name.is_some() && resources.is_empty() {
        render::error(
            ctx.output,
            &format!(
                "no {} named `{}`",
                kind.slug(),
                args.name.as_deref().unwrap_or_default()
            ),
        );
        return Ok(NOT_FOUND);
    }
    match ctx.output {
        Output::Json => match (&args.name, resources.first()) {
            (Some(_), Some(one)) => render::json_line(&mut out, one)?,
            _ => render::json_line(&mut out, &json!({ "items": resources }))?,
        },
        Output::Text => {
            if let (Some(_), Some(one)) = (&args.name, resources.first()) {
                render::json_line(&mut out, one)?;
            } else {
                writeln!(
                    out,
                    "{:<40} {:<14} {:<12} UPDATED",
                    "NAME", "HASH", "COMMIT"
                )?;
                for resource in &resources {
                    writeln!(
                        out,
                        "{:<40} {:<14} {:<12} {}",
                        resource.name,
                        resource.spec_hash.get(..12).unwrap_or(&resource.spec_hash),
                        resource
                            .commit
                            .as_deref()
                            .and_then(|c| c.get(..10))
                            .unwrap_or("-"),
                        resource.updated_at.format("%Y-%m-%d %H:%M:%S")
                    )?;
                }
            }
        }
    }
    Ok(OK)
}

async fn export(ctx: &Session, args: &ExportArgs) -> Result<u8> {
    let store = ctx.store(&args.database).await?;
    let resources = store.resources(None, None).await?;
    let dir: &PathBuf = &args.output_dir;
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "`{}` is not empty: export into a new or empty directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let output = ritmo::export::ExportDir::new(dir);
    let mut written = 0;
    // Rows whose name cannot be a file name are reported and skipped; the rest still export.
    let mut skipped = Vec::new();
    for resource in &resources {
        let relative = match ritmo::export::export_path(resource) {
            Ok(relative) => relative,
            Err(error) => {
                if ctx.output == Output::Text {
                    eprintln!("error: {error}");
                }
                skipped.push(json!({
                    "kind": resource.kind.as_str(),
                    "name": resource.name,
                    "reason": error.to_string(),
                }));
                continue;
            }
        };
        let yaml = ritmo::export::export_document(resource).with_context(|| {
            format!(
                "cannot render {} `{}` as YAML",
                resource.kind, resource.name
            )
        })?;
        output.write(&relative, yaml.as_bytes())?;
        written += 1;
    }
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &json!({"written": written, "output_dir": dir, "skipped": skipped}),
        )?,
        Output::Text => {
            writeln!(
                out,
                "Wrote {} to {}",
                render::count(written, "resource", "resources"),
                dir.display()
            )?;
            if !skipped.is_empty() {
                writeln!(
                    out,
                    "Skipped {} whose stored names cannot be exported (see the errors above).",
                    render::count(skipped.len(), "resource", "resources")
                )?;
            }
        }
    }
    Ok(if skipped.is_empty() { OK } else { CONFIG_WRONG })
}

fn read_value(value: Option<&String>) -> Result<secrecy::SecretString> {
    if let Some(value) = value {
        return Ok(value.clone().into());
    }
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("cannot read the value from stdin")?;
    // A trailing newline from `echo` is never part of a secret.
    let trimmed = value.strip_suffix('\n').unwrap_or(&value);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string();
    Ok(trimmed.into())
}

async fn encrypt_credential(ctx: &Session, args: &CredentialArgs) -> Result<u8> {
    let value = read_value(args.value.as_ref())?;
    let mut keys = ctx.keys().await?;
    let plaintext = value.expose_secret().as_bytes();
    let ciphertext = match (&args.kms_key_id, &args.name) {
        (Some(key_id), Some(name)) => {
            keys.kms_key_id = Some(key_id.clone());
            if keys.kms.is_none() {
                keys.kms = Some(ritmo::crypto::kms_client().await);
            }
            keys.encrypt_kms(name, plaintext).await?
        }
        _ => keys.encrypt_master(args.name.as_deref(), plaintext).await?,
    };
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &json!({"encrypted_value": ciphertext, "name": args.name}),
        )?,
        Output::Text => writeln!(out, "{ciphertext}")?,
    }
    Ok(OK)
}

async fn decrypt_credential(ctx: &Session, args: &DecryptArgs) -> Result<u8> {
    let value = read_value(args.value.as_ref())?;
    let keys = ctx.keys().await?;
    let name = args.name.as_deref().unwrap_or_default();
    let decrypted = match keys.decrypt(name, value.expose_secret().trim()).await {
        Ok(decrypted) => decrypted,
        Err(error) if error.is_bad_value() => {
            render::error(ctx.output, &error.to_string());
            return Ok(CONFIG_WRONG);
        }
        Err(error) => return Err(error.into()),
    };
    let mut out = ctx.out();
    out.write_all(decrypted.plaintext.expose_secret())?;
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        writeln!(out)?;
    }
    Ok(OK)
}

// --- secrets: `ritmo rotate-credentials` ---

async fn rotate_credentials(ctx: &Session, args: &RotateArgs) -> Result<u8> {
    let keys = ctx.keys().await?;
    let keyring = keys.master.as_ref().ok_or_else(|| {
        anyhow!(
            "no master key: set RITMO_MASTER_ENCRYPTION_KEY (old keys first, the new one last) \
             or RITMO_MASTER_KEY_SECRET_ARN"
        )
    })?;
    let limits = Limits::default();
    let snapshot = ritmo::git::read_worktree(&args.repo_path, &args.path, &limits)?;
    let root = args
        .repo_path
        .join(ritmo::config::normalise_path(&args.path).trim_start_matches('/'));
    let mut rotations = Vec::new();
    for file in &snapshot.files {
        let ritmo::manifest::FileContent::Bytes(bytes) = &file.content else {
            continue;
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        if !text.contains(ritmo::crypto::AES256_PREFIX) {
            continue;
        }
        let rotation =
            ritmo::crypto::rotate::rotate_text(&file.path, text, keyring, args.name.as_deref());
        if rotation.changed() && !args.dry_run {
            let path = root.join(&file.path);
            write_in_place(&path, &rotation.text)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        rotations.push(rotation);
    }
    let refused: Vec<_> = rotations
        .iter()
        .flat_map(|r| r.refused.iter())
        .cloned()
        .collect();
    let changed: Vec<_> = rotations.iter().filter(|r| r.changed()).collect();
    let rotated: usize = changed.iter().map(|r| r.rotated.len()).sum();
    let current: usize = rotations.iter().map(|r| r.current).sum();
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &json!({
                "key": keyring.current_id(),
                "dry_run": args.dry_run,
                "files": changed.iter().map(|r| json!({
                    "path": r.path,
                    "credentials": r.rotated.iter().map(|v| json!({
                        "name": v.credential, "line": v.line, "from_key": v.from_key, "was_bound": v.was_bound,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "rotated": rotated,
                "already_current": current,
                "diagnostics": refused,
            }),
        )?,
        Output::Text => {
            render::diagnostics_text(
                &mut out,
                ctx.style,
                &refused,
                &render::Sources::from_files(&snapshot.files),
            )?;
            for rotation in &changed {
                let names: Vec<&str> = rotation
                    .rotated
                    .iter()
                    .map(|v| v.credential.as_str())
                    .collect();
                writeln!(
                    out,
                    "{} {} ({})",
                    if args.dry_run {
                        "would change"
                    } else {
                        "changed"
                    },
                    rotation.path,
                    names.join(", ")
                )?;
            }
            writeln!(
                out,
                "{} {} key `{}`, {current} already current, {} not rotated.{}",
                render::count(rotated, "value", "values"),
                if args.dry_run {
                    "would move to"
                } else {
                    "moved to"
                },
                keyring.current_id(),
                refused.len(),
                if rotated > 0 && !args.dry_run {
                    " Review with `git diff` and commit."
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(if refused.is_empty() { OK } else { CONFIG_WRONG })
}

/// Replaces `path` by `text` through a temporary file in the same directory, so a crash never
/// leaves half a file; the file's permissions are kept.
fn write_in_place(path: &std::path::Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let permissions = std::fs::metadata(path)?.permissions();
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("credential");
    let temporary = dir.join(format!(".{file_name}.ritmo-rotate"));
    std::fs::write(&temporary, text)?;
    std::fs::set_permissions(&temporary, permissions)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}
