//! Recognising live secrets in plain text, without ever repeating them.
//!
//! Each pattern matches a provider's documented token shape; the random part must also look
//! random (enough distinct characters), so placeholders such as `ghp_xxxxxxxxxxxx`,
//! `AKIAXXXXXXXXXXXXXXXX` or `${RITMO_GITOPS_TOKEN}` are not reported.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

struct Pattern {
    /// Group 1, when present, is the random part checked for variety.
    regex: &'static str,
    description: &'static str,
    min_distinct: usize,
    /// Documented example values that are published everywhere and grant nothing.
    is_example: fn(&str) -> bool,
}

fn never(_: &str) -> bool {
    false
}

fn aws_example(text: &str) -> bool {
    text.ends_with("EXAMPLE")
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        regex: r"\bghp_([A-Za-z0-9]{36})\b",
        description: "a GitHub personal access token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bgho_([A-Za-z0-9]{36})\b",
        description: "a GitHub OAuth access token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bghu_([A-Za-z0-9]{36})\b",
        description: "a GitHub user-to-server token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bghs_([A-Za-z0-9]{36})\b",
        description: "a GitHub server-to-server token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bghr_([A-Za-z0-9]{36})\b",
        description: "a GitHub refresh token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bgithub_pat_([A-Za-z0-9_]{60,255})",
        description: "a GitHub fine-grained personal access token",
        min_distinct: 12,
        is_example: never,
    },
    Pattern {
        regex: r"\bglpat-([A-Za-z0-9_-]{20,})",
        description: "a GitLab personal access token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bxox[abprs]-(?:[0-9]+-){1,3}([A-Za-z0-9]{16,})",
        description: "a Slack token",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"https://hooks\.slack\.com/services/(T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,})",
        description: "a Slack incoming-webhook URL",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\b(?:AKIA|ASIA)([A-Z0-9]{16})\b",
        description: "an AWS access key id",
        min_distinct: 7,
        is_example: aws_example,
    },
    Pattern {
        regex: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----(?s)(.{64,})",
        description: "a PEM private key",
        min_distinct: 16,
        is_example: never,
    },
    Pattern {
        regex: r"\b[rs]k_live_([A-Za-z0-9]{20,})",
        description: "a Stripe live secret key",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\bAIza([0-9A-Za-z_-]{35})",
        description: "a Google API key",
        min_distinct: 10,
        is_example: never,
    },
    Pattern {
        regex: r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.([A-Za-z0-9_-]{16,})",
        description: "a JSON Web Token",
        min_distinct: 10,
        is_example: never,
    },
];

static SET: LazyLock<Option<RegexSet>> =
    LazyLock::new(|| RegexSet::new(PATTERNS.iter().map(|p| p.regex)).ok());

static REGEXES: LazyLock<Vec<Option<Regex>>> =
    LazyLock::new(|| PATTERNS.iter().map(|p| Regex::new(p.regex).ok()).collect());

/// No pattern matches fewer bytes: shorter strings cannot hold a secret, and the loader does
/// not keep them for the scan.
pub const MIN_SECRET_LEN: usize = 20;

/// What kind of secret `text` seems to hold ("a GitHub personal access token"), if any.
pub fn detect_secret(text: &str) -> Option<&'static str> {
    // Most strings are skipped at once.
    if text.len() < MIN_SECRET_LEN {
        return None;
    }
    let set = SET.as_ref()?;
    let matches = set.matches(text);
    if !matches.matched_any() {
        return None;
    }
    for index in matches.iter() {
        let (Some(pattern), Some(Some(regex))) = (PATTERNS.get(index), REGEXES.get(index)) else {
            continue;
        };
        for captures in regex.captures_iter(text) {
            let whole = captures.get(0).map_or("", |m| m.as_str());
            let random = captures.get(1).map_or(whole, |m| m.as_str());
            if distinct_chars(random) >= pattern.min_distinct && !(pattern.is_example)(whole) {
                return Some(pattern.description);
            }
        }
    }
    None
}

fn distinct_chars(text: &str) -> usize {
    let mut seen = [false; 128];
    let mut count = 0;
    for b in text.bytes().filter(u8::is_ascii) {
        let slot = &mut seen[usize::from(b)];
        if !*slot {
            *slot = true;
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    // Realistic-looking but fabricated values, assembled at run time so this file does not
    // itself trip secret scanners.
    fn fake(prefix: &str, body: &str) -> String {
        format!("{prefix}{body}")
    }

    const RANDOM36: &str = "a8Kd93JfQ2mZx7Lp0WcR5tYb1NvE6hUg4sDq";

    #[test]
    fn every_pattern_compiles() {
        assert!(SET.is_some());
        assert!(REGEXES.iter().all(Option::is_some));
    }

    #[test]
    fn github_tokens_are_detected() {
        for (prefix, expected) in [
            ("ghp_", "a GitHub personal access token"),
            ("gho_", "a GitHub OAuth access token"),
            ("ghu_", "a GitHub user-to-server token"),
            ("ghs_", "a GitHub server-to-server token"),
            ("ghr_", "a GitHub refresh token"),
        ] {
            assert_eq!(
                detect_secret(&fake(prefix, RANDOM36)),
                Some(expected),
                "{prefix}"
            );
        }
        let fine_grained = fake(
            "github_pat_",
            "11ABCDEFG0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ01234",
        );
        assert_eq!(
            detect_secret(&fine_grained),
            Some("a GitHub fine-grained personal access token")
        );
    }

    #[test]
    fn a_token_inside_a_longer_string_is_detected() {
        let text = format!(
            "https://x-access-token:{}@github.com/o/r",
            fake("ghp_", RANDOM36)
        );

        assert_eq!(detect_secret(&text), Some("a GitHub personal access token"));
    }

    #[test]
    fn other_providers_are_detected() {
        let cases = [
            (
                fake("glpat-", "Zx8kQ2mP9wLr4TnB7vYc"),
                "a GitLab personal access token",
            ),
            (
                fake(
                    "xoxb-",
                    "1234567890123-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                ),
                "a Slack token",
            ),
            (fake("AKIA", "Z7Q4RTW2XK9PLM3B"), "an AWS access key id"),
            (fake("ASIA", "Q9W8E7R6T5Y4U3I2"), "an AWS access key id"),
            (
                fake("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc"),
                "a Stripe live secret key",
            ),
            (
                fake("AIza", "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
                "a Google API key",
            ),
            (
                fake(
                    "eyJhbGciOiJIUzI1NiJ9.",
                    "eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                ),
                "a JSON Web Token",
            ),
            (
                fake(
                    "https://hooks.slack.com/services/",
                    "T024BE7LD/B0LD4RQ8N/Xy7Kq2Wp9Lm4Zt8Rb3Vn",
                ),
                "a Slack incoming-webhook URL",
            ),
        ];

        for (text, expected) in cases {
            assert_eq!(detect_secret(&text), Some(expected), "{expected}");
        }
    }

    #[test]
    fn pem_private_keys_are_detected() {
        let pem = format!(
            "-----BEGIN {}PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\n",
            "RSA "
        );

        assert_eq!(detect_secret(&pem), Some("a PEM private key"));
    }

    #[test]
    fn placeholders_and_references_are_not_secrets() {
        for text in [
            "ghp_xxxxxxxxxxxx",
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "${RITMO_GITOPS_TOKEN}",
            "AKIAXXXXXXXXXXXXXXXX",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-your-token-goes-here",
            "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
            "-----BEGIN PRIVATE KEY-----",
            "prod/ritmo/github-token",
            "https://github.com/myorg/backend-service",
            "^(main|develop|release/.*)$",
            "backend-service/${GIT_COMMIT}.jar",
            "AES256:q83vEjRmQ0Fg1yZ2c7Pp3w9tWl8kqzP8hYz3xNqK1fGm",
        ] {
            assert_eq!(detect_secret(text), None, "{text}");
        }
    }

    #[test]
    fn a_longer_alphanumeric_run_is_not_a_classic_github_token() {
        let text = fake("ghp_", &format!("{RANDOM36}abcd"));

        assert_eq!(detect_secret(&text), None);
    }
}
