//! The bootstrap config parser: the text of `gitops-bootstrap.yaml` → `Settings`, with the
//! environment fixed by the input's own `#env NAME=value` lines (taken out of the text before
//! parsing), so nothing reads the process's environment. Each target's repository and path then go through the
//! parsers the sync hands them to.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ritmo::config::{self, Settings};
use ritmo::git::{ConfigPath, RepoLocation, is_valid_branch_name};
use ritmo_fuzz::env_lines;

/// Variables whose values are secrets: no output may show them.
const SECRET_VARIABLES: &[&str] = &[
    "RITMO_GITOPS_TOKEN",
    "RITMO_GITOPS_WEBHOOK_SECRET",
    "RITMO_MASTER_ENCRYPTION_KEY",
    "RITMO_GITOPS_SSH_KEY",
    "RITMO_GITOPS_APP_PRIVATE_KEY",
];

/// A value a leak check can trust: long, mixed, and found neither in the file's text nor in
/// another variable, so finding it in an output means the environment put it there.
fn distinctive(value: &str, text: &str, variables: &BTreeMap<String, String>) -> bool {
    value.len() >= 16
        && value.bytes().any(|b| b.is_ascii_digit())
        && value.bytes().any(|b| b.is_ascii_lowercase())
        && value.bytes().any(|b| b.is_ascii_uppercase())
        && !text.contains(value)
        && variables
            .values()
            .filter(|other| other.contains(value))
            .count()
            == 1
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let variables = env_lines(input);
    // The `#env` lines are comments to the parser; leaving them out keeps the environment's
    // values out of the file's text, which errors may quote.
    let text: String = input
        .split_inclusive('\n')
        .filter(|line| !line.starts_with("#env "))
        .collect();
    let text = text.as_str();
    let secrets: Vec<String> = SECRET_VARIABLES
        .iter()
        .filter_map(|name| variables.get(*name))
        .filter(|value| distinctive(value, text, &variables))
        .cloned()
        .collect();
    let env = config::env_from_map(variables);

    let outputs = match Settings::from_text("fuzz.yaml", text, &env) {
        Ok(settings) => {
            for target in &settings.targets {
                assert!(settings.target(&target.name).is_some());
                let _ = settings.branch_approval(target);
                let _ = is_valid_branch_name(&target.branch);
                if let Ok(location) = RepoLocation::parse(&target.repo_url) {
                    let _ = location.to_string();
                }
                let _ = ConfigPath::parse(&target.path);
            }
            let _ = settings.history_limit();
            let _ = settings.notifications.is_enabled();
            vec![format!("{settings:?}")]
        }
        Err(error) => vec![error.to_string(), format!("{error:?}")],
    };
    let _ = config::git_auth_from_variables(&env);
    for output in &outputs {
        for secret in &secrets {
            assert!(
                !output.contains(secret.as_str()),
                "an output shows a secret variable's value"
            );
        }
    }
});
