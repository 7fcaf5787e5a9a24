//! Notifications for the people on call: a sync failed, drift was found, a plan waits for
//! approval. Sent to an SNS topic and/or a Slack-compatible incoming webhook whose URL is the
//! `encrypted_value` of a `Credential` resource (so the URL, a bearer secret, lives in Git as
//! ciphertext and never in logs or errors).
//!
//! Delivery is best effort: every failure is logged and counted (`NotificationFailed`), and
//! never fails the sync that raised the event. This module does not decide *when* to notify;
//! the pipeline steps do (`planner`, `applier`, `poller`).

use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_smithy_http_client::{Connector, tls};
use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_types::body::SdkBody;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{
    Destination, EventKind, NotificationSettings, SecretSetting, Settings, Subscription,
};
use crate::metrics::{Metric, MetricsBatch, MetricsSink};
use crate::source::spec::commit_of;

/// Bound on one delivery, so a dead endpoint cannot hold a sync for long.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// SNS subjects are at most 100 characters.
const SNS_SUBJECT_MAX: usize = 100;
/// Diagnostics quoted in a failure message; the rest are counted.
const QUOTED_DIAGNOSTICS: usize = 5;

/// Something worth telling a person about.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A sync run failed (validation errors, an unreadable repository, a failed apply).
    SyncFailed {
        target: String,
        sync_id: Option<Uuid>,
        revision: Option<String>,
        error: String,
        /// Rendered diagnostics (`path:line:col: error[CODE]: message`), the first few.
        diagnostics: Vec<String>,
    },
    /// Rows of the target were changed outside a sync.
    DriftDetected {
        target: String,
        /// `Kind/name` of each drifted resource.
        resources: Vec<String>,
        /// Whether a sync restoring Git's version was requested.
        self_heal: bool,
        /// The commit last applied to the target: Git's version of the drifted rows.
        applied_commit: Option<String>,
    },
    /// A plan waits for someone to approve it.
    PendingApproval {
        target: String,
        sync_id: Uuid,
        revision: String,
        reason: Option<String>,
        summary: String,
        counts: Counts,
    },
    /// A plan was applied.
    SyncSucceeded {
        target: String,
        sync_id: Uuid,
        /// `None` for a working tree.
        commit: Option<String>,
        counts: Counts,
    },
    /// Automatic syncs of the target were suspended.
    Suspended {
        target: String,
        actor: String,
        /// The commit the target stays at while suspended.
        applied_commit: Option<String>,
    },
    /// A plan waits for the target's sync window to open.
    WaitingForWindow {
        target: String,
        sync_id: Uuid,
        revision: String,
        /// `None` when no opening was found (only deny windows that never end).
        next_opening: Option<chrono::DateTime<chrono::Utc>>,
        counts: Counts,
    },
}

/// What a plan does, by action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
    pub unchanged: usize,
}

impl Event {
    pub fn target(&self) -> &str {
        match self {
            Event::SyncFailed { target, .. }
            | Event::DriftDetected { target, .. }
            | Event::PendingApproval { target, .. }
            | Event::SyncSucceeded { target, .. }
            | Event::Suspended { target, .. }
            | Event::WaitingForWindow { target, .. } => target,
        }
    }

    /// What subscriptions name this event by.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::SyncFailed { .. } => EventKind::SyncFailed,
            Event::DriftDetected { .. } => EventKind::DriftDetected,
            Event::PendingApproval { .. } => EventKind::PendingApproval,
            Event::SyncSucceeded { .. } => EventKind::SyncSucceeded,
            Event::Suspended { .. } => EventKind::Suspended,
            Event::WaitingForWindow { .. } => EventKind::WaitingForWindow,
        }
    }

    /// The event's name, as in its JSON `event` field.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The commit id the event is about, when there is one: the bare id, also for the events
    /// that carry a revision (`main@sha1:<id>`), so a receiver's `commit` is always comparable
    /// with `git rev-parse`.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Event::SyncFailed { revision, .. } => revision.as_deref().and_then(commit_of),
            Event::PendingApproval { revision, .. } | Event::WaitingForWindow { revision, .. } => {
                commit_of(revision)
            }
            Event::SyncSucceeded { commit, .. } => commit.as_deref(),
            Event::DriftDetected { applied_commit, .. }
            | Event::Suspended { applied_commit, .. } => applied_commit.as_deref(),
        }
    }

    fn sync_id(&self) -> Option<Uuid> {
        match self {
            Event::SyncFailed { sync_id, .. } => *sync_id,
            Event::PendingApproval { sync_id, .. }
            | Event::SyncSucceeded { sync_id, .. }
            | Event::WaitingForWindow { sync_id, .. } => Some(*sync_id),
            Event::DriftDetected { .. } | Event::Suspended { .. } => None,
        }
    }

    /// The counts a reader needs: actions of a plan, drifted resources, error diagnostics.
    fn counts(&self) -> serde_json::Value {
        match self {
            Event::PendingApproval { counts, .. }
            | Event::SyncSucceeded { counts, .. }
            | Event::WaitingForWindow { counts, .. } => {
                serde_json::to_value(counts).unwrap_or_default()
            }
            Event::SyncFailed { diagnostics, .. } => {
                serde_json::json!({ "errors": diagnostics.len() })
            }
            Event::DriftDetected { resources, .. } => {
                serde_json::json!({ "drifted": resources.len() })
            }
            Event::Suspended { .. } => serde_json::json!({}),
        }
    }

    /// The link to the event's plan under the API's base URL (`api_url`), when both exist.
    pub fn plan_url(&self, api_url: Option<&str>) -> Option<String> {
        Some(format!(
            "{}/api/v1/gitops/plans/{}",
            api_url?.trim_end_matches('/'),
            self.sync_id()?
        ))
    }

    /// The JSON body a webhook receives: what happened, to which target and commit, the
    /// counts, the plan's link and the text a person reads. Built from the event's own fields,
    /// none of which holds a secret.
    pub fn payload(&self, api_url: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "event": self.name(),
            "target": self.target(),
            "commit": self.commit(),
            "sync_id": self.sync_id(),
            "counts": self.counts(),
            "plan_url": self.plan_url(api_url),
            "text": self.text_with_link(api_url),
        })
    }

    /// [`Event::text`], then the plan's link when there is one.
    pub fn text_with_link(&self, api_url: Option<&str>) -> String {
        let mut text = self.text();
        if let Some(url) = self.plan_url(api_url) {
            text.push_str(&format!("\nPlan: {url}"));
        }
        text
    }

    /// A one-line summary (the SNS subject, Slack's first line).
    pub fn subject(&self) -> String {
        let subject = match self {
            Event::SyncFailed { target, .. } => format!("Ritmo GitOps: sync of `{target}` failed"),
            Event::DriftDetected {
                target, resources, ..
            } => format!(
                "Ritmo GitOps: drift in `{target}` ({} {})",
                resources.len(),
                if resources.len() == 1 {
                    "resource"
                } else {
                    "resources"
                }
            ),
            Event::PendingApproval { target, .. } => {
                format!("Ritmo GitOps: a plan of `{target}` waits for approval")
            }
            Event::SyncSucceeded { target, .. } => format!("Ritmo GitOps: `{target}` synced"),
            Event::Suspended { target, .. } => {
                format!("Ritmo GitOps: automatic syncs of `{target}` suspended")
            }
            Event::WaitingForWindow { target, .. } => {
                format!("Ritmo GitOps: a plan of `{target}` waits for its sync window")
            }
        };
        truncate(&subject, SNS_SUBJECT_MAX)
    }

    /// The message: the subject, then what happened and what to do about it.
    pub fn text(&self) -> String {
        let mut text = self.subject();
        text.push('\n');
        match self {
            Event::SyncFailed {
                sync_id,
                revision,
                error,
                diagnostics,
                ..
            } => {
                text.push_str(&format!(
                    "Sync {} at {}: {error}",
                    sync_id.map_or_else(|| "-".to_string(), |id| id.to_string()),
                    revision.as_deref().unwrap_or("(unknown revision)")
                ));
                for line in diagnostics.iter().take(QUOTED_DIAGNOSTICS) {
                    text.push_str("\n  ");
                    text.push_str(line);
                }
                if diagnostics.len() > QUOTED_DIAGNOSTICS {
                    text.push_str(&format!(
                        "\n  … and {} more",
                        diagnostics.len() - QUOTED_DIAGNOSTICS
                    ));
                }
            }
            Event::DriftDetected {
                target,
                resources,
                self_heal,
                ..
            } => {
                text.push_str(&format!("Changed outside Git: {}", resources.join(", ")));
                text.push('\n');
                if *self_heal {
                    text.push_str("Self-heal is on: a sync restoring Git's version was requested.");
                } else {
                    text.push_str(&format!(
                        "Self-heal is off: run `ritmo gitops sync --target {target}` to restore \
                         Git's version, or commit the change to Git."
                    ));
                }
            }
            Event::PendingApproval {
                sync_id,
                revision,
                reason,
                summary,
                ..
            } => {
                text.push_str(&format!("Sync {sync_id} at {revision}: {summary}"));
                if let Some(reason) = reason {
                    text.push_str(&format!("\nWhy: {reason}"));
                }
                text.push_str(&format!("\nApprove: ritmo gitops approve {sync_id}"));
            }
            Event::SyncSucceeded {
                sync_id,
                commit,
                counts,
                ..
            } => {
                text.push_str(&format!(
                    "Sync {sync_id} at {}: {} created, {} updated, {} deleted, {} unchanged.",
                    commit.as_deref().unwrap_or("(working tree)"),
                    counts.create,
                    counts.update,
                    counts.delete,
                    counts.unchanged
                ));
            }
            Event::WaitingForWindow {
                sync_id,
                revision,
                next_opening,
                ..
            } => {
                text.push_str(&format!(
                    "Sync {sync_id} at {revision} is applied when the window opens ({}). \
                     Apply it now: ritmo gitops approve {sync_id} --override-window",
                    next_opening
                        .map_or_else(|| "no opening found".to_string(), |at| at.to_rfc3339())
                ));
            }
            Event::Suspended { target, actor, .. } => {
                text.push_str(&format!(
                    "Suspended by {actor}: no polling, planning or self-heal until \
                     `ritmo gitops resume --target {target}`."
                ));
            }
        }
        text
    }
}

/// HMAC-SHA256 of `body` under `secret`, lower-case hex: what a receiver recomputes to check
/// the `x-ritmo-signature: sha256=<hex>` header.
pub fn sign(secret: &SecretString, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

enum PostFailure {
    Request(String),
    Status(u16),
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Why one delivery failed. Never carries the Slack URL.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("cannot publish to SNS topic `{topic}`: {message}")]
    Sns { topic: String, message: String },
    #[error("the Slack webhook answered HTTP {status}")]
    SlackStatus { status: u16 },
    #[error("cannot post to the Slack webhook: {message}")]
    SlackRequest { message: String },
    #[error("the Slack webhook credential `{name}` is not in the database: sync it first")]
    CredentialMissing { name: String },
    #[error("the Slack webhook credential `{name}` has no `encrypted_value`")]
    CredentialNotEncrypted { name: String },
    #[error("the Slack webhook credential `{name}` cannot be read: {reason}")]
    CredentialUnreadable { name: String, reason: String },
    #[error("the webhook answered HTTP {status}")]
    WebhookStatus { status: u16 },
    #[error("cannot post to the webhook: {message}")]
    WebhookRequest { message: String },
    #[error("the webhook's signing secret cannot be read: {reason}")]
    SigningSecret { reason: String },
}

impl NotifyError {
    /// Notifications are not retried (the next event brings the next message); this tells
    /// whether a retry could have helped, for the log.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NotifyError::Sns { .. }
                | NotifyError::SlackRequest { .. }
                | NotifyError::WebhookRequest { .. }
                | NotifyError::SlackStatus {
                    status: 429 | 500..=599
                }
                | NotifyError::WebhookStatus {
                    status: 429 | 500..=599
                }
        )
    }
}

/// How one event's deliveries went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifyReport {
    pub delivered: usize,
    pub failed: usize,
}

/// The configured channels, built once per cold start (see [`Services`]).
#[derive(Debug)]
pub struct Notifier {
    settings: NotificationSettings,
    sns: Option<aws_sdk_sns::Client>,
    /// The AWS SDKs' own HTTPS connector: the functions link it already, so posting to Slack
    /// adds no second HTTP client. It follows no redirects, which could take the message (and,
    /// in its URL, a secret) elsewhere. It trusts the system's CA certificates, or only those of
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (rustls-native-certs, read once per process):
    /// how an operator makes it trust a receiver behind a private CA (README, Notifications).
    /// Built by the first post: building it reads every CA certificate of the system, which
    /// a sync that posts nothing (most of them) should not pay for.
    http: OnceLock<Connector>,
    failures: AtomicU64,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new(NotificationSettings::default(), None)
    }
}

impl Notifier {
    /// Channels from `settings`, with `sns` as the SNS client (tests point one at moto).
    pub fn new(settings: NotificationSettings, sns: Option<aws_sdk_sns::Client>) -> Notifier {
        Notifier {
            settings,
            sns,
            http: OnceLock::new(),
            failures: AtomicU64::new(0),
        }
    }

    /// Channels from the bootstrap settings; the SNS client comes from the default AWS
    /// configuration (`AWS_ENDPOINT_URL` honoured) and is only built when a topic is set.
    pub async fn from_settings(settings: &Settings) -> Notifier {
        let subscribed_sns = settings.targets.iter().any(|target| {
            target
                .controls
                .notifications
                .iter()
                .any(|s| matches!(s.destination, Destination::Sns { .. }))
        });
        let sns = if settings.notifications.sns_topic_arn.is_some() || subscribed_sns {
            Some(aws_sdk_sns::Client::new(&crate::aws::config().await))
        } else {
            None
        };
        Notifier::new(settings.notifications.clone(), sns)
    }

    fn http(&self) -> &Connector {
        self.http.get_or_init(|| {
            Connector::builder()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .build()
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.settings.is_enabled()
    }

    /// Deliveries that failed since this notifier was built.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    async fn publish_sns(&self, topic: &str, event: &Event) -> Result<(), NotifyError> {
        use aws_sdk_sns::types::MessageAttributeValue;

        let error = |message: String| NotifyError::Sns {
            topic: topic.to_string(),
            message,
        };
        let client = self
            .sns
            .as_ref()
            .ok_or_else(|| error("no SNS client is configured".into()))?;
        let attribute = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| error(e.to_string()))
        };
        let publish = client
            .publish()
            .topic_arn(topic)
            .subject(event.subject())
            .message(event.text_with_link(self.settings.api_url.as_deref()))
            .message_attributes("event", attribute(event.name())?)
            .message_attributes("target", attribute(event.target())?)
            .send();
        match tokio::time::timeout(DELIVERY_TIMEOUT, publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(error(
                aws_sdk_sns::error::DisplayErrorContext(&e).to_string(),
            )),
            Err(_) => Err(error(format!(
                "no answer within {}s",
                DELIVERY_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn post_slack(&self, url: &SecretString, event: &Event) -> Result<(), NotifyError> {
        let text = event.text_with_link(self.settings.api_url.as_deref());
        let body = serde_json::json!({ "text": text }).to_string();
        self.post(url.expose_secret(), body, Vec::new())
            .await
            .map_err(|failure| match failure {
                PostFailure::Request(message) => NotifyError::SlackRequest { message },
                PostFailure::Status(status) => NotifyError::SlackStatus { status },
            })
    }

    /// Posts the event's [`Event::payload`] to `url`, signed with `secret`.
    async fn post_webhook(
        &self,
        url: &str,
        secret: &SecretString,
        event: &Event,
    ) -> Result<(), NotifyError> {
        let body = event.payload(self.settings.api_url.as_deref()).to_string();
        let signature = format!("sha256={}", sign(secret, body.as_bytes()));
        self.post(
            url,
            body,
            vec![
                ("x-ritmo-signature", signature),
                ("x-ritmo-event", event.name().to_string()),
            ],
        )
        .await
        .map_err(|failure| match failure {
            PostFailure::Request(message) => NotifyError::WebhookRequest { message },
            PostFailure::Status(status) => NotifyError::WebhookStatus { status },
        })
    }

    /// One JSON POST; errors never quote the URL (a Slack URL is a secret).
    async fn post(
        &self,
        url: &str,
        body: String,
        headers: Vec<(&'static str, String)>,
    ) -> Result<(), PostFailure> {
        let mut request = aws_smithy_runtime_api::http::Request::new(SdkBody::from(body));
        request
            .set_method("POST")
            .and_then(|()| request.set_uri(url))
            .map_err(|e| PostFailure::Request(crate::telemetry::error_chain(&e)))?;
        request
            .headers_mut()
            .insert("content-type", "application/json");
        for (name, value) in headers {
            request.headers_mut().insert(name, value);
        }
        let response = tokio::time::timeout(DELIVERY_TIMEOUT, self.http().call(request))
            .await
            .map_err(|_| {
                PostFailure::Request(format!("no answer within {}s", DELIVERY_TIMEOUT.as_secs()))
            })?
            .map_err(|e| PostFailure::Request(crate::telemetry::error_chain(&e)))?;
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(PostFailure::Status(status))
        }
    }
}

impl Notifier {
    /// Sends `event` on every configured channel, the Slack URL from `slack_url` (given the
    /// credential's name). Never fails: each failed delivery is logged (without secrets) and
    /// counted, in [`Notifier::failures`] and the `NotificationFailed` metric.
    ///
    /// The deployment-wide channels (`sns_topic_arn`, `slack_webhook_credential`) carry the
    /// events they always did (failures, drift, approvals); `subscriptions` (the target's)
    /// carry the events they name. A signing secret is read with `signing_secret`.
    pub async fn send<F, Fut, G, Gut>(
        &self,
        event: &Event,
        subscriptions: &[Subscription],
        slack_url: F,
        signing_secret: G,
        metrics: &MetricsSink,
    ) -> NotifyReport
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<SecretString, NotifyError>>,
        G: Fn(SecretSetting) -> Gut,
        Gut: Future<Output = Result<SecretString, NotifyError>>,
    {
        let notifier = self;
        let mut report = NotifyReport::default();
        let mut outcomes: Vec<(&'static str, Result<(), NotifyError>)> = Vec::new();
        let deployment_wide = matches!(
            event.kind(),
            EventKind::SyncFailed | EventKind::DriftDetected | EventKind::PendingApproval
        );
        if deployment_wide {
            if let Some(topic) = &notifier.settings.sns_topic_arn {
                outcomes.push(("sns", notifier.publish_sns(topic, event).await));
            }
            if let Some(name) = &notifier.settings.slack_webhook_credential {
                let posted = match slack_url(name.clone()).await {
                    Ok(url) => notifier.post_slack(&url, event).await,
                    Err(error) => Err(error),
                };
                outcomes.push(("slack", posted));
            }
        }
        for subscription in subscriptions
            .iter()
            .filter(|s| s.events.contains(&event.kind()))
        {
            let outcome = match &subscription.destination {
                Destination::Sns { topic_arn } => {
                    ("sns", notifier.publish_sns(topic_arn, event).await)
                }
                Destination::Slack { credential } => (
                    "slack",
                    match slack_url(credential.clone()).await {
                        Ok(url) => notifier.post_slack(&url, event).await,
                        Err(error) => Err(error),
                    },
                ),
                Destination::Webhook {
                    url,
                    signing_secret: setting,
                } => (
                    "webhook",
                    match signing_secret(setting.clone()).await {
                        Ok(secret) => notifier.post_webhook(url, &secret, event).await,
                        Err(error) => Err(error),
                    },
                ),
            };
            outcomes.push(outcome);
        }
        for (channel, outcome) in outcomes {
            match outcome {
                Ok(()) => {
                    report.delivered += 1;
                    tracing::info!(channel, event = event.name(), "notification sent");
                }
                Err(error) => {
                    report.failed += 1;
                    notifier.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        channel,
                        event = event.name(),
                        retryable = error.is_retryable(),
                        error = %error,
                        "notification not delivered"
                    );
                }
            }
        }
        if report.failed > 0 {
            MetricsBatch::new(event.target())
                .put(Metric::NotificationFailed, report.failed as f64)
                .property("event", event.name())
                .emit_to(metrics);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drift_subject_counts_in_the_singular_and_the_plural() {
        let drift = |n: usize| Event::DriftDetected {
            target: "default".into(),
            resources: vec!["Job/a".into(); n],
            self_heal: false,
            applied_commit: None,
        };

        assert_eq!(
            drift(1).subject(),
            "Ritmo GitOps: drift in `default` (1 resource)"
        );
        assert_eq!(
            drift(2).subject(),
            "Ritmo GitOps: drift in `default` (2 resources)"
        );
    }

    fn pending() -> Event {
        Event::PendingApproval {
            target: "prod".into(),
            sync_id: Uuid::nil(),
            revision: "main@sha1:abc1234".into(),
            reason: Some("branch `main` requires approval".into()),
            summary: "Plan: 1 to create, 0 to update, 0 to delete, 3 unchanged.".into(),
            counts: Counts {
                create: 1,
                unchanged: 3,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn a_pending_approval_message_says_how_to_approve() {
        let text = pending().text();

        assert!(text.starts_with("Ritmo GitOps: a plan of `prod` waits for approval\n"));
        assert!(
            text.contains("Why: branch `main` requires approval"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("ritmo gitops approve {}", Uuid::nil())),
            "{text}"
        );
    }

    #[test]
    fn a_failure_message_quotes_the_first_diagnostics_and_counts_the_rest() {
        let event = Event::SyncFailed {
            target: "prod".into(),
            sync_id: None,
            revision: Some("main@sha1:abc1234".into()),
            error: "the repository has validation errors".into(),
            diagnostics: (0..7)
                .map(|i| format!("jobs/j{i}.yaml:1:1: error"))
                .collect(),
        };

        let text = event.text();

        assert!(text.contains("jobs/j4.yaml"), "{text}");
        assert!(!text.contains("jobs/j5.yaml"), "{text}");
        assert!(text.ends_with("… and 2 more"), "{text}");
    }

    #[test]
    fn drift_messages_say_whether_self_heal_acts() {
        let event = |self_heal| Event::DriftDetected {
            target: "prod".into(),
            resources: vec!["Job/backend".into()],
            self_heal,
            applied_commit: None,
        };

        assert!(event(true).text().contains("Self-heal is on"));
        assert!(
            event(false)
                .text()
                .contains("ritmo gitops sync --target prod")
        );
    }

    #[test]
    fn subjects_fit_the_sns_limit() {
        let event = Event::SyncFailed {
            target: "t".repeat(200),
            sync_id: None,
            revision: None,
            error: String::new(),
            diagnostics: Vec::new(),
        };

        let subject = event.subject();

        assert_eq!(subject.chars().count(), SNS_SUBJECT_MAX);
        assert!(subject.ends_with('…'));
    }

    #[test]
    fn events_serialise_with_their_name() {
        let value = serde_json::to_value(pending()).unwrap();

        assert_eq!(value["event"], "pending_approval");
        assert_eq!(value["target"], "prod");
    }

    #[test]
    fn client_errors_are_not_retryable_but_throttling_is() {
        assert!(!NotifyError::SlackStatus { status: 404 }.is_retryable());
        assert!(NotifyError::SlackStatus { status: 429 }.is_retryable());
        assert!(
            !NotifyError::CredentialMissing {
                name: "slack".into()
            }
            .is_retryable()
        );
    }

    /// A one-request HTTP server answering `response`; returns its port and the request it read
    /// (head and body).
    fn answer_once(response: String) -> (u16, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut request, mut length) = (String::new(), 0);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap();
                }
                request.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream.write_all(response.as_bytes()).unwrap();
            request + &String::from_utf8(body).unwrap()
        });
        (port, served)
    }

    #[tokio::test]
    async fn the_slack_post_is_json_and_a_redirect_is_not_followed() {
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        elsewhere.set_nonblocking(true).unwrap();
        let location = format!("http://{}/stolen", elsewhere.local_addr().unwrap());
        let (port, served) = answer_once(format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n"
        ));
        let url = SecretString::from(format!("http://127.0.0.1:{port}/services/T0/B0/secret"));

        let outcome = Notifier::default().post_slack(&url, &pending()).await;

        assert!(
            matches!(outcome, Err(NotifyError::SlackStatus { status: 302 })),
            "{outcome:?}"
        );
        let request = served.join().unwrap();
        assert!(
            request.starts_with("POST /services/T0/B0/secret HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        assert!(request.contains(r#"{"text":"Ritmo GitOps: a plan of `prod` waits"#));
        assert!(elsewhere.accept().is_err(), "the redirect was followed");
    }

    #[tokio::test]
    async fn every_event_is_posted_signed_to_a_subscribed_webhook_without_its_secret() {
        use hmac::{Hmac, Mac};
        let secret = "webhook-signing-secret-42";
        let sync_id = Uuid::from_u128(7);
        let counts = Counts {
            create: 2,
            update: 1,
            delete: 0,
            unchanged: 4,
        };
        let events = [
            Event::SyncSucceeded {
                target: "prod".into(),
                sync_id,
                commit: Some("abc1234".into()),
                counts,
            },
            Event::SyncFailed {
                target: "prod".into(),
                sync_id: Some(sync_id),
                revision: Some("main@sha1:abc1234".into()),
                error: "validation errors".into(),
                diagnostics: vec!["jobs/a.yaml:1:1: error".into()],
            },
            Event::DriftDetected {
                target: "prod".into(),
                resources: vec!["Job/a".into()],
                self_heal: false,
                applied_commit: Some("abc1234".into()),
            },
            Event::PendingApproval {
                target: "prod".into(),
                sync_id,
                revision: "main@sha1:abc1234".into(),
                reason: None,
                summary: "Plan: …".into(),
                counts,
            },
            Event::Suspended {
                target: "prod".into(),
                actor: "jane".into(),
                applied_commit: Some("abc1234".into()),
            },
            Event::WaitingForWindow {
                target: "prod".into(),
                sync_id,
                revision: "main@sha1:abc1234".into(),
                next_opening: None,
                counts,
            },
        ];
        let notifier = Notifier::new(
            NotificationSettings {
                api_url: Some("https://ritmo.example.com".into()),
                ..NotificationSettings::default()
            },
            None,
        );

        for event in &events {
            let (port, served) =
                answer_once("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".into());
            let subscriptions = [Subscription {
                events: vec![event.kind()],
                destination: Destination::Webhook {
                    url: format!("http://127.0.0.1:{port}/hook"),
                    signing_secret: SecretSetting::Value(SecretString::from(secret)),
                },
            }];

            let report = notifier
                .send(
                    event,
                    &subscriptions,
                    |_| async { Err(NotifyError::SlackStatus { status: 0 }) },
                    |setting| async move {
                        match setting {
                            SecretSetting::Value(value) => Ok(value),
                            _ => Err(NotifyError::SigningSecret {
                                reason: "not a value".into(),
                            }),
                        }
                    },
                    &MetricsSink::capture(),
                )
                .await;

            assert_eq!(report.delivered, 1, "{}", event.name());
            let request = served.join().unwrap();
            let (head, body) = request.split_once("\r\n\r\n").unwrap();
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(body.as_bytes());
            let expected = hex::encode(mac.finalize().into_bytes());
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("x-ritmo-signature: sha256={expected}")),
                "{head}"
            );
            assert!(!request.contains(secret), "{request}");
            let payload: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(payload["event"], event.name());
            assert_eq!(payload["target"], "prod");
            // The bare id, also of the events that carry a revision (`main@sha1:…`), and the
            // applied commit of drift and suspension.
            assert_eq!(payload["commit"], "abc1234", "{payload}");
            if event.sync_id().is_some() {
                assert_eq!(
                    payload["plan_url"],
                    format!("https://ritmo.example.com/api/v1/gitops/plans/{sync_id}")
                );
            }
            assert!(payload["counts"].is_object(), "{payload}");
        }
    }

    #[tokio::test]
    async fn an_event_nobody_subscribed_to_is_not_sent() {
        let subscriptions = [Subscription {
            events: vec![EventKind::SyncFailed],
            destination: Destination::Webhook {
                // Nothing listens here: a post would count as a failure.
                url: "http://127.0.0.1:9/hook".into(),
                signing_secret: SecretSetting::Value(SecretString::from("s")),
            },
        }];

        let report = Notifier::default()
            .send(
                &pending(),
                &subscriptions,
                |_| async { Err(NotifyError::SlackStatus { status: 0 }) },
                |_| async { Err(NotifyError::SlackStatus { status: 0 }) },
                &MetricsSink::capture(),
            )
            .await;

        assert_eq!(report, NotifyReport::default());
    }

    #[tokio::test]
    async fn a_failed_slack_post_does_not_quote_the_url() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let notifier = Notifier::default();

        for url in [
            format!("http://127.0.0.1:{port}/services/T0/B0/secret"),
            "http://exa mple.com/services/T0/B0/secret".to_string(),
        ] {
            let outcome = notifier
                .post_slack(&SecretString::from(url), &pending())
                .await;

            let Err(error @ NotifyError::SlackRequest { .. }) = outcome else {
                panic!("{outcome:?}");
            };
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }
}
