//! The git path and ref validators: branch names, config paths, repository locations, and the
//! other checks a path or URL from a config or a webhook goes through before it is used.
//! Input: the whole text is tried by each; for the two-argument checks, it is split at the
//! first newline.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use ritmo::config::{branch_matches, normalise_path};
use ritmo::crypto::ExposeSecret;
use ritmo::git::{ConfigPath, RepoLocation, is_valid_branch_name, read_worktree};
use ritmo::manifest::{Limits, resource_kind_for_path};
use ritmo::model::is_valid_name;
use ritmo::webhook::{normalize_branch, normalize_repo_url};

/// A small work tree (`config/jobs/a.yaml`) that config paths are resolved against.
static WORKTREE: LazyLock<(tempfile::TempDir, PathBuf)> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let jobs = dir.path().join("config/jobs");
    std::fs::create_dir_all(&jobs).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(jobs.join("a.yaml"), "name: a\n").unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().to_path_buf();
    (dir, path)
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let input = text.as_ref();

    if is_valid_branch_name(input) {
        assert!(
            !input.is_empty() && !input.contains(".."),
            "accepted `{input}`"
        );
    }
    let _ = normalize_branch(input);
    let _ = normalize_repo_url(input);
    let _ = is_valid_name(input);
    let _ = resource_kind_for_path(input);
    let _ = normalise_path(input);
    if let Some((pattern, branch)) = input.split_once('\n') {
        let _ = branch_matches(pattern, branch);
    }

    if let Ok(path) = ConfigPath::parse(input) {
        for component in path.components() {
            assert!(
                !component.is_empty()
                    && component != "."
                    && component != ".."
                    && !component.contains(['/', '\\']),
                "component `{component}` of `{input}`"
            );
        }
        let again = ConfigPath::parse(&path.display());
        assert_eq!(
            again.ok().as_ref(),
            Some(&path),
            "display of `{input}` reparses differently"
        );
        let (_dir, root) = &*WORKTREE;
        if let Ok(snapshot) = read_worktree(root, input, &Limits::default()) {
            assert!(snapshot.files.len() <= 1);
        }
    }

    match RepoLocation::parse(input) {
        Ok(location) => {
            let shown = [location.to_string(), format!("{location:?}")];
            if let Some(remote) = location.remote() {
                let _ = (
                    remote.scheme(),
                    remote.username(),
                    remote.gix_url().to_bstring(),
                );
                if let Some(password) = remote.password() {
                    let password = password.expose_secret();
                    // Only a password written once and long enough not to match by chance.
                    if password.len() >= 8 && input.matches(password).count() == 1 {
                        for output in &shown {
                            assert!(!output.contains(password), "a location shows its password");
                        }
                    }
                }
            }
            let _ = location.fetch_url();
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
});
