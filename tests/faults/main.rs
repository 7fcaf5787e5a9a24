//! Fault injection (issue 22): real `ritmo` processes killed, and PostgreSQL stopped at once,
//! in the middle of a 10,000-resource apply, against a throwaway cluster this program starts
//! itself (initdb and pg_ctl, a free loopback port, removed at the end).
//!
//! After every fault three things must hold:
//! 1. the database is exactly the old commit's or the new one's (resources, inventory and the
//!    target's last applied commit, read in one snapshot);
//! 2. no run is left `planning` or `applying` once a process has connected (`ritmo gitops
//!    status`, as an operator would) — every `ritmo` process is dead by then, so such a run
//!    has no live owner;
//! 3. the next sync converges: the resources equal the new commit's, and no run is left
//!    `planning`, `planned` or `applying`.
//!
//! Scenarios: SIGKILL of `ritmo gitops sync`; SIGKILL of `ritmo serve`; `pg_ctl stop -m
//! immediate` under each; a killed CLI followed by `serve`. Each scenario works in a fresh
//! database, so its first round is the (an empty database, 10,000 creates); then it
//! moves `main` between two commits that differ in every job row.
//!
//! `make test-faults` builds `ritmo` and runs this. It is a test target without the libtest
//! harness: the rounds share one cluster and one repository, run one after another (two
//! `ritmo` processes would race for the same target), and print as they go.
//!
//! Rounds run in passes: the first plays every scenario once, later ones add rounds while
//! `FAULTS_BUDGET_SECS` (default 480) since the start lasts, so a slow machine runs fewer
//! rounds, never fewer scenarios.
//!
//! Environment: `FAULTS_SEED` (replays a run: the seed is printed first), `FAULTS_ONLY` (one
//! scenario by name), `FAULTS_ROUNDS` (rounds per scenario instead of the defaults),
//! `FAULTS_BUDGET_SECS`, `FAULTS_RESOURCES` (default 10,000), `RITMO_BIN` (default the debug
//! build), `PG_BIN` (the directory of initdb and pg_ctl).

mod cluster;
mod fixture;
mod procs;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cluster::Cluster;
use fixture::{ConfigRepo, DbState};
use procs::{Process, Ritmo};
use tokio_postgres::Client;

const DEFAULT_RESOURCES: usize = 10_000;
/// No round beyond each scenario's first starts after this long: the suite's time stays
/// bounded on a slow machine, and every scenario still runs.
const DEFAULT_BUDGET_SECS: u64 = 480;
/// Bounds on waiting, so a hang fails the run instead of stalling CI. None is an assertion on
/// speed: each is many times what the step takes on a slow machine.
const SYNC_WITHIN: Duration = Duration::from_secs(300);
const APPLY_START_WITHIN: Duration = Duration::from_secs(300);
const CONVERGE_WITHIN: Duration = Duration::from_secs(300);
const EXIT_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Runner {
    Cli,
    Serve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Sigkill,
    StopPostgresImmediately,
}

struct Scenario {
    name: &'static str,
    rounds: usize,
    /// Who applies when the fault strikes.
    runner: Runner,
    fault: Fault,
    /// Who runs the next sync.
    recovery: Runner,
}

static SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "kill-cli",
        rounds: 3,
        runner: Runner::Cli,
        fault: Fault::Sigkill,
        recovery: Runner::Cli,
    },
    Scenario {
        name: "kill-serve",
        rounds: 2,
        runner: Runner::Serve,
        fault: Fault::Sigkill,
        recovery: Runner::Serve,
    },
    Scenario {
        name: "stop-postgres-under-cli",
        rounds: 1,
        runner: Runner::Cli,
        fault: Fault::StopPostgresImmediately,
        recovery: Runner::Cli,
    },
    Scenario {
        name: "stop-postgres-under-serve",
        rounds: 1,
        runner: Runner::Serve,
        fault: Fault::StopPostgresImmediately,
        recovery: Runner::Serve,
    },
    Scenario {
        name: "kill-cli-then-serve",
        rounds: 2,
        runner: Runner::Cli,
        fault: Fault::Sigkill,
        recovery: Runner::Serve,
    },
];

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_until_interrupted()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("fault suite could not run: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// [`run`], stopped by SIGINT or SIGTERM: dropping it kills the `ritmo` processes and stops
/// and removes the cluster, which exiting on the signal would leave behind.
async fn run_until_interrupted() -> Result<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        result = run() => result,
        _ = interrupt.recv() => bail!("interrupted"),
        _ = terminate.recv() => bail!("terminated"),
    }
}

/// Runs every selected scenario; `Ok(false)` when a check failed.
async fn run() -> Result<bool> {
    let seed = match std::env::var("FAULTS_SEED") {
        Ok(text) => text.parse().context("FAULTS_SEED must be a number")?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64,
    };
    let only = std::env::var("FAULTS_ONLY").ok();
    let rounds: Option<usize> = env_number("FAULTS_ROUNDS")?;
    let resources = env_number("FAULTS_RESOURCES")?.unwrap_or(DEFAULT_RESOURCES);
    let budget = Duration::from_secs(
        env_number("FAULTS_BUDGET_SECS")?.map_or(DEFAULT_BUDGET_SECS, |secs| secs as u64),
    );
    println!("fault suite: seed {seed} (replay with FAULTS_SEED={seed}), {resources} resources");
    if let Some(name) = &only
        && !SCENARIOS.iter().any(|scenario| scenario.name == name)
    {
        bail!("FAULTS_ONLY: no scenario `{name}`");
    }

    let binary = Ritmo::binary()?;
    let started = Instant::now();
    let cluster = Cluster::start()?;
    println!(
        "cluster: 127.0.0.1:{} (server log {})",
        cluster.port,
        cluster.log_path().display()
    );
    let work = tempfile::Builder::new().prefix("ritmo-faults-").tempdir()?;
    let repo = ConfigRepo::generate(resources)?;
    let suite = Suite {
        cluster,
        binary,
        work: work.path().to_path_buf(),
        repo_path: std::fs::canonicalize(repo.path())?,
        repo,
    };
    let calibrating = Instant::now();
    let calibration = suite.calibrate().await?;
    println!(
        "calibration: apply of ∅→A {} ms, A→B {} ms, B→A {} ms [{} s]",
        calibration.apply_ms[0],
        calibration.apply_ms[1],
        calibration.apply_ms[2],
        calibrating.elapsed().as_secs()
    );

    // Pass 1 runs every scenario once; each later pass adds a round to the scenarios that
    // have more, while the time budget lasts.
    let mut runs: Vec<ScenarioRun> = SCENARIOS
        .iter()
        .filter(|scenario| only.as_deref().is_none_or(|name| name == scenario.name))
        .map(|scenario| ScenarioRun {
            scenario,
            rounds: rounds.unwrap_or(scenario.rounds),
            rng: Rng::new(seed ^ fnv1a(scenario.name)),
            database: format!("faults_{}", scenario.name.replace('-', "_")),
            applied: None,
            played: 0,
            stopped: false,
        })
        .collect();
    let mut reports = Vec::new();
    let mut skipped = 0;
    let passes = runs.iter().map(|run| run.rounds).max().unwrap_or(0);
    for pass in 1..=passes {
        for run in runs
            .iter_mut()
            .filter(|run| run.played < run.rounds && !run.stopped)
        {
            if pass > 1 && started.elapsed() > budget {
                skipped += run.rounds - run.played;
                run.stopped = true;
                continue;
            }
            match suite.next_round(run, &calibration).await {
                Ok(round) => reports.push(round),
                Err(error) => {
                    run.stopped = true;
                    reports.push(Round::broken(run.scenario.name, format!("{error:#}")));
                }
            }
        }
    }

    let failures: Vec<&Round> = reports
        .iter()
        .filter(|round| !round.failures.is_empty())
        .collect();
    println!();
    if skipped > 0 {
        println!(
            "time budget of {} s reached: {skipped} later rounds not run (FAULTS_BUDGET_SECS)",
            budget.as_secs()
        );
    }
    println!(
        "{} rounds in {} s: {} with the fault inside the apply ({} left the old state, {} the new), {} failed",
        reports.len(),
        started.elapsed().as_secs(),
        reports.iter().filter(|round| round.in_apply).count(),
        reports
            .iter()
            .filter(|round| round.after_fault == Some(Side::Old))
            .count(),
        reports
            .iter()
            .filter(|round| round.after_fault == Some(Side::New))
            .count(),
        failures.len()
    );
    for round in &failures {
        println!("FAILED {}:", round.label);
        for failure in &round.failures {
            println!("  - {failure}");
        }
    }
    if failures.is_empty() {
        drop(work);
    } else {
        println!(
            "process logs kept in {}; replay with FAULTS_SEED={seed}",
            work.keep().display()
        );
    }
    Ok(failures.is_empty())
}

fn env_number(name: &str) -> Result<Option<usize>> {
    std::env::var(name)
        .ok()
        .map(|text| {
            text.parse()
                .with_context(|| format!("{name} must be a number"))
        })
        .transpose()
}

struct Suite {
    cluster: Cluster,
    binary: PathBuf,
    work: PathBuf,
    repo: ConfigRepo,
    repo_path: PathBuf,
}

/// A scenario's progress: its database, the commit applied there, its own random sequence.
struct ScenarioRun {
    scenario: &'static Scenario,
    rounds: usize,
    rng: Rng,
    database: String,
    /// The commit the database holds (`None`: empty).
    applied: Option<usize>,
    played: usize,
    stopped: bool,
}

/// The states commits A and B leave, and how long their applies take.
struct Calibration {
    states: [DbState; 2],
    /// ∅→A, A→B, B→A.
    apply_ms: [i64; 3],
}

/// Which of the two expected states the database was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Old => "old",
            Side::New => "new",
        })
    }
}

/// One round's findings.
struct Round {
    label: String,
    in_apply: bool,
    after_fault: Option<Side>,
    failures: Vec<String>,
}

impl Round {
    fn broken(scenario: &str, error: String) -> Round {
        Round {
            label: format!("{scenario} (could not run)"),
            in_apply: false,
            after_fault: None,
            failures: vec![error],
        }
    }
}

impl Suite {
    fn ritmo(&self, database: &str) -> Ritmo {
        Ritmo {
            binary: self.binary.clone(),
            work: self.work.clone(),
            repo: self.repo_path.clone(),
            database_url: self.cluster.url(database),
        }
    }

    async fn create_database(&self, name: &str) -> Result<Client> {
        let admin = ritmo_tests::db::connect(&self.cluster.url("postgres")).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("create database {name}"))?;
        self.connect(name).await
    }

    async fn connect(&self, database: &str) -> Result<Client> {
        ritmo_tests::db::connect(&self.cluster.url(database))
            .await
            .with_context(|| format!("connect to database {database}"))
    }

    /// Clean syncs of A, B and A again: the states to compare with, the apply times to aim
    /// the faults with, and a check that a state depends only on the commit.
    async fn calibrate(&self) -> Result<Calibration> {
        let db = self.create_database("faults_calibration").await?;
        let ritmo = self.ritmo("faults_calibration");
        let mut states = Vec::new();
        let mut apply_ms = [0; 3];
        for (step, commit) in [0, 1, 0].into_iter().enumerate() {
            self.repo.point_main_at(&self.repo.commits[commit]);
            let sync = ["sync"];
            ritmo
                .run(&format!("calibration-{step}"), &sync, SYNC_WITHIN)
                .await?;
            apply_ms[step] = fixture::last_apply_ms(&db).await?;
            states.push(DbState::read(&db).await?);
        }
        if states[0] != states[2] {
            bail!(
                "calibration: commit A left two different states ({:?} then {:?})",
                states[0],
                states[2]
            );
        }
        let [a, b, _] = <[DbState; 3]>::try_from(states)
            .map_err(|_| anyhow::anyhow!("three calibration states"))?;
        Ok(Calibration {
            states: [a, b],
            apply_ms,
        })
    }

    /// Plays `run`'s next round: the next commit (∅→A, then A→B, B→A…), a fault at a random
    /// point of its apply, and the checks.
    async fn next_round(&self, run: &mut ScenarioRun, calibration: &Calibration) -> Result<Round> {
        if run.played == 0 {
            self.create_database(&run.database).await?;
        }
        run.played += 1;
        let target = if run.applied == Some(0) { 1 } else { 0 };
        let transition = match run.applied {
            None => 0,
            Some(0) => 1,
            Some(_) => 2,
        };
        let window = calibration.apply_ms[transition].max(1) as u64;
        // Within the calibrated length; the apply's own speed varies, so some faults still
        // land after its commit (the round says which state it left).
        let delay = Duration::from_millis(run.rng.below(window));
        let label = format!(
            "{} round {}/{} ({}, fault {} ms into the apply)",
            run.scenario.name,
            run.played,
            run.rounds,
            ["∅→A", "A→B", "B→A"][transition],
            delay.as_millis()
        );
        let old = run
            .applied
            .map_or_else(DbState::empty, |i| calibration.states[i].clone());
        let new = calibration.states[target].clone();
        let tag = format!("{}-{}", run.scenario.name, run.played);
        let started = Instant::now();
        let round = self
            .round(
                run.scenario,
                &run.database,
                &tag,
                &label,
                target,
                delay,
                &old,
                &new,
            )
            .await?;
        println!(
            "{} {label}: {}{} [{} s]",
            if round.failures.is_empty() {
                "ok    "
            } else {
                "FAILED"
            },
            match (round.in_apply, round.after_fault) {
                (true, Some(side)) => format!("left the {side} state"),
                (false, Some(side)) => {
                    format!("the apply ended before the fault; left the {side} state")
                }
                (_, None) => "left neither state".to_string(),
            },
            if round.failures.is_empty() {
                ", then converged".to_string()
            } else {
                format!("; {}", round.failures.join("; "))
            },
            started.elapsed().as_secs()
        );
        if DbState::read(&self.connect(&run.database).await?).await? == new {
            run.applied = Some(target);
        } else {
            // The next round's "old" would be unknown.
            run.stopped = true;
        }
        Ok(round)
    }

    #[allow(clippy::too_many_arguments)]
    async fn round(
        &self,
        scenario: &Scenario,
        database: &str,
        tag: &str,
        label: &str,
        target: usize,
        delay: Duration,
        old: &DbState,
        new: &DbState,
    ) -> Result<Round> {
        let ritmo = self.ritmo(database);
        let mut failures = Vec::new();
        self.repo.point_main_at(&self.repo.commits[target]);
        let mut process = match scenario.runner {
            Runner::Cli => ritmo.spawn_sync(&format!("{tag}-fault"))?,
            Runner::Serve => ritmo.spawn_serve(&format!("{tag}-fault"))?,
        };

        let in_apply = self.wait_for_apply(database, &mut process).await?;
        if in_apply {
            tokio::time::sleep(delay).await;
        }
        let mut survivor = None;
        match scenario.fault {
            Fault::Sigkill => process.kill().await?,
            Fault::StopPostgresImmediately => {
                self.cluster.stop_immediately()?;
                match scenario.runner {
                    Runner::Cli => match process.wait(EXIT_WITHIN).await {
                        Ok(_) => {}
                        Err(error) => failures.push(format!(
                            "the CLI did not exit after the database went away: {error:#}"
                        )),
                    },
                    Runner::Serve => survivor = Some(process),
                }
                self.cluster.start_server()?;
            }
        }

        let db = self.connect(database).await?;
        if survivor.is_none() {
            // A killed client's last statements (a COMMIT among them) may still sit in its
            // socket: its backend runs them before it sees the end. The outcome is known once
            // the dead process's sessions are gone.
            self.wait_for_sessions_to_end(&db).await?;
        }
        let state = DbState::read(&db).await?;
        let after_fault = if &state == old {
            Some(Side::Old)
        } else if &state == new {
            Some(Side::New)
        } else {
            failures.push(format!(
                "after the fault the database is neither old nor new: {} resources, last applied \
                 commit {:?}",
                state.resources, state.last_applied_commit
            ));
            None
        };

        if survivor.is_none() {
            // Every `ritmo` process is dead: a run still planning or applying has no owner.
            // One process connecting (as an operator reading the status) must settle it.
            ritmo
                .run(&format!("{tag}-status"), &["status"], SYNC_WITHIN)
                .await?;
            let stuck = fixture::runs_in(&db, &["planning", "applying"]).await?;
            if !stuck.is_empty() {
                failures.push(format!(
                    "after `ritmo gitops status`, runs of a dead process are still in progress: {}",
                    describe(&stuck)
                ));
            }
        }

        match (scenario.recovery, survivor) {
            (Runner::Cli, _) => {
                let sync = ["sync"];
                if let Err(error) = ritmo
                    .run(&format!("{tag}-recover"), &sync, SYNC_WITHIN)
                    .await
                {
                    failures.push(format!("the next CLI sync failed: {error:#}"));
                }
            }
            (Runner::Serve, survivor) => {
                let mut serve = match survivor {
                    Some(serve) => serve,
                    None => ritmo.spawn_serve(&format!("{tag}-recover"))?,
                };
                if let Err(error) = self.wait_converged(&db, &mut serve, new).await {
                    failures.push(format!("serve did not converge: {error:#}"));
                }
                serve.terminate(Duration::from_secs(40)).await?;
            }
        }

        let state = DbState::read(&db).await?;
        if &state != new {
            failures.push(format!(
                "after the next sync the database is not the new commit's: {} resources, last \
                 applied commit {:?}",
                state.resources, state.last_applied_commit
            ));
        }
        let open = fixture::runs_in(&db, &["planning", "planned", "applying"]).await?;
        if !open.is_empty() {
            failures.push(format!(
                "after the next sync, runs are left in progress with no process alive: {}",
                describe(&open)
            ));
        }
        Ok(Round {
            label: label.to_string(),
            in_apply,
            after_fault,
            failures,
        })
    }

    /// Waits until `process` is writing resources (true) or has exited first (false).
    async fn wait_for_apply(&self, database: &str, process: &mut Process) -> Result<bool> {
        let watch = self.connect(database).await?;
        let started = Instant::now();
        loop {
            if fixture::apply_under_way(&watch).await? {
                return Ok(true);
            }
            if let Some(status) = process.exited()? {
                if !status.success() {
                    bail!(
                        "ritmo exited with {status} before its apply: see {}",
                        process.log.display()
                    );
                }
                return Ok(false);
            }
            if started.elapsed() > APPLY_START_WITHIN {
                bail!(
                    "no apply started within {} s: see {}",
                    APPLY_START_WITHIN.as_secs(),
                    process.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until no `ritmo` session is left on the database.
    async fn wait_for_sessions_to_end(&self, db: &Client) -> Result<()> {
        let started = Instant::now();
        while fixture::ritmo_sessions(db).await? > 0 {
            if started.elapsed() > EXIT_WITHIN {
                bail!(
                    "the sessions of a killed process were still there after {} s",
                    EXIT_WITHIN.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the database holds `new` and no run is in progress.
    async fn wait_converged(&self, db: &Client, serve: &mut Process, new: &DbState) -> Result<()> {
        let started = Instant::now();
        loop {
            if &DbState::read(db).await? == new
                && fixture::runs_in(db, &["planning", "planned", "applying"])
                    .await?
                    .is_empty()
            {
                return Ok(());
            }
            if let Some(status) = serve.exited()? {
                bail!("serve exited with {status}: see {}", serve.log.display());
            }
            if started.elapsed() > CONVERGE_WITHIN {
                let open = fixture::runs_in(db, &["planning", "planned", "applying"]).await?;
                bail!(
                    "not the new commit's state within {} s (runs in progress: {}): see {}",
                    CONVERGE_WITHIN.as_secs(),
                    describe(&open),
                    serve.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn describe(runs: &[fixture::OpenRun]) -> String {
    if runs.is_empty() {
        return "none".into();
    }
    runs.iter()
        .map(|run| {
            format!(
                "{} {} ({}{})",
                run.id,
                run.status,
                run.trigger,
                run.error
                    .as_deref()
                    .map(|error| format!(", error: {error}"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// SplitMix64: enough to spread fault times, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (n ≥ 1).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// FNV-1a of a scenario's name: each scenario draws its own sequence from the seed, so
/// `FAULTS_ONLY` replays the same faults.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
