//! Operator controls (issue 24) on the local stack: real PostgreSQL, a config repository over
//! smart HTTP, in-process queues, the workflow functions the Lambda handlers call.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::metrics::MetricsSink;
use ritmo::plan::PlanPolicy;
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::workflow::{
    self, ApplyRequestOutcome, PlanRequestOutcome, PolledTarget, WebhookOutcome,
};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo as Remote;
use secrecy::SecretString;
use serde_json::json;

const SECRET: &str = "controls-test-secret";
const TARGET: &str = "default";

struct Stack {
    services: Services,
    receivers: LocalReceivers,
    remote: Remote,
    _db: TestDb,
    _cache: tempfile::TempDir,
}

impl Stack {
    async fn start(configure: impl FnOnce(&mut Settings)) -> Stack {
        let db = TestDb::new().await;
        let remote = Remote::new();
        let cache = tempfile::tempdir().unwrap();
        let mut settings = Settings {
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
        };
        configure(&mut settings);
        let (queues, receivers) = Queues::local();
        let services = Services::connect(settings, queues, MetricsSink::capture())
            .await
            .unwrap();
        Stack {
            services,
            receivers,
            remote,
            _db: db,
            _cache: cache,
        }
    }

    /// Handles every queued plan and apply request; returns the plan outcomes.
    async fn drain(&mut self) -> Vec<PlanRequestOutcome> {
        let mut plans = Vec::new();
        loop {
            let mut handled = false;
            while let Ok(request) = self.receivers.plans.try_recv() {
                handled = true;
                plans.push(
                    workflow::handle_plan_request(&self.services, &request)
                        .await
                        .unwrap(),
                );
            }
            while let Ok(request) = self.receivers.applies.try_recv() {
                handled = true;
                let outcome = workflow::handle_apply_request(&self.services, &request)
                    .await
                    .unwrap();
                assert!(
                    matches!(outcome, ApplyRequestOutcome::Applied { .. }),
                    "{outcome:?}"
                );
            }
            if !handled {
                return plans;
            }
        }
    }

    async fn sync(&mut self) -> Vec<PlanRequestOutcome> {
        workflow::request_sync(&self.services, &workflow::ManualSync::of(TARGET))
            .await
            .unwrap();
        self.drain().await
    }

    async fn push(&self, delivery: &str, commit: &str) -> WebhookOutcome {
        let body = json!({
            "ref": "refs/heads/main",
            "before": "0".repeat(40),
            "after": commit,
            "created": false,
            "deleted": false,
            "repository": {
                "full_name": "acme/config",
                "clone_url": self.remote.url(),
                "html_url": self.remote.url().trim_end_matches(".git"),
            },
            "pusher": {"name": "octocat"},
            "head_commit": {"id": commit},
        })
        .to_string()
        .into_bytes();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let headers: Vec<(String, String)> = [
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", delivery),
            ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", signature.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        workflow::accept_webhook(&self.services, &headers, &body).await
    }

    async fn plugin_version(&self) -> Option<String> {
        let store = self.services.store.lock().await;
        let rows = store
            .resources(Some(ritmo::model::Kind::Plugin), Some("git-scm"))
            .await
            .unwrap();
        rows.first()
            .and_then(|row| row.spec["version"].as_str().map(str::to_owned))
    }
}

#[tokio::test]
async fn a_suspended_target_answers_webhooks_with_a_recorded_skip_and_is_not_polled() {
    let mut stack = Stack::start(|_| {}).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    stack.sync().await;
    let suspended = workflow::suspend(&stack.services, TARGET, "jane")
        .await
        .unwrap();
    let commit = stack.remote.push_plugin("git-scm", "2.0.0");

    let reply = stack.push("delivery-suspended", &commit).await;
    let queued_by_webhook = stack.drain().await;
    let polled = workflow::poll_targets(&stack.services).await.unwrap();
    let queued_by_poller = stack.drain().await;
    let recorded = stack
        .services
        .store
        .lock()
        .await
        .delivery_skipped_targets("delivery-suspended")
        .await
        .unwrap();
    let version_while_suspended = stack.plugin_version().await;
    workflow::resume(&stack.services, TARGET, "jane")
        .await
        .unwrap();
    stack.drain().await;

    assert_eq!(suspended.suspended_by.as_deref(), Some("jane"));
    assert!(suspended.suspended_at.is_some());
    match &reply {
        WebhookOutcome::Accepted {
            targets, skipped, ..
        } => {
            assert!(targets.is_empty(), "{reply:?}");
            assert_eq!(skipped, &[TARGET.to_string()]);
        }
        other => panic!("expected an accepted delivery, got {other:?}"),
    }
    assert!(queued_by_webhook.is_empty(), "{queued_by_webhook:?}");
    assert_eq!(recorded, Some(vec![TARGET.to_string()]));
    assert!(
        matches!(&polled.targets[..], [PolledTarget::Suspended { .. }]),
        "{polled:?}"
    );
    assert!(queued_by_poller.is_empty());
    assert_eq!(version_while_suspended.as_deref(), Some("1.0.0"));
    assert_eq!(stack.plugin_version().await.as_deref(), Some("2.0.0"));
}

#[tokio::test]
async fn a_target_suspended_by_its_settings_skips_webhooks_and_refuses_resume() {
    let mut stack = Stack::start(|settings| settings.targets[0].controls.suspended = true).await;
    let commit = stack.remote.push_plugin("git-scm", "1.0.0");

    let reply = stack.push("delivery-settings", &commit).await;
    let queued = stack.drain().await;
    let resumed = workflow::resume(&stack.services, TARGET, "jane").await;

    assert!(
        matches!(&reply, WebhookOutcome::Accepted { targets, skipped, .. }
            if targets.is_empty() && skipped == &[TARGET.to_string()]),
        "{reply:?}"
    );
    assert!(queued.is_empty(), "{queued:?}");
    let error = resumed.unwrap_err().to_string();
    assert!(error.contains("sync.suspended"), "{error}");
}

/// The poller's clock is injected: a tick at `t`, a manual sync 50 s later, a push, and the
/// tick one interval after the first. Counting from the last run, the target would not be due
/// until 60 s after the manual sync (up to twice the interval after the push); counting from
/// the last remote check it is due, and the commit is applied.
#[tokio::test]
async fn a_commit_pushed_after_a_manual_sync_is_applied_within_one_interval_and_a_tick() {
    let mut stack = Stack::start(|_| {}).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    let interval = chrono::Duration::seconds(60);
    let first_tick = chrono::Utc::now() - chrono::Duration::seconds(50);

    let first = workflow::poll_targets_at(&stack.services, first_tick)
        .await
        .unwrap();
    stack.drain().await;
    // The manual sync runs now, 50 s after the first tick; then a commit without a webhook.
    stack.sync().await;
    stack.remote.push_plugin("git-scm", "2.0.0");
    let early =
        workflow::poll_targets_at(&stack.services, first_tick + chrono::Duration::seconds(30))
            .await
            .unwrap();
    let next = workflow::poll_targets_at(&stack.services, first_tick + interval)
        .await
        .unwrap();
    stack.drain().await;

    assert_eq!(first.enqueued, 1, "{first:?}");
    assert!(
        matches!(&early.targets[..], [PolledTarget::NotDue { .. }]),
        "{early:?}"
    );
    assert_eq!(next.enqueued, 1, "{next:?}");
    assert_eq!(stack.plugin_version().await.as_deref(), Some("2.0.0"));
}

/// A row whose inventory entry is deleted by hand is no one's: the next plan warns about it
/// (W104), though the row itself was never touched. Rows the applier wrote are not warned about.
#[tokio::test]
async fn a_row_whose_inventory_entry_is_deleted_by_hand_is_warned_about() {
    let mut stack = Stack::start(|_| {}).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    stack.remote.push_plugin("docker", "1.0.0");
    let first = stack.sync().await;
    stack
        ._db
        .client()
        .await
        .execute(
            "DELETE FROM inventory WHERE kind = 'Plugin' AND name = 'docker'",
            &[],
        )
        .await
        .unwrap();
    stack.remote.push_plugin("git-scm", "1.1.0");

    let second = stack.sync().await;

    let w104 = |outcomes: &[PlanRequestOutcome]| -> Vec<String> {
        outcomes
            .iter()
            .filter_map(|outcome| outcome.detail())
            .flat_map(|detail| detail.diagnostics.iter())
            .filter(|d| d.code == ritmo::diagnostic::Code::W104)
            .map(|d| d.message.clone())
            .collect()
    };
    assert_eq!(w104(&first), Vec::<String>::new());
    let warned = w104(&second);
    assert_eq!(warned.len(), 1, "{second:?}");
    assert!(
        warned[0].contains("ritmo gitops adopt plugin/docker"),
        "{}",
        warned[0]
    );
}

/// A row made by hand with the `managed-by: gitops` label: the plan warns (W104), adopting it
/// once Git has it makes it the target's, and the next sync brings it to Git's version.
#[tokio::test]
async fn an_unowned_labelled_row_is_warned_about_then_adopted_and_synced() {
    let mut stack = Stack::start(|_| {}).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    stack.sync().await;
    stack
        ._db
        .client()
        .await
        .execute(
            "INSERT INTO resources (kind, name, spec, spec_hash, hash_version, labels)
             VALUES ('Plugin', 'legacy', '{\"version\": \"0.1.0\"}', 'by-hand', 1,
                     '{\"managed-by\": \"gitops\"}')",
            &[],
        )
        .await
        .unwrap();
    stack.remote.push_plugin("git-scm", "1.1.0");

    let warned = stack.sync().await;
    let not_in_git = workflow::adopt(
        &stack.services,
        TARGET,
        &ritmo::model::ResourceId::new(ritmo::model::Kind::Plugin, "legacy"),
    )
    .await;
    stack.remote.push_plugin("legacy", "2.0.0");
    let adopted = workflow::adopt(
        &stack.services,
        TARGET,
        &ritmo::model::ResourceId::new(ritmo::model::Kind::Plugin, "legacy"),
    )
    .await
    .unwrap();
    let synced = stack.sync().await;

    let warnings: Vec<String> = warned
        .iter()
        .filter_map(|outcome| outcome.detail())
        .flat_map(|detail| detail.diagnostics.iter())
        .filter(|d| d.code == ritmo::diagnostic::Code::W104)
        .map(|d| d.message.clone())
        .collect();
    assert_eq!(warnings.len(), 1, "{warned:?}");
    assert!(
        warnings[0].contains("ritmo gitops adopt plugin/legacy"),
        "{}",
        warnings[0]
    );
    let refused = not_in_git.unwrap_err().to_string();
    assert!(refused.contains("not in branch"), "{refused}");
    assert!(
        matches!(
            &adopted,
            workflow::AdoptOutcome::Adopted {
                matches_git: false,
                ..
            }
        ),
        "{adopted:?}"
    );
    assert!(
        matches!(&synced[..], [PlanRequestOutcome::Planned { summary, .. }] if summary.update == 1),
        "{synced:?}"
    );
    let after: Vec<_> = synced
        .iter()
        .filter_map(|outcome| outcome.detail())
        .flat_map(|detail| detail.diagnostics.iter())
        .filter(|d| d.code == ritmo::diagnostic::Code::W104)
        .collect();
    assert!(after.is_empty(), "{after:?}");
    let store = stack.services.store.lock().await;
    let rows = store
        .resources(Some(ritmo::model::Kind::Plugin), Some("legacy"))
        .await
        .unwrap();
    assert_eq!(rows[0].spec["version"], "2.0.0");
    assert_eq!(rows[0].owner.as_deref(), Some(TARGET));
}
