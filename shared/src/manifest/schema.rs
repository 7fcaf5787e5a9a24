//! Each kind's schema, and the walk that checks one parsed document against it.
//!
//! Schemas are data (`Ty`, `Field`); one walk reports every problem of a document with the
//! position of the offending key or value, never stopping at the first. Rules that span
//! fields of one document (a cron trigger needs a schedule, stage dependencies, exactly one of
//! `encrypted_value` / `secret_ref`) follow the walk. Rules that span documents are
//! `validate`'s.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};

use croner::parser::{CronParser, Seconds, Year};

use super::yaml::{Key, Node, NodeValue};
use super::{CiphertextField, Document, Reference, SecretRefField, StringScalar};
use crate::diagnostic::{Code, Diagnostic};
use crate::hash;
use crate::model::{self, API_VERSION, DesiredResource, Kind, ResourceId, SourceLocation};

/// The type a field's value must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    Str,
    Bool,
    /// An integer in `min..=max`; `unit` is named in messages.
    Int {
        min: i64,
        max: i64,
        unit: &'static str,
    },
    Enum(&'static [&'static str]),
    /// A 5-field cron expression.
    Cron,
    /// A regular expression (`regex` crate syntax).
    Regex,
    AbsPath,
    /// A pipeline stage name: 1-63 letters, digits, `-` or `_`, starting with a letter or digit.
    StageName,
    /// The name of another resource of this kind.
    Ref(Kind),
    Struct(&'static [Field]),
    List {
        item: &'static Ty,
        min: usize,
    },
    /// Strings to strings (labels).
    StrMap,
    /// Strings to strings, numbers or booleans (environment variables).
    ScalarMap,
    /// Anything the plugin understands: not checked.
    FreeMap,
    /// A plaintext secret: refused whatever it holds (E400).
    Plaintext,
}

/// One field of a mapping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
}

const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
    }
}

const fn opt(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
    }
}

const fn list(item: &'static Ty) -> Ty {
    Ty::List { item, min: 0 }
}

const STRINGS: Ty = list(&Ty::Str);

// --- Job ---------------------------------------------------------------------------------

const SCM_TYPES: &[&str] = &["github", "gitlab", "bitbucket", "gitea", "git"];
const TRIGGER_TYPES: &[&str] = &["webhook", "cron", "manual"];

const SCM: &[Field] = &[
    req("type", Ty::Enum(SCM_TYPES)),
    req("url", Ty::Str),
    opt("branch", Ty::Str),
    opt("credentials", Ty::Ref(Kind::Credential)),
];

const BUILD: &[Field] = &[req("type", Ty::Str), opt("config", Ty::FreeMap)];

const TRIGGER: &[Field] = &[
    req("type", Ty::Enum(TRIGGER_TYPES)),
    opt("events", STRINGS),
    opt("branch_filter", Ty::Regex),
    opt("schedule", Ty::Cron),
    opt("branches", STRINGS),
];

const STEP: &[Field] = &[
    req("plugin", Ty::Ref(Kind::Plugin)),
    opt("config", Ty::FreeMap),
];

const STAGE: &[Field] = &[
    req("name", Ty::StageName),
    opt("depends_on", list(&Ty::Str)),
    opt("always_run", Ty::Bool),
    req(
        "steps",
        Ty::List {
            item: &Ty::Struct(STEP),
            min: 1,
        },
    ),
];

const PIPELINE: &[Field] = &[opt("stages", list(&Ty::Struct(STAGE)))];

const WORKER: &[Field] = &[
    opt("labels", Ty::StrMap),
    opt("pool", Ty::Ref(Kind::WorkerPool)),
];

const JOB: &[Field] = &[
    opt("description", Ty::Str),
    opt("scm", Ty::Struct(SCM)),
    opt("build", Ty::Struct(BUILD)),
    opt("environment", Ty::ScalarMap),
    opt("triggers", list(&Ty::Struct(TRIGGER))),
    opt("pipeline", Ty::Struct(PIPELINE)),
    opt("worker", Ty::Struct(WORKER)),
    opt(
        "timeout",
        Ty::Int {
            min: 1,
            max: 10_080,
            unit: " minutes",
        },
    ),
    opt(
        "max_retries",
        Ty::Int {
            min: 0,
            max: 10,
            unit: "",
        },
    ),
    opt("enabled", Ty::Bool),
];

// --- Credential --------------------------------------------------------------------------

const CREDENTIAL_TYPES: &[&str] = &[
    "token",
    "password",
    "ssh_key",
    "certificate",
    "api_key",
    "basic_auth",
    "webhook_secret",
    "generic",
];
const SECRET_PROVIDERS: &[&str] = &["aws_secrets_manager", "vault", "kubernetes"];

const SECRET_REF: &[Field] = &[
    req("provider", Ty::Enum(SECRET_PROVIDERS)),
    opt("key", Ty::Str),
    opt("region", Ty::Str),
    opt("namespace", Ty::Str),
    opt("name", Ty::Str),
    opt("path", Ty::Str),
    opt("version", Ty::Str),
];

const CREDENTIAL: &[Field] = &[
    req("type", Ty::Enum(CREDENTIAL_TYPES)),
    opt("description", Ty::Str),
    opt("encrypted_value", Ty::Str),
    opt("secret_ref", Ty::Struct(SECRET_REF)),
    opt("created_by", Ty::Str),
    opt("value", Ty::Plaintext),
];

// --- Plugin ------------------------------------------------------------------------------

const PLUGIN: &[Field] = &[
    req("type", Ty::Str),
    opt("description", Ty::Str),
    opt("binary_path", Ty::AbsPath),
    opt("version", Ty::Str),
    opt("default_config", Ty::FreeMap),
    opt("enabled", Ty::Bool),
];

// --- Webhook -----------------------------------------------------------------------------

const WEBHOOK_SOURCES: &[&str] = &["github", "gitlab", "bitbucket", "gitea", "generic"];

const WEBHOOK_FILTERS: &[Field] = &[opt("branch_pattern", Ty::Regex), opt("paths", STRINGS)];

const WEBHOOK: &[Field] = &[
    req("job", Ty::Ref(Kind::Job)),
    req("source", Ty::Enum(WEBHOOK_SOURCES)),
    opt("secret_token_credential", Ty::Ref(Kind::Credential)),
    opt("events", STRINGS),
    opt("filters", Ty::Struct(WEBHOOK_FILTERS)),
    opt("enabled", Ty::Bool),
];

// --- WorkerPool --------------------------------------------------------------------------

const POOL_PROVIDERS: &[&str] = &["static", "kubernetes", "aws_ec2", "docker"];

const WORKER_POOL: &[Field] = &[
    opt("description", Ty::Str),
    req("provider", Ty::Enum(POOL_PROVIDERS)),
    opt("labels", Ty::StrMap),
    opt(
        "min_workers",
        Ty::Int {
            min: 0,
            max: 10_000,
            unit: "",
        },
    ),
    opt(
        "max_workers",
        Ty::Int {
            min: 1,
            max: 10_000,
            unit: "",
        },
    ),
    opt("instance_type", Ty::Str),
    opt("region", Ty::Str),
    opt(
        "max_concurrent_jobs",
        Ty::Int {
            min: 1,
            max: 1_000,
            unit: "",
        },
    ),
    opt(
        "idle_timeout",
        Ty::Int {
            min: 1,
            max: 10_080,
            unit: " minutes",
        },
    ),
    opt("credentials", Ty::Ref(Kind::Credential)),
    opt("enabled", Ty::Bool),
];

// --- Environment -------------------------------------------------------------------------

const TIERS: &[&str] = &["development", "staging", "production"];

const ENVIRONMENT: &[Field] = &[
    opt("description", Ty::Str),
    req("tier", Ty::Enum(TIERS)),
    opt("variables", Ty::ScalarMap),
    opt("credentials", list(&Ty::Ref(Kind::Credential))),
    opt("jobs", list(&Ty::Ref(Kind::Job))),
    opt("protected", Ty::Bool),
    opt(
        "required_approvals",
        Ty::Int {
            min: 0,
            max: 10,
            unit: "",
        },
    ),
    opt("enabled", Ty::Bool),
];

// --- Document envelope -------------------------------------------------------------------

const TOP_LEVEL: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA: &[&str] = &["name", "labels"];

/// The fields of a kind's `spec`.
pub(crate) fn spec_fields(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Job => JOB,
        Kind::Credential => CREDENTIAL,
        Kind::Plugin => PLUGIN,
        Kind::Webhook => WEBHOOK,
        Kind::WorkerPool => WORKER_POOL,
        Kind::Environment => ENVIRONMENT,
    }
}

/// The resources a stored `spec` of `kind` refers to: the same fields the walk records as
/// references when it checks a document (`Ty::Ref`, and the `*_credential` keys of a plugin's
/// `default_config` and of a step's `config`), read from canonical JSON instead of YAML, for
/// specs that come back from the database.
pub fn spec_references(kind: Kind, spec: &serde_json::Value) -> Vec<ResourceId> {
    let mut found = Vec::new();
    json_references(spec, &Ty::Struct(spec_fields(kind)), &mut found);
    if kind == Kind::Plugin {
        credential_keys_in(spec.get("default_config"), &mut found);
    }
    found.sort();
    found.dedup();
    found
}

fn json_references(value: &serde_json::Value, ty: &Ty, found: &mut Vec<ResourceId>) {
    match (ty, value) {
        (Ty::Ref(kind), serde_json::Value::String(name)) => {
            found.push(ResourceId::new(*kind, name.clone()))
        }
        (Ty::Struct(fields), serde_json::Value::Object(entries)) => {
            for field in *fields {
                if let Some(child) = entries.get(field.name) {
                    json_references(child, &field.ty, found);
                }
            }
            // A step (the struct naming a plugin) passes its `config` to the plugin.
            let is_step = fields
                .iter()
                .any(|field| field.name == "plugin" && matches!(field.ty, Ty::Ref(Kind::Plugin)));
            if is_step {
                credential_keys_in(entries.get("config"), found);
            }
        }
        (Ty::List { item, .. }, serde_json::Value::Array(items)) => {
            for child in items {
                json_references(child, item, found);
            }
        }
        _ => {}
    }
}

fn credential_keys_in(config: Option<&serde_json::Value>, found: &mut Vec<ResourceId>) {
    if let Some(serde_json::Value::Object(entries)) = config {
        for (key, value) in entries {
            if let (true, serde_json::Value::String(name)) = (key.ends_with("_credential"), value) {
                found.push(ResourceId::new(Kind::Credential, name.clone()));
            }
        }
    }
}

/// What checking one document gives: the document when it has no error, its diagnostics, and
/// its string scalars (so the caller can still scan a broken document for secrets).
pub(crate) struct Checked {
    pub document: Option<Document>,
    pub diagnostics: Vec<Diagnostic>,
    pub strings: Vec<StringScalar>,
}

/// Checks one document found in `path` (a file of `dir_kind`'s directory).
pub(crate) fn check_document(path: &str, dir_kind: Kind, root: &Node, memo: &mut Memo) -> Checked {
    let mut walk = Walk::new(path, memo);
    walk.scan(root, "");

    let NodeValue::Map(entries) = &root.value else {
        walk.error(
            Code::E206,
            root.line,
            root.column,
            format!(
                "a document must be a mapping with apiVersion, kind, metadata and spec, found {}",
                root.value.describe()
            ),
        );
        return walk.finish_broken();
    };

    for (key, _) in entries.iter().filter(|(k, _)| k.is_string) {
        if !TOP_LEVEL.contains(&key.name.as_str()) {
            walk.unknown_field(key, "", TOP_LEVEL);
        }
    }

    match find(entries, "apiVersion") {
        None => walk.error(
            Code::E200,
            root.line,
            root.column,
            format!("missing `apiVersion`: every document starts with `apiVersion: {API_VERSION}`"),
        ),
        Some((_, node)) => match &node.value {
            NodeValue::String(v) if v == API_VERSION => {}
            other => walk.error(
                Code::E200,
                node.line,
                node.column,
                format!(
                    "`apiVersion` must be `{API_VERSION}`, found {}",
                    show(other)
                ),
            ),
        },
    }

    let kind = match find(entries, "kind") {
        None => {
            walk.error(
                Code::E201,
                root.line,
                root.column,
                format!(
                    "missing `kind`: a document in `{}/` has `kind: {dir_kind}`",
                    dir_kind.directory()
                ),
            );
            None
        }
        Some((_, node)) => match &node.value {
            NodeValue::String(v) => match Kind::ALL.into_iter().find(|k| k.as_str() == v) {
                Some(kind) => {
                    if kind != dir_kind {
                        walk.error(
                            Code::E202,
                            node.line,
                            node.column,
                            format!(
                                "a `{kind}` document in `{}/`: move it to `{}/`",
                                dir_kind.directory(),
                                kind.directory()
                            ),
                        );
                    }
                    Some(kind)
                }
                None => {
                    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                    walk.error(
                        Code::E201,
                        node.line,
                        node.column,
                        format!(
                            "unknown kind `{v}`: expected one of {}{}",
                            names.join(", "),
                            did_you_mean(v, names.iter().copied())
                        ),
                    );
                    None
                }
            },
            other => {
                walk.error(
                    Code::E201,
                    node.line,
                    node.column,
                    format!("`kind` must be a string, found {}", other.describe()),
                );
                None
            }
        },
    };

    let (name, labels) = walk.metadata(root, entries);

    let spec = find(entries, "spec");
    match spec {
        None => walk.error(
            Code::E205,
            root.line,
            root.column,
            "missing required field `spec`".to_string(),
        ),
        Some((key, node)) => {
            if let Some(kind) = kind {
                let resource = name.as_deref().unwrap_or("?");
                walk.owner = format!("{} `{resource}`", kind.slug());
                walk.resource = resource.to_string();
                walk.check(
                    node,
                    &Ty::Struct(spec_fields(kind)),
                    "spec",
                    (key.line, key.column),
                );
                walk.kind_rules(kind, node, key);
            }
        }
    }

    let ok = !walk.diagnostics.iter().any(Diagnostic::is_error);
    let (Some(kind), Some(name), Some((_, spec_node)), true) = (kind, name, spec, ok) else {
        return walk.finish_broken();
    };
    let labels = labels.unwrap_or_default();
    let spec = hash::Spec::of(spec_node);
    let resource = DesiredResource {
        id: ResourceId::new(kind, name),
        hash: hash::content_hash(&labels, &spec),
        labels,
        spec,
        source: SourceLocation::new(path, root.line, root.column.max(1)),
    };
    let strings = std::mem::take(&mut walk.strings);
    Checked {
        document: Some(Document {
            resource,
            references: walk.references,
            ciphertexts: walk.ciphertexts,
            secret_refs: walk.secret_refs,
            strings,
        }),
        diagnostics: walk.diagnostics,
        strings: Vec::new(),
    }
}

/// The first entry with string key `name`.
fn find<'n>(entries: &'n [(Key, Node)], name: &str) -> Option<(&'n Key, &'n Node)> {
    entries
        .iter()
        .find(|(k, _)| k.is_string && k.name == name)
        .map(|(k, v)| (k, v))
}

fn string_at<'n>(entries: &'n [(Key, Node)], name: &str) -> Option<(&'n str, &'n Node)> {
    match find(entries, name) {
        Some((_, node)) => match &node.value {
            NodeValue::String(s) => Some((s.as_str(), node)),
            _ => None,
        },
        None => None,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        let mut out = String::with_capacity(parent.len() + 1 + key.len());
        out.push_str(parent);
        out.push('.');
        out.push_str(key);
        out
    }
}

fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A value for a message: strings in backticks, other scalars as written, containers by kind.
fn show(value: &NodeValue) -> String {
    match value {
        NodeValue::String(s) => format!("`{}`", truncate(s, 80)),
        NodeValue::Int(i) => format!("`{i}`"),
        NodeValue::UInt(u) => format!("`{u}`"),
        NodeValue::Float(f) => format!("`{f}`"),
        NodeValue::Bool(b) => format!("`{b}`"),
        other => other.describe().to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max).collect();
        out.push('…');
        out
    }
}

/// ` (did you mean `x`?)` when one candidate is close to `word`, else nothing.
pub(crate) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> String {
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(word, candidate);
        if score > best.map_or(0.0, |b| b.0) {
            best = Some((score, candidate));
        }
    }
    match best {
        Some((score, candidate)) if score >= 0.8 && candidate != word => {
            format!(" (did you mean `{candidate}`?)")
        }
        _ => String::new(),
    }
}

static CRON: LazyLock<CronParser> = LazyLock::new(|| {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
});

/// Results of the costly checks (regex compilation, cron parsing) by input, for one load:
/// a repository repeats the same few branch filters and schedules in many jobs. A miss here
/// asks [`KNOWN`], the process's verdicts, before checking; this table spares the repeats
/// its lock, and keeps the inputs too long for it.
#[derive(Debug, Default)]
pub(crate) struct Memo(Verdicts);

impl Memo {
    /// Why `pattern` is not a valid regex, or `None` when it is.
    fn regex_error(&mut self, pattern: &str) -> Option<String> {
        self.verdict(|v| &mut v.regex, pattern, regex_error)
    }

    /// Why `schedule` is not a valid 5-field cron expression, or `None` when it is.
    fn cron_error(&mut self, schedule: &str) -> Option<String> {
        self.verdict(|v| &mut v.cron, schedule, cron_error)
    }

    fn verdict(&mut self, table: Table, input: &str, check: Check) -> Option<String> {
        if let Some(known) = table(&mut self.0).get(input) {
            return known.clone();
        }
        let reason = known_or(table, input, check);
        table(&mut self.0).insert(input.to_string(), reason.clone());
        reason
    }
}

/// Verdicts by input: why it is refused, or `None` when it is accepted.
#[derive(Debug, Default)]
struct Verdicts {
    regex: HashMap<String, Option<String>>,
    cron: HashMap<String, Option<String>>,
}

type Table = fn(&mut Verdicts) -> &mut HashMap<String, Option<String>>;
type Check = fn(&str) -> Option<String>;

/// Verdicts this process has already reached. Each is a function of its input alone, and a
/// warm function, or the old and new version of a changed file, meets the same branch
/// filters again: one regex check costs ~100 µs (regex-automata sets up a 10,000-entry UTF-8
/// map per compile), more than parsing the small file that holds it.
static KNOWN: LazyLock<Mutex<Verdicts>> = LazyLock::new(Mutex::default);

/// Longest input [`KNOWN`] keeps, and how many per check: at most ~1 MB per check, whatever
/// a repository holds.
const KNOWN_INPUT_BYTES: usize = 256;
const KNOWN_ENTRIES: usize = 4_096;

/// The verdict on `input` from [`KNOWN`], or `check`'s, kept there for the next caller.
fn known_or(table: Table, input: &str, check: Check) -> Option<String> {
    let lock = || KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    if input.len() > KNOWN_INPUT_BYTES {
        return check(input);
    }
    if let Some(known) = table(&mut lock()).get(input) {
        return known.clone();
    }
    // Checked without the lock: the other loading thread need not wait for it.
    let reason = check(input);
    let mut known = lock();
    let entries = table(&mut known);
    if entries.len() >= KNOWN_ENTRIES {
        entries.clear();
    }
    entries.insert(input.to_string(), reason.clone());
    reason
}

fn cron_error(schedule: &str) -> Option<String> {
    CRON.parse(schedule)
        .err()
        .map(|error| lower_first(&error.to_string()))
}

/// The `regex` crate's cap on a compiled pattern, set by `RegexBuilder::size_limit`.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why the `regex` crate would not compile `pattern` within [`REGEX_SIZE_LIMIT`] (Ritmo
/// matches branches with it), or `None` when it would. Only the parse and the NFA, the steps
/// that can fail, are built: the DFAs the `regex` crate adds for speed (full ones, since
/// tracing-subscriber turns on `regex-automata/dfa-build`) were half the time of loading a
/// small file.
fn regex_error(pattern: &str) -> Option<String> {
    let config = regex_automata::meta::Config::new()
        .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
        .auto_prefilter(false)
        .onepass(false)
        .backtrack(false)
        .hybrid(false)
        .dfa(false);
    let error = regex_automata::meta::Builder::new()
        .configure(config)
        .build(pattern)
        .err()?;
    if error.size_limit().is_some() {
        return Some("too large".to_string());
    }
    let text = error
        .syntax_error()
        .map_or_else(|| error.to_string(), ToString::to_string);
    Some(syntax_error_reason(&text))
}

/// The last `error:` line of a regex syntax error as the `regex` crate prints it, which
/// follows the pattern with a caret under the fault.
fn syntax_error_reason(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| "invalid syntax".to_string())
}

fn is_stage_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// A checked node as a JSON tree: numbers as YAML gave them, mappings keyed by their string
/// keys (a checked document has no duplicate or non-string keys).
impl hash::JsonTree for Node {
    fn node(&self) -> hash::JsonNode<'_, Node> {
        use hash::JsonNode;
        match &self.value {
            NodeValue::Null => JsonNode::Null,
            NodeValue::Bool(b) => JsonNode::Bool(*b),
            NodeValue::Int(i) => JsonNode::Number((*i).into()),
            NodeValue::UInt(u) => JsonNode::Number((*u).into()),
            NodeValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(JsonNode::Null, JsonNode::Number)
            }
            NodeValue::String(s) => JsonNode::String(s),
            NodeValue::Seq(items) => JsonNode::Array(items),
            NodeValue::Map(entries) => {
                JsonNode::Object(entries.iter().map(|(k, v)| (k.name.as_str(), v)).collect())
            }
        }
    }
}

/// State of the walk over one document.
struct Walk<'a> {
    path: &'a str,
    memo: &'a mut Memo,
    /// `job `backend-service``, for messages.
    owner: String,
    resource: String,
    diagnostics: Vec<Diagnostic>,
    references: Vec<Reference>,
    ciphertexts: Vec<CiphertextField>,
    secret_refs: Vec<SecretRefField>,
    strings: Vec<StringScalar>,
}

impl<'a> Walk<'a> {
    fn new(path: &'a str, memo: &'a mut Memo) -> Self {
        Self {
            path,
            memo,
            owner: "this document".to_string(),
            resource: String::new(),
            diagnostics: Vec::new(),
            references: Vec::new(),
            ciphertexts: Vec::new(),
            secret_refs: Vec::new(),
            strings: Vec::new(),
        }
    }

    fn finish_broken(self) -> Checked {
        Checked {
            document: None,
            diagnostics: self.diagnostics,
            strings: self.strings,
        }
    }

    /// Line 0 is a node parsed without its span: its column is its ordinal.
    fn at(&self, line: u32, column: u32) -> SourceLocation {
        if line == 0 {
            SourceLocation::unresolved(self.path, column)
        } else {
            SourceLocation::new(self.path, line, column.max(1))
        }
    }

    fn error(&mut self, code: Code, line: u32, column: u32, message: String) {
        let at = self.at(line, column);
        self.diagnostics.push(Diagnostic::new(code, &at, message));
    }

    fn unknown_field(&mut self, key: &Key, parent: &str, allowed: &[&str]) {
        let field = join(parent, &key.name);
        let hint = did_you_mean(&key.name, allowed.iter().copied());
        let message = if hint.is_empty() {
            format!(
                "unknown field `{field}`: expected one of {}",
                allowed.join(", ")
            )
        } else {
            format!("unknown field `{field}`{hint}")
        };
        self.error(Code::E204, key.line, key.column, message);
    }

    fn wrong_type(&mut self, node: &Node, field: &str, expected: &str) {
        self.error(
            Code::E206,
            node.line,
            node.column,
            format!(
                "`{field}`: expected {expected}, found {}",
                node.value.describe()
            ),
        );
    }

    /// The structural pass every document gets: duplicate keys, non-string keys, and the list
    /// of string scalars for the secret scan.
    fn scan(&mut self, node: &Node, field: &str) {
        match &node.value {
            // Keeping every short scalar (names, enums) cost a third of a large
            // repository's memory and allocations for nothing the scan could match.
            NodeValue::String(s) if s.len() >= crate::validate::MIN_SECRET_LEN => {
                self.strings.push(StringScalar {
                    value: s.clone(),
                    field: field.to_string(),
                    at: self.at(node.line, node.column),
                });
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.scan(item, &index(field, i));
                }
            }
            NodeValue::Map(entries) => {
                // Mappings are mostly small: a linear look back beats hashing every key, but a
                // hostile file's huge mapping must not go quadratic.
                let mut seen: Option<HashMap<&str, &Key>> =
                    (entries.len() > 16).then(|| HashMap::with_capacity(entries.len()));
                for (i, (key, value)) in entries.iter().enumerate() {
                    if !key.is_string {
                        self.error(
                            Code::E206,
                            key.line,
                            key.column,
                            format!(
                                "mapping keys must be strings, found `{}` in `{}`: quote it",
                                key.name,
                                if field.is_empty() {
                                    "(document)"
                                } else {
                                    field
                                }
                            ),
                        );
                        continue;
                    }
                    let first = match &mut seen {
                        Some(seen) => match seen.get(key.name.as_str()) {
                            Some(first) => Some(*first),
                            None => {
                                seen.insert(key.name.as_str(), key);
                                None
                            }
                        },
                        None => entries[..i]
                            .iter()
                            .map(|(k, _)| k)
                            .find(|k| k.is_string && k.name == key.name),
                    };
                    if let Some(first) = first {
                        self.error(
                            Code::E104,
                            key.line,
                            key.column,
                            format!(
                                "duplicate key `{}`: first defined at line {}, column {}",
                                join(field, &key.name),
                                first.line,
                                first.column
                            ),
                        );
                    }
                    self.scan(value, &join(field, &key.name));
                }
            }
            _ => {}
        }
    }

    fn metadata(
        &mut self,
        root: &Node,
        entries: &[(Key, Node)],
    ) -> (Option<String>, Option<BTreeMap<String, String>>) {
        let Some((meta_key, meta)) = find(entries, "metadata") else {
            self.error(
                Code::E203,
                root.line,
                root.column,
                "missing `metadata.name`".to_string(),
            );
            return (None, None);
        };
        let NodeValue::Map(meta_entries) = &meta.value else {
            self.wrong_type(meta, "metadata", "a mapping");
            return (None, None);
        };
        for (key, _) in meta_entries.iter().filter(|(k, _)| k.is_string) {
            if !METADATA.contains(&key.name.as_str()) {
                self.unknown_field(key, "metadata", METADATA);
            }
        }
        let name = match find(meta_entries, "name") {
            None => {
                self.error(
                    Code::E203,
                    meta_key.line,
                    meta_key.column,
                    "missing `metadata.name`".to_string(),
                );
                None
            }
            Some((_, node)) => match &node.value {
                NodeValue::String(name) if model::is_valid_name(name) => Some(name.clone()),
                other => {
                    self.error(
                        Code::E203,
                        node.line,
                        node.column,
                        format!(
                            "`metadata.name` {} is not a valid name: use 1-63 lower-case letters, digits and `-`, starting and ending with a letter or digit",
                            show(other)
                        ),
                    );
                    None
                }
            },
        };
        let labels = find(meta_entries, "labels").and_then(|(key, node)| {
            self.check(node, &Ty::StrMap, "metadata.labels", (key.line, key.column));
            match &node.value {
                NodeValue::Map(label_entries) => Some(
                    label_entries
                        .iter()
                        .filter_map(|(k, v)| match &v.value {
                            NodeValue::String(s) if k.is_string => {
                                Some((k.name.clone(), s.clone()))
                            }
                            _ => None,
                        })
                        .collect(),
                ),
                _ => None,
            }
        });
        (name, labels)
    }

    /// Checks `node` against `ty`. `owner_at` is the key that holds it (where a missing
    /// required field is reported).
    fn check(&mut self, node: &Node, ty: &Ty, field: &str, owner_at: (u32, u32)) {
        match *ty {
            Ty::Str => {
                if !matches!(node.value, NodeValue::String(_)) {
                    self.wrong_type(node, field, "a string");
                }
            }
            Ty::Bool => {
                if !matches!(node.value, NodeValue::Bool(_)) {
                    let hint = match &node.value {
                        NodeValue::String(s) => format!(
                            " (`{}` is a string in YAML 1.2: write `true` or `false`)",
                            truncate(s, 20)
                        ),
                        _ => String::new(),
                    };
                    self.error(
                        Code::E206,
                        node.line,
                        node.column,
                        format!(
                            "`{field}`: expected a boolean, found {}{hint}",
                            node.value.describe()
                        ),
                    );
                }
            }
            Ty::Int { min, max, unit } => match node.value {
                NodeValue::Int(i) if (min..=max).contains(&i) => {}
                NodeValue::Int(_) | NodeValue::UInt(_) => self.error(
                    Code::E207,
                    node.line,
                    node.column,
                    format!(
                        "`{field}` must be between {min} and {max}{unit}, found {}",
                        show(&node.value)
                    ),
                ),
                _ => self.wrong_type(node, field, "an integer"),
            },
            Ty::Enum(allowed) => match &node.value {
                NodeValue::String(s) if allowed.contains(&s.as_str()) => {}
                NodeValue::String(s) => self.error(
                    Code::E207,
                    node.line,
                    node.column,
                    format!(
                        "`{field}` must be one of {}, found `{}`{}",
                        allowed.join(", "),
                        truncate(s, 40),
                        did_you_mean(s, allowed.iter().copied())
                    ),
                ),
                _ => self.wrong_type(node, field, "a string"),
            },
            Ty::Cron => match &node.value {
                NodeValue::String(s) => {
                    if let Some(reason) = self.memo.cron_error(s) {
                        self.error(
                            Code::E208,
                            node.line,
                            node.column,
                            format!(
                                "`{field}`: `{}` is not a valid cron expression (5 fields: minute hour day-of-month month day-of-week, e.g. `0 2 * * *`): {reason}",
                                truncate(s, 60)
                            ),
                        );
                    }
                }
                _ => self.wrong_type(node, field, "a string"),
            },
            Ty::Regex => match &node.value {
                NodeValue::String(s) => {
                    if let Some(reason) = self.memo.regex_error(s) {
                        self.error(
                            Code::E209,
                            node.line,
                            node.column,
                            format!(
                                "`{field}`: `{}` is not a valid regular expression: {reason}",
                                truncate(s, 60)
                            ),
                        );
                    }
                }
                _ => self.wrong_type(node, field, "a string"),
            },
            Ty::AbsPath => match &node.value {
                NodeValue::String(s) if s.starts_with('/') => {}
                NodeValue::String(s) => self.error(
                    Code::E207,
                    node.line,
                    node.column,
                    format!("`{field}` must be an absolute path, found `{}`", truncate(s, 60)),
                ),
                _ => self.wrong_type(node, field, "a string"),
            },
            Ty::StageName => match &node.value {
                NodeValue::String(s) if is_stage_name(s) => {}
                NodeValue::String(s) => self.error(
                    Code::E207,
                    node.line,
                    node.column,
                    format!(
                        "`{field}`: `{}` is not a valid stage name: use 1-63 letters, digits, `-` or `_`, starting with a letter or digit",
                        truncate(s, 60)
                    ),
                ),
                _ => self.wrong_type(node, field, "a string"),
            },
            Ty::Ref(kind) => match &node.value {
                NodeValue::String(s) => self.reference(kind, s, field, node),
                _ => self.wrong_type(node, field, &format!("the name of a {}", kind.slug())),
            },
            Ty::Struct(fields) => self.check_struct(node, fields, field, owner_at),
            Ty::List { item, min } => match &node.value {
                NodeValue::Seq(items) => {
                    if items.len() < min {
                        self.error(
                            Code::E207,
                            node.line,
                            node.column,
                            format!("`{field}` needs at least {min} entr{}", if min == 1 { "y" } else { "ies" }),
                        );
                    }
                    for (i, child) in items.iter().enumerate() {
                        self.check(child, item, &index(field, i), (child.line, child.column));
                    }
                }
                _ => self.wrong_type(node, field, "a list"),
            },
            Ty::StrMap | Ty::ScalarMap => match &node.value {
                NodeValue::Map(entries) => {
                    for (key, value) in entries.iter().filter(|(k, _)| k.is_string) {
                        let ok = match ty {
                            Ty::StrMap => matches!(value.value, NodeValue::String(_)),
                            _ => value.value.is_scalar() && value.value != NodeValue::Null,
                        };
                        if !ok {
                            let expected = if matches!(ty, Ty::StrMap) {
                                "a string"
                            } else {
                                "a string, number or boolean"
                            };
                            self.wrong_type(value, &join(field, &key.name), expected);
                        }
                    }
                }
                _ => self.wrong_type(node, field, "a mapping"),
            },
            Ty::FreeMap => {
                if !matches!(node.value, NodeValue::Map(_)) {
                    self.wrong_type(node, field, "a mapping");
                }
            }
            Ty::Plaintext => {
                let (line, column) = owner_at;
                let name = self.resource.clone();
                self.error(
                    Code::E400,
                    line,
                    column,
                    format!(
                        "credential `{name}` holds a plaintext `value`: never commit secrets; encrypt it with `ritmo encrypt-credential --name {name}` and use `encrypted_value`, or use `secret_ref`"
                    ),
                );
            }
        }
    }

    fn check_struct(&mut self, node: &Node, fields: &[Field], field: &str, owner_at: (u32, u32)) {
        let NodeValue::Map(entries) = &node.value else {
            self.wrong_type(node, field, "a mapping");
            return;
        };
        for (key, value) in entries.iter().filter(|(k, _)| k.is_string) {
            match fields.iter().find(|f| f.name == key.name) {
                Some(spec) => self.check(
                    value,
                    &spec.ty,
                    &join(field, &key.name),
                    (key.line, key.column),
                ),
                None => {
                    let names: Vec<&str> = fields
                        .iter()
                        .filter(|f| !matches!(f.ty, Ty::Plaintext))
                        .map(|f| f.name)
                        .collect();
                    self.unknown_field(key, field, &names);
                }
            }
        }
        for spec in fields.iter().filter(|f| f.required) {
            if find(entries, spec.name).is_none() {
                let (line, column) = owner_at;
                self.error(
                    Code::E205,
                    line,
                    column,
                    format!("missing required field `{}`", join(field, spec.name)),
                );
            }
        }
    }

    fn reference(&mut self, kind: Kind, name: &str, field: &str, node: &Node) {
        self.references.push(Reference {
            target: ResourceId::new(kind, name),
            field: field.to_string(),
            at: self.at(node.line, node.column),
        });
    }

    /// Top-level keys of a free-form config ending in `_credential` name a credential.
    fn credential_keys(&mut self, config: &Node, field: &str) {
        if let NodeValue::Map(entries) = &config.value {
            for (key, value) in entries {
                if let (true, NodeValue::String(name)) = (
                    key.is_string && key.name.ends_with("_credential"),
                    &value.value,
                ) {
                    self.reference(Kind::Credential, name, &join(field, &key.name), value);
                }
            }
        }
    }

    /// Rules that relate fields of one spec to each other.
    fn kind_rules(&mut self, kind: Kind, spec: &Node, spec_key: &Key) {
        let NodeValue::Map(entries) = &spec.value else {
            return;
        };
        match kind {
            Kind::Job => self.job_rules(entries),
            Kind::Credential => self.credential_rules(entries, spec_key),
            Kind::Plugin => {
                if let Some((_, config)) = find(entries, "default_config") {
                    self.credential_keys(config, "spec.default_config");
                }
            }
            Kind::WorkerPool => {
                if let (Some((_, min)), Some((_, max))) =
                    (find(entries, "min_workers"), find(entries, "max_workers"))
                    && let (NodeValue::Int(lo), NodeValue::Int(hi)) = (&min.value, &max.value)
                    && hi < lo
                {
                    self.error(
                        Code::E207,
                        max.line,
                        max.column,
                        format!(
                            "`spec.max_workers` ({hi}) must be at least `spec.min_workers` ({lo})"
                        ),
                    );
                }
            }
            Kind::Webhook | Kind::Environment => {}
        }
    }

    fn job_rules(&mut self, entries: &[(Key, Node)]) {
        if let Some((_, NodeValue::Seq(triggers))) =
            find(entries, "triggers").map(|(k, v)| (k, &v.value))
        {
            for (i, trigger) in triggers.iter().enumerate() {
                if let NodeValue::Map(t) = &trigger.value
                    && string_at(t, "type").is_some_and(|(v, _)| v == "cron")
                    && find(t, "schedule").is_none()
                {
                    self.error(
                        Code::E205,
                        trigger.line,
                        trigger.column,
                        format!("missing required field `spec.triggers[{i}].schedule`: a cron trigger needs a schedule such as `0 2 * * *`"),
                    );
                }
            }
        }
        let Some((_, pipeline)) = find(entries, "pipeline") else {
            return;
        };
        let NodeValue::Map(pipeline) = &pipeline.value else {
            return;
        };
        let Some((_, stages)) = find(pipeline, "stages") else {
            return;
        };
        let NodeValue::Seq(stages) = &stages.value else {
            return;
        };
        for (i, stage) in stages.iter().enumerate() {
            if let NodeValue::Map(stage) = &stage.value
                && let Some((_, steps)) = find(stage, "steps")
                && let NodeValue::Seq(steps) = &steps.value
            {
                for (j, step) in steps.iter().enumerate() {
                    if let NodeValue::Map(step) = &step.value
                        && let Some((_, config)) = find(step, "config")
                    {
                        self.credential_keys(
                            config,
                            &format!("spec.pipeline.stages[{i}].steps[{j}].config"),
                        );
                    }
                }
            }
        }
        self.stage_graph(stages);
    }

    /// Stage names are unique, `depends_on` names stages, and dependencies form no cycle.
    fn stage_graph(&mut self, stages: &[Node]) {
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        let mut names: Vec<(&str, &Node)> = Vec::new();
        // For each stage, its node in the graph; `None` for unnamed and duplicate stages.
        let mut graph_node: Vec<Option<usize>> = Vec::with_capacity(stages.len());
        for stage in stages {
            let named = match &stage.value {
                NodeValue::Map(entries) => string_at(entries, "name"),
                _ => None,
            };
            let Some((name, node)) = named else {
                graph_node.push(None);
                continue;
            };
            if let Some(&first) = index_of.get(name) {
                let first_node = names[first].1;
                self.error(
                    Code::E210,
                    node.line,
                    node.column,
                    format!(
                        "duplicate stage `{name}`: first defined at line {}, column {}",
                        first_node.line, first_node.column
                    ),
                );
                graph_node.push(None);
            } else {
                index_of.insert(name, names.len());
                graph_node.push(Some(names.len()));
                names.push((name, node));
            }
        }
        let mut edges: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
        for (i, stage) in stages.iter().enumerate() {
            let (NodeValue::Map(entries), Some(from)) = (&stage.value, graph_node[i]) else {
                continue;
            };
            let name = names[from].0;
            let Some((_, deps)) = find(entries, "depends_on") else {
                continue;
            };
            let NodeValue::Seq(deps) = &deps.value else {
                continue;
            };
            for (j, dep) in deps.iter().enumerate() {
                let NodeValue::String(dep_name) = &dep.value else {
                    continue;
                };
                match index_of.get(dep_name.as_str()) {
                    Some(&to) => edges[from].push(to),
                    None => self.error(
                        Code::E210,
                        dep.line,
                        dep.column,
                        format!(
                            "`spec.pipeline.stages[{i}].depends_on[{j}]`: stage `{name}` depends on `{}`, which is not a stage of this pipeline{}",
                            truncate(dep_name, 60),
                            did_you_mean(dep_name, names.iter().map(|(n, _)| *n))
                        ),
                    ),
                }
            }
        }
        for cycle in find_cycles(&edges) {
            let mut text: Vec<&str> = cycle.iter().map(|&i| names[i].0).collect();
            text.push(names[cycle[0]].0);
            let node = names[cycle[0]].1;
            self.error(
                Code::E210,
                node.line,
                node.column,
                format!(
                    "pipeline stages depend on each other in a cycle: {}",
                    text.join(" → ")
                ),
            );
        }
    }

    fn credential_rules(&mut self, entries: &[(Key, Node)], spec_key: &Key) {
        let name = self.resource.clone();
        let encrypted = find(entries, "encrypted_value");
        let secret_ref = find(entries, "secret_ref");
        match (encrypted, secret_ref) {
            (Some(_), Some((key, _))) => self.error(
                Code::E212,
                key.line,
                key.column,
                format!("credential `{name}` has both `encrypted_value` and `secret_ref`: keep exactly one"),
            ),
            (None, None) if find(entries, "value").is_none() => self.error(
                Code::E212,
                spec_key.line,
                spec_key.column,
                format!("credential `{name}` has neither `encrypted_value` nor `secret_ref`: add exactly one"),
            ),
            _ => {}
        }
        if let Some((_, node)) = encrypted
            && let NodeValue::String(value) = &node.value
        {
            self.ciphertexts.push(CiphertextField {
                credential: name.clone(),
                value: value.clone(),
                at: self.at(node.line, node.column),
            });
        }
        let Some((ref_key, node)) = secret_ref else {
            return;
        };
        let NodeValue::Map(fields) = &node.value else {
            return;
        };
        let Some((provider, _)) = string_at(fields, "provider") else {
            return;
        };
        let needed: &[&[&str]] = match provider {
            "aws_secrets_manager" => &[&["key"]],
            "vault" => &[&["key", "path"]],
            "kubernetes" => &[&["namespace"], &["name"], &["key"]],
            _ => return,
        };
        let mut complete = true;
        for alternatives in needed {
            if !alternatives.iter().any(|f| find(fields, f).is_some()) {
                complete = false;
                self.error(
                    Code::E205,
                    ref_key.line,
                    ref_key.column,
                    format!(
                        "missing required field `spec.secret_ref.{}` for provider `{provider}`",
                        alternatives.join("` or `spec.secret_ref.")
                    ),
                );
            }
        }
        let key = string_at(fields, "key").or_else(|| string_at(fields, "path"));
        if let (true, Some((key, _))) = (complete, key) {
            self.secret_refs.push(SecretRefField {
                credential: name,
                provider: provider.to_string(),
                key: key.to_string(),
                region: string_at(fields, "region").map(|(r, _)| r.to_string()),
                at: self.at(ref_key.line, ref_key.column),
            });
        }
    }
}

fn lower_first(s: &str) -> String {
    let s = s.trim_end_matches('.');
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Every elementary cycle found by a depth-first search (one per back edge), each as the list
/// of node indices in dependency order, starting at its smallest index.
fn find_cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to follow); `path` mirrors the active stack.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        let mut path: Vec<usize> = vec![start];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match marks[to] {
                    Mark::New => {
                        marks[to] = Mark::Active;
                        stack.push((to, 0));
                        path.push(to);
                    }
                    Mark::Active => {
                        if let Some(pos) = path.iter().position(|&n| n == to) {
                            let mut cycle = path[pos..].to_vec();
                            if let Some(min_pos) = cycle
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, n)| **n)
                                .map(|(i, _)| i)
                            {
                                cycle.rotate_left(min_pos);
                            }
                            if !cycles.contains(&cycle) {
                                cycles.push(cycle);
                            }
                        }
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
                path.pop();
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `regex` crate says of `pattern`, worded as [`regex_error`] words it.
    fn regex_crate_says(pattern: &str) -> Option<String> {
        let error = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .err()?;
        Some(match error {
            regex::Error::CompiledTooBig(_) => "too large".to_string(),
            regex::Error::Syntax(text) => syntax_error_reason(&text),
            other => panic!("unexpected regex error {other:?}"),
        })
    }

    static CHECKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn counted_check(input: &str) -> Option<String> {
        CHECKS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        input.ends_with('!').then(|| "refused".to_string())
    }

    #[test]
    fn each_verdict_is_reached_once_per_process_except_on_long_inputs() {
        let table: Table = |verdicts| &mut verdicts.cron;
        let checks = || CHECKS.load(std::sync::atomic::Ordering::SeqCst);
        let input = "a schedule only this test uses!";

        let first = Memo::default().verdict(table, input, counted_check);
        let second = Memo::default().verdict(table, input, counted_check);

        assert_eq!(first.as_deref(), Some("refused"));
        assert_eq!(second, first);
        assert_eq!(checks(), 1);
        let long = format!("{}!", "x".repeat(KNOWN_INPUT_BYTES));
        known_or(table, &long, counted_check);
        known_or(table, &long, counted_check);
        assert_eq!(checks(), 3);
    }

    #[test]
    fn regexes_are_judged_as_the_regex_crate_judges_them() {
        let patterns = [
            "^(main|release/.*)$",
            r"^feature/[a-z0-9\-]+$",
            r"\w{1000}",
            r"(\w{40}){40}",
            "a{100001}",
            "^(main|release/.*$",
            "(",
            "[z-a]",
            "(?P<n>a)(?P<n>b)",
            r"\p{NotAClass}",
            r"\",
            "*",
            "(?<look>=x)",
            "(?=x)",
        ];
        let mut refused = 0;
        let mut too_large = 0;
        for pattern in patterns {
            let ours = regex_error(pattern);
            assert_eq!(ours, regex_crate_says(pattern), "for {pattern:?}");
            refused += usize::from(ours.is_some());
            too_large += usize::from(ours.as_deref() == Some("too large"));
        }
        assert!(refused >= 8, "the list should mostly hold bad patterns");
        assert!(
            too_large >= 1,
            "the list should hold a pattern over the size cap"
        );
    }
}
