//! Git credentials for a target: the bootstrap configuration's `authentication:` block turned
//! into what `git` authenticates with, secrets read from Secrets Manager when the host asks.

use crate::config::{GitAuth, SecretSetting};
use crate::crypto::{self, SecretsManager};
use crate::git;
use crate::{Error, Result};

/// The credentials a target's Git host wants. Secrets named by the bootstrap configuration are
/// not read here but when the host asks for them, through the process-wide Secrets Manager
/// cache ([`crypto::secrets_manager`]), and read again once when the host refuses them.
pub async fn git_auth(auth: &GitAuth) -> Result<git::Auth> {
    let needs_secrets_manager = match auth {
        GitAuth::Token {
            token: None,
            token_secret: Some(_),
        } => true,
        GitAuth::Ssh {
            key: Some(SecretSetting::SecretsManager(_)),
            ..
        } => true,
        GitAuth::GitHubApp { private_key, .. } => {
            matches!(private_key, SecretSetting::SecretsManager(_))
        }
        _ => false,
    };
    let secrets = if needs_secrets_manager {
        Some(crypto::secrets_manager().await)
    } else {
        None
    };
    git_auth_with(auth, secrets.as_ref())
}

/// [`git_auth`] reading secrets with `secrets` (a test's moto client); an auth that names a
/// secret without `secrets` is an error. Call it inside a Tokio runtime.
pub fn git_auth_with(auth: &GitAuth, secrets: Option<&SecretsManager>) -> Result<git::Auth> {
    let source = |setting: &SecretSetting| -> Result<git::SecretSource> {
        match setting {
            SecretSetting::Value(value) => Ok(git::SecretSource::Value(value.clone())),
            SecretSetting::File(path) => Ok(git::SecretSource::File(path.clone())),
            SecretSetting::SecretsManager(id) => secrets
                .and_then(|secrets| git::SecretSource::secrets_manager(id, secrets.clone()))
                .ok_or_else(|| {
                    Error::Internal(format!(
                        "secret `{id}` cannot be read: no Secrets Manager client in this context"
                    ))
                }),
        }
    };
    match auth {
        GitAuth::None => Ok(git::Auth::None),
        GitAuth::Token {
            token: Some(token), ..
        } => Ok(git::Auth::Token(token.clone())),
        GitAuth::Token {
            token: None,
            token_secret: Some(secret_id),
        } => Ok(git::Auth::TokenFrom(source(
            &SecretSetting::SecretsManager(secret_id.clone()),
        )?)),
        GitAuth::Token {
            token: None,
            token_secret: None,
        } => Ok(git::Auth::None),
        GitAuth::Ssh {
            key,
            known_hosts,
            program,
        } => Ok(git::Auth::Ssh(git::SshAuth {
            key: key.as_ref().map(source).transpose()?,
            known_hosts: known_hosts.clone(),
            program: program.clone(),
        })),
        GitAuth::GitHubApp {
            app_id,
            installation_id,
            private_key,
            api_url,
        } => Ok(git::Auth::GitHubApp(std::sync::Arc::new(
            git::GitHubApp::new(
                *app_id,
                *installation_id,
                api_url.clone(),
                source(private_key)?,
                git::NetworkOptions::default().connect_timeout * 2,
            ),
        ))),
    }
}
