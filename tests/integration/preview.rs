//! Pull request previews through the planner on real PostgreSQL and a served repository: a
//! preview plans the proposed commit against live state, records nothing, queues no apply,
//! and stays a preview when its message is delivered again.

use std::collections::BTreeSet;

use ritmo::config::{
    GitAuth, PreviewCredential, PreviewSettings, SecretSetting, Settings, TargetSettings,
};
use ritmo::diff::Op;
use ritmo::message::{PlanRequest, PullRequestPreview, Trigger};
use ritmo::metrics::MetricsSink;
use ritmo::plan::{Action, PlanPolicy};
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo::store::RunStatus;
use ritmo::workflow::{self, PlanRequestOutcome, WebhookOutcome};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo as Remote;
use secrecy::SecretString;

const TARGET: &str = "default";
const SECRET: &str = "preview-test-secret";

fn settings(db: &TestDb, remote: &Remote, cache: &tempfile::TempDir) -> Settings {
    Settings {
        enabled: true,
        targets: vec![TargetSettings {
            name: TARGET.into(),
            repo_url: remote.url(),
            branch: "main".into(),
            path: String::new(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            policy: PlanPolicy::default(),
            auth: GitAuth::None,
            controls: Default::default(),
        }],
        builtin_plugins: BTreeSet::new(),
        database_url: Some(SecretString::from(db.url.clone())),
        webhook_secret: Some(SecretString::from(SECRET)),
        webhook_path: "/webhooks/gitops".into(),
        cache_dir: cache.path().to_path_buf(),
        ..Settings::default()
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_pull_request_preview_plans_its_head_and_is_never_recorded_or_applied() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(
        settings(&db, &remote, &cache),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&services, Some(TARGET), None, false)
        .await
        .unwrap();
    let request = receivers.plans.try_recv().unwrap();
    workflow::handle_plan_request(&services, &request)
        .await
        .unwrap();
    let apply = receivers.applies.try_recv().unwrap();
    workflow::handle_apply_request(&services, &apply)
        .await
        .unwrap();
    let head = remote.push_plugin("git-scm", "2.0.0");
    let runs = "SELECT count(*) FROM sync_runs";
    let resources = "SELECT count(*) FROM resources WHERE spec->>'version' = '1.0.0'";
    let (runs_before, rows_before) = (count(&db, runs).await, count(&db, resources).await);
    let preview = PlanRequest::new(TARGET, Trigger::Webhook, chrono::Utc::now()).with_pull_request(
        "main",
        PullRequestPreview {
            provider: "github".into(),
            repository: "acme/config".into(),
            number: 7,
            head_commit: head.clone(),
            head_ref: "refs/pull/7/head".into(),
            from_fork: false,
        },
    );
    // The message as the queue carries it: the flag must survive the trip.
    let delivered = PlanRequest::from_json(&preview.to_json()).unwrap();

    let first = workflow::handle_plan_request(&services, &delivered)
        .await
        .unwrap();
    let replayed = workflow::handle_plan_request(&services, &delivered)
        .await
        .unwrap();

    for outcome in [&first, &replayed] {
        let PlanRequestOutcome::Previewed { status, detail, .. } = outcome else {
            panic!("not a preview: {outcome:?}");
        };
        assert_eq!(*status, RunStatus::Planned);
        let plan = detail.plan.as_ref().unwrap();
        assert_eq!(plan.revision.commit(), Some(head.as_str()));
        let [Action::Update { changes, .. }] = plan.actions.as_slice() else {
            panic!("{:?}", plan.actions);
        };
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].op, Op::Replace);
        assert_eq!(changes[0].path, "/spec/version");
    }
    assert_eq!(count(&db, runs).await, runs_before);
    assert_eq!(count(&db, resources).await, rows_before);
    assert!(receivers.applies.try_recv().is_err(), "an apply was queued");
    assert_ne!(
        delivered.deduplication_id(),
        PlanRequest::new(TARGET, Trigger::Webhook, chrono::Utc::now())
            .with_revision(format!("main@sha1:{head}"))
            .deduplication_id(),
        "a preview and the push of the same commit must not absorb each other"
    );
}

#[tokio::test]
async fn a_signed_pull_request_event_is_read_and_answered_without_planning_anything() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(
        settings(&db, &remote, &cache),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    let body = include_bytes!("../../shared/src/webhook/fixtures/github-pull-request-opened.json");
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let headers: Vec<(String, String)> = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", "pr-delivery-1"),
        ("X-Hub-Signature-256", signature.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let reply = workflow::accept_webhook(&services, &headers, body).await;

    let WebhookOutcome::Ignored { reason } = &reply else {
        panic!("{reply:?}");
    };
    assert_eq!(
        reason,
        "pull request #2 into `master`: no target follows that branch of this repository"
    );
    assert!(receivers.plans.try_recv().is_err());
    assert_eq!(count(&db, "SELECT count(*) FROM sync_runs").await, 0);
}

/// Settings whose target previews pull requests, posting with a token.
fn previewing(settings: Settings) -> Settings {
    let preview = PreviewSettings {
        enabled: true,
        credential: Some(PreviewCredential::Token(SecretSetting::Value(
            SecretString::from("preview-token"),
        ))),
        api_url: None,
    };
    Settings {
        previews: [(TARGET.to_string(), preview)].into(),
        ..settings
    }
}

/// GitHub's own example `pull_request` delivery (`@octokit/webhooks-examples`), pointed at the
/// served repository: its base branch and head commit set, signed with the test secret.
fn github_pull_request(
    fixture: &[u8],
    remote: &Remote,
    base: &str,
    head: &str,
    delivery: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let mut value: serde_json::Value = serde_json::from_slice(fixture).unwrap();
    let url = remote.url();
    for field in ["clone_url", "html_url", "git_url", "ssh_url"] {
        value["repository"][field] = url.clone().into();
    }
    value["pull_request"]["base"]["ref"] = base.into();
    value["pull_request"]["head"]["sha"] = head.into();
    let body = serde_json::to_vec(&value).unwrap();
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let headers = [
        ("Content-Type", "application/json"),
        ("X-GitHub-Event", "pull_request"),
        ("X-GitHub-Delivery", delivery),
        ("X-Hub-Signature-256", signature.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (headers, body)
}

const OPENED: &[u8] =
    include_bytes!("../../shared/src/webhook/fixtures/github-pull-request-opened.json");

#[tokio::test]
async fn a_signed_pull_request_into_a_previewing_target_queues_one_preview_for_its_head() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache)),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    remote.push_plugin("git-scm", "1.0.0");
    let head = remote.push_pull_request(2, &[("README.md", "proposed\n")]);
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &head, "pr-1");

    let reply = workflow::accept_webhook(&services, &headers, &body).await;

    let WebhookOutcome::Accepted { targets, .. } = &reply else {
        panic!("{reply:?}");
    };
    assert_eq!(targets, &[TARGET.to_string()]);
    let request = receivers.plans.try_recv().unwrap();
    assert!(receivers.plans.try_recv().is_err(), "more than one request");
    let pull = request.pull_request.as_deref().expect("a preview request");
    assert_eq!(pull.number, 2);
    assert_eq!(pull.head_commit, head);
    assert_eq!(pull.head_ref, "refs/pull/2/head");
    assert_eq!(pull.provider, "github");
    // The target's own repository, from its URL: not the payload's `Codertocat/Hello-World`.
    assert_eq!(pull.repository, "acme/config");
    let outcome = workflow::handle_plan_request(&services, &request)
        .await
        .unwrap();
    assert!(
        matches!(outcome, PlanRequestOutcome::Previewed { .. }),
        "{outcome:?}"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM sync_runs").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM resources").await, 0);
    assert!(receivers.applies.try_recv().is_err(), "an apply was queued");
}

#[tokio::test]
async fn a_pull_request_into_a_branch_no_target_follows_is_ignored() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache)),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    let head = remote.push_plugin("git-scm", "1.0.0");
    let (headers, body) = github_pull_request(OPENED, &remote, "release", &head, "pr-2");

    let reply = workflow::accept_webhook(&services, &headers, &body).await;

    let WebhookOutcome::Ignored { reason } = &reply else {
        panic!("{reply:?}");
    };
    assert_eq!(
        reason,
        "pull request #2 into `release`: no target follows that branch of this repository"
    );
    assert!(receivers.plans.try_recv().is_err());
}

#[tokio::test]
async fn a_pull_request_into_a_target_without_previews_is_ignored_with_what_to_set() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(
        settings(&db, &remote, &cache),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    let head = remote.push_plugin("git-scm", "1.0.0");
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &head, "pr-3");

    let reply = workflow::accept_webhook(&services, &headers, &body).await;

    let WebhookOutcome::Ignored { reason } = &reply else {
        panic!("{reply:?}");
    };
    assert!(
        reason.contains("set `preview.enabled` on `default`"),
        "{reason}"
    );
    assert!(receivers.plans.try_recv().is_err());
}

#[tokio::test]
async fn a_fork_pull_request_is_planned_from_its_head_fetched_by_its_pull_request_ref() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache)),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    remote.push_plugin("git-scm", "1.0.0");
    // The fork's commit is on no branch of the served repository: only its pull ref has it.
    let head = remote.push_pull_request(
        2,
        &[(
            "plugins/fork-only.yaml",
            "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: fork-only\nspec:\n  \
             type: scm\n  binary_path: /opt/ritmo/plugins/fork-only\n  version: 1.0.0\n  \
             enabled: true\n",
        )],
    );
    let mut fixture: serde_json::Value = serde_json::from_slice(OPENED).unwrap();
    fixture["pull_request"]["head"]["repo"]["full_name"] = "someone/Hello-World".into();
    fixture["pull_request"]["head"]["repo"]["id"] = 999_999.into();
    let fixture = serde_json::to_vec(&fixture).unwrap();
    let (headers, body) = github_pull_request(&fixture, &remote, "main", &head, "pr-fork");

    let reply = workflow::accept_webhook(&services, &headers, &body).await;

    assert!(
        matches!(reply, WebhookOutcome::Accepted { .. }),
        "{reply:?}"
    );
    let request = receivers.plans.try_recv().unwrap();
    let pull = request.pull_request.as_deref().unwrap();
    assert!(pull.from_fork, "{pull:?}");
    let outcome = workflow::handle_plan_request(&services, &request)
        .await
        .unwrap();
    let PlanRequestOutcome::Previewed { detail, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    let plan = detail.plan.as_ref().unwrap();
    assert_eq!(plan.revision.commit(), Some(head.as_str()));
    assert!(
        plan.actions
            .iter()
            .any(|action| format!("{action:?}").contains("fork-only")),
        "{:?}",
        plan.actions
    );
    assert_eq!(count(&db, "SELECT count(*) FROM sync_runs").await, 0);
    assert!(receivers.applies.try_recv().is_err(), "an apply was queued");
}
