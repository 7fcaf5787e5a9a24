//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, `pg_ctl start` on a
//! free loopback port, removed (stopped at once, directory deleted) when dropped.
//!
//! initdb and the server refuse to run as root. As root (a CI machine, a container) they run
//! as the `postgres` user through `runuser`, which the Debian `postgresql` package creates;
//! as anyone else they run as that user.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The user the server runs as when we are root.
const SERVER_USER: &str = "postgres";

pub struct Cluster {
    /// Holds the data directory; deleted on drop, after the server is stopped.
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<String>,
    pub port: u16,
    /// The server's `max_connections` (the storm test lowers it to its connection budget).
    max_connections: u32,
}

impl Cluster {
    /// initdb + start. Errors say what is missing (binaries, the user to run them as).
    #[allow(dead_code)] // the storm test (functions/webhook/tests/storm.rs) compiles this file too
    pub fn start() -> Result<Cluster> {
        Cluster::start_with_max_connections(40)
    }

    /// [`start`](Self::start) with the server's `max_connections` set to `max_connections`.
    pub fn start_with_max_connections(max_connections: u32) -> Result<Cluster> {
        let bin = server_binaries()?;
        let dir = tempfile::Builder::new()
            .prefix("ritmo-faults-pg-")
            .tempdir()
            .context("create the cluster's directory")?;
        let run_as = if is_root() {
            let (uid, gid) = user_ids(SERVER_USER)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .context("give the cluster's directory to the postgres user")?;
            Some(SERVER_USER.to_string())
        } else {
            None
        };
        let cluster = Cluster {
            dir,
            bin,
            run_as,
            port: ritmo_tests::free_port(),
            max_connections,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data().display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log, for a failure message.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// A URL of database `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// `pg_ctl start`, waiting until the server accepts connections (after crash recovery,
    /// when the last stop was immediate).
    pub fn start_server(&self) -> Result<()> {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections={}",
            self.port,
            self.dir.path().display(),
            self.max_connections
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.log_path().display().to_string(),
                "-w",
                "-t",
                "120",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// `pg_ctl stop -m immediate`: every backend is killed without a checkpoint, as in a
    /// crash; the next start replays the WAL.
    pub fn stop_immediately(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let path = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        // The server inherits the working directory: one the server user can read.
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .output()
            .with_context(|| format!("run {}", path.display()))?;
        if !output.status.success() {
            bail!(
                "{program} {} failed ({}): {}{}\nserver log: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.log_path().display()
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop_immediately() {
            eprintln!("warning: could not stop the throwaway cluster: {error:#}");
        }
    }
}

/// The directory of initdb and pg_ctl: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off the PATH), else `pg_config --bindir`.
fn server_binaries() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let bindir = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    match bindir {
        Some(dir) if dir.join("initdb").is_file() => Ok(dir),
        _ => bail!(
            "initdb and pg_ctl not found: install PostgreSQL (apt-get install postgresql) or \
             set PG_BIN to the directory holding them"
        ),
    }
}

fn is_root() -> bool {
    id(&["-u"]).is_ok_and(|uid| uid == 0)
}

fn user_ids(user: &str) -> Result<(u32, u32)> {
    let uid = id(&["-u", user]);
    let gid = id(&["-g", user]);
    match (uid, gid) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => bail!(
            "running as root, and there is no `{user}` user to run PostgreSQL as: install \
             PostgreSQL (apt-get install postgresql creates it), or run as a non-root user"
        ),
    }
}

fn id(args: &[&str]) -> Result<u32> {
    let output = Command::new("id").args(args).output().context("run id")?;
    if !output.status.success() {
        bail!("id {} failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}
