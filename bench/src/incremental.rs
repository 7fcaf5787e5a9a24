//! Incremental syncs by number of changed files, as a user runs them: the release `ritmo`
//! binary, `ritmo gitops sync --repo-path R` on a database left by the sync of the commit
//! before, against `--full` of the same commit on a copy of the same database. Prints wall
//! time and peak RSS of each process, and which scan ran.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Result, bail};
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::run_git;

use crate::generate::{self, Shape};
use crate::process::{self, Finished};

/// How the changed files change.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// New jobs in new files.
    Creates,
    /// Every changed file is an existing one, edited.
    Updates,
    /// Webhook files removed (nothing refers to a webhook, so the commit stays valid): the
    /// plan looks for resources that mentioned each removed name.
    Deletes,
}

struct Row {
    change: Change,
    files: usize,
    incremental: Measured,
    full: Measured,
}

struct Measured {
    scan: String,
    walls: Vec<Duration>,
    peak_rss_kib: u64,
}

pub async fn run(ritmo: &Path, resources: usize, changed: &[usize], repeat: usize) -> Result<()> {
    let shape = Shape::of(resources);
    let work = tempfile::tempdir()?;
    let repo = generate::commit_repository(work.path(), shape)?;
    let base = run_git(&repo, &["rev-parse", "HEAD"]).trim().to_string();

    eprintln!("== base: full sync of {} resources", shape.total());
    let base_db = TestDb::new().await;
    let first = sync(ritmo, &repo, &base_db, work.path(), false)?;
    eprintln!("   {}", scan_of(&first));

    let mut rows = Vec::new();
    for change in [Change::Creates, Change::Updates, Change::Deletes] {
        for &files in changed {
            if matches!(change, Change::Deletes) && files > shape.webhooks {
                continue;
            }
            run_git(&repo, &["reset", "--quiet", "--hard", &base]);
            run_git(&repo, &["clean", "--quiet", "-fd"]);
            write_change(&repo, shape, change, files)?;
            generate::commit(&repo, "change");
            eprintln!("== {files} {change:?}");
            let incremental = measure(ritmo, &repo, &base_db, work.path(), false, repeat).await?;
            let full = measure(ritmo, &repo, &base_db, work.path(), true, repeat).await?;
            rows.push(Row {
                change,
                files,
                incremental,
                full,
            });
        }
    }
    print(shape.total(), repeat, &rows);
    Ok(())
}

/// `repeat` syncs of the repository's head, each on a fresh copy of `base`.
async fn measure(
    ritmo: &Path,
    repo: &Path,
    base: &TestDb,
    work: &Path,
    full: bool,
    repeat: usize,
) -> Result<Measured> {
    let mut measured = Measured {
        scan: String::new(),
        walls: Vec::new(),
        peak_rss_kib: 0,
    };
    for _ in 0..repeat.max(1) {
        let db = TestDb::copy_of(base).await;
        let finished = sync(ritmo, repo, &db, work, full)?;
        measured.scan = scan_of(&finished);
        measured.walls.push(finished.wall);
        measured.peak_rss_kib = measured.peak_rss_kib.max(finished.peak_rss_kib);
    }
    Ok(measured)
}

fn sync(ritmo: &Path, repo: &Path, db: &TestDb, work: &Path, full: bool) -> Result<Finished> {
    let mut command = Command::new(ritmo);
    command
        .env("DATABASE_URL", &db.url)
        .env("RITMO_GITOPS_CACHE_DIR", work.join("cache"))
        .env("RUST_LOG", "warn")
        .args(["gitops", "sync", "--auto-approve", "--repo-path"])
        .arg(repo);
    if full {
        command.arg("--full");
    }
    process::run(&command)
}

fn scan_of(finished: &Finished) -> String {
    finished
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("Scanned: "))
        .unwrap_or("?")
        .trim_end_matches('.')
        .to_string()
}

fn write_change(repo: &Path, shape: Shape, change: Change, files: usize) -> Result<()> {
    match change {
        Change::Creates => {
            for k in 0..files {
                let index = shape.jobs + k;
                write(
                    repo,
                    &generate::job_path(index),
                    &generate::job(index, 0, shape),
                )?;
            }
        }
        Change::Updates => {
            let all = generate::files(shape);
            let resources = all.iter().filter(|(path, _)| path.ends_with(".yaml"));
            if files > resources.clone().count() {
                bail!("{files} updates: the repository has fewer resource files");
            }
            for (path, text) in resources.take(files) {
                write(repo, path, &generate::revised(text))?;
            }
        }
        Change::Deletes => {
            let webhooks = generate::files(shape)
                .into_iter()
                .filter(|(path, _)| path.starts_with("webhooks/"));
            for (path, _) in webhooks.take(files) {
                std::fs::remove_file(repo.join(path))?;
            }
        }
    }
    Ok(())
}

fn write(repo: &Path, relative: &str, text: &str) -> Result<()> {
    let path = repo.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn print(resources: usize, repeat: usize, rows: &[Row]) {
    println!(
        "Incremental sync vs full scan of the same commit, on a {resources}-resource repository \
         (whole `ritmo gitops sync` processes; wall: median (min–max) of {repeat}; RSS: the \
         highest peak; deletes only up to the number of webhooks)"
    );
    println!();
    println!(
        "| changed files | change | sync: scan | sync: wall s | sync: peak RSS MiB | --full: wall s | --full: peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.files,
            match row.change {
                Change::Creates => "creates",
                Change::Updates => "updates",
                Change::Deletes => "deletes",
            },
            row.incremental.scan,
            seconds(&row.incremental.walls),
            mib(row.incremental.peak_rss_kib),
            seconds(&row.full.walls),
            mib(row.full.peak_rss_kib),
        );
    }
}

fn seconds(walls: &[Duration]) -> String {
    let (median, min, max) = process::spread(walls);
    if walls.len() < 2 {
        return format!("{:.2}", median.as_secs_f64());
    }
    format!(
        "{:.2} ({:.2}–{:.2})",
        median.as_secs_f64(),
        min.as_secs_f64(),
        max.as_secs_f64()
    )
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}
