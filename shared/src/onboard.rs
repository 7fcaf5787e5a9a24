//! `ritmo gitops init`: the bootstrap file a new user starts from, written once (a second run
//! with the same answers changes nothing), and the remote check that proves the repository
//! can be read with the authentication it names. The CLI gathers the answers and renders.
//!
//! The file never holds a token: a token given on the command line, on stdin or in
//! `RITMO_GITOPS_TOKEN` is written as `${RITMO_GITOPS_TOKEN}` (interpolated when the file is
//! read), and a Secrets Manager secret as its ARN.

use std::path::Path;
use std::time::Duration;

use crate::config::{DEFAULT_TARGET, Settings};
use crate::{Error, Result};

/// The variable a token given to `init` is read from when the file is loaded.
pub const TOKEN_VARIABLE: &str = "RITMO_GITOPS_TOKEN";

/// How long the remote check may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(20);

/// What `ritmo gitops init` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitAnswers {
    pub repo_url: String,
    pub branch: String,
    pub path: String,
    /// `authentication:` keys and values, in order (`type`, `token`, `token_secret`, …);
    /// values are references (`${VAR}`, ARNs, file paths), never secrets.
    pub authentication: Vec<(String, String)>,
}

/// What became of the bootstrap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    Created,
    /// The file already says exactly this.
    Unchanged,
    /// The file said something else and `--force` replaced it.
    Replaced,
}

/// The bootstrap file for `answers`: the seed's layout, one default target.
pub fn bootstrap_text(answers: &InitAnswers) -> String {
    // Double-quoted JSON strings are YAML scalars that need no further escaping rules.
    let quote = |text: &str| serde_json::Value::String(text.to_owned()).to_string();
    let mut text = String::from(
        "# Written by `ritmo gitops init`. Secrets are never stored here: tokens come from\n\
         # ${RITMO_GITOPS_TOKEN} (set it in the environment) or a Secrets Manager secret.\n\
         gitops:\n  enabled: true\n  repository:\n",
    );
    text.push_str(&format!("    url: {}\n", quote(&answers.repo_url)));
    text.push_str(&format!("    branch: {}\n", quote(&answers.branch)));
    text.push_str(&format!("    path: {}\n", quote(&answers.path)));
    if !answers.authentication.is_empty() {
        text.push_str("  authentication:\n");
        for (key, value) in &answers.authentication {
            // A `${VAR}` is replaced in the text before it is parsed: single quotes leave a
            // token's backslashes and double quotes alone (only `'` would need doubling).
            let value = if value.starts_with("${") {
                format!("'{value}'")
            } else {
                quote(value)
            };
            text.push_str(&format!("    {key}: {value}\n"));
        }
    }
    text.push_str("  sync:\n    interval: 60  # seconds\n    auto_apply: true\n    prune: true\n");
    text
}

/// Writes `text` to `path` unless it already holds it; a file saying something else is
/// replaced only when `force` is set, else refused (naming the file and `--force`).
pub fn write_bootstrap(path: &Path, text: &str, force: bool) -> Result<FileChange> {
    let existing = match std::fs::read_to_string(path) {
        Ok(existing) => Some(existing),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(Error::InvalidRequest(format!(
                "cannot read `{}`: {error}",
                path.display()
            )));
        }
    };
    let change = match existing {
        Some(existing) if existing == text => return Ok(FileChange::Unchanged),
        Some(_) if !force => {
            return Err(Error::InvalidRequest(format!(
                "`{}` already exists and says something else: edit it, or rerun with --force to \
                 replace it",
                path.display()
            )));
        }
        Some(_) => FileChange::Replaced,
        None => FileChange::Created,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|error| {
            Error::InvalidRequest(format!(
                "cannot create `{}`: {error} (choose another file with --config)",
                parent.display()
            ))
        })?;
    }
    std::fs::write(path, text).map_err(|error| {
        Error::InvalidRequest(format!(
            "cannot write `{}`: {error} (choose another file with --config)",
            path.display()
        ))
    })?;
    Ok(change)
}

/// The commit at the head of the default target's branch, asked of the remote with the
/// target's authentication (no objects fetched): proof the repository can be read.
pub async fn remote_head(settings: &Settings) -> Result<String> {
    let target = settings.target(DEFAULT_TARGET).ok_or_else(|| {
        Error::InvalidRequest("the bootstrap file describes no default target".into())
    })?;
    let source = crate::source::spec::source_spec(settings, target, false).await?;
    if let Some(path) = source.location.local_path()
        && !path.is_dir()
    {
        return Err(Error::InvalidRequest(format!(
            "repository `{}` does not exist: check --repo",
            path.display()
        )));
    }
    if source.worktree {
        // A plain directory has no branch to ask about; reading it is the check.
        return Ok(String::new());
    }
    crate::source::spec::remote_head(&source, HEAD_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> InitAnswers {
        InitAnswers {
            repo_url: "https://github.com/acme/ritmo-config.git".into(),
            branch: "main".into(),
            path: "/".into(),
            authentication: vec![
                ("type".into(), "token".into()),
                ("token".into(), format!("${{{TOKEN_VARIABLE}}}")),
            ],
        }
    }

    #[test]
    fn the_written_file_reads_back_as_the_answers_with_the_token_from_the_variable() {
        let text = bootstrap_text(&answers());
        let env = |name: &str| (name == TOKEN_VARIABLE).then(|| "ghp_se\\cret\"quote".to_owned());

        let settings = Settings::from_text("b.yaml", &text, &env).unwrap();

        assert!(!text.contains("ghp_"), "{text}");
        let target = settings.target(DEFAULT_TARGET).unwrap();
        assert_eq!(target.repo_url, "https://github.com/acme/ritmo-config.git");
        assert_eq!(target.branch, "main");
        assert!(
            matches!(target.auth, crate::config::GitAuth::Token { .. }),
            "{:?}",
            target.auth
        );
    }

    #[test]
    fn a_second_write_of_the_same_text_changes_nothing_and_another_text_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/gitops-bootstrap.yaml");
        let text = bootstrap_text(&answers());

        let first = write_bootstrap(&path, &text, false).unwrap();
        let second = write_bootstrap(&path, &text, false).unwrap();
        let other = write_bootstrap(&path, "gitops: {}\n", false);
        let forced = write_bootstrap(&path, "gitops: {}\n", true).unwrap();

        assert_eq!(first, FileChange::Created);
        assert_eq!(second, FileChange::Unchanged);
        assert!(other.unwrap_err().to_string().contains("--force"));
        assert_eq!(forced, FileChange::Replaced);
    }
}
