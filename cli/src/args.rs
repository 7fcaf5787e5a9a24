//! Command-line arguments: what a person types, parsed by clap.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ritmo",
    version,
    about = "Keep Ritmo's configuration in PostgreSQL identical to a Git repository",
    after_help = "Examples:\n  ritmo gitops validate --repo-path ./ritmo-config\n  ritmo gitops plan --repo-path ./ritmo-config\n  ritmo gitops sync\n  ritmo get jobs -o json\n\nExit codes: 0 ok; 1 the configuration or plan is wrong, or what the command\nnames does not exist; 2 usage or environment problem. With -o json, errors\nare JSON too: {\"error\": \"...\"} on stdout."
)]
pub struct Cli {
    /// Bootstrap file (defaults to $RITMO_GITOPS_BOOTSTRAP, then /etc/ritmo/gitops-bootstrap.yaml)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output format
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Log more (repeat for debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, plan and sync a config repository
    #[command(subcommand)]
    Gitops(Gitops),

    /// Show resources in the database
    #[command(after_help = "Examples:\n  ritmo get jobs\n  ritmo get job backend-service -o json")]
    Get(GetArgs),

    /// Encrypt a credential value for `encrypted_value` (reads the value from stdin)
    #[command(
        after_help = "Examples:\n  printf %s \"$TOKEN\" | ritmo encrypt-credential --name github-pat\n  # --value lands in shell history:\n  ritmo encrypt-credential --name github-pat --value=\"ghp_...\""
    )]
    EncryptCredential(CredentialArgs),

    /// Serve the webhook and the API on one port, with the poller, planner and applier in-process
    #[command(
        after_help = "Examples:\n  DATABASE_URL=postgres://postgres@127.0.0.1/ritmo \\\n    RITMO_GITOPS_REPO_URL=https://github.com/acme/ritmo-config.git \\\n    ritmo serve\n  ritmo serve --listen 0.0.0.0:8080 --config gitops-bootstrap.yaml\n  AWS_ENDPOINT_URL=http://127.0.0.1:5000 ritmo serve   # SQS queues on moto\n\nThen (state changes need the token; see README.md, Security):\n  curl -X POST -H \"Authorization: Bearer $RITMO_API_TOKEN\" \\\n    -H 'Content-Type: application/json' \\\n    http://127.0.0.1:8080/api/v1/gitops/sync\n  curl http://127.0.0.1:8080/api/v1/gitops/status"
    )]
    Serve(ServeArgs),

    /// Decrypt an `encrypted_value` (for debugging; needs the key)
    #[command(
        after_help = "Example:\n  ritmo decrypt-credential --name github-pat --value=\"AES256:...\""
    )]
    DecryptCredential(DecryptArgs),

    /// Re-encrypt every `AES256:` credential value to the newest master key, in place
    #[command(
        after_help = "Add the new key last in the keyring, then:\n  RITMO_MASTER_ENCRYPTION_KEY=\"old:$OLD,new:$NEW\" \\\n    ritmo rotate-credentials --repo-path ./ritmo-config\n  git diff && git commit -am 'rotate credentials to key new'\n\nOnly the rotated values change in the files; commit them yourself. Values not\nbound to their credential's name are bound on the way. Exit 1 when a value\ncould not be rotated."
    )]
    RotateCredentials(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The config repository's working tree (files are edited in place)
    #[arg(long, value_name = "DIR")]
    pub repo_path: PathBuf,
    /// Directory inside the repository holding credentials/
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// Only this credential
    #[arg(long)]
    pub name: Option<String>,
    /// Show what would change, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum Gitops {
    /// Write the bootstrap file, check the repository can be read, validate it and register the target
    #[command(
        after_help = "Examples:\n  printf %s \"$GITHUB_TOKEN\" | ritmo gitops init \\\n    --repo=https://github.com/myorg/ritmo-config --branch=main --token-stdin\n  RITMO_GITOPS_TOKEN=... ritmo gitops init \\\n    --repo=https://github.com/myorg/ritmo-config \\\n    --config ./gitops-bootstrap.yaml\n  ritmo gitops init --repo=https://github.com/myorg/ritmo-config \\\n    --token-secret arn:aws:secretsmanager:...\n  # as the seed; lands in shell history:\n  ritmo gitops init --repo=https://github.com/myorg/ritmo-config \\\n    --token=${GITHUB_TOKEN}\n\nThe file (--config, default /etc/ritmo/gitops-bootstrap.yaml) never holds the\ntoken: it says ${RITMO_GITOPS_TOKEN} or the secret's ARN. A second run with the\nsame answers changes nothing and says so; a file that says something else is\nreplaced only with --force."
    )]
    Init(InitArgs),

    /// Check a repository: syntax, schema, references, secrets; prints every problem with file:line
    #[command(
        after_help = "Examples:\n  ritmo gitops validate --repo-path ./ritmo-config\n  # pre-commit: check uncommitted files\n  ritmo gitops validate --repo-path . --worktree\n  RITMO_GITOPS_TOKEN=... ritmo gitops validate \\\n    --repo https://github.com/acme/ritmo-config.git --auth-type token\n  ritmo gitops validate --repo git@github.com:acme/ritmo-config.git \\\n    --auth-type ssh --ssh-key-path ~/.ssh/deploy \\\n    --ssh-known-hosts ./known_hosts\n  ritmo gitops validate --repo https://github.com/acme/ritmo-config.git \\\n    --auth-type github_app --app-id 123 --installation-id 456 \\\n    --app-private-key-path app.pem\n\nNo resource files at all is an error (exit 2): a wrong --repo-path or --path."
    )]
    Validate(SourceArgs),

    /// Show what a sync would change, Terraform-style
    #[command(
        after_help = "Examples:\n  ritmo gitops plan --repo-path ./ritmo-config -o json\n  # a pull request's head:\n  ritmo gitops plan --repo-path ./ritmo-config --commit 8b5f2a6"
    )]
    Plan(PlanArgs),

    /// Show what would change inside each resource: the field diffs alone (secrets redacted)
    #[command(
        after_help = "Examples:\n  ritmo gitops diff --repo-path ./ritmo-config\n  # actions with changes: [{op, path, before, after}]\n  ritmo gitops diff -o json"
    )]
    Diff(PlanArgs),

    /// Make the database match the repository, in one transaction
    #[command(
        after_help = "Examples:\n  ritmo gitops sync\n  ritmo gitops sync --repo-path ./ritmo-config --dry-run\n  # an emergency: only these two changes, the rest stays pending\n  ritmo gitops sync --only job/backend-service,credential/registry\n  # inside a deny window (or outside every allow window):\n  ritmo gitops sync --override-window\n\n--only refuses (exit 2, nothing written) a selector matching no change of the\nplan and a selection that would leave a reference dangling, naming what to add.\nA manual sync while the target's sync windows are closed is refused (exit 2)\nunless a window in effect says `manual_sync: true` or --override-window is given."
    )]
    Sync(SyncArgs),

    /// Show each target's state: last commit, last sync, drift
    #[command(after_help = "Example:\n  ritmo gitops status -o json")]
    Status(DatabaseArgs),

    /// List past sync runs, newest first
    #[command(after_help = "Example:\n  ritmo gitops history --target default --limit 20")]
    History(HistoryArgs),

    /// Write the database's resources out as a config repository
    #[command(after_help = "Example:\n  ritmo gitops export --output-dir /tmp/ritmo-config")]
    Export(ExportArgs),

    /// Approve a plan waiting for approval and apply it now
    #[command(
        after_help = "Example:\n  ritmo gitops history --target default   # find the pending_approval run\n  ritmo gitops approve 0190f3c2-7d1e-7a3b-9c4d-5e6f7a8b9c0d\n\nRefused (exit 1) when the target was synced since the plan was made: the plan\nis stale, run `ritmo gitops sync` for a fresh one. A SYNC_ID that is no UUID\nis a usage error (exit 2)."
    )]
    Approve(ApproveArgs),

    /// Sync an earlier commit and pin the target there (automatic syncs suspended)
    #[command(
        after_help = "Examples:\n  ritmo gitops rollback --to 8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112\n  # a sync run's commit:\n  ritmo gitops rollback --to 0190f3c2-7d1e-7a3b-9c4d-5e6f7a8b9c0d --target prod\n\nWebhook and schedule syncs leave the target at that commit until\n`ritmo gitops resume`."
    )]
    Rollback(RollbackArgs),

    /// Unpin a rolled-back or suspended target and sync its branch head again
    #[command(after_help = "Example:\n  ritmo gitops resume --target prod")]
    Resume(ResumeArgs),

    /// Stop webhook, schedule and self-heal syncs of a target until `ritmo gitops resume`
    #[command(
        after_help = "Example:\n  ritmo gitops suspend --target prod\n\nManual syncs still run. Webhooks for the target are answered 2xx and recorded as\nskipped; `ritmo gitops status` shows who suspended it and when. A target can also be\nsuspended in the bootstrap file (`sync.suspended: true`) or with RITMO_GITOPS_SUSPENDED=true."
    )]
    Suspend(ResumeArgs),

    /// Take a row labelled `managed-by: gitops` that no target owns into a target's inventory
    #[command(
        after_help = "Example:\n  ritmo gitops adopt plugin/git-scm --target prod\n\nPlans warn (W104) about such rows: they are neither updated nor pruned. Only a resource the\ntarget's branch has can be adopted; the next sync then makes the row match Git, and prunes it\nonce Git drops it."
    )]
    Adopt(AdoptArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The config repository (https://, ssh://, git@host:path, file:// or a local path)
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// Branch to follow
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory inside the repository holding jobs/, credentials/, …
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub path: String,
    /// token, ssh, github_app or none (default: token when a token is given, else none)
    #[arg(long, value_name = "TYPE")]
    pub auth_type: Option<String>,
    /// The token itself (accepted as in the seed, but it lands in shell history: prefer
    /// --token-stdin or RITMO_GITOPS_TOKEN)
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_stdin")]
    pub token: Option<String>,
    /// Read the token from stdin
    #[arg(long)]
    pub token_stdin: bool,
    /// Secrets Manager secret (name or ARN) holding the token, written to the file instead
    #[arg(long, value_name = "ARN")]
    pub token_secret: Option<String>,
    /// ssh private key file (--auth-type ssh)
    #[arg(long, value_name = "FILE")]
    pub ssh_key_path: Option<PathBuf>,
    /// known_hosts file the server's host key must be in (--auth-type ssh)
    #[arg(long, value_name = "FILE")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// GitHub App id (--auth-type github_app)
    #[arg(long, value_name = "ID")]
    pub app_id: Option<u64>,
    /// GitHub App installation id (--auth-type github_app)
    #[arg(long, value_name = "ID")]
    pub installation_id: Option<u64>,
    /// GitHub App private key file (--auth-type github_app)
    #[arg(long, value_name = "FILE")]
    pub app_private_key_path: Option<PathBuf>,
    /// Replace a bootstrap file that says something else
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The resource, as KIND/NAME (plugin/git-scm, job/build, …)
    #[arg(value_name = "KIND/NAME")]
    pub resource: String,
    /// Which target takes it
    #[arg(long, default_value = "default")]
    pub target: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The sync run id (`ritmo gitops history` lists them)
    pub sync_id: String,
    /// Apply now even if the target's sync windows are closed (a plan `waiting_for_window`);
    /// the run records who overrode the window
    #[arg(long)]
    pub override_window: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// A commit id (7-40 hex digits) or the id of a sync run whose commit to go back to
    #[arg(long, value_name = "COMMIT|SYNC_ID")]
    pub to: String,
    /// Which target
    #[arg(long, default_value = "default")]
    pub target: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Which target
    #[arg(long, default_value = "default")]
    pub target: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args, Clone)]
pub struct SourceArgs {
    /// A local repository or directory
    #[arg(long, value_name = "DIR", conflicts_with = "repo")]
    pub repo_path: Option<PathBuf>,

    /// A repository URL (file://, https://, ssh://)
    #[arg(long, value_name = "URL")]
    pub repo: Option<String>,

    /// Branch to read (default: the target's, else HEAD)
    #[arg(long)]
    pub branch: Option<String>,

    /// Directory inside the repository holding jobs/, credentials/, …
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,

    /// Read the files on disk instead of the branch's last commit
    #[arg(long)]
    pub worktree: bool,

    /// Which configured target (default: `default`)
    #[arg(long, default_value = "default")]
    pub target: String,

    // Boxed: eleven options would make every command enum carrying SourceArgs large.
    #[command(flatten)]
    pub auth: Box<AuthArgs>,
}

/// How to authenticate to `--repo`, as the bootstrap file's `authentication:` block says it.
/// Any of these replaces the target's configured authentication as a whole.
#[derive(Debug, Args, Clone, Default)]
#[command(next_help_heading = "Repository authentication (replaces the target's)")]
pub struct AuthArgs {
    /// token, ssh, github_app or none. A token's value is read from RITMO_GITOPS_TOKEN, never
    /// from the command line
    #[arg(long, value_name = "TYPE")]
    pub auth_type: Option<String>,
    /// Secrets Manager secret (name or ARN) holding the token
    #[arg(long, value_name = "ARN")]
    pub token_secret: Option<String>,
    /// ssh private key file
    #[arg(long, value_name = "FILE", conflicts_with = "ssh_key_secret")]
    pub ssh_key_path: Option<PathBuf>,
    /// Secrets Manager secret holding the ssh private key
    #[arg(long, value_name = "ARN")]
    pub ssh_key_secret: Option<String>,
    /// known_hosts file the server's host key must be in (default: ssh's own files)
    #[arg(long, value_name = "FILE")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// ssh client to run (default: `ssh` on PATH)
    #[arg(long, value_name = "PROGRAM")]
    pub ssh_program: Option<PathBuf>,
    /// GitHub App id
    #[arg(long, value_name = "ID")]
    pub app_id: Option<u64>,
    /// GitHub App installation id
    #[arg(long, value_name = "ID")]
    pub installation_id: Option<u64>,
    /// GitHub App private key file (PEM)
    #[arg(long, value_name = "FILE", conflicts_with = "app_private_key_secret")]
    pub app_private_key_path: Option<PathBuf>,
    /// Secrets Manager secret holding the GitHub App private key
    #[arg(long, value_name = "ARN")]
    pub app_private_key_secret: Option<String>,
    /// GitHub API (default https://api.github.com; GitHub Enterprise Server: https://HOST/api/v3)
    #[arg(long, value_name = "URL")]
    pub github_api_url: Option<String>,
}

impl AuthArgs {
    /// The options given, under the names of the variables they stand for.
    pub fn as_variables(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("RITMO_GITOPS_AUTH_TYPE", self.auth_type.clone()),
            ("RITMO_GITOPS_TOKEN_SECRET_ARN", self.token_secret.clone()),
            ("RITMO_GITOPS_SSH_KEY_PATH", path(&self.ssh_key_path)),
            (
                "RITMO_GITOPS_SSH_KEY_SECRET_ARN",
                self.ssh_key_secret.clone(),
            ),
            (
                "RITMO_GITOPS_SSH_KNOWN_HOSTS_PATH",
                path(&self.ssh_known_hosts),
            ),
            ("RITMO_GITOPS_SSH_PROGRAM", path(&self.ssh_program)),
            ("RITMO_GITOPS_APP_ID", self.app_id.map(|id| id.to_string())),
            (
                "RITMO_GITOPS_INSTALLATION_ID",
                self.installation_id.map(|id| id.to_string()),
            ),
            (
                "RITMO_GITOPS_APP_PRIVATE_KEY_PATH",
                path(&self.app_private_key_path),
            ),
            (
                "RITMO_GITOPS_APP_PRIVATE_KEY_SECRET_ARN",
                self.app_private_key_secret.clone(),
            ),
            ("RITMO_GITOPS_GITHUB_API_URL", self.github_api_url.clone()),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
        .collect()
    }
}

#[derive(Debug, Args, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL connection string
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Keep resources that left Git instead of deleting them
    #[arg(long)]
    pub no_prune: bool,
    /// One line per resource, without the field diff under it
    #[arg(long)]
    pub no_diff: bool,
    /// Plan this commit (full or abbreviated id; a pull request's head, say) against the live
    /// state instead of the branch head: a preview, never applied
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Plan and record, change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even a plan that needs approval (many deletes, credential deletes)
    #[arg(long)]
    pub auto_approve: bool,
    /// Scan the whole tree instead of only the files changed since the last applied commit
    #[arg(long)]
    pub full: bool,
    /// Apply only these changes of the plan (repeat the flag, or separate with commas); the
    /// others stay pending and the last applied commit does not move
    #[arg(long, value_name = "KIND/NAME[,KIND/NAME…]")]
    pub only: Vec<String>,
    /// Sync now although the target's sync windows are closed to manual syncs; the run
    /// records who overrode them
    #[arg(long)]
    pub override_window: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Only this target
    #[arg(long)]
    pub target: Option<String>,
    /// How many runs
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    /// Only runs started before this time (RFC 3339): the `next` of the previous page
    #[arg(long, value_name = "TIME")]
    pub before: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Directory to write (created; must be empty)
    #[arg(long, value_name = "DIR")]
    pub output_dir: PathBuf,
    /// Accepted for compatibility: credentials are always exported as stored (ciphertext or reference)
    #[arg(long)]
    pub encrypt_credentials: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// jobs, credentials, plugins, webhooks, workerpools, environments (or singular)
    pub kind: String,
    /// One resource's name
    pub name: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The credential's name; binds the ciphertext to it so it cannot be copied to another
    #[arg(long)]
    pub name: Option<String>,
    /// The value (default: read from stdin, which keeps it out of shell history)
    #[arg(long)]
    pub value: Option<String>,
    /// Encrypt with this KMS key (`KMS:` format, needs --name) instead of the master key
    #[arg(long, value_name = "KEY", requires = "name")]
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The credential's name: a ciphertext bound to a name decrypts only under that name
    #[arg(long)]
    pub name: Option<String>,
    /// The `encrypted_value` to decrypt (default: read from stdin)
    #[arg(long, value_name = "CIPHERTEXT")]
    pub value: Option<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Use SQS at this endpoint (moto) instead of in-process queues
    // Values hidden: an exported-but-empty variable printed `[env: AWS_ENDPOINT_URL=]`.
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub aws_endpoint_url: Option<String>,
    /// The plan queue's URL on that endpoint (default: create `ritmo-plan.fifo`)
    #[arg(
        long,
        env = "RITMO_GITOPS_PLAN_QUEUE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub plan_queue_url: Option<String>,
    /// The apply queue's URL on that endpoint (default: create `ritmo-apply.fifo`)
    #[arg(
        long,
        env = "RITMO_GITOPS_APPLY_QUEUE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub apply_queue_url: Option<String>,
    /// Seconds between poller ticks (default: the shortest target interval; at least 5)
    #[arg(long, value_name = "SECONDS")]
    pub poll_interval: Option<u64>,
    /// Allow state changes without a token (no RITMO_API_TOKEN): loopback addresses only, and
    /// any local process (or user) may then sync, approve, roll back and resume
    #[arg(long)]
    pub insecure_local: bool,
    /// Let web pages from this origin call the API (e.g. https://ops.example.com; repeatable;
    /// also RITMO_API_ALLOWED_ORIGINS)
    #[arg(long = "allow-origin", value_name = "ORIGIN", value_parser = origin_arg)]
    pub allow_origins: Vec<String>,
    /// Answer under this host name too, besides the listen address and localhost (a DNS name,
    /// a reverse proxy's; repeatable; also RITMO_API_ALLOWED_HOSTS)
    #[arg(long = "allow-host", value_name = "NAME", value_parser = host_arg)]
    pub allow_hosts: Vec<String>,
}

fn origin_arg(text: &str) -> Result<String, String> {
    ritmo::config::parse_origin(text).ok_or_else(|| {
        format!("`{text}` is not an origin: give scheme and host, e.g. https://ops.example.com")
    })
}

fn host_arg(text: &str) -> Result<String, String> {
    ritmo::config::parse_host_name(text).ok_or_else(|| {
        format!("`{text}` is not a host name: give the name alone, e.g. ritmo.internal")
    })
}
