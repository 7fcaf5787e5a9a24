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
use ritmo_tests::forge::{FakeForge, INSTALLATION_TOKEN};
use ritmo_tests::git_http::ServedRepo as Remote;
use secrecy::SecretString;

const TARGET: &str = "default";
const SECRET: &str = "preview-test-secret";
const PREVIEW_TOKEN: &str = "preview-token";

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
    workflow::request_sync(&services, &workflow::ManualSync::of(TARGET))
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

/// Settings whose target previews pull requests, posting with a token to `forge`.
fn previewing(settings: Settings, forge: &FakeForge) -> Settings {
    let preview = PreviewSettings {
        enabled: true,
        credential: Some(PreviewCredential::Token(SecretSetting::Value(
            SecretString::from(PREVIEW_TOKEN),
        ))),
        api_url: Some(forge.url.clone()),
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
    let forge = FakeForge::start("/api/v3").await;
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache), &forge),
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
    let forge = FakeForge::start("/api/v3").await;
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache), &forge),
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
    let forge = FakeForge::start("/api/v3").await;
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache), &forge),
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

const SYNCHRONIZE: &[u8] =
    include_bytes!("../../shared/src/webhook/fixtures/github-pull-request-synchronize.json");

/// Accepts one signed delivery and runs the plan request it queued, as the planner would.
async fn deliver(
    services: &Services,
    receivers: &mut ritmo::queue::LocalReceivers,
    headers: &[(String, String)],
    body: &[u8],
) -> PlanRequestOutcome {
    let reply = workflow::accept_webhook(services, headers, body).await;
    assert!(
        matches!(reply, WebhookOutcome::Accepted { .. }),
        "{reply:?}"
    );
    let request = receivers
        .plans
        .try_recv()
        .unwrap_or_else(|_| panic!("nothing queued: {reply:?}"));
    assert!(request.is_preview());
    workflow::handle_plan_request(services, &request)
        .await
        .unwrap()
}

fn plugin(name: &str, version: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: {name}\nspec:\n  type: scm\n  \
         binary_path: /opt/ritmo/plugins/{name}\n  version: {version}\n  enabled: true\n"
    )
}

#[tokio::test]
async fn github_gets_one_status_and_one_comment_which_the_next_push_edits() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let forge = FakeForge::start("/api/v3").await;
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache), &forge),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    let sync = receivers.plans.try_recv().unwrap();
    workflow::handle_plan_request(&services, &sync)
        .await
        .unwrap();
    let apply = receivers.applies.try_recv().unwrap();
    workflow::handle_apply_request(&services, &apply)
        .await
        .unwrap();
    let rows = "SELECT count(*) || ':' || string_agg(spec::text, ',') FROM resources";
    let live: String = db.client().await.query_one(rows, &[]).await.unwrap().get(0);
    let first =
        remote.push_pull_request(2, &[("plugins/git-scm.yaml", &plugin("git-scm", "2.0.0"))]);
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &first, "pr-open");

    deliver(&services, &mut receivers, &headers, &body).await;

    let writes = forge.writes();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(writes[0].method, "POST");
    assert_eq!(
        writes[0].path,
        format!("/api/v3/repos/acme/config/statuses/{first}")
    );
    assert_eq!(writes[0].json()["state"], "success");
    assert_eq!(writes[0].json()["context"], "ritmo-gitops/default");
    assert_eq!(writes[1].method, "POST");
    assert_eq!(
        writes[1].path,
        "/api/v3/repos/acme/config/issues/2/comments"
    );
    let comment = writes[1].json()["body"].as_str().unwrap().to_string();
    assert!(comment.contains(&first[..12]), "{comment}");
    assert!(
        comment.contains("~ spec.version: \"1.0.0\" → \"2.0.0\""),
        "{comment}"
    );
    assert!(
        forge
            .requests()
            .iter()
            .all(|r| r.credential == format!("Bearer {PREVIEW_TOKEN}"))
    );

    let second =
        remote.push_pull_request(2, &[("plugins/git-scm.yaml", &plugin("git-scm", "3.0.0"))]);
    let (headers, body) = github_pull_request(SYNCHRONIZE, &remote, "main", &second, "pr-sync");
    deliver(&services, &mut receivers, &headers, &body).await;

    let writes = forge.writes();
    assert_eq!(writes.len(), 4, "{writes:#?}");
    assert_eq!(
        writes[2].path,
        format!("/api/v3/repos/acme/config/statuses/{second}")
    );
    assert_eq!(writes[3].method, "PATCH");
    assert_eq!(
        writes[3].path,
        "/api/v3/repos/acme/config/issues/comments/1000"
    );
    let comments = forge.comments();
    assert_eq!(comments.len(), 1, "one comment, edited in place");
    assert!(comments[0].1.contains("\"3.0.0\""), "{}", comments[0].1);
    // A preview writes nothing and never applies.
    let after: String = db.client().await.query_one(rows, &[]).await.unwrap().get(0);
    assert_eq!(after, live);
    assert_eq!(count(&db, "SELECT count(*) FROM sync_runs").await, 1);
    assert!(receivers.applies.try_recv().is_err(), "an apply was queued");
}

/// A previewing target that reads its repository and posts its previews as a GitHub App
/// installed through a fake GitHub. A test binds every field, `_db` and `_cache` too, so the
/// database and the fetch cache live as long as it does.
struct AppStack {
    remote: Remote,
    forge: FakeForge,
    services: Services,
    receivers: ritmo::queue::LocalReceivers,
    _db: TestDb,
    _cache: tempfile::TempDir,
}

impl AppStack {
    async fn new() -> AppStack {
        let db = TestDb::new().await;
        let remote = Remote::new();
        let cache = tempfile::tempdir().unwrap();
        let (queues, receivers) = Queues::local();
        let forge = FakeForge::start("/api/v3").await;
        let settings = as_github_app(previewing(settings(&db, &remote, &cache), &forge), &forge);
        let services = Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap();
        AppStack {
            remote,
            forge,
            services,
            receivers,
            _db: db,
            _cache: cache,
        }
    }
}

#[tokio::test]
async fn with_a_github_app_an_invalid_file_fails_the_check_run_with_an_annotation_at_its_line() {
    let AppStack {
        remote,
        forge,
        services,
        mut receivers,
        _db,
        _cache,
    } = AppStack::new().await;
    let bad = "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: bad\nspec:\n  type: scm\n  \
               binary_path: /opt/ritmo/plugins/bad\n  version: 1.0.0\n  colour: red\n";
    let head = remote.push_pull_request(2, &[("plugins/bad.yaml", bad)]);
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &head, "pr-bad");

    deliver(&services, &mut receivers, &headers, &body).await;

    let writes: Vec<_> = forge
        .writes()
        .into_iter()
        .filter(|r| !r.path.ends_with("/access_tokens"))
        .collect();
    assert_eq!(writes.len(), 2, "{writes:#?}");
    assert_eq!(writes[0].path, "/api/v3/repos/acme/config/check-runs");
    let check = writes[0].json();
    assert_eq!(check["head_sha"], head.as_str());
    assert_eq!(check["conclusion"], "failure");
    let annotations = check["output"]["annotations"].as_array().unwrap();
    assert!(
        annotations.iter().any(|a| a["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("plugins/bad.yaml"))
            && a["start_line"] == 9
            && a["annotation_level"] == "failure"),
        "{annotations:#?}"
    );
    assert_eq!(writes[0].credential, format!("Bearer {INSTALLATION_TOKEN}"));
    assert_eq!(
        writes[1].path,
        "/api/v3/repos/acme/config/issues/2/comments"
    );
    assert!(!forge.writes().iter().any(|r| r.path.contains("/statuses/")));
}

#[tokio::test]
async fn gitlab_and_gitea_get_one_status_and_one_note() {
    for (provider, prefix) in [("gitlab", "/api/v4"), ("gitea", "/api/v1")] {
        let db = TestDb::new().await;
        let remote = Remote::new();
        let cache = tempfile::tempdir().unwrap();
        let (queues, mut receivers) = Queues::local();
        let forge = FakeForge::start(prefix).await;
        let services = Services::connect(
            previewing(settings(&db, &remote, &cache), &forge),
            queues,
            MetricsSink::capture(),
        )
        .await
        .unwrap();
        let head = remote.push_plugin("git-scm", "1.0.0");
        let (headers, body) = match provider {
            "gitlab" => gitlab_merge_request(&remote, &head),
            _ => gitea_pull_request(&remote, &head),
        };

        deliver(&services, &mut receivers, &headers, &body).await;
        let next = remote.push_plugin("git-scm", "2.0.0");
        let (_, body) = match provider {
            "gitlab" => gitlab_merge_request(&remote, &next),
            _ => gitea_pull_request(&remote, &next),
        };
        // Gitea signs each body: sign the new one, under a new delivery id.
        let headers = match provider {
            "gitlab" => redelivered(&headers, provider),
            _ => redelivered(&gitea_pull_request(&remote, &next).0, provider),
        };
        deliver(&services, &mut receivers, &headers, &body).await;

        let writes = forge.writes();
        assert_eq!(writes.len(), 4, "{provider}: {writes:#?}");
        match provider {
            "gitlab" => {
                assert_eq!(
                    writes[0].path,
                    format!("/api/v4/projects/acme%2Fconfig/statuses/{head}")
                );
                assert_eq!(writes[0].json()["state"], "success");
                assert_eq!(
                    writes[1].path,
                    "/api/v4/projects/acme%2Fconfig/merge_requests/1/notes"
                );
                assert_eq!(writes[3].method, "PUT");
                assert_eq!(
                    writes[3].path,
                    "/api/v4/projects/acme%2Fconfig/merge_requests/1/notes/1000"
                );
                assert_eq!(writes[0].credential, PREVIEW_TOKEN);
            }
            _ => {
                assert_eq!(
                    writes[0].path,
                    format!("/api/v1/repos/acme/config/statuses/{head}")
                );
                assert_eq!(
                    writes[1].path,
                    "/api/v1/repos/acme/config/issues/12/comments"
                );
                assert_eq!(writes[3].method, "PATCH");
                assert_eq!(
                    writes[3].path,
                    "/api/v1/repos/acme/config/issues/comments/1000"
                );
                assert_eq!(writes[0].credential, format!("token {PREVIEW_TOKEN}"));
            }
        }
        assert_eq!(forge.comments().len(), 1, "{provider}");
        assert!(
            forge.comments()[0].1.contains(&next[..12]),
            "{provider}: the note shows the latest push: {}",
            forge.comments()[0].1
        );
        assert!(
            forge.comments()[0].1.contains("+ plugin/git-scm"),
            "{}",
            forge.comments()[0].1
        );
        assert!(receivers.applies.try_recv().is_err());
    }
}

#[tokio::test]
async fn a_secret_in_a_pull_request_is_never_posted() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let forge = FakeForge::start("/api/v3").await;
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache), &forge),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    let token = "ghp_Zq8xW3vN7kP2mR5tY9bC4dF6gH1jL0aS3eU7";
    let leaky = format!(
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: leaky\nspec:\n  type: scm\n  \
         binary_path: /opt/{token}\n  version: 1.0.0\n  enabled: true\n"
    );
    let head = remote.push_pull_request(2, &[("plugins/leaky.yaml", leaky.as_str())]);
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &head, "pr-leak");

    deliver(&services, &mut receivers, &headers, &body).await;

    let requests = forge.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/issues/2/comments") && r.method == "POST")
    );
    for request in requests {
        assert!(
            !request.body.contains(token),
            "posted a secret: {request:?}"
        );
        assert!(
            !request.body.contains(&token[4..20]),
            "posted part of a secret"
        );
    }
}

/// A GitLab `Merge Request Hook` (GitLab's documented example, kept verbatim in the fixture),
/// for the served repository.
fn gitlab_merge_request(remote: &Remote, head: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let mut value: serde_json::Value = serde_json::from_slice(include_bytes!(
        "../../shared/src/webhook/fixtures/gitlab-merge-request.json"
    ))
    .unwrap();
    for field in ["git_http_url", "git_ssh_url", "web_url"] {
        value["project"][field] = remote.url().into();
    }
    value["object_attributes"]["target_branch"] = "main".into();
    value["object_attributes"]["last_commit"]["id"] = head.into();
    let body = serde_json::to_vec(&value).unwrap();
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Gitlab-Event", "Merge Request Hook"),
        ("X-Gitlab-Token", SECRET),
        ("X-Gitlab-Event-UUID", "mr-1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (headers, body)
}

/// A Gitea `pull_request` delivery (Gitea's own test payload, see
/// shared/src/webhook/fixtures/README.md), for the served repository. That payload has no
/// `base` and `head`: they are set here, under Gitea's field names.
fn gitea_pull_request(remote: &Remote, head: &str) -> (Vec<(String, String)>, Vec<u8>) {
    let mut value: serde_json::Value = serde_json::from_slice(include_bytes!(
        "../../shared/src/webhook/fixtures/gitea-pull-request.json"
    ))
    .unwrap();
    for field in ["clone_url", "html_url", "ssh_url"] {
        value["repository"][field] = remote.url().into();
    }
    value["pull_request"]["base"] = serde_json::json!({
        "ref": "main",
        "repo": {"full_name": value["repository"]["full_name"].clone()},
    });
    value["pull_request"]["head"] = serde_json::json!({
        "ref": "fix",
        "sha": head,
        "repo": {"full_name": "user1/repo"},
    });
    let body = serde_json::to_vec(&value).unwrap();
    let signature = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&body);
        hex::encode(mac.finalize().into_bytes())
    };
    let headers = [
        ("Content-Type", "application/json"),
        ("X-Gitea-Event", "pull_request"),
        ("X-Gitea-Delivery", "gitea-1"),
        ("X-Gitea-Signature", signature.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    (headers, body)
}

/// The same body again under a new delivery id, as a later push's delivery.
fn redelivered(headers: &[(String, String)], provider: &str) -> Vec<(String, String)> {
    let id = match provider {
        "gitlab" => "X-Gitlab-Event-UUID",
        _ => "X-Gitea-Delivery",
    };
    headers
        .iter()
        .map(|(k, v)| {
            if k == id {
                (k.clone(), format!("{v}-again"))
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// A fresh RSA private key as PKCS#8 PEM, for a GitHub App.
fn rsa_private_key() -> String {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use base64::Engine;

    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private: Pkcs8V1Der = key.as_der().unwrap();
    let text = base64::engine::general_purpose::STANDARD.encode(private.as_ref());
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|chunk| std::str::from_utf8(chunk).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn a_preview_message_naming_another_repository_posts_nothing() {
    let db = TestDb::new().await;
    let remote = Remote::new();
    let cache = tempfile::tempdir().unwrap();
    let (queues, mut receivers) = Queues::local();
    let forge = FakeForge::start("/api/v3").await;
    let services = Services::connect(
        previewing(settings(&db, &remote, &cache), &forge),
        queues,
        MetricsSink::capture(),
    )
    .await
    .unwrap();
    let head = remote.push_plugin("git-scm", "1.0.0");
    // A message the webhook never sent (forged, or replayed from elsewhere).
    let request = PlanRequest::new(TARGET, Trigger::Webhook, chrono::Utc::now()).with_pull_request(
        "main",
        PullRequestPreview {
            provider: "github".into(),
            repository: "someone/else".into(),
            number: 2,
            head_commit: head,
            head_ref: "refs/pull/2/head".into(),
            from_fork: true,
        },
    );

    let error = workflow::handle_plan_request(&services, &request)
        .await
        .unwrap_err();

    assert!(error.to_string().contains("someone/else"), "{error}");
    assert!(!error.is_retryable());
    assert!(forge.requests().is_empty(), "{:#?}", forge.requests());
    assert!(receivers.applies.try_recv().is_err());
}

#[tokio::test]
async fn a_preview_comment_past_the_first_page_of_comments_is_edited_in_place() {
    for (provider, prefix) in [
        ("github", "/api/v3"),
        ("gitlab", "/api/v4"),
        ("gitea", "/api/v1"),
    ] {
        let db = TestDb::new().await;
        let remote = Remote::new();
        let cache = tempfile::tempdir().unwrap();
        let (queues, mut receivers) = Queues::local();
        let forge = FakeForge::start(prefix).await;
        let services = Services::connect(
            previewing(settings(&db, &remote, &cache), &forge),
            queues,
            MetricsSink::capture(),
        )
        .await
        .unwrap();
        let delivery = |head: &str, again: bool| match provider {
            "github" => {
                let fixture = if again { SYNCHRONIZE } else { OPENED };
                let id = if again { "pr-page-2" } else { "pr-page-1" };
                github_pull_request(fixture, &remote, "main", head, id)
            }
            "gitlab" => {
                let (headers, body) = gitlab_merge_request(&remote, head);
                let headers = if again {
                    redelivered(&headers, provider)
                } else {
                    headers
                };
                (headers, body)
            }
            _ => {
                let (headers, body) = gitea_pull_request(&remote, head);
                let headers = if again {
                    redelivered(&headers, provider)
                } else {
                    headers
                };
                (headers, body)
            }
        };
        // The preview's comment lands after 120 others (page 2 of 100, page 3 of Gitea's 50)
        // and 30 more follow it.
        forge.add_comments((0..120).map(|n| format!("looks good {n}")));
        let first = remote.push_plugin("git-scm", "1.0.0");
        let (headers, body) = delivery(&first, false);
        deliver(&services, &mut receivers, &headers, &body).await;
        let posted = forge.comments().len() - 1;
        assert_eq!(posted, 120, "{provider}");
        forge.add_comments((0..30).map(|n| format!("one more thing {n}")));

        let second = remote.push_plugin("git-scm", "2.0.0");
        let (headers, body) = delivery(&second, true);
        deliver(&services, &mut receivers, &headers, &body).await;

        let comments = forge.comments();
        assert_eq!(
            comments.len(),
            151,
            "{provider}: a second comment was posted"
        );
        assert!(
            comments[posted].1.contains(&second[..12]),
            "{provider}: the comment on page 2 shows the latest push: {}",
            comments[posted].1
        );
        let last = forge.writes().pop().unwrap();
        assert!(
            matches!(last.method.as_str(), "PATCH" | "PUT"),
            "{provider}: {last:?}"
        );
        assert!(
            last.path.ends_with(&format!("/{}", comments[posted].0)),
            "{provider}: {last:?}"
        );
        let listed = forge
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET")
            .count();
        // The first preview reads every page, the second stops at the marker's.
        let pages = if provider == "gitea" { (3, 3) } else { (2, 2) };
        assert_eq!(listed, pages.0 + pages.1, "{provider}");
    }
}

/// `settings` whose target reads its repository and posts its previews as a GitHub App
/// installed through `forge`.
fn as_github_app(mut settings: Settings, forge: &FakeForge) -> Settings {
    settings.targets[0].auth = GitAuth::GitHubApp {
        app_id: 42,
        installation_id: 7,
        private_key: SecretSetting::Value(SecretString::from(rsa_private_key())),
        api_url: forge.url.clone(),
    };
    if let Some(preview) = settings.previews.get_mut(TARGET) {
        preview.credential = Some(PreviewCredential::GitHubApp);
    }
    settings
}

#[tokio::test]
async fn a_github_apps_installation_token_is_minted_once_for_every_preview_while_it_is_fresh() {
    let AppStack {
        remote,
        forge,
        services,
        mut receivers,
        _db,
        _cache,
    } = AppStack::new().await;
    let first = remote.push_plugin("git-scm", "1.0.0");
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &first, "pr-app-1");
    deliver(&services, &mut receivers, &headers, &body).await;
    let second = remote.push_plugin("git-scm", "2.0.0");
    let (headers, body) = github_pull_request(SYNCHRONIZE, &remote, "main", &second, "pr-app-2");

    deliver(&services, &mut receivers, &headers, &body).await;

    assert_eq!(forge.tokens_minted(), 1, "{:#?}", forge.requests());
    let posted: Vec<_> = forge
        .requests()
        .into_iter()
        .filter(|r| !r.path.ends_with("/access_tokens"))
        .collect();
    let paths: Vec<&str> = posted
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v3/repos/acme/config/check-runs",
            "/api/v3/repos/acme/config/issues/2/comments",
            "/api/v3/repos/acme/config/check-runs",
            "/api/v3/repos/acme/config/issues/comments/1000",
        ]
    );
    assert!(
        posted
            .iter()
            .all(|r| r.credential == format!("Bearer {INSTALLATION_TOKEN}")),
        "{posted:#?}"
    );
}

#[tokio::test]
async fn an_installation_token_about_to_expire_is_minted_again_before_the_next_preview() {
    let AppStack {
        remote,
        forge,
        services,
        mut receivers,
        _db,
        _cache,
    } = AppStack::new().await;
    // Less than the five minutes a token must have left to be used again.
    forge.tokens_expire_in(chrono::Duration::minutes(4));
    let check_runs = || -> Vec<String> {
        forge
            .requests()
            .into_iter()
            .filter(|r| r.path.ends_with("/check-runs"))
            .map(|r| r.credential)
            .collect()
    };
    let first = remote.push_plugin("git-scm", "1.0.0");
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &first, "pr-exp-1");
    deliver(&services, &mut receivers, &headers, &body).await;
    let minted = forge.tokens_minted();
    let second = remote.push_plugin("git-scm", "2.0.0");
    let (headers, body) = github_pull_request(SYNCHRONIZE, &remote, "main", &second, "pr-exp-2");

    deliver(&services, &mut receivers, &headers, &body).await;

    assert!(forge.tokens_minted() > minted, "{:#?}", forge.requests());
    let used = check_runs();
    assert_eq!(used.len(), 2);
    assert_ne!(used[0], used[1], "a token about to expire was used again");
}

#[tokio::test]
async fn a_revoked_installation_token_is_minted_again_and_the_preview_still_posted() {
    let AppStack {
        remote,
        forge,
        services,
        mut receivers,
        _db,
        _cache,
    } = AppStack::new().await;
    let first = remote.push_plugin("git-scm", "1.0.0");
    let (headers, body) = github_pull_request(OPENED, &remote, "main", &first, "pr-rev-1");
    deliver(&services, &mut receivers, &headers, &body).await;
    forge.revoke_tokens();
    let second = remote.push_plugin("git-scm", "2.0.0");
    let (headers, body) = github_pull_request(SYNCHRONIZE, &remote, "main", &second, "pr-rev-2");

    deliver(&services, &mut receivers, &headers, &body).await;

    assert_eq!(forge.tokens_minted(), 2, "{:#?}", forge.requests());
    let check_runs: Vec<String> = forge
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/check-runs"))
        .map(|r| r.credential)
        .collect();
    assert_eq!(
        check_runs,
        [
            format!("Bearer {INSTALLATION_TOKEN}"),
            format!("Bearer {INSTALLATION_TOKEN}"),
            format!("Bearer {INSTALLATION_TOKEN}-2"),
        ],
        "the revoked token is refused once, then a new one posts"
    );
    let comments = forge.comments();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(comments[0].1.contains(&second[..7]), "{}", comments[0].1);
}
