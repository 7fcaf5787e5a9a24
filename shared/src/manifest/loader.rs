//! `load`: the files of a revision → a `Manifest` of checked documents and diagnostics.

use super::schema::{self, Checked};
use super::yaml::{self, ParseError};
use super::{FileContent, Limits, Manifest, SourceFile, resource_kind_for_path};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::model::{Kind, SourceLocation};

/// Parses and checks every resource file (see `resource_kind_for_path`; other paths are
/// ignored). Each document of a file becomes its own resource; a document with any error is
/// left out of `documents` and its problems are in `diagnostics`, sorted by position.
pub fn load(files: &[SourceFile], limits: &Limits) -> Manifest {
    yaml::with_parser_stack(limits, || load_here(files, limits))
}

fn load_here(files: &[SourceFile], limits: &Limits) -> Manifest {
    let resource_files: Vec<(&SourceFile, Kind)> = files
        .iter()
        .filter_map(|file| resource_kind_for_path(&file.path).map(|kind| (file, kind)))
        .collect();
    let mut manifest = Manifest::default();
    if resource_files.len() > limits.max_files {
        manifest.diagnostics.push(Diagnostic::global(
            Code::E106,
            format!(
                "the repository holds {} resource files, more than the limit of {}: point the target at a smaller path or raise the limit",
                resource_files.len(),
                limits.max_files
            ),
        ));
        return manifest;
    }
    for (file, kind) in resource_files {
        load_file(file, kind, limits, &mut manifest);
    }
    diagnostic::sort(&mut manifest.diagnostics);
    manifest
}

fn load_file(file: &SourceFile, kind: Kind, limits: &Limits, manifest: &mut Manifest) {
    let path = file.path.as_str();
    let bytes = match &file.content {
        FileContent::Bytes(bytes) => bytes,
        FileContent::Symlink => {
            return manifest.diagnostics.push(Diagnostic::in_file(
                Code::E105,
                path,
                "this is a symlink: symlinks are not followed: commit the file itself",
            ));
        }
        FileContent::Submodule => {
            return manifest.diagnostics.push(Diagnostic::in_file(
                Code::E105,
                path,
                "this is a git submodule: submodules are not followed: commit the files themselves",
            ));
        }
        FileContent::NonRegular => {
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
    let documents = match yaml::parse_documents(text, limits) {
        Ok(documents) => documents,
        Err(error) => {
            return manifest
                .diagnostics
                .push(parse_diagnostic(path, &error, limits));
        }
    };
    if documents.is_empty() {
        return manifest.diagnostics.push(Diagnostic::in_file(
            Code::W101,
            path,
            "the file holds no YAML document: it declares no resource",
        ));
    }
    for root in &documents {
        let Checked {
            document,
            mut diagnostics,
            strings,
        } = schema::check_document(path, kind, root);
        match document {
            Some(document) => manifest.documents.push(document),
            // A broken document is not validated further, but a live token in it must not
            // wait for the other errors to be fixed before it is reported.
            None => diagnostics.extend(crate::validate::scan_strings(&strings)),
        }
        manifest.diagnostics.extend(diagnostics);
    }
}

fn too_large(path: &str, size: u64, limit: u64) -> Diagnostic {
    Diagnostic::in_file(
        Code::E101,
        path,
        format!("the file is {size} bytes, over the limit of {limit} bytes: split it"),
    )
}

fn parse_diagnostic(path: &str, error: &ParseError, limits: &Limits) -> Diagnostic {
    let at = SourceLocation::new(path, error.line, error.column);
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
