//! Incremental plans: diff the last applied commit against the new one, parse only the files
//! that changed, and plan against live state overlaid with the changes (DESIGN §4).
//!
//! The overlay is: every resource of the target's inventory whose file did not change (taken
//! as unchanged, and only counted, so the cost follows the changed files, not the inventory),
//! plus every document of the changed files. Three things make it give the full scan's plan:
//! - the ids a changed file defined at the base commit come from parsing the base version of
//!   that file, not from stored bookkeeping, so a deleted, renamed or moved resource is always
//!   known;
//! - unchanged files that must be read again to reproduce the full scan's diagnostics are
//!   pulled in: the files of resources that mention a removed id (E300 must still fire) and the
//!   file of an untouched resource that a changed file defines again (E211 names both);
//! - everything the overlay takes on trust is checked first (no drift recorded, so every
//!   managed row is as its inventory entry says; the rows' hash version is this build's;
//!   pulled-in files define exactly what the store says), and anything doubtful falls back to
//!   a full scan, with the reason.
//!
//! Any commit can be planned this way, not only the branch head: a rollback's older commit or
//! one on a force-pushed history diffs against the last applied commit just as well, since a
//! tree diff compares contents, not history. A remote repository is first fetched at depth 1;
//! when the last applied commit lies beyond the shallow boundary, the cache's history is
//! deepened to reach it (see `GitCache::find_commit`).
//!
//! A full scan runs when asked (`--full`), for a working tree, without a last applied commit,
//! after the target's repository, branch or path changed, with drift recorded, or when the base
//! commit is gone from the repository even after deepening (force-push and gc). Does not record
//! runs or apply: the plan step (`workflow::plan_revision`) does.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Checked, Checks, SourceSpec};
use crate::config::TargetSettings;
use crate::crypto::CredentialKeys;
use crate::crypto::secret_refs::SecretRefChecker;
use crate::diagnostic::{self, Code, Diagnostic};
use crate::git::{self, ChangeKind, GitCache, GitError, RepoLocation, Snapshot};
use crate::hash::HASH_VERSION;
use crate::manifest::{self, Limits, Manifest, SourceFile, did_you_mean};
use crate::model::{DesiredResource, Kind, ResourceId, Revision};
use crate::parallel;
use crate::plan::{self, Plan, PlanBase};
use crate::store::{AppliedBase, PlanningState, Store};
use crate::validate::{self, ValidationContext};
use crate::{Error, Result};

/// Why a plan scanned the whole tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FullScanReason {
    /// The caller asked for it (`--full`).
    Requested,
    /// A working tree has no commit to diff.
    WorkingTree,
    /// Nothing was applied to the target yet.
    NoAppliedCommit,
    /// The target's repository, branch or path changed since the last apply.
    TargetChanged,
    /// Rows of the target were changed outside a sync.
    DriftRecorded,
    /// The base commit cannot be diffed (gone after a force-push and gc, not in the branch's
    /// history even after deepening a shallow cache, ...).
    BaseUnavailable { detail: String },
    /// A row the overlay would take as unchanged differs from the inventory (hash, hash
    /// version, drift, or the row is gone).
    LiveStateDiffers { id: String },
    /// The stored source paths do not match the files (a resource moved without a change
    /// before paths were recorded).
    SourcePathsOutOfDate { path: String },
    /// A file of the base commit no longer loads cleanly (limits changed).
    BaseUnreadable { path: String },
    /// The rows were hashed by another version of the canonical form: all are rewritten.
    HashVersionChanged,
    /// So many files changed that the whole tree costs less to read than the diff, which
    /// reads and parses each changed file twice (before and after).
    ManyChanges { most: usize },
}

impl fmt::Display for FullScanReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FullScanReason::Requested => f.write_str("a full scan was requested"),
            FullScanReason::WorkingTree => f.write_str("a working tree has no commit to diff"),
            FullScanReason::NoAppliedCommit => f.write_str("nothing was applied to the target yet"),
            FullScanReason::TargetChanged => {
                f.write_str("the target's settings changed since the last apply")
            }
            FullScanReason::DriftRecorded => f.write_str("drift is recorded for the target"),
            FullScanReason::BaseUnavailable { detail } => write!(f, "{detail}"),
            FullScanReason::LiveStateDiffers { id } => {
                write!(f, "`{id}` in the database differs from the inventory")
            }
            FullScanReason::SourcePathsOutOfDate { path } => {
                write!(f, "the stored source paths of `{path}` are out of date")
            }
            FullScanReason::ManyChanges { most } => write!(
                f,
                "more than {most} files changed: the whole tree costs less to read"
            ),
            FullScanReason::HashVersionChanged => {
                f.write_str("the rows were hashed with another canonical form")
            }
            FullScanReason::BaseUnreadable { path } => {
                write!(f, "`{path}` at the last applied commit no longer loads")
            }
        }
    }
}

/// How a plan read the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ScanMode {
    Full {
        reason: FullScanReason,
    },
    Incremental {
        base_commit: String,
        /// Paths the diff reported (added, modified or deleted resource files).
        changed_files: usize,
        /// Files parsed: the added and modified ones, plus unchanged files pulled in to
        /// re-check references to removed ids and duplicates.
        parsed_files: usize,
    },
}

impl fmt::Display for ScanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanMode::Full { reason } => write!(f, "full scan ({reason})"),
            ScanMode::Incremental {
                base_commit,
                changed_files,
                parsed_files,
            } => write!(
                f,
                "incremental from {} ({changed_files} changed files, {parsed_files} parsed)",
                base_commit.get(..12).unwrap_or(base_commit)
            ),
        }
    }
}

/// What [`plan_target`] read and decided.
#[derive(Debug, Clone)]
pub struct PlannedTarget {
    pub mode: ScanMode,
    /// The revision, the documents parsed and every diagnostic. An incremental scan keeps the
    /// documents of the files it parsed; a full scan that planned has moved them into `plan`.
    pub checked: Checked,
    /// `None` when `checked` has errors: nothing may be planned from a broken read.
    pub plan: Option<Plan>,
    /// Time spent fetching the repository (or resolving a local branch).
    pub fetch: Duration,
    /// Time spent in each later stage, in order (`diff`, `parse`, `live state`, ...).
    pub stages: Vec<(&'static str, Duration)>,
}

/// How a plan may read: the whole tree on request, and whether it may write its bookkeeping
/// (a preview writes nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOptions {
    /// Scan the whole tree even when an incremental plan would be safe.
    pub full: bool,
    /// Write nothing, not even the moved source paths.
    pub preview: bool,
    /// The target's repository, branch or path differ from its registration, which a
    /// preview does not update: its last applied commit says nothing about this source.
    pub target_changed: bool,
}

/// Stage timings of one plan.
struct Laps {
    last: Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    fn start() -> Laps {
        Laps {
            last: Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, stage: &'static str) {
        let now = Instant::now();
        self.laps.push((stage, now - self.last));
        self.last = now;
    }
}

/// Reads the target's repository (fetching a remote one into its cache), checks it and plans
/// the branch head against the database: incrementally from the last applied commit when that
/// is safe, otherwise (or when `full`) from the whole tree. Both give the same plan.
///
/// Call it after `Store::ensure_target`. Records nothing except moved source paths
/// (bookkeeping, skipped by a preview): the caller records the run and applies. After a stale apply, call it again
/// (the overlay is only valid against the generation it read).
pub async fn plan_target(
    store: &Store,
    target: &TargetSettings,
    source: &SourceSpec,
    checks: Checks<'_>,
    limits: &Limits,
    options: ScanOptions,
) -> Result<PlannedTarget> {
    let located = locate(source, None).await?;
    plan_located(store, target, source, checks, limits, options, located).await
}

/// A repository made ready for planning one commit: a remote one fetched into its cache
/// (shallow on the first fetch), a local one resolved. See [`locate`].
#[derive(Debug)]
pub struct LocatedSource {
    head: Head,
    fetch: Duration,
}

impl LocatedSource {
    /// The commit to plan, with the branch it was read for.
    pub fn revision(&self) -> &Revision {
        &self.head.revision
    }

    /// Time spent fetching (or resolving a local commit).
    pub fn fetch(&self) -> Duration {
        self.fetch
    }
}

/// Fetches a remote repository into its cache (depth 1 into an empty cache; later fetches
/// bring only new objects), or resolves a local one, and fixes the commit to plan: `commit`
/// (full or abbreviated hex: a rollback, a pin, a manual revision) or else the branch head.
/// A commit older than a shallow cache's boundary is fetched by deepening the branch's
/// history; one that is not in that history is [`GitError::CommitNotFound`].
///
/// Separate from [`plan_located`] so that the caller can look at the commit (is it already
/// applied?) before planning, and need not hold the database while the network is used.
pub async fn locate(source: &SourceSpec, commit: Option<&str>) -> Result<LocatedSource> {
    locate_at(source, commit, None).await
}

/// [`locate`] for a pull request's preview: `commit` is fetched by the pull request's ref in
/// the target's repository (`refs/pull/7/head`), so a fork's head is read without ever
/// reaching the fork. Its files are only read, never run.
pub async fn locate_pull_request(
    source: &SourceSpec,
    commit: &str,
    pull_ref: &str,
) -> Result<LocatedSource> {
    locate_at(source, Some(commit), Some(pull_ref)).await
}

async fn locate_at(
    source: &SourceSpec,
    commit: Option<&str>,
    pull_ref: Option<&str>,
) -> Result<LocatedSource> {
    crate::progress::report(crate::progress::Stage::Reading);
    if source.worktree {
        if let Some(commit) = commit {
            return Err(Error::InvalidRequest(format!(
                "cannot plan commit `{commit}` of a working tree: it is read as it is on disk"
            )));
        }
        return Ok(LocatedSource {
            head: Head {
                repo: PathBuf::new(),
                revision: Revision::Worktree,
                cache: None,
                network: None,
            },
            fetch: Duration::ZERO,
        });
    }
    let started = Instant::now();
    let source = source.clone();
    let commit = commit.map(str::to_owned);
    let pull_ref = pull_ref.map(str::to_owned);
    let head = blocking(move || match &source.location {
        RepoLocation::Remote(_) => {
            let branch = source.branch.as_deref().unwrap_or("main");
            let cache = GitCache::new(&source.cache_dir);
            let network = Network {
                location: source.location.clone(),
                branch: branch.to_string(),
                auth: source.auth.clone(),
                options: git::NetworkOptions {
                    shallow_depth: FIRST_FETCH_DEPTH,
                    ..git::NetworkOptions::default()
                },
            };
            let fetched =
                cache.fetch(&network.location, branch, &network.auth, &network.options)?;
            // A head already fetched (a pull request from the branch itself, a second
            // preview of the same commit) needs no second round trip.
            if let Some(pull_ref) = &pull_ref
                && let Some(commit) = &commit
                && !cache.contains_commit(commit)?
            {
                cache.fetch_pull_request(
                    &network.location,
                    branch,
                    pull_ref,
                    &network.auth,
                    &network.options,
                )?;
            }
            let revision = match commit {
                None => fetched.revision,
                Some(commit) => {
                    let found = network.find_commit(&cache, &commit)?;
                    Revision::Commit {
                        branch: branch.to_string(),
                        commit: found.commit,
                    }
                }
            };
            Ok(Head {
                repo: cache.repository_path(),
                revision,
                cache: Some(cache),
                network: Some(network),
            })
        }
        RepoLocation::Local(path) => {
            let tip = resolve_local(path, source.branch.as_deref())?;
            let revision = match (commit, tip) {
                (Some(commit), Revision::Commit { branch, .. }) => Revision::Commit {
                    branch,
                    commit: git::resolve_commit(path, &commit)?,
                },
                (_, tip) => tip,
            };
            Ok(Head {
                repo: path.clone(),
                revision,
                cache: None,
                network: None,
            })
        }
    })
    .await?;
    Ok(LocatedSource {
        head,
        fetch: started.elapsed(),
    })
}

/// Depth of the first fetch into an empty cache: the head commit, its tree and blobs. Older
/// commits are fetched by deepening when a plan needs them.
const FIRST_FETCH_DEPTH: Option<std::num::NonZeroU32> = std::num::NonZeroU32::new(1);

/// Checks the commit `located` holds and plans it against the database (see [`plan_target`]):
/// incrementally from the last applied commit, whether the commit is newer, older or on a
/// rewritten history (a tree diff compares contents, not history), when that is safe;
/// otherwise (or when `full`) from the whole tree.
///
/// `source` must be the one `located` came from. Each update of the plan carries its field
/// diff against the live row, each delete the fields that go (`plan::describe_changes`).
pub async fn plan_located(
    store: &Store,
    target: &TargetSettings,
    source: &SourceSpec,
    checks: Checks<'_>,
    limits: &Limits,
    options: ScanOptions,
    located: LocatedSource,
) -> Result<PlannedTarget> {
    // Boxed: one more level of nested futures overflows the compiler's layout query depth
    // in the planner binary.
    let mut planned = Box::pin(plan_unexplained(
        store, target, source, checks, limits, options, located,
    ))
    .await?;
    if let Some(plan) = planned.plan.as_mut() {
        // Only updates and deletes are read from their rows, so this read is as small as the change.
        let live = store
            .live_documents(&plan::described_ids(plan))
            .await?
            .into_iter()
            .map(|(id, document)| (id, crate::apply::without_row_labels(document)))
            .collect();
        plan::describe_changes(plan, &live);
    }
    Ok(planned)
}

/// [`plan_located`] without the field diffs.
async fn plan_unexplained(
    store: &Store,
    target: &TargetSettings,
    source: &SourceSpec,
    checks: Checks<'_>,
    limits: &Limits,
    options: ScanOptions,
    located: LocatedSource,
) -> Result<PlannedTarget> {
    let Checks {
        keys,
        refs,
        builtin_plugins,
    } = checks;
    // The generation is read before any live row, so a concurrent apply makes this plan stale
    // rather than wrong.
    let base = store
        .applied_base(&target.name)
        .await?
        .unwrap_or(AppliedBase {
            generation: 0,
            last_applied_commit: None,
            settings_changed: false,
            drift_recorded: false,
            kept_stale: false,
            sample_hash_version: None,
            inventory_size: 0,
        });
    let context = Context {
        store,
        target,
        keys,
        refs,
        builtin_plugins,
        limits,
        base: &base,
        preview: options.preview,
    };
    let LocatedSource { head, fetch } = located;
    if source.worktree {
        let snapshot = super::read_source(source, *limits).await?;
        return context
            .full_scan(snapshot, FullScanReason::WorkingTree)
            .await;
    }
    let reason = if options.full {
        Some(FullScanReason::Requested)
    } else if base.last_applied_commit.is_none() {
        Some(FullScanReason::NoAppliedCommit)
    } else if base.settings_changed || options.target_changed {
        Some(FullScanReason::TargetChanged)
    } else if base.drift_recorded {
        Some(FullScanReason::DriftRecorded)
    } else if base
        .sample_hash_version
        .is_some_and(|version| version != HASH_VERSION)
    {
        Some(FullScanReason::HashVersionChanged)
    } else {
        None
    };
    let reason = match (reason, &base.last_applied_commit) {
        (None, Some(base_commit)) => {
            match context
                .incremental(&head, base_commit, &source.path)
                .await?
            {
                Ok(planned) => return Ok(PlannedTarget { fetch, ..planned }),
                Err(reason) => reason,
            }
        }
        (reason, _) => reason.unwrap_or(FullScanReason::NoAppliedCommit),
    };
    tracing::info!(target = %target.name, %reason, "scanning the whole tree");
    let started = Instant::now();
    let snapshot = head.read_all(&source.path, *limits).await?;
    let read = ("read", started.elapsed());
    let mut planned = context.full_scan(snapshot, reason).await?;
    planned.stages.insert(0, read);
    Ok(PlannedTarget { fetch, ..planned })
}

/// How to reach a remote repository again (to deepen its cache).
#[derive(Debug, Clone)]
struct Network {
    location: RepoLocation,
    branch: String,
    auth: git::Auth,
    options: git::NetworkOptions,
}

impl Network {
    fn find_commit(&self, cache: &GitCache, commit: &str) -> Result<git::FoundCommit, GitError> {
        let found = cache.find_commit(
            &self.location,
            &self.branch,
            &self.auth,
            &self.options,
            commit,
        )?;
        if found.deepened > 0 {
            tracing::info!(
                %commit,
                fetches = found.deepened,
                shallow = found.shallow,
                "deepened the cache's history to reach a commit"
            );
        }
        Ok(found)
    }
}

/// The repository to read and the commit to plan.
#[derive(Debug)]
struct Head {
    /// A local repository, or the cache's bare repository.
    repo: PathBuf,
    revision: Revision,
    cache: Option<GitCache>,
    /// Set for a remote repository.
    network: Option<Network>,
}

impl Head {
    fn commit(&self) -> &str {
        self.revision.commit().unwrap_or_default()
    }

    fn branch(&self) -> &str {
        match &self.revision {
            Revision::Commit { branch, .. } => branch,
            Revision::Worktree => "HEAD",
        }
    }

    async fn read_all(&self, config_path: &str, limits: Limits) -> Result<Snapshot> {
        let cache = self.cache.clone();
        let repo = self.repo.clone();
        let branch = self.branch().to_string();
        let commit = self.commit().to_string();
        let config_path = config_path.to_string();
        blocking(move || match cache {
            Some(cache) => cache.read_commit(&branch, &commit, &config_path, &limits),
            None => git::read_commit_at(&repo, &branch, &commit, &config_path, &limits),
        })
        .await
    }

    /// Makes sure `base_commit` is in a remote repository's cache, deepening a shallow one.
    /// Whatever fails here, the diff finds the base missing and the plan scans the whole tree.
    async fn reach(&self, base_commit: &str) -> Result<()> {
        let (Some(cache), Some(network)) = (self.cache.clone(), self.network.clone()) else {
            return Ok(());
        };
        let commit = base_commit.to_string();
        let reached = tokio::task::spawn_blocking(move || network.find_commit(&cache, &commit))
            .await
            .map_err(|join| Error::Internal(format!("the repository reader stopped: {join}")))?;
        match reached {
            Ok(_) | Err(GitError::CommitNotFound { .. }) => {}
            Err(error) => tracing::warn!(
                error = %error,
                base_commit,
                "cannot deepen the cache to the last applied commit"
            ),
        }
        Ok(())
    }
}

/// The tip of `branch` (HEAD when `None`) of a local repository.
fn resolve_local(path: &Path, branch: Option<&str>) -> Result<Revision, GitError> {
    let location = path.display().to_string();
    let repository = gix::open_opts(path, gix::open::Options::isolated()).map_err(|err| {
        GitError::NotARepository {
            location: location.clone(),
            message: err.to_string(),
        }
    })?;
    let object_error = |id: &str, err: &dyn fmt::Display| GitError::Object {
        location: location.clone(),
        id: id.to_string(),
        message: err.to_string(),
    };
    match branch {
        Some(branch) => {
            let name = format!("refs/heads/{branch}");
            let not_found = || GitError::BranchNotFound {
                location: location.clone(),
                branch: branch.to_string(),
            };
            let mut reference = repository
                .try_find_reference(name.as_str())
                .map_err(|_| not_found())?
                .ok_or_else(not_found)?;
            let commit = reference
                .peel_to_commit()
                .map_err(|err| object_error(&name, &err))?;
            Ok(Revision::Commit {
                branch: branch.to_string(),
                commit: commit.id.to_string(),
            })
        }
        None => {
            let mut head = repository
                .head()
                .map_err(|err| object_error("HEAD", &err))?;
            if head.is_unborn() {
                return Err(GitError::UnbornHead { location });
            }
            let branch = head
                .referent_name()
                .map(|name| name.shorten().to_string())
                .unwrap_or_else(|| "HEAD".to_string());
            let commit = head
                .peel_to_commit()
                .map_err(|err| object_error("HEAD", &err))?;
            Ok(Revision::Commit {
                branch,
                commit: commit.id.to_string(),
            })
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| Error::Internal(format!("the repository reader stopped: {join}")))?
        .map_err(Error::from)
}

struct Context<'a> {
    store: &'a Store,
    target: &'a TargetSettings,
    keys: &'a CredentialKeys,
    refs: &'a SecretRefChecker,
    builtin_plugins: &'a BTreeSet<String>,
    limits: &'a Limits,
    base: &'a AppliedBase,
    /// Record nothing (see [`ScanOptions::preview`]).
    preview: bool,
}

/// The changed files of one diff, split by what must be read.
struct Diff {
    changed: BTreeSet<String>,
    /// Parsed at the base commit: what they defined is gone or replaced.
    old_files: Vec<SourceFile>,
    /// Parsed at the new commit.
    new_files: Vec<SourceFile>,
}

impl Context<'_> {
    fn plan_base(&self) -> PlanBase {
        PlanBase {
            generation: self.base.generation,
            commit: self.base.last_applied_commit.clone(),
        }
    }

    async fn full_scan(&self, snapshot: Snapshot, reason: FullScanReason) -> Result<PlannedTarget> {
        let mut laps = Laps::start();
        let listed = manifest::kinds_listed(&snapshot.files);
        let mut checked = self.check_all(snapshot).await?;
        laps.lap("parse and validate");
        let mode = ScanMode::Full { reason };
        if checked.has_errors() {
            return Ok(PlannedTarget {
                mode,
                checked,
                plan: None,
                fetch: Duration::ZERO,
                stages: Vec::new(),
            });
        }
        let ids: Vec<&ResourceId> = checked.desired.iter().map(|d| &d.id).collect();
        let mut state = self.store.planning_state(&self.target.name, &ids).await?;
        state.sources = self
            .store
            .source_paths(&self.target.name, &ids, &[])
            .await?;
        laps.lap("live state");
        self.record_moves(&state, &checked.desired).await?;
        laps.lap("record moves");
        crate::progress::report(crate::progress::Stage::Planning {
            resources: checked.desired.len(),
        });
        // Moved, not cloned: at 10,000 resources the specs are the largest thing alive.
        let mut plan = plan::plan(
            &self.target.name,
            checked.revision.clone(),
            self.plan_base(),
            std::mem::take(&mut checked.desired),
            &state.live,
            &self.target.policy,
        );
        let managed = plan::count_by_kind(state.live.inventory.keys());
        plan::hold_unexplained_emptying(&mut plan, &managed, &listed);
        laps.lap("plan");
        Ok(PlannedTarget {
            mode,
            checked,
            plan: Some(plan),
            fetch: Duration::ZERO,
            stages: laps.laps,
        })
    }

    /// What `workflow::check` does, with the files parsed on every core, off the async
    /// runtime.
    async fn check_all(&self, snapshot: Snapshot) -> Result<Checked> {
        let limits = *self.limits;
        let Snapshot { revision, files } = snapshot;
        let count = files.len();
        crate::progress::report(crate::progress::Stage::Parsing { files: count });
        let (manifest, files) = tokio::task::spawn_blocking(move || {
            let manifest = parallel::load_manifest(&files, &limits);
            (manifest, files)
        })
        .await
        .map_err(|join| Error::Internal(format!("the manifest loader stopped: {join}")))?;
        crate::progress::report(crate::progress::Stage::Validating { files: count });
        let mut diagnostics = manifest.diagnostics.clone();
        diagnostics.extend(validate::validate(
            &manifest,
            &ValidationContext {
                builtin_plugins: self.builtin_plugins,
                known: &|_| false,
            },
        ));
        diagnostics.extend(super::verify_secrets(&manifest, self.keys, self.refs).await);
        manifest::resolve_positions(&mut diagnostics, &files, &limits);
        diagnostic::sort(&mut diagnostics);
        Ok(Checked {
            revision,
            desired: parallel::resources_of(manifest.documents),
            diagnostics,
        })
    }

    /// The incremental plan, or why a full scan must run instead.
    async fn incremental(
        &self,
        head: &Head,
        base_commit: &str,
        config_path: &str,
    ) -> Result<Result<PlannedTarget, FullScanReason>> {
        // The applied commit itself: there are no trees to compare, and no repository to open.
        if head.commit() == base_commit && !self.base.kept_stale {
            return self.nothing_changed(head, base_commit).await;
        }
        let mut laps = Laps::start();
        head.reach(base_commit).await?;
        let diff = {
            let repo = head.repo.clone();
            let from = base_commit.to_string();
            let to = head.commit().to_string();
            let config_path = config_path.to_string();
            let limits = *self.limits;
            let most = most_changed_files(self.base.inventory_size);
            blocking(move || read_diff(&repo, &from, &to, &config_path, &limits, most)).await?
        };
        let diff = match diff {
            Ok(diff) => diff,
            Err(reason) => return Ok(Err(reason)),
        };

        if diff.changed.is_empty() && !self.base.kept_stale {
            return self.nothing_changed(head, base_commit).await;
        }
        laps.lap("diff and read");
        let Diff {
            changed,
            old_files,
            new_files: mut files,
        } = diff;
        let old = manifest::load(&old_files, self.limits);
        if let Some(broken) = old.diagnostics.iter().find(|d| d.is_error()) {
            return Ok(Err(FullScanReason::BaseUnreadable {
                path: broken.path.clone(),
            }));
        }
        let dropped: BTreeSet<ResourceId> = old
            .documents
            .iter()
            .map(|d| d.resource.id.clone())
            .collect();
        // Only the ids were needed: the old files and their documents would otherwise stay
        // until the plan is made, beside the new ones.
        drop(old);
        drop(old_files);
        let changed_manifest = manifest::load(&files, self.limits);
        let parsed_ids: BTreeSet<&ResourceId> = changed_manifest
            .documents
            .iter()
            .map(|d| &d.resource.id)
            .collect();

        laps.lap("parse");
        let kept: BTreeSet<ResourceId> = if self.base.kept_stale {
            self.store
                .kept_stale(&self.target.name)
                .await?
                .into_iter()
                .collect()
        } else {
            BTreeSet::new()
        };
        // Managed ids the overlay does not take as unchanged even when no parsed file defines
        // them: gone from or replaced in a changed file, or kept with prune off.
        let taken_out = |id: &ResourceId| dropped.contains(id) || kept.contains(id);

        // Unchanged files to read again: those of resources mentioning a removed id, and those
        // defining an id a changed file defines too. Both queries see only managed rows.
        let mut pulled: BTreeSet<String> = BTreeSet::new();
        let removed: BTreeSet<&str> = dropped
            .iter()
            .filter(|id| !parsed_ids.contains(id))
            .map(|id| id.name.as_str())
            .collect();
        let removed: Vec<&str> = removed.into_iter().collect();
        let parsed_list: Vec<&ResourceId> = parsed_ids.iter().copied().collect();
        let mut state = PlanningState {
            sources: self
                .store
                .source_paths(&self.target.name, &parsed_list, &[])
                .await?,
            ..PlanningState::default()
        };
        let mut pull = self.store.mentioning(&self.target.name, &removed).await?;
        pull.extend(
            state
                .sources
                .iter()
                .map(|(id, path)| (id.clone(), path.clone())),
        );
        for (id, path) in pull.into_iter().filter(|(id, _)| !taken_out(id)) {
            match path {
                Some(path) if !changed.contains(&path) => {
                    pulled.insert(path);
                }
                Some(path) => return Ok(Err(FullScanReason::SourcePathsOutOfDate { path })),
                None => {
                    return Ok(Err(FullScanReason::LiveStateDiffers { id: id.to_string() }));
                }
            }
        }
        laps.lap("referrers");
        let manifest = if pulled.is_empty() {
            changed_manifest
        } else {
            let paths: Vec<String> = pulled.iter().cloned().collect();
            let pulled_files = {
                let repo = head.repo.clone();
                let commit = head.commit().to_string();
                let config_path = config_path.to_string();
                let limits = *self.limits;
                blocking(move || git::read_files(&repo, &commit, &config_path, &paths, &limits))
                    .await?
            };
            if pulled_files.len() != pulled.len() {
                let found: BTreeSet<&String> = pulled_files.iter().map(|f| &f.path).collect();
                let path = pulled
                    .iter()
                    .find(|p| !found.contains(p))
                    .cloned()
                    .unwrap_or_default();
                return Ok(Err(FullScanReason::SourcePathsOutOfDate { path }));
            }
            let paths: Vec<&str> = pulled.iter().map(String::as_str).collect();
            let stored_there = self
                .store
                .source_paths(&self.target.name, &[], &paths)
                .await?;
            state.sources.extend(stored_there);
            files.extend(pulled_files);
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let manifest = manifest::load(&files, self.limits);
            if let Some(path) = pulled_mismatch(&manifest, &pulled, &state, &kept) {
                return Ok(Err(FullScanReason::SourcePathsOutOfDate { path }));
            }
            manifest
        };
        laps.lap("pull in");

        // Live state of only the ids this plan decides about or validates against; the rest
        // of the inventory (the untouched files' resources) is only counted.
        let defined: BTreeSet<&ResourceId> =
            manifest.documents.iter().map(|d| &d.resource.id).collect();
        let referenced: BTreeSet<&ResourceId> = manifest
            .documents
            .iter()
            .flat_map(|d| &d.references)
            .map(|r| &r.target)
            .filter(|id| !defined.contains(id))
            .collect();
        let asked: BTreeSet<&ResourceId> = defined
            .iter()
            .copied()
            .chain(&dropped)
            .chain(&kept)
            .chain(referenced.iter().copied())
            .collect();
        let asked: Vec<&ResourceId> = asked.into_iter().collect();
        let extra: Vec<&ResourceId> = defined.iter().copied().collect();
        let slice = self
            .store
            .planning_slice(&self.target.name, &asked, &extra)
            .await?;
        state.live = slice.live;
        let known: BTreeSet<&ResourceId> = referenced
            .into_iter()
            .filter(|id| state.live.inventory.contains_key(*id) && !taken_out(id))
            .collect();
        let decided = |id: &ResourceId| defined.contains(id) || taken_out(id);
        state.live.inventory.retain(|id, _| decided(id));
        state.live.resources.retain(|id, _| decided(id));
        let untouched = self
            .base
            .inventory_size
            .saturating_sub(state.live.inventory.len());
        laps.lap("live state");

        let mut diagnostics = manifest.diagnostics.clone();
        diagnostics.extend(validate::validate(
            &manifest,
            &ValidationContext {
                builtin_plugins: self.builtin_plugins,
                known: &|id| known.contains(id),
            },
        ));
        if diagnostics.iter().any(|d| d.code == Code::E300) {
            let untouched_ids: Vec<ResourceId> = self
                .store
                .inventory_ids(&self.target.name)
                .await?
                .into_iter()
                .filter(|id| !decided(id))
                .collect();
            self.suggest_from_all(&mut diagnostics, &manifest, &untouched_ids);
        }
        diagnostics.extend(super::verify_secrets(&manifest, self.keys, self.refs).await);
        manifest::resolve_positions(&mut diagnostics, &files, self.limits);
        diagnostic::sort(&mut diagnostics);

        let mode = ScanMode::Incremental {
            base_commit: base_commit.to_string(),
            changed_files: changed.len(),
            parsed_files: files.len(),
        };
        let checked = Checked {
            revision: head.revision.clone(),
            desired: parallel::resources_of(manifest.documents),
            diagnostics,
        };
        if checked.has_errors() {
            return Ok(Ok(PlannedTarget {
                mode,
                checked,
                plan: None,
                fetch: Duration::ZERO,
                stages: Vec::new(),
            }));
        }

        laps.lap("validate");
        let mut plan = plan::plan_overlay(
            &self.target.name,
            checked.revision.clone(),
            self.plan_base(),
            checked.desired.clone(),
            &state.live,
            untouched,
            &self.target.policy,
        );
        self.hold_unexplained_emptying(&mut plan, head, config_path)
            .await?;
        laps.lap("plan");
        self.record_moves(&state, &checked.desired).await?;
        laps.lap("record moves");
        Ok(Ok(PlannedTarget {
            mode,
            checked,
            plan: Some(plan),
            fetch: Duration::ZERO,
            stages: laps.laps,
        }))
    }

    /// [`plan::hold_unexplained_emptying`] for an overlay, which knows neither the whole
    /// inventory nor the whole tree: both are asked only about the kinds the plan may empty.
    async fn hold_unexplained_emptying(
        &self,
        plan: &mut Plan,
        head: &Head,
        config_path: &str,
    ) -> Result<()> {
        let losing = plan::kinds_losing_resources(plan);
        if losing.is_empty() {
            return Ok(());
        }
        let listed = {
            let repo = head.repo.clone();
            let commit = head.commit().to_string();
            let config_path = config_path.to_string();
            blocking(move || git::kinds_listed_at(&repo, &commit, &config_path, &losing)).await?
        };
        if listed.is_empty() {
            return Ok(());
        }
        let kinds: Vec<Kind> = listed.iter().copied().collect();
        let managed = self
            .store
            .inventory_count_by_kind(&self.target.name, &kinds)
            .await?;
        plan::hold_unexplained_emptying(plan, &managed, &listed);
        Ok(())
    }

    /// No resource file changed: every managed row stays as it is; only their number is read.
    /// (Rows kept with prune off need the general path.)
    async fn nothing_changed(
        &self,
        head: &Head,
        base_commit: &str,
    ) -> Result<Result<PlannedTarget, FullScanReason>> {
        // No drift recorded and the hash version checked: every managed row is as applied.
        // Their number was read with the base, in the same snapshot as its generation.
        let count = self.base.inventory_size;
        let plan = plan::plan_overlay(
            &self.target.name,
            head.revision.clone(),
            self.plan_base(),
            Vec::new(),
            &Default::default(),
            count,
            &self.target.policy,
        );
        Ok(Ok(PlannedTarget {
            mode: ScanMode::Incremental {
                base_commit: base_commit.to_string(),
                changed_files: 0,
                parsed_files: 0,
            },
            checked: Checked {
                revision: head.revision.clone(),
                desired: Vec::new(),
                diagnostics: Vec::new(),
            },
            plan: Some(plan),
            fetch: Duration::ZERO,
            stages: Vec::new(),
        }))
    }

    /// E300's "did you mean" looks at every name of the overlay, as a full scan's would.
    fn suggest_from_all(
        &self,
        diagnostics: &mut [Diagnostic],
        manifest: &Manifest,
        untouched: &[ResourceId],
    ) {
        const TAIL: &str = "or fix the name";
        let references: BTreeMap<(&str, u32, u32), &ResourceId> = manifest
            .documents
            .iter()
            .flat_map(|d| &d.references)
            .map(|r| ((r.at.path.as_str(), r.at.line, r.at.column), &r.target))
            .collect();
        for diagnostic in diagnostics.iter_mut().filter(|d| d.code == Code::E300) {
            let key = (diagnostic.path.as_str(), diagnostic.line, diagnostic.column);
            let (Some(target), Some(end)) =
                (references.get(&key).copied(), diagnostic.message.find(TAIL))
            else {
                continue;
            };
            let mut candidates: Vec<&str> = manifest
                .documents
                .iter()
                .map(|d| &d.resource.id)
                .chain(untouched)
                .filter(|id| id.kind == target.kind)
                .map(|id| id.name.as_str())
                .collect();
            if target.kind == Kind::Plugin {
                candidates.extend(self.builtin_plugins.iter().map(String::as_str));
            }
            let suggestion = did_you_mean(&target.name, candidates);
            diagnostic.message.truncate(end + TAIL.len());
            diagnostic.message.push_str(&suggestion);
        }
    }

    /// Stores the path of owned resources that moved to another file without changing.
    async fn record_moves(&self, state: &PlanningState, desired: &[DesiredResource]) -> Result<()> {
        if self.preview {
            return Ok(());
        }
        let moved: Vec<(&ResourceId, &str)> = desired
            .iter()
            .filter(|d| {
                state
                    .sources
                    .get(&d.id)
                    .is_some_and(|stored| stored.as_deref() != Some(d.source.path.as_str()))
            })
            .map(|d| (&d.id, d.source.path.as_str()))
            .collect();
        self.store
            .record_source_paths(&self.target.name, &moved)
            .await?;
        Ok(())
    }
}

/// The most changed files an incremental plan of a target managing `inventory_size` resources
/// reads; past it a full scan costs less time and memory (docs/benchmarks.md, "Incremental
/// syncs by number of changed files"). Up to [`MIN_MOST_CHANGED_FILES`] are always read
/// incrementally: a repository that small is cheap to plan either way.
fn most_changed_files(inventory_size: usize) -> usize {
    (inventory_size / 4).max(MIN_MOST_CHANGED_FILES)
}

const MIN_MOST_CHANGED_FILES: usize = 100;

/// Diffs and reads the changed files (blocking), or says why a full scan is needed.
fn read_diff(
    repo: &Path,
    from: &str,
    to: &str,
    config_path: &str,
    limits: &Limits,
    most: usize,
) -> Result<Result<Diff, FullScanReason>, GitError> {
    let changes = match git::changed_paths_up_to(repo, from, to, config_path, most) {
        Ok(Some(changes)) => changes,
        Ok(None) => return Ok(Err(FullScanReason::ManyChanges { most })),
        Err(error) if error.needs_full_scan() => {
            return Ok(Err(FullScanReason::BaseUnavailable {
                detail: error.to_string(),
            }));
        }
        Err(error) => return Err(error),
    };
    let old_paths: Vec<String> = changes
        .iter()
        .filter(|c| c.change != ChangeKind::Added)
        .map(|c| c.path.clone())
        .collect();
    let new_paths: Vec<String> = changes
        .iter()
        .filter(|c| c.change != ChangeKind::Deleted)
        .map(|c| c.path.clone())
        .collect();
    let old_files = if old_paths.is_empty() {
        Vec::new()
    } else {
        git::read_files(repo, from, config_path, &old_paths, limits)?
    };
    let new_files = if new_paths.is_empty() {
        Vec::new()
    } else {
        git::read_files(repo, to, config_path, &new_paths, limits)?
    };
    Ok(Ok(Diff {
        changed: changes.into_iter().map(|c| c.path).collect(),
        old_files,
        new_files,
    }))
}

/// The first pulled-in file whose documents are not exactly the ids the store places in it.
fn pulled_mismatch(
    manifest: &Manifest,
    pulled: &BTreeSet<String>,
    state: &PlanningState,
    kept: &BTreeSet<ResourceId>,
) -> Option<String> {
    if let Some(broken) = manifest
        .diagnostics
        .iter()
        .find(|d| d.is_error() && pulled.contains(&d.path))
    {
        return Some(broken.path.clone());
    }
    pulled
        .iter()
        .find(|path| {
            let found: BTreeSet<&ResourceId> = manifest
                .documents
                .iter()
                .filter(|d| &d.resource.source.path == *path)
                .map(|d| &d.resource.id)
                .collect();
            let stored: BTreeSet<&ResourceId> = state
                .ids_from(path)
                .filter(|id| !kept.contains(*id))
                .collect();
            found != stored
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileContent;

    fn job_file(path: &str, names: &[&str]) -> SourceFile {
        let docs: Vec<String> = names
            .iter()
            .map(|name| {
                format!("apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n  timeout: 5\n")
            })
            .collect();
        SourceFile {
            path: path.into(),
            content: FileContent::Bytes(docs.join("---\n").into_bytes()),
        }
    }

    fn stored(entries: &[(&str, &str)]) -> PlanningState {
        let mut state = PlanningState::default();
        for (name, path) in entries {
            state
                .sources
                .insert(ResourceId::new(Kind::Job, *name), Some((*path).to_string()));
        }
        state
    }

    #[test]
    fn a_pulled_file_defining_what_the_store_says_is_trusted() {
        let manifest = manifest::load(
            &[job_file("jobs/a.yaml", &["one", "two"])],
            &Limits::default(),
        );
        let state = stored(&[
            ("one", "jobs/a.yaml"),
            ("two", "jobs/a.yaml"),
            ("three", "jobs/b.yaml"),
        ]);
        let pulled = BTreeSet::from(["jobs/a.yaml".to_string()]);

        let mismatch = pulled_mismatch(&manifest, &pulled, &state, &BTreeSet::new());

        assert_eq!(mismatch, None);
    }

    #[test]
    fn a_pulled_file_whose_resource_moved_away_unrecorded_is_a_mismatch() {
        let manifest = manifest::load(&[job_file("jobs/a.yaml", &["one"])], &Limits::default());
        let state = stored(&[("one", "jobs/a.yaml"), ("two", "jobs/a.yaml")]);
        let pulled = BTreeSet::from(["jobs/a.yaml".to_string()]);

        let mismatch = pulled_mismatch(&manifest, &pulled, &state, &BTreeSet::new());

        assert_eq!(mismatch.as_deref(), Some("jobs/a.yaml"));
    }

    #[test]
    fn ids_kept_with_prune_off_are_not_expected_in_their_old_file() {
        let manifest = manifest::load(&[job_file("jobs/a.yaml", &["one"])], &Limits::default());
        let state = stored(&[("one", "jobs/a.yaml"), ("gone", "jobs/a.yaml")]);
        let pulled = BTreeSet::from(["jobs/a.yaml".to_string()]);
        let kept = BTreeSet::from([ResourceId::new(Kind::Job, "gone")]);

        let mismatch = pulled_mismatch(&manifest, &pulled, &state, &kept);

        assert_eq!(mismatch, None);
    }

    #[test]
    fn scan_modes_say_what_ran_and_why() {
        let incremental = ScanMode::Incremental {
            base_commit: "0123456789abcdef0123".into(),
            changed_files: 2,
            parsed_files: 3,
        };
        let full = ScanMode::Full {
            reason: FullScanReason::DriftRecorded,
        };

        assert_eq!(
            incremental.to_string(),
            "incremental from 0123456789ab (2 changed files, 3 parsed)"
        );
        assert_eq!(
            full.to_string(),
            "full scan (drift is recorded for the target)"
        );
        assert_eq!(
            serde_json::to_value(&full).unwrap(),
            serde_json::json!({"mode": "full", "reason": {"kind": "drift_recorded"}})
        );
    }
}
