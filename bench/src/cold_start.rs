//! Each function's cold start as Lambda meets it: from exec of its release binary to its first
//! `GET /2018-06-01/runtime/invocation/next` on a local Runtime API, configured by environment
//! variables alone as the template configures it (a migrated database; queue URLs and AWS
//! credentials that nothing reaches before the first event).

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ritmo::store::Store;
use ritmo_tests::db::TestDb;

use crate::process;

const FUNCTIONS: [&str; 5] = ["api", "applier", "planner", "poller", "webhook"];
const NEXT: &str = "GET /2018-06-01/runtime/invocation/next";
/// Longer than any cold start worth reporting: past it the function is stuck or failing.
const WAIT: Duration = Duration::from_secs(30);

/// One function's figures.
pub struct ColdStart {
    pub function: &'static str,
    pub walls: Vec<Duration>,
    pub size: u64,
}

pub async fn run(repeat: usize) -> Result<Vec<ColdStart>> {
    let db = TestDb::new().await;
    drop(Store::connect(&db.url).await?);
    let mut figures = Vec::new();
    for function in FUNCTIONS {
        let binary = process::binary("release", function)?;
        let size = std::fs::metadata(&binary)?.len();
        let mut walls = Vec::new();
        for _ in 0..repeat.max(1) {
            walls.push(cold_start(&binary, &db.url)?);
        }
        figures.push(ColdStart {
            function,
            walls,
            size,
        });
    }
    Ok(figures)
}

/// Exec of `binary` to its first `next` request.
fn cold_start(binary: &Path, database_url: &str) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let runtime_api = listener.local_addr()?.to_string();
    let (asked, first_request) = mpsc::channel();
    std::thread::spawn(move || {
        // Only the first request matters; the connection is dropped with the process.
        if let Ok((stream, _)) = listener.accept() {
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = asked.send((Instant::now(), line));
        }
    });
    let queue = |name: &str| format!("http://127.0.0.1:9/123456789012/{name}.fifo");
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "cold-start"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "bench"),
            ("AWS_SECRET_ACCESS_KEY", "bench"),
            ("DATABASE_URL", database_url),
            (
                "RITMO_GITOPS_REPO_URL",
                "https://github.com/acme/ritmo-config.git",
            ),
            ("RITMO_GITOPS_REPO_BRANCH", "main"),
            ("RITMO_GITOPS_WEBHOOK_SECRET", "bench-webhook-secret"),
            ("RITMO_API_TOKEN", "bench-api-token"),
            ("RITMO_GITOPS_PLAN_QUEUE_URL", queue("plan").as_str()),
            ("RITMO_GITOPS_APPLY_QUEUE_URL", queue("apply").as_str()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let answer = first_request.recv_timeout(WAIT);
    let _ = child.kill();
    let output = child.wait_with_output()?;
    let Ok((at, line)) = answer else {
        bail!(
            "{} asked nothing of the Runtime API within {WAIT:?}: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    };
    if !line.starts_with(NEXT) {
        bail!("{}: first request `{}`", binary.display(), line.trim_end());
    }
    Ok(at - started)
}

pub fn print(repeat: usize, figures: &[ColdStart]) {
    println!(
        "Cold starts: exec of the release binary to its first Runtime API `next` (median \
         (min–max) of {repeat}; a migrated database on loopback)"
    );
    println!();
    println!("| function | cold start ms | binary size MB |");
    println!("|---|---|---|");
    for figure in figures {
        let (median, min, max) = process::spread(&figure.walls);
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        println!(
            "| {} | {:.1} ({:.1}–{:.1}) | {:.1} |",
            figure.function,
            ms(median),
            ms(min),
            ms(max),
            figure.size as f64 / 1_000_000.0
        );
    }
}
