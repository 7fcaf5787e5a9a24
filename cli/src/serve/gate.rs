//! The gate `ritmo serve` puts in front of the API (DESIGN.md §14). On AWS, API Gateway
//! authorises every call with IAM and the Lambda router runs bare; a local server has no such
//! front door, so this layer is its own:
//!
//! - `Host` must name the listen address (an IP literal, `localhost`, or a name allowed with
//!   `--allow-host`): a page on `evil.example` whose name is re-pointed at 127.0.0.1 (DNS
//!   rebinding) is answered 421 and reads nothing;
//! - a browser `Origin` is refused (403) unless allowed with `--allow-origin`;
//! - every state change (any method but GET, HEAD and OPTIONS) carries
//!   `Authorization: Bearer <token>`, the token being `RITMO_API_TOKEN` or the Secrets
//!   Manager secret `RITMO_API_TOKEN_SECRET_ARN`, compared in constant time (401 otherwise).
//!   With no token configured, state changes are refused (403) unless the server listens on a
//!   loopback address with `--insecure-local`;
//! - a state change's body is JSON (`Content-Type: application/json`, else 415), so a plain
//!   HTML form or a `text/plain` fetch can never pass as one;
//! - reads stay open on a loopback address; on any other address they need the token too.
//!   `/health/*` stays open for load balancers.
//!
//! The webhook's paths are not gated here: a push is authenticated by its signature, and the
//! provider reaches the server under whatever name it was given.
//!
//! The token is never logged, echoed or put in an error.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Result, bail};
use api::{Actor, ApiError};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ritmo::config::{SecretSetting, Settings};
use ritmo::crypto::SecretsManager;
use ritmo::services::Services;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header an authenticated caller names itself with (recorded as `approved_by`, a run's
/// actor); without it the token's configured actor name is recorded.
pub const ACTOR_HEADER: &str = "x-ritmo-actor";

/// Who a token-authenticated request is recorded as when neither `X-Ritmo-Actor` nor
/// `RITMO_API_ACTOR` names anyone.
pub const DEFAULT_TOKEN_ACTOR: &str = "api-token";

/// Who an unauthenticated state change under `--insecure-local` is recorded as, when it sends
/// no `X-Ritmo-Actor`.
pub const INSECURE_LOCAL_ACTOR: &str = "insecure-local";

/// The shortest token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LENGTH: usize = 16;

/// The longest `X-Ritmo-Actor` recorded.
const MAX_ACTOR_LENGTH: usize = 128;

/// How to get a token, for refusals and the banner.
const HOW_TO_CONFIGURE: &str = "start `ritmo serve` with RITMO_API_TOKEN=<token> (e.g. `export RITMO_API_TOKEN=$(openssl rand -hex 32)`) or RITMO_API_TOKEN_SECRET_ARN=<Secrets Manager secret>; on a loopback address only, `--insecure-local` allows unauthenticated state changes";

/// The gate's configuration, fixed at start-up.
pub struct Gate {
    token: Option<TokenSource>,
    actor: String,
    insecure_local: bool,
    listen: SocketAddr,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    open_paths: Vec<String>,
    services: Arc<Services>,
}

enum TokenSource {
    Value(SecretString),
    Managed(String),
}

/// What the command line adds to the settings.
pub struct GateOptions<'a> {
    pub insecure_local: bool,
    pub allow_origins: &'a [String],
    pub allow_hosts: &'a [String],
}

/// Why a request is refused, with the status it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` does not name this server (DNS rebinding, or a name not allowed).
    Host(String),
    /// A browser page from an origin not allowed.
    Origin(String),
    /// A state change (or a read off loopback) without a token while none is configured.
    NoTokenConfigured,
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A bearer token that matches no configured one.
    WrongToken,
    /// The token could not be read from Secrets Manager.
    TokenUnavailable { retryable: bool },
    /// A state change whose body is not declared JSON.
    NotJson(Option<String>),
    /// An `X-Ritmo-Actor` that cannot be recorded.
    BadActor,
}

impl Refusal {
    fn error(&self, gate: &Gate) -> ApiError {
        match self {
            Refusal::Host(host) => ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                format!(
                    "`Host: {host}` does not name this server ({}): use the listen address or `localhost`, or start `ritmo serve` with `--allow-host NAME` (RITMO_API_ALLOWED_HOSTS) to answer under a name",
                    gate.listen
                ),
            ),
            Refusal::Origin(origin) => ApiError::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                format!(
                    "requests from web pages are refused: origin `{origin}` is not allowed; start `ritmo serve` with `--allow-origin {origin}` (RITMO_API_ALLOWED_ORIGINS) to allow it"
                ),
            ),
            Refusal::NoTokenConfigured => ApiError::new(
                StatusCode::FORBIDDEN,
                "no_api_token_configured",
                format!(
                    "this request needs an API token and none is configured: {HOW_TO_CONFIGURE}"
                ),
            ),
            Refusal::MissingToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this request needs `Authorization: Bearer <token>`, the token `ritmo serve` was started with (RITMO_API_TOKEN or RITMO_API_TOKEN_SECRET_ARN; `make dev` writes it to .dev/api-token)",
            ),
            Refusal::WrongToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token does not match the one `ritmo serve` was started with",
            ),
            Refusal::TokenUnavailable { retryable } => ApiError::new(
                if *retryable {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                "token_unavailable",
                "the API token cannot be read from Secrets Manager",
            ),
            Refusal::NotJson(content_type) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "a request that changes state must send `Content-Type: application/json` (an empty body is fine), not {}",
                    content_type
                        .as_deref()
                        .map_or_else(|| "none".to_owned(), |t| format!("`{t}`"))
                ),
            ),
            Refusal::BadActor => ApiError::bad_request(format!(
                "`X-Ritmo-Actor` must be 1 to {MAX_ACTOR_LENGTH} printable characters"
            )),
        }
    }
}

impl Gate {
    /// The gate for a server bound to `listen`. Refuses `--insecure-local` on an address other
    /// computers reach, and a token too short to be a secret; reads a Secrets Manager token
    /// once, so a wrong ARN or a denied read stops the server at start rather than at the
    /// first request.
    pub async fn new(
        services: Arc<Services>,
        listen: SocketAddr,
        options: &GateOptions<'_>,
    ) -> Result<Gate> {
        let settings = &services.settings;
        let loopback = listen.ip().is_loopback();
        if options.insecure_local && !loopback {
            bail!(
                "--insecure-local is only allowed on a loopback address (127.0.0.1, [::1]), not `{listen}`: other computers could change state; set RITMO_API_TOKEN instead"
            );
        }
        let token = match &settings.api_token {
            None => None,
            Some(SecretSetting::Value(token)) => {
                check_token_length(token, "RITMO_API_TOKEN")?;
                Some(TokenSource::Value(token.clone()))
            }
            Some(SecretSetting::SecretsManager(id)) => {
                let values = services
                    .secrets_manager()
                    .await
                    .current_and_previous(id)
                    .await
                    .map_err(|error| {
                        anyhow::anyhow!(
                            "cannot read the API token from Secrets Manager secret `{id}` (RITMO_API_TOKEN_SECRET_ARN): {error}"
                        )
                    })?;
                if let Some(current) = values.first() {
                    check_token_length(current, &format!("Secrets Manager secret `{id}`"))?;
                }
                Some(TokenSource::Managed(id.clone()))
            }
            Some(SecretSetting::File(path)) => bail!(
                "the API token cannot be read from a file (`{}`): set RITMO_API_TOKEN or RITMO_API_TOKEN_SECRET_ARN",
                path.display()
            ),
        };
        let mut allowed_origins = settings.api_allowed_origins.clone();
        allowed_origins.extend(options.allow_origins.iter().cloned());
        let mut allowed_hosts = settings.api_allowed_hosts.clone();
        allowed_hosts.extend(options.allow_hosts.iter().cloned());
        Ok(Gate {
            token,
            actor: settings
                .api_actor
                .clone()
                .unwrap_or_else(|| DEFAULT_TOKEN_ACTOR.to_owned()),
            insecure_local: options.insecure_local,
            listen,
            allowed_hosts,
            allowed_origins,
            open_paths: open_paths(settings),
            services: services.clone(),
        })
    }

    /// One line for the banner: what the API requires.
    pub fn describe(&self) -> String {
        match (&self.token, self.insecure_local) {
            (Some(_), _) => {
                "state changes need `Authorization: Bearer $RITMO_API_TOKEN`".to_owned()
            }
            (None, true) => {
                "--insecure-local: any local process may change state without a token".to_owned()
            }
            (None, false) => {
                "no API token configured: state changes are refused (set RITMO_API_TOKEN)"
                    .to_owned()
            }
        }
    }

    fn is_loopback(&self) -> bool {
        self.listen.ip().is_loopback()
    }

    /// The request's origin when it is allowed, `None` when it sends none (not a browser, or a
    /// same-origin navigation), a refusal otherwise.
    fn origin(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, Refusal> {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let allowed = ritmo::config::parse_origin(&text)
            .is_some_and(|origin| self.allowed_origins.contains(&origin));
        if allowed {
            Ok(Some(value.clone()))
        } else {
            Err(Refusal::Origin(text))
        }
    }

    /// Who the request is from, once its token (if one is needed) is checked.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        let named = actor_header(headers)?;
        let Some(source) = &self.token else {
            if self.insecure_local {
                return Ok(named.unwrap_or_else(|| INSECURE_LOCAL_ACTOR.to_owned()));
            }
            return Err(Refusal::NoTokenConfigured);
        };
        let presented = bearer(headers).ok_or(Refusal::MissingToken)?;
        let matched = match source {
            TokenSource::Value(token) => token_matches(presented, std::slice::from_ref(token)),
            TokenSource::Managed(id) => {
                let manager = self.services.secrets_manager().await;
                let values = manager
                    .current_and_previous(id)
                    .await
                    .map_err(|error| unavailable(&error))?;
                token_matches(presented, &values)
                    || self.matches_after_rotation(manager, id, presented).await?
            }
        };
        if matched {
            Ok(named.unwrap_or_else(|| self.actor.clone()))
        } else {
            Err(Refusal::WrongToken)
        }
    }

    /// A token matching neither cached version may be a rotation newer than the cache: the
    /// secret is read again, at most once per refresh interval (so wrong tokens cannot drive
    /// AWS calls).
    async fn matches_after_rotation(
        &self,
        manager: &SecretsManager,
        id: &str,
        presented: &str,
    ) -> Result<bool, Refusal> {
        match manager.refresh_current_and_previous(id).await {
            Ok(Some(values)) => Ok(token_matches(presented, &values)),
            Ok(None) => Ok(false),
            Err(error) => Err(unavailable(&error)),
        }
    }
}

fn unavailable(error: &ritmo::crypto::CryptoError) -> Refusal {
    tracing::error!(%error, "cannot read the API token");
    Refusal::TokenUnavailable {
        retryable: error.is_retryable(),
    }
}

fn check_token_length(token: &SecretString, source: &str) -> Result<()> {
    if token.expose_secret().trim().chars().count() < MIN_TOKEN_LENGTH {
        bail!(
            "the API token in {source} is shorter than {MIN_TOKEN_LENGTH} characters: use a random one, e.g. `openssl rand -hex 32`"
        );
    }
    Ok(())
}

/// The paths the gate leaves to their own checks: the webhook's (signed) and the health
/// checks' (read-only, for load balancers).
fn open_paths(settings: &Settings) -> Vec<String> {
    let mut paths = vec![
        webhook::WEBHOOK_PATH.to_owned(),
        "/health/live".to_owned(),
        "/health/ready".to_owned(),
    ];
    if settings.webhook_path.starts_with('/') {
        paths.push(settings.webhook_path.clone());
    }
    paths
}

/// Whether `host` (a `Host` header or an HTTP/2 authority) names the server listening on
/// `listen`: `localhost` or an IP literal of the listen address (any when it listens on every
/// address) at its port, or a name in `allowed` at any port.
fn names_server(host: &str, listen: SocketAddr, allowed: &[String]) -> bool {
    let Some((name, port)) = split_host(host) else {
        return false;
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    // A name allowed explicitly is a DNS name or a reverse proxy's: any port.
    if allowed.contains(&name) {
        return true;
    }
    if port.unwrap_or(80) != listen.port() {
        return false;
    }
    if name == "localhost" {
        return true;
    }
    // An IP literal involves no DNS, so it cannot be rebound.
    match name.parse::<IpAddr>() {
        Ok(ip) => listen.ip().is_unspecified() || ip == listen.ip(),
        Err(_) => false,
    }
}

/// `name[:port]`, `[v6]:port` or `v6` → (name, port).
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        return match after {
            "" => Some((name, None)),
            _ => Some((name, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => Some((name, Some(port.parse().ok()?))),
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some(_) => Some((host, None)),
        None => Some((host, None)),
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `presented` equals one of `tokens`. Digests are compared, in constant time and at
/// a fixed length, so neither the token nor its length leaks through timing; every token is
/// tried so the time does not say which matched.
fn token_matches(presented: &str, tokens: &[SecretString]) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    tokens.iter().fold(false, |matched, token| {
        let token = Sha256::digest(token.expose_secret().trim().as_bytes());
        bool::from(token.ct_eq(&presented)) | matched
    })
}

/// `X-Ritmo-Actor`, when sent: 1 to [`MAX_ACTOR_LENGTH`] printable characters.
fn actor_header(headers: &HeaderMap) -> Result<Option<String>, Refusal> {
    let Some(value) = headers.get(ACTOR_HEADER) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| Refusal::BadActor)?.trim();
    let printable = text.chars().all(|c| !c.is_control());
    if text.is_empty() || text.chars().count() > MAX_ACTOR_LENGTH || !printable {
        return Err(Refusal::BadActor);
    }
    Ok(Some(text.to_owned()))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The middleware: see the module documentation for the order of the checks.
pub async fn check(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if gate.open_paths.iter().any(|open| open == path) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(host) if names_server(&host, gate.listen, &gate.allowed_hosts) => {}
        host => return refuse(&gate, &Refusal::Host(host.unwrap_or_default())),
    }
    let origin = match gate.origin(request.headers()) {
        Ok(origin) => origin,
        Err(refusal) => return refuse(&gate, &refusal),
    };
    if request.method() == Method::OPTIONS
        && let Some(origin) = origin
    {
        return preflight(origin);
    }
    let state_change = changes_state(request.method());
    if state_change || !gate.is_loopback() {
        match gate.authenticate(request.headers()).await {
            Ok(actor) => {
                request.extensions_mut().insert(Actor(actor));
            }
            Err(refusal) => return refuse(&gate, &refusal),
        }
    }
    if state_change && !is_json(request.headers()) {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        return refuse(&gate, &Refusal::NotJson(content_type));
    }
    let mut response = next.run(request).await;
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn refuse(gate: &Gate, refusal: &Refusal) -> Response {
    let error = refusal.error(gate);
    tracing::info!(
        code = error.code,
        status = error.status.as_u16(),
        "request refused by the API gate"
    );
    let unauthorized = error.status == StatusCode::UNAUTHORIZED;
    let mut response = error.into_response();
    if unauthorized {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"ritmo\""),
        );
    }
    response
}

/// The answer to a browser's CORS preflight from an allowed origin.
fn preflight(origin: HeaderValue) -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, origin),
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type, x-ritmo-actor"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            ),
            (header::VARY, HeaderValue::from_static("Origin")),
        ],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn host_headers_split_into_name_and_port() {
        assert_eq!(
            split_host("127.0.0.1:8080"),
            Some(("127.0.0.1", Some(8080)))
        );
        assert_eq!(split_host("localhost"), Some(("localhost", None)));
        assert_eq!(split_host("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(split_host("[::1]"), Some(("::1", None)));
        assert_eq!(split_host("::1"), Some(("::1", None)));
        assert_eq!(split_host("evil.example:notaport"), None);
        assert_eq!(split_host("[::1"), None);
    }

    #[test]
    fn only_the_listen_address_localhost_and_allowed_names_name_the_server() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let everywhere: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let allowed = ["ritmo.internal".to_owned()];

        assert!(names_server("127.0.0.1:8080", loopback, &[]));
        assert!(names_server("localhost:8080", loopback, &[]));
        assert!(names_server("LOCALHOST.:8080", loopback, &[]));
        assert!(!names_server("evil.example", loopback, &[]));
        assert!(!names_server("evil.example:8080", loopback, &[]));
        assert!(!names_server("127.0.0.1:9090", loopback, &[]));
        assert!(!names_server("127.0.0.1", loopback, &[]));
        assert!(!names_server("10.0.0.5:8080", loopback, &[]));
        assert!(names_server("10.0.0.5:8080", everywhere, &[]));
        assert!(names_server("[::1]:8080", everywhere, &[]));
        assert!(!names_server("ritmo.internal:8080", everywhere, &[]));
        assert!(names_server("ritmo.internal", everywhere, &allowed));
        assert!(names_server("ritmo.internal:443", loopback, &allowed));
        assert!(!names_server("", loopback, &allowed));
    }

    #[test]
    fn a_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bearer  abc ")])),
            Some("abc")
        );
        assert_eq!(bearer(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }

    #[test]
    fn only_the_configured_token_matches() {
        let tokens = [
            SecretString::from("current-token-0123456789"),
            SecretString::from("previous-token-0123456789"),
        ];

        assert!(token_matches("current-token-0123456789", &tokens));
        assert!(token_matches("previous-token-0123456789", &tokens));
        assert!(!token_matches("current-token-012345678", &tokens));
        assert!(!token_matches("", &tokens));
        assert!(!token_matches("current-token-0123456789", &[]));
    }

    #[test]
    fn json_is_application_json_with_or_without_parameters() {
        assert!(is_json(&headers(&[("content-type", "application/json")])));
        assert!(is_json(&headers(&[(
            "content-type",
            "Application/JSON; charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json(&headers(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )])));
        assert!(!is_json(&headers(&[])));
    }

    #[test]
    fn an_actor_header_is_one_printable_line_of_bounded_length() {
        assert_eq!(
            actor_header(&headers(&[("x-ritmo-actor", " alice ")])),
            Ok(Some("alice".to_owned()))
        );
        assert_eq!(actor_header(&headers(&[])), Ok(None));
        assert_eq!(
            actor_header(&headers(&[("x-ritmo-actor", "")])),
            Err(Refusal::BadActor)
        );
        assert_eq!(
            actor_header(&headers(&[("x-ritmo-actor", &"a".repeat(129))])),
            Err(Refusal::BadActor)
        );
        assert_eq!(
            actor_header(&headers(&[("x-ritmo-actor", "a\tb")])),
            Err(Refusal::BadActor)
        );
    }
}
