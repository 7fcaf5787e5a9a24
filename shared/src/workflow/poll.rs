//! The poller: for every target due for a check, ask the remote where its branch is (no
//! objects fetched) and queue a plan request when it moved; queue a drift sync for targets
//! with out-of-band changes and self-heal on. One batch of sends per tick.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::config::TargetSettings;
use crate::message::{ApplyRequest, PlanRequest, Trigger};
use crate::metrics::{Metric, MetricsBatch};
use crate::notify::Event;
use crate::queue::workers::Shutdown;
use crate::services::Services;
use crate::source::spec::{self as source, revision};
use crate::store::{CommitCheck, DriftRecord, NewTarget, TargetState};
use crate::{Error, Result};

/// Bound on one remote head check.
const HEAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Drift events younger than this are announced: the schedule ticks every minute, so each
/// event is announced about once (the `DriftDetected` metric repeats while drift remains).
const DRIFT_NOTICE_WINDOW: chrono::Duration = chrono::Duration::seconds(60);

/// What one tick found, per target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PollReport {
    pub checked_at: DateTime<Utc>,
    pub targets: Vec<PolledTarget>,
    /// Plan requests sent.
    pub enqueued: usize,
    /// Runs that waited for a sync window now open, whose applies were queued.
    pub released: Vec<Uuid>,
}

/// One target's line of a [`PollReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PolledTarget {
    /// Not due: its remote was last asked less than its interval ago.
    NotDue {
        target: String,
    },
    Pinned {
        target: String,
        pinned_commit: String,
    },
    Suspended {
        target: String,
    },
    /// The branch is where it was last applied and nothing drifted.
    UpToDate {
        target: String,
        head: String,
    },
    /// The branch moved, or drift needs repairing: a plan request was queued.
    Enqueued {
        target: String,
        head: String,
        trigger: Trigger,
    },
    /// The branch moved to a commit already planned or failed: nothing to ask again.
    AlreadyHandled {
        target: String,
        head: String,
    },
    /// The remote could not be asked.
    Error {
        target: String,
        error: String,
    },
}

impl PolledTarget {
    fn name(&self) -> &str {
        match self {
            PolledTarget::NotDue { target }
            | PolledTarget::Pinned { target, .. }
            | PolledTarget::Suspended { target }
            | PolledTarget::UpToDate { target, .. }
            | PolledTarget::Enqueued { target, .. }
            | PolledTarget::AlreadyHandled { target, .. }
            | PolledTarget::Error { target, .. } => target,
        }
    }
}

/// One tick: check every due target and queue what needs planning (see the module docs).
/// A failing remote is reported per target and does not stop the others; a failing database
/// or queue fails the tick.
pub async fn poll_targets(services: &Services) -> Result<PollReport> {
    poll_targets_at(services, Utc::now()).await
}

/// [`poll_targets`] as if the clock read `now`: a target is due when its remote was last asked
/// at least its interval before `now`. Counting from the last check rather than the last run
/// means a manual sync does not push the next check out, so a commit pushed without a webhook
/// is applied within one interval and one tick.
pub async fn poll_targets_at(services: &Services, now: DateTime<Utc>) -> Result<PollReport> {
    if !services.settings.enabled {
        tracing::info!("gitops is disabled (gitops.enabled: false): nothing polled");
        return Ok(PollReport {
            checked_at: now,
            targets: Vec::new(),
            enqueued: 0,
            released: Vec::new(),
        });
    }
    let configured = &services.settings.targets;
    // Three statements whatever the number of targets: per-target queries made the database
    // part of a 1,000-target tick thousands of round trips (docs/scaling.md).
    let (states, last_runs, mut drift_by_target) = {
        let store = services.database().await?;
        let registered: Vec<NewTarget> = configured.iter().map(new_target).collect();
        let states = store.ensure_targets(&registered).await?;
        let last_runs = store.last_run_started().await?;
        let names: Vec<&str> = configured
            .iter()
            .map(|target| target.name.as_str())
            .collect();
        let drift = store.drift_of(&names).await?;
        (states, last_runs, drift)
    };
    let drift: Vec<Vec<DriftRecord>> = configured
        .iter()
        .map(|target| drift_by_target.remove(&target.name).unwrap_or_default())
        .collect();

    let applied_commits: Vec<Option<String>> = states
        .iter()
        .map(|state| state.last_applied_commit.clone())
        .collect();
    let checks = configured
        .iter()
        .zip(states)
        .zip(&drift)
        .map(|((target, state), events)| {
            let drifted = target.self_heal && !events.is_empty();
            let last_run = last_runs.get(&state.name).copied();
            check_target(services, target, state, drifted, last_run, now)
        });
    let checked: Vec<(Checked<'_>, bool)> = futures_util::stream::iter(checks)
        .buffer_unordered(services.settings.poll_concurrency())
        .collect()
        .await;
    // Only answered checks count: a remote that failed is asked again at the next tick.
    let asked: Vec<&str> = checked
        .iter()
        .filter(|(_, asked)| *asked)
        .map(|(checked, _)| match checked {
            Checked::Done(polled, _) => polled.name(),
            Checked::Moved { target, .. } => target.name.as_str(),
        })
        .collect();
    if !asked.is_empty() {
        services
            .database()
            .await?
            .record_head_checks(&asked, now)
            .await?;
    }
    let checked: Vec<Checked<'_>> = checked.into_iter().map(|(checked, _)| checked).collect();
    let results = settle_moved(services, checked, now).await;

    let mut targets: Vec<PolledTarget> = Vec::new();
    let mut requests: Vec<PlanRequest> = Vec::new();
    for (polled, request) in results {
        targets.push(polled);
        requests.extend(request);
    }
    targets.sort_by(|a, b| a.name().cmp(b.name()));
    if !requests.is_empty() {
        services.queues.send_plans(&requests).await?;
    }
    for ((target, events), applied_commit) in configured.iter().zip(&drift).zip(applied_commits) {
        report_drift(services, target, events, applied_commit, now).await;
    }
    let released = release_waiting_runs(services, now).await?;
    tracing::info!(
        checked = targets.len(),
        enqueued = requests.len(),
        "poll tick done"
    );
    Ok(PollReport {
        checked_at: now,
        targets,
        enqueued: requests.len(),
        released,
    })
}

/// Queues the apply of each run that waited for a sync window open at `now` (the newest per
/// target; older ones are superseded). Suspended targets keep waiting.
async fn release_waiting_runs(services: &Services, now: DateTime<Utc>) -> Result<Vec<Uuid>> {
    let open: Vec<&TargetSettings> = services
        .settings
        .targets
        .iter()
        .filter(|target| !target.controls.windows.is_empty() && !target.controls.suspended)
        .filter(|target| crate::windows::allows(&target.controls.windows, now))
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let mut released = Vec::new();
    for target in open {
        let run = {
            let store = services.database().await?;
            if store
                .suspended_targets(&[target.name.as_str()])
                .await?
                .contains(&target.name)
            {
                continue;
            }
            store.release_waiting_run(&target.name).await?
        };
        if let Some(sync_id) = run {
            tracing::info!(target = %target.name, %sync_id, "sync window open: applying the waiting plan");
            services
                .queues
                .send_apply(&ApplyRequest::new(sync_id, &target.name))
                .await?;
            released.push(sync_id);
        }
    }
    Ok(released)
}

/// What the concurrent part of a target's check leaves: its result, or a branch that moved,
/// whose earlier runs [`settle_moved`] looks up for every such target in one query.
enum Checked<'a> {
    Done(PolledTarget, Option<PlanRequest>),
    Moved {
        target: &'a TargetSettings,
        head: String,
        last_run: Option<DateTime<Utc>>,
    },
}

async fn check_target<'a>(
    services: &Services,
    target: &'a TargetSettings,
    state: TargetState,
    drifted: bool,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Checked<'a>, bool) {
    let name = target.name.clone();
    if state.suspended || target.controls.suspended {
        return (
            Checked::Done(PolledTarget::Suspended { target: name }, None),
            false,
        );
    }
    let interval = chrono::Duration::seconds(i64::try_from(target.interval_secs).unwrap_or(60));
    let due = state
        .last_head_check_at
        .is_none_or(|checked| now - checked >= interval);
    if let Some(pinned) = &state.pinned_commit {
        if drifted {
            // Self-heal restores the pinned commit, not the branch head.
            let request = PlanRequest::new(&name, Trigger::Drift, now)
                .with_revision(revision(&target.branch, pinned))
                .with_actor("poller");
            return (
                Checked::Done(
                    PolledTarget::Enqueued {
                        target: name,
                        head: pinned.clone(),
                        trigger: Trigger::Drift,
                    },
                    Some(request),
                ),
                false,
            );
        }
        return (
            Checked::Done(
                PolledTarget::Pinned {
                    target: name,
                    pinned_commit: pinned.clone(),
                },
                None,
            ),
            false,
        );
    }
    if !due && !drifted {
        return (
            Checked::Done(PolledTarget::NotDue { target: name }, None),
            false,
        );
    }

    let head = match head_of(services, target).await {
        Ok(head) => head,
        Err(error) => {
            let error = crate::telemetry::error_chain(&error);
            tracing::warn!(target = %name, %error, "cannot read the remote head");
            return (
                Checked::Done(
                    PolledTarget::Error {
                        target: name,
                        error,
                    },
                    None,
                ),
                false,
            );
        }
    };
    let moved = state.last_applied_commit.as_deref() != Some(head.as_str());
    let checked = match (moved, drifted) {
        (true, false) => Checked::Moved {
            target,
            head,
            last_run,
        },
        (true, true) => Checked::Done(
            PolledTarget::Enqueued {
                target: name.clone(),
                head: head.clone(),
                trigger: Trigger::Schedule,
            },
            Some(plan_request(target, &head, Trigger::Schedule, now)),
        ),
        (false, true) => {
            MetricsBatch::new(&name)
                .put(Metric::DriftDetected, 1.0)
                .emit_to(&services.metrics);
            let request = plan_request(target, &head, Trigger::Drift, now);
            Checked::Done(
                PolledTarget::Enqueued {
                    target: name,
                    head,
                    trigger: Trigger::Drift,
                },
                Some(request),
            )
        }
        (false, false) => Checked::Done(PolledTarget::UpToDate { target: name, head }, None),
    };
    (checked, true)
}

/// Turns each moved branch into a plan request, or `AlreadyHandled` when a run of that commit
/// already ended in a way a retry would only repeat (`Store::handled_commits`, one query for
/// all). When the database cannot answer, each moved target reports the error, as a remote
/// that cannot be asked does, and is asked again next tick.
async fn settle_moved(
    services: &Services,
    checked: Vec<Checked<'_>>,
    now: DateTime<Utc>,
) -> Vec<(PolledTarget, Option<PlanRequest>)> {
    let questions: Vec<CommitCheck> = checked
        .iter()
        .filter_map(|checked| match checked {
            Checked::Moved { target, head, .. } => Some(CommitCheck {
                target: target.name.clone(),
                commit: head.clone(),
                dry_run: target.dry_run,
            }),
            Checked::Done(..) => None,
        })
        .collect();
    let handled: std::result::Result<HashSet<String>, String> = if questions.is_empty() {
        Ok(HashSet::new())
    } else {
        match services.database().await {
            Ok(store) => store
                .handled_commits(&questions)
                .await
                .map_err(|error| crate::telemetry::error_chain(&error)),
            Err(error) => Err(crate::telemetry::error_chain(&error)),
        }
    };
    checked
        .into_iter()
        .map(|checked| match checked {
            Checked::Done(polled, request) => (polled, request),
            Checked::Moved {
                target,
                head,
                last_run,
            } => match &handled {
                Err(error) => (
                    PolledTarget::Error {
                        target: target.name.clone(),
                        error: error.clone(),
                    },
                    None,
                ),
                Ok(handled) if handled.contains(&target.name) => (
                    PolledTarget::AlreadyHandled {
                        target: target.name.clone(),
                        head,
                    },
                    None,
                ),
                Ok(_) => {
                    if let Some(last) = last_run {
                        MetricsBatch::new(&target.name)
                            .put_duration(
                                Metric::PollerLag,
                                (now - last).to_std().unwrap_or_default(),
                            )
                            .emit_to(&services.metrics);
                    }
                    let request = plan_request(target, &head, Trigger::Schedule, now);
                    (
                        PolledTarget::Enqueued {
                            target: target.name.clone(),
                            head,
                            trigger: Trigger::Schedule,
                        },
                        Some(request),
                    )
                }
            },
        })
        .collect()
}

fn plan_request(
    target: &TargetSettings,
    head: &str,
    trigger: Trigger,
    now: DateTime<Utc>,
) -> PlanRequest {
    PlanRequest::new(&target.name, trigger, now)
        .with_revision(revision(&target.branch, head))
        .with_actor("poller")
}

fn new_target(target: &TargetSettings) -> NewTarget {
    NewTarget {
        name: target.name.clone(),
        repo_url: target.repo_url.clone(),
        branch: target.branch.clone(),
        path: target.path.clone(),
    }
}

/// Reports a target's unresolved drift: without self-heal, the `DriftDetected` metric at every
/// tick while it lasts (with self-heal, `check_target` counts the drift sync it requests); with
/// or without, a notification naming the events detected since the previous tick.
async fn report_drift(
    services: &Services,
    target: &TargetSettings,
    events: &[DriftRecord],
    applied_commit: Option<String>,
    now: DateTime<Utc>,
) {
    if events.is_empty() {
        return;
    }
    if !target.self_heal {
        tracing::warn!(
            target = %target.name,
            events = events.len(),
            "drift detected; self-heal is off, so it stays until a sync or a commit"
        );
        MetricsBatch::new(&target.name)
            .put(Metric::DriftDetected, events.len() as f64)
            .emit_to(&services.metrics);
    }
    let mut fresh: Vec<String> = events
        .iter()
        .filter(|event| now - event.detected_at <= DRIFT_NOTICE_WINDOW)
        .map(|event| format!("{}/{}", event.kind, event.name))
        .collect();
    fresh.dedup();
    if fresh.is_empty() {
        return;
    }
    let event = Event::DriftDetected {
        target: target.name.clone(),
        resources: fresh,
        self_heal: target.self_heal,
        applied_commit,
    };
    super::announce::announce(services, &event).await;
}

async fn head_of(services: &Services, target: &TargetSettings) -> Result<String> {
    let source = source::source_spec(&services.settings, target, false).await?;
    source::remote_head(&source, HEAD_TIMEOUT).await
}

/// `ritmo serve`'s poller: a tick every `every` until `shutdown` turns true.
pub async fn run_poller_loop(services: Arc<Services>, every: Duration, mut shutdown: Shutdown) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(error) = poll_targets(&services).await {
            let error: &Error = &error;
            tracing::warn!(error = %crate::telemetry::error_chain(error), "poll tick failed");
        }
    }
}
