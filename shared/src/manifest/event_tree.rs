//! The tree of an ordinary file, built straight from the YAML parser's events.
//!
//! serde-saphyr spends more than half of a parse above its parser: an event queue that can
//! replay anchors, the budget, tag checks and typing every scalar through serde
//! (docs/benchmarks.md). A file with no anchor, alias, tag, merge key, `%YAML` directive or
//! number in an unusual spelling (`1e3`, `.inf`, `0x1F`, `+5`) needs none of that. For such a
//! file this builds the same tree, every position included, from the events of granit-parser
//! (the parser serde-saphyr runs, with the options it would give it). Anything else, including
//! every syntax error and a file near a limit, gives `None`, and serde-saphyr parses the file:
//! it decides every error and every unusual construct, so this module only has to agree with
//! it on the common case. The tests compare the two; serde-saphyr's version is pinned.

use serde_saphyr::granit_parser::{self, Event, Parser, ScalarStyle, Span};

use super::Limits;
use super::yaml::{self, Key, Node, NodeValue, Spans};

/// Parses every document of a file. Empty (null) documents are skipped. An ordinary file is
/// built straight from the parser's events, with every span whatever `spans` asks for
/// (this module); serde-saphyr parses the rest.
pub(crate) fn parse_documents(
    text: &str,
    limits: &Limits,
    spans: Spans,
) -> Result<Vec<Node>, yaml::ParseError> {
    match documents(text, limits) {
        Some(documents) => Ok(documents),
        None => yaml::parse_with_serde_saphyr(text, limits, spans),
    }
}

/// The documents of `text` with every node's position, or `None` when serde-saphyr must parse
/// the file. Empty documents are skipped, as `serde_saphyr::from_multiple` skips them.
pub(super) fn documents(text: &str, limits: &Limits) -> Option<Vec<Node>> {
    if u64::try_from(text.len()).ok()? > limits.max_file_bytes {
        return None;
    }
    let mut builder = Builder {
        parser: Parser::new_from_str_with_options(text, parser_options(limits)),
        // Every node is at least one event, so stopping at `max_nodes` events stops before
        // serde-saphyr's node and event budgets would.
        events_left: limits.max_nodes,
        max_depth: limits.max_depth,
    };
    let mut documents = Vec::new();
    let mut seen = 0usize;
    loop {
        match builder.next()? {
            (Event::StreamStart, _) => {}
            (Event::StreamEnd, _) => return Some(documents),
            (Event::DocumentStart(_, None), _) => {
                seen += 1;
                if seen >= yaml::MAX_DOCUMENTS {
                    return None;
                }
                let (event, span) = builder.next()?;
                let root = builder.node(event, span, 1)?;
                if !matches!(builder.next()?, (Event::DocumentEnd, _)) {
                    return None;
                }
                match root.value {
                    NodeValue::Null => {}
                    NodeValue::Seq(_) | NodeValue::Map(_) => documents.push(root),
                    // A scalar document is rare and is an error for us anyway.
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
}

/// The parser options serde-saphyr derives from ours (`Budget::parser_options` and
/// `Options::parser_options` in serde-saphyr 2.1), so both parses accept the same text.
fn parser_options(limits: &Limits) -> granit_parser::Options {
    let options = yaml::parser_options(limits);
    let budget = options.budget.unwrap_or_default();
    let mut parser = granit_parser::Options::default();
    parser.simple_key_max_lookahead = budget.simple_key_max_lookahead;
    parser.flow_nesting_limit = budget.flow_nesting_limit;
    parser.block_nesting_limit = parser
        .block_nesting_limit
        .max(budget.max_depth.saturating_add(1));
    parser.emit_comments = false;
    parser.strict_indentation = options.strict_indentation;
    parser
}

struct Builder<'input> {
    parser: Parser<'input, granit_parser::StrInput<'input>>,
    events_left: usize,
    max_depth: usize,
}

impl<'input> Builder<'input> {
    fn next(&mut self) -> Option<(Event<'input>, Span)> {
        self.events_left = self.events_left.checked_sub(1)?;
        self.parser.next_event()?.ok()
    }

    fn node(&mut self, event: Event<'input>, span: Span, depth: usize) -> Option<Node> {
        let value = match event {
            Event::Scalar(text, style, 0, None) => scalar(&text, style)?,
            Event::SequenceStart(_, 0, None) if depth < self.max_depth => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        (Event::SequenceEnd, _) => break,
                        (event, span) => items.push(self.node(event, span, depth + 1)?),
                    }
                }
                NodeValue::Seq(items)
            }
            Event::MappingStart(_, 0, None) if depth < self.max_depth => {
                let mut entries = Vec::new();
                loop {
                    let (name, key_span) = match self.next()? {
                        (Event::MappingEnd, _) => break,
                        (Event::Scalar(text, style, 0, None), span) if text != "<<" => {
                            match scalar(&text, style)? {
                                NodeValue::String(name) => (name, span),
                                _ => return None,
                            }
                        }
                        _ => return None,
                    };
                    let (line, column) = position(&key_span);
                    let key = Key {
                        name,
                        is_string: true,
                        line,
                        column,
                    };
                    let (event, span) = self.next()?;
                    entries.push((key, self.node(event, span, depth + 1)?));
                }
                NodeValue::Map(entries)
            }
            _ => return None,
        };
        let (line, column) = position(&span);
        Some(Node {
            value,
            line,
            column,
        })
    }
}

/// Where serde-saphyr's `Spanned` places a node: the start of its first event, 1-based.
fn position(span: &Span) -> (u32, u32) {
    let line = yaml::clamp(span.start.line() as u64).max(1);
    let column = yaml::clamp(span.start.col() as u64 + 1);
    (line, column)
}

/// An untagged scalar typed as serde-saphyr types it under `yaml::parser_options`, or `None`
/// where this would have to repeat more of its rules than the common cases below.
fn scalar(text: &str, style: ScalarStyle) -> Option<NodeValue> {
    if style != ScalarStyle::Plain {
        return Some(NodeValue::String(text.to_owned()));
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(NodeValue::Null),
        "true" | "True" | "TRUE" => return Some(NodeValue::Bool(true)),
        "false" | "False" | "FALSE" => return Some(NodeValue::Bool(false)),
        _ => {}
    }
    // serde-saphyr trims these before typing; a plain scalar never has them at its ends.
    if text.trim_matches([' ', '\t', '\r', '\n']).len() != text.len() {
        return None;
    }
    let string = || Some(NodeValue::String(text.to_owned()));
    let first = text.as_bytes().first().copied().unwrap_or_default();
    if first.is_ascii_alphabetic() {
        // Rust's float parser reads these words; serde-saphyr keeps them strings, but whether
        // it reaches that rule first is not worth repeating here.
        let float_word = ["inf", "infinity", "nan"]
            .iter()
            .any(|word| text.eq_ignore_ascii_case(word));
        return if float_word { None } else { string() };
    }
    // `underscored_numbers_as_strings` and `leading_zero_numbers_as_strings`.
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let all_digits = !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit());
    if text.contains('_') || (all_digits && unsigned.len() > 1 && unsigned.starts_with('0')) {
        return string();
    }
    if all_digits {
        // Out of `i64`'s range serde-saphyr tries `u64`, then floats: not repeated here.
        return text.parse::<i64>().ok().map(NodeValue::Int);
    }
    let decimal_fraction = unsigned.split_once('.').is_some_and(|(whole, fraction)| {
        [whole, fraction]
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    });
    if decimal_fraction {
        return text
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
            .map(NodeValue::Float);
    }
    if might_be_number(text) {
        return None;
    }
    string()
}

/// Whether serde-saphyr might type `text` as a number (or a non-finite float): anything Rust
/// reads as a float, a radix prefix, or a leading sign or dot.
fn might_be_number(text: &str) -> bool {
    if text.parse::<f64>().is_ok() {
        return true;
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    unsigned.len() != text.len()
        || unsigned.starts_with('.')
        || ["0x", "0o", "0b"].iter().any(|prefix| {
            unsigned
                .get(..2)
                .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::manifest::yaml::{ParseError, Spans};

    /// What this module builds and what serde-saphyr parses (with every span), after checking
    /// that a built tree is the parsed one.
    fn build_and_parse(text: &str, limits: &Limits) -> Option<Vec<Node>> {
        let (built, parsed): (_, Result<_, ParseError>) = yaml::with_parser_stack(limits, || {
            (
                documents(text, limits),
                yaml::parse_with_serde_saphyr(text, limits, Spans::Every),
            )
        });
        if let Some(built) = &built {
            assert_eq!(Ok(built), parsed.as_ref(), "{text:?}");
        }
        built
    }

    /// Whether serde-saphyr refuses `text` (the generators may write invalid YAML).
    fn invalid(text: &str) -> bool {
        let limits = Limits::default();
        yaml::with_parser_stack(&limits, || {
            yaml::parse_with_serde_saphyr(text, &limits, Spans::Every).is_err()
        })
    }

    fn built(text: &str) -> bool {
        build_and_parse(text, &Limits::default()).is_some()
    }

    #[test]
    fn ordinary_files_are_built_as_serde_saphyr_parses_them() {
        let samples = [
            "a: 1\nb:\n  c: hello\n  d: [x, y]\n",
            "# comment\n\nlist:  # trailing\n  - one\n  - {k: v, n: [1, 2, {deep: true}]}\n  - - nested\n",
            "---\nfirst: 1\n---\n---\nsecond:\n  text: |\n    multi\n    line\n  after: x\n...\n",
            "dup: 1\ndup: 2\n",
            "- top\n- level\n- sequence\n",
            "folded: >\n  one\n  two\n\n  three\nkeep: |+\n  x\n\nstrip: |-\n  y\nlast: z\n",
            "quoted: \"tab\\there \\u00e9 \\x41\"\nsingle: 'it''s'\nempty: ''\nnull_text: \"null\"\n",
            "plain: a long\n  plain scalar\n  over lines\nnext: v\n",
            "é: ünïcödé\nkey with spaces: value with colon\n\"quoted key\": 1\n'single key': 2\n",
            "crlf: 1\r\nnext:\r\n  - a\r\n  - b\r\n",
            "ints: [0, -0, 17, -17, 9223372036854775807, -9223372036854775808]\n",
            "floats: [0.8, -2.50, 10.0, 00.5, 3.14159265358979323846]\n",
            "nulls: [~, null, Null, NULL, ]\nbools: [true, True, TRUE, false, False, FALSE]\nempty:\n",
            "strings: [yes, on, No, 'off', y, 0755, -0755, 1_000, 3.2.1, 10m, '12:30', /usr/bin, $HOME, x-y, a.b, INFO, inf_x]\n",
            "deep: {a: {b: {c: {d: [[[[e]]]]}}}}\n",
            "image: \"rust:1.80\"\nrun: cargo test --all -- --nocapture\nurl: https://example.com/a.git\n",
            "tab_in_value: a\tb\nindented:\n    four: spaces\n",
        ];
        for text in samples {
            assert!(built(text), "not built: {text:?}");
        }
    }

    #[test]
    fn the_example_repository_is_built_as_serde_saphyr_parses_it() {
        let root =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ritmo-config");
        let mut files = vec![root];
        let mut seen = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(built(&text), "not built: {}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 20, "only {seen} example files");
    }

    #[test]
    fn what_serde_saphyr_alone_decides_is_left_to_it() {
        let samples = [
            "base: &b {x: 1}\n",
            "base: &b {x: 1}\nother: *b\n",
            "thing:\n  <<: {x: 1}\n  y: 2\n",
            "'<<': 1\n",
            "value: !!str 17\n",
            "value: !secret x\n",
            "%YAML 1.2\n---\na: 1\n",
            "dot: .5\n",
            "trailing_dot: 5.\n",
            "big: 1e3\n",
            "inf: .inf\n",
            "neg: -.inf\n",
            "nan: .nan\n",
            "word: nan\n",
            "plus: +5\n",
            "hex: 0x1F\n",
            "oct: 0o17\n",
            "bin: 0b101\n",
            "huge: 99999999999999999999\n",
            "past_i64: 9223372036854775808\n",
            "1: int key\n",
            "true: bool key\n",
            "~: null key\n",
            "? [complex]\n: value\n",
            "scalar only\n",
            "a: [unclosed\n",
            "a: 1\n b: 2\n",
            "a: 'unterminated\n",
        ];
        for text in samples {
            assert!(!built(text), "built: {text:?}");
        }
    }

    #[test]
    fn a_file_near_a_limit_is_left_to_serde_saphyr() {
        let limits = Limits {
            max_depth: 3,
            max_nodes: 20,
            max_file_bytes: 64,
            ..Limits::default()
        };
        assert!(build_and_parse("a: {b: c}\n", &limits).is_some());
        assert!(build_and_parse("a: {b: {c: d}}\n", &limits).is_none());
        assert!(build_and_parse(&"k: v\n".repeat(12), &limits).is_none());
        assert!(build_and_parse(&format!("k: {}\n", "v".repeat(64)), &limits).is_none());
        let many = "---\na: 1\n".repeat(yaml::MAX_DOCUMENTS);
        assert!(build_and_parse(&many, &Limits::default()).is_none());
    }

    /// A scalar as it might be written after `key: ` (or as a key), quoted or not.
    fn scalar_text() -> impl Strategy<Value = String> {
        let plain = "[-+._:~0-9a-zA-Z eE]{0,10}";
        prop_oneof![
            plain.prop_map(|s| s.trim().to_owned()),
            "[-+.]?[0-9][0-9_.eExXoObB]{0,5}",
            plain.prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            "[a-z0-9 \\\\\"]{0,8}".prop_map(|s| format!("{s:?}")),
            Just("|\n  block\n  text".to_owned()),
        ]
    }

    /// Whether `text`, written as a plain scalar, is one [`scalar`] leaves to serde-saphyr.
    fn declined(text: &str) -> bool {
        let quoted = text.starts_with(['\'', '"', '|']);
        !quoted && (structural(text) || scalar(text, ScalarStyle::Plain).is_none())
    }

    /// Text that YAML reads as structure rather than as one plain scalar (a `key: value` pair,
    /// an empty key, a sequence entry), which the generator may write by chance.
    fn structural(text: &str) -> bool {
        text.starts_with(':')
            || text.ends_with(':')
            || text.contains(": ")
            || text.starts_with("- ")
            || text == "-"
    }

    /// Whether `text`, written as a key, is one this module leaves to serde-saphyr: declined,
    /// or typed as something other than a string.
    fn declined_key(text: &str) -> bool {
        let quoted = text.starts_with(['\'', '"']);
        let block = text.starts_with('|');
        block
            || (!quoted
                && (structural(text)
                    || !matches!(scalar(text, ScalarStyle::Plain), Some(NodeValue::String(_)))))
    }

    fn keys(tree: &Tree) -> Vec<&str> {
        match tree {
            Tree::Leaf(_) => Vec::new(),
            Tree::Map(entries) => entries
                .iter()
                .flat_map(|(key, value)| std::iter::once(key.as_str()).chain(keys(value)))
                .collect(),
            Tree::Seq(items) => items.iter().flat_map(keys).collect(),
        }
    }

    fn leaves(tree: &Tree) -> Vec<&str> {
        match tree {
            Tree::Leaf(text) => vec![text.as_str()],
            Tree::Map(entries) => entries
                .iter()
                .flat_map(|(_, value)| leaves(value))
                .collect(),
            Tree::Seq(items) => items.iter().flat_map(leaves).collect(),
        }
    }

    #[derive(Debug, Clone)]
    enum Tree {
        Leaf(String),
        Map(Vec<(String, Tree)>),
        Seq(Vec<Tree>),
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = scalar_text()
            .prop_filter("inline", |s| !s.starts_with('|'))
            .prop_map(Tree::Leaf);
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(("[a-z]{1,3}", inner.clone()), 1..4).prop_map(Tree::Map),
                prop::collection::vec(inner, 1..4).prop_map(Tree::Seq),
            ]
        })
    }

    /// Writes `tree` as YAML: block style down to depth `flow_from`, flow style below it.
    fn render(tree: &Tree, depth: usize, flow_from: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        let nested = |value: &Tree, out: &mut String| match value {
            Tree::Leaf(text) => out.push_str(&format!(" {text}\n")),
            _ if depth + 1 >= flow_from => {
                out.push(' ');
                flow(value, out);
                out.push('\n');
            }
            _ => {
                out.push('\n');
                render(value, depth + 1, flow_from, out);
            }
        };
        match tree {
            Tree::Leaf(text) => out.push_str(&format!("{pad}{text}\n")),
            Tree::Map(entries) => {
                for (key, value) in entries {
                    out.push_str(&format!("{pad}{key}:"));
                    nested(value, out);
                }
            }
            Tree::Seq(items) => {
                for item in items {
                    out.push_str(&format!("{pad}-"));
                    nested(item, out);
                }
            }
        }
    }

    fn flow(tree: &Tree, out: &mut String) {
        match tree {
            Tree::Leaf(text) => out.push_str(text),
            Tree::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    out.push_str(&format!("{key}: "));
                    flow(value, out);
                }
                out.push('}');
            }
            Tree::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "" } else { ", " });
                    flow(item, out);
                }
                out.push(']');
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_scalar_built_is_typed_as_serde_saphyr_types_it(
            key in scalar_text(),
            value in scalar_text(),
        ) {
            let text = format!("{key}: {value}\nlist: [{value}]\n");

            let built = build_and_parse(&text, &Limits::default());

            // A file is left to serde-saphyr only when it is not valid YAML, for a scalar this
            // module declines to type, or for a key that is not a string.
            prop_assert!(
                built.is_some() || invalid(&text) || declined(&value) || declined_key(&key),
                "declined without a declined scalar: {text:?}"
            );
        }

        #[test]
        fn any_nesting_built_is_the_tree_serde_saphyr_parses(tree in tree(), flow_from in 1usize..6) {
            let mut text = String::new();
            render(&tree, 0, flow_from, &mut text);

            let built = build_and_parse(&text, &Limits::default());

            // A scalar document is left to serde-saphyr (and is an error for the loader).
            let scalar_root = matches!(tree, Tree::Leaf(_));
            prop_assert!(
                built.is_some() || invalid(&text) || scalar_root || leaves(&tree).iter().any(|s| declined(s))
                    || keys(&tree).iter().any(|k| declined_key(k)),
                "declined without a declined scalar: {text:?}"
            );
        }
    }
}
