//! `ritmo serve`: the whole pipeline on one machine. The `webhook` and `api` routers share one
//! port; the poller ticks on a timer; the planner and applier consume the queues (SQS through
//! `AWS_ENDPOINT_URL`, e.g. moto, or in-process channels when it is unset). Configured exactly
//! like the Lambda functions: the bootstrap file, `RITMO_GITOPS_*` and `DATABASE_URL`.
//!
//! Logs are human text when stderr is a terminal and one JSON object per line (the Lambda
//! format, on stdout) otherwise: a person at a terminal reads them, anything else (systemd, a
//! container, CI) collects and queries them, and JSON is what those tools parse. EMF metrics
//! are written only in the JSON case, for the same reason.
//!
//! The API is gated by [`gate`] (DESIGN.md §14): a bearer token for every state change, JSON
//! bodies, `Host` and `Origin` checks. The routers inside are the Lambda functions', unchanged:
//! on AWS, API Gateway's IAM authorisation is the gate.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use ritmo::config::Settings;
use ritmo::metrics::MetricsSink;
use ritmo::queue::{Queues, workers};
use ritmo::services::Services;
use ritmo::telemetry::{self, LogFormat};
use ritmo::workflow::{self, ApplyQueue, PlanQueue};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::args::ServeArgs;

mod gate;

/// The poller never ticks faster than this, whatever a target's interval says.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// How long the workers get to finish the message in hand after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Queue names created on the SQS endpoint when no queue URL is given.
const PLAN_QUEUE_NAME: &str = "ritmo-plan.fifo";
const APPLY_QUEUE_NAME: &str = "ritmo-apply.fifo";

/// The log format `ritmo serve` uses: see the module documentation.
pub fn log_format() -> LogFormat {
    if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

/// Installs `ritmo serve`'s logging: `info` unless `-v` (debug) or `RITMO_LOG`/`RUST_LOG`.
pub fn init_logging(verbose: u8) {
    let level = if verbose > 0 { "debug" } else { "info" };
    telemetry::init_logging(log_format(), level);
}

/// The router `ritmo serve` answers with: the API's routes and fallbacks, plus the webhook's
/// routes (its own fallback dropped: a router has one), behind `gate`.
fn router(services: Arc<Services>, gate: Arc<gate::Gate>) -> Router {
    api::app(services.clone())
        .merge(webhook::app(services).reset_fallback())
        .layer(axum::middleware::from_fn_with_state(gate, gate::check))
}

/// The poller's tick: the shortest target interval, at least [`MIN_POLL_INTERVAL`].
pub fn poll_interval(settings: &Settings, requested: Option<u64>) -> Duration {
    let every = requested.map(Duration::from_secs).unwrap_or_else(|| {
        settings
            .targets
            .iter()
            .map(|target| Duration::from_secs(target.interval_secs))
            .min()
            .unwrap_or(Duration::from_secs(60))
    });
    every.max(MIN_POLL_INTERVAL)
}

enum QueueMode {
    Local(ritmo::queue::LocalReceivers),
    Sqs {
        client: aws_sdk_sqs::Client,
        endpoint: String,
        plan_queue_url: String,
        apply_queue_url: String,
    },
}

pub async fn run(mut settings: Settings, args: &ServeArgs) -> Result<u8> {
    if let Some(url) = &args.database.database_url {
        settings.database_url = Some(SecretString::from(url.clone()));
    }
    if settings.database_url.is_none() {
        bail!("no database: set DATABASE_URL or pass --database-url");
    }
    if settings.targets.is_empty() {
        tracing::warn!(
            "no target configured: set RITMO_GITOPS_REPO_URL or give a bootstrap file; the API answers but nothing syncs"
        );
    }
    let every = poll_interval(&settings, args.poll_interval);

    let (queues, mode) = match args.aws_endpoint_url.as_deref().filter(|u| !u.is_empty()) {
        Some(endpoint) => {
            let client = aws_sdk_sqs::Client::new(&ritmo::aws::config().await);
            let plan_queue_url =
                queue_url(&client, args.plan_queue_url.as_deref(), PLAN_QUEUE_NAME).await?;
            let apply_queue_url =
                queue_url(&client, args.apply_queue_url.as_deref(), APPLY_QUEUE_NAME).await?;
            (
                Queues::sqs(
                    client.clone(),
                    plan_queue_url.clone(),
                    apply_queue_url.clone(),
                ),
                QueueMode::Sqs {
                    client,
                    endpoint: endpoint.to_owned(),
                    plan_queue_url,
                    apply_queue_url,
                },
            )
        }
        None => {
            let (queues, receivers) = Queues::local();
            (queues, QueueMode::Local(receivers))
        }
    };
    let metrics = match log_format() {
        LogFormat::Json => MetricsSink::Stdout,
        LogFormat::Text => MetricsSink::Disabled,
    };
    let services = Arc::new(
        Services::connect(settings, queues, metrics)
            .await
            .context("cannot start: the database or the credential keys are not reachable")?,
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", args.listen))?;
    let address = listener.local_addr().unwrap_or(args.listen);
    let gate = gate::Gate::new(
        services.clone(),
        address,
        &gate::GateOptions {
            insecure_local: args.insecure_local,
            allow_origins: &args.allow_origins,
            allow_hosts: &args.allow_hosts,
        },
    )
    .await?;
    let gate_text = gate.describe();

    let (stop, shutdown) = watch::channel(false);
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let queues_text = match mode {
        QueueMode::Local(receivers) => {
            tasks.push(tokio::spawn(workers::run_local_workers::<
                PlanQueue,
                ApplyQueue,
            >(
                services.clone(),
                receivers,
                shutdown.clone(),
            )));
            "in-process queues".to_owned()
        }
        QueueMode::Sqs {
            client,
            endpoint,
            plan_queue_url,
            apply_queue_url,
        } => {
            let text = format!("SQS at {endpoint} ({plan_queue_url}, {apply_queue_url})");
            tasks.push(tokio::spawn(workers::run_sqs_workers::<
                PlanQueue,
                ApplyQueue,
            >(
                services.clone(),
                client,
                plan_queue_url,
                apply_queue_url,
                shutdown.clone(),
            )));
            text
        }
    };
    // Driven on this task rather than spawned: the poller's future is not `Send` for every
    // lifetime the compiler asks about (rustc's higher-ranked `FnOnce` limitation).
    let poller = {
        let services = services.clone();
        let shutdown = shutdown.clone();
        async move {
            if !services.settings.targets.is_empty() {
                workflow::run_poller_loop(services, every, shutdown).await;
            }
        }
    };

    print_banner(address, &services.settings, &queues_text, every, &gate_text);
    tracing::info!(url = %format!("http://{address}"), queues = %queues_text, poll_every_secs = every.as_secs(), "ritmo serve is listening");

    let app =
        router(services.clone(), Arc::new(gate)).layer(axum::middleware::from_fn(log_request));
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests and the messages in hand");
        let _ = stop.send(true);
    });
    let (served, ()) = tokio::join!(server.into_future(), poller);
    served.context("the HTTP server failed")?;

    let drained = tokio::time::timeout(DRAIN_TIMEOUT, futures_join_all(tasks)).await;
    if drained.is_err() {
        tracing::warn!(
            "the workers did not stop within {}s; leaving the rest to the queue",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    eprintln!("ritmo serve: stopped");
    Ok(0)
}

async fn futures_join_all(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        if let Err(error) = task.await {
            tracing::warn!(%error, "a background task ended abnormally");
        }
    }
}

/// The queue URL given, or the one of `name` on the endpoint, created when missing (a FIFO
/// queue without content-based deduplication: the messages carry their own ids).
async fn queue_url(
    client: &aws_sdk_sqs::Client,
    given: Option<&str>,
    name: &str,
) -> Result<String> {
    if let Some(url) = given.filter(|url| !url.is_empty()) {
        return Ok(url.to_owned());
    }
    use aws_sdk_sqs::types::QueueAttributeName;
    let created = client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
        .attributes(QueueAttributeName::VisibilityTimeout, "60")
        .send()
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot create SQS queue `{name}` at AWS_ENDPOINT_URL: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&error)
            )
        })?;
    created
        .queue_url()
        .map(str::to_owned)
        .with_context(|| format!("creating SQS queue `{name}` returned no URL"))
}

/// Ctrl-C, or SIGTERM (what systemd, Docker and `timeout` send).
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// One log line per request: method, path, status, milliseconds.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

fn print_banner(
    address: SocketAddr,
    settings: &Settings,
    queues: &str,
    every: Duration,
    gate: &str,
) {
    let url = format!("http://{address}");
    let targets: Vec<&str> = settings.targets.iter().map(|t| t.name.as_str()).collect();
    let targets = if targets.is_empty() {
        "none".to_owned()
    } else {
        targets.join(", ")
    };
    eprintln!(
        "ritmo serve: listening on {url} (targets: {targets}; {queues}; polling every {}s)\n  \
         API: {gate}\n  \
         curl -X POST -H \"Authorization: Bearer $RITMO_API_TOKEN\" -H 'Content-Type: application/json' {url}/api/v1/gitops/sync\n  \
         curl {url}/api/v1/gitops/status\n\
         Webhooks: POST {url}{}. Stop with Ctrl-C.",
        every.as_secs(),
        webhook::WEBHOOK_PATH,
    );
}

#[cfg(test)]
mod tests {
    use ritmo::config::env_from_map;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Settings {
        let map = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(None, &env_from_map(map)).unwrap()
    }

    #[test]
    fn the_poller_ticks_at_the_target_interval() {
        let settings = settings(&[
            (
                "RITMO_GITOPS_REPO_URL",
                "https://github.com/acme/config.git",
            ),
            ("RITMO_GITOPS_SYNC_INTERVAL", "30"),
        ]);

        assert_eq!(poll_interval(&settings, None), Duration::from_secs(30));
    }

    #[test]
    fn the_poller_never_ticks_faster_than_the_minimum() {
        let settings = settings(&[
            (
                "RITMO_GITOPS_REPO_URL",
                "https://github.com/acme/config.git",
            ),
            ("RITMO_GITOPS_SYNC_INTERVAL", "1"),
        ]);

        assert_eq!(poll_interval(&settings, None), MIN_POLL_INTERVAL);
        assert_eq!(poll_interval(&settings, Some(0)), MIN_POLL_INTERVAL);
        assert_eq!(poll_interval(&settings, Some(12)), Duration::from_secs(12));
    }
}
