//! git scenarios: reading config repositories made with the git CLI, fetching them over smart
//! HTTP with basic auth, and diffing trees.

use ritmo::git::{GitError, RepoLocation, Snapshot, is_git_repository, read_commit};
use ritmo::manifest::{FileContent, Limits, SourceFile};
use ritmo::model::Revision;
use ritmo_tests::git_http::TestRepo;

fn location(repo: &TestRepo) -> RepoLocation {
    RepoLocation::Local(repo.path().to_path_buf())
}

fn paths(snapshot: &Snapshot) -> Vec<&str> {
    snapshot.files.iter().map(|f| f.path.as_str()).collect()
}

fn bytes(snapshot: &Snapshot, path: &str) -> Option<Vec<u8>> {
    snapshot
        .files
        .iter()
        .find(|f| f.path == path)
        .and_then(|f| match &f.content {
            FileContent::Bytes(bytes) => Some(bytes.clone()),
            _ => None,
        })
}

#[test]
fn reads_the_tree_at_the_branch_tip() {
    let repo = TestRepo::new();
    repo.write("jobs/build.yaml", "kind: Job\n")
        .write("credentials/db.yml", "kind: Credential\n")
        .write("jobs/team/nested.yaml", "kind: Job\n");
    let commit = repo.commit("initial");

    let snapshot = read_commit(&location(&repo), Some("main"), "/", &Limits::default()).unwrap();

    assert_eq!(
        snapshot.revision,
        Revision::Commit {
            branch: "main".into(),
            commit: commit.clone()
        }
    );
    assert_eq!(commit.len(), 40);
    assert_eq!(
        paths(&snapshot),
        [
            "credentials/db.yml",
            "jobs/build.yaml",
            "jobs/team/nested.yaml"
        ]
    );
    assert_eq!(
        bytes(&snapshot, "jobs/build.yaml"),
        Some(b"kind: Job\n".to_vec())
    );
}

#[test]
fn head_is_used_when_no_branch_is_given() {
    let repo = TestRepo::new();
    repo.write("plugins/p.yaml", "p");
    let commit = repo.commit("initial");

    let snapshot = read_commit(&location(&repo), None, "", &Limits::default()).unwrap();

    assert_eq!(
        snapshot.revision,
        Revision::Commit {
            branch: "main".into(),
            commit
        }
    );
}

#[test]
fn uncommitted_edits_and_files_outside_kind_directories_are_ignored() {
    let repo = TestRepo::new();
    repo.write("jobs/a.yaml", "committed")
        .write("README.md", "docs")
        .write(".github/workflows/ci.yaml", "ci")
        .write("jobs/notes.md", "notes");
    repo.commit("initial");
    repo.write("jobs/a.yaml", "edited")
        .write("jobs/new.yaml", "untracked");

    let snapshot = read_commit(&location(&repo), Some("main"), "/", &Limits::default()).unwrap();

    assert_eq!(paths(&snapshot), ["jobs/a.yaml"]);
    assert_eq!(bytes(&snapshot, "jobs/a.yaml"), Some(b"committed".to_vec()));
}

#[test]
fn a_sub_path_roots_the_snapshot() {
    let repo = TestRepo::new();
    repo.write("config/prod/jobs/a.yaml", "prod")
        .write("config/staging/jobs/b.yaml", "staging")
        .write("jobs/root.yaml", "root");
    repo.commit("initial");

    for spelling in ["config/prod", "./config/prod/", "/config/prod"] {
        let snapshot =
            read_commit(&location(&repo), Some("main"), spelling, &Limits::default()).unwrap();

        assert_eq!(paths(&snapshot), ["jobs/a.yaml"], "{spelling}");
    }
}

#[test]
fn symlinks_submodules_and_oversized_blobs_are_reported_not_read() {
    let repo = TestRepo::new();
    repo.write("jobs/big.yaml", "x".repeat(2048))
        .write("jobs/small.yaml", "ok");
    let first = repo.commit("initial");
    repo.symlink("jobs/link.yaml", "/etc/passwd")
        .symlink("webhooks", "jobs")
        .gitlink("plugins/vendored", &first);
    repo.commit_staged("links");
    let limits = Limits {
        max_file_bytes: 1024,
        ..Limits::default()
    };

    let snapshot = read_commit(&location(&repo), Some("main"), "/", &limits).unwrap();

    assert_eq!(
        snapshot.files,
        [
            SourceFile {
                path: "jobs/big.yaml".into(),
                content: FileContent::TooLarge { size: 2048 }
            },
            SourceFile {
                path: "jobs/link.yaml".into(),
                content: FileContent::Symlink
            },
            SourceFile {
                path: "jobs/small.yaml".into(),
                content: FileContent::Bytes(b"ok".to_vec())
            },
            SourceFile {
                path: "plugins/vendored".into(),
                content: FileContent::Submodule
            },
            SourceFile {
                path: "webhooks".into(),
                content: FileContent::Symlink
            },
        ]
    );
}

#[test]
fn a_non_default_branch_is_resolved() {
    let repo = TestRepo::new();
    repo.write("jobs/a.yaml", "main");
    let main = repo.commit("main");
    repo.checkout("release");
    repo.write("jobs/b.yaml", "release");
    let release = repo.commit("release");
    repo.checkout("main");

    let snapshot = read_commit(&location(&repo), Some("release"), "/", &Limits::default()).unwrap();

    assert_ne!(main, release);
    assert_eq!(snapshot.revision.commit(), Some(release.as_str()));
    assert_eq!(paths(&snapshot), ["jobs/a.yaml", "jobs/b.yaml"]);
}

#[test]
fn a_missing_branch_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.write("jobs/a.yaml", "a");
    repo.commit("initial");

    let err = read_commit(&location(&repo), Some("nope"), "/", &Limits::default()).unwrap_err();

    assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "branch `nope` does not exist in `{}`",
            repo.path().display()
        )
    );
}

#[test]
fn a_missing_config_path_is_a_clear_error() {
    let repo = TestRepo::new();
    repo.write("jobs/a.yaml", "a");
    let commit = repo.commit("initial");

    let err = read_commit(
        &location(&repo),
        Some("main"),
        "config/prod",
        &Limits::default(),
    )
    .unwrap_err();

    assert_eq!(
        err.to_string(),
        format!("config path `config/prod` does not exist at main@sha1:{commit}")
    );
}

#[test]
fn a_config_path_that_is_a_file_is_refused() {
    let repo = TestRepo::new();
    repo.write("config", "not a directory");
    repo.commit("initial");

    let err =
        read_commit(&location(&repo), Some("main"), "config", &Limits::default()).unwrap_err();

    assert!(
        matches!(err, GitError::ConfigPathNotADirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn bare_repositories_and_file_urls_are_read_too() {
    let repo = TestRepo::new();
    repo.write("workers/pool.yaml", "pool");
    let commit = repo.commit("initial");
    let bare = tempfile::tempdir().unwrap();
    let bare_path = bare.path().join("config.git");
    ritmo_tests::git_http::run_git(
        bare.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            repo.path().to_str().unwrap(),
            bare_path.to_str().unwrap(),
        ],
    );
    let url = RepoLocation::parse(&format!("file://{}", bare_path.display())).unwrap();

    let snapshot = read_commit(&url, Some("main"), "/", &Limits::default()).unwrap();

    assert!(is_git_repository(&bare_path));
    assert_eq!(snapshot.revision.commit(), Some(commit.as_str()));
    assert_eq!(paths(&snapshot), ["workers/pool.yaml"]);
}

#[test]
fn a_plain_directory_is_not_a_git_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = TestRepo::new();

    let plain = is_git_repository(dir.path());
    let real = is_git_repository(repo.path());

    assert!(!plain);
    assert!(real);
}

#[test]
fn too_many_files_is_an_error() {
    let repo = TestRepo::new();
    for i in 0..5 {
        repo.write(&format!("jobs/{i}.yaml"), "x");
    }
    repo.commit("initial");
    let limits = Limits {
        max_files: 4,
        ..Limits::default()
    };

    let err = read_commit(&location(&repo), Some("main"), "/", &limits).unwrap_err();

    assert!(
        matches!(err, GitError::TooManyFiles { limit: 4, .. }),
        "{err:?}"
    );
}
