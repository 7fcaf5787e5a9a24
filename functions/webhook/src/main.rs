//! The `webhook` Lambda function: API Gateway `POST /webhooks/gitops` → [`webhook::app`].

use std::sync::Arc;

use ritmo::telemetry::{LogFormat, init_logging};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging(LogFormat::Json, "info");
    // Built once per cold start: the database connection and the cached secret outlive
    // invocations.
    let services = ritmo::services::Services::for_lambda().await?;
    lambda_http::run(webhook::app(Arc::new(services))).await
}
