//! The poller over many targets (issue 26): the batched registration, drift and handled-commit
//! queries, and a tick where one target's remote fails and one commit was already handled.

use ritmo::config::{Settings, TargetSettings};
use ritmo::metrics::MetricsSink;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo::store::{NewTarget, Store};
use ritmo::workflow::{self, PolledTarget};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::{GitHttpServer, run_git};
use secrecy::SecretString;

fn new_target(name: &str, branch: &str) -> NewTarget {
    NewTarget {
        name: name.into(),
        repo_url: format!("https://git.example.com/{name}.git"),
        branch: branch.into(),
        path: String::new(),
    }
}

#[tokio::test]
async fn ensure_targets_registers_each_once_and_answers_in_the_order_asked() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    let before = store.ensure_target(&new_target("b", "main")).await.unwrap();

    let states = store
        .ensure_targets(&[
            new_target("c", "main"),
            new_target("a", "main"),
            new_target("b", "main"),
            new_target("a", "release"),
        ])
        .await
        .unwrap();

    let names: Vec<&str> = states.iter().map(|state| state.name.as_str()).collect();
    assert_eq!(names, ["c", "a", "b", "a"]);
    // A name given twice ends as its last entry says, whichever of its entries is asked.
    assert_eq!(states[1].branch, "release");
    assert_eq!(states[3].branch, "release");
    // An unchanged target keeps its row as it was.
    assert_eq!(states[2], before);
    assert_eq!(store.targets().await.unwrap().len(), 3);
}

#[tokio::test]
async fn ensure_targets_refuses_a_url_with_credentials_before_writing_any() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    let mut leaking = new_target("b", "main");
    leaking.repo_url = "https://user:secret@git.example.com/b.git".into();

    let refused = store
        .ensure_targets(&[new_target("a", "main"), leaking])
        .await;

    assert!(refused.is_err());
    assert!(store.targets().await.unwrap().is_empty());
}

#[tokio::test]
async fn drift_of_groups_each_targets_unresolved_events_oldest_first() {
    let db = TestDb::new().await;
    let store = Store::connect(&db.url).await.unwrap();
    db.client()
        .await
        .batch_execute(
            "INSERT INTO drift_events (target, kind, name, operation, resolved_sync_id) VALUES
                 ('a', 'job', 'build', 'UPDATE', NULL),
                 ('b', 'plugin', 'git-scm', 'DELETE', NULL),
                 ('a', 'job', 'deploy', 'UPDATE', NULL),
                 ('a', 'job', 'old', 'UPDATE', gen_random_uuid()),
                 ('c', 'job', 'other', 'UPDATE', NULL)",
        )
        .await
        .unwrap();

    let drift = store.drift_of(&["a", "b", "quiet"]).await.unwrap();

    let names = |target: &str| -> Vec<String> {
        drift[target]
            .iter()
            .map(|event| event.name.clone())
            .collect()
    };
    assert_eq!(names("a"), ["build", "deploy"]);
    assert_eq!(names("b"), ["git-scm"]);
    assert!(!drift.contains_key("c"), "not asked for");
    assert!(!drift.contains_key("quiet"), "no events");
    assert_eq!(drift["a"], store.drift("a").await.unwrap());
}

/// `count` repositories `repo-N` under one root, one commit each, behind one server.
struct Fleet {
    _root: tempfile::TempDir,
    server: GitHttpServer,
    heads: Vec<String>,
}

impl Fleet {
    fn new(count: usize) -> Fleet {
        let root = tempfile::tempdir().unwrap();
        let heads = (0..count)
            .map(|index| {
                let repo = root.path().join(format!("repo-{index}"));
                std::fs::create_dir_all(&repo).unwrap();
                run_git(&repo, &["init", "--quiet", "--initial-branch=main"]);
                std::fs::write(repo.join("README.md"), format!("target {index}\n")).unwrap();
                run_git(&repo, &["add", "--all"]);
                run_git(&repo, &["commit", "--quiet", "-m", "initial"]);
                run_git(&repo, &["rev-parse", "HEAD"])
            })
            .collect();
        let server = GitHttpServer::start(root.path(), None);
        Fleet {
            _root: root,
            server,
            heads,
        }
    }

    fn target(&self, index: usize) -> TargetSettings {
        let mut target = TargetSettings::new(format!("t-{index:02}"))
            .with_repository(self.server.url(&format!("repo-{index}/.git")), "main");
        // Due at every tick, even right after a run started.
        target.interval_secs = 0;
        target
    }
}

#[tokio::test]
async fn a_tick_over_many_targets_checks_each_once_whatever_the_concurrency() {
    let fleet = Fleet::new(12);
    let db = TestDb::new().await;
    let cache = tempfile::tempdir().unwrap();
    let mut targets: Vec<TargetSettings> = (0..12).map(|index| fleet.target(index)).collect();
    // One remote that does not exist: its error is its own.
    targets[5].repo_url = fleet.server.url("missing/.git");
    let settings = Settings {
        enabled: true,
        targets,
        database_url: Some(SecretString::from(db.url.clone())),
        cache_dir: cache.path().to_path_buf(),
        check_secret_refs: false,
        poll_concurrency: Some(3),
        ..Settings::default()
    };
    let (queues, mut receivers) = Queues::local();
    let services = Services::connect(settings, queues, MetricsSink::capture())
        .await
        .unwrap();

    let first = workflow::poll_targets(&services).await.unwrap();
    let mut queued = Vec::new();
    while let Ok(request) = receivers.plans.try_recv() {
        queued.push(request.target);
    }
    queued.sort();
    // A run of t-07 at its head failed on the repository's content: asking again would only
    // fail again.
    db.client()
        .await
        .execute(
            "INSERT INTO sync_runs (id, target, trigger, actor, status, revision, git_commit, dry_run)
             VALUES (gen_random_uuid(), 't-07', 'schedule', 'poller', 'failed', $1, $2, false)",
            &[&format!("main@sha1:{}", fleet.heads[7]), &fleet.heads[7]],
        )
        .await
        .unwrap();
    let second = workflow::poll_targets(&services).await.unwrap();

    assert_eq!(first.targets.len(), 12);
    assert_eq!(first.enqueued, 11, "{first:?}");
    let expected: Vec<String> = (0..12)
        .filter(|&index| index != 5)
        .map(|index| format!("t-{index:02}"))
        .collect();
    assert_eq!(queued, expected);
    assert_eq!(second.enqueued, 10, "{second:?}");
    for (index, polled) in second.targets.iter().enumerate() {
        let name = format!("t-{index:02}");
        match index {
            5 => assert!(
                matches!(polled, PolledTarget::Error { target, .. } if *target == name),
                "{polled:?}"
            ),
            7 => assert_eq!(
                polled,
                &PolledTarget::AlreadyHandled {
                    target: name,
                    head: fleet.heads[7].clone(),
                }
            ),
            _ => assert!(
                matches!(polled, PolledTarget::Enqueued { target, head, .. }
                    if *target == name && *head == fleet.heads[index]),
                "{polled:?}"
            ),
        }
    }
}
