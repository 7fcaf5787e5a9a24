//! The `webhook` function as an axum router: `POST /webhooks/gitops` (and the configured
//! `webhook.path`) hands the raw body and the headers to [`ritmo::workflow::accept_webhook`],
//! which verifies the signature, records the delivery id and queues the plan requests.
//!
//! This crate owns only the HTTP edge: routing, the body size limit and JSON error bodies.
//! Lambda runs the router with `lambda_http` (REST v1, HTTP API v2, base64 bodies decoded by the
//! runtime before the router sees them); `ritmo serve` runs the same router on a local port.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ritmo::services::Services;
use ritmo::workflow;
use serde_json::json;

/// The path every provider is configured with.
pub const WEBHOOK_PATH: &str = "/webhooks/gitops";

/// Largest body accepted: GitHub caps payloads at 25 MB but a push of a config repository is a
/// few kilobytes; anything near a megabyte is not a push we want to parse.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The webhook router: [`WEBHOOK_PATH`] and, when different, `settings.webhook_path`.
pub fn app(services: Arc<Services>) -> Router {
    let configured = services.settings.webhook_path.clone();
    let mut router = Router::new().route(WEBHOOK_PATH, post(receive));
    if configured.starts_with('/') && configured != WEBHOOK_PATH {
        router = router.route(&configured, post(receive));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(services)
}

async fn receive(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_rejected(&rejection),
    };
    let headers = header_pairs(&headers);
    let reply = workflow::accept_webhook(&services, &headers, &body).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(reply.body)).into_response()
}

/// Headers as `(lower-case name, value)` pairs; a value that is not UTF-8 is kept lossily (no
/// provider sends one in a header we read).
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn body_rejected(rejection: &BytesRejection) -> Response {
    let status = rejection.status();
    let (code, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
        (
            "payload_too_large",
            format!("the body is larger than {BODY_LIMIT} bytes"),
        )
    } else {
        ("bad_body", format!("cannot read the body: {rejection}"))
    };
    error(status, code, &message)
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no such route: webhooks are delivered to `POST {WEBHOOK_PATH}`"),
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "webhooks are delivered with POST",
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": code, "message": message })),
    )
        .into_response()
}
