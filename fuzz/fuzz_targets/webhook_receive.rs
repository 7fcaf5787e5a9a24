//! The webhook receiver: headers and raw body (see `ritmo_fuzz::http_request`) → the outcome
//! `ritmo::webhook::receive` decides (provider, signature, payload), then the targets a push
//! concerns. A signature header whose value is `{sign}` is replaced by the right one for the
//! body, so the fuzzer reaches the payload parsers as a signed sender would.
#![no_main]

use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use ritmo::crypto::SecretString;
use ritmo::webhook::{self, WebhookError, matching_targets};
use ritmo_fuzz::http_request;
use sha2::Sha256;

const SECRET: &str = "fuzz-webhook-secret";
const PREVIOUS_SECRET: &str = "fuzz-webhook-secret-before-rotation";

const TARGETS: &[(&str, &str, &str)] = &[
    (
        "default",
        "https://github.com/acme/ritmo-config.git",
        "main",
    ),
    (
        "gitlab",
        "git@gitlab.com:acme/ritmo-config.git",
        "refs/heads/main",
    ),
    (
        "gitea",
        "https://gitea.example.com/acme/ritmo-config",
        "release/1.0",
    ),
    (
        "bitbucket",
        "ssh://git@bitbucket.org:7999/acme/ritmo-config.git",
        "main",
    ),
];

fn sign(body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fuzz_target!(|data: &[u8]| {
    let (mut headers, body) = http_request(data);
    for (name, value) in &mut headers {
        if value.contains("{sign}") {
            let signature = if name.eq_ignore_ascii_case("x-gitlab-token") {
                SECRET.to_owned()
            } else {
                sign(body)
            };
            *value = value.replace("{sign}", &signature);
        }
    }
    let secrets = [
        SecretString::from(PREVIOUS_SECRET),
        SecretString::from(SECRET),
    ];

    match webhook::receive(&headers, body, &secrets) {
        Ok(delivery) => {
            assert!(
                !delivery.events.is_empty(),
                "a delivery reports at least one event"
            );
            let _ = delivery.is_ping();
            for reason in delivery.ignore_reasons() {
                let _ = reason.to_string();
            }
            for push in delivery.pushes() {
                let _ = push.revision().to_string();
                let _ = matching_targets(push, TARGETS.iter().copied());
            }
        }
        Err(error) => {
            let _ = (error.code(), error.to_string(), error.is_retryable());
        }
    }

    // With no secret, nothing passes, however it is signed.
    let unsigned = webhook::receive(&headers, body, &[SecretString::from("")]);
    assert!(
        matches!(
            unsigned,
            Err(WebhookError::NoSecretConfigured | WebhookError::UnknownProvider)
        ),
        "{unsigned:?}"
    );
});
