//! A local Lambda Runtime API for one function process: it hands out one event, records what
//! the function posts back, and then holds the next long poll open, as Lambda does when no
//! request comes. A real function binary runs against it unchanged (`AWS_LAMBDA_RUNTIME_API`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::mpsc;

/// What the function posted back for its invocation.
#[derive(Debug)]
pub struct Posted {
    /// `"response"` or `"error"`.
    pub kind: &'static str,
    pub body: Value,
    /// When it arrived, for timing a whole invocation from outside.
    pub at: Instant,
}

#[derive(Clone)]
struct Shared {
    event: Arc<Mutex<Option<Value>>>,
    function_name: String,
    posted: mpsc::UnboundedSender<Posted>,
}

/// Serves `event` to the first `next` of the function named `function_name`; returns the
/// address to put in `AWS_LAMBDA_RUNTIME_API` and the channel of what the function posts.
///
/// # Panics
/// When no loopback port can be bound.
pub async fn serve_one(
    function_name: &str,
    event: Value,
) -> (String, mpsc::UnboundedReceiver<Posted>) {
    let (posted, received) = mpsc::unbounded_channel();
    let shared = Shared {
        event: Arc::new(Mutex::new(Some(event))),
        function_name: function_name.to_string(),
        posted,
    };
    let record = |kind: &'static str| {
        move |State(shared): State<Shared>, body: String| async move {
            let at = Instant::now();
            let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
            let _ = shared.posted.send(Posted { kind, body, at });
            StatusCode::ACCEPTED
        }
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_event))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(record("response")),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(record("error")),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the Runtime API");
    let address = listener
        .local_addr()
        .expect("read the Runtime API's address")
        .to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, received)
}

async fn next_event(State(shared): State<Shared>) -> impl IntoResponse {
    let event = match shared.event.lock() {
        Ok(mut event) => event.take(),
        Err(_) => None,
    };
    let Some(event) = event else {
        return std::future::pending().await;
    };
    let deadline_ms = (SystemTime::now() + Duration::from_secs(900))
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let arn = format!(
        "arn:aws:lambda:us-east-1:123456789012:function:{}",
        shared.function_name
    );
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("lambda-runtime-aws-request-id", "invocation-1".to_string()),
        ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
        ("lambda-runtime-invoked-function-arn", arn),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    (headers, event.to_string())
}
