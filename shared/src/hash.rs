//! Canonical JSON and the content hash that decides whether a resource changed.
//!
//! The canonical form is written by hand with explicitly sorted keys: serde_json's own map
//! order depends on its `preserve_order` feature, which any crate in the build may switch on,
//! and that would silently change every stored hash. `HASH_VERSION` is stored beside each hash
//! so a future change of this form can be told apart from a change of content.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Version of the canonical form below; stored with every hash.
pub const HASH_VERSION: i16 = 1;

/// SHA-256 of a resource's canonical JSON, lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpecHash(String);

impl SpecHash {
    /// Wraps a hex digest read back from storage.
    pub fn from_hex(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> &str {
        self.0.get(..12).unwrap_or(&self.0)
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Hash of what a resource's row holds: its labels and its spec. Key order, comments,
/// whitespace and YAML style never change it.
pub fn content_hash(labels: &std::collections::BTreeMap<String, String>, spec: &Value) -> SpecHash {
    let mut text = String::with_capacity(256);
    text.push_str("{\"labels\":{");
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        write_string(&mut text, key);
        text.push(':');
        write_string(&mut text, value);
    }
    text.push_str("},\"spec\":");
    write_canonical(&mut text, spec);
    text.push('}');
    SpecHash(hex::encode(Sha256::digest(text.as_bytes())))
}

/// The canonical JSON text of `value`: object keys sorted by their UTF-8 bytes, no
/// insignificant whitespace, integers in decimal, other numbers as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            // serde_json prints integers in decimal and finite floats via ryu; both are
            // independent of map ordering features, so reusing its formatting is stable.
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reordered_keys_do_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"s","y":[1,2]},"b":1}"#).unwrap();

        assert_eq!(
            content_hash(&BTreeMap::new(), &a),
            content_hash(&BTreeMap::new(), &b)
        );
    }

    #[test]
    fn a_changed_value_changes_the_hash() {
        let before = json!({"timeout": 30});
        let after = json!({"timeout": 31});

        assert_ne!(
            content_hash(&BTreeMap::new(), &before),
            content_hash(&BTreeMap::new(), &after)
        );
    }

    #[test]
    fn a_changed_label_changes_the_hash() {
        let spec = json!({"enabled": true});

        assert_ne!(
            content_hash(&labels(&[("team", "a")]), &spec),
            content_hash(&labels(&[("team", "b")]), &spec)
        );
    }

    #[test]
    fn array_order_is_significant() {
        assert_ne!(
            content_hash(&BTreeMap::new(), &json!({"events": ["push", "release"]})),
            content_hash(&BTreeMap::new(), &json!({"events": ["release", "push"]}))
        );
    }

    #[test]
    fn canonical_json_sorts_keys_and_escapes_control_characters() {
        let value = json!({"z": "line\nbreak\u{1}", "a": [true, null, 1.5, -2]});

        assert_eq!(
            canonical_json(&value),
            r#"{"a":[true,null,1.5,-2],"z":"line\nbreak\u0001"}"#
        );
    }

    #[test]
    fn the_hash_of_a_known_document_is_pinned() {
        // Pins the canonical form: if this changes, HASH_VERSION must change with it.
        let hash = content_hash(
            &labels(&[("team", "platform")]),
            &json!({"enabled": true, "timeout": 30}),
        );

        assert_eq!(
            hash.as_str(),
            hex::encode(Sha256::digest(
                br#"{"labels":{"team":"platform"},"spec":{"enabled":true,"timeout":30}}"#
            ))
        );
    }
}
