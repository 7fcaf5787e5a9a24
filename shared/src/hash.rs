//! Canonical JSON and the content hash that decides whether a resource changed.
//!
//! The canonical form is written by hand with explicitly sorted keys: serde_json's own map
//! order depends on its `preserve_order` feature, which any crate in the build may switch on,
//! and that would silently change every stored hash. `HASH_VERSION` is stored beside each hash
//! so a future change of this form can be told apart from a change of content.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
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

/// A resource's spec as its canonical JSON text (see [`canonical_json`]): what is hashed,
/// carried in plans and written to `resources.spec`. Text, not a `serde_json::Value`, because a
/// value tree takes about ten times the memory (a small map is a whole B-tree node) and at
/// 10,000 resources the specs are most of what a planner holds; as text a plan also serialises
/// by copying. Equal specs have equal text.
#[derive(Clone)]
pub struct Spec(Box<RawValue>);

impl Spec {
    pub fn from_value(value: &Value) -> Spec {
        Spec::of(value)
    }

    /// The canonical text of any JSON-shaped tree (the manifest writes its parsed nodes
    /// straight to it, with no `Value` in between).
    pub(crate) fn of(tree: &impl JsonTree) -> Spec {
        let mut text = String::with_capacity(256);
        write_canonical(&mut text, tree);
        match RawValue::from_string(text) {
            Ok(raw) => Spec(raw),
            // Not reached: the canonical writer writes JSON. Hashing this spec's own text keeps
            // the stored hash true to the stored value even so.
            Err(_) => Spec(RawValue::NULL.to_owned()),
        }
    }

    /// The canonical JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.as_json()).unwrap_or(Value::Null)
    }
}

impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for Spec {}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_json())
    }
}

/// Written as the JSON text itself by serde_json (and parsed by `serde_json::to_value`).
impl Serialize for Spec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Read from any JSON (a plan read back, jsonb's own key order) and made canonical again.
impl<'de> Deserialize<'de> for Spec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Spec, D::Error> {
        Value::deserialize(deserializer).map(|value| Spec::from_value(&value))
    }
}

/// Hash of what a resource's row holds: its labels and its spec. Key order, comments,
/// whitespace and YAML style never change it.
pub fn content_hash(labels: &std::collections::BTreeMap<String, String>, spec: &Spec) -> SpecHash {
    let mut head = String::with_capacity(64);
    head.push_str("{\"labels\":{");
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            head.push(',');
        }
        write_string(&mut head, key);
        head.push(':');
        write_string(&mut head, value);
    }
    head.push_str("},\"spec\":");
    let mut digest = Sha256::new();
    digest.update(head.as_bytes());
    digest.update(spec.as_json().as_bytes());
    digest.update(b"}");
    SpecHash(hex::encode(digest.finalize()))
}

/// The canonical JSON text of `value`: object keys sorted by their UTF-8 bytes, no
/// insignificant whitespace, integers in decimal, other numbers as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

/// One node of a JSON-shaped tree, as the canonical writer reads it.
pub(crate) enum JsonNode<'a, T> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(&'a str),
    Array(&'a [T]),
    /// Entries in any order; of repeated keys the last wins, as in a JSON object.
    Object(Vec<(&'a str, &'a T)>),
}

/// A tree the canonical form can be written from: one writer for every input, so a spec
/// written from YAML and one written from a `Value` can never differ.
pub(crate) trait JsonTree: Sized {
    fn node(&self) -> JsonNode<'_, Self>;
}

impl JsonTree for Value {
    fn node(&self) -> JsonNode<'_, Value> {
        match self {
            Value::Null => JsonNode::Null,
            Value::Bool(b) => JsonNode::Bool(*b),
            Value::Number(n) => JsonNode::Number(n.clone()),
            Value::String(s) => JsonNode::String(s),
            Value::Array(items) => JsonNode::Array(items),
            Value::Object(map) => {
                JsonNode::Object(map.iter().map(|(k, v)| (k.as_str(), v)).collect())
            }
        }
    }
}

fn write_canonical<T: JsonTree>(out: &mut String, tree: &T) {
    match tree.node() {
        JsonNode::Null => out.push_str("null"),
        JsonNode::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        JsonNode::Number(n) => {
            // serde_json prints integers in decimal and finite floats via ryu; both are
            // independent of map ordering features, so reusing its formatting is stable.
            let _ = write!(out, "{n}");
        }
        JsonNode::String(s) => write_string(out, s),
        JsonNode::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        JsonNode::Object(mut entries) => {
            // Stable, so that of repeated keys the last one read is the one kept.
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            entries.dedup_by(|later, earlier| {
                let repeated = later.0 == earlier.0;
                if repeated {
                    *earlier = *later;
                }
                repeated
            });
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

/// Runs that need no escape are copied whole: a spec is mostly such runs, and the hash
/// writes every string of 10,000 specs.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut copied = 0;
    for (at, byte) in s.bytes().enumerate() {
        let escape = match byte {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            byte if byte < 0x20 => None,
            _ => continue,
        };
        // Escaped bytes are ASCII, so `at` and `at + 1` are character boundaries.
        out.push_str(&s[copied..at]);
        match escape {
            Some(escape) => out.push_str(escape),
            None => {
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        copied = at + 1;
    }
    out.push_str(&s[copied..]);
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
            content_hash(&BTreeMap::new(), &Spec::from_value(&a)),
            content_hash(&BTreeMap::new(), &Spec::from_value(&b))
        );
    }

    #[test]
    fn a_changed_value_changes_the_hash() {
        let before = json!({"timeout": 30});
        let after = json!({"timeout": 31});

        assert_ne!(
            content_hash(&BTreeMap::new(), &Spec::from_value(&before)),
            content_hash(&BTreeMap::new(), &Spec::from_value(&after))
        );
    }

    #[test]
    fn a_changed_label_changes_the_hash() {
        let spec = json!({"enabled": true});

        assert_ne!(
            content_hash(&labels(&[("team", "a")]), &Spec::from_value(&spec)),
            content_hash(&labels(&[("team", "b")]), &Spec::from_value(&spec))
        );
    }

    #[test]
    fn array_order_is_significant() {
        assert_ne!(
            content_hash(
                &BTreeMap::new(),
                &Spec::from_value(&json!({"events": ["push", "release"]}))
            ),
            content_hash(
                &BTreeMap::new(),
                &Spec::from_value(&json!({"events": ["release", "push"]}))
            )
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

    /// The escape rules, one character at a time: what `write_string` must write.
    fn escaped_char_by_char(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest::proptest! {
        #[test]
        fn strings_are_escaped_as_one_character_at_a_time_would_and_read_back(
            s in "(\\PC|[\"\\\\\\x00-\\x1f]|é|→|😀){0,40}"
        ) {
            let mut written = String::new();
            write_string(&mut written, &s);

            proptest::prop_assert_eq!(&written, &escaped_char_by_char(&s));
            proptest::prop_assert_eq!(serde_json::from_str::<String>(&written).unwrap(), s);
        }
    }

    #[test]
    fn the_hash_of_a_known_document_is_pinned() {
        // Pins the canonical form: if this changes, HASH_VERSION must change with it.
        let hash = content_hash(
            &labels(&[("team", "platform")]),
            &Spec::from_value(&json!({"enabled": true, "timeout": 30})),
        );

        assert_eq!(
            hash.as_str(),
            hex::encode(Sha256::digest(
                br#"{"labels":{"team":"platform"},"spec":{"enabled":true,"timeout":30}}"#
            ))
        );
    }

    #[test]
    fn a_spec_serialises_as_its_json_and_reads_back_canonical_from_any_key_order() {
        let spec = Spec::from_value(&json!({"b": [1, "x"], "a": {"d": null, "c": 1.5}}));

        let written = serde_json::to_string(&spec).unwrap();
        let read: Spec =
            serde_json::from_str(r#"{ "a": {"c": 1.5, "d": null}, "b": [1, "x"] }"#).unwrap();

        assert_eq!(written, r#"{"a":{"c":1.5,"d":null},"b":[1,"x"]}"#);
        assert_eq!(read, spec);
        assert_eq!(
            spec.to_value(),
            json!({"a": {"c": 1.5, "d": null}, "b": [1, "x"]})
        );
    }
}
