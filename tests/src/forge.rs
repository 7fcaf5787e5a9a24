//! A local stand-in for a forge's REST API (GitHub, GitLab, Gitea): it records every request
//! and keeps the comments posted, so a test sees exactly what a preview sent and can check
//! that a later push edits the same comment.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The installation token the fake forge hands to any GitHub App.
pub const INSTALLATION_TOKEN: &str = "ghs_fakeinstallationtoken";

/// One request as the fake forge received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// The `Authorization` or `PRIVATE-TOKEN` header, as sent.
    pub credential: String,
    /// The raw body (empty for a GET).
    pub body: String,
}

impl Recorded {
    /// The body as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    /// (id, body) of every comment or note, in the order posted.
    comments: Vec<(u64, String)>,
}

/// A fake forge API on a loopback port, served from the test's runtime.
pub struct FakeForge {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeForge {
    /// Starts serving; `prefix` is the API root's path (`/api/v3`, `/api/v4`, `/api/v1`).
    pub async fn start(prefix: &str) -> FakeForge {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { answer(&state, method, uri, headers, body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake forge");
        let addr = listener.local_addr().expect("the fake forge's address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeForge {
            url: format!("http://{addr}{prefix}"),
            state,
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests that changed something (not the GETs listing comments).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// The comments (notes) as they are now: (id, body).
    pub fn comments(&self) -> Vec<(u64, String)> {
        self.lock().comments.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn answer(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let credential = match header("authorization") {
        value if value.is_empty() => header("private-token"),
        value => value,
    };
    let path = uri.path().to_string();
    let text = String::from_utf8_lossy(&body).into_owned();
    state.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        credential,
        body: text.clone(),
    });
    let posted: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let comment_body = posted["body"].as_str().unwrap_or_default().to_string();
    let listing = path.ends_with("/comments") || path.ends_with("/notes");
    match method {
        Method::GET if listing => {
            let page = uri
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|pair| pair.strip_prefix("page="))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(1);
            let all: Vec<Value> = if page == 1 {
                state
                    .comments
                    .iter()
                    .map(|(id, body)| json!({"id": id, "body": body}))
                    .collect()
            } else {
                Vec::new()
            };
            axum::Json(Value::Array(all)).into_response()
        }
        Method::POST if listing => {
            let id = 1000 + state.comments.len() as u64;
            state.comments.push((id, comment_body.clone()));
            (
                StatusCode::CREATED,
                axum::Json(json!({"id": id, "body": comment_body})),
            )
                .into_response()
        }
        Method::PATCH | Method::PUT => {
            let id = path
                .rsplit('/')
                .next()
                .and_then(|id| id.parse::<u64>().ok());
            match state.comments.iter_mut().find(|(c, _)| Some(*c) == id) {
                Some(comment) => {
                    comment.1 = comment_body.clone();
                    axum::Json(json!({"id": comment.0, "body": comment_body})).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        // A GitHub App's installation token, for any app and installation.
        Method::POST if path.ends_with("/access_tokens") => (
            StatusCode::CREATED,
            axum::Json(json!({
                "token": INSTALLATION_TOKEN,
                "expires_at": "2099-01-01T00:00:00Z",
            })),
        )
            .into_response(),
        Method::POST => (StatusCode::CREATED, axum::Json(json!({"id": 1}))).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
