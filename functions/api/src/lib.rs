//! The `api` function as an axum router: sync status, history, plan detail, approvals, manual
//! syncs, rollback, suspend and resume under `/api/v1/gitops`, the resources under `/api/v1/{kind}`, and
//! the health checks under `/health`.
//!
//! This crate owns the HTTP edge only: routing, request parsing, the caller's identity and
//! JSON error bodies `{"error": code, "message": …}`. What a request does is
//! [`ritmo::workflow`]'s (sync, approve, rollback, resume) or a plain read of the store.
//! Lambda runs the router with `lambda_http`; `ritmo serve` runs the same router locally.

mod error;
mod reads;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use ritmo::services::Services;
use ritmo::workflow::{self, ApproveOutcome};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

pub use error::ApiError;

/// Largest request body: every body this API takes is a small JSON object.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The API router. Every route answers JSON; every error is `{"error", "message"}`.
pub fn app(services: Arc<Services>) -> Router {
    Router::new()
        .route("/health/live", get(reads::live))
        .route("/health/ready", get(reads::ready))
        .route("/api/v1/gitops/sync", post(sync))
        .route("/api/v1/gitops/status", get(reads::status))
        .route("/api/v1/gitops/sync/history", get(reads::history))
        .route("/api/v1/gitops/plans/{id}", get(reads::plan))
        .route("/api/v1/gitops/plans/{id}/approve", post(approve))
        .route("/api/v1/gitops/rollback", post(rollback))
        .route("/api/v1/gitops/resume", post(resume))
        .route(
            "/api/v1/gitops/targets/{target}/suspend",
            post(suspend_target),
        )
        .route(
            "/api/v1/gitops/targets/{target}/resume",
            post(resume_target),
        )
        .route("/api/v1/{kind}", get(reads::resources))
        .route("/api/v1/{kind}/{name}", get(reads::resource))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(refuse_nul))
        .with_state(services)
}

/// Refuses a path or query carrying a NUL byte (`%00`) with 400, before any route reads it:
/// no name has one, and PostgreSQL refuses it in text, which would surface as a server error.
async fn refuse_nul(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri = request.uri();
    let has_nul = |text: &str| {
        text.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    };
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return ApiError::bad_request(
            "the path or query contains a NUL byte (`%00`): no name or parameter can hold one",
        )
        .into_response();
    }
    next.run(request).await
}

/// Who is calling: the caller the server in front of the router authenticated (an `Actor`
/// request extension: `ritmo serve` inserts one for a bearer token), else the IAM principal
/// API Gateway authenticated (`userArn` of a REST API's `requestContext.identity`, or of an
/// HTTP API's `authorizer.iam`), else [`ANONYMOUS_ACTOR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// The actor recorded when the request carries no identity.
pub const ANONYMOUS_ACTOR: &str = "api";

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(actor) = parts.extensions.get::<Actor>() {
            return Ok(actor.clone());
        }
        let arn = match parts.extensions.request_context_ref() {
            Some(RequestContext::ApiGatewayV1(context)) => context.identity.user_arn.clone(),
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|authorizer| authorizer.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone()),
            _ => None,
        };
        Ok(Actor(
            arn.filter(|arn| !arn.is_empty())
                .unwrap_or_else(|| ANONYMOUS_ACTOR.to_owned()),
        ))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyncBody {
    target: Option<String>,
    #[serde(default)]
    dry_run: bool,
    /// Apply only these changes, `KIND/NAME` each (needs `target`).
    only: Option<Vec<String>>,
    /// Sync although the target's sync windows are closed to manual syncs; recorded in the run.
    #[serde(default)]
    override_window: bool,
}

/// `POST /api/v1/gitops/sync` with an optional `{"target", "dry_run", "only",
/// "override_window"}`: queue a plan of one target (or of every target) and answer 202 with
/// the queued requests; 400 `invalid_selection` for an `only` that cannot be applied, 409
/// `window_closed` while the target's sync windows are closed to manual syncs.
async fn sync(
    State(services): State<Arc<Services>>,
    Actor(actor): Actor,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: SyncBody = optional_json(body)?;
    let request = workflow::ManualSync {
        target: body.target,
        actor: Some(actor),
        dry_run: body.dry_run,
        only: body.only,
        override_window: body.override_window,
    };
    let queued = workflow::request_sync(&services, &request).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "queued": queued })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// Why, for the log (a change ticket, a review link).
    comment: Option<String>,
    /// Apply a plan waiting for its sync window now; recorded in the run.
    #[serde(default)]
    override_window: bool,
}

/// `POST /api/v1/gitops/plans/{id}/approve` with an optional `{"comment", "override_window"}`:
/// approve a plan
/// waiting for approval and queue it for the applier (202); 409 when it is not waiting or the
/// target moved since it was planned.
async fn approve(
    State(services): State<Arc<Services>>,
    Actor(actor): Actor,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let sync_id = parse_sync_id(&id)?;
    let body: ApproveBody = optional_json(body)?;
    match workflow::approve_plan_with(&services, sync_id, &actor, body.override_window).await? {
        // The workflow logs "plan approved" (for every entry point); the comment is the API's
        // own, logged only once the approval took, since a refused one (unknown plan, not
        // waiting, stale) answers with its error and approves nothing.
        ApproveOutcome::Approved { sync_id, target } => {
            if let Some(comment) = &body.comment {
                tracing::info!(%sync_id, %target, %actor, %comment, "approval comment");
            }
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(json!({
                    "status": "approved",
                    "sync_id": sync_id,
                    "target": target,
                    "approved_by": actor,
                })),
            )
                .into_response())
        }
        ApproveOutcome::Stale {
            planned_generation,
            current_generation,
            target,
            ..
        } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_plan",
            format!(
                "target `{target}` was synced since this plan was made (generation {} then, {current_generation} now): the plan is superseded, request a new sync",
                planned_generation.map_or_else(|| "unknown".to_owned(), |g| g.to_string())
            ),
        )),
        ApproveOutcome::NotPending { status, .. } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            format!("sync run `{sync_id}` is `{status}`, not waiting for approval"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    target: String,
    /// A commit, or the id of an earlier sync run.
    to: String,
}

/// `POST /api/v1/gitops/rollback` `{"target", "to"}`: sync an earlier commit and pin the target
/// there until it is resumed.
async fn rollback(
    State(services): State<Arc<Services>>,
    Actor(actor): Actor,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: RollbackBody = required_json(body)?;
    let request = workflow::rollback(&services, &body.target, &body.to, &actor).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "queued": [request], "pinned": body.to })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeBody {
    target: String,
}

/// `POST /api/v1/gitops/resume` `{"target"}`: lift a rollback pin or a suspension.
async fn resume(
    State(services): State<Arc<Services>>,
    Actor(actor): Actor,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: ResumeBody = required_json(body)?;
    let target = &body.target;
    tracing::info!(%target, %actor, "resume requested");
    workflow::resume(&services, &body.target, &actor).await?;
    Ok(axum::Json(json!({ "target": body.target, "resumed": true })).into_response())
}

/// `POST /api/v1/gitops/targets/{target}/suspend`: stop webhook, schedule and self-heal syncs
/// of the target until it is resumed; manual syncs still run.
async fn suspend_target(
    State(services): State<Arc<Services>>,
    Actor(actor): Actor,
    Path(target): Path<String>,
) -> Result<Response, ApiError> {
    tracing::info!(%target, %actor, "suspend requested");
    let state = workflow::suspend(&services, &target, &actor).await?;
    Ok(axum::Json(json!({
        "target": target,
        "suspended": true,
        "suspended_by": state.suspended_by,
        "suspended_at": state.suspended_at,
    }))
    .into_response())
}

/// `POST /api/v1/gitops/targets/{target}/resume`: lift a suspension (or a rollback pin) and
/// queue a plan of the branch head.
async fn resume_target(
    State(services): State<Arc<Services>>,
    Actor(actor): Actor,
    Path(target): Path<String>,
) -> Result<Response, ApiError> {
    tracing::info!(%target, %actor, "resume requested");
    workflow::resume(&services, &target, &actor).await?;
    Ok(axum::Json(json!({ "target": target, "resumed": true })).into_response())
}

fn parse_sync_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{id}` is not a sync id: expected a UUID such as `0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e`"
        ))
    })
}

/// A JSON body that may be absent (no bytes, or only whitespace).
fn optional_json<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(ApiError::from)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(&body)
}

fn required_json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(ApiError::from)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("this request needs a JSON body"));
    }
    parse_json(&body)
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route: see `GET /api/v1/gitops/status` and README.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
