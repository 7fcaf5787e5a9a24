//! The api router on a real PostgreSQL database, a real git repository (a copy of
//! `examples/ritmo-config`) and in-process queues: every `events/api-*.json` replayed as Lambda
//! would deliver it, then each route's answers after real syncs made with
//! `ritmo::source::sync_target`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use ritmo::config::{Settings, env_from_map};
use ritmo::message::{PlanRequest, Trigger};
use ritmo::metrics::MetricsSink;
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::store::RunStatus;
use ritmo::telemetry::{LogCapture, LogFormat, subscriber};
use ritmo::workflow::{self, InlineSync};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::TestRepo;
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use ritmo_tests::events::{
    assert_error, call, drain_plans, event_files, events_dir, file_name, replay,
};

const EXAMPLE_KEY: &str = "ritmo-example-master-key-32bytes";
/// The IAM caller the `api-*` events carry.
const JANE: &str = "arn:aws:sts::123456789012:assumed-role/ritmo-operator/jane";
/// The commit `events/api-rollback.json` rolls back to.
const ROLLBACK_COMMIT: &str = "3c2d1e0f9a8b7c6d5e4f30211a0b9c8d7e6f5a4b";

/// The run a sync recorded and how it ended.
struct Synced {
    sync_id: Uuid,
    status: RunStatus,
    /// Resources the run's plan creates.
    created: usize,
}

struct Harness {
    app: Router,
    services: Arc<Services>,
    receivers: LocalReceivers,
    repo: TestRepo,
    _config: TempDir,
    db: Option<TestDb>,
}

/// Target `default` (the one the sample events name) tracking `main` of a copy of the example
/// repository.
async fn harness() -> Harness {
    harness_with("").await
}

/// [`harness`] with `target_yaml` added to the target's entry (indented as its keys).
async fn harness_with(target_yaml: &str) -> Harness {
    let db = TestDb::new().await;
    let repo = TestRepo::new();
    ritmo_tests::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ritmo-config"),
        repo.path(),
    );
    repo.commit("example config");
    let config = tempfile::tempdir().unwrap();
    let bootstrap = config.path().join("gitops-bootstrap.yaml");
    std::fs::write(
        &bootstrap,
        format!(
            "gitops:\n  enabled: true\n  targets:\n    - name: default\n      repository:\n        url: {}\n        branch: main\n{target_yaml}",
            repo.path().display()
        ),
    )
    .unwrap();
    let env = env_from_map(BTreeMap::from([
        ("DATABASE_URL".to_owned(), db.url.clone()),
        (
            "RITMO_MASTER_ENCRYPTION_KEY".to_owned(),
            EXAMPLE_KEY.to_owned(),
        ),
    ]));
    let settings = Settings::load(Some(&bootstrap), &env).unwrap();
    let (queues, receivers) = Queues::local();
    let services = Arc::new(
        Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap(),
    );
    Harness {
        app: api::app(services.clone()),
        services,
        receivers,
        repo,
        _config: config,
        db: Some(db),
    }
}

impl Harness {
    /// Syncs target `default` in-process, as `ritmo gitops sync` does.
    async fn sync(&mut self) -> Synced {
        let request =
            PlanRequest::new("default", Trigger::Cli, chrono::Utc::now()).with_actor("test");
        let inline = InlineSync {
            options: Default::default(),
            auto_approve: false,
            actor: "test".into(),
        };
        let drained = workflow::sync_inline(&self.services, &mut self.receivers, &request, &inline)
            .await
            .unwrap();
        let (sync_id, status) = drained.last_run().expect("the sync recorded a run");
        let created = drained
            .last_plan()
            .and_then(|plan| plan.detail())
            .and_then(|detail| detail.plan.as_ref())
            .map_or(0, |plan| plan.summary().create);
        Synced {
            sync_id,
            status,
            created,
        }
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        call(&self.app, Request::get(uri).body(Body::empty()).unwrap()).await
    }

    async fn post(&self, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |body| Body::from(body.to_string()));
        let request = Request::post(uri)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        call(&self.app, request).await
    }
}

#[tokio::test]
async fn every_api_event_in_the_events_folder_gets_its_documented_answer() {
    let files = event_files("api-");
    assert!(files.len() >= 10, "events/ lost its api samples");

    for file in files {
        let name = file_name(&file);
        // A fresh database each, holding one applied sync of the example repository.
        let mut harness = harness().await;
        let synced = harness.sync().await;
        assert_eq!(synced.status, RunStatus::Succeeded);

        let (status, body) = replay(&harness.app, &file).await;

        let queued = drain_plans(&mut harness.receivers);
        let route = name.trim_start_matches("api-").trim_end_matches(".json");
        match route {
            "health-live" => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                assert_eq!(body["status"], "live");
            }
            "health-ready" => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                assert_eq!(body["status"], "ready");
            }
            "sync" => {
                assert_eq!(status, StatusCode::ACCEPTED, "{name}: {body}");
                assert_eq!(queued.len(), 1, "{name}: {queued:?}");
                assert_eq!(queued[0].target, "default");
                assert_eq!(queued[0].trigger, Trigger::Manual);
                assert_eq!(queued[0].actor.as_deref(), Some(JANE));
                assert_eq!(body["queued"][0]["target"], "default");
            }
            "status" => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                let targets = body["targets"].as_array().unwrap();
                assert_eq!(targets.len(), 1, "{body}");
                assert_eq!(targets[0]["name"], "default");
                assert_eq!(targets[0]["generation"], 1);
                assert_eq!(targets[0]["last_run"]["status"], "succeeded");
            }
            "sync-history" => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                assert_eq!(body["runs"].as_array().unwrap().len(), 1, "{body}");
                assert_eq!(body["runs"][0]["id"], json!(synced.sync_id));
                assert_eq!(body["next"], Value::Null);
            }
            "plan" | "plan-approve" => {
                // The sample's id is not a run of this database.
                assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
                assert_error(&body, "not_found");
                assert!(queued.is_empty());
            }
            "rollback" => {
                // The sample's commit is not in this repository: refused, nothing pinned.
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name}: {body}");
                assert_error(&body, "unknown_commit");
                assert!(
                    body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(ROLLBACK_COMMIT)),
                    "{body}"
                );
                assert!(queued.is_empty(), "{name}: {queued:?}");
            }
            "jobs" => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                let names: Vec<&str> = body["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| item["name"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    names,
                    ["backend-service", "data-pipeline", "frontend-app"],
                    "{body}"
                );
            }
            "job" => {
                assert_eq!(status, StatusCode::OK, "{name}: {body}");
                assert_eq!(body["name"], "backend-service");
                assert_eq!(body["kind"], "Job");
            }
            _ => {
                // A sample nobody wrote an expectation for yet still must answer JSON, not fail.
                assert!(!status.is_server_error(), "{name}: {status} {body}");
                if !status.is_success() {
                    assert!(body["error"].is_string(), "{name}: {body}");
                }
            }
        }
        if route != "sync" {
            assert!(queued.is_empty(), "{name} queued {queued:?}");
        }
    }
}

#[tokio::test]
async fn a_sync_without_a_body_queues_every_target_as_the_anonymous_caller() {
    let mut harness = harness().await;

    let (status, body) = harness.post("/api/v1/gitops/sync", None).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let queued = drain_plans(&mut harness.receivers);
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].target, "default");
    assert_eq!(queued[0].actor.as_deref(), Some(api::ANONYMOUS_ACTOR));
    assert!(!queued[0].is_dry_run());
}

#[tokio::test]
async fn a_dry_run_sync_is_queued_as_a_dry_run() {
    let mut harness = harness().await;

    let (status, _) = harness
        .post(
            "/api/v1/gitops/sync",
            Some(json!({"target": "default", "dry_run": true})),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED);
    let queued = drain_plans(&mut harness.receivers);
    assert_eq!(queued.len(), 1);
    assert!(queued[0].is_dry_run());
}

#[tokio::test]
async fn a_sync_of_an_unknown_target_or_with_a_bad_body_is_refused_and_queues_nothing() {
    let mut harness = harness().await;

    let (unknown, unknown_body) = harness
        .post("/api/v1/gitops/sync", Some(json!({"target": "staging"})))
        .await;
    let (typo, typo_body) = harness
        .post("/api/v1/gitops/sync", Some(json!({"targt": "default"})))
        .await;
    let (garbage, garbage_body) = call(
        &harness.app,
        Request::post("/api/v1/gitops/sync")
            .body(Body::from("{not json"))
            .unwrap(),
    )
    .await;

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_error(&unknown_body, "not_found");
    assert_eq!(typo, StatusCode::BAD_REQUEST);
    assert_error(&typo_body, "bad_request");
    assert_eq!(garbage, StatusCode::BAD_REQUEST);
    assert_error(&garbage_body, "bad_request");
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn status_shows_a_configured_target_before_its_first_sync() {
    let harness = harness().await;

    let (status, body) = harness.get("/api/v1/gitops/status").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let target = &body["targets"][0];
    assert_eq!(target["name"], "default");
    assert_eq!(target["registered"], false);
    assert_eq!(target["configured"], true);
    assert_eq!(target["generation"], 0);
    assert_eq!(target["last_run"], Value::Null);
}

#[tokio::test]
async fn status_after_a_sync_shows_generation_commit_last_run_and_then_drift() {
    let mut harness = harness().await;
    let outcome = harness.sync().await;
    let head = harness.repo.head();

    let (_, before) = harness.get("/api/v1/gitops/status?target=default").await;
    let client = harness.db.as_ref().unwrap().client().await;
    client
        .execute(
            "UPDATE resources SET spec = jsonb_set(spec, '{timeout}', '99') \
             WHERE kind = 'Job' AND name = 'backend-service'",
            &[],
        )
        .await
        .unwrap();
    let (status, after) = harness.get("/api/v1/gitops/status?target=default").await;

    assert_eq!(status, StatusCode::OK);
    let target = &before["targets"][0];
    assert_eq!(target["registered"], true);
    assert_eq!(target["generation"], 1);
    assert_eq!(target["last_applied_commit"], head);
    assert_eq!(target["last_sync_id"], json!(outcome.sync_id));
    assert_eq!(target["pinned_commit"], Value::Null);
    assert_eq!(target["suspended"], false);
    assert_eq!(target["last_run"]["status"], "succeeded");
    assert_eq!(target["drift"], json!([]));
    let drift = after["targets"][0]["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{after}");
    assert_eq!(drift[0]["name"], "backend-service");
    assert_eq!(drift[0]["operation"], "UPDATE");
}

#[tokio::test]
async fn status_of_an_unknown_target_is_404() {
    let harness = harness().await;

    let (status, body) = harness.get("/api/v1/gitops/status?target=staging").await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
}

#[tokio::test]
async fn history_pages_newest_first_and_the_next_cursor_reaches_the_end() {
    let mut harness = harness().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(json!(harness.sync().await.sync_id));
    }
    ids.reverse();

    let (status, first) = harness
        .get("/api/v1/gitops/sync/history?target=default&limit=2")
        .await;
    let next = first["next"].as_str().unwrap();
    let (_, second) = harness
        .get(&format!(
            "/api/v1/gitops/sync/history?target=default&limit=2&before={}",
            next.replace('+', "%2B")
        ))
        .await;

    assert_eq!(status, StatusCode::OK);
    let page = |body: &Value| -> Vec<Value> {
        body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["id"].clone())
            .collect()
    };
    assert_eq!(page(&first), ids[..2]);
    assert_eq!(page(&second), ids[2..]);
    assert_eq!(second["next"], Value::Null);
}

#[tokio::test]
async fn history_refuses_a_bad_limit_or_cursor_with_400() {
    let harness = harness().await;

    for uri in [
        "/api/v1/gitops/sync/history?limit=0",
        "/api/v1/gitops/sync/history?limit=1000",
        "/api/v1/gitops/sync/history?limit=ten",
        "/api/v1/gitops/sync/history?before=yesterday",
        "/api/v1/gitops/sync/history?colour=blue",
    ] {
        let (status, body) = harness.get(uri).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_error(&body, "bad_request");
    }
}

#[tokio::test]
async fn a_plan_shows_its_run_actions_and_the_changes_it_made() {
    let mut harness = harness().await;
    let outcome = harness.sync().await;
    let sync_id = outcome.sync_id;
    let created = outcome.created;

    let (status, body) = harness
        .get(&format!("/api/v1/gitops/plans/{sync_id}"))
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["run"]["id"], json!(sync_id));
    assert_eq!(body["run"]["status"], "succeeded");
    assert_eq!(body["plan"]["actions"].as_array().unwrap().len(), created);
    assert_eq!(body["revisions"].as_array().unwrap().len(), created);
    assert!(
        body["summary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Plan: {created} to create")),
        "{body}"
    );
    assert!(body["diagnostics"].is_array());
    // Each create lists its top-level fields as `add` changes, with secrets redacted.
    let actions = body["plan"]["actions"].as_array().unwrap();
    let job = actions
        .iter()
        .find(|a| a["desired"]["id"]["name"] == "backend-service")
        .unwrap();
    assert!(
        job["changes"].as_array().unwrap().contains(
            &json!({"op": "add", "path": "/spec/description", "after": "Backend microservice"})
        ),
        "{job}"
    );
    let credential = actions
        .iter()
        .find(|a| a["desired"]["id"]["name"] == "docker-registry")
        .unwrap();
    assert!(
        credential["changes"].as_array().unwrap().contains(
            &json!({"op": "add", "path": "/spec/encrypted_value", "after": "(encrypted)"})
        ),
        "{credential}"
    );
}

#[tokio::test]
async fn an_unknown_plan_is_404_and_a_malformed_id_is_400() {
    let harness = harness().await;

    let (unknown, unknown_body) = harness
        .get("/api/v1/gitops/plans/0192f5a4-7b1e-7c3a-9d2e-5f6a7b8c9d0e")
        .await;
    let (malformed, malformed_body) = harness.get("/api/v1/gitops/plans/latest").await;

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_error(&unknown_body, "not_found");
    assert_eq!(malformed, StatusCode::BAD_REQUEST);
    assert_error(&malformed_body, "bad_request");
}

#[tokio::test]
async fn resources_list_and_show_what_the_sync_wrote_with_credentials_as_ciphertext() {
    let mut harness = harness().await;
    harness.sync().await;

    let (list, credentials) = harness.get("/api/v1/credentials").await;
    let (one, pool) = harness.get("/api/v1/workerpools/linux-amd64").await;
    let (environments, environments_body) = harness.get("/api/v1/environments").await;
    let (missing, missing_body) = harness.get("/api/v1/jobs/no-such-job").await;
    let (unknown_kind, unknown_body) = harness.get("/api/v1/widgets").await;

    assert_eq!(list, StatusCode::OK);
    let items = credentials["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    for item in items {
        let spec = &item["spec"];
        let value = spec["encrypted_value"].as_str();
        assert!(
            value.is_some_and(|v| v.starts_with("AES256:") || v.starts_with("KMS:"))
                || spec["secret_ref"].is_object(),
            "{item}"
        );
    }
    assert_eq!(one, StatusCode::OK, "{pool}");
    assert_eq!(pool["kind"], "WorkerPool");
    assert_eq!(pool["name"], "linux-amd64");
    assert_eq!(environments, StatusCode::OK);
    assert_eq!(environments_body["items"].as_array().unwrap().len(), 2);
    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_error(&missing_body, "not_found");
    assert_eq!(unknown_kind, StatusCode::NOT_FOUND);
    assert_error(&unknown_body, "not_found");
}

#[tokio::test]
async fn approving_a_waiting_plan_records_the_iam_caller_and_queues_the_apply() {
    let mut harness = harness().await;
    harness.sync().await;
    // Deleting a credential always waits for approval.
    harness
        .repo
        .remove("webhooks/github-backend.yaml")
        .remove("credentials/github-webhook-secret.yaml");
    harness.repo.commit("drop the github webhook");
    let waiting = harness.sync().await;
    assert_eq!(waiting.status, RunStatus::PendingApproval);
    let sync_id = waiting.sync_id;
    let mut request =
        ritmo_tests::events::request_from_event(&events_dir().join("api-plan-approve.json"));
    *request.uri_mut() = format!("/api/v1/gitops/plans/{sync_id}/approve")
        .parse()
        .unwrap();

    let approved_log = LogCapture::new();
    let refused_log = LogCapture::new();

    let (status, body) = {
        let _logging = tracing::subscriber::set_default(subscriber(
            LogFormat::Json,
            "info",
            approved_log.clone(),
        ));
        call(&harness.app, request.map(Body::new)).await
    };
    let (again, again_body) = {
        let _logging = tracing::subscriber::set_default(subscriber(
            LogFormat::Json,
            "info",
            refused_log.clone(),
        ));
        harness
            .post(&format!("/api/v1/gitops/plans/{sync_id}/approve"), None)
            .await
    };

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let approved: Vec<Value> = approved_log
        .lines()
        .iter()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .collect();
    let messages: Vec<&Value> = approved.iter().map(|line| &line["message"]).collect();
    assert_eq!(
        messages,
        ["plan approved", "approval comment"],
        "{approved:#?}"
    );
    assert_eq!(approved[0]["sync_id"], sync_id.to_string());
    assert_eq!(approved[0]["actor"], JANE);
    assert_eq!(approved[1]["comment"], "reviewed in CHG-1042");
    // The refused second approval (409) logs no approval and no "approval requested".
    for line in refused_log.lines() {
        assert!(!line.contains("approv"), "{line}");
    }
    assert_eq!(body["status"], "approved");
    assert_eq!(body["approved_by"], JANE);
    let apply = harness.receivers.applies.try_recv().unwrap();
    assert_eq!(apply.sync_id, sync_id);
    let run = harness
        .services
        .store
        .lock()
        .await
        .run(sync_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.approved_by.as_deref(), Some(JANE));
    assert_eq!(again, StatusCode::CONFLICT, "{again_body}");
    assert_error(&again_body, "not_pending");
}

#[tokio::test]
async fn rollback_and_resume_pin_and_unpin_the_target() {
    let mut harness = harness().await;
    let first = harness.repo.head();
    harness.sync().await;
    harness
        .repo
        .write("jobs/extra.yaml", "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: extra\nspec:\n  description: one more\n");
    harness.repo.commit("one more job");
    harness.sync().await;

    let (rolled, rolled_body) = harness
        .post(
            "/api/v1/gitops/rollback",
            Some(json!({"target": "default", "to": first})),
        )
        .await;
    let (_, pinned) = harness.get("/api/v1/gitops/status").await;
    let (resumed, resumed_body) = harness
        .post("/api/v1/gitops/resume", Some(json!({"target": "default"})))
        .await;
    let (_, unpinned) = harness.get("/api/v1/gitops/status").await;

    assert_eq!(rolled, StatusCode::ACCEPTED, "{rolled_body}");
    assert_eq!(pinned["targets"][0]["pinned_commit"], first);
    assert_eq!(resumed, StatusCode::OK, "{resumed_body}");
    assert_eq!(unpinned["targets"][0]["pinned_commit"], Value::Null);
    let queued = drain_plans(&mut harness.receivers);
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert_eq!(queued[0].trigger, Trigger::Rollback);
    assert_eq!(queued[1].trigger, Trigger::Manual);
}

#[tokio::test]
async fn rollback_and_resume_refuse_what_cannot_be_done() {
    let mut harness = harness().await;

    let (no_body, no_body_json) = harness.post("/api/v1/gitops/rollback", None).await;
    let (not_commit, not_commit_json) = harness
        .post(
            "/api/v1/gitops/rollback",
            Some(json!({"target": "default", "to": "last tuesday"})),
        )
        .await;
    let (unknown, unknown_json) = harness
        .post("/api/v1/gitops/resume", Some(json!({"target": "staging"})))
        .await;

    assert_eq!(no_body, StatusCode::BAD_REQUEST);
    assert_error(&no_body_json, "bad_request");
    assert_eq!(not_commit, StatusCode::BAD_REQUEST, "{not_commit_json}");
    assert_error(&not_commit_json, "bad_request");
    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_error(&unknown_json, "not_found");
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn ready_is_503_once_the_database_is_gone_while_live_stays_200() {
    let mut harness = harness().await;
    let (ready_before, _) = harness.get("/health/ready").await;

    drop(harness.db.take());
    let (ready_after, body) = harness.get("/health/ready").await;
    let (live, _) = harness.get("/health/live").await;

    assert_eq!(ready_before, StatusCode::OK);
    assert_eq!(ready_after, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_error(&body, "database_unavailable");
    assert_eq!(live, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let harness = harness().await;

    let (missing, missing_body) = harness.get("/api/v2/everything").await;
    let (method, method_body) = harness.get("/api/v1/gitops/sync").await;

    assert_eq!(missing, StatusCode::NOT_FOUND);
    assert_error(&missing_body, "not_found");
    assert_eq!(method, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&method_body, "method_not_allowed");
}

// Regression (issue 22, finding 3): a rollback pinned a commit that does not exist
// (`0000000`) before checking it, and the target then stopped syncing until someone resumed it.
#[tokio::test]
async fn a_rollback_to_a_commit_not_on_the_branch_is_422_and_pins_nothing() {
    let mut harness = harness().await;
    harness.sync().await;
    harness.repo.checkout("elsewhere");
    let other_branch = harness.repo.commit("a commit main never had");
    harness.repo.checkout("main");

    let mut answers = Vec::new();
    for to in ["0000000", &"0".repeat(40), &other_branch] {
        answers.push(
            harness
                .post(
                    "/api/v1/gitops/rollback",
                    Some(json!({"target": "default", "to": to})),
                )
                .await,
        );
    }
    let (_, status) = harness.get("/api/v1/gitops/status?target=default").await;

    for (code, body) in &answers {
        assert_eq!(*code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_error(body, "unknown_commit");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("nothing was pinned"),
            "{body}"
        );
    }
    assert_eq!(
        status["targets"][0]["pinned_commit"],
        Value::Null,
        "{status}"
    );
    assert!(drain_plans(&mut harness.receivers).is_empty());
}

#[tokio::test]
async fn a_rollback_by_abbreviated_commit_pins_the_full_id() {
    let mut harness = harness().await;
    let first = harness.repo.head();
    harness.sync().await;
    harness.repo.write("jobs/extra.yaml", "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: extra\nspec:\n  description: one more\n");
    harness.repo.commit("one more job");

    let (rolled, body) = harness
        .post(
            "/api/v1/gitops/rollback",
            Some(json!({"target": "default", "to": &first[..10]})),
        )
        .await;
    let (_, status) = harness.get("/api/v1/gitops/status?target=default").await;

    assert_eq!(rolled, StatusCode::ACCEPTED, "{body}");
    assert_eq!(status["targets"][0]["pinned_commit"], first.as_str());
    let queued = drain_plans(&mut harness.receivers);
    assert!(
        queued[0]
            .revision
            .as_deref()
            .is_some_and(|r| r.ends_with(&first)),
        "{queued:?}"
    );
}

// Regression (issue 22, finding 6): `GET /api/v1/jobs/x%00` answered 500 (PostgreSQL refuses
// NUL in text).
#[tokio::test]
async fn a_nul_byte_in_a_path_or_query_is_400_not_500() {
    let harness = harness().await;

    for uri in [
        "/api/v1/jobs/x%00",
        "/api/v1/jobs/%00",
        "/api/v1/gitops/status?target=default%00",
        "/api/v1/gitops/sync/history?target=%00",
    ] {
        let (status, body) = harness.get(uri).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_error(&body, "bad_request");
    }
}

#[tokio::test]
async fn an_actor_set_by_the_server_in_front_is_recorded_over_the_anonymous_one() {
    let mut harness = harness().await;
    let mut request = Request::post("/api/v1/gitops/sync")
        .header("content-type", "application/json")
        .body(Body::empty())
        .unwrap();
    request
        .extensions_mut()
        .insert(api::Actor("alice".to_owned()));

    let (status, body) = call(&harness.app, request).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let queued = drain_plans(&mut harness.receivers);
    assert_eq!(queued[0].actor.as_deref(), Some("alice"));
}

#[tokio::test]
async fn suspend_and_resume_routes_stop_automatic_syncs_and_status_says_who_and_when() {
    let mut harness = harness().await;
    harness.sync().await;

    let (suspended, suspended_body) = harness
        .post("/api/v1/gitops/targets/default/suspend", None)
        .await;
    let (_, while_suspended) = harness.get("/api/v1/gitops/status").await;
    let queued_while_suspended = drain_plans(&mut harness.receivers);
    let webhook = PlanRequest::new("default", Trigger::Webhook, chrono::Utc::now());
    let skipped = workflow::handle_plan_request(&harness.services, &webhook)
        .await
        .unwrap();
    let (resumed, resumed_body) = harness
        .post("/api/v1/gitops/targets/default/resume", None)
        .await;
    let (_, after) = harness.get("/api/v1/gitops/status").await;
    let (unknown, unknown_body) = harness
        .post("/api/v1/gitops/targets/staging/suspend", None)
        .await;

    assert_eq!(suspended, StatusCode::OK, "{suspended_body}");
    assert_eq!(suspended_body["suspended_by"], "api");
    let target = &while_suspended["targets"][0];
    assert_eq!(target["suspended"], true, "{while_suspended}");
    assert_eq!(target["suspended_by"], "api");
    assert!(target["suspended_at"].is_string(), "{while_suspended}");
    assert!(queued_while_suspended.is_empty());
    assert!(
        matches!(
            skipped,
            workflow::PlanRequestOutcome::Skipped {
                reason: workflow::SkipReason::Suspended,
                ..
            }
        ),
        "{skipped:?}"
    );
    assert_eq!(resumed, StatusCode::OK, "{resumed_body}");
    assert_eq!(after["targets"][0]["suspended"], false);
    assert_eq!(after["targets"][0]["suspended_by"], Value::Null);
    let queued = drain_plans(&mut harness.receivers);
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].trigger, Trigger::Manual);
    assert_eq!(unknown, StatusCode::NOT_FOUND, "{unknown_body}");
}

#[tokio::test]
async fn status_shows_a_closed_sync_window_and_its_next_opening() {
    use chrono::{Datelike, Timelike};
    // Open one minute a year, at New Year (UTC): closed now, whatever the day the test runs.
    let harness = harness_with(
        "      sync_windows:\n        - { kind: allow, schedule: \"0 0 1 1 *\", duration: 1m }\n",
    )
    .await;
    let now = chrono::Utc::now();

    let (status, body) = harness.get("/api/v1/gitops/status").await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let window = &body["targets"][0]["sync_window"];
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(window["next_opening"].clone()).unwrap();
    let new_year = chrono::NaiveDate::from_ymd_opt(now.year() + 1, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    if now.month() != 1 || now.day() != 1 || now.hour() != 0 || now.minute() != 0 {
        assert_eq!(window["open"], false, "{body}");
        assert_eq!(next, new_year, "{body}");
    }
}

fn plugin_yaml(name: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: {name}\nspec:\n  type: scm\n  \
         binary_path: /opt/ritmo/plugins/{name}\n  version: \"1\"\n  enabled: true\n"
    )
}

/// Runs what the API queued, as the planner and applier would.
async fn drain_queued(harness: &mut Harness) -> workflow::Drained {
    workflow::drain(
        &harness.services,
        &mut harness.receivers,
        Default::default(),
    )
    .await
}

#[tokio::test]
async fn a_selective_sync_applies_only_the_selected_change_and_status_says_partially_synced() {
    let mut harness = harness().await;
    harness.sync().await;
    let applied = harness.repo.head();
    harness
        .repo
        .write("plugins/extra-one.yaml", plugin_yaml("extra-one"))
        .write("plugins/extra-two.yaml", plugin_yaml("extra-two"));
    let head = harness.repo.commit("two new plugins");

    let (status, body) = harness
        .post(
            "/api/v1/gitops/sync",
            Some(json!({"target": "default", "only": ["plugin/extra-two"]})),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let drained = drain_queued(&mut harness).await;
    let report = drained.applied().expect("the selection is applied");
    assert_eq!((report.created, report.updated, report.deleted), (1, 0, 0));
    let client = harness.db.as_ref().unwrap().client().await;
    let plugins: Vec<String> = client
        .query(
            "SELECT name FROM resources WHERE kind = 'Plugin' AND name LIKE 'extra-%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(plugins, ["extra-two"]);
    let (_, status) = harness.get("/api/v1/gitops/status?target=default").await;
    let target = &status["targets"][0];
    assert_eq!(target["last_applied_commit"], applied.as_str(), "{status}");
    let partial = &target["partial_sync"];
    assert_eq!(partial["commit"], head.as_str(), "{status}");
    assert_eq!(
        (&partial["applied"], &partial["total"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(partial["pending"], json!(["create plugin/extra-one"]));

    harness
        .post("/api/v1/gitops/sync", Some(json!({"target": "default"})))
        .await;
    let rest = drain_queued(&mut harness).await;

    let report = rest.applied().expect("the rest is applied");
    assert_eq!((report.created, report.updated, report.deleted), (1, 0, 0));
    let (_, status) = harness.get("/api/v1/gitops/status?target=default").await;
    assert_eq!(status["targets"][0]["last_applied_commit"], head.as_str());
    assert_eq!(
        status["targets"][0]["partial_sync"],
        Value::Null,
        "{status}"
    );
}

#[tokio::test]
async fn a_selective_sync_that_cannot_be_applied_is_400_and_queues_nothing() {
    let mut harness = harness().await;
    harness.sync().await;
    harness
        .repo
        .write("plugins/extra-one.yaml", plugin_yaml("extra-one"));
    harness.repo.commit("a new plugin");

    let (unmatched, unmatched_body) = harness
        .post(
            "/api/v1/gitops/sync",
            Some(json!({"target": "default", "only": ["job/backend-service"]})),
        )
        .await;
    let (malformed, malformed_body) = harness
        .post(
            "/api/v1/gitops/sync",
            Some(json!({"target": "default", "only": ["backend-service"]})),
        )
        .await;
    let (untargeted, untargeted_body) = harness
        .post(
            "/api/v1/gitops/sync",
            Some(json!({"only": ["plugin/extra-one"]})),
        )
        .await;

    assert_eq!(unmatched, StatusCode::BAD_REQUEST, "{unmatched_body}");
    assert_error(&unmatched_body, "invalid_selection");
    assert!(
        unmatched_body["message"]
            .as_str()
            .unwrap()
            .contains("+ plugin/extra-one"),
        "{unmatched_body}"
    );
    assert_eq!(malformed, StatusCode::BAD_REQUEST);
    assert_error(&malformed_body, "invalid_selection");
    assert_eq!(untargeted, StatusCode::BAD_REQUEST);
    assert_error(&untargeted_body, "bad_request");
    assert!(drain_plans(&mut harness.receivers).is_empty());
    let (_, history) = harness.get("/api/v1/gitops/sync/history").await;
    assert_eq!(history["runs"].as_array().unwrap().len(), 1, "{history}");
}

#[tokio::test]
async fn a_manual_sync_in_a_closed_window_is_409_unless_it_overrides_the_window() {
    // Every minute opens a day-long deny window: closed whenever the test runs.
    let mut harness = harness_with(
        "      sync_windows:\n        - { kind: deny, schedule: \"* * * * *\", duration: 1d }\n",
    )
    .await;

    let (refused, refused_body) = harness
        .post("/api/v1/gitops/sync", Some(json!({"target": "default"})))
        .await;

    assert_eq!(refused, StatusCode::CONFLICT, "{refused_body}");
    assert_error(&refused_body, "window_closed");
    assert!(drain_plans(&mut harness.receivers).is_empty());

    let (accepted, body) = harness
        .post(
            "/api/v1/gitops/sync",
            Some(json!({"target": "default", "override_window": true})),
        )
        .await;

    assert_eq!(accepted, StatusCode::ACCEPTED, "{body}");
    let drained = drain_queued(&mut harness).await;
    let report = drained.applied().expect("the override applies the plan");
    let (_, history) = harness.get("/api/v1/gitops/sync/history").await;
    let run = &history["runs"][0];
    assert_eq!(run["id"], json!(report.sync_id));
    assert_eq!(run["window_override_by"], api::ANONYMOUS_ACTOR, "{history}");
}
