//! API errors: a status, a stable code and a message, answered as
//! `{"error": code, "message": message}`. Messages come from the core's errors, which never
//! carry a secret.

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ritmo::git::GitError;
use ritmo::store::StoreError;
use serde_json::json;

/// An error answered to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = self.code, message = %self.message, "request failed");
        }
        (
            self.status,
            axum::Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "payload_too_large",
                format!("the body is larger than {} bytes", crate::BODY_LIMIT),
            )
        } else {
            ApiError::new(
                status,
                "bad_request",
                format!("cannot read the body: {rejection}"),
            )
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::RunNotFound(_) | StoreError::UnknownTarget(_) => {
                ApiError::not_found(error.to_string())
            }
            StoreError::InvalidTarget { .. } => ApiError::bad_request(error.to_string()),
            _ if error.is_retryable() || is_connection_lost(&error) => {
                ApiError::unavailable(error.to_string())
            }
            _ => internal(&error),
        }
    }
}

impl From<ritmo::Error> for ApiError {
    fn from(error: ritmo::Error) -> Self {
        match error {
            ritmo::Error::Store(error) => ApiError::from(error),
            ritmo::Error::Config(error) => ApiError::bad_request(error.to_string()),
            // The pipeline says what the caller asked for cannot be done (a rollback to
            // something that is not a commit, a run of another target).
            ritmo::Error::InvalidRequest(message) => ApiError::bad_request(message),
            // `only` malformed, matching no change, or leaving a reference dangling: nothing
            // was queued.
            ritmo::Error::Selection(error) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_selection",
                error.to_string(),
            ),
            // A manual sync while the target's sync windows are closed to manual syncs.
            error @ ritmo::Error::WindowClosed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "window_closed", error.to_string())
            }
            // A rollback to a commit the target's branch does not have: the request names
            // something that is not there, and nothing was pinned.
            ritmo::Error::Git(error @ GitError::CommitNotFound { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_commit",
                format!(
                    "{error}: nothing was pinned; give a commit of the target's branch or the id of an earlier sync run"
                ),
            ),
            error if error.is_retryable() => ApiError::unavailable(error.to_string()),
            error => internal(&error),
        }
    }
}

/// A closed connection is not retryable for the store (it must be rebuilt), but for a caller
/// it is the service being unavailable, not a bug.
fn is_connection_lost(error: &StoreError) -> bool {
    match error {
        StoreError::Query { source, .. } | StoreError::Connect { source, .. } => source.is_closed(),
        _ => false,
    }
}

fn internal(error: &dyn std::error::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        error.to_string(),
    )
}
