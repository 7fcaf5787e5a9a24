//! Rules across documents: identities, references, secrets, ciphertext format.
//!
//! `manifest::load` already reports what is wrong inside each document (syntax, schema);
//! `validate` reports what is wrong between them, all at once. Decrypting ciphertexts is the
//! `crypto` module's job; here they are only checked to be well-formed.

mod secrets;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::Engine as _;

pub use secrets::detect_secret;

use crate::diagnostic::{self, Code, Diagnostic};
use crate::manifest::{Manifest, StringScalar, did_you_mean};
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
    for document in &manifest.documents {
        out.extend(scan_strings(&document.strings));
        for field in &document.ciphertexts {
            if !is_well_formed_ciphertext(&field.value) {
                out.push(Diagnostic::new(
                    Code::E402,
                    &field.at,
                    format!(
                        "`encrypted_value` of credential `{name}` is not a ciphertext: produce it with `ritmo encrypt-credential --name {name}`",
                        name = field.credential
                    ),
                ));
            }
        }
    }
    diagnostic::sort(&mut out);
    out
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
    let mut first: HashMap<&ResourceId, &SourceLocation> = HashMap::new();
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
                    did_you_mean(&target.name, candidates)
                ),
            ));
        }
    }
}
