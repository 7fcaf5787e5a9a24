//! YAML text → a tree of positioned nodes, with the parser's options pinned in one place.
//!
//! An ordinary file (no anchor, alias, tag, merge key or number in an unusual spelling) is
//! built straight from the parser's events, with every position (`event_tree`).
//! serde-saphyr parses every other file. Reading a node through `serde_saphyr::Spanned` gives its line and column but makes
//! that parse about twice as slow, and positions are only ever shown in diagnostics, which
//! most files never have. So such a file is first parsed with positions on its document roots
//! only ([`Spans::Roots`]); every other node gets an ordinal instead: its place in a
//! post-order walk of the file. [`positions`] parses the file again with every span and turns
//! ordinals into lines and columns, for the few files that need them.
//! Duplicate keys are passed through to the tree (not rejected by the parser) so they can be
//! reported with both positions, next to every other problem of the document.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::{DuplicateKeyPolicy, MergeKeyPolicy, NonFiniteFloatPolicy};
use serde_saphyr::{Budget, Options, Spanned};

use super::Limits;

/// A YAML node and where it was written (1-based). A node parsed without its span has line 0
/// and its ordinal as column (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: NodeValue,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Entries in document order, duplicates kept (the schema check reports them).
    Map(Vec<(Key, Node)>),
}

/// A mapping key. Keys that are not strings keep a description of what they are, so they can
/// be reported (E206) rather than silently stringified.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub name: String,
    pub is_string: bool,
    pub line: u32,
    pub column: u32,
}

impl NodeValue {
    /// What a user would call this kind of value, for "expected …, found …" messages.
    pub fn describe(&self) -> &'static str {
        match self {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) | NodeValue::UInt(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::String(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    pub fn is_scalar(&self) -> bool {
        !matches!(self, NodeValue::Seq(_) | NodeValue::Map(_))
    }
}

/// Why a file did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// True when a resource limit (depth, nodes, aliases…) was hit rather than bad syntax.
    pub over_budget: bool,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// The most documents one file may hold.
pub(super) const MAX_DOCUMENTS: usize = 1_024;

/// The parser setup. Everything here changes what a file parses to, and therefore the hash of
/// every resource: it is part of what is hashed, and changing any of it is a format change
/// (bump `hash::HASH_VERSION` with it).
pub fn parser_options(limits: &Limits) -> Options {
    let mut budget = Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_alias_expansions;
    budget.max_reader_input_bytes = usize::try_from(limits.max_file_bytes).ok();
    budget.max_total_scalar_bytes = usize::try_from(limits.max_file_bytes)
        .unwrap_or(usize::MAX)
        .saturating_mul(4);
    budget.flow_nesting_limit = limits.max_depth;
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_events = limits.max_nodes.saturating_mul(4);
    budget.max_merge_keys = limits.max_alias_expansions;

    let mut options = Options::default();
    options.budget = Some(budget);
    // Aliases replay their anchor's events: bound the total so a "billion laughs" stops early
    // (an alias of a small mapping replays a dozen events; 16 per allowed alias is generous).
    options.alias_limits.max_total_replayed_events = limits.max_alias_expansions.saturating_mul(16);
    options.alias_limits.max_replay_stack_depth = limits.max_depth;
    options.alias_limits.max_alias_expansions_per_anchor = limits.max_alias_expansions;
    // Duplicates reach the tree and are reported as E104 with both positions.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // `<<: *defaults` is common in CI configs; explicit keys override merged ones.
    options.merge_keys = MergeKeyPolicy::Merge;
    // YAML 1.2 core booleans only: `yes`, `on`, `y` stay strings.
    options.strict_booleans = true;
    // `0755` is decimal 755 in YAML 1.2 and octal in 1.1: keep such spellings (and `1_000`)
    // as the strings they were written as rather than guess.
    options.legacy_octal_numbers = false;
    options.leading_zero_numbers_as_strings = true;
    options.underscored_numbers_as_strings = true;
    options.non_finite_float_policy = NonFiniteFloatPolicy::AsString;
    // Application tags (`!secret x`) would otherwise be dropped silently.
    options.reject_unsupported_tags = true;
    options.ignore_binary_tag_for_string = false;
    options.no_schema = false;
    options.angle_conversions = false;
    options.strict_indentation = false;
    // Errors carry no copy of the input (it may hold secrets).
    options.with_snippet = false;
    options.crop_radius = 0;
    options
}

/// Which nodes a parse gives a line and column to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spans {
    /// Every node and key.
    Every,
    /// Document roots only; every other node and key carries its ordinal.
    Roots,
}

/// Parses every document of a file with serde-saphyr (see the module docs for when).
pub(crate) fn parse_with_serde_saphyr(
    text: &str,
    limits: &Limits,
    spans: Spans,
) -> Result<Vec<Node>, ParseError> {
    let options = parser_options(limits);
    match spans {
        Spans::Every => {
            let docs: Vec<Spanned<NodeValue>> =
                serde_saphyr::from_multiple_with_options(text, options)
                    .map_err(|error| parse_error(&error))?;
            Ok(docs.into_iter().map(node_from).collect())
        }
        Spans::Roots => {
            let docs: Vec<Spanned<Unspanned>> =
                serde_saphyr::from_multiple_with_options(text, options)
                    .map_err(|error| parse_error(&error))?;
            let mut next = 0u32;
            Ok(docs
                .into_iter()
                .map(|doc| {
                    let mut root = Node {
                        value: doc.value.0,
                        line: line_of(&doc.referenced),
                        column: clamp(doc.referenced.column()),
                    };
                    walk_positions(&mut root.value, &mut |line, column| {
                        *column = next;
                        next = next.saturating_add(1);
                        *line = 0;
                    });
                    root
                })
                .collect())
        }
    }
}

/// The line and column of every ordinal of `text` parsed with [`Spans::Roots`], in ordinal
/// order.
pub(crate) fn positions(text: &str, limits: &Limits) -> Result<Vec<(u32, u32)>, ParseError> {
    let mut found = Vec::new();
    // Only serde-saphyr's trees carry ordinals: the event tree has every position already.
    for mut root in parse_with_serde_saphyr(text, limits, Spans::Every)? {
        walk_positions(&mut root.value, &mut |line, column| {
            found.push((*line, *column));
        });
    }
    Ok(found)
}

/// Calls `visit` with the position of every key and node under `value`, in one fixed order (a
/// node after its children, a key before its value). An ordinal is an index into this order;
/// both parses of a file give the same tree shape, so they agree on ordinals.
fn walk_positions(value: &mut NodeValue, visit: &mut impl FnMut(&mut u32, &mut u32)) {
    match value {
        NodeValue::Seq(items) => {
            for item in items {
                walk_positions(&mut item.value, visit);
                visit(&mut item.line, &mut item.column);
            }
        }
        NodeValue::Map(entries) => {
            for (key, node) in entries {
                visit(&mut key.line, &mut key.column);
                walk_positions(&mut node.value, visit);
                visit(&mut node.line, &mut node.column);
            }
        }
        _ => {}
    }
}

/// Runs `work` on a thread whose stack fits `limits.max_depth` levels of the recursive
/// deserializer even in debug builds (each level costs tens of kilobytes there, more than the
/// 2 MiB a spawned thread gets by default). Falls back to the current thread if no thread can
/// be started.
pub(crate) fn with_parser_stack<T: Send>(limits: &Limits, work: impl FnOnce() -> T + Send) -> T {
    let stack = (8 << 20) + limits.max_depth.min(4_096).saturating_mul(256 << 10);
    let cell = std::sync::Mutex::new(Some(work));
    let outcome = std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("ritmo-manifest".into())
            .stack_size(stack)
            .spawn_scoped(scope, || {
                let work = cell.lock().ok().and_then(|mut w| w.take());
                work.map(|work| work())
            });
        match spawned {
            Ok(handle) => Some(handle.join()),
            Err(_) => None,
        }
    });
    match outcome {
        Some(Ok(Some(value))) => value,
        Some(Err(panic)) => std::panic::resume_unwind(panic),
        // The thread did not start (or could not take the work): do it here.
        Some(Ok(None)) | None => {
            let work = cell
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| unreachable!("the work runs exactly once"));
            work()
        }
    }
}

fn node_from(spanned: Spanned<NodeValue>) -> Node {
    Node {
        value: spanned.value,
        line: line_of(&spanned.referenced),
        column: clamp(spanned.referenced.column()),
    }
}

/// Line 0 marks a node without its span, so a line the parser could not tell becomes 1.
fn line_of(location: &serde_saphyr::Location) -> u32 {
    clamp(location.line()).max(1)
}

pub(super) fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn parse_error(error: &serde_saphyr::Error) -> ParseError {
    use serde_saphyr::Error as E;
    let inner = match error {
        E::AliasError { error, .. } => error.as_ref(),
        E::WithSnippet { error, .. } => error.as_ref(),
        other => other,
    };
    let message = clean_message(&inner.to_string());
    // The scanner reports flow collections nested past `flow_nesting_limit` as a syntax
    // error; for the user it is the same depth limit.
    let over_budget = matches!(
        inner,
        E::Budget { .. }
            | E::AliasReplayLimitExceeded { .. }
            | E::AliasExpansionLimitExceeded { .. }
            | E::AliasReplayStackDepthExceeded { .. }
            | E::AliasReplayCounterOverflow { .. }
    ) || message.contains("recursion limit exceeded");
    let (line, column) = error
        .location()
        .map(|l| (clamp(l.line()), clamp(l.column())))
        .unwrap_or((1, 1));
    ParseError {
        over_budget,
        line: line.max(1),
        column: column.max(1),
        message,
    }
}

/// The innermost flow collection (`[` or `{`) still open at `line`:`column`, if it opened on an
/// earlier line: where a parse error with an unclosed bracket should point. A light scan, not
/// a parser: it skips comments, quoted strings, block scalars and brackets inside plain
/// block scalars (`image: app[1]`), which is what a hand-written file holds.
pub(crate) fn unclosed_flow_opener(text: &str, line: u32, column: u32) -> Option<(u32, u32, char)> {
    let mut open: Vec<(u32, u32, char)> = Vec::new();
    let mut quote: Option<char> = None;
    // The indentation of the key whose block scalar (`|`, `>`) is being skipped.
    let mut block_scalar: Option<usize> = None;
    for (index, text_line) in text.lines().enumerate() {
        let number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        if number > line {
            break;
        }
        let indent = text_line.len() - text_line.trim_start().len();
        if let Some(key_indent) = block_scalar {
            if text_line.trim().is_empty() || indent > key_indent {
                continue;
            }
            block_scalar = None;
        }
        let chars: Vec<char> = text_line.chars().collect();
        // Where a node may start: a bracket or quote elsewhere in block context is plain text.
        let mut at_node_start = true;
        for (i, &c) in chars.iter().enumerate() {
            let col = u32::try_from(i + 1).unwrap_or(u32::MAX);
            // The character at the error counts: the parser may point at the bracket itself.
            if number == line && col > column {
                break;
            }
            if let Some(q) = quote {
                if c == q {
                    quote = None;
                    at_node_start = false;
                }
                continue;
            }
            let in_flow = !open.is_empty();
            match c {
                '#' if i == 0 || chars[i - 1].is_whitespace() => break,
                '"' | '\'' if at_node_start || in_flow => quote = Some(c),
                '[' | '{' if at_node_start || in_flow => {
                    open.push((number, col, c));
                    at_node_start = true;
                    continue;
                }
                ']' | '}' if in_flow => {
                    open.pop();
                }
                ',' if in_flow => {
                    at_node_start = true;
                    continue;
                }
                '|' | '>' if at_node_start && !in_flow => {
                    let rest: String = chars[i + 1..].iter().collect();
                    let rest = rest.split(" #").next().unwrap_or("").trim();
                    if rest
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '-' || c == '+')
                    {
                        block_scalar = Some(indent);
                        break;
                    }
                }
                _ => {}
            }
            if c.is_whitespace() {
                continue;
            }
            let next_is_blank = chars.get(i + 1).is_none_or(|n| n.is_whitespace());
            at_node_start = matches!(c, ':' | '-' | '?') && next_is_blank;
        }
    }
    open.pop().filter(|&(opened, _, _)| opened < line)
}

/// serde-saphyr appends " at line X column Y"; the diagnostic has its own position.
fn clean_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    let cut = first.find(" at line ").map_or(first, |i| &first[..i]);
    let cut = cut.trim_end_matches(['.', ':']).trim();
    let mut out = String::with_capacity(cut.len());
    let mut chars = cut.chars();
    if let Some(c) = chars.next() {
        out.extend(c.to_lowercase());
    }
    out.push_str(chars.as_str());
    out
}

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor::<true>)
    }
}

/// A node value whose descendants are read without their spans.
struct Unspanned(NodeValue);

impl<'de> Deserialize<'de> for Unspanned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(NodeVisitor::<false>)
            .map(Unspanned)
    }
}

/// Builds a node; `SPANNED` says whether its children are read with their spans.
struct NodeVisitor<const SPANNED: bool>;

impl<'de, const SPANNED: bool> Visitor<'de> for NodeVisitor<SPANNED> {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<NodeValue, E> {
        Ok(match i64::try_from(v) {
            Ok(v) => NodeValue::Int(v),
            Err(_) => NodeValue::UInt(v),
        })
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<NodeValue, E> {
        Err(E::custom("integer out of range (more than 64 bits)"))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<NodeValue, E> {
        Err(E::custom("integer out of range (more than 64 bits)"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::String(v))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<NodeValue, E> {
        Err(E::custom("binary scalars (`!!binary`) are not supported"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<NodeValue, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        if SPANNED {
            while let Some(item) = seq.next_element::<Spanned<NodeValue>>()? {
                items.push(node_from(item));
            }
        } else {
            while let Some(Unspanned(value)) = seq.next_element()? {
                items.push(unpositioned(value));
            }
        }
        Ok(NodeValue::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        if SPANNED {
            while let Some(key) = map.next_key::<Spanned<KeyValue>>()? {
                let value = map.next_value::<Spanned<NodeValue>>()?;
                let KeyValue { name, is_string } = key.value;
                let key = Key {
                    name,
                    is_string,
                    line: line_of(&key.referenced),
                    column: clamp(key.referenced.column()),
                };
                entries.push((key, node_from(value)));
            }
        } else {
            while let Some(KeyValue { name, is_string }) = map.next_key()? {
                let Unspanned(value) = map.next_value()?;
                let key = Key {
                    name,
                    is_string,
                    line: 0,
                    column: 0,
                };
                entries.push((key, unpositioned(value)));
            }
        }
        Ok(NodeValue::Map(entries))
    }
}

/// A node whose position [`parse_with_serde_saphyr`] fills in with its ordinal.
fn unpositioned(value: NodeValue) -> Node {
    Node {
        value,
        line: 0,
        column: 0,
    }
}

struct KeyValue {
    name: String,
    is_string: bool,
}

impl KeyValue {
    fn other(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            is_string: false,
        }
    }
}

impl<'de> Deserialize<'de> for KeyValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = KeyValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyValue, E> {
        Ok(KeyValue::other(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyValue, E> {
        Ok(KeyValue::other(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyValue, E> {
        Ok(KeyValue::other(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyValue, E> {
        Ok(KeyValue::other(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyValue, E> {
        Ok(KeyValue {
            name: v.to_owned(),
            is_string: true,
        })
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<KeyValue, E> {
        Ok(KeyValue {
            name: v,
            is_string: true,
        })
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<KeyValue, E> {
        Err(E::custom("binary scalars (`!!binary`) are not supported"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<KeyValue, E> {
        Ok(KeyValue::other("null"))
    }

    fn visit_none<E: de::Error>(self) -> Result<KeyValue, E> {
        Ok(KeyValue::other("null"))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<KeyValue, D::Error> {
        deserializer.deserialize_any(KeyVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(KeyValue::other("a list"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(KeyValue::other("a mapping"))
    }
}

#[cfg(test)]
mod unclosed_tests {
    use super::unclosed_flow_opener;

    #[test]
    fn finds_the_open_bracket_and_ignores_closed_quoted_and_plain_ones() {
        let text = "a: [1, 2]\nb: \"[\"  # [\nc: app[1]\nd: |\n  [ text\ne: {x: [1,\n  2\nf: 1\n";

        assert_eq!(unclosed_flow_opener(text, 8, 2), Some((6, 8, '[')));
        assert_eq!(unclosed_flow_opener(text, 5, 1), None);
        assert_eq!(unclosed_flow_opener("a: [1\n", 1, 6), None);
        // The parser pointing at the unclosed bracket itself: it is right already.
        assert_eq!(unclosed_flow_opener("a: [\n  {b\nc: 1\n", 2, 3), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
        let limits = Limits::default();
        with_parser_stack(&limits, || {
            parse_with_serde_saphyr(text, &limits, Spans::Every)
        })
    }

    fn parse_roots_only(text: &str) -> Result<Vec<Node>, ParseError> {
        let limits = Limits::default();
        with_parser_stack(&limits, || {
            parse_with_serde_saphyr(text, &limits, Spans::Roots)
        })
    }

    fn map(node: &Node) -> &[(Key, Node)] {
        match &node.value {
            NodeValue::Map(entries) => entries,
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn values_and_keys_carry_their_line_and_column() {
        let text = "a: 1\nb:\n  c: hello\n  d: [x, y]\n";

        let docs = parse(text).unwrap();

        let root = map(&docs[0]);
        assert_eq!(
            (root[0].0.name.as_str(), root[0].0.line, root[0].0.column),
            ("a", 1, 1)
        );
        assert_eq!((root[0].1.line, root[0].1.column), (1, 4));
        let b = map(&root[1].1);
        assert_eq!((b[0].0.line, b[0].0.column), (3, 3));
        assert_eq!(b[0].1.value, NodeValue::String("hello".into()));
        assert_eq!((b[0].1.line, b[0].1.column), (3, 6));
        match &b[1].1.value {
            NodeValue::Seq(items) => assert_eq!((items[1].line, items[1].column), (4, 10)),
            other => panic!("{other:?}"),
        }
    }

    /// Puts the position of each ordinal back where a roots-only parse left the ordinal.
    fn resolved(mut docs: Vec<Node>, table: &[(u32, u32)]) -> Vec<Node> {
        for root in &mut docs {
            walk_positions(&mut root.value, &mut |line, column| {
                assert_eq!(*line, 0, "a roots-only parse gives no span below the root");
                (*line, *column) = table[*column as usize];
            });
        }
        docs
    }

    #[test]
    fn a_roots_only_parse_resolves_to_the_positioned_tree() {
        let samples = [
            "a: 1\nb:\n  c: hello\n  d: [x, y]\n",
            "# comment\n\nlist:\n  - one\n  - {k: v, n: [1, 2, {deep: true}]}\n  - - nested\n",
            "base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\nother: *b\n",
            "---\nfirst: 1\n---\n---\nsecond:\n  text: |\n    multi\n    line\n  after: x\n",
            "dup: 1\ndup: 2\n1: int key\n? [complex]\n: value\n",
            "- top\n- level\n- sequence\n",
            "scalar only\n",
        ];
        for text in samples {
            let limits = Limits::default();
            let table = with_parser_stack(&limits, || positions(text, &limits)).unwrap();

            let roots_only = resolved(parse_roots_only(text).unwrap(), &table);

            assert_eq!(roots_only, parse(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn a_roots_only_parse_numbers_nodes_after_their_children_and_keys_before_their_values() {
        let docs = parse_roots_only("a: [x, y]\nb: z\n").unwrap();

        let root = map(&docs[0]);
        assert_eq!((docs[0].line, docs[0].column), (1, 1));
        assert_eq!((root[0].0.line, root[0].0.column), (0, 0));
        let NodeValue::Seq(items) = &root[0].1.value else {
            panic!("{:?}", root[0].1)
        };
        let ordinals: Vec<u32> = items.iter().map(|item| item.column).collect();
        assert_eq!(ordinals, [1, 2]);
        assert_eq!(root[0].1.column, 3);
        assert_eq!((root[1].0.column, root[1].1.column), (4, 5));
    }

    #[test]
    fn yes_and_on_stay_strings() {
        let docs = parse("a: yes\nb: on\nc: true\nd: no\n").unwrap();

        let values: Vec<&NodeValue> = map(&docs[0]).iter().map(|(_, v)| &v.value).collect();
        assert_eq!(
            values,
            [
                &NodeValue::String("yes".into()),
                &NodeValue::String("on".into()),
                &NodeValue::Bool(true),
                &NodeValue::String("no".into())
            ]
        );
    }

    #[test]
    fn leading_zeros_and_underscores_stay_strings() {
        let docs = parse("a: 0755\nb: 1_000\nc: 17\nd: 0x1F\n").unwrap();

        let values: Vec<&NodeValue> = map(&docs[0]).iter().map(|(_, v)| &v.value).collect();
        assert_eq!(
            values,
            [
                &NodeValue::String("0755".into()),
                &NodeValue::String("1_000".into()),
                &NodeValue::Int(17),
                &NodeValue::Int(31)
            ]
        );
    }

    #[test]
    fn duplicate_keys_reach_the_tree() {
        let docs = parse("a: 1\nb: 2\na: 3\n").unwrap();

        let names: Vec<(&str, u32)> = map(&docs[0])
            .iter()
            .map(|(k, _)| (k.name.as_str(), k.line))
            .collect();
        assert_eq!(names, [("a", 1), ("b", 2), ("a", 3)]);
    }

    #[test]
    fn non_string_keys_are_marked() {
        let docs = parse("1: a\ntrue: b\nx: c\n").unwrap();

        let flags: Vec<bool> = map(&docs[0]).iter().map(|(k, _)| k.is_string).collect();
        assert_eq!(flags, [false, false, true]);
    }

    #[test]
    fn empty_documents_are_skipped() {
        let docs = parse("---\na: 1\n---\n---\nb: 2\n").unwrap();

        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn merge_keys_expand_and_explicit_keys_win() {
        let docs = parse("base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  y: 3\n").unwrap();

        let thing = map(&map(&docs[0])[1].1);
        let mut pairs: Vec<(&str, &NodeValue)> = thing
            .iter()
            .map(|(k, v)| (k.name.as_str(), &v.value))
            .collect();
        pairs.sort_by_key(|p| p.0);
        assert_eq!(
            pairs,
            [("x", &NodeValue::Int(1)), ("y", &NodeValue::Int(3))]
        );
    }

    #[test]
    fn syntax_errors_report_a_position() {
        let error = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();

        assert!(!error.over_budget);
        assert!(error.line >= 2, "{error:?}");
    }

    #[test]
    fn application_tags_are_rejected() {
        let error = parse("a: !secret x\n").unwrap_err();

        assert!(!error.over_budget);
    }

    #[test]
    fn an_alias_bomb_stops_at_the_budget() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }

        let error = parse(&text).unwrap_err();

        assert!(error.over_budget, "{error:?}");
    }

    #[test]
    fn deep_nesting_stops_at_the_depth_limit() {
        let block = format!("{}x\n", "- ".repeat(10_000));
        let flow = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));

        let flow_error = parse(&flow).unwrap_err();
        let block_error = parse(&block).unwrap_err();

        assert!(flow_error.over_budget, "{flow_error:?}");
        assert!(block_error.over_budget, "{block_error:?}");
    }
}
