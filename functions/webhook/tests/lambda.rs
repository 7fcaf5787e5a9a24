//! The `webhook` binary as Lambda runs it, configured by environment variables alone: a local
//! Lambda Runtime API hands it `events/webhook-github-push-apigw-v2.json`, its AWS clients
//! come from the `AWS_*` variables (pointed at moto), and the plan request lands on moto's
//! SQS FIFO queue.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ritmo_tests::db::TestDb;
use ritmo_tests::moto::{Moto, REGION};
use serde_json::Value;
use tokio::sync::mpsc;

/// The secret every `events/webhook-*` file is signed with (events/README.md).
const TEST_SECRET: &str = "ritmo-test-webhook-secret";
/// The commit the sample push carries.
const COMMIT: &str = "8b5f2a6c1d3e4f5061728394a5b6c7d8e9f00112";

/// What the function posted back: `("response" | "error", body)`.
type Posted = (&'static str, Value);

#[derive(Clone)]
struct RuntimeApi {
    event: Arc<Mutex<Option<Value>>>,
    posted: mpsc::UnboundedSender<Posted>,
}

/// The invocation protocol of the Lambda Runtime API: the event once, then a long poll that
/// never ends, as when no request comes.
async fn next_event(State(api): State<RuntimeApi>) -> impl IntoResponse {
    let event = api.event.lock().unwrap().take();
    let Some(event) = event else {
        return std::future::pending().await;
    };
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let mut headers = HeaderMap::new();
    let deadline_ms = deadline.duration_since(UNIX_EPOCH).unwrap().as_millis();
    headers.insert(
        "lambda-runtime-aws-request-id",
        "invocation-1".parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        deadline_ms.to_string().parse().unwrap(),
    );
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:webhook"
            .parse()
            .unwrap(),
    );
    (headers, event.to_string())
}

async fn serve_runtime_api(event: Value) -> (String, mpsc::UnboundedReceiver<Posted>) {
    let (posted, received) = mpsc::unbounded_channel();
    let api = RuntimeApi {
        event: Arc::new(Mutex::new(Some(event))),
        posted,
    };
    let record = |kind: &'static str| {
        move |State(api): State<RuntimeApi>, body: String| async move {
            let _ = api
                .posted
                .send((kind, serde_json::from_str(&body).unwrap()));
            axum::http::StatusCode::ACCEPTED
        }
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next_event))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(record("response")),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(record("error")),
        )
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, received)
}

#[tokio::test]
async fn the_binary_turns_a_signed_push_into_a_plan_request_on_sqs() {
    let moto = Moto::start();
    let db = TestDb::new().await;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let (plan_queue, _) = moto.fifo_queue_with_dlq("webhook-lambda-plan", 30, 5).await;
    let (apply_queue, _) = moto
        .fifo_queue_with_dlq("webhook-lambda-apply", 30, 5)
        .await;
    let event_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/webhook-github-push-apigw-v2.json");
    let event: Value = serde_json::from_slice(&std::fs::read(event_file).unwrap()).unwrap();
    let (runtime_api, mut posted) = serve_runtime_api(event).await;
    let logs = tempfile::NamedTempFile::new().unwrap();

    let mut function = Command::new(env!("CARGO_BIN_EXE_webhook"))
        .env_clear()
        .envs([
            ("AWS_LAMBDA_RUNTIME_API", runtime_api.as_str()),
            ("AWS_LAMBDA_FUNCTION_NAME", "webhook"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_SESSION_TOKEN", "testing"),
            ("AWS_ENDPOINT_URL", moto.endpoint()),
            ("DATABASE_URL", db.url.as_str()),
            ("RITMO_GITOPS_BOOTSTRAP", ""),
            (
                "RITMO_GITOPS_REPO_URL",
                "https://github.com/acme/ritmo-config.git",
            ),
            ("RITMO_GITOPS_REPO_BRANCH", "main"),
            ("RITMO_GITOPS_WEBHOOK_SECRET", TEST_SECRET),
            ("RITMO_GITOPS_PLAN_QUEUE_URL", plan_queue.as_str()),
            ("RITMO_GITOPS_APPLY_QUEUE_URL", apply_queue.as_str()),
        ])
        .stdin(Stdio::null())
        .stdout(logs.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(60), posted.recv()).await;
    let _ = function.kill();
    let _ = function.wait();
    let logs = std::fs::read_to_string(logs.path()).unwrap();
    let (kind, response) = answer
        .unwrap_or_else(|_| panic!("no answer within 60 s; the function logged:\n{logs}"))
        .unwrap();
    let received = sqs
        .receive_message()
        .queue_url(&plan_queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = received.messages();

    assert_eq!(kind, "response", "{response}\n{logs}");
    assert_eq!(response["statusCode"], 202, "{response}");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let request: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(request["target"], "default", "{request}");
    assert!(request.to_string().contains(COMMIT), "{request}");
}
