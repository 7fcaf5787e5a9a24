//! Webhook intake: verify, detect, refuse replays, and turn a push into one plan request per
//! target tracking the pushed repository and branch. The answer is a [`WebhookOutcome`]; the
//! HTTP adapters (the `webhook` function's router, which Lambda and `ritmo serve` both run)
//! map it to a status and a body. Nothing here speaks HTTP.

use std::collections::HashSet;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};

use crate::crypto::{self, SecretsManager};
use crate::message::{PlanRequest, PullRequestPreview, Trigger};
use crate::metrics::{Metric, MetricsBatch, UNKNOWN_TARGET};
use crate::services::Services;
use crate::webhook::{
    self, Delivery, MAX_BODY_BYTES, WebhookError, matching_targets, repository_path,
    targets_following,
};

/// What became of one webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A push tracked by targets: one plan request queued for each.
    Accepted {
        targets: Vec<String>,
        /// The first request's `branch@sha1:<commit>`.
        revision: Option<String>,
        delivery_id: Option<String>,
        /// Tracking targets that are suspended: nothing queued for them, and the delivery
        /// records them as skipped.
        skipped: Vec<String>,
    },
    /// A delivery id seen before (a replay, or the sender's retry of a delivery already
    /// taken): nothing queued.
    Duplicate { delivery_id: String },
    /// The provider's connectivity test (GitHub's `ping`, Bitbucket's `diagnostics:ping`).
    Ping,
    /// Verified, but nothing to plan: a tag push, a deleted branch, another event, a branch
    /// or repository no target tracks.
    Ignored { reason: String },
    /// Verified, but GitOps is switched off (`gitops.enabled: false`,
    /// `RITMO_GITOPS_ENABLED=false`): nothing recorded or queued.
    Disabled,
    /// The webhook is switched off (`webhook.enabled: false`,
    /// `RITMO_GITOPS_WEBHOOK_ENABLED=false`): refused before the request is read.
    WebhookDisabled,
    /// No secret is configured, so no delivery can be verified: refused. A configuration
    /// state, not a fault of the request or of the service.
    NoSecret,
    /// The request is wrong, and sending it again cannot make it pass: over the size limit,
    /// no known provider, a missing or wrong signature, a payload that cannot be read.
    Rejected(WebhookError),
    /// Something the intake depends on failed; see [`WebhookFailure::is_retryable`].
    Failed(WebhookFailure),
}

/// Why an accepted-looking delivery could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFailure {
    /// The webhook secret could not be read (Secrets Manager); `retryable` when the cause is
    /// passing (throttling, the network) rather than a denied or missing secret.
    SecretUnreadable { retryable: bool },
    /// The delivery id could not be recorded (the database).
    NotRecorded,
    /// The plan requests could not be queued; the delivery id was forgotten again, so the
    /// sender's retry is not taken for a replay.
    NotQueued,
}

impl WebhookFailure {
    /// Whether the sender's retry may pass without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        match self {
            WebhookFailure::SecretUnreadable { retryable } => retryable,
            WebhookFailure::NotRecorded | WebhookFailure::NotQueued => true,
        }
    }

    /// A stable machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            WebhookFailure::SecretUnreadable { .. } => "secret_unavailable",
            WebhookFailure::NotRecorded | WebhookFailure::NotQueued => "unavailable",
        }
    }

    /// What to tell the sender (never a cause that could carry a secret).
    pub fn message(self) -> &'static str {
        match self {
            WebhookFailure::SecretUnreadable { .. } => "the webhook secret cannot be read",
            WebhookFailure::NotRecorded => "the delivery could not be recorded; retry later",
            WebhookFailure::NotQueued => "the plan request could not be queued; retry later",
        }
    }
}

impl WebhookOutcome {
    /// A stable machine-readable name: the outcome's (`accepted`, `duplicate`, `ping`,
    /// `ignored`, `disabled`, `webhook_disabled`, `no_secret_configured`), or the refusal's
    /// or failure's code.
    pub fn code(&self) -> &'static str {
        match self {
            WebhookOutcome::Accepted { .. } => "accepted",
            WebhookOutcome::Duplicate { .. } => "duplicate",
            WebhookOutcome::Ping => "ping",
            WebhookOutcome::Ignored { .. } => "ignored",
            WebhookOutcome::Disabled => "disabled",
            WebhookOutcome::WebhookDisabled => "webhook_disabled",
            WebhookOutcome::NoSecret => WebhookError::NoSecretConfigured.code(),
            WebhookOutcome::Rejected(error) => error.code(),
            WebhookOutcome::Failed(failure) => failure.code(),
        }
    }

    fn metric(&self) -> Metric {
        match self {
            WebhookOutcome::Accepted { .. } => Metric::WebhookAccepted,
            WebhookOutcome::Duplicate { .. }
            | WebhookOutcome::Ping
            | WebhookOutcome::Ignored { .. }
            | WebhookOutcome::Disabled => Metric::WebhookIgnored,
            WebhookOutcome::WebhookDisabled
            | WebhookOutcome::NoSecret
            | WebhookOutcome::Rejected(_)
            | WebhookOutcome::Failed(_) => Metric::WebhookRejected,
        }
    }
}

/// Verifies and accepts one webhook delivery (see `ritmo::webhook` for the providers), in
/// this order:
///
/// - the webhook switched off → [`WebhookOutcome::WebhookDisabled`];
/// - body over the limit, unknown provider, missing or wrong signature, malformed body →
///   [`WebhookOutcome::Rejected`]; no secret configured → [`WebhookOutcome::NoSecret`];
/// - a signature matching neither the current nor the previous version of a Secrets Manager
///   secret → the secret is read again past the cache (at most once per refresh interval per
///   process, so forged requests cannot drive AWS calls) and the delivery checked once more;
/// - GitOps switched off → [`WebhookOutcome::Disabled`], nothing recorded or queued;
/// - a delivery id seen before → [`WebhookOutcome::Duplicate`], nothing queued;
/// - ping → [`WebhookOutcome::Ping`];
/// - tag push, branch deletion, other event, other branch, unknown repository →
///   [`WebhookOutcome::Ignored`];
/// - a push tracked by targets → one plan request each → [`WebhookOutcome::Accepted`];
/// - a pull request into a branch followed by targets that preview pull requests → one
///   preview plan request each (never applied), also [`WebhookOutcome::Accepted`];
///   suspended targets get none and are recorded on the delivery as skipped;
/// - the secret store, the database or the queue unreachable → [`WebhookOutcome::Failed`]
///   (when the queue fails, the delivery id is forgotten so the retry is not a replay).
pub async fn accept_webhook(
    services: &Services,
    headers: &[(String, String)],
    body: &[u8],
) -> WebhookOutcome {
    let outcome = accept(services, headers, body).await;
    let metric = outcome.metric();
    let targets: &[String] = match &outcome {
        WebhookOutcome::Accepted { targets, .. } => targets,
        _ => &[],
    };
    if targets.is_empty() {
        MetricsBatch::new(UNKNOWN_TARGET)
            .put(metric, 1.0)
            .emit_to(&services.metrics);
    }
    for target in targets {
        MetricsBatch::new(target)
            .put(metric, 1.0)
            .emit_to(&services.metrics);
    }
    outcome
}

async fn accept(services: &Services, headers: &[(String, String)], body: &[u8]) -> WebhookOutcome {
    if services.settings.webhook_disabled {
        return WebhookOutcome::WebhookDisabled;
    }
    if body.len() > MAX_BODY_BYTES {
        return WebhookOutcome::Rejected(WebhookError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    let source = WebhookSecret::of(services).await;
    if matches!(source, WebhookSecret::Missing) {
        tracing::warn!("webhook refused: no webhook secret is configured");
        return WebhookOutcome::NoSecret;
    }
    let secrets = match source.values().await {
        Ok(secrets) => secrets,
        Err(error) => return secret_unavailable(&error),
    };
    let delivery = match webhook::receive(headers, body, &secrets) {
        Ok(delivery) => delivery,
        Err(mismatch @ WebhookError::BadSignature { .. }) => {
            match source.refreshed().await {
                Ok(Some(fresh)) => match webhook::receive(headers, body, &fresh) {
                    Ok(delivery) => {
                        tracing::info!(
                            "webhook verified with the secret read again after a rotation"
                        );
                        delivery
                    }
                    Err(error) => return reject(error),
                },
                Ok(None) => return reject(mismatch),
                Err(error) => {
                    // The signature matched nothing we know; the sender learns only that.
                    tracing::error!(%error, "cannot read the webhook secret again");
                    return reject(mismatch);
                }
            }
        }
        Err(error) => return reject(error),
    };
    let provider = delivery.envelope.provider;
    let delivery_id = delivery.envelope.delivery_id.clone();
    tracing::info!(%provider, event = %delivery.envelope.event, delivery_id = delivery_id.as_deref().unwrap_or(""), "webhook verified");
    if !services.settings.enabled {
        tracing::info!("webhook ignored: gitops is disabled");
        return WebhookOutcome::Disabled;
    }

    let plans = plan_requests(services, &delivery);
    let first_target = plans.first().map(|r| r.target.as_str());
    // Read with the delivery id, in the same round trip, for `without_suspended`.
    let mut suspended_in_database = None;
    if let Some(id) = &delivery_id {
        let names: Vec<&str> = if delivery.is_ping() {
            Vec::new()
        } else {
            plans.iter().map(|r| r.target.as_str()).collect()
        };
        let recorded = {
            match services.database().await {
                Ok(store) => store
                    .record_delivery_reading_suspended(id, first_target, &names)
                    .await
                    .map_err(Into::into),
                Err(error) => Err(error),
            }
        };
        match recorded {
            Ok((true, suspended)) => suspended_in_database = Some(suspended),
            Ok((false, _)) => {
                tracing::info!(delivery_id = %id, "webhook delivery seen before: ignored");
                return WebhookOutcome::Duplicate {
                    delivery_id: id.clone(),
                };
            }
            Err(error) => {
                tracing::error!(error = %crate::telemetry::error_chain(&error), "cannot record the webhook delivery");
                return WebhookOutcome::Failed(WebhookFailure::NotRecorded);
            }
        }
    }

    if delivery.is_ping() {
        return WebhookOutcome::Ping;
    }
    if plans.is_empty() {
        return WebhookOutcome::Ignored {
            reason: ignore_reason(services, &delivery),
        };
    }
    let (plans, skipped) = match without_suspended(
        services,
        plans,
        delivery_id.as_deref(),
        suspended_in_database,
    )
    .await
    {
        Ok(split) => split,
        Err(error) => {
            tracing::error!(error = %crate::telemetry::error_chain(&error), "cannot read which targets are suspended");
            forget(services, delivery_id.as_deref()).await;
            return WebhookOutcome::Failed(WebhookFailure::NotRecorded);
        }
    };
    if plans.is_empty() {
        tracing::info!(
            ?skipped,
            "webhook skipped: every tracking target is suspended"
        );
        return WebhookOutcome::Accepted {
            revision: None,
            targets: Vec::new(),
            delivery_id,
            skipped,
        };
    }
    if let Err(error) = services.queues.send_plans(&plans).await {
        tracing::error!(%error, "cannot queue the plan requests");
        forget(services, delivery_id.as_deref()).await;
        return WebhookOutcome::Failed(WebhookFailure::NotQueued);
    }
    let targets: Vec<String> = plans.iter().map(|r| r.target.clone()).collect();
    tracing::info!(?targets, "webhook accepted");
    WebhookOutcome::Accepted {
        revision: plans.iter().find_map(|r| r.revision.clone()),
        targets,
        delivery_id,
        skipped,
    }
}

/// Forgets a delivery id we could not act on, so the sender's retry is not taken for a replay.
async fn forget(services: &Services, delivery_id: Option<&str>) {
    if let Some(id) = delivery_id
        && let Ok(store) = services.database().await
        && let Err(forget) = store.forget_delivery(id).await
    {
        tracing::warn!(error = %forget, "cannot forget the delivery id");
    }
}

/// Splits off the requests of suspended targets (by the settings or the database) and records
/// them on the delivery as skipped: a suspended target is neither planned nor healed, but the
/// sender is still answered 2xx, since retrying would change nothing. `suspended_in_database`
/// is what was read with the delivery id, when it was; otherwise it is read here.
async fn without_suspended(
    services: &Services,
    plans: Vec<PlanRequest>,
    delivery_id: Option<&str>,
    suspended_in_database: Option<HashSet<String>>,
) -> crate::Result<(Vec<PlanRequest>, Vec<String>)> {
    let store = services.database().await?;
    let mut suspended = match suspended_in_database {
        Some(suspended) => suspended,
        None => {
            let names: Vec<&str> = plans.iter().map(|r| r.target.as_str()).collect();
            store.suspended_targets(&names).await?
        }
    };
    suspended.extend(
        services
            .settings
            .targets
            .iter()
            .filter(|t| t.controls.suspended)
            .map(|t| t.name.clone()),
    );
    let (skipped, plans): (Vec<PlanRequest>, Vec<PlanRequest>) = plans
        .into_iter()
        .partition(|request| suspended.contains(&request.target));
    let mut skipped: Vec<String> = skipped.into_iter().map(|r| r.target).collect();
    skipped.dedup();
    if !skipped.is_empty()
        && let Some(id) = delivery_id
    {
        store.record_skipped_delivery(id, &skipped).await?;
    }
    Ok((plans, skipped))
}

fn reject(error: WebhookError) -> WebhookOutcome {
    tracing::warn!(code = error.code(), %error, "webhook refused");
    match error {
        WebhookError::NoSecretConfigured => WebhookOutcome::NoSecret,
        error => WebhookOutcome::Rejected(error),
    }
}

/// One plan request per (push, tracking target).
fn plan_requests(services: &Services, delivery: &Delivery) -> Vec<PlanRequest> {
    let now = Utc::now();
    let targets = services
        .settings
        .targets
        .iter()
        .map(|t| (t.name.as_str(), t.repo_url.as_str(), t.branch.as_str()));
    let mut requests: Vec<PlanRequest> = Vec::new();
    for push in delivery.pushes() {
        for name in matching_targets(push, targets.clone()) {
            let mut request = PlanRequest::new(name, Trigger::Webhook, now)
                .with_revision(push.revision().to_string());
            if let Some(id) = &delivery.envelope.delivery_id {
                request = request.with_delivery_id(id.clone());
            }
            if let Some(pusher) = &push.pusher {
                request = request.with_actor(pusher.clone());
            }
            if !requests.contains(&request) {
                requests.push(request);
            }
        }
    }
    for pull in delivery.pull_requests() {
        for name in targets_following(&pull.repo_urls, &pull.base_branch, targets.clone()) {
            if let Some(request) = preview_request(services, delivery, pull, name, now)
                && !requests.contains(&request)
            {
                requests.push(request);
            }
        }
    }
    requests
}

/// The preview of `pull` by target `name`, when the target previews pull requests. Where the
/// result goes is the target's own repository, read from its URL: the payload only says which
/// targets it concerns, so a forged or mistaken payload cannot aim a post elsewhere.
fn preview_request(
    services: &Services,
    delivery: &Delivery,
    pull: &webhook::PullRequest,
    name: &str,
    now: chrono::DateTime<Utc>,
) -> Option<PlanRequest> {
    services.settings.preview(name)?;
    let target = services.settings.target(name)?;
    let Some(repository) = repository_path(&target.repo_url) else {
        tracing::warn!(
            target = name,
            "pull request not previewed: the target's repository URL names no owner/repository to post to"
        );
        return None;
    };
    let preview = PullRequestPreview {
        provider: delivery.envelope.provider.as_str().to_string(),
        repository,
        number: pull.number,
        head_commit: pull.head_commit.clone(),
        head_ref: pull.head_ref.clone(),
        from_fork: pull.from_fork,
    };
    let mut request =
        PlanRequest::new(name, Trigger::Webhook, now).with_pull_request(&target.branch, preview);
    if let Some(id) = &delivery.envelope.delivery_id {
        request = request.with_delivery_id(id.clone());
    }
    if let Some(author) = &pull.author {
        request = request.with_actor(author.clone());
    }
    Some(request)
}

/// Why a verified delivery leads to no plan, in words for the reply.
fn ignore_reason(services: &Services, delivery: &Delivery) -> String {
    if let Some(reason) = delivery.ignore_reasons().next() {
        return reason.to_string();
    }
    if let Some(pull) = delivery.pull_requests().next() {
        let targets = services
            .settings
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.repo_url.as_str(), t.branch.as_str()));
        let following = targets_following(&pull.repo_urls, &pull.base_branch, targets);
        return if following.is_empty() {
            format!(
                "pull request #{} into `{}`: no target follows that branch of this repository",
                pull.number, pull.base_branch
            )
        } else {
            format!(
                "pull request #{} into `{}`: no target previews pull requests (set `preview.enabled` on {})",
                pull.number,
                pull.base_branch,
                following
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
    }
    match delivery.pushes().next() {
        Some(push) => {
            let tracked = services.settings.targets.iter().any(|t| {
                let urls = push
                    .repo_urls
                    .iter()
                    .filter_map(|url| webhook::normalize_repo_url(url));
                let target = webhook::normalize_repo_url(&t.repo_url);
                urls.into_iter().any(|url| Some(url) == target)
            });
            if tracked {
                format!("no target tracks branch `{}`", push.branch)
            } else {
                format!(
                    "no target tracks repository `{}`",
                    push.repository.as_deref().unwrap_or("unknown")
                )
            }
        }
        None => "nothing to plan".to_string(),
    }
}

fn secret_unavailable(error: &crypto::CryptoError) -> WebhookOutcome {
    tracing::error!(%error, "cannot read the webhook secret");
    WebhookOutcome::Failed(WebhookFailure::SecretUnreadable {
        retryable: error.is_retryable(),
    })
}

/// Where the webhook secret comes from: the settings (fixed), Secrets Manager, or nowhere.
enum WebhookSecret<'a> {
    Configured(&'a SecretString),
    Managed {
        manager: &'a SecretsManager,
        id: &'a str,
    },
    Missing,
}

impl<'a> WebhookSecret<'a> {
    async fn of(services: &'a Services) -> WebhookSecret<'a> {
        if let Some(secret) = &services.settings.webhook_secret
            && !secret.expose_secret().is_empty()
        {
            return WebhookSecret::Configured(secret);
        }
        match &services.settings.webhook_secret_id {
            Some(id) => WebhookSecret::Managed {
                manager: services.secrets_manager().await,
                id,
            },
            None => WebhookSecret::Missing,
        }
    }

    /// The accepted secrets: the configured value, or the secret's `AWSCURRENT` and
    /// `AWSPREVIOUS` versions (cached for the TTL), so deliveries signed with either pass
    /// while a rotation reaches the sender.
    async fn values(&self) -> Result<Vec<SecretString>, crypto::CryptoError> {
        match self {
            WebhookSecret::Configured(secret) => Ok(vec![(*secret).clone()]),
            WebhookSecret::Managed { manager, id } => manager.current_and_previous(id).await,
            WebhookSecret::Missing => Ok(Vec::new()),
        }
    }

    /// After a signature matched none of [`values`](Self::values): the versions read again
    /// past the cache (a rotation newer than the cache), or `None` when there is nothing to
    /// re-read or the process did so less than the refresh interval ago.
    async fn refreshed(&self) -> Result<Option<Vec<SecretString>>, crypto::CryptoError> {
        match self {
            WebhookSecret::Managed { manager, id } => {
                manager.refresh_current_and_previous(id).await
            }
            WebhookSecret::Configured(_) | WebhookSecret::Missing => Ok(None),
        }
    }
}
