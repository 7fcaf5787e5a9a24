//! One function per command: gather settings, call the workflow, render the result.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use ritmo::config::{Settings, TargetSettings};
use ritmo::crypto::CredentialKeys;
use ritmo::git::RepoLocation;
use ritmo::manifest::Limits;
use ritmo::model::Kind;
use ritmo::secret_refs::SecretRefChecker;
use ritmo::store::{DatabaseSettings, RunStatus, Store, Trigger};
use ritmo::workflow::{self, SourceSpec, SyncRequest};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::args::{
    Cli, Command, CredentialArgs, DatabaseArgs, ExportArgs, GetArgs, Gitops, HistoryArgs, Output,
    PlanArgs, RotateArgs, SourceArgs, SyncArgs,
};
use crate::render::{self, Style};

const OK: u8 = 0;
const CONFIG_WRONG: u8 = 1;

pub async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::from_process_env(cli.config.as_deref())
        .context("cannot load the bootstrap configuration")?;
    let ctx = Session {
        settings,
        output: cli.output,
        style: Style::detect(),
    };
    let code = match cli.command {
        Command::Gitops(Gitops::Validate(args)) => validate(&ctx, &args).await?,
        Command::Gitops(Gitops::Plan(args)) => plan(&ctx, &args).await?,
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
    /// The target to work on: the configured one, with the command line's repository on top.
    async fn target(&self, args: &SourceArgs) -> Result<(TargetSettings, SourceSpec)> {
        let configured = self.settings.target(&args.target).cloned();
        let url = match (&args.repo_path, &args.repo) {
            (Some(path), _) => std::fs::canonicalize(path)
                .with_context(|| format!("cannot open repository `{}`", path.display()))?
                .display()
                .to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => match &configured {
                Some(target) => target.repo_url.clone(),
                None => bail!(
                    "no repository to read: pass --repo-path DIR or --repo URL, or configure target `{}` \
                     in the bootstrap file or with RITMO_GITOPS_REPO_URL",
                    args.target
                ),
            },
        };
        let location = RepoLocation::parse(&url)?;
        let mut target = configured.unwrap_or_else(|| TargetSettings {
            name: args.target.clone(),
            repo_url: String::new(),
            branch: String::new(),
            path: "/".into(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            policy: Default::default(),
            auth: Default::default(),
        });
        target.repo_url = location.to_string();
        if let Some(path) = &args.path {
            target.path = ritmo::config::normalise_path(path);
        }
        if let Some(branch) = &args.branch {
            target.branch = branch.clone();
        }
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
        let branch = (!target.branch.is_empty()).then(|| target.branch.clone());
        let is_plain_directory = location
            .local_path()
            .is_some_and(|path| !ritmo::git::is_git_repository(path));
        let source = SourceSpec {
            worktree: args.worktree || is_plain_directory,
            location,
            branch,
            path: target.path.clone(),
            auth: workflow::git_auth(&target.auth).await?,
            cache_dir: self.settings.cache_dir.join(&target.name),
        };
        Ok((target, source))
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
    ) -> workflow::Checks<'a> {
        workflow::Checks {
            keys,
            refs,
            builtin_plugins: &self.settings.builtin_plugins,
        }
    }

    /// The keys that decrypt credential ciphertexts.
    async fn keys(&self) -> Result<CredentialKeys> {
        Ok(workflow::credential_keys(&self.settings, None).await?)
    }

    async fn refs(&self) -> SecretRefChecker {
        SecretRefChecker::from_settings(&self.settings).await
    }

    fn out(&self) -> std::io::StdoutLock<'static> {
        std::io::stdout().lock()
    }
}

async fn validate(ctx: &Session, args: &SourceArgs) -> Result<u8> {
    let (_, source) = ctx.target(args).await?;
    let limits = Limits::default();
    let snapshot = workflow::read_source(&source, limits).await?;
    let files = snapshot.files.len();
    let (keys, refs) = (ctx.keys().await?, ctx.refs().await);
    let checked = workflow::check(snapshot, ctx.checks(&keys, &refs), &limits).await;
    let (errors, warnings) = render::diagnostic_counts(&checked.diagnostics);
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &json!({
                "revision": checked.revision.to_string(),
                "valid": errors == 0,
                "resources": checked.desired.len(),
                "files": files,
                "diagnostics": checked.diagnostics,
            }),
        )?,
        Output::Text => {
            render::diagnostics_text(&mut out, ctx.style, &checked.diagnostics)?;
            writeln!(
                out,
                "{}: {} resources in {files} files, {errors} errors, {warnings} warnings",
                checked.revision,
                checked.desired.len()
            )?;
        }
    }
    Ok(if errors > 0 { CONFIG_WRONG } else { OK })
}

async fn plan(ctx: &Session, args: &PlanArgs) -> Result<u8> {
    let (mut target, source) = ctx.target(&args.source).await?;
    if args.no_prune {
        target.policy.prune = false;
    }
    let store = ctx.store(&args.database).await?;
    let limits = Limits::default();
    let snapshot = workflow::read_source(&source, limits).await?;
    let (keys, refs) = (ctx.keys().await?, ctx.refs().await);
    let checked = workflow::check(snapshot, ctx.checks(&keys, &refs), &limits).await;
    let mut out = ctx.out();
    if checked.has_errors() {
        match ctx.output {
            Output::Json => render::json_line(
                &mut out,
                &render::plan_json(
                    &checked.revision,
                    None,
                    &checked.diagnostics,
                    json!({"target": target.name}),
                ),
            )?,
            Output::Text => {
                render::diagnostics_text(&mut out, ctx.style, &checked.diagnostics)?;
                writeln!(out, "No plan: fix the errors above first.")?;
            }
        }
        return Ok(CONFIG_WRONG);
    }
    let plan = workflow::plan_checked(&store, &target, &checked).await?;
    let mut diagnostics = checked.diagnostics.clone();
    diagnostics.extend(plan.diagnostics.iter().cloned());
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &render::plan_json(
                &checked.revision,
                Some(&plan),
                &diagnostics,
                json!({"target": target.name}),
            ),
        )?,
        Output::Text => {
            render::diagnostics_text(&mut out, ctx.style, &diagnostics)?;
            render::plan_text(&mut out, ctx.style, &plan)?;
        }
    }
    Ok(if plan.has_errors() { CONFIG_WRONG } else { OK })
}

async fn sync(ctx: &Session, args: &SyncArgs) -> Result<u8> {
    let (mut target, source) = ctx.target(&args.plan.source).await?;
    if args.plan.no_prune {
        target.policy.prune = false;
    }
    let mut store = ctx.store(&args.plan.database).await?;
    let request = SyncRequest {
        trigger: Trigger::Cli,
        actor: std::env::var("USER").ok(),
        dry_run: args.dry_run || target.dry_run,
        approved: args.auto_approve,
        full: args.full,
    };
    // A rolled-back target stays at its pin until resumed; a sync of the branch would undo
    // the rollback behind the pin's back.
    if !request.dry_run
        && let Some(pin) = store
            .target(&target.name)
            .await?
            .and_then(|state| state.pinned_commit)
    {
        eprintln!(
            "error: target `{}` is pinned at {pin} by a rollback: `ritmo gitops resume --target {}` \
             to follow the branch again, or `ritmo gitops rollback --to COMMIT` to pin another commit",
            target.name, target.name
        );
        return Ok(CONFIG_WRONG);
    }
    let (keys, refs) = (ctx.keys().await?, ctx.refs().await);
    let outcome = workflow::sync_target_with(
        &mut store,
        &target,
        &source,
        ctx.checks(&keys, &refs),
        &request,
        &workflow::SyncRules::for_target(&ctx.settings, &target),
    )
    .await?;
    let mut diagnostics = outcome.checked_diagnostics.clone();
    if let Some(plan) = &outcome.plan {
        diagnostics.extend(plan.diagnostics.iter().cloned());
    }
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => render::json_line(
            &mut out,
            &render::plan_json(
                &outcome.revision,
                outcome.plan.as_ref(),
                &diagnostics,
                json!({
                    "target": target.name,
                    "sync_id": outcome.sync_id,
                    "status": outcome.status,
                    "dry_run": request.dry_run,
                    "mode": outcome.mode,
                }),
            ),
        )?,
        Output::Text => {
            render::diagnostics_text(&mut out, ctx.style, &diagnostics)?;
            if let Some(plan) = &outcome.plan {
                render::plan_text(&mut out, ctx.style, plan)?;
            }
            let id = outcome.sync_id.map(|id| id.to_string()).unwrap_or_default();
            let verdict = match outcome.status {
                RunStatus::Succeeded if outcome.report.is_none() => "Nothing to apply.".to_string(),
                RunStatus::Succeeded => "Applied.".to_string(),
                RunStatus::Planned => "Dry run: nothing applied.".to_string(),
                RunStatus::PendingApproval => {
                    "Waiting for approval: nothing applied (rerun with --auto-approve to apply)."
                        .to_string()
                }
                RunStatus::Failed => "Failed: nothing applied.".to_string(),
                other => format!("Ended as {}.", other.as_str()),
            };
            if let Some(mode) = &outcome.mode {
                writeln!(out, "Scanned: {mode}.")?;
            }
            writeln!(out, "{verdict} Sync {id}")?;
        }
    }
    Ok(if outcome.status == RunStatus::Failed {
        CONFIG_WRONG
    } else {
        OK
    })
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
        rows.push((target, last_run, drift));
    }
    let mut out = ctx.out();
    match ctx.output {
        Output::Json => {
            let value: Vec<_> = rows
                .iter()
                .map(|(target, run, drift)| json!({"target": target, "last_run": run, "drift": drift}))
                .collect();
            render::json_line(&mut out, &json!({ "targets": value }))?;
        }
        Output::Text => {
            if rows.is_empty() {
                writeln!(out, "No targets yet: run `ritmo gitops sync` first.")?;
            }
            for (target, run, drift) in &rows {
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
                if let Some(pin) = &target.pinned_commit {
                    writeln!(
                        out,
                        "  pinned: {pin} (rollback; webhook and schedule syncs suspended until \
                         `ritmo gitops resume --target {}`)",
                        target.name
                    )?;
                }
                if target.suspended {
                    writeln!(out, "  suspended: automatic syncs are off")?;
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
                    writeln!(out, "  drift: {} out-of-band change(s)", drift.len())?;
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
                writeln!(
                    out,
                    "{}  {}  {:<16} {:<8} {}  +{} ~{} -{}",
                    run.started_at.format("%Y-%m-%d %H:%M:%S"),
                    run.id,
                    run.status.as_str(),
                    run.trigger,
                    run.revision.as_deref().unwrap_or("-"),
                    run.summary.create,
                    run.summary.update,
                    run.summary.delete
                )?;
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
        eprintln!(
            "error: no {} named `{}`",
            kind.slug(),
            args.name.as_deref().unwrap_or_default()
        );
        return Ok(CONFIG_WRONG);
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
                eprintln!("error: {error}");
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
            writeln!(out, "Wrote {written} resources to {}", dir.display())?;
            if !skipped.is_empty() {
                writeln!(
                    out,
                    "Skipped {} resources whose stored names cannot be exported (see the errors above).",
                    skipped.len()
                )?;
            }
        }
    }
    Ok(if skipped.is_empty() { OK } else { CONFIG_WRONG })
}

fn read_value(args: &CredentialArgs) -> Result<secrecy::SecretString> {
    if let Some(value) = &args.value {
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
    let value = read_value(args)?;
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

async fn decrypt_credential(ctx: &Session, args: &CredentialArgs) -> Result<u8> {
    let value = read_value(args)?;
    let keys = ctx.keys().await?;
    let name = args.name.as_deref().unwrap_or_default();
    let decrypted = match keys.decrypt(name, value.expose_secret().trim()).await {
        Ok(decrypted) => decrypted,
        Err(error) if error.is_bad_value() => {
            eprintln!("error: {error}");
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
        let rotation = ritmo::rotate::rotate_text(&file.path, text, keyring, args.name.as_deref());
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
            render::diagnostics_text(&mut out, ctx.style, &refused)?;
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
                "{rotated} value(s) {} key `{}`, {current} already current, {} not rotated.{}",
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
