//! Signature and token checks, in constant time. Never puts a secret or a received signature
//! into an error.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Headers, Provider, WebhookError};

type HmacSha256 = Hmac<Sha256>;

/// How one provider proves a request came from it.
enum Scheme {
    /// Hex HMAC-SHA256 of the raw body, with a required `sha256=` prefix (GitHub, Bitbucket)
    /// or an optional one (Gitea, Forgejo).
    Hmac { prefix_required: bool },
    /// The secret itself, sent as a header (GitLab).
    Token,
}

fn scheme(provider: Provider) -> (Scheme, &'static [&'static str]) {
    match provider {
        Provider::GitHub => (
            Scheme::Hmac {
                prefix_required: true,
            },
            &["x-hub-signature-256"],
        ),
        Provider::Bitbucket => (
            Scheme::Hmac {
                prefix_required: true,
            },
            &["x-hub-signature"],
        ),
        Provider::Gitea => (
            Scheme::Hmac {
                prefix_required: false,
            },
            &["x-gitea-signature"],
        ),
        // Forgejo sends both; older versions only Gitea's.
        Provider::Forgejo => (
            Scheme::Hmac {
                prefix_required: false,
            },
            &["x-forgejo-signature", "x-gitea-signature"],
        ),
        Provider::GitLab => (Scheme::Token, &["x-gitlab-token"]),
    }
}

/// Checks that `body` was signed (or the token sent) with one of `secrets`.
///
/// Empty secrets are skipped: an empty HMAC key or token would let anyone sign. Every accepted
/// secret is tried, so the time taken does not say which one matched.
pub fn verify<H: Headers + ?Sized>(
    provider: Provider,
    headers: &H,
    body: &[u8],
    secrets: &[SecretString],
) -> Result<(), WebhookError> {
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(|secret| secret.expose_secret().as_bytes())
        .filter(|secret| !secret.is_empty())
        .collect();
    if secrets.is_empty() {
        return Err(WebhookError::NoSecretConfigured);
    }
    let (scheme, names) = scheme(provider);
    let Some((header, received)) = names
        .iter()
        .find_map(|name| headers.header(name).map(|value| (*name, value)))
    else {
        return Err(WebhookError::MissingSignature {
            provider,
            header: display_name(names[0]),
        });
    };
    let bad = WebhookError::BadSignature {
        provider,
        header: display_name(header),
    };
    if received.is_empty() {
        return Err(WebhookError::MissingSignature {
            provider,
            header: display_name(header),
        });
    }
    let matched = match scheme {
        Scheme::Hmac { prefix_required } => {
            let hex_digest = match strip_prefix_ignore_case(received, "sha256=") {
                Some(rest) => rest,
                None if prefix_required => return Err(bad),
                None => received,
            };
            let Ok(signature) = hex::decode(hex_digest) else {
                return Err(bad);
            };
            secrets.iter().fold(false, |matched, secret| {
                hmac_matches(secret, body, &signature) | matched
            })
        }
        Scheme::Token => {
            // Comparing digests keeps the comparison fixed-length, so timing does not reveal
            // the secret's length either.
            let received = Sha256::digest(received.as_bytes());
            secrets.iter().fold(false, |matched, secret| {
                bool::from(Sha256::digest(secret).ct_eq(&received)) | matched
            })
        }
    };
    if matched { Ok(()) } else { Err(bad) }
}

fn hmac_matches(secret: &[u8], body: &[u8], signature: &[u8]) -> bool {
    // HMAC accepts keys of any length, so this never fails; a failure would only mean no match.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(signature).is_ok()
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// The header's conventional spelling, for error messages.
fn display_name(lower: &str) -> &'static str {
    match lower {
        "x-hub-signature-256" => "X-Hub-Signature-256",
        "x-hub-signature" => "X-Hub-Signature",
        "x-gitea-signature" => "X-Gitea-Signature",
        "x-forgejo-signature" => "X-Forgejo-Signature",
        _ => "X-Gitlab-Token",
    }
}
