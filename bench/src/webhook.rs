//! Webhook handler time: a 25 KB signed GitHub push through the router the `webhook` function
//! runs (`webhook::app`: signature check, parse, delivery id recorded in PostgreSQL, one plan
//! request queued), in process, with in-process queues; and the verify + parse part alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use axum::body::Body;
use axum::http::Request;
use hmac::{Hmac, Mac};
use ritmo::config::{GitAuth, Settings, TargetSettings};
use ritmo::metrics::MetricsSink;
use ritmo::queue::Queues;
use ritmo::services::Services;
use ritmo_tests::db::TestDb;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::Sha256;
use tower::ServiceExt as _;

const SECRET: &str = "ritmo-bench-webhook-secret";
const REPO: &str = "https://github.com/acme/ritmo-config.git";

/// p50 and p99 of each way of handling the push, over `iterations` deliveries.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebhookTimes {
    pub body_bytes: usize,
    pub iterations: usize,
    /// The whole router: what the function does per invocation.
    pub handler_p50: Duration,
    pub handler_p99: Duration,
    /// `ritmo::webhook::receive` alone: signature and parse, no I/O.
    pub verify_parse_p50: Duration,
    pub verify_parse_p99: Duration,
}

pub async fn run(iterations: usize) -> Result<WebhookTimes> {
    let db = TestDb::new().await;
    let settings = Settings {
        enabled: true,
        targets: vec![TargetSettings {
            name: "config".into(),
            repo_url: REPO.into(),
            branch: "main".into(),
            path: String::new(),
            interval_secs: 60,
            auto_apply: true,
            dry_run: false,
            self_heal: false,
            controls: Default::default(),
            policy: Default::default(),
            auth: GitAuth::None,
        }],
        database_url: Some(SecretString::from(db.url.clone())),
        webhook_secret: Some(SecretString::from(SECRET)),
        webhook_path: ::webhook::WEBHOOK_PATH.into(),
        ..Settings::default()
    };
    let (queues, mut receivers) = Queues::local();
    let services = Arc::new(Services::connect(settings, queues, MetricsSink::capture()).await?);
    let app = ::webhook::app(services.clone());

    let warmup = (iterations / 10).max(10);
    let mut handler = Vec::with_capacity(iterations);
    let mut pure = Vec::with_capacity(iterations);
    let mut body_bytes = 0;
    for i in 0..warmup + iterations {
        let (headers, body) = delivery(i);
        body_bytes = body.len();

        let secrets = [SecretString::from(SECRET)];
        let started = Instant::now();
        let delivery = ritmo::webhook::receive(&headers, body.as_bytes(), &secrets);
        let took = started.elapsed();
        if delivery.is_err() {
            bail!("the bench's push was refused: {:?}", delivery.err());
        }

        let mut request = Request::post(::webhook::WEBHOOK_PATH);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let request = request.body(Body::from(body))?;
        let started = Instant::now();
        let response = app.clone().oneshot(request).await?;
        let handled = started.elapsed();
        if response.status() != 202 {
            bail!("the webhook answered {}", response.status());
        }
        if receivers.plans.try_recv().is_err() {
            bail!("the push queued no plan request");
        }
        if i >= warmup {
            pure.push(took);
            handler.push(handled);
        }
    }
    // The metric lines the handler captured would otherwise grow with the iterations.
    drop(app);
    drop(services);
    let (handler_p50, handler_p99) = percentiles(handler);
    let (verify_parse_p50, verify_parse_p99) = percentiles(pure);
    Ok(WebhookTimes {
        body_bytes,
        iterations,
        handler_p50,
        handler_p99,
        verify_parse_p50,
        verify_parse_p99,
    })
}

/// Headers and body of delivery `i`: a GitHub push of 40 commits (about 25 KB), each delivery
/// with its own id and head commit so none is taken for a replay.
fn delivery(i: usize) -> (Vec<(String, String)>, String) {
    let after = format!("{:040x}", 0x8b5f_2a6c_u64 + i as u64);
    let commits: Vec<Value> = (0..40)
        .map(|c| {
            json!({
                "id": format!("{:040x}", (i as u64) << 8 | c),
                "tree_id": format!("{:040x}", 0xfeed_u64 + c),
                "distinct": true,
                "message": format!("jobs: tune the backend services' pipelines (change {c} of delivery {i})"),
                "timestamp": "2026-12-02T01:00:00Z",
                "url": format!("https://github.com/acme/ritmo-config/commit/{c:040x}"),
                "author": {"name": "Dana Ops", "email": "dana@example.com", "username": "dana"},
                "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
                "added": [format!("jobs/team-{:02}/svc-{c:05}.yaml", c % 50)],
                "removed": [],
                "modified": [
                    format!("jobs/team-{:02}/svc-{:05}.yaml", c % 50, c + 100),
                    format!("webhooks/team-{:02}/hook-{:05}.yaml", c % 50, c + 100),
                ],
            })
        })
        .collect();
    let body = json!({
        "ref": "refs/heads/main",
        "before": format!("{:040x}", 0x3c2d_1e0f_u64 + i as u64),
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "compare": "https://github.com/acme/ritmo-config/compare/3c2d1e0f9a8b...8b5f2a6c1d3e",
        "repository": {
            "id": 714_285_710,
            "name": "ritmo-config",
            "full_name": "acme/ritmo-config",
            "private": true,
            "owner": {"name": "acme", "login": "acme", "id": 9919, "type": "Organization"},
            "html_url": "https://github.com/acme/ritmo-config",
            "url": "https://github.com/acme/ritmo-config",
            "git_url": "git://github.com/acme/ritmo-config.git",
            "ssh_url": "git@github.com:acme/ritmo-config.git",
            "clone_url": REPO,
            "default_branch": "main",
            "master_branch": "main",
        },
        "pusher": {"name": "dana", "email": "dana@example.com"},
        "sender": {"login": "dana", "id": 4242, "type": "User"},
        "commits": commits,
        "head_commit": {"id": after, "message": "jobs: tune the backend services' pipelines"},
    })
    .to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap_or_else(|_| {
        unreachable!("HMAC takes a key of any length");
    });
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        (
            "user-agent".to_string(),
            "GitHub-Hookshot/bench".to_string(),
        ),
        ("x-github-event".to_string(), "push".to_string()),
        (
            "x-github-delivery".to_string(),
            format!("00000000-0000-4000-8000-{i:012}"),
        ),
        ("x-hub-signature-256".to_string(), signature),
    ];
    (headers, body)
}

fn percentiles(mut values: Vec<Duration>) -> (Duration, Duration) {
    values.sort();
    let at = |q: f64| {
        let index = ((values.len() as f64 * q).ceil() as usize).saturating_sub(1);
        values.get(index).copied().unwrap_or_default()
    };
    (at(0.50), at(0.99))
}
