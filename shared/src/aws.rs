//! aws: the configuration every AWS client here is built from.
//!
//! A function takes it from its environment, where Lambda puts the region and the role's
//! credentials. The CLI, run by people whose credentials sit in profiles or SSO, asks for the
//! SDK's whole default chain with [`use_loader`]. The chain is not the default here because in
//! a function it can only end at the environment (profiles, SSO, web identity and instance
//! metadata do not exist in Lambda), and linking it costs every function ~0.8 MB
//! (docs/benchmarks.md).

use std::collections::HashMap;
use std::env;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_types::sdk_config::SharedCredentialsProvider;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

/// Builds the configuration in place of [`from_environment`].
pub type Loader = fn() -> Pin<Box<dyn Future<Output = SdkConfig> + Send>>;

static LOADER: OnceLock<Loader> = OnceLock::new();

/// Makes [`config`] call `loader` from now on; call it at start-up, before any client is
/// built. Later calls are ignored.
pub fn use_loader(loader: Loader) {
    let _ = LOADER.set(loader);
}

/// The AWS configuration of this process: [`use_loader`]'s, or else [`from_environment`]'s.
pub async fn config() -> SdkConfig {
    match LOADER.get() {
        Some(load) => load().await,
        None => from_environment(env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        })),
    }
}

const ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";

/// The configuration a Lambda function is given, from its environment `variables`:
/// `AWS_REGION` (or `AWS_DEFAULT_REGION`), the endpoint from `AWS_ENDPOINT_URL_<SERVICE>` or
/// `AWS_ENDPOINT_URL` (moto, LocalStack), and the role's credentials from
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, which Lambda sets
/// when it starts the container; without them every call fails before it is sent
/// (`NoIdentityResolver`). Retries, timeouts and the identity cache are the SDK's defaults
/// for its latest behaviour version, as the default loader leaves them when nothing
/// overrides them.
pub fn from_environment(variables: impl IntoIterator<Item = (String, String)>) -> SdkConfig {
    let mut variables: HashMap<String, String> = variables
        .into_iter()
        .filter(|(name, value)| name.starts_with("AWS_") && !value.is_empty())
        .collect();
    let region = variables
        .get("AWS_REGION")
        .or_else(|| variables.get("AWS_DEFAULT_REGION"))
        .cloned()
        .map(Region::new);
    let credentials = match (
        variables.get("AWS_ACCESS_KEY_ID"),
        variables.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(key_id), Some(secret)) => Some(SharedCredentialsProvider::new(Credentials::new(
            key_id,
            secret,
            variables.get("AWS_SESSION_TOKEN").cloned(),
            None,
            "environment",
        ))),
        _ => None,
    };
    let endpoint_url = variables.remove(ENDPOINT_URL);
    variables.retain(|name, _| name.starts_with(ENDPOINT_URL));
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .service_config(ServiceEndpoints(variables));
    builder.set_credentials_provider(credentials);
    builder.set_endpoint_url(endpoint_url);
    builder.build()
}

/// `AWS_ENDPOINT_URL_<SERVICE>` variables by name, asked for by each client as it is built.
#[derive(Debug)]
struct ServiceEndpoints(HashMap<String, String>);

impl LoadServiceConfig for ServiceEndpoints {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        // The SDK's spelling: "Secrets Manager" is AWS_ENDPOINT_URL_SECRETS_MANAGER.
        let service = key.service_id().to_uppercase().replace(' ', "_");
        self.0.get(&format!("{}_{service}", key.env())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn endpoint_of(config: &SdkConfig, service_id: &str) -> Option<String> {
        let key = ServiceConfigKey::builder()
            .service_id(service_id)
            .env(ENDPOINT_URL)
            .profile("endpoint_url")
            .build()
            .unwrap();
        config.service_config().unwrap().load_config(key)
    }

    #[test]
    fn region_and_endpoints_come_from_the_variables() {
        let config = from_environment(variables(&[
            ("AWS_DEFAULT_REGION", "eu-west-1"),
            ("AWS_REGION", "eu-central-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:5001"),
        ]));

        assert_eq!(config.region().map(Region::as_ref), Some("eu-central-1"));
        assert_eq!(config.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            endpoint_of(&config, "Secrets Manager").as_deref(),
            Some("http://127.0.0.1:5001")
        );
        assert_eq!(endpoint_of(&config, "SQS"), None);
        assert!(config.credentials_provider().is_none());
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let config = from_environment(variables(&[
            ("AWS_REGION", ""),
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_ENDPOINT_URL", ""),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", ""),
        ]));

        assert_eq!(config.region().map(Region::as_ref), Some("us-east-2"));
        assert_eq!(config.endpoint_url(), None);
        assert!(config.credentials_provider().is_none());
    }
}
