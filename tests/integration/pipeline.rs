//! The serverless pipeline end to end on the local stack: real PostgreSQL, moto SQS FIFO
//! queues (with DLQs and redrive), and a config repository served over smart HTTP. The
//! functions are exercised through `ritmo::workflow`, exactly what the Lambda handlers call.

use std::collections::BTreeSet;
use std::time::Duration;

use hmac::{Hmac, Mac};
use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::message::{ApplyRequest, PlanRequest};
use ritmo::metrics::MetricsSink;
use ritmo::plan::PlanPolicy;
use ritmo::queue::consume::{self, Consumer, Disposition, Handled};
use ritmo::queue::workers::{run_local_workers, run_sqs_workers};
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::store::RunStatus;
use ritmo::workflow::{
    self, ApplyQueue, ApplyRequestOutcome, ApproveOutcome, PlanQueue, PlanRequestOutcome,
    SkipReason, WebhookOutcome,
};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo as Remote;
use ritmo_tests::moto::Moto;
use secrecy::SecretString;
use serde_json::json;

const SECRET: &str = "pipeline-test-secret";
const TARGET: &str = "default";

fn github_headers(event: &str, delivery: &str, body: &[u8], secret: &str) -> Vec<(String, String)> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    [
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
        ("Content-Type", "application/json"),
        ("X-Hub-Signature-256", signature.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn settings(db: &TestDb, remote: &Remote, cache: &tempfile::TempDir, auto_apply: bool) -> Settings {
    Settings {
        enabled: true,
        targets: vec![TargetSettings {
            name: TARGET.into(),
            repo_url: remote.url(),
            branch: "main".into(),
            path: String::new(),
            interval_secs: 60,
            auto_apply,
            dry_run: false,
            self_heal: false,
            controls: Default::default(),
            policy: PlanPolicy::default(),
            auth: GitAuth::None,
        }],
        builtin_plugins: BTreeSet::new(),
        database_url: Some(SecretString::from(db.url.clone())),
        webhook_secret: Some(SecretString::from(SECRET)),
        webhook_path: "/webhooks/gitops".into(),
        cache_dir: cache.path().to_path_buf(),
        ..Settings::default()
    }
}

/// The plan and apply FIFO queues, each with a DLQ after five receives, and a client.
async fn fifo_queues(moto: &Moto, visibility_secs: u32) -> (aws_sdk_sqs::Client, String, String) {
    let (plan, _) = moto
        .fifo_queue_with_dlq("ritmo-plan", visibility_secs, 5)
        .await;
    let (apply, _) = moto
        .fifo_queue_with_dlq("ritmo-apply", visibility_secs, 5)
        .await;
    (
        aws_sdk_sqs::Client::new(&moto.sdk_config().await),
        plan,
        apply,
    )
}

/// The local stack with SQS queues on moto.
struct SqsStack {
    services: Services,
    client: aws_sdk_sqs::Client,
    plan_url: String,
    apply_url: String,
    remote: Remote,
    db: TestDb,
    _moto: Moto,
    _cache: tempfile::TempDir,
}

impl SqsStack {
    async fn start(visibility_secs: u32) -> SqsStack {
        let moto = Moto::start();
        let db = TestDb::new().await;
        let remote = Remote::new();
        let cache = tempfile::tempdir().unwrap();
        let (client, plan_url, apply_url) = fifo_queues(&moto, visibility_secs).await;
        let services = Services::connect(
            settings(&db, &remote, &cache, true),
            Queues::sqs(client.clone(), plan_url.clone(), apply_url.clone()),
            MetricsSink::capture(),
        )
        .await
        .unwrap();
        SqsStack {
            services,
            client,
            plan_url,
            apply_url,
            remote,
            db,
            _moto: moto,
            _cache: cache,
        }
    }

    /// One receive-and-handle round on queue `C` (waiting up to a second for messages).
    async fn round<C: Consumer<Context = Services>>(&self) -> Vec<Handled> {
        let (_, url) = C::sqs_queue(&self.services).expect("an SQS stack has SQS queues");
        consume::receive_and_handle::<C>(&self.services, &self.client, url, Duration::from_secs(1))
            .await
            .unwrap()
    }

    /// Receives from both queues until a round finds them both empty.
    async fn drain(&self) -> Vec<Handled> {
        let mut all = Vec::new();
        loop {
            let plans = self.round::<PlanQueue>().await;
            let applies = self.round::<ApplyQueue>().await;
            if plans.is_empty() && applies.is_empty() {
                return all;
            }
            all.extend(plans);
            all.extend(applies);
        }
    }
}

/// The local stack with in-process queues.
struct LocalStack {
    services: Services,
    receivers: LocalReceivers,
    remote: Remote,
    _db: TestDb,
    _cache: tempfile::TempDir,
}

impl LocalStack {
    async fn start(auto_apply: bool) -> LocalStack {
        let db = TestDb::new().await;
        let remote = Remote::new();
        let cache = tempfile::tempdir().unwrap();
        let (queues, receivers) = Queues::local();
        let services = Services::connect(
            settings(&db, &remote, &cache, auto_apply),
            queues,
            MetricsSink::capture(),
        )
        .await
        .unwrap();
        LocalStack {
            services,
            receivers,
            remote,
            _db: db,
            _cache: cache,
        }
    }

    fn next_plan(&mut self) -> Option<PlanRequest> {
        self.receivers.plans.try_recv().ok()
    }

    fn next_apply(&mut self) -> Option<ApplyRequest> {
        self.receivers.applies.try_recv().ok()
    }

    async fn plan(&mut self) -> PlanRequestOutcome {
        let request = self.next_plan().expect("a queued plan request");
        workflow::handle_plan_request(&self.services, &request)
            .await
            .unwrap()
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

fn done(handled: &[Handled]) -> usize {
    handled
        .iter()
        .filter(|h| h.disposition == Disposition::Done)
        .count()
}

#[tokio::test]
async fn a_pushed_commit_is_planned_and_committed_through_the_queues() {
    let stack = SqsStack::start(30).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    let body = push_body(&stack.remote, &"0".repeat(40), &commit);

    let reply = workflow::accept_webhook(
        &stack.services,
        &github_headers("push", "delivery-1", &body, SECRET),
        &body,
    )
    .await;
    let handled = stack.drain().await;

    assert!(
        matches!(&reply, WebhookOutcome::Accepted { targets, .. } if targets == &[TARGET]),
        "{reply:?}"
    );
    assert_eq!(done(&handled), 2, "{handled:?}");
    let store = stack.services.store.lock().await;
    let rows = store
        .resources(Some(ritmo::model::Kind::Plugin), Some("git-scm"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].commit.as_deref(), Some(commit.as_str()));
    assert_eq!(rows[0].spec["version"], "1.0.0");
    let target = store.target(TARGET).await.unwrap().unwrap();
    assert_eq!(target.last_applied_commit.as_deref(), Some(commit.as_str()));
    let runs = store.runs(Some(TARGET), 10, None).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    assert_eq!(runs[0].actor.as_deref(), Some("octocat"));
}

#[tokio::test]
async fn a_webhook_delivered_three_times_and_a_poller_tick_apply_once() {
    let stack = SqsStack::start(30).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    let body = push_body(&stack.remote, &"0".repeat(40), &commit);
    let headers = github_headers("push", "delivery-1", &body, SECRET);

    let mut replies = Vec::new();
    for _ in 0..3 {
        replies.push(workflow::accept_webhook(&stack.services, &headers, &body).await);
    }
    let poll = workflow::poll_targets(&stack.services).await.unwrap();
    let handled = stack.drain().await;

    let outcomes: Vec<&str> = replies.iter().map(WebhookOutcome::code).collect();
    assert_eq!(outcomes, ["accepted", "duplicate", "duplicate"]);
    assert_eq!(poll.enqueued, 1, "{poll:?}");
    assert_eq!(done(&handled), handled.len(), "{handled:?}");
    assert_eq!(
        count(
            &stack.db,
            "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&stack.db, "SELECT count(DISTINCT sync_id) FROM revisions").await,
        1
    );
    assert_eq!(count(&stack.db, "SELECT count(*) FROM revisions").await, 1);
}

#[tokio::test]
async fn an_apply_message_taken_by_a_crashed_applier_is_redelivered_and_applied_once() {
    let stack = SqsStack::start(2).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    let body = push_body(&stack.remote, &"0".repeat(40), &commit);
    workflow::accept_webhook(
        &stack.services,
        &github_headers("push", "delivery-1", &body, SECRET),
        &body,
    )
    .await;
    let planned = stack.round::<PlanQueue>().await;
    assert_eq!(done(&planned), 1, "{planned:?}");

    // An applier that received the message and died before handling or deleting it.
    let taken = stack
        .client
        .receive_message()
        .queue_url(&stack.apply_url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert_eq!(taken.messages().len(), 1);
    let while_invisible = stack.round::<ApplyQueue>().await;
    let mut redelivered = Vec::new();
    for _ in 0..30 {
        redelivered = stack.round::<ApplyQueue>().await;
        if !redelivered.is_empty() {
            break;
        }
    }
    let again = stack.drain().await;

    assert!(while_invisible.is_empty(), "{while_invisible:?}");
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].disposition, Disposition::Done);
    assert!(redelivered[0].message.receive_count >= 2);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        count(
            &stack.db,
            "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'"
        )
        .await,
        1
    );
    assert_eq!(count(&stack.db, "SELECT count(*) FROM revisions").await, 1);
    let store = stack.services.store.lock().await;
    let target = store.target(TARGET).await.unwrap().unwrap();
    assert_eq!(target.generation, 1);
}

#[tokio::test]
async fn handling_an_apply_request_twice_applies_it_once() {
    let mut stack = LocalStack::start(true).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let apply = stack.next_apply().unwrap();

    let first = workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();
    let second = workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();

    assert!(
        matches!(first, ApplyRequestOutcome::Applied { .. }),
        "{first:?}"
    );
    assert_eq!(
        second,
        ApplyRequestOutcome::AlreadyFinished {
            sync_id: apply.sync_id,
            status: RunStatus::Succeeded
        }
    );
}

#[tokio::test]
async fn a_stale_plan_is_superseded_and_a_fresh_plan_is_requested() {
    let mut stack = LocalStack::start(true).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let first_apply = stack.next_apply().unwrap();
    // Another sync gets to the target first.
    stack.remote.push_plugin("git-scm", "2.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let second_apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &second_apply)
        .await
        .unwrap();

    let outcome = workflow::handle_apply_request(&stack.services, &first_apply)
        .await
        .unwrap();

    let ApplyRequestOutcome::Superseded { replan, .. } = &outcome else {
        panic!("expected superseded, got {outcome:?}");
    };
    assert_eq!(stack.next_plan().as_ref(), Some(replan));
    let store = stack.services.store.lock().await;
    let run = store.run(first_apply.sync_id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Superseded);
    assert!(
        stack
            .services
            .metrics
            .lines()
            .iter()
            .any(|line| line.contains("\"PlanStale\""))
    );
}

#[tokio::test]
async fn a_stale_selective_plan_is_replanned_with_the_same_selection() {
    let mut stack = LocalStack::start(true).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    stack.remote.push_plugin("maven-build", "1.0.0");
    let selective = workflow::ManualSync {
        target: Some(TARGET.to_string()),
        only: Some(vec!["plugin/git-scm".to_string()]),
        ..workflow::ManualSync::default()
    };
    workflow::request_sync(&stack.services, &selective)
        .await
        .unwrap();
    stack.plan().await;
    let selective_apply = stack.next_apply().unwrap();
    // A plain sync gets to the target first.
    stack.remote.push_plugin("npm-build", "1.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let plain_apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &plain_apply)
        .await
        .unwrap();

    let outcome = workflow::handle_apply_request(&stack.services, &selective_apply)
        .await
        .unwrap();

    // Replanned whole, the superseded run would apply what the person left out.
    let ApplyRequestOutcome::Superseded { replan, .. } = &outcome else {
        panic!("expected superseded, got {outcome:?}");
    };
    assert_eq!(replan.only, Some(vec!["plugin/git-scm".to_string()]));
}

#[tokio::test]
async fn a_plan_waiting_for_approval_is_applied_once_approved_and_refused_once_stale() {
    let mut stack = LocalStack::start(false).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();

    let PlanRequestOutcome::Planned {
        sync_id, status, ..
    } = stack.plan().await
    else {
        panic!("expected a plan");
    };
    assert_eq!(status, RunStatus::PendingApproval);
    assert!(stack.next_apply().is_none());

    let approved = workflow::approve_plan(&stack.services, sync_id, "jane")
        .await
        .unwrap();
    let apply = stack.next_apply().unwrap();
    let applied = workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();
    assert!(
        matches!(approved, ApproveOutcome::Approved { .. }),
        "{approved:?}"
    );
    assert!(
        matches!(applied, ApplyRequestOutcome::Applied { .. }),
        "{applied:?}"
    );

    // Two plans wait; approving and applying one moves the target, so the other is stale.
    stack.remote.push_plugin("git-scm", "2.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    let PlanRequestOutcome::Planned { sync_id: older, .. } = stack.plan().await else {
        panic!("expected a plan");
    };
    stack.remote.push_plugin("git-scm", "3.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    let PlanRequestOutcome::Planned { sync_id: newer, .. } = stack.plan().await else {
        panic!("expected a plan");
    };
    workflow::approve_plan(&stack.services, newer, "jane")
        .await
        .unwrap();
    let apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();

    let refused = workflow::approve_plan(&stack.services, older, "jane")
        .await
        .unwrap();

    assert!(
        matches!(refused, ApproveOutcome::Stale { .. }),
        "{refused:?}"
    );
    assert!(stack.next_apply().is_none());
    let store = stack.services.store.lock().await;
    assert_eq!(
        store.run(older).await.unwrap().unwrap().status,
        RunStatus::Superseded
    );
    assert_eq!(
        store
            .run(sync_id)
            .await
            .unwrap()
            .unwrap()
            .approved_by
            .as_deref(),
        Some("jane")
    );
}

#[tokio::test]
async fn a_request_for_the_applied_commit_is_skipped_without_recording_a_run() {
    let mut stack = LocalStack::start(true).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();
    let webhook = PlanRequest::new(TARGET, ritmo::message::Trigger::Webhook, chrono::Utc::now())
        .with_revision(format!("main@sha1:{commit}"));

    let outcome = workflow::handle_plan_request(&stack.services, &webhook)
        .await
        .unwrap();

    assert_eq!(
        outcome,
        PlanRequestOutcome::Skipped {
            target: TARGET.into(),
            reason: SkipReason::AlreadyApplied { commit }
        }
    );
    let store = stack.services.store.lock().await;
    assert_eq!(store.runs(Some(TARGET), 10, None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_rollback_pins_the_target_until_it_is_resumed() {
    let mut stack = LocalStack::start(true).await;
    let first = stack.remote.push_plugin("git-scm", "1.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();
    let second = stack.remote.push_plugin("git-scm", "2.0.0");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();
    stack.plan().await;
    let apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();

    workflow::rollback(&stack.services, TARGET, &first, "jane")
        .await
        .unwrap();
    stack.plan().await;
    let apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();
    let webhook = PlanRequest::new(TARGET, ritmo::message::Trigger::Webhook, chrono::Utc::now())
        .with_revision(format!("main@sha1:{second}"));
    let while_pinned = workflow::handle_plan_request(&stack.services, &webhook)
        .await
        .unwrap();
    workflow::resume(&stack.services, TARGET, "test")
        .await
        .unwrap();
    stack.plan().await;
    let apply = stack.next_apply().unwrap();
    workflow::handle_apply_request(&stack.services, &apply)
        .await
        .unwrap();

    assert!(
        matches!(
            &while_pinned,
            PlanRequestOutcome::Skipped { reason: SkipReason::Pinned { pinned_commit }, .. }
                if *pinned_commit == first
        ),
        "{while_pinned:?}"
    );
    let store = stack.services.store.lock().await;
    let target = store.target(TARGET).await.unwrap().unwrap();
    assert_eq!(target.last_applied_commit.as_deref(), Some(second.as_str()));
    assert_eq!(target.pinned_commit, None);
    let triggers: Vec<String> = store
        .runs(Some(TARGET), 10, None)
        .await
        .unwrap()
        .iter()
        .map(|run| format!("{}:{}", run.trigger, run.commit.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        triggers,
        [
            format!("manual:{second}"),
            format!("rollback:{first}"),
            format!("manual:{second}"),
            format!("manual:{first}"),
        ]
    );
}

#[tokio::test]
async fn an_invalid_repository_records_a_failed_run_and_applies_nothing() {
    let mut stack = LocalStack::start(true).await;
    stack.remote.repo.write(
        "plugins/broken.yaml",
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: Broken\n",
    );
    stack.remote.push("broken");
    workflow::request_sync(&stack.services, &workflow::ManualSync::of(TARGET))
        .await
        .unwrap();

    let outcome = stack.plan().await;

    let PlanRequestOutcome::Failed { diagnostics, .. } = &outcome else {
        panic!("expected a failed run, got {outcome:?}");
    };
    assert!(!diagnostics.is_empty());
    assert!(stack.next_apply().is_none());
    assert!(
        stack
            .services
            .metrics
            .lines()
            .iter()
            .any(|line| line.contains("\"SyncFailed\""))
    );
}

#[tokio::test]
async fn webhooks_that_must_not_plan_are_refused_or_ignored() {
    let mut stack = LocalStack::start(true).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    let body = push_body(&stack.remote, &"0".repeat(40), &commit);
    let other_branch = String::from_utf8(body.clone())
        .unwrap()
        .replace("refs/heads/main", "refs/heads/feature")
        .into_bytes();
    let tag = String::from_utf8(body.clone())
        .unwrap()
        .replace("refs/heads/main", "refs/tags/v1")
        .into_bytes();
    let other_repo = String::from_utf8(body.clone())
        .unwrap()
        .replace("acme/config", "acme/other")
        .into_bytes();
    let ping = br#"{"zen":"Keep it simple.","hook_id":1}"#.to_vec();

    let cases = [
        (
            "bad signature",
            github_headers("push", "d-1", &body, "wrong"),
            body.clone(),
        ),
        (
            "other branch",
            github_headers("push", "d-2", &other_branch, SECRET),
            other_branch,
        ),
        ("tag", github_headers("push", "d-3", &tag, SECRET), tag),
        (
            "other repo",
            github_headers("push", "d-4", &other_repo, SECRET),
            other_repo,
        ),
        ("ping", github_headers("ping", "d-5", &ping, SECRET), ping),
        (
            "not json",
            github_headers("push", "d-6", b"{", SECRET),
            b"{".to_vec(),
        ),
    ];
    let mut answers = Vec::new();
    for (name, headers, body) in cases {
        let reply = workflow::accept_webhook(&stack.services, &headers, &body).await;
        answers.push((name, reply.code()));
    }
    let mut unsigned = github_headers("push", "d-7", &body, SECRET);
    unsigned.retain(|(name, _)| name != "X-Hub-Signature-256");
    let missing = workflow::accept_webhook(&stack.services, &unsigned, &body).await;

    assert_eq!(
        answers,
        [
            ("bad signature", "bad_signature"),
            ("other branch", "ignored"),
            ("tag", "ignored"),
            ("other repo", "ignored"),
            ("ping", "ping"),
            ("not json", "invalid_payload"),
        ]
    );
    assert_eq!(missing.code(), "missing_signature");
    assert!(stack.next_plan().is_none());
    let rejected = stack
        .services
        .metrics
        .lines()
        .iter()
        .filter(|line| line.contains("\"WebhookRejected\""))
        .count();
    assert_eq!(rejected, 3);
}

/// Waits (bounded) until `sql` counts at least `n`, re-querying every 100 ms.
async fn wait_for_count(db: &TestDb, sql: &str, n: i64) -> i64 {
    let mut last = 0;
    for _ in 0..600 {
        last = count(db, sql).await;
        if last >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test]
async fn the_local_workers_plan_and_apply_until_shut_down() {
    let stack = LocalStack::start(true).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    let LocalStack {
        services,
        receivers,
        _db: db,
        ..
    } = stack;
    let services = std::sync::Arc::new(services);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(run_local_workers::<PlanQueue, ApplyQueue>(
        services.clone(),
        receivers,
        shutdown,
    ));

    workflow::request_sync(
        &services,
        &workflow::ManualSync {
            actor: Some("jane".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let succeeded = wait_for_count(
        &db,
        "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'",
        1,
    )
    .await;
    stop.send(true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), workers).await;

    assert_eq!(succeeded, 1);
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
}

#[tokio::test]
async fn the_sqs_workers_plan_and_apply_until_shut_down() {
    let stack = SqsStack::start(30).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    let body = push_body(&stack.remote, &"0".repeat(40), &commit);
    let SqsStack {
        services,
        plan_url,
        apply_url,
        db,
        remote,
        ..
    } = stack;
    let services = std::sync::Arc::new(services);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let sqs = match &services.queues {
        Queues::Sqs { client, .. } => client.clone(),
        Queues::Local(_) => unreachable!("an SQS stack has SQS queues"),
    };
    let workers = tokio::spawn(run_sqs_workers::<PlanQueue, ApplyQueue>(
        services.clone(),
        sqs,
        plan_url,
        apply_url,
        shutdown,
    ));

    let reply = workflow::accept_webhook(
        &services,
        &github_headers("push", "delivery-1", &body, SECRET),
        &body,
    )
    .await;
    let succeeded = wait_for_count(
        &db,
        "SELECT count(*) FROM sync_runs WHERE status = 'succeeded'",
        1,
    )
    .await;
    stop.send(true).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), workers).await;

    assert_eq!(reply.code(), "accepted");
    assert_eq!(succeeded, 1);
    assert!(matches!(stopped, Ok(Ok(()))), "{stopped:?}");
    drop(remote);
}

#[tokio::test]
async fn a_dry_run_target_plans_a_commit_once_and_never_applies() {
    let mut stack = LocalStack::start(true).await;
    stack.services.settings.targets[0].dry_run = true;
    // Due at every tick, so the poller does ask the remote.
    stack.services.settings.targets[0].interval_secs = 0;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");
    let tick = |at: i64| {
        PlanRequest::new(
            TARGET,
            ritmo::message::Trigger::Schedule,
            chrono::Utc::now() + chrono::Duration::seconds(at),
        )
        .with_revision(format!("main@sha1:{commit}"))
    };

    let first = workflow::handle_plan_request(&stack.services, &tick(0))
        .await
        .unwrap();
    let second = workflow::handle_plan_request(&stack.services, &tick(60))
        .await
        .unwrap();
    let poll = workflow::poll_targets(&stack.services).await.unwrap();

    let PlanRequestOutcome::Planned {
        sync_id,
        status,
        apply_enqueued,
        ..
    } = first
    else {
        panic!("expected a plan, got {first:?}");
    };
    assert_eq!((status, apply_enqueued), (RunStatus::Planned, false));
    assert_eq!(
        second,
        PlanRequestOutcome::Skipped {
            target: TARGET.into(),
            reason: SkipReason::InProgress {
                sync_id,
                status: RunStatus::Planned
            }
        }
    );
    assert_eq!(
        poll.targets,
        [workflow::PolledTarget::AlreadyHandled {
            target: TARGET.into(),
            head: commit.clone()
        }]
    );
    assert_eq!(poll.enqueued, 0);
    assert!(stack.next_apply().is_none());
}

/// A GitHub push payload for `remote`'s `main` moving from `before` to `commit`.
fn push_body(remote: &Remote, before: &str, commit: &str) -> Vec<u8> {
    json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": commit,
        "created": false,
        "deleted": false,
        "repository": {
            "full_name": "acme/config",
            "clone_url": remote.url(),
            "html_url": remote.url().trim_end_matches(".git"),
        },
        "pusher": {"name": "octocat"},
        "head_commit": {"id": commit},
    })
    .to_string()
    .into_bytes()
}
