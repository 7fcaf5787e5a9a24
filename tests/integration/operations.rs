//! Operating the pipeline: drift with and without self-heal, rollback pins against the
//! poller, history retention, and notifications (SNS on moto, a Slack-compatible webhook on a
//! local HTTP server, and endpoints that fail without failing the sync). Real PostgreSQL, a
//! config repository over smart HTTP, the pipeline functions the Lambda handlers call.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use ritmo::config::{GitAuth, NotificationSettings, Settings, TargetSettings};
use ritmo::message::{PlanRequest, Trigger};
use ritmo::metrics::MetricsSink;
use ritmo::model::Kind;
use ritmo::notify::Notifier;
use ritmo::plan::PlanPolicy;
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::store::RunStatus;
use ritmo::workflow::{self, ApplyRequestOutcome, PlanRequestOutcome, PolledTarget, SkipReason};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::ServedRepo as Remote;
use ritmo_tests::moto::Moto;
use secrecy::SecretString;
use serde_json::Value;

const TARGET: &str = "default";
const MASTER_KEY: &str = "ritmo-example-master-key-32bytes";

/// The local stack with in-process queues; the settings are edited before `start` returns
/// through `configure`.
struct Stack {
    services: Services,
    receivers: LocalReceivers,
    remote: Remote,
    db: TestDb,
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
            master_key: Some(SecretString::from(MASTER_KEY)),
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
            db,
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

    /// A manual sync of the branch head, planned and applied.
    async fn sync(&mut self) -> Vec<PlanRequestOutcome> {
        workflow::request_sync(&self.services, &workflow::ManualSync::of(TARGET))
            .await
            .unwrap();
        self.drain().await
    }

    async fn plugin_version(&self) -> Value {
        let store = self.services.store.lock().await;
        let rows = store
            .resources(Some(Kind::Plugin), Some("git-scm"))
            .await
            .unwrap();
        rows[0].spec["version"].clone()
    }

    /// An out-of-band edit, as a person with psql would make it.
    async fn edit_out_of_band(&self) {
        self.db
            .client()
            .await
            .execute(
                "UPDATE resources SET spec = jsonb_set(spec, '{version}', '\"9.9.9\"')
                 WHERE kind = 'Plugin' AND name = 'git-scm'",
                &[],
            )
            .await
            .unwrap();
    }

    fn metric_lines(&self, name: &str) -> Vec<Value> {
        self.services
            .metrics
            .lines()
            .iter()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|line| line.get(name).is_some())
            .collect()
    }
}

#[tokio::test]
async fn drift_with_self_heal_is_restored_to_gits_version_by_the_poller() {
    let mut stack = Stack::start(|settings| settings.targets[0].self_heal = true).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    stack.sync().await;
    stack.edit_out_of_band().await;
    let drifted = stack
        .services
        .store
        .lock()
        .await
        .drift(TARGET)
        .await
        .unwrap();

    let poll = workflow::poll_targets(&stack.services).await.unwrap();
    let plans = stack.drain().await;

    assert_eq!(drifted.len(), 1);
    assert!(
        matches!(
            &poll.targets[..],
            [PolledTarget::Enqueued {
                trigger: Trigger::Drift,
                ..
            }]
        ),
        "{poll:?}"
    );
    assert!(
        matches!(
            &plans[..],
            [PlanRequestOutcome::Planned { summary, .. }] if summary.update == 1
        ),
        "{plans:?}"
    );
    assert_eq!(stack.plugin_version().await, "1.0.0");
    let store = stack.services.store.lock().await;
    assert!(store.drift(TARGET).await.unwrap().is_empty());
    let runs = store.runs(Some(TARGET), 1, None).await.unwrap();
    assert_eq!(runs[0].trigger.as_str(), "drift");
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    drop(store);
    let drift_metrics = stack.metric_lines("DriftDetected");
    assert_eq!(drift_metrics.len(), 1);
    assert_eq!(drift_metrics[0]["Target"], TARGET);
}

#[tokio::test]
async fn drift_without_self_heal_is_reported_and_left_alone() {
    let mut stack = Stack::start(|_| {}).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    stack.sync().await;
    stack.edit_out_of_band().await;

    let poll = workflow::poll_targets(&stack.services).await.unwrap();

    assert_eq!(poll.enqueued, 0, "{poll:?}");
    assert!(stack.drain().await.is_empty());
    assert_eq!(stack.plugin_version().await, "9.9.9");
    let drift = stack
        .services
        .store
        .lock()
        .await
        .drift(TARGET)
        .await
        .unwrap();
    assert_eq!(drift.len(), 1);
    assert_eq!(
        (drift[0].kind, drift[0].name.as_str()),
        (Kind::Plugin, "git-scm")
    );
    let metrics = stack.metric_lines("DriftDetected");
    assert_eq!(metrics.len(), 1, "{metrics:?}");
    assert_eq!(metrics[0]["DriftDetected"], 1.0);
    assert_eq!(metrics[0]["Target"], TARGET);
    let directive = &metrics[0]["_aws"]["CloudWatchMetrics"][0];
    assert!(
        directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["Name"] == "DriftDetected" && m["Unit"] == "Count"),
        "{directive}"
    );
}

#[tokio::test]
async fn a_pinned_target_ignores_the_schedule_until_resumed() {
    let mut stack = Stack::start(|settings| settings.targets[0].interval_secs = 0).await;
    let first = stack.remote.push_plugin("git-scm", "1.0.0");
    stack.sync().await;
    let second = stack.remote.push_plugin("git-scm", "2.0.0");
    stack.sync().await;

    workflow::rollback(&stack.services, TARGET, &first, "jane")
        .await
        .unwrap();
    stack.drain().await;
    let poll = workflow::poll_targets(&stack.services).await.unwrap();
    let scheduled = PlanRequest::new(TARGET, Trigger::Schedule, chrono::Utc::now())
        .with_revision(format!("main@sha1:{second}"));
    let while_pinned = workflow::handle_plan_request(&stack.services, &scheduled)
        .await
        .unwrap();
    let version_while_pinned = stack.plugin_version().await;
    workflow::resume(&stack.services, TARGET, "test")
        .await
        .unwrap();
    stack.drain().await;

    assert_eq!(
        poll.targets,
        [PolledTarget::Pinned {
            target: TARGET.into(),
            pinned_commit: first.clone()
        }]
    );
    assert_eq!(
        while_pinned,
        PlanRequestOutcome::Skipped {
            target: TARGET.into(),
            reason: SkipReason::Pinned {
                pinned_commit: first
            }
        }
    );
    assert_eq!(version_while_pinned, "1.0.0");
    assert_eq!(stack.plugin_version().await, "2.0.0");
    let store = stack.services.store.lock().await;
    let target = store.target(TARGET).await.unwrap().unwrap();
    assert_eq!(target.pinned_commit, None);
    assert_eq!(target.last_applied_commit, Some(second));
}

#[tokio::test]
async fn retention_keeps_the_newest_runs_and_every_revision() {
    let mut stack = Stack::start(|settings| settings.history_limit = Some(3)).await;
    let prune_every = ritmo::workflow::PRUNE_EVERY;

    let mut commits = Vec::new();
    for version in 1..=prune_every {
        commits.push(
            stack
                .remote
                .push_plugin("git-scm", &format!("{version}.0.0")),
        );
        stack.sync().await;
    }

    let store = stack.services.store.lock().await;
    let runs = store.runs(Some(TARGET), 100, None).await.unwrap();
    let kept: Vec<String> = runs.iter().map(|r| r.commit.clone().unwrap()).collect();
    let newest: Vec<String> = commits.iter().rev().take(3).cloned().collect();
    assert_eq!(kept, newest);
    drop(store);
    let revisions: i64 = stack
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM revisions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(revisions, prune_every);
}

/// A one-route HTTP server that answers every request with `status` and hands the bodies
/// of the requests it received to the test.
struct Hook {
    port: u16,
    bodies: mpsc::Receiver<String>,
    /// The `x-ritmo-signature` header of each request, in the order of `bodies`.
    signatures: mpsc::Receiver<Option<String>>,
}

impl Hook {
    fn start(status: u16) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, bodies) = mpsc::channel();
        let (signature_sender, signatures) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                let mut signature = None;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("x-ritmo-signature")
                    {
                        signature = Some(value.trim().to_string());
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                if signature_sender.send(signature).is_err()
                    || sender
                        .send(String::from_utf8_lossy(&body).into_owned())
                        .is_err()
                {
                    return;
                }
            }
        });
        Hook {
            port,
            bodies,
            signatures,
        }
    }

    fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/services/T000/B000/secret-part",
            self.port
        )
    }
}

/// Encrypts `url` as the `encrypted_value` of credential `name` under the test master key.
async fn encrypted(services: &Services, name: &str, url: &str) -> String {
    services
        .keys()
        .await
        .unwrap()
        .encrypt_master(Some(name), url.as_bytes())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_plan_waiting_for_approval_is_posted_to_the_slack_webhook() {
    let hook = Hook::start(200);
    let mut stack = Stack::start(|settings| {
        settings.targets[0].auto_apply = false;
        settings.notifications.slack_webhook_credential = Some("slack-hook".into());
    })
    .await;
    let ciphertext = encrypted(&stack.services, "slack-hook", &hook.url()).await;
    push_credential(&stack.remote, "slack-hook", &ciphertext);
    // The credential reaches the database through an approved first sync.
    stack.services.set_notifier(Notifier::default());
    let first = stack.sync().await;
    let PlanRequestOutcome::Planned { sync_id, .. } = &first[0] else {
        panic!("{first:?}");
    };
    workflow::approve_plan(&stack.services, *sync_id, "jane")
        .await
        .unwrap();
    stack.drain().await;
    stack.services.set_notifier(Notifier::new(
        NotificationSettings {
            sns_topic_arn: None,
            slack_webhook_credential: Some("slack-hook".into()),
            api_url: None,
        },
        None,
    ));
    stack.remote.push_plugin("git-scm", "1.0.0");

    let plans = stack.sync().await;

    let PlanRequestOutcome::Planned {
        sync_id, status, ..
    } = &plans[0]
    else {
        panic!("{plans:?}");
    };
    assert_eq!(*status, RunStatus::PendingApproval);
    let body: Value =
        serde_json::from_str(&hook.bodies.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("waits for approval"), "{text}");
    assert!(
        text.contains(&format!("ritmo gitops approve {sync_id}")),
        "{text}"
    );
    assert_eq!(stack.services.notifier().await.failures(), 0);
}

#[tokio::test]
async fn a_failed_sync_is_published_to_the_sns_topic() {
    let moto = Moto::start();
    let config = moto.sdk_config().await;
    let sns = aws_sdk_sns::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let topic = sns
        .create_topic()
        .name("ritmo-alerts")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    let queue_url = sqs
        .create_queue()
        .queue_name("alerts-inbox")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue_arn)
        .send()
        .await
        .unwrap();
    let mut stack = Stack::start(|_| {}).await;
    stack.services.set_notifier(Notifier::new(
        NotificationSettings {
            sns_topic_arn: Some(topic.clone()),
            slack_webhook_credential: None,
            api_url: None,
        },
        Some(sns),
    ));
    stack.remote.repo.write(
        "plugins/broken.yaml",
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: Broken\n",
    );
    stack.remote.push("broken");

    let plans = stack.sync().await;

    assert!(
        matches!(&plans[..], [PlanRequestOutcome::Failed { .. }]),
        "{plans:?}"
    );
    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .wait_time_seconds(5)
        .send()
        .await
        .unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    let envelope: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(
        envelope["Subject"],
        "Ritmo GitOps: sync of `default` failed"
    );
    let message = envelope["Message"].as_str().unwrap();
    assert!(
        message.contains("the repository has validation errors"),
        "{message}"
    );
    assert!(message.contains("plugins/broken.yaml"), "{message}");
    assert_eq!(
        envelope["MessageAttributes"]["event"]["Value"],
        "sync_failed"
    );
    assert_eq!(stack.services.notifier().await.failures(), 0);
}

#[tokio::test]
async fn failing_notification_endpoints_are_counted_and_do_not_fail_the_sync() {
    let hook = Hook::start(500);
    let moto = Moto::start();
    let sns = aws_sdk_sns::Client::new(&moto.sdk_config().await);
    let mut stack = Stack::start(|settings| settings.targets[0].auto_apply = false).await;
    let ciphertext = encrypted(&stack.services, "slack-hook", &hook.url()).await;
    push_credential(&stack.remote, "slack-hook", &ciphertext);
    let first = stack.sync().await;
    let PlanRequestOutcome::Planned { sync_id, .. } = &first[0] else {
        panic!("{first:?}");
    };
    workflow::approve_plan(&stack.services, *sync_id, "jane")
        .await
        .unwrap();
    stack.drain().await;
    stack.services.set_notifier(Notifier::new(
        NotificationSettings {
            // No such topic: moto answers NotFound.
            sns_topic_arn: Some("arn:aws:sns:us-east-1:123456789012:missing".into()),
            slack_webhook_credential: Some("slack-hook".into()),
            api_url: None,
        },
        Some(sns),
    ));
    stack.remote.push_plugin("git-scm", "1.0.0");

    let plans = stack.sync().await;

    let PlanRequestOutcome::Planned {
        sync_id, status, ..
    } = &plans[0]
    else {
        panic!("{plans:?}");
    };
    assert_eq!(*status, RunStatus::PendingApproval);
    assert!(hook.bodies.recv_timeout(Duration::from_secs(10)).is_ok());
    assert_eq!(stack.services.notifier().await.failures(), 2);
    let failed = stack.metric_lines("NotificationFailed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["NotificationFailed"], 2.0);
    // The sync goes on: approving applies it.
    workflow::approve_plan(&stack.services, *sync_id, "jane")
        .await
        .unwrap();
    stack.drain().await;
    assert_eq!(stack.plugin_version().await, "1.0.0");
    let logs_safe = !format!("{:?}", stack.services.notifier().await).contains("secret-part");
    assert!(logs_safe);
}

/// Commits a Credential `name` whose `encrypted_value` is `ciphertext`, and pushes.
fn push_credential(remote: &Remote, name: &str, ciphertext: &str) -> String {
    remote.repo.write(
        &format!("credentials/{name}.yaml"),
        format!(
            "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: {name}\nspec:\n  \
             type: webhook_secret\n  description: incoming webhook\n  \
             encrypted_value: \"{ciphertext}\"\n"
        ),
    );
    remote.push(&format!("credential {name}"))
}

#[tokio::test]
async fn a_failed_database_connection_is_counted_for_the_alarm() {
    let sink = MetricsSink::capture();
    let settings = Settings {
        // Nothing listens on port 1: the connection is refused at once.
        database_url: Some(SecretString::from(
            "postgres://postgres@127.0.0.1:1/none".to_string(),
        )),
        ..Settings::default()
    };
    let (queues, _receivers) = Queues::local();

    let connected = Services::connect(settings, queues, sink.clone()).await;

    assert!(connected.is_err());
    let lines = sink.lines();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("\"DatabaseConnectionFailed\"")),
        "{lines:?}"
    );
}

const SIGNING_SECRET: &str = "hook-signing-secret-0123456789";

/// The next message the hook received, after checking its HMAC-SHA256 signature against the
/// signing secret and that neither the secret nor the hook's own secret path is in it.
fn signed_message(hook: &Hook) -> Value {
    use hmac::{Hmac, Mac};
    let body = hook.bodies.recv_timeout(Duration::from_secs(10)).unwrap();
    let signature = hook
        .signatures
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature.as_deref(), Some(expected.as_str()), "{body}");
    assert!(!body.contains(SIGNING_SECRET), "{body}");
    assert!(!body.contains(MASTER_KEY), "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn a_deny_window_holds_a_scheduled_sync_which_is_applied_when_the_window_ends() {
    use chrono::{Duration as Span, DurationRound, Timelike, Utc};
    use ritmo::windows::{SyncWindow, WindowKind};
    // A deny window that opened this minute and lasts two hours, so the planner (which reads
    // the real clock) plans inside it; the poller is then asked about a time after its end.
    let opened = Utc::now().duration_trunc(Span::minutes(1)).unwrap();
    let schedule = format!("{} {} * * *", opened.minute(), opened.hour());
    let window = SyncWindow::new(WindowKind::Deny, &schedule, "2h", Some("UTC")).unwrap();
    let hook = Hook::start(200);
    let url = format!("http://127.0.0.1:{}/ritmo-events", hook.port);
    let mut stack = Stack::start(|settings| {
        settings.targets[0].controls.windows = vec![window];
        settings.targets[0].controls.notifications = vec![ritmo::config::Subscription {
            events: vec![ritmo::config::EventKind::WaitingForWindow],
            destination: ritmo::config::Destination::Webhook {
                url,
                signing_secret: ritmo::config::SecretSetting::Value(SecretString::from(
                    SIGNING_SECRET,
                )),
            },
        }];
    })
    .await;
    stack.remote.push_plugin("git-scm", "1.0.0");

    let poll = workflow::poll_targets_at(&stack.services, opened + Span::seconds(30))
        .await
        .unwrap();
    let plans = stack.drain().await;

    assert_eq!(poll.enqueued, 1, "{poll:?}");
    let PlanRequestOutcome::Planned {
        sync_id, status, ..
    } = &plans[0]
    else {
        panic!("{plans:?}");
    };
    assert_eq!(*status, RunStatus::WaitingForWindow);
    let waiting = signed_message(&hook);
    assert_eq!(waiting["event"], "waiting_for_window");
    assert_eq!(waiting["sync_id"], sync_id.to_string());
    assert!(
        waiting["text"]
            .as_str()
            .unwrap()
            .contains(&(opened + Span::hours(2)).to_rfc3339()),
        "{waiting}"
    );
    let held = stack
        .services
        .store
        .lock()
        .await
        .resources(Some(Kind::Plugin), None)
        .await
        .unwrap();
    assert!(held.is_empty(), "applied inside a deny window: {held:?}");

    // Still inside the window: the plan keeps waiting.
    let inside = workflow::poll_targets_at(&stack.services, opened + Span::minutes(90))
        .await
        .unwrap();
    assert!(inside.released.is_empty(), "{inside:?}");

    let after = workflow::poll_targets_at(&stack.services, opened + Span::hours(2))
        .await
        .unwrap();
    stack.drain().await;

    assert_eq!(after.released, vec![*sync_id]);
    assert_eq!(stack.plugin_version().await, "1.0.0");
    let run = stack
        .services
        .store
        .lock()
        .await
        .run(*sync_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Succeeded);
}

#[tokio::test]
async fn override_window_applies_a_waiting_plan_now_and_is_recorded_in_the_run() {
    use ritmo::windows::{SyncWindow, WindowKind};
    use workflow::ApproveOutcome;
    // Always denied: every minute opens a day-long deny window.
    let window = SyncWindow::new(WindowKind::Deny, "* * * * *", "1d", None).unwrap();
    let mut stack =
        Stack::start(|settings| settings.targets[0].controls.windows = vec![window]).await;
    stack.remote.push_plugin("git-scm", "1.0.0");
    workflow::poll_targets(&stack.services).await.unwrap();
    let plans = stack.drain().await;
    let PlanRequestOutcome::Planned {
        sync_id, status, ..
    } = &plans[0]
    else {
        panic!("{plans:?}");
    };
    assert_eq!(*status, RunStatus::WaitingForWindow);

    let plain = workflow::approve_plan(&stack.services, *sync_id, "jane")
        .await
        .unwrap();
    assert!(
        matches!(
            plain,
            ApproveOutcome::NotPending {
                status: RunStatus::WaitingForWindow,
                ..
            }
        ),
        "{plain:?}"
    );

    let overridden = workflow::approve_plan_with(&stack.services, *sync_id, "jane", true)
        .await
        .unwrap();
    stack.drain().await;

    assert!(
        matches!(overridden, ApproveOutcome::Approved { .. }),
        "{overridden:?}"
    );
    assert_eq!(stack.plugin_version().await, "1.0.0");
    let store = stack.services.store.lock().await;
    assert_eq!(
        store.run(*sync_id).await.unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    assert_eq!(
        store.window_override_by(*sync_id).await.unwrap().as_deref(),
        Some("jane")
    );
}
