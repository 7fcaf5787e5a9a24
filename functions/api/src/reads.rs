//! The read-only routes: health, status, history, plan detail and resources. Each takes the
//! store's lock for the few queries it runs and answers JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use ritmo::model::Kind;
use ritmo::services::Services;
use ritmo::store::{DriftRecord, RunRecord, Store, TargetState};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::MutexGuard;

use crate::{ApiError, parse_sync_id};

/// How long the readiness check waits for the database (or for the connection, when a sync
/// is using it) before saying it is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read waits for the shared connection before answering 503.
const LOCK_TIMEOUT: Duration = Duration::from_secs(20);

pub const HISTORY_DEFAULT_LIMIT: i64 = 20;
pub const HISTORY_MAX_LIMIT: i64 = 100;

/// The shared connection, reconnected first when it was lost (a Lambda container outlives
/// database restarts and failovers).
async fn store(services: &Services) -> Result<MutexGuard<'_, Store>, ApiError> {
    let mut store = tokio::time::timeout(LOCK_TIMEOUT, services.store.lock())
        .await
        .map_err(|_| ApiError::unavailable("the database connection is busy: try again"))?;
    if store.is_closed() {
        *store = reconnect(services).await?;
    }
    Ok(store)
}

async fn reconnect(services: &Services) -> Result<Store, ApiError> {
    let url = services
        .settings
        .database_url
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("no database configured: set DATABASE_URL"))?;
    tracing::warn!("the database connection was lost; reconnecting");
    Store::connect(url.expose_secret()).await.map_err(|error| {
        ApiError::unavailable(format!("the database connection was lost: {error}"))
    })
}

/// `GET /health/live`: the process answers.
pub async fn live() -> Response {
    Json(json!({ "status": "live" })).into_response()
}

/// `GET /health/ready`: 200 when the database answers a query, 503 otherwise.
pub async fn ready(State(services): State<Arc<Services>>) -> Response {
    let check = async {
        let mut store = services.store.lock().await;
        if store.is_closed() {
            *store = reconnect(&services).await.map_err(|error| error.message)?;
        }
        store
            .targets()
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    };
    let outcome = tokio::time::timeout(READY_TIMEOUT, check)
        .await
        .unwrap_or_else(|_| Err("the database did not answer in time".to_owned()));
    match outcome {
        Ok(()) => Json(json!({ "status": "ready", "database": "ok" })).into_response(),
        Err(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            message,
        )
        .into_response(),
    }
}

/// One target as `status` shows it.
#[derive(Debug, Serialize)]
struct TargetStatus {
    name: String,
    repo_url: String,
    branch: String,
    path: String,
    /// Whether the bootstrap configuration declares it (a target only in the database was
    /// declared once and removed since).
    configured: bool,
    /// Whether it has a row yet (false until its first sync).
    registered: bool,
    generation: i64,
    last_applied_commit: Option<String>,
    last_sync_id: Option<uuid::Uuid>,
    pinned_commit: Option<String>,
    suspended: bool,
    /// Who suspended it and when (`settings` when the bootstrap file does).
    suspended_by: Option<String>,
    suspended_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_apply: Option<bool>,
    last_run: Option<RunRecord>,
    drift: Vec<DriftRecord>,
    /// The sync windows now: open or not, those in effect, the next opening (absent when the
    /// target has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_window: Option<ritmo::windows::WindowStatus>,
    /// Set while the target is partially synced (`only`): the run, its commit, how many of the
    /// plan's changes it applied and the ones still pending.
    partial_sync: Option<ritmo::store::PartialSync>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    target: Option<String>,
}

/// `GET /api/v1/gitops/status[?target=]`: every target (configured or registered), or one, with
/// its generation, last applied commit, pin, suspension, last run and unresolved drift.
pub async fn status(
    State(services): State<Arc<Services>>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request(format!("invalid query: {rejection}")))?;
    let only = query.target.as_deref().filter(|t| !t.is_empty());
    let wanted = |name: &str| only.is_none_or(|only| only == name);
    let store = store(&services).await?;
    let registered = store.targets().await?;
    let mut targets = Vec::new();
    for state in registered.iter().filter(|state| wanted(&state.name)) {
        let configured = services.settings.target(&state.name);
        targets.push(target_status(&store, Some(state), configured, &state.name).await?);
    }
    for configured in services.settings.targets.iter().filter(|t| wanted(&t.name)) {
        if !registered.iter().any(|state| state.name == configured.name) {
            targets.push(target_status(&store, None, Some(configured), &configured.name).await?);
        }
    }
    if let Some(name) = only
        && targets.is_empty()
    {
        return Err(ApiError::not_found(format!("no target named `{name}`")));
    }
    targets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "enabled": services.settings.enabled, "targets": targets })).into_response())
}

async fn target_status(
    store: &Store,
    state: Option<&TargetState>,
    configured: Option<&ritmo::config::TargetSettings>,
    name: &str,
) -> Result<TargetStatus, ApiError> {
    let last_run = store.runs(Some(name), 1, None).await?.into_iter().next();
    let drift = store.drift(name).await?;
    let partial_sync = store.partial_sync(name).await?;
    let (repo_url, branch, path) = match (state, configured) {
        (Some(state), _) => (
            state.repo_url.clone(),
            state.branch.clone(),
            state.path.clone(),
        ),
        (None, Some(configured)) => (
            without_userinfo(&configured.repo_url),
            configured.branch.clone(),
            configured.path.clone(),
        ),
        (None, None) => Default::default(),
    };
    Ok(TargetStatus {
        name: name.to_owned(),
        repo_url,
        branch,
        path,
        configured: configured.is_some(),
        registered: state.is_some(),
        generation: state.map_or(0, |s| s.generation),
        last_applied_commit: state.and_then(|s| s.last_applied_commit.clone()),
        last_sync_id: state.and_then(|s| s.last_sync_id),
        pinned_commit: state.and_then(|s| s.pinned_commit.clone()),
        suspended: state.is_some_and(|s| s.suspended)
            || configured.is_some_and(|c| c.controls.suspended),
        suspended_by: match (state, configured) {
            (_, Some(c)) if c.controls.suspended => Some("settings".to_owned()),
            (Some(s), _) => s.suspended_by.clone(),
            _ => None,
        },
        suspended_at: state.and_then(|s| s.suspended_at),
        interval_secs: configured.map(|c| c.interval_secs),
        auto_apply: configured.map(|c| c.auto_apply),
        last_run,
        drift,
        sync_window: configured
            .and_then(|c| ritmo::windows::status(&c.controls.windows, chrono::Utc::now())),
        partial_sync,
    })
}

/// A configured URL may carry a token (`https://x-access-token:…@host/…`); the store refuses
/// those, and the API never shows one.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority_end..]),
        None => url.to_owned(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    target: Option<String>,
    limit: Option<i64>,
    /// The `next` cursor of the previous page: runs started strictly before it.
    before: Option<String>,
}

/// `GET /api/v1/gitops/sync/history?target=&limit=&before=`: sync runs, newest first, one page
/// at a time. `next` is the cursor of the following page (null on the last page).
pub async fn history(
    State(services): State<Arc<Services>>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError::bad_request(format!("invalid query: {rejection}")))?;
    let limit = query.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {HISTORY_MAX_LIMIT}, found `{limit}`"
        )));
    }
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        Some(cursor) => Some(
            DateTime::parse_from_rfc3339(cursor)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "`before` must be the `next` value of a previous page (an RFC 3339 time), found `{cursor}`"
                    ))
                })?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    let target = query.target.as_deref().filter(|t| !t.is_empty());
    let runs = store(&services).await?.runs(target, limit, before).await?;
    let next = (runs.len() as i64 == limit)
        .then(|| runs.last())
        .flatten()
        .map(|run| cursor(run.started_at));
    Ok(Json(json!({ "runs": runs, "next": next })).into_response())
}

/// Microsecond precision, as PostgreSQL stores `timestamptz`, so the cursor loses nothing.
fn cursor(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `GET /api/v1/gitops/plans/{id}`: the run, its plan (actions with old and new hashes and
/// source paths), its diagnostics and the changes it made.
pub async fn plan(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sync_id = parse_sync_id(&id)?;
    let store = store(&services).await?;
    let Some(run) = store.run(sync_id).await? else {
        return Err(ApiError::not_found(format!(
            "no sync run or plan `{sync_id}`"
        )));
    };
    let plan = store.load_plan(sync_id).await?;
    let revisions = store.revisions(sync_id).await?;
    let summary = plan.as_ref().map(|plan| plan.summary().to_string());
    let plan = plan.as_ref().map(plan_with_changes);
    Ok(Json(json!({
        "diagnostics": run.diagnostics,
        "run": run,
        "plan": plan,
        "summary": summary,
        "revisions": revisions,
    }))
    .into_response())
}

/// The stored plan, each action with its `changes` (`[{op, path, before, after}]`, redacted):
/// an update's as stored, a create's top-level fields as the CLI shows them.
fn plan_with_changes(plan: &ritmo::plan::Plan) -> serde_json::Value {
    let mut value = json!(plan);
    if let Some(actions) = value.get_mut("actions").and_then(|a| a.as_array_mut()) {
        for (shown, action) in actions.iter_mut().zip(&plan.actions) {
            shown["changes"] = json!(action.changes());
        }
    }
    value
}

fn parse_kind(kind: &str) -> Result<Kind, ApiError> {
    kind.parse().map_err(|_| {
        ApiError::not_found(format!(
            "no such route: `{kind}` is not a resource kind (jobs, credentials, plugins, webhooks, workerpools, environments)"
        ))
    })
}

/// `GET /api/v1/{kind}`: every resource of a kind, as stored (credentials as ciphertext or
/// reference, never plaintext).
pub async fn resources(
    State(services): State<Arc<Services>>,
    Path(kind): Path<String>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let items = store(&services).await?.resources(Some(kind), None).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// `GET /api/v1/{kind}/{name}`: one resource, 404 when absent.
pub async fn resource(
    State(services): State<Arc<Services>>,
    Path((kind, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(&kind)?;
    let found = store(&services)
        .await?
        .resources(Some(kind), Some(&name))
        .await?
        .into_iter()
        .next();
    match found {
        Some(resource) => Ok(Json(resource).into_response()),
        None => Err(ApiError::not_found(format!(
            "no {} named `{name}`",
            kind.slug()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_a_configured_url_is_never_shown() {
        let shown =
            without_userinfo("https://x-access-token:ghp_secret@github.com/acme/config.git");

        assert_eq!(shown, "https://github.com/acme/config.git");
    }

    #[test]
    fn urls_without_userinfo_and_local_paths_are_unchanged() {
        for url in [
            "https://github.com/acme/config.git",
            "/srv/git/config",
            "file:///srv/git/config",
            "https://github.com/acme/config.git?ref=a@b",
        ] {
            assert_eq!(without_userinfo(url), url);
        }
    }

    #[test]
    fn the_cursor_keeps_microseconds() {
        let at = DateTime::parse_from_rfc3339("2026-11-03T09:30:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);

        assert_eq!(cursor(at), "2026-11-03T09:30:00.123456Z");
    }
}
