//! `ritmo-bench`: syncs a generated config repository of N resources, served over smart HTTP,
//! into a real PostgreSQL, and prints each figure beside the physical floor measured in the
//! same run (`git clone --depth 1 --bare` of the same repository + `psql \copy` of the same
//! rows). Not a test: nothing here asserts a time.
//!
//! ```text
//! cargo run --profile profiling -p ritmo-bench -- --resources 1000,10000
//! ```

mod cold_start;
mod floor;
mod generate;
mod handlers;
mod incremental;
mod parse;
mod process;
mod targets;
mod webhook;
mod whole;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use ritmo::config::{Settings, TargetSettings};
use ritmo::git::{self, Auth, NetworkOptions, RepoLocation};
use ritmo::message::{PlanRequest, Trigger};
use ritmo::metrics::MetricsSink;
use ritmo::plan::Plan;
use ritmo::queue::{LocalReceivers, Queues};
use ritmo::services::Services;
use ritmo::source::incremental::ScanMode;
use ritmo::store::Store;
use ritmo::workflow::{self, InlineSync, PlanOptions, PlanRequestOutcome};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::GitHttpServer;
use secrecy::SecretString;

use generate::Shape;

/// Benchmark Ritmo GitOps syncs against git clone + psql COPY.
#[derive(Parser, Debug)]
struct Args {
    /// Repository sizes to measure (resources), comma-separated; e.g. 100000 to see growth.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    resources: Vec<usize>,
    /// Repetitions of each repeatable measurement (the median is printed).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Only the parse stage, in memory, layer by layer (no git, no database): for profiling.
    #[arg(long)]
    parse_only: bool,
    /// Webhook deliveries to time (0 skips the webhook measurement).
    #[arg(long, default_value_t = 2000)]
    webhook_iterations: usize,
    /// Build the five functions with `cargo build --release` first (about 8 minutes on 2
    /// cores) so their sizes can be printed; without it, sizes of binaries already in
    /// target/release are printed when present.
    #[arg(long)]
    build_functions: bool,
    /// Internal: plan the repository at this URL into this database as the planner function
    /// does, print the peak RSS, and exit (the parent measures the planner in isolation).
    #[arg(long, hide = true, num_args = 2, value_names = ["REPO_URL", "DATABASE_URL"])]
    plan_child: Option<Vec<String>>,
    /// Instead of the suite: incremental syncs of this many changed files (comma-separated),
    /// creates then updates, each beside `--full` of the same commit, on a repository of the
    /// first `--resources` size, all as whole `ritmo` processes.
    #[arg(long, value_delimiter = ',', value_name = "FILES")]
    incremental_changes: Vec<usize>,
    /// Instead of the suite: the release `ritmo` binary as whole processes (validate; full,
    /// no-op, 1-file and 100-file syncs over file:// and smart HTTP, beside their floors) on a
    /// repository of the first `--resources` size.
    #[arg(long)]
    whole_process: bool,
    /// Instead of the suite: each function's cold start, exec of target/release/FUNCTION to
    /// its first Runtime API `next` request (build them first).
    #[arg(long)]
    cold_starts: bool,
    /// Instead of the suite: the release planner and applier, each started cold and handed
    /// one SQS event by a local Runtime API (a full plan of the first `--resources` size over
    /// file://, then its apply), beside their floors (build them first).
    #[arg(long)]
    handlers: bool,
    /// Instead of the suite: write the generated repository of the first `--resources` size
    /// to this directory as a git repository on `main`, and exit (for profiling by hand).
    #[arg(long, value_name = "DIR")]
    write_repository: Option<std::path::PathBuf>,
    /// Instead of the suite: the poller's tick (`workflow::poll_targets`) over this many
    /// targets, each its own small repository behind one local smart-HTTP server.
    #[arg(long, value_name = "TARGETS")]
    targets: Option<usize>,
    /// With `--targets`: how long the server holds each request (ms, comma-separated), to
    /// stand in for a distant git host.
    #[arg(long, value_delimiter = ',', default_value = "0,100")]
    head_delay_ms: Vec<u64>,
    /// With `--targets`: the poller's `poll_concurrency` settings to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    poll_concurrency: Vec<u32>,
    /// The `ritmo` binary the whole-process measurements run.
    #[arg(long, value_name = "PATH")]
    ritmo_bin: Option<std::path::PathBuf>,
    /// Internal: run this program, then print its wall time and peak RSS (see `process::run`).
    #[arg(long, hide = true, num_args = 1.., allow_hyphen_values = true, value_name = "PROGRAM")]
    rusage_of: Vec<String>,
}

const TARGET: &str = "bench";

fn main() -> Result<std::process::ExitCode> {
    let args = Args::parse();
    if !args.rusage_of.is_empty() {
        return process::rusage_of(&args.rusage_of);
    }
    if let Some(child) = &args.plan_child {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let kib = runtime.block_on(plan_child(&child[0], &child[1]))?;
        println!("VmHWM {kib}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.parse_only {
        for &n in &args.resources {
            parse::run(n, args.repeat.max(1))?;
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.write_repository {
        let shape = Shape::of(args.resources.first().copied().unwrap_or(10_000));
        let repo = generate::commit_repository(dir, shape)?;
        println!("{}", repo.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(targets) = args.targets {
        runtime.block_on(targets::run(
            targets,
            &args.head_delay_ms,
            &args.poll_concurrency,
            args.repeat,
        ))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.cold_starts
        || args.handlers
        || args.whole_process
        || !args.incremental_changes.is_empty()
    {
        let resources = args.resources.first().copied().unwrap_or(10_000);
        if args.cold_starts {
            let figures = runtime.block_on(cold_start::run(args.repeat))?;
            cold_start::print(args.repeat, &figures);
        }
        if args.handlers {
            runtime.block_on(handlers::run(resources, args.repeat))?;
        }
        if args.whole_process || !args.incremental_changes.is_empty() {
            let ritmo = match &args.ritmo_bin {
                Some(path) => path.clone(),
                None => process::binary("release", "ritmo")?,
            };
            if args.whole_process {
                runtime.block_on(whole::run(&ritmo, resources, args.repeat))?;
            }
            if !args.incremental_changes.is_empty() {
                runtime.block_on(incremental::run(
                    &ritmo,
                    resources,
                    &args.incremental_changes,
                    args.repeat,
                ))?;
            }
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut reports = Vec::new();
    for &n in &args.resources {
        eprintln!("== {n} resources");
        reports.push(runtime.block_on(run(n, args.repeat.max(1)))?);
    }
    let webhook = if args.webhook_iterations > 0 {
        eprintln!("== webhook handler");
        Some(runtime.block_on(webhook::run(args.webhook_iterations))?)
    } else {
        None
    };
    let binaries = function_sizes(args.build_functions)?;
    print_table(&reports);
    print_extras(webhook, &binaries);
    Ok(std::process::ExitCode::SUCCESS)
}

const FUNCTIONS: [&str; 5] = ["api", "applier", "planner", "poller", "webhook"];

/// `target/release/<function>` sizes, building them first when asked.
fn function_sizes(build: bool) -> Result<Vec<(&'static str, Option<u64>)>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if build {
        eprintln!("== cargo build --release of the functions");
        let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        command.current_dir(&root).args(["build", "--release"]);
        for function in FUNCTIONS {
            command.args(["-p", function]);
        }
        if !command.status()?.success() {
            bail!("cargo build --release of the functions failed");
        }
    }
    Ok(FUNCTIONS
        .iter()
        .map(|name| {
            let path = root.join("target/release").join(name);
            (*name, std::fs::metadata(path).ok().map(|m| m.len()))
        })
        .collect())
}

/// The planner function's work on a full sync (register, fetch, parse, validate, read live
/// state, plan, record the run and its plan: `workflow::handle_plan_request`), in this
/// process; returns its peak RSS in KiB.
async fn plan_child(url: &str, database_url: &str) -> Result<u64> {
    let work = tempfile::tempdir()?;
    let (services, _receivers) = services(url, database_url, &work.path().join("cache")).await?;
    let request = PlanRequest::new(TARGET, Trigger::Manual, chrono::Utc::now());
    match workflow::handle_plan_request(&services, &request).await? {
        PlanRequestOutcome::Planned { .. } => Ok(peak_rss_kib()),
        other => bail!("the planner did not plan: {other:?}"),
    }
}

/// The planner's peak RSS on a full sync of the repository at `url`, measured in a child
/// process so nothing else of the bench counts.
async fn planner_peak_rss(url: &str) -> Result<u64> {
    let db = TestDb::new().await;
    drop(Store::connect(&db.url).await?);
    let output = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--plan-child", url, &db.url])
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "the planning child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM "))
        .and_then(|kib| kib.trim().parse().ok())
        .context("the planning child printed no VmHWM")
}

#[derive(Debug, Default)]
struct Report {
    resources: usize,
    files: usize,
    head_check: Duration,
    full: SyncTimes,
    noop: SyncTimes,
    one_file: SyncTimes,
    hundred_files: SyncTimes,
    clone_floor: Duration,
    copy_floor: Duration,
    /// `git fetch` of each one-file commit into a shallow bare clone: the floor of the
    /// one-file sync's fetch.
    one_file_fetch_floor: Duration,
    peak_rss_kib: u64,
    planner_rss_kib: u64,
}

/// One sync: the whole, and its parts.
#[derive(Debug, Default, Clone, Copy)]
struct SyncTimes {
    total: Duration,
    fetch: Duration,
    /// Diff, read, parse, validate, read live state, plan.
    plan: Duration,
    /// Begin the run and record its plan.
    record: Duration,
    /// Apply in one transaction.
    apply: Duration,
}

async fn run(n: usize, repeat: usize) -> Result<Report> {
    let shape = Shape::of(n);
    let work = tempfile::tempdir()?;
    let repo = generate::commit_repository(work.path(), shape)?;
    let server = GitHttpServer::start(&repo, None);
    let url = server.url(".git");
    let location = RepoLocation::parse(&url)?;

    let mut report = Report {
        resources: shape.total(),
        files: shape.total(),
        ..Report::default()
    };

    let mut heads = Vec::new();
    for _ in 0..repeat {
        let location = location.clone();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            git::remote_head(&location, "main", &Auth::None, &NetworkOptions::default())
        })
        .await??;
        heads.push(started.elapsed());
    }
    report.head_check = median(heads);

    eprintln!("planner peak RSS (child process)");
    report.planner_rss_kib = planner_peak_rss(&url).await?;

    // Each full sync starts as a new target's first does: an empty database and no fetch
    // cache. The syncs below continue from the last one.
    eprintln!("full syncs");
    let mut fulls = Vec::new();
    let mut last = None;
    for round in 0..repeat {
        // The previous round's plan and database go first, so the peak RSS below is one sync's.
        drop(last.take());
        let db = TestDb::new().await;
        let cache = work.path().join(format!("cache-{round}"));
        let (services, mut receivers) = services(&url, &db.url, &cache).await?;
        let (times, plan) = sync(&services, &mut receivers).await?;
        fulls.push(times);
        last = Some((services, receivers, db, plan));
    }
    let Some((services, mut receivers, _db, full_plan)) = last else {
        bail!("--repeat must be at least 1");
    };
    report.full = median_times(fulls);
    report.peak_rss_kib = peak_rss_kib();

    eprintln!("no-op syncs");
    let mut noops = Vec::new();
    for _ in 0..repeat {
        noops.push(sync(&services, &mut receivers).await?.0);
    }
    report.noop = median_times(noops);

    eprintln!("one-file syncs");
    let floor_clone = work.path().join("fetch-floor.git");
    floor::git_clone_shallow_bare(&url, &floor_clone)?;
    let mut singles = Vec::new();
    let mut floor_fetches = Vec::new();
    for round in 1..=repeat {
        let path = generate::job_path(round);
        std::fs::write(repo.join(&path), generate::job(round, round, shape))?;
        generate::commit(&repo, "edit one job");
        let started = Instant::now();
        let status = Command::new("git")
            .arg("-C")
            .arg(&floor_clone)
            .args(["fetch", "--quiet", &url, "+refs/heads/main:refs/heads/main"])
            .status()?;
        floor_fetches.push(started.elapsed());
        if !status.success() {
            bail!("git fetch failed");
        }
        singles.push(sync(&services, &mut receivers).await?.0);
    }
    report.one_file = median_times(singles);
    report.one_file_fetch_floor = median(floor_fetches);

    eprintln!("hundred-file syncs");
    let mut hundreds = Vec::new();
    for round in 1..=repeat {
        for i in 0..100.min(shape.jobs) {
            let index = (round * 100 + i) % shape.jobs;
            std::fs::write(
                repo.join(generate::job_path(index)),
                generate::job(index, 1000 + round, shape),
            )?;
        }
        generate::commit(&repo, "edit a hundred jobs");
        hundreds.push(sync(&services, &mut receivers).await?.0);
    }
    report.hundred_files = median_times(hundreds);

    eprintln!("floor: git clone --depth 1 --bare");
    let mut clones = Vec::new();
    for round in 0..repeat {
        let dir = work.path().join(format!("clone-{round}"));
        let started = Instant::now();
        floor::git_clone_shallow_bare(&url, &dir)?;
        clones.push(started.elapsed());
    }
    report.clone_floor = median(clones);

    eprintln!("floor: psql \\copy");
    let mut copies = Vec::new();
    for _ in 0..repeat {
        copies.push(floor::copy_floor(&full_plan, TARGET, work.path()).await?);
    }
    report.copy_floor = median(copies);
    drop(server);
    Ok(report)
}

/// The services of one benchmark database: the bench target, in-process queues, no metrics,
/// fetch cache under `cache_dir`.
async fn services(
    url: &str,
    database_url: &str,
    cache_dir: &Path,
) -> Result<(Services, LocalReceivers)> {
    let settings = Settings {
        enabled: true,
        targets: vec![TargetSettings::new(TARGET).with_repository(url, "main")],
        database_url: Some(SecretString::from(database_url.to_owned())),
        cache_dir: cache_dir.to_path_buf(),
        check_secret_refs: false,
        ..Settings::default()
    };
    let (queues, receivers) = Queues::local();
    let services = Services::connect(settings, queues, MetricsSink::Disabled).await?;
    Ok((services, receivers))
}

/// One sync as `ritmo gitops sync` runs it (`workflow::sync_inline`: plan, record, apply),
/// timed as a whole and by the stages the plan reports.
async fn sync(
    services: &Services,
    receivers: &mut LocalReceivers,
) -> Result<(SyncTimes, Arc<Plan>)> {
    let request = PlanRequest::new(TARGET, Trigger::Cli, chrono::Utc::now());
    let inline = InlineSync {
        options: PlanOptions::default(),
        auto_approve: false,
        actor: "bench".into(),
    };
    let started = Instant::now();
    let drained = workflow::sync_inline(services, receivers, &request, &inline).await?;
    let total = started.elapsed();
    if let Some(error) = &drained.error {
        bail!("the sync failed: {error}");
    }
    let Some(detail) = drained.last_plan().and_then(PlanRequestOutcome::detail) else {
        bail!("the sync planned nothing: {:?}", drained.plans);
    };
    let (Some(plan), Some(mode)) = (detail.plan.clone(), detail.mode.clone()) else {
        bail!(
            "the generated repository has errors: {:?}",
            detail.diagnostics.first()
        );
    };
    let stage = |name: &str| {
        detail
            .stages
            .iter()
            .filter(|(stage, _)| *stage == name)
            .map(|(_, took)| *took)
            .sum::<Duration>()
    };
    let fetch = stage("fetch");
    let planning: Duration = detail.stages.iter().map(|(_, took)| *took).sum();
    let apply = drained
        .applied()
        .map_or(Duration::ZERO, |report| report.duration);
    let summary = plan.summary();
    let stages: Vec<String> = detail
        .stages
        .iter()
        .map(|(stage, took)| format!("{stage} {}", ms(*took)))
        .collect();
    eprintln!(
        "  {mode}: {summary} in {} ms ({}; apply {})",
        ms(total),
        stages.join(", "),
        ms(apply),
    );
    if matches!(mode, ScanMode::Full { .. }) && plan.base.commit.is_some() {
        eprintln!("  note: a full scan where an incremental one was expected");
    }
    Ok((
        SyncTimes {
            total,
            fetch,
            plan: planning.saturating_sub(fetch),
            // What the stages and the apply transaction leave: registering the target,
            // recording the run and its plan, finishing it.
            record: total.saturating_sub(planning + apply),
            apply,
        },
        plan,
    ))
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn median_times(mut values: Vec<SyncTimes>) -> SyncTimes {
    values.sort_by_key(|times| times.total);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}

fn ratio(value: Duration, floor: Duration) -> String {
    if floor.is_zero() {
        return "-".into();
    }
    format!("{:.2}×", value.as_secs_f64() / floor.as_secs_f64())
}

fn print_table(reports: &[Report]) {
    println!(
        "| N | measure | total ms | fetch ms | plan ms | record ms | apply ms | vs floor / note |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in reports {
        let floor = r.clone_floor + r.copy_floor;
        let n = r.resources;
        println!(
            "| {n} | remote head check | {} | | | | | |",
            ms(r.head_check)
        );
        let row = |name: &str, t: &SyncTimes, note: String| {
            println!(
                "| {n} | {name} | {} | {} | {} | {} | {} | {note} |",
                ms(t.total),
                ms(t.fetch),
                ms(t.plan),
                ms(t.record),
                ms(t.apply)
            );
        };
        row(
            "full sync into an empty database",
            &r.full,
            format!("{} of floor", ratio(r.full.total, floor)),
        );
        row(
            "no-op sync (same commit)",
            &r.noop,
            format!(
                "{} ms beyond the head check",
                ms(r.noop.total.saturating_sub(r.head_check))
            ),
        );
        row(
            "incremental sync, 1 changed file",
            &r.one_file,
            format!(
                "full / incremental = {:.0}×",
                r.full.total.as_secs_f64() / r.one_file.total.as_secs_f64().max(1e-9)
            ),
        );
        println!(
            "| {n} | floor: git fetch of each 1-file commit (shallow bare clone) | {} | | | | | 1-file fetch = {} of it |",
            ms(r.one_file_fetch_floor),
            ratio(r.one_file.fetch, r.one_file_fetch_floor)
        );
        row(
            "incremental sync, 100 changed files",
            &r.hundred_files,
            format!(
                "full / incremental = {:.1}×",
                r.full.total.as_secs_f64() / r.hundred_files.total.as_secs_f64().max(1e-9)
            ),
        );
        println!(
            "| {n} | floor: git clone --depth 1 --bare | {} | | | | | |",
            ms(r.clone_floor)
        );
        println!(
            "| {n} | floor: psql \\copy of the rows ({} files) | {} | | | | | |",
            r.files,
            ms(r.copy_floor)
        );
        println!(
            "| {n} | floor: clone + copy | {} | | | | | 1.00× |",
            ms(floor)
        );
        println!(
            "| {n} | planner peak RSS, full sync in a child process (VmHWM) | {} MiB | | | | | |",
            r.planner_rss_kib / 1024
        );
        println!(
            "| {n} | peak RSS of the bench process after the full sync | {} MiB | | | | | |",
            r.peak_rss_kib / 1024
        );
    }
}

fn print_extras(webhook: Option<webhook::WebhookTimes>, binaries: &[(&str, Option<u64>)]) {
    if let Some(w) = webhook {
        println!();
        println!(
            "| webhook, {} B signed GitHub push, {} deliveries | p50 ms | p99 ms |",
            w.body_bytes, w.iterations
        );
        println!("|---|---|---|");
        println!(
            "| handler (`webhook::app`: verify, parse, record delivery, queue) | {:.3} | {:.3} |",
            w.handler_p50.as_secs_f64() * 1e3,
            w.handler_p99.as_secs_f64() * 1e3
        );
        println!(
            "| `ritmo::webhook::receive` alone (verify + parse) | {:.3} | {:.3} |",
            w.verify_parse_p50.as_secs_f64() * 1e3,
            w.verify_parse_p99.as_secs_f64() * 1e3
        );
    }
    println!();
    println!("| function binary (target/release) | size |");
    println!("|---|---|");
    for (name, size) in binaries {
        match size {
            Some(bytes) => println!("| {name} | {:.1} MiB |", *bytes as f64 / 1_048_576.0),
            None => println!("| {name} | not built |"),
        }
    }
    if binaries.iter().any(|(_, size)| size.is_none()) {
        println!();
        println!(
            "(build them with `cargo build --release -p api -p applier -p planner -p poller -p webhook`, about 8 minutes on 2 cores, or pass --build-functions)"
        );
    }
}
