//! A plan never deletes because something could not be read (issue 22, findings 1 and 3),
//! below the CLI: what a full scan and an incremental plan make of a kind directory that is not
//! a directory, of a kind directory left holding files that define nothing, and of a tree past
//! the file limit. Both scans must agree, as everywhere else.

use std::collections::BTreeSet;

use ritmo::apply::{ApplyOutcome, apply_plan};
use ritmo::config::{GitAuth, TargetSettings};
use ritmo::crypto::CredentialKeys;
use ritmo::crypto::secret_refs::SecretRefChecker;
use ritmo::diagnostic::{Code, Diagnostic};
use ritmo::git::{Auth, RepoLocation, kinds_listed_at, read_commit};
use ritmo::manifest::{FileContent, Limits, SourceFile};
use ritmo::model::Kind;
use ritmo::plan::PlanPolicy;
use ritmo::source::incremental::{PlannedTarget, ScanMode, ScanOptions, plan_target};
use ritmo::source::{Checks, SourceSpec};
use ritmo::store::{NewRun, NewTarget, RunStatus, Store, Trigger};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::TestRepo;

const TARGET: &str = "prod";

fn plugin(name: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: {name}\nspec:\n  type: build\n  \
         binary_path: /opt/ritmo/plugins/{name}\n  version: 1.0.0\n  enabled: true\n"
    )
}

fn credential(name: &str) -> String {
    format!(
        "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: {name}\nspec:\n  \
         type: api_key\n  secret_ref:\n    provider: vault\n    key: secret/{name}\n"
    )
}

fn settings() -> TargetSettings {
    TargetSettings {
        name: TARGET.into(),
        repo_url: "file:///config".into(),
        branch: "main".into(),
        path: String::new(),
        interval_secs: 60,
        auto_apply: true,
        dry_run: false,
        self_heal: false,
        controls: Default::default(),
        // The share of deletes that waits for approval is not what these tests are about.
        policy: PlanPolicy {
            max_delete_percent: 100,
            ..PlanPolicy::default()
        },
        auth: GitAuth::None,
    }
}

/// A target applied at a first commit holding a credential and two plugins.
struct Applied {
    _db: TestDb,
    store: Store,
    repo: TestRepo,
    cache: tempfile::TempDir,
    first: String,
}

impl Applied {
    async fn new() -> Applied {
        let db = TestDb::new().await;
        let store = Store::connect(&db.url).await.unwrap();
        let target = settings();
        store
            .ensure_target(&NewTarget {
                name: target.name.clone(),
                repo_url: target.repo_url.clone(),
                branch: target.branch.clone(),
                path: target.path.clone(),
            })
            .await
            .unwrap();
        let repo = TestRepo::new();
        repo.write("credentials/c0.yaml", credential("c0"))
            .write("plugins/p0.yaml", plugin("p0"))
            .write("plugins/p1.yaml", plugin("p1"));
        let first = repo.commit("initial");
        let applied = Applied {
            _db: db,
            store,
            repo,
            cache: tempfile::tempdir().unwrap(),
            first,
        };
        let planned = applied.plan(true, &Limits::default()).await;
        let plan = planned.plan.expect("the first commit plans");
        assert_eq!(plan.summary().create, 3);
        let sync_id = applied
            .store
            .begin_run(&NewRun {
                target: TARGET.into(),
                trigger: Trigger::Manual,
                actor: None,
                revision: Some(plan.revision.to_string()),
                dry_run: false,
            })
            .await
            .unwrap();
        let mut applied = applied;
        applied
            .store
            .record_plan(sync_id, &plan, RunStatus::Planned)
            .await
            .unwrap();
        let outcome = apply_plan(&mut applied.store, sync_id, &plan)
            .await
            .unwrap();
        assert!(matches!(outcome, ApplyOutcome::Applied(_)), "{outcome:?}");
        applied
    }

    async fn plan(&self, full: bool, limits: &Limits) -> PlannedTarget {
        let source = SourceSpec {
            location: RepoLocation::Local(self.repo.path().to_path_buf()),
            branch: Some("main".into()),
            path: String::new(),
            worktree: false,
            auth: Auth::None,
            cache_dir: self.cache.path().to_path_buf(),
        };
        let mut planned = plan_target(
            &self.store,
            &settings(),
            &source,
            Checks {
                keys: &CredentialKeys::default(),
                refs: &SecretRefChecker::off("the checker is off in these tests"),
                builtin_plugins: &BTreeSet::new(),
            },
            limits,
            ScanOptions {
                full,
                ..ScanOptions::default()
            },
        )
        .await
        .unwrap();
        planned
            .checked
            .diagnostics
            .retain(|diagnostic| diagnostic.code != Code::W103);
        planned
    }

    /// The incremental plan and the full scan's, after checking that the first is incremental
    /// and that both report the same.
    async fn both(&self, limits: &Limits) -> (PlannedTarget, PlannedTarget) {
        let incremental = self.plan(false, limits).await;
        let full = self.plan(true, limits).await;
        assert!(
            matches!(incremental.mode, ScanMode::Incremental { .. }),
            "{}",
            incremental.mode
        );
        assert_eq!(incremental.checked.diagnostics, full.checked.diagnostics);
        assert_eq!(incremental.plan, full.plan);
        (incremental, full)
    }
}

fn errors(planned: &PlannedTarget) -> Vec<(&str, Code)> {
    planned
        .checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| (d.path.as_str(), d.code))
        .collect()
}

// Issue 22, finding 1: `plugins` replaced by a symlink (or a submodule, or a file) was read as
// "no plugins", and the sync deleted every plugin with no error.
#[tokio::test]
async fn a_kind_directory_replaced_by_a_symlink_a_submodule_or_a_file_is_refused_by_both_scans() {
    for replacement in ["symlink", "submodule", "file"] {
        let target = Applied::new().await;
        target.repo.remove("plugins");
        match replacement {
            "symlink" => {
                target.repo.symlink("plugins", "/etc");
            }
            "submodule" => {
                target.repo.gitlink("plugins", &target.first);
            }
            _ => {
                target.repo.write("plugins", "not a directory");
                target.repo.git(&["add", "plugins"]);
            }
        }
        target.repo.commit_staged(replacement);

        let (incremental, _) = target.both(&Limits::default()).await;

        assert_eq!(
            errors(&incremental),
            [("plugins", Code::E105)],
            "{replacement}"
        );
        assert_eq!(incremental.plan, None, "{replacement}");
    }
}

#[tokio::test]
async fn a_symlinked_subdirectory_of_a_kind_is_refused_whatever_its_name() {
    let target = Applied::new().await;
    target.repo.remove("plugins/p1.yaml");
    target.repo.symlink("plugins/team", "/etc");
    target.repo.commit_staged("team");

    let (incremental, _) = target.both(&Limits::default()).await;

    assert_eq!(errors(&incremental), [("plugins/team", Code::E105)]);
}

#[tokio::test]
async fn emptying_the_files_of_a_kind_waits_for_approval_in_both_scans() {
    let target = Applied::new().await;
    target
        .repo
        .write("plugins/p0.yaml", "")
        .write("plugins/p1.yaml", "# nothing left\n");
    target.repo.commit("emptied");

    let (incremental, _) = target.both(&Limits::default()).await;

    let plan = incremental.plan.unwrap();
    assert_eq!(plan.summary().delete, 2);
    let reason = plan.approval_reason.unwrap_or_default();
    assert!(
        reason.starts_with("the plan deletes every plugin the target manages (2: p0, p1)"),
        "{reason}"
    );
}

#[tokio::test]
async fn removing_a_kind_directory_is_an_ordinary_removal() {
    let target = Applied::new().await;
    target.repo.remove("plugins");
    target.repo.write("README.md", "plugins moved out");
    target.repo.commit("no plugins");

    let (incremental, _) = target.both(&Limits::default()).await;

    let plan = incremental.plan.unwrap();
    assert_eq!(plan.summary().delete, 2);
    assert_eq!(plan.approval_reason, None);
}

#[test]
fn the_kinds_listed_at_a_commit_are_those_a_snapshot_lists() {
    let repo = TestRepo::new();
    repo.write("plugins/README.md", "no plugins here")
        .write("jobs/empty.yaml", "")
        .symlink("webhooks", "/etc");
    let commit = repo.commit("layout");
    let kinds = BTreeSet::from([Kind::Plugin, Kind::Job, Kind::Webhook, Kind::Credential]);

    let listed = kinds_listed_at(repo.path(), &commit, "/", &kinds).unwrap();
    let snapshot = read_commit(
        &RepoLocation::Local(repo.path().to_path_buf()),
        Some("main"),
        "/",
        &Limits::default(),
    )
    .unwrap();

    assert_eq!(listed, BTreeSet::from([Kind::Job, Kind::Webhook]));
    assert_eq!(ritmo::manifest::kinds_listed(&snapshot.files), listed);
}

// Issue 22, finding 3: past the file limit the readers returned an error, so validate, plan and
// sync exited 2 and no run recorded why.
#[test]
fn a_tree_past_the_file_limit_reads_as_one_entry_naming_the_config_path() {
    let repo = TestRepo::new();
    for i in 0..5 {
        repo.write(&format!("config/jobs/{i}.yaml"), "x");
    }
    repo.commit("initial");
    let limits = Limits {
        max_files: 4,
        ..Limits::default()
    };

    let snapshot = read_commit(
        &RepoLocation::Local(repo.path().to_path_buf()),
        Some("main"),
        "./config/",
        &limits,
    )
    .unwrap();

    assert_eq!(
        snapshot.files,
        [SourceFile {
            path: String::new(),
            content: FileContent::TooManyFiles {
                limit: 4,
                config_path: "config".into()
            }
        }]
    );
}

#[tokio::test]
async fn too_many_files_is_e106_in_both_scans_and_plans_nothing() {
    let target = Applied::new().await;
    for i in 0..4 {
        target.repo.write(
            &format!("plugins/more-{i}.yaml"),
            plugin(&format!("more-{i}")),
        );
    }
    target.repo.commit("more plugins");
    let limits = Limits {
        max_files: 3,
        ..Limits::default()
    };

    let (incremental, _) = target.both(&limits).await;

    let found: Vec<&Diagnostic> = incremental.checked.diagnostics.iter().collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].code, Code::E106);
    assert!(
        found[0]
            .message
            .contains("config path `/` holds more than 3 resource files"),
        "{}",
        found[0].message
    );
    assert_eq!(incremental.plan, None);
}
