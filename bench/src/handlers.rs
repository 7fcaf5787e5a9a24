//! The planner and applier as Lambda runs them: the release binary started cold, handed one SQS
//! event by a local Runtime API, timed from exec to its posted response. The planner plans a
//! generated repository over `file://` into an empty database and sends the apply request to
//! moto's FIFO queue; the applier is then handed that very message. Each is printed beside the
//! floor of its work over the same transport, measured in the same run. The planner's figure
//! includes its check of every credential's `secret_ref` against Secrets Manager (moto here).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ritmo::message::{PlanRequest, Trigger};
use ritmo::store::Store;
use ritmo_tests::db::TestDb;
use ritmo_tests::moto::{Moto, REGION};
use ritmo_tests::runtime_api;
use serde_json::{Value, json};

use crate::floor;
use crate::generate::{self, Shape};
use crate::process;

/// Longer than any invocation worth reporting: past it the function is stuck or failing.
const WAIT: Duration = Duration::from_secs(300);
/// The target the functions configure from `RITMO_GITOPS_REPO_URL`.
const TARGET: &str = "default";

/// One invocation, seen from outside.
struct Invocation {
    wall: Duration,
    peak_rss_kib: u64,
    response: Value,
    /// What the function logged, for the error when its work did not show.
    logs: String,
}

pub async fn run(resources: usize, repeat: usize) -> Result<()> {
    let repeat = repeat.max(1);
    let shape = Shape::of(resources);
    let work = tempfile::tempdir()?;
    let repo = generate::commit_repository(work.path(), shape)?;
    let url = format!("file://{}", repo.display());
    let empty = TestDb::new().await;
    drop(Store::connect(&empty.url).await?);
    let moto = Moto::start();
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let (plan_queue, _) = moto.fifo_queue_with_dlq("bench-plan", 900, 5).await;
    let (apply_queue, _) = moto.fifo_queue_with_dlq("bench-apply", 900, 5).await;
    // With AWS configured the planner checks every credential's `secret_ref` in Secrets
    // Manager, as it does in production: the secrets must exist.
    let secrets = moto.secrets_manager().await;
    for i in 0..shape.credentials {
        secrets
            .create_secret()
            .name(format!("prod/ritmo/cred-{i:04}"))
            .secret_string("bench")
            .send()
            .await?;
    }
    let planner = process::binary("release", "planner")?;
    let applier = process::binary("release", "applier")?;

    let mut plans = Vec::new();
    let mut applies = Vec::new();
    let mut clones = Vec::new();
    let mut last_db = None;
    for round in 0..repeat {
        eprintln!("== round {}: planner, applier, clone floor", round + 1);
        drop(last_db.take());
        let db = TestDb::copy_of(&empty).await;
        let environment = Environment {
            moto: moto.endpoint(),
            database_url: &db.url,
            repo_url: &url,
            cache: &work.path().join(format!("cache-{round}")),
            plan_queue: &plan_queue,
            apply_queue: &apply_queue,
        };
        let request = PlanRequest::new(TARGET, Trigger::Manual, chrono::Utc::now());
        let plan = invoke(
            &planner,
            "planner",
            &environment,
            sqs_event(&request.to_json()),
        )
        .await?;
        expect_no_failures("planner", &plan.response)?;
        plans.push(plan);

        let received = sqs
            .receive_message()
            .queue_url(&apply_queue)
            .max_number_of_messages(1)
            .send()
            .await?;
        let [message] = received.messages() else {
            bail!(
                "the planner sent {} apply requests, not one; it logged:\n{}",
                received.messages().len(),
                plans
                    .last()
                    .map_or("", |plan: &Invocation| plan.logs.as_str())
            );
        };
        let body = message.body().context("an apply request without a body")?;
        let apply = invoke(&applier, "applier", &environment, sqs_event(body)).await?;
        expect_no_failures("applier", &apply.response)?;
        if let Some(receipt) = message.receipt_handle() {
            sqs.delete_message()
                .queue_url(&apply_queue)
                .receipt_handle(receipt)
                .send()
                .await?;
        }
        let stored = stored_resources(&db).await?;
        if stored != shape.total() {
            bail!("the applier stored {stored} resources of {}", shape.total());
        }
        applies.push(apply);

        let clone_dir = work.path().join(format!("clone-{round}"));
        let started = Instant::now();
        floor::git_clone_shallow_bare(&url, &clone_dir)?;
        clones.push(started.elapsed());
        last_db = Some(db);
    }
    let Some(db) = last_db else {
        bail!("--repeat must be at least 1");
    };
    let rows = work.path().join("rows");
    std::fs::create_dir_all(&rows)?;
    floor::dump_rows(&db.url, &rows)?;
    let mut copies = Vec::new();
    for _ in 0..repeat {
        copies.push(floor::copy_in(&rows).await?);
    }
    print(repeat, shape.total(), &plans, &applies, &clones, &copies);
    Ok(())
}

/// Where a function process finds everything, as the template's environment gives it.
struct Environment<'a> {
    moto: &'a str,
    database_url: &'a str,
    repo_url: &'a str,
    cache: &'a Path,
    plan_queue: &'a str,
    apply_queue: &'a str,
}

/// Starts `binary` cold against a Runtime API holding `event`, waits for its answer, reads
/// its peak RSS, and stops it.
async fn invoke(
    binary: &Path,
    function: &str,
    environment: &Environment<'_>,
    event: Value,
) -> Result<Invocation> {
    let (runtime_api, mut posted) = runtime_api::serve_one(function, event).await;
    let logs = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", function),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", environment.moto),
            ("DATABASE_URL", environment.database_url),
            ("RITMO_GITOPS_REPO_URL", environment.repo_url),
            ("RITMO_GITOPS_REPO_BRANCH", "main"),
            ("RITMO_GITOPS_PLAN_QUEUE_URL", environment.plan_queue),
            ("RITMO_GITOPS_APPLY_QUEUE_URL", environment.apply_queue),
            ("RUST_LOG", "warn"),
        ])
        .env("RITMO_GITOPS_CACHE_DIR", environment.cache)
        .stdin(Stdio::null())
        .stdout(logs.reopen()?)
        .stderr(logs.reopen()?)
        .spawn()
        .with_context(|| format!("start {}", binary.display()))?;
    let answer = tokio::time::timeout(WAIT, posted.recv()).await;
    // Read before the kill: the kernel drops the counters with the process.
    let peak_rss_kib = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let logs = std::fs::read_to_string(logs.path()).unwrap_or_default();
    let Ok(Some(posted)) = answer else {
        bail!("{function} answered nothing within {WAIT:?}; it logged:\n{logs}");
    };
    if posted.kind != "response" {
        bail!(
            "{function} posted an {}: {}\n{logs}",
            posted.kind,
            posted.body
        );
    }
    Ok(Invocation {
        wall: posted.at - started,
        peak_rss_kib: peak_rss_kib?,
        response: posted.body,
        logs,
    })
}

/// An SQS event of one FIFO message, as the event source mapping delivers it.
fn sqs_event(body: &str) -> Value {
    json!({
        "Records": [{
            "messageId": uuid::Uuid::new_v4().to_string(),
            "receiptHandle": "bench",
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "MessageGroupId": TARGET,
            },
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:bench.fifo",
            "awsRegion": REGION,
        }]
    })
}

fn expect_no_failures(function: &str, response: &Value) -> Result<()> {
    match response["batchItemFailures"].as_array() {
        Some(failures) if failures.is_empty() => Ok(()),
        _ => bail!("{function} reported failed messages: {response}"),
    }
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

async fn stored_resources(db: &TestDb) -> Result<usize> {
    let row = db
        .client()
        .await
        .query_one("SELECT count(*) FROM resources", &[])
        .await?;
    Ok(usize::try_from(row.get::<_, i64>(0))?)
}

fn print(
    repeat: usize,
    resources: usize,
    plans: &[Invocation],
    applies: &[Invocation],
    clones: &[Duration],
    copies: &[Duration],
) {
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let cell = |walls: &[Duration]| {
        let (median, min, max) = process::spread(walls);
        format!("{:.0} ({:.0}–{:.0})", ms(median), ms(min), ms(max))
    };
    let walls = |runs: &[Invocation]| runs.iter().map(|run| run.wall).collect::<Vec<_>>();
    let peak = |runs: &[Invocation]| {
        let kib = runs.iter().map(|run| run.peak_rss_kib).max().unwrap_or(0);
        format!("{:.0}", kib as f64 / 1024.0)
    };
    let ratio = |runs: &[Invocation], floor: &[Duration]| {
        let floor = process::spread(floor).0.as_secs_f64();
        let median = process::spread(&walls(runs)).0.as_secs_f64();
        if floor > 0.0 {
            format!("{:.2}×", median / floor)
        } else {
            String::new()
        }
    };
    println!(
        "Planner and applier, each a cold release binary handed one SQS event by a local Runtime \
         API: exec to its posted response (median (min–max) of {repeat}; {resources} resources \
         over file://; RSS: the highest peak)"
    );
    println!();
    println!("| measure | ms | peak RSS MiB | compared with the floor |");
    println!("|---|---|---|---|");
    println!(
        "| floor: `git clone --depth 1 --bare` | {} | | |",
        cell(clones)
    );
    println!(
        "| floor: `psql \\copy` of the rows | {} | | |",
        cell(copies)
    );
    println!(
        "| planner: plan request → apply request sent | {} | {} | {} the clone |",
        cell(&walls(plans)),
        peak(plans),
        ratio(plans, clones)
    );
    println!(
        "| applier: apply request → applied | {} | {} | {} the copy |",
        cell(&walls(applies)),
        peak(applies),
        ratio(applies, copies)
    );
}
