//! The `ritmo` processes the faults hit: `ritmo gitops sync` and `ritmo serve`, each with its
//! own environment (nothing inherited from ours but PATH and HOME) and its output in a file.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

/// How to run `ritmo` against the cluster.
pub struct Ritmo {
    pub binary: PathBuf,
    /// Where process output and fetch caches go.
    pub work: PathBuf,
    pub repo: PathBuf,
    pub database_url: String,
}

/// A running `ritmo` process.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Ritmo {
    /// The `ritmo` binary: `$RITMO_BIN`, else `debug/ritmo` in the cargo target directory.
    pub fn binary() -> Result<PathBuf> {
        let binary = match std::env::var_os("RITMO_BIN") {
            Some(path) => PathBuf::from(path),
            None => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
                target.join("debug/ritmo")
            }
        };
        if !binary.is_file() {
            bail!(
                "`{}` does not exist: build it first (cargo build -p ritmo-cli) or set RITMO_BIN",
                binary.display()
            );
        }
        Ok(binary)
    }

    fn command(&self, log_name: &str, cache: &str) -> Result<(Command, PathBuf)> {
        let log = self.work.join(format!("{log_name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .envs(std::env::vars_os().filter(|(name, _)| name == "PATH" || name == "HOME"))
            .env("DATABASE_URL", &self.database_url)
            .env("RITMO_GITOPS_CACHE_DIR", self.work.join(cache))
            .env(
                "RITMO_MASTER_ENCRYPTION_KEY",
                "ritmo-faults-master-key-32-bytes",
            )
            // One configured target for the CLI and `serve`, as `make dev` sets it: a target's
            // settings have one owner, so a CLI flag that disagreed with serve's would be refused.
            .env("RITMO_GITOPS_REPO_URL", &self.repo)
            .env("RITMO_GITOPS_REPO_BRANCH", "main")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        Ok((command, log))
    }

    /// Starts `ritmo gitops sync` of the configured target.
    pub fn spawn_sync(&self, log_name: &str) -> Result<Process> {
        let (mut command, log) = self.command(log_name, "cache-cli")?;
        command.args(["gitops", "sync"]);
        let child = command.spawn().context("start ritmo gitops sync")?;
        Ok(Process { child, log })
    }

    /// Runs `ritmo gitops ARGS` to the end; fails unless it exits 0.
    pub async fn run(&self, log_name: &str, args: &[&str], within: Duration) -> Result<()> {
        let (mut command, log) = self.command(log_name, "cache-cli")?;
        command.arg("gitops").args(args);
        let mut process = Process {
            child: command.spawn().context("start ritmo")?,
            log,
        };
        let status = process.wait(within).await?;
        if !status.success() {
            bail!(
                "ritmo gitops {} exited with {status}: see {}",
                args.join(" "),
                process.log.display()
            );
        }
        Ok(())
    }

    /// Starts `ritmo serve` on a free loopback port, following `main` of the repository
    /// (the poller ticks every 5 seconds and starts at once; queues in process).
    pub fn spawn_serve(&self, log_name: &str) -> Result<Process> {
        let (mut command, log) = self.command(log_name, "cache-serve")?;
        let listen = format!("127.0.0.1:{}", ritmo_tests::free_port());
        command
            .env("RITMO_GITOPS_SYNC_INTERVAL", "5")
            .env("RITMO_GITOPS_WEBHOOK_SECRET", "ritmo-faults-webhook-secret")
            .env("RITMO_API_TOKEN", "ritmo-faults-api-token")
            .args(["serve", "--listen", &listen, "--poll-interval", "5"]);
        let child = command.spawn().context("start ritmo serve")?;
        Ok(Process { child, log })
    }
}

impl Process {
    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGKILL, and reap it.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.start_kill().ok();
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM (a graceful stop), then SIGKILL if it is still there after `within`.
    pub async fn terminate(&mut self, within: Duration) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(within, self.child.wait())
            .await
            .is_err()
        {
            self.kill().await?;
        }
        Ok(())
    }

    /// Waits for it to exit; after `within` it is killed and that is an error.
    pub async fn wait(&mut self, within: Duration) -> Result<ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.kill().await?;
                bail!(
                    "still running after {} s, killed: see {}",
                    within.as_secs(),
                    self.log.display()
                )
            }
        }
    }
}
