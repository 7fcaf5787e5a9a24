//! Incremental plans against real git repositories and a real PostgreSQL: for random histories
//! (add, edit, rename and delete files, reorder keys, move and rename resources, break a file,
//! force-push an unrelated history, garbage-collect the base away), the incremental plan equals
//! the full scan's plan after every commit, and each plan without errors is applied so the next
//! commit has a base.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ritmo::apply::{ApplyOutcome, apply_plan};
use ritmo::config::{GitAuth, TargetSettings};
use ritmo::crypto::CredentialKeys;
use ritmo::crypto::secret_refs::SecretRefChecker;
use ritmo::git::{Auth, RepoLocation};
use ritmo::manifest::Limits;
use ritmo::plan::PlanPolicy;
use ritmo::source::Checks;
use ritmo::source::SourceSpec;
use ritmo::source::incremental::{
    FullScanReason, PlannedTarget, ScanMode, ScanOptions, plan_target,
};
use ritmo::store::{NewRun, NewTarget, RunStatus, Store, Trigger};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::TestRepo;

const TARGET: &str = "prod";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum K {
    Credential,
    Plugin,
    Job,
    Webhook,
}

impl K {
    const ALL: [K; 4] = [K::Credential, K::Plugin, K::Job, K::Webhook];

    fn dir(self) -> &'static str {
        match self {
            K::Credential => "credentials",
            K::Plugin => "plugins",
            K::Job => "jobs",
            K::Webhook => "webhooks",
        }
    }

    /// Short names: no two are close enough for a "did you mean" (whose ties are unordered).
    fn name(self, index: u8) -> String {
        let (prefix, pool) = match self {
            K::Credential => ("c", 5),
            K::Plugin => ("p", 4),
            K::Job => ("j", 6),
            K::Webhook => ("w", 4),
        };
        format!("{prefix}{}", index % pool)
    }
}

#[derive(Debug, Clone)]
struct Res {
    kind: K,
    name: String,
    version: u32,
    /// Job: credential and plugin; webhook: job and credential.
    refs: (String, String),
}

#[derive(Debug, Clone, Default)]
struct File {
    docs: Vec<Res>,
    reordered: bool,
    broken: bool,
}

#[derive(Debug, Clone, Default)]
struct Model {
    files: BTreeMap<String, File>,
    next: u32,
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        kind: u8,
        name: u8,
        a: u8,
        b: u8,
    },
    Edit {
        file: u8,
    },
    Reorder {
        file: u8,
    },
    RenameFile {
        file: u8,
    },
    Delete {
        file: u8,
    },
    Move {
        from: u8,
        to: u8,
    },
    RenameDoc {
        file: u8,
        name: u8,
    },
    Break {
        file: u8,
    },
    ForcePush {
        gc: bool,
    },
    /// Switch the target's prune policy (no commit).
    TogglePrune,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(kind, name, a, b)| Op::Add { kind, name, a, b }),
        3 => any::<u8>().prop_map(|file| Op::Edit { file }),
        1 => any::<u8>().prop_map(|file| Op::Reorder { file }),
        2 => any::<u8>().prop_map(|file| Op::RenameFile { file }),
        2 => any::<u8>().prop_map(|file| Op::Delete { file }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(from, to)| Op::Move { from, to }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(file, name)| Op::RenameDoc { file, name }),
        1 => any::<u8>().prop_map(|file| Op::Break { file }),
        1 => any::<bool>().prop_map(|gc| Op::ForcePush { gc }),
        1 => Just(Op::TogglePrune),
    ]
}

impl Model {
    fn initial() -> Self {
        let mut model = Model::default();
        let res = |kind, name: &str, a: &str, b: &str| Res {
            kind,
            name: name.into(),
            version: 0,
            refs: (a.into(), b.into()),
        };
        let file = |docs| File {
            docs,
            ..File::default()
        };
        model.files.insert(
            "credentials/c0.yaml".into(),
            file(vec![res(K::Credential, "c0", "", "")]),
        );
        model.files.insert(
            "credentials/c1.yaml".into(),
            file(vec![res(K::Credential, "c1", "", "")]),
        );
        model.files.insert(
            "plugins/all.yaml".into(),
            file(vec![
                res(K::Plugin, "p0", "", ""),
                res(K::Plugin, "p1", "", ""),
            ]),
        );
        model.files.insert(
            "jobs/j0.yaml".into(),
            file(vec![res(K::Job, "j0", "c0", "p0")]),
        );
        model.files.insert(
            "jobs/team/j1.yaml".into(),
            file(vec![res(K::Job, "j1", "c1", "p1")]),
        );
        model.files.insert(
            "webhooks/w0.yaml".into(),
            file(vec![res(K::Webhook, "w0", "j0", "c0")]),
        );
        model
    }

    fn pick(&self, index: u8) -> Option<String> {
        let len = self.files.len();
        (len > 0).then(|| {
            self.files
                .keys()
                .nth(usize::from(index) % len)
                .cloned()
                .unwrap_or_default()
        })
    }

    fn names(&self, kind: K) -> Vec<String> {
        self.files
            .values()
            .flat_map(|f| &f.docs)
            .filter(|r| r.kind == kind)
            .map(|r| r.name.clone())
            .collect()
    }

    /// An existing name of `kind` when there is one (so most references resolve), else any.
    fn reference(&self, kind: K, index: u8) -> String {
        let names = self.names(kind);
        if names.is_empty() {
            kind.name(index)
        } else {
            names[usize::from(index) % names.len()].clone()
        }
    }

    fn fresh_path(&mut self, kind: K, stem: &str) -> String {
        let mut path = format!("{}/{stem}.yaml", kind.dir());
        while self.files.contains_key(&path) {
            self.next += 1;
            path = format!("{}/{stem}-{}.yml", kind.dir(), self.next);
        }
        path
    }

    /// Applies `op`; returns whether it was a force-push and whether to gc.
    fn apply(&mut self, op: &Op) -> Option<bool> {
        match *op {
            Op::Add { kind, name, a, b } => {
                let kind = K::ALL[usize::from(kind) % K::ALL.len()];
                let name = kind.name(name);
                let refs = match kind {
                    K::Job => (
                        self.reference(K::Credential, a),
                        self.reference(K::Plugin, b),
                    ),
                    K::Webhook => (self.reference(K::Job, a), self.reference(K::Credential, b)),
                    _ => (String::new(), String::new()),
                };
                let path = self.fresh_path(kind, &name);
                self.files.insert(
                    path,
                    File {
                        docs: vec![Res {
                            kind,
                            name,
                            version: 0,
                            refs,
                        }],
                        ..File::default()
                    },
                );
            }
            Op::Edit { file } => {
                if let Some(path) = self.pick(file) {
                    let file = self.files.entry(path).or_default();
                    file.broken = false;
                    if let Some(doc) = file.docs.first_mut() {
                        doc.version += 1;
                    }
                }
            }
            Op::Reorder { file } => {
                if let Some(path) = self.pick(file) {
                    let file = self.files.entry(path).or_default();
                    file.reordered = !file.reordered;
                }
            }
            Op::RenameFile { file } => {
                if let Some(path) = self.pick(file)
                    && let Some(moved) = self.files.remove(&path)
                {
                    let kind = moved.docs.first().map_or(K::Job, |d| d.kind);
                    self.next += 1;
                    let stem = format!("renamed-{}", self.next);
                    let new_path = self.fresh_path(kind, &stem);
                    self.files.insert(new_path, moved);
                }
            }
            Op::Delete { file } => {
                if let Some(path) = self.pick(file) {
                    self.files.remove(&path);
                }
            }
            Op::Move { from, to } => {
                let (Some(from), Some(to)) = (self.pick(from), self.pick(to)) else {
                    return None;
                };
                let doc = self.files.get_mut(&from).and_then(|f| f.docs.pop())?;
                if self.files.get(&from).is_some_and(|f| f.docs.is_empty()) {
                    self.files.remove(&from);
                }
                let same_kind = to != from
                    && self
                        .files
                        .get(&to)
                        .and_then(|f| f.docs.first())
                        .is_some_and(|d| d.kind == doc.kind);
                let target = if same_kind {
                    to
                } else {
                    self.next += 1;
                    let stem = format!("moved-{}", self.next);
                    self.fresh_path(doc.kind, &stem)
                };
                self.files.entry(target).or_default().docs.push(doc);
            }
            Op::RenameDoc { file, name } => {
                if let Some(path) = self.pick(file)
                    && let Some(doc) = self.files.entry(path).or_default().docs.first_mut()
                {
                    doc.name = doc.kind.name(name);
                }
            }
            Op::Break { file } => {
                if let Some(path) = self.pick(file) {
                    self.files.entry(path).or_default().broken = true;
                }
            }
            Op::ForcePush { gc } => return Some(gc),
            Op::TogglePrune => {}
        }
        None
    }

    fn render(&self, repo: &TestRepo) {
        for kind in K::ALL {
            let dir = repo.path().join(kind.dir());
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
        for (path, file) in &self.files {
            repo.write(path, render_file(file));
        }
    }
}

fn render_file(file: &File) -> String {
    if file.broken {
        return "apiVersion: ritmo.dev/v1\nkind: [unclosed\n".into();
    }
    let docs: Vec<String> = file
        .docs
        .iter()
        .map(|doc| render_doc(doc, file.reordered))
        .collect();
    docs.join("---\n")
}

fn render_doc(doc: &Res, reordered: bool) -> String {
    let (kind, spec) = match doc.kind {
        K::Credential => (
            "Credential",
            [
                format!("  description: v{}\n", doc.version),
                "  type: api_key\n".into(),
                format!(
                    "  secret_ref:\n    provider: aws_secrets_manager\n    key: prod/{}\n    region: us-east-1\n",
                    doc.name
                ),
            ],
        ),
        K::Plugin => (
            "Plugin",
            [
                format!("  description: v{}\n  type: build\n", doc.version),
                format!("  binary_path: /opt/ritmo/plugins/{}\n", doc.name),
                format!("  version: 1.0.{}\n  enabled: true\n", doc.version),
            ],
        ),
        K::Job => (
            "Job",
            [
                format!("  description: v{}\n  timeout: 30\n", doc.version),
                format!(
                    "  scm:\n    type: github\n    url: https://github.com/acme/{}\n    credentials: {}\n",
                    doc.name, doc.refs.0
                ),
                format!(
                    "  pipeline:\n    stages:\n      - name: build\n        steps:\n          - plugin: {}\n",
                    doc.refs.1
                ),
            ],
        ),
        K::Webhook => (
            "Webhook",
            [
                format!("  job: {}\n  source: github\n", doc.refs.0),
                format!("  secret_token_credential: {}\n", doc.refs.1),
                format!(
                    "  events: [push]\n  enabled: {}\n",
                    doc.version.is_multiple_of(2)
                ),
            ],
        ),
    };
    let mut text = String::new();
    let spec: String = if reordered {
        spec.iter().rev().cloned().collect()
    } else {
        spec.concat()
    };
    let metadata = format!("metadata:\n  name: {}\n", doc.name);
    if reordered {
        let _ = write!(
            text,
            "spec:\n{spec}{metadata}kind: {kind}\napiVersion: ritmo.dev/v1\n"
        );
    } else {
        let _ = write!(
            text,
            "apiVersion: ritmo.dev/v1\nkind: {kind}\n{metadata}spec:\n{spec}"
        );
    }
    text
}

fn settings(prune: bool) -> TargetSettings {
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
        policy: PlanPolicy {
            prune,
            max_delete_percent: 100,
            ..PlanPolicy::default()
        },
        auth: GitAuth::None,
    }
}

fn source(repo: &TestRepo, cache: &tempfile::TempDir) -> SourceSpec {
    SourceSpec {
        location: RepoLocation::Local(repo.path().to_path_buf()),
        branch: Some("main".into()),
        path: String::new(),
        worktree: false,
        auth: Auth::None,
        cache_dir: cache.path().to_path_buf(),
    }
}

async fn plan(store: &Store, source: &SourceSpec, prune: bool, full: bool) -> PlannedTarget {
    let mut planned = plan_target(
        store,
        &settings(prune),
        source,
        Checks {
            keys: &CredentialKeys::default(),
            refs: &SecretRefChecker::off("the checker is off in these tests"),
            builtin_plugins: &BTreeSet::new(),
        },
        &Limits::default(),
        ScanOptions {
            full,
            ..ScanOptions::default()
        },
    )
    .await
    .unwrap();
    // Unchecked secret references are reported only for the files a scan reads, which by
    // design differs between a full and an incremental scan; this test is about the rest.
    planned
        .checked
        .diagnostics
        .retain(|diagnostic| diagnostic.code != ritmo::diagnostic::Code::W103);
    planned
}

/// Records and applies `planned` (approval granted) unless it has errors or changes nothing
/// at the commit already applied. Returns whether it applied.
async fn apply(store: &mut Store, planned: &PlannedTarget) -> bool {
    let Some(plan) = &planned.plan else {
        return false;
    };
    if plan.has_errors()
        || (!plan.has_changes() && plan.base.commit.as_deref() == plan.revision.commit())
    {
        return false;
    }
    let sync_id = store
        .begin_run(&NewRun {
            target: TARGET.into(),
            trigger: Trigger::Manual,
            actor: None,
            revision: Some(plan.revision.to_string()),
            dry_run: false,
        })
        .await
        .unwrap();
    store
        .record_plan(sync_id, plan, RunStatus::Planned)
        .await
        .unwrap();
    let outcome = apply_plan(store, sync_id, plan).await.unwrap();
    assert!(matches!(outcome, ApplyOutcome::Applied(_)), "{outcome:?}");
    true
}

fn force_push(repo: &TestRepo, gc: bool) {
    repo.git(&["checkout", "--quiet", "--orphan", "rewritten"]);
    repo.commit("rewritten history");
    repo.git(&["branch", "--quiet", "-D", "main"]);
    repo.git(&["branch", "--quiet", "-m", "main"]);
    if gc {
        repo.git(&["reflog", "expire", "--expire=now", "--all"]);
        repo.git(&["gc", "--quiet", "--prune=now"]);
    }
}

static INCREMENTAL_STEPS: AtomicUsize = AtomicUsize::new(0);
static STEPS: AtomicUsize = AtomicUsize::new(0);

async fn run_history(ops: Vec<Op>, mut prune: bool) {
    let db = TestDb::new().await;
    let mut store = Store::connect(&db.url).await.unwrap();
    let target = settings(prune);
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
    let cache = tempfile::tempdir().unwrap();
    let source = source(&repo, &cache);
    let mut model = Model::initial();
    model.render(&repo);
    repo.commit("initial");
    let first = plan(&store, &source, prune, false).await;
    assert_eq!(
        first.mode,
        ScanMode::Full {
            reason: FullScanReason::NoAppliedCommit
        }
    );
    assert_eq!(
        first.checked.diagnostics,
        [],
        "the initial repository is valid"
    );
    assert!(apply(&mut store, &first).await);
    let mut base_collected = false;

    for op in &ops {
        let force = model.apply(op);
        model.render(&repo);
        match force {
            _ if matches!(op, Op::TogglePrune) => prune = !prune,
            Some(gc) => {
                force_push(&repo, gc);
                base_collected |= gc;
            }
            None => {
                repo.commit(&format!("{op:?}"));
            }
        }

        let incremental = plan(&store, &source, prune, false).await;
        let full = plan(&store, &source, prune, true).await;

        assert_eq!(
            incremental.checked.diagnostics, full.checked.diagnostics,
            "diagnostics after {op:?} ({})",
            incremental.mode
        );
        assert_eq!(
            incremental.plan, full.plan,
            "plan after {op:?} ({}, prune {prune})",
            incremental.mode
        );
        STEPS.fetch_add(1, Ordering::Relaxed);
        match &incremental.mode {
            ScanMode::Incremental { .. } => {
                INCREMENTAL_STEPS.fetch_add(1, Ordering::Relaxed);
            }
            ScanMode::Full {
                reason: FullScanReason::BaseUnavailable { .. },
            } => assert!(base_collected, "base unavailable without a gc"),
            ScanMode::Full { reason } => panic!("unexpected full scan after {op:?}: {reason}"),
        }
        if apply(&mut store, &incremental).await {
            base_collected = false;
        }
    }
}

#[test]
fn incremental_plans_equal_full_plans_over_random_histories() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        // PROPTEST_CASES=200 for a longer search; 12 keeps the suite well under a minute.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(12),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });

    let histories = (proptest::collection::vec(op(), 1..10), any::<bool>());
    let result = runner.run(&histories, |(ops, prune)| {
        runtime.block_on(run_history(ops, prune));
        Ok(())
    });

    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (steps, incremental) = (
        STEPS.load(Ordering::Relaxed),
        INCREMENTAL_STEPS.load(Ordering::Relaxed),
    );
    eprintln!("{incremental} of {steps} steps incremental");
    assert!(
        incremental * 2 > steps,
        "only {incremental} of {steps} steps planned incrementally"
    );
}

/// A target at an applied first commit of the initial model, over `source`.
async fn applied(db: &TestDb, source: &SourceSpec, prune: bool) -> Store {
    let mut store = Store::connect(&db.url).await.unwrap();
    let target = settings(prune);
    store
        .ensure_target(&NewTarget {
            name: target.name.clone(),
            repo_url: target.repo_url.clone(),
            branch: target.branch.clone(),
            path: target.path.clone(),
        })
        .await
        .unwrap();
    let first = plan(&store, source, prune, false).await;
    assert!(apply(&mut store, &first).await);
    store
}

fn initial_repo() -> TestRepo {
    let repo = TestRepo::new();
    Model::initial().render(&repo);
    repo.commit("initial");
    repo
}

#[tokio::test]
async fn a_remote_repository_is_planned_from_its_cache_parsing_only_the_changed_file() {
    let repo = initial_repo();
    let server = ritmo_tests::git_http::GitHttpServer::start(repo.path(), None);
    let cache = tempfile::tempdir().unwrap();
    let source = SourceSpec {
        location: RepoLocation::parse(&server.url(".git")).unwrap(),
        ..source(&repo, &cache)
    };
    let db = TestDb::new().await;
    let store = applied(&db, &source, true).await;
    let mut model = Model::initial();
    model.apply(&Op::Edit { file: 3 });
    model.render(&repo);
    let commit = repo.commit("edit one job");

    let incremental = plan(&store, &source, true, false).await;
    let full = plan(&store, &source, true, true).await;

    assert!(
        matches!(
            incremental.mode,
            ScanMode::Incremental {
                changed_files: 1,
                parsed_files: 1,
                ..
            }
        ),
        "{}",
        incremental.mode
    );
    assert_eq!(incremental.checked.revision.commit(), Some(commit.as_str()));
    let plan = incremental.plan.unwrap();
    assert_eq!(plan.summary().update, 1);
    assert_eq!(plan.summary().unchanged, 6);
    assert_eq!(Some(plan), full.plan);
}

/// Issue 22, finding 5: an incremental plan held every changed file twice and re-read its
/// directory once per file, so 10,000 changed files took 4-8 GB where the full scan took 110 MB.
/// Past a quarter of the inventory the full scan runs instead, and plans the same.
#[tokio::test]
async fn changing_more_than_a_quarter_of_the_inventory_scans_the_whole_tree() {
    let repo = initial_repo();
    let job = |i: usize, revision: usize| {
        format!(
            "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: bulk-{i:03}\nspec:\n  \
             description: bulk {i} revision {revision}\n"
        )
    };
    for i in 0..500 {
        repo.write(&format!("jobs/bulk/{i:03}.yaml"), job(i, 0));
    }
    repo.commit("five hundred jobs");
    let cache = tempfile::tempdir().unwrap();
    let source = source(&repo, &cache);
    let db = TestDb::new().await;
    let store = applied(&db, &source, true).await;

    for i in 0..120 {
        repo.write(&format!("jobs/bulk/{i:03}.yaml"), job(i, 1));
    }
    repo.commit("edit 120");
    let some = plan(&store, &source, true, false).await;
    for i in 120..150 {
        repo.write(&format!("jobs/bulk/{i:03}.yaml"), job(i, 1));
    }
    repo.commit("edit 150");
    let most = plan(&store, &source, true, false).await;
    let full = plan(&store, &source, true, true).await;

    assert!(
        matches!(
            some.mode,
            ScanMode::Incremental {
                changed_files: 120,
                ..
            }
        ),
        "{}",
        some.mode
    );
    assert_eq!(
        most.mode,
        ScanMode::Full {
            reason: FullScanReason::ManyChanges { most: 126 }
        }
    );
    assert_eq!(
        most.plan.as_ref().map(|plan| plan.summary().update),
        Some(150)
    );
    assert_eq!(most.plan, full.plan);
}

#[tokio::test]
async fn deleting_a_credential_still_reports_its_untouched_referrers() {
    let repo = initial_repo();
    let cache = tempfile::tempdir().unwrap();
    let source = source(&repo, &cache);
    let db = TestDb::new().await;
    let store = applied(&db, &source, true).await;
    repo.remove("credentials/c0.yaml");
    repo.commit("delete c0");

    let planned = plan(&store, &source, true, false).await;

    assert!(matches!(planned.mode, ScanMode::Incremental { .. }));
    assert!(planned.plan.is_none());
    let referrers: Vec<(&str, &str)> = planned
        .checked
        .diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.path.as_str()))
        .collect();
    assert_eq!(
        referrers,
        [("E300", "jobs/j0.yaml"), ("E300", "webhooks/w0.yaml")]
    );
}

#[tokio::test]
async fn drift_a_changed_path_and_a_request_each_force_a_full_scan() {
    let repo = initial_repo();
    let cache = tempfile::tempdir().unwrap();
    let source = source(&repo, &cache);
    let db = TestDb::new().await;
    let store = applied(&db, &source, true).await;
    repo.write("README.md", "not a resource\n");
    repo.commit("docs");

    let quiet = plan(&store, &source, true, false).await;
    let requested = plan(&store, &source, true, true).await;
    db.client()
        .await
        .batch_execute("UPDATE resources SET spec = '{}'::jsonb WHERE name = 'j1'")
        .await
        .unwrap();
    let drifted = plan(&store, &source, true, false).await;

    assert!(
        matches!(
            quiet.mode,
            ScanMode::Incremental {
                changed_files: 0,
                ..
            }
        ),
        "{}",
        quiet.mode
    );
    assert_eq!(
        requested.mode,
        ScanMode::Full {
            reason: FullScanReason::Requested
        }
    );
    assert_eq!(
        drifted.mode,
        ScanMode::Full {
            reason: FullScanReason::DriftRecorded
        }
    );
    assert_eq!(drifted.plan.unwrap().summary().update, 1);

    store
        .ensure_target(&NewTarget {
            name: TARGET.into(),
            repo_url: "file:///config".into(),
            branch: "main".into(),
            path: "config".into(),
        })
        .await
        .unwrap();
    let moved = plan(&store, &source, true, false).await;

    assert_eq!(
        moved.mode,
        ScanMode::Full {
            reason: FullScanReason::TargetChanged
        }
    );
}

#[tokio::test]
async fn rows_hashed_by_another_canonical_form_force_a_full_scan_that_rewrites_them() {
    let repo = initial_repo();
    let cache = tempfile::tempdir().unwrap();
    let source = source(&repo, &cache);
    let db = TestDb::new().await;
    let store = applied(&db, &source, true).await;
    // As an older build would have left them: not drift, written within a sync.
    db.client()
        .await
        .batch_execute(
            "BEGIN; SELECT set_config('ritmo.sync_id', 'older-build', true);
             UPDATE resources SET hash_version = 0; COMMIT;",
        )
        .await
        .unwrap();
    repo.write("README.md", "upgrade\n");
    repo.commit("docs");

    let planned = plan(&store, &source, true, false).await;

    assert_eq!(
        planned.mode,
        ScanMode::Full {
            reason: FullScanReason::HashVersionChanged
        }
    );
    assert_eq!(planned.plan.unwrap().summary().update, 7);
}

/// The planner's path (`workflow::handle_plan_request`) over a served repository, with the
/// local queues and captured metrics.
mod through_the_pipeline {
    use std::collections::BTreeSet;

    use ritmo::config::{GitAuth, Settings, TargetSettings};
    use ritmo::git::{Auth, GitCache, NetworkOptions, RepoLocation};
    use ritmo::manifest::Limits;
    use ritmo::message::{PlanRequest, Trigger};
    use ritmo::metrics::MetricsSink;
    use ritmo::plan::{Plan, PlanPolicy};
    use ritmo::queue::{LocalReceivers, Queues};
    use ritmo::services::Services;
    use ritmo::source::SourceSpec;
    use ritmo::source::incremental::{self, PlannedTarget, ScanMode};
    use ritmo::workflow::{self, PlanRequestOutcome};
    use ritmo_tests::db::TestDb;
    use ritmo_tests::git_http::{ServedRepo, run_git};
    use secrecy::SecretString;

    use super::{Model, Op, TARGET};

    /// The planner metrics' `scan` and `scan_reason`.
    type Scan = (String, Option<String>);

    fn incremental() -> Scan {
        ("incremental".to_string(), None)
    }

    struct Stack {
        services: Services,
        receivers: LocalReceivers,
        remote: ServedRepo,
        cache: tempfile::TempDir,
        _db: TestDb,
    }

    impl Stack {
        async fn start() -> Stack {
            let db = TestDb::new().await;
            let remote = ServedRepo::new();
            let cache = tempfile::tempdir().unwrap();
            let settings = Settings {
                enabled: true,
                targets: vec![target(&remote)],
                builtin_plugins: BTreeSet::new(),
                database_url: Some(SecretString::from(db.url.clone())),
                cache_dir: cache.path().to_path_buf(),
                ..Settings::default()
            };
            let (queues, receivers) = Queues::local();
            let services = Services::connect(settings, queues, MetricsSink::capture())
                .await
                .unwrap();
            Stack {
                services,
                receivers,
                remote,
                cache,
                _db: db,
            }
        }

        /// Handles `request` and applies the plan it sent to the apply queue. Returns the plan
        /// and the planner's scan mode (`scan`, `scan_reason` of its metrics).
        async fn plan_and_apply(&mut self, request: PlanRequest) -> (Plan, Scan) {
            let outcome = workflow::handle_plan_request(&self.services, &request)
                .await
                .unwrap();
            let scan = self.last_scan();
            let PlanRequestOutcome::Planned {
                sync_id,
                apply_enqueued: true,
                ..
            } = &outcome
            else {
                panic!("expected a plan sent to the applier, got {outcome:?}");
            };
            let plan = {
                let store = self.services.store.lock().await;
                store.load_plan(*sync_id).await.unwrap().unwrap()
            };
            let apply = self.receivers.applies.try_recv().unwrap();
            workflow::handle_apply_request(&self.services, &apply)
                .await
                .unwrap();
            (plan, scan)
        }

        /// The `scan` and `scan_reason` properties of the last metrics line.
        fn last_scan(&self) -> Scan {
            let lines = self.services.metrics.lines();
            let line: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
            (
                line["scan"].as_str().unwrap_or_default().to_string(),
                line["scan_reason"].as_str().map(str::to_owned),
            )
        }

        /// The plan a full scan of `commit` (the branch head when `None`) gives now, read
        /// through a cache of its own.
        async fn full_plan(&self, commit: Option<&str>) -> Plan {
            let cache = tempfile::tempdir().unwrap();
            let source = source(&self.remote, &cache);
            let located = incremental::locate(&source, commit).await.unwrap();
            let store = self.services.store.lock().await;
            let PlannedTarget { mode, plan, .. } = incremental::plan_located(
                &store,
                &target(&self.remote),
                &source,
                self.services.checks().await.unwrap(),
                &Limits::default(),
                incremental::ScanOptions {
                    full: true,
                    preview: true,
                    ..Default::default()
                },
                located,
            )
            .await
            .unwrap();
            assert!(matches!(mode, ScanMode::Full { .. }));
            plan.unwrap()
        }

        /// The target's cache (what a warm Lambda container keeps in /tmp).
        fn target_cache(&self) -> std::path::PathBuf {
            self.cache.path().join(TARGET)
        }
    }

    fn target(remote: &ServedRepo) -> TargetSettings {
        TargetSettings {
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
        }
    }

    fn source(remote: &ServedRepo, cache: &tempfile::TempDir) -> SourceSpec {
        SourceSpec {
            location: RepoLocation::parse(&remote.url()).unwrap(),
            branch: Some("main".into()),
            path: String::new(),
            worktree: false,
            auth: Auth::None,
            cache_dir: cache.path().to_path_buf(),
        }
    }

    fn webhook(commit: &str, delivery: &str) -> PlanRequest {
        PlanRequest::new(TARGET, Trigger::Webhook, chrono::Utc::now())
            .with_revision(format!("main@sha1:{commit}"))
            .with_delivery_id(delivery)
    }

    /// Empty commits, pushed: history the shallow cache does not hold.
    fn push_empty(remote: &ServedRepo, count: usize) {
        for i in 0..count {
            remote.repo.git(&[
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                &format!("empty {i}"),
            ]);
        }
        remote.push("after the empty ones");
    }

    fn is_shallow(repo: &std::path::Path) -> bool {
        run_git(repo, &["rev-parse", "--is-shallow-repository"]) == "true"
    }

    fn has_commit(repo: &std::path::Path, commit: &str) -> bool {
        std::process::Command::new("git")
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .current_dir(repo)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// The initial model applied through a webhook; returns its commit.
    async fn applied_initial(stack: &mut Stack) -> String {
        Model::initial().render(&stack.remote.repo);
        let first = stack.remote.push("initial model");
        let (plan, (scan, reason)) = stack.plan_and_apply(webhook(&first, "d-1")).await;
        assert_eq!(plan.summary().create, 7);
        assert_eq!(scan, "full");
        assert_eq!(
            reason.as_deref(),
            Some("nothing was applied to the target yet")
        );
        first
    }

    fn edit_one_job(stack: &Stack) -> String {
        let mut model = Model::initial();
        model.apply(&Op::Edit { file: 3 });
        model.render(&stack.remote.repo);
        stack.remote.push("edit one job")
    }

    #[tokio::test]
    async fn a_webhook_plan_after_one_changed_file_is_incremental_and_equals_the_full_plan() {
        let mut stack = Stack::start().await;
        applied_initial(&mut stack).await;
        let second = edit_one_job(&stack);
        let expected = stack.full_plan(None).await;

        let (plan, scan) = stack.plan_and_apply(webhook(&second, "d-2")).await;

        assert_eq!(scan, incremental());
        assert_eq!(plan.revision.commit(), Some(second.as_str()));
        assert_eq!(plan.summary().update, 1);
        assert_eq!(plan.summary().unchanged, 6);
        assert_eq!(plan, expected);
    }

    #[tokio::test]
    async fn a_rollback_to_a_commit_beyond_a_cold_shallow_cache_is_deepened_and_planned_incrementally()
     {
        let mut stack = Stack::start().await;
        // History behind the rollback target, so that deepening does not reach the root.
        push_empty(&stack.remote, 30);
        let first = applied_initial(&mut stack).await;
        push_empty(&stack.remote, 3);
        let second = edit_one_job(&stack);
        let (_, scan) = stack.plan_and_apply(webhook(&second, "d-2")).await;
        assert_eq!(scan, incremental());
        // A cold container: the cache in /tmp is gone.
        std::fs::remove_dir_all(stack.target_cache()).unwrap();
        let expected = stack.full_plan(Some(&first)).await;

        workflow::rollback(&stack.services, TARGET, &first, "jane")
            .await
            .unwrap();
        let request = stack.receivers.plans.try_recv().unwrap();
        let (plan, scan) = stack.plan_and_apply(request).await;

        assert_eq!(scan, incremental());
        assert_eq!(plan, expected);
        assert_eq!(plan.summary().update, 1);
        let repo = stack.target_cache().join("repo.git");
        assert!(is_shallow(&repo), "the cache was cloned whole");
        assert!(has_commit(&repo, &first));
        let store = stack.services.store.lock().await;
        let state = store.target(TARGET).await.unwrap().unwrap();
        assert_eq!(state.last_applied_commit.as_deref(), Some(first.as_str()));
        assert_eq!(state.pinned_commit.as_deref(), Some(first.as_str()));
    }

    #[tokio::test]
    async fn a_base_commit_beyond_a_shallow_cache_is_reached_by_deepening_and_planned_incrementally()
     {
        let mut stack = Stack::start().await;
        let first = applied_initial(&mut stack).await;
        // Further back than the first deepening step reaches.
        push_empty(&stack.remote, 20);
        let second = edit_one_job(&stack);
        let location = source(&stack.remote, &stack.cache).location;
        let shallow = NetworkOptions {
            shallow_depth: std::num::NonZeroU32::new(1),
            ..NetworkOptions::default()
        };
        let probe = tempfile::tempdir().unwrap();
        let probe_cache = GitCache::new(probe.path());
        let probed = {
            let location = location.clone();
            let shallow = shallow.clone();
            let first = first.clone();
            tokio::task::spawn_blocking(move || {
                let fetched = probe_cache
                    .fetch(&location, "main", &Auth::None, &shallow)
                    .unwrap();
                let absent = !has_commit(&probe_cache.repository_path(), &first);
                let found = probe_cache
                    .find_commit(&location, "main", &Auth::None, &shallow, &first)
                    .unwrap();
                (fetched.shallow, absent, found)
            })
            .await
            .unwrap()
        };
        std::fs::remove_dir_all(stack.target_cache()).unwrap();
        let expected = stack.full_plan(None).await;

        let (plan, scan) = stack.plan_and_apply(webhook(&second, "d-2")).await;

        let (fetched_shallow, absent, found) = probed;
        assert!(fetched_shallow);
        assert!(absent, "a depth-1 fetch holds only the head");
        assert_eq!(found.commit, first);
        assert_eq!(found.deepened, 2, "{found:?}");
        assert_eq!(scan, incremental());
        assert_eq!(plan.summary().update, 1);
        assert_eq!(plan, expected);
    }
}
