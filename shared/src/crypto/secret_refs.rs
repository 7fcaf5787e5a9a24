//! secret_refs: plan-time checks of credentials' `secret_ref`s.
//!
//! A `secret_ref` with provider `aws_secrets_manager` is checked for existence with
//! `DescribeSecret` (never `GetSecretValue`: planning must not read the secret), in the
//! reference's `region` (or the region of an ARN key, or the default one). A secret that does
//! not exist is an error naming the credential and the secret id. `vault` and `kubernetes`
//! references are stored as they are and reported as unchecked (W103).
//!
//! When checking is off (AWS not configured, see [`Settings::check_secret_refs`]) or AWS cannot
//! answer — unreachable, no credentials, throttled or *access denied* — the reference is
//! reported as unchecked (W103) and the plan goes on: the plan must still work offline, and
//! the planner's least-privilege role may rightly be unable to describe a secret that only
//! Ritmo's workers read, so a denial proves nothing about the reference.
//!
//! It does not own the Secrets Manager client (`crypto`) or where references are found in a
//! document (`manifest`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use futures_util::StreamExt as _;

use crate::config::Settings;
use crate::crypto::{CryptoError, SecretsManager};
use crate::diagnostic::{Code, Diagnostic};
use crate::manifest::SecretRefField;

/// The provider whose references can be checked.
pub const AWS_SECRETS_MANAGER: &str = "aws_secrets_manager";

/// How many `DescribeSecret` calls run at once.
const CONCURRENCY: usize = 8;

/// Checks `secret_ref`s against Secrets Manager, or explains why it does not.
pub struct SecretRefChecker {
    mode: Mode,
}

enum Mode {
    /// Not checked; the reason ends up in the W103 message.
    Off(String),
    /// One client per region, made from the default one on first use.
    Aws {
        default: SecretsManager,
        regions: Mutex<HashMap<String, SecretsManager>>,
    },
}

impl fmt::Debug for SecretRefChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mode {
            Mode::Off(reason) => f
                .debug_tuple("SecretRefChecker::Off")
                .field(reason)
                .finish(),
            Mode::Aws { .. } => f.write_str("SecretRefChecker::Aws"),
        }
    }
}

/// What AWS said about one secret id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existence {
    Exists,
    Missing,
    /// AWS could not answer (network, credentials, denied); the reason is secret-free.
    Unknown(String),
}

impl SecretRefChecker {
    /// A checker that checks nothing and says why in each W103.
    pub fn off(reason: impl Into<String>) -> SecretRefChecker {
        SecretRefChecker {
            mode: Mode::Off(reason.into()),
        }
    }

    /// A checker asking Secrets Manager through `secrets` (and clients derived from it for
    /// references in other regions).
    pub fn aws(secrets: SecretsManager) -> SecretRefChecker {
        SecretRefChecker {
            mode: Mode::Aws {
                default: secrets,
                regions: Mutex::default(),
            },
        }
    }

    /// The checker the settings ask for: Secrets Manager from the process's AWS configuration
    /// when [`Settings::check_secret_refs`] is on, else one that reports every reference as
    /// unchecked.
    pub async fn from_settings(settings: &Settings) -> SecretRefChecker {
        if !settings.check_secret_refs {
            return SecretRefChecker::off(
                "AWS is not configured here (set AWS_REGION, or RITMO_CHECK_SECRET_REFS=true)",
            );
        }
        let client = aws_sdk_secretsmanager::Client::new(&crate::aws::config().await);
        SecretRefChecker::aws(SecretsManager::new(client))
    }

    /// Whether references are checked against AWS.
    pub fn is_checking(&self) -> bool {
        matches!(self.mode, Mode::Aws { .. })
    }

    /// One diagnostic per reference that is missing (error) or could not be checked (W103),
    /// in the order given. Each secret id is described once per region, however many
    /// credentials name it.
    pub async fn check(&self, refs: &[SecretRefField]) -> Vec<Diagnostic> {
        let mut answers: HashMap<(Option<String>, String), Existence> = HashMap::new();
        if let Mode::Aws { .. } = &self.mode {
            let mut wanted: Vec<(Option<String>, String)> = refs
                .iter()
                .filter(|r| r.provider == AWS_SECRETS_MANAGER)
                .map(|r| (region_of(r), r.key.clone()))
                .collect();
            wanted.sort();
            wanted.dedup();
            let results: Vec<_> = futures_util::stream::iter(wanted)
                .map(|(region, key)| async move {
                    let existence = self.existence(region.as_deref(), &key).await;
                    ((region, key), existence)
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            answers.extend(results);
        }
        refs.iter()
            .filter_map(|r| {
                let existence = answers.get(&(region_of(r), r.key.clone()));
                diagnose(r, &self.mode, existence)
            })
            .collect()
    }

    async fn existence(&self, region: Option<&str>, key: &str) -> Existence {
        let Mode::Aws { default, regions } = &self.mode else {
            return Existence::Unknown("checking is off".into());
        };
        let client = match region {
            Some(region)
                if default.client().config().region().map(|r| r.as_ref()) != Some(region) =>
            {
                let mut regions = regions.lock().unwrap_or_else(PoisonError::into_inner);
                regions
                    .entry(region.to_owned())
                    .or_insert_with(|| {
                        let config = default
                            .client()
                            .config()
                            .to_builder()
                            .region(aws_sdk_secretsmanager::config::Region::new(
                                region.to_owned(),
                            ))
                            .build();
                        SecretsManager::new(aws_sdk_secretsmanager::Client::from_conf(config))
                    })
                    .clone()
            }
            _ => default.clone(),
        };
        if client.client().config().region().is_none() {
            return Existence::Unknown(
                "no AWS region: set `region` on the reference or AWS_REGION".into(),
            );
        }
        match client.exists(key).await {
            Ok(true) => Existence::Exists,
            Ok(false) | Err(CryptoError::SecretNotFound { .. }) => Existence::Missing,
            Err(error) => Existence::Unknown(error.to_string()),
        }
    }
}

/// The region a reference lives in: its `region`, else the region field of an ARN key.
fn region_of(reference: &SecretRefField) -> Option<String> {
    reference.region.clone().or_else(|| {
        let mut parts = reference.key.splitn(6, ':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
                Some(region.to_owned())
            }
            _ => None,
        }
    })
}

/// The diagnostic for one reference, given what AWS said (when it was asked).
fn diagnose(
    reference: &SecretRefField,
    mode: &Mode,
    existence: Option<&Existence>,
) -> Option<Diagnostic> {
    let credential = &reference.credential;
    let key = &reference.key;
    if reference.provider != AWS_SECRETS_MANAGER {
        return Some(Diagnostic::new(
            Code::W103,
            &reference.at,
            format!(
                "`secret_ref` of credential `{credential}` (provider `{}`) is stored as a reference, not checked",
                reference.provider
            ),
        ));
    }
    let unchecked = |reason: &str| {
        Some(Diagnostic::new(
            Code::W103,
            &reference.at,
            format!(
                "could not check `secret_ref` of credential `{credential}` (secret `{key}`): {reason}"
            ),
        ))
    };
    match (mode, existence) {
        (Mode::Off(reason), _) => unchecked(reason),
        (Mode::Aws { .. }, Some(Existence::Exists)) => None,
        (Mode::Aws { .. }, Some(Existence::Missing)) => Some(Diagnostic::new(
            Code::E404,
            &reference.at,
            format!(
                "`secret_ref` of credential `{credential}` names secret `{key}`{}, which does not exist in AWS Secrets Manager (or is scheduled for deletion)",
                region_of(reference)
                    .map(|r| format!(" in `{r}`"))
                    .unwrap_or_default()
            ),
        )),
        (Mode::Aws { .. }, Some(Existence::Unknown(reason))) => unchecked(reason),
        (Mode::Aws { .. }, None) => unchecked("not asked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Severity;
    use crate::model::SourceLocation;

    fn reference(provider: &str, key: &str, region: Option<&str>) -> SecretRefField {
        SecretRefField {
            credential: "github-token".into(),
            provider: provider.into(),
            key: key.into(),
            region: region.map(str::to_owned),
            at: SourceLocation::new("credentials/github.yaml", 7, 3),
        }
    }

    fn aws_mode() -> Mode {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
            .build();
        Mode::Aws {
            default: SecretsManager::new(aws_sdk_secretsmanager::Client::from_conf(config)),
            regions: Mutex::default(),
        }
    }

    #[test]
    fn a_missing_secret_is_an_error_naming_the_credential_and_the_secret() {
        let missing = reference(
            AWS_SECRETS_MANAGER,
            "prod/ritmo/github-token",
            Some("eu-west-1"),
        );

        let diagnostic = diagnose(&missing, &aws_mode(), Some(&Existence::Missing)).unwrap();

        assert_eq!(diagnostic.severity, Severity::Error);
        assert_eq!(
            diagnostic.to_string(),
            "credentials/github.yaml:7:3: error[E404]: `secret_ref` of credential `github-token` \
             names secret `prod/ritmo/github-token` in `eu-west-1`, which does not exist in AWS \
             Secrets Manager (or is scheduled for deletion)"
        );
    }

    #[test]
    fn an_existing_secret_gives_no_diagnostic() {
        let present = reference(AWS_SECRETS_MANAGER, "prod/ritmo/github-token", None);

        let diagnostic = diagnose(&present, &aws_mode(), Some(&Existence::Exists));

        assert_eq!(diagnostic, None);
    }

    #[test]
    fn vault_and_kubernetes_references_are_reported_as_unchecked() {
        let vault = reference("vault", "secret/data/ritmo", None);
        let kubernetes = reference("kubernetes", "token", None);

        let diagnostics: Vec<_> = [vault, kubernetes]
            .iter()
            .filter_map(|r| diagnose(r, &aws_mode(), None))
            .collect();

        assert_eq!(diagnostics.len(), 2);
        assert!(diagnostics.iter().all(|d| d.code == Code::W103));
        assert!(diagnostics[0].message.contains(
            "credential `github-token` (provider `vault`) is stored as a reference, not checked"
        ));
    }

    #[test]
    fn aws_unreachable_or_denied_or_off_is_a_warning_not_an_error() {
        let present = reference(AWS_SECRETS_MANAGER, "prod/x", None);
        let off = Mode::Off("AWS is not configured here".into());
        let denied = Existence::Unknown(
            "secrets manager `DescribeSecret` of secret `prod/x` failed: AccessDeniedException: no"
                .into(),
        );

        let when_off = diagnose(&present, &off, None).unwrap();
        let when_denied = diagnose(&present, &aws_mode(), Some(&denied)).unwrap();

        assert_eq!(when_off.code, Code::W103);
        assert_eq!(
            when_off.message,
            "could not check `secret_ref` of credential `github-token` (secret `prod/x`): AWS is not configured here"
        );
        assert_eq!(when_denied.code, Code::W103);
        assert!(when_denied.message.contains("AccessDeniedException"));
    }

    #[test]
    fn the_region_comes_from_the_reference_then_from_an_arn_key() {
        let explicit = reference(AWS_SECRETS_MANAGER, "name", Some("eu-west-1"));
        let arn = reference(
            AWS_SECRETS_MANAGER,
            "arn:aws:secretsmanager:ap-south-1:123456789012:secret:prod/db-AbCdEf",
            None,
        );
        let plain = reference(AWS_SECRETS_MANAGER, "prod/db", None);

        let regions = [region_of(&explicit), region_of(&arn), region_of(&plain)];

        assert_eq!(
            regions,
            [Some("eu-west-1".into()), Some("ap-south-1".into()), None]
        );
    }

    #[tokio::test]
    async fn an_off_checker_asks_nothing_and_warns_once_per_reference() {
        let checker = SecretRefChecker::off("offline");
        let refs = [
            reference(AWS_SECRETS_MANAGER, "a", None),
            reference(AWS_SECRETS_MANAGER, "a", None),
            reference("vault", "b", None),
        ];

        let diagnostics = checker.check(&refs).await;

        assert!(!checker.is_checking());
        assert_eq!(diagnostics.len(), 3);
        assert!(diagnostics.iter().all(|d| d.code == Code::W103));
    }
}
