//! Bootstrap configuration: the seed's `gitops-bootstrap.yaml` plus `RITMO_GITOPS_*` variables
//! → `Settings`. The one reader of the service's settings from the environment (logging,
//! metrics and the ssh client read their own runtime variables); it takes the environment as
//! a function so tests never touch the process's own.
//!
//! Precedence: a variable overrides the file, and `${VAR}` in the file is replaced by the
//! variable's value before parsing. The file's single `repository:` block is the target named
//! `default`; `targets:` declares more.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use secrecy::SecretString;
use serde::Deserialize;

pub use crate::git::KnownHosts;
use crate::plan::PlanPolicy;
use crate::queue::consume::RetryPolicy;

/// Where the bootstrap file is looked for when no path is given.
pub const DEFAULT_BOOTSTRAP_PATH: &str = "/etc/ritmo/gitops-bootstrap.yaml";

/// Name of the target described by the top-level `repository:` block and `RITMO_GITOPS_*`.
pub const DEFAULT_TARGET: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read bootstrap file `{path}`")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrap file `{path}`: {message}")]
    Parse { path: String, message: String },
    #[error(
        "bootstrap file `{path}` uses `${{{variable}}}`, which is not set: export it or remove the reference"
    )]
    MissingVariable { path: String, variable: String },
    #[error("`{variable}` must be {expected}, found `{value}`")]
    InvalidVariable {
        variable: String,
        expected: &'static str,
        value: String,
    },
    #[error("target `{0}` is declared twice: give each target its own name")]
    DuplicateTarget(String),
    #[error(
        "target `{target}` has no repository url: set `repository.url` or RITMO_GITOPS_REPO_URL"
    )]
    MissingRepository { target: String },
    #[error("authentication of target `{target}`: {message}")]
    InvalidAuth { target: String, message: String },
    #[error("pull-request previews of target `{target}`: {message}")]
    InvalidPreview { target: String, message: String },
    #[error("sync window {index} of target `{target}`: {source}")]
    InvalidWindow {
        target: String,
        /// 1-based, in the order of the file (shared windows first).
        index: usize,
        source: crate::windows::WindowError,
    },
    #[error("notifications of target `{target}`, subscription {index}: {message}")]
    InvalidSubscription {
        target: String,
        /// 1-based, in the order of the file (shared subscriptions first).
        index: usize,
        message: String,
    },
}

/// How a target authenticates to its Git host. Secret values are held redacted; a `*_secret`
/// field names a Secrets Manager secret to read them from instead.
#[derive(Debug, Clone, Default)]
pub enum GitAuth {
    #[default]
    None,
    Token {
        token: Option<SecretString>,
        token_secret: Option<String>,
    },
    /// An ssh key (`None`: whatever the ssh client finds itself, for local use). Host keys are
    /// checked against `known_hosts` when given, else against the ssh client's own files.
    Ssh {
        key: Option<SecretSetting>,
        known_hosts: Option<KnownHosts>,
        /// The ssh client to run (`ssh` on `PATH` when unset).
        program: Option<PathBuf>,
    },
    /// A GitHub App installation: a JWT signed with the app's private key buys an
    /// installation token, used like a token.
    GitHubApp {
        app_id: u64,
        installation_id: u64,
        private_key: SecretSetting,
        /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
        api_url: String,
    },
}

/// Where a secret the service authenticates with comes from. `Debug` never shows a value.
#[derive(Debug, Clone)]
pub enum SecretSetting {
    /// The value itself (an environment variable, for local use).
    Value(SecretString),
    /// A file holding the value, read each time it is needed (a mounted secret may rotate).
    File(PathBuf),
    /// A Secrets Manager secret (name or ARN), read through the process-wide cache.
    SecretsManager(String),
}

/// GitHub's REST API, used when `github_app.api_url` is not set.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// One repository (and path and branch) kept in sync with the database.
#[derive(Debug, Clone)]
pub struct TargetSettings {
    pub name: String,
    pub repo_url: String,
    pub branch: String,
    /// Directory inside the repository holding `jobs/`, `credentials/`, …; `/` for the root.
    pub path: String,
    pub interval_secs: u64,
    pub auto_apply: bool,
    pub dry_run: bool,
    pub self_heal: bool,
    /// Suspension, sync windows and notification subscriptions (issue 24).
    pub controls: TargetControls,
    pub policy: PlanPolicy,
    pub auth: GitAuth,
}

/// `preview:` of a target (or of every target, under `gitops:`), `RITMO_GITOPS_PREVIEW_*`.
#[derive(Debug, Clone, Default)]
pub struct PreviewSettings {
    /// Pull requests into the target's branch are planned (never applied) and the result
    /// posted to them. Off unless set: a preview posts to the forge, which needs a credential.
    pub enabled: bool,
    /// What the result is posted with; never `None` when `enabled` (the settings refuse it).
    pub credential: Option<PreviewCredential>,
    /// The forge's API root when it cannot be told from the repository URL (GitHub
    /// Enterprise Server `https://HOST/api/v3`, a Gitea/GitLab behind another name).
    pub api_url: Option<String>,
}

/// What a preview is posted to the forge with.
#[derive(Debug, Clone)]
pub enum PreviewCredential {
    /// A token with the forge's status and comment scopes (GitHub: `statuses: write` and
    /// `pull_requests: write`; GitLab: `api`; Gitea: `write:repository`, `write:issue`).
    Token(SecretSetting),
    /// The target's own GitHub App (`authentication.github_app`), which may also write check
    /// runs (`checks: write`) with an annotation per error.
    GitHubApp,
}

/// What an operator sets per target besides where it reads from and how it syncs.
#[derive(Debug, Clone, Default)]
pub struct TargetControls {
    /// `sync.suspended: true` (or `RITMO_GITOPS_SUSPENDED=true`): neither polled, planned nor
    /// healed, whatever the database says; `ritmo gitops suspend` sets the database's flag.
    pub suspended: bool,
    /// `notifications:` of the target, after `gitops.notifications.subscriptions` (shared by
    /// every target).
    pub notifications: Vec<Subscription>,
    /// `sync_windows:` of the target, after `gitops.sync_windows` (shared by every target).
    pub windows: Vec<crate::windows::SyncWindow>,
}

/// An event people can subscribe to, as named in the bootstrap file and in each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    SyncSucceeded,
    SyncFailed,
    DriftDetected,
    PendingApproval,
    WaitingForWindow,
    Suspended,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SyncSucceeded => "sync_succeeded",
            EventKind::SyncFailed => "sync_failed",
            EventKind::DriftDetected => "drift_detected",
            EventKind::PendingApproval => "pending_approval",
            EventKind::WaitingForWindow => "waiting_for_window",
            EventKind::Suspended => "suspended",
        }
    }
}

/// Some events of one target, sent to one destination.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub events: Vec<EventKind>,
    pub destination: Destination,
}

/// Where a subscription's messages go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// An SNS topic (ARN).
    Sns { topic_arn: String },
    /// A Slack-compatible incoming webhook whose URL is the named `Credential`'s
    /// `encrypted_value`.
    Slack { credential: String },
    /// Any HTTPS endpoint: the message as JSON, signed with HMAC-SHA256 of the body under
    /// `signing_secret` (header `x-ritmo-signature: sha256=<hex>`). Plain `http://` is accepted
    /// for loopback hosts only (a receiver on the same machine, as in tests).
    Webhook {
        url: String,
        signing_secret: SecretSetting,
    },
}

impl TargetSettings {
    /// A target with the defaults a bootstrap file's `repository:` block gets: HEAD of no
    /// repository yet, the root path, polled every minute, applied automatically, pruning.
    pub fn new(name: impl Into<String>) -> TargetSettings {
        TargetSettings {
            name: name.into(),
            repo_url: String::new(),
            branch: String::new(),
            path: "/".into(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            controls: TargetControls::default(),
            policy: PlanPolicy::default(),
            auth: GitAuth::None,
        }
    }

    /// This target reading `repo_url` at `branch`.
    pub fn with_repository(
        mut self,
        repo_url: impl Into<String>,
        branch: impl Into<String>,
    ) -> Self {
        self.repo_url = repo_url.into();
        self.branch = branch.into();
        self
    }
}

/// libpq's `sslmode`, the values this client supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = UnknownSslMode;

    fn from_str(value: &str) -> Result<SslMode, UnknownSslMode> {
        match value.trim().to_ascii_lowercase().as_str() {
            "disable" => Ok(SslMode::Disable),
            // libpq's `allow` tries plain first: closest here is `prefer`.
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" | "verify_ca" => Ok(SslMode::VerifyCa),
            "verify-full" | "verify_full" => Ok(SslMode::VerifyFull),
            _ => Err(UnknownSslMode(value.to_owned())),
        }
    }
}

/// An `sslmode` this client does not know.
#[derive(Debug, thiserror::Error)]
#[error("invalid sslmode `{0}`: expected disable, prefer, require, verify-ca or verify-full")]
pub struct UnknownSslMode(pub String);

/// Everything the service and the CLI need to start.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub enabled: bool,
    pub targets: Vec<TargetSettings>,
    pub builtin_plugins: BTreeSet<String>,
    pub database_url: Option<SecretString>,
    pub webhook_secret: Option<SecretString>,
    pub webhook_secret_id: Option<String>,
    /// Path the webhook is served on (`/webhooks/gitops`).
    pub webhook_path: String,
    /// `webhook.enabled: false` (or `RITMO_GITOPS_WEBHOOK_ENABLED=false`): every delivery is
    /// refused as disabled, whatever secret is set. Kept as "disabled" so that a
    /// `Settings::default()` has the webhook on, as an unset `enabled` does.
    pub webhook_disabled: bool,
    pub master_key: Option<SecretString>,
    pub master_key_secret_id: Option<String>,
    pub kms_key_id: Option<String>,
    /// The SQS FIFO queues between the functions (`RITMO_GITOPS_PLAN_QUEUE_URL`,
    /// `RITMO_GITOPS_APPLY_QUEUE_URL`); unset on one machine, where queues are in-process.
    pub plan_queue_url: Option<String>,
    pub apply_queue_url: Option<String>,
    /// Where remote repositories are cached (`/tmp` survives warm Lambda invocations).
    pub cache_dir: PathBuf,

    // --- secrets: database credentials, TLS and secret_ref checks (see `store::connect`,
    // `secret_refs`) ---
    /// `DATABASE_SECRET_ARN`: the Secrets Manager secret with the database credentials.
    pub database_secret_id: Option<String>,
    /// `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_NAME`, `DATABASE_USER`: override the URL
    /// and the secret.
    pub database_host: Option<String>,
    pub database_port: Option<u16>,
    pub database_name: Option<String>,
    pub database_user: Option<String>,
    /// `DATABASE_CA_FILE`: PEM bundle of the CAs to trust (RDS CAs are not public roots).
    pub database_ca_file: Option<PathBuf>,
    /// `DATABASE_SSLMODE`: beats the URL's `sslmode`.
    pub database_sslmode: Option<SslMode>,
    /// Running in AWS Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set).
    pub in_lambda: bool,
    /// Check `aws_secrets_manager` secret_refs at plan time: `RITMO_CHECK_SECRET_REFS`, else
    /// on when AWS looks configured (`AWS_REGION`, `AWS_DEFAULT_REGION` or `AWS_ENDPOINT_URL`).
    pub check_secret_refs: bool,

    // --- operations: approval by branch, history retention, notifications ---
    /// Per target, the branch patterns (`*` matches anything, `/` included) whose plans wait
    /// for approval even when `auto_apply` is on: `sync.require_approval_for_branches`.
    pub approval_branches: BTreeMap<String, Vec<String>>,
    /// Per target, its pull-request previews (`preview:`, `RITMO_GITOPS_PREVIEW_*`); a target
    /// missing here previews nothing. See [`Settings::preview`].
    pub previews: BTreeMap<String, PreviewSettings>,
    /// Sync runs kept per target (`history_limit`, `RITMO_GITOPS_HISTORY_LIMIT`); `None` keeps
    /// [`DEFAULT_HISTORY_LIMIT`].
    pub history_limit: Option<u32>,
    /// Where sync failures, drift and plans waiting for approval are announced.
    pub notifications: NotificationSettings,
    /// Remote head checks a poller tick runs at once (`poll_concurrency`,
    /// `RITMO_GITOPS_POLL_CONCURRENCY`); `None` keeps [`DEFAULT_POLL_CONCURRENCY`].
    pub poll_concurrency: Option<u32>,
    /// How failed queue messages are retried (`retry:`, `RITMO_GITOPS_RETRY_*`); the default
    /// is 5 s doubling to 3 min, then the dead-letter queue after 5 receives.
    pub retry: RetryPolicy,

    // --- the local server's API (`ritmo serve`; on AWS, API Gateway authorises with IAM) ---
    /// The bearer token every state change must carry: `RITMO_API_TOKEN` (the value) or
    /// `RITMO_API_TOKEN_SECRET_ARN` (a Secrets Manager secret holding it). `None`: state
    /// changes are refused unless `ritmo serve --insecure-local` on a loopback address.
    pub api_token: Option<SecretSetting>,
    /// Who a request authenticated by the token is recorded as (`approved_by`, a run's
    /// actor) when it sends no `X-Ritmo-Actor`: `RITMO_API_ACTOR`.
    pub api_actor: Option<String>,
    /// Browser origins (`https://ops.example.com`) allowed to call the API:
    /// `RITMO_API_ALLOWED_ORIGINS`, comma-separated. Any other `Origin` is refused.
    pub api_allowed_origins: Vec<String>,
    /// Host names the API answers under besides the listen address and `localhost` (a name
    /// in DNS, a reverse proxy's): `RITMO_API_ALLOWED_HOSTS`, comma-separated.
    pub api_allowed_hosts: Vec<String>,
}

/// Sync runs kept per target when `history_limit` is not set.
pub const DEFAULT_HISTORY_LIMIT: u32 = 100;

/// Head checks at once when `poll_concurrency` is not set: 1,000 targets at GitHub's 100–250 ms
/// per check take 1.6–3.9 s of a one-minute tick (docs/scaling.md), while each check holds a
/// mostly idle blocking thread, so a small Lambda is not crowded.
pub const DEFAULT_POLL_CONCURRENCY: u32 = 64;

/// `notifications:` in the bootstrap file, `RITMO_GITOPS_SNS_TOPIC_ARN` and
/// `RITMO_GITOPS_SLACK_CREDENTIAL` in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationSettings {
    /// An SNS topic to publish to.
    pub sns_topic_arn: Option<String>,
    /// The name of a `Credential` resource whose `encrypted_value` is a Slack-compatible
    /// incoming-webhook URL (the URL is a secret: it is never logged).
    pub slack_webhook_credential: Option<String>,
    /// The API's public base URL (`notifications.api_url`, `RITMO_GITOPS_API_URL`): each
    /// message links to its plan under it.
    pub api_url: Option<String>,
}

impl NotificationSettings {
    /// Whether any channel is configured.
    pub fn is_enabled(&self) -> bool {
        self.sns_topic_arn.is_some() || self.slack_webhook_credential.is_some()
    }
}

impl Settings {
    /// The preview settings of `target` when it previews pull requests.
    pub fn preview(&self, target: &str) -> Option<&PreviewSettings> {
        self.previews.get(target).filter(|preview| preview.enabled)
    }

    /// Reads the bootstrap file (when `file` is given, or the default path exists) and applies
    /// the environment on top.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let default_path = Path::new(DEFAULT_BOOTSTRAP_PATH);
        let file = file.or_else(|| default_path.exists().then_some(default_path));
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                Settings::from_text(&path.display().to_string(), &text, env)
            }
            None => from_bootstrap(Bootstrap::default(), env),
        }
    }

    /// [`Settings::load`] of a bootstrap file already read: `text` is its content and `path`
    /// names it in errors. Public so the parser can be fuzzed without a file or the process's
    /// environment.
    pub fn from_text(
        path: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        from_bootstrap(parse_bootstrap(path, text, env)?, env)
    }

    /// Settings from the process environment and the bootstrap file it names
    /// (`RITMO_GITOPS_BOOTSTRAP`), as the Lambda functions and `ritmo serve` start.
    pub fn from_process_env(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let named = std::env::var_os("RITMO_GITOPS_BOOTSTRAP")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        Settings::load(file.or(named.as_deref()), &|name| std::env::var(name).ok())
    }

    pub fn target(&self, name: &str) -> Option<&TargetSettings> {
        self.targets.iter().find(|target| target.name == name)
    }

    /// Why plans of `target` must wait for approval because of its branch, or `None` when
    /// its branch matches none of its `require_approval_for_branches` patterns.
    pub fn branch_approval(&self, target: &TargetSettings) -> Option<String> {
        let pattern = self
            .approval_branches
            .get(&target.name)?
            .iter()
            .find(|pattern| branch_matches(pattern, &target.branch))?;
        Some(format!(
            "branch `{}` requires approval (sync.require_approval_for_branches: `{pattern}`)",
            target.branch
        ))
    }

    /// Sync runs to keep per target.
    pub fn history_limit(&self) -> u32 {
        self.history_limit.unwrap_or(DEFAULT_HISTORY_LIMIT)
    }

    /// Remote head checks a poller tick runs at once (at least one).
    pub fn poll_concurrency(&self) -> usize {
        usize::try_from(self.poll_concurrency.unwrap_or(DEFAULT_POLL_CONCURRENCY))
            .unwrap_or(usize::MAX)
            .max(1)
    }
}

/// Whether `branch` matches `pattern`, where `*` stands for any run of characters (`/`
/// included, so `release/*` matches `release/2024/q1`).
pub fn branch_matches(pattern: &str, branch: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = branch.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bootstrap {
    #[serde(default)]
    gitops: GitopsSection,
    #[serde(default)]
    database: DatabaseSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitopsSection {
    enabled: Option<bool>,
    repository: Option<RepositorySection>,
    #[serde(default)]
    authentication: AuthSection,
    #[serde(default)]
    sync: SyncSection,
    #[serde(default)]
    webhook: WebhookSection,
    #[serde(default)]
    targets: Vec<TargetSection>,
    #[serde(default)]
    builtin_plugins: Vec<String>,
    #[serde(default)]
    encryption: EncryptionSection,
    history_limit: Option<u32>,
    poll_concurrency: Option<u32>,
    #[serde(default)]
    notifications: NotificationsSection,
    #[serde(default)]
    retry: RetrySection,
    #[serde(default)]
    preview: PreviewSection,
    /// Windows every target has.
    #[serde(default)]
    sync_windows: Vec<WindowSection>,
}

/// `preview:` under `gitops:` (every target) or a target (overriding field by field).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewSection {
    enabled: Option<bool>,
    /// Usually `${VAR}`, replaced before parsing like any value of the file.
    token: Option<String>,
    token_secret: Option<String>,
    /// Post with the target's `authentication.github_app` instead of a token.
    github_app: Option<bool>,
    api_url: Option<String>,
}

/// One entry of a `sync_windows:` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowSection {
    kind: crate::windows::WindowKind,
    schedule: String,
    duration: String,
    timezone: Option<String>,
    /// Manual syncs may run while this window closes the target (Argo CD's `manualSync`).
    #[serde(default)]
    manual_sync: bool,
}

/// `gitops.retry:` in seconds and receives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySection {
    base_delay: Option<u64>,
    max_delay: Option<u64>,
    attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationsSection {
    sns_topic_arn: Option<String>,
    slack_webhook_credential: Option<String>,
    /// The API's public base URL, for the plan link in each message.
    api_url: Option<String>,
    /// Subscriptions every target has.
    #[serde(default)]
    subscriptions: Vec<SubscriptionSection>,
}

/// One entry of a `notifications:` list: the events and exactly one destination.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionSection {
    #[serde(default)]
    events: Vec<EventKind>,
    sns_topic_arn: Option<String>,
    slack_webhook_credential: Option<String>,
    webhook: Option<WebhookDestinationSection>,
}

/// The signing secret is named, never written: an environment variable read at start-up, a
/// file, or a Secrets Manager secret.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookDestinationSection {
    url: String,
    signing_secret_env: Option<String>,
    signing_secret_file: Option<PathBuf>,
    signing_secret_secret: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositorySection {
    url: Option<String>,
    branch: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
    token_secret: Option<String>,
    ssh_key: Option<String>,
    ssh_key_path: Option<PathBuf>,
    ssh_key_secret: Option<String>,
    ssh_known_hosts: Option<String>,
    ssh_known_hosts_path: Option<PathBuf>,
    ssh_program: Option<PathBuf>,
    github_app: Option<GitHubAppSection>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct GitHubAppSection {
    app_id: Option<u64>,
    installation_id: Option<u64>,
    private_key: Option<String>,
    private_key_path: Option<PathBuf>,
    private_key_secret: Option<String>,
    api_url: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncSection {
    interval: Option<u64>,
    auto_apply: Option<bool>,
    dry_run: Option<bool>,
    prune: Option<bool>,
    allow_empty: Option<bool>,
    max_delete_percent: Option<u32>,
    self_heal: Option<bool>,
    suspended: Option<bool>,
    require_approval_for_branches: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookSection {
    enabled: Option<bool>,
    secret_token: Option<String>,
    secret_token_secret: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionSection {
    master_key: Option<String>,
    master_key_secret: Option<String>,
    kms_key_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    url: Option<String>,
    secret: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    name: Option<String>,
    user: Option<String>,
    ca_file: Option<PathBuf>,
    sslmode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetSection {
    name: String,
    repository: RepositorySection,
    authentication: Option<AuthSection>,
    sync: Option<SyncSection>,
    preview: Option<PreviewSection>,
    #[serde(default)]
    notifications: Vec<SubscriptionSection>,
    #[serde(default)]
    sync_windows: Vec<WindowSection>,
}

fn parse_bootstrap(
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Bootstrap, ConfigError> {
    let interpolated = interpolate(path, text, env)?;
    // No snippet: it quotes the lines around the error from the interpolated text, which hold
    // the values of `${RITMO_GITOPS_TOKEN}` and the like (found by fuzzing, docs/fuzzing.md).
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        crop_radius: 0,
    };
    serde_saphyr::from_str_with_options(&interpolated, options).map_err(|error| {
        ConfigError::Parse {
            path: path.to_string(),
            message: redact_interpolated(error.to_string(), text, env),
        }
    })
}

/// `message` with the value of every `${VAR}` of `text` of at least 8 bytes replaced by `***`:
/// a parser message may still quote a scalar, and an interpolated one may be a secret. Shorter
/// values are left alone: they are no credentials, and would mangle line and column numbers.
fn redact_interpolated(
    mut message: String,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    for reference in text.split("${").skip(1) {
        let Some((variable, _)) = reference.split_once('}') else {
            continue;
        };
        if let Some(value) = env(variable).filter(|value| value.len() >= 8)
            && message.contains(value.as_str())
        {
            message = message.replace(value.as_str(), "***");
        }
    }
    message
}

/// Replaces `${VAR}` by the variable's value; `$${` stays a literal `${`. Comments are
/// interpolated too, which is harmless and keeps this a plain text pass.
fn interpolate(
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let variable = &after[..end];
        // Comments in the seed's file mention variables that are legitimately unset.
        let line_start = out.rfind('\n').map_or(0, |i| i + 1);
        let in_comment = out[line_start..].trim_start().starts_with('#');
        match env(variable) {
            Some(value) => out.push_str(&value),
            None if in_comment => {}
            None => {
                return Err(ConfigError::MissingVariable {
                    path: path.to_string(),
                    variable: variable.to_string(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn from_bootstrap(
    bootstrap: Bootstrap,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let gitops = bootstrap.gitops;
    let var = |name: &str| env(name).filter(|value| !value.is_empty());

    let mut repository = gitops.repository.clone().unwrap_or_default();
    if let Some(url) = var("RITMO_GITOPS_REPO_URL") {
        repository.url = Some(url);
    }
    if let Some(branch) = var("RITMO_GITOPS_REPO_BRANCH") {
        repository.branch = Some(branch);
    }
    if let Some(path) = var("RITMO_GITOPS_REPO_PATH") {
        repository.path = Some(path);
    }

    let mut sync = gitops.sync.clone();
    overlay_sync_env(&mut sync, &var)?;
    let mut auth = gitops.authentication.clone();
    overlay_auth_env(&mut auth, &var)?;
    let mut preview = gitops.preview.clone();
    overlay_preview_env(&mut preview, &var)?;

    let mut targets = Vec::new();
    let mut approval_branches = BTreeMap::new();
    let mut previews = BTreeMap::new();
    if repository.url.is_some() {
        if let Some(patterns) = &sync.require_approval_for_branches {
            approval_branches.insert(DEFAULT_TARGET.to_string(), patterns.clone());
        }
        let mut target = target_settings(
            DEFAULT_TARGET,
            &repository,
            &auth,
            &sync,
            &SyncSection::default(),
        )?;
        let settings = preview_settings(DEFAULT_TARGET, &preview, None, &target.auth)?;
        previews.insert(DEFAULT_TARGET.to_string(), settings);
        target.controls.notifications = subscriptions(
            DEFAULT_TARGET,
            &gitops.notifications.subscriptions,
            &[],
            &var,
        )?;
        target.controls.windows = sync_windows(DEFAULT_TARGET, &gitops.sync_windows, &[])?;
        targets.push(target);
    }
    for declared in &gitops.targets {
        if targets
            .iter()
            .any(|t: &TargetSettings| t.name == declared.name)
        {
            return Err(ConfigError::DuplicateTarget(declared.name.clone()));
        }
        let target_auth = declared
            .authentication
            .clone()
            .unwrap_or_else(|| auth.clone());
        let own_sync = declared.sync.clone().unwrap_or_default();
        if let Some(patterns) = own_sync
            .require_approval_for_branches
            .as_ref()
            .or(sync.require_approval_for_branches.as_ref())
        {
            approval_branches.insert(declared.name.clone(), patterns.clone());
        }
        let mut target = target_settings(
            &declared.name,
            &declared.repository,
            &target_auth,
            &sync,
            &own_sync,
        )?;
        let settings = preview_settings(
            &declared.name,
            &preview,
            declared.preview.as_ref(),
            &target.auth,
        )?;
        previews.insert(declared.name.clone(), settings);
        target.controls.notifications = subscriptions(
            &declared.name,
            &gitops.notifications.subscriptions,
            &declared.notifications,
            &var,
        )?;
        target.controls.windows =
            sync_windows(&declared.name, &gitops.sync_windows, &declared.sync_windows)?;
        targets.push(target);
    }

    let webhook = gitops.webhook;
    let encryption = gitops.encryption;
    let database = bootstrap.database;
    let database_port = match var("DATABASE_PORT") {
        Some(value) => Some(
            value
                .trim()
                .parse()
                .map_err(|_| ConfigError::InvalidVariable {
                    variable: "DATABASE_PORT".into(),
                    expected: "a port number",
                    value: value.clone(),
                })?,
        ),
        None => database.port,
    };
    let database_sslmode = match var("DATABASE_SSLMODE").or(database.sslmode) {
        Some(value) => Some(value.parse().map_err(|_| ConfigError::InvalidVariable {
            variable: "DATABASE_SSLMODE".into(),
            expected: "disable, prefer, require, verify-ca or verify-full",
            value: value.clone(),
        })?),
        None => None,
    };
    let history_limit = match var("RITMO_GITOPS_HISTORY_LIMIT") {
        Some(value) => Some(
            value
                .trim()
                .parse()
                .map_err(|_| ConfigError::InvalidVariable {
                    variable: "RITMO_GITOPS_HISTORY_LIMIT".into(),
                    expected: "a number of sync runs",
                    value: value.clone(),
                })?,
        ),
        None => gitops.history_limit,
    };
    let poll_concurrency = match var("RITMO_GITOPS_POLL_CONCURRENCY") {
        Some(value) => Some(
            value
                .trim()
                .parse()
                .ok()
                .filter(|&checks: &u32| checks > 0)
                .ok_or_else(|| ConfigError::InvalidVariable {
                    variable: "RITMO_GITOPS_POLL_CONCURRENCY".into(),
                    expected: "a positive number of head checks",
                    value: value.clone(),
                })?,
        ),
        None => gitops.poll_concurrency,
    };
    let retry = retry_policy(&gitops.retry, &var)?;
    let notifications = NotificationSettings {
        sns_topic_arn: var("RITMO_GITOPS_SNS_TOPIC_ARN").or(gitops.notifications.sns_topic_arn),
        slack_webhook_credential: var("RITMO_GITOPS_SLACK_CREDENTIAL")
            .or(gitops.notifications.slack_webhook_credential),
        api_url: var("RITMO_GITOPS_API_URL")
            .or(gitops.notifications.api_url)
            .map(|url| url.trim_end_matches('/').to_string()),
    };
    let check_secret_refs = match var("RITMO_CHECK_SECRET_REFS") {
        Some(value) => parse_bool("RITMO_CHECK_SECRET_REFS", &value)?,
        None => ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"]
            .iter()
            .any(|name| var(name).is_some()),
    };
    Ok(Settings {
        enabled: match var("RITMO_GITOPS_ENABLED") {
            Some(value) => parse_bool("RITMO_GITOPS_ENABLED", &value)?,
            None => gitops.enabled.unwrap_or(true),
        },
        targets,
        builtin_plugins: gitops.builtin_plugins.into_iter().collect(),
        database_url: var("DATABASE_URL").or(database.url).map(SecretString::from),
        database_secret_id: var("DATABASE_SECRET_ARN").or(database.secret),
        database_host: var("DATABASE_HOST").or(database.host),
        database_port,
        database_name: var("DATABASE_NAME").or(database.name),
        database_user: var("DATABASE_USER").or(database.user),
        database_ca_file: var("DATABASE_CA_FILE")
            .map(PathBuf::from)
            .or(database.ca_file),
        database_sslmode,
        in_lambda: var("AWS_LAMBDA_FUNCTION_NAME").is_some(),
        check_secret_refs,
        approval_branches,
        previews,
        history_limit,
        poll_concurrency,
        retry,
        notifications,
        webhook_secret: var("RITMO_GITOPS_WEBHOOK_SECRET")
            .or(webhook
                .secret_token
                .filter(|_| webhook.enabled != Some(false)))
            .map(SecretString::from),
        webhook_secret_id: var("RITMO_GITOPS_WEBHOOK_SECRET_ARN").or(webhook.secret_token_secret),
        webhook_path: webhook.path.unwrap_or_else(|| "/webhooks/gitops".into()),
        webhook_disabled: !match var("RITMO_GITOPS_WEBHOOK_ENABLED") {
            Some(value) => parse_bool("RITMO_GITOPS_WEBHOOK_ENABLED", &value)?,
            None => webhook.enabled.unwrap_or(true),
        },
        api_token: match (var("RITMO_API_TOKEN"), var("RITMO_API_TOKEN_SECRET_ARN")) {
            (Some(_), Some(arn)) => {
                return Err(ConfigError::InvalidVariable {
                    variable: "RITMO_API_TOKEN_SECRET_ARN".into(),
                    expected: "unset when RITMO_API_TOKEN is set (give the API token one way)",
                    value: arn,
                });
            }
            (Some(token), None) => Some(SecretSetting::Value(SecretString::from(token))),
            (None, Some(arn)) => Some(SecretSetting::SecretsManager(arn)),
            (None, None) => None,
        },
        api_actor: var("RITMO_API_ACTOR"),
        api_allowed_origins: list_of("RITMO_API_ALLOWED_ORIGINS", &var, parse_origin)?,
        api_allowed_hosts: list_of("RITMO_API_ALLOWED_HOSTS", &var, parse_host_name)?,
        master_key: var("RITMO_MASTER_ENCRYPTION_KEY")
            .or(encryption.master_key)
            .map(SecretString::from),
        master_key_secret_id: var("RITMO_MASTER_KEY_SECRET_ARN").or(encryption.master_key_secret),
        kms_key_id: var("RITMO_KMS_KEY_ID")
            .or_else(|| var("RITMO_KMS_KEY_ARN"))
            .or(encryption.kms_key_id),
        plan_queue_url: var("RITMO_GITOPS_PLAN_QUEUE_URL"),
        apply_queue_url: var("RITMO_GITOPS_APPLY_QUEUE_URL"),
        cache_dir: var("RITMO_GITOPS_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("ritmo-gitops")),
    })
}

fn target_settings(
    name: &str,
    repository: &RepositorySection,
    auth: &AuthSection,
    shared_sync: &SyncSection,
    own_sync: &SyncSection,
) -> Result<TargetSettings, ConfigError> {
    let repo_url = repository
        .url
        .clone()
        .ok_or_else(|| ConfigError::MissingRepository {
            target: name.to_string(),
        })?;
    let pick =
        |own: Option<bool>, shared: Option<bool>, default: bool| own.or(shared).unwrap_or(default);
    let defaults = PlanPolicy::default();
    Ok(TargetSettings {
        name: name.to_string(),
        repo_url,
        branch: repository.branch.clone().unwrap_or_else(|| "main".into()),
        path: normalise_path(repository.path.as_deref().unwrap_or("/")),
        interval_secs: own_sync.interval.or(shared_sync.interval).unwrap_or(60),
        auto_apply: pick(own_sync.auto_apply, shared_sync.auto_apply, true),
        dry_run: pick(own_sync.dry_run, shared_sync.dry_run, false),
        self_heal: pick(own_sync.self_heal, shared_sync.self_heal, false),
        controls: TargetControls {
            suspended: pick(own_sync.suspended, shared_sync.suspended, false),
            notifications: Vec::new(),
            windows: Vec::new(),
        },
        policy: PlanPolicy {
            prune: pick(own_sync.prune, shared_sync.prune, defaults.prune),
            allow_empty: pick(
                own_sync.allow_empty,
                shared_sync.allow_empty,
                defaults.allow_empty,
            ),
            max_delete_percent: own_sync
                .max_delete_percent
                .or(shared_sync.max_delete_percent)
                .unwrap_or(defaults.max_delete_percent),
        },
        auth: git_auth(auth).map_err(|message| ConfigError::InvalidAuth {
            target: name.to_string(),
            message,
        })?,
    })
}

/// A target's preview settings: its own `preview:` over the shared one, field by field. A
/// target with its own token or secret does not inherit the other way of giving it.
fn preview_settings(
    name: &str,
    shared: &PreviewSection,
    own: Option<&PreviewSection>,
    auth: &GitAuth,
) -> Result<PreviewSettings, ConfigError> {
    let invalid = |message: &str| ConfigError::InvalidPreview {
        target: name.to_string(),
        message: message.to_string(),
    };
    let own = own.cloned().unwrap_or_default();
    let (token, token_secret) = if own.token.is_some() || own.token_secret.is_some() {
        (own.token, own.token_secret)
    } else {
        (shared.token.clone(), shared.token_secret.clone())
    };
    let github_app = own.github_app.or(shared.github_app).unwrap_or(false);
    let token = secret_setting("preview token", token.as_ref(), None, token_secret.as_ref())
        .map_err(|message| invalid(&message))?;
    let credential = match (token, github_app) {
        (Some(_), true) => {
            return Err(invalid(
                "give either `preview.token`/`preview.token_secret` or `preview.github_app: true`, not both",
            ));
        }
        (Some(token), false) => Some(PreviewCredential::Token(token)),
        (None, true) if !matches!(auth, GitAuth::GitHubApp { .. }) => {
            return Err(invalid(
                "`preview.github_app: true` needs `authentication.type: github_app` on the target",
            ));
        }
        (None, true) => Some(PreviewCredential::GitHubApp),
        (None, false) => None,
    };
    let enabled = own.enabled.or(shared.enabled).unwrap_or(false);
    if enabled && credential.is_none() {
        return Err(invalid(concat!(
            "previews are on but nothing to post them with: set `preview.token` ",
            "(e.g. `${RITMO_GITOPS_PREVIEW_TOKEN}`), `preview.token_secret` ",
            "(a Secrets Manager ARN) or `preview.github_app: true`"
        )));
    }
    Ok(PreviewSettings {
        enabled,
        credential,
        api_url: own
            .api_url
            .or_else(|| shared.api_url.clone())
            .map(|url| url.trim_end_matches('/').to_string()),
    })
}

/// `RITMO_GITOPS_PREVIEW_*` over the file's shared `preview:`. A variable giving the token one
/// way replaces the file's other way.
fn overlay_preview_env(
    preview: &mut PreviewSection,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (name, field) in [
        ("RITMO_GITOPS_PREVIEW_ENABLED", &mut preview.enabled),
        ("RITMO_GITOPS_PREVIEW_GITHUB_APP", &mut preview.github_app),
    ] {
        if let Some(value) = var(name) {
            *field = Some(parse_bool(name, &value)?);
        }
    }
    if let Some(token) = var("RITMO_GITOPS_PREVIEW_TOKEN") {
        (preview.token, preview.token_secret) = (Some(token), None);
    }
    if let Some(secret) = var("RITMO_GITOPS_PREVIEW_TOKEN_SECRET_ARN") {
        (preview.token, preview.token_secret) = (None, Some(secret));
    }
    if let Some(url) = var("RITMO_GITOPS_PREVIEW_API_URL") {
        preview.api_url = Some(url);
    }
    Ok(())
}

/// A target's sync windows: the shared ones, then its own.
fn sync_windows(
    target: &str,
    shared: &[WindowSection],
    own: &[WindowSection],
) -> Result<Vec<crate::windows::SyncWindow>, ConfigError> {
    shared
        .iter()
        .chain(own)
        .enumerate()
        .map(|(i, section)| {
            crate::windows::SyncWindow::new(
                section.kind,
                &section.schedule,
                &section.duration,
                section.timezone.as_deref(),
            )
            .map(|window| window.with_manual_sync(section.manual_sync))
            .map_err(|source| ConfigError::InvalidWindow {
                target: target.to_string(),
                index: i + 1,
                source,
            })
        })
        .collect()
}

/// A target's subscriptions: the shared ones, then its own. Each names at least one event and
/// exactly one destination; a webhook's signing secret is named (env, file or Secrets
/// Manager), never written in the file.
fn subscriptions(
    target: &str,
    shared: &[SubscriptionSection],
    own: &[SubscriptionSection],
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Subscription>, ConfigError> {
    shared
        .iter()
        .chain(own)
        .enumerate()
        .map(|(i, section)| {
            subscription(section, var).map_err(|message| ConfigError::InvalidSubscription {
                target: target.to_string(),
                index: i + 1,
                message,
            })
        })
        .collect()
}

fn subscription(
    section: &SubscriptionSection,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Subscription, String> {
    if section.events.is_empty() {
        return Err(
            "`events:` is empty: list at least one of sync_succeeded, sync_failed, \
                    drift_detected, pending_approval, waiting_for_window, suspended"
                .into(),
        );
    }
    let destination = match (
        &section.sns_topic_arn,
        &section.slack_webhook_credential,
        &section.webhook,
    ) {
        (Some(topic_arn), None, None) => Destination::Sns {
            topic_arn: topic_arn.clone(),
        },
        (None, Some(credential), None) => Destination::Slack {
            credential: credential.clone(),
        },
        (None, None, Some(webhook)) => webhook_destination(webhook, var)?,
        _ => {
            return Err("give exactly one destination: `sns_topic_arn`, \
                        `slack_webhook_credential` or `webhook`"
                .into());
        }
    };
    Ok(Subscription {
        events: section.events.clone(),
        destination,
    })
}

fn webhook_destination(
    section: &WebhookDestinationSection,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Destination, String> {
    let url = section.url.trim();
    let parsed = url::Url::parse(url).map_err(|e| format!("`webhook.url` is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(host)) => host == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(format!(
                "`webhook.url` must be an https:// URL (http:// only for a loopback host), \
                 found scheme `{}`",
                parsed.scheme()
            ));
        }
    }
    let from_env = match &section.signing_secret_env {
        Some(name) => Some(var(name).ok_or_else(|| {
            format!("`webhook.signing_secret_env` names `{name}`, which is not set: export it")
        })?),
        None => None,
    };
    let signing_secret = secret_setting(
        "webhook signing secret",
        from_env.as_ref(),
        section.signing_secret_file.as_ref(),
        section.signing_secret_secret.as_ref(),
    )?
    .ok_or_else(|| {
        "a webhook needs a signing secret: set `signing_secret_env`, `signing_secret_file` \
         or `signing_secret_secret`"
            .to_string()
    })?;
    Ok(Destination::Webhook {
        url: url.to_string(),
        signing_secret,
    })
}

/// The retry policy from `retry:` with `RITMO_GITOPS_RETRY_*` on top, the defaults for what
/// neither sets. SQS caps a message's invisibility at 12 hours, so a longer delay is refused.
fn retry_policy(
    section: &RetrySection,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<RetryPolicy, ConfigError> {
    const LONGEST: u64 = 12 * 60 * 60;
    let number = |variable: &str, file: Option<u64>, expected: &'static str| {
        let (value, from) = match var(variable) {
            Some(text) => (text.trim().parse::<u64>().ok(), text),
            None => match file {
                Some(value) => (Some(value), value.to_string()),
                None => return Ok(None),
            },
        };
        value
            .filter(|&n| n > 0 && n <= LONGEST)
            .map(Some)
            .ok_or_else(|| ConfigError::InvalidVariable {
                variable: variable.into(),
                expected,
                value: from,
            })
    };
    let defaults = RetryPolicy::default();
    let base = number(
        "RITMO_GITOPS_RETRY_BASE_DELAY",
        section.base_delay,
        "a number of seconds from 1 to 43200 (retry.base_delay)",
    )?;
    let max = number(
        "RITMO_GITOPS_RETRY_MAX_DELAY",
        section.max_delay,
        "a number of seconds from 1 to 43200 (retry.max_delay)",
    )?;
    let attempts = number(
        "RITMO_GITOPS_RETRY_ATTEMPTS",
        section.attempts.map(u64::from),
        "a number of receives from 1 to 1000 (retry.attempts)",
    )?;
    let policy = RetryPolicy {
        base_delay: base.map_or(defaults.base_delay, std::time::Duration::from_secs),
        max_delay: max.map_or(defaults.max_delay, std::time::Duration::from_secs),
        attempts: match attempts {
            Some(n) if n > 1000 => {
                return Err(ConfigError::InvalidVariable {
                    variable: "RITMO_GITOPS_RETRY_ATTEMPTS".into(),
                    expected: "a number of receives from 1 to 1000 (retry.attempts)",
                    value: n.to_string(),
                });
            }
            Some(n) => u32::try_from(n).unwrap_or(defaults.attempts),
            None => defaults.attempts,
        },
    };
    if policy.max_delay < policy.base_delay {
        return Err(ConfigError::InvalidVariable {
            variable: "RITMO_GITOPS_RETRY_MAX_DELAY".into(),
            expected: "at least the base delay (retry.max_delay >= retry.base_delay)",
            value: policy.max_delay.as_secs().to_string(),
        });
    }
    Ok(policy)
}

fn overlay_sync_env(
    sync: &mut SyncSection,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(value) = var("RITMO_GITOPS_SYNC_INTERVAL") {
        let seconds = value.split('#').next().unwrap_or("").trim();
        sync.interval = Some(seconds.parse().map_err(|_| ConfigError::InvalidVariable {
            variable: "RITMO_GITOPS_SYNC_INTERVAL".into(),
            expected: "a number of seconds",
            value: value.clone(),
        })?);
    }
    for (name, field) in [
        ("RITMO_GITOPS_AUTO_APPLY", &mut sync.auto_apply),
        ("RITMO_GITOPS_DRY_RUN", &mut sync.dry_run),
        ("RITMO_GITOPS_PRUNE", &mut sync.prune),
        ("RITMO_GITOPS_SELF_HEAL", &mut sync.self_heal),
        ("RITMO_GITOPS_ALLOW_EMPTY", &mut sync.allow_empty),
        ("RITMO_GITOPS_SUSPENDED", &mut sync.suspended),
    ] {
        if let Some(value) = var(name) {
            *field = Some(parse_bool(name, &value)?);
        }
    }
    if let Some(value) = var("RITMO_GITOPS_REQUIRE_APPROVAL_FOR_BRANCHES") {
        sync.require_approval_for_branches = Some(
            value
                .split(',')
                .map(str::trim)
                .filter(|pattern| !pattern.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    Ok(())
}

fn overlay_auth_env(
    auth: &mut AuthSection,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(kind) = var("RITMO_GITOPS_AUTH_TYPE") {
        auth.kind = Some(kind.split('#').next().unwrap_or("").trim().to_string());
    }
    if let Some(token) = var("RITMO_GITOPS_TOKEN") {
        auth.token = Some(token);
    }
    if let Some(secret) = var("RITMO_GITOPS_TOKEN_SECRET_ARN") {
        auth.token_secret = Some(secret);
    }
    // One variable naming where the key is replaces whatever the file said about it.
    if let Some(key) = var("RITMO_GITOPS_SSH_KEY") {
        (auth.ssh_key, auth.ssh_key_path, auth.ssh_key_secret) = (Some(key), None, None);
    }
    if let Some(path) = var("RITMO_GITOPS_SSH_KEY_PATH") {
        (auth.ssh_key, auth.ssh_key_path, auth.ssh_key_secret) =
            (None, Some(PathBuf::from(path)), None);
    }
    if let Some(secret) = var("RITMO_GITOPS_SSH_KEY_SECRET_ARN") {
        (auth.ssh_key, auth.ssh_key_path, auth.ssh_key_secret) = (None, None, Some(secret));
    }
    if let Some(text) = var("RITMO_GITOPS_SSH_KNOWN_HOSTS") {
        (auth.ssh_known_hosts, auth.ssh_known_hosts_path) = (Some(text), None);
    }
    if let Some(path) = var("RITMO_GITOPS_SSH_KNOWN_HOSTS_PATH") {
        (auth.ssh_known_hosts, auth.ssh_known_hosts_path) = (None, Some(PathBuf::from(path)));
    }
    if let Some(program) = var("RITMO_GITOPS_SSH_PROGRAM") {
        auth.ssh_program = Some(PathBuf::from(program));
    }
    let id = |name: &str| -> Result<Option<u64>, ConfigError> {
        var(name)
            .map(|value| {
                value
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::InvalidVariable {
                        variable: name.to_string(),
                        expected: "a number",
                        value: value.clone(),
                    })
            })
            .transpose()
    };
    let app_id = id("RITMO_GITOPS_APP_ID")?;
    let installation_id = id("RITMO_GITOPS_INSTALLATION_ID")?;
    let key = var("RITMO_GITOPS_APP_PRIVATE_KEY");
    let key_path = var("RITMO_GITOPS_APP_PRIVATE_KEY_PATH");
    let key_secret = var("RITMO_GITOPS_APP_PRIVATE_KEY_SECRET_ARN");
    let api_url = var("RITMO_GITOPS_GITHUB_API_URL");
    let any_app_variable = app_id.is_some()
        || installation_id.is_some()
        || key.is_some()
        || key_path.is_some()
        || key_secret.is_some()
        || api_url.is_some();
    if any_app_variable {
        let app = auth.github_app.get_or_insert_with(Default::default);
        app.app_id = app_id.or(app.app_id);
        app.installation_id = installation_id.or(app.installation_id);
        if key.is_some() || key_path.is_some() || key_secret.is_some() {
            app.private_key = key;
            app.private_key_path = key_path.map(PathBuf::from);
            app.private_key_secret = key_secret;
        }
        app.api_url = api_url.or(app.api_url.take());
    }
    Ok(())
}

/// The authentication the CLI's flags describe, given under the names of the variables they
/// stand for (`RITMO_GITOPS_AUTH_TYPE`, `RITMO_GITOPS_SSH_KEY_PATH`, …).
pub fn git_auth_from_variables(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<GitAuth, ConfigError> {
    let var = |name: &str| var(name).filter(|value| !value.is_empty());
    let mut auth = AuthSection::default();
    overlay_auth_env(&mut auth, &var)?;
    git_auth(&auth).map_err(|message| ConfigError::InvalidAuth {
        target: "given on the command line".into(),
        message,
    })
}

/// At most one of the three ways to give a secret.
fn secret_setting(
    what: &str,
    value: Option<&String>,
    path: Option<&PathBuf>,
    secret: Option<&String>,
) -> Result<Option<SecretSetting>, String> {
    match (value, path, secret) {
        (None, None, None) => Ok(None),
        (Some(value), None, None) => Ok(Some(SecretSetting::Value(SecretString::from(
            value.clone(),
        )))),
        (None, Some(path), None) => Ok(Some(SecretSetting::File(path.clone()))),
        (None, None, Some(secret)) => Ok(Some(SecretSetting::SecretsManager(secret.clone()))),
        _ => Err(format!(
            "give the {what} one way only: a value, a file path or a Secrets Manager secret"
        )),
    }
}

fn git_auth(auth: &AuthSection) -> Result<GitAuth, String> {
    let kind = auth.kind.as_deref().map(str::trim);
    match kind {
        Some("ssh") => Ok(GitAuth::Ssh {
            key: secret_setting(
                "ssh key",
                auth.ssh_key.as_ref(),
                auth.ssh_key_path.as_ref(),
                auth.ssh_key_secret.as_ref(),
            )?,
            known_hosts: match (&auth.ssh_known_hosts, &auth.ssh_known_hosts_path) {
                (Some(_), Some(_)) => {
                    return Err("give `ssh_known_hosts` or `ssh_known_hosts_path`, not both".into());
                }
                (Some(text), None) => Some(KnownHosts::Text(text.clone())),
                (None, Some(path)) => Some(KnownHosts::File(path.clone())),
                (None, None) => None,
            },
            program: auth.ssh_program.clone(),
        }),
        Some("app" | "github_app") => {
            let Some(app) = &auth.github_app else {
                return Err(
                    "type `github_app` needs a `github_app:` block with `app_id`, \
                            `installation_id` and the private key (RITMO_GITOPS_APP_ID, \
                            RITMO_GITOPS_INSTALLATION_ID, RITMO_GITOPS_APP_PRIVATE_KEY_SECRET_ARN)"
                        .into(),
                );
            };
            let app_id = app
                .app_id
                .ok_or("`github_app.app_id` is missing (RITMO_GITOPS_APP_ID)")?;
            let installation_id = app
                .installation_id
                .ok_or("`github_app.installation_id` is missing (RITMO_GITOPS_INSTALLATION_ID)")?;
            let private_key = secret_setting(
                "GitHub App private key",
                app.private_key.as_ref(),
                app.private_key_path.as_ref(),
                app.private_key_secret.as_ref(),
            )?
            .ok_or(
                "the GitHub App private key is missing: set `github_app.private_key_secret` \
                 (RITMO_GITOPS_APP_PRIVATE_KEY_SECRET_ARN), `private_key_path` or `private_key`",
            )?;
            let api_url = app
                .api_url
                .as_deref()
                .unwrap_or(DEFAULT_GITHUB_API_URL)
                .trim()
                .trim_end_matches('/')
                .to_string();
            if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
                return Err(format!(
                    "`github_app.api_url` must be an http(s) URL, found `{api_url}`"
                ));
            }
            Ok(GitAuth::GitHubApp {
                app_id,
                installation_id,
                private_key,
                api_url,
            })
        }
        Some("none") => Ok(GitAuth::None),
        Some("token") | None if auth.token.is_some() || auth.token_secret.is_some() => {
            Ok(GitAuth::Token {
                token: auth.token.clone().map(SecretString::from),
                token_secret: auth.token_secret.clone(),
            })
        }
        Some("token") | None => Ok(GitAuth::None),
        Some(other) => Err(format!(
            "unknown authentication type `{other}`: use token, ssh, github_app or none"
        )),
    }
}

fn parse_bool(variable: &str, value: &str) -> Result<bool, ConfigError> {
    // The seed writes `RITMO_GITOPS_AUTO_APPLY=true  # Auto-apply changes`.
    match value
        .split('#')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::InvalidVariable {
            variable: variable.to_string(),
            expected: "true or false",
            value: value.to_string(),
        }),
    }
}

/// A comma-separated variable, each item checked by `parse`; unset is empty.
fn list_of(
    variable: &str,
    var: &dyn Fn(&str) -> Option<String>,
    parse: fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let Some(value) = var(variable) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse(item).ok_or_else(|| ConfigError::InvalidVariable {
                variable: variable.to_string(),
                expected: if variable.ends_with("ORIGINS") {
                    "comma-separated origins such as `https://ops.example.com` (scheme and host, no path)"
                } else {
                    "comma-separated host names such as `ritmo.internal` (no scheme, port or path)"
                },
                value: item.to_string(),
            })
        })
        .collect()
}

/// An origin as browsers send it, `scheme://host[:port]`, lower-cased; `None` when it has
/// a path, a query or no host. A trailing `/` is forgiven.
pub fn parse_origin(text: &str) -> Option<String> {
    let text = text.strip_suffix('/').unwrap_or(text).to_ascii_lowercase();
    let (scheme, host) = text.split_once("://")?;
    let valid_host = !host.is_empty()
        && !host.contains(['/', '?', '#', '@', ' '])
        && host.chars().all(|c| c.is_ascii_graphic());
    (matches!(scheme, "http" | "https") && valid_host).then_some(text)
}

/// A host name (`ritmo.internal`), lower-cased; `None` for anything with a scheme, a port, a
/// path or characters no host name has.
pub fn parse_host_name(text: &str) -> Option<String> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| text.to_ascii_lowercase())
}

/// `/`, `./config/`, `config` → `/`, `config`, `config`.
pub fn normalise_path(path: &str) -> String {
    let path = path.split('#').next().unwrap_or("").trim();
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if parts.is_empty() {
        "/".to_string()
    } else {
        parts.join("/")
    }
}

/// The environment as a map, for callers that want to pass a fixed one.
pub fn env_from_map(map: BTreeMap<String, String>) -> impl Fn(&str) -> Option<String> {
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        env_from_map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    const SEED_FILE: &str = r#"
gitops:
  enabled: true

  repository:
    url: https://github.com/myorg/ritmo-config
    branch: main
    path: /

  authentication:
    type: token  # token, ssh, github_app
    token: ${RITMO_GITOPS_TOKEN}  # From environment or secret manager
    # OR
    # ssh_key_path: /etc/ritmo/gitops-key

  sync:
    interval: 60  # seconds
    auto_apply: true
    dry_run: false
    prune: true  # Remove resources not in Git

  webhook:
    enabled: true
    secret_token: ${RITMO_GITOPS_WEBHOOK_SECRET}
    path: /webhooks/gitops
"#;

    #[test]
    fn the_seed_bootstrap_file_gives_one_default_target() {
        let env = env(&[
            ("RITMO_GITOPS_TOKEN", "tok"),
            ("RITMO_GITOPS_WEBHOOK_SECRET", "hook"),
        ]);

        let settings =
            from_bootstrap(parse_bootstrap("b.yaml", SEED_FILE, &env).unwrap(), &env).unwrap();

        assert_eq!(settings.targets.len(), 1);
        let target = &settings.targets[0];
        assert_eq!(target.name, "default");
        assert_eq!(target.repo_url, "https://github.com/myorg/ritmo-config");
        assert_eq!(target.path, "/");
        assert_eq!(target.interval_secs, 60);
        assert!(target.auto_apply && target.policy.prune && !target.dry_run);
        match &target.auth {
            GitAuth::Token {
                token: Some(token), ..
            } => assert_eq!(token.expose_secret(), "tok"),
            other => panic!("expected a token, got {other:?}"),
        }
        assert_eq!(
            settings
                .webhook_secret
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
            Some("hook".into())
        );
    }

    /// Fuzzing finding (bootstrap_config, crash-307b50de, docs/fuzzing.md): a syntax error
    /// anywhere in the file quoted the lines around it from the interpolated text, so the value
    /// of `${RITMO_GITOPS_TOKEN}` reached the error message and every log line printing it.
    #[test]
    fn a_syntax_error_never_shows_an_interpolated_secret() {
        let env = env(&[("RITMO_GITOPS_TOKEN", "ghp_Fuzz0Token1Value2Abc")]);
        let file = "gitops:\n  authentication:\n    token: ${RITMO_GITOPS_TOKEN}\nrs ei optory: { url: x }\n  authentication:\n    type: token\n";

        let error = parse_bootstrap("b.yaml", file, &env).unwrap_err();

        let message = error.to_string();
        assert!(matches!(error, ConfigError::Parse { .. }), "{error:?}");
        assert!(!message.contains("ghp_Fuzz0Token1Value2Abc"), "{message}");
        assert!(
            message.starts_with("bootstrap file `b.yaml`: "),
            "{message}"
        );
    }

    #[test]
    fn an_interpolated_value_quoted_by_the_parser_is_redacted() {
        let env = env(&[("SYNC_EVERY", "every-ghp_Fuzz0Token1Value2Abc")]);
        let text = "gitops:\n  sync:\n    interval: ${SYNC_EVERY}\n";
        let message = "invalid value `every-ghp_Fuzz0Token1Value2Abc` at line 3".to_string();

        let redacted = redact_interpolated(message, text, &env);

        assert_eq!(redacted, "invalid value `***` at line 3");
    }

    #[test]
    fn an_unset_variable_in_the_file_is_an_error_naming_it() {
        let error = parse_bootstrap("b.yaml", SEED_FILE, &env(&[])).unwrap_err();

        assert!(error.to_string().contains("RITMO_GITOPS_TOKEN"), "{error}");
    }

    #[test]
    fn variables_override_the_file() {
        let env = env(&[
            ("RITMO_GITOPS_TOKEN", "tok"),
            ("RITMO_GITOPS_WEBHOOK_SECRET", "hook"),
            ("RITMO_GITOPS_REPO_BRANCH", "release"),
            ("RITMO_GITOPS_PRUNE", "false  # keep"),
            ("RITMO_GITOPS_SYNC_INTERVAL", "30  # seconds"),
        ]);

        let settings =
            from_bootstrap(parse_bootstrap("b.yaml", SEED_FILE, &env).unwrap(), &env).unwrap();

        let target = &settings.targets[0];
        assert_eq!(target.branch, "release");
        assert!(!target.policy.prune);
        assert_eq!(target.interval_secs, 30);
    }

    #[test]
    fn variables_alone_describe_the_default_target() {
        let env = env(&[
            ("RITMO_GITOPS_REPO_URL", "file:///srv/config"),
            ("RITMO_GITOPS_REPO_PATH", "./prod/"),
            ("RITMO_GITOPS_AUTO_APPLY", "false"),
            ("DATABASE_URL", "postgres://localhost/db"),
        ]);

        let settings = from_bootstrap(Bootstrap::default(), &env).unwrap();

        assert_eq!(settings.targets[0].repo_url, "file:///srv/config");
        assert_eq!(settings.targets[0].path, "prod");
        assert!(!settings.targets[0].auto_apply);
        assert!(settings.database_url.is_some());
    }

    #[test]
    fn the_webhook_is_on_unless_the_file_or_a_variable_switches_it_off() {
        let load = |file: &str, vars: &[(&str, &str)]| {
            from_bootstrap(
                parse_bootstrap("b.yaml", file, &env(vars)).unwrap(),
                &env(vars),
            )
            .unwrap()
        };
        let secret = [("RITMO_GITOPS_WEBHOOK_SECRET", "hook")];

        assert!(!load("", &[]).webhook_disabled);
        assert!(!Settings::default().webhook_disabled);
        assert!(load("gitops:\n  webhook: {enabled: false}\n", &secret).webhook_disabled);
        assert!(load("", &[("RITMO_GITOPS_WEBHOOK_ENABLED", "false")]).webhook_disabled);
        assert!(
            !load(
                "gitops:\n  webhook: {enabled: false}\n",
                &[("RITMO_GITOPS_WEBHOOK_ENABLED", "true")]
            )
            .webhook_disabled
        );
    }

    #[test]
    fn the_api_token_comes_from_a_variable_or_a_secret_never_both() {
        let token = from_bootstrap(
            Bootstrap::default(),
            &env(&[("RITMO_API_TOKEN", "0123456789abcdef0123")]),
        )
        .unwrap();
        let managed = from_bootstrap(
            Bootstrap::default(),
            &env(&[("RITMO_API_TOKEN_SECRET_ARN", "ritmo/api-token")]),
        )
        .unwrap();
        let both = from_bootstrap(
            Bootstrap::default(),
            &env(&[
                ("RITMO_API_TOKEN", "0123456789abcdef0123"),
                ("RITMO_API_TOKEN_SECRET_ARN", "ritmo/api-token"),
            ]),
        )
        .unwrap_err();

        assert!(matches!(
            token.api_token,
            Some(SecretSetting::Value(ref value)) if value.expose_secret() == "0123456789abcdef0123"
        ));
        assert!(matches!(
            managed.api_token,
            Some(SecretSetting::SecretsManager(ref id)) if id == "ritmo/api-token"
        ));
        assert!(!format!("{token:?}").contains("0123456789abcdef0123"));
        let both = both.to_string();
        assert!(both.contains("RITMO_API_TOKEN_SECRET_ARN"), "{both}");
        assert!(!both.contains("0123456789abcdef0123"), "{both}");
    }

    #[test]
    fn allowed_origins_and_hosts_are_checked_and_lower_cased() {
        let settings = from_bootstrap(
            Bootstrap::default(),
            &env(&[
                (
                    "RITMO_API_ALLOWED_ORIGINS",
                    "https://Ops.Example.com/, http://localhost:3000",
                ),
                ("RITMO_API_ALLOWED_HOSTS", "Ritmo.Internal,proxy"),
                ("RITMO_API_ACTOR", "ops-bot"),
            ]),
        )
        .unwrap();
        let bad_origin = from_bootstrap(
            Bootstrap::default(),
            &env(&[("RITMO_API_ALLOWED_ORIGINS", "https://ops.example.com/app")]),
        )
        .unwrap_err();
        let bad_host = from_bootstrap(
            Bootstrap::default(),
            &env(&[("RITMO_API_ALLOWED_HOSTS", "https://ritmo.internal")]),
        )
        .unwrap_err();

        assert_eq!(
            settings.api_allowed_origins,
            ["https://ops.example.com", "http://localhost:3000"]
        );
        assert_eq!(settings.api_allowed_hosts, ["ritmo.internal", "proxy"]);
        assert_eq!(settings.api_actor.as_deref(), Some("ops-bot"));
        assert!(bad_origin.to_string().contains("no path"), "{bad_origin}");
        assert!(bad_host.to_string().contains("host names"), "{bad_host}");
        assert_eq!(parse_origin("null"), None);
        assert_eq!(parse_origin("ftp://x"), None);
    }

    #[test]
    fn declared_targets_inherit_shared_sync_settings_and_must_be_unique() {
        let file = r#"
gitops:
  sync: { interval: 120, prune: false }
  targets:
    - name: prod
      repository: { url: https://git.example.com/prod.git, branch: main }
    - name: dev
      repository: { url: https://git.example.com/dev.git }
      sync: { prune: true, auto_apply: false }
  builtin_plugins: [maven-build]
"#;

        let settings = from_bootstrap(
            parse_bootstrap("b.yaml", file, &env(&[])).unwrap(),
            &env(&[]),
        )
        .unwrap();

        let prod = settings.target("prod").unwrap();
        let dev = settings.target("dev").unwrap();
        assert_eq!(prod.interval_secs, 120);
        assert!(!prod.policy.prune);
        assert!(dev.policy.prune && !dev.auto_apply);
        assert!(settings.builtin_plugins.contains("maven-build"));

        let twice = "gitops:\n  targets:\n    - {name: a, repository: {url: x}}\n    - {name: a, repository: {url: y}}\n";
        let error = from_bootstrap(
            parse_bootstrap("b.yaml", twice, &env(&[])).unwrap(),
            &env(&[]),
        );
        assert!(matches!(error, Err(ConfigError::DuplicateTarget(name)) if name == "a"));
    }

    #[test]
    fn unknown_fields_in_the_bootstrap_file_are_refused() {
        let error = parse_bootstrap("b.yaml", "gitops:\n  sync:\n    intervall: 5\n", &env(&[]))
            .unwrap_err();

        assert!(error.to_string().contains("intervall"), "{error}");
    }

    #[test]
    fn a_bad_boolean_variable_names_the_variable() {
        let error = from_bootstrap(
            Bootstrap::default(),
            &env(&[("RITMO_GITOPS_DRY_RUN", "maybe")]),
        )
        .unwrap_err();

        assert!(
            error.to_string().contains("RITMO_GITOPS_DRY_RUN"),
            "{error}"
        );
    }

    #[test]
    fn branches_listed_for_approval_gate_their_targets_and_a_target_may_override_them() {
        let file = r#"
gitops:
  sync: { require_approval_for_branches: [main, "release/*"] }
  targets:
    - name: prod
      repository: { url: https://git.example.com/config.git, branch: main }
    - name: release
      repository: { url: https://git.example.com/config.git, branch: release/2024.1 }
    - name: dev
      repository: { url: https://git.example.com/config.git, branch: develop }
    - name: staging
      repository: { url: https://git.example.com/config.git, branch: main }
      sync: { require_approval_for_branches: [] }
"#;

        let settings = from_bootstrap(
            parse_bootstrap("b.yaml", file, &env(&[])).unwrap(),
            &env(&[]),
        )
        .unwrap();

        let gated = |name: &str| settings.branch_approval(settings.target(name).unwrap());
        assert!(gated("prod").unwrap().contains("`main`"));
        assert!(gated("release").unwrap().contains("release/*"));
        assert_eq!(gated("dev"), None);
        assert_eq!(gated("staging"), None);
    }

    #[test]
    fn branch_patterns_match_whole_names_with_stars_for_any_run() {
        assert!(branch_matches("main", "main"));
        assert!(!branch_matches("main", "main2"));
        assert!(branch_matches("release/*", "release/2024/q1"));
        assert!(!branch_matches("release/*", "hotfix/release/1"));
        assert!(branch_matches("*-prod", "eu-prod"));
        assert!(branch_matches("a*b*c", "axxbyyc"));
        assert!(!branch_matches("a*b*c", "acb"));
        assert!(branch_matches("*", "anything"));
    }

    const SUBSCRIBED: &str = "gitops:
  notifications:
    api_url: https://ritmo.example.com/
    subscriptions:
      - events: [sync_failed]
        sns_topic_arn: arn:aws:sns:us-east-1:1:oncall
  targets:
    - name: prod
      repository: { url: https://git.example.com/ci.git }
      notifications:
        - events: [sync_succeeded, suspended]
          slack_webhook_credential: slack-hook
        - events: [pending_approval]
          webhook:
            url: https://hooks.example.com/ritmo
            signing_secret_env: HOOK_SECRET
";

    #[test]
    fn a_target_has_the_shared_subscriptions_then_its_own() {
        let env = env(&[("HOOK_SECRET", "s3cret-signing-key")]);

        let settings = Settings::from_text("gitops.yaml", SUBSCRIBED, &env).unwrap();

        let subscriptions = &settings.target("prod").unwrap().controls.notifications;
        assert_eq!(subscriptions.len(), 3);
        assert_eq!(subscriptions[0].events, [EventKind::SyncFailed]);
        assert!(matches!(
            &subscriptions[1].destination,
            Destination::Slack { credential } if credential == "slack-hook"
        ));
        let Destination::Webhook {
            url,
            signing_secret: SecretSetting::Value(secret),
        } = &subscriptions[2].destination
        else {
            panic!("{subscriptions:?}");
        };
        assert_eq!(url, "https://hooks.example.com/ritmo");
        assert_eq!(secret.expose_secret(), "s3cret-signing-key");
        assert!(!format!("{settings:?}").contains("s3cret-signing-key"));
        assert_eq!(
            settings.notifications.api_url.as_deref(),
            Some("https://ritmo.example.com")
        );
    }

    #[test]
    fn sync_windows_come_from_the_file_shared_then_per_target() {
        let file = "gitops:
  sync_windows:
    - { kind: deny, schedule: '0 22 * * *', duration: 8h }
  targets:
    - name: prod
      repository: { url: https://git.example.com/ci.git }
      sync_windows:
        - { kind: allow, schedule: '0 9 * * 1-5', duration: 8h, timezone: Europe/Paris }
";
        let settings = Settings::from_text("gitops.yaml", file, &env(&[])).unwrap();

        let windows = &settings.target("prod").unwrap().controls.windows;
        assert_eq!(windows.len(), 2);
        assert_eq!(windows[0].to_string(), "deny `0 22 * * *` for 8h (UTC)");
        assert_eq!(
            windows[1].to_string(),
            "allow `0 9 * * 1-5` for 8h (Europe/Paris)"
        );

        let bad = file.replace("Europe/Paris", "Europe/Pariss");
        let error = Settings::from_text("gitops.yaml", &bad, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("sync window 2 of target `prod`"), "{error}");
        assert!(error.contains("Europe/Pariss"), "{error}");
    }

    #[test]
    fn bad_subscriptions_are_refused_with_the_target_and_what_to_do() {
        let refused = |text: &str, env_vars: &[(&str, &str)]| {
            Settings::from_text("gitops.yaml", text, &env(env_vars))
                .unwrap_err()
                .to_string()
        };

        let unset = refused(SUBSCRIBED, &[]);
        assert!(unset.contains("`prod`, subscription 3"), "{unset}");
        assert!(unset.contains("`HOOK_SECRET`, which is not set"), "{unset}");

        let plain_http = SUBSCRIBED.replace("https://hooks", "http://hooks");
        let error = refused(&plain_http, &[("HOOK_SECRET", "x")]);
        assert!(error.contains("must be an https:// URL"), "{error}");
        let loopback = SUBSCRIBED.replace("https://hooks.example.com", "http://127.0.0.1:9");
        Settings::from_text("gitops.yaml", &loopback, &env(&[("HOOK_SECRET", "x")])).unwrap();

        let two = SUBSCRIBED.replace(
            "slack_webhook_credential: slack-hook",
            "slack_webhook_credential: slack-hook\n          sns_topic_arn: arn:x",
        );
        let error = refused(&two, &[("HOOK_SECRET", "x")]);
        assert!(error.contains("exactly one destination"), "{error}");

        // A signing secret written into the file is not a field: it would sit in Git.
        let written = SUBSCRIBED.replace("signing_secret_env: HOOK_SECRET", "signing_secret: abc");
        let error = refused(&written, &[]);
        assert!(error.contains("signing_secret"), "{error}");

        let unknown = SUBSCRIBED.replace("[sync_failed]", "[synced]");
        let error = refused(&unknown, &[("HOOK_SECRET", "x")]);
        assert!(error.contains("synced"), "{error}");
    }

    #[test]
    fn history_limit_and_notifications_come_from_the_file_or_the_environment() {
        let file = "gitops:\n  history_limit: 250\n  notifications:\n    sns_topic_arn: arn:aws:sns:us-east-1:1:file\n    slack_webhook_credential: slack-hook\n";
        let env = env(&[("RITMO_GITOPS_SNS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:env")]);

        let settings =
            from_bootstrap(parse_bootstrap("b.yaml", file, &env).unwrap(), &env).unwrap();

        assert_eq!(settings.history_limit(), 250);
        assert_eq!(
            settings.notifications,
            NotificationSettings {
                sns_topic_arn: Some("arn:aws:sns:us-east-1:1:env".into()),
                slack_webhook_credential: Some("slack-hook".into()),
                api_url: None,
            }
        );
        assert_eq!(Settings::default().history_limit(), DEFAULT_HISTORY_LIMIT);
        assert!(!Settings::default().notifications.is_enabled());
    }

    fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Settings {
        from_bootstrap(parse_bootstrap("b.yaml", text, env).unwrap(), env).unwrap()
    }

    fn refused(text: &str, env: &dyn Fn(&str) -> Option<String>) -> ConfigError {
        from_bootstrap(parse_bootstrap("b.yaml", text, env).unwrap(), env).unwrap_err()
    }

    #[test]
    fn retry_settings_come_from_the_file_or_the_environment_with_todays_defaults() {
        let defaults = parse("gitops:\n  repository:\n    url: file:///c\n", &env(&[]));
        let from_file = parse(
            "gitops:\n  repository:\n    url: file:///c\n  retry:\n    base_delay: 2\n    max_delay: 60\n    attempts: 8\n",
            &env(&[]),
        );
        let from_env = parse(
            "gitops:\n  repository:\n    url: file:///c\n  retry:\n    base_delay: 2\n",
            &env(&[
                ("RITMO_GITOPS_RETRY_BASE_DELAY", "1"),
                ("RITMO_GITOPS_RETRY_MAX_DELAY", "4"),
                ("RITMO_GITOPS_RETRY_ATTEMPTS", "3"),
            ]),
        );
        let inverted = refused(
            "gitops:\n  retry:\n    base_delay: 60\n    max_delay: 5\n",
            &env(&[]),
        );
        let zero = refused(
            "gitops: {}\n",
            &env(&[("RITMO_GITOPS_RETRY_ATTEMPTS", "0")]),
        );

        assert_eq!(defaults.retry, RetryPolicy::default());
        assert_eq!(defaults.retry.delay(1).as_secs(), 5);
        assert_eq!(defaults.retry.delay(9).as_secs(), 180);
        assert_eq!(defaults.retry.attempts, 5);
        assert_eq!(from_file.retry.base_delay.as_secs(), 2);
        assert_eq!(from_file.retry.max_delay.as_secs(), 60);
        assert_eq!(from_file.retry.attempts, 8);
        assert_eq!(from_env.retry.base_delay.as_secs(), 1);
        assert_eq!(from_env.retry.max_delay.as_secs(), 4);
        assert_eq!(from_env.retry.attempts, 3);
        assert!(
            inverted.to_string().contains("retry.max_delay"),
            "{inverted}"
        );
        assert!(
            zero.to_string().contains("RITMO_GITOPS_RETRY_ATTEMPTS"),
            "{zero}"
        );
    }

    #[test]
    fn poll_concurrency_comes_from_the_file_or_the_environment() {
        let file = "gitops:\n  poll_concurrency: 16\n";
        let none = env(&[]);
        let from_file =
            from_bootstrap(parse_bootstrap("b.yaml", file, &none).unwrap(), &none).unwrap();
        let env_wins = env(&[("RITMO_GITOPS_POLL_CONCURRENCY", "200")]);
        let from_env = from_bootstrap(
            parse_bootstrap("b.yaml", file, &env_wins).unwrap(),
            &env_wins,
        )
        .unwrap();

        assert_eq!(from_file.poll_concurrency(), 16);
        assert_eq!(from_env.poll_concurrency(), 200);
        assert_eq!(
            Settings::default().poll_concurrency(),
            DEFAULT_POLL_CONCURRENCY as usize
        );
        for refused in ["0", "-1", "many"] {
            let pairs = [("RITMO_GITOPS_POLL_CONCURRENCY", refused)];
            let env = env(&pairs);
            let error = from_bootstrap(parse_bootstrap("b.yaml", file, &env).unwrap(), &env)
                .unwrap_err()
                .to_string();
            assert!(error.contains("RITMO_GITOPS_POLL_CONCURRENCY"), "{error}");
        }
    }

    #[test]
    fn ssh_authentication_takes_a_secret_known_hosts_and_a_program() {
        let file = r#"
gitops:
  repository: { url: "git@github.com:acme/config.git" }
  authentication:
    type: ssh
    ssh_key_secret: prod/ritmo/deploy-key
    ssh_known_hosts: "github.com ssh-ed25519 AAAAC3Nza"
    ssh_program: /opt/bin/ssh
"#;

        let settings = from_bootstrap(
            parse_bootstrap("b.yaml", file, &env(&[])).unwrap(),
            &env(&[]),
        )
        .unwrap();

        match &settings.targets[0].auth {
            GitAuth::Ssh {
                key: Some(SecretSetting::SecretsManager(id)),
                known_hosts: Some(KnownHosts::Text(text)),
                program: Some(program),
            } => {
                assert_eq!(id, "prod/ritmo/deploy-key");
                assert!(text.starts_with("github.com "));
                assert_eq!(program, Path::new("/opt/bin/ssh"));
            }
            other => panic!("expected ssh, got {other:?}"),
        }
    }

    #[test]
    fn a_key_path_variable_replaces_the_files_key_secret() {
        let file = "gitops:\n  repository: { url: \"ssh://git@host/r.git\" }\n  authentication:\n    type: ssh\n    ssh_key_secret: from-file\n";
        let env = env(&[("RITMO_GITOPS_SSH_KEY_PATH", "/etc/ritmo/gitops-key")]);

        let settings =
            from_bootstrap(parse_bootstrap("b.yaml", file, &env).unwrap(), &env).unwrap();

        assert!(matches!(
            &settings.targets[0].auth,
            GitAuth::Ssh { key: Some(SecretSetting::File(path)), known_hosts: None, .. }
                if path == Path::new("/etc/ritmo/gitops-key")
        ));
    }

    #[test]
    fn the_seeds_github_app_variables_describe_an_app_on_github_com() {
        let env = env(&[
            ("RITMO_GITOPS_REPO_URL", "https://github.com/acme/config"),
            ("RITMO_GITOPS_AUTH_TYPE", "app"),
            ("RITMO_GITOPS_APP_ID", "123456"),
            ("RITMO_GITOPS_INSTALLATION_ID", "987654"),
            (
                "RITMO_GITOPS_APP_PRIVATE_KEY_PATH",
                "/etc/ritmo/app-key.pem",
            ),
        ]);

        let settings = from_bootstrap(Bootstrap::default(), &env).unwrap();

        match &settings.targets[0].auth {
            GitAuth::GitHubApp {
                app_id,
                installation_id,
                private_key: SecretSetting::File(path),
                api_url,
            } => {
                assert_eq!((*app_id, *installation_id), (123_456, 987_654));
                assert_eq!(path, Path::new("/etc/ritmo/app-key.pem"));
                assert_eq!(api_url, DEFAULT_GITHUB_API_URL);
            }
            other => panic!("expected a GitHub App, got {other:?}"),
        }
    }

    #[test]
    fn a_github_app_on_enterprise_server_keeps_its_api_url() {
        let file = r#"
gitops:
  repository: { url: "https://ghe.example.com/acme/config.git" }
  authentication:
    type: github_app
    github_app:
      app_id: 7
      installation_id: 8
      private_key_secret: arn:aws:secretsmanager:us-east-1:1:secret:app-key
      api_url: https://ghe.example.com/api/v3/
"#;

        let settings = from_bootstrap(
            parse_bootstrap("b.yaml", file, &env(&[])).unwrap(),
            &env(&[]),
        )
        .unwrap();

        assert!(matches!(
            &settings.targets[0].auth,
            GitAuth::GitHubApp { api_url, private_key: SecretSetting::SecretsManager(_), .. }
                if api_url == "https://ghe.example.com/api/v3"
        ));
    }

    #[test]
    fn incomplete_or_unknown_authentication_is_an_error_naming_what_is_missing() {
        let cases = [
            (
                vec![
                    ("RITMO_GITOPS_AUTH_TYPE", "github_app"),
                    ("RITMO_GITOPS_APP_ID", "1"),
                ],
                "installation_id",
            ),
            (
                vec![
                    ("RITMO_GITOPS_AUTH_TYPE", "github_app"),
                    ("RITMO_GITOPS_APP_ID", "1"),
                    ("RITMO_GITOPS_INSTALLATION_ID", "2"),
                ],
                "private key is missing",
            ),
            (
                vec![("RITMO_GITOPS_AUTH_TYPE", "tokn")],
                "unknown authentication type `tokn`",
            ),
            (
                vec![("RITMO_GITOPS_APP_ID", "twelve")],
                "RITMO_GITOPS_APP_ID",
            ),
        ];

        for (vars, expected) in cases {
            let mut vars = vars;
            vars.push(("RITMO_GITOPS_REPO_URL", "https://github.com/acme/config"));
            let error = from_bootstrap(Bootstrap::default(), &env(&vars)).unwrap_err();

            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn two_ways_of_giving_the_same_key_are_refused() {
        let file = "gitops:\n  repository: { url: \"ssh://git@host/r.git\" }\n  authentication:\n    type: ssh\n    ssh_key: abc\n    ssh_key_secret: x\n";

        let error = from_bootstrap(
            parse_bootstrap("b.yaml", file, &env(&[])).unwrap(),
            &env(&[]),
        )
        .unwrap_err();

        assert!(error.to_string().contains("one way only"), "{error}");
        assert!(!error.to_string().contains("abc"), "{error}");
    }

    #[test]
    fn command_line_flags_describe_authentication_on_their_own() {
        let vars = env(&[
            ("RITMO_GITOPS_AUTH_TYPE", "ssh"),
            ("RITMO_GITOPS_SSH_KEY_SECRET_ARN", "deploy-key"),
            (
                "RITMO_GITOPS_SSH_KNOWN_HOSTS_PATH",
                "/etc/ritmo/known_hosts",
            ),
        ]);

        let auth = git_auth_from_variables(&vars).unwrap();

        assert!(matches!(
            auth,
            GitAuth::Ssh {
                key: Some(SecretSetting::SecretsManager(_)),
                known_hosts: Some(KnownHosts::File(_)),
                program: None
            }
        ));
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise_path("/"), "/");
        assert_eq!(normalise_path("/  # Root path in repo"), "/");
        assert_eq!(normalise_path("./config/prod/"), "config/prod");
        assert_eq!(normalise_path(""), "/");
    }

    const PREVIEW_FILE: &str = r#"
gitops:
  repository:
    url: https://github.com/myorg/ritmo-config
  preview:
    enabled: true
    token: ${RITMO_GITOPS_PREVIEW_TOKEN}
  targets:
    - name: staging
      repository:
        url: https://gitlab.example.com/ops/config.git
      preview:
        token_secret: arn:aws:secretsmanager:eu-west-1:123456789012:secret:preview
        api_url: https://gitlab.example.com/api/v4/
    - name: quiet
      repository:
        url: https://github.com/myorg/other
      preview:
        enabled: false
"#;

    #[test]
    fn previews_are_set_per_target_over_the_shared_section() {
        let env = env(&[("RITMO_GITOPS_PREVIEW_TOKEN", "ghp_preview")]);

        let settings =
            from_bootstrap(parse_bootstrap("b.yaml", PREVIEW_FILE, &env).unwrap(), &env).unwrap();

        let preview = |name: &str| &settings.previews[name];
        assert!(preview("default").enabled);
        match &preview("default").credential {
            Some(PreviewCredential::Token(SecretSetting::Value(token))) => {
                assert_eq!(token.expose_secret(), "ghp_preview")
            }
            other => panic!("expected the token from the variable, got {other:?}"),
        }
        assert!(preview("staging").enabled);
        assert!(matches!(
            &preview("staging").credential,
            Some(PreviewCredential::Token(SecretSetting::SecretsManager(arn))) if arn.ends_with(":secret:preview")
        ));
        assert_eq!(
            preview("staging").api_url.as_deref(),
            Some("https://gitlab.example.com/api/v4")
        );
        assert!(!preview("quiet").enabled);
    }

    #[test]
    fn previews_are_off_unless_switched_on() {
        let env = env(&[("RITMO_GITOPS_REPO_URL", "https://github.com/o/r")]);

        let settings = from_bootstrap(Bootstrap::default(), &env).unwrap();

        assert!(!settings.previews["default"].enabled);
        assert!(settings.previews["default"].credential.is_none());
    }

    #[test]
    fn preview_variables_switch_on_the_default_target() {
        let env = env(&[
            ("RITMO_GITOPS_REPO_URL", "https://github.com/o/r"),
            ("RITMO_GITOPS_PREVIEW_ENABLED", "true"),
            (
                "RITMO_GITOPS_PREVIEW_TOKEN_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:t",
            ),
        ]);

        let settings = from_bootstrap(Bootstrap::default(), &env).unwrap();

        let preview = &settings.previews["default"];
        assert!(preview.enabled);
        assert!(matches!(
            preview.credential,
            Some(PreviewCredential::Token(SecretSetting::SecretsManager(_)))
        ));
    }

    #[test]
    fn previews_on_without_a_credential_are_refused_with_what_to_set() {
        let env = env(&[
            ("RITMO_GITOPS_REPO_URL", "https://github.com/o/r"),
            ("RITMO_GITOPS_PREVIEW_ENABLED", "true"),
        ]);

        let error = from_bootstrap(Bootstrap::default(), &env)
            .unwrap_err()
            .to_string();

        assert!(error.contains("target `default`"), "{error}");
        assert!(error.contains("preview.token"), "{error}");
    }

    #[test]
    fn previews_with_the_github_app_need_the_target_to_use_one() {
        let env = env(&[
            ("RITMO_GITOPS_REPO_URL", "https://github.com/o/r"),
            ("RITMO_GITOPS_PREVIEW_ENABLED", "true"),
            ("RITMO_GITOPS_PREVIEW_GITHUB_APP", "true"),
        ]);

        let error = from_bootstrap(Bootstrap::default(), &env)
            .unwrap_err()
            .to_string();

        assert!(error.contains("authentication.type: github_app"), "{error}");
    }

    #[test]
    fn a_preview_token_never_shows_in_debug_output() {
        let env = env(&[("RITMO_GITOPS_PREVIEW_TOKEN", "ghp_topsecretvalue")]);

        let settings =
            from_bootstrap(parse_bootstrap("b.yaml", PREVIEW_FILE, &env).unwrap(), &env).unwrap();

        assert!(!format!("{settings:?}").contains("ghp_topsecretvalue"));
    }
}
