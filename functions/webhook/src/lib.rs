//! The `webhook` function as an axum router: `POST /webhooks/gitops` (and the configured
//! `webhook.path`) hands the raw body and the headers to [`ritmo::workflow::accept_webhook`],
//! which verifies the signature, records the delivery id and queues the plan requests, and
//! answers the [`WebhookOutcome`] it returns as HTTP ([`response`]).
//!
//! This crate owns only the HTTP edge: routing, the body size limit, the bound on deliveries in
//! flight, the outcome's status and JSON body.
//!
//! A storm of pushes degrades instead of piling up (infra/README.md, "Webhook storms"): a
//! delivery over the bound is refused at once with 503 and `Retry-After`, before it waits on
//! the database, and so is every failure the sender's retry may cure. The sender redelivers;
//! an accepted delivery is queued once, as the plan request's FIFO deduplication id and the
//! recorded delivery id both collapse a redelivery.
//! Lambda runs the router with `lambda_http` (REST v1, HTTP API v2, base64 bodies decoded by the
//! runtime before the router sees them); `ritmo serve` runs the same router on a local port.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ritmo::services::Services;
use ritmo::webhook::WebhookError;
use ritmo::workflow::{self, WebhookOutcome};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// The path every provider is configured with.
pub const WEBHOOK_PATH: &str = "/webhooks/gitops";

/// Largest body accepted: GitHub caps payloads at 25 MB but a push of a config repository is a
/// few kilobytes; anything near a megabyte is not a push we want to parse.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Deliveries one router works on at once. `ritmo serve` shares one database connection
/// between them, so more would only wait longer on it; Lambda runs one per execution
/// environment and bounds them with the function's reserved concurrency instead.
pub const MAX_IN_FLIGHT: usize = 32;

/// Seconds a refused sender is asked to wait before redelivering, at least: long enough for a
/// burst's in-flight deliveries to finish.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Up to this many seconds are added to [`RETRY_AFTER_SECS`] at random, so the senders a
/// burst refused do not all come back in the same second and collide again.
pub const RETRY_AFTER_JITTER_SECS: u64 = 5;

/// The webhook router: [`WEBHOOK_PATH`] and, when different, `settings.webhook_path`, with
/// at most [`MAX_IN_FLIGHT`] deliveries in flight.
pub fn app(services: Arc<Services>) -> Router {
    app_with_limit(services, MAX_IN_FLIGHT)
}

/// [`app`] with at most `max_in_flight` deliveries in flight (at least one); the next is
/// refused with 503 `busy` and `Retry-After`.
pub fn app_with_limit(services: Arc<Services>, max_in_flight: usize) -> Router {
    let configured = services.settings.webhook_path.clone();
    let slots = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let mut router = Router::new().route(WEBHOOK_PATH, post(receive));
    if configured.starts_with('/') && configured != WEBHOOK_PATH {
        router = router.route(&configured, post(receive));
    }
    router
        // A route layer, so a wrong path or method is answered without a slot.
        .route_layer(axum::middleware::from_fn_with_state(slots, admit))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(services)
}

/// Takes a slot before the body is read, or refuses the delivery at once: waiting for one
/// would hold the sender's connection (and, in Lambda, the execution environment) for
/// nothing.
async fn admit(State(slots): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_slot) = slots.try_acquire_owned() else {
        tracing::warn!("webhook refused: too many deliveries in flight");
        return retry_later(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many deliveries at once; redeliver after Retry-After seconds",
        ));
    };
    next.run(request).await
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
    let outcome = workflow::accept_webhook(&services, &headers, &body).await;
    let (status, body) = response(&outcome);
    let reply = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        retry_later(reply)
    } else {
        reply
    }
}

/// Adds `Retry-After`: [`RETRY_AFTER_SECS`] plus up to [`RETRY_AFTER_JITTER_SECS`].
fn retry_later(mut reply: Response) -> Response {
    let seconds = RETRY_AFTER_SECS + fastrand::u64(0..=RETRY_AFTER_JITTER_SECS);
    reply
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    reply
}

/// The HTTP answer to an outcome: a status and a JSON body, `{"status", …}` when the delivery
/// was taken (even if it leads to nothing) and `{"error", "message"}` when it was refused.
///
/// Configuration states are 4xx, never 5xx: a switched-off webhook is 404 (there is nothing
/// to deliver to), a missing secret 403 (nothing can be verified). A 5xx means only that the
/// sender should retry: a 503 may pass later, a 500 needs a person (a secret that cannot be
/// read).
pub fn response(outcome: &WebhookOutcome) -> (StatusCode, Value) {
    match outcome {
        WebhookOutcome::Accepted {
            targets,
            revision,
            delivery_id,
            skipped,
        } => (
            StatusCode::ACCEPTED,
            json!({
                "status": "accepted",
                "targets": targets,
                "revision": revision,
                "delivery_id": delivery_id,
                "skipped_suspended": skipped,
            }),
        ),
        WebhookOutcome::Duplicate { delivery_id } => (
            StatusCode::OK,
            json!({"status": "duplicate", "delivery_id": delivery_id}),
        ),
        WebhookOutcome::Ping => (StatusCode::OK, json!({"status": "ok", "event": "ping"})),
        WebhookOutcome::Ignored { reason } => (
            StatusCode::ACCEPTED,
            json!({"status": "ignored", "reason": reason}),
        ),
        WebhookOutcome::Disabled => (
            StatusCode::OK,
            json!({
                "status": "disabled",
                "reason": "gitops is disabled (`gitops.enabled: false` or RITMO_GITOPS_ENABLED=false): nothing is queued",
            }),
        ),
        WebhookOutcome::WebhookDisabled => error_body(
            StatusCode::NOT_FOUND,
            "webhook_disabled",
            "the webhook is disabled (`webhook.enabled: false` or RITMO_GITOPS_WEBHOOK_ENABLED=false): enable it to accept pushes",
        ),
        WebhookOutcome::NoSecret => error_body(
            StatusCode::FORBIDDEN,
            WebhookError::NoSecretConfigured.code(),
            &WebhookError::NoSecretConfigured.to_string(),
        ),
        WebhookOutcome::Rejected(error) => {
            let status = match error {
                WebhookError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                WebhookError::MissingSignature { .. } | WebhookError::BadSignature { .. } => {
                    StatusCode::UNAUTHORIZED
                }
                WebhookError::NoSecretConfigured => StatusCode::FORBIDDEN,
                WebhookError::UnknownProvider | WebhookError::InvalidPayload { .. } => {
                    StatusCode::BAD_REQUEST
                }
            };
            error_body(status, error.code(), &error.to_string())
        }
        WebhookOutcome::Failed(failure) => {
            let status = if failure.is_retryable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            error_body(status, failure.code(), failure.message())
        }
    }
}

fn error_body(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    (status, json!({ "error": code, "message": message }))
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
    let (status, body) = error_body(status, code, message);
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use ritmo::workflow::WebhookFailure;

    use super::*;

    #[test]
    fn configuration_states_are_4xx_and_only_failures_are_5xx() {
        let status = |outcome: WebhookOutcome| response(&outcome).0;

        assert_eq!(status(WebhookOutcome::Disabled), StatusCode::OK);
        assert_eq!(
            status(WebhookOutcome::WebhookDisabled),
            StatusCode::NOT_FOUND
        );
        assert_eq!(status(WebhookOutcome::NoSecret), StatusCode::FORBIDDEN);
        assert_eq!(
            status(WebhookOutcome::Rejected(WebhookError::PayloadTooLarge {
                limit: 1
            })),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status(WebhookOutcome::Rejected(WebhookError::UnknownProvider)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(WebhookOutcome::Failed(WebhookFailure::NotQueued)),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(WebhookOutcome::Failed(WebhookFailure::SecretUnreadable {
                retryable: false
            })),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn every_refusal_answers_its_code_and_a_message() {
        for outcome in [
            WebhookOutcome::WebhookDisabled,
            WebhookOutcome::NoSecret,
            WebhookOutcome::Rejected(WebhookError::UnknownProvider),
            WebhookOutcome::Failed(WebhookFailure::NotRecorded),
        ] {
            let (_, body) = response(&outcome);

            assert_eq!(body["error"], outcome.code(), "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}
