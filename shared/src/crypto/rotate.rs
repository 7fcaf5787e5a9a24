//! rotate: re-encrypts a repository's `AES256:` credential values to the newest master key.
//!
//! After a new key is added to the master keyring (newest last), old values still decrypt,
//! but the old key cannot be retired until every value moved. [`rotate_text`] takes one YAML
//! file's text and returns it with each `AES256:` `encrypted_value` that is under an older key,
//! or not bound to its credential's name, replaced by a fresh value under the newest key bound
//! to the name. Only those scalars change: comments, order, quoting and every other byte stay,
//! so the diff a person reviews and commits is exactly the rotated values.
//!
//! Values are found by the manifest parser (credential name and position), then the exact old
//! text is replaced at that position; a value that cannot be found verbatim there (a folded
//! block scalar, say) is refused rather than guessed at. `KMS:` values are left alone (KMS
//! rotates its own keys). Pure: no files, no environment; `ritmo rotate-credentials` reads and
//! writes the files.

use crate::crypto::{AES256_PREFIX, CryptoError, MasterKeyring};
use crate::diagnostic::{Code, Diagnostic};
use crate::manifest::{self, FileContent, Limits, SourceFile};

/// One value that was re-encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub credential: String,
    pub line: u32,
    /// The key that decrypted the old value.
    pub from_key: Option<String>,
    /// Whether the old value was bound to the credential's name.
    pub was_bound: bool,
}

/// The outcome for one file: its new text (equal to the input when nothing changed), what
/// changed, and what could not be rotated (secret-free diagnostics with file and line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRotation {
    pub path: String,
    pub text: String,
    pub rotated: Vec<Rotated>,
    /// Values already under the newest key and bound.
    pub current: usize,
    pub refused: Vec<Diagnostic>,
}

impl FileRotation {
    pub fn changed(&self) -> bool {
        !self.rotated.is_empty()
    }
}

/// Re-encrypts the `AES256:` values of `text` (the file at `path`, relative to the config
/// root) to the newest key of `keyring`; only credential `only` when given.
pub fn rotate_text(
    path: &str,
    text: &str,
    keyring: &MasterKeyring,
    only: Option<&str>,
) -> FileRotation {
    let loaded = manifest::load_with_positions(
        &[SourceFile {
            path: path.to_owned(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        }],
        &Limits::default(),
    );
    let mut refused: Vec<Diagnostic> = loaded
        .diagnostics
        .into_iter()
        .filter(Diagnostic::is_error)
        .map(|mut d| {
            d.message = format!("not rotated: {}", d.message);
            d
        })
        .collect();
    let mut edits: Vec<(usize, usize, String, Rotated)> = Vec::new();
    let mut current = 0;
    let fields = loaded
        .documents
        .iter()
        .flat_map(|document| &document.ciphertexts)
        .filter(|field| only.is_none_or(|name| field.credential == name))
        .filter(|field| field.value.trim().starts_with(AES256_PREFIX));
    for field in fields {
        let refuse = |message: String| Diagnostic::new(Code::E402, &field.at, message);
        let old = keyring.decrypt(Some(&field.credential), &field.value);
        let (from_key, was_bound) = match &old {
            Ok(decrypted) => (decrypted.key_id.clone(), decrypted.bound),
            Err(_) => (None, false),
        };
        drop(old);
        let new_value = match keyring.reencrypt(&field.credential, &field.value) {
            Ok(Some(value)) => value,
            Ok(None) => {
                current += 1;
                continue;
            }
            Err(error) => {
                refused.push(refuse(describe(&field.credential, &error)));
                continue;
            }
        };
        let Some(start) = locate(text, field.at.line, field.at.column, &field.value) else {
            refused.push(refuse(format!(
                "`encrypted_value` of credential `{}` is not written as a single-line scalar: \
                 re-encrypt it by hand with `ritmo encrypt-credential --name {}`",
                field.credential, field.credential
            )));
            continue;
        };
        edits.push((
            start,
            start + field.value.len(),
            new_value,
            Rotated {
                credential: field.credential.clone(),
                line: field.at.line,
                from_key,
                was_bound,
            },
        ));
    }
    // Back to front, so earlier offsets stay valid.
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
    let mut out = text.to_owned();
    let mut rotated = Vec::with_capacity(edits.len());
    for (start, end, value, record) in edits {
        out.replace_range(start..end, &value);
        rotated.push(record);
    }
    rotated.reverse();
    FileRotation {
        path: path.to_owned(),
        text: out,
        rotated,
        current,
        refused,
    }
}

fn describe(credential: &str, error: &CryptoError) -> String {
    format!("`encrypted_value` of credential `{credential}` was not rotated: {error}")
}

/// The byte offset of `value` written at 1-based `line`/`column` (the scalar's start, maybe
/// an opening quote), when it is there verbatim.
fn locate(text: &str, line: u32, column: u32, value: &str) -> Option<usize> {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(usize::try_from(line).ok()? - 2)
            .map(|(i, _)| i + 1)?
    };
    let line_text = &text[line_start..];
    let line_text = &line_text[..line_text.find('\n').unwrap_or(line_text.len())];
    let column_offset = line_text
        .char_indices()
        .nth(usize::try_from(column).ok()?.saturating_sub(1))
        .map_or(line_text.len(), |(i, _)| i);
    let after = &line_text[column_offset..];
    let skipped = after.len() - after.trim_start_matches(['"', '\'']).len();
    let start = line_start + column_offset + skipped;
    text[start..].starts_with(value).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{ExposeSecret, MasterKey};

    const SECRET: &[u8] = b"planted-credential-plaintext";

    fn rings() -> (MasterKeyring, MasterKeyring) {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let before = MasterKeyring::new(vec![("k1".into(), old.clone())]).unwrap();
        let after = MasterKeyring::new(vec![("k1".into(), old), ("k2".into(), new)]).unwrap();
        (before, after)
    }

    fn credential(name: &str, value_line: &str) -> String {
        format!(
            "apiVersion: ritmo.dev/v1\nkind: Credential\nmetadata:\n  name: {name}\nspec:\n  type: token\n  # rotated yearly\n  {value_line}\n"
        )
    }

    #[test]
    fn values_under_an_old_key_move_to_the_newest_and_nothing_else_changes() {
        let (before, after) = rings();
        let old_value = before.encrypt(Some("github-token"), SECRET).unwrap();
        let text = format!(
            "{}---\n{}",
            credential("github-token", &format!("encrypted_value: \"{old_value}\"")),
            credential(
                "ssh-key",
                "secret_ref:\n    provider: vault\n    key: secret/ssh"
            )
        );

        let rotation = rotate_text("credentials/all.yaml", &text, &after, None);

        assert_eq!(
            rotation.rotated,
            [Rotated {
                credential: "github-token".into(),
                line: 8,
                from_key: Some("k1".into()),
                was_bound: true
            }]
        );
        assert!(rotation.refused.is_empty());
        let changed: Vec<(&str, &str)> = text
            .lines()
            .zip(rotation.text.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(changed.len(), 1);
        let new_value = changed[0].1.trim().trim_start_matches("encrypted_value: ");
        let new_value = new_value.trim_matches('"');
        let decrypted = after.decrypt(Some("github-token"), new_value).unwrap();
        assert_eq!(decrypted.key_id.as_deref(), Some("k2"));
        assert!(decrypted.bound);
        assert_eq!(decrypted.plaintext.expose_secret(), SECRET);
    }

    #[test]
    fn unbound_values_are_bound_and_current_values_are_left_alone() {
        let (_, after) = rings();
        let unbound = after.encrypt(None, SECRET).unwrap();
        let current = after.encrypt(Some("b"), SECRET).unwrap();
        let text = format!(
            "{}---\n{}",
            credential("a", &format!("encrypted_value: {unbound}")),
            credential("b", &format!("encrypted_value: '{current}'"))
        );

        let rotation = rotate_text("credentials/x.yaml", &text, &after, None);

        assert_eq!(rotation.rotated.len(), 1);
        assert_eq!(rotation.rotated[0].credential, "a");
        assert!(!rotation.rotated[0].was_bound);
        assert_eq!(rotation.current, 1);
        assert!(rotation.text.contains(&format!("'{current}'")));
        assert!(!rotation.text.contains(&unbound));
    }

    #[test]
    fn only_the_named_credential_is_rotated_when_asked() {
        let (before, after) = rings();
        let a = before.encrypt(Some("a"), SECRET).unwrap();
        let b = before.encrypt(Some("b"), SECRET).unwrap();
        let text = format!(
            "{}---\n{}",
            credential("a", &format!("encrypted_value: {a}")),
            credential("b", &format!("encrypted_value: {b}"))
        );

        let rotation = rotate_text("credentials/x.yaml", &text, &after, Some("b"));

        assert_eq!(rotation.rotated.len(), 1);
        assert_eq!(rotation.rotated[0].credential, "b");
        assert!(rotation.text.contains(&a));
        assert!(!rotation.text.contains(&b));
    }

    #[test]
    fn a_value_that_does_not_decrypt_is_refused_with_file_and_line_and_kept() {
        let (_, after) = rings();
        let other_ring = MasterKeyring::single(MasterKey::generate());
        let foreign = other_ring.encrypt(Some("a"), SECRET).unwrap();
        let moved = after.encrypt(Some("b"), SECRET).unwrap();
        let text = format!(
            "{}---\n{}",
            credential("a", &format!("encrypted_value: {foreign}")),
            credential("c", &format!("encrypted_value: {moved}"))
        );

        let rotation = rotate_text("credentials/x.yaml", &text, &after, None);

        assert!(!rotation.changed());
        assert_eq!(rotation.text, text);
        let rendered: Vec<String> = rotation.refused.iter().map(|d| d.to_string()).collect();
        assert_eq!(rendered.len(), 2);
        assert!(rendered[0].starts_with(
            "credentials/x.yaml:8:20: error[E402]: `encrypted_value` of credential `a` was not rotated: encrypted value of credential `a` does not decrypt"
        ));
        assert!(rendered[1].starts_with("credentials/x.yaml:17:20: error[E402]"));
        for message in &rendered {
            assert!(!message.contains("planted"), "{message}");
        }
    }

    #[test]
    fn kms_values_and_broken_documents_are_not_touched() {
        let (_, after) = rings();
        let text = format!(
            "{}---\nkind: Credential\n",
            credential("a", "encrypted_value: \"KMS:AQIDBAUG\"")
        );

        let rotation = rotate_text("credentials/x.yaml", &text, &after, None);

        assert_eq!(rotation.text, text);
        assert_eq!(rotation.current, 0);
        assert!(!rotation.refused.is_empty());
        assert!(rotation.refused[0].message.starts_with("not rotated: "));
    }

    #[test]
    fn locate_finds_plain_and_quoted_scalars_only_verbatim() {
        let text = "a: 1\n  encrypted_value: \"AES256:abc\"\n  b: AES256:xyz\n";

        assert_eq!(locate(text, 2, 20, "AES256:abc"), Some(25));
        assert_eq!(locate(text, 3, 6, "AES256:xyz"), Some(42));
        assert_eq!(locate(text, 3, 6, "AES256:abc"), None);
        assert_eq!(locate(text, 9, 1, "AES256:abc"), None);
    }
}
