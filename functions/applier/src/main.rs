//! Entry point of the `applier` Lambda function: logging, services once per cold start, run.

use ritmo::services::Services;
use ritmo::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_logging(LogFormat::Json, "info");
    applier_function::handler::run(Services::for_lambda().await?).await
}
