//! Git fixtures: repositories made on the spot with the git CLI, and (below) a smart-HTTP git
//! server on loopback with basic auth.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway repository with a work tree, driven through the git CLI. Commits are made with a
/// fixed identity and no global or system configuration.
pub struct TestRepo {
    dir: tempfile::TempDir,
}

impl TestRepo {
    /// `git init` on branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Self { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs git in the work tree and returns its trimmed stdout; panics when git fails.
    pub fn git(&self, args: &[&str]) -> String {
        run_git(self.path(), args)
    }

    /// Writes a file (creating its directories) without staging it.
    pub fn write(&self, relative: &str, content: impl AsRef<[u8]>) -> &Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
        self
    }

    pub fn remove(&self, relative: &str) -> &Self {
        self.git(&["rm", "--quiet", "-r", relative]);
        self
    }

    /// A symlink at `relative` pointing to `target`, staged.
    pub fn symlink(&self, relative: &str, target: &str) -> &Self {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, &path).expect("symlink");
        self.git(&["add", relative]);
        self
    }

    /// A submodule entry (gitlink) at `relative` pointing to `commit`, staged: commit it with
    /// [`TestRepo::commit_staged`].
    pub fn gitlink(&self, relative: &str, commit: &str) -> &Self {
        let info = format!("160000,{commit},{relative}");
        self.git(&["update-index", "--add", "--cacheinfo", &info]);
        self
    }

    /// Stages everything and commits; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Commits what is staged, without `git add` (which would drop a gitlink that has no
    /// directory in the work tree).
    pub fn commit_staged(&self, message: &str) -> String {
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git checkout -b <branch>` (or switch to it when it exists).
    pub fn checkout(&self, branch: &str) -> &Self {
        if self.git(&["branch", "--list", branch]).trim().is_empty() {
            self.git(&["checkout", "--quiet", "-b", branch]);
        } else {
            self.git(&["checkout", "--quiet", branch]);
        }
        self
    }
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs git in `dir` with a clean, fixed environment; panics with git's stderr on failure.
pub fn run_git(dir: &Path, args: &[&str]) -> String {
    let output = git_command(dir).args(args).output().expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_TERMINAL_PROMPT", "0");
    command
}

/// `git --exec-path`: where `git-http-backend` lives.
pub fn git_exec_path() -> PathBuf {
    let output = Command::new("git")
        .arg("--exec-path")
        .output()
        .expect("git runs");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}
