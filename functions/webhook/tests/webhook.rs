//! The webhook router on a real PostgreSQL database and in-process queues: every
//! `events/webhook-*.json` replayed as Lambda would deliver it, then the cases the events do
//! not cover (replays, missing signatures, other branches, oversized bodies, routing).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::message::Trigger;
use ritmo::metrics::MetricsSink;
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo_tests::db::TestDb;
use secrecy::SecretString;
use serde_json::Value;
use tower::ServiceExt;

use ritmo_tests::events::{
    assert_error, call, drain_plans, event_files, events_dir, file_name, replay,
};

/// The secret every `events/webhook-*` file is signed with (events/README.md).
const TEST_SECRET: &str = "ritmo-test-webhook-secret";
/// The commit the sample pushes carry.
const COMMIT: &str = "8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112";

struct Harness {
    app: Router,
    receivers: LocalReceivers,
    _services: Arc<Services>,
    _db: TestDb,
}

fn target(name: &str, repo_url: &str, branch: &str) -> TargetSettings {
    TargetSettings {
        name: name.into(),
        repo_url: repo_url.into(),
        branch: branch.into(),
        path: "/".into(),
        interval_secs: 60,
        auto_apply: true,
        dry_run: false,
        self_heal: false,
        controls: Default::default(),
        policy: Default::default(),
        auth: GitAuth::None,
    }
}

/// One target per provider the sample events come from, all tracking `branch`.
fn provider_targets(branch: &str) -> Vec<TargetSettings> {
    vec![
        target("github", "https://github.com/acme/ritmo-config.git", branch),
        target("gitlab", "https://gitlab.com/acme/ritmo-config.git", branch),
        target(
            "gitea",
            "https://git.example.com/acme/ritmo-config.git",
            branch,
        ),
        target(
            "bitbucket",
            "git@bitbucket.org:acme/ritmo-config.git",
            branch,
        ),
    ]
}

async fn harness_with(targets: Vec<TargetSettings>, webhook_path: &str) -> Harness {
    let db = TestDb::new().await;
    let settings = Settings {
        enabled: true,
        targets,
        database_url: Some(SecretString::from(db.url.clone())),
        webhook_secret: Some(SecretString::from(TEST_SECRET)),
        webhook_path: webhook_path.into(),
        ..Settings::default()
    };
    let (queues, receivers) = Queues::local();
    let services = Arc::new(
        Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap(),
    );
    Harness {
        app: webhook::app(services.clone()),
        receivers,
        _services: services,
        _db: db,
    }
}

async fn harness() -> Harness {
    harness_with(provider_targets("main"), webhook::WEBHOOK_PATH).await
}

fn event(name: &str) -> std::path::PathBuf {
    events_dir().join(name)
}

/// The provider target a sample event's file name names (`webhook-<provider>-…`).
fn provider_of(file: &str) -> &str {
    file.strip_prefix("webhook-")
        .and_then(|rest| rest.split('-').next())
        .unwrap()
}

#[tokio::test]
async fn every_webhook_event_in_the_events_folder_gets_its_documented_answer() {
    let files = event_files("webhook-");
    assert!(files.len() >= 10, "events/ lost its webhook samples");

    for file in files {
        let name = file_name(&file);
        // A fresh database each: the GitHub samples share one delivery id.
        let mut harness = harness().await;

        let (status, body) = replay(&harness.app, &file).await;

        let queued = drain_plans(&mut harness.receivers);
        if name.contains("bad-signature") {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: {body}");
            assert_error(&body, "bad_signature");
            assert!(queued.is_empty(), "{name}");
        } else if name.contains("ping") {
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert!(queued.is_empty(), "{name}");
        } else if name.contains("tag-push") {
            assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
            assert_eq!(body["status"], "ignored", "{name}: {body}");
            assert!(queued.is_empty(), "{name}");
        } else if name.contains("push") {
            assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
            assert_eq!(body["status"], "accepted", "{name}: {body}");
            assert_eq!(queued.len(), 1, "{name}: {queued:?}");
            let plan = &queued[0];
            assert_eq!(plan.target, provider_of(&name), "{name}");
            assert_eq!(plan.trigger, Trigger::Webhook, "{name}");
            assert!(
                plan.revision.as_deref().is_some_and(|r| r.contains(COMMIT)),
                "{name}: {plan:?}"
            );
            assert!(plan.delivery_id.is_some(), "{name}");
        } else {
            // A sample nobody wrote an expectation for yet still must answer JSON, not fail.
            assert!(!status.is_server_error(), "{name}: {status} {body}");
            if !status.is_success() {
                assert!(body["error"].is_string(), "{name}: {body}");
            }
        }
    }
}

#[tokio::test]
async fn rest_v1_http_v2_base64_and_form_bodies_queue_the_same_plan() {
    let mut revisions = Vec::new();

    for name in [
        "webhook-github-push-apigw-v1.json",
        "webhook-github-push-apigw-v2.json",
        "webhook-github-push-base64-apigw-v2.json",
        "webhook-github-push-form-apigw-v1.json",
    ] {
        let mut harness = harness().await;
        let (status, _) = replay(&harness.app, &event(name)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{name}");
        let queued = drain_plans(&mut harness.receivers);
        assert_eq!(queued.len(), 1, "{name}");
        revisions.push(queued[0].revision.clone());
    }

    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
}

#[tokio::test]
async fn the_same_delivery_twice_answers_duplicate_and_queues_nothing_more() {
    let mut harness = harness().await;
    let push = event("webhook-github-push-apigw-v2.json");
    let (first, _) = replay(&harness.app, &push).await;
    assert_eq!(first, StatusCode::ACCEPTED);
    assert_eq!(drain_plans(&mut harness.receivers).len(), 1);

    let (second, body) = replay(&harness.app, &push).await;

    assert_eq!(second, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "duplicate", "{body}");
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn a_push_without_a_signature_is_refused_with_401() {
    let mut harness = harness().await;
    let mut request =
        ritmo_tests::events::request_from_event(&event("webhook-github-push-apigw-v2.json"));
    request.headers_mut().remove("x-hub-signature-256");
    request.headers_mut().remove("x-hub-signature");

    let (status, body) = call(&harness.app, request.map(Body::new)).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "missing_signature");
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn a_push_to_a_branch_no_target_tracks_is_acknowledged_and_ignored() {
    let mut harness = harness_with(provider_targets("production"), webhook::WEBHOOK_PATH).await;

    let (status, body) = replay(&harness.app, &event("webhook-github-push-apigw-v2.json")).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "ignored", "{body}");
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_json_before_anything_is_read() {
    let mut harness = harness().await;
    let body = vec![b' '; webhook::BODY_LIMIT + 1];
    let request = Request::post(webhook::WEBHOOK_PATH)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", "oversized-1")
        .header("x-hub-signature-256", "sha256=00")
        .body(Body::from(body))
        .unwrap();

    let (status, body) = call(&harness.app, request).await;

    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&body, "payload_too_large");
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn a_body_at_the_limit_reaches_the_signature_check() {
    let harness = harness().await;
    let request = Request::post(webhook::WEBHOOK_PATH)
        .header("x-github-event", "push")
        .header("x-github-delivery", "at-the-limit-1")
        .header("x-hub-signature-256", "sha256=00")
        .body(Body::from(vec![b' '; webhook::BODY_LIMIT]))
        .unwrap();

    let (status, body) = call(&harness.app, request).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn the_configured_webhook_path_is_served_as_well_as_the_standard_one() {
    let mut harness = harness_with(provider_targets("main"), "/hooks/ritmo").await;
    let mut request =
        ritmo_tests::events::request_from_event(&event("webhook-github-push-apigw-v2.json"));
    *request.uri_mut() = "/hooks/ritmo".parse().unwrap();

    let (status, body) = call(&harness.app, request.map(Body::new)).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(drain_plans(&mut harness.receivers).len(), 1);
}

#[tokio::test]
async fn other_paths_and_methods_answer_json_errors() {
    let harness = harness().await;

    let (get_status, get_body) = call(
        &harness.app,
        Request::get(webhook::WEBHOOK_PATH)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let (missing_status, missing_body) = call(
        &harness.app,
        Request::post("/webhooks/other")
            .body(Body::empty())
            .unwrap(),
    )
    .await;

    assert_eq!(get_status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&get_body, "method_not_allowed");
    assert_eq!(missing_status, StatusCode::NOT_FOUND);
    assert_error(&missing_body, "not_found");
}

#[tokio::test]
async fn a_rejected_webhook_answers_json_that_names_no_secret() {
    let harness = harness().await;

    let (_, body) = replay(
        &harness.app,
        &event("webhook-github-bad-signature-apigw-v2.json"),
    )
    .await;

    let text = Value::to_string(&body);
    assert!(!text.contains(TEST_SECRET), "{text}");
}

/// The router on settings read from a bootstrap file and variables, as Lambda and
/// `ritmo serve` read them (one target, `gitlab`, tracking the samples' repository).
async fn harness_from_bootstrap(file: &str, variables: &[(&str, &str)]) -> Harness {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = dir.path().join("gitops-bootstrap.yaml");
    std::fs::write(&bootstrap, file).unwrap();
    let mut env: std::collections::BTreeMap<String, String> = variables
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    env.insert("DATABASE_URL".into(), db.url.clone());
    env.insert(
        "RITMO_GITOPS_REPO_URL".into(),
        "https://gitlab.com/acme/ritmo-config.git".into(),
    );
    let settings = Settings::load(Some(&bootstrap), &ritmo::config::env_from_map(env)).unwrap();
    let (queues, receivers) = Queues::local();
    let services = Arc::new(
        Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap(),
    );
    Harness {
        app: webhook::app(services.clone()),
        receivers,
        _services: services,
        _db: db,
    }
}

/// The sample GitLab push (its token header is the test secret itself, so a test can change
/// any other header and the delivery still verifies).
fn gitlab_push() -> lambda_http::Request {
    ritmo_tests::events::request_from_event(&event("webhook-gitlab-push-apigw-v2.json"))
}

// Regression (issue 21): `webhook.enabled: false` in the bootstrap file still accepted pushes
// (202) while a secret was set in the environment.
#[tokio::test]
async fn a_switched_off_webhook_answers_404_and_queues_nothing_though_a_secret_is_set() {
    let mut harness = harness_from_bootstrap(
        "gitops:\n  webhook:\n    enabled: false\n",
        &[("RITMO_GITOPS_WEBHOOK_SECRET", TEST_SECRET)],
    )
    .await;

    let (status, body) = call(&harness.app, gitlab_push().map(Body::new)).await;

    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_error(&body, "webhook_disabled");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("webhook.enabled")
    );
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

// Regression (issue 21): with no secret configured the webhook answered 500
// `no_secret_configured`, a server fault, for what is a configuration state.
#[tokio::test]
async fn with_no_secret_configured_a_push_is_refused_with_403_naming_the_setting() {
    let mut harness = harness_from_bootstrap("gitops:\n  enabled: true\n", &[]).await;

    let (status, body) = call(&harness.app, gitlab_push().map(Body::new)).await;

    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_error(&body, "no_secret_configured");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("RITMO_GITOPS_WEBHOOK_SECRET"),
        "{body}"
    );
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

// Regression (issue 21): `gitops.enabled: false` was parsed and never read, so a push was
// queued (202) as if GitOps were on.
#[tokio::test]
async fn with_gitops_disabled_a_signed_push_answers_disabled_and_queues_nothing() {
    for (file, variables) in [
        (
            "gitops:\n  enabled: false\n",
            vec![("RITMO_GITOPS_WEBHOOK_SECRET", TEST_SECRET)],
        ),
        (
            "gitops:\n  enabled: true\n",
            vec![
                ("RITMO_GITOPS_WEBHOOK_SECRET", TEST_SECRET),
                ("RITMO_GITOPS_ENABLED", "false"),
            ],
        ),
    ] {
        let mut harness = harness_from_bootstrap(file, &variables).await;

        let (status, body) = call(&harness.app, gitlab_push().map(Body::new)).await;

        assert_eq!(status, StatusCode::OK, "{file}: {body}");
        assert_eq!(body["status"], "disabled", "{body}");
        assert!(drain_plans(&mut harness.receivers).is_empty(), "{file}");
    }
}

#[tokio::test]
async fn with_gitops_disabled_a_bad_signature_is_still_refused_with_401() {
    let harness = harness_from_bootstrap(
        "gitops:\n  enabled: false\n",
        &[("RITMO_GITOPS_WEBHOOK_SECRET", TEST_SECRET)],
    )
    .await;
    let mut request = gitlab_push();
    request
        .headers_mut()
        .insert("x-gitlab-token", "not-the-secret".parse().unwrap());

    let (status, body) = call(&harness.app, request.map(Body::new)).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_error(&body, "bad_signature");
}

// Regression (issue 22, finding 6): a validly signed delivery whose id is 8,000 characters
// answered 503 "retry later", though no retry could pass: the id was stored as the primary
// key of `webhook_deliveries`, past the btree index's row limit.
#[tokio::test]
async fn a_signed_push_with_an_8000_character_delivery_id_is_accepted_once_then_a_duplicate() {
    let mut harness = harness().await;
    let long_id = incompressible_id(8000);
    let push = || {
        let mut request = gitlab_push();
        request
            .headers_mut()
            .insert("idempotency-key", long_id.parse().unwrap());
        request.map(Body::new)
    };

    let (first, first_body) = call(&harness.app, push()).await;
    let (second, second_body) = call(&harness.app, push()).await;

    assert_eq!(first, StatusCode::ACCEPTED, "{first_body}");
    assert_eq!(first_body["status"], "accepted");
    assert_eq!(second, StatusCode::OK, "{second_body}");
    assert_eq!(second_body["status"], "duplicate");
    let queued = drain_plans(&mut harness.receivers);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].target, "gitlab");
}

/// `length` hex digits no compressor shrinks (xorshift64): PostgreSQL compresses a long
/// repetitive value below the index row limit, which a real random id never is.
fn incompressible_id(length: usize) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"0123456789abcdef"[(state >> 60) as usize])
        })
        .collect()
}

// Issue 27: a burst is shed at once with Retry-After instead of piling up behind the one
// database connection, and the refused delivery passes when it is redelivered.
#[tokio::test]
async fn a_delivery_over_the_in_flight_bound_answers_503_with_retry_after_and_passes_redelivered() {
    let mut harness = harness().await;
    let app = webhook::app_with_limit(harness._services.clone(), 1);
    // The first delivery's body arrives only when the test says so: until then it holds the
    // only slot (the slot is taken before the body is read).
    let (reading_tx, reading_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let (parts, body) =
        ritmo_tests::events::request_from_event(&event("webhook-github-push-apigw-v2.json"))
            .into_parts();
    let bytes = axum::body::Bytes::copy_from_slice(&body);
    let slow_body = futures_util::stream::once(async move {
        let _ = reading_tx.send(());
        let _ = release_rx.await;
        Ok::<_, std::convert::Infallible>(bytes)
    });
    let first = {
        let app = app.clone();
        let request = Request::from_parts(parts, Body::from_stream(slow_body));
        tokio::spawn(async move { call(&app, request).await })
    };
    reading_rx.await.unwrap();

    let refused = app
        .clone()
        .oneshot(gitlab_push().map(Body::new))
        .await
        .unwrap();

    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let latest = webhook::RETRY_AFTER_SECS + webhook::RETRY_AFTER_JITTER_SECS;
    assert!((webhook::RETRY_AFTER_SECS..=latest).contains(&retry_after));
    let body = axum::body::to_bytes(refused.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_error(&serde_json::from_slice(&body).unwrap(), "busy");
    assert!(drain_plans(&mut harness.receivers).is_empty());

    release_tx.send(()).unwrap();
    let (first_status, first_body) = first.await.unwrap();
    assert_eq!(first_status, StatusCode::ACCEPTED, "{first_body}");
    let (redelivered, body) = call(&app, gitlab_push().map(Body::new)).await;
    assert_eq!(redelivered, StatusCode::ACCEPTED, "{body}");
    let queued: Vec<String> = drain_plans(&mut harness.receivers)
        .into_iter()
        .map(|plan| plan.target)
        .collect();
    assert_eq!(queued, ["github", "gitlab"]);
}

#[tokio::test]
async fn a_push_for_a_suspended_target_is_answered_202_and_recorded_as_skipped() {
    let mut suspended = target("github", "https://github.com/acme/ritmo-config.git", "main");
    suspended.controls.suspended = true;
    let mut harness = harness_with(vec![suspended], webhook::WEBHOOK_PATH).await;
    let push = event("webhook-github-push-apigw-v2.json");

    let (status, body) = replay(&harness.app, &push).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    assert_eq!(
        body["skipped_suspended"],
        serde_json::json!(["github"]),
        "{body}"
    );
    assert!(drain_plans(&mut harness.receivers).is_empty());
    let delivery = body["delivery_id"].as_str().unwrap().to_owned();
    let skipped = harness
        ._services
        .database()
        .await
        .unwrap()
        .delivery_skipped_targets(&delivery)
        .await
        .unwrap();
    assert_eq!(skipped, Some(vec!["github".to_owned()]));
}
