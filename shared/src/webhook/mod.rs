//! Incoming Git webhooks: which provider sent a request, whether it is signed with one of our
//! secrets, and what it asks for (a branch moved, a ping, or something to acknowledge and ignore).
//!
//! Pure: no IO, no clock, no logging. It does not know the HTTP framework (headers come through
//! the small [`Headers`] trait), where the secrets are kept, or which delivery ids were seen before
//! (replay protection lives in `store`); the webhook function wires those together.
//!
//! | provider | event header | signature | delivery id |
//! |---|---|---|---|
//! | GitHub | `X-GitHub-Event` | `X-Hub-Signature-256: sha256=<hex hmac>` | `X-GitHub-Delivery` |
//! | GitLab | `X-Gitlab-Event` | `X-Gitlab-Token: <secret>` | `Idempotency-Key`, else `X-Gitlab-Event-UUID` |
//! | Gitea | `X-Gitea-Event` | `X-Gitea-Signature: <hex hmac>` | `X-Gitea-Delivery` |
//! | Forgejo | `X-Forgejo-Event` | `X-Forgejo-Signature` (or `X-Gitea-Signature`) | `X-Forgejo-Delivery` |
//! | Bitbucket | `X-Event-Key` | `X-Hub-Signature: sha256=<hex hmac>` | `X-Request-UUID` (Cloud), `X-Request-Id` (Data Center) |

mod matching;
mod payload;
mod signature;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use secrecy::SecretString;

use crate::model::Revision;

pub use matching::{
    TargetRef, matching_targets, normalize_branch, normalize_repo_url, repository_path,
    targets_following,
};
pub use payload::parse;
pub use signature::verify;

/// The largest body the webhook function should read: GitHub caps payloads at 25 MB, but a
/// push event that large carries thousands of commits we never look at, and Lambda's own
/// request limit is 6 MB. Bodies over this answer 413.
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Everything that can be wrong with an incoming webhook request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// None of the providers' event headers is present.
    #[error(
        "unknown webhook provider: expected one of `X-GitHub-Event`, `X-Gitlab-Event`, `X-Gitea-Event`, `X-Forgejo-Event` or `X-Event-Key`"
    )]
    UnknownProvider,
    /// The provider's signature (or token) header is absent.
    #[error("missing `{header}` header on a {provider} webhook")]
    MissingSignature {
        provider: Provider,
        header: &'static str,
    },
    /// The signature (or token) does not match any accepted secret, or is malformed.
    #[error("the `{header}` header of a {provider} webhook does not match any accepted secret")]
    BadSignature {
        provider: Provider,
        header: &'static str,
    },
    /// No non-empty secret is configured, so nothing can be verified: every request is refused.
    #[error(
        "no webhook secret is configured, so no delivery can be verified: set `webhook.secret_token` (RITMO_GITOPS_WEBHOOK_SECRET) or RITMO_GITOPS_WEBHOOK_SECRET_ARN"
    )]
    NoSecretConfigured,
    /// The body is larger than the receiver reads ([`MAX_BODY_BYTES`]).
    #[error("the body is over the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    /// The body is not a payload we can read (not JSON, no `payload=` form field, a push
    /// without `ref` or `after`, …).
    #[error("invalid {provider} webhook payload: {reason}")]
    InvalidPayload { provider: Provider, reason: String },
}

impl WebhookError {
    /// Never: a webhook request fails the same way however often it is retried. (The sender
    /// retries on its own schedule; a 5xx would only make it retry something that cannot pass.)
    pub fn is_retryable(&self) -> bool {
        false
    }

    /// A stable machine-readable code for JSON error bodies and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::UnknownProvider => "unknown_provider",
            WebhookError::MissingSignature { .. } => "missing_signature",
            WebhookError::BadSignature { .. } => "bad_signature",
            WebhookError::NoSecretConfigured => "no_secret_configured",
            WebhookError::InvalidPayload { .. } => "invalid_payload",
            WebhookError::PayloadTooLarge { .. } => "payload_too_large",
        }
    }
}

/// Read access to request headers by case-insensitive name.
///
/// Implemented for slices and vectors of `(name, value)` pairs and for string maps, so callers
/// holding an `http::HeaderMap` collect the valid-UTF-8 headers into a `Vec` first.
pub trait Headers {
    /// The first value of the header `name` (ASCII case-insensitive), trimmed.
    fn header(&self, name: &str) -> Option<&str>;
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for [(K, V)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref().trim())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for Vec<(K, V)> {
    fn header(&self, name: &str) -> Option<&str> {
        self.as_slice().header(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Headers for BTreeMap<K, V> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref().trim())
    }
}

impl<K: AsRef<str>, V: AsRef<str>, S> Headers for HashMap<K, V, S> {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(key, _)| key.as_ref().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_ref().trim())
    }
}

/// The Git host that sent a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
    Bitbucket,
}

impl Provider {
    /// Lower-case name, for logs, metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Forgejo => "forgejo",
            Provider::Bitbucket => "bitbucket",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the headers alone say about a request: who sent it, which event, which delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub provider: Provider,
    /// The provider's event name as sent (`push`, `Push Hook`, `repo:push`, …).
    pub event: String,
    /// The provider's id of this delivery, stable across the provider's own retries; the key
    /// for replay protection.
    pub delivery_id: Option<String>,
    /// The `Content-Type` header, when present.
    pub content_type: Option<String>,
}

/// Finds the provider from its event header.
///
/// Gitea and Forgejo also send GitHub's and Gogs' headers for compatibility, so they are
/// recognised first; Forgejo also sends Gitea's, so it comes before Gitea.
pub fn detect<H: Headers + ?Sized>(headers: &H) -> Result<Envelope, WebhookError> {
    let (provider, event) = if let Some(event) = headers.header("x-forgejo-event") {
        (Provider::Forgejo, event)
    } else if let Some(event) = headers.header("x-gitea-event") {
        (Provider::Gitea, event)
    } else if let Some(event) = headers.header("x-gitlab-event") {
        (Provider::GitLab, event)
    } else if let Some(event) = headers.header("x-github-event") {
        (Provider::GitHub, event)
    } else if let Some(event) = headers.header("x-event-key") {
        (Provider::Bitbucket, event)
    } else {
        return Err(WebhookError::UnknownProvider);
    };
    let delivery_headers: &[&str] = match provider {
        Provider::GitHub => &["x-github-delivery"],
        // Idempotency-Key (GitLab 17.4+) is the one id that stays the same across GitLab's
        // retries of one delivery; X-Gitlab-Event-UUID identifies the event. X-Gitlab-Webhook-UUID
        // identifies the hook itself and is the same for every delivery, so it is never used.
        Provider::GitLab => &["idempotency-key", "x-gitlab-event-uuid"],
        Provider::Gitea => &["x-gitea-delivery"],
        Provider::Forgejo => &["x-forgejo-delivery", "x-gitea-delivery"],
        Provider::Bitbucket => &["x-request-uuid", "x-request-id"],
    };
    let delivery_id = delivery_headers
        .iter()
        .find_map(|name| headers.header(name))
        .filter(|id| !id.is_empty())
        .map(str::to_owned);
    Ok(Envelope {
        provider,
        event: event.to_owned(),
        delivery_id,
        content_type: headers.header("content-type").map(str::to_owned),
    })
}

/// A branch that moved: the only thing that leads to a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Branch name without `refs/heads/`.
    pub branch: String,
    /// The new head commit, lower-case hex.
    pub commit: String,
    /// The previous head, when the provider says (absent or all zeros for a new branch).
    pub before: Option<String>,
    /// Every URL the payload gives for the repository (clone, ssh, web), for matching targets.
    pub repo_urls: Vec<String>,
    /// `owner/name` or the provider's equivalent, for logs.
    pub repository: Option<String>,
    /// Who pushed, when the provider says.
    pub pusher: Option<String>,
}

impl Push {
    /// `branch@sha1:<commit>`.
    pub fn revision(&self) -> Revision {
        Revision::Commit {
            branch: self.branch.clone(),
            commit: self.commit.clone(),
        }
    }
}

/// A pull (merge) request opened, pushed to or reopened: what a preview plans and where its
/// result is published. Read from GitHub's `pull_request`, GitLab's `Merge Request Hook` and
/// Gitea's/Forgejo's `pull_request` events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// The pull request's number (GitLab: the merge request's `iid`).
    pub number: u64,
    /// The branch it would merge into, without `refs/heads/`: the one a target must follow.
    pub base_branch: String,
    /// The commit to plan, lower-case hex.
    pub head_commit: String,
    /// The ref of the base repository that holds the head commit, also for a fork's pull
    /// request (`refs/pull/7/head`, `refs/merge-requests/7/head`): where it is fetched from,
    /// so no other repository is ever read.
    pub head_ref: String,
    /// The head commit lives in another repository (a fork).
    pub from_fork: bool,
    /// Every URL the payload gives for the base repository, for matching targets: a result
    /// is only ever published to a target's own repository.
    pub repo_urls: Vec<String>,
    /// `owner/name` of the base repository, where the result is published.
    pub repository: Option<String>,
    /// Who opened or pushed, when the provider says.
    pub author: Option<String>,
}

/// Why a well-formed, correctly signed delivery leads to nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A tag was pushed or deleted.
    TagPush { tag: String },
    /// A branch was deleted.
    BranchDeleted { branch: String },
    /// A ref that is neither a branch nor a tag (`refs/notes/…`, `refs/pull/…`).
    NotABranch { reference: String },
    /// An event other than a push (`issues`, `Merge Request Hook`, …).
    Event { event: String },
    /// A push event that lists no ref changes.
    NoChanges,
    /// A pull request event that proposes no new commit (`closed`, `labeled`, …).
    PullRequestAction { action: String },
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IgnoreReason::TagPush { tag } => write!(f, "tag push `{tag}`"),
            IgnoreReason::BranchDeleted { branch } => write!(f, "branch `{branch}` deleted"),
            IgnoreReason::NotABranch { reference } => {
                write!(f, "ref `{reference}` is not a branch")
            }
            IgnoreReason::Event { event } => write!(f, "event `{event}` is not a push"),
            IgnoreReason::NoChanges => f.write_str("push without ref changes"),
            IgnoreReason::PullRequestAction { action } => {
                write!(f, "pull request action `{action}` proposes no new commit")
            }
        }
    }
}

/// One thing a delivery reports. Most deliveries report exactly one; a Bitbucket push of
/// several refs reports one per ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    Push(Push),
    /// A pull request to preview.
    PullRequest(PullRequest),
    /// GitHub's `ping` on hook creation, Bitbucket Data Center's `diagnostics:ping`.
    Ping,
    Ignored {
        reason: IgnoreReason,
    },
}

/// A verified, parsed webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub envelope: Envelope,
    /// Never empty.
    pub events: Vec<WebhookEvent>,
}

impl Delivery {
    /// The branch pushes this delivery reports.
    pub fn pushes(&self) -> impl Iterator<Item = &Push> {
        self.events.iter().filter_map(|event| match event {
            WebhookEvent::Push(push) => Some(push),
            _ => None,
        })
    }

    /// The pull requests this delivery asks to preview.
    pub fn pull_requests(&self) -> impl Iterator<Item = &PullRequest> {
        self.events.iter().filter_map(|event| match event {
            WebhookEvent::PullRequest(pull) => Some(pull),
            _ => None,
        })
    }

    /// Whether this delivery is a provider's connectivity test.
    pub fn is_ping(&self) -> bool {
        self.events
            .iter()
            .any(|event| matches!(event, WebhookEvent::Ping))
    }

    /// Why nothing in this delivery leads to a plan, when nothing does.
    pub fn ignore_reasons(&self) -> impl Iterator<Item = &IgnoreReason> {
        self.events.iter().filter_map(|event| match event {
            WebhookEvent::Ignored { reason } => Some(reason),
            _ => None,
        })
    }
}

/// Detects the provider, verifies the signature against any of the accepted secrets (current
/// and previous during a rotation), then parses the body.
///
/// The signature is checked before the body is parsed, so unauthenticated input never reaches
/// the JSON parser.
pub fn receive<H: Headers + ?Sized>(
    headers: &H,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<Delivery, WebhookError> {
    let envelope = detect(headers)?;
    verify(envelope.provider, headers, body, secrets)?;
    let events = parse(&envelope, body)?;
    Ok(Delivery { envelope, events })
}

#[cfg(test)]
mod tests;
