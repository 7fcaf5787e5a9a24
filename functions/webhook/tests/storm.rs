//! Webhook storm (issue 27): 1,000 signed GitHub pushes, 200 at once, into the webhook handler
//! as Lambda runs it — a fixed number of execution environments (the function's reserved
//! concurrency), each with its one database connection and one delivery at a time — against a
//! throwaway PostgreSQL whose `max_connections` is the connection budget, with a FIFO plan
//! queue on moto. Meanwhile "other functions" use the same database: planners holding their
//! connection, and API environments cold-starting (a fresh connection each) over and over.
//!
//! It must hold that:
//! - every delivery is answered 202 (accepted) or 503 with `Retry-After` (refused), never
//!   anything else — no 500s;
//! - a refused delivery, redelivered after `Retry-After` as GitHub would, is accepted;
//! - every accepted delivery's plan request is on the queue exactly once, and nothing else is;
//! - the other functions never fail to connect or to query;
//! - the client connections never exceed the budget.
//!
//! It prints the figures: accepted per second, latency percentiles, refusals, and the peak of
//! client connections in `pg_stat_activity` (sampled every 10 ms).
//!
//! `make storm` builds and runs it (a test target without the libtest harness, like the fault
//! suite; not part of `cargo test`). Environment: `STORM_DELIVERIES` (1000), `STORM_AT_ONCE`
//! (200), `STORM_WEBHOOK_ENVIRONMENTS` (8), `STORM_MAX_CONNECTIONS` (the budget, below; set
//! it lower to see the check fail), `MOTO_SERVER`, `PG_BIN`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test program: a failed unwrap fails it

#[path = "../../../tests/faults/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cluster::Cluster;
use hmac::{Hmac, Mac};
use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::message::PlanRequest;
use ritmo::metrics::MetricsSink;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo_tests::moto::Moto;
use secrecy::SecretString;
use sha2::Sha256;
use tokio::sync::Mutex;
use tower::ServiceExt;

const SECRET: &str = "ritmo-storm-webhook-secret";
const REPO_URL: &str = "https://github.com/acme/ritmo-config.git";
/// Planners holding their connection through the storm (the SQS pollers' steady state).
const PLANNERS: usize = 2;
/// API environments cold-starting again and again, each with a fresh connection. Each waits
/// until its previous connection's server process has ended before the next cold start, as
/// Lambda replaces an environment only after the old one is gone (on AWS the proxy's borrow
/// timeout would absorb an overlap; here nothing would).
const API_COLD_STARTS: usize = 2;
/// The sampler's own connection.
const MONITOR: usize = 1;
/// Bounds on waiting, so a hang fails the run instead of stalling CI; not assertions on speed.
const STORM_WITHIN: Duration = Duration::from_secs(600);
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How often each other function touches the database: a steady load, not a busy loop that
/// would take the machine's cores from the webhook.
const OTHERS_EVERY: Duration = Duration::from_millis(20);

fn setting(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("storm: FAILED: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// One delivery's answers, in order.
#[derive(Default)]
struct Answers {
    /// (status, milliseconds) of every attempt.
    attempts: Vec<(StatusCode, f64)>,
}

async fn run() -> Result<()> {
    let deliveries = setting("STORM_DELIVERIES", 1000)?;
    let at_once = setting("STORM_AT_ONCE", 200)?;
    let environments = setting("STORM_WEBHOOK_ENVIRONMENTS", 8)?;
    let budget = environments + PLANNERS + API_COLD_STARTS + MONITOR;
    let max_connections = setting("STORM_MAX_CONNECTIONS", budget)?;
    println!(
        "storm: {deliveries} signed pushes, {at_once} at once, into {environments} webhook \
         environments; {PLANNERS} planners and {API_COLD_STARTS} cold-starting API \
         environments meanwhile; max_connections = {max_connections} (budget {environments} + \
         {PLANNERS} + {API_COLD_STARTS} + {MONITOR} sampler = {budget})"
    );

    let cluster = Cluster::start_with_max_connections(u32::try_from(max_connections)?)?;
    ritmo_tests::db::connect(&cluster.url("postgres"))
        .await?
        .batch_execute("CREATE DATABASE ritmo")
        .await?;
    let url = cluster.url("ritmo");
    let moto = Moto::start();
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let (plan_queue, _) = moto.fifo_queue_with_dlq("storm-plan", 60, 5).await;
    let (apply_queue, _) = moto.fifo_queue_with_dlq("storm-apply", 60, 5).await;
    let settings = Settings {
        enabled: true,
        targets: vec![TargetSettings {
            name: "storm".into(),
            repo_url: REPO_URL.into(),
            branch: "main".into(),
            path: "/".into(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            policy: Default::default(),
            auth: GitAuth::None,
            controls: Default::default(),
        }],
        database_url: Some(SecretString::from(url.clone())),
        webhook_secret: Some(SecretString::from(SECRET)),
        ..Settings::default()
    };
    let environment = || async {
        let queues = Queues::sqs(sqs.clone(), plan_queue.clone(), apply_queue.clone());
        Services::connect(settings.clone(), queues, MetricsSink::capture())
            .await
            .context("an execution environment cannot connect to the database")
    };

    // One after another, as Lambda would start them (the first one migrates the schema).
    let mut webhooks: Vec<Router> = Vec::new();
    for _ in 0..environments {
        // One delivery at a time per environment, as Lambda runs them.
        webhooks.push(webhook::app_with_limit(Arc::new(environment().await?), 1));
    }
    let mut planners = Vec::new();
    for _ in 0..PLANNERS {
        planners.push(Arc::new(environment().await?));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let monitor = Arc::new(ritmo_tests::db::connect(&url).await?);
    let sampler = {
        let (stop, peak, monitor) = (stop.clone(), peak.clone(), monitor.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let row = monitor
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
                        &[],
                    )
                    .await?;
                let count: i64 = row.get(0);
                peak.fetch_max(usize::try_from(count)?, Ordering::Relaxed);
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            anyhow::Ok(())
        })
    };
    let other_ops = Arc::new(AtomicU64::new(0));
    let other_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut others = Vec::new();
    for planner in planners {
        let (stop, ops, errors) = (stop.clone(), other_ops.clone(), other_errors.clone());
        others.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let read: ritmo::Result<_> = async {
                    let store = planner.database().await?;
                    Ok(store.targets().await?)
                }
                .await;
                match read {
                    Ok(_) => {
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => errors.lock().await.push(format!(
                        "planner: {}",
                        ritmo::telemetry::error_chain(&error)
                    )),
                }
                tokio::time::sleep(OTHERS_EVERY).await;
            }
            anyhow::Ok(())
        }));
    }
    for api in 0..API_COLD_STARTS {
        let (stop, ops, errors) = (stop.clone(), other_ops.clone(), other_errors.clone());
        let (mut settings, sqs, monitor) = (settings.clone(), sqs.clone(), monitor.clone());
        // Named, so the loop can see when its connection's server process has ended.
        let name = format!("ritmo-storm-api-{api}");
        settings.database_url = Some(SecretString::from(format!("{url}?application_name={name}")));
        let (plan_queue, apply_queue) = (plan_queue.clone(), apply_queue.clone());
        others.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let queues = Queues::sqs(sqs.clone(), plan_queue.clone(), apply_queue.clone());
                let cold_start: ritmo::Result<_> = async {
                    let api =
                        Services::connect(settings.clone(), queues, MetricsSink::capture()).await?;
                    let store = api.database().await?;
                    Ok(store.targets().await?)
                }
                .await;
                // The environment (and its connection) is dropped; wait for its server process.
                let connections = || async {
                    let row = monitor
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                            &[&name],
                        )
                        .await?;
                    anyhow::Ok(row.get::<_, i64>(0))
                };
                while connections().await? > 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                match cold_start {
                    Ok(_) => {
                        ops.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => errors.lock().await.push(format!(
                        "api cold start: {}",
                        ritmo::telemetry::error_chain(&error)
                    )),
                }
                tokio::time::sleep(OTHERS_EVERY).await;
            }
            anyhow::Ok(())
        }));
    }

    // The storm: `at_once` senders take the next delivery as they finish one; a refused
    // delivery is sent again after its Retry-After, as GitHub's redelivery would.
    // Never all zeros: that `after` is a branch deletion, which is ignored.
    let commits: Vec<String> = (1..=deliveries).map(|i| format!("{i:040x}")).collect();
    let answers: Arc<Vec<Mutex<Answers>>> =
        Arc::new((0..deliveries).map(|_| Mutex::default()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let round_robin = Arc::new(AtomicUsize::new(0));
    let webhooks = Arc::new(webhooks);
    let commits = Arc::new(commits);
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..at_once {
        let (next, round_robin) = (next.clone(), round_robin.clone());
        let (webhooks, commits, answers) = (webhooks.clone(), commits.clone(), answers.clone());
        senders.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(commit) = commits.get(index) else {
                    return anyhow::Ok(());
                };
                let delivery_id = format!("storm-{index}");
                loop {
                    let first = round_robin.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let response = invoke(&webhooks, first, &delivery_id, commit).await?;
                    let millis = sent.elapsed().as_secs_f64() * 1000.0;
                    let mut status = response.status();
                    if status == StatusCode::ACCEPTED {
                        // 202 is also "ignored": only "accepted" queued a plan.
                        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
                        let body: serde_json::Value = serde_json::from_slice(&body)?;
                        if body["status"] != "accepted" {
                            status = StatusCode::NON_AUTHORITATIVE_INFORMATION;
                        }
                        answers[index].lock().await.attempts.push((status, millis));
                        break;
                    }
                    answers[index].lock().await.attempts.push((status, millis));
                    if status != StatusCode::SERVICE_UNAVAILABLE {
                        break;
                    }
                    let wait: u64 = response
                        .headers()
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok()?.parse().ok())
                        .with_context(|| format!("{delivery_id}: 503 without Retry-After"))?;
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
            }
        }));
    }
    let finished = tokio::time::timeout(STORM_WITHIN, async {
        for sender in senders {
            sender.await??;
        }
        anyhow::Ok(())
    })
    .await;
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for other in others {
        other.await??;
    }
    sampler.await??;
    match finished {
        Ok(result) => result?,
        Err(_) => bail!("the storm did not end within {STORM_WITHIN:?}"),
    }

    // The answers.
    let mut accepted = BTreeSet::new();
    let mut unexpected = Vec::new();
    let mut refusals = 0usize;
    let mut refused_deliveries = 0usize;
    let mut accepted_ms = Vec::new();
    let mut all_ms = Vec::new();
    for (index, answers) in answers.iter().enumerate() {
        let answers = answers.lock().await;
        let mut refused = false;
        for (status, millis) in &answers.attempts {
            all_ms.push(*millis);
            match *status {
                StatusCode::ACCEPTED => {
                    accepted.insert(index);
                    accepted_ms.push(*millis);
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    refusals += 1;
                    refused = true;
                }
                StatusCode::NON_AUTHORITATIVE_INFORMATION => {
                    unexpected.push(format!("storm-{index}: 202 but not accepted"));
                }
                other => unexpected.push(format!("storm-{index}: {other}")),
            }
        }
        refused_deliveries += usize::from(refused);
    }

    // The queue: every accepted delivery's plan request, once.
    let mut queued: BTreeMap<String, usize> = BTreeMap::new();
    let mut empty_receives = 0;
    while empty_receives < 3 {
        let received = sqs
            .receive_message()
            .queue_url(&plan_queue)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .send()
            .await?;
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            empty_receives += 1;
            continue;
        }
        empty_receives = 0;
        for message in messages {
            let request = PlanRequest::from_json(message.body().unwrap_or_default())?;
            let revision = request.revision.unwrap_or_default();
            *queued.entry(revision).or_default() += 1;
            sqs.delete_message()
                .queue_url(&plan_queue)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await?;
        }
    }

    let other_errors = other_errors.lock().await.clone();
    let peak = peak.load(Ordering::Relaxed);
    accepted_ms.sort_by(f64::total_cmp);
    all_ms.sort_by(f64::total_cmp);
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| deliveries | {deliveries} ({at_once} at once) |");
    println!("| accepted (202) | {} |", accepted.len());
    println!(
        "| refused (503 + Retry-After) | {refusals} answers, to {refused_deliveries} deliveries, all accepted when redelivered |"
    );
    println!("| other statuses | {} |", unexpected.len());
    println!(
        "| wall time | {:.1} s (includes the refused senders' waits of {}-{} s) |",
        elapsed.as_secs_f64(),
        webhook::RETRY_AFTER_SECS,
        webhook::RETRY_AFTER_SECS + webhook::RETRY_AFTER_JITTER_SECS
    );
    println!(
        "| accepted per second | {:.0} |",
        accepted.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "| latency of accepted answers p50 / p99 / max | {:.1} / {:.1} / {:.1} ms |",
        percentile(&accepted_ms, 50.0),
        percentile(&accepted_ms, 99.0),
        accepted_ms.last().copied().unwrap_or(0.0)
    );
    println!(
        "| latency of all answers p50 / p99 | {:.1} / {:.1} ms |",
        percentile(&all_ms, 50.0),
        percentile(&all_ms, 99.0)
    );
    println!(
        "| peak client connections (pg_stat_activity) | {peak} of max_connections {max_connections} |"
    );
    println!(
        "| other functions' connects and queries meanwhile | {} ok, {} failed |",
        other_ops.load(Ordering::Relaxed),
        other_errors.len()
    );
    println!(
        "| plan requests queued | {} for {} revisions |",
        queued.values().sum::<usize>(),
        queued.len()
    );

    ensure!(
        unexpected.is_empty(),
        "answers other than 202 and 503: {unexpected:?}"
    );
    ensure!(
        accepted.len() == deliveries,
        "{} deliveries were never accepted",
        deliveries - accepted.len()
    );
    for (index, commit) in commits.iter().enumerate() {
        let times = queued
            .iter()
            .filter(|(revision, _)| revision.contains(commit.as_str()))
            .map(|(_, count)| count)
            .sum::<usize>();
        ensure!(times == 1, "storm-{index} was queued {times} times");
    }
    ensure!(
        queued.values().sum::<usize>() == deliveries,
        "the queue holds {} plan requests for {deliveries} deliveries",
        queued.values().sum::<usize>()
    );
    for error in other_errors.iter().take(3) {
        println!("other function failed: {error}");
    }
    ensure!(
        other_errors.is_empty(),
        "the other functions failed {} times, first: {}",
        other_errors.len(),
        other_errors[0]
    );
    ensure!(
        other_ops.load(Ordering::Relaxed) > 0,
        "the other functions did nothing during the storm"
    );
    ensure!(
        peak <= max_connections,
        "{peak} connections, over {max_connections}"
    );
    println!("\nstorm: ok");
    Ok(())
}

/// What Lambda does with a request to a function at its reserved concurrency: hand it to a free
/// execution environment, or throttle it when none is free (API Gateway then answers the
/// template's `INTEGRATION_FAILURE` response: 503 with Retry-After). Here an environment is
/// free when its router takes the delivery rather than answering `busy`.
async fn invoke(
    webhooks: &[Router],
    first: usize,
    delivery_id: &str,
    commit: &str,
) -> Result<axum::response::Response> {
    let mut last = None;
    for offset in 0..webhooks.len() {
        let environment = &webhooks[(first + offset) % webhooks.len()];
        let response = environment
            .clone()
            .oneshot(signed_push(delivery_id, commit))
            .await?;
        if response.status() != StatusCode::SERVICE_UNAVAILABLE {
            return Ok(response);
        }
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await?;
        let error: serde_json::Value = serde_json::from_slice(&body)?;
        let response = axum::response::Response::from_parts(parts, Body::from(body));
        if error["error"] != "busy" {
            // Refused after trying (the database or the queue failed): not a throttle.
            return Ok(response);
        }
        last = Some(response);
    }
    last.context("no webhook environment")
}

/// A GitHub push of `commit` to `main`, signed as GitHub signs it.
fn signed_push(delivery_id: &str, commit: &str) -> Request<Body> {
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000001",
        "after": commit,
        "created": false,
        "deleted": false,
        "repository": {
            "full_name": "acme/ritmo-config",
            "clone_url": REPO_URL,
            "html_url": "https://github.com/acme/ritmo-config",
            "ssh_url": "git@github.com:acme/ritmo-config.git",
        },
        "pusher": { "name": "storm" },
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    Request::post(webhook::WEBHOOK_PATH)
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery_id)
        .header("x-hub-signature-256", signature)
        .body(Body::from(body))
        .unwrap()
}

/// The `p`th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
