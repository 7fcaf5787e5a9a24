use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;

use super::*;

const GITHUB_PUSH: &str = include_str!("fixtures/github-push.json");
const GITHUB_PING: &str = include_str!("fixtures/github-ping.json");
const GITHUB_TAG: &str = include_str!("fixtures/github-push-tag.json");
const GITHUB_BRANCH_DELETED: &str = include_str!("fixtures/github-push-branch-deleted.json");
const GITLAB_PUSH: &str = include_str!("fixtures/gitlab-push.json");
const GITLAB_TAG: &str = include_str!("fixtures/gitlab-tag-push.json");
const GITLAB_BRANCH_DELETED: &str = include_str!("fixtures/gitlab-push-branch-deleted.json");
const GITEA_PUSH: &str = include_str!("fixtures/gitea-push.json");
const BITBUCKET_CLOUD_PUSH: &str = include_str!("fixtures/bitbucket-cloud-push.json");
const BITBUCKET_SERVER_PUSH: &str = include_str!("fixtures/bitbucket-server-refs-changed.json");

const SECRET: &str = "ritmo-test-webhook-secret";

fn secrets(values: &[&str]) -> Vec<SecretString> {
    values
        .iter()
        .map(|value| SecretString::from(*value))
        .collect()
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn github_headers(event: &str, body: &[u8], secret: &str) -> Vec<(String, String)> {
    headers(&[
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (
            "X-Hub-Signature-256",
            &format!("sha256={}", hmac_hex(secret, body)),
        ),
        ("User-Agent", "GitHub-Hookshot/044aadd"),
    ])
}

fn only_push(delivery: &Delivery) -> &Push {
    let pushes: Vec<&Push> = delivery.pushes().collect();
    assert_eq!(pushes.len(), 1, "{:?}", delivery.events);
    pushes[0]
}

// signatures

#[test]
fn githubs_documented_test_vector_verifies() {
    let body = b"Hello, World!";
    let headers = headers(&[(
        "X-Hub-Signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )]);

    let result = verify(
        Provider::GitHub,
        &headers,
        body,
        &secrets(&["It's a Secret to Everybody"]),
    );

    assert_eq!(result, Ok(()));
}

#[test]
fn a_signature_made_with_another_secret_is_rejected() {
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body, "someone-elses-secret");

    let result = receive(&headers, body, &secrets(&[SECRET]));

    assert_eq!(
        result,
        Err(WebhookError::BadSignature {
            provider: Provider::GitHub,
            header: "X-Hub-Signature-256",
        })
    );
}

#[test]
fn a_body_changed_after_signing_is_rejected() {
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body, SECRET);
    let tampered = GITHUB_PUSH.replace("refs/heads/master", "refs/heads/mastex");

    let result = receive(&headers, tampered.as_bytes(), &secrets(&[SECRET]));

    assert_eq!(result.unwrap_err().code(), "bad_signature");
}

#[test]
fn a_missing_signature_is_told_apart_from_a_bad_one() {
    let body = GITHUB_PUSH.as_bytes();
    let headers = headers(&[("X-GitHub-Event", "push")]);

    let error = receive(&headers, body, &secrets(&[SECRET])).unwrap_err();

    assert_eq!(
        error,
        WebhookError::MissingSignature {
            provider: Provider::GitHub,
            header: "X-Hub-Signature-256",
        }
    );
    assert_eq!(error.code(), "missing_signature");
    assert!(!error.is_retryable());
}

#[test]
fn the_previous_secret_still_verifies_during_a_rotation() {
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body, "previous-secret");

    let result = receive(
        &headers,
        body,
        &secrets(&["current-secret", "previous-secret"]),
    );

    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn without_a_non_empty_secret_every_request_is_refused() {
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body, "");

    let with_none = receive(&headers, body, &[]);
    let with_empty = receive(&headers, body, &secrets(&[""]));

    assert_eq!(with_none, Err(WebhookError::NoSecretConfigured));
    assert_eq!(with_empty, Err(WebhookError::NoSecretConfigured));
}

#[test]
fn a_signature_that_is_not_hex_is_a_bad_signature() {
    let headers = headers(&[
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", "sha256=zz"),
    ]);

    let result = receive(&headers, b"{}", &secrets(&[SECRET]));

    assert_eq!(result.unwrap_err().code(), "bad_signature");
}

#[test]
fn githubs_legacy_sha1_signature_is_not_accepted() {
    let body = b"{}";
    let headers = headers(&[
        ("X-GitHub-Event", "push"),
        (
            "X-Hub-Signature-256",
            &format!("sha1={}", hmac_hex(SECRET, body)),
        ),
    ]);

    let result = receive(&headers, body, &secrets(&[SECRET]));

    assert_eq!(result.unwrap_err().code(), "bad_signature");
}

#[test]
fn header_names_match_whatever_their_case() {
    let body = GITHUB_PUSH.as_bytes();
    let signature = format!("sha256={}", hmac_hex(SECRET, body));
    let headers = headers(&[
        ("x-github-event", "push"),
        ("X-GITHUB-DELIVERY", "d-1"),
        ("x-hub-SIGNATURE-256", &signature),
    ]);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(delivery.envelope.delivery_id.as_deref(), Some("d-1"));
}

#[test]
fn errors_never_show_the_secret_or_the_received_signature() {
    let body = GITLAB_PUSH.as_bytes();
    let sent_token = "glpat-this-is-what-the-sender-sent";
    let headers = headers(&[
        ("X-Gitlab-Event", "Push Hook"),
        ("X-Gitlab-Token", sent_token),
    ]);
    let github_body = GITHUB_PUSH.as_bytes();
    let github_headers = github_headers("push", github_body, "wrong");
    let sent_signature = hmac_hex("wrong", github_body);

    let gitlab_error = receive(&headers, body, &secrets(&[SECRET])).unwrap_err();
    let github_error = receive(&github_headers, github_body, &secrets(&[SECRET])).unwrap_err();

    for error in [gitlab_error, github_error] {
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains(SECRET), "{shown}");
            assert!(!shown.contains(sent_token), "{shown}");
            assert!(!shown.contains(&sent_signature), "{shown}");
        }
    }
}

// GitHub payloads

#[test]
fn a_github_push_names_branch_commit_repository_urls_and_pusher() {
    let body = GITHUB_PUSH.as_bytes();
    let headers = github_headers("push", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(delivery.envelope.provider, Provider::GitHub);
    assert_eq!(
        delivery.envelope.delivery_id.as_deref(),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    let push = only_push(&delivery);
    assert_eq!(push.branch, "master");
    assert_eq!(push.commit, "a10867b14bb761a232cd80139fbd4c0d33264240");
    assert_eq!(
        push.before.as_deref(),
        Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
    );
    assert_eq!(
        push.repo_urls,
        [
            "https://github.com/Codertocat/Hello-World.git",
            "git@github.com:Codertocat/Hello-World.git",
            "https://github.com/Codertocat/Hello-World",
            "git://github.com/Codertocat/Hello-World.git",
        ]
    );
    assert_eq!(push.repository.as_deref(), Some("Codertocat/Hello-World"));
    assert_eq!(push.pusher.as_deref(), Some("Codertocat"));
    assert_eq!(
        push.revision().to_string(),
        "master@sha1:a10867b14bb761a232cd80139fbd4c0d33264240"
    );
}

#[test]
fn a_form_encoded_github_push_reads_like_the_json_one() {
    let json = GITHUB_PUSH.as_bytes();
    let form: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", GITHUB_PUSH)
        .finish();
    let mut form_headers = github_headers("push", form.as_bytes(), SECRET);
    form_headers[0].1 = "application/x-www-form-urlencoded".to_owned();

    let from_json = receive(
        &github_headers("push", json, SECRET),
        json,
        &secrets(&[SECRET]),
    );
    let from_form = receive(&form_headers, form.as_bytes(), &secrets(&[SECRET]));

    assert_eq!(from_form.unwrap().events, from_json.unwrap().events);
}

#[test]
fn a_form_body_without_a_payload_field_is_invalid() {
    let body = b"other=1";
    let mut headers = github_headers("push", body, SECRET);
    headers[0].1 = "application/x-www-form-urlencoded; charset=utf-8".to_owned();

    let result = receive(&headers, body, &secrets(&[SECRET]));

    assert_eq!(result.unwrap_err().code(), "invalid_payload");
}

#[test]
fn a_github_ping_is_a_ping() {
    let body = GITHUB_PING.as_bytes();
    let headers = github_headers("ping", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert!(delivery.is_ping());
    assert_eq!(delivery.pushes().count(), 0);
}

#[test]
fn a_tag_push_is_ignored() {
    let body = GITHUB_TAG.as_bytes();
    let headers = github_headers("push", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(
        delivery.events,
        [WebhookEvent::Ignored {
            reason: IgnoreReason::TagPush {
                tag: "simple-tag".into()
            }
        }]
    );
}

#[test]
fn a_branch_deletion_is_ignored() {
    let body = GITHUB_BRANCH_DELETED.as_bytes();
    let headers = github_headers("push", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(
        delivery.ignore_reasons().collect::<Vec<_>>(),
        [&IgnoreReason::BranchDeleted {
            branch: "feature-x".into()
        }]
    );
}

#[test]
fn an_all_zero_after_is_a_deletion_even_without_the_deleted_flag() {
    let envelope = detect(&headers(&[("X-GitHub-Event", "push")])).unwrap();
    let body = br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;

    let events = parse(&envelope, body).unwrap();

    assert_eq!(
        events,
        [WebhookEvent::Ignored {
            reason: IgnoreReason::BranchDeleted {
                branch: "main".into()
            }
        }]
    );
}

#[test]
fn other_github_events_are_ignored_by_name() {
    let body = br#"{"action":"opened"}"#;
    let headers = github_headers("issues", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(
        delivery
            .ignore_reasons()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["event `issues` is not a push"]
    );
}

#[test]
fn a_push_with_an_after_that_is_not_a_commit_id_is_invalid() {
    let envelope = detect(&headers(&[("X-GitHub-Event", "push")])).unwrap();
    let body = br#"{"ref":"refs/heads/main","after":"not-a-sha"}"#;

    let error = parse(&envelope, body).unwrap_err();

    assert_eq!(
        error.to_string(),
        "invalid github webhook payload: `not-a-sha` is not a commit id"
    );
    assert_eq!(error.code(), "invalid_payload");
}

#[test]
fn a_body_that_is_not_json_is_invalid() {
    let body = b"<xml/>";
    let headers = github_headers("push", body, SECRET);

    let error = receive(&headers, body, &secrets(&[SECRET])).unwrap_err();

    assert_eq!(error.code(), "invalid_payload");
}

#[test]
fn a_request_without_a_provider_event_header_is_unknown() {
    let headers = headers(&[("Content-Type", "application/json")]);

    let error = receive(&headers, b"{}", &secrets(&[SECRET])).unwrap_err();

    assert_eq!(error, WebhookError::UnknownProvider);
    assert_eq!(error.code(), "unknown_provider");
}

// GitLab

fn gitlab_headers(event: &str, token: &str) -> Vec<(String, String)> {
    headers(&[
        ("Content-Type", "application/json"),
        ("X-Gitlab-Event", event),
        ("X-Gitlab-Token", token),
        (
            "X-Gitlab-Event-UUID",
            "13792a34-cac6-4fda-95a8-c58e00a3954e",
        ),
        (
            "X-Gitlab-Webhook-UUID",
            "2c0a8b1c-1f5e-4f7c-9a8e-000000000001",
        ),
        ("X-Gitlab-Instance", "https://gitlab.example.com"),
    ])
}

#[test]
fn a_gitlab_push_with_the_right_token_is_a_push() {
    let body = GITLAB_PUSH.as_bytes();
    let headers = gitlab_headers("Push Hook", SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(delivery.envelope.provider, Provider::GitLab);
    assert_eq!(
        delivery.envelope.delivery_id.as_deref(),
        Some("13792a34-cac6-4fda-95a8-c58e00a3954e")
    );
    let push = only_push(&delivery);
    assert_eq!(push.branch, "master");
    assert_eq!(push.commit, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(
        push.repo_urls,
        [
            "http://example.com/mike/diaspora.git",
            "git@example.com:mike/diaspora.git",
            "http://example.com/mike/diaspora",
        ]
    );
    assert_eq!(push.repository.as_deref(), Some("mike/diaspora"));
    assert_eq!(push.pusher.as_deref(), Some("jsmith"));
}

#[test]
fn gitlabs_idempotency_key_is_the_delivery_id_when_sent() {
    let mut headers = gitlab_headers("Push Hook", SECRET);
    headers.push(("Idempotency-Key".into(), "f0a7c5e2-retry-stable".into()));

    let envelope = detect(&headers).unwrap();

    assert_eq!(
        envelope.delivery_id.as_deref(),
        Some("f0a7c5e2-retry-stable")
    );
}

#[test]
fn a_gitlab_push_with_a_wrong_token_is_rejected() {
    let body = GITLAB_PUSH.as_bytes();
    let headers = gitlab_headers("Push Hook", "ritmo-test-webhook-secreT");

    let error = receive(&headers, body, &secrets(&[SECRET])).unwrap_err();

    assert_eq!(
        error,
        WebhookError::BadSignature {
            provider: Provider::GitLab,
            header: "X-Gitlab-Token",
        }
    );
}

#[test]
fn a_gitlab_tag_push_and_branch_deletion_are_ignored() {
    let tag_headers = gitlab_headers("Tag Push Hook", SECRET);
    let push_headers = gitlab_headers("Push Hook", SECRET);

    let tag = receive(&tag_headers, GITLAB_TAG.as_bytes(), &secrets(&[SECRET])).unwrap();
    let deleted = receive(
        &push_headers,
        GITLAB_BRANCH_DELETED.as_bytes(),
        &secrets(&[SECRET]),
    )
    .unwrap();

    assert_eq!(
        tag.ignore_reasons().collect::<Vec<_>>(),
        [&IgnoreReason::TagPush {
            tag: "v1.0.0".into()
        }]
    );
    assert_eq!(
        deleted.ignore_reasons().collect::<Vec<_>>(),
        [&IgnoreReason::BranchDeleted {
            branch: "feature-x".into()
        }]
    );
}

#[test]
fn a_gitlab_system_hook_push_is_read_from_its_object_kind() {
    let body = GITLAB_PUSH.as_bytes();
    let headers = gitlab_headers("System Hook", SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(only_push(&delivery).branch, "master");
}

// Gitea and Forgejo

#[test]
fn a_gitea_push_is_recognised_before_its_github_compatibility_headers() {
    let body = GITEA_PUSH.as_bytes();
    let signature = hmac_hex(SECRET, body);
    let headers = headers(&[
        ("Content-Type", "application/json"),
        ("X-GitHub-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ("X-GitHub-Event", "push"),
        ("X-Gogs-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ("X-Gogs-Event", "push"),
        ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Signature", &signature),
    ]);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(delivery.envelope.provider, Provider::Gitea);
    let push = only_push(&delivery);
    assert_eq!(push.branch, "develop");
    assert_eq!(push.commit, "bffeb74224043ba2feb48d137756c8a9331c449a");
    assert_eq!(
        push.repo_urls,
        [
            "http://localhost:3000/gitea/webhooks.git",
            "ssh://gitea@localhost:2222/gitea/webhooks.git",
            "http://localhost:3000/gitea/webhooks",
        ]
    );
    assert_eq!(push.pusher.as_deref(), Some("gitea"));
}

#[test]
fn a_gitea_signature_of_another_body_is_rejected() {
    let body = GITEA_PUSH.as_bytes();
    let headers = headers(&[
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Signature", &hmac_hex(SECRET, b"{}")),
    ]);

    let error = receive(&headers, body, &secrets(&[SECRET])).unwrap_err();

    assert_eq!(
        error,
        WebhookError::BadSignature {
            provider: Provider::Gitea,
            header: "X-Gitea-Signature",
        }
    );
}

#[test]
fn a_forgejo_push_verifies_with_its_own_signature_header() {
    let body = GITEA_PUSH.as_bytes();
    let signature = hmac_hex(SECRET, body);
    let headers = headers(&[
        ("X-Gitea-Event", "push"),
        ("X-Forgejo-Event", "push"),
        ("X-Forgejo-Delivery", "0b7e3c1a-forgejo"),
        ("X-Forgejo-Signature", &signature),
    ]);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(delivery.envelope.provider, Provider::Forgejo);
    assert_eq!(
        delivery.envelope.delivery_id.as_deref(),
        Some("0b7e3c1a-forgejo")
    );
    assert_eq!(only_push(&delivery).branch, "develop");
}

// Bitbucket

fn bitbucket_headers(event: &str, body: &[u8], secret: &str) -> Vec<(String, String)> {
    headers(&[
        ("Content-Type", "application/json"),
        ("X-Event-Key", event),
        ("X-Request-UUID", "8d4c1a52-3f5e-4c8b-9a51-2b7f0e6d9c13"),
        ("X-Hook-UUID", "{d1a1a3c8-7d0c-4f4a-8f6b-1c2d3e4f5a6b}"),
        (
            "X-Hub-Signature",
            &format!("sha256={}", hmac_hex(secret, body)),
        ),
    ])
}

#[test]
fn a_bitbucket_cloud_push_reports_each_ref_it_changed() {
    let body = BITBUCKET_CLOUD_PUSH.as_bytes();
    let headers = bitbucket_headers("repo:push", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(
        delivery.envelope.delivery_id.as_deref(),
        Some("8d4c1a52-3f5e-4c8b-9a51-2b7f0e6d9c13")
    );
    assert_eq!(
        delivery.events,
        [
            WebhookEvent::Push(Push {
                branch: "main".into(),
                commit: "709d658dc5b6d6afcd46049c2f332ee3f515a67d".into(),
                before: Some("1e65c05c1d5171631d92438a13901ca7dae9618c".into()),
                repo_urls: vec![
                    "https://bitbucket.org/team_name/repo_name".into(),
                    "https://api.bitbucket.org/2.0/repositories/team_name/repo_name".into(),
                ],
                repository: Some("team_name/repo_name".into()),
                pusher: Some("emmap1".into()),
            }),
            WebhookEvent::Ignored {
                reason: IgnoreReason::TagPush {
                    tag: "v2.1.0".into()
                }
            },
            WebhookEvent::Ignored {
                reason: IgnoreReason::BranchDeleted {
                    branch: "old-feature".into()
                }
            },
        ]
    );
}

#[test]
fn a_bitbucket_data_center_push_carries_its_clone_links() {
    let body = BITBUCKET_SERVER_PUSH.as_bytes();
    let mut headers = bitbucket_headers("repo:refs_changed", body, SECRET);
    headers.retain(|(name, _)| name != "X-Request-UUID");
    headers.push(("X-Request-Id".into(), "a2d8e0b5-dc-request".into()));

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert_eq!(
        delivery.envelope.delivery_id.as_deref(),
        Some("a2d8e0b5-dc-request")
    );
    let push = only_push(&delivery);
    assert_eq!(push.branch, "master");
    assert_eq!(push.commit, "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");
    assert_eq!(push.repository.as_deref(), Some("PROJ/repository"));
    let targets = [(
        "config",
        "https://bitbucket.example.com/scm/proj/repository.git",
        "master",
    )];
    assert_eq!(matching_targets(push, targets), ["config"]);
}

#[test]
fn a_bitbucket_diagnostics_ping_is_a_ping() {
    let body = br#"{"test": true}"#;
    let headers = bitbucket_headers("diagnostics:ping", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    assert!(delivery.is_ping());
}

#[test]
fn a_bitbucket_push_without_a_signature_is_refused() {
    let body = BITBUCKET_CLOUD_PUSH.as_bytes();
    let headers = headers(&[("X-Event-Key", "repo:push")]);

    let error = receive(&headers, body, &secrets(&[SECRET])).unwrap_err();

    assert_eq!(
        error,
        WebhookError::MissingSignature {
            provider: Provider::Bitbucket,
            header: "X-Hub-Signature",
        }
    );
}

// matching

#[test]
fn one_repository_spelled_many_ways_normalises_to_one_form() {
    let spellings = [
        "https://github.com/Acme/Config.git",
        "https://github.com/acme/config",
        "https://x-access-token:abc@GitHub.com/acme/config.git/",
        "http://github.com:443/acme/config",
        "git@github.com:Acme/Config.git",
        "ssh://git@github.com/acme/config.git",
        "ssh://git@github.com:22/acme/config",
        "git://github.com/acme/config.git",
        "https://github.com/acme/config?tab=readme#top",
    ];

    let normalised: Vec<Option<String>> = spellings
        .iter()
        .map(|url| normalize_repo_url(url))
        .collect();

    assert!(
        normalised
            .iter()
            .all(|url| url.as_deref() == Some("github.com/acme/config")),
        "{normalised:?}"
    );
}

#[test]
fn different_repositories_and_local_paths_do_not_normalise_alike() {
    let a = normalize_repo_url("https://github.com/acme/config");
    let b = normalize_repo_url("https://github.com/acme/config-staging");
    let c = normalize_repo_url("https://gitlab.com/acme/config");

    assert_ne!(a, b);
    assert_ne!(a, c);
    assert_eq!(normalize_repo_url("/srv/git/config.git"), None);
    assert_eq!(normalize_repo_url("file:///srv/git/config.git"), None);
    assert_eq!(normalize_repo_url(""), None);
    assert_eq!(normalize_repo_url("https://github.com/"), None);
}

#[test]
fn a_push_matches_targets_with_the_same_repository_and_branch() {
    let push = Push {
        branch: "main".into(),
        commit: "a".repeat(40),
        before: None,
        repo_urls: vec![
            "https://github.com/Acme/Config.git".into(),
            "git@github.com:Acme/Config.git".into(),
        ],
        repository: None,
        pusher: None,
    };
    let targets = [
        ("prod", "git@github.com:acme/config.git", "main"),
        ("staging", "https://github.com/acme/config", "staging"),
        ("other-repo", "https://github.com/acme/other", "main"),
        (
            "full-ref",
            "https://github.com/acme/config",
            "refs/heads/main",
        ),
        ("prod", "https://github.com/acme/config", "main"),
    ];

    let matched = matching_targets(&push, targets);

    assert_eq!(matched, ["prod", "full-ref"]);
}

#[test]
fn branch_names_are_compared_exactly() {
    let push = Push {
        branch: "Main".into(),
        commit: "a".repeat(40),
        before: None,
        repo_urls: vec!["https://github.com/acme/config".into()],
        repository: None,
        pusher: None,
    };

    let matched = matching_targets(&push, [("prod", "https://github.com/acme/config", "main")]);

    assert!(matched.is_empty());
}

// the sample events under events/

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../events")
}

/// Headers and raw body of an API Gateway REST (v1) or HTTP API (v2) proxy event.
fn request_of(event: &Value) -> (Vec<(String, String)>, Vec<u8>) {
    let headers = event["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_owned()))
        .collect();
    let body = event["body"].as_str().unwrap_or_default();
    let body = if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    } else {
        body.as_bytes().to_vec()
    };
    (headers, body)
}

#[test]
fn every_sample_webhook_event_verifies_with_the_test_secret_unless_it_is_the_bad_one() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            name.starts_with("webhook-") && name.ends_with(".json")
        })
        .collect();
    files.sort();
    let mut outcomes = Vec::new();

    for file in &files {
        let event: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        let (headers, body) = request_of(&event);
        let name = file.file_name().unwrap().to_str().unwrap().to_owned();
        outcomes.push((name, receive(&headers, &body, &secrets(&[SECRET]))));
    }

    assert!(files.len() >= 8, "{files:?}");
    for (name, outcome) in &outcomes {
        if name.contains("bad-signature") {
            assert_eq!(
                outcome.as_ref().map_err(WebhookError::code),
                Err("bad_signature"),
                "{name}"
            );
        } else {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        }
    }
    let pushes = |name: &str| -> Vec<String> {
        let (_, outcome) = outcomes.iter().find(|(file, _)| file == name).unwrap();
        let delivery = outcome.as_ref().unwrap();
        delivery
            .pushes()
            .map(|push| push.revision().to_string())
            .collect()
    };
    let pushed = [
        "webhook-github-push-apigw-v1.json",
        "webhook-github-push-apigw-v2.json",
        "webhook-github-push-base64-apigw-v2.json",
        "webhook-github-push-form-apigw-v1.json",
        "webhook-gitlab-push-apigw-v2.json",
        "webhook-gitea-push-apigw-v2.json",
        "webhook-bitbucket-push-apigw-v2.json",
    ];
    for name in pushed {
        assert_eq!(
            pushes(name),
            ["main@sha1:8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112"],
            "{name}"
        );
    }
    assert!(pushes("webhook-github-tag-push-apigw-v2.json").is_empty());
    assert!(pushes("webhook-github-ping-apigw-v2.json").is_empty());
}

// pull requests

const GITHUB_PR_OPENED: &str = include_str!("fixtures/github-pull-request-opened.json");
const GITHUB_PR_SYNCHRONIZE: &str = include_str!("fixtures/github-pull-request-synchronize.json");
const GITHUB_PR_CLOSED: &str = include_str!("fixtures/github-pull-request-closed.json");
const GITLAB_MERGE_REQUEST: &str = include_str!("fixtures/gitlab-merge-request.json");
const GITEA_PULL_REQUEST: &str = include_str!("fixtures/gitea-pull-request.json");

fn only_pull_request(delivery: &Delivery) -> &PullRequest {
    let pulls: Vec<&PullRequest> = delivery.pull_requests().collect();
    assert_eq!(pulls.len(), 1, "{:?}", delivery.events);
    pulls[0]
}

#[test]
fn a_signed_github_pull_request_opened_event_is_a_pull_request_to_preview() {
    let body = GITHUB_PR_OPENED.as_bytes();
    let headers = github_headers("pull_request", body, SECRET);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    let pull = only_pull_request(&delivery);
    assert_eq!(pull.number, 2);
    assert_eq!(pull.base_branch, "master");
    assert_eq!(pull.head_commit, "ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert_eq!(pull.head_ref, "refs/pull/2/head");
    assert!(!pull.from_fork);
    assert_eq!(pull.repository.as_deref(), Some("Codertocat/Hello-World"));
    assert!(
        pull.repo_urls
            .contains(&"https://github.com/Codertocat/Hello-World.git".to_string())
    );
    assert_eq!(delivery.pushes().count(), 0);
}

#[test]
fn a_github_synchronize_is_previewed_and_a_close_is_ignored() {
    let pushed = GITHUB_PR_SYNCHRONIZE.as_bytes();
    let closed = GITHUB_PR_CLOSED.as_bytes();

    let pushed = receive(
        &github_headers("pull_request", pushed, SECRET),
        pushed,
        &secrets(&[SECRET]),
    )
    .unwrap();
    let closed = receive(
        &github_headers("pull_request", closed, SECRET),
        closed,
        &secrets(&[SECRET]),
    )
    .unwrap();

    assert_eq!(only_pull_request(&pushed).number, 2);
    assert_eq!(closed.pull_requests().count(), 0);
    assert_eq!(
        closed.ignore_reasons().next(),
        Some(&IgnoreReason::PullRequestAction {
            action: "closed".into()
        })
    );
}

#[test]
fn a_pull_request_from_a_fork_is_read_from_the_base_repositorys_pull_ref() {
    let mut value: Value = serde_json::from_str(GITHUB_PR_OPENED).unwrap();
    value["pull_request"]["head"]["repo"]["full_name"] = "someone/Hello-World".into();
    let body = serde_json::to_vec(&value).unwrap();

    let delivery = receive(
        &github_headers("pull_request", &body, SECRET),
        &body,
        &secrets(&[SECRET]),
    )
    .unwrap();

    let pull = only_pull_request(&delivery);
    assert!(pull.from_fork);
    assert_eq!(pull.head_ref, "refs/pull/2/head");
    assert_eq!(pull.repository.as_deref(), Some("Codertocat/Hello-World"));
}

#[test]
fn a_gitlab_merge_request_hook_is_a_pull_request_to_preview() {
    let body = GITLAB_MERGE_REQUEST.as_bytes();
    let headers = headers(&[
        ("X-Gitlab-Event", "Merge Request Hook"),
        ("X-Gitlab-Token", SECRET),
        ("Content-Type", "application/json"),
    ]);

    let delivery = receive(&headers, body, &secrets(&[SECRET])).unwrap();

    let pull = only_pull_request(&delivery);
    assert_eq!(pull.number, 1);
    assert_eq!(pull.base_branch, "master");
    assert_eq!(pull.head_commit, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(pull.head_ref, "refs/merge-requests/1/head");
    assert!(!pull.from_fork);
    assert_eq!(pull.repository.as_deref(), Some("gitlabhq/gitlab-test"));
}

#[test]
fn a_gitlab_merge_request_update_without_new_commits_is_ignored() {
    let mut value: Value = serde_json::from_str(GITLAB_MERGE_REQUEST).unwrap();
    value["object_attributes"]["action"] = "update".into();
    let body = serde_json::to_vec(&value).unwrap();
    let headers = headers(&[
        ("X-Gitlab-Event", "Merge Request Hook"),
        ("X-Gitlab-Token", SECRET),
    ]);

    let delivery = receive(&headers, &body, &secrets(&[SECRET])).unwrap();

    assert_eq!(delivery.pull_requests().count(), 0);
    assert!(delivery.ignore_reasons().next().is_some());
}

/// Gitea's own example (`pullRequestTestPayload`, see fixtures/README.md) has no `base` and
/// `head`: they are set here under Gitea's field names (`PRBranchInfo`).
fn gitea_pull_request_from_a_fork(action: &str) -> Vec<u8> {
    let mut value: Value = serde_json::from_str(GITEA_PULL_REQUEST).unwrap();
    value["action"] = action.into();
    value["pull_request"]["base"] = serde_json::json!({
        "label": "main",
        "ref": "main",
        "sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
        "repo": {"full_name": "test/repo"},
    });
    value["pull_request"]["head"] = serde_json::json!({
        "label": "fix",
        "ref": "fix",
        "sha": "4B825DC642CB6EB9A060E54BF8D69288FBEE4904",
        "repo": {"full_name": "user1/repo"},
    });
    serde_json::to_vec(&value).unwrap()
}

#[test]
fn a_gitea_synchronized_pull_request_from_a_fork_is_previewed() {
    let body = gitea_pull_request_from_a_fork("synchronized");
    let headers = headers(&[
        ("X-Gitea-Event", "pull_request"),
        ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ("X-Gitea-Signature", &hmac_hex(SECRET, &body)),
        ("Content-Type", "application/json"),
    ]);

    let delivery = receive(&headers, &body, &secrets(&[SECRET])).unwrap();

    let pull = only_pull_request(&delivery);
    assert_eq!(pull.number, 12);
    assert_eq!(pull.base_branch, "main");
    assert_eq!(pull.head_commit, "4b825dc642cb6eb9a060e54bf8d69288fbee4904");
    assert_eq!(pull.head_ref, "refs/pull/12/head");
    assert!(pull.from_fork);
    assert_eq!(pull.repository.as_deref(), Some("test/repo"));
    assert_eq!(
        pull.repo_urls,
        vec!["http://localhost:3000/test/repo".to_string()]
    );
    assert_eq!(pull.author.as_deref(), Some("user1"));
}

#[test]
fn gitea_and_forgejo_pull_requests_opened_as_gitea_sends_them_are_previewed() {
    let body = gitea_pull_request_from_a_fork("opened");
    for (event, signature) in [
        ("X-Gitea-Event", "X-Gitea-Signature"),
        ("X-Forgejo-Event", "X-Forgejo-Signature"),
    ] {
        let headers = headers(&[
            (event, "pull_request"),
            (signature, &hmac_hex(SECRET, &body)),
            ("Content-Type", "application/json"),
        ]);

        let delivery = receive(&headers, &body, &secrets(&[SECRET])).unwrap();

        assert_eq!(only_pull_request(&delivery).number, 12, "{event}");
    }
}

#[test]
fn the_repository_a_preview_posts_to_is_read_from_the_target_url() {
    use super::repository_path;
    assert_eq!(
        repository_path("https://github.com/Acme/Config.git").as_deref(),
        Some("acme/config")
    );
    assert_eq!(
        repository_path("git@gitlab.example.com:ops/ci/config.git").as_deref(),
        Some("ops/ci/config")
    );
    assert_eq!(repository_path("https://example.com/config"), None);
    assert_eq!(repository_path("/srv/config"), None);
}
