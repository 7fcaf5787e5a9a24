//! The manifest loader and the validation after it: files of a config repository (see
//! `ritmo_fuzz::manifest_files` for the input format) → documents and diagnostics, as
//! `workflow::check` does them, with every `encrypted_value` tried under a fixed master key.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use ritmo::crypto::CredentialKeys;
use ritmo::manifest::{self, Limits};
use ritmo::model::ResourceId;
use ritmo::validate::{self, ValidationContext, detect_secret};
use ritmo_fuzz::{block_on, keyring, manifest_files};

fuzz_target!(|data: &[u8]| {
    let files = manifest_files(data);
    let limits = Limits::default();
    let loaded = manifest::load(&files, &limits);

    let builtin_plugins: BTreeSet<String> = ["git-scm".to_owned()].into();
    let known = |_: &ResourceId| false;
    let context = ValidationContext {
        builtin_plugins: &builtin_plugins,
        known: &known,
    };
    let mut diagnostics = validate::diagnostics(&loaded, &context);

    let keys = CredentialKeys {
        master: Some(keyring()),
        ..CredentialKeys::default()
    };
    for field in loaded
        .documents
        .iter()
        .flat_map(|document| &document.ciphertexts)
        .filter(|field| validate::is_well_formed_ciphertext(&field.value))
    {
        let _ = block_on(keys.verify(&field.credential, &field.value));
    }

    manifest::resolve_positions(&mut diagnostics, &files, &limits);
    for diagnostic in &diagnostics {
        assert!(
            diagnostic.is_resolved(),
            "unresolved after resolve_positions: {diagnostic:?}"
        );
        let _ = diagnostic.to_string();
    }

    // The README's promise: a secret found in a file is reported, never echoed.
    for scalar in loaded
        .documents
        .iter()
        .flat_map(|document| &document.strings)
    {
        if detect_secret(&scalar.value).is_some() && !scalar.field.contains(&scalar.value) {
            for diagnostic in &diagnostics {
                assert!(
                    !diagnostic.message.contains(&scalar.value),
                    "a diagnostic echoes a secret: {}",
                    diagnostic.code
                );
            }
        }
    }
});
