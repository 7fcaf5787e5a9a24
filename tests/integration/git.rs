//! git scenarios: reading config repositories made with the git CLI, fetching them over smart
//! HTTP with basic auth, and diffing trees.

use ritmo::git::{
    GitError, RepoLocation, Snapshot, is_git_repository, read_commit, uncommitted_files,
};
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
fn a_large_tree_is_read_on_every_core_with_each_file_under_its_own_path() {
    let repo = TestRepo::new();
    for i in 0..600 {
        repo.write(
            &format!("jobs/team-{}/job-{i:03}.yaml", i % 7),
            format!("name: job-{i}\n"),
        );
    }
    repo.write("plugins/big.yaml", "x".repeat(300))
        .write("webhooks/notes.txt", "ignored");
    repo.commit("many files");
    let limits = Limits {
        max_file_bytes: 200,
        ..Limits::default()
    };

    let snapshot = read_commit(&location(&repo), Some("main"), "", &limits).unwrap();

    assert_eq!(snapshot.files.len(), 601);
    for i in 0..600 {
        let path = format!("jobs/team-{}/job-{i:03}.yaml", i % 7);
        assert_eq!(
            bytes(&snapshot, &path),
            Some(format!("name: job-{i}\n").into_bytes()),
            "{path}"
        );
    }
    let big = snapshot.files.iter().find(|f| f.path == "plugins/big.yaml");
    assert!(matches!(
        big.map(|f| &f.content),
        Some(FileContent::TooLarge { size: 300 })
    ));
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

mod remote {
    use std::num::NonZeroU32;

    use ritmo::git::{Auth, GitCache, GitError, NetworkOptions, RepoLocation, remote_head};
    use ritmo::manifest::Limits;
    use ritmo_tests::git_http::{GitHttpServer, TestRepo};
    use secrecy::SecretString;

    const TOKEN: &str = "s3cret-token-value";

    fn token(value: &str) -> Auth {
        Auth::Token(SecretString::from(value))
    }

    /// A repository with one job, served over smart HTTP that wants `x-access-token:TOKEN`.
    fn served_repo() -> (TestRepo, GitHttpServer, RepoLocation) {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "kind: Job\n");
        repo.commit("initial");
        let server = GitHttpServer::start(repo.path(), Some(("x-access-token", TOKEN)));
        let location = RepoLocation::parse(&server.url(".git")).unwrap();
        (repo, server, location)
    }

    #[test]
    fn remote_head_reads_the_branch_tip_over_http_without_fetching() {
        let (repo, server, location) = served_repo();

        let head =
            remote_head(&location, "main", &token(TOKEN), &NetworkOptions::default()).unwrap();

        assert_eq!(head, repo.head());
        let requests = server.requests();
        assert!(
            requests
                .iter()
                .all(|r| r.path.ends_with("/info/refs") || r.path.ends_with("/git-upload-pack")),
            "{requests:?}"
        );
        assert!(
            requests
                .iter()
                .any(|r| r.git_protocol.as_deref() == Some("version=2")),
            "protocol v2 was not used: {requests:?}"
        );
    }

    /// `openssl s_server` on a free loopback port with a fresh self-signed certificate: an
    /// HTTPS server no system bundle trusts. Killed on drop.
    struct UntrustedTlsServer {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl UntrustedTlsServer {
        fn start() -> Self {
            use std::process::{Command, Stdio};

            let dir = tempfile::tempdir().unwrap();
            let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
            let made = Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args([
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                ])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("openssl is installed (.ci/run installs it)");
            assert!(made.success());
            let port = ritmo_tests::free_port();
            let child = Command::new("openssl")
                .args(["s_server", "-quiet", "-www", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("-key")
                .arg(&key)
                .arg("-cert")
                .arg(&cert)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "s_server did not start"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Self {
                child,
                port,
                _dir: dir,
            }
        }
    }

    impl Drop for UntrustedTlsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn https_checks_the_server_certificate_against_the_system_roots() {
        let server = UntrustedTlsServer::start();
        let location = RepoLocation::parse(&format!(
            "https://127.0.0.1:{}/acme/config.git",
            server.port
        ))
        .unwrap();

        let err = remote_head(&location, "main", &Auth::None, &NetworkOptions::default())
            .unwrap_err()
            .to_string();

        // The handshake ran with the shared TLS setup and refused the self-signed certificate.
        assert!(err.contains("certificate"), "{err}");
        assert!(err.contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn remote_head_works_over_file_urls() {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "a");
        let commit = repo.commit("initial");
        let location = RepoLocation::parse(&format!("file://{}", repo.path().display())).unwrap();

        let head = remote_head(&location, "main", &Auth::None, &NetworkOptions::default()).unwrap();

        assert_eq!(head, commit);
    }

    #[test]
    fn remote_head_of_a_missing_branch_is_a_clear_error() {
        let (_repo, _server, location) = served_repo();

        let err =
            remote_head(&location, "nope", &token(TOKEN), &NetworkOptions::default()).unwrap_err();

        assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
    }

    #[test]
    fn the_right_token_fetches_into_the_cache() {
        let (repo, _server, location) = served_repo();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(cache_dir.path());

        let outcome = cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();
        let commit = outcome.revision.commit().unwrap().to_string();
        let snapshot = cache
            .read_commit("main", &commit, "/", &Limits::default())
            .unwrap();

        assert_eq!(commit, repo.head());
        assert!(!outcome.rebuilt);
        assert!(outcome.objects_received > 0);
        assert_eq!(snapshot.files.len(), 1);
        assert_eq!(snapshot.files[0].path, "jobs/a.yaml");
    }

    #[test]
    fn a_wrong_token_fails_clearly_without_revealing_it() {
        let (_repo, _server, location) = served_repo();
        let cache_dir = tempfile::tempdir().unwrap();
        let wrong = "wrong-token-123456";

        let fetch_err = GitCache::new(cache_dir.path())
            .fetch(&location, "main", &token(wrong), &NetworkOptions::default())
            .unwrap_err();
        let head_err =
            remote_head(&location, "main", &token(wrong), &NetworkOptions::default()).unwrap_err();

        for err in [&fetch_err, &head_err] {
            assert!(matches!(err, GitError::Authentication { .. }), "{err:?}");
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(wrong), "{shown}");
            assert!(shown.contains("authentication"), "{shown}");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn no_credentials_fails_without_prompting() {
        let (_repo, _server, location) = served_repo();

        let err =
            remote_head(&location, "main", &Auth::None, &NetworkOptions::default()).unwrap_err();

        assert!(matches!(err, GitError::Authentication { .. }), "{err:?}");
    }

    #[test]
    fn a_second_fetch_receives_only_the_new_objects() {
        let (repo, _server, location) = served_repo();
        for i in 0..20 {
            repo.write(
                &format!("jobs/job-{i}.yaml"),
                format!("kind: Job\nn: {i}\n"),
            );
        }
        repo.commit("many jobs");
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(cache_dir.path());
        let first = cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();
        repo.write("jobs/job-3.yaml", "kind: Job\nn: changed\n");
        let new_commit = repo.commit("one change");

        let second = cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();

        assert_eq!(second.revision.commit(), Some(new_commit.as_str()));
        // A commit, a root tree, the jobs tree and a blob, plus at most the delta base gix
        // appends when it completes a thin pack: nothing else the cache already had.
        assert!(
            (4..=5).contains(&second.objects_received),
            "second: {second:?}, first: {first:?}"
        );
        assert!(first.objects_received > 20, "{first:?}");
        assert!(!second.rebuilt);
        let old = cache
            .read_commit(
                "main",
                first.revision.commit().unwrap(),
                "/",
                &Limits::default(),
            )
            .unwrap();
        assert_eq!(old.files.len(), 21);
    }

    #[test]
    fn a_truncated_cache_is_detected_and_rebuilt() {
        let (repo, _server, location) = served_repo();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(cache_dir.path());
        cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();
        let pack_dir = cache.repository_path().join("objects/pack");
        for entry in std::fs::read_dir(&pack_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "pack") {
                let length = std::fs::metadata(&path).unwrap().len();
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.set_len(length / 2).unwrap();
            }
        }

        let outcome = cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();
        let snapshot = cache
            .read_commit("main", &repo.head(), "/", &Limits::default())
            .unwrap();

        assert!(outcome.rebuilt);
        assert!(outcome.objects_received > 0);
        assert_eq!(snapshot.files.len(), 1);
    }

    #[test]
    fn leftover_lock_files_from_a_killed_fetch_cause_a_rebuild() {
        let (_repo, _server, location) = served_repo();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(cache_dir.path());
        cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();
        std::fs::write(cache.repository_path().join("refs/heads/main.lock"), "").unwrap();

        let outcome = cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();

        assert!(outcome.rebuilt);
    }

    #[test]
    fn an_unfinished_fetch_causes_a_rebuild() {
        let (_repo, _server, location) = served_repo();
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = GitCache::new(cache_dir.path());
        cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();
        std::fs::remove_file(cache_dir.path().join("complete")).unwrap();

        let outcome = cache
            .fetch(&location, "main", &token(TOKEN), &NetworkOptions::default())
            .unwrap();

        assert!(outcome.rebuilt);
    }

    #[test]
    fn a_shallow_first_fetch_uses_protocol_v2_and_is_shallow() {
        let (repo, server, location) = served_repo();
        repo.write("jobs/b.yaml", "b");
        repo.commit("second");
        repo.write("jobs/c.yaml", "c");
        let tip = repo.commit("third");
        let cache_dir = tempfile::tempdir().unwrap();
        let options = NetworkOptions {
            shallow_depth: NonZeroU32::new(1),
            ..NetworkOptions::default()
        };

        let outcome = GitCache::new(cache_dir.path())
            .fetch(&location, "main", &token(TOKEN), &options)
            .unwrap();

        assert!(outcome.shallow);
        assert_eq!(outcome.revision.commit(), Some(tip.as_str()));
        // One commit, its tree, the jobs tree and three blobs.
        assert_eq!(outcome.objects_received, 6);
        assert!(
            server
                .requests()
                .iter()
                .filter(|r| r.method == "POST")
                .all(|r| r.git_protocol.as_deref() == Some("version=2"))
        );
    }

    #[test]
    fn fetching_a_missing_branch_is_a_clear_error() {
        let (_repo, _server, location) = served_repo();
        let cache_dir = tempfile::tempdir().unwrap();

        let err = GitCache::new(cache_dir.path())
            .fetch(&location, "nope", &token(TOKEN), &NetworkOptions::default())
            .unwrap_err();

        assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accept connections and hold them open without answering.
        let _holder = std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().take(4).collect();
            std::thread::sleep(std::time::Duration::from_secs(30));
            drop(held);
        });
        let location = RepoLocation::parse(&format!("http://127.0.0.1:{port}/r.git")).unwrap();
        let options = NetworkOptions {
            timeout: std::time::Duration::from_secs(1),
            ..NetworkOptions::default()
        };

        let err = remote_head(&location, "main", &Auth::None, &options).unwrap_err();

        assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
        assert!(err.is_retryable());
    }

    #[test]
    fn an_unreachable_server_is_a_retryable_error() {
        // Port 1 is privileged and outside the ephemeral range the tests' servers are given, so
        // nothing listens there and the connection is refused. (A bound but unlistened
        // ephemeral port was not enough: another test's server was once given the same port.)
        let location = RepoLocation::parse("http://127.0.0.1:1/r.git").unwrap();

        let err =
            remote_head(&location, "main", &Auth::None, &NetworkOptions::default()).unwrap_err();

        assert!(err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains("127.0.0.1:1/r.git"), "{err}");
    }
}

mod diff {
    use std::collections::BTreeMap;

    use ritmo::git::{
        ChangeKind, GitError, PathChange, RepoLocation, changed_paths, is_ancestor, read_commit,
        read_files,
    };
    use ritmo::manifest::{FileContent, Limits};
    use ritmo_tests::git_http::TestRepo;

    fn change(path: &str, change: ChangeKind) -> PathChange {
        PathChange {
            path: path.into(),
            change,
        }
    }

    fn snapshot_map(repo: &TestRepo, config_path: &str) -> BTreeMap<String, FileContent> {
        let location = RepoLocation::Local(repo.path().to_path_buf());
        read_commit(&location, None, config_path, &Limits::default())
            .unwrap()
            .files
            .into_iter()
            .map(|f| (f.path, f.content))
            .collect()
    }

    #[test]
    fn adds_edits_deletes_and_renames_of_resource_files_are_reported() {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "a")
            .write("jobs/b.yaml", "b")
            .write("jobs/team/c.yaml", "c")
            .write("plugins/p.yaml", "p")
            .write("README.md", "r");
        let from = repo.commit("initial");
        repo.write("jobs/a.yaml", "a2")
            .write("credentials/new.yaml", "n")
            .write("README.md", "r2")
            .write("jobs/notes.md", "n");
        repo.remove("jobs/b.yaml");
        repo.git(&["mv", "jobs/team/c.yaml", "jobs/team/renamed.yaml"]);
        let to = repo.commit("changes");

        let changes = changed_paths(repo.path(), &from, &to, "/").unwrap();

        assert_eq!(
            changes,
            [
                change("credentials/new.yaml", ChangeKind::Added),
                change("jobs/a.yaml", ChangeKind::Modified),
                change("jobs/b.yaml", ChangeKind::Deleted),
                change("jobs/team/c.yaml", ChangeKind::Deleted),
                change("jobs/team/renamed.yaml", ChangeKind::Added),
            ]
        );
    }

    #[test]
    fn only_the_config_path_is_compared() {
        let repo = TestRepo::new();
        repo.write("config/prod/jobs/a.yaml", "a")
            .write("config/staging/jobs/a.yaml", "a");
        let from = repo.commit("initial");
        repo.write("config/staging/jobs/a.yaml", "changed");
        repo.write("config/prod/jobs/b.yaml", "b");
        let to = repo.commit("changes");

        let changes = changed_paths(repo.path(), &from, &to, "./config/prod/").unwrap();

        assert_eq!(changes, [change("jobs/b.yaml", ChangeKind::Added)]);
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_lists_every_file_it_held() {
        let repo = TestRepo::new();
        repo.write("webhooks/a.yaml", "a")
            .write("webhooks/b.yaml", "b");
        let from = repo.commit("initial");
        repo.remove("webhooks");
        repo.symlink("webhooks", "jobs");
        let to = repo.commit("symlink");

        let changes = changed_paths(repo.path(), &from, &to, "").unwrap();

        assert_eq!(
            changes,
            [
                change("webhooks", ChangeKind::Added),
                change("webhooks/a.yaml", ChangeKind::Deleted),
                change("webhooks/b.yaml", ChangeKind::Deleted),
            ]
        );
    }

    #[test]
    fn the_diff_applied_to_the_old_snapshot_gives_the_new_one() {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "a").write("workers/w.yaml", "w");
        let mut previous = repo.commit("c0");
        let steps: [&dyn Fn(&TestRepo); 5] = [
            &|r| {
                r.write("jobs/b.yaml", "b");
            },
            &|r| {
                r.write("jobs/a.yaml", "a2").remove("workers/w.yaml");
            },
            &|r| {
                r.write("deployments/b.yaml", "b").remove("jobs/b.yaml");
            },
            &|r| {
                r.write("deployments/nested/deep/x.yml", "x")
                    .write("docs/y.yaml", "y");
            },
            &|r| {
                r.remove("jobs");
            },
        ];
        for (i, step) in steps.iter().enumerate() {
            let mut expected = snapshot_map(&repo, "/");
            step(&repo);
            let next = repo.commit(&format!("c{}", i + 1));

            let changes = changed_paths(repo.path(), &previous, &next, "/").unwrap();
            let changed: Vec<String> = changes
                .iter()
                .filter(|c| c.change != ChangeKind::Deleted)
                .map(|c| c.path.clone())
                .collect();
            let contents =
                read_files(repo.path(), &next, "/", &changed, &Limits::default()).unwrap();
            for c in changes.iter().filter(|c| c.change == ChangeKind::Deleted) {
                expected.remove(&c.path);
            }
            for file in contents {
                expected.insert(file.path, file.content);
            }

            assert_eq!(expected, snapshot_map(&repo, "/"), "step {i}");
            previous = next;
        }
    }

    #[test]
    fn a_force_push_still_diffs_and_is_not_an_ancestor() {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "a");
        let base = repo.commit("base");
        repo.write("jobs/b.yaml", "b");
        let abandoned = repo.commit("abandoned");
        repo.git(&["reset", "--quiet", "--hard", &base]);
        repo.write("jobs/c.yaml", "c");
        let rewritten = repo.commit("rewritten");

        let changes = changed_paths(repo.path(), &abandoned, &rewritten, "/").unwrap();

        assert_eq!(
            changes,
            [
                change("jobs/b.yaml", ChangeKind::Deleted),
                change("jobs/c.yaml", ChangeKind::Added),
            ]
        );
        assert!(!is_ancestor(repo.path(), &abandoned, &rewritten).unwrap());
        assert!(is_ancestor(repo.path(), &base, &rewritten).unwrap());
    }

    #[test]
    fn a_missing_base_commit_asks_for_a_full_scan() {
        let repo = TestRepo::new();
        repo.write("jobs/a.yaml", "a");
        let to = repo.commit("initial");
        let missing = "0123456789abcdef0123456789abcdef01234567";

        let err = changed_paths(repo.path(), missing, &to, "/").unwrap_err();

        assert!(
            matches!(err, GitError::DiffBaseUnavailable { .. }),
            "{err:?}"
        );
        assert!(err.needs_full_scan());
    }

    #[test]
    fn a_config_path_that_appears_lists_everything_as_added() {
        let repo = TestRepo::new();
        repo.write("README.md", "r");
        let from = repo.commit("initial");
        repo.write("config/jobs/a.yaml", "a");
        let to = repo.commit("config");

        let changes = changed_paths(repo.path(), &from, &to, "config").unwrap();

        assert_eq!(changes, [change("jobs/a.yaml", ChangeKind::Added)]);
    }
}

fn uncommitted(repo: &TestRepo, config_path: &str) -> usize {
    let snapshot = read_commit(
        &location(repo),
        Some("main"),
        config_path,
        &Limits::default(),
    )
    .unwrap();
    uncommitted_files(
        repo.path(),
        config_path,
        &snapshot.files,
        &Limits::default(),
    )
    .unwrap()
}

#[test]
fn uncommitted_files_counts_edited_new_and_removed_resource_files_only() {
    let repo = TestRepo::new();
    repo.write("jobs/a.yaml", "a: 1\n")
        .write("jobs/b.yaml", "b: 1\n")
        .write("jobs/c.yaml", "c: 1\n")
        .write("README.md", "docs\n");
    repo.commit("initial");
    assert_eq!(uncommitted(&repo, "/"), 0);

    repo.write("jobs/a.yaml", "a: 2\n")
        // Written again with the same text: its stat data changes, its content does not.
        .write("jobs/b.yaml", "b: 1\n")
        .write("jobs/d.yaml", "d: 1\n")
        .write("README.md", "more docs\n");
    std::fs::remove_file(repo.path().join("jobs/c.yaml")).unwrap();

    assert_eq!(uncommitted(&repo, "/"), 3);
}

#[test]
fn a_staged_edit_is_still_uncommitted() {
    let repo = TestRepo::new();
    repo.write("team/config/jobs/a.yaml", "a: 1\n")
        .write("team/config/jobs/b.yaml", "b: 1\n");
    repo.commit("initial");
    assert_eq!(uncommitted(&repo, "team/config"), 0);

    repo.write("team/config/jobs/a.yaml", "a: 2\n");
    repo.git(&["add", "team/config/jobs/a.yaml"]);

    assert_eq!(uncommitted(&repo, "team/config"), 1);
}

#[test]
fn a_file_whose_stat_data_matches_its_clean_index_entry_is_not_read() {
    // With ctime and inode not trusted (core.trustctime, core.checkStat), a same-size rewrite
    // given back its old mtime looks untouched to git: `git status` calls it clean, and so
    // does the count, which takes the index's word instead of reading the file.
    let repo = TestRepo::new();
    repo.git(&["config", "core.trustctime", "false"]);
    repo.git(&["config", "core.checkStat", "minimal"]);
    repo.write("jobs/a.yaml", "a: 1\n");
    let file = repo.path().join("jobs/a.yaml");
    let past = "202001010000";
    touch(&file, &["-t".as_ref(), past.as_ref()]);
    repo.commit("initial");

    repo.write("jobs/a.yaml", "a: 9\n");
    touch(&file, &["-t".as_ref(), past.as_ref()]);

    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    assert_eq!(uncommitted(&repo, "/"), 0);
    // Without the index the same files differ.
    std::fs::remove_file(repo.path().join(".git/index")).unwrap();
    assert_eq!(uncommitted(&repo, "/"), 1);
}

#[test]
fn a_same_size_rewrite_given_back_its_mtime_is_still_read() {
    // Only the change time, to the nanosecond, tells this file from the one git indexed:
    // stat data compared by the second would call it clean.
    let repo = TestRepo::new();
    repo.write("jobs/a.yaml", "a: 1\n");
    repo.commit("initial");
    let file = repo.path().join("jobs/a.yaml");
    let mtime = repo.path().join("mtime-of-a");
    std::fs::write(&mtime, "").unwrap();
    touch(&mtime, &["-r".as_ref(), file.as_os_str()]);

    repo.write("jobs/a.yaml", "a: 2\n");
    touch(&file, &["-r".as_ref(), mtime.as_os_str()]);

    assert_eq!(uncommitted(&repo, "/"), 1);
}

/// `touch -m` of `path` with `args` (`-t STAMP` or `-r REFERENCE`): its mtime set, nothing else.
fn touch(path: &std::path::Path, args: &[&std::ffi::OsStr]) {
    let status = std::process::Command::new("touch")
        .arg("-m")
        .args(args)
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}
