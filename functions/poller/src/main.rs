//! Entry point of the `poller` Lambda function: logging, services once per cold start, run.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use ritmo::telemetry::{self, LogFormat};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init_logging(LogFormat::Json, "info");
    let services = Arc::new(ritmo::services::Services::for_lambda().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<_>| {
        let services = services.clone();
        async move { poller_function::handler::handle(&services, event).await }
    }))
    .await
}
