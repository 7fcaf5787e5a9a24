//! The product as a user runs it: the release `ritmo` binary as whole processes (exec to exit),
//! syncing a generated repository over `file://` and over local smart HTTP, each beside the
//! floor measured over the same transport in the same run: `git clone --depth 1 --bare` of the
//! same URL plus `psql \copy` of the rows that sync wrote.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use ritmo::store::Store;
use ritmo_tests::db::TestDb;
use ritmo_tests::git_http::GitHttpServer;

use crate::floor;
use crate::generate::{self, Shape};
use crate::process::{self, Finished};

/// One line of the table: a measured command, or a floor (no RSS).
struct Line {
    transport: &'static str,
    measure: String,
    walls: Vec<Duration>,
    peak_rss_kib: Option<u64>,
    /// The wall time this one is compared with, and what it is.
    against: Option<(Duration, &'static str)>,
}

pub async fn run(ritmo: &Path, resources: usize, repeat: usize) -> Result<()> {
    let repeat = repeat.max(1);
    let shape = Shape::of(resources);
    let work = tempfile::tempdir()?;
    let repo = generate::commit_repository(work.path(), shape)?;
    let server = GitHttpServer::start(&repo, None);
    // A migrated, empty database: each full sync starts from a copy, as a new target's first.
    let empty = TestDb::new().await;
    drop(Store::connect(&empty.url).await?);

    let mut lines = Vec::new();
    eprintln!("== validate");
    let validate = times(repeat, || {
        process::run(
            Command::new(ritmo)
                .args(["gitops", "validate", "--repo-path"])
                .arg(&repo),
        )
    })?;
    lines.push(Line {
        transport: "local",
        measure: format!("`ritmo gitops validate` of {} files", shape.total()),
        walls: walls(&validate),
        peak_rss_kib: Some(peak(&validate)),
        against: None,
    });

    let file_url = format!("file://{}", repo.display());
    let http_url = server.url(".git");
    let mut edits = 0;
    for (transport, name, url) in [("file://", "file", file_url), ("http", "http", http_url)] {
        eprintln!("== {transport}: floors");
        let mut clones = Vec::new();
        for round in 0..repeat {
            let dir = work.path().join(format!("clone-{name}-{round}"));
            let started = std::time::Instant::now();
            floor::git_clone_shallow_bare(&url, &dir)?;
            clones.push(started.elapsed());
        }

        eprintln!("== {transport}: full syncs");
        let mut fulls = Vec::new();
        let mut last = None;
        for round in 0..repeat {
            drop(last.take());
            let db = TestDb::copy_of(&empty).await;
            // A cache of its own per run and transport: the full sync's fetch starts empty.
            let cache = work.path().join(format!("cache-{name}-{round}"));
            fulls.push(sync(ritmo, &url, &db, &cache)?);
            last = Some((db, cache));
        }
        let Some((db, cache)) = last else {
            continue;
        };
        let rows = work.path().join("rows");
        std::fs::create_dir_all(&rows)?;
        floor::dump_rows(&db.url, &rows)?;
        let mut copies = Vec::new();
        for _ in 0..repeat {
            copies.push(floor::copy_in(&rows).await?);
        }
        let clone = median(&clones);
        let copy = median(&copies);
        let full = median(&walls(&fulls));
        lines.push(Line {
            transport,
            measure: "floor: `git clone --depth 1 --bare`".into(),
            walls: clones,
            peak_rss_kib: None,
            against: None,
        });
        lines.push(Line {
            transport,
            measure: "floor: `psql \\copy` of the rows".into(),
            walls: copies,
            peak_rss_kib: None,
            against: None,
        });
        lines.push(Line {
            transport,
            measure: format!(
                "`ritmo gitops sync`, full, into an empty database ({} resources)",
                shape.total()
            ),
            walls: walls(&fulls),
            peak_rss_kib: Some(peak(&fulls)),
            against: Some((clone + copy, "clone + copy floor")),
        });

        eprintln!("== {transport}: no-op syncs");
        let noops = times(repeat, || sync(ritmo, &url, &db, &cache))?;
        lines.push(Line {
            transport,
            measure: "`ritmo gitops sync`, nothing changed".into(),
            walls: walls(&noops),
            peak_rss_kib: Some(peak(&noops)),
            against: Some((full, "full sync")),
        });

        for (files, label) in [(1, "one file"), (100, "100 files")] {
            eprintln!("== {transport}: {label} syncs");
            let mut runs = Vec::new();
            for _ in 0..repeat {
                edits += 1;
                for i in 0..files.min(shape.jobs) {
                    let index = (edits * files + i) % shape.jobs;
                    std::fs::write(
                        repo.join(generate::job_path(index)),
                        generate::job(index, edits, shape),
                    )?;
                }
                generate::commit(&repo, label);
                runs.push(sync(ritmo, &url, &db, &cache)?);
            }
            lines.push(Line {
                transport,
                measure: format!("`ritmo gitops sync`, {label} changed"),
                walls: walls(&runs),
                peak_rss_kib: Some(peak(&runs)),
                against: Some((full, "full sync")),
            });
        }
    }
    print(repeat, &lines);
    Ok(())
}

fn sync(ritmo: &Path, url: &str, db: &TestDb, cache: &Path) -> Result<Finished> {
    process::run(
        Command::new(ritmo)
            .env("DATABASE_URL", &db.url)
            .env("RITMO_GITOPS_CACHE_DIR", cache)
            .env("RUST_LOG", "warn")
            .args(["gitops", "sync", "--repo", url]),
    )
}

fn times(repeat: usize, mut run: impl FnMut() -> Result<Finished>) -> Result<Vec<Finished>> {
    (0..repeat).map(|_| run()).collect()
}

fn walls(runs: &[Finished]) -> Vec<Duration> {
    runs.iter().map(|run| run.wall).collect()
}

fn peak(runs: &[Finished]) -> u64 {
    runs.iter().map(|run| run.peak_rss_kib).max().unwrap_or(0)
}

fn median(values: &[Duration]) -> Duration {
    process::spread(values).0
}

fn print(repeat: usize, lines: &[Line]) {
    println!(
        "Whole processes of the release binary (median (min–max) of {repeat}; RSS: the highest peak)"
    );
    println!();
    println!("| transport | measure | ms | peak RSS MiB | compared with |");
    println!("|---|---|---|---|---|");
    for line in lines {
        let (median, min, max) = process::spread(&line.walls);
        let compared = match line.against {
            Some((other, what)) if !other.is_zero() => {
                let ratio = median.as_secs_f64() / other.as_secs_f64();
                match 1.0 / ratio {
                    _ if ratio >= 0.5 => format!("{ratio:.2}× the {what}"),
                    inverse if inverse < 10.0 => format!("1/{inverse:.1} of the {what}"),
                    inverse => format!("1/{inverse:.0} of the {what}"),
                }
            }
            _ => String::new(),
        };
        println!(
            "| {} | {} | {:.0} ({:.0}–{:.0}) | {} | {} |",
            line.transport,
            line.measure,
            ms(median),
            ms(min),
            ms(max),
            line.peak_rss_kib
                .map(|kib| format!("{:.0}", kib as f64 / 1024.0))
                .unwrap_or_default(),
            compared,
        );
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
