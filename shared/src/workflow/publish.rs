//! After a pull request's preview is planned: post it to the target's own repository on its
//! forge (`crate::forge`), with the credential the target's preview settings name.

use crate::config::{PreviewCredential, SecretSetting};
use crate::diagnostic::Diagnostic;
use crate::forge::{Forge, ForgeError, ForgeKind, Published};
use crate::git;
use crate::message::PlanRequest;
use crate::plan::Plan;
use crate::preview::Preview;
use crate::services::Services;
use crate::source;
use crate::webhook::{normalize_repo_url, repository_path};
use crate::{Error, Result};

/// Posts the preview of `request` (a pull request's): `plan` (`None` when the repository could
/// not be planned) and the read's `diagnostics`. `None` when the
/// target no longer previews pull requests (switched off since the request was queued).
///
/// The repository posted to is the target's own, read from its URL; a request naming any
/// other (a forged or stale message) is refused and nothing is posted.
pub(super) async fn publish_preview(
    services: &Services,
    request: &PlanRequest,
    plan: Option<&Plan>,
    diagnostics: &[Diagnostic],
) -> Result<Option<Published>> {
    let Some(pull) = request.pull_request.as_deref() else {
        return Ok(None);
    };
    let Some(target) = services.settings.target(&request.target) else {
        return Ok(None);
    };
    let Some(settings) = services.settings.preview(&target.name) else {
        tracing::info!(target = %target.name, "previews are switched off: nothing posted");
        return Ok(None);
    };
    let own = repository_path(&target.repo_url);
    if own.as_deref() != Some(pull.repository.as_str()) {
        return Err(Error::InvalidRequest(format!(
            "the preview of pull request #{} names repository `{}`, not target `{}`'s \
             (`{}`): nothing posted",
            pull.number,
            pull.repository,
            target.name,
            own.as_deref().unwrap_or("none")
        )));
    }
    let kind = ForgeKind::from_provider(&pull.provider)?;
    let api_url = match &settings.api_url {
        Some(url) => url.clone(),
        None => {
            let host = normalize_repo_url(&target.repo_url)
                .and_then(|url| url.split('/').next().map(str::to_owned))
                .ok_or_else(|| ForgeError::NoApiUrl {
                    repo_url: target.repo_url.clone(),
                })?;
            kind.default_api_url(&host)
        }
    };
    let (secret, check_run) = match &settings.credential {
        Some(PreviewCredential::Token(setting)) => {
            let source = match setting {
                SecretSetting::Value(value) => git::SecretSource::Value(value.clone()),
                SecretSetting::File(path) => git::SecretSource::File(path.clone()),
                SecretSetting::SecretsManager(id) => git::SecretSource::secrets_manager(
                    id.clone(),
                    services.secrets_manager().await.clone(),
                )
                .ok_or_else(|| {
                    ForgeError::Credential(format!("secret `{id}` needs a Tokio runtime"))
                })?,
            };
            (Credential::Secret(source), false)
        }
        Some(PreviewCredential::GitHubApp) => match source::git_auth(&target.auth).await? {
            git::Auth::GitHubApp(app) => (Credential::App(app), kind == ForgeKind::GitHub),
            _ => {
                return Err(Error::Unsupported(format!(
                    "target `{}` previews with its GitHub App but authenticates otherwise",
                    target.name
                )));
            }
        },
        None => return Ok(None),
    };
    let (target_name, number) = (target.name.clone(), pull.number);
    let commit = pull.head_commit.clone();
    let repository = pull.repository.clone();
    let (plan, diagnostics) = (plan.cloned(), diagnostics.to_vec());
    let published = tokio::task::spawn_blocking(move || -> Result<Published, ForgeError> {
        let preview = Preview {
            target: &target_name,
            commit: &commit,
            plan: plan.as_ref(),
            diagnostics: &diagnostics,
        };
        let publish = |token| {
            Forge {
                kind,
                api_url: api_url.clone(),
                repository: repository.clone(),
                token,
                check_run,
            }
            .publish(number, &preview)
        };
        match &secret {
            Credential::Secret(source) => publish(source.read().map_err(ForgeError::Credential)?),
            Credential::App(app) => {
                let app_token = || {
                    app.token()
                        .map_err(|error| ForgeError::Credential(error.to_string()))
                };
                match publish(app_token()?) {
                    // The cached installation token was revoked: mint another and post once
                    // more, as a Git fetch does, rather than failing until it would expire.
                    Err(error) if error.is_unauthorized() => {
                        app.forget_token();
                        publish(app_token()?)
                    }
                    result => result,
                }
            }
        }
    })
    .await
    .map_err(|error| Error::Internal(format!("posting the preview stopped: {error}")))??;
    tracing::info!(
        target = %target.name,
        pull_request = pull.number,
        comment = published.comment_id,
        edited = published.edited,
        "preview posted"
    );
    Ok(Some(published))
}

/// What the token is read from, inside the blocking task.
enum Credential {
    Secret(git::SecretSource),
    App(std::sync::Arc<git::GitHubApp>),
}
