//! `--parse-only`: the parse stage alone, in memory (no git, no database), so it can be
//! profiled (`perf record`) and set against serde-saphyr by itself on the same text.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ritmo::manifest::{self, FileContent, Limits, SourceFile};
use ritmo::validate::{self, ValidationContext};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::generate::{self, Shape};
use crate::{median, ms};

/// Times each layer of the parse stage over the generated repository of `n` resources.
pub fn run(n: usize, repeat: usize) -> anyhow::Result<()> {
    let shape = Shape::of(n);
    let files: Vec<SourceFile> = generate::files(shape)
        .into_iter()
        .map(|(path, text)| SourceFile {
            path,
            content: FileContent::Bytes(text.into_bytes()),
        })
        .collect();
    let texts: Vec<&str> = files
        .iter()
        .filter(|f| manifest::resource_kind_for_path(&f.path).is_some())
        .filter_map(|f| match &f.content {
            FileContent::Bytes(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        })
        .collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    let limits = Limits::default();
    println!(
        "parse stage, {} files, {:.1} MB of YAML, one thread, median of {repeat}",
        texts.len(),
        bytes as f64 / 1e6
    );
    println!("| layer | ms | MB/s | µs per file |");
    println!("|---|---|---|---|");
    let row = |name: &str, took: Duration| {
        println!(
            "| {name} | {} | {:.1} | {:.1} |",
            ms(took),
            bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9),
            took.as_secs_f64() * 1e6 / texts.len().max(1) as f64
        );
    };

    let options = || manifest::parser_options(&limits);
    row(
        "serde-saphyr alone, pinned options → IgnoredAny",
        time(repeat, || {
            for text in &texts {
                let _ = std::hint::black_box(
                    serde_saphyr::from_multiple_with_options::<IgnoredAny>(text, options()),
                );
            }
        }),
    );
    row(
        "serde-saphyr alone, pinned options without the budget → IgnoredAny",
        time(repeat, || {
            for text in &texts {
                let mut unbounded = options();
                unbounded.budget = None;
                let _ = std::hint::black_box(
                    serde_saphyr::from_multiple_with_options::<IgnoredAny>(text, unbounded),
                );
            }
        }),
    );
    row(
        "granit-parser events alone (the parser under serde-saphyr and the event tree)",
        time(repeat, || {
            for text in &texts {
                for event in serde_saphyr::granit_parser::Parser::new_from_str(text) {
                    if std::hint::black_box(event).is_err() {
                        break;
                    }
                }
            }
        }),
    );
    row(
        "serde_yaml_ng (libyaml, not used: for comparison) → IgnoredAny",
        time(repeat, || {
            for text in &texts {
                for document in serde_yaml_ng::Deserializer::from_str(text) {
                    let _ = std::hint::black_box(IgnoredAny::deserialize(document));
                }
            }
        }),
    );
    row(
        "serde-saphyr alone, pinned options → serde_json::Value",
        time(repeat, || {
            for text in &texts {
                let _ = std::hint::black_box(serde_saphyr::from_multiple_with_options::<
                    serde_json::Value,
                >(text, options()));
            }
        }),
    );
    row(
        "serde-saphyr alone, default options → serde_json::Value",
        time(repeat, || {
            for text in &texts {
                let _ = std::hint::black_box(serde_saphyr::from_multiple_with_options::<
                    serde_json::Value,
                >(
                    text, serde_saphyr::Options::default()
                ));
            }
        }),
    );
    row(
        "manifest::load (parse with root positions, schema, hash)",
        time(repeat, || {
            std::hint::black_box(manifest::load(&files, &limits));
        }),
    );
    row(
        "manifest::load_with_positions (every node's position)",
        time(repeat, || {
            std::hint::black_box(manifest::load_with_positions(&files, &limits));
        }),
    );
    let loaded = manifest::load(&files, &limits);
    if loaded.documents.len() != texts.len() {
        anyhow::bail!(
            "the generated repository has errors: {:?}",
            loaded.diagnostics.first()
        );
    }
    let builtin = BTreeSet::new();
    row(
        "validate::validate (references, secret scan)",
        time(repeat, || {
            std::hint::black_box(validate::validate(
                &loaded,
                &ValidationContext {
                    builtin_plugins: &builtin,
                    known: &|_| false,
                },
            ));
        }),
    );
    Ok(())
}

fn time(repeat: usize, mut work: impl FnMut()) -> Duration {
    let mut laps = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let started = Instant::now();
        work();
        laps.push(started.elapsed());
    }
    median(laps)
}
