//! Rules across documents: identities, references, secrets, ciphertext format.
//!
//! `manifest::load` already reports what is wrong inside each document (syntax, schema);
//! `validate` reports what is wrong between them, all at once. Decrypting ciphertexts is the
//! `crypto` module's job; here they are only checked to be well-formed.

mod secrets;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
// Keyed by ids and names of 100,000 resources at most: SipHash was most of these checks' time.
use foldhash::{HashMap, HashSet};

pub use secrets::{MIN_SECRET_LEN, detect_secret};

use crate::diagnostic::{self, Code, Diagnostic};
use crate::manifest::{Document, Manifest, StringScalar, did_you_mean};
use crate::model::{Kind, ResourceId, SourceLocation};

/// What validation needs to know beyond the manifest itself.
pub struct ValidationContext<'a> {
    /// Plugins the bootstrap config declares as built in: references to them need no file.
    pub builtin_plugins: &'a BTreeSet<String>,
    /// Whether a resource exists outside this manifest (live state, for incremental plans).
    /// A full scan passes `&|_| false`.
    pub known: &'a dyn Fn(&ResourceId) -> bool,
}

/// Every cross-document problem of `manifest`, sorted by position. The manifest's own
/// diagnostics are not repeated (see `diagnostics` for both).
pub fn validate(manifest: &Manifest, context: &ValidationContext) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicate_identities(manifest, &mut out);
    references(manifest, context, &mut out);
    out.extend(crate::parallel::flat_map_runs(
        &manifest.documents,
        |documents| documents.iter().flat_map(secrets_and_ciphertexts).collect(),
    ));
    diagnostic::sort(&mut out);
    out
}

/// E401 and E402 of one document: strings that look like live secrets, and
/// `encrypted_value`s that are not ciphertexts.
fn secrets_and_ciphertexts(document: &Document) -> Vec<Diagnostic> {
    let mut found = scan_strings(&document.strings);
    for field in &document.ciphertexts {
        if !is_well_formed_ciphertext(&field.value) {
            found.push(Diagnostic::new(
                Code::E402,
                &field.at,
                format!(
                    "`encrypted_value` of credential `{name}` is not a ciphertext: produce it with `ritmo encrypt-credential --name {name}`",
                    name = field.credential
                ),
            ));
        }
    }
    found
}

/// The manifest's own diagnostics and `validate`'s, sorted: everything wrong with a revision
/// before planning.
pub fn diagnostics(manifest: &Manifest, context: &ValidationContext) -> Vec<Diagnostic> {
    let mut all = manifest.diagnostics.clone();
    all.extend(validate(manifest, context));
    diagnostic::sort(&mut all);
    all
}

/// E401 for every string that looks like a live secret. The message names the field and the
/// kind of secret, never any part of the value.
pub fn scan_strings(strings: &[StringScalar]) -> Vec<Diagnostic> {
    strings
        .iter()
        .filter(|s| !(s.field.ends_with("encrypted_value") && looks_like_ciphertext(&s.value)))
        .filter_map(|s| {
            detect_secret(&s.value).map(|what| {
                Diagnostic::new(
                    Code::E401,
                    &s.at,
                    format!(
                        "`{}` holds what looks like {what}: store it as an encrypted credential (ritmo encrypt-credential) or a secret_ref",
                        s.field
                    ),
                )
            })
        })
        .collect()
}

/// Smallest AES-256-GCM blob: a 12-byte nonce, at least one byte of ciphertext, a 16-byte tag.
const MIN_AES_BLOB: usize = 12 + 1 + 16;

/// Whether `value` has the shape of a ciphertext: `AES256:<base64 of nonce‖ciphertext‖tag>`
/// or `KMS:<base64 blob>` (standard base64 with padding).
pub fn is_well_formed_ciphertext(value: &str) -> bool {
    let engine = &base64::engine::general_purpose::STANDARD;
    if let Some(blob) = value.strip_prefix("AES256:") {
        engine
            .decode(blob)
            .is_ok_and(|bytes| bytes.len() >= MIN_AES_BLOB)
    } else if let Some(blob) = value.strip_prefix("KMS:") {
        engine.decode(blob).is_ok_and(|bytes| !bytes.is_empty())
    } else {
        false
    }
}

fn looks_like_ciphertext(value: &str) -> bool {
    value.starts_with("AES256:") || value.starts_with("KMS:")
}

fn duplicate_identities(manifest: &Manifest, out: &mut Vec<Diagnostic>) {
    let mut first: HashMap<&ResourceId, &SourceLocation> = HashMap::default();
    for document in &manifest.documents {
        let resource = &document.resource;
        if let Some(earlier) = first.get(&resource.id) {
            out.push(Diagnostic::new(
                Code::E211,
                &resource.source,
                format!(
                    "{} `{}` is already defined at {}:{}: rename one of them or remove the copy",
                    resource.id.kind.slug(),
                    resource.id.name,
                    earlier.path,
                    earlier.line
                ),
            ));
        } else {
            first.insert(&resource.id, &resource.source);
        }
    }
}

fn references(manifest: &Manifest, context: &ValidationContext, out: &mut Vec<Diagnostic>) {
    let defined: HashSet<&ResourceId> = manifest.documents.iter().map(|d| &d.resource.id).collect();
    let mut names: BTreeMap<Kind, Vec<&str>> = BTreeMap::new();
    for id in &defined {
        names.entry(id.kind).or_default().push(id.name.as_str());
    }
    // A reference to a resource whose own file failed to load is not reported again: the
    // file's errors already explain it, and fixing them fixes the reference.
    let broken_files: HashSet<&str> = manifest
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.path.as_str())
        .collect();

    // Suggestions compare a dangling name with every name of its kind; cap the total work so
    // a repository with thousands of dangling references still validates quickly.
    let mut suggestion_budget: usize = 1_000_000;
    for document in &manifest.documents {
        let owner = &document.resource.id;
        for reference in &document.references {
            let target = &reference.target;
            let builtin =
                target.kind == Kind::Plugin && context.builtin_plugins.contains(&target.name);
            if builtin || defined.contains(target) || (context.known)(target) {
                continue;
            }
            let dir = target.kind.directory();
            if ["yaml", "yml"]
                .iter()
                .any(|ext| broken_files.contains(format!("{dir}/{}.{ext}", target.name).as_str()))
            {
                continue;
            }
            let mut candidates: Vec<&str> = names.get(&target.kind).cloned().unwrap_or_default();
            if target.kind == Kind::Plugin {
                candidates.extend(context.builtin_plugins.iter().map(String::as_str));
            }
            let hint = if candidates.len() <= suggestion_budget {
                suggestion_budget -= candidates.len();
                did_you_mean(&target.name, candidates)
            } else {
                String::new()
            };
            let where_ = if target.kind == Kind::Plugin {
                format!("in {dir}/ nor built in")
            } else {
                format!("in {dir}/")
            };
            out.push(Diagnostic::new(
                Code::E300,
                &reference.at,
                format!(
                    "{} `{}` refers to {} `{}`, which is not defined {where_}: add {dir}/{}.yaml or fix the name{}",
                    owner.kind.slug(),
                    owner.name,
                    target.kind.slug(),
                    target.name,
                    target.name,
                    hint
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::manifest::{FileContent, Limits, SourceFile, load, resolve_positions};

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.to_string(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        }
    }

    fn doc(kind: &str, name: &str, spec: &str) -> String {
        format!("apiVersion: ritmo.dev/v1\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}")
    }

    fn check(files: &[SourceFile]) -> Vec<Diagnostic> {
        check_with(files, &BTreeSet::new(), &|_| false)
    }

    fn check_with(
        files: &[SourceFile],
        builtin_plugins: &BTreeSet<String>,
        known: &dyn Fn(&ResourceId) -> bool,
    ) -> Vec<Diagnostic> {
        let manifest = load(files, &Limits::default());
        let context = ValidationContext {
            builtin_plugins,
            known,
        };
        let mut found = diagnostics(&manifest, &context);
        resolve_positions(&mut found, files, &Limits::default());
        found
    }

    fn found(diagnostics: &[Diagnostic]) -> Vec<(String, u32, u32, Code)> {
        diagnostics
            .iter()
            .map(|d| (d.path.clone(), d.line, d.column, d.code))
            .collect()
    }

    const TOKEN_BODY: &str = "a8Kd93JfQ2mZx7Lp0WcR5tYb1NvE6hUg4sDq";

    /// A well-formed (not decryptable) AES256 value: 12 + 20 + 16 bytes.
    fn ciphertext() -> String {
        format!(
            "AES256:{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 48])
        )
    }

    pub(super) fn read_tree(root: &Path) -> Vec<SourceFile> {
        let mut files = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(root).unwrap();
                    let relative = relative
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    files.push(SourceFile {
                        path: relative,
                        content: FileContent::Bytes(std::fs::read(&path).unwrap()),
                    });
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    #[test]
    fn the_example_repository_has_no_problem() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ritmo-config");
        let files = read_tree(&root);

        let manifest = load(&files, &Limits::default());
        let mut problems = diagnostics(
            &manifest,
            &ValidationContext {
                builtin_plugins: &BTreeSet::new(),
                known: &|_| false,
            },
        );
        resolve_positions(&mut problems, &files, &Limits::default());

        assert_eq!(problems, [], "{problems:#?}");
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        for document in &manifest.documents {
            *counts.entry(document.resource.id.kind).or_default() += 1;
        }
        assert_eq!(
            counts,
            BTreeMap::from([
                (Kind::Credential, 8),
                (Kind::Plugin, 11),
                (Kind::WorkerPool, 2),
                (Kind::Job, 3),
                (Kind::Webhook, 2),
                (Kind::Environment, 2),
            ])
        );
        let ciphertexts: usize = manifest.documents.iter().map(|d| d.ciphertexts.len()).sum();
        let secret_refs: usize = manifest.documents.iter().map(|d| d.secret_refs.len()).sum();
        assert_eq!((ciphertexts, secret_refs), (4, 4));
    }

    #[test]
    fn the_same_identity_twice_names_the_first_file() {
        let files = [
            file("jobs/a.yaml", &doc("Job", "app", "  enabled: true\n")),
            file(
                "jobs/b.yaml",
                &format!("# copy\n{}", doc("Job", "app", "  enabled: false\n")),
            ),
        ];

        let problems = check(&files);

        assert_eq!(found(&problems), [("jobs/b.yaml".into(), 2, 1, Code::E211)]);
        assert_eq!(
            problems[0].message,
            "job `app` is already defined at jobs/a.yaml:1: rename one of them or remove the copy"
        );
    }

    #[test]
    fn a_dangling_reference_says_what_to_add_and_suggests_a_near_name() {
        let files = [
            file(
                "jobs/backend-service.yaml",
                &doc(
                    "Job",
                    "backend-service",
                    "  scm:\n    type: github\n    url: u\n    credentials: github-pat\n",
                ),
            ),
            file(
                "credentials/github-pats.yaml",
                &doc(
                    "Credential",
                    "github-pats",
                    &format!("  type: token\n  encrypted_value: \"{}\"\n", ciphertext()),
                ),
            ),
        ];

        let problems = check(&files);

        assert_eq!(
            found(&problems),
            [("jobs/backend-service.yaml".into(), 9, 18, Code::E300)]
        );
        assert_eq!(
            problems[0].message,
            "job `backend-service` refers to credential `github-pat`, which is not defined in credentials/: add credentials/github-pat.yaml or fix the name (did you mean `github-pats`?)"
        );
    }

    #[test]
    fn builtin_and_known_resources_satisfy_references() {
        let job = doc(
            "Job",
            "app",
            "  scm: {type: git, url: u, credentials: live-cred}\n  pipeline:\n    stages:\n      - name: build\n        steps: [{plugin: shell}, {plugin: docker}]\n",
        );
        let builtins = BTreeSet::from(["shell".to_string()]);
        let live = |id: &ResourceId| *id == ResourceId::new(Kind::Credential, "live-cred");

        let full = check_with(&[file("jobs/app.yaml", &job)], &builtins, &|_| false);
        let incremental = check_with(&[file("jobs/app.yaml", &job)], &builtins, &live);

        assert_eq!(
            found(&full),
            [
                ("jobs/app.yaml".into(), 6, 41, Code::E300),
                ("jobs/app.yaml".into(), 10, 43, Code::E300)
            ]
        );
        assert!(
            full[1]
                .message
                .contains("not defined in plugins/ nor built in")
        );
        assert_eq!(
            found(&incremental),
            [("jobs/app.yaml".into(), 10, 43, Code::E300)]
        );
    }

    #[test]
    fn a_reference_to_a_resource_whose_file_is_broken_is_not_reported_twice() {
        let files = [
            file(
                "webhooks/w.yaml",
                &doc("Webhook", "w", "  job: app\n  source: github\n"),
            ),
            file("jobs/app.yaml", &doc("Job", "app", "  timout: 3\n")),
        ];

        let problems = check(&files);

        assert_eq!(
            found(&problems),
            [("jobs/app.yaml".into(), 6, 3, Code::E204)]
        );
    }

    #[test]
    fn a_token_anywhere_is_reported_without_repeating_it() {
        let token = format!("ghp_{TOKEN_BODY}");
        let files = [file(
            "jobs/app.yaml",
            &doc(
                "Job",
                "app",
                &format!(
                    "  environment:\n    TOKEN: {token}\n    SAFE: ${{RITMO_GITOPS_TOKEN}}\n    PLACEHOLDER: ghp_xxxxxxxxxxxx\n"
                ),
            ),
        )];

        let problems = check(&files);

        assert_eq!(
            found(&problems),
            [("jobs/app.yaml".into(), 7, 12, Code::E401)]
        );
        assert_eq!(
            problems[0].message,
            "`spec.environment.TOKEN` holds what looks like a GitHub personal access token: store it as an encrypted credential (ritmo encrypt-credential) or a secret_ref"
        );
        for fragment in [&token[..], TOKEN_BODY, &TOKEN_BODY[..8], &TOKEN_BODY[28..]] {
            assert!(!problems[0].message.contains(fragment));
        }
    }

    #[test]
    fn secret_messages_never_contain_the_secret() {
        let secrets = [
            format!("glpat-{}", &TOKEN_BODY[..20]),
            format!("AKIA{}", "Z7Q4RTW2XK9PLM3B"),
            format!("xoxb-1234567890-{}", &TOKEN_BODY[..24]),
            format!("sk_live_{}", &TOKEN_BODY[..24]),
        ];
        let strings: Vec<StringScalar> = secrets
            .iter()
            .map(|value| StringScalar {
                value: value.clone(),
                field: "spec.description".into(),
                at: SourceLocation::new("jobs/a.yaml", 1, 1),
            })
            .collect();

        let problems = scan_strings(&strings);

        assert_eq!(problems.len(), secrets.len());
        for (problem, secret) in problems.iter().zip(&secrets) {
            assert!(!problem.message.contains(secret.as_str()));
            assert!(!problem.message.contains(&secret[secret.len() - 12..]));
        }
    }

    #[test]
    fn an_encrypted_value_must_be_a_ciphertext() {
        let credential = |value: &str| {
            file(
                "credentials/cred.yaml",
                &doc(
                    "Credential",
                    "cred",
                    &format!("  type: token\n  encrypted_value: \"{value}\"\n"),
                ),
            )
        };

        let good = check(&[credential(&ciphertext())]);
        let kms = check(&[credential("KMS:AQICAHh4b2s=")]);
        let plain = check(&[credential("my-password-123")]);
        let short = check(&[credential("AES256:YWJj")]);
        let not_base64 = check(&[credential("AES256:not base64!")]);

        assert_eq!(good, []);
        assert_eq!(kms, []);
        assert_eq!(
            found(&plain),
            [("credentials/cred.yaml".into(), 7, 20, Code::E402)]
        );
        assert_eq!(
            plain[0].message,
            "`encrypted_value` of credential `cred` is not a ciphertext: produce it with `ritmo encrypt-credential --name cred`"
        );
        assert!(!plain[0].message.contains("my-password"));
        assert_eq!(short.len(), 1);
        assert_eq!(not_base64.len(), 1);
    }

    #[test]
    fn ciphertexts_are_not_mistaken_for_tokens() {
        let value = format!(
            "AES256:{}",
            base64::engine::general_purpose::STANDARD.encode(format!("ghp_{TOKEN_BODY}"))
        );
        let strings = [StringScalar {
            value: value.clone(),
            field: "spec.encrypted_value".into(),
            at: SourceLocation::new("credentials/c.yaml", 1, 1),
        }];

        assert_eq!(scan_strings(&strings), []);
        assert!(is_well_formed_ciphertext(&value));
    }

    #[test]
    fn diagnostics_come_back_sorted_by_file_and_position() {
        let files = [
            file(
                "webhooks/w.yaml",
                &doc("Webhook", "w", "  job: missing\n  source: github\n"),
            ),
            file(
                "jobs/a.yaml",
                &doc(
                    "Job",
                    "a",
                    "  scm: {type: git, url: u, credentials: nope}\n",
                ),
            ),
        ];

        let problems = check(&files);

        let order: Vec<&str> = problems.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(order, ["jobs/a.yaml", "webhooks/w.yaml"]);
    }
}

#[cfg(test)]
mod fixture_tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;
    use crate::manifest::{Limits, load, resolve_positions};

    #[test]
    fn the_broken_repository_reports_exactly_what_expected_txt_lists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/broken-repo");
        let expected = std::fs::read_to_string(root.join("EXPECTED.txt")).unwrap_or_default();
        let files = super::tests::read_tree(&root);

        let manifest = load(&files, &Limits::default());
        let mut problems = diagnostics(
            &manifest,
            &ValidationContext {
                builtin_plugins: &BTreeSet::new(),
                known: &|_| false,
            },
        );
        resolve_positions(&mut problems, &files, &Limits::default());

        let rendered: Vec<String> = problems
            .iter()
            .map(|d| format!("{}:{}: {}", d.path, d.line, d.code))
            .collect();
        let listed: Vec<&str> = expected
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if std::env::var_os("RITMO_PRINT_FIXTURE").is_some() {
            for d in &problems {
                eprintln!("{d}");
            }
        }
        assert_eq!(rendered, listed);
    }
}
