//! Push payloads of each provider → [`WebhookEvent`]s. Only the few fields a sync needs are
//! read; everything else in these large documents is left alone.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Envelope, IgnoreReason, Provider, PullRequest, Push, WebhookError, WebhookEvent};

const BRANCH_PREFIX: &str = "refs/heads/";
const TAG_PREFIX: &str = "refs/tags/";

/// Top-level fields no reader below looks at, and most of a push's bytes: GitHub's and
/// GitLab's `commits` (a push of 40 commits is 25 KB, nearly all of it this list) and GitHub's
/// `head_commit`. Their values are parsed as JSON but not built into a tree.
const UNREAD_FIELDS: [&str; 2] = ["commits", "head_commit"];

/// Reads a (verified) body: JSON, or a form with the JSON in its `payload` field (GitHub's and
/// Gitea's `application/x-www-form-urlencoded` content type).
pub fn parse(envelope: &Envelope, body: &[u8]) -> Result<Vec<WebhookEvent>, WebhookError> {
    let provider = envelope.provider;
    let invalid = |reason: String| WebhookError::InvalidPayload { provider, reason };
    // Pings carry no push data worth reading, and Bitbucket's may have an empty body.
    if is_ping(envelope) {
        return Ok(vec![WebhookEvent::Ping]);
    }
    let json = json_body(envelope, body).map_err(invalid)?;
    let value = read_json(&json).map_err(invalid)?;
    let events = match provider {
        Provider::GitHub | Provider::Gitea | Provider::Forgejo => {
            if envelope.event == "push" {
                vec![github_push(&value).map_err(invalid)?]
            } else if envelope.event == "pull_request" {
                vec![github_pull_request(&value).map_err(invalid)?]
            } else {
                vec![ignored_event(&envelope.event)]
            }
        }
        Provider::GitLab => gitlab(&envelope.event, &value).map_err(invalid)?,
        Provider::Bitbucket => match envelope.event.as_str() {
            "repo:push" => bitbucket_cloud_push(&value).map_err(invalid)?,
            "repo:refs_changed" => bitbucket_server_push(&value).map_err(invalid)?,
            other => vec![ignored_event(other)],
        },
    };
    Ok(events)
}

fn is_ping(envelope: &Envelope) -> bool {
    match envelope.provider {
        Provider::GitHub => envelope.event == "ping",
        Provider::Bitbucket => envelope.event == "diagnostics:ping",
        // GitLab's and Gitea's "test" buttons send an ordinary push of the current head: it is
        // planned like any push (and changes nothing when that commit is already applied).
        Provider::GitLab | Provider::Gitea | Provider::Forgejo => false,
    }
}

fn is_form(envelope: &Envelope, body: &[u8]) -> bool {
    match &envelope.content_type {
        Some(content_type) => content_type.split(';').next().is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        }),
        None => body.starts_with(b"payload="),
    }
}

fn json_body<'b>(envelope: &Envelope, body: &'b [u8]) -> Result<Cow<'b, [u8]>, String> {
    if !is_form(envelope, body) {
        return Ok(Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(key, _)| key == "payload")
        .map(|(_, value)| Cow::Owned(value.into_owned().into_bytes()))
        .ok_or_else(|| "form body without a `payload` field".to_owned())
}

/// The body as a JSON tree without the values of [`UNREAD_FIELDS`]. Those are read through as
/// strictly as the rest (strings are UTF-8, numbers in range, nesting within serde_json's
/// limit), so the same bodies are accepted; whatever is refused is parsed again whole, so the
/// refusal carries the message and position it always had.
fn read_json(json: &[u8]) -> Result<Value, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let sparse = deserializer
        .deserialize_map(WithoutUnreadFields)
        .and_then(|value| deserializer.end().map(|()| value));
    match sparse {
        Ok(value) => Ok(value),
        Err(_) => serde_json::from_slice(json).map_err(|err| format!("not JSON: {err}")),
    }
}

/// Builds a top-level object as `Value` does (a repeated key keeps its last value), leaving
/// out the values of [`UNREAD_FIELDS`].
struct WithoutUnreadFields;

impl<'de> Visitor<'de> for WithoutUnreadFields {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if UNREAD_FIELDS.contains(&key.as_str()) {
                access.next_value::<Unread>()?;
            } else {
                let value = access.next_value::<Value>()?;
                object.insert(key, value);
            }
        }
        Ok(Value::Object(object))
    }
}

/// Any JSON value, read as `Value` would read it and then dropped, without building it.
/// (serde's `IgnoredAny` lets serde_json skip a value without checking its strings, numbers
/// or depth, which would accept bodies a whole parse refuses.)
struct Unread;

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unread, D::Error> {
        deserializer.deserialize_any(UnreadVisitor)
    }
}

struct UnreadVisitor;

impl<'de> Visitor<'de> for UnreadVisitor {
    type Value = Unread;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unread, E> {
        Ok(Unread)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unread, E> {
        Ok(Unread)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unread, E> {
        Ok(Unread)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unread, E> {
        Ok(Unread)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unread, E> {
        Ok(Unread)
    }

    fn visit_unit<E>(self) -> Result<Unread, E> {
        Ok(Unread)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Unread, A::Error> {
        while access.next_element::<Unread>()?.is_some() {}
        Ok(Unread)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Unread, A::Error> {
        while access.next_entry::<Unread, Unread>()?.is_some() {}
        Ok(Unread)
    }
}

fn ignored_event(event: &str) -> WebhookEvent {
    WebhookEvent::Ignored {
        reason: IgnoreReason::Event {
            event: event.to_owned(),
        },
    }
}

fn ignored(reason: IgnoreReason) -> WebhookEvent {
    WebhookEvent::Ignored { reason }
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    path.iter()
        .try_fold(value, |node, key| node.get(key))
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
}

fn required<'v>(value: &'v Value, path: &[&str]) -> Result<&'v str, String> {
    str_at(value, path).ok_or_else(|| format!("missing `{}`", path.join(".")))
}

fn is_zero_commit(commit: &str) -> bool {
    !commit.is_empty() && commit.bytes().all(|byte| byte == b'0')
}

/// A commit id as Git prints it: 40 (SHA-1) or 64 (SHA-256) hex digits, returned lower-case.
fn commit_id(commit: &str) -> Result<String, String> {
    if matches!(commit.len(), 40 | 64) && commit.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(format!("`{}` is not a commit id", truncate(commit)))
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn urls(value: &Value, paths: &[&[&str]]) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for path in paths {
        if let Some(url) = str_at(value, path)
            && !urls.iter().any(|seen| seen == url)
        {
            urls.push(url.to_owned());
        }
    }
    urls
}

/// Classifies one ref update: tags and deletions are ignored, branches become pushes.
fn classify(reference: &str, after: Option<&str>, deleted: bool) -> Result<RefUpdate, String> {
    if let Some(tag) = reference.strip_prefix(TAG_PREFIX) {
        return Ok(RefUpdate::Ignored(IgnoreReason::TagPush {
            tag: tag.to_owned(),
        }));
    }
    let Some(branch) = reference.strip_prefix(BRANCH_PREFIX) else {
        return Ok(RefUpdate::Ignored(IgnoreReason::NotABranch {
            reference: reference.to_owned(),
        }));
    };
    if deleted || after.is_none_or(is_zero_commit) {
        return Ok(RefUpdate::Ignored(IgnoreReason::BranchDeleted {
            branch: branch.to_owned(),
        }));
    }
    let commit = commit_id(after.unwrap_or_default())?;
    Ok(RefUpdate::Branch {
        branch: branch.to_owned(),
        commit,
    })
}

enum RefUpdate {
    Branch { branch: String, commit: String },
    Ignored(IgnoreReason),
}

fn before(value: Option<&str>) -> Option<String> {
    value
        .filter(|commit| !is_zero_commit(commit))
        .map(str::to_ascii_lowercase)
}

/// GitHub's push, which Gitea and Forgejo copy: `ref`, `before`, `after`, `deleted`,
/// `repository.{clone_url,ssh_url,html_url}`, `pusher`.
fn github_push(value: &Value) -> Result<WebhookEvent, String> {
    let reference = required(value, &["ref"])?;
    let after = str_at(value, &["after"]);
    let deleted = value
        .get("deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    match classify(reference, after, deleted)? {
        RefUpdate::Ignored(reason) => Ok(ignored(reason)),
        RefUpdate::Branch { branch, commit } => Ok(WebhookEvent::Push(Push {
            branch,
            commit,
            before: before(str_at(value, &["before"])),
            repo_urls: urls(
                value,
                &[
                    &["repository", "clone_url"],
                    &["repository", "ssh_url"],
                    &["repository", "html_url"],
                    &["repository", "git_url"],
                ],
            ),
            repository: str_at(value, &["repository", "full_name"]).map(str::to_owned),
            pusher: str_at(value, &["pusher", "name"])
                .or_else(|| str_at(value, &["pusher", "login"]))
                .or_else(|| str_at(value, &["pusher", "username"]))
                .or_else(|| str_at(value, &["sender", "login"]))
                .map(str::to_owned),
        })),
    }
}

/// GitHub's `pull_request`, which Gitea and Forgejo copy (their `synchronized` is GitHub's
/// `synchronize`): `number`, `pull_request.{base.ref, head.sha, head.repo}`, `repository`.
fn github_pull_request(value: &Value) -> Result<WebhookEvent, String> {
    let action = required(value, &["action"])?;
    if !matches!(
        action,
        "opened" | "synchronize" | "synchronized" | "reopened"
    ) {
        return Ok(ignored(IgnoreReason::PullRequestAction {
            action: action.to_owned(),
        }));
    }
    let number = value
        .get("number")
        .or_else(|| value.pointer("/pull_request/number"))
        .and_then(Value::as_u64)
        .ok_or_else(|| "missing `number`".to_owned())?;
    let base_repo = str_at(value, &["repository", "full_name"]);
    let head_repo = str_at(value, &["pull_request", "head", "repo", "full_name"]);
    Ok(WebhookEvent::PullRequest(PullRequest {
        number,
        base_branch: branch_name(required(value, &["pull_request", "base", "ref"])?),
        head_commit: commit_id(required(value, &["pull_request", "head", "sha"])?)?,
        head_ref: format!("refs/pull/{number}/head"),
        // A deleted fork leaves `head.repo` null: still not the base repository.
        from_fork: head_repo.is_none() || head_repo != base_repo,
        repo_urls: urls(
            value,
            &[
                &["repository", "clone_url"],
                &["repository", "ssh_url"],
                &["repository", "html_url"],
                &["repository", "git_url"],
            ],
        ),
        repository: base_repo.map(str::to_owned),
        author: str_at(value, &["sender", "login"])
            .or_else(|| str_at(value, &["sender", "username"]))
            .map(str::to_owned),
    }))
}

/// GitLab's `Merge Request Hook`: `object_attributes.{iid, action, target_branch,
/// last_commit.id, source_project_id, target_project_id}`, `project`.
fn gitlab_merge_request(value: &Value) -> Result<WebhookEvent, String> {
    let attributes = value
        .get("object_attributes")
        .ok_or_else(|| "missing `object_attributes`".to_owned())?;
    let action = str_at(attributes, &["action"]).unwrap_or("open");
    if !matches!(action, "open" | "reopen" | "update") {
        return Ok(ignored(IgnoreReason::PullRequestAction {
            action: action.to_owned(),
        }));
    }
    // An update that changed no commit (a title, a label) has no `oldrev`: nothing to plan.
    if action == "update" && str_at(attributes, &["oldrev"]).is_none() {
        return Ok(ignored(IgnoreReason::PullRequestAction {
            action: "update without new commits".to_owned(),
        }));
    }
    let number = attributes
        .get("iid")
        .and_then(Value::as_u64)
        .ok_or_else(|| "missing `object_attributes.iid`".to_owned())?;
    let source = attributes.get("source_project_id").and_then(Value::as_u64);
    let target = attributes.get("target_project_id").and_then(Value::as_u64);
    Ok(WebhookEvent::PullRequest(PullRequest {
        number,
        base_branch: branch_name(required(attributes, &["target_branch"])?),
        head_commit: commit_id(required(attributes, &["last_commit", "id"])?)?,
        head_ref: format!("refs/merge-requests/{number}/head"),
        from_fork: source.is_none() || source != target,
        repo_urls: urls(
            value,
            &[
                &["project", "git_http_url"],
                &["project", "git_ssh_url"],
                &["project", "web_url"],
            ],
        ),
        repository: str_at(value, &["project", "path_with_namespace"]).map(str::to_owned),
        author: str_at(value, &["user", "username"]).map(str::to_owned),
    }))
}

fn branch_name(reference: &str) -> String {
    reference
        .strip_prefix(BRANCH_PREFIX)
        .unwrap_or(reference)
        .to_owned()
}

/// GitLab's push and tag push hooks (project and system hooks): the body's `object_kind`
/// decides, since system hooks all arrive as `System Hook`.
fn gitlab(event: &str, value: &Value) -> Result<Vec<WebhookEvent>, String> {
    let kind = str_at(value, &["object_kind"]).or_else(|| str_at(value, &["event_name"]));
    match kind {
        Some("push") => {}
        Some("merge_request") => return Ok(vec![gitlab_merge_request(value)?]),
        Some("tag_push") => {
            let reference = required(value, &["ref"])?;
            let tag = reference.strip_prefix(TAG_PREFIX).unwrap_or(reference);
            return Ok(vec![ignored(IgnoreReason::TagPush {
                tag: tag.to_owned(),
            })]);
        }
        Some(other) => return Ok(vec![ignored_event(other)]),
        None => return Ok(vec![ignored_event(event)]),
    }
    let reference = required(value, &["ref"])?;
    let after = str_at(value, &["after"]);
    let event = match classify(reference, after, false)? {
        RefUpdate::Ignored(reason) => ignored(reason),
        RefUpdate::Branch { branch, commit } => WebhookEvent::Push(Push {
            branch,
            commit,
            before: before(str_at(value, &["before"])),
            repo_urls: urls(
                value,
                &[
                    &["project", "git_http_url"],
                    &["project", "git_ssh_url"],
                    &["project", "web_url"],
                    &["repository", "git_http_url"],
                    &["repository", "git_ssh_url"],
                    &["repository", "homepage"],
                ],
            ),
            repository: str_at(value, &["project", "path_with_namespace"]).map(str::to_owned),
            pusher: str_at(value, &["user_username"])
                .or_else(|| str_at(value, &["user_name"]))
                .map(str::to_owned),
        }),
    };
    Ok(vec![event])
}

/// Bitbucket Cloud's `repo:push`: `push.changes[]`, each with `new` (absent when a ref was
/// deleted) and `old`, typed `branch` or `tag`.
fn bitbucket_cloud_push(value: &Value) -> Result<Vec<WebhookEvent>, String> {
    let changes = value
        .pointer("/push/changes")
        .and_then(Value::as_array)
        .ok_or_else(|| "missing `push.changes`".to_owned())?;
    let repo_urls = urls(
        value,
        &[
            &["repository", "links", "html", "href"],
            &["repository", "links", "self", "href"],
        ],
    );
    let repository = str_at(value, &["repository", "full_name"]).map(str::to_owned);
    let pusher = str_at(value, &["actor", "nickname"])
        .or_else(|| str_at(value, &["actor", "display_name"]))
        .map(str::to_owned);
    let mut events = Vec::with_capacity(changes.len());
    for change in changes {
        let new = change.get("new").filter(|new| !new.is_null());
        let old = change.get("old").filter(|old| !old.is_null());
        let Some(state) = new.or(old) else {
            continue;
        };
        let name = required(state, &["name"])?;
        let reference = match str_at(state, &["type"]) {
            Some("tag") | Some("annotated_tag") => format!("{TAG_PREFIX}{name}"),
            Some("branch") | Some("named_branch") | Some("bookmark") => {
                format!("{BRANCH_PREFIX}{name}")
            }
            Some(other) => other.to_owned(),
            None => return Err("missing `push.changes[].new.type`".to_owned()),
        };
        let after = new.and_then(|new| str_at(new, &["target", "hash"]));
        let deleted = new.is_none()
            || change
                .get("closed")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        events.push(match classify(&reference, after, deleted)? {
            RefUpdate::Ignored(reason) => ignored(reason),
            RefUpdate::Branch { branch, commit } => WebhookEvent::Push(Push {
                branch,
                commit,
                before: before(old.and_then(|old| str_at(old, &["target", "hash"]))),
                repo_urls: repo_urls.clone(),
                repository: repository.clone(),
                pusher: pusher.clone(),
            }),
        });
    }
    if events.is_empty() {
        events.push(ignored(IgnoreReason::NoChanges));
    }
    Ok(events)
}

/// Bitbucket Data Center's `repo:refs_changed`: `changes[]` with `ref.id`, `toHash` and
/// `type` (`ADD`, `UPDATE`, `DELETE`).
fn bitbucket_server_push(value: &Value) -> Result<Vec<WebhookEvent>, String> {
    let changes = value
        .get("changes")
        .and_then(Value::as_array)
        .ok_or_else(|| "missing `changes`".to_owned())?;
    let mut repo_urls = Vec::new();
    for link in ["clone", "self"] {
        let hrefs = value
            .pointer(&format!("/repository/links/{link}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|entry| str_at(entry, &["href"]));
        for href in hrefs {
            if !repo_urls.iter().any(|seen: &String| seen == href) {
                repo_urls.push(href.to_owned());
            }
        }
    }
    let repository = match (
        str_at(value, &["repository", "project", "key"]),
        str_at(value, &["repository", "slug"]),
    ) {
        (Some(project), Some(slug)) => Some(format!("{project}/{slug}")),
        _ => None,
    };
    let pusher = str_at(value, &["actor", "name"]).map(str::to_owned);
    let mut events = Vec::with_capacity(changes.len());
    for change in changes {
        let reference = str_at(change, &["ref", "id"])
            .or_else(|| str_at(change, &["refId"]))
            .ok_or_else(|| "missing `changes[].ref.id`".to_owned())?;
        let deleted = str_at(change, &["type"]) == Some("DELETE");
        let after = str_at(change, &["toHash"]);
        events.push(match classify(reference, after, deleted)? {
            RefUpdate::Ignored(reason) => ignored(reason),
            RefUpdate::Branch { branch, commit } => WebhookEvent::Push(Push {
                branch,
                commit,
                before: before(str_at(change, &["fromHash"])),
                repo_urls: repo_urls.clone(),
                repository: repository.clone(),
                pusher: pusher.clone(),
            }),
        });
    }
    if events.is_empty() {
        events.push(ignored(IgnoreReason::NoChanges));
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(json: &[u8]) -> Result<Value, String> {
        serde_json::from_slice(json).map_err(|err| format!("not JSON: {err}"))
    }

    #[test]
    fn the_tree_read_is_the_whole_tree_without_the_unread_fields() {
        let bodies: [&[u8]; 5] = [
            include_bytes!("fixtures/github-push.json"),
            include_bytes!("fixtures/gitlab-push.json"),
            include_bytes!("fixtures/bitbucket-cloud-push.json"),
            br#"{"ref": "refs/heads/a", "commits": [], "ref": "refs/heads/b", "commits": {"x": 1}}"#,
            br#"  {"after": "\u00e9", "head_commit": null, "n": [1.5, -2, 18446744073709551615]}  "#,
        ];
        for body in bodies {
            let mut expected = whole(body).unwrap();
            for field in UNREAD_FIELDS {
                expected.as_object_mut().unwrap().remove(field);
            }

            let read = read_json(body);

            assert_eq!(read, Ok(expected), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn a_body_refused_whole_is_refused_the_same_way_whatever_field_is_wrong() {
        let deep = format!(
            r#"{{"ref": "refs/heads/main", "commits": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let bodies: Vec<Vec<u8>> = vec![
            br#"{"ref": "refs/heads/main", "commits": [1e400]}"#.to_vec(),
            b"{\"ref\": \"refs/heads/main\", \"commits\": [\"\xff\"]}".to_vec(),
            br#"{"ref": "refs/heads/main", "head_commit": {"id": "\ud800"}}"#.to_vec(),
            br#"{"ref": "refs/heads/main", "commits": [1,]}"#.to_vec(),
            br#"{"ref": "refs/heads/main", "before": 1e400}"#.to_vec(),
            br#"{"ref": "refs/heads/main"} trailing"#.to_vec(),
            deep.into_bytes(),
        ];
        for body in bodies {
            let expected = whole(&body);
            assert!(expected.is_err(), "{}", String::from_utf8_lossy(&body));

            let read = read_json(&body);

            assert_eq!(read, expected, "{}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_read_whole() {
        for body in [&b"[1, 2]"[..], b"\"text\"", b"null", b"17"] {
            assert_eq!(read_json(body), whole(body));
        }
    }
}
