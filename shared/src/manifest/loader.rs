//! `load`: the files of a revision → a `Manifest` of checked documents and diagnostics.

use std::collections::BTreeMap;

use super::event_tree;
use super::schema::{self, Checked};
use super::yaml::{self, ParseError, Spans};
use super::{
    Document, FileContent, Limits, Manifest, SourceFile, kind_directory_of, resource_kind_for_path,
};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::model::{Kind, SourceLocation};

/// Parses and checks every resource file (see `resource_kind_for_path`; other paths are
/// ignored). Each document of a file becomes its own resource; a document with any error is
/// left out of `documents` and its problems are in `diagnostics`, sorted by position.
///
/// Only what is certain to be read gets a line and column: `diagnostics` and each resource's
/// `source`. The positions inside good documents (references, strings, ciphertexts, secret
/// refs) are left unresolved (see [`SourceLocation::unresolved`]): a diagnostic made from
/// one later goes through [`resolve_positions`].
pub fn load(files: &[SourceFile], limits: &Limits) -> Manifest {
    yaml::with_parser_stack(limits, || load_here(files, limits, Spans::Roots))
}

/// [`load`] with every position resolved, for rewriting a file in place.
pub fn load_with_positions(files: &[SourceFile], limits: &Limits) -> Manifest {
    yaml::with_parser_stack(limits, || load_here(files, limits, Spans::Every))
}

/// Gives each diagnostic made from an unresolved position of [`load`] its line and column,
/// parsing again (with every span) only the files such diagnostics are in.
pub fn resolve_positions(diagnostics: &mut [Diagnostic], files: &[SourceFile], limits: &Limits) {
    if diagnostics.iter().all(Diagnostic::is_resolved) {
        return;
    }
    yaml::with_parser_stack(limits, || {
        let mut tables: BTreeMap<String, Vec<(u32, u32)>> = BTreeMap::new();
        for diagnostic in diagnostics.iter_mut().filter(|d| !d.is_resolved()) {
            let table = tables
                .entry(diagnostic.path.clone())
                .or_insert_with(|| position_table(files, &diagnostic.path, limits));
            // Not found again (the file is not among `files`): the top of the file.
            (diagnostic.line, diagnostic.column) = usize::try_from(diagnostic.column)
                .ok()
                .and_then(|ordinal| table.get(ordinal).copied())
                .unwrap_or((1, 1));
            (diagnostic.end_line, diagnostic.end_column) = (diagnostic.line, diagnostic.column);
        }
    });
}

fn position_table(files: &[SourceFile], path: &str, limits: &Limits) -> Vec<(u32, u32)> {
    files
        .iter()
        .find(|file| file.path == path)
        .and_then(|file| match &file.content {
            FileContent::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        })
        .and_then(|text| yaml::positions(text, limits).ok())
        .unwrap_or_default()
}

fn load_here(files: &[SourceFile], limits: &Limits, spans: Spans) -> Manifest {
    let mut manifest = Manifest::default();
    if let Some((limit, config_path)) = files.iter().find_map(|file| match &file.content {
        FileContent::TooManyFiles { limit, config_path } => Some((*limit, config_path)),
        _ => None,
    }) {
        manifest.diagnostics.push(Diagnostic::global(
            Code::E106,
            format!(
                "the config path `{config_path}` holds more than {limit} resource files, the most \
                 one target reads, so none was read: point the target's `path` at a smaller \
                 directory, or split the configuration across several targets"
            ),
        ));
        return manifest;
    }
    let resource_files: Vec<(&SourceFile, Kind)> = files
        .iter()
        .filter_map(|file| checked_kind(file).map(|kind| (file, kind)))
        .collect();
    if resource_files.len() > limits.max_files {
        manifest.diagnostics.push(Diagnostic::global(
            Code::E106,
            format!(
                "the config path holds {} resource files, more than the {} one target reads, so \
                 none was read: point the target's `path` at a smaller directory, or split the \
                 configuration across several targets",
                resource_files.len(),
                limits.max_files
            ),
        ));
        return manifest;
    }
    let mut memo = schema::Memo::default();
    for (file, kind) in resource_files {
        load_file(file, kind, limits, spans, &mut memo, &mut manifest);
    }
    diagnostic::sort(&mut manifest.diagnostics);
    manifest
}

/// The kind a listed file is checked as. Files with content count when they are resource files
/// (`.yaml`/`.yml`); an entry that cannot be read counts whatever its name as soon as it sits
/// in, or in place of, a kind directory: a symlinked `webhooks` directory (or `jobs/team`
/// subdirectory) hides resources, and dropping it silently would prune them.
fn checked_kind(file: &SourceFile) -> Option<Kind> {
    match file.content {
        FileContent::Bytes(_) | FileContent::TooLarge { .. } => resource_kind_for_path(&file.path),
        FileContent::Symlink
        | FileContent::Submodule
        | FileContent::NonRegular
        | FileContent::NotADirectory => kind_directory_of(&file.path),
        FileContent::TooManyFiles { .. } => None,
    }
}

/// E105 for an entry in place of a kind directory: nothing of that kind can be read.
fn not_a_kind_directory(path: &str, what: &str, fix: &str) -> Diagnostic {
    Diagnostic::in_file(
        Code::E105,
        path,
        format!(
            "`{path}` is {what}, not a directory: none of the resources this kind directory \
             should hold can be read, and a sync would delete every one the target manages: {fix}"
        ),
    )
}

fn load_file(
    file: &SourceFile,
    kind: Kind,
    limits: &Limits,
    spans: Spans,
    memo: &mut schema::Memo,
    manifest: &mut Manifest,
) {
    let path = file.path.as_str();
    let is_kind_directory = !path.contains('/');
    let bytes = match &file.content {
        FileContent::Bytes(bytes) => bytes,
        FileContent::Symlink if is_kind_directory => {
            return manifest.diagnostics.push(not_a_kind_directory(
                path,
                "a symlink",
                "symlinks are not followed: commit the directory and its files instead of the link",
            ));
        }
        FileContent::Submodule if is_kind_directory => {
            return manifest.diagnostics.push(not_a_kind_directory(
                path,
                "a git submodule",
                "submodules are not followed: commit the files themselves in this repository",
            ));
        }
        FileContent::NotADirectory if is_kind_directory => {
            return manifest.diagnostics.push(not_a_kind_directory(
                path,
                "a file",
                "make it a directory of resource files, or remove it",
            ));
        }
        FileContent::NonRegular if is_kind_directory => {
            return manifest.diagnostics.push(not_a_kind_directory(
                path,
                "a FIFO, socket or device",
                "make it a directory of resource files, or remove it",
            ));
        }
        FileContent::Symlink => {
            return manifest.diagnostics.push(Diagnostic::in_file(
                Code::E105,
                path,
                "this is a symlink: symlinks are not followed: commit the file itself (or the \
                 directory it points to)",
            ));
        }
        FileContent::Submodule => {
            return manifest.diagnostics.push(Diagnostic::in_file(
                Code::E105,
                path,
                "this is a git submodule: submodules are not followed: commit the files themselves",
            ));
        }
        FileContent::NonRegular | FileContent::NotADirectory => {
            return manifest.diagnostics.push(Diagnostic::in_file(
                Code::E105,
                path,
                "this is not a regular file (a FIFO, socket or device): commit a regular file",
            ));
        }
        FileContent::TooLarge { size } => {
            return manifest
                .diagnostics
                .push(too_large(path, *size, limits.max_file_bytes));
        }
        // Handled for the whole load in `load_here`.
        FileContent::TooManyFiles { .. } => return,
    };
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limits.max_file_bytes {
        return manifest
            .diagnostics
            .push(too_large(path, size, limits.max_file_bytes));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            let good = &bytes[..error.valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let column = good.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            let at = SourceLocation::new(
                path,
                u32::try_from(line).unwrap_or(u32::MAX),
                u32::try_from(column).unwrap_or(u32::MAX),
            );
            return manifest.diagnostics.push(Diagnostic::new(
                Code::E103,
                &at,
                "the file is not valid UTF-8: save it as UTF-8",
            ));
        }
    };
    if text.trim().is_empty() {
        return manifest.diagnostics.push(Diagnostic::in_file(
            Code::W101,
            path,
            "empty file: it declares no resource",
        ));
    }
    let mut outcome = parse_and_check(path, kind, text, limits, spans, memo);
    if spans == Spans::Roots && matches!(&outcome, Ok(Some((_, problems))) if !problems.is_empty())
    {
        // These diagnostics will be read: parse again with every span so that they, and the
        // positions in their messages, point at the right place.
        outcome = parse_and_check(path, kind, text, limits, Spans::Every, memo);
    }
    match outcome {
        Ok(Some((documents, problems))) => {
            manifest.documents.extend(documents);
            manifest.diagnostics.extend(problems);
        }
        Ok(None) => manifest.diagnostics.push(Diagnostic::in_file(
            Code::W101,
            path,
            "the file holds no YAML document: it declares no resource",
        )),
        Err(error) => {
            manifest
                .diagnostics
                .push(parse_diagnostic(path, text, &error, limits));
            // Without a tree there are no fields, but a pasted token is still worth knowing
            // about now: it may need rotating whatever happens to the file.
            manifest.diagnostics.extend(scan_lines(path, text));
        }
    }
}

/// The good documents of a file, and every problem of the others.
type FileChecked = (Vec<Document>, Vec<Diagnostic>);

/// Parses and checks each document of a file; `None` when the file holds no document.
fn parse_and_check(
    path: &str,
    kind: Kind,
    text: &str,
    limits: &Limits,
    spans: Spans,
    memo: &mut schema::Memo,
) -> Result<Option<FileChecked>, ParseError> {
    let roots = event_tree::parse_documents(text, limits, spans)?;
    if roots.is_empty() {
        return Ok(None);
    }
    let mut documents = Vec::with_capacity(roots.len());
    let mut problems = Vec::new();
    for root in &roots {
        let Checked {
            document,
            diagnostics,
            strings,
        } = schema::check_document(path, kind, root, memo);
        problems.extend(diagnostics);
        match document {
            Some(document) => documents.push(document),
            // A broken document is not validated further, but a live token in it must not
            // wait for the other errors to be fixed before it is reported.
            // (`spec.value` of a credential is already refused as plaintext, E400.)
            None => {
                let strings: Vec<_> = strings
                    .into_iter()
                    .filter(|s| !(kind == Kind::Credential && s.field == "spec.value"))
                    .collect();
                problems.extend(crate::validate::scan_strings(&strings));
            }
        }
    }
    Ok(Some((documents, problems)))
}

/// E401 for lines of an unparsable file that look like they hold a secret.
fn scan_lines(path: &str, text: &str) -> Vec<Diagnostic> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            crate::validate::detect_secret(line).map(|what| {
                let at = SourceLocation::new(path, u32::try_from(i + 1).unwrap_or(u32::MAX), 1);
                Diagnostic::new(
                    Code::E401,
                    &at,
                    format!(
                        "this line holds what looks like {what}: store it as an encrypted credential (ritmo encrypt-credential) or a secret_ref"
                    ),
                )
            })
        })
        .collect()
}

fn too_large(path: &str, size: u64, limit: u64) -> Diagnostic {
    Diagnostic::in_file(
        Code::E101,
        path,
        format!("the file is {size} bytes, over the limit of {limit} bytes: split it"),
    )
}

fn parse_diagnostic(path: &str, text: &str, error: &ParseError, limits: &Limits) -> Diagnostic {
    let at = SourceLocation::new(path, error.line, error.column);
    if !error.over_budget
        && let Some((line, column, bracket)) =
            super::yaml::unclosed_flow_opener(text, error.line, error.column)
    {
        // The parser only notices a missing `]` where the next line breaks the flow; the
        // person needs the place it opened.
        return Diagnostic::new(
            Code::E100,
            &SourceLocation::new(path, line, column),
            format!(
                "invalid YAML: this `{bracket}` is never closed (the parser stopped at line {}, column {}: {})",
                error.line, error.column, error.message
            ),
        );
    }
    if error.over_budget {
        Diagnostic::new(
            Code::E102,
            &at,
            format!(
                "the document is over a parser limit ({}; limits: depth {}, {} nodes, {} aliases)",
                error.message, limits.max_depth, limits.max_nodes, limits.max_alias_expansions
            ),
        )
    } else {
        Diagnostic::new(Code::E100, &at, format!("invalid YAML: {}", error.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Document;
    use crate::model::ResourceId;

    fn file(path: &str, text: &str) -> SourceFile {
        SourceFile {
            path: path.to_string(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        }
    }

    fn load_one(path: &str, text: &str) -> Manifest {
        load(&[file(path, text)], &Limits::default())
    }

    fn load_positioned_one(path: &str, text: &str) -> Manifest {
        load_with_positions(&[file(path, text)], &Limits::default())
    }

    /// Every position a document holds, as diagnostics.
    fn positions_of(manifest: &Manifest) -> Vec<Diagnostic> {
        let mut places: Vec<&SourceLocation> = Vec::new();
        for document in &manifest.documents {
            places.push(&document.resource.source);
            places.extend(document.references.iter().map(|r| &r.at));
            places.extend(document.ciphertexts.iter().map(|c| &c.at));
            places.extend(document.secret_refs.iter().map(|s| &s.at));
            places.extend(document.strings.iter().map(|s| &s.at));
        }
        places
            .into_iter()
            .map(|at| Diagnostic::new(Code::E300, at, ""))
            .collect()
    }

    #[test]
    fn positions_left_unresolved_resolve_to_those_of_a_positioned_load() {
        let long = "x".repeat(24);
        let files =
            [
                file("jobs/app.yaml", &job(PIPELINE)),
                file(
                    "jobs/two.yaml",
                    &format!(
                    "# leading comment\n{}\n---\n{}",
                    // The anchor leaves this file to serde-saphyr, whose load leaves ordinals.
                    job(&format!("  environment: &env {{TOKEN: {long}}}\n")),
                    job("  scm: {type: git, url: \"https://example.com/a.git\", credentials: gh}\n")
                        .replace("name: app", "name: other")
                ),
                ),
                file(
                    "credentials/cred.yaml",
                    &credential("  type: token\n  encrypted_value: \"AES256:abc\"\n"),
                ),
                file(
                    "credentials/vault.yaml",
                    &credential(
                        "  type: token\n  secret_ref: {provider: vault, path: secret/data/x}\n",
                    )
                    .replace("name: cred", "name: vault"),
                ),
            ];
        let loaded = load(&files, &Limits::default());
        let positioned = load_with_positions(&files, &Limits::default());
        let mut resolved = positions_of(&loaded);
        assert!(
            resolved.iter().any(|d| !d.is_resolved()),
            "a load leaves inner positions unresolved in a file serde-saphyr parses"
        );

        resolve_positions(&mut resolved, &files, &Limits::default());

        assert_eq!(positioned.diagnostics, []);
        assert_eq!(resolved, positions_of(&positioned));
    }

    #[test]
    fn a_file_with_a_diagnostic_is_reported_with_real_positions() {
        let text = job("  timeout: 30\n  timeout: 40\n  scm: {type: svn}\n");

        let manifest = load_one("jobs/app.yaml", &text);

        assert!(manifest.diagnostics.iter().all(Diagnostic::is_resolved));
        assert_eq!(
            manifest.diagnostics,
            load_positioned_one("jobs/app.yaml", &text).diagnostics
        );
        assert!(
            message(&manifest, Code::E104).contains("line 6, column 3"),
            "{:#?}",
            manifest.diagnostics
        );
    }

    /// `(line, column, code)` of every diagnostic.
    fn found(manifest: &Manifest) -> Vec<(u32, u32, Code)> {
        manifest
            .diagnostics
            .iter()
            .map(|d| (d.line, d.column, d.code))
            .collect()
    }

    fn message(manifest: &Manifest, code: Code) -> String {
        manifest
            .diagnostics
            .iter()
            .find(|d| d.code == code)
            .map(|d| d.message.clone())
            .unwrap_or_else(|| panic!("no {code} in {:#?}", manifest.diagnostics))
    }

    fn only_document(manifest: &Manifest) -> &Document {
        assert!(
            manifest.diagnostics.is_empty(),
            "{:#?}",
            manifest.diagnostics
        );
        assert_eq!(manifest.documents.len(), 1);
        &manifest.documents[0]
    }

    fn job(spec: &str) -> String {
        format!("apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: app\nspec:\n{spec}")
    }

    fn credential(spec: &str) -> String {
        format!(
            "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: cred\nspec:\n{spec}"
        )
    }

    const PIPELINE: &str = r"  pipeline:
    stages:
      - name: build
        steps:
          - plugin: maven-build
      - name: test
        depends_on: [build]
        steps:
          - plugin: maven-test
            config:
              report_credential: reports
";

    #[test]
    fn a_valid_job_becomes_a_hashed_resource_with_positioned_references() {
        let manifest = load_positioned_one("jobs/app.yaml", &job(PIPELINE));

        let document = only_document(&manifest);
        assert_eq!(document.resource.id, ResourceId::new(Kind::Job, "app"));
        assert_eq!(
            document.resource.source,
            SourceLocation::new("jobs/app.yaml", 1, 1)
        );
        let refs: Vec<(String, String, u32, u32)> = document
            .references
            .iter()
            .map(|r| {
                (
                    r.target.to_string(),
                    r.field.clone(),
                    r.at.line,
                    r.at.column,
                )
            })
            .collect();
        assert_eq!(
            refs,
            [
                (
                    "plugin/maven-build".into(),
                    "spec.pipeline.stages[0].steps[0].plugin".into(),
                    10,
                    21
                ),
                (
                    "plugin/maven-test".into(),
                    "spec.pipeline.stages[1].steps[0].plugin".into(),
                    14,
                    21
                ),
                (
                    "credential/reports".into(),
                    "spec.pipeline.stages[1].steps[0].config.report_credential".into(),
                    16,
                    34
                ),
            ]
        );
    }

    #[test]
    fn a_typo_is_an_unknown_field_with_a_suggestion_at_the_key() {
        let manifest = load_one("jobs/app.yaml", &job("  timout: 30\n"));

        assert_eq!(found(&manifest), [(6, 3, Code::E204)]);
        assert_eq!(
            message(&manifest, Code::E204),
            "unknown field `spec.timout` (did you mean `timeout`?)"
        );
        assert!(manifest.documents.is_empty());
    }

    #[test]
    fn an_unknown_field_far_from_any_name_lists_the_allowed_ones() {
        let manifest = load_one(
            "jobs/app.yaml",
            &job("  scm:\n    type: git\n    url: u\n    zzz: 1\n"),
        );

        assert_eq!(found(&manifest), [(9, 5, Code::E204)]);
        assert_eq!(
            message(&manifest, Code::E204),
            "unknown field `spec.scm.zzz`: expected one of type, url, branch, credentials"
        );
    }

    #[test]
    fn every_problem_of_a_document_is_reported_not_only_the_first() {
        let spec = "  timout: 30\n  max_retries: 11\n  enabled: yes\n  scm:\n    type: svn\n";

        let manifest = load_one("jobs/app.yaml", &job(spec));

        assert_eq!(
            found(&manifest),
            [
                (6, 3, Code::E204),
                (7, 16, Code::E207),
                (8, 12, Code::E206),
                (9, 3, Code::E205),
                (10, 11, Code::E207),
            ]
        );
        assert!(message(&manifest, Code::E206).contains("expected a boolean, found a string"));
        assert_eq!(
            manifest
                .diagnostics
                .iter()
                .filter(|d| d.code == Code::E207)
                .map(|d| d.message.as_str())
                .collect::<Vec<_>>(),
            [
                "`spec.max_retries` must be between 0 and 10, found `11`",
                "`spec.scm.type` must be one of github, gitlab, bitbucket, gitea, git, found `svn`"
            ]
        );
        assert_eq!(
            message(&manifest, Code::E205),
            "missing required field `spec.scm.url`"
        );
    }

    #[test]
    fn a_wrong_type_says_what_was_expected_and_found() {
        let manifest = load_one("jobs/app.yaml", &job("  description:\n    a: b\n"));

        assert_eq!(found(&manifest), [(7, 5, Code::E206)]);
        assert_eq!(
            message(&manifest, Code::E206),
            "`spec.description`: expected a string, found a mapping"
        );
    }

    #[test]
    fn timeout_must_be_within_a_week_of_minutes() {
        let zero = load_one("jobs/app.yaml", &job("  timeout: 0\n"));
        let week = load_one("jobs/app.yaml", &job("  timeout: 10080\n"));
        let text = load_one("jobs/app.yaml", &job("  timeout: \"30\"\n"));

        assert_eq!(found(&zero), [(6, 12, Code::E207)]);
        assert!(message(&zero, Code::E207).contains("between 1 and 10080 minutes"));
        assert!(week.diagnostics.is_empty());
        assert_eq!(found(&text), [(6, 12, Code::E206)]);
    }

    #[test]
    fn cron_schedules_must_have_five_valid_fields() {
        let trigger = |schedule: &str| {
            load_one(
                "jobs/app.yaml",
                &job(&format!(
                    "  triggers:\n    - type: cron\n      schedule: \"{schedule}\"\n"
                )),
            )
        };

        let good = trigger("0 2 * * *");
        let out_of_range = trigger("0 25 * * *");
        let six_fields = trigger("0 0 2 * * *");

        assert!(good.diagnostics.is_empty(), "{:#?}", good.diagnostics);
        assert_eq!(found(&out_of_range), [(8, 17, Code::E208)]);
        assert_eq!(found(&six_fields), [(8, 17, Code::E208)]);
        assert!(
            message(&out_of_range, Code::E208)
                .contains("`0 25 * * *` is not a valid cron expression")
        );
    }

    #[test]
    fn a_cron_trigger_needs_a_schedule() {
        let manifest = load_one(
            "jobs/app.yaml",
            &job("  triggers:\n    - type: manual\n    - type: cron\n"),
        );

        assert_eq!(found(&manifest), [(8, 7, Code::E205)]);
        assert!(message(&manifest, Code::E205).contains("spec.triggers[1].schedule"));
    }

    #[test]
    fn branch_filters_must_be_valid_regexes() {
        let good = load_one(
            "jobs/app.yaml",
            &job(
                "  triggers:\n    - type: webhook\n      branch_filter: \"^(main|release/.*)$\"\n",
            ),
        );
        let bad = load_one(
            "jobs/app.yaml",
            &job("  triggers:\n    - type: webhook\n      branch_filter: \"^(main|release/.*$\"\n"),
        );

        assert!(good.diagnostics.is_empty(), "{:#?}", good.diagnostics);
        assert_eq!(found(&bad), [(8, 22, Code::E209)]);
        assert!(
            message(&bad, Code::E209).contains("is not a valid regular expression: unclosed group")
        );
    }

    fn stages(stages: &str) -> Manifest {
        load_one(
            "jobs/app.yaml",
            &job(&format!("  pipeline:\n    stages:\n{stages}")),
        )
    }

    #[test]
    fn stages_may_not_repeat_a_name() {
        let manifest = stages(
            "      - name: build\n        steps: [{plugin: a}]\n      - name: build\n        steps: [{plugin: b}]\n",
        );

        assert_eq!(found(&manifest), [(10, 15, Code::E210)]);
        assert_eq!(
            message(&manifest, Code::E210),
            "duplicate stage `build`: first defined at line 8, column 15"
        );
    }

    #[test]
    fn depends_on_must_name_a_stage() {
        let manifest = stages(
            "      - name: build\n        steps: [{plugin: a}]\n      - name: test\n        depends_on: [biuld]\n        steps: [{plugin: b}]\n",
        );

        assert_eq!(found(&manifest), [(11, 22, Code::E210)]);
        assert!(message(&manifest, Code::E210).contains(
            "stage `test` depends on `biuld`, which is not a stage of this pipeline (did you mean `build`?)"
        ));
    }

    #[test]
    fn a_dependency_cycle_is_named() {
        let manifest = stages(
            "      - name: a\n        depends_on: [c]\n        steps: [{plugin: p}]\n      - name: b\n        depends_on: [a]\n        steps: [{plugin: p}]\n      - name: c\n        depends_on: [b]\n        steps: [{plugin: p}]\n      - name: d\n        depends_on: [d]\n        steps: [{plugin: p}]\n",
        );

        let cycles: Vec<&str> = manifest
            .diagnostics
            .iter()
            .filter(|d| d.code == Code::E210)
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(
            cycles,
            [
                "pipeline stages depend on each other in a cycle: a → c → b → a",
                "pipeline stages depend on each other in a cycle: d → d"
            ]
        );
    }

    #[test]
    fn a_stage_needs_at_least_one_step() {
        let manifest = stages("      - name: build\n        steps: []\n");

        assert_eq!(found(&manifest), [(9, 16, Code::E207)]);
    }

    #[test]
    fn the_envelope_is_checked_field_by_field() {
        let text = "apiVersion: ritmo.dev/v2\nkind: Jobb\nmetadata:\n  name: Bad_Name\n  annotations: {}\nstatus: {}\n";

        let manifest = load_one("jobs/app.yaml", text);

        assert_eq!(
            found(&manifest),
            [
                (1, 1, Code::E205),
                (1, 13, Code::E200),
                (2, 7, Code::E201),
                (4, 9, Code::E203),
                (5, 3, Code::E204),
                (6, 1, Code::E204),
            ]
        );
        assert!(message(&manifest, Code::E201).contains("unknown kind `Jobb`"));
        assert!(message(&manifest, Code::E201).contains("(did you mean `Job`?)"));
    }

    #[test]
    fn a_kind_in_the_wrong_directory_says_where_it_belongs() {
        let text = "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: p\nspec:\n  type: notification\n";

        let manifest = load_one("jobs/p.yaml", text);

        assert_eq!(found(&manifest), [(2, 7, Code::E202)]);
        assert_eq!(
            message(&manifest, Code::E202),
            "a `Plugin` document in `jobs/`: move it to `plugins/`"
        );
    }

    #[test]
    fn labels_are_strings_and_become_part_of_the_resource() {
        let good = "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: app\n  labels:\n    team: web\nspec: {}\n";
        let bad = good.replace("team: web", "team: 1");

        let manifest = load_one("jobs/app.yaml", good);
        let broken = load_one("jobs/app.yaml", &bad);

        assert_eq!(
            only_document(&manifest)
                .resource
                .labels
                .get("team")
                .map(String::as_str),
            Some("web")
        );
        assert_eq!(found(&broken), [(6, 11, Code::E206)]);
    }

    #[test]
    fn a_plaintext_value_is_refused_without_repeating_it() {
        let manifest = load_one(
            "credentials/cred.yaml",
            &credential("  type: token\n  value: \"hunter2-plain\"\n"),
        );

        assert_eq!(found(&manifest), [(7, 3, Code::E400)]);
        let text = message(&manifest, Code::E400);
        assert!(text.contains("plaintext `value`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_credential_holds_exactly_one_of_encrypted_value_and_secret_ref() {
        let both = load_one(
            "credentials/cred.yaml",
            &credential(
                "  type: token\n  encrypted_value: \"AES256:x\"\n  secret_ref:\n    provider: aws_secrets_manager\n    key: k\n",
            ),
        );
        let neither = load_one("credentials/cred.yaml", &credential("  type: token\n"));

        assert_eq!(found(&both), [(8, 3, Code::E212)]);
        assert_eq!(found(&neither), [(5, 1, Code::E212)]);
    }

    #[test]
    fn secret_refs_need_the_fields_of_their_provider() {
        let kubernetes = load_positioned_one(
            "credentials/cred.yaml",
            &credential("  type: token\n  secret_ref:\n    provider: kubernetes\n    key: token\n"),
        );
        let vault = load_positioned_one(
            "credentials/cred.yaml",
            &credential(
                "  type: token\n  secret_ref:\n    provider: vault\n    path: secret/data/x\n",
            ),
        );

        assert_eq!(found(&kubernetes), [(7, 3, Code::E205), (7, 3, Code::E205)]);
        let secret_ref = &only_document(&vault).secret_refs[0];
        assert_eq!(
            (
                secret_ref.provider.as_str(),
                secret_ref.key.as_str(),
                secret_ref.at.line
            ),
            ("vault", "secret/data/x", 7)
        );
    }

    #[test]
    fn ciphertexts_are_collected_with_their_position() {
        let manifest = load_positioned_one(
            "credentials/cred.yaml",
            &credential("  type: token\n  encrypted_value: \"AES256:abc\"\n"),
        );

        let ciphertext = &only_document(&manifest).ciphertexts[0];
        assert_eq!(
            (
                ciphertext.credential.as_str(),
                ciphertext.value.as_str(),
                ciphertext.at.line,
                ciphertext.at.column
            ),
            ("cred", "AES256:abc", 7, 20)
        );
    }

    #[test]
    fn plugin_default_config_credentials_are_references() {
        let text = "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: slack-notify\nspec:\n  type: notification\n  binary_path: /opt/p\n  default_config:\n    webhook_url_credential: slack-webhook\n    channel: \"#builds\"\n";

        let manifest = load_positioned_one("plugins/slack-notify.yaml", text);

        let reference = &only_document(&manifest).references[0];
        assert_eq!(
            reference.target,
            ResourceId::new(Kind::Credential, "slack-webhook")
        );
        assert_eq!(
            reference.field,
            "spec.default_config.webhook_url_credential"
        );
        assert_eq!((reference.at.line, reference.at.column), (9, 29));
    }

    #[test]
    fn plugin_binaries_are_absolute_paths() {
        let text = "apiVersion: ritmo.dev/v1\nkind: Plugin\nmetadata:\n  name: p\nspec:\n  type: t\n  binary_path: plugins/p\n  version: 1.0\n";

        let manifest = load_one("plugins/p.yaml", text);

        assert_eq!(found(&manifest), [(7, 16, Code::E207), (8, 12, Code::E206)]);
    }

    #[test]
    fn webhooks_need_a_job_and_a_known_source() {
        let text = "apiVersion: ritmo.dev/v1\nkind: Webhook\nmetadata:\n  name: w\nspec:\n  source: githib\n  filters:\n    branch_pattern: \"[\"\n";

        let manifest = load_one("webhooks/w.yaml", text);

        assert_eq!(
            found(&manifest),
            [(5, 1, Code::E205), (6, 11, Code::E207), (8, 21, Code::E209)]
        );
        assert!(message(&manifest, Code::E207).contains("(did you mean `github`?)"));
    }

    #[test]
    fn a_worker_pool_cannot_have_fewer_max_than_min_workers() {
        let pool = |min: u32, max: u32| {
            load_one(
                "workers/p.yaml",
                &format!(
                    "apiVersion: ritmo.dev/v1\nkind: WorkerPool\nmetadata:\n  name: p\nspec:\n  provider: static\n  min_workers: {min}\n  max_workers: {max}\n"
                ),
            )
        };

        assert!(pool(2, 2).diagnostics.is_empty());
        assert_eq!(found(&pool(3, 2)), [(8, 16, Code::E207)]);
    }

    #[test]
    fn environments_reference_jobs_and_credentials() {
        let text = "apiVersion: ritmo.dev/v1\nkind: Environment\nmetadata:\n  name: prod\nspec:\n  tier: production\n  jobs: [api]\n  credentials: [db]\n  required_approvals: 2\n";

        let manifest = load_one("deployments/prod.yaml", text);

        let targets: Vec<String> = only_document(&manifest)
            .references
            .iter()
            .map(|r| format!("{} {}", r.target, r.field))
            .collect();
        assert_eq!(
            targets,
            ["job/api spec.jobs[0]", "credential/db spec.credentials[0]"]
        );
    }

    #[test]
    fn an_environment_needs_a_tier() {
        let text = "apiVersion: ritmo.dev/v1\nkind: Environment\nmetadata:\n  name: prod\nspec:\n  tier: prod\n";

        let manifest = load_one("deployments/prod.yaml", text);

        assert_eq!(found(&manifest), [(6, 9, Code::E207)]);
        assert!(message(&manifest, Code::E207).contains("(did you mean `production`?)"));
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_positions() {
        let manifest = load_one(
            "jobs/app.yaml",
            &job("  timeout: 30\n  enabled: true\n  timeout: 40\n"),
        );

        assert_eq!(found(&manifest), [(8, 3, Code::E104)]);
        assert_eq!(
            message(&manifest, Code::E104),
            "duplicate key `spec.timeout`: first defined at line 6, column 3"
        );
    }

    #[test]
    fn non_string_keys_are_wrong_types() {
        let manifest = load_one("jobs/app.yaml", &job("  environment:\n    1: one\n"));

        assert_eq!(found(&manifest), [(7, 5, Code::E206)]);
    }

    #[test]
    fn a_syntax_error_reports_the_parsers_position() {
        let manifest = load_one(
            "jobs/app.yaml",
            "apiVersion: ritmo.dev/v1\nkind: [Job\nmetadata: {}\n",
        );

        assert_eq!(manifest.diagnostics.len(), 1);
        let diagnostic = &manifest.diagnostics[0];
        assert_eq!(diagnostic.code, Code::E100);
        assert!(diagnostic.line >= 2, "{diagnostic}");
        assert!(
            diagnostic.message.starts_with("invalid YAML: "),
            "{diagnostic}"
        );
    }

    #[test]
    fn an_unclosed_flow_sequence_is_reported_where_it_opens() {
        let manifest = load_one(
            "jobs/a.yaml",
            "apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: a\nspec:\n  labels: [x, y\n  timeout: 10\n",
        );

        let diagnostic = &manifest.diagnostics[0];
        assert_eq!(
            (diagnostic.code, diagnostic.line, diagnostic.column),
            (Code::E100, 6, 11),
            "{diagnostic}"
        );
        assert!(
            diagnostic.message.contains("`[` is never closed"),
            "{diagnostic}"
        );
    }

    #[test]
    fn an_alias_bomb_is_stopped_by_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let alias = format!("*a{}", i - 1);
            text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![alias; 10].join(", ")));
        }

        let manifest = load_one("jobs/bomb.yaml", &text);

        assert_eq!(manifest.diagnostics.len(), 1);
        assert_eq!(manifest.diagnostics[0].code, Code::E102);
    }

    #[test]
    fn ten_thousand_levels_of_nesting_are_stopped_by_the_depth_limit() {
        let block = format!("{}x\n", "- ".repeat(10_000));
        let flow = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let maps = format!("a: {}1{}\n", "{a: ".repeat(10_000), "}".repeat(10_000));

        let results = [block, flow, maps].map(|text| load_one("jobs/deep.yaml", &text));

        for manifest in &results {
            assert_eq!(found(manifest).len(), 1, "{:#?}", manifest.diagnostics);
            assert_eq!(
                manifest.diagnostics[0].code,
                Code::E102,
                "{:#?}",
                manifest.diagnostics
            );
        }
    }

    #[test]
    fn nesting_within_the_depth_limit_parses() {
        let depth = Limits::default().max_depth - 4;
        let deep = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));

        let manifest = load_one(
            "jobs/app.yaml",
            &job(&format!("  build:\n    type: t\n    config: {deep}\n")),
        );

        assert!(
            manifest.diagnostics.is_empty(),
            "{:#?}",
            manifest.diagnostics
        );
    }

    #[test]
    fn files_over_the_size_limit_are_not_parsed() {
        let limits = Limits {
            max_file_bytes: 100,
            ..Limits::default()
        };
        let big = file("jobs/big.yaml", &format!("# {}\n", "x".repeat(200)));
        let unread = SourceFile {
            path: "jobs/huge.yaml".into(),
            content: FileContent::TooLarge { size: 5_000_000 },
        };

        let manifest = load(&[big, unread], &limits);

        assert_eq!(found(&manifest), [(1, 1, Code::E101), (1, 1, Code::E101)]);
        assert_eq!(
            manifest.diagnostics[1].message,
            "the file is 5000000 bytes, over the limit of 100 bytes: split it"
        );
    }

    #[test]
    fn invalid_utf8_is_reported_at_the_line_of_the_first_bad_byte() {
        let mut bytes = b"apiVersion: ritmo.dev/v1\nkind: Job\nmetadata:\n  name: caf".to_vec();
        bytes.extend([0xE9, b'\n']);
        let bad = SourceFile {
            path: "jobs/app.yaml".into(),
            content: FileContent::Bytes(bytes),
        };

        let manifest = load(&[bad], &Limits::default());

        assert_eq!(found(&manifest), [(4, 12, Code::E103)]);
    }

    #[test]
    fn empty_files_are_a_warning() {
        let manifest = load(
            &[
                file("jobs/empty.yaml", "  \n\n"),
                file("jobs/comment.yaml", "# nothing yet\n"),
            ],
            &Limits::default(),
        );

        let codes: Vec<Code> = manifest.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, [Code::W101, Code::W101]);
        assert!(!crate::diagnostic::has_errors(&manifest.diagnostics));
    }

    #[test]
    fn symlinks_submodules_and_special_files_are_refused() {
        let entries = [
            ("jobs/a.yaml", FileContent::Symlink),
            ("jobs/b.yaml", FileContent::Submodule),
            ("jobs/c.yaml", FileContent::NonRegular),
        ]
        .map(|(path, content)| SourceFile {
            path: path.into(),
            content,
        });

        let manifest = load(&entries, &Limits::default());

        assert_eq!(found(&manifest), [(1, 1, Code::E105); 3]);
        assert!(
            manifest.diagnostics[0]
                .message
                .contains("symlinks are not followed: commit the file itself")
        );
    }

    // Issue 22, finding 1: a `webhooks` directory replaced by a symlink was reported by the
    // reader, dropped here for not being a `.yaml` path, and the sync deleted every webhook.
    #[test]
    fn a_kind_directory_that_is_not_a_directory_is_refused_naming_it() {
        let entries = [
            ("jobs", FileContent::Submodule),
            ("plugins", FileContent::NotADirectory),
            ("webhooks", FileContent::Symlink),
            ("workers", FileContent::NonRegular),
        ]
        .map(|(path, content)| SourceFile {
            path: path.into(),
            content,
        });

        let manifest = load(&entries, &Limits::default());

        let paths: Vec<&str> = manifest
            .diagnostics
            .iter()
            .map(|d| d.path.as_str())
            .collect();
        assert_eq!(paths, ["jobs", "plugins", "webhooks", "workers"]);
        assert!(manifest.diagnostics.iter().all(|d| d.code == Code::E105));
        let webhooks = &manifest.diagnostics[2].message;
        assert!(
            webhooks.starts_with("`webhooks` is a symlink, not a directory"),
            "{webhooks}"
        );
        assert!(webhooks.contains("would delete every one"), "{webhooks}");
    }

    #[test]
    fn an_unreadable_entry_under_a_kind_directory_is_refused_whatever_its_name() {
        let entries = [
            ("jobs/team", FileContent::Symlink),
            ("jobs/vendored", FileContent::Submodule),
            ("README.md", FileContent::Symlink),
        ]
        .map(|(path, content)| SourceFile {
            path: path.into(),
            content,
        });

        let manifest = load(&entries, &Limits::default());

        let found: Vec<(&str, Code)> = manifest
            .diagnostics
            .iter()
            .map(|d| (d.path.as_str(), d.code))
            .collect();
        assert_eq!(
            found,
            [("jobs/team", Code::E105), ("jobs/vendored", Code::E105)]
        );
    }

    // Issue 22, finding 3: past the file limit the readers failed with an error (exit 2)
    // instead of this diagnostic.
    #[test]
    fn a_source_that_stopped_at_the_file_limit_is_one_diagnostic_naming_path_and_limit() {
        let files = [SourceFile {
            path: String::new(),
            content: FileContent::TooManyFiles {
                limit: 100_000,
                config_path: "config/prod".into(),
            },
        }];

        let manifest = load(&files, &Limits::default());

        assert_eq!(manifest.diagnostics.len(), 1);
        let diagnostic = &manifest.diagnostics[0];
        assert_eq!(
            (diagnostic.code, diagnostic.path.as_str()),
            (Code::E106, "")
        );
        assert!(diagnostic.is_error());
        assert!(
            diagnostic.message.contains("`config/prod`")
                && diagnostic.message.contains("100000")
                && diagnostic.message.contains("point the target's `path`"),
            "{}",
            diagnostic.message
        );
    }

    #[test]
    fn too_many_resource_files_stop_the_load() {
        let limits = Limits {
            max_files: 2,
            ..Limits::default()
        };
        let files: Vec<SourceFile> = (0..3)
            .map(|i| {
                file(
                    &format!("jobs/j{i}.yaml"),
                    &job("  enabled: true\n").replace("app", &format!("j{i}")),
                )
            })
            .chain([file("README.md", "ignored")])
            .collect();

        let manifest = load(&files, &limits);

        assert_eq!(manifest.diagnostics.len(), 1);
        assert_eq!(manifest.diagnostics[0].code, Code::E106);
        assert!(manifest.documents.is_empty());
    }

    #[test]
    fn files_outside_the_kind_directories_are_ignored() {
        let manifest = load(
            &[
                file("README.md", "not: [yaml"),
                file(".github/workflows/ci.yaml", "{{{"),
            ],
            &Limits::default(),
        );

        assert_eq!(manifest, Manifest::default());
    }

    #[test]
    fn each_document_of_a_file_is_its_own_resource() {
        let text = format!(
            "{}\n---\n---\n{}",
            job("  enabled: true\n"),
            job("  enabled: false\n").replace("app", "other")
        );

        let manifest = load_one("jobs/two.yaml", &text);

        let names: Vec<(&str, u32)> = manifest
            .documents
            .iter()
            .map(|d| (d.resource.id.name.as_str(), d.resource.source.line))
            .collect();
        assert_eq!(names, [("app", 1), ("other", 10)]);
    }

    #[test]
    fn one_broken_document_does_not_hide_the_others() {
        let text = format!(
            "{}---\n{}",
            job("  timout: 1\n"),
            job("  enabled: true\n").replace("app", "good")
        );

        let manifest = load_one("jobs/two.yaml", &text);

        assert_eq!(found(&manifest), [(6, 3, Code::E204)]);
        assert_eq!(manifest.documents.len(), 1);
        assert_eq!(manifest.documents[0].resource.id.name, "good");
    }

    #[test]
    fn yes_and_on_stay_strings_in_the_spec() {
        let manifest = load_one(
            "jobs/app.yaml",
            &job("  environment:\n    A: yes\n    B: on\n    C: 017\n    D: 1.5\n"),
        );

        let spec = only_document(&manifest).resource.spec.to_value();
        assert_eq!(
            spec["environment"],
            serde_json::json!({"A": "yes", "B": "on", "C": "017", "D": 1.5})
        );
    }

    #[test]
    fn a_spec_is_the_canonical_json_of_its_value() {
        let manifest = load_one(
            "jobs/app.yaml",
            &job(
                "  timeout: 30\n  max_retries: 0\n  description: \"tab\\t quote\\\" é \\u0001\"\n  environment: {Z: -1, A: 2.50, M: 18446744073709551615, E: 1e300, N: true}\n  triggers:\n    - {type: cron, schedule: '0 2 * * *', branches: [main, dev]}\n",
            ),
        );

        let spec = &only_document(&manifest).resource.spec;

        assert_eq!(
            spec.as_json(),
            crate::hash::canonical_json(&spec.to_value())
        );
        assert!(spec.as_json().starts_with(r#"{"description":"tab\t quote\" é \u0001","environment":{"A":2.5,"E":1e+300,"M":18446744073709551615,"N":true,"Z":-1}"#), "{spec:?}");
    }

    #[test]
    fn key_order_comments_and_whitespace_do_not_change_the_hash() {
        let a = job("  timeout: 30\n  enabled: true\n  scm: {type: git, url: u}\n");
        let b = "# a comment\napiVersion:   ritmo.dev/v1\nmetadata:\n    name: app   # trailing\nkind: Job\nspec:\n    scm:\n        url: \"u\"\n        type: 'git'\n\n    enabled: true\n    timeout: 30\n";
        let c = job("  timeout: 31\n  enabled: true\n  scm: {type: git, url: u}\n");

        let hash = |text: &str| {
            only_document(&load_one("jobs/app.yaml", text))
                .resource
                .hash
                .clone()
        };

        assert_eq!(hash(&a), hash(b));
        assert_ne!(hash(&a), hash(&c));
    }

    #[test]
    fn every_string_long_enough_for_a_secret_is_collected_for_the_scan() {
        let long = "x".repeat(crate::validate::MIN_SECRET_LEN);
        let manifest = load_positioned_one(
            "jobs/app.yaml",
            &job(&format!(
                "  environment:\n    SHORT: abc\n    TOKEN: {long}\n  scm: {{type: git, url: \"{long}\"}}\n"
            )),
        );

        let strings: Vec<(&str, &str, u32, u32)> = only_document(&manifest)
            .strings
            .iter()
            .map(|s| (s.field.as_str(), s.value.as_str(), s.at.line, s.at.column))
            .collect();
        assert_eq!(
            strings,
            [
                ("spec.environment.TOKEN", long.as_str(), 8, 12),
                ("spec.scm.url", long.as_str(), 9, 25)
            ]
        );
    }

    #[test]
    fn a_token_in_a_broken_document_is_still_reported() {
        let token = format!("ghp_{}", "a8Kd93JfQ2mZx7Lp0WcR5tYb1NvE6hUg4sDq");
        let manifest = load_one(
            "jobs/app.yaml",
            &job(&format!(
                "  timout: 1\n  environment:\n    TOKEN: {token}\n"
            )),
        );

        assert_eq!(found(&manifest), [(6, 3, Code::E204), (8, 12, Code::E401)]);
        assert!(
            manifest
                .diagnostics
                .iter()
                .all(|d| !d.message.contains(&token[4..]))
        );
    }

    #[test]
    fn a_token_in_an_unparsable_file_is_still_reported_by_line() {
        let token = format!("AKIA{}", "Z7Q4RTW2XK9PLM3B");
        let text = format!("apiVersion: ritmo.dev/v1\nkind: [Job\nspec:\n  key: {token}\n");

        let manifest = load_one("jobs/app.yaml", &text);

        let codes: Vec<(u32, Code)> = manifest
            .diagnostics
            .iter()
            .map(|d| (d.line, d.code))
            .collect();
        assert!(codes.contains(&(4, Code::E401)), "{codes:?}");
        assert!(codes.iter().any(|(_, c)| *c == Code::E100));
        assert!(
            manifest
                .diagnostics
                .iter()
                .all(|d| !d.message.contains(&token))
        );
    }

    #[test]
    fn a_plaintext_token_is_reported_once_as_plaintext() {
        let token = format!("ghp_{}", "a8Kd93JfQ2mZx7Lp0WcR5tYb1NvE6hUg4sDq");

        let manifest = load_one(
            "credentials/cred.yaml",
            &credential(&format!("  type: token\n  value: {token}\n")),
        );

        assert_eq!(found(&manifest), [(7, 3, Code::E400)]);
    }
}
