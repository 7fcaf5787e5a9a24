//! `ritmo gitops init`: the seed's first onboarding step. Gathers the answers and the token,
//! asks `ritmo::onboard` for the file and the remote check, validates the repository as
//! `ritmo gitops validate` does, registers the target, and prints what to run next.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ritmo::config::{DEFAULT_BOOTSTRAP_PATH, DEFAULT_TARGET, Settings};
use ritmo::crypto::secret_refs::SecretRefChecker;
use ritmo::manifest::Limits;
use ritmo::onboard::{self, FileChange, InitAnswers, TOKEN_VARIABLE};
use ritmo::source::{self, SourceSpec};
use ritmo::store::{DatabaseSettings, NewTarget, Store};
use serde_json::json;

use crate::args::{InitArgs, Output};
use crate::render;

const OK: u8 = 0;
const CONFIG_WRONG: u8 = 1;

/// Where the bootstrap file goes: `--config`, else `$RITMO_GITOPS_BOOTSTRAP`, else the seed's.
fn bootstrap_path(config: Option<&Path>) -> PathBuf {
    config.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("RITMO_GITOPS_BOOTSTRAP")
            .filter(|path| !path.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_BOOTSTRAP_PATH), PathBuf::from)
    })
}

/// The token, from the flag (with a warning), stdin or `RITMO_GITOPS_TOKEN`.
fn token(args: &InitArgs) -> Result<Option<String>> {
    if let Some(token) = &args.token {
        eprintln!(
            "warning: --token puts the token in your shell history and the process list; \
             prefer --token-stdin or {TOKEN_VARIABLE}"
        );
        return Ok(Some(token.clone()));
    }
    if args.token_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the token from stdin")?;
        let text = text.trim().to_owned();
        if text.is_empty() {
            bail!("--token-stdin: stdin held no token");
        }
        return Ok(Some(text));
    }
    Ok(std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty()))
}

/// The `authentication:` block: references only, never the token.
fn authentication(args: &InitArgs, token: Option<&str>) -> Result<Vec<(String, String)>> {
    let kind = args.auth_type.clone().unwrap_or_else(|| {
        if token.is_some() || args.token_secret.is_some() {
            "token".into()
        } else if args.ssh_key_path.is_some() {
            "ssh".into()
        } else if args.app_id.is_some() {
            "github_app".into()
        } else {
            "none".into()
        }
    });
    let path = |p: &PathBuf| p.display().to_string();
    let mut pairs = vec![("type".to_owned(), kind.clone())];
    match kind.as_str() {
        "none" => return Ok(Vec::new()),
        "token" => match (&args.token_secret, token) {
            (Some(secret), _) => pairs.push(("token_secret".into(), secret.clone())),
            (None, Some(_)) => pairs.push(("token".into(), format!("${{{TOKEN_VARIABLE}}}"))),
            (None, None) => bail!(
                "--auth-type token needs a token: pipe it to --token-stdin, set \
                 {TOKEN_VARIABLE}, or name a Secrets Manager secret with --token-secret"
            ),
        },
        "ssh" => {
            if let Some(key) = &args.ssh_key_path {
                pairs.push(("ssh_key_path".into(), path(key)));
            }
            if let Some(hosts) = &args.ssh_known_hosts {
                pairs.push(("ssh_known_hosts_path".into(), path(hosts)));
            }
        }
        "github_app" => bail!(
            "--auth-type github_app: write the `github_app:` block of the bootstrap file by \
             hand (README.md, Repository authentication); init writes token, ssh and none"
        ),
        other => bail!("--auth-type `{other}` is not one of token, ssh, github_app, none"),
    }
    Ok(pairs)
}

/// `ritmo gitops init`.
pub async fn run(config: Option<&Path>, output: Output, args: &InitArgs) -> Result<u8> {
    let path = bootstrap_path(config);
    let token = token(args)?;
    let answers = InitAnswers {
        repo_url: args.repo.clone(),
        branch: args.branch.clone(),
        path: args.path.clone(),
        authentication: authentication(args, token.as_deref())?,
    };
    let text = onboard::bootstrap_text(&answers);
    // The file as the service will read it, with the token the service will find in its
    // environment.
    let env = |name: &str| match (name, &token) {
        (TOKEN_VARIABLE, Some(token)) => Some(token.clone()),
        _ => std::env::var(name).ok(),
    };
    let mut settings = Settings::from_text(&path.display().to_string(), &text, &env)
        .context("the bootstrap file init would write does not load")?;
    if let Some(url) = &args.database.database_url {
        settings.database_url = Some(url.clone().into());
    }

    let head = onboard::remote_head(&settings).await.with_context(|| {
        format!(
            "cannot read branch `{}` of {} with this authentication: nothing written",
            args.branch, args.repo
        )
    })?;
    let (errors, warnings, resources, diagnostics) = validate(&settings).await?;
    let change = onboard::write_bootstrap(&path, &text, args.force)?;
    let registered = register(&settings).await?;

    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => render::json_line(
            &mut out,
            &json!({
                "config": path.display().to_string(),
                "file": change,
                "head": head,
                "valid": errors == 0,
                "resources": resources,
                "diagnostics": diagnostics,
                "registered": registered,
                "changed": change != FileChange::Unchanged || registered == Registration::Registered,
            }),
        )?,
        Output::Text => {
            render::diagnostics_text(
                &mut out,
                crate::render::Style::detect(),
                &diagnostics,
                &render::Sources::default(),
            )?;
            let file = match change {
                FileChange::Created => format!("Wrote {}", path.display()),
                FileChange::Replaced => format!("Replaced {}", path.display()),
                FileChange::Unchanged => format!("{} already says this", path.display()),
            };
            writeln!(
                out,
                "{file} (target `{DEFAULT_TARGET}`: {} branch {} path {}).",
                args.repo, args.branch, args.path
            )?;
            if head.is_empty() {
                writeln!(out, "Read the directory {}.", args.repo)?;
            } else {
                writeln!(
                    out,
                    "Branch {} is at {head}: the repository can be read.",
                    args.branch
                )?;
            }
            writeln!(
                out,
                "Validated: {}, {}, {}.",
                render::count(resources, "resource", "resources"),
                render::count(errors, "error", "errors"),
                render::count(warnings, "warning", "warnings"),
            )?;
            match registered {
                Registration::Registered => {
                    writeln!(out, "Registered target `{DEFAULT_TARGET}` in the database.")?
                }
                Registration::AlreadyRegistered => {
                    writeln!(out, "Target `{DEFAULT_TARGET}` was already registered.")?
                }
                Registration::NoDatabase => writeln!(
                    out,
                    "Not registered: no database (set DATABASE_URL); the first sync registers it."
                )?,
            }
            if change == FileChange::Unchanged && registered != Registration::Registered {
                writeln!(out, "Nothing changed: already initialised.")?;
            }
            let config = path.display();
            writeln!(out, "\nNext:")?;
            if answers.authentication.iter().any(|(key, _)| key == "token") {
                writeln!(
                    out,
                    "  export {TOKEN_VARIABLE}=...   # the file reads the token from it"
                )?;
            }
            writeln!(
                out,
                "  ritmo --config {config} gitops plan      # what a sync would change"
            )?;
            writeln!(out, "  ritmo --config {config} gitops sync      # apply it")?;
            writeln!(out, "  ritmo --config {config} gitops status")?;
        }
    }
    Ok(if errors > 0 { CONFIG_WRONG } else { OK })
}

/// Whether init registered the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Registration {
    Registered,
    AlreadyRegistered,
    NoDatabase,
}

/// Registers the default target, unless it is registered with this repository already.
async fn register(settings: &Settings) -> Result<Registration> {
    let database = DatabaseSettings::from_settings(settings);
    if database.url.is_none() && database.secret_id.is_none() && database.host.is_none() {
        return Ok(Registration::NoDatabase);
    }
    let secrets = match &database.secret_id {
        Some(_) => Some(ritmo::crypto::secrets_manager().await),
        None => None,
    };
    let store = Store::connect_with(&database, secrets.as_ref())
        .await
        .context("cannot connect to the database")?;
    let Some(target) = settings.target(DEFAULT_TARGET) else {
        bail!("the bootstrap file describes no default target");
    };
    let wanted = NewTarget {
        name: target.name.clone(),
        repo_url: target.repo_url.clone(),
        branch: target.branch.clone(),
        path: target.path.clone(),
    };
    if let Some(existing) = store.target(&target.name).await?
        && (
            existing.repo_url.as_str(),
            existing.branch.as_str(),
            existing.path.as_str(),
        ) == (
            wanted.repo_url.as_str(),
            wanted.branch.as_str(),
            wanted.path.as_str(),
        )
    {
        return Ok(Registration::AlreadyRegistered);
    }
    store.ensure_target(&wanted).await?;
    Ok(Registration::Registered)
}

/// `ritmo gitops validate` of the default target's branch head.
async fn validate(
    settings: &Settings,
) -> Result<(usize, usize, usize, Vec<ritmo::diagnostic::Diagnostic>)> {
    let Some(target) = settings.target(DEFAULT_TARGET) else {
        bail!("the bootstrap file describes no default target");
    };
    let location = ritmo::git::RepoLocation::parse(&target.repo_url)?;
    let worktree = location
        .local_path()
        .is_some_and(|path| !ritmo::git::is_git_repository(path));
    let spec = SourceSpec {
        worktree,
        location,
        branch: Some(target.branch.clone()),
        path: target.path.clone(),
        auth: source::git_auth(&target.auth).await?,
        cache_dir: settings.cache_dir.join(&target.name),
    };
    let limits = Limits::default();
    let snapshot = source::read_source(&spec, limits).await?;
    let keys = ritmo::crypto::credential_keys(settings, None).await?;
    let refs = SecretRefChecker::from_settings(settings).await;
    let checks = source::Checks {
        keys: &keys,
        refs: &refs,
        builtin_plugins: &settings.builtin_plugins,
    };
    let checked = source::check(snapshot, checks, &limits).await;
    let (errors, warnings) = render::diagnostic_counts(&checked.diagnostics);
    Ok((errors, warnings, checked.desired.len(), checked.diagnostics))
}
