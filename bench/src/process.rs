//! Whole processes, timed as a user meets them: exec to exit, and the peak resident set the
//! kernel recorded for that one child (`wait4`), not for the bench itself.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use nix::sys::resource::{UsageWho, getrusage};

/// One finished process.
#[derive(Debug, Clone)]
pub struct Finished {
    pub wall: Duration,
    pub peak_rss_kib: u64,
    pub stdout: String,
}

/// The line the measuring wrapper ends its stderr with: wall time (ns) and peak RSS (KiB).
const REPORT: &str = "ritmo-bench-rusage:";

/// Runs `command` to its end through this binary's `--rusage-of` wrapper, whose only child
/// it is, so the kernel's peak RSS of "all children" is that command's; fails, with its
/// output, unless it exits 0.
pub fn run(command: &Command) -> Result<Finished> {
    let shown = format!("{command:?}");
    let mut wrapped = Command::new(std::env::current_exe().context("locate ritmo-bench")?);
    wrapped
        .arg("--rusage-of")
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    let child = wrapped
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {shown}"))?;
    // The pipes are drained on threads: a child blocked on a full pipe would never exit.
    let mut child = child;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = child.wait()?;
    let stdout = stdout.map(join).unwrap_or_default();
    let stderr = stderr.map(join).unwrap_or_default();
    if !status.success() {
        bail!("{shown} exited with {status}:\n{stdout}{stderr}");
    }
    let report = stderr
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(REPORT))
        .with_context(|| format!("{shown}: the wrapper printed no figures"))?;
    let mut figures = report.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(wall_ns)), Some(Ok(peak_rss_kib))) = (figures.next(), figures.next()) else {
        bail!("{shown}: unreadable figures `{report}`");
    };
    Ok(Finished {
        wall: Duration::from_nanos(wall_ns),
        peak_rss_kib,
        stdout,
    })
}

/// The wrapper's side of [`run`]: runs `program` with this process's stdio, then prints
/// [`REPORT`] and exits as it did.
pub fn rusage_of(program: &[String]) -> Result<ExitCode> {
    let Some((name, args)) = program.split_first() else {
        bail!("--rusage-of needs a program");
    };
    let started = Instant::now();
    let status = Command::new(name)
        .args(args)
        .status()
        .with_context(|| format!("start {name}"))?;
    let wall = started.elapsed();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    eprintln!("{REPORT} {} {}", wall.as_nanos(), usage.max_rss());
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn drain<R: std::io::Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn join(handle: std::thread::JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

/// `target/<profile>/<name>`, the binary a user runs after `cargo build --<profile>`.
pub fn binary(profile: &str, name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let path = target.join(profile).join(name);
    if !path.exists() {
        bail!(
            "`{}` does not exist: build it first (cargo build --profile {profile} -p ritmo-cli, \
             and -p api -p applier -p planner -p poller -p webhook for the functions)",
            path.display()
        );
    }
    Ok(path)
}

/// Median of `values` with their minimum and maximum, as `median (min–max)`.
pub fn spread(values: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = values.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let min = sorted.first().copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    (median, min, max)
}
