//! The JSON messages the functions pass each other through the SQS FIFO queues: a
//! [`PlanRequest`] on the plan queue, an [`ApplyRequest`] on the apply queue. The plan itself
//! lives in Postgres; a message only says which one to work on.
//!
//! Compatibility: messages carry no version number. Old and new functions coexist during a
//! deploy by additive change only: decoding ignores fields it does not know, every field added
//! after the first release is optional (omitted when absent, defaulted when missing), and an
//! unknown trigger decodes as [`Trigger::Unknown`] instead of failing. A change that cannot be
//! made that way gets a new message type on a new queue.
//!
//! FIFO keys: the group id is the target, so one target's requests run one at a time and in
//! order while targets run in parallel; the deduplication id makes SQS drop a second request
//! for the same work within its five-minute window.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// SQS's limit on group and deduplication ids.
pub const MAX_SQS_ID_LEN: usize = 128;

/// A message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("invalid {kind} message: {source}")]
    Decode {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl MessageError {
    /// Never: the same bytes fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// What asked for a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A verified push webhook.
    Webhook,
    /// The poller saw the branch move.
    Schedule,
    /// `POST /api/v1/gitops/sync`.
    Manual,
    /// The poller found drifted rows and self-heal is on.
    Drift,
    /// `ritmo gitops rollback`.
    Rollback,
    /// `ritmo gitops sync`, run in-process.
    Cli,
    /// A trigger added by a newer version of the sender.
    #[serde(other)]
    Unknown,
}

impl Trigger {
    /// Every trigger a run can be stored with ([`Trigger::Unknown`] is only ever decoded).
    pub const ALL: [Trigger; 6] = [
        Trigger::Webhook,
        Trigger::Schedule,
        Trigger::Manual,
        Trigger::Drift,
        Trigger::Rollback,
        Trigger::Cli,
    ];

    /// A trigger the store can record: an unknown one (from a newer sender) is handled as a
    /// manual request.
    pub fn known(self) -> Trigger {
        match self {
            Trigger::Unknown => {
                tracing::warn!("a plan request with an unknown trigger is handled as manual");
                Trigger::Manual
            }
            known => known,
        }
    }

    /// The name in messages and in `sync_runs.trigger`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Webhook => "webhook",
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Drift => "drift",
            Trigger::Rollback => "rollback",
            Trigger::Cli => "cli",
            Trigger::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Trigger {
    type Err = UnknownTrigger;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == s)
            .ok_or_else(|| UnknownTrigger(s.to_string()))
    }
}

/// A stored trigger name this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown trigger `{0}`")]
pub struct UnknownTrigger(pub String);

/// Plan this target (at this revision, when known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub target: String,
    pub trigger: Trigger,
    /// `branch@sha1:<commit>` when the sender knows it (webhook, poller, rollback); otherwise
    /// the planner resolves the branch head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The provider's delivery id, for webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub requested_at: DateTime<Utc>,
    /// Plan and record, never apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// Who asked: an IAM principal, a CLI user, a pusher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// A pull request to preview: the planner plans its head commit and records nothing, and
    /// no apply request can come of it. The flag travels in the message itself, so a replayed
    /// message is still a preview.
    // Boxed: most requests have none, and every queued request would carry its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<Box<PullRequestPreview>>,
    /// Apply only these changes of the plan (`KIND/NAME`, Argo CD's selective sync); the
    /// others stay pending and the target's last applied commit does not move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// A person applies this manual sync although the target's sync windows are closed to
    /// manual syncs; the run records who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_window: Option<bool>,
}

/// The pull request a [`PlanRequest`] previews, and where its result is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestPreview {
    /// `github`, `gitlab`, `gitea` or `forgejo`.
    pub provider: String,
    /// `owner/name` of the target's repository (never the fork's).
    pub repository: String,
    pub number: u64,
    /// The commit planned, lower-case hex.
    pub head_commit: String,
    /// The base repository's ref holding the head commit (`refs/pull/7/head`).
    pub head_ref: String,
    pub from_fork: bool,
}

impl PlanRequest {
    /// A request with no revision, delivery, dry-run flag or actor.
    pub fn new(target: impl Into<String>, trigger: Trigger, requested_at: DateTime<Utc>) -> Self {
        PlanRequest {
            target: target.into(),
            trigger,
            revision: None,
            delivery_id: None,
            requested_at,
            dry_run: None,
            actor: None,
            pull_request: None,
            only: None,
            override_window: None,
        }
    }

    /// This request narrowed to the changes of `selectors` (`KIND/NAME`).
    pub fn with_only(mut self, selectors: Vec<String>) -> Self {
        self.only = Some(selectors);
        self
    }

    /// This manual request applied whatever the sync windows say, as `actor` recorded.
    pub fn with_override_window(mut self, override_window: bool) -> Self {
        self.override_window = override_window.then_some(true);
        self
    }

    /// Whether the person asked to apply despite closed sync windows.
    pub fn overrides_window(&self) -> bool {
        self.override_window.unwrap_or(false)
    }

    /// This request as a preview of `pull`, at its head commit on `branch`.
    pub fn with_pull_request(mut self, branch: &str, pull: PullRequestPreview) -> Self {
        self.revision = Some(format!("{branch}@sha1:{}", pull.head_commit));
        self.pull_request = Some(Box::new(pull));
        self
    }

    /// Whether this request previews a pull request (and so must never be applied).
    pub fn is_preview(&self) -> bool {
        self.pull_request.is_some()
    }

    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    pub fn with_delivery_id(mut self, delivery_id: impl Into<String>) -> Self {
        self.delivery_id = Some(delivery_id.into());
        self
    }

    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = Some(dry_run);
        self
    }

    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Whether only a plan is wanted.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// The FIFO message group: the target.
    pub fn group_id(&self) -> String {
        sqs_id(&self.target, &self.target)
    }

    /// The FIFO deduplication id.
    ///
    /// - webhook and schedule requests for a known revision: `target/revision`, so a webhook,
    ///   its redeliveries and the poller's tick for the same commit collapse into one message;
    /// - otherwise with a delivery id: `target/delivery/<id>`;
    /// - manual, drift and rollback requests: `target/<trigger>/<revision or requested_at>`, so
    ///   a double click collapses but an explicit request is never swallowed by a webhook's;
    /// - `/dry-run` appended for dry runs, which must not absorb (or be absorbed by) a real run.
    ///
    /// Ids longer than SQS allows, or with characters it refuses, become
    /// `<target prefix>#<sha256 hex>`.
    pub fn deduplication_id(&self) -> String {
        let when = || {
            self.requested_at
                .to_rfc3339_opts(SecondsFormat::Nanos, true)
        };
        let mut id = match (self.trigger, &self.revision, &self.delivery_id) {
            (Trigger::Webhook | Trigger::Schedule, Some(revision), _) => {
                format!("{}/{revision}", self.target)
            }
            (Trigger::Webhook | Trigger::Schedule, None, Some(delivery)) => {
                format!("{}/delivery/{delivery}", self.target)
            }
            (trigger, revision, _) => {
                let at = revision.clone().unwrap_or_else(when);
                format!("{}/{trigger}/{at}", self.target)
            }
        };
        if self.is_dry_run() {
            id.push_str("/dry-run");
        }
        // A preview never absorbs (nor is absorbed by) a sync of the same commit, and each
        // pull request showing that commit gets its own.
        if let Some(pull) = &self.pull_request {
            id.push_str(&format!("/pr/{}", pull.number));
        }
        sqs_id(&id, &self.target)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings, a timestamp and options always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(body: &str) -> Result<Self, MessageError> {
        serde_json::from_str(body).map_err(|source| MessageError::Decode {
            kind: "plan request",
            source,
        })
    }
}

/// Apply this stored plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub sync_id: Uuid,
    /// The plan's target: the FIFO group, and a log field the applier has before reading the
    /// plan. Optional so `{"sync_id": …}` alone stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ApplyRequest {
    pub fn new(sync_id: Uuid, target: impl Into<String>) -> Self {
        ApplyRequest {
            sync_id,
            target: Some(target.into()),
        }
    }

    /// The FIFO message group: the target, or the sync id when the sender did not say.
    pub fn group_id(&self) -> String {
        match &self.target {
            Some(target) => sqs_id(target, target),
            None => self.sync_id.to_string(),
        }
    }

    /// The FIFO deduplication id: the sync id (a plan is applied once).
    pub fn deduplication_id(&self) -> String {
        self.sync_id.to_string()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(body: &str) -> Result<Self, MessageError> {
        serde_json::from_str(body).map_err(|source| MessageError::Decode {
            kind: "apply request",
            source,
        })
    }
}

/// Whether SQS accepts `c` in a group or deduplication id: ASCII letters, digits and
/// punctuation.
fn is_sqs_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_ascii_punctuation()
}

/// `id` itself when SQS accepts it, else a readable prefix of `target` and the SHA-256 of `id`.
fn sqs_id(id: &str, target: &str) -> String {
    if !id.is_empty() && id.len() <= MAX_SQS_ID_LEN && id.chars().all(is_sqs_id_char) {
        return id.to_owned();
    }
    let digest = hex::encode(Sha256::digest(id.as_bytes()));
    // 128 = prefix (≤ 63) + '#' + 64 hex digits.
    let prefix: String = target
        .chars()
        .filter(|c| is_sqs_id_char(*c))
        .take(MAX_SQS_ID_LEN - 1 - digest.len())
        .collect();
    format!("{prefix}#{digest}")
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 3, 9, 30, 0).unwrap()
    }

    const REVISION: &str = "main@sha1:8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112";

    #[test]
    fn a_plan_request_serialises_as_the_design_says_with_absent_fields_omitted() {
        let request = PlanRequest::new("prod", Trigger::Schedule, at());

        let json: serde_json::Value = serde_json::from_str(&request.to_json()).unwrap();

        assert_eq!(
            json,
            json!({"target": "prod", "trigger": "schedule", "requested_at": "2026-11-03T09:30:00Z"})
        );
    }

    #[test]
    fn a_full_plan_request_round_trips() {
        let request = PlanRequest::new("prod", Trigger::Webhook, at())
            .with_revision(REVISION)
            .with_delivery_id("72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .with_dry_run(true)
            .with_actor("Codertocat");

        let decoded = PlanRequest::from_json(&request.to_json()).unwrap();

        assert_eq!(decoded, request);
        assert!(request.to_json().contains(r#""dry_run":true"#));
    }

    #[test]
    fn every_trigger_has_its_snake_case_name() {
        let triggers = [
            Trigger::Webhook,
            Trigger::Schedule,
            Trigger::Manual,
            Trigger::Drift,
            Trigger::Rollback,
        ];

        let names: Vec<String> = triggers
            .iter()
            .map(|trigger| serde_json::to_string(trigger).unwrap())
            .collect();

        assert_eq!(
            names,
            [
                r#""webhook""#,
                r#""schedule""#,
                r#""manual""#,
                r#""drift""#,
                r#""rollback""#
            ]
        );
    }

    #[test]
    fn a_message_from_a_newer_sender_still_decodes() {
        let body = r#"{"target":"prod","trigger":"resync","requested_at":"2026-11-03T09:30:00Z",
                       "priority":"high","revision":"main@sha1:abc"}"#;

        let request = PlanRequest::from_json(body).unwrap();

        assert_eq!(request.trigger, Trigger::Unknown);
        assert_eq!(request.revision.as_deref(), Some("main@sha1:abc"));
    }

    #[test]
    fn a_message_without_a_target_is_refused() {
        let body = r#"{"trigger":"manual","requested_at":"2026-11-03T09:30:00Z"}"#;

        let error = PlanRequest::from_json(body).unwrap_err();

        assert!(
            error
                .to_string()
                .starts_with("invalid plan request message: missing field `target`")
        );
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_webhook_and_the_pollers_tick_for_one_commit_share_a_deduplication_id() {
        let webhook = PlanRequest::new("prod", Trigger::Webhook, at())
            .with_revision(REVISION)
            .with_delivery_id("d-1");
        let redelivery = PlanRequest::new("prod", Trigger::Webhook, at())
            .with_revision(REVISION)
            .with_delivery_id("d-2");
        let tick = PlanRequest::new("prod", Trigger::Schedule, at()).with_revision(REVISION);

        let ids = [webhook, redelivery, tick].map(|request| request.deduplication_id());

        assert_eq!(ids[0], format!("prod/{REVISION}"));
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[0], ids[2]);
    }

    #[test]
    fn a_webhook_without_a_revision_deduplicates_on_its_delivery_id() {
        let request = PlanRequest::new("prod", Trigger::Webhook, at()).with_delivery_id("d-1");

        let id = request.deduplication_id();

        assert_eq!(id, "prod/delivery/d-1");
    }

    #[test]
    fn manual_drift_and_dry_run_requests_are_not_absorbed_by_a_webhooks() {
        let webhook = PlanRequest::new("prod", Trigger::Webhook, at()).with_revision(REVISION);
        let manual = PlanRequest::new("prod", Trigger::Manual, at()).with_revision(REVISION);
        let drift = PlanRequest::new("prod", Trigger::Drift, at()).with_revision(REVISION);
        let dry_run = webhook.clone().with_dry_run(true);

        let ids = [&webhook, &manual, &drift, &dry_run].map(PlanRequest::deduplication_id);

        assert_eq!(ids[1], format!("prod/manual/{REVISION}"));
        assert_eq!(ids[3], format!("prod/{REVISION}/dry-run"));
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_manual_request_without_a_revision_deduplicates_on_its_time() {
        let first = PlanRequest::new("prod", Trigger::Manual, at());
        let later = PlanRequest::new("prod", Trigger::Manual, at() + chrono::Duration::seconds(1));

        let (a, b) = (first.deduplication_id(), later.deduplication_id());

        assert_eq!(a, "prod/manual/2026-11-03T09:30:00.000000000Z");
        assert_ne!(a, b);
    }

    #[test]
    fn a_deduplication_id_sqs_would_refuse_is_hashed_within_its_limits() {
        let long_branch = format!("feature/{}@sha1:{}", "x".repeat(120), "a".repeat(40));
        let unicode = "fonctionnalité@sha1:8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112";
        let target = "a-target-name-of-the-longest-allowed-length-sixty-three-charsxx";

        let long = PlanRequest::new(target, Trigger::Webhook, at())
            .with_revision(long_branch.clone())
            .deduplication_id();
        let accented = PlanRequest::new("prod", Trigger::Webhook, at())
            .with_revision(unicode)
            .deduplication_id();
        let other = PlanRequest::new(target, Trigger::Webhook, at())
            .with_revision(format!("{long_branch}x"))
            .deduplication_id();

        for id in [&long, &accented, &other] {
            assert!(id.len() <= MAX_SQS_ID_LEN, "{id}");
            assert!(id.chars().all(is_sqs_id_char), "{id}");
        }
        assert!(long.starts_with(&format!("{target}#")));
        assert!(accented.starts_with("prod#"));
        assert_ne!(long, other);
    }

    #[test]
    fn the_group_id_is_the_target() {
        let request = PlanRequest::new("prod", Trigger::Manual, at());

        assert_eq!(request.group_id(), "prod");
    }

    #[test]
    fn an_apply_request_is_its_sync_id_and_groups_by_target() {
        let sync_id = Uuid::parse_str("0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e").unwrap();
        let request = ApplyRequest::new(sync_id, "prod");

        let json: serde_json::Value = serde_json::from_str(&request.to_json()).unwrap();

        assert_eq!(
            json,
            json!({"sync_id": "0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e", "target": "prod"})
        );
        assert_eq!(
            request.deduplication_id(),
            "0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e"
        );
        assert_eq!(request.group_id(), "prod");
    }

    #[test]
    fn an_apply_request_with_only_a_sync_id_decodes() {
        let body = r#"{"sync_id":"0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e"}"#;

        let request = ApplyRequest::from_json(body).unwrap();

        assert_eq!(request.target, None);
        assert_eq!(request.group_id(), "0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e");
    }

    fn records(file: &str) -> Vec<serde_json::Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../events")
            .join(file);
        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        event["Records"].as_array().unwrap().clone()
    }

    #[test]
    fn the_sample_queue_events_carry_the_ids_these_messages_compute() {
        let plans: Vec<_> = [
            "planner-plan-request.json",
            "planner-plan-request-batch.json",
        ]
        .iter()
        .flat_map(|file| records(file))
        .collect();
        let applies = records("applier-apply-request.json");

        for record in &plans {
            let request = PlanRequest::from_json(record["body"].as_str().unwrap()).unwrap();
            let attributes = &record["attributes"];
            assert_eq!(attributes["MessageGroupId"], request.group_id());
            assert_eq!(
                attributes["MessageDeduplicationId"],
                request.deduplication_id()
            );
        }
        for record in &applies {
            let request = ApplyRequest::from_json(record["body"].as_str().unwrap()).unwrap();
            let attributes = &record["attributes"];
            assert_eq!(attributes["MessageGroupId"], request.group_id());
            assert_eq!(
                attributes["MessageDeduplicationId"],
                request.deduplication_id()
            );
        }
        assert_eq!(plans.len(), 4);
        assert_eq!(applies.len(), 1);
    }

    #[test]
    fn the_sample_invalid_message_does_not_decode() {
        let record = &records("planner-invalid-message.json")[0];

        let result = PlanRequest::from_json(record["body"].as_str().unwrap());

        assert!(result.is_err());
    }

    #[test]
    fn an_apply_request_with_a_malformed_sync_id_is_refused() {
        let body = r#"{"sync_id":"not-a-uuid"}"#;

        let error = ApplyRequest::from_json(body).unwrap_err();

        assert!(
            error
                .to_string()
                .starts_with("invalid apply request message")
        );
    }
}
