//! What the store reads and writes, as plain serializable records (the CLI and the API print
//! them as JSON).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::diagnostic::Diagnostic;
use crate::message::Trigger;
use crate::model::Kind;
use crate::plan::Summary;

/// Where a sync run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Planning,
    Planned,
    PendingApproval,
    Applying,
    Succeeded,
    Failed,
    Superseded,
    /// The process working on the run ended (killed, its connection lost, the database
    /// restarted) before the run finished; nothing of it was applied. The reason is in the
    /// run's `error`.
    Abandoned,
    /// Planned by an automatic trigger while the target's sync windows were closed: applied
    /// when a window opens (the poller's tick), or at once with `--override-window`.
    WaitingForWindow,
}

impl RunStatus {
    pub const ALL: [RunStatus; 9] = [
        RunStatus::Planning,
        RunStatus::Planned,
        RunStatus::PendingApproval,
        RunStatus::Applying,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Superseded,
        RunStatus::Abandoned,
        RunStatus::WaitingForWindow,
    ];

    /// The value stored in `sync_runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Planning => "planning",
            RunStatus::Planned => "planned",
            RunStatus::PendingApproval => "pending_approval",
            RunStatus::Applying => "applying",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Superseded => "superseded",
            RunStatus::Abandoned => "abandoned",
            RunStatus::WaitingForWindow => "waiting_for_window",
        }
    }

    /// Succeeded, failed, superseded and abandoned runs are over: nothing more happens to
    /// them.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Superseded | RunStatus::Abandoned
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_string()))
    }
}

/// What a revision row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionAction {
    Created,
    Updated,
    Deleted,
}

impl RevisionAction {
    pub const ALL: [RevisionAction; 3] = [
        RevisionAction::Created,
        RevisionAction::Updated,
        RevisionAction::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevisionAction::Created => "created",
            RevisionAction::Updated => "updated",
            RevisionAction::Deleted => "deleted",
        }
    }
}

impl FromStr for RevisionAction {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevisionAction::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| UnknownValue(s.to_string()))
    }
}

/// A stored string that names no known value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

/// A target as declared in the bootstrap configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTarget {
    pub name: String,
    /// The repository URL, without credentials (they come from Secrets Manager or the
    /// environment and are never stored).
    pub repo_url: String,
    pub branch: String,
    /// Directory inside the repository holding `jobs/`, `credentials/`…; empty for the root.
    pub path: String,
}

/// A target's row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    pub name: String,
    pub repo_url: String,
    pub branch: String,
    pub path: String,
    /// Advances by one with every applied plan.
    pub generation: i64,
    pub last_applied_commit: Option<String>,
    pub last_sync_id: Option<Uuid>,
    /// Set by a rollback: automatic syncs keep the target at this commit until resumed.
    pub pinned_commit: Option<String>,
    pub suspended: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who suspended the target (`ritmo gitops suspend`, the API), while it is suspended.
    #[serde(default)]
    pub suspended_by: Option<String>,
    #[serde(default)]
    pub suspended_at: Option<DateTime<Utc>>,
    /// When the poller last asked the remote where the branch is: the target is due one
    /// interval after this.
    #[serde(default)]
    pub last_head_check_at: Option<DateTime<Utc>>,
    /// The latest run that applied only some of a plan's changes (`sync --only`) since the
    /// last whole apply; `None` once a whole plan is applied.
    #[serde(default)]
    pub partial_sync_id: Option<Uuid>,
}

impl TargetState {
    /// The state of a target not registered yet, as a preview plans against it: generation 0,
    /// nothing applied, nothing pinned.
    pub fn unregistered(target: &NewTarget) -> TargetState {
        let now = Utc::now();
        TargetState {
            name: target.name.clone(),
            repo_url: target.repo_url.clone(),
            branch: target.branch.clone(),
            path: target.path.clone(),
            generation: 0,
            last_applied_commit: None,
            last_sync_id: None,
            pinned_commit: None,
            suspended: false,
            created_at: now,
            updated_at: now,
            suspended_by: None,
            suspended_at: None,
            last_head_check_at: None,
            partial_sync_id: None,
        }
    }
}

/// The start of a sync run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRun {
    pub target: String,
    pub trigger: Trigger,
    /// Who asked: a user, `webhook:<delivery id>`, `schedule`…
    pub actor: Option<String>,
    /// The revision asked for, when one was (`main@sha1:<hex>`, a branch, a commit).
    pub revision: Option<String>,
    pub dry_run: bool,
}

/// A sync run as `status` and `history` show it (the plan itself: `Store::load_plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: Uuid,
    pub target: String,
    pub trigger: Trigger,
    pub actor: Option<String>,
    pub status: RunStatus,
    pub revision: Option<String>,
    pub commit: Option<String>,
    pub base_commit: Option<String>,
    pub base_generation: Option<i64>,
    /// Planned counts until the run is applied; applied counts after.
    pub summary: Summary,
    pub approval_reason: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
    pub error: Option<String>,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    pub planned_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub plan_ms: Option<i64>,
    pub apply_ms: Option<i64>,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    /// `sync --only`: the resources asked for (`job/backend-service`); `None` for a whole plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected: Option<Vec<String>>,
    /// `sync --only`: the plan's changes left out (`update job/backend-service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<String>>,
    /// Who applied the run although the target's sync windows were closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_override_by: Option<String>,
}

/// A target left partially synced by a `sync --only` run: what `status` says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialSync {
    pub sync_id: Uuid,
    /// The commit the selected changes came from.
    pub commit: Option<String>,
    /// Changes applied, of `total` in the plan.
    pub applied: usize,
    pub total: usize,
    /// The changes left out, as `update job/backend-service`.
    pub pending: Vec<String>,
}

/// One change made by a sync: the audit trail and what rollback reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionRecord {
    pub id: i64,
    pub sync_id: Uuid,
    pub target: String,
    pub kind: Kind,
    pub name: String,
    pub action: RevisionAction,
    pub old_hash: Option<String>,
    pub new_hash: Option<String>,
    pub commit: Option<String>,
    pub applied_at: DateTime<Utc>,
}

/// A row of the resource table, for `ritmo get` and `export`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResource {
    pub kind: Kind,
    pub name: String,
    /// What Git holds: ciphertexts and references for credentials, never plaintext.
    pub spec: serde_json::Value,
    pub spec_hash: String,
    pub hash_version: i16,
    /// The document's labels plus `managed-by`, `git-commit` and `ritmo.dev/target`.
    pub labels: BTreeMap<String, String>,
    pub source_path: Option<String>,
    pub commit: Option<String>,
    /// The target that last wrote the row.
    pub target: Option<String>,
    /// The target whose inventory holds the row, if any: the only owner that counts.
    pub owner: Option<String>,
    pub drifted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An out-of-band change to a resource row, caught by the drift trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftRecord {
    pub id: i64,
    /// The owning target when the change happened (none for rows nobody owns).
    pub target: Option<String>,
    pub kind: Kind,
    pub name: String,
    /// `UPDATE`, `DELETE` or `INSERT`.
    pub operation: String,
    pub detected_at: DateTime<Utc>,
    pub resolved_sync_id: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_stored_names() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert!("done".parse::<RunStatus>().is_err());
    }

    #[test]
    fn triggers_and_revision_actions_round_trip_through_their_stored_names() {
        for trigger in Trigger::ALL {
            assert_eq!(trigger.as_str().parse::<Trigger>(), Ok(trigger));
            assert_eq!(
                serde_json::to_value(trigger).unwrap(),
                serde_json::json!(trigger.as_str())
            );
        }
        for action in RevisionAction::ALL {
            assert_eq!(action.as_str().parse::<RevisionAction>(), Ok(action));
        }
    }

    #[test]
    fn only_succeeded_failed_superseded_and_abandoned_runs_are_finished() {
        let finished: Vec<RunStatus> = RunStatus::ALL
            .into_iter()
            .filter(|status| status.is_finished())
            .collect();

        assert_eq!(
            finished,
            [
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Superseded,
                RunStatus::Abandoned
            ]
        );
    }
}
