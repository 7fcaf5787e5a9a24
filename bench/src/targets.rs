//! The poller at many targets (issue 26): N small repositories, each its own target, behind one
//! local smart-HTTP server, and `ritmo::workflow::poll_targets` (the poller Lambda's and
//! `ritmo serve`'s tick) timed as a whole. Starvation is read from the server's side: when each
//! target's last request of the tick was answered, since the tick started.
//!
//! Every request can be held for a simulated latency (`GitHttpServer::set_delay`), so the
//! arithmetic of docs/scaling.md (targets × requests per check × latency / concurrency) can be
//! set beside a measured tick.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ritmo::config::{Settings, TargetSettings};
use ritmo::metrics::MetricsSink;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo::workflow::{self, PollReport, PolledTarget};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::GitHttpServer;
use secrecy::SecretString;

use crate::generate::{self, Shape};
use crate::{median, ms};

/// Resources in each target's repository: a credential, a plugin, two jobs, a webhook.
const RESOURCES_PER_REPOSITORY: usize = 5;

/// One (latency, concurrency) setting's ticks.
struct Line {
    delay: Duration,
    concurrency: usize,
    registration: Duration,
    ticks: Vec<Tick>,
}

/// One measured tick.
struct Tick {
    wall: Duration,
    checked: usize,
    enqueued: usize,
    errors: usize,
    /// Targets the server heard nothing from during the tick.
    skipped: usize,
    /// Each heard-from target's last answer, since the tick started, sorted.
    completions: Vec<Duration>,
    requests: usize,
}

pub async fn run(
    targets: usize,
    delays_ms: &[u64],
    concurrencies: &[u32],
    repeat: usize,
) -> Result<()> {
    let repeat = repeat.max(1);
    let work = tempfile::tempdir()?;
    let root = work.path().join("repositories");
    eprintln!("== {targets} repositories of {RESOURCES_PER_REPOSITORY} resources");
    let started = Instant::now();
    create_repositories(&root, targets)?;
    eprintln!("   made in {:.1} s", started.elapsed().as_secs_f64());
    let server = GitHttpServer::start(&root, None);

    let mut lines = Vec::new();
    for &delay_ms in delays_ms {
        let delay = Duration::from_millis(delay_ms);
        server.set_delay(delay);
        for &concurrency in concurrencies {
            eprintln!("== head delay {delay_ms} ms per request, poll_concurrency {concurrency}");
            lines.push(measure(&server, work.path(), targets, delay, concurrency, repeat).await?);
        }
    }
    server.set_delay(Duration::ZERO);
    print_table(targets, &lines);
    Ok(())
}

/// `repo-NNNN/config` under `root`, each a committed repository, made on a few threads
/// (creating 1,000 takes a few thousand git processes).
fn create_repositories(root: &Path, targets: usize) -> Result<()> {
    let shape = Shape::of(RESOURCES_PER_REPOSITORY);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                scope.spawn(move || -> std::io::Result<()> {
                    for index in (worker..targets).step_by(workers) {
                        generate::commit_repository(&root.join(repository(index)), shape)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(made) => made?,
                Err(_) => bail!("a repository-making thread panicked"),
            }
        }
        Ok(())
    })
}

fn repository(index: usize) -> String {
    format!("repo-{index:04}")
}

/// A fresh database, a registering tick, then `repeat` measured ticks. No run ever starts
/// (nothing drains the queue), so every target is due at every tick and its moved branch is
/// looked up and enqueued again: the most a tick does per target.
async fn measure(
    server: &GitHttpServer,
    work: &Path,
    targets: usize,
    delay: Duration,
    concurrency: u32,
    repeat: usize,
) -> Result<Line> {
    let db = TestDb::new().await;
    let settings = Settings {
        enabled: true,
        targets: (0..targets)
            .map(|index| {
                TargetSettings::new(format!("t-{index:04}")).with_repository(
                    server.url(&format!("{}/config/.git", repository(index))),
                    "main",
                )
            })
            .collect(),
        database_url: Some(SecretString::from(db.url.clone())),
        cache_dir: work.join("cache"),
        check_secret_refs: false,
        poll_concurrency: Some(concurrency),
        ..Settings::default()
    };
    // The receivers stay alive so the queue accepts the plan requests.
    let (queues, _receivers) = Queues::local();
    let services = Services::connect(settings, queues, MetricsSink::Disabled).await?;

    let started = Instant::now();
    let first = workflow::poll_targets(&services).await?;
    let registration = started.elapsed();
    eprintln!(
        "   registering tick: {} ms, {} enqueued",
        ms(registration),
        first.enqueued
    );
    let mut ticks = Vec::new();
    for _ in 0..repeat {
        let started = Instant::now();
        let report = workflow::poll_targets(&services).await?;
        let wall = started.elapsed();
        let tick = tally(server, targets, started, wall, &report);
        eprintln!(
            "   tick: {} ms, {} checked, {} enqueued, {} errors, {} skipped",
            ms(tick.wall),
            tick.checked,
            tick.enqueued,
            tick.errors,
            tick.skipped
        );
        ticks.push(tick);
    }
    Ok(Line {
        delay,
        concurrency: usize::try_from(concurrency)?,
        registration,
        ticks,
    })
}

fn tally(
    server: &GitHttpServer,
    targets: usize,
    started: Instant,
    wall: Duration,
    report: &PollReport,
) -> Tick {
    let mut last_answer: Vec<Option<Duration>> = vec![None; targets];
    let mut requests = 0;
    for request in server.requests() {
        let Some(since) = request.answered_at.checked_duration_since(started) else {
            continue;
        };
        if since > wall {
            continue;
        }
        requests += 1;
        let index = request
            .path
            .trim_start_matches('/')
            .strip_prefix("repo-")
            .and_then(|rest| rest.split('/').next())
            .and_then(|digits| digits.parse::<usize>().ok());
        if let Some(slot) = index.and_then(|index| last_answer.get_mut(index)) {
            *slot = Some(slot.map_or(since, |seen| seen.max(since)));
        }
    }
    let mut completions: Vec<Duration> = last_answer.iter().flatten().copied().collect();
    completions.sort();
    let errors = report
        .targets
        .iter()
        .filter(|target| matches!(target, PolledTarget::Error { .. }))
        .count();
    let checked = report
        .targets
        .iter()
        .filter(|target| {
            matches!(
                target,
                PolledTarget::UpToDate { .. }
                    | PolledTarget::Enqueued { .. }
                    | PolledTarget::AlreadyHandled { .. }
            )
        })
        .count();
    Tick {
        wall,
        checked,
        enqueued: report.enqueued,
        errors,
        skipped: targets - completions.len(),
        completions,
        requests,
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn seconds(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64())
}

fn print_table(targets: usize, lines: &[Line]) {
    println!(
        "| targets | delay ms / request | poll_concurrency | registering tick s | tick s, median (min–max) | checked / enqueued / errors / skipped (worst tick) | check done since tick start, p50 / p99 / max s | requests / check | arithmetic s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let undelayed: Vec<(usize, Duration)> = lines
        .iter()
        .filter(|line| line.delay.is_zero())
        .map(|line| (line.concurrency, median(walls(line))))
        .collect();
    for line in lines {
        let walls = walls(line);
        let (Some(min), Some(max)) = (walls.iter().min(), walls.iter().max()) else {
            continue;
        };
        let worst = |field: fn(&Tick) -> usize| line.ticks.iter().map(field).max().unwrap_or(0);
        let fewest_checked = line.ticks.iter().map(|t| t.checked).min().unwrap_or(0);
        let completions: Vec<Duration> = {
            let mut all: Vec<Duration> = line
                .ticks
                .iter()
                .flat_map(|tick| tick.completions.iter().copied())
                .collect();
            all.sort();
            all
        };
        let requests: usize = line.ticks.iter().map(|tick| tick.requests).sum();
        let per_check = requests as f64 / (line.ticks.len() * targets).max(1) as f64;
        println!(
            "| {targets} | {} | {} | {} | {} ({}–{}) | {fewest_checked} / {} / {} / {} | {} / {} / {} | {per_check:.1} | {} |",
            line.delay.as_millis(),
            line.concurrency,
            seconds(line.registration),
            seconds(median(walls.clone())),
            seconds(*min),
            seconds(*max),
            worst(|t| t.enqueued),
            worst(|t| t.errors),
            worst(|t| t.skipped),
            seconds(percentile(&completions, 0.5)),
            seconds(percentile(&completions, 0.99)),
            seconds(completions.last().copied().unwrap_or_default()),
            arithmetic(line, targets, per_check, &undelayed),
        );
    }
    println!();
    println!(
        "arithmetic = targets × requests per check × delay / poll_concurrency, + the median tick at 0 ms delay and the same concurrency (database, local git and queue work)"
    );
}

fn walls(line: &Line) -> Vec<Duration> {
    line.ticks.iter().map(|tick| tick.wall).collect()
}

fn arithmetic(
    line: &Line,
    targets: usize,
    per_check: f64,
    undelayed: &[(usize, Duration)],
) -> String {
    if line.delay.is_zero() {
        return "-".into();
    }
    let waiting =
        targets as f64 * per_check * line.delay.as_secs_f64() / line.concurrency.max(1) as f64;
    match undelayed
        .iter()
        .find(|(concurrency, _)| *concurrency == line.concurrency)
    {
        Some((_, base)) => format!(
            "{waiting:.2} + {} = {:.2}",
            seconds(*base),
            waiting + base.as_secs_f64()
        ),
        None => format!("{waiting:.2} + ?"),
    }
}
