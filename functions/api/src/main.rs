//! The `api` Lambda function: API Gateway `/api/v1/...` and `/health/*` → [`api::app`].

use std::sync::Arc;

use ritmo::telemetry::{LogFormat, init_logging};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_logging(LogFormat::Json, "info");
    // Built once per cold start: the database connection outlives invocations.
    let services = ritmo::services::Services::for_lambda().await?;
    lambda_http::run(api::app(Arc::new(services))).await
}
