//! Webhook intake: verify, detect, refuse replays, and turn a push into one plan request per
//! target tracking the pushed repository and branch. The HTTP adapters (Lambda, `ritmo serve`)
//! only move headers, body and the [`WebhookReply`] in and out.

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::crypto::{self, SecretsManager};
use crate::message::{PlanRequest, Trigger};
use crate::metrics::{Metric, MetricsBatch, UNKNOWN_TARGET};
use crate::services::Services;
use crate::webhook::{self, Delivery, MAX_BODY_BYTES, WebhookError, matching_targets};

/// The HTTP answer to a webhook delivery: a status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookReply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl WebhookReply {
    fn new(status: u16, body: Value) -> Self {
        WebhookReply { status, body }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Self {
        WebhookReply::new(status, json!({"error": code, "message": message.into()}))
    }

    fn ignored(reason: impl Into<String>) -> Self {
        WebhookReply::new(202, json!({"status": "ignored", "reason": reason.into()}))
    }
}

/// Verifies and accepts one webhook delivery (see `ritmo::webhook` for the providers).
///
/// - body over the limit → 413; no secret configured → 500; unknown provider or malformed
///   body → 400; missing or wrong signature → 401; all with `{"error", "message"}`;
/// - a signature matching neither the current nor the previous version of a Secrets Manager
///   secret → the secret is read again past the cache (at most once per refresh interval per
///   process, so forged requests cannot drive AWS calls) and the delivery checked once more;
/// - a delivery id seen before → 200 `{"status": "duplicate"}`, nothing queued;
/// - ping → 200 `{"status": "ok"}`;
/// - tag push, branch deletion, other event, other branch, unknown repository → 202
///   `{"status": "ignored", "reason"}`;
/// - a push tracked by targets → one plan request each → 202
///   `{"status": "accepted", "targets": [...], "revision"}`;
/// - the queue unreachable → 503 (the sender retries; the delivery id is forgotten so the
///   retry is not taken for a replay).
pub async fn accept_webhook(
    services: &Services,
    headers: &[(String, String)],
    body: &[u8],
) -> WebhookReply {
    let reply = accept(services, headers, body).await;
    let metric = match reply.status {
        200 | 202 if reply.body["status"] == "accepted" => Metric::WebhookAccepted,
        200 | 202 => Metric::WebhookIgnored,
        _ => Metric::WebhookRejected,
    };
    let targets: Vec<String> = reply.body["targets"]
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if targets.is_empty() {
        MetricsBatch::new(UNKNOWN_TARGET)
            .put(metric, 1.0)
            .emit_to(&services.metrics);
    }
    for target in &targets {
        MetricsBatch::new(target)
            .put(metric, 1.0)
            .emit_to(&services.metrics);
    }
    reply
}

async fn accept(services: &Services, headers: &[(String, String)], body: &[u8]) -> WebhookReply {
    if body.len() > MAX_BODY_BYTES {
        return WebhookReply::error(
            413,
            "payload_too_large",
            format!("the body is over the {MAX_BODY_BYTES}-byte limit"),
        );
    }
    let source = WebhookSecret::of(services).await;
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
                    Err(error) => {
                        tracing::warn!(code = error.code(), %error, "webhook refused");
                        return reject(&error);
                    }
                },
                Ok(None) => {
                    tracing::warn!(code = mismatch.code(), error = %mismatch, "webhook refused");
                    return reject(&mismatch);
                }
                Err(error) => {
                    // The signature matched nothing we know; the sender learns only that.
                    tracing::error!(%error, "cannot read the webhook secret again");
                    return reject(&mismatch);
                }
            }
        }
        Err(error) => {
            tracing::warn!(code = error.code(), %error, "webhook refused");
            return reject(&error);
        }
    };
    let provider = delivery.envelope.provider;
    let delivery_id = delivery.envelope.delivery_id.clone();
    tracing::info!(%provider, event = %delivery.envelope.event, delivery_id = delivery_id.as_deref().unwrap_or(""), "webhook verified");

    let plans = plan_requests(services, &delivery);
    let first_target = plans.first().map(|r| r.target.as_str());
    if let Some(id) = &delivery_id {
        let recorded = {
            match services.database().await {
                Ok(store) => store
                    .record_delivery(id, first_target)
                    .await
                    .map_err(Into::into),
                Err(error) => Err(error),
            }
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(delivery_id = %id, "webhook delivery seen before: ignored");
                return WebhookReply::new(200, json!({"status": "duplicate", "delivery_id": id}));
            }
            Err(error) => {
                tracing::error!(error = %crate::telemetry::error_chain(&error), "cannot record the webhook delivery");
                return WebhookReply::error(
                    503,
                    "unavailable",
                    "the delivery could not be recorded; retry later",
                );
            }
        }
    }

    if delivery.is_ping() {
        return WebhookReply::new(200, json!({"status": "ok", "event": "ping"}));
    }
    if plans.is_empty() {
        return WebhookReply::ignored(ignore_reason(services, &delivery));
    }
    if let Err(error) = services.queues.send_plans(&plans).await {
        tracing::error!(%error, "cannot queue the plan requests");
        if let Some(id) = &delivery_id
            && let Ok(store) = services.database().await
            && let Err(forget) = store.forget_delivery(id).await
        {
            tracing::warn!(error = %forget, "cannot forget the delivery id");
        }
        return WebhookReply::error(
            503,
            "unavailable",
            "the plan request could not be queued; retry later",
        );
    }
    let targets: Vec<&str> = plans.iter().map(|r| r.target.as_str()).collect();
    let revisions: Vec<&str> = plans.iter().filter_map(|r| r.revision.as_deref()).collect();
    tracing::info!(?targets, "webhook accepted");
    WebhookReply::new(
        202,
        json!({
            "status": "accepted",
            "targets": targets,
            "revision": revisions.first(),
            "delivery_id": delivery_id,
        }),
    )
}

fn reject(error: &WebhookError) -> WebhookReply {
    WebhookReply::error(error.status_code(), error.code(), error.to_string())
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
    requests
}

/// Why a verified delivery leads to no plan, in words for the reply.
fn ignore_reason(services: &Services, delivery: &Delivery) -> String {
    if let Some(reason) = delivery.ignore_reasons().next() {
        return reason.to_string();
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

fn secret_unavailable(error: &crypto::CryptoError) -> WebhookReply {
    tracing::error!(%error, "cannot read the webhook secret");
    let status = if error.is_retryable() { 503 } else { 500 };
    WebhookReply::error(
        status,
        "secret_unavailable",
        "the webhook secret cannot be read",
    )
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
