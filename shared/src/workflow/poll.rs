//! The poller: for every target due for a check, ask the remote where its branch is (no
//! objects fetched) and queue a plan request when it moved; queue a drift sync for targets
//! with out-of-band changes and self-heal on. One batch of sends per tick.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Serialize;

use crate::config::TargetSettings;
use crate::message::{PlanRequest, Trigger};
use crate::metrics::{Metric, MetricsBatch};
use crate::notify::Event;
use crate::queue::workers::Shutdown;
use crate::services::Services;
use crate::source::spec::{self as source, revision};
use crate::store::{DriftRecord, TargetState};
use crate::{Error, Result};

/// Targets checked at once.
const CONCURRENCY: usize = 8;
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
}

/// One target's line of a [`PollReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PolledTarget {
    /// Not due: its last run started less than its interval ago.
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
    let now = Utc::now();
    if !services.settings.enabled {
        tracing::info!("gitops is disabled (gitops.enabled: false): nothing polled");
        return Ok(PollReport {
            checked_at: now,
            targets: Vec::new(),
            enqueued: 0,
        });
    }
    let mut drift: Vec<Vec<DriftRecord>> = Vec::new();
    let states = {
        let store = services.database().await?;
        let mut states = Vec::new();
        for target in &services.settings.targets {
            states.push(
                store
                    .ensure_target(&crate::store::NewTarget {
                        name: target.name.clone(),
                        repo_url: target.repo_url.clone(),
                        branch: target.branch.clone(),
                        path: target.path.clone(),
                    })
                    .await?,
            );
        }
        let last_runs = store.last_run_started().await?;
        let mut with_drift = Vec::new();
        for target in &services.settings.targets {
            let events = store.drift(&target.name).await?;
            with_drift.push(target.self_heal && !events.is_empty());
            drift.push(events);
        }
        states
            .into_iter()
            .zip(with_drift)
            .map(|(state, drifted)| {
                let last = last_runs.get(&state.name).copied();
                (state, drifted, last)
            })
            .collect::<Vec<_>>()
    };

    let checks =
        services
            .settings
            .targets
            .iter()
            .zip(states)
            .map(|(target, (state, drifted, last_run))| {
                check_target(services, target, state, drifted, last_run, now)
            });
    let results: Vec<(PolledTarget, Option<PlanRequest>)> = futures_util::stream::iter(checks)
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

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
    for (target, events) in services.settings.targets.iter().zip(&drift) {
        report_drift(services, target, events, now).await;
    }
    tracing::info!(
        checked = targets.len(),
        enqueued = requests.len(),
        "poll tick done"
    );
    Ok(PollReport {
        checked_at: now,
        targets,
        enqueued: requests.len(),
    })
}

async fn check_target(
    services: &Services,
    target: &TargetSettings,
    state: TargetState,
    drifted: bool,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (PolledTarget, Option<PlanRequest>) {
    let name = target.name.clone();
    if state.suspended {
        return (PolledTarget::Suspended { target: name }, None);
    }
    let interval = chrono::Duration::seconds(i64::try_from(target.interval_secs).unwrap_or(60));
    let due = last_run.is_none_or(|started| now - started >= interval);
    if let Some(pinned) = &state.pinned_commit {
        if drifted {
            // Self-heal restores the pinned commit, not the branch head.
            let request = PlanRequest::new(&name, Trigger::Drift, now)
                .with_revision(revision(&target.branch, pinned))
                .with_actor("poller");
            return (
                PolledTarget::Enqueued {
                    target: name,
                    head: pinned.clone(),
                    trigger: Trigger::Drift,
                },
                Some(request),
            );
        }
        return (
            PolledTarget::Pinned {
                target: name,
                pinned_commit: pinned.clone(),
            },
            None,
        );
    }
    if !due && !drifted {
        return (PolledTarget::NotDue { target: name }, None);
    }

    let head = match head_of(services, target).await {
        Ok(head) => head,
        Err(error) => {
            let error = crate::telemetry::error_chain(&error);
            tracing::warn!(target = %name, %error, "cannot read the remote head");
            return (
                PolledTarget::Error {
                    target: name,
                    error,
                },
                None,
            );
        }
    };
    let moved = state.last_applied_commit.as_deref() != Some(head.as_str());
    let trigger = match (moved, drifted) {
        (true, _) => Trigger::Schedule,
        (false, true) => Trigger::Drift,
        (false, false) => return (PolledTarget::UpToDate { target: name, head }, None),
    };
    if trigger == Trigger::Schedule && !drifted {
        match services.database().await {
            Ok(store) => match store.commit_was_handled(&name, &head, target.dry_run).await {
                Ok(true) => return (PolledTarget::AlreadyHandled { target: name, head }, None),
                Ok(false) => {}
                Err(error) => {
                    let error = crate::telemetry::error_chain(&error);
                    return (
                        PolledTarget::Error {
                            target: name,
                            error,
                        },
                        None,
                    );
                }
            },
            Err(error) => {
                let error = crate::telemetry::error_chain(&error);
                return (
                    PolledTarget::Error {
                        target: name,
                        error,
                    },
                    None,
                );
            }
        }
        if let Some(last) = last_run {
            MetricsBatch::new(&name)
                .put_duration(Metric::PollerLag, (now - last).to_std().unwrap_or_default())
                .emit_to(&services.metrics);
        }
    }
    if trigger == Trigger::Drift {
        MetricsBatch::new(&name)
            .put(Metric::DriftDetected, 1.0)
            .emit_to(&services.metrics);
    }
    let request = PlanRequest::new(&name, trigger, now)
        .with_revision(revision(&target.branch, &head))
        .with_actor("poller");
    (
        PolledTarget::Enqueued {
            target: name,
            head,
            trigger,
        },
        Some(request),
    )
}

/// Reports a target's unresolved drift: without self-heal, the `DriftDetected` metric at every
/// tick while it lasts (with self-heal, `check_target` counts the drift sync it requests); with
/// or without, a notification naming the events detected since the previous tick.
async fn report_drift(
    services: &Services,
    target: &TargetSettings,
    events: &[DriftRecord],
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
