//! Field-level diffs of resources, pure: what changes inside a resource between its live row
//! and what Git wants, as JSON Pointer paths with before and after values.
//!
//! Secrets are redacted here, when a change is made, so nothing downstream (text, JSON, logs,
//! stored plans, forge comments) can leak one: a ciphertext (`encrypted_value`, `KMS:…`,
//! `AES256:…`) becomes [`ENCRYPTED`], and a value the secret scanner flags, or any value of a
//! field named like a secret, becomes [`SENSITIVE`].
//!
//! Maps compare by key (their order never matters). Lists of objects that all carry a unique
//! natural key (`name`, then `plugin`, then `type`: stages, steps, triggers) are matched by it;
//! other lists by a line diff of their elements, so an inserted element is one `add`, not a
//! replacement of every element after it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use similar::{Algorithm, DiffOp};

use crate::model::DesiredResource;
use crate::validate::detect_secret;

/// What stands in for a ciphertext.
pub const ENCRYPTED: &str = "(encrypted)";
/// What stands in for a value that is, or may be, a plaintext secret.
pub const SENSITIVE: &str = "(sensitive)";

/// The keys that identify an element of a list, tried in order.
const NATURAL_KEYS: [&str; 3] = ["name", "plugin", "type"];

/// Field names whose values are secrets whatever they look like (compared lower-case, with
/// `-` read as `_`, against the end of the name).
const SECRET_NAME_SUFFIXES: [&str; 11] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api_key",
    "apikey",
    "private_key",
    "secret_key",
    "access_key",
    "client_secret",
];

/// The kind of a change, as in JSON Patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Add,
    Remove,
    Replace,
    /// A keyed list element moved; `before` and `after` are its old and new index.
    Move,
}

/// One change inside a resource. `before` is absent for an add, `after` for a remove. Values
/// are already redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    /// JSON Pointer into the resource document `{"labels": …, "spec": …}`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

impl Change {
    /// Whether either side is a ciphertext: shown as `(changed, encrypted)`, never a value.
    pub fn is_encrypted(&self) -> bool {
        [&self.before, &self.after]
            .into_iter()
            .flatten()
            .any(|v| v.as_str() == Some(ENCRYPTED))
    }

    /// Whether either side was withheld as a possible secret.
    pub fn is_sensitive(&self) -> bool {
        [&self.before, &self.after]
            .into_iter()
            .flatten()
            .any(|v| v.as_str() == Some(SENSITIVE))
    }
}

/// The document a resource is diffed as: its labels and its spec.
pub fn document(labels: &BTreeMap<String, String>, spec: Value) -> Value {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut doc = Map::new();
    doc.insert("labels".into(), Value::Object(labels));
    doc.insert("spec".into(), spec);
    Value::Object(doc)
}

/// The document of a desired resource.
pub fn desired_document(resource: &DesiredResource) -> Value {
    document(&resource.labels, resource.spec.to_value())
}

/// Every change that turns `before` into `after`, redacted, in document order.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk(&mut Vec::new(), before, after, &mut changes);
    changes
}

/// What a create adds: one `add` per label and per top-level field of the spec, redacted.
/// Built from the resource itself, not its [`desired_document`]: a first sync lists this for
/// every one of thousands of resources.
pub fn created(resource: &DesiredResource) -> Vec<Change> {
    let mut changes: Vec<Change> = resource
        .labels
        .iter()
        .map(|(key, value)| Change {
            op: Op::Add,
            path: field_pointer("labels", key),
            before: None,
            after: Some(redacted(field_name(key), Value::from(value.as_str()))),
        })
        .collect();
    match serde_json::from_str::<Map<String, Value>>(resource.spec.as_json()) {
        Ok(fields) => changes.extend(fields.into_iter().map(|(key, value)| Change {
            op: Op::Add,
            path: field_pointer("spec", &key),
            before: None,
            after: Some(redacted(field_name(&key), value)),
        })),
        // A spec is always a mapping; anything else is listed whole.
        Err(_) => changes.push(addition(&["spec".into()], &resource.spec.to_value())),
    }
    changes
}

/// What a delete takes away: one `remove` per label and per top-level field of the live
/// spec, redacted like a create's.
pub fn removals(before: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    for section in ["labels", "spec"] {
        match before.get(section) {
            Some(Value::Object(fields)) => {
                changes.extend(fields.iter().map(|(key, value)| Change {
                    op: Op::Remove,
                    path: field_pointer(section, key),
                    before: Some(redacted(field_name(key), value.clone())),
                    after: None,
                }));
            }
            Some(value) => changes.push(removal(&[section.to_string()], value)),
            None => {}
        }
    }
    changes
}

fn walk(path: &mut Vec<String>, before: &Value, after: &Value, out: &mut Vec<Change>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                path.push(key.clone());
                match (old.get(key), new.get(key)) {
                    (Some(a), Some(b)) => walk(path, a, b, out),
                    (Some(a), None) => out.push(removal(path, a)),
                    (None, Some(b)) => out.push(addition(path, b)),
                    (None, None) => {}
                }
                path.pop();
            }
        }
        (Value::Array(old), Value::Array(new)) => match natural_key(old, new) {
            Some(key) => keyed_lists(path, key, old, new, out),
            None => indexed_lists(path, old, new, out),
        },
        _ => out.push(Change {
            op: Op::Replace,
            path: pointer(path),
            before: Some(redact(path, before)),
            after: Some(redact(path, after)),
        }),
    }
}

fn addition(path: &[String], value: &Value) -> Change {
    Change {
        op: Op::Add,
        path: pointer(path),
        before: None,
        after: Some(redact(path, value)),
    }
}

fn removal(path: &[String], value: &Value) -> Change {
    Change {
        op: Op::Remove,
        path: pointer(path),
        before: Some(redact(path, value)),
        after: None,
    }
}

/// The first natural key that every element of both lists has, as a string, uniquely.
fn natural_key(old: &[Value], new: &[Value]) -> Option<&'static str> {
    NATURAL_KEYS.into_iter().find(|key| {
        [old, new].into_iter().all(|list| {
            let mut seen = BTreeSet::new();
            list.iter().all(|item| {
                item.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|k| seen.insert(k))
            })
        })
    })
}

fn key_of<'v>(item: &'v Value, key: &str) -> &'v str {
    item.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Elements paired by their key: removes at their old index, the rest at their new one, and a
/// `move` for each kept element whose place among the kept ones changed.
fn keyed_lists(
    path: &mut Vec<String>,
    key: &str,
    old: &[Value],
    new: &[Value],
    out: &mut Vec<Change>,
) {
    let old_at: BTreeMap<&str, usize> = old
        .iter()
        .enumerate()
        .map(|(i, item)| (key_of(item, key), i))
        .collect();
    let new_keys: BTreeSet<&str> = new.iter().map(|item| key_of(item, key)).collect();
    for (i, item) in old.iter().enumerate() {
        if !new_keys.contains(key_of(item, key)) {
            path.push(i.to_string());
            out.push(removal(path, item));
            path.pop();
        }
    }
    // Order among the elements both lists keep: a move is only reported when that changes,
    // not when an insert or a delete shifts indexes.
    let kept_old: Vec<&str> = old
        .iter()
        .map(|item| key_of(item, key))
        .filter(|k| new_keys.contains(k))
        .collect();
    let kept_new: Vec<&str> = new
        .iter()
        .map(|item| key_of(item, key))
        .filter(|k| old_at.contains_key(k))
        .collect();
    let stayed: BTreeSet<&str> =
        similar::capture_diff_slices(Algorithm::Myers, &kept_old, &kept_new)
            .iter()
            .filter_map(|op| match op {
                DiffOp::Equal { new_index, len, .. } => kept_new.get(*new_index..new_index + len),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
    for (j, item) in new.iter().enumerate() {
        let name = key_of(item, key);
        path.push(j.to_string());
        match old_at.get(name).and_then(|&i| Some((i, old.get(i)?))) {
            None => out.push(addition(path, item)),
            Some((i, previous)) => {
                if !stayed.contains(name) {
                    out.push(Change {
                        op: Op::Move,
                        path: pointer(path),
                        before: Some(Value::from(i)),
                        after: Some(Value::from(j)),
                    });
                }
                walk(path, previous, item, out);
            }
        }
        path.pop();
    }
}

/// Elements paired by a diff of their canonical text: a replaced run is diffed element by
/// element, the rest of it added or removed.
fn indexed_lists(path: &mut Vec<String>, old: &[Value], new: &[Value], out: &mut Vec<Change>) {
    let old_text: Vec<String> = old.iter().map(Value::to_string).collect();
    let new_text: Vec<String> = new.iter().map(Value::to_string).collect();
    for op in similar::capture_diff_slices(Algorithm::Myers, &old_text, &new_text) {
        match op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete {
                old_index, old_len, ..
            } => each(old, old_index, old_len, |i, item| {
                path.push(i.to_string());
                out.push(removal(path, item));
                path.pop();
            }),
            DiffOp::Insert {
                new_index, new_len, ..
            } => each(new, new_index, new_len, |j, item| {
                path.push(j.to_string());
                out.push(addition(path, item));
                path.pop();
            }),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => {
                let paired = old_len.min(new_len);
                for k in 0..paired {
                    if let (Some(a), Some(b)) = (old.get(old_index + k), new.get(new_index + k)) {
                        path.push((new_index + k).to_string());
                        walk(path, a, b, out);
                        path.pop();
                    }
                }
                each(old, old_index + paired, old_len - paired, |i, item| {
                    path.push(i.to_string());
                    out.push(removal(path, item));
                    path.pop();
                });
                each(new, new_index + paired, new_len - paired, |j, item| {
                    path.push(j.to_string());
                    out.push(addition(path, item));
                    path.pop();
                });
            }
        }
    }
}

fn each(list: &[Value], start: usize, len: usize, mut f: impl FnMut(usize, &Value)) {
    for (offset, item) in list.iter().skip(start).take(len).enumerate() {
        f(start + offset, item);
    }
}

/// `value` at `path` with every secret in it replaced by a marker.
pub fn redact(path: &[String], value: &Value) -> Value {
    let field = path
        .iter()
        .rev()
        .find(|segment| segment.parse::<usize>().is_err());
    redacted(field.map(String::as_str), value.clone())
}

/// `key` as the name [`redacted`] goes by: a key that reads as a list index is no name (as in
/// a path, where it cannot be told from one), so the field above it names its value.
fn field_name(key: &str) -> Option<&str> {
    key.parse::<usize>().is_err().then_some(key)
}

/// `value` redacted as [`redact`] does, given the name of the nearest field that holds it (list
/// indexes are not names): only that name decides, so no path is built while walking.
fn redacted(field: Option<&str>, value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, v)| {
                    let v = redacted(field_name(&key).or(field), v);
                    (key, v)
                })
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| redacted(field, v)).collect())
        }
        Value::Null => Value::Null,
        _ if field == Some("encrypted_value") => Value::from(ENCRYPTED),
        Value::String(text) if is_ciphertext(&text) => Value::from(ENCRYPTED),
        _ if field.is_some_and(is_secret_name) => Value::from(SENSITIVE),
        Value::String(text) if detect_secret(&text).is_some() => Value::from(SENSITIVE),
        other => other,
    }
}

fn is_ciphertext(text: &str) -> bool {
    text.starts_with("KMS:") || text.starts_with("AES256:")
}

/// Whether a field of this name holds a secret (`password`, `API_TOKEN`, `client-secret`).
/// References to secrets (`secret_ref`, `credentials`) are names, not secrets.
pub fn is_secret_name(field: &str) -> bool {
    let field = field.as_bytes();
    let folded = |b: &u8| {
        if *b == b'-' {
            b'_'
        } else {
            b.to_ascii_lowercase()
        }
    };
    SECRET_NAME_SUFFIXES.iter().any(|suffix| {
        let Some(head) = field.len().checked_sub(suffix.len()) else {
            return false;
        };
        field[head..].iter().map(folded).eq(suffix.bytes())
            && (head == 0 || folded(&field[head - 1]) == b'_')
    })
}

/// A JSON Pointer (RFC 6901) of path segments.
pub fn pointer(path: &[String]) -> String {
    let mut text = String::new();
    for segment in path {
        push_segment(&mut text, segment);
    }
    text
}

/// The pointer to `/section/field`.
fn field_pointer(section: &str, field: &str) -> String {
    let mut text = String::with_capacity(2 + section.len() + field.len());
    push_segment(&mut text, section);
    push_segment(&mut text, field);
    text
}

fn push_segment(text: &mut String, segment: &str) {
    text.push('/');
    if segment.contains(['~', '/']) {
        text.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    } else {
        text.push_str(segment);
    }
}

/// The segments of a JSON Pointer.
pub fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// A pointer as people read it: `/spec/triggers/1/type` → `spec.triggers[1].type`.
pub fn display_path(pointer: &str) -> String {
    let mut text = String::with_capacity(pointer.len() + 4);
    for raw in pointer.split('/').skip(1) {
        let segment = if raw.contains('~') {
            std::borrow::Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            text.push('[');
            text.push_str(&segment);
            text.push(']');
        } else if !segment.is_empty()
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(&segment);
        } else {
            text.push('[');
            text.push_str(&Value::from(segment.as_ref()).to_string());
            text.push(']');
        }
    }
    text
}

/// A value on one line, at most about `width` characters: `{type: cron, schedule: "0 2 * * *", …}`.
pub fn compact(value: &Value, width: usize) -> String {
    let mut text = String::new();
    write_compact(&mut text, value, width);
    text
}

fn write_compact(out: &mut String, value: &Value, width: usize) {
    let budget_left = |out: &String| out.chars().count() < width;
    match value {
        Value::Object(map) => {
            out.push('{');
            for (i, (key, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if !budget_left(out) {
                    out.push('…');
                    break;
                }
                out.push_str(key);
                out.push_str(": ");
                write_compact(out, v, width);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if !budget_left(out) {
                    out.push('…');
                    break;
                }
                write_compact(out, v, width);
            }
            out.push(']');
        }
        Value::String(text) if text == ENCRYPTED || text == SENSITIVE => out.push_str(text),
        Value::String(text) if text.contains('\n') => {
            out.push_str(&format!("<{} lines>", text.lines().count()));
        }
        Value::String(text) => {
            let short = shorten(text, (width / 2).max(16));
            if plain_word(text) {
                out.push_str(&short);
            } else {
                out.push_str(&Value::from(short).to_string());
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `text` cut to `max` characters, the cut marked with `…`.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Words that read the same quoted or not, inside a compact value.
fn plain_word(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        && !matches!(text, "true" | "false" | "null")
        && text.parse::<f64>().is_err()
}

/// A string change both sides of which are multi-line: a unified diff of its lines.
pub fn unified(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(2)
        .to_string()
}

/// One line of a change as text: `marker` is `+`, `-`, `~` or `>` (a move) for the change's
/// own line, and `+`, `-` or ` ` for the lines of a multi-line string's unified diff, whose
/// `text` is indented under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub marker: char,
    pub text: String,
}

/// How wide a value may get on a change's line.
const VALUE_WIDTH: usize = 72;

/// A change as people read it, Terraform-like: `~ spec.description: "old" → "new"`,
/// `+ spec.triggers[1]: {type: cron, …}`, `- spec.environment.MAVEN_OPTS`, `~ spec.value:
/// (changed, encrypted)`; a multi-line string as a unified diff under its path.
pub fn lines(change: &Change) -> Vec<Line> {
    let path = display_path(&change.path);
    let one = |marker: char, text: String| vec![Line { marker, text }];
    match change.op {
        Op::Add => one('+', format!("+ {path}: {}", shown(change.after.as_ref()))),
        Op::Remove => one('-', format!("- {path}")),
        Op::Move => one(
            '>',
            format!("> {path}: moved from [{}]", shown(change.before.as_ref())),
        ),
        Op::Replace if change.is_encrypted() => one('~', format!("~ {path}: (changed, encrypted)")),
        Op::Replace if change.is_sensitive() => one('~', format!("~ {path}: {SENSITIVE}")),
        Op::Replace => match (
            change.before.as_ref().and_then(Value::as_str),
            change.after.as_ref().and_then(Value::as_str),
        ) {
            (Some(before), Some(after)) if before.contains('\n') || after.contains('\n') => {
                let mut out = one('~', format!("~ {path}:"));
                out.extend(unified(before, after).lines().map(|line| {
                    Line {
                        marker: line
                            .chars()
                            .next()
                            .filter(|c| matches!(c, '+' | '-'))
                            .unwrap_or(' '),
                        text: format!("    {line}"),
                    }
                }));
                out
            }
            _ => one(
                '~',
                format!(
                    "~ {path}: {} → {}",
                    shown(change.before.as_ref()),
                    shown(change.after.as_ref())
                ),
            ),
        },
    }
}

/// The lines of [`created`] as [`lines`] shows them, read straight from the resource: the
/// spec's JSON text is walked once, each value written as it is read and the rest of it skipped
/// once the line is full, so a first sync that lists thousands of creates builds no value
/// trees. Redacted by the same rule as [`redact`].
pub fn created_lines(resource: &DesiredResource) -> Vec<Line> {
    let mut listed = Vec::with_capacity(resource.labels.len() + 8);
    for (key, value) in &resource.labels {
        let value = redacted(field_name(key), Value::from(value.as_str()));
        listed.push(added(&field_pointer("labels", key), &shown(Some(&value))));
    }
    let mut deserializer = serde_json::Deserializer::from_str(resource.spec.as_json());
    let mut fields = Vec::new();
    match serde::Deserializer::deserialize_map(&mut deserializer, TopLevel(&mut fields)) {
        Ok(()) => listed.extend(
            fields
                .iter()
                .map(|(key, value)| added(&field_pointer("spec", key), value)),
        ),
        // A spec is always a mapping; anything else is listed as `created` lists it.
        Err(_) => {
            let changes = created(resource);
            let labels = resource.labels.len().min(changes.len());
            listed.extend(changes[labels..].iter().flat_map(lines));
        }
    }
    listed
}

fn added(pointer: &str, shown: &str) -> Line {
    Line {
        marker: '+',
        text: format!("+ {}: {shown}", display_path(pointer)),
    }
}

/// A spec's top-level fields, each with its value as [`shown`] writes it.
struct TopLevel<'a>(&'a mut Vec<(String, String)>);

impl<'de> serde::de::Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let mut text = String::new();
            map.next_value_seed(Shown {
                out: &mut text,
                field: field_name(&key),
                top: true,
            })?;
            self.0.push((key.into_owned(), text));
        }
        Ok(())
    }
}

/// One value written as [`shown`] (`top`) or [`compact`] writes its redacted form.
struct Shown<'o, 'f> {
    out: &'o mut String,
    /// The nearest field name above the value, as [`redacted`] takes it.
    field: Option<&'f str>,
    top: bool,
}

impl Shown<'_, '_> {
    /// A scalar's redacted stand-in, if the rule of [`redacted`] replaces it.
    fn stand_in(&self, text: Option<&str>) -> Option<&'static str> {
        if self.field == Some("encrypted_value") || text.is_some_and(is_ciphertext) {
            Some(ENCRYPTED)
        } else if self.field.is_some_and(is_secret_name)
            || text.is_some_and(|text| detect_secret(text).is_some())
        {
            Some(SENSITIVE)
        } else {
            None
        }
    }

    fn string(self, text: &str) {
        if let Some(marker) = self.stand_in(Some(text)) {
            self.out.push_str(marker);
        } else if text == ENCRYPTED || text == SENSITIVE {
            self.out.push_str(text);
        } else if text.contains('\n') {
            self.out
                .push_str(&format!("<{} lines>", text.lines().count()));
        } else if self.top {
            self.out
                .push_str(&Value::from(shorten(text, VALUE_WIDTH)).to_string());
        } else {
            let short = shorten(text, (VALUE_WIDTH / 2).max(16));
            if plain_word(text) {
                self.out.push_str(&short);
            } else {
                self.out.push_str(&Value::from(short).to_string());
            }
        }
    }

    fn other(self, value: impl std::fmt::Display) {
        match self.stand_in(None) {
            Some(marker) => self.out.push_str(marker),
            None => self.out.push_str(&value.to_string()),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Shown<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shown<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.other(value);
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.other(Value::from(value));
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.other(Value::from(value));
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.other(Value::from(value));
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.string(value);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push_str("null");
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        self.out.push('[');
        let mut first = true;
        let mut full = false;
        while let Some(()) = items.next_element_seed(Item {
            out: &mut *self.out,
            field: self.field,
            first,
            full: &mut full,
        })? {
            first = false;
            if full {
                while items.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                break;
            }
        }
        self.out.push(']');
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push('{');
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if !first {
                self.out.push_str(", ");
            }
            first = false;
            if self.out.chars().count() >= VALUE_WIDTH {
                self.out.push('…');
                map.next_value::<serde::de::IgnoredAny>()?;
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                break;
            }
            self.out.push_str(&key);
            self.out.push_str(": ");
            map.next_value_seed(Shown {
                out: &mut *self.out,
                field: field_name(&key).or(self.field),
                top: false,
            })?;
        }
        self.out.push('}');
        Ok(())
    }
}

/// An element of a list inside [`Shown`]: the separator and the width check come first, as
/// [`compact`] does them, which needs to know the element is there.
struct Item<'o, 'f, 'b> {
    out: &'o mut String,
    field: Option<&'f str>,
    first: bool,
    full: &'b mut bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Item<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if !self.first {
            self.out.push_str(", ");
        }
        if self.out.chars().count() >= VALUE_WIDTH {
            self.out.push('…');
            *self.full = true;
            return serde::de::IgnoredAny::deserialize(deserializer).map(drop);
        }
        Shown {
            out: self.out,
            field: self.field,
            top: false,
        }
        .deserialize(deserializer)
    }
}

/// A field of a deleted resource, listed the way a create lists its fields:
/// `- spec.version: "1.0.0"` (an update's removal names only its path).
pub fn listed_removal(change: &Change) -> Vec<Line> {
    let path = display_path(&change.path);
    vec![Line {
        marker: '-',
        text: format!("- {path}: {}", shown(change.before.as_ref())),
    }]
}

fn shown(value: Option<&Value>) -> String {
    match value {
        None => "(none)".to_string(),
        Some(Value::String(text)) if text == ENCRYPTED || text == SENSITIVE => text.clone(),
        Some(Value::String(text)) if !text.contains('\n') => {
            Value::from(shorten(text, VALUE_WIDTH)).to_string()
        }
        Some(value) => compact(value, VALUE_WIDTH),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn change(op: Op, path: &str, before: Option<Value>, after: Option<Value>) -> Change {
        Change {
            op,
            path: path.into(),
            before,
            after,
        }
    }

    #[test]
    fn nested_map_changes_name_the_leaf_that_changed() {
        let before = json!({"spec": {"description": "Backend microservice", "build": {"config": {"jdk": "17", "opts": "-Xmx2g"}}}});
        let after = json!({"spec": {"description": "Backend service", "build": {"config": {"jdk": "21"}}, "timeout": 30}});

        let changes = diff(&before, &after);

        assert_eq!(
            changes,
            [
                change(
                    Op::Replace,
                    "/spec/build/config/jdk",
                    Some(json!("17")),
                    Some(json!("21"))
                ),
                change(
                    Op::Remove,
                    "/spec/build/config/opts",
                    Some(json!("-Xmx2g")),
                    None
                ),
                change(
                    Op::Replace,
                    "/spec/description",
                    Some(json!("Backend microservice")),
                    Some(json!("Backend service"))
                ),
                change(Op::Add, "/spec/timeout", None, Some(json!(30))),
            ]
        );
    }

    #[test]
    fn reordering_keys_is_no_change() {
        let before: Value =
            serde_json::from_str(r#"{"spec": {"a": 1, "b": {"x": [1, 2], "y": "z"}}}"#).unwrap();
        let after: Value =
            serde_json::from_str(r#"{"spec": {"b": {"y": "z", "x": [1, 2]}, "a": 1}}"#).unwrap();

        assert_eq!(diff(&before, &after), []);
    }

    #[test]
    fn keyed_lists_match_by_name_and_report_moves_and_inner_changes() {
        let before = json!({"stages": [
            {"name": "build", "steps": [{"plugin": "maven-build"}]},
            {"name": "test", "steps": [{"plugin": "maven-test"}, {"plugin": "jacoco", "config": {"report": true}}]},
            {"name": "notify"},
        ]});
        let after = json!({"stages": [
            {"name": "test", "steps": [{"plugin": "jacoco", "config": {"report": false}}, {"plugin": "maven-test"}]},
            {"name": "build", "steps": [{"plugin": "maven-build"}]},
            {"name": "package"},
        ]});

        let changes = diff(&before, &after);

        assert_eq!(
            changes,
            [
                change(
                    Op::Remove,
                    "/stages/2",
                    Some(json!({"name": "notify"})),
                    None
                ),
                change(Op::Move, "/stages/0", Some(json!(1)), Some(json!(0))),
                change(
                    Op::Move,
                    "/stages/0/steps/0",
                    Some(json!(1)),
                    Some(json!(0))
                ),
                change(
                    Op::Replace,
                    "/stages/0/steps/0/config/report",
                    Some(json!(true)),
                    Some(json!(false))
                ),
                change(Op::Add, "/stages/2", None, Some(json!({"name": "package"}))),
            ]
        );
    }

    #[test]
    fn triggers_match_by_type_so_an_edit_is_not_a_replacement() {
        let before = json!({"triggers": [{"type": "webhook", "events": ["push"]}, {"type": "cron", "schedule": "0 2 * * *"}]});
        let after = json!({"triggers": [{"type": "webhook", "events": ["push"]}, {"type": "cron", "schedule": "0 3 * * *"}]});

        assert_eq!(
            diff(&before, &after),
            [change(
                Op::Replace,
                "/triggers/1/schedule",
                Some(json!("0 2 * * *")),
                Some(json!("0 3 * * *"))
            )]
        );
    }

    #[test]
    fn unkeyed_lists_report_an_insert_once_not_every_shifted_element() {
        let before = json!({"goals": ["clean", "package", "verify"]});
        let after = json!({"goals": ["clean", "compile", "package", "verify"]});

        assert_eq!(
            diff(&before, &after),
            [change(Op::Add, "/goals/1", None, Some(json!("compile")))]
        );
        let moved = json!({"goals": ["verify", "clean", "package"]});
        assert_eq!(
            diff(&before, &moved),
            [
                change(Op::Add, "/goals/0", None, Some(json!("verify"))),
                change(Op::Remove, "/goals/2", Some(json!("verify")), None),
            ]
        );
    }

    #[test]
    fn lists_with_duplicate_keys_fall_back_to_indexes() {
        let before = json!([{"plugin": "maven-build", "goals": "a"}, {"plugin": "maven-build", "goals": "b"}]);
        let after = json!([{"plugin": "maven-build", "goals": "a"}, {"plugin": "maven-build", "goals": "c"}]);

        assert_eq!(
            diff(&before, &after),
            [change(
                Op::Replace,
                "/1/goals",
                Some(json!("b")),
                Some(json!("c"))
            )]
        );
    }

    #[test]
    fn multi_line_strings_are_one_replace_rendered_as_a_unified_diff() {
        let before = json!({"script": "set -e\nmake build\nmake test\n"});
        let after = json!({"script": "set -e\nmake build\nmake check\n"});

        let changes = diff(&before, &after);
        let text = unified(
            changes[0].before.as_ref().and_then(Value::as_str).unwrap(),
            changes[0].after.as_ref().and_then(Value::as_str).unwrap(),
        );

        assert_eq!(changes.len(), 1);
        assert!(text.contains("-make test\n"), "{text}");
        assert!(text.contains("+make check\n"), "{text}");
        assert!(text.contains(" make build\n"), "{text}");
    }

    #[test]
    fn ciphertexts_are_never_shown_in_any_position() {
        let old_blob = "AES256:b2xkLWNpcGhlcnRleHQtYmxvYi1vZi1lbm91Z2gtYnl0ZXM=";
        let new_blob = "AES256:bmV3LWNpcGhlcnRleHQtYmxvYi1vZi1lbm91Z2gtYnl0ZXM=";
        let kms = "KMS:AQICAHh4bmV3LWttcy1ibG9i";
        let before = json!({"spec": {"encrypted_value": old_blob, "extra": [kms]}});
        let after = json!({"spec": {"encrypted_value": new_blob, "nested": {"encrypted_value": new_blob, "other": kms}}});

        let changes = diff(&before, &after);
        let text = serde_json::to_string(&changes).unwrap();

        for secret in [old_blob, new_blob, kms] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(
            changes[0],
            change(
                Op::Replace,
                "/spec/encrypted_value",
                Some(json!(ENCRYPTED)),
                Some(json!(ENCRYPTED))
            )
        );
        assert!(changes[0].is_encrypted());
        assert!(
            text.contains(r#""after":{"encrypted_value":"(encrypted)","other":"(encrypted)"}"#),
            "{text}"
        );
    }

    #[test]
    fn a_key_that_reads_as_an_index_is_named_by_the_field_above_it() {
        let value = json!({"password": {"0": "hunter2", "note": "plain"}});

        assert_eq!(
            redact(&["spec".into()], &value),
            json!({"password": {"0": SENSITIVE, "note": "plain"}})
        );
    }

    #[test]
    fn scanner_flagged_and_secret_named_values_are_sensitive() {
        let token = format!("ghp_{}", "a8Kd93JfQ2mZx7Lp0WcR5tYb1NvE6hUg4sDq");
        let before = json!({"spec": {"environment": {"API_TOKEN": "abc", "NOTE": "plain"}, "db-password": "hunter2"}});
        let after = json!({"spec": {"environment": {"API_TOKEN": "def", "NOTE": format!("use {token}")}, "db-password": "hunter3", "secret_ref": {"key": "prod/x"}}});

        let changes = diff(&before, &after);
        let text = serde_json::to_string(&changes).unwrap();

        for secret in ["abc", "def", "hunter2", "hunter3", token.as_str()] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            changes.iter().filter(|c| c.is_sensitive()).count(),
            3,
            "{text}"
        );
        // A reference to a secret is a name, shown as it is.
        assert!(text.contains("prod/x"), "{text}");
    }

    #[test]
    fn secret_names_are_recognised_by_their_ending_word() {
        for name in [
            "password",
            "DB_PASSWORD",
            "client-secret",
            "GITHUB_TOKEN",
            "api_key",
            "token",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "secret_ref",
            "credentials",
            "tokens_used",
            "description",
            "keyword",
            "tokenizer",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
    }

    #[test]
    fn lines_read_like_terraform_and_never_show_a_ciphertext() {
        let before = json!({"spec": {"description": "Backend microservice", "environment": {"MAVEN_OPTS": "-Xmx2g"}, "encrypted_value": "KMS:b2xk", "triggers": [{"type": "webhook"}], "script": "a\nb\n"}});
        let after = json!({"spec": {"description": "Backend service", "environment": {}, "encrypted_value": "KMS:bmV3", "triggers": [{"type": "webhook"}, {"type": "cron", "schedule": "0 2 * * *"}], "script": "a\nc\n"}});

        let text: Vec<String> = diff(&before, &after)
            .iter()
            .flat_map(lines)
            .map(|line| line.text)
            .collect();

        assert_eq!(
            text,
            [
                "~ spec.description: \"Backend microservice\" → \"Backend service\"",
                "~ spec.encrypted_value: (changed, encrypted)",
                "- spec.environment.MAVEN_OPTS",
                "~ spec.script:",
                "    @@ -1,2 +1,2 @@",
                "     a",
                "    -b",
                "    +c",
                "+ spec.triggers[1]: {schedule: \"0 2 * * *\", type: cron}",
            ]
        );
    }

    #[test]
    fn pointers_escape_and_read_back_as_people_write_paths() {
        let path = vec![
            "spec".to_string(),
            "a/b".to_string(),
            "3".to_string(),
            "x~y".to_string(),
        ];

        let text = pointer(&path);

        assert_eq!(text, "/spec/a~1b/3/x~0y");
        assert_eq!(segments(&text), path);
        assert_eq!(
            display_path("/spec/triggers/1/type"),
            "spec.triggers[1].type"
        );
        assert_eq!(display_path("/spec/a~1b"), "spec[\"a/b\"]");
    }

    #[test]
    fn compact_values_stay_on_one_short_line() {
        let value = json!({"type": "cron", "schedule": "0 2 * * *", "branches": ["main"], "note": "x".repeat(100)});

        let text = compact(&value, 40);

        assert!(text.starts_with("{branches: [main], note: xxx"), "{text}");
        assert!(text.chars().count() < 60, "{text}");
        assert!(text.ends_with("…}"), "{text}");
        assert_eq!(compact(&json!("line1\nline2\n"), 40), "<2 lines>");
    }

    /// Strings that meet each rule of the redaction and of the one-line display.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z0-9_./-]{0,12}",
            "[ -~]{0,90}",
            "[a-z ]{1,20}\n[a-z ]{0,20}\n?",
            Just("AES256:b2xkLWNpcGhlcnRleHQtYmxvYi1vZi1lbm91Z2gtYnl0ZXM=".to_string()),
            Just("KMS:AQICAHh4bmV3LWttcy1ibG9i".to_string()),
            Just("use ghp_Zq8xW3vN7kP2mR5tY9bC4dF6gH1jL0aS3eU7 here".to_string()),
            Just(SENSITIVE.to_string()),
            Just("true".to_string()),
            Just("1.5".to_string()),
            "\\PC{0,40}",
        ]
    }

    fn key() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "[a-z_]{1,10}",
            Just("encrypted_value".to_string()),
            Just("API_TOKEN".to_string()),
            Just("client-secret".to_string()),
            Just("secret_ref".to_string()),
            "[a-z/~ \"]{1,6}",
            "[0-9]{1,3}",
            "\\PC{1,8}",
        ]
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                proptest::collection::btree_map(key(), inner, 0..8)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        #[test]
        fn a_create_streamed_lists_what_its_changes_show(
            spec in proptest::collection::btree_map(key(), json_value(), 0..10),
            labels in proptest::collection::btree_map(key(), text(), 0..3),
        ) {
            let spec = crate::hash::Spec::from_value(&Value::Object(spec.into_iter().collect()));
            let resource = DesiredResource {
                id: crate::model::ResourceId::new(crate::model::Kind::Job, "job"),
                hash: crate::hash::content_hash(&labels, &spec),
                labels,
                spec,
                source: crate::model::SourceLocation::new("jobs/job.yaml".to_string(), 1, 1),
            };

            let expected: Vec<Line> = created(&resource).iter().flat_map(lines).collect();

            proptest::prop_assert_eq!(created_lines(&resource), expected);
        }
    }
}
