//! A local stand-in for a forge's REST API (GitHub, GitLab, Gitea): it records every request
//! and keeps the comments posted, so a test sees exactly what a preview sent and can check
//! that a later push edits the same comment. It lists comments a page at a time as the forges
//! do: at most 100 a page (Gitea: 50, its default `MAX_RESPONSE_ITEMS`), the next page linked
//! by `Link: <…>; rel="next"` (GitLab: also `x-next-page`).

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};

/// The installation token the fake forge hands to any GitHub App (by default; see
/// [`FakeForge::tokens_expire_in`]).
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
    /// The most comments one page lists, whatever was asked.
    page_cap: usize,
    /// GitLab's `x-next-page` header is sent too.
    gitlab: bool,
    /// `http://127.0.0.1:PORT`, for the absolute links of the next pages.
    origin: String,
    /// When set, each installation token minted is a new one (`…-1`, `…-2`) that expires
    /// this long after it is handed out; else [`INSTALLATION_TOKEN`], valid for years.
    token_lifetime: Option<chrono::Duration>,
    tokens_minted: usize,
    /// Every installation token handed out, and those since revoked (answered 401).
    tokens_handed_out: Vec<String>,
    tokens_revoked: Vec<String>,
}

/// A fake forge API on a loopback port, served from the test's runtime.
pub struct FakeForge {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeForge {
    /// Starts serving; `prefix` is the API root's path (`/api/v3`, `/api/v4`, `/api/v1`).
    pub async fn start(prefix: &str) -> FakeForge {
        let state = Arc::new(Mutex::new(State {
            page_cap: if prefix == "/api/v1" { 50 } else { 100 },
            gitlab: prefix == "/api/v4",
            ..State::default()
        }));
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
        state.lock().unwrap_or_else(PoisonError::into_inner).origin = format!("http://{addr}");
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

    /// From now on, each installation token is a new one that expires `lifetime` after it is
    /// minted.
    pub fn tokens_expire_in(&self, lifetime: chrono::Duration) {
        self.lock().token_lifetime = Some(lifetime);
    }

    /// Revokes every installation token handed out so far: requests bearing one are answered
    /// 401, and the next mint hands out a new token.
    pub fn revoke_tokens(&self) {
        let mut state = self.lock();
        let handed_out = state.tokens_handed_out.clone();
        state.tokens_revoked.extend(handed_out);
    }

    /// How many installation tokens were minted (`POST …/access_tokens`).
    pub fn tokens_minted(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/access_tokens"))
            .count()
    }

    /// Adds comments as if people had posted them, after those already there.
    pub fn add_comments(&self, bodies: impl IntoIterator<Item = String>) {
        let mut state = self.lock();
        for body in bodies {
            let id = 1000 + state.comments.len() as u64;
            state.comments.push((id, body));
        }
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
    let bearer = |credential: &str| {
        let token = credential
            .strip_prefix("Bearer ")
            .or_else(|| credential.strip_prefix("token "))
            .unwrap_or(credential);
        state.tokens_revoked.iter().any(|revoked| revoked == token)
    };
    if !path.ends_with("/access_tokens")
        && bearer(&state.requests[state.requests.len() - 1].credential)
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let posted: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let comment_body = posted["body"].as_str().unwrap_or_default().to_string();
    let listing = path.ends_with("/comments") || path.ends_with("/notes");
    match method {
        Method::GET if listing => {
            let query = uri.query().unwrap_or_default();
            let number = |name: &str| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|n| n.parse::<usize>().ok())
            };
            let page = number("page").unwrap_or(1).max(1);
            let size = number("per_page")
                .or_else(|| number("limit"))
                .unwrap_or(30)
                .clamp(1, state.page_cap);
            let listed: Vec<Value> = state
                .comments
                .iter()
                .skip((page - 1) * size)
                .take(size)
                .map(|(id, body)| json!({"id": id, "body": body}))
                .collect();
            let mut response = axum::Json(Value::Array(listed)).into_response();
            if page * size < state.comments.len() {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.starts_with("page=") && !pair.is_empty())
                    .collect();
                let link = format!(
                    "<{}{path}?{}&page={}>; rel=\"next\"",
                    state.origin,
                    kept.join("&"),
                    page + 1
                );
                let headers = response.headers_mut();
                headers.insert(
                    axum::http::header::LINK,
                    link.parse().expect("a Link header value"),
                );
                if state.gitlab {
                    headers.insert("x-next-page", (page + 1).into());
                }
            }
            response
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
        Method::POST if path.ends_with("/access_tokens") => {
            state.tokens_minted += 1;
            let numbered = format!("{INSTALLATION_TOKEN}-{}", state.tokens_minted);
            let (token, expires_at) = match state.token_lifetime {
                Some(lifetime) => (numbered, (chrono::Utc::now() + lifetime).to_rfc3339()),
                None if state.tokens_revoked.is_empty() => (
                    INSTALLATION_TOKEN.to_string(),
                    "2099-01-01T00:00:00Z".to_string(),
                ),
                None => (numbered, "2099-01-01T00:00:00Z".to_string()),
            };
            state.tokens_handed_out.push(token.clone());
            (
                StatusCode::CREATED,
                axum::Json(json!({"token": token, "expires_at": expires_at})),
            )
                .into_response()
        }
        Method::POST => (StatusCode::CREATED, axum::Json(json!({"id": 1}))).into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
