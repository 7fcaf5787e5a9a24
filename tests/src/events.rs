//! Replaying `events/*.json` against a router, as API Gateway delivers them to `lambda_http`:
//! the `webhook` and `api` tests share it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, Uri};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use ritmo::message::PlanRequest;
use ritmo::queue::LocalReceivers;
use serde_json::Value;
use tower::ServiceExt;

pub fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// Every `events/<prefix>*.json`, sorted: a new event file is replayed without touching the
/// tests.
pub fn event_files(prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = file_name(path);
            name.starts_with(prefix) && name.ends_with(".json")
        })
        .collect();
    files.sort();
    files
}

pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// The API Gateway event in `path` as the request `lambda_http` hands the router in Lambda
/// (REST v1 or HTTP API v2, base64 bodies decoded).
pub fn request_from_event(path: &Path) -> lambda_http::Request {
    let text = std::fs::read_to_string(path).unwrap();
    let mut request = lambda_http::request::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not an API Gateway event: {error}", path.display()));
    without_stage(&mut request);
    request
}

/// What `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH` (set for every function in template.yaml) makes
/// `lambda_http` do: route without the REST API stage (`/live`) in front of the path. The
/// variable itself cannot be set from a multi-threaded test without `unsafe`.
fn without_stage(request: &mut lambda_http::Request) {
    let stage = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.stage.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|stage| stage != "$default") else {
        return;
    };
    let uri = request.uri().clone();
    let Some(rest) = uri
        .path()
        .strip_prefix(&format!("/{stage}"))
        .filter(|rest| rest.starts_with('/'))
    else {
        return;
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    let mut parts = uri.into_parts();
    parts.path_and_query = Some(path_and_query.parse().unwrap());
    *request.uri_mut() = Uri::from_parts(parts).unwrap();
}

/// Calls the router once; returns the status and the body, which must be JSON.
pub async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let path = request.uri().path().to_owned();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        panic!(
            "{path} answered {status} with a body that is not JSON ({error}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, body)
}

pub async fn replay(app: &Router, event: &Path) -> (StatusCode, Value) {
    call(app, request_from_event(event).map(Body::new)).await
}

/// Everything queued so far on the local plan queue.
pub fn drain_plans(receivers: &mut LocalReceivers) -> Vec<PlanRequest> {
    let mut plans = Vec::new();
    while let Ok(plan) = receivers.plans.try_recv() {
        plans.push(plan);
    }
    plans
}

/// An error body: `{"error": code, "message": …}`.
pub fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}
