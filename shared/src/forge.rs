//! Posting a pull request's preview to its forge: a commit status (or, with a GitHub App, a
//! check run with an annotation per problem) and one comment (GitLab: note) found by its
//! hidden marker and edited in place on later pushes.
//!
//! What is posted comes from `crate::preview`, already redacted; where it goes is the
//! target's own repository, given by the caller from the target's URL. Blocking (reqwest's
//! blocking client, as gix already links it): call it from `spawn_blocking`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::preview::{Preview, Verdict};

/// Pages of comments looked through for the marker, each of up to [`PAGE_SIZE`] (Gitea caps a
/// page at its `MAX_RESPONSE_ITEMS`, 50 by default). A pull request with more has its preview
/// posted anew rather than hunted for without end.
const MAX_PAGES: u32 = 10;
const PAGE_SIZE: usize = 100;

/// Upper bound of one request to the forge.
const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error(
        "previews cannot be posted to {provider}: only GitHub, GitLab, Gitea and Forgejo are supported"
    )]
    UnsupportedProvider { provider: String },
    #[error(
        "the forge API URL `{url}` must be https (plain http is accepted on loopback only): set `preview.api_url`"
    )]
    InsecureUrl { url: String },
    #[error("cannot tell the forge API of `{repo_url}`: set `preview.api_url`")]
    NoApiUrl { repo_url: String },
    #[error("{method} {url}: {reason}")]
    Request {
        method: &'static str,
        url: String,
        reason: String,
        retryable: bool,
        /// The forge's HTTP status, when it answered.
        status: Option<u16>,
    },
    #[error("cannot read the preview credential: {0}")]
    Credential(String),
}

impl ForgeError {
    /// Whether posting again later may pass without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            ForgeError::Request { retryable, .. } => *retryable,
            ForgeError::Credential(_) => true,
            ForgeError::UnsupportedProvider { .. }
            | ForgeError::InsecureUrl { .. }
            | ForgeError::NoApiUrl { .. } => false,
        }
    }

    /// The forge refused the credential itself (401), as it does a revoked token.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            ForgeError::Request {
                status: Some(401),
                ..
            }
        )
    }
}

/// The forges a preview is posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (the same API).
    Gitea,
}

impl ForgeKind {
    /// From a webhook provider's name (`github`, `gitlab`, `gitea`, `forgejo`).
    pub fn from_provider(provider: &str) -> Result<ForgeKind, ForgeError> {
        match provider {
            "github" => Ok(ForgeKind::GitHub),
            "gitlab" => Ok(ForgeKind::GitLab),
            "gitea" | "forgejo" => Ok(ForgeKind::Gitea),
            other => Err(ForgeError::UnsupportedProvider {
                provider: other.to_string(),
            }),
        }
    }

    /// The API root for a repository at `host` when none is configured: GitHub's public API
    /// for github.com, GitHub Enterprise Server's `/api/v3`, GitLab's `/api/v4`, Gitea's
    /// `/api/v1`.
    pub fn default_api_url(self, host: &str) -> String {
        match self {
            ForgeKind::GitHub if host == "github.com" => "https://api.github.com".into(),
            ForgeKind::GitHub => format!("https://{host}/api/v3"),
            ForgeKind::GitLab => format!("https://{host}/api/v4"),
            ForgeKind::Gitea => format!("https://{host}/api/v1"),
        }
    }
}

/// Where and how to post: one target's repository on its forge.
#[derive(Debug, Clone)]
pub struct Forge {
    pub kind: ForgeKind,
    /// API root without a trailing `/`.
    pub api_url: String,
    /// `owner/name` (GitLab: the project's full path) of the target's repository.
    pub repository: String,
    pub token: SecretString,
    /// Post a check run instead of a commit status (GitHub with a GitHub App).
    pub check_run: bool,
}

/// What was posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The comment's (note's) id on the forge.
    pub comment_id: u64,
    /// Whether an existing comment was edited rather than a new one posted.
    pub edited: bool,
}

impl Forge {
    /// Posts `preview` of pull request `number` at its head commit: the status (or check
    /// run), then the comment, edited in place when one with the target's marker exists.
    pub fn publish(&self, number: u64, preview: &Preview<'_>) -> Result<Published, ForgeError> {
        let https_or_loopback = reqwest::Url::parse(&self.api_url)
            .is_ok_and(|url| url.scheme() == "https" || crate::git::is_loopback(url.host_str()));
        if !https_or_loopback {
            return Err(ForgeError::InsecureUrl {
                url: self.api_url.clone(),
            });
        }
        let client = Client::new(self)?;
        if self.check_run {
            client.check_run(preview)?;
        } else {
            client.status(preview)?;
        }
        client.comment(number, preview)
    }
}

struct Client<'a> {
    forge: &'a Forge,
    http: reqwest::blocking::Client,
}

impl<'a> Client<'a> {
    fn new(forge: &'a Forge) -> Result<Self, ForgeError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT.min(Duration::from_secs(10)))
            .user_agent(concat!("ritmo-gitops/", env!("CARGO_PKG_VERSION")))
            // A redirect could carry the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| ForgeError::Request {
                method: "BUILD",
                url: forge.api_url.clone(),
                reason: err.to_string(),
                retryable: false,
                status: None,
            })?;
        Ok(Client { forge, http })
    }

    /// The repository's path in API URLs: GitLab names a project by its URL-encoded path.
    fn repo(&self) -> String {
        match self.forge.kind {
            ForgeKind::GitLab => format!(
                "projects/{}",
                self.forge
                    .repository
                    .replace('%', "%25")
                    .replace('/', "%2F")
            ),
            ForgeKind::GitHub | ForgeKind::Gitea => format!("repos/{}", self.forge.repository),
        }
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ForgeError> {
        let url = format!("{}/{path}", self.forge.api_url);
        self.send_to(method, url, body).map(|(value, _)| value)
    }

    /// [`send`](Self::send) to a whole URL (one the forge gave as the next page), also
    /// returning the response's headers.
    fn send_to(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<&Value>,
    ) -> Result<(Value, reqwest::header::HeaderMap), ForgeError> {
        let name: &'static str = match method.as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "PATCH" => "PATCH",
            "PUT" => "PUT",
            _ => "REQUEST",
        };
        let token = self.forge.token.expose_secret();
        let mut request = self.http.request(method, &url);
        request = match self.forge.kind {
            ForgeKind::GitHub => request
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .bearer_auth(token),
            ForgeKind::GitLab => request.header("PRIVATE-TOKEN", token),
            ForgeKind::Gitea => request.header("Authorization", format!("token {token}")),
        };
        if let Some(body) = body {
            // reqwest's `json` feature is not built; the body is serialised here instead.
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        let failed = |reason: String, retryable: bool, status: Option<u16>| ForgeError::Request {
            method: name,
            url: url.clone(),
            reason,
            retryable,
            status,
        };
        let response = request.send().map_err(|err| {
            // reqwest's message names the URL and the cause, never a header.
            failed(crate::telemetry::error_chain(&err), true, None)
        })?;
        let status = response.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => "the preview credential was refused: check the token or the app",
                403 | 404 => {
                    "the preview credential may not post here: it needs status and comment \
                     write access to the repository"
                }
                _ => "the forge refused the request",
            };
            return Err(failed(
                format!("{status}: {hint}"),
                status.is_server_error() || status.as_u16() == 429,
                Some(status.as_u16()),
            ));
        }
        let headers = response.headers().clone();
        let text = response
            .text()
            .map_err(|err| failed(crate::telemetry::error_chain(&err), true, None))?;
        if text.trim().is_empty() {
            return Ok((Value::Null, headers));
        }
        serde_json::from_str(&text)
            .map(|value| (value, headers))
            .map_err(|err| failed(format!("not JSON: {err}"), false, None))
    }

    fn status(&self, preview: &Preview<'_>) -> Result<(), ForgeError> {
        let success = preview.verdict() == Verdict::Success;
        let (path, body) = match self.forge.kind {
            ForgeKind::GitHub | ForgeKind::Gitea => (
                format!("{}/statuses/{}", self.repo(), preview.commit),
                json!({
                    "state": if success { "success" } else { "failure" },
                    "context": preview.context(),
                    "description": preview.description(),
                }),
            ),
            ForgeKind::GitLab => (
                format!("{}/statuses/{}", self.repo(), preview.commit),
                json!({
                    "state": if success { "success" } else { "failed" },
                    "name": preview.context(),
                    "description": preview.description(),
                }),
            ),
        };
        self.send(reqwest::Method::POST, &path, Some(&body))
            .map(drop)
    }

    fn check_run(&self, preview: &Preview<'_>) -> Result<(), ForgeError> {
        let success = preview.verdict() == Verdict::Success;
        let annotations: Vec<Value> = preview
            .annotations()
            .into_iter()
            .map(|a| {
                json!({
                    "path": a.path,
                    "start_line": a.line,
                    "end_line": a.line,
                    "annotation_level": a.level,
                    "title": a.title,
                    "message": a.message,
                })
            })
            .collect();
        let body = json!({
            "name": preview.context(),
            "head_sha": preview.commit,
            "status": "completed",
            "conclusion": if success { "success" } else { "failure" },
            "output": {
                "title": preview.description(),
                "summary": preview.comment(),
                "annotations": annotations,
            },
        });
        self.send(
            reqwest::Method::POST,
            &format!("{}/check-runs", self.repo()),
            Some(&body),
        )
        .map(drop)
    }

    fn comments_path(&self, number: u64) -> String {
        match self.forge.kind {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                format!("{}/issues/{number}/comments", self.repo())
            }
            ForgeKind::GitLab => format!("{}/merge_requests/{number}/notes", self.repo()),
        }
    }

    fn comment_path(&self, number: u64, id: u64) -> String {
        match self.forge.kind {
            ForgeKind::GitHub | ForgeKind::Gitea => {
                format!("{}/issues/comments/{id}", self.repo())
            }
            ForgeKind::GitLab => format!("{}/merge_requests/{number}/notes/{id}", self.repo()),
        }
    }

    /// The id of the comment holding `marker` as its first line, if any: page after page as
    /// the forge links them, up to [`MAX_PAGES`].
    fn find_comment(&self, number: u64, marker: &str) -> Result<Option<u64>, ForgeError> {
        let size = match self.forge.kind {
            ForgeKind::Gitea => "limit",
            ForgeKind::GitHub | ForgeKind::GitLab => "per_page",
        };
        let mut url = format!(
            "{}/{}?{size}={PAGE_SIZE}",
            self.forge.api_url,
            self.comments_path(number)
        );
        for _ in 0..MAX_PAGES {
            let (listed, headers) = self.send_to(reqwest::Method::GET, url.clone(), None)?;
            let comments = listed.as_array().map(Vec::as_slice).unwrap_or_default();
            let found = comments.iter().find_map(|comment| {
                let body = comment.get("body")?.as_str()?;
                let first = body.lines().next()?;
                (first.trim() == marker)
                    .then(|| comment.get("id")?.as_u64())
                    .flatten()
            });
            if found.is_some() {
                return Ok(found);
            }
            match next_page(&self.forge.api_url, &url, &headers) {
                Some(next) => url = next,
                None => return Ok(None),
            }
        }
        tracing::warn!(
            repository = %self.forge.repository,
            pull_request = number,
            pages = MAX_PAGES,
            "no preview comment in the first pages of comments: posting a new one"
        );
        Ok(None)
    }

    fn comment(&self, number: u64, preview: &Preview<'_>) -> Result<Published, ForgeError> {
        let body = json!({ "body": preview.comment() });
        if let Some(id) = self.find_comment(number, &preview.marker())? {
            let method = match self.forge.kind {
                ForgeKind::GitLab => reqwest::Method::PUT,
                ForgeKind::GitHub | ForgeKind::Gitea => reqwest::Method::PATCH,
            };
            self.send(method, &self.comment_path(number, id), Some(&body))?;
            return Ok(Published {
                comment_id: id,
                edited: true,
            });
        }
        let posted = self.send(
            reqwest::Method::POST,
            &self.comments_path(number),
            Some(&body),
        )?;
        Ok(Published {
            comment_id: posted.get("id").and_then(Value::as_u64).unwrap_or_default(),
            edited: false,
        })
    }
}

/// The URL of the page after `current`, as the forge gives it: `Link: <…>; rel="next"`
/// (GitHub, GitLab, Gitea, Forgejo), else GitLab's `x-next-page` number. `None` on the last
/// page, and for a link outside `api_url`, which is never followed: the token would go with it.
fn next_page(api_url: &str, current: &str, headers: &reqwest::header::HeaderMap) -> Option<String> {
    let current = reqwest::Url::parse(current).ok()?;
    let linked = headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| parse_link_header::parse_with_rel(value).ok())
        .find_map(|links| links.get("next").map(|link| link.raw_uri.clone()));
    let next = match linked {
        Some(link) => current.join(&link).ok()?,
        None => {
            let page = headers
                .get("x-next-page")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u32>().ok())?;
            let mut next = current.clone();
            let kept: Vec<(String, String)> = current
                .query_pairs()
                .filter(|(key, _)| key != "page")
                .map(|(key, value)| (key.into_owned(), value.into_owned()))
                .collect();
            next.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair("page", &page.to_string());
            next
        }
    };
    let root = reqwest::Url::parse(api_url).ok()?;
    let inside = next.origin() == root.origin()
        && next
            .path()
            .starts_with(&format!("{}/", root.path().trim_end_matches('/')));
    (inside && next != current).then(|| next.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_root_follows_the_forge_and_its_host() {
        assert_eq!(
            ForgeKind::GitHub.default_api_url("github.com"),
            "https://api.github.com"
        );
        assert_eq!(
            ForgeKind::GitHub.default_api_url("ghe.example.com"),
            "https://ghe.example.com/api/v3"
        );
        assert_eq!(
            ForgeKind::GitLab.default_api_url("gitlab.com"),
            "https://gitlab.com/api/v4"
        );
        assert_eq!(
            ForgeKind::from_provider("forgejo").unwrap(),
            ForgeKind::Gitea
        );
        assert!(ForgeKind::from_provider("bitbucket").is_err());
    }

    #[test]
    fn a_token_is_never_sent_over_plain_http_to_another_host() {
        let forge = Forge {
            kind: ForgeKind::GitHub,
            api_url: "http://forge.example.com/api/v3".into(),
            repository: "acme/config".into(),
            token: SecretString::from("ghp_secret"),
            check_run: false,
        };
        let preview = Preview {
            target: "default",
            commit: "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            plan: None,
            diagnostics: &[],
        };

        let error = forge.publish(1, &preview).unwrap_err();

        assert!(matches!(error, ForgeError::InsecureUrl { .. }), "{error}");
        assert!(!error.to_string().contains("ghp_secret"));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> reqwest::header::HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    reqwest::header::HeaderName::from_static(name),
                    value.parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_next_page_is_the_one_the_forge_links_and_never_outside_its_api() {
        let api = "https://forge.example.com/api/v1";
        let current =
            "https://forge.example.com/api/v1/repos/acme/config/issues/2/comments?limit=100";
        let linked = |link: &str| next_page(api, current, &headers(&[("link", link)]));

        assert_eq!(
            linked(
                r#"<https://forge.example.com/api/v1/repos/acme/config/issues/2/comments?limit=100&page=2>; rel="next", <https://forge.example.com/api/v1/repos/acme/config/issues/2/comments?limit=100&page=9>; rel="last""#
            )
            .as_deref(),
            Some("https://forge.example.com/api/v1/repos/acme/config/issues/2/comments?limit=100&page=2")
        );
        assert_eq!(
            linked(r#"</api/v1/repos/acme/config/issues/2/comments?page=3>; rel="next""#)
                .as_deref(),
            Some("https://forge.example.com/api/v1/repos/acme/config/issues/2/comments?page=3")
        );
        assert_eq!(
            linked(r#"<https://forge.example.com/api/v1/x?page=1>; rel="prev""#),
            None
        );
        assert_eq!(
            linked(r#"<https://elsewhere.example.com/api/v1/x?page=2>; rel="next""#),
            None
        );
        assert_eq!(
            linked(r#"<http://forge.example.com/api/v1/x?page=2>; rel="next""#),
            None
        );
        assert_eq!(
            linked(r#"<https://forge.example.com/other/x?page=2>; rel="next""#),
            None
        );
        assert_eq!(next_page(api, current, &headers(&[])), None);
    }

    #[test]
    fn gitlabs_next_page_number_is_followed_when_no_link_is_sent() {
        let api = "https://gitlab.example.com/api/v4";
        let current = "https://gitlab.example.com/api/v4/projects/acme%2Fconfig/merge_requests/1/notes?per_page=100&page=1";

        let next = next_page(api, current, &headers(&[("x-next-page", "2")]));
        let last = next_page(api, current, &headers(&[("x-next-page", "")]));

        assert_eq!(
            next.as_deref(),
            Some(
                "https://gitlab.example.com/api/v4/projects/acme%2Fconfig/merge_requests/1/notes?per_page=100&page=2"
            )
        );
        assert_eq!(last, None);
    }
}
